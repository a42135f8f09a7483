import type { ArchSpec, LayerSpec, LayerWeights, ModelWeights, NormWeights, RopeScaling, RopeSpec } from '../engine/spec.js';
import { HydraError } from '../io/errors.js';
import type { WeightStore } from '../io/safetensors.js';

/** What a model family provides: its config read into an ArchSpec, and its weights laid out for the engine. */
export interface Family {
  /** Hugging Face `model_type` values this family handles. */
  modelTypes: string[];
  arch(config: HfConfig): ArchSpec;
  weights(store: WeightStore, spec: ArchSpec, config: HfConfig): ModelWeights;
}

export type HfConfig = Record<string, unknown> & { model_type?: string; _path: string };

/** A required number from config.json, with an error that names the field. */
export function num(config: HfConfig, ...fields: string[]): number {
  for (const f of fields) {
    const v = config[f];
    if (typeof v === 'number' && Number.isFinite(v)) return v;
  }
  throw new HydraError(`${config._path}: missing or non-numeric field '${fields[0]}'`);
}

export function optNum(config: HfConfig, field: string): number | null {
  const v = config[field];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

export function bool(config: HfConfig, field: string, dflt: boolean): boolean {
  const v = config[field];
  return typeof v === 'boolean' ? v : dflt;
}

/** A Hugging Face nn.Linear weight [out, in], transposed to the engine's [in, out]. */
export function linear(store: WeightStore, name: string, inDim: number, outDim: number, why: string): Float32Array {
  return transpose(store.get(name, [outDim, inDim], why), outDim, inDim);
}

/** A fused nn.Linear weight [Σ outs, in] (e.g. Phi-3's qkv_proj), split by output rows and each transposed to [in, out]. */
export function linearParts(store: WeightStore, name: string, inDim: number, outDims: number[], why: string): Float32Array[] {
  const total = outDims.reduce((a, b) => a + b, 0);
  const w = store.get(name, [total, inDim], why);
  let row = 0;
  return outDims.map((n) => {
    const part = transpose(w.subarray(row * inDim, (row + n) * inDim), n, inDim);
    row += n;
    return part;
  });
}

export function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[r * cols + c];
  return out;
}

export function normWeights(store: WeightStore, prefix: string, d: number, withBias: boolean, plusOne = false): NormWeights {
  const g = store.get(`${prefix}.weight`, [d], 'hidden_size');
  if (plusOne) for (let i = 0; i < d; i++) g[i] += 1;
  return { g, b: withBias ? store.get(`${prefix}.bias`, [d], 'hidden_size') : null };
}

export function activationOf(name: unknown, path: string): ArchSpec['act'] {
  switch (name) {
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast':
      return 'gelu_tanh';
    case 'gelu':
      return 'gelu';
    case 'silu':
    case 'swish':
      return 'silu';
    case 'relu':
      return 'relu';
    default:
      throw new HydraError(`${path}: unsupported activation '${String(name)}'; supported: gelu, gelu_new, gelu_pytorch_tanh, silu, relu`);
  }
}

/** The per-layer fields a family without post-norms or q/k norms leaves empty. */
export const NO_EXTRA_NORMS: Pick<LayerWeights, 'attnPostNorm' | 'mlpPostNorm' | 'qNorm' | 'kNorm'> = { attnPostNorm: null, mlpPostNorm: null, qNorm: null, kNorm: null };

/** n layers that share one window and one rotary spec. */
export function sameLayers(n: number, window: number | null, rope: RopeSpec | null): LayerSpec[] {
  return Array.from({ length: n }, () => ({ window, rope }));
}

/**
 * The unembedding: the token embedding when tied, else `lm_head.weight`. `dflt` is the
 * family's Hugging Face default for tie_word_embeddings (Llama's is false: a checkpoint
 * with lm_head.weight and no key uses it).
 */
export function unembedding(store: WeightStore, config: HfConfig, wte: Float32Array, dflt: boolean, V: number, d: number, name = 'lm_head.weight'): Float32Array {
  const tied = bool(config, 'tie_word_embeddings', dflt);
  if (tied) return wte;
  if (!store.has(name)) throw new HydraError(`${config._path}: tie_word_embeddings is false but the checkpoint has no ${name}; set tie_word_embeddings to true or add the unembedding`);
  return store.get(name, [V, d], 'vocab_size, hidden_size');
}

/** Rotary scaling from config.rope_scaling: none, linear, or Llama-3. */
export function ropeScaling(config: HfConfig): RopeScaling {
  const s = config.rope_scaling as Record<string, unknown> | null | undefined;
  if (!s) return null;
  const type = (s.rope_type ?? s.type) as string;
  const factor = s.factor as number;
  if (type === 'default') return null;
  if (type === 'linear') return { type: 'linear', factor };
  if (type === 'llama3') {
    return {
      type: 'llama3',
      factor,
      lowFreqFactor: s.low_freq_factor as number,
      highFreqFactor: s.high_freq_factor as number,
      originalMaxPositions: s.original_max_position_embeddings as number,
    };
  }
  throw new HydraError(`${config._path}: rope_scaling type '${type}' is not supported; supported: linear, llama3`);
}
