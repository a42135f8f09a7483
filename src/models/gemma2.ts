import { optNum, type Family, type HfConfig } from './family.js';
import { gemmaActivation, gemmaEmbedScale } from './gemma.js';
import { layerWindows, llamaArch, llamaWeights } from './llama.js';

/** Gemma-2 and Gemma-3 share a block: (1+w) RMSNorm, sandwich norms, scores scaled by query_pre_attn_scalar^-½, √d embedding scale. */
export function gemmaSandwichArch(config: HfConfig, family: string, localEvery: number) {
  const spec = llamaArch(config, family);
  return layerWindows(
    {
      ...spec,
      postNorms: true,
      attnScale: 1 / Math.sqrt(optNum(config, 'query_pre_attn_scalar') ?? spec.dHead),
      attnSoftcap: optNum(config, 'attn_logit_softcapping'),
      finalSoftcap: optNum(config, 'final_logit_softcapping'),
      embedScale: gemmaEmbedScale(spec.dModel),
      act: gemmaActivation(config),
    },
    config,
    localEvery,
  );
}

/** Gemma-2: attention and final-logit soft-capping, sliding window on every other layer (layer 0 local). */
export const gemma2: Family = {
  modelTypes: ['gemma2'],
  arch: (config) => gemmaSandwichArch(config, 'gemma2', 2),
  weights: (store, spec, config) =>
    llamaWeights(store, spec, config, { qkvBias: false, oBias: false, mlpBias: false, normPlusOne: true, norms: 'sandwich', tieDefault: true }),
};
