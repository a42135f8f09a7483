import { archDefaults, type ArchSpec } from '../engine/spec.js';
import { HydraError } from '../io/errors.js';
import { activationOf, bool, linear, NO_EXTRA_NORMS, normWeights, num, optNum, sameLayers, unembedding, type Family } from './family.js';

/** OPT (pre-norm, do_layer_norm_before): learned positions offset by 2, ReLU MLP, biases everywhere. */
export const opt: Family = {
  modelTypes: ['opt'],
  arch(config): ArchSpec {
    const d = num(config, 'hidden_size');
    const nHeads = num(config, 'num_attention_heads');
    if (!bool(config, 'do_layer_norm_before', true))
      throw new HydraError(`${config._path}: post-norm OPT (do_layer_norm_before: false, as OPT-350m) is not supported: its residual stream is not a sum of block outputs`);
    if ((optNum(config, 'word_embed_proj_dim') ?? d) !== d)
      throw new HydraError(`${config._path}: OPT with word_embed_proj_dim ≠ hidden_size (project_in/project_out) is not supported`);
    const nLayers = num(config, 'num_hidden_layers');
    return {
      ...archDefaults(d / nHeads),
      family: 'opt',
      dModel: d,
      nLayers,
      nHeads,
      nKvHeads: nHeads,
      dHead: d / nHeads,
      dMlp: num(config, 'ffn_dim'),
      vocab: num(config, 'vocab_size'),
      nCtx: num(config, 'max_position_embeddings'),
      norm: 'layernorm',
      normEps: 1e-5,
      positions: 'learned',
      posOffset: 2,
      layers: sameLayers(nLayers, null, null),
      act: activationOf(config.activation_function ?? 'relu', config._path),
      gated: false,
    };
  },
  weights(store, spec, config) {
    const { dModel: d, dMlp: f, vocab: V } = spec;
    const bias = bool(config, 'enable_bias', true);
    const b = (name: string, n: number) => (bias ? store.get(name, [n], 'hidden_size') : null);
    const layers = [...Array(spec.nLayers).keys()].map((l) => {
      const p = `model.decoder.layers.${l}`;
      const a = `${p}.self_attn`;
      return {
        ...NO_EXTRA_NORMS,
        ln1: normWeights(store, `${p}.self_attn_layer_norm`, d, true),
        ln2: normWeights(store, `${p}.final_layer_norm`, d, true),
        wq: linear(store, `${a}.q_proj.weight`, d, d, 'hidden_size'),
        wk: linear(store, `${a}.k_proj.weight`, d, d, 'hidden_size'),
        wv: linear(store, `${a}.v_proj.weight`, d, d, 'hidden_size'),
        bq: b(`${a}.q_proj.bias`, d),
        bk: b(`${a}.k_proj.bias`, d),
        bv: b(`${a}.v_proj.bias`, d),
        wo: linear(store, `${a}.out_proj.weight`, d, d, 'hidden_size'),
        bo: b(`${a}.out_proj.bias`, d),
        wUp: linear(store, `${p}.fc1.weight`, d, f, 'ffn_dim'),
        bUp: b(`${p}.fc1.bias`, f),
        wGate: null, bGate: null,
        wDown: linear(store, `${p}.fc2.weight`, f, d, 'ffn_dim'),
        bDown: b(`${p}.fc2.bias`, d),
      };
    });
    const wte = store.get('model.decoder.embed_tokens.weight', [V, d], 'vocab_size, hidden_size');
    return {
      wte,
      // Rows 0 and 1 of OPT's position table are never used: position t reads row t + 2.
      wpe: store.get('model.decoder.embed_positions.weight', [spec.nCtx + 2, d], 'max_position_embeddings + 2, hidden_size'),
      layers,
      lnF: normWeights(store, 'model.decoder.final_layer_norm', d, true),
      wU: unembedding(store, config, wte, true, V, d),
      bU: null,
    };
  },
};
