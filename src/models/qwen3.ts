import type { Family } from './family.js';
import { layerWindows, llamaArch, llamaWeights } from './llama.js';

/** Qwen3: Llama with an explicit head_dim (heads × head_dim ≠ hidden size) and per-head q/k RMSNorm before rotary. */
export const qwen3: Family = {
  modelTypes: ['qwen3'],
  arch: (config) => layerWindows({ ...llamaArch(config, 'qwen3'), qkNorm: 'head' }, config, undefined, false),
  weights: (store, spec, config) =>
    llamaWeights(store, spec, config, { qkvBias: false, oBias: false, mlpBias: false, normPlusOne: false, norms: 'pre', tieDefault: false }),
};
