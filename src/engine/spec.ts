/**
 * The normalised description of a decoder-only transformer that the engine builds
 * graphs from. Each model family (src/models/*.ts) maps its Hugging Face config and
 * weight names onto this; the engine never looks at a family name.
 */

export type Activation = 'gelu' | 'gelu_tanh' | 'silu' | 'relu';
export type NormKind = 'layernorm' | 'rmsnorm';

export interface RopeSpec {
  /** Dimensions of each head that are rotated (the first `dim`); the rest pass through. */
  dim: number;
  theta: number;
  /** Frequency scaling (Llama-3 style or linear), already resolved to per-frequency factors. */
  scaling: { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number } | { type: 'linear'; factor: number } | null;
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
  /** Gemma's RMSNorm multiplies by (1 + g). Resolved at load: g is stored as (1 + g). */
  positions: 'learned' | 'rotary';
  rope: RopeSpec | null;
  act: Activation;
  /** Gated MLP: act(x W_gate) ⊙ (x W_up). */
  gated: boolean;
  /** Parallel residual (GPT-NeoX): attention and MLP read the same residual. */
  parallel: boolean;
  /** Multiplies the token embedding (Gemma: √d). */
  embedScale: number | null;
  /** Sliding-window attention span (Mistral), null for full causal attention. */
  slidingWindow: number | null;
}

export interface NormWeights {
  /** The effective gain (Gemma's 1 + g already applied). */
  g: Float32Array;
  b: Float32Array | null;
}

/** Weights of one layer, laid out for x·W (input dimension first). */
export interface LayerWeights {
  ln1: NormWeights;
  /** The MLP's norm (post_attention_layernorm in HF naming). */
  ln2: NormWeights;
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
  /** Learned position embedding [nCtx, d]. */
  wpe: Float32Array | null;
  layers: LayerWeights[];
  lnF: NormWeights;
  /** Unembedding stored as [V, d] (rows are tokens); the same array as wte when tied. */
  wU: Float32Array;
  bU: Float32Array | null;
}
