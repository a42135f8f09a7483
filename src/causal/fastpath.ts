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
  const T = cache.T;
  const r2 = spec.rope?.dim ?? 0;

  // Rows grouped by prompt (the attention step shares a prompt's cached keys/values
  // across its rows), each group ordered by the block its recomputation starts at, so
  // that the rows active at any step are a prefix of every group.
  const byPrompt = new Map<number, number[]>();
  rows.forEach((r, s) => {
    const list = byPrompt.get(r.prompt);
    if (list) list.push(s);
    else byPrompt.set(r.prompt, [s]);
  });
  const groups = [...byPrompt.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([prompt, list]) => ({ prompt, rows: list.sort((a, b) => states[a].start - states[b].start || a - b), active: 0 }));
  const advance = (step: number) => {
    for (const g of groups) while (g.active < g.rows.length && states[g.rows[g.active]].start <= step) g.active++;
  };

  // Per prompt: mask over [past (padded to T) | new key], and rotary tables at position t.
  const maskOf = cache.lengths.map((len) => {
    const m = new Float32Array(T + 1).fill(MASKED);
    m.fill(0, 0, len - 1);
    m[T] = 0;
    return m;
  });
  const rope = spec.rope ? ropeTables(spec.rope, cache.lengths.map((len) => len - 1)) : null;

  /** The active rows of each group, padded to the largest group: x [P, n, d]. */
  const runAttention = async (l: number) => {
    const live = groups.filter((g) => g.active > 0);
    const P = live.length;
    const n = Math.max(...live.map((g) => g.active));
    const x = new Float32Array(P * n * d);
    const prompt = new BigInt64Array(P);
    const mask = new Float32Array(P * (T + 1));
    const cos = new Float32Array(P * r2);
    const sin = new Float32Array(P * r2);
    live.forEach((g, i) => {
      for (let j = 0; j < g.active; j++) x.set(states[g.rows[j]].resid, (i * n + j) * d);
      prompt[i] = BigInt(g.prompt);
      mask.set(maskOf[g.prompt], i * (T + 1));
      if (rope) {
        cos.set(rope.cos.subarray(g.prompt * r2, (g.prompt + 1) * r2), i * r2);
        sin.set(rope.sin.subarray(g.prompt * r2, (g.prompt + 1) * r2), i * r2);
      }
    });
    const feeds = {
      x: f32(x, [P, n, d]),
      pastK: cache.k[l],
      pastV: cache.v[l],
      prompt: i64(prompt, [P]),
      mask: f32(mask, [P, 1, 1, T + 1]),
      ...(rope ? { cos: f32(cos, [P, 1, 1, 1, r2]), sin: f32(sin, [P, 1, 1, 1, r2]) } : {}),
    };
    const res = await (await model.attentionStep(l)).run(feeds);
    const out = res.out.data as Float32Array;
    const z = res.z.data as Float32Array;
    // Row s of the output is at (group i, j) = i·n + j.
    const at: [number, number][] = [];
    live.forEach((g, i) => {
      for (let j = 0; j < g.active; j++) at.push([g.rows[j], i * n + j]);
    });
    return { out, z, at };
  };

  /** The active rows, concatenated: x [N, d]. */
  const gatherActive = () => {
    const at: [number, number][] = [];
    for (const g of groups) for (let j = 0; j < g.active; j++) at.push([g.rows[j], at.length]);
    const x = new Float32Array(at.length * d);
    for (const [s, i] of at) x.set(states[s].resid, i * d);
    return { x, at };
  };

  const attnNames = [...Array(L).keys()].map((l) => `attn.${l}`);
  const mlpNames = [...Array(L).keys()].map((l) => `mlp.${l}`);
  const headNames = [...Array(L).keys()].map((l) => [...Array(H).keys()].map((h) => `head.${l}.${h}`));
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
    const sigma = ctxs[p].acts.sigma;
    const names = headNames[l];
    for (let h = 0; h < H; h++) states[s].dePrime[names[h]] = dot(z, u.subarray(h * dh, (h + 1) * dh), i * H * dh + h * dh) / sigma;
  };
  const addRows = (at: [number, number][], out: Float32Array) => {
    for (const [s, i] of at) addAt(states[s].resid, out, i * d);
  };

  for (let l = 0; l < L; l++) {
    if (spec.parallel) {
      advance(l);
      if (!groups.some((g) => g.active > 0)) continue;
      const { x, at: mAt } = gatherActive();
      const a = await runAttention(l);
      const m = await model.runMlp(l, x, mAt.length);
      for (const [s, i] of a.at) {
        record(s, attnNames[l], a.out, i);
        recordHeads(s, l, a.z, i);
      }
      for (const [s, i] of mAt) record(s, mlpNames[l], m, i);
      addRows(a.at, a.out);
      addRows(mAt, m);
    } else {
      advance(2 * l);
      if (groups.some((g) => g.active > 0)) {
        const a = await runAttention(l);
        for (const [s, i] of a.at) {
          record(s, attnNames[l], a.out, i);
          recordHeads(s, l, a.z, i);
        }
        addRows(a.at, a.out);
      }
      advance(2 * l + 1);
      if (groups.some((g) => g.active > 0)) {
        const { x, at } = gatherActive();
        const m = await model.runMlp(l, x, at.length);
        for (const [s, i] of at) record(s, mlpNames[l], m, i);
        addRows(at, m);
      }
    }
  }
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

function addAt(dst: Float32Array, src: Float32Array, offset: number): void {
  for (let j = 0; j < dst.length; j++) dst[j] += src[offset + j];
}
