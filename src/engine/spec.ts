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

/** Weights of one layer, laid out for x·W (input dimension first). */
export interface LayerWeights {
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
  wq: Float32Array; // [d, H*dh]
  wk: Float32Array; // [d, KV*dh]
  wv: Float32Array; // [d, KV*dh]
  bq: Float32Array | null;
  bk: Float32Array | null;
  bv: Float32Array | null;
  wo: Float32Array; // [H*dh, d]
  bo: Float32Array | null;
  wUp: Float32Array; // [d, dMlp]
  bUp: Float32Array | null;
  wGate: Float32Array | null; // [d, dMlp]
  bGate: Float32Array | null;
  wDown: Float32Array; // [dMlp, d]
  bDown: Float32Array | null;
}

export interface ModelWeights {
  /** Token embedding [V, d]. */
  wte: Float32Array;
  /** Learned position embedding [rows, d]. */
  wpe: Float32Array | null;
  layers: LayerWeights[];
  lnF: NormWeights;
  /** Unembedding stored as [V, d] (rows are tokens); the same array as wte when tied. */
  wU: Float32Array;
  /** Unembedding bias (GPT-J): part of the logits, a constant for DE. */
  bU: Float32Array | null;
}

/** Defaults of the fields most families share, so a family states only what differs. */
export function archDefaults(dHead: number): Pick<ArchSpec, 'posOffset' | 'parallel' | 'preNorms' | 'postNorms' | 'qkNorm' | 'attnScale' | 'attnSoftcap' | 'finalSoftcap' | 'embedScale'> {
  return { posOffset: 0, parallel: false, preNorms: true, postNorms: false, qkNorm: null, attnScale: 1 / Math.sqrt(dHead), attnSoftcap: null, finalSoftcap: null, embedScale: null };
}
