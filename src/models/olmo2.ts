import type { Family } from './family.js';
import { llamaArch, llamaWeights } from './llama.js';

/** OLMo-2: no pre-norms, RMSNorm on the attention and MLP outputs, q/k RMSNorm over the whole projection. */
export const olmo2: Family = {
  modelTypes: ['olmo2'],
  arch: (config) => ({ ...llamaArch(config, 'olmo2'), preNorms: false, postNorms: true, qkNorm: 'full' }),
  weights: (store, spec, config) =>
    llamaWeights(store, spec, config, { qkvBias: false, oBias: false, mlpBias: false, normPlusOne: false, norms: 'post', tieDefault: false }),
};
