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
 *
 * Rows come as slots × groups: x [n, P, d] holds n rows for each of P groups, and every
 * row of group i continues the same prompt, so the group shares that prompt's clean
 * keys/values (read once per group, never copied per row) and its new position t (one
 * rotary angle, one mask). Scores against the cached prefix are one batched GEMM per
 * (group, kv head): [G·n, dh] x [dh, Tp]; the row's own new key/value enter as an extra
 * score column and an extra weighted value. Slot-major rows let the caller append the
 * rows that start at a later block as new slots, without moving the others.
 *
 * Inputs: x [n, P, d]; pastK, pastV [B, KV, 1, Tp, dh] (clean caches of the B prompts of
 * the batch, padded to Tp); prompt [P] (int64: the batch prompt of each group); mask
 * [P, 1, 1, Tp+1] (additive: valid past keys of the prompt, then the new key); cos, sin
 * [P, 1, 1, 1, rope.dim] for rotary models; qs [P, d] (each group's readout vector q/σ);
 * with `heads`, u [P, H·dh] (W_O q/σ split by head). Outputs: resid [n, P, d] = x + a (the
 * residual after the block), de [n, P] = a·q/σ (DE' of the block), and with `heads`
 * deHeads [n, P, H] (DE' of each head). A session computes every output, asked for or not,
 * hence the two variants.
 */
export function attentionStepGraph(spec: ArchSpec, lw: LayerWeights, l: number, heads: boolean): Uint8Array {
  const { dModel: d, nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  const G = H / KV;
  const g = new GraphBuilder(`attn_step${l}`);
  const x = g.input('x', ['n', 'P', d]);
  const pastK = g.input('pastK', ['B', KV, 1, 'Tp', dh]);
  const pastV = g.input('pastV', ['B', KV, 1, 'Tp', dh]);
  const prompt = g.input('prompt', ['P'], 'int64');
  const mask = g.input('mask', ['P', 1, 1, 'Tq']);
  const cos = spec.rope ? g.input('cos', ['P', 1, 1, 1, spec.rope.dim]) : null;
  const sin = spec.rope ? g.input('sin', ['P', 1, 1, 1, spec.rope.dim]) : null;
  const qs = g.input('qs', ['P', d]);
  const u = heads ? g.input('u', ['P', H * dh]) : null;

  // q, k and v as one GEMM on the rows as a matrix [n·P, d]: W = [W_q | W_k | W_v].
  const h = norm(g, g.reshape(x, [-1, d]), lw.ln1, spec, `l${l}.ln1`);
  const wide = (H + 2 * KV) * dh;
  const wQkv = new Float32Array(d * wide);
  for (let r = 0; r < d; r++) {
    wQkv.set(lw.wq.subarray(r * H * dh, (r + 1) * H * dh), r * wide);
    wQkv.set(lw.wk.subarray(r * KV * dh, (r + 1) * KV * dh), r * wide + H * dh);
    wQkv.set(lw.wv.subarray(r * KV * dh, (r + 1) * KV * dh), r * wide + (H + KV) * dh);
  }
  let bQkv: string | null = null;
  if (lw.bq || lw.bk || lw.bv) {
    const b = new Float32Array(wide);
    if (lw.bq) b.set(lw.bq, 0);
    if (lw.bk) b.set(lw.bk, H * dh);
    if (lw.bv) b.set(lw.bv, (H + KV) * dh);
    bQkv = g.weight(`l${l}.bqkv`, b, [wide]);
  }
  const qkvRows = g.matmul(h, g.weight(`l${l}.wqkv`, wQkv, [d, wide]), bQkv);
  // [n·P, (H+2KV)·dh] -> [n, P, H+2KV, dh] -> [P, H+2KV, n, dh] (one transpose for q, k and v),
  // split into q [P, KV, G, n, dh] and keys/values [P, KV, 1, n, dh] (head h = (h / G, h % G)).
  const nP = g.slice(g.op('Shape', [x]), 0, 2, 0);
  const shaped = (v: string, tail: number[]) => g.op('Reshape', [v, g.op('Concat', [nP, g.ints(tail)], { axis: 0 })]);
  const byHead = g.op('Transpose', [shaped(qkvRows, [H + 2 * KV, dh])], { perm: [1, 2, 0, 3] });
  const [qh, kh, vh] = g.opN('Split', [byHead, g.ints([H, KV, KV])], 3, { axis: 1 });
  let q = g.reshape(qh, [0, KV, G, -1, dh]);
  let k = g.reshape(kh, [0, KV, 1, -1, dh]);
  const v = g.reshape(vh, [0, KV, 1, -1, dh]);
  if (spec.rope && cos && sin) {
    q = rotary(g, q, cos, sin, spec.rope.dim, dh);
    k = rotary(g, k, cos, sin, spec.rope.dim, dh);
  }
  const scale = g.scalar(1 / Math.sqrt(dh));
  // The groups' caches, as [P, KV, Tp, dh] (a per-prompt gather, not per row).
  const kvShape = g.ints([0, KV, -1, dh]);
  const pk = g.op('Reshape', [g.op('Gather', [pastK, prompt], { axis: 0 }), kvShape]);
  const pv = g.op('Reshape', [g.op('Gather', [pastV, prompt], { axis: 0 }), kvShape]);
  // Scores against the prefix: [P, KV, G·n, dh] x [P, KV, dh, Tp].
  const qFlat = g.op('Reshape', [q, g.ints([0, KV, -1, dh])]);
  const sPast = g.op('MatMul', [qFlat, g.op('Transpose', [pk], { perm: [0, 1, 3, 2] })]);
  // Score of each row against its own new key: [P, KV, G, n, 1] -> [P, KV, G·n, 1].
  const sSelf = g.op('Reshape', [g.op('ReduceSum', [g.op('Mul', [q, k]), g.ints([-1])], { keepdims: 1 }), g.ints([0, KV, -1, 1])]);
  const scores = g.op('Mul', [g.op('Concat', [sPast, sSelf], { axis: -1 }), scale]);
  const probs = g.op('Softmax', [g.op('Add', [scores, mask])], { axis: -1 });
  const pPast = g.slice(probs, 0, -1, -1); // [P, KV, G·n, Tp]
  const pSelf = g.op('Reshape', [g.slice(probs, -1, 2 ** 31 - 1, -1), g.ints([0, KV, G, -1, 1])]); // [P, KV, G, n, 1]
  const zPast = g.op('Reshape', [g.op('MatMul', [pPast, pv]), g.ints([0, KV, G, -1, dh])]);
  const z5 = g.op('Add', [zPast, g.op('Mul', [pSelf, v])]); // [P, KV, G, n, dh]
  const z = g.reshape(g.op('Transpose', [z5], { perm: [3, 0, 1, 2, 4] }), [-1, H * dh]); // rows back in [n, P] order
  const a = shaped(outProj(g, z, spec, lw, l), [d]); // [n, P, d]
  g.output(g.op('Add', [x, a]), 'resid', ['n', 'P', d]);
  g.output(readout(g, a, qs), 'de', ['n', 'P']);
  if (u) {
    const perHead = shaped(g.op('Mul', [shaped(z, [H * dh]), u]), [H, dh]); // [n, P, H, dh]
    g.output(g.op('ReduceSum', [perHead, g.ints([-1])], { keepdims: 0 }), 'deHeads', ['n', 'P', H]);
  }
  return g.toBytes();
}

/** v [n, P, d] · qs [P, d] over the last axis: [n, P]. */
function readout(g: GraphBuilder, v: string, qs: string): string {
  return g.op('ReduceSum', [g.op('Mul', [v, qs]), g.ints([-1])], { keepdims: 0 });
}

/**
 * MLP block on rows x [n, P, d] (the clean forward passes [N, 1, d]).
 * Outputs: out [n, P, d] (the block's output m_l), resid [n, P, d] = base + m_l (base is x
 * for sequential blocks, x + a_l for parallel ones), de [n, P] = m_l·q/σ with qs [P, d]
 * (zeros when not wanted).
 * GELU is one fused operator (ONNX Gelu, opset 20) where the graph can use opset 20
 * (LayerNorm models; RMSNorm's ReduceMean takes its axes as an attribute only up to
 * opset 17): the decomposed tanh formula costs eight passes over the [N, dMlp]
 * activations, which on the fast path's large row batches is a third of the block.
 */
export function mlpGraph(spec: ArchSpec, lw: LayerWeights, l: number): Uint8Array {
  const g = new GraphBuilder(`mlp${l}`);
  const { dModel: d, dMlp: f } = spec;
  const fused = spec.norm === 'layernorm' && (spec.act === 'gelu' || spec.act === 'gelu_tanh');
  const act = (v: string) => (fused ? g.op('Gelu', [v], spec.act === 'gelu_tanh' ? { approximate: 'tanh' } : {}) : activation(g, v, spec.act));
  const x = g.input('x', ['n', 'P', d]);
  const base = g.input('base', ['n', 'P', d]);
  const qs = g.input('qs', ['P', d]);
  // Rows as a matrix, so that each projection and its bias are one Gemm.
  const h = norm(g, g.reshape(x, [-1, d]), lw.ln2, spec, `l${l}.ln2`);
  const up = g.matmul(h, g.weight(`l${l}.wUp`, lw.wUp, [d, f]), lw.bUp ? g.weight(`l${l}.bUp`, lw.bUp, [f]) : null);
  // Gated: act(x W_gate) ⊙ (x W_up); otherwise act(x W_up).
  const a = spec.gated
    ? g.op('Mul', [act(g.matmul(h, g.weight(`l${l}.wGate`, lw.wGate!, [d, f]), lw.bGate ? g.weight(`l${l}.bGate`, lw.bGate, [f]) : null)), up])
    : act(up);
  const rows = g.matmul(a, g.weight(`l${l}.wDown`, lw.wDown, [f, d]), lw.bDown ? g.weight(`l${l}.bDown`, lw.bDown, [d]) : null);
  const out = g.op('Reshape', [rows, g.op('Shape', [x])]);
  g.output(out, 'out', ['n', 'P', d]);
  g.output(g.op('Add', [base, out]), 'resid', ['n', 'P', d]);
  g.output(readout(g, out, qs), 'de', ['n', 'P']);
  return g.toBytes(fused ? 20 : 17);
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
