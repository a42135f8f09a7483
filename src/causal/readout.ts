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
  private cache = new Map<number, Float64Array>();

  constructor(private readonly model: HookedModel) {}

  /** q_i for each token, in float64 (the unembedding rows come from the model's sessions). */
  async vectors(tokens: number[]): Promise<Float64Array[]> {
    const missing = [...new Set(tokens.filter((t) => !this.cache.has(t)))];
    if (missing.length) {
      const rows = await this.model.unembedRows(missing);
      missing.forEach((t, i) => this.cache.set(t, this.fromRow(rows[i])));
    }
    return tokens.map((t) => this.cache.get(t)!);
  }

  /** The readout vector of r: q_plus − q_minus. */
  async vector(r: ReadoutTokens): Promise<Float64Array> {
    const [qa, qb] = await this.vectors(r.minus === null ? [r.plus] : [r.plus, r.minus]);
    return qb ? Float64Array.from(qa, (v, j) => v - qb[j]) : qa;
  }

  private fromRow(row: Float32Array): Float64Array {
    const { dModel: d, norm } = this.model.spec;
    const { lnF, meanRow } = this.model.unembed;
    const q = new Float64Array(d);
    for (let j = 0; j < d; j++) q[j] = lnF.g[j] * (row[j] - meanRow[j]);
    if (norm === 'layernorm') {
      let m = 0;
      for (let j = 0; j < d; j++) m += q[j];
      m /= d;
      for (let j = 0; j < d; j++) q[j] -= m;
    }
    return q;
  }
}

/**
 * The measured quantity (METHOD "Other measured quantities"): a linear readout r · π̂ of the
 * centred logits. argmax (the paper's): r = e_i, the clean token; answer: r = e_a, the prompt's
 * answer token; logit-diff: r = e_a − e_b, the answer minus a counterfactual token.
 */
export const METRICS = ['argmax', 'answer', 'logit-diff'] as const;
export type Metric = (typeof METRICS)[number];

/** A prompt's readout r = e_plus − e_minus (no minus: r = e_plus). */
export interface ReadoutTokens {
  plus: number;
  minus: number | null;
}

/** r · π̂ of a run's logits. */
export function readLogits(logits: ArrayLike<number>, r: ReadoutTokens): number {
  const plus = centredLogit(logits, r.plus);
  return r.minus === null ? plus : plus - centredLogit(logits, r.minus);
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>, aOffset = 0): number {
  let s = 0;
  for (let j = 0; j < b.length; j++) s += a[aOffset + j] * b[j];
  return s;
}

/** DE(c) = û_σ(c) for every component of a clean run, on its clean token. */
export async function directEffect(readout: Readout, clean: PromptActivations): Promise<Record<string, number>> {
  const [q] = await readout.vectors([clean.token]);
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

/** Ablated runs unembedded at a time: bounds the logits held to rows × vocabulary floats. */
export const LOGIT_ROWS = 64;

/** Reads one ablated run's raw logits (run k of a part): what needs the whole distribution. */
export type LogitReader = (k: number, raw: Float32Array) => void;

/**
 * Each ablated run's raw logits, in run order: its own where it unembedded itself (the naive
 * path), else its final residual z′ unembedded, LOGIT_ROWS runs at a time.
 */
export async function forEachRunLogits(model: HookedModel, runs: { z: ArrayLike<number>; logits?: Float32Array }[], each: LogitReader): Promise<void> {
  const { dModel: d, vocab: V } = model.spec;
  for (let r0 = 0; r0 < runs.length; r0 += LOGIT_ROWS) {
    const r1 = Math.min(runs.length, r0 + LOGIT_ROWS);
    const missing = runs.slice(r0, r1).filter((r) => !r.logits);
    let computed: Float32Array | null = null;
    if (missing.length) {
      const flat = new Float32Array(missing.length * d);
      missing.forEach((r, k) => flat.set(r.z, k * d));
      computed = await model.logits(flat, missing.length);
    }
    let m = 0;
    for (let k = r0; k < r1; k++) each(k, runs[k].logits ?? computed!.subarray(m * V, (m++ + 1) * V));
  }
}
