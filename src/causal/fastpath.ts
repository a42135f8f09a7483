import type { Component } from '../models/components.js';
import type { HookedModel, KVCache } from '../models/model.js';
import type { AblatedRun, CleanContext } from './effects.js';
import { dot } from './readout.js';

/**
 * The fast path. An intervention at the last position t changes nothing at earlier
 * positions, so an ablated run only recomputes position t, from the stage after the
 * ablated component on, attending to the clean keys and values of positions < t. The
 * model's residual plan says where each row starts and what the patch changes there
 * (`plan.startRow`); the model recomputes every row together (`recomputeLast`), reading
 * out each block's direct effect on the way. This file only turns ablations into rows
 * and rows back into DE'.
 */
export interface AblationRow {
  /** Index of the prompt in the clean batch. */
  prompt: number;
  target: Component;
  patch: Float32Array;
}

export async function runFastPath(model: HookedModel, ctxs: CleanContext[], cache: KVCache, rows: AblationRow[], withHeads: boolean, taps?: number[]): Promise<AblatedRun[]> {
  const starts = rows.map((r) => model.plan.startRow(ctxs[r.prompt].acts, [{ component: r.target, value: r.patch }]));
  // The readout of the clean token at the clean scale: DE'(c) = c · q / σ.
  const readout = ctxs.map((c) => Float32Array.from(c.q, (v) => v / c.acts.sigma));
  const runs = await model.recomputeLast(
    cache,
    rows.map((r, k) => ({ prompt: r.prompt, resid: starts[k].resid, start: starts[k].start })),
    readout,
    withHeads,
    taps,
  );
  return rows.map((r, k) => {
    const ctx = ctxs[r.prompt];
    const dePrime = { ...ctx.de };
    for (const [name, v] of starts[k].values) if (name in dePrime) dePrime[name] = dot(v, ctx.q) / ctx.acts.sigma;
    Object.assign(dePrime, runs[k].de);
    return { z: runs[k].z, dePrime, targetValue: starts[k].values.get(r.target.name), stageIn: runs[k].stageIn };
  });
}
