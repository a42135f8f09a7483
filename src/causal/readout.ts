import type { HookedModel, PromptActivations } from '../models/model.js';

/**
 * The direct-effect readout of METHOD.md. For token i, with the final norm's gain g,
 * the centred unembedding column w̃_i = W_U[:, i] − mean_j W_U[:, j] and the norm's
 * projection P (mean subtraction for LayerNorm, identity for RMSNorm):
 *
 *     û_s(c) = (P(c)/s ⊙ g) · w̃_i = c · q_i / s,   q_i = P(g ⊙ w̃_i)
 *
 * (P is a symmetric projection, so it can move onto the readout vector). Every
 * direct effect, and the centred logit of any run, is then a dot product with q_i.
 */
export class Readout {
  private meanRow: Float64Array | null = null;
  private cache = new Map<number, Float64Array>();

  constructor(private readonly model: HookedModel) {}

  /** q_i for token i, in float64. */
  vector(token: number): Float64Array {
    let q = this.cache.get(token);
    if (q) return q;
    const { dModel: d, vocab: V, norm } = this.model.spec;
    const { wU, lnF } = this.model.weights;
    if (!this.meanRow) {
      this.meanRow = new Float64Array(d);
      for (let v = 0; v < V; v++) for (let j = 0; j < d; j++) this.meanRow[j] += wU[v * d + j];
      for (let j = 0; j < d; j++) this.meanRow[j] /= V;
    }
    q = new Float64Array(d);
    for (let j = 0; j < d; j++) q[j] = lnF.g[j] * (wU[token * d + j] - this.meanRow[j]);
    if (norm === 'layernorm') {
      let m = 0;
      for (let j = 0; j < d; j++) m += q[j];
      m /= d;
      for (let j = 0; j < d; j++) q[j] -= m;
    }
    this.cache.set(token, q);
    return q;
  }
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>, aOffset = 0): number {
  let s = 0;
  for (let j = 0; j < b.length; j++) s += a[aOffset + j] * b[j];
  return s;
}

/** DE(c) = û_σ(c) for every component of a clean run, on its clean token. */
export function directEffect(readout: Readout, clean: PromptActivations): Record<string, number> {
  const q = readout.vector(clean.token);
  const out: Record<string, number> = {};
  for (const [name, c] of clean.components) out[name] = dot(c, q) / clean.sigma;
  return out;
}

/** π̂_i: the centred logit of token i. */
export function centredLogit(logits: ArrayLike<number>, i: number): number {
  let m = 0;
  for (let j = 0; j < logits.length; j++) m += logits[j];
  return logits[i] - m / logits.length;
}

/** Softmax probabilities in float64. */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += p[i] = Math.exp(logits[i] - max);
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  return p;
}

/** The k most probable token ids, most probable first (ties: lower id first). */
export function topTokens(p: ArrayLike<number>, k: number): number[] {
  return [...Array(p.length).keys()].sort((a, b) => p[b] - p[a] || a - b).slice(0, k);
}

/** Final-logit soft-capping c·tanh(x/c) (Gemma-2): the model's real logits from the raw ones. */
export function softcap(logits: ArrayLike<number>, c: number): Float64Array {
  return Float64Array.from(logits as ArrayLike<number>, (x) => c * Math.tanh(x / c));
}
