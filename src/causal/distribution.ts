import type { HookedModel } from '../models/model.js';
import type { CleanContext } from './effects.js';
import type { AblationRow } from './fastpath.js';
import { softcap, type LogitReader } from './readout.js';
import { DISTRIBUTION, type DistributionEffects, type PatchEffects } from './types.js';

/**
 * Effects of an ablation on the whole next-token distribution (DISTRIBUTION in types.ts):
 * entropy change, KL(clean ‖ ablated), the clean token's probability before and after, and
 * its rank after. Measured on the model's real logits (soft-capped where the model caps),
 * in float64.
 */

/** Log-softmax in float64. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let j = 0; j < logits.length; j++) max = Math.max(max, logits[j]);
  let sum = 0;
  for (let j = 0; j < logits.length; j++) sum += Math.exp(logits[j] - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits as ArrayLike<number>, (x) => x - lse);
}

/** Entropy of a distribution given by its log-probabilities, in nats. */
function entropy(logp: Float64Array): number {
  let h = 0;
  for (const l of logp) if (l > -Infinity) h -= Math.exp(l) * l;
  return h;
}

/** The distribution fields of one ablated run against its clean run, for clean token i (real logits both). */
export function distributionChange(clean: ArrayLike<number>, ablated: ArrayLike<number>, i: number): DistributionEffects {
  const lp = logSoftmax(clean);
  const lq = logSoftmax(ablated);
  let kl = 0;
  for (let j = 0; j < lp.length; j++) if (lp[j] > -Infinity) kl += Math.exp(lp[j]) * (lp[j] - lq[j]);
  let above = 0;
  for (let j = 0; j < ablated.length; j++) if (ablated[j] > ablated[i]) above++;
  return { dh: entropy(lq) - entropy(lp), kl, p_clean: Math.exp(lp[i]), p_ablated: Math.exp(lq[i]), rank_ablated: 1 + above };
}

/** The model's real logits from raw ones (soft-capped where it caps). */
function real(model: HookedModel, raw: Float32Array): ArrayLike<number> {
  const c = model.spec.finalSoftcap;
  return c === null ? raw : softcap(raw, c);
}

/** A reader of ablated runs' raw logits (see forEachRunLogits) that sets each patch's distribution fields. */
export function distributionReader(model: HookedModel, ctxs: CleanContext[], rows: AblationRow[], effects: PatchEffects[]): LogitReader {
  const cleanReal = new Map<CleanContext, ArrayLike<number>>();
  const cleanOf = (ctx: CleanContext) => {
    if (!cleanReal.has(ctx)) cleanReal.set(ctx, real(model, ctx.acts.logits));
    return cleanReal.get(ctx)!;
  };
  return (k, raw) => {
    const ctx = ctxs[rows[k].prompt];
    effects[k].distribution = distributionChange(cleanOf(ctx), real(model, raw), ctx.acts.token);
  };
}

/** Monte-Carlo average of the distribution fields over patches. */
export function averageDistribution(patches: DistributionEffects[]): DistributionEffects {
  const out = {} as DistributionEffects;
  for (const { key } of DISTRIBUTION) out[key] = patches.reduce((s, p) => s + p[key], 0) / patches.length;
  return out;
}
