/**
 * Hand-made models for known-answer tests: weights written out as a Hugging Face
 * model directory (config.json + model.safetensors) in a temporary folder, to be
 * loaded with HookedModel.load like any downloaded model.
 *
 * Matrices are given the way Hugging Face stores them (nn.Linear: [out][in]), as
 * nested arrays, usually built with `zeros` and `set`. Nothing here calls Hydra's
 * engine: the point is that a test can work out every activation by hand.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeSafetensors } from '../src/io/safetensors.js';
import { tmpDir } from './helpers.js';

export type Matrix = number[][];
export type Vector = number[];

/** rows × cols of zeros. */
export function zeros(rows: number, cols: number): Matrix {
  return Array.from({ length: rows }, () => new Array<number>(cols).fill(0));
}

/** A vector of n copies of v. */
export function filled(n: number, v: number): Vector {
  return new Array<number>(n).fill(v);
}

/** The unit vector e_i of length n, times s. */
export function unit(n: number, i: number, s = 1): Vector {
  const v = filled(n, 0);
  v[i] = s;
  return v;
}

/** Set entries [row, col, value] of a matrix (in place; returns it). */
export function set(m: Matrix, entries: [number, number, number][]): Matrix {
  for (const [r, c, v] of entries) {
    if (r < 0 || r >= m.length || c < 0 || c >= m[0].length) throw new Error(`set: entry [${r}, ${c}] outside a ${m.length}×${m[0].length} matrix`);
    m[r][c] = v;
  }
  return m;
}

function flat(m: Matrix, rows: number, cols: number, what: string): { shape: number[]; data: Float32Array } {
  if (m.length !== rows || m.some((r) => r.length !== cols)) throw new Error(`${what}: expected ${rows}×${cols}`);
  return { shape: [rows, cols], data: Float32Array.from(m.flat()) };
}

function vec(v: Vector, n: number, what: string): { shape: number[]; data: Float32Array } {
  if (v.length !== n) throw new Error(`${what}: expected ${n} values, got ${v.length}`);
  return { shape: [n], data: Float32Array.from(v) };
}

/** One Llama decoder layer; omitted matrices are zero, omitted norm gains are ones. */
export interface LlamaLayer {
  inputNorm?: Vector;
  postNorm?: Vector;
  /** [nHeads·dHead][d] */
  q?: Matrix;
  /** [nKvHeads·dHead][d] */
  k?: Matrix;
  v?: Matrix;
  /** [d][nHeads·dHead] */
  o?: Matrix;
  /** [f][d] */
  gate?: Matrix;
  up?: Matrix;
  /** [d][f] */
  down?: Matrix;
}

export interface LlamaModel {
  d: number;
  vocab: number;
  /** MLP width (intermediate_size). */
  f: number;
  nHeads?: number;
  nKvHeads?: number;
  eps: number;
  act: 'silu' | 'relu';
  nCtx?: number;
  /** [vocab][d] */
  embed: Matrix;
  /** [vocab][d]; omitted: tied to the embedding. */
  lmHead?: Matrix;
  finalNorm?: Vector;
  layers: LlamaLayer[];
}

/** Write a Llama-family model directory into `dir` (default: a fresh temporary directory); returns the directory. */
export function writeLlama(m: LlamaModel, dir = tmpDir('hydra-constructed-')): string {
  const { d, vocab: V, f } = m;
  const H = m.nHeads ?? 1;
  const KV = m.nKvHeads ?? H;
  const dh = d / H;
  if (!Number.isInteger(dh)) throw new Error(`writeLlama: d=${d} not divisible by ${H} heads`);
  const t: Record<string, { shape: number[]; data: Float32Array }> = {};
  t['model.embed_tokens.weight'] = flat(m.embed, V, d, 'embed');
  if (m.lmHead) t['lm_head.weight'] = flat(m.lmHead, V, d, 'lmHead');
  t['model.norm.weight'] = vec(m.finalNorm ?? filled(d, 1), d, 'finalNorm');
  m.layers.forEach((L, l) => {
    const p = `model.layers.${l}`;
    t[`${p}.input_layernorm.weight`] = vec(L.inputNorm ?? filled(d, 1), d, `layer ${l} inputNorm`);
    t[`${p}.post_attention_layernorm.weight`] = vec(L.postNorm ?? filled(d, 1), d, `layer ${l} postNorm`);
    t[`${p}.self_attn.q_proj.weight`] = flat(L.q ?? zeros(H * dh, d), H * dh, d, `layer ${l} q`);
    t[`${p}.self_attn.k_proj.weight`] = flat(L.k ?? zeros(KV * dh, d), KV * dh, d, `layer ${l} k`);
    t[`${p}.self_attn.v_proj.weight`] = flat(L.v ?? zeros(KV * dh, d), KV * dh, d, `layer ${l} v`);
    t[`${p}.self_attn.o_proj.weight`] = flat(L.o ?? zeros(d, H * dh), d, H * dh, `layer ${l} o`);
    t[`${p}.mlp.gate_proj.weight`] = flat(L.gate ?? zeros(f, d), f, d, `layer ${l} gate`);
    t[`${p}.mlp.up_proj.weight`] = flat(L.up ?? zeros(f, d), f, d, `layer ${l} up`);
    t[`${p}.mlp.down_proj.weight`] = flat(L.down ?? zeros(d, f), d, f, `layer ${l} down`);
  });
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: d,
    num_hidden_layers: m.layers.length,
    num_attention_heads: H,
    num_key_value_heads: KV,
    head_dim: dh,
    intermediate_size: f,
    vocab_size: V,
    max_position_embeddings: m.nCtx ?? 16,
    rms_norm_eps: m.eps,
    rope_theta: 10000,
    rope_scaling: null,
    hidden_act: m.act,
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: !m.lmHead,
    torch_dtype: 'float32',
  };
  return writeModelDir(dir, config, t);
}

/** One GPT-2 block; matrices in Conv1D layout [in][out]; omitted matrices and biases are zero, norm gains ones. */
export interface Gpt2Layer {
  ln1?: { g?: Vector; b?: Vector };
  ln2?: { g?: Vector; b?: Vector };
  /** [d][d] each; fused into c_attn as [q | k | v]. */
  q?: Matrix;
  k?: Matrix;
  v?: Matrix;
  bq?: Vector;
  bk?: Vector;
  bv?: Vector;
  /** c_proj of attention [d][d] and its bias. */
  o?: Matrix;
  bo?: Vector;
  /** c_fc [d][f], c_proj [f][d]. */
  fc?: Matrix;
  bfc?: Vector;
  proj?: Matrix;
  bproj?: Vector;
}

export interface Gpt2Model {
  d: number;
  vocab: number;
  /** MLP width (n_inner). */
  f: number;
  nHeads?: number;
  nCtx: number;
  eps: number;
  act: 'relu' | 'gelu' | 'gelu_new';
  /** [vocab][d] */
  wte: Matrix;
  /** [nCtx][d] */
  wpe: Matrix;
  /** [vocab][d]; omitted: tied to wte. */
  lmHead?: Matrix;
  lnF?: { g?: Vector; b?: Vector };
  layers: Gpt2Layer[];
}

/** Write a GPT-2 model directory into `dir` (default: a fresh temporary directory); returns the directory. */
export function writeGpt2(m: Gpt2Model, dir = tmpDir('hydra-constructed-')): string {
  const { d, vocab: V, f, nCtx } = m;
  const t: Record<string, { shape: number[]; data: Float32Array }> = {};
  const ln = (name: string, w: { g?: Vector; b?: Vector } | undefined) => {
    t[`${name}.weight`] = vec(w?.g ?? filled(d, 1), d, `${name} gain`);
    t[`${name}.bias`] = vec(w?.b ?? filled(d, 0), d, `${name} bias`);
  };
  t['transformer.wte.weight'] = flat(m.wte, V, d, 'wte');
  t['transformer.wpe.weight'] = flat(m.wpe, nCtx, d, 'wpe');
  m.layers.forEach((L, l) => {
    const p = `transformer.h.${l}`;
    ln(`${p}.ln_1`, L.ln1);
    ln(`${p}.ln_2`, L.ln2);
    const [q, k, v] = [L.q, L.k, L.v].map((w, i) => flat(w ?? zeros(d, d), d, d, `layer ${l} ${'qkv'[i]}`));
    const cAttn = new Float32Array(d * 3 * d);
    for (let r = 0; r < d; r++) [q, k, v].forEach((w, i) => cAttn.set(w.data.subarray(r * d, (r + 1) * d), r * 3 * d + i * d));
    t[`${p}.attn.c_attn.weight`] = { shape: [d, 3 * d], data: cAttn };
    t[`${p}.attn.c_attn.bias`] = { shape: [3 * d], data: Float32Array.from([...(L.bq ?? filled(d, 0)), ...(L.bk ?? filled(d, 0)), ...(L.bv ?? filled(d, 0))]) };
    t[`${p}.attn.c_proj.weight`] = flat(L.o ?? zeros(d, d), d, d, `layer ${l} o`);
    t[`${p}.attn.c_proj.bias`] = vec(L.bo ?? filled(d, 0), d, `layer ${l} bo`);
    t[`${p}.mlp.c_fc.weight`] = flat(L.fc ?? zeros(d, f), d, f, `layer ${l} fc`);
    t[`${p}.mlp.c_fc.bias`] = vec(L.bfc ?? filled(f, 0), f, `layer ${l} bfc`);
    t[`${p}.mlp.c_proj.weight`] = flat(L.proj ?? zeros(f, d), f, d, `layer ${l} proj`);
    t[`${p}.mlp.c_proj.bias`] = vec(L.bproj ?? filled(d, 0), d, `layer ${l} bproj`);
  });
  ln('transformer.ln_f', m.lnF);
  if (m.lmHead) t['lm_head.weight'] = flat(m.lmHead, V, d, 'lmHead');
  const config = {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    n_embd: d,
    n_layer: m.layers.length,
    n_head: m.nHeads ?? 1,
    n_positions: nCtx,
    n_ctx: nCtx,
    n_inner: f,
    vocab_size: V,
    layer_norm_epsilon: m.eps,
    activation_function: m.act,
    tie_word_embeddings: !m.lmHead,
    torch_dtype: 'float32',
  };
  return writeModelDir(dir, config, t);
}

/* Small float64 vector helpers for working the answers out by hand. */

export const add = (...vs: Vector[]): Vector => vs[0].map((_, j) => vs.reduce((s, v) => s + v[j], 0));
export const sub = (a: Vector, b: Vector): Vector => a.map((x, j) => x - b[j]);
export const scale = (v: Vector, s: number): Vector => v.map((x) => x * s);
export const dotv = (a: Vector, b: Vector): number => a.reduce((s, x, j) => s + x * b[j], 0);
/** RMSNorm's scale sqrt(mean(x²) + ε). */
export const rms = (x: Vector, eps: number): number => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length + eps);
/** x − mean(x). */
export const centre = (x: Vector): Vector => {
  const m = x.reduce((s, v) => s + v, 0) / x.length;
  return x.map((v) => v - m);
};
/** LayerNorm's scale sqrt(var(x) + ε), population variance. */
export const lnScale = (x: Vector, eps: number): number => rms(centre(x), eps);
export const silu = (x: number): number => x / (1 + Math.exp(-x));
export const relu = (x: number): number => Math.max(0, x);

/** A model folder as Hugging Face lays it out: config.json and model.safetensors. */
function writeModelDir(dir: string, config: object, tensors: Parameters<typeof writeSafetensors>[1]): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  return dir;
}

/* ---------- the known-answer models' shared layout (test/known-answer.test.ts explains them) ---------- */

export const D = 8;
export const V = 4;
export const [A, X, Y, Q, F, B, N] = [0, 1, 2, 3, 4, 5, 6];
export const EPS = 1e-5;
export const ALPHA = 3;
export const GAMMA = 2;
/** Self-repair mlp.0's side output to Y. */
export const DELTA = 0.25;

export const EMBED: Matrix = [
  add(unit(D, A, 2), unit(D, B)),
  add(unit(D, X, 2), unit(D, B)),
  add(unit(D, Y, 2), unit(D, B)),
  add(unit(D, A), unit(D, Q), unit(D, B)),
];
export const LM_HEAD: Matrix = set(zeros(V, D), [
  [0, A, 1],
  [1, X, 1],
  [2, Y, 1],
  [3, Q, 1],
]);
export const GAIN_F = [2, 1, 1, 0.5, 1, 1, 1, 1];

/** attn.0 of the erasure and self-repair models: reads x̂_X, writes α of it to A and F. */
export const attn0Weights = {
  v: set(zeros(D, D), [[0, X, 1]]),
  o: set(zeros(D, D), [
    [A, 0, ALPHA],
    [F, 0, ALPHA],
  ]),
};

/** The self-repair model (the Hydra motif): attn.1 takes over when attn.0 is gone. */
export function writeSelfRepair(): string {
  return writeLlama({
    d: D,
    vocab: V,
    f: 2,
    eps: EPS,
    act: 'relu',
    embed: EMBED,
    lmHead: LM_HEAD,
    finalNorm: GAIN_F,
    layers: [
      {
        ...attn0Weights,
        gate: set(zeros(2, D), [
          [0, B, 1],
          [0, F, -1],
        ]),
        up: set(zeros(2, D), [[0, B, 1]]),
        down: set(zeros(D, 2), [
          [N, 0, 1],
          [Y, 0, DELTA],
        ]),
      },
      {
        v: set(zeros(D, D), [[0, N, 1]]),
        o: set(zeros(D, D), [[A, 0, GAMMA]]),
      },
    ],
  });
}
