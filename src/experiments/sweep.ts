import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ablationKind, checkSamples, noisePositionsOf, noiseStd, samplesOf } from '../causal/ablations.js';
import { analyze, DEFAULT_BATCH_PROMPTS } from '../causal/analysis.js';
import { checkSeed } from '../causal/random.js';
import type { AblationKind, PromptResult } from '../causal/types.js';
import { loadDataset, summarizeFilter, type PromptRecord } from '../io/datasets.js';
import { HydraError } from '../io/errors.js';
import type { HookedModel } from '../models/model.js';
import type { Metric } from '../causal/readout.js';
import { filterKnown } from './filter.js';
import { defaultTargets, parseComponent } from '../models/components.js';
import { metricAnswers } from './prompts.js';
import { ResultsStore, STORE_PATCHES, type RunConfig, type StorePatches } from './store.js';

/**
 * The paper's Section 4 experiment: every kept prompt × every attention and MLP layer
 * (and every head with `heads`) × every patch, written batch by batch to DuckDB.
 * A batch's rows land in one transaction, so a killed sweep resumes where it stopped,
 * recomputes nothing already stored, and batches as the first run did (identical numbers).
 */
export interface SweepOptions {
  model: HookedModel;
  /** How the model was named (directory or Hub id), recorded in the store. */
  modelName: string;
  /** A bundled dataset's name or a file (io/datasets.ts loadDataset). */
  dataset: string;
  /** The field holding the answer, when it is not `answer`. */
  answerColumn?: string;
  ablation: AblationKind;
  samples?: number;
  seed?: number;
  /** Resample: also draw sources whose clean token is the prompt's own (excluded by default). */
  allowSameAnswer?: boolean;
  heads?: boolean;
  /** Per-patch DE' to store with heads: 'layers' (default) of the layer-level components only, 'all' of every one (store.ts header). */
  storePatches?: StorePatches;
  /** The measured quantity (default argmax); answer and logit-diff read each record's answer/counter. */
  metric?: Metric;
  /** Only the first N prompts of the dataset. A larger limit on an existing store extends it. */
  limit?: number;
  /** 'i/n': this run handles batches i, i+n, i+2n, ... of kept prompts (sources are still drawn from all). */
  shard?: string;
  out: string;
  /** Keep only prompts the model answers correctly (default true). */
  filter?: boolean;
  batchPrompts?: number;
  /** Ablated runs per engine batch (analyze's batchRows; does not change any number). */
  batchRows?: number;
  log?: (line: string) => void;
  /** Log a line as each prompt is stored. */
  verbose?: boolean;
  /** Called with (0, total) once the number of prompts to compute is known, then with the prompts finished so far after each batch. */
  progress?: (done: number, total: number) => void;
}

export interface SweepSummary {
  kept: number;
  dropped: number;
  computed: number;
  alreadyStored: number;
  out: string;
  /** Dropped prompts by reason ("wrong first token", "no answer", "longer than the context", "empty prompt"). */
  dropReasons: Record<string, number>;
  /** Every dropped prompt: dataset index, dataset id, and why. */
  droppedPrompts: { index: number; id: string; reason: string }[];
}

/**
 * The shard a cluster scheduler assigns, as 'i/n', when none is given: a SLURM array task
 * (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT), or a Kubernetes
 * Indexed Job's JOB_COMPLETION_INDEX with the count given (`count`; SLURM's own count
 * otherwise). Undefined outside a scheduler. Returns where it came from, for the log.
 */
export function shardFromEnvironment(env: Record<string, string | undefined>, count?: number): { shard: string; from: string } | undefined {
  const int = (name: string) => {
    const v = env[name];
    if (v === undefined || v === '') return undefined;
    if (!/^\d+$/.test(v.trim())) throw new HydraError(`${name}=${JSON.stringify(v)} is not a non-negative integer; unset it or give shard explicitly`);
    return Number(v);
  };
  const slurm = int('SLURM_ARRAY_TASK_ID');
  if (slurm !== undefined) {
    const n = count ?? int('SLURM_ARRAY_TASK_COUNT');
    if (n === undefined) throw new HydraError('SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; give the shard count (`shardCount`)');
    const i = slurm - (int('SLURM_ARRAY_TASK_MIN') ?? 0);
    return { shard: `${i}/${n}`, from: `SLURM_ARRAY_TASK_ID=${slurm}` };
  }
  const k8s = int('JOB_COMPLETION_INDEX');
  if (k8s !== undefined) {
    if (count === undefined) throw new HydraError('JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but no shard count is given; pass the job\'s completions as `shardCount`');
    return { shard: `${k8s}/${count}`, from: `JOB_COMPLETION_INDEX=${k8s}` };
  }
  return undefined;
}

export function parseShard(spec: string | undefined): { i: number; n: number } | null {
  if (spec === undefined) return null;
  const m = /^(\d+)\/(\d+)$/.exec(spec.trim());
  const bad = (why: string) => new HydraError(`shard spec '${spec}' ${why}; use i/n with 0 <= i < n, e.g. 0/4`);
  if (!m) throw bad('is not of the form i/n');
  const i = Number(m[1]);
  const n = Number(m[2]);
  if (n < 1) throw bad('has n < 1');
  if (i >= n) throw bad(`has i = ${i} not below n = ${n}`);
  return { i, n };
}

/** The files whose content fixes a model's numbers: its config, weights and tokenizer. */
const MODEL_FILE_RE = /^(config\.json|tokenizer\.json|tokenizer_config\.json|model\.safetensors\.index\.json|.*\.safetensors)$/;

/**
 * The model's fingerprint: sha256 over the full content of config.json, every safetensors file
 * (and shard index) and the tokenizer files, each with its name. Reading everything costs about
 * 2 s per GB, once per sweep; sizes, mtimes or a sample could miss an edit in place.
 */
export function modelHash(dir: string): string {
  const h = crypto.createHash('sha256');
  const buf = Buffer.alloc(1 << 22);
  for (const f of fs.readdirSync(dir).filter((f) => MODEL_FILE_RE.test(f)).sort()) {
    h.update(`${f}\0`);
    const fd = fs.openSync(path.join(dir, f), 'r');
    try {
      for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
    } finally {
      fs.closeSync(fd);
    }
  }
  return `sha256:${h.digest('hex')}`;
}

/** The dataset's fingerprint: sha256 of the records the sweep reads (prompts, answers, ids), whatever file they came from. */
export function datasetHash(records: PromptRecord[]): string {
  return `sha256:${crypto.createHash('sha256').update(JSON.stringify(records)).digest('hex')}`;
}

/** A local model directory is recorded by its absolute path, so that ./m, /abs/m and m/ are one model. */
function modelId(name: string, model: HookedModel): string {
  return model.source.repo === null && path.resolve(name) === path.resolve(model.source.dir) ? path.resolve(name) : name;
}

export async function runSweep(opts: SweepOptions): Promise<SweepSummary> {
  const log = opts.log ?? (() => {});
  const { model } = opts;
  const shard = parseShard(opts.shard);
  const kind = ablationKind(opts.ablation);
  const S = samplesOf(opts.ablation, opts.samples);
  const seed = checkSeed(opts.seed ?? 0);
  const filter = opts.filter ?? true;
  const B = opts.batchPrompts ?? DEFAULT_BATCH_PROMPTS;
  const storePatches = opts.storePatches ?? 'layers';
  if (!STORE_PATCHES.includes(storePatches)) throw new HydraError(`\`storePatches\` must be one of ${STORE_PATCHES.join(', ')}, got ${String(storePatches)}`);
  const metric = opts.metric ?? 'argmax';

  const ds = await loadDataset(opts.dataset, { answerColumn: opts.answerColumn });
  const records = opts.limit !== undefined ? ds.records.slice(0, opts.limit) : ds.records;
  if (records.length === 0) throw new HydraError(`dataset ${opts.dataset} has no prompts${opts.limit !== undefined ? ` within \`limit\` ${opts.limit}` : ''}`);
  const subjects = records.some((r) => r.subject !== undefined);

  const config: RunConfig = {
    model: modelId(opts.modelName, model),
    model_revision: model.source.commit,
    model_hash: modelHash(model.source.dir),
    dataset: ds.name,
    ablation: opts.ablation,
    samples: S,
    seed,
    heads: !!opts.heads,
    limit: opts.limit ?? null,
    shard: opts.shard ?? null,
    // Batch shapes change float sums in the last digits, so a resume must batch alike. The limit
    // is not compared (a larger one extends the run), except where the patches depend on the
    // whole prompt set (mean patches average it, noise takes its std from it). The kind's rules
    // (same-answer sources, where noise goes) change the numbers too.
    downstream: downstreamSets(model, !!opts.heads),
    // Without heads every component is layer-level: store_patches changes nothing and is not recorded.
    options: { filter, batch_prompts: B, ...(opts.heads && storePatches === 'layers' ? { store_patches: 'layers' } : {}), ...(kind.pool === 'mean' || kind.pool === 'std' ? { limit: opts.limit ?? null } : {}), ...kind.rules({ allowSameAnswer: opts.allowSameAnswer, subjects }), dataset_hash: datasetHash(ds.records), ...(metric !== 'argmax' ? { metric } : {}) },
  };
  // A new store is made only once some prompt is kept, so a sweep that keeps none leaves no file.
  let store = fs.existsSync(opts.out) ? await ResultsStore.open(opts.out, config) : null;
  try {
    const decided = store ? await storedDecisions(store) : new Map<number, string | null>();
    const { kept, tokens, dropped } = await selectPrompts(model, records, filter, decided, log);
    const summary = dropSummary(kept.length, dropped, records);
    log(summarizeFilter(kept.length, dropped.map((d) => ({ reason: dropCategory(d.reason) }))));
    for (const d of dropped.slice(0, 3)) log(`  e.g. prompt ${d.index} (id ${records[d.index].id}): ${d.reason}`);
    if (kept.length === 0) {
      throw new HydraError(`no prompts left after filtering ${records.length} prompts of ${ds.name} (${Object.entries(summary.dropReasons).map(([r, n]) => `${n} ${r}`).join(', ')}); use a model that answers them, more prompts, or \`filter=false\` to keep them all`);
    }
    const answers = metricAnswers(model, kept.map((k) => records[k]), metric, (i) => `${ds.name} record ${kept[i]}`);
    store ??= await ResultsStore.open(opts.out, config);
    for (const d of dropped) {
      if (decided.has(d.index)) continue;
      await store.writeDropped({ index: d.index, reason: d.reason, dataset_id: records[d.index].id, text: records[d.index].prompt, answer: records[d.index].answer ?? null, group: records[d.index].group ?? null });
    }
    if (kind.pool === 'sources') checkSamples(S, kept.length, true); // fails early when S is too large
    const noise = kind.usesSubjects ? await datasetNoise(model, records, tokens, kept, B) : undefined;

    const keptIds = kept.map((k) => tokens[k]);
    const mine = (pos: number) => !shard || Math.floor(pos / B) % shard.n === shard.i;
    const skip = new Set<number>();
    kept.forEach((k, pos) => {
      if (decided.has(k) || !mine(pos)) skip.add(pos);
    });
    const already = kept.filter((k, pos) => decided.has(k) && mine(pos)).length;
    const total = kept.length - skip.size;
    log(`${total} prompts to compute${already ? `, ${already} already stored in ${opts.out}` : ''}`);
    opts.progress?.(0, total);
    let finished = 0;
    // Each batch lands in one transaction, queued in the store while the next batch computes.
    const writes: Promise<void>[] = [];
    const out = store;
    if (total > 0) {
      await analyze(model, keptIds, {
        kind: opts.ablation,
        samples: S,
        seed,
        allowSameAnswer: opts.allowSameAnswer,
        ...noise,
        heads: opts.heads,
        metric,
        answers,
        skip,
        batchPrompts: B,
        batchRows: opts.batchRows,
        collect: false,
        onBatch: async (rs) => {
          const list = rs.map((r) => {
            const rec = records[kept[r.index]];
            return { result: toDatasetIndices(r, kept, rec), extra: { dataset_id: rec.id, answer: rec.answer ?? null, token_text: model.tokenizer?.tokenText(r.token) ?? null, group: rec.group ?? null } };
          });
          const write = out.writePrompts(list);
          writes.push(opts.verbose ? write.then(() => list.forEach((x) => log(`stored prompt ${x.result.index}`))) : write);
          if (writes.length > 2) await writes.shift();
          finished += rs.length;
          opts.progress?.(finished, total);
        },
      });
    }
    await Promise.all(writes);
    return { kept: kept.length, dropped: dropped.length, computed: total, alreadyStored: already, out: opts.out, ...summary };
  } finally {
    await store?.close();
  }
}

/**
 * Per ablated component, what is downstream of it in the model's plan: the later layers, the
 * heads of the later attention layers, and (post-norm) the sibling heads. The repair matrix reads it.
 */
function downstreamSets(model: HookedModel, heads: boolean): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const k of defaultTargets(model.spec, heads)) {
    const down = model.plan.downstream(parseComponent(k));
    const attnHeads = down.attn.flatMap((c) => {
      const p = parseComponent(c);
      return heads && p.kind === 'attn' ? model.plan.parts(p.layer).filter((x) => parseComponent(x).kind === 'head') : [];
    });
    out[k] = [...down.attn, ...attnHeads, ...down.mlp];
  }
  return out;
}

/** Prompts an earlier run of this store decided: index -> null when kept, else the drop reason. */
async function storedDecisions(store: ResultsStore): Promise<Map<number, string | null>> {
  const rows = await store.query('SELECT d.prompt_idx, d.kept, p.drop_reason FROM done d LEFT JOIN prompts p USING (prompt_idx)');
  return new Map(rows.map((r) => [Number(r.prompt_idx), r.kept ? null : String(r.drop_reason)]));
}

/** The kind of a drop reason, for counting ("wrong first token" for every "model predicts ..."). */
export function dropCategory(reason: string): string {
  if (reason.startsWith('model predicts')) return 'wrong first token';
  if (reason.startsWith('no answer')) return 'no answer';
  if (reason.includes('longer than the context')) return 'longer than the context';
  return reason;
}

function dropSummary(kept: number, dropped: { index: number; reason: string }[], records: PromptRecord[]): Pick<SweepSummary, 'dropReasons' | 'droppedPrompts'> {
  const dropReasons: Record<string, number> = {};
  for (const d of dropped) dropReasons[dropCategory(d.reason)] = (dropReasons[dropCategory(d.reason)] ?? 0) + 1;
  return { dropReasons, droppedPrompts: dropped.map((d) => ({ index: d.index, id: records[d.index].id, reason: d.reason })) };
}

/**
 * ROME's noise over a dataset: each kept prompt's subject tokens (every position without
 * subjects), and the std from the embeddings of all the dataset's runnable prompts at those
 * positions (so the std does not depend on the model's answers).
 */
async function datasetNoise(model: HookedModel, records: PromptRecord[], tokens: number[][], kept: number[], batch: number) {
  const runnable = [...records.keys()].filter((i) => tokens[i].length > 0 && tokens[i].length <= model.spec.nCtx);
  const label = (i: number) => `dataset record ${records[runnable[i]].id}`;
  const positions = noisePositionsOf(model, runnable.map((i) => tokens[i]), runnable.map((i) => records[i].subject), label);
  const std = await noiseStd(model, runnable.map((i) => tokens[i]), positions, batch);
  const at = new Map(runnable.map((r, j) => [r, j]));
  return { noiseStd: std, noisePositions: positions && kept.map((k) => positions[at.get(k)!]) };
}

/** The analysis numbers prompts by their place among the kept ones; the store by dataset index. */
function toDatasetIndices(r: PromptResult, kept: number[], rec: PromptRecord): PromptResult {
  const ablations = Object.fromEntries(
    Object.entries(r.ablations).map(([c, a]) => [c, { ...a, patches: a.patches.map((p) => ({ ...p, source: p.source === null ? null : kept[p.source] })) }]),
  );
  return { ...r, index: kept[r.index], text: rec.prompt, ablations };
}

interface Selection {
  kept: number[];
  tokens: number[][];
  dropped: { index: number; reason: string }[];
}

/**
 * Tokenize, drop prompts that cannot run, and with `filter` keep those the model answers
 * correctly. Prompts in `decided` (an earlier run's choice) keep it and are not run again.
 */
async function selectPrompts(model: HookedModel, records: PromptRecord[], filter: boolean, decided: Map<number, string | null>, log: (line: string) => void): Promise<Selection> {
  const tokens = records.map((r, i) => {
    try {
      return r.ids ?? model.encode(r.prompt);
    } catch (e) {
      throw e instanceof HydraError ? new HydraError(`dataset record ${i} (id ${r.id}): ${e.message}`) : e;
    }
  });
  const dropped: Selection['dropped'] = [];
  const kept: number[] = [];
  const runnable: number[] = [];
  tokens.forEach((ids, i) => {
    const before = decided.get(i);
    if (before === null) kept.push(i);
    else if (before !== undefined) dropped.push({ index: i, reason: before });
    else if (ids.length === 0) dropped.push({ index: i, reason: 'empty prompt' });
    else if (ids.length > model.spec.nCtx) dropped.push({ index: i, reason: `${ids.length} tokens, longer than the context of ${model.spec.nCtx}` });
    else runnable.push(i);
  });
  const hasAnswers = records.some((r) => r.answer !== undefined);
  if (!filter || !hasAnswers) kept.push(...runnable);
  else if (runnable.length > 0) {
    log(`checking which of ${runnable.length} prompts the model answers`);
    const res = await filterKnown(model, runnable.map((i) => ({ prompt: records[i].prompt, answer: records[i].answer, ids: tokens[i] })));
    kept.push(...res.kept.map((k) => runnable[k]));
    for (const d of res.dropped) dropped.push({ index: runnable[d.index], reason: d.reason });
  }
  kept.sort((a, b) => a - b);
  dropped.sort((a, b) => a.index - b.index);
  return { kept, tokens, dropped };
}
