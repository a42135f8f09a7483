import path from 'node:path';
import { analyze } from '../causal/analysis.js';
import type { AblationKind, PromptResult } from '../causal/types.js';
import { loadDataset } from '../io/datasets.js';
import { defaultModelDir, storiesRecallPath } from '../io/paths.js';
import type { HookedModel } from '../models/model.js';

/** Prompts a pool holds at most: enough for S = 15 resample sources with room to spare. */
export const POOL_SIZE = 200;

/**
 * The prompts that resample and mean patches of a single prompt come from: `spec` (a dataset
 * path or name), else the bundled story prompts for the bundled model, else known_1000.
 */
export async function sourcePool(model: HookedModel, spec?: string): Promise<number[][]> {
  const name = spec ?? (path.resolve(model.source.dir) === path.resolve(defaultModelDir) ? storiesRecallPath : 'known_1000');
  const ds = await loadDataset(name);
  return ds.records
    .slice(0, POOL_SIZE)
    .map((r) => r.ids ?? model.encode(r.prompt))
    .filter((p) => p.length > 0 && p.length <= model.spec.nCtx);
}

export interface ProfileOptions {
  kind: AblationKind;
  targets: string[];
  samples?: number;
  seed?: number;
  heads?: boolean;
  /** Source prompts for resample and mean (see sourcePool). */
  pool?: number[][];
}

/**
 * One prompt's ablations (Figure 1): the prompt is index 0 of [prompt, ...pool], so resample
 * sources are pool prompts drawn by analyze's seeded generator (the same as `hydra effects` on
 * that list) and the mean patch averages the pool; only the pool prompts used are run.
 */
export async function profilePrompt(model: HookedModel, ids: number[], opts: ProfileOptions): Promise<PromptResult> {
  const pool = opts.kind === 'resample' || opts.kind === 'mean' ? (opts.pool ?? []) : [];
  const prompts = [ids, ...pool];
  const [result] = await analyze(model, prompts, {
    kind: opts.kind,
    samples: opts.samples,
    seed: opts.seed,
    targets: opts.targets,
    heads: opts.heads,
    skip: new Set([...prompts.keys()].filter((i) => i > 0)),
    meanPrompts: pool.length ? pool : undefined,
    batchPrompts: 1,
  });
  return result;
}
