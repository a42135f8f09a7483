import { HydraError } from '../io/errors.js';
import { defaultTargets as targetsOf, parseTarget, type Component, type Target } from '../models/components.js';
import type { HookedModel } from '../models/model.js';
import { ablationKind, samplesOf, type PatchOptions } from './ablations.js';
import { CleanBank, DEFAULT_BATCH_PROMPTS, needsHeads } from './bank.js';
import { averagePatches, cleanContext, patchEffects, type CleanContext } from './effects.js';
import { averageExtras, extraLogitReaders, extrasOf, measureExtras, type ExtraOptions } from './extras.js';
import { checkActivations, checkResult } from './finite.js';
import { defaultBatchRows, runFastPath, type AblationRow } from './fastpath.js';
import { runNaivePath } from './naive.js';
import { checkSeed } from './random.js';
import { forEachRunLogits, METRICS, readLogits, Readout, softcap, type LogitReader, type Metric, type ReadoutTokens } from './readout.js';
import type { AblationKind, PatchEffects, PromptResult } from './types.js';

export interface AblationOptions extends PatchOptions, ExtraOptions {
  kind: AblationKind;
  /**
   * Components to ablate; default every attn.{l} and mlp.{l} (and every head with `heads`). A
   * name joining components by '+' (`attn.0+attn.1`) ablates them jointly, in one run per patch.
   */
  targets?: string[];
  /** The measured quantity (default argmax, the paper's); answer and logit-diff read `answers`. */
  metric?: Metric;
  /** Per prompt, the answer token (`answer`, for answer and logit-diff) and the counterfactual token (`counter`, for logit-diff). */
  answers?: { answer?: number; counter?: number }[];
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
  /** Ablated runs per engine batch (default: defaultBatchRows, by the model's width and weights). */
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
  const targets = (opts.targets ?? defaultTargets(model, !!opts.heads)).map((t) => parseTarget(t, model.spec));
  if (targets.length === 0) throw new HydraError('no components to ablate');
  const members = membersOf(targets);
  const withHeads = !!opts.heads || needsHeads(members);
  const readoutOf = readoutTokens(model, prompts.length, opts.metric ?? 'argmax', opts.answers);
  const S = samplesOf(opts.kind, opts.samples, opts.sources);
  checkSeed(opts.seed ?? 0);
  const batchPrompts = opts.batchPrompts ?? DEFAULT_BATCH_PROMPTS;
  const pool = opts.pool ?? new CleanBank(model, prompts, batchPrompts);
  const plan = await kind.plan({ model, prompts, targets: members, opts, S, pool, ownPool: !opts.pool });
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
      if (own) pool.adopt(c0 / batchPrompts, clean, members);
    }
    clean.prompts.forEach((a, p) => checkActivations(a, `prompt ${chunk[p]}`));
    const rs = clean.prompts.map((a, p) => readoutOf(chunk[p], a.token));
    const qs = await Promise.all(rs.map((r) => readout.vector(r)));
    const ctxs = clean.prompts.map((a, i) => cleanContext(a, qs[i], readLogits(a.logits, rs[i]), rs[i]));
    const patchOf = await plan.forBatch(chunk, ids, clean.prompts);

    const rows: (AblationRow & { source: number | null })[] = [];
    chunk.forEach((_n, p) =>
      targets.forEach((t) => {
        for (let s = 0; s < S; s++) {
          // Every member's patch of sample s: a joint resample takes them all from the same source.
          const ps = t.members.map((m) => patchOf(p, m, s));
          rows.push({ prompt: p, target: t, patches: ps.map((x) => x.patch), source: ps[0].source });
        }
      }),
    );
    const effects: PatchEffects[] = [];
    const batchRows = opts.batchRows ?? defaultBatchRows(model);
    for (const [r0, r1] of rowParts(rows, batchRows)) {
      const part = rows.slice(r0, r1);
      const runs = opts.path === 'naive' ? await runNaivePath(model, ids, ctxs, part, withHeads) : await runFastPath(model, ctxs, clean.cache, part, withHeads, extras?.taps);
      const partEffects = part.map((row, i) => {
        const e = patchEffects(model.plan, ctxs[row.prompt], row.target, runs[i], (z) => model.normScale(z), row.source);
        if (opts.ownScale) e.de_prime_own_scale = ownScale(e, ctxs[row.prompt].acts.sigma);
        return e;
      });
      // One unembedding of the part's runs serves everything read from their whole logits.
      const readers = [
        ...(model.spec.finalSoftcap === null ? [] : [cappedTotalEffect(ctxs, part, partEffects, model.spec.finalSoftcap)]),
        ...(extras ? extraLogitReaders(model, extras, ctxs, part, partEffects) : []),
      ];
      if (readers.length) await forEachRunLogits(model, runs, (k, raw) => readers.forEach((read) => read(k, raw)));
      if (extras) await measureExtras(model, extras, ctxs, part, runs, partEffects);
      effects.push(...partEffects);
    }

    const batch: PromptResult[] = [];
    for (let p = 0; p < chunk.length; p++) {
      if (opts.skip?.has(chunk[p])) continue;
      const ctx = ctxs[p];
      const result: PromptResult = { index: chunk[p], ids: ids[p], token: ctx.acts.token, sigma: ctx.acts.sigma, pi_hat: ctx.piHat, de: ctx.de, ablations: {} };
      if (opts.metric && opts.metric !== 'argmax') result.readout = { metric: opts.metric, answer: ctx.readout.plus, counter: ctx.readout.minus };
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

/** TE on the model's real (soft-capped) centred logits, as each run's logits are read. */
function cappedTotalEffect(ctxs: CleanContext[], rows: AblationRow[], effects: PatchEffects[], cap: number): LogitReader {
  return (k, raw) => {
    const { acts, readout: r } = ctxs[rows[k].prompt];
    effects[k].te_capped = readLogits(softcap(raw, cap), r) - readLogits(softcap(acts.logits, cap), r);
  };
}

/** DE' with the ablated run's own scale: û_σ'(c') = (σ/σ') DE'(c). */
function ownScale(e: PatchEffects, sigma: number): Record<string, number> {
  const k = sigma / e.sigma_prime;
  return Object.fromEntries(Object.entries(e.de_prime).map(([c, v]) => [c, k * v]));
}

/** Every distinct member of the targets, in order (what the patches are built for). */
function membersOf(targets: Target[]): Component[] {
  const seen = new Map<string, Component>();
  for (const t of targets) for (const m of t.members) if (!seen.has(m.name)) seen.set(m.name, m);
  return [...seen.values()];
}

/**
 * The readout tokens of prompt n under a metric (METHOD "Other measured quantities"), checked
 * up front: answer and logit-diff need each prompt's answer (and counterfactual) token.
 */
function readoutTokens(model: HookedModel, n: number, metric: Metric, answers?: { answer?: number; counter?: number }[]): (n: number, token: number) => ReadoutTokens {
  if (!METRICS.includes(metric)) throw new HydraError(`unknown metric '${metric}'; use ${METRICS.join(', ')}`);
  if (metric === 'argmax') return (_n, token) => ({ plus: token, minus: null });
  const need: ('answer' | 'counter')[] = metric === 'answer' ? ['answer'] : ['answer', 'counter'];
  if (!answers || answers.length !== n) throw new HydraError(`metric '${metric}' needs \`answers\` with ${need.join(' and ')} tokens, one entry per prompt (${n}), got ${answers?.length ?? 'none'}`);
  answers.forEach((a, i) => {
    for (const f of need) {
      const t = a[f];
      if (t === undefined) throw new HydraError(`metric '${metric}': prompt ${i} has no ${f} token; give every prompt an ${f} (${f} or ${f}_id)`);
      if (!Number.isInteger(t) || t < 0 || t >= model.spec.vocab) throw new HydraError(`metric '${metric}': prompt ${i}'s ${f} token ${t} is outside the vocabulary (0..${model.spec.vocab - 1})`);
    }
  });
  return (i) => ({ plus: answers[i].answer!, minus: metric === 'answer' ? null : answers[i].counter! });
}

export type { CleanContext };
