import path from 'node:path';
import { ablationKind, needsPool, noiseStd } from '../causal/ablations.js';
import { analyze } from '../causal/analysis.js';
import { CleanBank } from '../causal/bank.js';
import { HydraError } from '../io/errors.js';
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
  /** Source prompts for resample and mean, and the noise std's prompts (see sourcePool). */
  pool?: number[][];
  /** Resample: also draw pool prompts whose clean token is the prompt's own. */
  allowSameAnswer?: boolean;
}

/** The clean runs of each pool, per model: computed on the first ablation that needs them, then reused. */
const banks = new WeakMap<HookedModel, WeakMap<number[][], CleanBank>>();

/** The model's clean bank of `pool` (the same array gives the same bank). */
export function poolBank(model: HookedModel, pool: number[][]): CleanBank {
  let byPool = banks.get(model);
  if (!byPool) banks.set(model, (byPool = new WeakMap()));
  let bank = byPool.get(pool);
  if (!bank) byPool.set(pool, (bank = new CleanBank(model, pool)));
  return bank;
}

const noiseStds = new WeakMap<CleanBank, Promise<number>>();
function poolNoiseStd(model: HookedModel, pool: number[][]): Promise<number> {
  const bank = poolBank(model, pool);
  let std = noiseStds.get(bank);
  if (!std) noiseStds.set(bank, (std = noiseStd(model, pool)));
  return std;
}

/**
 * One prompt's ablations (Figure 1). Resample sources are pool prompts (their indices in the pool)
 * drawn by analyze's seeded generator as for prompt 0 of `hydra effects` on [prompt, ...pool], and
 * the mean patch averages the pool. The pool's clean runs are cached per model and pool, so an
 * ablation runs the prompt's clean forward and its ablated runs only.
 */
export async function profilePrompt(model: HookedModel, ids: number[], opts: ProfileOptions): Promise<PromptResult> {
  const pool = opts.pool ?? [];
  const kind = ablationKind(opts.kind);
  if (needsPool(kind) && pool.length === 0) {
    throw new HydraError(`${opts.kind} ablation needs source prompts, and none is usable (empty, or longer than the context); give \`sources\` with prompts the model can run`);
  }
  const [result] = await analyze(model, [ids], {
    kind: opts.kind,
    samples: opts.samples,
    seed: opts.seed,
    targets: opts.targets,
    heads: opts.heads,
    allowSameAnswer: opts.allowSameAnswer,
    pool: pool.length ? poolBank(model, pool) : undefined,
    // A prompt typed alone has no subject: noise on every position, std from the pool's prompts (the dataset).
    noiseStd: kind.pool === 'std' && pool.length ? await poolNoiseStd(model, pool) : undefined,
    batchPrompts: 1,
  });
  return result;
}
