/**
 * Dataset-wide statistics of METHOD.md ("Dataset-wide statistics"; paper Figures 2, 7, 8),
 * per ablated component k, across prompts, from each prompt's patch-averaged effects.
 *
 * The output mirrors the reference fixtures' `dataset_stats.<kind>.<target>` with snake_case
 * names: pearson_DE_vs_negTE -> pearson_de_vs_neg_te, ols_CE_on_removed -> ols_ce_on_removed,
 * bootstrap95.slope_CE -> bootstrap95.slope_ce, and so on.
 */
import type { PromptResult } from '../causal/types.js';
import { HydraError } from '../io/errors.js';
import { mulberry32 } from '../causal/random.js';

export interface Ols {
  slope: number | null;
  intercept: number | null;
  /** 1 − SS_res/SS_tot; null when SS_tot = 0 (y constant, e.g. nothing downstream). */
  r2: number | null;
}

export interface Interval {
  /** 2.5th percentile over the valid resamples (numpy.percentile, linear); null if none valid. */
  lo: number | null;
  /** 97.5th percentile. */
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
] as const;
export type BootstrapStat = (typeof BOOTSTRAP_STATS)[number];

export interface BootstrapInfo {
  /** Number of resamples. */
  B: number;
  /** Seed of the mulberry32 generator that drew them; null when the caller gave the indices. */
  seed: number | null;
  generator: 'mulberry32' | 'given';
  percentiles: [number, number];
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
  mean: Means;
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
}

export const DEFAULT_BOOTSTRAP = 1000;
export const DEFAULT_SEED = 0;

/** Most bootstrap resamples: B × n indices are held at once (10,000 × 1,209 prompts ≈ 100 MB). */
export const MAX_BOOTSTRAP = 10_000;

/** The bootstrap's generator: the same seeded mulberry32 as the resample sources. */
export { mulberry32 };

/** B resamples of n prompt positions with replacement, from mulberry32(seed). */
export function bootstrapIndices(n: number, B: number, seed: number): number[][] {
  const rand = mulberry32(seed);
  const out: number[][] = [];
  for (let b = 0; b < B; b++) {
    const row = new Array<number>(n);
    for (let i = 0; i < n; i++) row[i] = Math.floor(rand() * n);
    out.push(row);
  }
  return out;
}

// ---------------------------------------------------------------- elementary statistics

export function mean(x: ArrayLike<number>): number | null {
  if (x.length === 0) return null;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i];
  return s / x.length;
}

/** Pearson r; null when n < 2 or either variance is 0. */
export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number | null {
  const n = x.length;
  if (n < 2) return null;
  const mx = mean(x)!, my = mean(y)!;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (sxx === 0 || syy === 0) return null;
  return sxy / Math.sqrt(sxx * syy);
}

/** OLS of y on x with intercept. All null when var(x) = 0; r2 null when SS_tot = 0. */
export function ols(x: ArrayLike<number>, y: ArrayLike<number>): Ols {
  const n = x.length;
  const none: Ols = { slope: null, intercept: null, r2: null };
  if (n === 0) return none;
  const mx = mean(x)!, my = mean(y)!;
  let sxy = 0, sxx = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i] - mx;
    sxy += dx * (y[i] - my);
    sxx += dx * dx;
  }
  if (sxx === 0) return none;
  const slope = sxy / sxx;
  const intercept = my - slope * mx;
  let ssRes = 0, ssTot = 0;
  for (let i = 0; i < n; i++) {
    const r = y[i] - (intercept + slope * x[i]);
    const d = y[i] - my;
    ssRes += r * r;
    ssTot += d * d;
  }
  return { slope, intercept, r2: ssTot === 0 ? null : 1 - ssRes / ssTot };
}

/** numpy.percentile(values, q) with the default 'linear' method (including numpy's two-sided lerp). */
export function percentile(values: ArrayLike<number>, q: number): number | null {
  const n = values.length;
  if (n === 0) return null;
  const a = Array.from(values).sort((u, v) => u - v);
  const h = ((n - 1) * q) / 100;
  const i = Math.floor(h);
  if (i >= n - 1) return a[n - 1];
  const t = h - i;
  const lo = a[i], hi = a[i + 1];
  const d = hi - lo;
  // numpy interpolates from the nearer end, which keeps the result monotone and exact at t = 1.
  return t >= 0.5 ? hi - d * (1 - t) : lo + d * t;
}

// ---------------------------------------------------------------- per-component statistics

/** Per-prompt series of one component, in prompt order. */
export interface ComponentSeries {
  de: number[];
  te: number[];
  ce: number[];
  ce_attn: number[];
  ce_mlp: number[];
  ne: number[];
  ie: number[];
  /** −ΔDE_k(k). */
  removed: number[];
}

/** The per-prompt (patch-averaged) values of component k that the statistics use. */
export function componentSeries(prompts: PromptResult[], k: string): ComponentSeries {
  const s: ComponentSeries = { de: [], te: [], ce: [], ce_attn: [], ce_mlp: [], ne: [], ie: [], removed: [] };
  for (const p of prompts) {
    const a = p.ablations[k];
    if (!a) throw new HydraError(`prompt ${p.index} has no ablation of ${k}; statistics need every prompt ablated at the same components`);
    const de = p.de[k];
    if (de === undefined) throw new HydraError(`prompt ${p.index} has no clean direct effect for ${k}`);
    s.de.push(de);
    s.te.push(a.te);
    s.ce.push(a.ce);
    s.ce_attn.push(a.ce_attn);
    s.ce_mlp.push(a.ce_mlp);
    s.ne.push(a.ne);
    s.ie.push(a.ie);
    s.removed.push(-a.dde_self);
  }
  return s;
}

function pick(x: number[], idx: number[]): number[] {
  return idx.map((i) => x[i]);
}

/** Every bootstrapped statistic of one (re)sample. */
function pointStats(s: ComponentSeries): Record<BootstrapStat, number | null> {
  const oCe = ols(s.removed, s.ce), oA = ols(s.removed, s.ce_attn), oM = ols(s.removed, s.ce_mlp);
  const negTe = s.te.map((v) => -v);
  return {
    slope_ce: oCe.slope, r2_ce: oCe.r2,
    slope_ce_attn: oA.slope, r2_ce_attn: oA.r2,
    slope_ce_mlp: oM.slope, r2_ce_mlp: oM.r2,
    mean_de: mean(s.de), mean_te: mean(s.te), mean_ce: mean(s.ce), mean_ne: mean(s.ne),
    mean_ce_attn: mean(s.ce_attn), mean_ce_mlp: mean(s.ce_mlp), mean_ie: mean(s.ie), mean_removed_de: mean(s.removed),
    pearson_de_vs_neg_te: pearson(s.de, negTe),
    frac_de_gt_neg_te: fraction(s.de, negTe),
  };
}

function fraction(de: number[], negTe: number[]): number | null {
  if (de.length === 0) return null;
  let c = 0;
  for (let i = 0; i < de.length; i++) if (de[i] > negTe[i]) c++;
  return c / de.length;
}

function resampleSeries(s: ComponentSeries, idx: number[]): ComponentSeries {
  return {
    de: pick(s.de, idx), te: pick(s.te, idx), ce: pick(s.ce, idx), ce_attn: pick(s.ce_attn, idx),
    ce_mlp: pick(s.ce_mlp, idx), ne: pick(s.ne, idx), ie: pick(s.ie, idx), removed: pick(s.removed, idx),
  };
}

/** Statistics of one component from its per-prompt series, with bootstrap intervals over `resamples`. */
export function seriesStatistics(component: string, s: ComponentSeries, resamples: number[][], info: BootstrapInfo): ComponentStats {
  const n = s.de.length;
  const negTe = s.te.map((v) => -v);
  const point = pointStats(s);
  const draws = {} as Record<BootstrapStat, number[]>;
  for (const k of BOOTSTRAP_STATS) draws[k] = [];
  for (const idx of resamples) {
    const st = pointStats(resampleSeries(s, idx));
    for (const k of BOOTSTRAP_STATS) {
      const v = st[k];
      if (v !== null && Number.isFinite(v)) draws[k].push(v);
    }
  }
  const [pLo, pHi] = info.percentiles;
  const bootstrap95 = {} as Record<BootstrapStat, Interval>;
  for (const k of BOOTSTRAP_STATS) {
    bootstrap95[k] = { lo: percentile(draws[k], pLo), hi: percentile(draws[k], pHi), n_valid: draws[k].length };
  }
  return {
    component,
    n,
    pearson_de_vs_neg_te: point.pearson_de_vs_neg_te,
    frac_de_gt_neg_te: fraction(s.de, negTe),
    ols_ce_on_removed: ols(s.removed, s.ce),
    ols_ce_attn_on_removed: ols(s.removed, s.ce_attn),
    ols_ce_mlp_on_removed: ols(s.removed, s.ce_mlp),
    mean: {
      de: point.mean_de, te: point.mean_te, ce: point.mean_ce, ce_attn: point.mean_ce_attn, ce_mlp: point.mean_ce_mlp,
      ne: point.mean_ne, ie: point.mean_ie, removed_de: point.mean_removed_de,
    },
    bootstrap95,
    bootstrap: info,
  };
}

/** Components ablated in every prompt, in the first prompt's order. */
export function commonComponents(prompts: PromptResult[]): string[] {
  if (prompts.length === 0) return [];
  return Object.keys(prompts[0].ablations).filter((k) => prompts.every((p) => k in p.ablations));
}

/**
 * The dataset-wide statistics of every ablated component (METHOD.md), keyed by component name.
 * Bootstrap resamples are `opts.indices` when given, else `bootstrapIndices(n, opts.bootstrap ?? 1000, opts.seed ?? 0)`;
 * the same resamples serve every component, so intervals are comparable across layers.
 */
export function datasetStatistics(prompts: PromptResult[], opts: StatsOptions = {}): Record<string, ComponentStats> {
  const n = prompts.length;
  let resamples: number[][];
  let info: BootstrapInfo;
  if (opts.indices) {
    for (const row of opts.indices) {
      if (row.some((i) => !Number.isInteger(i) || i < 0 || i >= n)) {
        throw new HydraError(`bootstrap indices must be integers in [0, ${n}) for ${n} prompts`);
      }
    }
    resamples = opts.indices;
    info = { B: resamples.length, seed: null, generator: 'given', percentiles: [2.5, 97.5] };
  } else {
    const B = opts.bootstrap ?? DEFAULT_BOOTSTRAP;
    if (!Number.isInteger(B) || B < 0 || B > MAX_BOOTSTRAP) throw new HydraError(`bootstrap resamples must be an integer from 0 to ${MAX_BOOTSTRAP}, got ${B}`);
    const seed = opts.seed ?? DEFAULT_SEED;
    resamples = n > 0 ? bootstrapIndices(n, B, seed) : [];
    info = { B: resamples.length, seed, generator: 'mulberry32', percentiles: [2.5, 97.5] };
  }
  const components = opts.components ?? commonComponents(prompts);
  const out: Record<string, ComponentStats> = {};
  for (const k of components) out[k] = seriesStatistics(k, componentSeries(prompts, k), resamples, info);
  return out;
}

// ---------------------------------------------------------------- CSV

export const CSV_COLUMNS = [
  'component', 'n', 'pearson_de_vs_neg_te', 'pearson_lo', 'pearson_hi', 'frac_de_gt_neg_te', 'frac_lo', 'frac_hi',
  'slope_ce', 'slope_ce_lo', 'slope_ce_hi', 'intercept_ce', 'r2_ce', 'r2_ce_lo', 'r2_ce_hi',
  'slope_ce_attn', 'slope_ce_attn_lo', 'slope_ce_attn_hi', 'intercept_ce_attn', 'r2_ce_attn', 'r2_ce_attn_lo', 'r2_ce_attn_hi',
  'slope_ce_mlp', 'slope_ce_mlp_lo', 'slope_ce_mlp_hi', 'intercept_ce_mlp', 'r2_ce_mlp', 'r2_ce_mlp_lo', 'r2_ce_mlp_hi',
  'mean_de', 'mean_de_lo', 'mean_de_hi', 'mean_te', 'mean_te_lo', 'mean_te_hi', 'mean_ce', 'mean_ce_lo', 'mean_ce_hi',
  'mean_ce_attn', 'mean_ce_attn_lo', 'mean_ce_attn_hi', 'mean_ce_mlp', 'mean_ce_mlp_lo', 'mean_ce_mlp_hi',
  'mean_ne', 'mean_ne_lo', 'mean_ne_hi', 'mean_ie', 'mean_ie_lo', 'mean_ie_hi', 'mean_removed_de', 'bootstrap_B', 'bootstrap_seed',
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
      mean_de: s.mean.de, mean_de_lo: b.mean_de.lo, mean_de_hi: b.mean_de.hi,
      mean_te: s.mean.te, mean_te_lo: b.mean_te.lo, mean_te_hi: b.mean_te.hi,
      mean_ce: s.mean.ce, mean_ce_lo: b.mean_ce.lo, mean_ce_hi: b.mean_ce.hi,
      mean_ce_attn: s.mean.ce_attn, mean_ce_attn_lo: b.mean_ce_attn.lo, mean_ce_attn_hi: b.mean_ce_attn.hi,
      mean_ce_mlp: s.mean.ce_mlp, mean_ce_mlp_lo: b.mean_ce_mlp.lo, mean_ce_mlp_hi: b.mean_ce_mlp.hi,
      mean_ne: s.mean.ne, mean_ne_lo: b.mean_ne.lo, mean_ne_hi: b.mean_ne.hi,
      mean_ie: s.mean.ie, mean_ie_lo: b.mean_ie.lo, mean_ie_hi: b.mean_ie.hi,
      mean_removed_de: s.mean.removed_de,
      bootstrap_B: s.bootstrap.B, bootstrap_seed: s.bootstrap.seed,
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
