import { archDefaults, type ArchSpec, type LayerWeights, type ModelWeights, type NormWeights } from '../engine/spec.js';
import type { WeightStore } from '../io/safetensors.js';
import { activationOf, bool, linear, normWeights, num, optNum, ropeScaling, sameLayers, unembedding, type Family, type HfConfig } from './family.js';

/**
 * Llama and Mistral: RMSNorm, rotary (rope_theta, Llama-3 rope_scaling), grouped-query
 * attention, SwiGLU. The other families of this lineage (Qwen, Gemma, OLMo-2, Phi-3)
 * reuse these two functions and state only what differs.
 */
export function llamaArch(config: HfConfig, family: string): ArchSpec {
  const d = num(config, 'hidden_size');
  const nHeads = num(config, 'num_attention_heads');
  const dHead = optNum(config, 'head_dim') ?? d / nHeads;
  const nLayers = num(config, 'num_hidden_layers');
  const rope = { dim: dHead, theta: optNum(config, 'rope_theta') ?? 10000, style: 'half' as const, scaling: ropeScaling(config) };
  return {
    ...archDefaults(dHead),
    family,
    dModel: d,
    nLayers,
    nHeads,
    nKvHeads: optNum(config, 'num_key_value_heads') ?? nHeads,
    dHead,
    dMlp: num(config, 'intermediate_size'),
    vocab: num(config, 'vocab_size'),
    nCtx: num(config, 'max_position_embeddings'),
    norm: 'rmsnorm',
    normEps: num(config, 'rms_norm_eps'),
    positions: 'rotary',
    layers: sameLayers(nLayers, null, rope),
    act: activationOf(config.hidden_act ?? 'silu', config._path),
    gated: true,
  };
}

/**
 * Where a layer's norms sit. `pre`: before attention and MLP (input_layernorm,
 * post_attention_layernorm). `sandwich` (Gemma-2/3): before and after each
 * (input_layernorm, post_attention_layernorm, pre_feedforward_layernorm,
 * post_feedforward_layernorm). `post` (OLMo-2): after each only.
 */
export type NormPlacement = 'pre' | 'sandwich' | 'post';

export interface LlamaOptions {
  /** Attention q/k/v biases (Qwen2 always; Llama when attention_bias). */
  qkvBias: boolean;
  oBias: boolean;
  mlpBias: boolean;
  /** Gemma's RMSNorm gain is (1 + w). */
  normPlusOne: boolean;
  norms: NormPlacement;
  /** The family's Hugging Face default for tie_word_embeddings. */
  tieDefault: boolean;
}

export function llamaWeights(store: WeightStore, spec: ArchSpec, config: HfConfig, opt: LlamaOptions): ModelWeights {
  const { dModel: d, dMlp: f, vocab: V, nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < spec.nLayers; l++) {
    const p = `model.layers.${l}`;
    const a = `${p}.self_attn`;
    const m = `${p}.mlp`;
    const norm = (name: string, width = d) => normWeights(store, name, width, false, opt.normPlusOne);
    const qk = (name: string, width: number): NormWeights | null => (spec.qkNorm ? norm(`${a}.${name}`, width) : null);
    const qkWidth = (heads: number) => (spec.qkNorm === 'full' ? heads * dh : dh);
    const placed = {
      pre: () => ({ ln1: norm(`${p}.input_layernorm`), ln2: norm(`${p}.post_attention_layernorm`), attnPostNorm: null, mlpPostNorm: null }),
      sandwich: () => ({
        ln1: norm(`${p}.input_layernorm`),
        attnPostNorm: norm(`${p}.post_attention_layernorm`),
        ln2: norm(`${p}.pre_feedforward_layernorm`),
        mlpPostNorm: norm(`${p}.post_feedforward_layernorm`),
      }),
      post: () => ({ ln1: null, ln2: null, attnPostNorm: norm(`${p}.post_attention_layernorm`), mlpPostNorm: norm(`${p}.post_feedforward_layernorm`) }),
    };
    layers.push({
      ...placed[opt.norms](),
      qNorm: qk('q_norm', qkWidth(H)),
      kNorm: qk('k_norm', qkWidth(KV)),
      ...llamaAttention(store, a, spec, opt),
      ...gatedMlp(store, m, d, f, opt.mlpBias),
    });
  }
  const wte = store.get('model.embed_tokens.weight', [V, d], 'vocab_size, hidden_size');
  return { wte, wpe: null, layers, lnF: normWeights(store, 'model.norm', d, false, opt.normPlusOne), wU: unembedding(store, config, wte, opt.tieDefault, V, d), bU: null };
}

/** Separate q_proj, k_proj, v_proj, o_proj. */
function llamaAttention(store: WeightStore, a: string, spec: ArchSpec, opt: LlamaOptions) {
  const { dModel: d, nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  const bias = (on: boolean, name: string, n: number) => (on ? store.get(name, [n], 'num_attention_heads × head_dim') : null);
  return {
    wq: linear(store, `${a}.q_proj.weight`, d, H * dh, 'num_attention_heads × head_dim'),
    wk: linear(store, `${a}.k_proj.weight`, d, KV * dh, 'num_key_value_heads × head_dim'),
    wv: linear(store, `${a}.v_proj.weight`, d, KV * dh, 'num_key_value_heads × head_dim'),
    bq: bias(opt.qkvBias, `${a}.q_proj.bias`, H * dh),
    bk: bias(opt.qkvBias, `${a}.k_proj.bias`, KV * dh),
    bv: bias(opt.qkvBias, `${a}.v_proj.bias`, KV * dh),
    wo: linear(store, `${a}.o_proj.weight`, H * dh, d, 'hidden_size'),
    bo: opt.oBias ? store.get(`${a}.o_proj.bias`, [d], 'hidden_size') : null,
  };
}

/** gate_proj, up_proj, down_proj. */
function gatedMlp(store: WeightStore, m: string, d: number, f: number, withBias: boolean) {
  const bias = (name: string, n: number) => (withBias ? store.get(name, [n], 'intermediate_size') : null);
  return {
    wUp: linear(store, `${m}.up_proj.weight`, d, f, 'intermediate_size'),
    bUp: bias(`${m}.up_proj.bias`, f),
    wGate: linear(store, `${m}.gate_proj.weight`, d, f, 'intermediate_size'),
    bGate: bias(`${m}.gate_proj.bias`, f),
    wDown: linear(store, `${m}.down_proj.weight`, f, d, 'intermediate_size'),
    bDown: bias(`${m}.down_proj.bias`, d),
  };
}

/**
 * Sliding windows per layer: `layer_types` where the config lists them, else every layer
 * (Mistral) or, with `localEvery`, every layer whose (l + 1) is not a multiple of it
 * (Gemma-2: 2, Gemma-3: its pattern). None when use_sliding_window is false (its default
 * is the family's `enabled`) or no sliding_window is given.
 */
export function layerWindows(spec: ArchSpec, config: HfConfig, localEvery?: number, enabled = true): ArchSpec {
  const window = bool(config, 'use_sliding_window', enabled) ? optNum(config, 'sliding_window') : null;
  const types = Array.isArray(config.layer_types) ? (config.layer_types as unknown[]) : null;
  const local = (l: number) => (types ? types[l] === 'sliding_attention' : localEvery === undefined || (l + 1) % localEvery !== 0);
  return { ...spec, layers: spec.layers.map((layer, l) => ({ ...layer, window: window !== null && local(l) ? window : null })) };
}

export const llama: Family = {
  modelTypes: ['llama', 'mistral'],
  arch: (config) => {
    const spec = llamaArch(config, String(config.model_type));
    return config.model_type === 'mistral' ? layerWindows(spec, config) : spec;
  },
  weights: (store, spec, config) =>
    llamaWeights(store, spec, config, {
      qkvBias: bool(config, 'attention_bias', false),
      oBias: bool(config, 'attention_bias', false),
      mlpBias: bool(config, 'mlp_bias', false),
      normPlusOne: false,
      norms: 'pre',
      tieDefault: false,
    }),
};
