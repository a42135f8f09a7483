import { archDefaults, type ArchSpec } from '../engine/spec.js';
import { HydraError } from '../io/errors.js';
import { activationOf, linear, NO_EXTRA_NORMS, normWeights, num, optNum, unembedding, type Family, type HfConfig } from './family.js';

/** GPT-Neo: learned positions, no 1/√d score scaling, local attention (window_size) on the layers attention_layers marks. */
export const gptNeo: Family = {
  modelTypes: ['gpt_neo'],
  arch(config): ArchSpec {
    const d = num(config, 'hidden_size');
    const nHeads = num(config, 'num_heads');
    const nLayers = num(config, 'num_layers');
    const window = num(config, 'window_size');
    const kinds = attentionLayers(config, nLayers);
    return {
      ...archDefaults(d / nHeads),
      family: 'gpt_neo',
      dModel: d,
      nLayers,
      nHeads,
      nKvHeads: nHeads,
      dHead: d / nHeads,
      dMlp: optNum(config, 'intermediate_size') ?? 4 * d,
      vocab: num(config, 'vocab_size'),
      nCtx: num(config, 'max_position_embeddings'),
      norm: 'layernorm',
      normEps: num(config, 'layer_norm_epsilon'),
      positions: 'learned',
      layers: kinds.map((k) => ({ window: k === 'local' ? window : null, rope: null })),
      act: activationOf(config.activation_function ?? 'gelu_new', config._path),
      gated: false,
      attnScale: 1,
    };
  },
  weights(store, spec, config) {
    const { dModel: d, dMlp: f, vocab: V } = spec;
    const layers = [...Array(spec.nLayers).keys()].map((l) => {
      const p = `transformer.h.${l}`;
      const a = `${p}.attn.attention`;
      return {
        ...NO_EXTRA_NORMS,
        ln1: normWeights(store, `${p}.ln_1`, d, true),
        ln2: normWeights(store, `${p}.ln_2`, d, true),
        wq: linear(store, `${a}.q_proj.weight`, d, d, 'hidden_size'),
        wk: linear(store, `${a}.k_proj.weight`, d, d, 'hidden_size'),
        wv: linear(store, `${a}.v_proj.weight`, d, d, 'hidden_size'),
        bq: null, bk: null, bv: null,
        wo: linear(store, `${a}.out_proj.weight`, d, d, 'hidden_size'),
        bo: store.get(`${a}.out_proj.bias`, [d], 'hidden_size'),
        wUp: linear(store, `${p}.mlp.c_fc.weight`, d, f, 'intermediate_size'),
        bUp: store.get(`${p}.mlp.c_fc.bias`, [f], 'intermediate_size'),
        wGate: null, bGate: null,
        wDown: linear(store, `${p}.mlp.c_proj.weight`, f, d, 'intermediate_size'),
        bDown: store.get(`${p}.mlp.c_proj.bias`, [d], 'hidden_size'),
      };
    });
    const wte = store.get('transformer.wte.weight', [V, d], 'vocab_size, hidden_size');
    return {
      wte,
      wpe: store.get('transformer.wpe.weight', [spec.nCtx, d], 'max_position_embeddings, hidden_size'),
      layers,
      lnF: normWeights(store, 'transformer.ln_f', d, true),
      wU: unembedding(store, config, wte, true, V, d),
      bU: null,
    };
  },
};

/** 'global' or 'local' per layer: attention_layers, or attention_types [[kinds, repeat], ...] expanded. */
function attentionLayers(config: HfConfig, n: number): string[] {
  let kinds = config.attention_layers as unknown;
  if (!Array.isArray(kinds) && Array.isArray(config.attention_types))
    kinds = (config.attention_types as [string[], number][]).flatMap(([pattern, times]) => Array.from({ length: times }, () => pattern).flat());
  if (!Array.isArray(kinds) || kinds.length !== n || !kinds.every((k) => k === 'global' || k === 'local'))
    throw new HydraError(`${config._path}: attention_layers must list 'global' or 'local' for each of the ${n} layers`);
  return kinds as string[];
}
