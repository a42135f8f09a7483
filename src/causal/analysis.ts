import { HydraError } from '../io/errors.js';
import { defaultTargets as targetsOf, parseComponent, type Component } from '../models/components.js';
import { interventionSite, type HookedModel, type PromptActivations } from '../models/model.js';
import { averagePatches, cleanContext, patchEffects, type CleanContext } from './effects.js';
import { runFastPath, type AblationRow } from './fastpath.js';
import { runNaivePath } from './naive.js';
import { gaussian, mulberry32, sampleOthers, seedOf } from './random.js';
import { centredLogit, Readout, softcap } from './readout.js';
import type { AblationKind, PatchEffects, PromptResult } from './types.js';

export interface AblationOptions {
  kind: AblationKind;
  /** Components to ablate; default every attn.{l} and mlp.{l} (and every head with `heads`). */
  targets?: string[];
  /** Patches per prompt for resample and noise (S, default 15). */
  samples?: number;
  seed?: number;
  /** Resample: the source prompt indices for each prompt (overrides the seeded choice). */
  sources?: number[][];
  /** Mean: the prompts the mean patch averages over (default: the prompt set). */
  meanPrompts?: number[][];
  /** Custom: the patch for each target. */
  custom?: Record<string, Float32Array>;
  /** Split attention into heads: DE and DE' per head (and head targets by default). */
  heads?: boolean;
  path?: 'fast' | 'naive';
  /** Also report DE' with the ablated run's own scale σ' (labelled de_prime_own_scale). */
  ownScale?: boolean;
  /**
   * Prompts per batch (default DEFAULT_BATCH_PROMPTS). Batches are fixed runs of prompt indices
   * [0, B), [B, 2B), ...: float sums depend on batch shapes, so fixed batches make every number
   * independent of which prompts were skipped.
   */
  batchPrompts?: number;
  /** Ablated runs per engine batch. */
  batchRows?: number;
  /** Prompt indices not wanted (done in a resumed sweep); a batch holding any wanted prompt still runs whole. */
  skip?: Set<number>;
  /** Called as each prompt finishes, in order. */
  onPrompt?: (r: PromptResult) => void | Promise<void>;
  /** Called after each batch with its wanted prompts' results. */
  onBatch?: (rs: PromptResult[]) => void | Promise<void>;
}

export const DEFAULT_SAMPLES = 15;
export const DEFAULT_BATCH_PROMPTS = 8;

/** The default targets: every attention and MLP layer, and with heads every head. */
export function defaultTargets(model: HookedModel, heads: boolean): string[] {
  return targetsOf(model.spec, heads);
}

/**
 * Ablate every target on every prompt and measure DE, TE, CE, NE and IE (METHOD.md),
 * per patch and averaged over patches.
 */
export async function analyze(model: HookedModel, prompts: number[][], opts: AblationOptions): Promise<PromptResult[]> {
  if (prompts.length === 0) throw new HydraError('the prompt list is empty; give at least one prompt');
  prompts.forEach((p, n) => model.checkPrompt(p, `prompt ${n}`));
  const targets = (opts.targets ?? defaultTargets(model, !!opts.heads)).map((t) => parseComponent(t, model.spec));
  if (targets.length === 0) throw new HydraError('no components to ablate');
  const withHeads = !!opts.heads || targets.some((t) => t.kind === 'head' || t.kind === 'attn_bias');
  const S = opts.kind === 'resample' || opts.kind === 'noise' ? (opts.sources?.[0]?.length ?? opts.samples ?? DEFAULT_SAMPLES) : 1;
  const seed = opts.seed ?? 0;
  const sources = opts.kind === 'resample' ? resampleSources(prompts.length, S, seed, opts.sources) : null;
  const wanted = [...prompts.keys()].filter((n) => !opts.skip?.has(n));
  const needed = sources ? new Set(wanted.flatMap((n) => sources[n])) : undefined;
  const bank = await patchBank(model, prompts, targets, opts, withHeads, needed);
  const readout = new Readout(model);
  const batchPrompts = opts.batchPrompts ?? DEFAULT_BATCH_PROMPTS;
  const results: PromptResult[] = [];

  for (let c0 = 0; c0 < prompts.length; c0 += batchPrompts) {
    const chunk = [...prompts.keys()].slice(c0, c0 + batchPrompts);
    if (chunk.every((n) => opts.skip?.has(n))) continue;
    const ids = chunk.map((n) => prompts[n]);
    const clean = await model.forward(ids, { heads: withHeads });
    const ctxs = clean.prompts.map((a) => cleanContext(a, readout.vector(a.token), centredLogit(a.logits, a.token)));
    const noise = opts.kind === 'noise' ? await noisePatches(model, ids, chunk, targets, S, seed, withHeads) : null;

    const rows: (AblationRow & { source: number | null })[] = [];
    chunk.forEach((n, p) =>
      targets.forEach((t) => {
        for (let s = 0; s < S; s++) {
          const source = sources ? sources[n][s] : null;
          const patch = sources ? bank!.get(t.name)![source!] : noise ? noise[p].get(t.name)![s] : bank!.get(t.name)![0];
          rows.push({ prompt: p, target: t, patch, source });
        }
      }),
    );
    const effects: PatchEffects[] = [];
    const batchRows = opts.batchRows ?? 4096;
    for (const [r0, r1] of rowParts(rows, batchRows)) {
      const part = rows.slice(r0, r1);
      const runs = opts.path === 'naive' ? await runNaivePath(model, ids, ctxs, part, withHeads) : await runFastPath(model, ctxs, clean.cache, part, withHeads);
      const capped = model.spec.finalSoftcap === null ? null : await cappedTotalEffects(model, ctxs, part, runs.map((r) => r.z));
      part.forEach((row, i) => {
        const e = patchEffects(model.plan, ctxs[row.prompt], row.target, row.patch, runs[i], (z) => model.normScale(z), row.source);
        if (capped) e.te_capped = capped[i];
        if (opts.ownScale) e.de_prime_own_scale = ownScale(e, ctxs[row.prompt].acts.sigma);
        effects.push(e);
      });
    }

    const batch: PromptResult[] = [];
    for (let p = 0; p < chunk.length; p++) {
      if (opts.skip?.has(chunk[p])) continue;
      const ctx = ctxs[p];
      const result: PromptResult = { index: chunk[p], ids: ids[p], token: ctx.acts.token, sigma: ctx.acts.sigma, pi_hat: ctx.piHat, de: ctx.de, ablations: {} };
      targets.forEach((t, ti) => {
        const at = (p * targets.length + ti) * S;
        result.ablations[t.name] = averagePatches(effects.slice(at, at + S));
      });
      batch.push(result);
      await opts.onPrompt?.(result);
    }
    results.push(...batch);
    await opts.onBatch?.(batch);
  }
  return results;
}

/**
 * Consecutive runs of at most `max` rows, cut between prompts where a prompt fits (the fast
 * path pads every prompt of a run to the same rows per block); a prompt with more rows than
 * `max` is cut into runs of its own.
 */
export function rowParts(rows: { prompt: number }[], max: number): [number, number][] {
  if (!Number.isInteger(max) || max < 1) throw new HydraError(`batchRows must be a positive integer, got ${max}`);
  const parts: [number, number][] = [];
  for (let start = 0; start < rows.length; ) {
    let end = Math.min(start + max, rows.length);
    let cut = end;
    while (end < rows.length && cut > start && rows[cut - 1].prompt === rows[end].prompt) cut--;
    if (cut > start) end = cut;
    parts.push([start, end]);
    start = end;
  }
  return parts;
}

/** TE on the model's real (soft-capped) centred logits, for each run's final residual z'. */
async function cappedTotalEffects(model: HookedModel, ctxs: CleanContext[], rows: AblationRow[], zs: ArrayLike<number>[]): Promise<number[]> {
  const { dModel: d, vocab: V, finalSoftcap: c } = model.spec;
  const flat = new Float32Array(rows.length * d);
  zs.forEach((z, i) => flat.set(z, i * d));
  const logits = await model.logits(flat, rows.length);
  return rows.map((r, i) => {
    const { acts } = ctxs[r.prompt];
    return centredLogit(softcap(logits.subarray(i * V, (i + 1) * V), c!), acts.token) - centredLogit(softcap(acts.logits, c!), acts.token);
  });
}

/** DE' with the ablated run's own scale: û_σ'(c') = (σ/σ') DE'(c). */
function ownScale(e: PatchEffects, sigma: number): Record<string, number> {
  const k = sigma / e.sigma_prime;
  return Object.fromEntries(Object.entries(e.de_prime).map(([c, v]) => [c, k * v]));
}

/** Validate given sources, or draw S others per prompt from a generator seeded by (seed, prompt). */
export function resampleSources(n: number, S: number, seed: number, given?: number[][]): number[][] {
  if (given) {
    if (given.length !== n) throw new HydraError(`sources: ${given.length} entries for ${n} prompts; give one list of source indices per prompt`);
    given.forEach((list, i) => {
      if (!Array.isArray(list) || list.length === 0) throw new HydraError(`sources: entry ${i} is not a non-empty list of prompt indices`);
      if (list.length !== S) throw new HydraError(`sources: entry ${i} has ${list.length} sources, entry 0 has ${S}; every prompt needs the same number`);
      for (const j of list)
        if (!Number.isInteger(j) || j < 0 || j >= n || j === i) throw new HydraError(`sources: entry ${i} names prompt ${j}; sources must be indices of other prompts (0..${n - 1}, not ${i})`);
    });
    return given;
  }
  if (!Number.isInteger(S) || S < 1) throw new HydraError(`--samples must be a positive integer, got ${S}`);
  if (S > n - 1) throw new HydraError(`resample ablation with S=${S} needs at least ${S + 1} prompts, but there are ${n}; lower --samples or add prompts`);
  return [...Array(n).keys()].map((i) => sampleOthers(n, i, S, mulberry32(seedOf(seed, i, 1))));
}

/**
 * Patches that do not depend on the ablated prompt: for resample the clean output of each
 * target at the final position of every `needed` prompt (a sparse array by prompt index); for
 * mean their average over all; for custom the given vectors.
 */
async function patchBank(
  model: HookedModel,
  prompts: number[][],
  targets: Component[],
  opts: AblationOptions,
  withHeads: boolean,
  needed?: Set<number>,
): Promise<Map<string, Float32Array[]> | null> {
  const d = model.spec.dModel;
  if (opts.kind === 'noise') return null;
  if (opts.kind === 'zero') return new Map(targets.map((t) => [t.name, [new Float32Array(d)]]));
  if (opts.kind === 'custom') {
    return new Map(
      targets.map((t) => {
        const v = opts.custom?.[t.name];
        if (!v) throw new HydraError(`custom ablation: no patch vector given for ${t.name}`);
        if (v.length !== d) throw new HydraError(`custom ablation: the patch for ${t.name} has ${v.length} values; the model's width is ${d}`);
        return [t.name, [v]];
      }),
    );
  }
  const set = opts.kind === 'mean' ? (opts.meanPrompts ?? prompts) : prompts;
  if (set.length === 0) throw new HydraError('mean ablation needs at least one prompt to average over');
  const outputs = new Map<string, Float32Array[]>(targets.map((t) => [t.name, new Array<Float32Array>(set.length)]));
  // Fixed batches, as in analyze, so that a patch never depends on which prompts were needed.
  const batch = opts.batchPrompts ?? DEFAULT_BATCH_PROMPTS;
  for (let i = 0; i < set.length; i += batch) {
    const idx = [...set.keys()].slice(i, i + batch);
    if (opts.kind === 'resample' && needed && !idx.some((n) => needed.has(n))) continue;
    const res = await model.forward(idx.map((n) => set[n]), { heads: withHeads });
    res.prompts.forEach((a, b) => {
      for (const t of targets) outputs.get(t.name)![idx[b]] = interventionSite(a, t.name);
    });
  }
  if (opts.kind === 'resample') return outputs;
  if (opts.kind !== 'mean') throw new HydraError(`unknown ablation kind '${opts.kind}'; use zero, mean, noise, resample or custom`);
  return new Map(
    [...outputs].map(([name, vs]) => {
      const m = new Float64Array(d);
      for (const v of vs) for (let j = 0; j < d; j++) m[j] += v[j];
      return [name, [Float32Array.from(m, (x) => x / vs.length)]];
    }),
  );
}

/** Std of the token embedding matrix's entries, the unit of ROME's noise. */
function embeddingStd(model: HookedModel): number {
  const w = model.weights.wte;
  let s = 0;
  let s2 = 0;
  for (let i = 0; i < w.length; i++) {
    s += w[i];
    s2 += w[i] * w[i];
  }
  const mean = s / w.length;
  return Math.sqrt(s2 / w.length - mean * mean);
}

export const NOISE_SCALE = 3;

/**
 * Noise patches: the target's output at t when every input embedding gets Gaussian
 * noise of std 3 × std(W_E) (ROME's convention), S seeded samples per prompt.
 */
async function noisePatches(
  model: HookedModel,
  ids: number[][],
  indices: number[],
  targets: Component[],
  S: number,
  seed: number,
  withHeads: boolean,
): Promise<Map<string, Float32Array[]>[]> {
  const d = model.spec.dModel;
  const std = NOISE_SCALE * embeddingStd(model);
  const out = ids.map(() => new Map<string, Float32Array[]>(targets.map((t) => [t.name, []])));
  for (let s = 0; s < S; s++) {
    const noise = ids.map((p, b) => {
      const g = gaussian(mulberry32(seedOf(seed, indices[b], 2, s)));
      return Float32Array.from({ length: p.length * d }, () => std * g());
    });
    const res = await model.forward(ids, { heads: withHeads, embedAdd: noise });
    res.prompts.forEach((a: PromptActivations, b) => {
      for (const t of targets) out[b].get(t.name)!.push(interventionSite(a, t.name));
    });
  }
  return out;
}

export type { CleanContext };
