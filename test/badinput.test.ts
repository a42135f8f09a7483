import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { HydraError } from '../src/io/errors.js';
import { gpt2TokenizerDir, packageRoot } from '../src/io/paths.js';
import { WeightStore, writeSafetensors } from '../src/io/safetensors.js';
import { HookedModel } from '../src/models/model.js';
import { fixtureModelDir, tmpDir } from './helpers.js';

/**
 * Every bad input gives a HydraError whose one-line message names the file (or flag) and the
 * field at fault, both through the library and through the CLI (exit 1, one stderr line, no stack).
 */

const CLI = path.join(packageRoot, 'dist', 'src', 'cli', 'main.js');
const TINY = fixtureModelDir('tiny-gpt2');
const WEIGHTS = 'model.safetensors';

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function runCli(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, HF_HUB_OFFLINE: '1' };
    delete env.HYDRA_DEBUG;
    execFile(process.execPath, [CLI, ...args], { env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Expect a one-line HydraError containing every fragment. */
function checkMessage(e: unknown, fragments: (string | RegExp)[]): true {
  assert.ok(e instanceof HydraError, `expected a HydraError, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  assert.ok(!e.message.includes('\n'), `message is not one line: ${e.message}`);
  for (const f of fragments) {
    if (typeof f === 'string') assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    else assert.match(e.message, f);
  }
  return true;
}

async function apiLoadFails(dir: string, ...fragments: (string | RegExp)[]): Promise<void> {
  await assert.rejects(HookedModel.load(dir, { threads: 1, offline: true }), (e) => checkMessage(e, fragments));
}

async function cliFails(args: string[], ...fragments: (string | RegExp)[]): Promise<void> {
  const r = await runCli(args);
  assert.equal(r.code, 1, `exit ${r.code}; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 1, `expected one stderr line, got:\n${r.stderr}`);
  assert.match(lines[0], /^hydra: error: /);
  assert.ok(!/^\s+at /m.test(r.stderr), `stack trace in stderr:\n${r.stderr}`);
  assert.ok(!r.stderr.includes('internal error'), r.stderr);
  assert.equal(r.stdout, '');
  for (const f of fragments) {
    if (typeof f === 'string') assert.ok(lines[0].includes(f), `stderr ${JSON.stringify(lines[0])} lacks ${JSON.stringify(f)}`);
    else assert.match(lines[0], f);
  }
}

/** A bad model directory fails the same way through HookedModel.load and `hydra forward`. */
async function bothFail(dir: string, ...fragments: (string | RegExp)[]): Promise<void> {
  await apiLoadFails(dir, ...fragments);
  await cliFails(['forward', '--model', dir, '--ids', '1,2,3', '--threads', '1'], ...fragments);
}

/** A fresh copy of tiny-gpt2 in a temporary directory. */
function copyTiny(): string {
  const dir = path.join(tmpDir('hydra-bad-'), 'tiny-gpt2');
  fs.cpSync(TINY, dir, { recursive: true });
  return dir;
}

/** Every tensor of a model directory, as read by WeightStore (with its stored shape). */
function readAll(dir: string): Record<string, { shape: number[]; data: Float32Array }> {
  const store = WeightStore.open(dir);
  const out: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const name of store.names()) {
    const shape = store.entry(name)!.shape;
    out[name] = { shape, data: store.get(name, shape) };
  }
  return out;
}

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const file = path.join(dir, 'config.json');
  const c = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(c);
  fs.writeFileSync(file, JSON.stringify(c, null, 2));
}

test('missing model directory', async () => {
  const dir = path.join(tmpDir(), 'no-such-model');
  await bothFail(dir, dir, 'does not exist');
});

test('model path that is a file', async () => {
  const file = path.join(copyTiny(), 'config.json');
  await bothFail(file, file, 'is a file');
});

test('directory without config.json', async () => {
  const dir = copyTiny();
  fs.rmSync(path.join(dir, 'config.json'));
  await bothFail(dir, path.join(dir, 'config.json'), 'not found');
});

test('config.json that is not JSON', async () => {
  const dir = copyTiny();
  fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type": "gpt2",');
  await bothFail(dir, path.join(dir, 'config.json'), 'not valid JSON');
});

test('config.json missing a required field', async () => {
  const dir = copyTiny();
  editConfig(dir, (c) => delete c.n_embd);
  await bothFail(dir, path.join(dir, 'config.json'), "'n_embd'");
});

test('missing model.safetensors', async () => {
  const dir = copyTiny();
  fs.rmSync(path.join(dir, WEIGHTS));
  await bothFail(dir, dir, 'model.safetensors');
});

test('truncated safetensors file', async () => {
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
  await bothFail(dir, file, 'truncated', /tensor '[^']+'/);
});

test('safetensors header that is not JSON', async () => {
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  buf.fill('#'.charCodeAt(0), 8, 8 + n); // same length, garbage content
  fs.writeFileSync(file, buf);
  await bothFail(dir, file, 'header', 'not valid JSON');
});

test('safetensors header length larger than the file', async () => {
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  const buf = fs.readFileSync(file);
  buf.writeBigUInt64LE(BigInt(buf.length * 4), 0);
  fs.writeFileSync(file, buf);
  await bothFail(dir, file, 'header length', String(buf.length * 4));
});

test('safetensors file too short for a header', async () => {
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  fs.writeFileSync(file, Buffer.from([1, 2, 3]));
  await bothFail(dir, file, 'too short');
});

test('tensor of the wrong shape', async () => {
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  const tensors = readAll(dir);
  const name = 'transformer.h.1.mlp.c_fc.weight';
  assert.deepEqual(tensors[name].shape, [64, 256]);
  tensors[name].shape = [256, 64];
  writeSafetensors(file, tensors);
  await bothFail(dir, file, `'${name}'`, '[256, 64]', '[64, 256]');
});

test('missing weight', async () => {
  const dir = copyTiny();
  const tensors = readAll(dir);
  const name = 'transformer.h.2.ln_2.bias';
  assert.ok(tensors[name]);
  delete tensors[name];
  writeSafetensors(path.join(dir, WEIGHTS), tensors);
  await bothFail(dir, dir, `'${name}'`, 'missing weight');
});

test('unknown model_type lists the supported types', async () => {
  const dir = copyTiny();
  editConfig(dir, (c) => (c.model_type = 'mamba'));
  await bothFail(dir, path.join(dir, 'config.json'), "'mamba'", 'model_type', 'gpt2', 'llama', 'gpt_neox', 'qwen2', 'gemma');
});

test('prompt longer than the context', async () => {
  const model = await HookedModel.load(TINY, { threads: 1 });
  assert.equal(model.spec.nCtx, 128);
  const ids = Array.from({ length: 129 }, (_, i) => i % 300);
  await assert.rejects(model.forward([ids]), (e) => checkMessage(e, ['129', '128', 'context']));
  // Exactly the context length is fine.
  await model.forward([ids.slice(0, 128)]);
  await cliFails(['forward', '--model', TINY, '--ids', ids.join(','), '--threads', '1'], '--ids', '129', '128', 'context');
});

test('empty prompt: --ids "" and text that tokenizes to nothing', async () => {
  const model = await HookedModel.load(TINY, { threads: 1 });
  await assert.rejects(model.forward([[]]), (e) => checkMessage(e, ['prompt', 'empty']));
  await cliFails(['forward', '--model', TINY, '--ids', ''], '--ids', 'empty');
  await cliFails(['forward', '--model', TINY, '--ids', ' '], '--ids', 'empty');

  // tiny-gpt2 with GPT-2's tokenizer (no BOS added): "" encodes to no tokens.
  const dir = copyTiny();
  fs.copyFileSync(path.join(gpt2TokenizerDir, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  const withTok = await HookedModel.load(dir, { threads: 1 });
  assert.deepEqual(withTok.encode(''), []);
  await assert.rejects(withTok.forward([withTok.encode('')]), (e) => checkMessage(e, ['prompt', 'empty']));
  await cliFails(['forward', '--model', dir, '--text', ''], '--text', 'no tokens', 'empty');
});

test('token id outside the vocabulary', async () => {
  const model = await HookedModel.load(TINY, { threads: 1 });
  await assert.rejects(model.forward([[1, 320]]), (e) => checkMessage(e, ['320', 'vocabulary', '319']));
  await assert.rejects(model.forward([[1, -1]]), (e) => checkMessage(e, ['-1', 'vocabulary']));
  await cliFails(['forward', '--model', TINY, '--ids', '1,320'], '--ids', '320', 'vocabulary');
  await cliFails(['forward', '--model', TINY, '--ids', '1,abc'], '--ids', 'abc');
});
