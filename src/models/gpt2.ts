import { archDefaults, type ArchSpec, type LayerWeights } from '../engine/spec.js';
import type { WeightStore } from '../io/safetensors.js';
import { sliceOutputs } from '../io/matrix.js';
import { activationOf, NO_EXTRA_NORMS, num, optNum, sameLayers, table, type Family, type HfConfig } from './family.js';

/** GPT-2: learned positions, LayerNorm, Conv1D weights stored [in, out], fused c_attn. */
export const gpt2: Family = {
  modelTypes: ['gpt2'],

  arch(config: HfConfig): ArchSpec {
    const d = num(config, 'n_embd');
    const nHeads = num(config, 'n_head');
    return {
      ...archDefaults(d / nHeads),
      family: 'gpt2',
      dModel: d,
      nLayers: num(config, 'n_layer'),
      nHeads,
      nKvHeads: nHeads,
      dHead: d / nHeads,
      dMlp: optNum(config, 'n_inner') ?? 4 * d,
      vocab: num(config, 'vocab_size'),
      nCtx: num(config, 'n_positions'),
      norm: 'layernorm',
      normEps: num(config, 'layer_norm_epsilon'),
      positions: 'learned',
      layers: sameLayers(num(config, 'n_layer'), null, null),
      act: activationOf(config.activation_function ?? 'gelu_new', config._path),
      gated: false,
    };
  },

  weights(store: WeightStore, spec: ArchSpec) {
    const p = store.has('transformer.wte.weight') ? 'transformer.' : '';
    const { dModel: d, dMlp: f, vocab: V } = spec;
    const ln = (name: string) => ({ g: store.get(`${name}.weight`, [d], 'n_embd'), b: store.get(`${name}.bias`, [d], 'n_embd') });
    // Conv1D weights are stored [in, out].
    const conv = (name: string, inDim: number, outDim: number, why: string) => store.matrix(name, [inDim, outDim], why, 'in_out');
    const layer = (l: number): LayerWeights => {
      const h = `${p}h.${l}`;
      const cAttn = conv(`${h}.attn.c_attn.weight`, d, 3 * d, 'n_embd');
      const cAttnB = store.get(`${h}.attn.c_attn.bias`, [3 * d], 'n_embd');
      return {
        ...NO_EXTRA_NORMS,
        ln1: ln(`${h}.ln_1`),
        ln2: ln(`${h}.ln_2`),
        wq: sliceOutputs(cAttn, 0, d),
        wk: sliceOutputs(cAttn, d, 2 * d),
        wv: sliceOutputs(cAttn, 2 * d, 3 * d),
        bq: cAttnB.slice(0, d),
        bk: cAttnB.slice(d, 2 * d),
        bv: cAttnB.slice(2 * d),
        wo: conv(`${h}.attn.c_proj.weight`, d, d, 'n_embd'),
        bo: store.get(`${h}.attn.c_proj.bias`, [d], 'n_embd'),
        wUp: conv(`${h}.mlp.c_fc.weight`, d, f, 'n_embd, n_inner'),
        bUp: store.get(`${h}.mlp.c_fc.bias`, [f], 'n_inner'),
        wGate: null,
        bGate: null,
        wDown: conv(`${h}.mlp.c_proj.weight`, f, d, 'n_embd, n_inner'),
        bDown: store.get(`${h}.mlp.c_proj.bias`, [d], 'n_embd'),
      };
    };
    const wte = table(store, `${p}wte.weight`, V, d, 'vocab_size, n_embd');
    return {
      wte,
      wpe: table(store, `${p}wpe.weight`, spec.nCtx, d, 'n_positions, n_embd'),
      layer,
      lnF: ln(`${p}ln_f`),
      wU: store.has('lm_head.weight') ? table(store, 'lm_head.weight', V, d, 'vocab_size, n_embd') : wte,
      bU: null,
    };
  },
};
