import { ropeTables } from '../engine/rope.js';
import { f32, i64 } from '../engine/runtime.js';
import type { Component } from '../models/components.js';
import type { HookedModel, KVCache } from '../models/model.js';
import type { AblatedRun, CleanContext } from './effects.js';
import { dot } from './readout.js';

/**
 * The fast path. An intervention at the last position t changes nothing at earlier
 * positions, so an ablated run only recomputes position t, from the ablated component
 * onward, attending to the clean keys and values of positions < t. Every ablated run
 * is a row; rows (components × patches × prompts) go through each block together.
 */

export interface AblationRow {
  /** Index of the prompt in the clean batch. */
  prompt: number;
  target: Component;
  patch: Float32Array;
}

const MASKED = -1e30;

/**
 * Blocks are numbered in compute order. Sequential: attn.l = 2l, mlp.l = 2l+1.
 * Parallel: both blocks of layer l are step l (they read the same residual).
 */
interface RowState {
  /** Residual entering the first block still to compute. */
  resid: Float32Array;
  /** First block (sequential) or layer (parallel) to recompute. */
  start: number;
  dePrime: Record<string, number>;
}

export async function runFastPath(model: HookedModel, ctxs: CleanContext[], cache: KVCache, rows: AblationRow[], withHeads: boolean): Promise<AblatedRun[]> {
  const { spec } = model;
  const { dModel: d, nLayers: L, nHeads: H, dHead: dh } = spec;
  const states = rows.map((r) => initialState(model, ctxs[r.prompt], r));
  const B = cache.lengths.length;
  const T = cache.T;

  // Per prompt: mask over [past (padded to T) | new key], and rotary tables at position t.
  const maskOf = cache.lengths.map((len) => {
    const m = new Float32Array(T + 1).fill(MASKED);
    m.fill(0, 0, len - 1);
    m[T] = 0;
    return m;
  });
  const rope = spec.rope ? ropeTables(spec.rope, cache.lengths.map((len) => len - 1)) : null;

  const runAttention = async (l: number, active: number[]) => {
    const R = active.length;
    const x = new Float32Array(R * d);
    const rowIdx = new BigInt64Array(R);
    const mask = new Float32Array(R * (T + 1));
    const r2 = spec.rope?.dim ?? 0;
    const cos = new Float32Array(R * r2);
    const sin = new Float32Array(R * r2);
    active.forEach((s, i) => {
      const p = rows[s].prompt;
      x.set(states[s].resid, i * d);
      rowIdx[i] = BigInt(p);
      mask.set(maskOf[p], i * (T + 1));
      if (rope) {
        cos.set(rope.cos.subarray(p * r2, (p + 1) * r2), i * r2);
        sin.set(rope.sin.subarray(p * r2, (p + 1) * r2), i * r2);
      }
    });
    const feeds = {
      x: f32(x, [R, 1, d]),
      pastK: cache.k[l],
      pastV: cache.v[l],
      row: i64(rowIdx, [R]),
      mask: f32(mask, [R, 1, 1, 1, T + 1]),
      ...(rope ? { cos: f32(cos, [R, 1, r2]), sin: f32(sin, [R, 1, r2]) } : {}),
    };
    const res = await (await model.attentionStep(l)).run(feeds);
    return { out: res.out.data as Float32Array, z: res.z.data as Float32Array };
  };

  const record = (s: number, name: string, out: Float32Array, i: number) => {
    const c = ctxs[rows[s].prompt];
    states[s].dePrime[name] = dot(out, c.q, i * d) / c.acts.sigma;
  };
  // DE' of head h = z_h · (W_O[h] q) / σ: the projection onto q is done once per layer and prompt.
  const headReadout = withHeads ? headReadouts(model, ctxs) : null;
  const recordHeads = (s: number, l: number, z: Float32Array, i: number) => {
    if (!headReadout) return;
    const p = rows[s].prompt;
    const u = headReadout[l][p];
    for (let h = 0; h < H; h++) states[s].dePrime[`head.${l}.${h}`] = dot(z, u.subarray(h * dh, (h + 1) * dh), i * H * dh + h * dh) / ctxs[p].acts.sigma;
  };

  const activeAt = (step: number) => states.flatMap((st, s) => (st.start <= step ? [s] : []));
  const addRows = (active: number[], out: Float32Array) => active.forEach((s, i) => addAt(states[s].resid, out, i * d));

  for (let l = 0; l < L; l++) {
    if (spec.parallel) {
      const active = activeAt(l);
      if (active.length === 0) continue;
      const x = gatherResid(states, active, d);
      const a = await runAttention(l, active);
      const m = await model.runMlp(l, x, active.length);
      active.forEach((s, i) => {
        record(s, `attn.${l}`, a.out, i);
        recordHeads(s, l, a.z, i);
        record(s, `mlp.${l}`, m, i);
      });
      addRows(active, a.out);
      addRows(active, m);
    } else {
      const attnRows = activeAt(2 * l);
      if (attnRows.length > 0) {
        const a = await runAttention(l, attnRows);
        attnRows.forEach((s, i) => {
          record(s, `attn.${l}`, a.out, i);
          recordHeads(s, l, a.z, i);
        });
        addRows(attnRows, a.out);
      }
      const mlpRows = activeAt(2 * l + 1);
      if (mlpRows.length > 0) {
        const m = await model.runMlp(l, gatherResid(states, mlpRows, d), mlpRows.length);
        mlpRows.forEach((s, i) => record(s, `mlp.${l}`, m, i));
        addRows(mlpRows, m);
      }
    }
  }
  void B;
  return states.map((st) => ({ z: st.resid, dePrime: st.dePrime }));
}

/** Apply the patch at t and find where recomputation starts. */
function initialState(model: HookedModel, ctx: CleanContext, row: AblationRow): RowState {
  const { spec } = model;
  const { acts } = ctx;
  const d = spec.dModel;
  const { target, patch } = row;
  const dePrime = { ...ctx.de };
  const readout = (v: Float32Array) => dot(v, ctx.q) / acts.sigma;
  dePrime[target.name] = readout(patch);
  const get = (name: string) => acts.components.get(name)!;
  const l = target.layer;
  let resid: Float32Array;
  let start: number;
  if (target.kind === 'embed') {
    resid = Float32Array.from(patch);
    start = 0;
  } else if (target.kind === 'mlp') {
    // The residual after layer l, with m_l replaced.
    resid = new Float32Array(d);
    const base = spec.parallel ? acts.attnIn[l] : acts.mlpIn[l];
    for (let j = 0; j < d; j++) resid[j] = base[j] + patch[j] + (spec.parallel ? get(`attn.${l}`)[j] : 0);
    start = spec.parallel ? l + 1 : 2 * l + 2;
  } else {
    // attn.l, or one of its heads or its output bias: the new attention output a'.
    const a = new Float32Array(d);
    if (target.kind === 'attn') a.set(patch);
    else {
      const old = get(target.name);
      const clean = get(`attn.${l}`);
      for (let j = 0; j < d; j++) a[j] = clean[j] - old[j] + patch[j];
      dePrime[`attn.${l}`] = readout(a);
    }
    resid = new Float32Array(d);
    const m = get(`mlp.${l}`);
    for (let j = 0; j < d; j++) resid[j] = acts.attnIn[l][j] + a[j] + (spec.parallel ? m[j] : 0);
    start = spec.parallel ? l + 1 : 2 * l + 1;
  }
  return { resid, start, dePrime };
}

/** Per layer and prompt, W_O q: the head readout vectors [H*dh]. */
function headReadouts(model: HookedModel, ctxs: CleanContext[]): Float64Array[][] {
  const { nLayers: L, nHeads: H, dHead: dh, dModel: d } = model.spec;
  return [...Array(L).keys()].map((l) => {
    const wo = model.weights.layers[l].wo;
    return ctxs.map((c) => {
      const u = new Float64Array(H * dh);
      for (let r = 0; r < H * dh; r++) u[r] = dot(wo, c.q, r * d);
      return u;
    });
  });
}

function gatherResid(states: RowState[], active: number[], d: number): Float32Array {
  const x = new Float32Array(active.length * d);
  active.forEach((s, i) => x.set(states[s].resid, i * d));
  return x;
}

function addAt(dst: Float32Array, src: Float32Array, offset: number): void {
  for (let j = 0; j < dst.length; j++) dst[j] += src[offset + j];
}
