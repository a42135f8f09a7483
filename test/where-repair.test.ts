import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promptRepairSources, type RepairSources } from '../src/causal/sources.js';
import { datasetRepairSources } from '../src/experiments/sources.js';
import { HookedModel } from '../src/models/model.js';
import { attnName, parseComponent } from '../src/models/components.js';
import { analyze } from '../src/causal/analysis.js';
import type { PromptResult } from '../src/causal/types.js';
import { fixtureModelDir, hydraName, loadGolden } from './helpers.js';

/** The golden prompts, targets and resample sources, with heads (as effects.test.ts runs them). */
function goldenRun(model: HookedModel, name: string): Promise<PromptResult[]> {
  const golden = loadGolden(name);
  return analyze(model, golden.prompts.map((p: { ids: number[] }) => p.ids), { kind: 'resample', targets: golden.targets.map(hydraName), sources: golden.resample_sources, heads: true });
}

const TOL = 1e-4;

// The split against the golden ΔDE of every downstream component (independent reference), and
// its identities: the parts add up to the closure, the layers to CE_attn and CE_mlp, each
// downstream attention layer's heads (and output bias) to its ΔDE.
for (const name of ['tiny-gpt2', 'tiny-neox-parallel', 'tiny-gemma2']) {
  test(`where the repair comes from: split against golden ΔDE: ${name}`, async () => {
    const golden = loadGolden(name);
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    const results = await goldenRun(model, name);
    const names: string[] = golden.component_names.map(hydraName);
    results.forEach((r, n) => {
      const split = promptRepairSources(model.plan, r, true);
      for (const t of golden.targets as string[]) {
        const s = split[hydraName(t)];
        const want = golden.prompts[n].ablations.resample[t];
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const checks: [RepairSources, any][] = [[s, want.mean], ...s.patches!.map((p, k): [RepairSources, unknown] => [p, want.patches[k]])];
        for (const [got, w] of checks) {
          const label = `${name} p${n} ${t}`;
          assert.ok(Math.abs(got.removed + w.dDE_self) < TOL, `${label} removed`);
          assert.ok(Math.abs(got.removed - got.attn - got.mlp - got.ne + w.TE) < TOL, `${label}: removed − back = −TE`);
          for (const [c, v] of [...Object.entries(got.layers), ...Object.entries(got.heads)]) {
            assert.ok(Math.abs(v - w.dDE[names.indexOf(c)]) < TOL, `${label} ΔDE(${c}) ${v} vs golden ${w.dDE[names.indexOf(c)]}`);
          }
          const sumKind = (kind: string) => Object.entries(got.layers).filter(([c]) => parseComponent(c).kind === kind).reduce((a, [, v]) => a + v, 0);
          const mateSum = Object.entries(got.heads).filter(([c]) => parseComponent(c).layer === parseComponent(hydraName(t)).layer).reduce((a, [, v]) => a + v, 0);
          assert.ok(Math.abs(sumKind('attn') + mateSum - got.attn) < TOL, `${label} Σ attention = CE_attn`);
          assert.ok(Math.abs(sumKind('mlp') - got.mlp) < TOL, `${label} Σ MLP = CE_mlp`);
          for (const layer of Object.keys(got.layers).filter((c) => c.startsWith('attn.'))) {
            const heads = Object.entries(got.heads).filter(([c]) => attnName(parseComponent(c).layer) === layer);
            assert.ok(heads.length >= model.spec.nHeads, `${label} heads of ${layer}`);
            assert.ok(Math.abs(heads.reduce((a, [, v]) => a + v, 0) - got.layers[layer]) < TOL, `${label} heads sum to ${layer}`);
          }
        }
      }
    });
  });
}

test('where the repair comes from over a prompt set: means, intervals, seeded', async () => {
  const model = await HookedModel.load(fixtureModelDir('tiny-gpt2'), { threads: 1 });
  const results = await goldenRun(model, 'tiny-gpt2');
  const a = datasetRepairSources(model.plan, results, { seed: 3, bootstrap: 200 });
  const b = datasetRepairSources(model.plan, results, { seed: 3, bootstrap: 200 });
  assert.deepEqual(a, b);
  for (const [t, d] of Object.entries(a)) {
    const per = results.map((r) => promptRepairSources(model.plan, r)[t]);
    const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
    assert.equal(d.prompts, results.length);
    assert.ok(Math.abs(d.removed.mean! - mean(per.map((p) => p.removed))) < 1e-12);
    assert.ok(Math.abs(d.attn.mean! - mean(per.map((p) => p.attn))) < 1e-12);
    for (const c of Object.keys(d.layers)) assert.ok(Math.abs(d.layers[c].mean! - mean(per.map((p) => p.layers[c]))) < 1e-12);
    const back = per.reduce((s, p) => s + p.attn + p.mlp + p.ne, 0);
    const removed = per.reduce((s, p) => s + p.removed, 0);
    assert.ok(Math.abs(d.restored.mean! - back / removed) < 1e-9);
    for (const m of [d.removed, d.attn, d.mlp, d.ne, ...Object.values(d.layers)]) assert.ok(m.lo! <= m.mean! + 1e-12 && m.mean! <= m.hi! + 1e-12, `${t} interval`);
  }
  const one = datasetRepairSources(model.plan, results.slice(0, 1));
  for (const d of Object.values(one)) assert.deepEqual([d.removed.lo, d.removed.hi], [null, null]);
});
