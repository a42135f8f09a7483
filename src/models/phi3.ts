import { HydraError } from '../io/errors.js';
import type { RopeScaling } from '../engine/spec.js';
import { linear, linearParts, normWeights, NO_EXTRA_NORMS, num, optNum, unembedding, type Family, type HfConfig } from './family.js';
import { layerWindows, llamaArch } from './llama.js';

/**
 * Phi-3: the Llama block with fused qkv_proj and gate_up_proj, partial rotary
 * (partial_rotary_factor) and longrope scaling (short factors up to
 * original_max_position_embeddings tokens, long beyond; cos and sin scaled).
 */
export const phi3: Family = {
  modelTypes: ['phi3'],
  arch: (config) => {
    const spec = layerWindows(llamaArch({ ...config, rope_scaling: null }, 'phi3'), config);
    const dim = Math.floor(spec.dHead * (optNum(config, 'partial_rotary_factor') ?? 1));
    const rope = { dim, theta: optNum(config, 'rope_theta') ?? 10000, style: 'half' as const, scaling: phi3Scaling(config, dim) };
    return { ...spec, layers: spec.layers.map((l) => ({ ...l, rope })) };
  },
  weights: (store, spec, config) => {
    const { dModel: d, dMlp: f, vocab: V, nHeads: H, nKvHeads: KV, dHead: dh } = spec;
    const layers = [...Array(spec.nLayers).keys()].map((l) => {
      const p = `model.layers.${l}`;
      const [wq, wk, wv] = linearParts(store, `${p}.self_attn.qkv_proj.weight`, d, [H * dh, KV * dh, KV * dh], '(heads + 2 × kv heads) × head_dim');
      const [wGate, wUp] = linearParts(store, `${p}.mlp.gate_up_proj.weight`, d, [f, f], '2 × intermediate_size');
      return {
        ...NO_EXTRA_NORMS,
        ln1: normWeights(store, `${p}.input_layernorm`, d, false),
        ln2: normWeights(store, `${p}.post_attention_layernorm`, d, false),
        wq, wk, wv, bq: null, bk: null, bv: null,
        wo: linear(store, `${p}.self_attn.o_proj.weight`, H * dh, d, 'hidden_size'),
        bo: null,
        wUp, bUp: null, wGate, bGate: null,
        wDown: linear(store, `${p}.mlp.down_proj.weight`, f, d, 'intermediate_size'),
        bDown: null,
      };
    });
    const wte = store.get('model.embed_tokens.weight', [V, d], 'vocab_size, hidden_size');
    return { wte, wpe: null, layers, lnF: normWeights(store, 'model.norm', d, false), wU: unembedding(store, config, wte, false, V, d), bU: null };
  },
};

/** rope_scaling: none, or longrope with its attention factor (given, or √(1 + ln s / ln original) for s = max / original positions). */
function phi3Scaling(config: HfConfig, dim: number): RopeScaling {
  const s = config.rope_scaling as Record<string, unknown> | null | undefined;
  if (!s) return null;
  const type = s.rope_type ?? s.type;
  if (type !== 'longrope') throw new HydraError(`${config._path}: Phi-3 rope_scaling type '${String(type)}' is not supported; supported: longrope, or null`);
  const original = optNum(config, 'original_max_position_embeddings') ?? num({ ...s, _path: config._path } as HfConfig, 'original_max_position_embeddings');
  const factors = (key: string) => {
    const v = s[key];
    if (!Array.isArray(v) || v.length !== dim / 2 || !v.every((x) => typeof x === 'number' && x > 0))
      throw new HydraError(`${config._path}: rope_scaling.${key} must list ${dim / 2} positive numbers (one per rotary frequency)`);
    return v as number[];
  };
  const scale = num(config, 'max_position_embeddings') / original;
  const given = typeof s.attention_factor === 'number' ? s.attention_factor : null;
  const attentionFactor = given ?? (scale <= 1 ? 1 : Math.sqrt(1 + Math.log(scale) / Math.log(original)));
  return { type: 'longrope', shortFactor: factors('short_factor'), longFactor: factors('long_factor'), originalMaxPositions: original, attentionFactor };
}
