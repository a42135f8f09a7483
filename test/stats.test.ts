import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FIXTURE_MODELS, loadGolden } from './helpers.js';
import { goldenPrompts, hydraName } from './fixtures/report/golden-prompts.js';
import {
  bootstrapIndices, datasetStatistics, mulberry32, ols, pearson, percentile, statsToCsv, statsToCsvRows,
  type ComponentStats, type Interval, type Ols,
} from '../src/experiments/stats.js';
import { HydraError } from '../src/io/errors.js';

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
  test(`dataset statistics match the reference: ${model}`, () => {
    const g = loadGolden(model);
    const indices: number[][] = g.bootstrap_indices;
    assert.equal(indices.length, g.bootstrap.B);
    for (const kind of ['zero', 'mean', 'resample'] as const) {
      const prompts = goldenPrompts(g, kind);
      const stats = datasetStatistics(prompts, { indices });
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

test('percentile follows numpy linear interpolation', () => {
  // np.percentile([3,1,2,10], [0, 2.5, 50, 97.5, 100]) = [1, 1.075, 2.5, 9.475, 10]
  const x = [3, 1, 2, 10];
  close(percentile(x, 0), 1, 'p0');
  close(percentile(x, 2.5), 1.075, 'p2.5');
  close(percentile(x, 50), 2.5, 'p50');
  close(percentile(x, 97.5), 9.475, 'p97.5');
  close(percentile(x, 100), 10, 'p100');
  assert.equal(percentile([], 50), null);
  close(percentile([7], 97.5), 7, 'single');
});

test('pearson and OLS: nulls on zero variance, exact on a line', () => {
  assert.equal(pearson([1, 1, 1], [1, 2, 3]), null);
  assert.equal(pearson([1, 2, 3], [4, 4, 4]), null);
  close(pearson([1, 2, 3], [2, 4, 6.5]), 0.9979487157886733, 'r'); // np.corrcoef
  assert.deepEqual(ols([2, 2, 2], [1, 2, 3]), { slope: null, intercept: null, r2: null });
  const flat = ols([1, 2, 3], [0, 0, 0]);
  assert.equal(flat.slope, 0);
  assert.equal(flat.r2, null);
  const line = ols([1, 2, 3, 4], [3, 5, 7, 9]);
  close(line.slope, 2, 'slope');
  close(line.intercept, 1, 'intercept');
  close(line.r2, 1, 'r2');
});

test('seeded resampling is deterministic, in range, and recorded', () => {
  const a = bootstrapIndices(8, 50, 7);
  assert.deepEqual(a, bootstrapIndices(8, 50, 7));
  assert.notDeepEqual(a, bootstrapIndices(8, 50, 8));
  assert.ok(a.every((row) => row.length === 8 && row.every((i) => Number.isInteger(i) && i >= 0 && i < 8)));
  // mulberry32 reference outputs for seed 1, from the generator's C form (uint32 arithmetic)
  const r = mulberry32(1);
  assert.equal(r() * 2 ** 32, 2693262067);
  assert.equal(r() * 2 ** 32, 11749833);
  const g = loadGolden('tiny-gpt2');
  const prompts = goldenPrompts(g, 'resample');
  const s = datasetStatistics(prompts, { bootstrap: 100, seed: 5 });
  const t = s['attn.1'];
  assert.deepEqual(t.bootstrap, { B: 100, seed: 5, generator: 'mulberry32', percentiles: [2.5, 97.5] });
  assert.equal(t.bootstrap95.mean_de.n_valid, 100);
  assert.deepEqual(datasetStatistics(prompts, { bootstrap: 100, seed: 5 }), s);
  // the CI brackets the point estimate for a mean
  assert.ok(t.bootstrap95.mean_de.lo! <= t.mean.de! && t.mean.de! <= t.bootstrap95.mean_de.hi!);
});

test('CSV rows carry every component and empty cells for nulls', () => {
  const g = loadGolden('tiny-gpt2');
  const stats = datasetStatistics(goldenPrompts(g, 'zero'), { indices: g.bootstrap_indices });
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

test('missing ablations and bad indices are user errors', () => {
  const g = loadGolden('tiny-gpt2');
  const prompts = goldenPrompts(g, 'zero');
  assert.throws(() => datasetStatistics(prompts, { indices: [[0, 1, 99, 0, 0, 0, 0, 0]] }), HydraError);
  assert.throws(() => datasetStatistics(prompts, { components: ['attn.7'] }), HydraError);
});
