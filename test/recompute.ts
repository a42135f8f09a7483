/**
 * An independent plain-JavaScript recomputation of the report's statistics (two-pass sums, sorted
 * percentiles as numpy.percentile), to check the SQL engine of src/experiments/stats.ts against.
 */
import { mulberry32 } from '../src/causal/random.js';

/** The cluster bootstrap's draws: B resamples, each G groups drawn by floor(rand·G) from one mulberry32(seed), all members of each. */
export function groupDraws(groups: (string | null)[], B: number, seed: number): number[][] {
  const key = groups.map((g, i) => (g === null ? `#${i}` : `=${g}`));
  const order: string[] = [];
  for (const k of key) if (!order.includes(k)) order.push(k);
  const members = order.map((k) => key.flatMap((x, i) => (x === k ? [i] : [])));
  const rand = mulberry32(seed);
  const out: number[][] = [];
  for (let b = 0; b < B; b++) {
    const row: number[] = [];
    for (let i = 0; i < order.length; i++) row.push(...members[Math.floor(rand() * order.length)]);
    out.push(row);
  }
  return out;
}

export function mean(x: number[]): number {
  return x.reduce((a, b) => a + b, 0) / x.length;
}

/** Two-pass centred sums of squares and products. */
function sums(x: number[], y: number[]): { sxy: number; sxx: number; syy: number } {
  const mx = mean(x), my = mean(y);
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < x.length; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  return { sxy, sxx, syy };
}

const constant = (v: number[]) => v.every((a) => a === v[0]);

export function ols(x: number[], y: number[]): { slope: number | null; r2: number | null } {
  if (constant(x)) return { slope: null, r2: null };
  if (constant(y)) return { slope: 0, r2: null };
  const { sxy, sxx, syy } = sums(x, y);
  return { slope: sxy / sxx, r2: (sxy * sxy) / (sxx * syy) };
}

export function pearson(x: number[], y: number[]): number | null {
  if (x.length < 2 || constant(x) || constant(y)) return null;
  const { sxy, sxx, syy } = sums(x, y);
  return sxy / Math.sqrt(sxx * syy);
}

/** numpy.percentile(values, q), linear. */
export function percentile(values: number[], q: number): number | null {
  if (values.length === 0) return null;
  const a = [...values].sort((u, v) => u - v);
  const h = ((a.length - 1) * q) / 100;
  const i = Math.floor(h);
  return i >= a.length - 1 ? a[a.length - 1] : a[i] + (a[i + 1] - a[i]) * (h - i);
}

/** Percentile interval at `level` of a statistic over the resamples (undefined values left out). */
export function interval(draws: number[][], stat: (idx: number[]) => number | null, level: number): { lo: number | null; hi: number | null; n_valid: number } {
  const vals = draws.map(stat).filter((v): v is number => v !== null && Number.isFinite(v));
  const a = (100 * (1 - level)) / 2;
  return { lo: percentile(vals, a), hi: percentile(vals, 100 - a), n_valid: vals.length };
}
