import { HydraError } from '../io/errors.js';
import type { HookedModel } from './model.js';

/**
 * Greedy decoding: append the argmax token `steps` times, each by a full forward pass over
 * the sequence so far (simple and exact; no KV cache). Returns the prompt followed by the
 * generated ids. Stops early only at the model's context length, with an error.
 */
export async function greedyDecode(model: HookedModel, ids: number[], steps: number): Promise<number[]> {
  if (!Number.isInteger(steps) || steps < 0) throw new HydraError(`greedy decoding: steps must be a non-negative integer, got ${steps}`);
  model.checkPrompt(ids);
  if (ids.length + steps > model.spec.nCtx) {
    throw new HydraError(`greedy decoding: ${ids.length} prompt tokens + ${steps} steps exceed the model's context of ${model.spec.nCtx}`);
  }
  const out = [...ids];
  for (let s = 0; s < steps; s++) {
    const { prompts } = await model.forward([out]);
    out.push(prompts[0].token);
  }
  return out;
}
