import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { analyze, DEFAULT_BATCH_PROMPTS, DEFAULT_SAMPLES, resampleSources } from '../causal/analysis.js';
import type { AblationKind, PromptResult } from '../causal/types.js';
import { loadDataset, summarizeFilter, type PromptRecord } from '../io/datasets.js';
import { HydraError } from '../io/errors.js';
import type { HookedModel } from '../models/model.js';
import { filterKnown } from './filter.js';
import { ResultsStore, type RunConfig } from './store.js';

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
  dataset: string;
  ablation: AblationKind;
  samples?: number;
  seed?: number;
  heads?: boolean;
  /** Only the first N prompts of the dataset. */
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

/** sha256 of config.json and the safetensors headers: identifies the weights without reading them all. */
export function modelHash(dir: string): string {
  const h = crypto.createHash('sha256');
  for (const f of fs.readdirSync(dir).sort()) {
    if (f === 'config.json') h.update(fs.readFileSync(path.join(dir, f)));
    if (f.endsWith('.safetensors')) {
      const fd = fs.openSync(path.join(dir, f), 'r');
      try {
        const len = Buffer.alloc(8);
        fs.readSync(fd, len, 0, 8, 0);
        const n = Math.min(Number(len.readBigUInt64LE(0)), 1 << 26);
        const hdr = Buffer.alloc(n);
        fs.readSync(fd, hdr, 0, n, 8);
        h.update(f).update(hdr);
      } finally {
        fs.closeSync(fd);
      }
    }
  }
  return h.digest('hex');
}

export async function runSweep(opts: SweepOptions): Promise<SweepSummary> {
  const log = opts.log ?? (() => {});
  const { model } = opts;
  const shard = parseShard(opts.shard);
  const S = opts.ablation === 'resample' || opts.ablation === 'noise' ? (opts.samples ?? DEFAULT_SAMPLES) : 1;
  const seed = opts.seed ?? 0;
  const filter = opts.filter ?? true;
  const B = opts.batchPrompts ?? DEFAULT_BATCH_PROMPTS;

  const ds = await loadDataset(opts.dataset);
  const records = opts.limit !== undefined ? ds.records.slice(0, opts.limit) : ds.records;
  if (records.length === 0) throw new HydraError(`dataset ${opts.dataset} has no prompts${opts.limit !== undefined ? ` within --limit ${opts.limit}` : ''}`);

  const config: RunConfig = {
    model: opts.modelName,
    model_revision: model.source.commit,
    model_hash: modelHash(model.source.dir),
    dataset: ds.name,
    ablation: opts.ablation,
    samples: S,
    seed,
    heads: !!opts.heads,
    limit: opts.limit ?? null,
    shard: opts.shard ?? null,
    // The kept set (and so the resample sources) depends on these.
    // Batch shapes change float sums in the last digits, so a resume must batch alike.
    options: { filter, limit: opts.limit ?? null, n_records: records.length, batch_prompts: B },
  };
  const store = await ResultsStore.open(opts.out, config);
  try {
    const done = await store.donePrompts();
    const { kept, tokens, dropped } = await selectPrompts(model, records, filter);
    log(summarizeFilter(kept.length, dropped.map((d) => ({ reason: d.category }))));
    for (const d of dropped) {
      if (done.has(d.index)) continue;
      const rec = records[d.index];
      await store.writeDropped({ index: d.index, reason: d.reason, dataset_id: rec.id, text: rec.prompt, answer: rec.answer ?? null, group: rec.group ?? null });
    }
    if (kept.length === 0) throw new HydraError(`no prompts left after filtering ${records.length} prompts of ${ds.name}; use a model that answers them, or --no-filter to keep them all`);
    if (opts.ablation === 'resample') resampleSources(kept.length, S, seed); // fails early when S is too large

    const keptIds = kept.map((k) => tokens[k]);
    const mine = (pos: number) => !shard || Math.floor(pos / B) % shard.n === shard.i;
    const skip = new Set<number>();
    kept.forEach((k, pos) => {
      if (done.has(k) || !mine(pos)) skip.add(pos);
    });
    const already = kept.filter((k, pos) => done.has(k) && mine(pos)).length;
    const total = kept.length - skip.size;
    log(`${total} prompts to compute${already ? `, ${already} already stored in ${opts.out}` : ''}`);
    opts.progress?.(0, total);
    let finished = 0;
    // Each batch lands in one transaction, queued in the store while the next batch computes.
    const writes: Promise<void>[] = [];
    await analyze(model, keptIds, {
      kind: opts.ablation,
      samples: S,
      seed,
      heads: opts.heads,
      skip,
      batchPrompts: B,
      batchRows: opts.batchRows,
      onBatch: async (rs) => {
        const list = rs.map((r) => {
          const rec = records[kept[r.index]];
          return { result: toDatasetIndices(r, kept, rec), extra: { dataset_id: rec.id, answer: rec.answer ?? null, token_text: model.tokenizer?.tokenText(r.token) ?? null, group: rec.group ?? null } };
        });
        const write = store.writePrompts(list);
        writes.push(opts.verbose ? write.then(() => list.forEach((x) => log(`stored prompt ${x.result.index}`))) : write);
        if (writes.length > 2) await writes.shift();
        finished += rs.length;
        opts.progress?.(finished, total);
      },
    });
    await Promise.all(writes);
    return { kept: kept.length, dropped: dropped.length, computed: total, alreadyStored: already, out: opts.out };
  } finally {
    await store.close();
  }
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
  dropped: { index: number; reason: string; category: string }[];
}

/** Tokenize, drop prompts that cannot run, and with `filter` keep those the model answers correctly. */
async function selectPrompts(model: HookedModel, records: PromptRecord[], filter: boolean): Promise<Selection> {
  const tokens = records.map((r) => r.ids ?? model.encode(r.prompt));
  const dropped: Selection['dropped'] = [];
  const runnable: number[] = [];
  tokens.forEach((ids, i) => {
    if (ids.length === 0) dropped.push({ index: i, reason: 'empty prompt', category: 'empty prompt' });
    else if (ids.length > model.spec.nCtx) dropped.push({ index: i, reason: `${ids.length} tokens, longer than the context of ${model.spec.nCtx}`, category: 'longer than the context' });
    else runnable.push(i);
  });
  const hasAnswers = runnable.some((i) => records[i].answer !== undefined);
  if (!filter || !hasAnswers) return { kept: runnable, tokens, dropped };
  const res = await filterKnown(model, runnable.map((i) => ({ prompt: records[i].prompt, answer: records[i].answer, ids: tokens[i] })));
  for (const d of res.dropped) {
    const reason = d.reason;
    dropped.push({ index: runnable[d.index], reason, category: reason.startsWith('no answer') ? 'no answer' : 'wrong first token' });
  }
  dropped.sort((a, b) => a.index - b.index);
  return { kept: res.kept.map((k) => runnable[k]), tokens, dropped };
}
