import { concatOutputs } from '../io/matrix.js';
import { GraphBuilder, type Graph } from './onnx.js';
import type { ArchSpec, LayerVectors, LayerWeights, NormWeights, RopeSpec } from './spec.js';

/**
 * ONNX graphs for the blocks of a transformer: the pieces the residual plan
 * (src/models/plan.ts) chains together, so that activations can be read and replaced
 * between them. An attention block is three graphs: `attnIn` (pre-norm, the q/k/v
 * projection, whole-projection q/k norms), a weightless mixing graph (per-head q/k norms,
 * rotary, scores, soft-capping, softmax; one for whole prompts, one for a single new
 * position over cached keys/values), and `attnOut` (the output projection, post-norm, the
 * residual add and readouts). The weighted graphs serve both the clean forward and the
 * last-position path, so every weight is held once. An MLP block is one graph.
 *
 * Layouts: attention works on [B, KV, G, T, dh] (G = heads per key/value head), so
 * grouped-query attention is a broadcast MatMul with no copies of keys/values.
 * Head h of the model is (kv, g) = (h / G, h % G), as Hugging Face's repeat_kv.
 */

/** LayerNorm or RMSNorm over the last axis; `inv` is 1/σ per row for RMSNorm (the post-norm head readouts need it). */
function norm(g: GraphBuilder, x: string, w: NormWeights, spec: ArchSpec, prefix: string): { y: string; inv: string | null } {
  const width = w.g.length;
  const gain = g.vector(`${prefix}.g`, w.g);
  if (spec.norm === 'layernorm') {
    const bias = w.b ? g.vector(`${prefix}.b`, w.b) : g.scalar(new Array(width).fill(0));
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
 * The q/k/v projection of an attention block. Input x [A, C, d]; output qkv [A, C, wide]
 * with wide = (H + 2·KV)·dh, q then k then v (one GEMM), after the pre-norm and, for
 * OLMo-2, the whole-projection q/k norms.
 */
export function attnInGraph(spec: ArchSpec, lw: LayerWeights, l: number): Graph {
  const { dModel: d, nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  const g = new GraphBuilder('attn_in');
  const x = g.input('x', ['A', 'C', d]);
  const h = preNorm(g, g.reshape(x, [-1, d]), lw.ln1, spec, 'ln1');
  const wide = (H + 2 * KV) * dh;
  const wQkv = concatOutputs([lw.wq, lw.wk, lw.wv]);
  let bQkv: string | null = null;
  if (lw.bq || lw.bk || lw.bv) {
    const b = new Float32Array(wide);
    if (lw.bq) b.set(lw.bq, 0);
    if (lw.bk) b.set(lw.bk, H * dh);
    if (lw.bv) b.set(lw.bv, (H + KV) * dh);
    bQkv = g.vector('bqkv', b);
  }
  let rows = g.linear(h, g.matrix('wqkv', wQkv), wQkv, bQkv);
  if (spec.qkNorm === 'full') {
    // OLMo-2: q and k normalised over the whole projection, before the head split.
    const [q, k, v] = g.opN('Split', [rows, g.ints([H * dh, KV * dh, KV * dh])], 3, { axis: -1 });
    rows = g.op('Concat', [norm(g, q, lw.qNorm!, spec, 'qn').y, norm(g, k, lw.kNorm!, spec, 'kn').y, v], { axis: -1 });
  }
  g.output(shapedLike(g, rows, x, [wide]), 'qkv', ['A', 'C', wide]);
  return g.build();
}

/**
 * qkv [A, C, wide] split into heads: `perm` maps [A, C, heads, dh] to [A', heads, C', dh].
 * Returns q [A', KV, G, C', dh] and k, v [A', KV, 1, C', dh], with per-head q/k norms and
 * rotary applied (cos, sin broadcast on q). One transpose before the split.
 */
function mixHeads(g: GraphBuilder, qkv: string, spec: ArchSpec, lw: LayerVectors, l: number, perm: number[], cos: string | null, sin: string | null) {
  const { nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  const G = H / KV;
  const rope = spec.layers[l].rope;
  const byHead = g.op('Transpose', [shapedLike(g, qkv, qkv, [H + 2 * KV, dh])], { perm });
  let [qh, kh, vh] = g.opN('Split', [byHead, g.ints([H, KV, KV])], 3, { axis: 1 });
  if (spec.qkNorm === 'head') {
    qh = norm(g, qh, lw.qNorm!, spec, 'qn').y;
    kh = norm(g, kh, lw.kNorm!, spec, 'kn').y;
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
 * Attention mixing over whole prompts (no weights but per-head q/k norm gains).
 * Inputs: qkv [B, T, wide] (attnIn's output), mask [B, 1, 1, T, T] (additive), and for
 * rotary layers cos, sin [B, 1, 1, T, rope.dim].
 * Outputs: z [B, T, H·dh] (per-head values before the output projection), k, v
 * [B, KV, 1, T, dh] (the key/value cache).
 */
export function attnMixGraph(spec: ArchSpec, lw: LayerVectors, l: number): Graph {
  const { nHeads: H, dHead: dh, nKvHeads: KV } = spec;
  const rope = spec.layers[l].rope;
  const wide = (H + 2 * KV) * dh;
  const g = new GraphBuilder('attn_mix');
  const qkv = g.input('qkv', ['B', 'T', wide]);
  const mask = g.input('mask', ['B', 1, 1, 'T', 'T']);
  const cos = rope ? g.input('cos', ['B', 1, 1, 'T', rope.dim]) : null;
  const sin = rope ? g.input('sin', ['B', 1, 1, 'T', rope.dim]) : null;
  const { q, k, v } = mixHeads(g, qkv, spec, lw, l, [0, 2, 1, 3], cos, sin);
  const scores = scoreTransform(g, g.op('MatMul', [q, g.op('Transpose', [k], { perm: [0, 1, 2, 4, 3] })]), spec);
  const probs = g.op('Softmax', [g.op('Add', [scores, mask])], { axis: -1 });
  const z5 = g.op('MatMul', [probs, v]); // [B, KV, G, T, dh]
  g.output(g.reshape(g.op('Transpose', [z5], { perm: [0, 3, 1, 2, 4] }), [0, 0, H * dh]), 'z', ['B', 'T', H * dh]);
  g.output(k, 'k', ['B', KV, 1, 'T', dh]);
  g.output(v, 'v', ['B', KV, 1, 'T', dh]);
  return g.build();
}

/**
 * Attention mixing for one new position per row, over a cached prefix: the last-position
 * recomputation of an intervention.
 *
 * Rows come as slots × groups: qkv [n, P, wide] holds n rows for each of P groups, and
 * every row of group i continues the same prompt, so the group shares that prompt's clean
 * keys/values (read once per group, never copied per row) and its new position t (one
 * rotary angle, one mask). Scores against the cached prefix are one batched GEMM per
 * (group, kv head): [G·n, dh] x [dh, Tp]; the row's own new key/value enter as an extra
 * score column and an extra weighted value.
 *
 * Inputs: qkv [n, P, wide]; pastK, pastV [B, KV, 1, Tp, dh] (clean caches of the batch's
 * prompts, padded to Tp); prompt [P] (int64: the batch prompt of each group); mask
 * [P, 1, 1, Tp+1] (additive: the past keys the position sees, then its own key); cos, sin
 * [P, 1, 1, 1, rope.dim] for rotary layers. Output: z [n, P, H·dh].
 */
export function attnStepMixGraph(spec: ArchSpec, lw: LayerVectors, l: number): Graph {
  const { nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  const G = H / KV;
  const rope = spec.layers[l].rope;
  const wide = (H + 2 * KV) * dh;
  const g = new GraphBuilder('attn_step');
  const qkv = g.input('qkv', ['n', 'P', wide]);
  const pastK = g.input('pastK', ['B', KV, 1, 'Tp', dh]);
  const pastV = g.input('pastV', ['B', KV, 1, 'Tp', dh]);
  const prompt = g.input('prompt', ['P'], 'int64');
  const mask = g.input('mask', ['P', 1, 1, 'Tq']);
  const cos = rope ? g.input('cos', ['P', 1, 1, 1, rope.dim]) : null;
  const sin = rope ? g.input('sin', ['P', 1, 1, 1, rope.dim]) : null;
  // [n, P, heads, dh] -> [P, heads, n, dh]: groups first, rows as the sequence axis.
  const { q, k, v } = mixHeads(g, qkv, spec, lw, l, [1, 2, 0, 3], cos, sin);
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
  // Rows back in [n, P] order.
  g.output(shapedLike(g, g.op('Transpose', [z5], { perm: [3, 0, 1, 2, 4] }), qkv, [H * dh]), 'z', ['n', 'P', H * dh]);
  return g.build();
}

/**
 * The output side of an attention block, for rows z [A, C, H·dh] (whole prompts: A = B,
 * C = T; the last-position path: A = n slots, C = P groups).
 * Inputs: z; base [A, C, d] (what the block's output is added to); qs [C or 1, d] (each
 * group's readout vector; zeros when not wanted); zRows [K, H·dh] (rows to split into
 * heads; K = 0 when none).
 * Outputs: out [A, C, d] (a_l, what the block adds: the output projection, post-norm
 * included), resid = base + out, de [A, C] = out·qs, deHeads [A, C, H] (each head's
 * component · qs), heads [K, H, d] (each head's output z_h W_O[h], before any post-norm),
 * and with a post-norm pre [A, C, d] (the projection's output before the norm).
 */
export function attnOutGraph(spec: ArchSpec, lw: LayerWeights, l: number): Graph {
  const { dModel: d, nHeads: H, dHead: dh } = spec;
  const g = new GraphBuilder('attn_out');
  const z = g.input('z', ['A', 'C', H * dh]);
  const base = g.input('base', ['A', 'C', d]);
  const qs = g.input('qs', ['Cq', d]);
  const zRows = g.input('zRows', ['K', H * dh]);
  const wo = g.matrix('wo', lw.wo);
  const rows = g.reshape(z, [-1, H * dh]);
  const pre = g.linear(rows, wo, lw.wo, lw.bo ? g.vector('bo', lw.bo) : null);
  const post = lw.attnPostNorm ? norm(g, pre, lw.attnPostNorm, spec, 'apn') : null;
  const out = shapedLike(g, post ? post.y : pre, z, [d]);
  g.output(out, 'out', ['A', 'C', d]);
  if (post) g.output(shapedLike(g, pre, z, [d]), 'pre', ['A', 'C', d]);
  g.output(g.op('Add', [base, out]), 'resid', ['A', 'C', d]);
  g.output(readout(g, out, qs), 'de', ['A', 'C']);
  // Head h's readout through the output projection: W_O[h] (g ⊙ qs), g the post-norm's gain if any.
  const r = lw.attnPostNorm ? g.op('Mul', [qs, g.vector('apn.gr', lw.attnPostNorm.g)]) : qs;
  const u = g.linearT(r, wo, lw.wo); // [Cq, H·dh]
  const perHead = g.op('Mul', [g.reshape(z, [0, 0, H, dh]), g.reshape(u, [-1, H, dh])]); // [A, C, H, dh]
  let deHeads = g.op('ReduceSum', [perHead, g.ints([-1])], { keepdims: 0 });
  // Post-norm: a head's component is its pre-norm output over the layer's norm scale.
  if (post) deHeads = g.op('Mul', [deHeads, shapedLike(g, post.inv!, z, [1])]);
  g.output(deHeads, 'deHeads', ['A', 'C', H]);
  // Heads of the rows asked for: each row's z spread block-diagonally over H rows, through W_O.
  const eye = new Float32Array(H * H * dh);
  for (let h = 0; h < H; h++) eye.fill(1, h * H * dh + h * dh, h * H * dh + (h + 1) * dh);
  const spread = g.op('Mul', [g.reshape(zRows, [-1, 1, H * dh]), g.weight('heads_eye', eye, [1, H, H * dh])]);
  const heads = g.linear(g.reshape(spread, [-1, H * dh]), wo, lw.wo);
  g.output(g.reshape(heads, [-1, H, d]), 'heads', ['K', H, d]);
  return g.build();
}

/** v [n, P, d] · qs [P, d] over the last axis: [n, P]. */
function readout(g: GraphBuilder, v: string, qs: string): string {
  return g.op('ReduceSum', [g.op('Mul', [v, qs]), g.ints([-1])], { keepdims: 0 });
}

/**
 * MLP block on rows x [n, P, d] (the clean forward passes [N, 1, d]).
 * Outputs: out [n, P, d] (m_l, what the block adds, post-norm included), resid [n, P, d]
 * = base + m_l, de [n, P] = m_l·qs with qs [P, d] (zeros when not wanted). The `neurons`
 * variant (a session of its own, built on request) adds deNeurons [n, P, f]: each neuron's
 * share of de, a_n (W_down[:, n] · (g ⊙ qs)) / s with a the hidden activation (gated:
 * act(gate)·up), and with an RMS post-norm its gain g and scale s (linear at the run's own
 * scale, as a post-norm head); the output bias is the rest.
 */
export type MlpWeights = Pick<LayerWeights, 'ln2' | 'wUp' | 'bUp' | 'wGate' | 'bGate' | 'wDown' | 'bDown' | 'mlpPostNorm'>;

export function mlpGraph(spec: ArchSpec, lw: MlpWeights, l: number, neurons = false): Graph {
  const g = new GraphBuilder(neurons ? 'mlp_neurons' : 'mlp');
  const { dModel: d } = spec;
  const x = g.input('x', ['n', 'P', d]);
  const base = g.input('base', ['n', 'P', d]);
  const qs = g.input('qs', ['Pq', d]);
  // Rows as a matrix, so that each projection and its bias are one Gemm.
  const h = preNorm(g, g.reshape(x, [-1, d]), lw.ln2, spec, 'ln2');
  const bias = (name: string, b: Float32Array | null) => (b ? g.vector(name, b) : null);
  const up = g.linear(h, g.matrix('wUp', lw.wUp), lw.wUp, bias('bUp', lw.bUp));
  // Gated: act(x W_gate) ⊙ (x W_up); otherwise act(x W_up).
  const a = lw.wGate ? g.op('Mul', [activation(g, g.linear(h, g.matrix('wGate', lw.wGate), lw.wGate, bias('bGate', lw.bGate)), spec.act), up]) : activation(g, up, spec.act);
  const wDown = g.matrix('wDown', lw.wDown);
  let rows = g.linear(a, wDown, lw.wDown, bias('bDown', lw.bDown));
  const post = lw.mlpPostNorm ? norm(g, rows, lw.mlpPostNorm, spec, 'mpn') : null;
  if (post) rows = post.y;
  const out = g.op('Reshape', [rows, g.op('Shape', [x])]);
  g.output(out, 'out', ['n', 'P', d]);
  g.output(g.op('Add', [base, out]), 'resid', ['n', 'P', d]);
  g.output(readout(g, out, qs), 'de', ['n', 'P']);
  if (!neurons) return g.build();
  // Neuron readouts: W_down (g ⊙ qs) [Pq, f], times each row's activations (and 1/s after a post-norm).
  const f = spec.dMlp;
  const r = lw.mlpPostNorm ? g.op('Mul', [qs, g.vector('mpn.gr', lw.mlpPostNorm.g)]) : qs;
  let deNeurons = g.op('Mul', [shapedLike(g, a, x, [f]), g.linearT(r, wDown, lw.wDown)]);
  if (post?.inv) deNeurons = g.op('Mul', [deNeurons, shapedLike(g, post.inv, x, [1])]);
  g.output(deNeurons, 'deNeurons', ['n', 'P', f]);
  return g.build();
}

/**
 * Final norm and unembedding of a chunk of the vocabulary: z [N, d], wU [Vc, d] (rows of
 * the unembedding), bU [Vc] (its bias, or zeros) to raw logits [N, Vc] (before any
 * soft-capping).
 */
export function unembedGraph(spec: ArchSpec, lnF: NormWeights): Graph {
  const g = new GraphBuilder('unembed');
  const d = spec.dModel;
  const z = g.input('z', ['N', d]);
  const wU = g.input('wU', ['Vc', d]);
  const bU = g.input('bU', ['Vc']);
  const h = norm(g, z, lnF, spec, 'lnf').y;
  g.output(g.op('Gemm', [h, wU, bU], { transB: 1, alpha: 1.0, beta: 1.0 }), 'logits', ['N', 'Vc']);
  return g.build();
}
