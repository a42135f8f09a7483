import type { HookedModel } from '../models/model.js';
import type { AblatedRun, CleanContext } from './effects.js';
import type { AblationRow } from './fastpath.js';
import { dot, readLogits } from './readout.js';

/**
 * The naive path: each ablated run recomputes the whole prompt with do(C = p) at the
 * last position (every member of a joint target in the same run), and unembeds itself.
 * Slow, but independent of the fast path's shortcuts (cached keys/values, readout dot
 * products), so the two check each other.
 */
export async function runNaivePath(model: HookedModel, ids: number[][], ctxs: CleanContext[], rows: AblationRow[], withHeads: boolean): Promise<AblatedRun[]> {
  const res = await model.forward(
    rows.map((r) => ids[r.prompt]),
    { heads: withHeads, interventions: rows.map((r) => r.target.members.map((m, i) => ({ component: m.name, value: r.patches[i] }))) },
  );
  return res.prompts.map((acts, i) => {
    const ctx = ctxs[rows[i].prompt];
    const dePrime: Record<string, number> = {};
    for (const [name, c] of acts.components) dePrime[name] = dot(c, ctx.q) / ctx.acts.sigma;
    const stageIn = new Map(acts.stageIn.map((x, s) => [s, x]));
    return {
      z: acts.z,
      dePrime,
      piHatPrime: readLogits(acts.logits, ctx.readout),
      stageIn,
      logits: acts.logits,
      memberValues: rows[i].target.members.map((m) => acts.components.get(m.name)!),
    };
  });
}
