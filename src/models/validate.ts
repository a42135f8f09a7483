import type { ArchSpec, RopeSpec } from '../engine/spec.js';
import { HydraError } from '../io/errors.js';
import type { Family, HfConfig } from './family.js';

/**
 * Checks of a model's shape before any weight is read: the ArchSpec a family made from
 * config.json, and the layers its checkpoint holds. Bad numbers here would otherwise give
 * internal errors, huge allocations or NaN outputs further on.
 */

/** Integer fields of ArchSpec, with the config.json names they usually come from. */
const COUNTS: [keyof ArchSpec, string][] = [
  ['dModel', 'hidden size (hidden_size / n_embd)'],
  ['nLayers', 'number of layers (num_hidden_layers / n_layer)'],
  ['nHeads', 'number of attention heads (num_attention_heads / n_head)'],
  ['nKvHeads', 'number of key/value heads (num_key_value_heads)'],
  ['dHead', 'head width (head_dim, or hidden size / heads)'],
  ['dMlp', 'MLP width (intermediate_size / n_inner)'],
  ['vocab', 'vocabulary size (vocab_size)'],
  ['nCtx', 'context length (max_position_embeddings / n_positions)'],
];

const positiveInt = (x: unknown) => Number.isSafeInteger(x) && (x as number) > 0;
const positiveFinite = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x > 0;

/**
 * The family's ArchSpec of config.json, validated. A family sizes arrays from the config before
 * any check (a layer list of 1e300 entries), so a RangeError there is the config's fault too.
 */
export function archSpec(family: Family, config: HfConfig): ArchSpec {
  checkLayerCount(config);
  let spec: ArchSpec;
  try {
    spec = family.arch(config);
  } catch (e) {
    if (e instanceof RangeError) throw new HydraError(`${config._path}: a number is out of range (${e.message}); fix config.json`);
    throw e;
  }
  validateSpec(spec, config._path);
  return spec;
}

/** More layers than any released model has (Llama-3.1-405B: 126). */
export const MAX_LAYERS = 1000;
/** config.json's names for the number of layers (GPT-2, GPT-Neo, the rest). */
const LAYER_FIELDS = ['n_layer', 'num_layers', 'num_hidden_layers'];

/** Families build one entry per layer before the spec can be checked: bound the count first (2^31 layers exhaust memory). */
function checkLayerCount(config: HfConfig): void {
  for (const f of LAYER_FIELDS) {
    const v = config[f];
    if (typeof v === 'number' && (!Number.isSafeInteger(v) || v < 1 || v > MAX_LAYERS)) {
      throw new HydraError(`${config._path}: ${f} is ${v}; the number of layers must be an integer from 1 to ${MAX_LAYERS}; fix config.json`);
    }
  }
}

export function validateSpec(spec: ArchSpec, path: string): void {
  const bad = (why: string) => new HydraError(`${path}: ${why}; fix config.json`);
  for (const [field, what] of COUNTS) {
    if (positiveInt(spec[field])) continue;
    // dHead is derived: a fraction there means the heads do not divide the width.
    if (field === 'dHead' && Number.isFinite(spec.dHead)) throw bad(`hidden size ${spec.dModel} is not divisible by ${spec.nHeads} heads`);
    throw bad(`${what} is ${String(spec[field])}, not a positive integer`);
  }
  if (spec.nLayers > MAX_LAYERS) throw bad(`number of layers ${spec.nLayers} is over the limit of ${MAX_LAYERS}`);
  if (spec.nHeads % spec.nKvHeads !== 0) throw bad(`num_attention_heads (${spec.nHeads}) is not a multiple of num_key_value_heads (${spec.nKvHeads})`);
  if (!positiveFinite(spec.normEps)) throw bad(`norm epsilon (layer_norm_epsilon / rms_norm_eps) is ${spec.normEps}; it must be a number above 0`);
  if (!Number.isSafeInteger(spec.posOffset) || spec.posOffset < 0) throw bad(`position offset is ${spec.posOffset}, not a non-negative integer`);
  if (!positiveFinite(spec.attnScale)) throw bad(`attention scale (query_pre_attn_scalar) gives ${spec.attnScale}; it must be a number above 0`);
  for (const [what, v] of [['attn_logit_softcapping', spec.attnSoftcap], ['final_logit_softcapping', spec.finalSoftcap]] as const) {
    if (v !== null && !positiveFinite(v)) throw bad(`${what} is ${v}; it must be a number above 0 (or null)`);
  }
  if (spec.embedScale !== null && !Number.isFinite(spec.embedScale)) throw bad(`embedding scale is ${spec.embedScale}`);
  if (spec.layers.length !== spec.nLayers) throw bad(`${spec.layers.length} per-layer settings (layer_types) for ${spec.nLayers} layers`);
  for (const { window, rope } of spec.layers) {
    if (window !== null && !positiveInt(window)) throw bad(`sliding_window is ${window}, not a positive integer`);
    if (rope) validateRope(rope, spec.dHead, bad);
  }
}

function validateRope(rope: RopeSpec, dHead: number, bad: (why: string) => HydraError): void {
  if (!positiveFinite(rope.theta)) throw bad(`rope_theta (rotary_emb_base) is ${rope.theta}; it must be a number above 0`);
  if (!positiveInt(rope.dim) || rope.dim > dHead) throw bad(`rotary dimension ${rope.dim} is not a positive integer of at most the head width ${dHead}`);
  if (rope.dim % 2 !== 0) throw bad(`rotary dimension ${rope.dim} is odd`);
  const s = rope.scaling;
  if (!s) return;
  if (s.type === 'longrope') {
    for (const [what, f] of [['short_factor', s.shortFactor], ['long_factor', s.longFactor]] as const) {
      if (!Array.isArray(f) || f.length !== rope.dim / 2 || !f.every(positiveFinite)) throw bad(`rope_scaling.${what} must be ${rope.dim / 2} numbers above 0`);
    }
    if (!positiveFinite(s.attentionFactor)) throw bad(`rope_scaling attention factor is ${String(s.attentionFactor)}; it must be a number above 0`);
    if (!positiveInt(s.originalMaxPositions)) throw bad(`original_max_position_embeddings is ${String(s.originalMaxPositions)}, not a positive integer`);
    return;
  }
  if (!positiveFinite(s.factor)) throw bad(`rope_scaling.factor is ${String(s.factor)}; it must be a number above 0`);
  if (s.type === 'llama3') {
    const { lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositions: n } = s;
    if (!positiveFinite(lo) || !positiveFinite(hi) || hi <= lo) throw bad(`rope_scaling low_freq_factor (${String(lo)}) and high_freq_factor (${String(hi)}) must be numbers with 0 < low < high`);
    if (!positiveInt(n)) throw bad(`rope_scaling.original_max_position_embeddings is ${String(n)}, not a positive integer`);
  }
}

/** A layer index in a Hugging Face tensor name: transformer.h.N., model.layers.N., gpt_neox.layers.N. */
const LAYER_RE = /(?:^|\.)(?:h|layers|blocks)\.(\d+)\./;

/**
 * The checkpoint must hold exactly the layers the config names: a layer index at or beyond
 * nLayers means config.json and the weights belong to different models.
 * (Missing layers are caught when their weights are read.)
 */
export function validateLayers(tensorNames: string[], spec: ArchSpec, path: string): void {
  for (const name of tensorNames) {
    const m = LAYER_RE.exec(name);
    if (m && Number(m[1]) >= spec.nLayers) {
      throw new HydraError(`${path}: the checkpoint holds tensor '${name}' of layer ${m[1]}, but config.json names ${spec.nLayers} layers; config.json and the weights do not match`);
    }
  }
}
