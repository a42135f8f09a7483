import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FIXTURE_MODELS, loadGolden } from './helpers.js';
import { goldenPrompts, hydraName } from './fixtures/report/golden-prompts.js';
import {
  datasetStatistics, mulberry32, statsToCsv, statsToCsvRows, undefinedReason,
  type ComponentStats, type Interval, type Ols,
} from '../src/experiments/stats.js';
import { HydraError } from '../src/io/errors.js';
import type { PromptResult } from '../src/causal/types.js';
import { groupDraws, interval, mean, ols, pearson } from './recompute.js';

const TOL = 1e-9;

function close(actual: number | null, expected: number | null, what: string): void {
  if (expected === null) {
    assert.equal(actual, null, `${what}: expected null, got ${actual}`);
    return;
  }
  assert.notEqual(actual, null, `${what}: expected ${expected}, got null`);
  const a = actual as number;
  assert.ok(Math.abs(a - expected) <= TOL, `${what}: ${a} vs ${expected}`);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function checkOls(o: Ols, g: any, what: string): void {
  close(o.slope, g.slope, `${what}.slope`);
  close(o.intercept, g.intercept, `${what}.intercept`);
  close(o.r2, g.r2, `${what}.r2`);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function checkInterval(iv: Interval, g: any, what: string): void {
  assert.equal(iv.n_valid, g.n_valid, `${what}.n_valid`);
  close(iv.lo, g.lo, `${what}.lo`);
  close(iv.hi, g.hi, `${what}.hi`);
}

const BOOT: Record<string, keyof ComponentStats['bootstrap95']> = {
  slope_CE: 'slope_ce', r2_CE: 'r2_ce', slope_CE_attn: 'slope_ce_attn', r2_CE_attn: 'r2_ce_attn',
  slope_CE_mlp: 'slope_ce_mlp', r2_CE_mlp: 'r2_ce_mlp', mean_DE: 'mean_de', mean_TE: 'mean_te', mean_CE: 'mean_ce', mean_NE: 'mean_ne',
};
const MEANS: Record<string, keyof ComponentStats['mean']> = {
  DE: 'de', TE: 'te', CE: 'ce', CE_attn: 'ce_attn', CE_mlp: 'ce_mlp', NE: 'ne', IE: 'ie', removed_DE: 'removed_de',
};

for (const model of FIXTURE_MODELS) {
  test(`dataset statistics match the reference: ${model}`, async () => {
    const g = loadGolden(model);
    const indices: number[][] = g.bootstrap_indices;
    assert.equal(indices.length, g.bootstrap.B);
    for (const kind of ['zero', 'mean', 'resample'] as const) {
      const prompts = goldenPrompts(g, kind);
      const stats = await datasetStatistics(prompts, { indices });
      const targets: string[] = g.targets;
      assert.deepEqual(Object.keys(stats), targets.map(hydraName), `${model} ${kind}: components`);
      for (const t of targets) {
        const ref = g.dataset_stats[kind][t];
        const s = stats[hydraName(t)];
        const what = `${model} ${kind} ${t}`;
        assert.equal(s.n, ref.n, `${what} n`);
        close(s.pearson_de_vs_neg_te, ref.pearson_DE_vs_negTE, `${what} pearson`);
        close(s.frac_de_gt_neg_te, ref.frac_DE_gt_negTE, `${what} frac`);
        checkOls(s.ols_ce_on_removed, ref.ols_CE_on_removed, `${what} ols_CE`);
        checkOls(s.ols_ce_attn_on_removed, ref.ols_CE_attn_on_removed, `${what} ols_CE_attn`);
        checkOls(s.ols_ce_mlp_on_removed, ref.ols_CE_mlp_on_removed, `${what} ols_CE_mlp`);
        assert.deepEqual(Object.keys(ref.mean).sort(), Object.keys(MEANS).sort());
        for (const [gk, hk] of Object.entries(MEANS)) close(s.mean[hk], ref.mean[gk], `${what} mean.${gk}`);
        assert.deepEqual(Object.keys(ref.bootstrap95).sort(), Object.keys(BOOT).sort());
        for (const [gk, hk] of Object.entries(BOOT)) checkInterval(s.bootstrap95[hk], ref.bootstrap95[gk], `${what} bootstrap95.${gk}`);
        assert.equal(s.bootstrap.generator, 'given');
        assert.equal(s.bootstrap.B, g.bootstrap.B);
      }
    }
  });
}

/** One prompt result per (x, y) pair, ablating only `attn.0`: removed DE = x, CE = y, DE = de, TE = te. */
function series(x: number[], y: number[], de = x, te = y.map((v) => -v)): PromptResult[] {
  return x.map((xi, i) => ({
    index: i, ids: [1], token: 0, sigma: 1, pi_hat: 0, de: { 'attn.0': de[i] },
    ablations: { 'attn.0': { te: te[i], ce: y[i], ce_attn: y[i], ce_mlp: 0, ne: 0, ie: 0, dde_self: -xi, de_prime: {}, patches: [] } },
  }));
}

test('percentiles interpolate linearly as numpy.percentile', async () => {
  // Bootstrap resamples that are each one prompt repeated: the resampled mean DE is that prompt's DE.
  const p = series([3, 1, 2, 10], [0, 1, 0, 1]);
  const indices = [0, 1, 2, 3].map((i) => [i, i, i, i]);
  const s = (await datasetStatistics(p, { indices }))['attn.0'];
  // np.percentile([3,1,2,10], [2.5, 97.5]) = [1.075, 9.475]
  close(s.bootstrap95.mean_de.lo, 1.075, 'p2.5');
  close(s.bootstrap95.mean_de.hi, 9.475, 'p97.5');
  assert.equal(s.bootstrap95.mean_de.n_valid, 4);
  // each resample is constant: slope, R² and r are undefined in all of them
  assert.deepEqual(s.bootstrap95.slope_ce, { lo: null, hi: null, n_valid: 0 });
});

test('pearson and OLS: nulls on zero variance, exact on a line', async () => {
  const flatX = (await datasetStatistics(series([2, 2, 2], [1, 2, 3]), { bootstrap: 0 }))['attn.0'];
  assert.deepEqual(flatX.ols_ce_on_removed, { slope: null, intercept: null, r2: null });
  assert.equal(flatX.pearson_de_vs_neg_te, null);
  assert.deepEqual(flatX.constant, { de: 2, removed: 2, ce_mlp: 0, ne: 0, ie: 0 });
  const r = (await datasetStatistics(series([1, 2, 3], [0, 0, 0], [1, 2, 3], [-2, -4, -6.5]), { bootstrap: 0 }))['attn.0'];
  close(r.pearson_de_vs_neg_te, 0.9979487157886733, 'r'); // np.corrcoef
  assert.equal(r.ols_ce_on_removed.slope, 0);
  assert.equal(r.ols_ce_on_removed.r2, null);
  const line = (await datasetStatistics(series([1, 2, 3, 4], [3, 5, 7, 9]), { bootstrap: 0 }))['attn.0'].ols_ce_on_removed;
  close(line.slope, 2, 'slope');
  close(line.intercept, 1, 'intercept');
  close(line.r2, 1, 'r2');
});

test('the seeded cluster bootstrap equals an independent recomputation with the same draws', async () => {
  // mulberry32 reference outputs for seed 1, from the generator's C form (uint32 arithmetic)
  const r = mulberry32(1);
  assert.equal(r() * 2 ** 32, 2693262067);
  assert.equal(r() * 2 ** 32, 11749833);
  const g = loadGolden('tiny-gpt2');
  const prompts = goldenPrompts(g, 'resample');
  for (const groups of [null, ['a', 'a', 'b', 'b', 'b', 'c', null, 'c']]) {
    const opts = { bootstrap: 100, seed: 5, ...(groups ? { groups } : {}) };
    const s = await datasetStatistics(prompts, opts);
    assert.deepEqual(await datasetStatistics(prompts, opts), s, 'deterministic');
    const draws = groupDraws(groups ?? prompts.map(() => null), 100, 5);
    if (groups) {
      // every resample takes whole groups: 4 groups (a, b, c and the ungrouped prompt 6)
      assert.ok(draws.every((d) => d.filter((i) => i === 2).length === d.filter((i) => i === 3).length));
      assert.equal(s['attn.1'].bootstrap.unit, 'groups');
      assert.equal(s['attn.1'].bootstrap.n_groups, 4);
    } else assert.equal(s['attn.1'].bootstrap.unit, 'prompts');
    for (const k of ['attn.0', 'attn.1', 'mlp.1']) {
      const x = prompts.map((p) => -p.ablations[k].dde_self);
      const y = prompts.map((p) => p.ablations[k].ce_attn);
      const de = prompts.map((p) => p.de[k]);
      const negTe = prompts.map((p) => -p.ablations[k].te);
      const at = (v: number[], idx: number[]) => idx.map((i) => v[i]);
      const checks: [string, (idx: number[]) => number | null][] = [
        ['slope_ce_attn', (idx) => ols(at(x, idx), at(y, idx)).slope],
        ['r2_ce_attn', (idx) => ols(at(x, idx), at(y, idx)).r2],
        ['mean_de', (idx) => mean(at(de, idx))],
        ['pearson_de_vs_neg_te', (idx) => pearson(at(de, idx), at(negTe, idx))],
      ];
      for (const [stat, f] of checks) {
        const ref = interval(draws, f, 0.95);
        const got = s[k].bootstrap95[stat as 'mean_de'];
        assert.equal(got.n_valid, ref.n_valid, `${k} ${stat} n_valid`);
        close(got.lo, ref.lo, `${k} ${stat} lo`);
        close(got.hi, ref.hi, `${k} ${stat} hi`);
      }
      close(s[k].mean.de, mean(de), `${k} mean de`);
      close(s[k].ols_ce_attn_on_removed.slope, ols(x, y).slope, `${k} slope`);
    }
  }
});

test('undefined statistics say why', async () => {
  const g = loadGolden('tiny-gpt2');
  const s = await datasetStatistics(goldenPrompts(g, 'zero'), { bootstrap: 20 });
  // mlp.2 is the last layer: nothing downstream, CE is 0 in every prompt
  assert.match(undefinedReason(s['mlp.2'], 'slope_ce')!, /nothing downstream of mlp\.2/);
  assert.match(undefinedReason(s['attn.2'], 'slope_ce_attn')!, /no attention layer downstream of attn\.2/);
  assert.equal(undefinedReason(s['attn.2'], 'slope_ce_mlp'), null);
  assert.equal(undefinedReason(s['attn.0'], 'slope_ce_attn'), null);
  assert.equal(s['mlp.2'].constant.ce, 0);
});

test('CSV rows carry every component and empty cells for nulls', async () => {
  const g = loadGolden('tiny-gpt2');
  const stats = await datasetStatistics(goldenPrompts(g, 'zero'), { indices: g.bootstrap_indices });
  const rows = statsToCsvRows(stats);
  assert.equal(rows.length, g.targets.length);
  const last = rows.find((r) => r.component === 'mlp.2')!;
  assert.equal(last.r2_ce, null);
  close(last.slope_ce as number, g.dataset_stats.zero.mlp2.ols_CE_on_removed.slope, 'csv slope');
  const csv = statsToCsv(stats).trim().split('\n');
  assert.equal(csv.length, 1 + g.targets.length);
  const header = csv[0].split(',');
  const r2Col = header.indexOf('r2_ce');
  const mlp2 = csv.find((l) => l.startsWith('mlp.2,'))!.split(',');
  assert.equal(mlp2.length, header.length);
  assert.equal(mlp2[r2Col], '');
});

test('missing ablations and bad indices are user errors', async () => {
  const g = loadGolden('tiny-gpt2');
  const prompts = goldenPrompts(g, 'zero');
  await assert.rejects(datasetStatistics(prompts, { indices: [[0, 1, 99, 0, 0, 0, 0, 0]] }), HydraError);
  await assert.rejects(datasetStatistics(prompts, { components: ['attn.7'] }), HydraError);
});
