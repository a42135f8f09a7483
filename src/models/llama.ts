import type { ArchSpec, LayerWeights, ModelWeights } from '../engine/spec.js';
import type { WeightStore } from '../io/safetensors.js';
import { activationOf, bool, linear, normWeights, num, optNum, ropeScaling, type Family, type HfConfig } from './family.js';

/**
 * Llama and Mistral: RMSNorm, rotary (rope_theta, Llama-3 rope_scaling), grouped-query
 * attention, SwiGLU. Qwen2 and Gemma reuse this with their differences (see their files).
 */
export function llamaArch(config: HfConfig, family: string): ArchSpec {
  const d = num(config, 'hidden_size');
  const nHeads = num(config, 'num_attention_heads');
  const dHead = optNum(config, 'head_dim') ?? d / nHeads;
  const window = optNum(config, 'sliding_window');
  return {
    family,
    dModel: d,
    nLayers: num(config, 'num_hidden_layers'),
    nHeads,
    nKvHeads: optNum(config, 'num_key_value_heads') ?? nHeads,
    dHead,
    dMlp: num(config, 'intermediate_size'),
    vocab: num(config, 'vocab_size'),
    nCtx: num(config, 'max_position_embeddings'),
    norm: 'rmsnorm',
    normEps: num(config, 'rms_norm_eps'),
    positions: 'rotary',
    rope: { dim: dHead, theta: optNum(config, 'rope_theta') ?? 10000, scaling: ropeScaling(config) },
    act: activationOf(config.hidden_act ?? 'silu', config._path),
    gated: true,
    parallel: false,
    embedScale: null,
    slidingWindow: family === 'mistral' && bool(config, 'use_sliding_window', true) ? window : null,
  };
}

export interface LlamaOptions {
  /** Attention q/k/v biases (Qwen2 always; Llama when attention_bias). */
  qkvBias: boolean;
  oBias: boolean;
  mlpBias: boolean;
  /** Gemma's RMSNorm gain is (1 + w). */
  normPlusOne: boolean;
}

export function llamaWeights(store: WeightStore, spec: ArchSpec, config: HfConfig, opt: LlamaOptions): ModelWeights {
  const { dModel: d, dMlp: f, vocab: V, nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  const bias = (on: boolean, name: string, n: number) => (on ? store.get(name, [n], 'hidden_size') : null);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < spec.nLayers; l++) {
    const p = `model.layers.${l}`;
    const a = `${p}.self_attn`;
    const m = `${p}.mlp`;
    layers.push({
      ln1: normWeights(store, `${p}.input_layernorm`, d, false, opt.normPlusOne),
      ln2: normWeights(store, `${p}.post_attention_layernorm`, d, false, opt.normPlusOne),
      wq: linear(store, `${a}.q_proj.weight`, d, H * dh, 'num_attention_heads × head_dim'),
      wk: linear(store, `${a}.k_proj.weight`, d, KV * dh, 'num_key_value_heads × head_dim'),
      wv: linear(store, `${a}.v_proj.weight`, d, KV * dh, 'num_key_value_heads × head_dim'),
      bq: bias(opt.qkvBias, `${a}.q_proj.bias`, H * dh),
      bk: bias(opt.qkvBias, `${a}.k_proj.bias`, KV * dh),
      bv: bias(opt.qkvBias, `${a}.v_proj.bias`, KV * dh),
      wo: linear(store, `${a}.o_proj.weight`, H * dh, d, 'hidden_size'),
      bo: bias(opt.oBias, `${a}.o_proj.bias`, d),
      wUp: linear(store, `${m}.up_proj.weight`, d, f, 'intermediate_size'),
      bUp: bias(opt.mlpBias, `${m}.up_proj.bias`, f),
      wGate: linear(store, `${m}.gate_proj.weight`, d, f, 'intermediate_size'),
      bGate: bias(opt.mlpBias, `${m}.gate_proj.bias`, f),
      wDown: linear(store, `${m}.down_proj.weight`, f, d, 'intermediate_size'),
      bDown: bias(opt.mlpBias, `${m}.down_proj.bias`, d),
    });
  }
  const wte = store.get('model.embed_tokens.weight', [V, d], 'vocab_size, hidden_size');
  const tied = bool(config, 'tie_word_embeddings', true) || !store.has('lm_head.weight');
  return {
    wte,
    wpe: null,
    layers,
    lnF: normWeights(store, 'model.norm', d, false, opt.normPlusOne),
    wU: tied ? wte : store.get('lm_head.weight', [V, d], 'vocab_size, hidden_size'),
    bU: null,
  };
}

export const llama: Family = {
  modelTypes: ['llama', 'mistral'],
  arch: (config) => llamaArch(config, config.model_type === 'mistral' ? 'mistral' : 'llama'),
  weights: (store, spec, config) =>
    llamaWeights(store, spec, config, {
      qkvBias: bool(config, 'attention_bias', false),
      oBias: bool(config, 'attention_bias', false),
      mlpBias: bool(config, 'mlp_bias', false),
      normPlusOne: false,
    }),
};
