import { GraphBuilder } from './onnx.js';
import type { ArchSpec, LayerWeights, ModelWeights, NormWeights } from './spec.js';

/**
 * ONNX graphs for the pieces of a transformer. Each attention block and each MLP
 * block is its own graph (and session), so that activations can be read and
 * replaced between them.
 *
 * Layouts: attention works on [B, KV, G, T, dh] (G = heads per key/value head), so
 * grouped-query attention is a broadcast MatMul with no copies of keys/values.
 * Head h of the model is (kv, g) = (h / G, h % G), as Hugging Face's repeat_kv.
 */

function norm(g: GraphBuilder, x: string, w: NormWeights, spec: ArchSpec, prefix: string): string {
  const gain = g.weight(`${prefix}.g`, w.g, [spec.dModel]);
  if (spec.norm === 'layernorm') {
    const bias = w.b ? g.weight(`${prefix}.b`, w.b, [spec.dModel]) : g.scalar(new Array(spec.dModel).fill(0));
    return g.op('LayerNormalization', [x, gain, bias], { axis: -1, epsilon: spec.normEps });
  }
  const ms = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
  const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [ms, g.scalar(spec.normEps)])])]);
  return g.op('Mul', [g.op('Mul', [x, inv]), gain]);
}

function activation(g: GraphBuilder, x: string, act: ArchSpec['act']): string {
  switch (act) {
    case 'gelu': {
      // 0.5 x (1 + erf(x / √2))
      const e = g.op('Erf', [g.op('Mul', [x, g.scalar(Math.SQRT1_2)])]);
      return g.op('Mul', [g.op('Mul', [x, g.scalar(0.5)]), g.op('Add', [e, g.scalar(1)])]);
    }
    case 'gelu_tanh': {
      // 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
      const x3 = g.op('Mul', [g.op('Mul', [x, x]), x]);
      const inner = g.op('Mul', [g.op('Add', [x, g.op('Mul', [x3, g.scalar(0.044715)])]), g.scalar(Math.sqrt(2 / Math.PI))]);
      return g.op('Mul', [g.op('Mul', [x, g.scalar(0.5)]), g.op('Add', [g.op('Tanh', [inner]), g.scalar(1)])]);
    }
    case 'silu':
      return g.op('Mul', [x, g.op('Sigmoid', [x])]);
    case 'relu':
      return g.op('Relu', [x]);
  }
}

/** Rotary embedding on the last axis: the first `dim` dims rotate (rotate_half convention), the rest pass. */
function rotary(g: GraphBuilder, x: string, cos: string, sin: string, dim: number, dHead: number): string {
  const rot = dim === dHead ? x : g.slice(x, 0, dim, -1);
  const x1 = g.slice(rot, 0, dim / 2, -1);
  const x2 = g.slice(rot, dim / 2, dim, -1);
  const half = g.op('Concat', [g.op('Neg', [x2]), x1], { axis: -1 });
  const y = g.op('Add', [g.op('Mul', [rot, cos]), g.op('Mul', [half, sin])]);
  return dim === dHead ? y : g.op('Concat', [y, g.slice(x, dim, dHead, -1)], { axis: -1 });
}

/** q, k, v for the rows of x [B, T, d]: q [B, KV, G, T, dh], k and v [B, KV, 1, T, dh], rotary applied. */
function qkv(g: GraphBuilder, x: string, spec: ArchSpec, lw: LayerWeights, l: number, cos: string | null, sin: string | null) {
  const { dModel: d, nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  const G = H / KV;
  const h = norm(g, x, lw.ln1, spec, `l${l}.ln1`);
  const proj = (w: Float32Array, b: Float32Array | null, n: string, width: number) =>
    g.matmul(h, g.weight(`l${l}.w${n}`, w, [d, width]), b ? g.weight(`l${l}.b${n}`, b, [width]) : null);
  const perm = [0, 2, 3, 1, 4];
  let q = g.op('Transpose', [g.reshape(proj(lw.wq, lw.bq, 'q', H * dh), [0, 0, KV, G, dh])], { perm });
  let k = g.op('Transpose', [g.reshape(proj(lw.wk, lw.bk, 'k', KV * dh), [0, 0, KV, 1, dh])], { perm });
  const v = g.op('Transpose', [g.reshape(proj(lw.wv, lw.bv, 'v', KV * dh), [0, 0, KV, 1, dh])], { perm });
  if (spec.rope && cos && sin) {
    q = rotary(g, q, cos, sin, spec.rope.dim, dh);
    k = rotary(g, k, cos, sin, spec.rope.dim, dh);
  }
  return { q, k, v };
}

/** softmax(q kᵀ/√dh + mask) v, merged back to [B, T, H*dh]. */
function attend(g: GraphBuilder, q: string, k: string, v: string, mask: string, spec: ArchSpec): string {
  const scores = g.op('Mul', [g.op('MatMul', [q, g.op('Transpose', [k], { perm: [0, 1, 2, 4, 3] })]), g.scalar(1 / Math.sqrt(spec.dHead))]);
  const probs = g.op('Softmax', [g.op('Add', [scores, mask])], { axis: -1 });
  const z = g.op('MatMul', [probs, v]); // [B, KV, G, T, dh]
  return g.reshape(g.op('Transpose', [z], { perm: [0, 3, 1, 2, 4] }), [0, 0, spec.nHeads * spec.dHead]);
}

function outProj(g: GraphBuilder, z: string, spec: ArchSpec, lw: LayerWeights, l: number): string {
  const wo = g.weight(`l${l}.wo`, lw.wo, [spec.nHeads * spec.dHead, spec.dModel]);
  return g.matmul(z, wo, lw.bo ? g.weight(`l${l}.bo`, lw.bo, [spec.dModel]) : null);
}

/**
 * Attention block over whole prompts.
 * Inputs: x [B, T, d] (the residual entering the block), mask [B, 1, 1, T, T] (additive),
 * and for rotary models cos, sin [T, rope.dim].
 * Outputs: out [B, T, d] (the block's output a_l), z [B, T, H*dh] (per-head values
 * before the output projection), k, v [B, KV, 1, T, dh] (the key/value cache).
 */
export function attentionGraph(spec: ArchSpec, lw: LayerWeights, l: number): Uint8Array {
  const g = new GraphBuilder(`attn${l}`);
  const x = g.input('x', ['B', 'T', spec.dModel]);
  const mask = g.input('mask', ['B', 1, 1, 'T', 'T']);
  const cos = spec.rope ? g.input('cos', ['T', spec.rope.dim]) : null;
  const sin = spec.rope ? g.input('sin', ['T', spec.rope.dim]) : null;
  const { q, k, v } = qkv(g, x, spec, lw, l, cos, sin);
  const z = attend(g, q, k, v, mask, spec);
  g.output(outProj(g, z, spec, lw, l), 'out', ['B', 'T', spec.dModel]);
  g.output(z, 'z', ['B', 'T', spec.nHeads * spec.dHead]);
  g.output(k, 'k', ['B', spec.nKvHeads, 1, 'T', spec.dHead]);
  g.output(v, 'v', ['B', spec.nKvHeads, 1, 'T', spec.dHead]);
  return g.toBytes();
}

/**
 * Attention block for one new position per row, attending to a cached prefix: the
 * fast path of an intervention at the last position.
 * Inputs: x [R, 1, d]; pastK, pastV [P, KV, 1, Tp, dh] (clean caches of P prompts,
 * padded to Tp); row [R] (int64: which prompt each row continues); mask [R, 1, 1, 1, Tp+1];
 * cos, sin [R, 1, rope.dim] for rotary models. Outputs: out [R, 1, d], z [R, 1, H*dh].
 */
export function attentionStepGraph(spec: ArchSpec, lw: LayerWeights, l: number): Uint8Array {
  const g = new GraphBuilder(`attn_step${l}`);
  const x = g.input('x', ['R', 1, spec.dModel]);
  const pastK = g.input('pastK', ['P', spec.nKvHeads, 1, 'Tp', spec.dHead]);
  const pastV = g.input('pastV', ['P', spec.nKvHeads, 1, 'Tp', spec.dHead]);
  const row = g.input('row', ['R'], 'int64');
  const mask = g.input('mask', ['R', 1, 1, 1, 'Tq']);
  const cos = spec.rope ? g.input('cos', ['R', 1, spec.rope.dim]) : null;
  const sin = spec.rope ? g.input('sin', ['R', 1, spec.rope.dim]) : null;
  // cos/sin [R, 1, r] must broadcast against [R, KV, G, 1, r].
  const c5 = cos ? g.op('Unsqueeze', [cos, g.ints([1, 2])]) : null;
  const s5 = sin ? g.op('Unsqueeze', [sin, g.ints([1, 2])]) : null;
  const { q, k, v } = qkv(g, x, spec, lw, l, c5, s5);
  const kAll = g.op('Concat', [g.op('Gather', [pastK, row], { axis: 0 }), k], { axis: 3 });
  const vAll = g.op('Concat', [g.op('Gather', [pastV, row], { axis: 0 }), v], { axis: 3 });
  const z = attend(g, q, kAll, vAll, mask, spec);
  g.output(outProj(g, z, spec, lw, l), 'out', ['R', 1, spec.dModel]);
  g.output(z, 'z', ['R', 1, spec.nHeads * spec.dHead]);
  return g.toBytes();
}

/** MLP block: x [N, d] (any leading shape) to its output m_l. */
export function mlpGraph(spec: ArchSpec, lw: LayerWeights, l: number): Uint8Array {
  const g = new GraphBuilder(`mlp${l}`);
  const { dModel: d, dMlp: f } = spec;
  const x = g.input('x', ['N', d]);
  const h = norm(g, x, lw.ln2, spec, `l${l}.ln2`);
  const up = g.matmul(h, g.weight(`l${l}.wUp`, lw.wUp, [d, f]), lw.bUp ? g.weight(`l${l}.bUp`, lw.bUp, [f]) : null);
  // Gated: act(x W_gate) ⊙ (x W_up); otherwise act(x W_up).
  const a = spec.gated
    ? g.op('Mul', [activation(g, g.matmul(h, g.weight(`l${l}.wGate`, lw.wGate!, [d, f]), lw.bGate ? g.weight(`l${l}.bGate`, lw.bGate, [f]) : null), spec.act), up])
    : activation(g, up, spec.act);
  const out = g.matmul(a, g.weight(`l${l}.wDown`, lw.wDown, [f, d]), lw.bDown ? g.weight(`l${l}.bDown`, lw.bDown, [d]) : null);
  g.output(out, 'out', ['N', d]);
  return g.toBytes();
}

/** Final norm and unembedding: z [N, d] to logits [N, V]. */
export function unembedGraph(spec: ArchSpec, w: ModelWeights): Uint8Array {
  const g = new GraphBuilder('unembed');
  const z = g.input('z', ['N', spec.dModel]);
  const h = norm(g, z, w.lnF, spec, 'lnf');
  const wU = g.weight('wU', w.wU, [spec.vocab, spec.dModel]);
  // Gemm with transB reads the [V, d] matrix as stored, so a tied embedding needs no transposed copy.
  const logits = g.op('Gemm', [h, wU, ...(w.bU ? [g.weight('bU', w.bU, [spec.vocab])] : [])], { transB: 1, alpha: 1.0, beta: 1.0 });
  g.output(logits, 'logits', ['N', spec.vocab]);
  return g.toBytes();
}

/**
 * Token (+ learned position) embedding. The tables are graph inputs, not baked-in
 * weights, so the one copy in JavaScript memory serves embedding, noise and the
 * direct-effect readout.
 */
export function embedGraph(spec: ArchSpec, w: ModelWeights): Uint8Array {
  const g = new GraphBuilder('embed');
  const ids = g.input('ids', ['B', 'T'], 'int64');
  const wte = g.input('wte', [spec.vocab, spec.dModel]);
  let e = g.op('Gather', [wte, ids], { axis: 0 });
  if (spec.embedScale !== null) e = g.op('Mul', [e, g.scalar(spec.embedScale)]);
  if (w.wpe) {
    const pos = g.input('pos', ['B', 'T'], 'int64');
    const wpe = g.input('wpe', [spec.nCtx, spec.dModel]);
    e = g.op('Add', [e, g.op('Gather', [wpe, pos], { axis: 0 })]);
  }
  g.output(e, 'out', ['B', 'T', spec.dModel]);
  return g.toBytes();
}
