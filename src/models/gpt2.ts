import { archDefaults, type ArchSpec, type LayerWeights } from '../engine/spec.js';
import type { WeightStore } from '../io/safetensors.js';
import { activationOf, NO_EXTRA_NORMS, num, optNum, sameLayers, type Family, type HfConfig } from './family.js';

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
    const layers: LayerWeights[] = [];
    for (let l = 0; l < spec.nLayers; l++) {
      const h = `${p}h.${l}`;
      const cAttn = store.get(`${h}.attn.c_attn.weight`, [d, 3 * d], 'n_embd');
      const cAttnB = store.get(`${h}.attn.c_attn.bias`, [3 * d], 'n_embd');
      const cols = (w: Float32Array, k: number) => {
        const out = new Float32Array(d * d);
        for (let r = 0; r < d; r++) out.set(w.subarray(r * 3 * d + k * d, r * 3 * d + (k + 1) * d), r * d);
        return out;
      };
      layers.push({
        ...NO_EXTRA_NORMS,
        ln1: ln(`${h}.ln_1`),
        ln2: ln(`${h}.ln_2`),
        wq: cols(cAttn, 0),
        wk: cols(cAttn, 1),
        wv: cols(cAttn, 2),
        bq: cAttnB.slice(0, d),
        bk: cAttnB.slice(d, 2 * d),
        bv: cAttnB.slice(2 * d),
        wo: store.get(`${h}.attn.c_proj.weight`, [d, d], 'n_embd'),
        bo: store.get(`${h}.attn.c_proj.bias`, [d], 'n_embd'),
        wUp: store.get(`${h}.mlp.c_fc.weight`, [d, f], 'n_embd, n_inner'),
        bUp: store.get(`${h}.mlp.c_fc.bias`, [f], 'n_inner'),
        wGate: null,
        bGate: null,
        wDown: store.get(`${h}.mlp.c_proj.weight`, [f, d], 'n_embd, n_inner'),
        bDown: store.get(`${h}.mlp.c_proj.bias`, [d], 'n_embd'),
      });
    }
    const wte = store.get(`${p}wte.weight`, [V, d], 'vocab_size, n_embd');
    return {
      wte,
      wpe: store.get(`${p}wpe.weight`, [spec.nCtx, d], 'n_positions, n_embd'),
      layers,
      lnF: ln(`${p}ln_f`),
      wU: store.maybe('lm_head.weight', [V, d], 'vocab_size, n_embd') ?? wte,
      bU: null,
    };
  },
};
