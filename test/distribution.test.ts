import { test } from 'node:test';
import assert from 'node:assert/strict';
import { analyze } from '../src/causal/analysis.js';
import { distributionChange } from '../src/causal/distribution.js';
import { DISTRIBUTION, type PromptResult } from '../src/causal/types.js';
import { HookedModel } from '../src/models/model.js';
import { fixtureModelDir, hydraName, loadGolden } from './helpers.js';

const TOL = 1e-5;

/** Softmax of real logits, written out here apart from the library's log-softmax. */
function probs(logits: number[]): number[] {
  const m = Math.max(...logits);
  const e = logits.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

test('distribution fields of a two-token example, by hand', () => {
  // p = (1/2, 1/2); p′ = (1/4, 3/4).
  const d = distributionChange([0, 0], [0, Math.log(3)], 0);
  assert.ok(Math.abs(d.kl - (0.5 * Math.log(2) + 0.5 * Math.log(2 / 3))) < 1e-12);
  const h = (ps: number[]) => -ps.reduce((s, p) => s + p * Math.log(p), 0);
  assert.ok(Math.abs(d.dh - (h([0.25, 0.75]) - h([0.5, 0.5]))) < 1e-12);
  assert.ok(Math.abs(d.p_clean - 0.5) < 1e-12);
  assert.ok(Math.abs(d.p_ablated - 0.25) < 1e-12);
  assert.equal(d.rank_ablated, 2);
  assert.equal(distributionChange([0, 0], [0, Math.log(3)], 1).rank_ablated, 1);
});

async function run(model: HookedModel, name: string, path: 'fast' | 'naive'): Promise<PromptResult[]> {
  const golden = loadGolden(name);
  return analyze(model, golden.prompts.map((p: { ids: number[] }) => p.ids), {
    kind: 'resample',
    sources: golden.resample_sources,
    targets: golden.targets.map(hydraName),
    heads: true,
    path,
    distribution: true,
    batchPrompts: 3,
    batchRows: 20,
  });
}

// Fast = naive (whose logits come from its own full forward), KL ≥ 0, and the clean token's
// clean probability against the golden clean logits (soft-capped ones for Gemma-2).
for (const name of ['tiny-gpt2', 'tiny-neox-parallel', 'tiny-llama-gqa', 'tiny-gemma2', 'tiny-gptj']) {
  test(`distribution: fast path equals naive path, KL ≥ 0, p(i) = golden: ${name}`, async () => {
    const golden = loadGolden(name);
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    const fast = await run(model, name, 'fast');
    const naive = await run(model, name, 'naive');
    let moved = 0;
    fast.forEach((r, n) => {
      const clean = golden.prompts[n].clean;
      const pWant = probs(clean.logits_capped ?? clean.logits)[clean.clean_token];
      for (const [t, a] of Object.entries(r.ablations)) {
        const g = naive[n].ablations[t];
        const pairs = [[a.distribution!, g.distribution!], ...a.patches.map((p, s) => [p.distribution!, g.patches[s].distribution!])];
        for (const [f, w] of pairs) {
          for (const { key } of DISTRIBUTION) assert.ok(Math.abs(f[key] - w[key]) < TOL, `${name} p${n} ${t} ${key}: ${f[key]} vs ${w[key]}`);
          assert.ok(f.kl >= 0, `${name} p${n} ${t}: KL ${f.kl}`);
          assert.ok(Math.abs(f.p_clean - pWant) < TOL, `${name} p${n} p(i) ${f.p_clean} vs golden ${pWant}`);
          assert.ok(f.rank_ablated >= 1 && f.rank_ablated <= model.spec.vocab);
          if (f.kl > 1e-4) moved++;
        }
        // p′(i) of each patch against its π̂′ (same run, different readout): p′(i) = softmax at i.
        a.patches.forEach((p) => assert.ok(p.distribution!.p_ablated > 0 && p.distribution!.p_ablated <= 1));
        // A soft-capped model's capped TE comes from the same unembedding of each run.
        if (model.spec.finalSoftcap !== null) a.patches.forEach((p, s) => assert.ok(Math.abs(p.te_capped! - g.patches[s].te_capped!) < TOL, `${name} p${n} ${t} te_capped`));
      }
    });
    assert.ok(moved > 0, 'some ablation moves the distribution');
  });
}

// Every field against a computation written out here from the full logits of a forward pass
// with the intervention (zero ablation), soft-capped by hand where the model caps.
for (const name of ['tiny-gpt2', 'tiny-gemma2']) {
  test(`distribution: fast path against an independent computation from full logits: ${name}`, async () => {
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    const ids: number[][] = loadGolden(name).prompts.slice(0, 3).map((p: { ids: number[] }) => p.ids);
    const targets = ['attn.0', 'mlp.0', 'attn.1', 'head.1.0'];
    const results = await analyze(model, ids, { kind: 'zero', targets, heads: true, distribution: true });
    const c = model.spec.finalSoftcap;
    const real = (raw: Float32Array) => [...raw].map((x) => (c === null ? x : c * Math.tanh(x / c)));
    const clean = await model.forward(ids);
    for (const t of targets) {
      const zero = new Float32Array(model.spec.dModel);
      const run = await model.forward(ids, { interventions: ids.map(() => [{ component: t, value: zero }]) });
      ids.forEach((_, n) => {
        const i = clean.prompts[n].token;
        const p = probs(real(clean.prompts[n].logits));
        const q = probs(real(run.prompts[n].logits));
        const ent = (ps: number[]) => -ps.reduce((s, x) => s + (x > 0 ? x * Math.log(x) : 0), 0);
        const kl = p.reduce((s, x, j) => s + (x > 0 ? x * Math.log(x / q[j]) : 0), 0);
        const rank = 1 + q.filter((x) => x > q[i]).length;
        const got = results[n].ablations[t].distribution!;
        const label = `${name} p${n} ${t}`;
        assert.ok(Math.abs(got.kl - kl) < TOL, `${label} KL ${got.kl} vs ${kl}`);
        assert.ok(Math.abs(got.dh - (ent(q) - ent(p))) < TOL, `${label} ΔH`);
        assert.ok(Math.abs(got.p_clean - p[i]) < TOL && Math.abs(got.p_ablated - q[i]) < TOL, `${label} p(i)`);
        assert.equal(got.rank_ablated, rank, `${label} rank`);
      });
    }
  });
}

// An ablation that patches a component with its own clean value changes nothing.
for (const name of ['tiny-gpt2', 'tiny-gemma2']) {
  test(`distribution: patching a component with its own clean value gives KL = 0: ${name}`, async () => {
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    const ids = [loadGolden(name).prompts[0].ids as number[]];
    const clean = await model.forward(ids, { heads: true });
    const targets = ['attn.0', 'mlp.1', 'head.1.2'];
    const custom = Object.fromEntries(targets.map((t) => [t, clean.prompts[0].sites.get(t) ?? clean.prompts[0].components.get(t)!]));
    for (const path of ['fast', 'naive'] as const) {
      const [r] = await analyze(model, ids, { kind: 'custom', custom, targets, path, distribution: true });
      for (const t of targets) {
        const d = r.ablations[t].distribution!;
        assert.ok(Math.abs(d.kl) < 1e-9, `${name} ${path} ${t}: KL ${d.kl}`);
        assert.ok(Math.abs(d.dh) < 1e-6, `${name} ${path} ${t}: ΔH ${d.dh}`);
        assert.ok(Math.abs(d.p_ablated - d.p_clean) < 1e-6);
        assert.equal(d.rank_ablated, 1);
      }
    }
  });
}

test('distribution is measured only on request', async () => {
  const model = await HookedModel.load(fixtureModelDir('tiny-gpt2'), { threads: 1 });
  const [r] = await analyze(model, [loadGolden('tiny-gpt2').prompts[0].ids], { kind: 'zero', targets: ['attn.1'] });
  assert.equal(r.ablations['attn.1'].distribution, undefined);
  assert.equal(r.ablations['attn.1'].neurons, undefined);
});
