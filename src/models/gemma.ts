import type { Family } from './family.js';
import { activationOf } from './family.js';
import { llamaArch, llamaWeights } from './llama.js';

/** Gemma: RMSNorm with gain (1 + w), embeddings scaled by √d, gated GELU (tanh), tied unembedding. */
export const gemma: Family = {
  modelTypes: ['gemma'],
  arch: (config) => {
    const spec = llamaArch(config, 'gemma');
    // HF rounds √d to the model's dtype before scaling.
    const scale = Math.fround(Math.sqrt(spec.dModel));
    return { ...spec, embedScale: scale, act: activationOf(config.hidden_activation ?? config.hidden_act ?? 'gelu_pytorch_tanh', config._path), slidingWindow: null };
  },
  weights: (store, spec, config) =>
    llamaWeights(store, spec, { ...config, tie_word_embeddings: true }, { qkvBias: false, oBias: false, mlpBias: false, normPlusOne: true }),
};
