import type { Family } from './family.js';
import { llamaArch, llamaWeights } from './llama.js';

/** Qwen2: the Llama architecture with q/k/v biases (no output bias). */
export const qwen2: Family = {
  modelTypes: ['qwen2'],
  arch: (config) => llamaArch(config, 'qwen2'),
  weights: (store, spec, config) =>
    llamaWeights(store, spec, config, { qkvBias: true, oBias: false, mlpBias: false, normPlusOne: false, norms: 'pre', tieDefault: false }),
};
