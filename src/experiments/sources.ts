import { mulberry32 } from '../causal/random.js';
import { promptRepairSources, type RepairSources } from '../causal/sources.js';
import type { PromptResult } from '../causal/types.js';
import type { ResidualPlan } from '../models/plan.js';

/**
 * Where the repair comes from, over a prompt set: for each ablated component, the mean over
 * prompts of each part of the split (src/causal/sources.ts) with a 95% percentile bootstrap
 * interval over prompts (mulberry32(seed), the same resamples for every part, so parts can
 * be compared). The share restored is a ratio of means, (Σ CE + Σ NE) / Σ removed.
 */
export interface MeanInterval {
  mean: number | null;
  /** 2.5th and 97.5th percentiles of the bootstrap means; null with fewer than 2 prompts. */
  lo: number | null;
  hi: number | null;
}

export interface DatasetRepairSources {
  prompts: number;
  removed: MeanInterval;
  attn: MeanInterval;
  mlp: MeanInterval;
  ne: MeanInterval;
  restored: MeanInterval;
  layers: Record<string, MeanInterval>;
  heads: Record<string, MeanInterval>;
}

export const DEFAULT_REPAIR_BOOTSTRAP = 1000;

export function datasetRepairSources(plan: ResidualPlan, results: PromptResult[], opts: { bootstrap?: number; seed?: number } = {}): Record<string, DatasetRepairSources> {
  const n = results.length;
  const B = n < 2 ? 0 : (opts.bootstrap ?? DEFAULT_REPAIR_BOOTSTRAP);
  const rand = mulberry32(opts.seed ?? 0);
  const draws = Array.from({ length: B }, () => Int32Array.from({ length: n }, () => Math.floor(rand() * n)));
  const perPrompt = results.map((r) => promptRepairSources(plan, r));
  const out: Record<string, DatasetRepairSources> = {};
  for (const t of Object.keys(results[0]?.ablations ?? {})) {
    const splits = perPrompt.map((p) => p[t]);
    const series = (get: (s: RepairSources) => number) => splits.map(get);
    const ratio = (num: number[], den: number[]) => (idx: ArrayLike<number>) => {
      let a = 0;
      let b = 0;
      for (let k = 0; k < idx.length; k++) {
        a += num[idx[k]];
        b += den[idx[k]];
      }
      return b === 0 ? null : a / b;
    };
    const mean = (xs: number[]) => summarise((idx) => {
      let a = 0;
      for (let k = 0; k < idx.length; k++) a += xs[idx[k]];
      return a / idx.length;
    }, n, draws);
    const back = series((s) => s.attn + s.mlp + s.ne);
    const removed = series((s) => s.removed);
    out[t] = {
      prompts: n,
      removed: mean(removed),
      attn: mean(series((s) => s.attn)),
      mlp: mean(series((s) => s.mlp)),
      ne: mean(series((s) => s.ne)),
      restored: summarise(ratio(back, removed), n, draws),
      layers: Object.fromEntries(Object.keys(splits[0].layers).map((c) => [c, mean(series((s) => s.layers[c]))])),
      heads: Object.fromEntries(Object.keys(splits[0].heads).map((c) => [c, mean(series((s) => s.heads[c]))])),
    };
  }
  return out;
}

/** A statistic on all prompts and its percentile interval over the bootstrap draws. */
function summarise(stat: (idx: ArrayLike<number>) => number | null, n: number, draws: Int32Array[]): MeanInterval {
  const all = stat(Int32Array.from({ length: n }, (_, k) => k));
  const boots = draws.map(stat).filter((v): v is number => v !== null).sort((a, b) => a - b);
  if (boots.length === 0) return { mean: all, lo: null, hi: null };
  return { mean: all, lo: percentile(boots, 2.5), hi: percentile(boots, 97.5) };
}

/** Percentile of sorted values, linear interpolation (numpy's default). */
function percentile(sorted: number[], q: number): number {
  const pos = ((sorted.length - 1) * q) / 100;
  const i = Math.floor(pos);
  return i + 1 < sorted.length ? sorted[i] + (pos - i) * (sorted[i + 1] - sorted[i]) : sorted[i];
}
