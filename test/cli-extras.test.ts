import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../src/io/paths.js';
import { fixtureModelDir, loadGolden, tmpDir } from './helpers.js';

const cli = path.join(packageRoot, 'dist', 'src', 'cli', 'main.js');
const MODEL = fixtureModelDir('tiny-gpt2');

function hydra(args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function promptsFile(): string {
  const file = path.join(tmpDir(), 'prompts.json');
  fs.writeFileSync(file, JSON.stringify(loadGolden('tiny-gpt2').prompts.map((p: { ids: number[] }) => ({ ids: p.ids }))));
  return file;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

test('hydra effects --json --distribution --neurons --where-repair: the documented fields, consistent with the effects', () => {
  const golden = loadGolden('tiny-gpt2');
  const r = hydra(['effects', '--model', MODEL, '--prompts', promptsFile(), '--ablation', 'zero', '--targets', 'attn.0,mlp.1', '--heads', '--json', '--distribution', '--neurons', 'mlp.1,mlp.2', '--top-neurons', '4', '--where-repair']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  out.prompts.forEach((p: Json, n: number) => {
    const logits: number[] = golden.prompts[n].clean.logits;
    const m = Math.max(...logits);
    const pWant = Math.exp(logits[p.token] - m) / logits.reduce((s, x) => s + Math.exp(x - m), 0);
    for (const [t, a] of Object.entries(p.ablations) as [string, Json][]) {
      assert.deepEqual(Object.keys(a.distribution), ['dh', 'kl', 'p_clean', 'p_ablated', 'rank_ablated']);
      assert.ok(Math.abs(a.distribution.p_clean - pWant) < 1e-5, `p(i) prompt ${n}`);
      // attn.0 reaches both MLP layers; mlp.1 only mlp.2 (its own neurons are replaced by the patch).
      assert.deepEqual(Object.keys(a.neurons), t === 'attn.0' ? ['mlp.1', 'mlp.2'] : ['mlp.2']);
      for (const ns of Object.values(a.neurons) as Json[]) {
        assert.equal(ns.length, 4);
        for (let k = 1; k < ns.length; k++) assert.ok(Math.abs(ns[k - 1].dde) >= Math.abs(ns[k].dde));
      }
      const w = a.where_repair;
      assert.ok(Math.abs(w.removed + a.dde_self) < 1e-12 && Math.abs(w.ne - a.ne) < 1e-12);
      assert.ok(Math.abs(w.removed - w.attn - w.mlp - w.ne + a.te) < 1e-6, 'removed − back = −TE');
      for (const [c, v] of Object.entries(w.layers) as [string, number][]) assert.ok(Math.abs(v - (a.de_prime[c] - p.de[c])) < 1e-12, c);
      assert.ok(Object.keys(w.heads).length > 0);
    }
  });
  assert.deepEqual(Object.keys(out.where_repair), ['attn.0', 'mlp.1']);
  const d = out.where_repair['attn.0'];
  assert.equal(d.prompts, out.prompts.length);
  const mean = out.prompts.reduce((s: number, p: Json) => s + p.ablations['attn.0'].where_repair.removed, 0) / out.prompts.length;
  assert.ok(Math.abs(d.removed.mean - mean) < 1e-12);
  assert.ok(d.removed.lo <= d.removed.mean && d.removed.mean <= d.removed.hi);
});

test('hydra effects tables: the extras follow each prompt, then the prompt-set summary', () => {
  const r = hydra(['effects', '--model', MODEL, '--prompts', promptsFile(), '--ablation', 'zero', '--targets', 'attn.0', '--distribution', '--neurons', 'mlp.2', '--top-neurons', '2', '--where-repair']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /distribution {8}ΔH {8}KL {6}p\(i\) {5}p′\(i\) {5}rank′/);
  assert.match(r.stdout, /attn\.0 → mlp\.2: #\d+ [+-]\d\.\d{4} \(-?\d\.\d{4} → -?\d\.\d{4}\), #\d+ /);
  assert.match(r.stdout, /where repair {3}removed/);
  assert.match(r.stdout, /where the repair comes from, over 8 prompts/);
  assert.match(r.stdout, /attn\.0: removed -?\d\.\d{4} \[-?\d\.\d{4}, -?\d\.\d{4}\]/);
});

test('hydra effects extras: bad input gets a one-line error', () => {
  const prompts = promptsFile();
  const cases: [string[], RegExp][] = [
    [['--neurons', 'attn.3'], /--neurons: 'attn\.3' is not an MLP layer; .*mlp\.0 to mlp\.2/],
    [['--neurons', 'mlp.7'], /--neurons: mlp\.7 does not exist; the model's MLP layers are mlp\.0 to mlp\.2/],
    [['--neurons', ','], /--neurons names no MLP layer/],
    [['--top-neurons', '3'], /--top-neurons needs --neurons/],
    [['--neurons', 'mlp.1', '--top-neurons', '0'], /--top-neurons must be a positive integer/],
  ];
  for (const [args, re] of cases) {
    const r = hydra(['effects', '--model', MODEL, '--prompts', prompts, '--ablation', 'zero', '--targets', 'attn.0', ...args]);
    assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    assert.match(lines[0], /^hydra: error: /);
    assert.match(lines[0], re);
  }
});
