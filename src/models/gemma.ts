import type { Family, HfConfig } from './family.js';
import { activationOf } from './family.js';
import { llamaArch, llamaWeights } from './llama.js';

/** √d rounded to float32, as Hugging Face's float32 Gemmas scale the embedding. */
export function gemmaEmbedScale(d: number): number {
  return Math.fround(Math.sqrt(d));
}

/** Gemma's MLP activation: `hidden_activation`, else tanh GELU whatever `hidden_act` says (as Hugging Face runs it). */
export function gemmaActivation(config: HfConfig) {
  return activationOf(config.hidden_activation ?? 'gelu_pytorch_tanh', config._path);
}

/** Gemma: RMSNorm with gain (1 + w), embeddings scaled by √d, gated GELU (tanh), tied unembedding. */
export const gemma: Family = {
  modelTypes: ['gemma'],
  arch: (config) => {
    const spec = llamaArch(config, 'gemma');
    return { ...spec, embedScale: gemmaEmbedScale(spec.dModel), act: gemmaActivation(config) };
  },
  weights: (store, spec, config) =>
    llamaWeights(store, spec, config, { qkvBias: false, oBias: false, mlpBias: false, normPlusOne: true, norms: 'pre', tieDefault: true }),
};
