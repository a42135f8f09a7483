import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { analyze } from '../src/causal/analysis.js';
import type { AblationResult, PatchEffects, PromptResult } from '../src/causal/types.js';
import { parseTarget } from '../src/models/components.js';
import { HookedModel } from '../src/models/model.js';
import { ResultsStore } from '../src/experiments/store.js';
import { runSweep } from '../src/experiments/sweep.js';
import { defaultModelDir, storiesRecallPath } from '../src/io/paths.js';
import { assertPathsAgree, FIXTURE_MODELS, fixtureModelDir, goldenDir, hydraName, loadGolden, rejectsWith, tmpDir } from './helpers.js';

const TOL = 1e-4;
const EXTRA = ['tiny-gpt2', 'tiny-llama-gqa', 'tiny-neox-parallel'];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function loadExtra(name: string): any {
  return JSON.parse(fs.readFileSync(path.join(goldenDir, 'extra', `${name}.json`), 'utf8'));
}

/** A golden set name (attn0+mlp1) in Hydra's naming (attn.0+mlp.1). */
const setName = (golden: string) => golden.split('+').map(hydraName).join('+');

const close = (label: string, got: number, want: number) => assert.ok(Math.abs(got - want) < TOL, `${label}: ${got} vs ${want}`);

/**
 * One patch record (or the mean) against the golden: TE, readout', σ', DE' and ΔDE of every
 * component, CE and its parts, NE, IE, and ΔDE of the members (joint) or of the target (metric).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function compare(label: string, got: PatchEffects | AblationResult, extra: { pi: number; sigma: number }, want: any, r: PromptResult, names: string[], members: string[] | null): void {
  close(`${label} TE`, got.te, want.TE);
  close(`${label} readout'`, extra.pi, want.readout_prime);
  close(`${label} σ'`, extra.sigma, want.sigma_prime);
  close(`${label} CE`, got.ce, want.CE);
  close(`${label} CE_attn`, got.ce_attn, want.CE_attn);
  close(`${label} CE_mlp`, got.ce_mlp, want.CE_mlp);
  close(`${label} NE`, got.ne, want.NE);
  close(`${label} IE`, got.ie, want.IE);
  names.forEach((n, i) => {
    const c = hydraName(n);
    close(`${label} DE'(${c})`, got.de_prime[c], want.DE_prime[i]);
    close(`${label} ΔDE(${c})`, got.de_prime[c] - r.de[c], want.dDE[i]);
  });
  if (members) {
    close(`${label} ΔDE members`, got.dde_self, want.dDE_members_sum);
    members.forEach((m, i) => close(`${label} ΔDE(${m})`, got.de_prime[hydraName(m)] - r.de[hydraName(m)], want.dDE_members[i]));
  } else close(`${label} ΔDE self`, got.dde_self, want.dDE_self);
  close(`${label} closure`, got.te, got.dde_self + got.ce + got.ne);
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Every patch and the mean of an ablation against the golden's record of it. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function compareAblation(label: string, got: AblationResult, want: any, r: PromptResult, names: string[], members: string[] | null): void {
  assert.equal(got.patches.length, want.patches.length, `${label} patches`);
  got.patches.forEach((p, s) => {
    assert.equal(p.source, want.patches[s].source, `${label} patch ${s} source`);
    compare(`${label} patch ${s}`, p, { pi: p.pi_hat_prime, sigma: p.sigma_prime }, want.patches[s], r, names, members);
  });
  compare(`${label} mean`, got, { pi: mean(got.patches.map((p) => p.pi_hat_prime)), sigma: mean(got.patches.map((p) => p.sigma_prime)) }, want.mean, r, names, members);
}

for (const name of EXTRA) {
  for (const p of ['fast', 'naive'] as const) {
    test(`joint zero and same-source resample ablations match the golden (${p} path): ${name}`, async () => {
      const g = loadExtra(name);
      const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
      const ids = g.prompts.map((x: { ids: number[] }) => x.ids);
      const sets: { name: string; members: string[] }[] = g.joint_sets;
      for (const kind of ['zero', 'resample'] as const) {
        const results = await analyze(model, ids, {
          kind,
          targets: sets.map((s) => setName(s.name)),
          sources: kind === 'resample' ? g.resample_sources : undefined,
          heads: true,
          path: p,
          batchPrompts: 3,
        });
        results.forEach((r, n) => {
          for (const s of sets) compareAblation(`${name} ${kind} p${n} ${s.name}`, r.ablations[setName(s.name)], g.prompts[n].joint[kind][s.name], r, g.component_names, s.members);
        });
      }
    });

    test(`answer and logit-diff metrics match the golden (${p} path): ${name}`, async () => {
      const g = loadExtra(name);
      const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
      const ids = g.prompts.map((x: { ids: number[] }) => x.ids);
      for (const metric of ['answer', 'logit-diff'] as const) {
        const answers = g.prompts.map((x: { metrics: Record<string, { tokens: { a: number; b?: number } }> }) => ({ answer: x.metrics[metric].tokens.a, counter: x.metrics[metric].tokens.b }));
        for (const kind of ['zero', 'resample'] as const) {
          const results = await analyze(model, ids, {
            kind,
            metric,
            answers,
            targets: g.metric_targets.map(hydraName),
            sources: kind === 'resample' ? g.resample_sources : undefined,
            heads: true,
            path: p,
            batchPrompts: 3,
          });
          results.forEach((r, n) => {
            const want = g.prompts[n].metrics[metric];
            close(`${name} ${metric} p${n} readout`, r.pi_hat, want.clean.readout);
            for (const [c, v] of Object.entries(want.clean.DE as Record<string, number>)) close(`${name} ${metric} p${n} DE(${c})`, r.de[hydraName(c)], v);
            assert.deepEqual(r.readout, { metric, answer: want.tokens.a, counter: want.tokens.b ?? null });
            for (const t of g.metric_targets as string[]) compareAblation(`${name} ${metric} ${kind} p${n} ${t}`, r.ablations[hydraName(t)], want.ablations[kind][t], r, g.component_names, null);
          });
        }
      }
    });
  }
}

/** Joint sets that cross stages, blocks of one stage, heads (pre- and post-norm) and the embedding. */
function jointSets(L: number): string[] {
  const last = L - 1;
  return [
    'attn.0+attn.1',
    `attn.0+mlp.${last}`,
    'head.0.1+mlp.1',
    'attn.0+head.1.0+head.1.1',
    'head.1.0+head.1.1',
    'embed+mlp.0',
    'mlp.0+attn_bias.1',
    `attn.1+mlp.1+attn.${last}`,
  ];
}

// Fast path = naive path for joint ablations on every fixture family: sequential, parallel,
// windowed (prompts longer than the window), post-norm with head members.
for (const name of FIXTURE_MODELS) {
  test(`joint ablation: fast path equals naive path: ${name}`, async () => {
    const golden = loadGolden(name);
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    const ids: number[][] = golden.prompts.slice(0, 4).map((p: { ids: number[] }) => p.ids);
    const targets = jointSets(model.spec.nLayers);
    for (const kind of ['zero', 'resample'] as const) {
      const opts = { kind, targets, samples: 2, seed: 3, heads: true, allowSameAnswer: true };
      assertPathsAgree(`${name} ${kind}`, await analyze(model, ids, { ...opts, path: 'fast' }), await analyze(model, ids, { ...opts, path: 'naive' }));
    }
  });
}

test('joint resample: every member takes its patch from the same source', async () => {
  const name = 'tiny-gpt2';
  const golden = loadGolden(name);
  const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
  const ids: number[][] = golden.prompts.map((p: { ids: number[] }) => p.ids);
  // The same patches as a resample run drawn from prompt j: custom patches = j's clean outputs.
  const clean = await model.forward(ids);
  for (const j of [2, 5]) {
    const custom = { 'attn.0': clean.prompts[j].components.get('attn.0')!, 'mlp.1': clean.prompts[j].components.get('mlp.1')! };
    const [c] = await analyze(model, ids.slice(0, 1), { kind: 'custom', targets: ['attn.0+mlp.1'], custom });
    const res = await analyze(model, ids, { kind: 'resample', targets: ['attn.0+mlp.1'], sources: ids.map((_, n) => [n === j ? (j + 1) % ids.length : j]), batchPrompts: 8 });
    close(`source ${j} TE`, res[0].ablations['attn.0+mlp.1'].te, c.ablations['attn.0+mlp.1'].te);
    close(`source ${j} CE`, res[0].ablations['attn.0+mlp.1'].ce, c.ablations['attn.0+mlp.1'].ce);
  }
});

test('metric variants: answer equals argmax when the answer is the argmax; logit-diff is the difference of two answer runs', async () => {
  const name = 'tiny-llama-gqa';
  const golden = loadGolden(name);
  const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
  const ids: number[][] = golden.prompts.slice(0, 4).map((p: { ids: number[] }) => p.ids);
  const opts = { kind: 'resample' as const, samples: 2, seed: 1, allowSameAnswer: true, heads: true, targets: ['attn.0', 'mlp.1', 'head.1.1', 'attn.0+attn.1'] };
  const argmax = await analyze(model, ids, opts);
  const top = argmax.map((r) => ({ answer: r.token }));
  const other = ids.map((_, n) => ({ answer: (argmax[n].token + 7) % model.spec.vocab }));
  const same = await analyze(model, ids, { ...opts, metric: 'answer', answers: top });
  const b = await analyze(model, ids, { ...opts, metric: 'answer', answers: other });
  const diff = await analyze(model, ids, { ...opts, metric: 'logit-diff', answers: ids.map((_, n) => ({ answer: top[n].answer, counter: other[n].answer })) });
  argmax.forEach((r, n) => {
    close(`p${n} π̂`, same[n].pi_hat, r.pi_hat);
    close(`p${n} logit-diff readout`, diff[n].pi_hat, r.pi_hat - b[n].pi_hat);
    for (const t of opts.targets) {
      for (const k of ['te', 'ce', 'ce_attn', 'ce_mlp', 'ne', 'ie', 'dde_self'] as const) {
        assert.equal(same[n].ablations[t][k], r.ablations[t][k], `p${n} ${t} ${k}: answer = argmax`);
        close(`p${n} ${t} ${k} logit-diff`, diff[n].ablations[t][k], r.ablations[t][k] - b[n].ablations[t][k]);
      }
      for (const c of Object.keys(r.de)) close(`p${n} ${t} DE'(${c})`, diff[n].ablations[t].de_prime[c], r.ablations[t].de_prime[c] - b[n].ablations[t].de_prime[c]);
    }
  });
});

test('joint targets and metrics: bad input is a clear one-line error', async () => {
  const model = await HookedModel.load(fixtureModelDir('tiny-gpt2'), { threads: 1 });
  const ids = [[1, 2, 3], [4, 5, 6]];
  await rejectsWith(analyze(model, ids, { kind: 'zero', targets: ['attn.0+attn.0'] }), /names attn\.0 twice/);
  await rejectsWith(analyze(model, ids, { kind: 'zero', targets: ['attn.1+head.1.0'] }), /joins head\.1\.0 with attn\.1, which contains it/);
  await rejectsWith(analyze(model, ids, { kind: 'zero', targets: ['attn.0+mlp.9'] }), /unknown component 'mlp\.9'/);
  await rejectsWith(analyze(model, ids, { kind: 'zero', metric: 'answer' }), /metric 'answer' needs `answers`/);
  await rejectsWith(analyze(model, ids, { kind: 'zero', metric: 'logit-diff', answers: [{ answer: 1, counter: 2 }, { answer: 3 }] }), /prompt 1 has no counter token/);
  await rejectsWith(analyze(model, ids, { kind: 'zero', metric: 'answer', answers: [{ answer: 1 }, { answer: 1e9 }] }), /outside the vocabulary/);
  assert.deepEqual(parseTarget('attn.0+mlp.1').members.map((m) => m.name), ['attn.0', 'mlp.1']);
  assert.equal(parseTarget('head.2.1').members.length, 1);
});

test('a sweep records a non-default metric in run_config; a resume with another metric is refused', async () => {
  const dir = tmpDir('hydra-metric-');
  const dataset = path.join(dir, 'stories.jsonl');
  fs.writeFileSync(dataset, fs.readFileSync(storiesRecallPath, 'utf8').split('\n').slice(0, 8).join('\n') + '\n');
  const out = path.join(dir, 'r.duckdb');
  const model = await HookedModel.load(defaultModelDir, { threads: 1 });
  const run = (metric?: 'answer') => runSweep({ model, modelName: 'stories260k', dataset, out, ablation: 'zero', limit: 4, metric });
  const first = await run('answer');
  assert.ok(first.computed > 0);
  const store = await ResultsStore.openReadOnly(out);
  assert.equal(store.config.options?.metric, 'answer');
  await store.close();
  assert.equal((await run('answer')).computed, 0);
  await rejectsWith(run(), /r\.duckdb was made with metric=answer, this run asks for/);
});

test('a set of one is the single ablation, and joint rows in the same batch leave single rows unchanged', async () => {
  const name = 'tiny-gemma2';
  const golden = loadGolden(name);
  const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
  const ids: number[][] = golden.prompts.slice(0, 4).map((p: { ids: number[] }) => p.ids);
  const opts = { kind: 'resample' as const, samples: 2, seed: 3, heads: true, allowSameAnswer: true };
  for (const single of ['attn.1', 'head.1.0', 'mlp.0']) {
    const alone = await analyze(model, ids, { ...opts, targets: [single] });
    const mixed = await analyze(model, ids, { ...opts, targets: ['attn.0+attn.1', single, 'head.0.1+mlp.1'] });
    alone.forEach((r, n) => assert.deepEqual(mixed[n].ablations[single], r.ablations[single], `${single} p${n}`));
  }
  assert.deepEqual(parseTarget('head.1.0', model.spec).members, [{ name: 'head.1.0', kind: 'head', layer: 1, head: 0 }]);
  assert.deepEqual(model.plan.downstreamOfSet(parseTarget('head.1.0', model.spec).members), model.plan.downstream(parseTarget('head.1.0', model.spec).members[0]));
});
