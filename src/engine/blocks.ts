import { GraphBuilder } from './onnx.js';
import type { ArchSpec, LayerWeights, ModelWeights, NormWeights, RopeSpec } from './spec.js';

/**
 * ONNX graphs for the blocks of a transformer: the pieces the residual plan
 * (src/models/plan.ts) chains together. Each attention block and each MLP block is its
 * own graph (and session), so that activations can be read and replaced between them.
 * What a block computes (pre-norm, q/k norms, rotary, soft-capping, post-norm) is
 * written once below and shared by the whole-prompt and the one-position graphs.
 *
 * Layouts: attention works on [B, KV, G, T, dh] (G = heads per key/value head), so
 * grouped-query attention is a broadcast MatMul with no copies of keys/values.
 * Head h of the model is (kv, g) = (h / G, h % G), as Hugging Face's repeat_kv.
 */

const OPSET = 20;

/** LayerNorm or RMSNorm over the last axis; `inv` is 1/σ per row for RMSNorm (the post-norm head readouts need it). */
function norm(g: GraphBuilder, x: string, w: NormWeights, spec: ArchSpec, prefix: string): { y: string; inv: string | null } {
  const width = w.g.length;
  const gain = g.weight(`${prefix}.g`, w.g, [width]);
  if (spec.norm === 'layernorm') {
    const bias = w.b ? g.weight(`${prefix}.b`, w.b, [width]) : g.scalar(new Array(width).fill(0));
    return { y: g.op('LayerNormalization', [x, gain, bias], { axis: -1, epsilon: spec.normEps }), inv: null };
  }
  const ms = g.op('ReduceMean', [g.op('Mul', [x, x]), g.ints([-1])], { keepdims: 1 });
  const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [ms, g.scalar(spec.normEps)])])]);
  return { y: g.op('Mul', [g.op('Mul', [x, inv]), gain]), inv };
}

function activation(g: GraphBuilder, x: string, act: ArchSpec['act']): string {
  switch (act) {
    case 'gelu':
      return g.op('Gelu', [x]);
    case 'gelu_tanh':
      return g.op('Gelu', [x], { approximate: 'tanh' });
    case 'silu':
      return g.op('Mul', [x, g.op('Sigmoid', [x])]);
    case 'relu':
      return g.op('Relu', [x]);
  }
}

/** Rotary embedding on the last axis: the first `dim` dims rotate, the rest pass. */
function rotary(g: GraphBuilder, x: string, cos: string, sin: string, rope: RopeSpec, dHead: number): string {
  const dim = rope.dim;
  const rot = dim === dHead ? x : g.slice(x, 0, dim, -1);
  let turned: string;
  if (rope.style === 'half') {
    // rotate_half: (x1, x2) -> (−x2, x1) on the two halves.
    turned = g.op('Concat', [g.op('Neg', [g.slice(rot, dim / 2, dim, -1)]), g.slice(rot, 0, dim / 2, -1)], { axis: -1 });
  } else {
    // rotate_every_two: (x0, x1) -> (−x1, x0) on each pair.
    const pairs = g.reshape(rot, [0, 0, 0, 0, dim / 2, 2]);
    const swapped = g.op('Concat', [g.op('Neg', [g.slice(pairs, 1, 2, -1)]), g.slice(pairs, 0, 1, -1)], { axis: -1 });
    turned = g.reshape(swapped, [0, 0, 0, 0, dim]);
  }
  const y = g.op('Add', [g.op('Mul', [rot, cos]), g.op('Mul', [turned, sin])]);
  return dim === dHead ? y : g.op('Concat', [y, g.slice(x, dim, dHead, -1)], { axis: -1 });
}

/** Reshape v to (the first two dims of x) followed by `tail`. */
function shapedLike(g: GraphBuilder, v: string, x: string, tail: number[]): string {
  const lead = g.slice(g.op('Shape', [x]), 0, 2, 0);
  return g.op('Reshape', [v, g.op('Concat', [lead, g.ints(tail)], { axis: 0 })]);
}

/** The block's input norm, on rows x [N, d] (identity without pre-norms). */
function preNorm(g: GraphBuilder, rows: string, w: NormWeights | null, spec: ArchSpec, prefix: string): string {
  return w && spec.preNorms ? norm(g, rows, w, spec, prefix).y : rows;
}

/**
 * q, k, v of an attention block for x [A, C, d], heads on the second axis: `perm` maps
 * [A, C, heads, dh] to [A', heads, C', dh]. Returns q [A', KV, G, C', dh] and k, v
 * [A', KV, 1, C', dh], with q/k norms and rotary applied (cos, sin broadcast on q).
 * One GEMM for q, k and v together, one transpose before the split.
 */
function projectHeads(g: GraphBuilder, x: string, spec: ArchSpec, lw: LayerWeights, l: number, perm: number[], cos: string | null, sin: string | null) {
  const { dModel: d, nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  const G = H / KV;
  const rope = spec.layers[l].rope;
  const h = preNorm(g, g.reshape(x, [-1, d]), lw.ln1, spec, `l${l}.ln1`);
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
  let rows = g.matmul(h, g.weight(`l${l}.wqkv`, wQkv, [d, wide]), bQkv);
  if (spec.qkNorm === 'full') {
    // OLMo-2: q and k normalised over the whole projection, before the head split.
    const [q, k, v] = g.opN('Split', [rows, g.ints([H * dh, KV * dh, KV * dh])], 3, { axis: -1 });
    rows = g.op('Concat', [norm(g, q, lw.qNorm!, spec, `l${l}.qn`).y, norm(g, k, lw.kNorm!, spec, `l${l}.kn`).y, v], { axis: -1 });
  }
  const byHead = g.op('Transpose', [shapedLike(g, rows, x, [H + 2 * KV, dh])], { perm });
  let [qh, kh, vh] = g.opN('Split', [byHead, g.ints([H, KV, KV])], 3, { axis: 1 });
  if (spec.qkNorm === 'head') {
    qh = norm(g, qh, lw.qNorm!, spec, `l${l}.qn`).y;
    kh = norm(g, kh, lw.kNorm!, spec, `l${l}.kn`).y;
  }
  let q = g.reshape(qh, [0, KV, G, -1, dh]);
  let k = g.reshape(kh, [0, KV, 1, -1, dh]);
  const v = g.reshape(vh, [0, KV, 1, -1, dh]);
  if (rope && cos && sin) {
    q = rotary(g, q, cos, sin, rope, dh);
    k = rotary(g, k, cos, sin, rope, dh);
  }
  return { q, k, v };
}

/** Scores q·k scaled, then soft-capped where the model caps them. */
function scoreTransform(g: GraphBuilder, s: string, spec: ArchSpec): string {
  const scaled = g.op('Mul', [s, g.scalar(spec.attnScale)]);
  if (spec.attnSoftcap === null) return scaled;
  const c = spec.attnSoftcap;
  return g.op('Mul', [g.op('Tanh', [g.op('Mul', [scaled, g.scalar(1 / c)])]), g.scalar(c)]);
}

/**
 * Output projection of z rows [N, H·dh], then the post-norm where the model has one.
 * `pre` is the projection's output, `out` what the block adds to the residual, `inv` the
 * post-norm's 1/s per row (null without post-norm).
 */
function finishAttention(g: GraphBuilder, z: string, spec: ArchSpec, lw: LayerWeights, l: number) {
  const wo = g.weight(`l${l}.wo`, lw.wo, [spec.nHeads * spec.dHead, spec.dModel]);
  const pre = g.matmul(z, wo, lw.bo ? g.weight(`l${l}.bo`, lw.bo, [spec.dModel]) : null);
  if (!lw.attnPostNorm) return { pre, out: pre, inv: null };
  const { y, inv } = norm(g, pre, lw.attnPostNorm, spec, `l${l}.apn`);
  return { pre, out: y, inv };
}

/**
 * Attention block over whole prompts.
 * Inputs: x [B, T, d] (the residual entering the block), mask [B, 1, 1, T, T] (additive),
 * and for rotary layers cos, sin [B, 1, 1, T, rope.dim].
 * Outputs: out [B, T, d] (a_l, what the block adds), z [B, T, H*dh] (per-head values
 * before the output projection), k, v [B, KV, 1, T, dh] (the key/value cache), and with
 * a post-norm pre [B, T, d] (the output projection's output, before the norm).
 */
export function attentionGraph(spec: ArchSpec, lw: LayerWeights, l: number): Uint8Array {
  const { dModel: d, nHeads: H, dHead: dh, nKvHeads: KV } = spec;
  const rope = spec.layers[l].rope;
  const g = new GraphBuilder(`attn${l}`);
  const x = g.input('x', ['B', 'T', d]);
  const mask = g.input('mask', ['B', 1, 1, 'T', 'T']);
  const cos = rope ? g.input('cos', ['B', 1, 1, 'T', rope.dim]) : null;
  const sin = rope ? g.input('sin', ['B', 1, 1, 'T', rope.dim]) : null;
  const { q, k, v } = projectHeads(g, x, spec, lw, l, [0, 2, 1, 3], cos, sin);
  const scores = scoreTransform(g, g.op('MatMul', [q, g.op('Transpose', [k], { perm: [0, 1, 2, 4, 3] })]), spec);
  const probs = g.op('Softmax', [g.op('Add', [scores, mask])], { axis: -1 });
  const z5 = g.op('MatMul', [probs, v]); // [B, KV, G, T, dh]
  const z = g.reshape(g.op('Transpose', [z5], { perm: [0, 3, 1, 2, 4] }), [-1, H * dh]);
  const { pre, out } = finishAttention(g, z, spec, lw, l);
  g.output(shapedLike(g, out, x, [d]), 'out', ['B', 'T', d]);
  if (lw.attnPostNorm) g.output(shapedLike(g, pre, x, [d]), 'pre', ['B', 'T', d]);
  g.output(shapedLike(g, z, x, [H * dh]), 'z', ['B', 'T', H * dh]);
  g.output(k, 'k', ['B', KV, 1, 'T', dh]);
  g.output(v, 'v', ['B', KV, 1, 'T', dh]);
  return g.toBytes(OPSET);
}

/**
 * Attention block for one new position per row, attending to a cached prefix: the
 * last-position recomputation of an intervention.
 *
 * Rows come as slots × groups: x [n, P, d] holds n rows for each of P groups, and every
 * row of group i continues the same prompt, so the group shares that prompt's clean
 * keys/values (read once per group, never copied per row) and its new position t (one
 * rotary angle, one mask). Scores against the cached prefix are one batched GEMM per
 * (group, kv head): [G·n, dh] x [dh, Tp]; the row's own new key/value enter as an extra
 * score column and an extra weighted value.
 *
 * Inputs: x [n, P, d]; base [n, P, d] (what the block's output is added to); pastK, pastV
 * [B, KV, 1, Tp, dh] (clean caches of the batch's prompts, padded to Tp); prompt [P]
 * (int64: the batch prompt of each group); mask [P, 1, 1, Tp+1] (additive: the past keys
 * the position sees, then its own key); cos, sin [P, 1, 1, 1, rope.dim] for rotary layers;
 * qs [P, d] (each group's readout vector); with `heads`, u [P, H·dh] (each head's readout
 * through W_O). Outputs: resid [n, P, d] = base + a, de [n, P] = a·qs, and with `heads`
 * deHeads [n, P, H] (each head's component · qs). A session computes every output, asked
 * for or not, hence the two variants.
 */
export function attentionStepGraph(spec: ArchSpec, lw: LayerWeights, l: number, heads: boolean): Uint8Array {
  const { dModel: d, nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  const G = H / KV;
  const rope = spec.layers[l].rope;
  const g = new GraphBuilder(`attn_step${l}`);
  const x = g.input('x', ['n', 'P', d]);
  const base = g.input('base', ['n', 'P', d]);
  const pastK = g.input('pastK', ['B', KV, 1, 'Tp', dh]);
  const pastV = g.input('pastV', ['B', KV, 1, 'Tp', dh]);
  const prompt = g.input('prompt', ['P'], 'int64');
  const mask = g.input('mask', ['P', 1, 1, 'Tq']);
  const cos = rope ? g.input('cos', ['P', 1, 1, 1, rope.dim]) : null;
  const sin = rope ? g.input('sin', ['P', 1, 1, 1, rope.dim]) : null;
  const qs = g.input('qs', ['P', d]);
  const u = heads ? g.input('u', ['P', H * dh]) : null;

  // [n, P, heads, dh] -> [P, heads, n, dh]: groups first, rows as the sequence axis.
  const { q, k, v } = projectHeads(g, x, spec, lw, l, [1, 2, 0, 3], cos, sin);
  // The groups' caches, as [P, KV, Tp, dh] (a per-prompt gather, not per row).
  const kvShape = g.ints([0, KV, -1, dh]);
  const pk = g.op('Reshape', [g.op('Gather', [pastK, prompt], { axis: 0 }), kvShape]);
  const pv = g.op('Reshape', [g.op('Gather', [pastV, prompt], { axis: 0 }), kvShape]);
  // Scores against the prefix: [P, KV, G·n, dh] x [P, KV, dh, Tp].
  const qFlat = g.op('Reshape', [q, g.ints([0, KV, -1, dh])]);
  const sPast = g.op('MatMul', [qFlat, g.op('Transpose', [pk], { perm: [0, 1, 3, 2] })]);
  // Score of each row against its own new key: [P, KV, G, n, 1] -> [P, KV, G·n, 1].
  const sSelf = g.op('Reshape', [g.op('ReduceSum', [g.op('Mul', [q, k]), g.ints([-1])], { keepdims: 1 }), g.ints([0, KV, -1, 1])]);
  const scores = scoreTransform(g, g.op('Concat', [sPast, sSelf], { axis: -1 }), spec);
  const probs = g.op('Softmax', [g.op('Add', [scores, mask])], { axis: -1 });
  const pPast = g.slice(probs, 0, -1, -1); // [P, KV, G·n, Tp]
  const pSelf = g.op('Reshape', [g.slice(probs, -1, 2 ** 31 - 1, -1), g.ints([0, KV, G, -1, 1])]); // [P, KV, G, n, 1]
  const zPast = g.op('Reshape', [g.op('MatMul', [pPast, pv]), g.ints([0, KV, G, -1, dh])]);
  const z5 = g.op('Add', [zPast, g.op('Mul', [pSelf, v])]); // [P, KV, G, n, dh]
  const z = g.reshape(g.op('Transpose', [z5], { perm: [3, 0, 1, 2, 4] }), [-1, H * dh]); // rows back in [n, P] order
  const { out, inv } = finishAttention(g, z, spec, lw, l);
  const a = shapedLike(g, out, x, [d]); // [n, P, d]
  g.output(g.op('Add', [base, a]), 'resid', ['n', 'P', d]);
  g.output(readout(g, a, qs), 'de', ['n', 'P']);
  if (u) {
    const perHead = shapedLike(g, g.op('Mul', [shapedLike(g, z, x, [H * dh]), u]), x, [H, dh]); // [n, P, H, dh]
    let deHeads = g.op('ReduceSum', [perHead, g.ints([-1])], { keepdims: 0 });
    // Post-norm: a head's component is its pre-norm output over the layer's norm scale.
    if (inv) deHeads = g.op('Mul', [deHeads, shapedLike(g, inv, x, [1])]);
    g.output(deHeads, 'deHeads', ['n', 'P', H]);
  }
  return g.toBytes(OPSET);
}

/** v [n, P, d] · qs [P, d] over the last axis: [n, P]. */
function readout(g: GraphBuilder, v: string, qs: string): string {
  return g.op('ReduceSum', [g.op('Mul', [v, qs]), g.ints([-1])], { keepdims: 0 });
}

/**
 * MLP block on rows x [n, P, d] (the clean forward passes [N, 1, d]).
 * Outputs: out [n, P, d] (m_l, what the block adds, post-norm included), resid [n, P, d]
 * = base + m_l, de [n, P] = m_l·qs with qs [P, d] (zeros when not wanted).
 */
export function mlpGraph(spec: ArchSpec, lw: LayerWeights, l: number): Uint8Array {
  const g = new GraphBuilder(`mlp${l}`);
  const { dModel: d, dMlp: f } = spec;
  const x = g.input('x', ['n', 'P', d]);
  const base = g.input('base', ['n', 'P', d]);
  const qs = g.input('qs', ['P', d]);
  // Rows as a matrix, so that each projection and its bias are one Gemm.
  const h = preNorm(g, g.reshape(x, [-1, d]), lw.ln2, spec, `l${l}.ln2`);
  const up = g.matmul(h, g.weight(`l${l}.wUp`, lw.wUp, [d, f]), lw.bUp ? g.weight(`l${l}.bUp`, lw.bUp, [f]) : null);
  // Gated: act(x W_gate) ⊙ (x W_up); otherwise act(x W_up).
  const a = spec.gated
    ? g.op('Mul', [activation(g, g.matmul(h, g.weight(`l${l}.wGate`, lw.wGate!, [d, f]), lw.bGate ? g.weight(`l${l}.bGate`, lw.bGate, [f]) : null), spec.act), up])
    : activation(g, up, spec.act);
  let rows = g.matmul(a, g.weight(`l${l}.wDown`, lw.wDown, [f, d]), lw.bDown ? g.weight(`l${l}.bDown`, lw.bDown, [d]) : null);
  if (lw.mlpPostNorm) rows = norm(g, rows, lw.mlpPostNorm, spec, `l${l}.mpn`).y;
  const out = g.op('Reshape', [rows, g.op('Shape', [x])]);
  g.output(out, 'out', ['n', 'P', d]);
  g.output(g.op('Add', [base, out]), 'resid', ['n', 'P', d]);
  g.output(readout(g, out, qs), 'de', ['n', 'P']);
  return g.toBytes(OPSET);
}

/** Final norm and unembedding: z [N, d] to raw logits [N, V] (before any soft-capping). */
export function unembedGraph(spec: ArchSpec, w: ModelWeights): Uint8Array {
  const g = new GraphBuilder('unembed');
  const z = g.input('z', ['N', spec.dModel]);
  const h = norm(g, z, w.lnF, spec, 'lnf').y;
  const wU = g.weight('wU', w.wU, [spec.vocab, spec.dModel]);
  // Gemm with transB reads the [V, d] matrix as stored, so a tied embedding needs no transposed copy.
  const logits = g.op('Gemm', [h, wU, ...(w.bU ? [g.weight('bU', w.bU, [spec.vocab])] : [])], { transB: 1, alpha: 1.0, beta: 1.0 });
  g.output(logits, 'logits', ['N', spec.vocab]);
  return g.toBytes(OPSET);
}

/**
 * Token (+ learned position) embedding. The tables are graph inputs, not baked-in
 * weights, so the one copy in JavaScript memory serves embedding, noise and the
 * direct-effect readout. `pos` holds the rows of the position table (offset applied).
 */
export function embedGraph(spec: ArchSpec, w: ModelWeights): Uint8Array {
  const g = new GraphBuilder('embed');
  const ids = g.input('ids', ['B', 'T'], 'int64');
  const wte = g.input('wte', [spec.vocab, spec.dModel]);
  let e = g.op('Gather', [wte, ids], { axis: 0 });
  if (spec.embedScale !== null) e = g.op('Mul', [e, g.scalar(spec.embedScale)]);
  if (w.wpe) {
    const pos = g.input('pos', ['B', 'T'], 'int64');
    const wpe = g.input('wpe', ['Np', spec.dModel]);
    e = g.op('Add', [e, g.op('Gather', [wpe, pos], { axis: 0 })]);
  }
  g.output(e, 'out', ['B', 'T', spec.dModel]);
  return g.toBytes(OPSET);
}
