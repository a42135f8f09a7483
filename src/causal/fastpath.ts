import { ropeTables } from '../engine/rope.js';
import { f32, i64, ort } from '../engine/runtime.js';
import type { ArchSpec } from '../engine/spec.js';
import type { Component } from '../models/components.js';
import type { HookedModel, KVCache } from '../models/model.js';
import type { AblatedRun, CleanContext } from './effects.js';
import { dot } from './readout.js';

/**
 * The fast path. An intervention at the last position t changes nothing at earlier
 * positions, so an ablated run only recomputes position t, from the ablated component
 * onward, attending to the clean keys and values of positions < t. Every ablated run
 * is a row; rows (components × patches × prompts) go through each block together.
 *
 * Layout: the rows live in one buffer of slots × groups × d, a group per prompt (the
 * attention step shares a prompt's cached keys/values across its group). Rows are given
 * slots in the order their recomputation starts, so the rows a block computes are always
 * a prefix of the buffer: the rows that start at a block are appended as new slots, and
 * each block's session writes the residual after it (and the DE' readouts) straight into
 * the other of two buffers. No row is copied between blocks.
 */

export interface AblationRow {
  /** Index of the prompt in the clean batch. */
  prompt: number;
  target: Component;
  patch: Float32Array;
}

const MASKED = -1e30;

/**
 * Steps are blocks in compute order. Sequential: attn.l = 2l, mlp.l = 2l+1. Parallel: both
 * blocks of layer l are step l (they read the same residual).
 */
function stepCount(spec: ArchSpec): number {
  return spec.parallel ? spec.nLayers : 2 * spec.nLayers;
}

export async function runFastPath(model: HookedModel, ctxs: CleanContext[], cache: KVCache, rows: AblationRow[], withHeads: boolean): Promise<AblatedRun[]> {
  const { spec } = model;
  const { dModel: d, nLayers: L, nHeads: H } = spec;
  const steps = stepCount(spec);
  const states = rows.map((r) => initialState(model, ctxs[r.prompt], r));

  // Groups: the prompts present. Slots: step s owns slots [offset[s], offset[s] + width[s]),
  // as many as the group with most rows starting at s needs (other groups pad).
  const groupPrompts = [...new Set(rows.map((r) => r.prompt))].sort((a, b) => a - b);
  const P = groupPrompts.length;
  const groupOf = new Map(groupPrompts.map((p, i) => [p, i]));
  const counts = Array.from({ length: steps }, () => new Array<number>(P).fill(0));
  const slotInStep = rows.map((r, k) => (states[k].start < steps ? counts[states[k].start][groupOf.get(r.prompt)!]++ : -1));
  const width = counts.map((c) => Math.max(0, ...c));
  const offset: number[] = [];
  let slots = 0;
  for (let s = 0; s < steps; s++) {
    offset.push(slots);
    slots += width[s];
  }
  /** Buffer row (slot · P + group) of each ablation row; -1 if it recomputes nothing. */
  const at = rows.map((r, k) => (slotInStep[k] < 0 ? -1 : (offset[states[k].start] + slotInStep[k]) * P + groupOf.get(r.prompt)!));
  const rowAt = new Int32Array(slots * P).fill(-1);
  at.forEach((b, k) => b >= 0 && (rowAt[b] = k));
  const startingAt = Array.from({ length: steps }, () => [] as number[]);
  rows.forEach((_, k) => at[k] >= 0 && startingAt[states[k].start].push(k));

  // Per group: readout vector q/σ, mask over [past (padded to T) | new key], rotary tables at t.
  const T = cache.T;
  const r2 = spec.rope?.dim ?? 0;
  const qs = new Float32Array(P * d);
  const mask = new Float32Array(P * (T + 1)).fill(MASKED);
  const rope = spec.rope ? ropeTables(spec.rope, groupPrompts.map((p) => cache.lengths[p] - 1)) : null;
  groupPrompts.forEach((p, i) => {
    const c = ctxs[p];
    for (let j = 0; j < d; j++) qs[i * d + j] = c.q[j] / c.acts.sigma;
    mask.fill(0, i * (T + 1), i * (T + 1) + cache.lengths[p] - 1);
    mask[i * (T + 1) + T] = 0;
  });
  const qsT = f32(qs, [P, d]);
  const fixed: Record<string, ort.Tensor> = {
    prompt: i64(BigInt64Array.from(groupPrompts.map(BigInt)), [P]),
    mask: f32(mask, [P, 1, 1, T + 1]),
    qs: qsT,
    ...(rope ? { cos: f32(rope.cos, [P, 1, 1, 1, r2]), sin: f32(rope.sin, [P, 1, 1, 1, r2]) } : {}),
  };
  const headReadout = withHeads ? headReadouts(model, ctxs, groupPrompts) : null;

  // Two buffers the blocks write into in turn (three for parallel blocks: x, x + a, x + a + m).
  const bufs = Array.from({ length: spec.parallel ? 3 : 2 }, () => new Float32Array(slots * P * d));
  let cur = 0;
  let n = 0;
  const view = (b: number) => f32(bufs[b].subarray(0, n * P * d), [n, P, d]);
  const activate = (s: number) => {
    for (const k of startingAt[s]) bufs[cur].set(states[k].resid, at[k] * d);
    n = offset[s] + width[s];
  };
  /** DE' of one component (de [n, P]) or of each head of a layer (de [n, P, H]) for every active row. */
  const record = (names: string[], de: Float32Array) => {
    const per = names.length;
    for (let b = 0; b < n * P; b++) {
      const k = rowAt[b];
      if (k < 0) continue;
      for (let h = 0; h < per; h++) states[k].dePrime[names[h]] = de[b * per + h];
    }
  };
  const headNames = [...Array(L).keys()].map((l) => [...Array(H).keys()].map((h) => `head.${l}.${h}`));

  const attention = async (l: number, from: number, to: number) => {
    const step = await model.attentionStep(l, withHeads);
    const feeds = { ...fixed, x: view(from), pastK: cache.k[l], pastV: cache.v[l], ...(headReadout ? { u: headReadout[l] } : {}) };
    const res = await step.run(feeds, { resid: view(to), de: null, ...(headReadout ? { deHeads: null } : {}) });
    record([`attn.${l}`], res.de.data as Float32Array);
    if (headReadout) record(headNames[l], res.deHeads.data as Float32Array);
  };
  const mlp = async (l: number, from: number, base: number, to: number) => {
    const res = await model.mlpBlock(l).run({ x: view(from), base: view(base), qs: qsT }, { resid: view(to), de: null });
    record([`mlp.${l}`], res.de.data as Float32Array);
  };

  for (let l = 0; l < L; l++) {
    if (spec.parallel) {
      activate(l);
      if (n === 0) continue;
      const [afterAttn, afterMlp] = [(cur + 1) % 3, (cur + 2) % 3];
      await attention(l, cur, afterAttn);
      await mlp(l, cur, afterAttn, afterMlp);
      cur = afterMlp;
    } else {
      activate(2 * l);
      if (n > 0) {
        await attention(l, cur, 1 - cur);
        cur = 1 - cur;
      }
      activate(2 * l + 1);
      if (n > 0) {
        await mlp(l, cur, cur, 1 - cur);
        cur = 1 - cur;
      }
    }
  }
  const final = bufs[cur];
  return states.map((st, k) => ({ z: at[k] < 0 ? st.resid : final.subarray(at[k] * d, (at[k] + 1) * d), dePrime: st.dePrime }));
}

interface RowState {
  /** Residual entering the first block still to compute. */
  resid: Float32Array;
  /** First step to recompute (stepCount(spec) if none). */
  start: number;
  dePrime: Record<string, number>;
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

/** Per layer, each group's head readout vectors W_O q/σ: a [P, H·dh] tensor. */
function headReadouts(model: HookedModel, ctxs: CleanContext[], groupPrompts: number[]): ort.Tensor[] {
  const { nLayers: L, nHeads: H, dHead: dh, dModel: d } = model.spec;
  const P = groupPrompts.length;
  return [...Array(L).keys()].map((l) => {
    const wo = model.weights.layers[l].wo;
    const u = new Float32Array(P * H * dh);
    groupPrompts.forEach((p, i) => {
      const c = ctxs[p];
      for (let r = 0; r < H * dh; r++) u[i * H * dh + r] = dot(wo, c.q, r * d) / c.acts.sigma;
    });
    return f32(u, [P, H * dh]);
  });
}
