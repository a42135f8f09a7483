import { test } from 'node:test';
import assert from 'node:assert/strict';
import { analyze, rowParts } from '../src/causal/analysis.js';
import { cleanContext } from '../src/causal/effects.js';
import { defaultBatchRows, runFastPath, type AblationRow } from '../src/causal/fastpath.js';
import { runNaivePath } from '../src/causal/naive.js';
import { centredLogit, Readout } from '../src/causal/readout.js';
import { parseTarget } from '../src/models/components.js';
import type { AblationKind, Effects, PromptResult } from '../src/causal/types.js';
import { HookedModel } from '../src/models/model.js';
import { assertPathsAgree, FIXTURE_MODELS, fixtureModelDir, hydraName, loadGolden } from './helpers.js';

const TOL = 1e-4;
const FIELDS: [keyof Effects, string][] = [
  ['te', 'TE'],
  ['ce', 'CE'],
  ['ce_attn', 'CE_attn'],
  ['ce_mlp', 'CE_mlp'],
  ['ne', 'NE'],
  ['ie', 'IE'],
  ['dde_self', 'dDE_self'],
];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function compare(label: string, got: any, want: any, names: string[]): void {
  for (const [f, g] of FIELDS) assert.ok(Math.abs(got[f] - want[g]) < TOL, `${label} ${f}: ${got[f]} vs ${want[g]}`);
  names.forEach((n, i) => {
    const c = hydraName(n);
    assert.ok(Math.abs(got.de_prime[c] - want.DE_prime[i]) < TOL, `${label} DE'(${c}): ${got.de_prime[c]} vs ${want.DE_prime[i]}`);
  });
  if (want.TE_capped !== undefined) assert.ok(Math.abs(got.te_capped - want.TE_capped) < TOL, `${label} te_capped: ${got.te_capped} vs ${want.TE_capped}`);
  // Closure: TE = ΔDE(k) + CE + NE.
  assert.ok(Math.abs(got.te - (got.dde_self + got.ce + got.ne)) < TOL, `${label} closure`);
}

export async function goldenRun(name: string, kind: AblationKind, path: 'fast' | 'naive'): Promise<PromptResult[]> {
  const golden = loadGolden(name);
  const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
  return analyze(model, golden.prompts.map((p: { ids: number[] }) => p.ids), {
    kind,
    targets: golden.targets.map(hydraName),
    sources: kind === 'resample' ? golden.resample_sources : undefined,
    heads: true,
    path,
    batchPrompts: 3,
    batchRows: 50,
  });
}

for (const name of FIXTURE_MODELS) {
  for (const path of ['fast', 'naive'] as const) {
    test(`effects match golden (${path} path): ${name}`, async () => {
      const golden = loadGolden(name);
      for (const kind of ['zero', 'mean', 'resample'] as const) {
        const results = await goldenRun(name, kind, path);
        results.forEach((r, n) => {
          const gp = golden.prompts[n];
          assert.equal(r.token, gp.clean.clean_token);
          for (const [g, v] of Object.entries(gp.clean.DE as Record<string, number>)) assert.ok(Math.abs(r.de[hydraName(g)] - v) < TOL, `DE ${g}`);
          for (const t of golden.targets as string[]) {
            const want = gp.ablations[kind][t];
            const got = r.ablations[hydraName(t)];
            compare(`${name} ${kind} p${n} ${t} mean`, got, want.mean, golden.component_names);
            assert.equal(got.patches.length, want.patches.length);
            got.patches.forEach((p, s) => {
              compare(`${name} ${kind} p${n} ${t} patch ${s}`, p, want.patches[s], golden.component_names);
              assert.equal(p.source, want.patches[s].source);
              assert.ok(Math.abs(p.sigma_prime - want.patches[s].sigma_prime) < TOL);
              assert.ok(Math.abs(p.pi_hat_prime - want.patches[s].pi_hat_i_prime) < TOL);
            });
          }
        });
      }
    });
  }
}

// The fast path agrees with the naive full recompute for every patch kind, including
// noise and custom patches that the golden files do not cover, and for embed and bias targets.
for (const name of FIXTURE_MODELS) {
  test(`fast path equals naive path for every patch kind: ${name}`, async () => {
    const golden = loadGolden(name);
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    const ids: number[][] = golden.prompts.slice(0, 5).map((p: { ids: number[] }) => p.ids);
    const targets = ['embed', 'attn.0', 'mlp.0', `attn.${model.spec.nLayers - 1}`, 'head.1.0', 'attn_bias.1', 'mlp.1'];
    const custom = Object.fromEntries(targets.map((t, i) => [t, Float32Array.from({ length: model.spec.dModel }, (_, j) => Math.sin(i + j) * 0.5)]));
    for (const kind of ['zero', 'mean', 'resample', 'noise', 'custom'] as const) {
      // Tiny models share clean tokens across prompts: allow such sources (this compares paths, not draws).
      const opts = { kind, targets, samples: 2, seed: 7, heads: true, custom, allowSameAnswer: true };
      assertPathsAgree(`${name} ${kind}`, await analyze(model, ids, { ...opts, path: 'fast' }), await analyze(model, ids, { ...opts, path: 'naive' }));
    }
  });
}

// Default parts: 8 MiB of MLP activations with float32 weights, 16 MiB when each part widens two-byte weights.
test('defaultBatchRows sizes parts by the MLP width and the weights dtype', () => {
  assert.equal(defaultBatchRows({ spec: { dMlp: 3072 }, widensWeights: false }), 512);
  assert.equal(defaultBatchRows({ spec: { dMlp: 3072 }, widensWeights: true }), 1024);
  assert.equal(defaultBatchRows({ spec: { dMlp: 8192 }, widensWeights: true }), 512);
  assert.equal(defaultBatchRows({ spec: { dMlp: 8192 }, widensWeights: false }), 256);
  assert.equal(defaultBatchRows({ spec: { dMlp: 64 }, widensWeights: false }), 4096);
  assert.equal(defaultBatchRows({ spec: { dMlp: 57344 }, widensWeights: true }), 256);
});

// Runs are cut between prompts, and a prompt larger than a run gets runs of its own.
test('rowParts cuts runs of rows between prompts', () => {
  const rows = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2].map((prompt) => ({ prompt }));
  assert.deepEqual(rowParts(rows, 4), [[0, 3], [3, 5], [5, 9], [9, 10]]);
  assert.deepEqual(rowParts(rows, 5), [[0, 5], [5, 10]]);
  assert.deepEqual(rowParts(rows, 100), [[0, 10]]);
  assert.throws(() => rowParts(rows, 0), /batchRows must be a positive integer/);
});

// The fast path pads prompts with fewer rows starting at a block; the padding must not
// change any row. Prompt 0 and 1 get different targets here, each row checked against
// the naive full recompute.
for (const name of ['tiny-gpt2', 'tiny-neox-parallel', 'tiny-llama-gqa']) {
  test(`fast path with unequal rows per prompt equals naive: ${name}`, async () => {
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    const ids: number[][] = loadGolden(name).prompts.slice(0, 2).map((p: { ids: number[] }) => p.ids);
    const clean = await model.forward(ids, { heads: true });
    const readout = new Readout(model);
    const qs = await readout.vectors(clean.prompts.map((a) => a.token));
    const ctxs = clean.prompts.map((a, i) => cleanContext(a, qs[i], centredLogit(a.logits, a.token)));
    const d = model.spec.dModel;
    const patch = (i: number) => Float32Array.from({ length: d }, (_, j) => Math.cos(i * 7 + j) * 0.3);
    const spec = model.spec;
    const rows: AblationRow[] = [
      [0, 'attn.0'], [0, 'mlp.0'], [0, 'head.1.1'], [0, 'mlp.0'], [1, 'attn.1'], [1, 'embed'], [0, `mlp.${spec.nLayers - 1}`],
    ].map(([p, t], i) => ({ prompt: p as number, target: parseTarget(t as string, spec), patches: [patch(i)] }));
    const fast = await runFastPath(model, ctxs, clean.cache, rows, true);
    const naive = await runNaivePath(model, ids, ctxs, rows, true);
    rows.forEach((r, i) => {
      const label = `${name} row ${i} (${r.target.name})`;
      for (let j = 0; j < d; j++) assert.ok(Math.abs(fast[i].z[j] - naive[i].z[j]) < TOL, `${label} z[${j}]`);
      for (const c of Object.keys(naive[i].dePrime)) assert.ok(Math.abs(fast[i].dePrime[c] - naive[i].dePrime[c]) < TOL, `${label} DE'(${c}): ${fast[i].dePrime[c]} vs ${naive[i].dePrime[c]}`);
    });
  });
}
