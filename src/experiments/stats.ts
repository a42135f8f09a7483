/**
 * Dataset-wide statistics of METHOD.md ("Dataset-wide statistics"; paper Figures 2, 7, 8),
 * per ablated component k, across prompts, from each prompt's patch-averaged effects.
 *
 * Everything is computed in DuckDB: the per-prompt series sit in a table, each bootstrap
 * resample is a table of prompt weights (how often each prompt was drawn), and one GROUP BY
 * (component, resample) yields every statistic of every resample from weighted sums. So the
 * memory of a report does not grow with the number of prompts, only its DuckDB work does.
 *
 * The bootstrap resamples groups when the dataset gives them (known_1000's relation_id, a
 * `group` column, the story templates): a resample draws as many groups as there are, with
 * replacement, from mulberry32(seed), and takes every prompt of each drawn group. Without
 * groups every prompt is its own group, which is the plain prompt bootstrap.
 *
 * The output mirrors the reference fixtures' `dataset_stats.<kind>.<target>` with snake_case
 * names: pearson_DE_vs_negTE -> pearson_de_vs_neg_te, ols_CE_on_removed -> ols_ce_on_removed,
 * bootstrap95.slope_CE -> bootstrap95.slope_ce, and so on.
 */
import { DuckDBInstance, type DuckDBConnection, DOUBLE, INTEGER, VARCHAR } from '@duckdb/node-api';
import type { PromptResult } from '../causal/types.js';
import { HydraError, check } from '../io/errors.js';
import { mulberry32 } from '../causal/random.js';
import { layerKind } from '../models/components.js';
import { appendColumns } from './store.js';

export interface Ols {
  slope: number | null;
  intercept: number | null;
  /** 1 − SS_res/SS_tot; null when SS_tot = 0 (y constant, e.g. nothing downstream). */
  r2: number | null;
}

export interface Interval {
  /** Lower percentile over the valid resamples (linear interpolation, as numpy.percentile); null if none valid. */
  lo: number | null;
  /** Upper percentile. */
  hi: number | null;
  /** Resamples where the statistic was defined. */
  n_valid: number;
}

export interface Means {
  de: number | null;
  te: number | null;
  ce: number | null;
  ce_attn: number | null;
  ce_mlp: number | null;
  ne: number | null;
  ie: number | null;
  /** Mean of −ΔDE_k(k), the direct effect the ablation removed. */
  removed_de: number | null;
}

/** The statistics that get a bootstrap interval; the first ten are those of the reference fixtures. */
export const BOOTSTRAP_STATS = [
  'slope_ce', 'r2_ce', 'slope_ce_attn', 'r2_ce_attn', 'slope_ce_mlp', 'r2_ce_mlp',
  'mean_de', 'mean_te', 'mean_ce', 'mean_ne',
  'mean_ce_attn', 'mean_ce_mlp', 'mean_ie', 'mean_removed_de', 'pearson_de_vs_neg_te', 'frac_de_gt_neg_te',
  'slope_ne', 'r2_ne',
] as const;
export type BootstrapStat = (typeof BOOTSTRAP_STATS)[number];

/** The per-prompt series a component's statistics read. */
export const SERIES = ['de', 'te', 'ce', 'ce_attn', 'ce_mlp', 'ne', 'ie', 'removed'] as const;
export type Series = (typeof SERIES)[number];

export interface BootstrapInfo {
  /** Number of resamples. */
  B: number;
  /** Seed of the mulberry32 generator that drew them; null when the caller gave the indices. */
  seed: number | null;
  generator: 'mulberry32' | 'given';
  percentiles: [number, number];
  /** What a resample draws: whole groups of prompts, or single prompts. */
  unit: 'groups' | 'prompts';
  /** Number of groups (= prompts when unit is 'prompts'). */
  n_groups: number;
}

export interface ComponentStats {
  component: string;
  /** Prompts used. */
  n: number;
  /** Pearson r of DE(k) with −TE_k; null when either variance is 0. */
  pearson_de_vs_neg_te: number | null;
  /** Fraction of prompts with DE(k) > −TE_k (strict). */
  frac_de_gt_neg_te: number | null;
  /** OLS of CE_k on removed = −ΔDE_k(k). */
  ols_ce_on_removed: Ols;
  ols_ce_attn_on_removed: Ols;
  ols_ce_mlp_on_removed: Ols;
  /** OLS of NE_k on the removed DE: the share carried by the final norm's scale. */
  ols_ne_on_removed: Ols;
  mean: Means;
  /** Series that take one value in every prompt (that value), which makes some statistics undefined. */
  constant: Partial<Record<Series, number>>;
  bootstrap95: Record<BootstrapStat, Interval>;
  bootstrap: BootstrapInfo;
}

export interface StatsOptions {
  /** Number of bootstrap resamples (default 1000); ignored when `indices` is given. */
  bootstrap?: number;
  /** Seed of the resampling generator (default 0). */
  seed?: number;
  /** Explicit resamples: each a list of n prompt positions (into `prompts`), drawn with replacement. */
  indices?: number[][];
  /** Components to summarise; default: every component ablated in all prompts, in first-prompt order. */
  components?: string[];
  /** The group of each prompt (by position); null or absent = its own group. */
  groups?: (string | null)[];
}

export const DEFAULT_BOOTSTRAP = 1000;
export const DEFAULT_SEED = 0;

/** Most bootstrap resamples (the weights table has up to B × n rows in DuckDB). */
export const MAX_BOOTSTRAP = 10_000;

/** The bootstrap's generator: the same seeded mulberry32 as the resample sources. */
export { mulberry32 };

/** Group of each position: equal non-null labels share a group, null is a group of its own. Returns group ids 0..G-1 in first-seen order. */
export function groupIds(groups: readonly (string | null)[]): { ids: number[]; count: number } {
  const seen = new Map<string, number>();
  let count = 0;
  const ids = groups.map((g) => {
    if (g === null) return count++;
    let id = seen.get(g);
    if (id === undefined) {
      id = count++;
      seen.set(g, id);
    }
    return id;
  });
  return { ids, count };
}

const U32 = '4294967296::UBIGINT';

/**
 * CTEs r0..r2 computing mulberry32(seed)'s k-th output for k in 0..count−1, as `t` of r2 (the
 * output is t / 2^32). The generator's state after k + 1 steps is seed + (k+1)·0x6d2b79f5 mod 2^32,
 * so every draw is a pure function of k and the bootstrap is one set-based query; arithmetic is
 * unsigned mod 2^32, as Math.imul's.
 */
function mulberryCtes(seed: number, count: number): string {
  return `r0 AS (SELECT range AS k, (${seed >>> 0}::UBIGINT + (range + 1)::UBIGINT * 1831565813::UBIGINT) % ${U32} AS a FROM range(${count})),
    r1 AS (SELECT k, (xor(a, a >> 15) * (a | 1)) % ${U32} AS t FROM r0),
    r2 AS (SELECT k, xor(t, (t + (xor(t, t >> 7) * (t | 61)) % ${U32}) % ${U32}) AS t FROM r1)`;
}

// ---------------------------------------------------------------- SQL

/** Weighted sums of the centred series per (component, resample); the statistics are formulas on them. */
const REGRESSIONS = { ce: 'ce', ce_attn: 'ce_attn', ce_mlp: 'ce_mlp', ne: 'ne' } as const;

/** SQL of one resample's statistics from the weighted sums (aliases of `sumsSql`). */
function statsSql(): string {
  // A series that takes one value has zero variance by definition (min = max), not by a rounded sum.
  const v = (s: string) => `CASE WHEN ${s}_min = ${s}_max THEN 0 ELSE s_${s}${s} - s_${s} * s_${s} / n END`;
  const cov = (a: string, b: string) => `(s_${a}${b} - s_${a} * s_${b} / n)`;
  const parts: string[] = ['component', 'b', 'n'];
  for (const y of Object.keys(REGRESSIONS)) {
    parts.push(`CASE WHEN x_min = x_max THEN NULL WHEN ${y}_min = ${y}_max THEN 0 ELSE ${cov('x', y)} / (${v('x')}) END AS slope_${y}`);
    parts.push(`CASE WHEN x_min = x_max OR ${y}_min = ${y}_max THEN NULL ELSE ${cov('x', y)} * ${cov('x', y)} / ((${v('x')}) * (${v(y)})) END AS r2_${y}`);
    parts.push(`${y}_0 + s_${y} / n - (CASE WHEN x_min = x_max THEN NULL WHEN ${y}_min = ${y}_max THEN 0 ELSE ${cov('x', y)} / (${v('x')}) END) * (x_0 + s_x / n) AS intercept_${y}`);
  }
  for (const [name, s] of [['de', 'de'], ['te', 'te'], ['ce', 'ce'], ['ne', 'ne'], ['ce_attn', 'ce_attn'], ['ce_mlp', 'ce_mlp'], ['ie', 'ie'], ['removed_de', 'x']]) {
    parts.push(`${s}_0 + s_${s} / n AS mean_${name}`);
  }
  parts.push(`CASE WHEN n < 2 OR de_min = de_max OR te_min = te_max THEN NULL ELSE -${cov('de', 'te')} / sqrt((${v('de')}) * (${v('te')})) END AS pearson_de_vs_neg_te`);
  parts.push('n_gt / n AS frac_de_gt_neg_te');
  for (const s of ['de', 'te', 'ce', 'ce_attn', 'ce_mlp', 'ne', 'ie', 'x']) parts.push(`${s}_min = ${s}_max AS ${s}_const`, `${s}_min AS ${s}_value`);
  return parts.join(',\n  ');
}

/** Weighted sums per (component, resample) of the series centred on their full-sample means. */
function sumsSql(series: string, weights: string): string {
  const cols = ['de', 'te', 'ce', 'ce_attn', 'ce_mlp', 'ne', 'ie'];
  const centre = [...cols.map((c) => `s.${c} - m.${c}_0 AS ${c}, s.${c} AS ${c}_raw`), 's.removed - m.x_0 AS x', 's.removed AS x_raw',
    'CAST(s.de > -s.te AS DOUBLE) AS gt'];
  const sums = ['sum(w.w)::DOUBLE AS n', 'sum(w.w * gt) AS n_gt'];
  for (const c of [...cols, 'x']) sums.push(`sum(w.w * ${c}) AS s_${c}`, `sum(w.w * ${c} * ${c}) AS s_${c}${c}`, `min(${c}_raw) AS ${c}_min`, `max(${c}_raw) AS ${c}_max`, `any_value(m.${c}_0) AS ${c}_0`);
  for (const y of Object.keys(REGRESSIONS)) sums.push(`sum(w.w * x * ${y}) AS s_x${y}`);
  sums.push('sum(w.w * de * te) AS s_dete');
  return `WITH m AS (SELECT component, ${cols.map((c) => `avg(${c}) AS ${c}_0`).join(', ')}, avg(removed) AS x_0 FROM ${series} GROUP BY component),
  z AS (SELECT s.pos, s.component, ${centre.join(', ')} FROM ${series} s JOIN m USING (component))
  SELECT z.component, w.b, ${sums.join(', ')}
  FROM z JOIN ${weights} w USING (pos) JOIN m USING (component) GROUP BY z.component, w.b`;
}

let tableSeq = 0;

/** The number of resamples asked for, checked against MAX_BOOTSTRAP. */
function bootstrapCount(opts: StatsOptions): number {
  const B = opts.bootstrap ?? DEFAULT_BOOTSTRAP;
  if (!Number.isInteger(B) || B < 0 || B > MAX_BOOTSTRAP) throw new HydraError(`bootstrap resamples must be an integer from 0 to ${MAX_BOOTSTRAP}, got ${B}`);
  return B;
}

/**
 * A temp table (b INTEGER, pos INTEGER, w INTEGER) of bootstrap prompt weights on `con`: b = 0 is
 * the full sample (every pos weight 1), b = 1..B the resamples (whole groups drawn with
 * replacement from mulberry32(seed), or the given `indices`). The caller drops the table.
 */
export async function bootstrapWeights(con: DuckDBConnection, n: number, opts: StatsOptions = {}): Promise<{ table: string; info: BootstrapInfo }> {
  check(n > 0, 'no prompts to compute statistics on; check the prompt filter');
  const groups = opts.groups ?? Array.from({ length: n }, () => null);
  check(groups.length === n, `${groups.length} groups for ${n} prompts; give one group per prompt`);
  // one thread: parallel sums add in varying order, and a rerun must give the same bits
  await con.run('SET threads TO 1');
  const { ids, count: G } = groupIds(groups);
  const unit: BootstrapInfo['unit'] = G < n ? 'groups' : 'prompts';
  const weights = `stat_w${++tableSeq}`;
  // Plain INSERTs: appenders are refused on a read-only database, even into temp tables.
  const pairs = (xs: [number, number][]) => xs.map(([u, v]) => `${u}:${v}`).join(',');
  const fromPairs = (param: string) => `(SELECT split_part(x, ':', 1)::INTEGER AS u, split_part(x, ':', 2)::INTEGER AS v FROM (SELECT unnest(string_split(${param}, ',')) AS x))`;
  let info: BootstrapInfo;
  if (opts.indices) {
    const flat: [number, number][] = [];
    opts.indices.forEach((row, b) => {
      for (const i of row) {
        if (!Number.isInteger(i) || i < 0 || i >= n) throw new HydraError(`bootstrap indices must be integers in [0, ${n}) for ${n} prompts`);
        flat.push([b + 1, i]);
      }
    });
    info = { B: opts.indices.length, seed: null, generator: 'given', percentiles: [2.5, 97.5], unit: 'prompts', n_groups: n };
    await con.run(`CREATE OR REPLACE TEMP TABLE ${weights} AS
      SELECT b, pos, count(*)::INTEGER AS w FROM (SELECT u AS b, v AS pos FROM ${fromPairs('$1')} UNION ALL SELECT 0, range::INTEGER FROM range(${n}))
      GROUP BY b, pos`, [pairs(flat)]);
  } else {
    const B = bootstrapCount(opts);
    const seed = opts.seed ?? DEFAULT_SEED;
    check(Number.isInteger(seed) && seed >= 0, `bootstrap seed must be a non-negative integer, got ${seed}`);
    info = { B, seed, generator: 'mulberry32', percentiles: [2.5, 97.5], unit, n_groups: G };
    // resample b (1..B) draws G groups: draw i is group floor(u·G) with u the (b−1)·G + i-th output
    await con.run(`CREATE OR REPLACE TEMP TABLE ${weights} AS
      WITH pg AS (SELECT u AS pos, v AS gid FROM ${fromPairs('$1')}), ${mulberryCtes(seed, B * G)},
      d AS (SELECT (k // ${G} + 1)::INTEGER AS b, floor(xor(t, t >> 14) / 4294967296.0 * ${G})::INTEGER AS gid FROM r2)
      SELECT d.b, pg.pos, count(*)::INTEGER AS w FROM d JOIN pg USING (gid) GROUP BY d.b, pg.pos
      UNION ALL SELECT 0, range::INTEGER, 1 FROM range(${n})`, [pairs(ids.map((g, pos) => [pos, g]))]);
  }
  return { table: weights, info };
}

/**
 * A statistics session on one DuckDB connection: the series table, the resample weights and
 * every resample's statistics stay in DuckDB temp tables, so intervals at other levels (the
 * findings' Bonferroni levels) are one more query.
 */
export class Statistics {
  private constructor(
    private readonly con: DuckDBConnection,
    /** Temp table of (component, b, statistics...) for every resample b (b = 0: the full sample). */
    private readonly bootTable: string,
    readonly stats: Record<string, ComponentStats>,
    readonly info: BootstrapInfo,
    private readonly onClose: () => void,
  ) {}

  /**
   * Statistics of the series table `series` (pos INTEGER, component VARCHAR, de, te, ce, ce_attn,
   * ce_mlp, ne, ie, removed DOUBLE; pos = 0..n-1 the prompt's position) on `con`.
   */
  static async fromSeries(con: DuckDBConnection, series: string, n: number, opts: StatsOptions = {}, onClose: () => void = () => {}): Promise<Statistics> {
    check(n > 0, 'no prompts to compute statistics on; check the prompt filter');
    const { table: weights, info } = await bootstrapWeights(con, n, opts);
    const boot = `stat_boot${++tableSeq}`;

    const present = await rows(con, `SELECT component, count(*) AS c, min(rowid) AS r FROM ${series} GROUP BY component ORDER BY r`);
    const complete = present.filter((r) => Number(r.c) === n).map((r) => String(r.component));
    const components = opts.components ?? complete;
    for (const k of components) check(complete.includes(k), `not every prompt has an ablation of ${k}; statistics need every prompt ablated at the same components`);

    await con.run(`CREATE OR REPLACE TEMP TABLE ${boot} AS SELECT ${statsSql()} FROM (${sumsSql(series, weights)})`);
    await con.run(`DROP TABLE ${weights}`);
    const run = new Statistics(con, boot, {}, info, onClose);
    const point = new Map((await rows(con, `SELECT * FROM ${boot} WHERE b = 0`)).map((r) => [String(r.component), r]));
    const ivs = await run.intervals(BOOTSTRAP_STATS, 0.95);
    for (const k of components) run.stats[k] = componentStats(k, point.get(k)!, ivs.get(k)!, info);
    return run;
  }

  /** Statistics of in-memory results (tests, the explorer): a private in-memory DuckDB holds the series. */
  static async fromPrompts(prompts: PromptResult[], opts: StatsOptions = {}): Promise<Statistics> {
    if (!opts.indices) bootstrapCount(opts);
    check(prompts.length > 0, 'no prompts to compute statistics on; check the prompt filter');
    const instance = await DuckDBInstance.create(':memory:');
    const con = await instance.connect();
    try {
      await con.run(`CREATE TEMP TABLE series (pos INTEGER, component VARCHAR, ${SERIES.map((s) => `${s} DOUBLE`).join(', ')})`);
      const cols: (string | number)[][] = Array.from({ length: 2 + SERIES.length }, () => []);
      prompts.forEach((p, pos) => {
        for (const [k, a] of Object.entries(p.ablations)) {
          const de = p.de[k];
          if (de === undefined) throw new HydraError(`prompt ${p.index} has no clean direct effect for ${k}`);
          const vals = [pos, k, de, a.te, a.ce, a.ce_attn, a.ce_mlp, a.ne, a.ie, -a.dde_self];
          vals.forEach((v, j) => cols[j].push(v));
        }
      });
      await appendColumns(con, 'series', [INTEGER, VARCHAR, ...SERIES.map(() => DOUBLE)], cols);
      const close = () => {
        con.closeSync();
        instance.closeSync();
      };
      return await Statistics.fromSeries(con, 'series', prompts.length, opts, close);
    } catch (e) {
      con.closeSync();
      instance.closeSync();
      throw e;
    }
  }

  /** Percentile intervals at `level` (e.g. 1 − 0.05/m) of the given statistics, per component. */
  async intervals(statNames: readonly BootstrapStat[], level: number): Promise<Map<string, Record<string, Interval>>> {
    check(level > 0 && level < 1, `interval level ${level} must be in (0, 1)`);
    const q = [(1 - level) / 2, 1 - (1 - level) / 2];
    const sel = statNames.map((s) => `quantile_cont(${s}, [${q[0]}, ${q[1]}]) FILTER (WHERE b > 0) AS ${s}_q, count(${s}) FILTER (WHERE b > 0) AS ${s}_n`);
    const out = new Map<string, Record<string, Interval>>();
    for (const r of await rows(this.con, `SELECT component, ${sel.join(', ')} FROM ${this.bootTable} GROUP BY component`)) {
      const rec: Record<string, Interval> = {};
      for (const s of statNames) {
        const qs = r[`${s}_q`] as number[] | null;
        rec[s] = { lo: qs?.[0] ?? null, hi: qs?.[1] ?? null, n_valid: Number(r[`${s}_n`]) };
      }
      out.set(String(r.component), rec);
    }
    return out;
  }

  close(): void {
    this.onClose();
  }
}

/** A query's rows as plain objects. */
export async function rows(con: DuckDBConnection, sql: string, params?: string[]): Promise<Record<string, unknown>[]> {
  return (await con.runAndReadAll(sql, params)).getRowObjectsJS() as Record<string, unknown>[];
}

const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

function componentStats(component: string, r: Record<string, unknown>, ivs: Record<string, Interval>, info: BootstrapInfo): ComponentStats {
  const o = (y: string): Ols => ({ slope: numOrNull(r[`slope_${y}`]), intercept: numOrNull(r[`intercept_${y}`]), r2: numOrNull(r[`r2_${y}`]) });
  const constant: Partial<Record<Series, number>> = {};
  for (const s of SERIES) {
    const col = s === 'removed' ? 'x' : s;
    if (r[`${col}_const`] === true) constant[s] = Number(r[`${col}_value`]);
  }
  const bootstrap95 = {} as Record<BootstrapStat, Interval>;
  for (const s of BOOTSTRAP_STATS) bootstrap95[s] = ivs[s];
  return {
    component,
    n: Number(r.n),
    pearson_de_vs_neg_te: numOrNull(r.pearson_de_vs_neg_te),
    frac_de_gt_neg_te: numOrNull(r.frac_de_gt_neg_te),
    ols_ce_on_removed: o('ce'),
    ols_ce_attn_on_removed: o('ce_attn'),
    ols_ce_mlp_on_removed: o('ce_mlp'),
    ols_ne_on_removed: o('ne'),
    mean: {
      de: numOrNull(r.mean_de), te: numOrNull(r.mean_te), ce: numOrNull(r.mean_ce), ce_attn: numOrNull(r.mean_ce_attn),
      ce_mlp: numOrNull(r.mean_ce_mlp), ne: numOrNull(r.mean_ne), ie: numOrNull(r.mean_ie), removed_de: numOrNull(r.mean_removed_de),
    },
    constant,
    bootstrap95,
    bootstrap: info,
  };
}

/** The dataset-wide statistics of every ablated component (METHOD.md) of in-memory results, keyed by component. */
export async function datasetStatistics(prompts: PromptResult[], opts: StatsOptions = {}): Promise<Record<string, ComponentStats>> {
  const run = await Statistics.fromPrompts(prompts, opts);
  try {
    return run.stats;
  } finally {
    run.close();
  }
}

// ---------------------------------------------------------------- series from a results store

/** What statistics of a results store read: the kept prompts (in prompt order) and their groups. */
export interface StoreSeries {
  /** Kept prompts. */
  n: number;
  /** Group of each kept prompt, in prompt order (null: none). */
  groups: (string | null)[];
  /** Where the groups came from, for the report. */
  grouping: string;
}

/**
 * Temp tables `stat_prompts` (prompt_idx, pos, grp, sigma) and `series` (the frozen-scale series of
 * METHOD.md) on a results store's connection, for Statistics.fromSeries.
 */
export async function storeSeries(con: DuckDBConnection, dataset: string): Promise<StoreSeries> {
  const hasGroup = (await rows(con, `SELECT 1 FROM duckdb_columns() WHERE table_name = 'prompts' AND column_name = 'group_id' AND database_name = current_database()`)).length > 0;
  await con.run(`CREATE OR REPLACE TEMP TABLE stat_prompts AS
    SELECT p.prompt_idx, (row_number() OVER (ORDER BY p.prompt_idx) - 1)::INTEGER AS pos, ${hasGroup ? 'p.group_id' : 'NULL::VARCHAR'} AS grp, p.sigma
    FROM prompts p JOIN done d USING (prompt_idx) WHERE p.kept AND d.kept ORDER BY p.prompt_idx`);
  await con.run(`CREATE OR REPLACE TEMP TABLE series AS
    SELECT k.pos, e.component, c.de, e.te, e.ce, e.ce_attn, e.ce_mlp, e.ne, e.ie, -e.dde_self AS removed
    FROM effects e JOIN stat_prompts k USING (prompt_idx) JOIN clean_de c ON c.prompt_idx = e.prompt_idx AND c.component = e.component
    ORDER BY e.prompt_idx, e.rowid`);
  const groups = (await rows(con, 'SELECT grp FROM stat_prompts ORDER BY pos')).map((r) => (r.grp === null ? null : String(r.grp)));
  const named = groups.filter((g) => g !== null).length;
  const grouping = named === 0 ? 'none: every prompt is its own group'
    : dataset === 'known_1000' ? 'relation_id of known_1000' : `the dataset's group column${named < groups.length ? ` (${groups.length - named} prompts without one are each their own group)` : ''}`;
  return { n: groups.length, groups, grouping };
}

/**
 * Temp table `series_own` of the own-scale variant (METHOD.md: the ablated run's own final-norm
 * scale, an option that must be labelled): per patch DE'_own(c) = DE'(c)·σ/σ', since the unembedding
 * is linear in 1/s; ΔDE, CE, CE_attn, CE_mlp and the removed DE follow, averaged over patches; `ne`
 * holds what the own scale leaves over, TE − ΔDE_own(k) − CE_own. Layer-level ablations only.
 * Returns false when the store has no per-patch rows to derive it from.
 *
 * What is downstream of each ablated layer comes from the sweep's stored plan (`downstream`, the
 * run config's); stores written before it recorded one get the old rule: later layers, and a
 * layer's own MLP after its attention unless the stored CE_mlp shows parallel blocks.
 */
export async function ownScaleSeries(con: DuckDBConnection, downstream?: Record<string, string[]> | null): Promise<boolean> {
  const layer = `'(attn|mlp)\\.[0-9]+'`;
  const patches = await rows(con, `SELECT count(*) AS n FROM patches JOIN stat_prompts USING (prompt_idx)`);
  if (Number(patches[0].n) === 0) return false;
  // "c is downstream of the ablated k", over the columns of d below.
  const isDown = downstream ? (await storeDownstream(con, downstream), 'od.component IS NOT NULL') : await inferredDownstream(con, layer);
  await con.run(`CREATE OR REPLACE TEMP TABLE series_own AS
    WITH pt AS (
      SELECT p.prompt_idx, p.component AS ablated, p.patch_idx, k.sigma / p.sigma_prime AS ratio,
        split_part(p.component, '.', 1) AS ak, split_part(p.component, '.', 2)::INT AS al
      FROM patches p JOIN stat_prompts k USING (prompt_idx) WHERE regexp_full_match(p.component, ${layer})),
    d AS (
      SELECT pt.prompt_idx, pt.ablated, pt.patch_idx, dp.component, split_part(dp.component, '.', 1) AS ck,
        dp.value * pt.ratio - c.de AS dde, ${isDown} AS down
      FROM de_prime dp JOIN pt ON dp.prompt_idx = pt.prompt_idx AND dp.ablated = pt.ablated AND dp.patch_idx = pt.patch_idx
      JOIN clean_de c ON c.prompt_idx = dp.prompt_idx AND c.component = dp.component
      ${downstream ? 'LEFT JOIN own_downstream od ON od.ablated = pt.ablated AND od.component = dp.component' : ''}
      WHERE regexp_full_match(dp.component, ${layer})),
    per_patch AS (
      SELECT prompt_idx, ablated, patch_idx,
        sum(dde) FILTER (WHERE component = ablated) AS dde_self,
        coalesce(sum(dde) FILTER (WHERE ck = 'attn' AND down), 0) AS ce_attn,
        coalesce(sum(dde) FILTER (WHERE ck = 'mlp' AND down), 0) AS ce_mlp
      FROM d GROUP BY prompt_idx, ablated, patch_idx),
    avg_patch AS (
      SELECT prompt_idx, ablated, avg(dde_self) AS dde_self, avg(ce_attn) AS ce_attn, avg(ce_mlp) AS ce_mlp
      FROM per_patch GROUP BY prompt_idx, ablated)
    SELECT k.pos, e.component, c.de, e.te, a.ce_attn + a.ce_mlp AS ce, a.ce_attn, a.ce_mlp,
      e.te - a.dde_self - a.ce_attn - a.ce_mlp AS ne, e.ie, -a.dde_self AS removed
    FROM effects e JOIN stat_prompts k USING (prompt_idx)
    JOIN avg_patch a ON a.prompt_idx = e.prompt_idx AND a.ablated = e.component
    JOIN clean_de c ON c.prompt_idx = e.prompt_idx AND c.component = e.component
    ORDER BY e.prompt_idx, e.rowid`);
  return true;
}

/** The stored downstream sets' layer-level pairs as the temp table own_downstream (ablated, component). */
async function storeDownstream(con: DuckDBConnection, downstream: Record<string, string[]>): Promise<void> {
  const block = (name: string) => ['attn', 'mlp'].includes(layerKind(name) ?? '');
  const pairs = Object.entries(downstream).flatMap(([k, cs]) => (block(k) ? cs.filter(block).map((c) => `('${k}', '${c}')`) : []));
  await con.run(`CREATE OR REPLACE TEMP TABLE own_downstream AS SELECT * FROM (VALUES ${pairs.length ? pairs.join(', ') : "(NULL, NULL)"}) t(ablated, component)`);
}

/** Stores without downstream sets: later layers, and a layer's own MLP after its attention unless blocks are parallel. */
async function inferredDownstream(con: DuckDBConnection, layer: string): Promise<string> {
  // Parallel blocks (NeoX) leave mlp.l out of attn.l's downstream set; the stored CE_mlp says which.
  const par = await rows(con, `WITH d AS (
      SELECT e.prompt_idx, e.component, e.ce_mlp,
        sum(CASE WHEN split_part(dp.component, '.', 2)::INT > split_part(e.component, '.', 2)::INT THEN dp.value - c.de ELSE 0 END) AS later,
        sum(CASE WHEN split_part(dp.component, '.', 2)::INT = split_part(e.component, '.', 2)::INT THEN dp.value - c.de ELSE 0 END) AS same
      FROM effects e JOIN stat_prompts USING (prompt_idx)
      JOIN de_prime dp ON dp.prompt_idx = e.prompt_idx AND dp.ablated = e.component AND dp.patch_idx IS NULL AND dp.component LIKE 'mlp.%'
      JOIN clean_de c ON c.prompt_idx = dp.prompt_idx AND c.component = dp.component
      WHERE e.component LIKE 'attn.%' AND regexp_full_match(e.component, ${layer}) AND regexp_full_match(dp.component, ${layer})
      GROUP BY e.prompt_idx, e.component, e.ce_mlp)
    SELECT sum(abs(ce_mlp - later)) < sum(abs(ce_mlp - later - same)) AS parallel, count(*) AS n FROM d`);
  const parallel = par[0]?.parallel === true;
  const [ck, cl, ak, al] = ["split_part(dp.component, '.', 1)", "split_part(dp.component, '.', 2)::INT", 'pt.ak', 'pt.al'];
  return `(${cl} > ${al} OR (${ck} = 'mlp' AND ${ak} = 'attn' AND ${cl} = ${al} AND NOT ${parallel}))`;
}

// ---------------------------------------------------------------- undefined statistics

const STAT_SERIES: Partial<Record<BootstrapStat, { y?: Series; x?: Series[]; mean?: boolean }>> = {
  mean_ce: { y: 'ce', mean: true }, mean_ce_attn: { y: 'ce_attn', mean: true }, mean_ce_mlp: { y: 'ce_mlp', mean: true },
  slope_ce: { y: 'ce', x: ['removed'] }, r2_ce: { y: 'ce', x: ['removed'] },
  slope_ce_attn: { y: 'ce_attn', x: ['removed'] }, r2_ce_attn: { y: 'ce_attn', x: ['removed'] },
  slope_ce_mlp: { y: 'ce_mlp', x: ['removed'] }, r2_ce_mlp: { y: 'ce_mlp', x: ['removed'] },
  slope_ne: { y: 'ne', x: ['removed'] }, r2_ne: { y: 'ne', x: ['removed'] },
  pearson_de_vs_neg_te: { x: ['de', 'te'] },
};

const SERIES_LABEL: Record<Series, string> = {
  de: 'DE', te: 'TE', ce: 'CE', ce_attn: 'CE_attn', ce_mlp: 'CE_mlp', ne: 'NE', ie: 'IE', removed: 'the removed direct effect',
};

/**
 * Why a statistic of `s` is undefined, or null when it is defined. A regression on (or the mean
 * of) a CE that is exactly 0 in every prompt has nothing downstream to measure; a regression on
 * a constant x or with a constant response has no variance to explain.
 */
export function undefinedReason(s: ComponentStats, stat: BootstrapStat): string | null {
  const d = STAT_SERIES[stat];
  if (!d) return null;
  if (d.y && s.constant[d.y] !== undefined) {
    const v = s.constant[d.y]!;
    // a mean of a constant is defined, unless the constant 0 says that nothing was measured
    if (d.mean && v !== 0) return null;
    if (v === 0 && d.y !== 'ne') {
      const part = d.y === 'ce_attn' ? 'no attention layer' : d.y === 'ce_mlp' ? 'no MLP layer' : 'nothing';
      return `${part} downstream of ${s.component} (${SERIES_LABEL[d.y]} is 0 in every prompt)`;
    }
    return `${SERIES_LABEL[d.y]} takes one value (${v}) in every prompt`;
  }
  for (const x of d.x ?? []) if (s.constant[x] !== undefined) return `${SERIES_LABEL[x]} takes one value in every prompt (zero variance)`;
  if (s.n < 2) return `only ${s.n} prompt`;
  return null;
}

// ---------------------------------------------------------------- CSV

export const CSV_COLUMNS = [
  'component', 'n', 'pearson_de_vs_neg_te', 'pearson_lo', 'pearson_hi', 'frac_de_gt_neg_te', 'frac_lo', 'frac_hi',
  'slope_ce', 'slope_ce_lo', 'slope_ce_hi', 'intercept_ce', 'r2_ce', 'r2_ce_lo', 'r2_ce_hi',
  'slope_ce_attn', 'slope_ce_attn_lo', 'slope_ce_attn_hi', 'intercept_ce_attn', 'r2_ce_attn', 'r2_ce_attn_lo', 'r2_ce_attn_hi',
  'slope_ce_mlp', 'slope_ce_mlp_lo', 'slope_ce_mlp_hi', 'intercept_ce_mlp', 'r2_ce_mlp', 'r2_ce_mlp_lo', 'r2_ce_mlp_hi',
  'slope_ne', 'slope_ne_lo', 'slope_ne_hi',
  'mean_de', 'mean_de_lo', 'mean_de_hi', 'mean_te', 'mean_te_lo', 'mean_te_hi', 'mean_ce', 'mean_ce_lo', 'mean_ce_hi',
  'mean_ce_attn', 'mean_ce_attn_lo', 'mean_ce_attn_hi', 'mean_ce_mlp', 'mean_ce_mlp_lo', 'mean_ce_mlp_hi',
  'mean_ne', 'mean_ne_lo', 'mean_ne_hi', 'mean_ie', 'mean_ie_lo', 'mean_ie_hi', 'mean_removed_de', 'bootstrap_B', 'bootstrap_seed',
  'bootstrap_unit', 'bootstrap_groups',
] as const;
export type CsvRow = Record<(typeof CSV_COLUMNS)[number], string | number | null>;

/** One flat row per component (columns CSV_COLUMNS); null = undefined statistic. */
export function statsToCsvRows(stats: Record<string, ComponentStats>): CsvRow[] {
  return Object.values(stats).map((s) => {
    const b = s.bootstrap95;
    return {
      component: s.component, n: s.n,
      pearson_de_vs_neg_te: s.pearson_de_vs_neg_te, pearson_lo: b.pearson_de_vs_neg_te.lo, pearson_hi: b.pearson_de_vs_neg_te.hi,
      frac_de_gt_neg_te: s.frac_de_gt_neg_te, frac_lo: b.frac_de_gt_neg_te.lo, frac_hi: b.frac_de_gt_neg_te.hi,
      slope_ce: s.ols_ce_on_removed.slope, slope_ce_lo: b.slope_ce.lo, slope_ce_hi: b.slope_ce.hi,
      intercept_ce: s.ols_ce_on_removed.intercept, r2_ce: s.ols_ce_on_removed.r2, r2_ce_lo: b.r2_ce.lo, r2_ce_hi: b.r2_ce.hi,
      slope_ce_attn: s.ols_ce_attn_on_removed.slope, slope_ce_attn_lo: b.slope_ce_attn.lo, slope_ce_attn_hi: b.slope_ce_attn.hi,
      intercept_ce_attn: s.ols_ce_attn_on_removed.intercept, r2_ce_attn: s.ols_ce_attn_on_removed.r2,
      r2_ce_attn_lo: b.r2_ce_attn.lo, r2_ce_attn_hi: b.r2_ce_attn.hi,
      slope_ce_mlp: s.ols_ce_mlp_on_removed.slope, slope_ce_mlp_lo: b.slope_ce_mlp.lo, slope_ce_mlp_hi: b.slope_ce_mlp.hi,
      intercept_ce_mlp: s.ols_ce_mlp_on_removed.intercept, r2_ce_mlp: s.ols_ce_mlp_on_removed.r2,
      r2_ce_mlp_lo: b.r2_ce_mlp.lo, r2_ce_mlp_hi: b.r2_ce_mlp.hi,
      slope_ne: s.ols_ne_on_removed.slope, slope_ne_lo: b.slope_ne.lo, slope_ne_hi: b.slope_ne.hi,
      mean_de: s.mean.de, mean_de_lo: b.mean_de.lo, mean_de_hi: b.mean_de.hi,
      mean_te: s.mean.te, mean_te_lo: b.mean_te.lo, mean_te_hi: b.mean_te.hi,
      mean_ce: s.mean.ce, mean_ce_lo: b.mean_ce.lo, mean_ce_hi: b.mean_ce.hi,
      mean_ce_attn: s.mean.ce_attn, mean_ce_attn_lo: b.mean_ce_attn.lo, mean_ce_attn_hi: b.mean_ce_attn.hi,
      mean_ce_mlp: s.mean.ce_mlp, mean_ce_mlp_lo: b.mean_ce_mlp.lo, mean_ce_mlp_hi: b.mean_ce_mlp.hi,
      mean_ne: s.mean.ne, mean_ne_lo: b.mean_ne.lo, mean_ne_hi: b.mean_ne.hi,
      mean_ie: s.mean.ie, mean_ie_lo: b.mean_ie.lo, mean_ie_hi: b.mean_ie.hi,
      mean_removed_de: s.mean.removed_de,
      bootstrap_B: s.bootstrap.B, bootstrap_seed: s.bootstrap.seed, bootstrap_unit: s.bootstrap.unit, bootstrap_groups: s.bootstrap.n_groups,
    };
  });
}

function csvCell(v: string | number | null): string {
  if (v === null) return '';
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : '';
  return /[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

/** CSV text (header + one row per component); empty cells are undefined statistics. */
export function statsToCsv(stats: Record<string, ComponentStats>): string {
  const rows = statsToCsvRows(stats);
  const lines = [CSV_COLUMNS.join(',')];
  for (const r of rows) lines.push(CSV_COLUMNS.map((c) => csvCell(r[c])).join(','));
  return lines.join('\n') + '\n';
}
