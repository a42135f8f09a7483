import type { Matrix } from '../io/matrix.js';

/**
 * The normalised description of a decoder-only transformer that the engine builds
 * graphs from. Each model family (src/models/*.ts) maps its Hugging Face config and
 * weight names onto this; the engine never looks at a family name.
 */

export type Activation = 'gelu' | 'gelu_tanh' | 'silu' | 'relu';
export type NormKind = 'layernorm' | 'rmsnorm';

export type RopeScaling =
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }
  | { type: 'linear'; factor: number }
  /** Phi-3: per-frequency factors, short up to originalMaxPositions tokens, long beyond; cos and sin scaled by attentionFactor. */
  | { type: 'longrope'; shortFactor: number[]; longFactor: number[]; originalMaxPositions: number; attentionFactor: number }
  | null;

export interface RopeSpec {
  /** Dimensions of each head that are rotated (the first `dim`); the rest pass through. */
  dim: number;
  theta: number;
  /** Pairs rotated: (i, i + dim/2) for 'half' (rotate_half), (2i, 2i+1) for 'interleaved' (GPT-J). */
  style: 'half' | 'interleaved';
  scaling: RopeScaling;
}

/** What differs between layers of one model. */
export interface LayerSpec {
  /** Sliding-window span W (query i sees keys i−W < j ≤ i), or null for full causal attention. */
  window: number | null;
  /** Rotary embedding of this layer (Gemma-3: local and global layers differ), null for learned positions. */
  rope: RopeSpec | null;
}

export interface ArchSpec {
  family: string;
  dModel: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  dHead: number;
  dMlp: number;
  vocab: number;
  /** Longest prompt the model accepts. */
  nCtx: number;
  norm: NormKind;
  normEps: number;
  positions: 'learned' | 'rotary';
  /** Learned positions: row of position t is t + posOffset (OPT: 2). */
  posOffset: number;
  layers: LayerSpec[];
  act: Activation;
  /** Gated MLP: act(x W_gate) ⊙ (x W_up). */
  gated: boolean;
  /** Parallel residual (GPT-NeoX, GPT-J): attention and MLP read the same residual. */
  parallel: boolean;
  /** A norm before attention and before the MLP (every family but OLMo-2). */
  preNorms: boolean;
  /** A norm on the attention and the MLP outputs (Gemma-2/3 sandwich, OLMo-2). */
  postNorms: boolean;
  /** RMSNorm of q and k: over each head (Qwen3, Gemma-3) or over the whole projection (OLMo-2). */
  qkNorm: 'head' | 'full' | null;
  /** Multiplies q·k (1/√dh by default; Gemma-2 query_pre_attn_scalar; GPT-Neo 1). */
  attnScale: number;
  /** Attention-logit soft-capping c·tanh(s/c) (Gemma-2), null for none. */
  attnSoftcap: number | null;
  /** Final-logit soft-capping (Gemma-2), null for none. Effects are measured on the raw logits. */
  finalSoftcap: number | null;
  /** Multiplies the token embedding (Gemma: √d). */
  embedScale: number | null;
}

export interface NormWeights {
  /** The effective gain (Gemma's 1 + g already applied). */
  g: Float32Array;
  b: Float32Array | null;
}

/** The small per-layer tensors (norm gains, biases), kept in JavaScript as float32. */
export interface LayerVectors {
  /** Attention's pre-norm (input_layernorm); null without pre-norms. */
  ln1: NormWeights | null;
  /** The MLP's pre-norm (post_attention_layernorm in Llama naming; GPT-J: the same object as ln1). */
  ln2: NormWeights | null;
  /** Post-norms on the attention and MLP outputs (what the block adds to the residual). */
  attnPostNorm: NormWeights | null;
  mlpPostNorm: NormWeights | null;
  /** q/k norms: width dh (per head) or H·dh / KV·dh (whole projection). */
  qNorm: NormWeights | null;
  kNorm: NormWeights | null;
  bq: Float32Array | null;
  bk: Float32Array | null;
  bv: Float32Array | null;
  bo: Float32Array | null;
  bUp: Float32Array | null;
  bGate: Float32Array | null;
  bDown: Float32Array | null;
}

/** One layer's weights: its vectors, and its matrices as the checkpoint stores them. */
export interface LayerWeights extends LayerVectors {
  wq: Matrix; // H·dh outputs
  wk: Matrix; // KV·dh outputs
  wv: Matrix; // KV·dh outputs
  wo: Matrix; // H·dh inputs, d outputs
  wUp: Matrix;
  wGate: Matrix | null;
  wDown: Matrix;
}

export interface ModelWeights {
  /** Token embedding [V, d]. */
  wte: Matrix;
  /** Learned position embedding [rows, d]. */
  wpe: Matrix | null;
  /** Layer l's weights, read from the checkpoint when asked (once, while its sessions are built). */
  layer(l: number): LayerWeights;
  lnF: NormWeights;
  /** Unembedding [V, d] (rows are tokens); the same object as wte when tied. */
  wU: Matrix;
  /** Unembedding bias (GPT-J): part of the logits, a constant for DE. */
  bU: Float32Array | null;
}

/** Defaults of the fields most families share, so a family states only what differs. */
export function archDefaults(dHead: number): Pick<ArchSpec, 'posOffset' | 'parallel' | 'preNorms' | 'postNorms' | 'qkNorm' | 'attnScale' | 'attnSoftcap' | 'finalSoftcap' | 'embedScale'> {
  return { posOffset: 0, parallel: false, preNorms: true, postNorms: false, qkNorm: null, attnScale: 1 / Math.sqrt(dHead), attnSoftcap: null, finalSoftcap: null, embedScale: null };
}
