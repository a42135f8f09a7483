import { HydraError } from '../io/errors.js';
import { defaultTargets as targetsOf, parseComponent } from '../models/components.js';
import type { HookedModel } from '../models/model.js';
import { ablationKind, samplesOf, type PatchOptions } from './ablations.js';
import { CleanBank, DEFAULT_BATCH_PROMPTS, defaultBatchRows, needsHeads } from './bank.js';
import { averagePatches, cleanContext, patchEffects, type CleanContext } from './effects.js';
import { averageExtras, extrasOf, measureExtras, type ExtraOptions } from './extras.js';
import { checkActivations, checkResult } from './finite.js';
import { runFastPath, type AblationRow } from './fastpath.js';
import { runNaivePath } from './naive.js';
import { checkSeed } from './random.js';
import { centredLogit, Readout, softcap } from './readout.js';
import type { AblationKind, PatchEffects, PromptResult } from './types.js';

export interface AblationOptions extends PatchOptions, ExtraOptions {
  kind: AblationKind;
  /** Components to ablate; default every attn.{l} and mlp.{l} (and every head with `heads`). */
  targets?: string[];
  /**
   * Resample and mean: the prompts patches come from, with their clean runs (default: the prompt
   * set itself, where a prompt is never its own source). Resample sources are indices into it.
   */
  pool?: CleanBank;
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
  /** Ablated runs per engine batch (default: defaultBatchRows, by the model's width). */
  batchRows?: number;
  /** Return every prompt's result (default true); false when onBatch/onPrompt consume them, so that a long run holds one batch at a time. */
  collect?: boolean;
  /** Prompt indices not wanted (done in a resumed sweep); a batch holding any wanted prompt still runs whole. */
  skip?: Set<number>;
  /** Called as each prompt finishes, in order. */
  onPrompt?: (r: PromptResult) => void | Promise<void>;
  /** Called after each batch with its wanted prompts' results. */
  onBatch?: (rs: PromptResult[]) => void | Promise<void>;
}

export { DEFAULT_BATCH_PROMPTS };
export { DEFAULT_SAMPLES } from './ablations.js';

/** The default targets: every attention and MLP layer, and with heads every head. */
export function defaultTargets(model: HookedModel, heads: boolean): string[] {
  return targetsOf(model.spec, heads);
}

/**
 * Ablate every target on every prompt and measure DE, TE, CE, NE and IE (METHOD.md),
 * per patch and averaged over patches. The kind's registry entry (ablations.ts) builds the patches.
 */
export async function analyze(model: HookedModel, prompts: number[][], opts: AblationOptions): Promise<PromptResult[]> {
  if (prompts.length === 0) throw new HydraError('the prompt list is empty; give at least one prompt');
  prompts.forEach((p, n) => model.checkPrompt(p, `prompt ${n}`));
  const kind = ablationKind(opts.kind);
  const targets = (opts.targets ?? defaultTargets(model, !!opts.heads)).map((t) => parseComponent(t, model.spec));
  if (targets.length === 0) throw new HydraError('no components to ablate');
  const withHeads = !!opts.heads || needsHeads(targets);
  const S = samplesOf(opts.kind, opts.samples, opts.sources);
  checkSeed(opts.seed ?? 0);
  const batchPrompts = opts.batchPrompts ?? DEFAULT_BATCH_PROMPTS;
  const pool = opts.pool ?? new CleanBank(model, prompts, batchPrompts);
  const plan = await kind.plan({ model, prompts, targets, opts, S, pool, ownPool: !opts.pool });
  const readout = new Readout(model);
  const extras = extrasOf(model, opts);
  const results: PromptResult[] = [];

  for (let c0 = 0; c0 < prompts.length; c0 += batchPrompts) {
    const chunk = [...prompts.keys()].slice(c0, c0 + batchPrompts);
    if (chunk.every((n) => opts.skip?.has(n))) continue;
    const ids = chunk.map((n) => prompts[n]);
    // When the prompts are their own pool, batched alike, each batch runs clean once: the pool's
    // pass may have run it already, or it gives the pool this run.
    const own = !opts.pool && pool.batchPrompts === batchPrompts;
    let clean = own ? pool.takeRun(c0 / batchPrompts, withHeads) : undefined;
    if (!clean) {
      clean = await model.forward(ids, { heads: withHeads });
      if (own) pool.adopt(c0 / batchPrompts, clean, targets);
    }
    clean.prompts.forEach((a, p) => checkActivations(a, `prompt ${chunk[p]}`));
    const qs = await readout.vectors(clean.prompts.map((a) => a.token));
    const ctxs = clean.prompts.map((a, i) => cleanContext(a, qs[i], centredLogit(a.logits, a.token)));
    const patchOf = await plan.forBatch(chunk, ids, clean.prompts);

    const rows: (AblationRow & { source: number | null })[] = [];
    chunk.forEach((_n, p) =>
      targets.forEach((t) => {
        for (let s = 0; s < S; s++) rows.push({ prompt: p, target: t, ...patchOf(p, t, s) });
      }),
    );
    const effects: PatchEffects[] = [];
    const batchRows = opts.batchRows ?? defaultBatchRows(model.spec);
    for (const [r0, r1] of rowParts(rows, batchRows)) {
      const part = rows.slice(r0, r1);
      const runs = opts.path === 'naive' ? await runNaivePath(model, ids, ctxs, part, withHeads) : await runFastPath(model, ctxs, clean.cache, part, withHeads, extras?.taps);
      const capped = model.spec.finalSoftcap === null ? null : await cappedTotalEffects(model, ctxs, part, runs.map((r) => r.z));
      const partEffects: PatchEffects[] = [];
      part.forEach((row, i) => {
        const e = patchEffects(model.plan, ctxs[row.prompt], row.target, row.patch, runs[i], (z) => model.normScale(z), row.source);
        if (capped) e.te_capped = capped[i];
        if (opts.ownScale) e.de_prime_own_scale = ownScale(e, ctxs[row.prompt].acts.sigma);
        partEffects.push(e);
      });
      if (extras) await measureExtras(model, extras, ctxs, part, runs, partEffects);
      effects.push(...partEffects);
    }

    const batch: PromptResult[] = [];
    for (let p = 0; p < chunk.length; p++) {
      if (opts.skip?.has(chunk[p])) continue;
      const ctx = ctxs[p];
      const result: PromptResult = { index: chunk[p], ids: ids[p], token: ctx.acts.token, sigma: ctx.acts.sigma, pi_hat: ctx.piHat, de: ctx.de, ablations: {} };
      targets.forEach((t, ti) => {
        const at = (p * targets.length + ti) * S;
        result.ablations[t.name] = averagePatches(effects.slice(at, at + S));
        if (extras) averageExtras(extras, result.ablations[t.name]);
      });
      checkResult(result);
      batch.push(result);
      await opts.onPrompt?.(result);
    }
    if (opts.collect !== false) results.push(...batch);
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

export type { CleanContext };
