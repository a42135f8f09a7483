import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { packageRoot } from '../src/io/paths.js';
import { fixtureModelDir, hydraName, loadGolden, maxAbsDiff } from './helpers.js';

export const CLI = path.join(packageRoot, 'dist', 'src', 'cli', 'main.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the built CLI with plain node (HYDRA_DEBUG cleared, offline so nothing touches the network). */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, HF_HUB_OFFLINE: '1', ...env };
    if (!('HYDRA_DEBUG' in env)) delete childEnv.HYDRA_DEBUG;
    execFile(process.execPath, [CLI, ...args], { env: childEnv, maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A user error: exit 1, exactly one stderr line `hydra: error: ...`, no stack trace, nothing on stdout. */
export function assertOneLineError(r: CliResult, ...mustContain: (string | RegExp)[]): string {
  assert.equal(r.code, 1, `exit code ${r.code}; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 1, `expected one stderr line, got:\n${r.stderr}`);
  assert.match(lines[0], /^hydra: error: /);
  assert.ok(!/^\s+at /m.test(r.stderr), `stack trace in stderr:\n${r.stderr}`);
  assert.equal(r.stdout, '');
  for (const s of mustContain) {
    if (typeof s === 'string') assert.ok(lines[0].includes(s), `stderr ${JSON.stringify(lines[0])} lacks ${JSON.stringify(s)}`);
    else assert.match(lines[0], s);
  }
  return lines[0];
}


const TOL = 1e-4;

test('forward --json on tiny-gpt2 matches golden prompt 0', async () => {
  const golden = loadGolden('tiny-gpt2');
  const p0 = golden.prompts[0];
  const r = await runCli(['forward', '--model', fixtureModelDir('tiny-gpt2'), '--ids', p0.ids.join(','), '--json', '--heads', '--threads', '1']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, 'one JSON object on one line');
  const out = JSON.parse(lines[0]);
  assert.deepEqual(out.tokens, p0.ids);
  assert.equal(out.token, p0.clean.clean_token);
  assert.equal(out.logits.length, p0.clean.logits.length);
  assert.ok(maxAbsDiff(out.logits, p0.clean.logits) < TOL, `logits differ by ${maxAbsDiff(out.logits, p0.clean.logits)}`);
  assert.ok(Math.abs(out.sigma - p0.clean.sigma) < TOL);
  const names = Object.keys(p0.clean.outputs);
  assert.ok(names.some((n) => n.startsWith('head')), 'golden has head outputs');
  for (const [g, vec] of Object.entries(p0.clean.outputs as Record<string, number[]>)) {
    const got = out.components[hydraName(g)];
    assert.ok(got, `component ${hydraName(g)} missing`);
    const diff = maxAbsDiff(got, vec);
    assert.ok(diff < TOL, `${hydraName(g)} differs by ${diff}`);
    assert.equal(typeof out.de[hydraName(g)], 'number');
  }
  // π̂ is the centred logit of the clean token.
  const mean = out.logits.reduce((a: number, b: number) => a + b, 0) / out.logits.length;
  assert.ok(Math.abs(out.pi_hat - (out.logits[out.token] - mean)) < 1e-5);
  // Layer-partition DEs sum to π̂ up to the constant of the biases; heads + bias rebuild attention.
  for (let l = 0; l < 3; l++) {
    let s = out.de[`attn_bias.${l}`];
    for (let h = 0; h < 4; h++) s += out.de[`head.${l}.${h}`];
    assert.ok(Math.abs(s - out.de[`attn.${l}`]) < 1e-4);
  }
});

test('forward --json --all-positions gives every position; without --heads no head components', async () => {
  const ids = loadGolden('tiny-gpt2').prompts[0].ids as number[];
  const r = await runCli(['forward', '--model', fixtureModelDir('tiny-gpt2'), '--ids', ids.join(','), '--json', '--all-positions', '--threads', '1']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(out.components).sort(), ['attn.0', 'attn.1', 'attn.2', 'embed', 'mlp.0', 'mlp.1', 'mlp.2']);
  assert.deepEqual(Object.keys(out.positions).sort(), Object.keys(out.components).sort());
  for (const [name, rowsOf] of Object.entries(out.positions as Record<string, number[][]>)) {
    assert.equal(rowsOf.length, ids.length);
    assert.equal(rowsOf[0].length, 64);
    assert.deepEqual(rowsOf[ids.length - 1], out.components[name]);
  }
});

test('forward on stories260k with --text: ids and human summary', async () => {
  const json = await runCli(['forward', '--text', 'Once upon a time', '--json']);
  assert.equal(json.code, 0, json.stderr);
  const out = JSON.parse(json.stdout);
  assert.deepEqual(out.tokens, [1, 403, 407, 261, 378]);
  assert.equal(typeof out.token_text, 'string');
  // RMSNorm, no biases: the layer partition's DEs sum to π̂ exactly.
  const layerDe = Object.entries(out.de as Record<string, number>).filter(([n]) => /^(embed|attn\.\d+|mlp\.\d+)$/.test(n));
  assert.equal(layerDe.length, 11);
  assert.ok(Math.abs(layerDe.reduce((a, [, v]) => a + v, 0) - out.pi_hat) < 1e-3);

  const human = await runCli(['forward', '--model', fixtureModelDir('stories260k'), '--text', 'Once upon a time']);
  assert.equal(human.code, 0, human.stderr);
  assert.ok(human.stdout.includes(JSON.stringify(out.token_text)), `summary lacks the top token ${JSON.stringify(out.token_text)}:\n${human.stdout}`);
  assert.ok(human.stdout.includes('" upon"'), 'prompt tokens shown as text');
  assert.match(human.stdout, /layer\s+DE attn\s+DE mlp/);
  assert.match(human.stdout, /^\s+embed\s+-?\d/m);
  for (let l = 0; l < 5; l++) assert.match(human.stdout, new RegExp(`^\\s+${l}\\s+-?\\d+\\.\\d+\\s+-?\\d+\\.\\d+`, 'm'));
  assert.match(human.stdout, /p 0\.\d{4}/);
});

test('unknown flag, unknown command, missing prompt: one-line errors', async () => {
  assertOneLineError(await runCli(['forward', '--bogus', '--ids', '1']), "unknown option '--bogus'");
  assertOneLineError(await runCli(['frobnicate']), 'unknown command');
  assertOneLineError(await runCli(['forward']), '--text', '--ids');
  assertOneLineError(await runCli(['forward', '--text', 'a', '--ids', '1']), 'exactly one');
  assertOneLineError(await runCli(['forward', '--text']), '--text');
  assertOneLineError(await runCli(['forward', '--ids', '1,,2']), '--ids', 'item 2');
  assertOneLineError(await runCli(['forward', '--ids', '1,-3']), '--ids', '-3');
  assertOneLineError(await runCli(['forward', '--ids', '1', '--threads', 'two']), '--threads');
  // A model without a tokenizer cannot take text.
  assertOneLineError(await runCli(['forward', '--model', fixtureModelDir('tiny-gpt2'), '--text', 'hi']), 'tokenizer.json', '--ids');
});

test('--version and --help exit 0', async () => {
  const v = await runCli(['--version']);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^\d+\.\d+\.\d+/);
  const h = await runCli(['forward', '--help']);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /--ids/);
});
