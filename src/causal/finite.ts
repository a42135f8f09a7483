import { HydraError } from '../io/errors.js';
import { firstNonFinite } from '../io/safetensors.js';
import type { PromptActivations } from '../models/model.js';
import type { Effects, PromptResult } from './types.js';

/**
 * Nothing non-finite reaches an output. Weights are finite (checked at load), so a NaN or
 * Inf here comes from overflow inside the model; the error names where it first appears.
 */

/** A clean run: the first component (in compute order), then z, σ and the logits. */
export function checkActivations(acts: PromptActivations, label: string): void {
  const parts: [string, ArrayLike<number>][] = [...acts.components, ['the residual entering the final norm', acts.z], ['σ', [acts.sigma]], ['the logits', acts.logits]];
  for (const [where, v] of parts) {
    const i = firstNonFinite(v);
    if (i >= 0) throw new HydraError(`${label}: ${where} holds ${v[i]} (the clean run overflowed); the model's weights or config give non-finite activations on this prompt`);
  }
}

/** Every effect of a prompt's result, per patch and averaged. */
export function checkResult(r: PromptResult): void {
  const fail = (where: string, v: number) => new HydraError(`prompt ${r.index}: ${where} is ${v} (the ablated run overflowed); this ablation gives non-finite numbers on this model`);
  const effects = (e: Effects, where: string) => {
    for (const [k, v] of Object.entries(e)) {
      if (typeof v === 'number' && !Number.isFinite(v)) throw fail(`${k} of ${where}`, v);
      if (k === 'de_prime' || k === 'de_prime_own_scale') {
        for (const [c, x] of Object.entries(v as Record<string, number>)) if (!Number.isFinite(x)) throw fail(`${k}[${c}] of ${where}`, x);
      }
    }
  };
  for (const [k, a] of Object.entries(r.ablations)) {
    a.patches.forEach((p, j) => effects(p, `ablating ${k}, patch ${j}`));
    effects(a, `ablating ${k}`);
  }
}
