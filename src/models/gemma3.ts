import { HydraError } from '../io/errors.js';
import { optNum, ropeScaling, type Family } from './family.js';
import { gemmaSandwichArch } from './gemma2.js';
import { llamaWeights } from './llama.js';

/**
 * Gemma-3 (text): the Gemma-2 block with per-head (1+w) q/k norms, local layers every
 * `sliding_window_pattern` − 1 of each pattern, and separate rotary bases: local layers
 * rope_local_base_freq unscaled, global layers rope_theta with rope_scaling.
 */
export const gemma3: Family = {
  modelTypes: ['gemma3_text', 'gemma3'],
  arch: (config) => {
    if (config.model_type === 'gemma3')
      throw new HydraError(`${config._path}: this is a multimodal Gemma-3 checkpoint (model_type gemma3); Hydra reads the text-only gemma3_text models (e.g. google/gemma-3-1b-pt, or a text model extracted with transformers)`);
    const pattern = optNum(config, 'sliding_window_pattern') ?? optNum(config, '_sliding_window_pattern') ?? 6;
    const spec = gemmaSandwichArch(config, 'gemma3_text', pattern);
    const local = { dim: spec.dHead, theta: optNum(config, 'rope_local_base_freq') ?? 10000, style: 'half' as const, scaling: null };
    const global = { ...local, theta: optNum(config, 'rope_theta') ?? 1e6, scaling: ropeScaling(config) };
    return { ...spec, qkNorm: 'head', layers: spec.layers.map((l) => ({ ...l, rope: l.window === null ? global : local })) };
  },
  weights: (store, spec, config) =>
    llamaWeights(store, spec, config, { qkvBias: false, oBias: false, mlpBias: false, normPlusOne: true, norms: 'sandwich', tieDefault: true }),
};
