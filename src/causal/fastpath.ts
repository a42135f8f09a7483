import type { Target } from '../models/components.js';
import type { HookedModel, KVCache } from '../models/model.js';
import type { AblatedRun, CleanContext } from './effects.js';
import { dot } from './readout.js';

/**
 * The fast path. An intervention at the last position t changes nothing at earlier
 * positions, so an ablated run only recomputes position t, from the stage after the
 * ablated component on, attending to the clean keys and values of positions < t. The
 * model's residual plan says where each row starts and what the patch changes there
 * (`plan.startRow`); the model recomputes every row together (`recomputeLast`), reading
 * out each block's direct effect on the way, and applies a joint ablation's later members
 * when their stage is reached. This file only turns ablations into rows and rows back into DE'.
 */
export interface AblationRow {
  /** Index of the prompt in the clean batch. */
  prompt: number;
  target: Target;
  /** One patch per member of the target. */
  patches: Float32Array[];
}

/**
 * Ablated runs per fast-path run by default: a power of two near a size of the MLP's hidden
 * activations, in [256, 4096]. A part's intermediates stay in the sessions' arenas, and its
 * fixed costs are shared by its rows: two-byte weights are widened once per part and layer,
 * so they get 16 MiB (llama-1b, bf16: 512 rows 133 runs/s, 256 rows 98), float32 weights
 * 8 MiB (GPT-2-small: 512 rows as fast as 1024, and ~50 MB less peak memory).
 */
export function defaultBatchRows(model: { spec: { dMlp: number }; widensWeights: boolean }): number {
  const bytes = (model.widensWeights ? 16 : 8) * 2 ** 20;
  const rows = bytes / (4 * model.spec.dMlp);
  return Math.min(4096, Math.max(256, 2 ** Math.floor(Math.log2(rows))));
}

export async function runFastPath(model: HookedModel, ctxs: CleanContext[], cache: KVCache, rows: AblationRow[], withHeads: boolean, taps?: number[]): Promise<AblatedRun[]> {
  const starts = rows.map((r) => model.plan.startRow(ctxs[r.prompt].acts, r.target.members.map((m, i) => ({ component: m, value: r.patches[i] }))));
  // The readout of the measured quantity at the clean scale: DE'(c) = c · q / σ.
  const readout = ctxs.map((c) => Float32Array.from(c.q, (v) => v / c.acts.sigma));
  const runs = await model.recomputeLast(
    cache,
    rows.map((r, k) => ({ prompt: r.prompt, resid: starts[k].resid, start: starts[k].start, later: starts[k].later.length ? starts[k].later : undefined })),
    readout,
    withHeads,
    taps,
  );
  return rows.map((r, k) => {
    const ctx = ctxs[r.prompt];
    const dePrime = { ...ctx.de };
    const set = (values: Map<string, Float32Array>) => {
      for (const [name, v] of values) if (name in dePrime) dePrime[name] = dot(v, ctx.q) / ctx.acts.sigma;
    };
    set(starts[k].values);
    Object.assign(dePrime, runs[k].de);
    const later = runs[k].values;
    if (later) set(later);
    const valueOf = (name: string) => later?.get(name) ?? starts[k].values.get(name)!;
    return { z: runs[k].z, dePrime, memberValues: r.target.members.map((m) => valueOf(m.name)), stageIn: runs[k].stageIn };
  });
}
