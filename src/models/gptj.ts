import { archDefaults, type ArchSpec } from '../engine/spec.js';
import { activationOf, linear, NO_EXTRA_NORMS, normWeights, num, optNum, sameLayers, unembedding, type Family } from './family.js';

/** GPT-J: parallel attention and MLP reading one LayerNorm, interleaved rotary on the first rotary_dim dims, an unembedding bias. */
export const gptj: Family = {
  modelTypes: ['gptj'],
  arch(config): ArchSpec {
    const d = num(config, 'n_embd');
    const nHeads = num(config, 'n_head');
    const dHead = d / nHeads;
    const nLayers = num(config, 'n_layer');
    const rope = { dim: optNum(config, 'rotary_dim') ?? dHead, theta: 10000, style: 'interleaved' as const, scaling: null };
    return {
      ...archDefaults(dHead),
      family: 'gptj',
      dModel: d,
      nLayers,
      nHeads,
      nKvHeads: nHeads,
      dHead,
      dMlp: optNum(config, 'n_inner') ?? 4 * d,
      vocab: num(config, 'vocab_size'),
      nCtx: num(config, 'n_positions'),
      norm: 'layernorm',
      normEps: num(config, 'layer_norm_epsilon'),
      positions: 'rotary',
      layers: sameLayers(nLayers, null, rope),
      act: activationOf(config.activation_function ?? 'gelu_new', config._path),
      gated: false,
      parallel: true,
    };
  },
  weights(store, spec, config) {
    const { dModel: d, dMlp: f, vocab: V } = spec;
    const layers = [...Array(spec.nLayers).keys()].map((l) => {
      const p = `transformer.h.${l}`;
      const ln = normWeights(store, `${p}.ln_1`, d, true);
      return {
        ...NO_EXTRA_NORMS,
        // One norm read by both blocks of the layer.
        ln1: ln,
        ln2: ln,
        wq: linear(store, `${p}.attn.q_proj.weight`, d, d, 'n_embd'),
        wk: linear(store, `${p}.attn.k_proj.weight`, d, d, 'n_embd'),
        wv: linear(store, `${p}.attn.v_proj.weight`, d, d, 'n_embd'),
        bq: null, bk: null, bv: null,
        wo: linear(store, `${p}.attn.out_proj.weight`, d, d, 'n_embd'),
        bo: null,
        wUp: linear(store, `${p}.mlp.fc_in.weight`, d, f, 'n_inner'),
        bUp: store.get(`${p}.mlp.fc_in.bias`, [f], 'n_inner'),
        wGate: null, bGate: null,
        wDown: linear(store, `${p}.mlp.fc_out.weight`, f, d, 'n_inner'),
        bDown: store.get(`${p}.mlp.fc_out.bias`, [d], 'n_embd'),
      };
    });
    const wte = store.get('transformer.wte.weight', [V, d], 'vocab_size, n_embd');
    return {
      wte,
      wpe: null,
      layers,
      lnF: normWeights(store, 'transformer.ln_f', d, true),
      wU: unembedding(store, config, wte, false, V, d),
      bU: store.maybe('lm_head.bias', [V], 'vocab_size'),
    };
  },
};
