/**
 * Prompt datasets, the one reader behind every command that takes prompts: the bundled sets by
 * name (known_1000, stories_recall), ROME's counterfact.json, and plain .jsonl / .csv / .json
 * files of {prompt | text | ids, answer?, subject?, group?, id?}. Every malformed input is a
 * HydraError that names the file, the line or record, and what is wrong.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parse as parseCsv } from 'csv-parse/sync';
import { HydraError, check } from './errors.js';
import { checkJsonDepth } from './json.js';
import { known1000Path, storiesRecallPath } from './paths.js';

/** Largest dataset file read, and deepest JSON nesting accepted (a record nests 3 levels at most). */
export const MAX_DATASET_BYTES = 256 * 1024 * 1024;
const MAX_JSON_DEPTH = 32;

export interface PromptRecord {
  /** Stable id from the source (known_id, case_id, an `id` field) or the record's 0-based position. */
  id: string;
  /** The prompt text. Empty only for records given as token ids. */
  prompt: string;
  /** Expected continuation (known_1000 `attribute`, counterfact `target_true.str`), as written in the file. */
  answer?: string;
  /** A counterfactual continuation (for the logit-diff metric), as written in the file. */
  counter?: string;
  /** The answer and counterfactual as token ids (fields answer_id, counter_id), used as given. */
  answer_id?: number;
  counter_id?: number;
  subject?: string;
  /** A label to compare prompts by (known_1000 and counterfact relation_id, a `group` field, a template); prompts of one group are not independent, so the report's bootstrap resamples groups. */
  group?: string;
  /** Already-tokenized prompt, for .json files of {ids: [...]}; the caller must not re-tokenize it. */
  ids?: number[];
}

export interface Dataset {
  name: string;
  records: PromptRecord[];
  /** Absolute path of the file read. */
  source: string;
}

export interface DatasetOptions {
  /** The column (field) holding the expected answer, when it is not called `answer`. */
  answerColumn?: string;
}

/** The bundled datasets, by name. */
export const BUNDLED_DATASETS: Record<string, string> = { known_1000: known1000Path, stories_recall: storiesRecallPath };

/** Columns that usually hold an answer: read silently as nothing, they would turn the filter off. */
const ANSWER_LIKE = ['target', 'targets', 'target_true', 'label', 'labels', 'completion', 'continuation', 'expected', 'gold', 'output', 'response', 'attribute', 'answers'];

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The bundled dataset's name for `spec` (known_1000, known1000, stories_recall), or null for a path. */
function bundledName(spec: string): string | null {
  const key = spec.trim().toLowerCase().replace(/^known1000$/, 'known_1000');
  return key in BUNDLED_DATASETS && !fs.existsSync(spec) ? key : null;
}

/**
 * Load a dataset: a bundled one by name (known_1000, stories_recall), else a path to a
 * counterfact.json, .jsonl, .csv or .json file. The format comes from the extension, or from
 * the content when the extension says nothing.
 */
export async function loadDataset(spec: string, opts: DatasetOptions = {}): Promise<Dataset> {
  check(typeof spec === 'string' && spec.trim() !== '', `no dataset given; pass ${Object.keys(BUNDLED_DATASETS).join(', ')} or a path to a .json/.jsonl/.csv file`);
  const bundledAs = bundledName(spec);
  const bundled = bundledAs !== null;
  const file = path.resolve(bundled ? BUNDLED_DATASETS[bundledAs] : spec);
  const base = path.basename(file);
  let text: string;
  try {
    const { size } = await fs.promises.stat(file);
    check(size <= MAX_DATASET_BYTES, `dataset file ${spec} is ${size} bytes, over the limit of ${MAX_DATASET_BYTES}; split it or use --limit on a smaller file`);
    text = await fs.promises.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new HydraError(bundled
        ? `the bundled dataset ${file} is missing; reinstall hydra`
        : `dataset file ${spec} not found; pass a bundled dataset (${Object.keys(BUNDLED_DATASETS).join(', ')}) or a path to a .json, .jsonl or .csv file`);
    }
    if (code === 'EISDIR') throw new HydraError(`dataset ${spec} is a directory; pass a .json, .jsonl or .csv file`);
    throw new HydraError(`cannot read dataset file ${spec} (${code ?? (e as Error).message}); check its permissions`);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);

  const ext = path.extname(file).toLowerCase();
  let format: 'json' | 'jsonl' | 'csv';
  if (ext === '.jsonl' || ext === '.ndjson') format = 'jsonl';
  else if (ext === '.csv') format = 'csv';
  else if (ext === '.json') format = 'json';
  else {
    const first = text.trimStart()[0];
    format = first === '[' ? 'json' : first === '{' ? 'jsonl' : 'csv';
  }

  const answer = opts.answerColumn ?? 'answer';
  const records = format === 'jsonl' ? parseJsonl(text, base, answer) : format === 'csv' ? parseCsvText(text, base, answer) : parseJsonList(text, base, answer);
  check(records.length > 0, `${base} holds no prompts; give a file with at least one record`);
  const name = bundledAs ?? path.basename(file, path.extname(file));
  return { name, records, source: file };
}

function parseJsonList(text: string, base: string, answer: string): PromptRecord[] {
  let data: unknown;
  checkJsonDepth(text, MAX_JSON_DEPTH, base);
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new HydraError(`${base} is not valid JSON (${jsonErrorWhere(text, e as Error)}); fix the file or save it as .jsonl/.csv`);
  }
  check(Array.isArray(data), `${base} must hold a JSON list of records, found ${data === null ? 'null' : typeof data}; wrap the records in [ ... ]`);
  const items = data as unknown[];
  const first = items.find(isObject);
  // Pick the reader from the first record's shape; every record is then checked against it.
  if (first && 'requested_rewrite' in first) return items.map((it, i) => counterfactRecord(it, `${base} record ${i}`));
  if (first && 'known_id' in first && 'attribute' in first) return items.map((it, i) => knownRecord(it, `${base} record ${i}`));
  return items.map((it, i) => plainRecord(it, i, `${base} record ${i}`, answer));
}

function parseJsonl(text: string, base: string, answer: string): PromptRecord[] {
  const out: PromptRecord[] = [];
  const lines = text.split(/\r?\n/);
  for (let ln = 0; ln < lines.length; ln++) {
    const line = lines[ln].trim();
    if (line === '') continue;
    const where = `${base} line ${ln + 1}`;
    let obj: unknown;
    checkJsonDepth(line, MAX_JSON_DEPTH, where);
    try {
      obj = JSON.parse(line);
    } catch (e) {
      const msg = (e as Error).message.replace(/ in JSON at position (\d+).*$/, (_m, n: string) => ` at column ${Number(n) + 1}`);
      throw new HydraError(`${where}: not valid JSON (${msg}); each line must be one JSON object`);
    }
    out.push(plainRecord(obj, out.length, where, answer));
  }
  return out;
}

function parseCsvText(text: string, base: string, answer: string): PromptRecord[] {
  let rows: { record: Record<string, string>; info: { lines: number } }[];
  try {
    rows = parseCsv(text, { columns: (h: string[]) => h.map((c) => c.trim()), skip_empty_lines: true, info: true });
  } catch (e) {
    throw new HydraError(`${base}: ${(e as Error).message}; fix the CSV (quote fields that hold commas)`);
  }
  if (rows.length === 0) return [];
  const header = Object.keys(rows[0].record);
  check(['prompt', 'text', 'ids'].some((c) => header.includes(c)), `${base} line 1: the header (${header.join(',')}) has no 'prompt' column; add one`);
  return rows.map(({ record, info }, i) => {
    const where = `${base} line ${info.lines}`;
    const obj: JsonObject = {};
    for (const [k, v] of Object.entries(record)) {
      // An empty cell means "no value", not the empty string.
      if (v === '' && k !== 'prompt' && k !== 'text') continue;
      obj[k] = k === 'ids' ? csvIds(v, where) : v;
    }
    return plainRecord(obj, i, where, answer);
  });
}

/** A CSV cell of token ids: "464 3139 286", "464,3139,286" or a JSON list. */
function csvIds(cell: string, where: string): Json {
  const parts = cell.replace(/^\s*\[|\]\s*$/g, '').split(/[\s,]+/).filter(Boolean);
  check(parts.every((p) => /^\d+$/.test(p)), `${where}: 'ids' must be token ids separated by spaces or commas, found ${JSON.stringify(cell.slice(0, 40))}`);
  return parts.map(Number);
}

/** {prompt|text, answer?, id?, subject?, group?} or {ids: [...], text?, answer?}; `answer` names the answer field. */
function plainRecord(obj: unknown, index: number, where: string, answer = 'answer'): PromptRecord {
  check(isObject(obj), `${where}: expected an object like {"prompt": "...", "answer": "..."}, found ${JSON.stringify(obj)?.slice(0, 40)}`);
  if (obj[answer] === undefined) {
    const like = Object.keys(obj).find((k) => ANSWER_LIKE.includes(k.toLowerCase()));
    check(like === undefined, `${where}: the field '${like}' looks like an answer, but answers are read from '${answer}'; pass \`answerColumn=${like}\` or rename the field`);
  }
  const rec: PromptRecord = { id: recordId(obj.id, index, where), prompt: '' };
  if (obj.ids !== undefined) {
    check(Array.isArray(obj.ids) && obj.ids.length > 0 && obj.ids.every((t) => Number.isInteger(t) && (t as number) >= 0),
      `${where}: 'ids' must be a non-empty list of non-negative integer token ids`);
    rec.ids = obj.ids as number[];
  }
  const promptField = obj.prompt !== undefined ? 'prompt' : obj.text !== undefined ? 'text' : null;
  if (promptField === null) {
    check(rec.ids !== undefined, `${where}: no 'prompt' field; give each record a "prompt" (or "text") string`);
  } else {
    const p = obj[promptField];
    check(typeof p === 'string', `${where}: '${promptField}' must be a string, found ${typeof p}`);
    check(p.trim() !== '' || rec.ids !== undefined, `${where}: '${promptField}' is empty; remove the record or fill it in`);
    rec.prompt = p;
  }
  const ans = obj[answer];
  if (ans !== undefined && ans !== null) {
    check(typeof ans === 'string', `${where}: '${answer}' must be a string, found ${typeof ans}; quote it`);
    rec.answer = ans;
  }
  if (obj.counter !== undefined && obj.counter !== null && obj.counter !== '') {
    check(typeof obj.counter === 'string', `${where}: 'counter' must be a string, found ${typeof obj.counter}; quote it`);
    rec.counter = obj.counter;
  }
  for (const f of ['answer_id', 'counter_id'] as const) {
    const v = obj[f];
    if (v === undefined || v === null || v === '') continue;
    const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
    check(typeof n === 'number' && Number.isInteger(n) && n >= 0, `${where}: '${f}' must be a non-negative integer token id, found ${JSON.stringify(v)}`);
    rec[f] = n;
  }
  for (const f of ['subject', 'group'] as const) {
    const v = obj[f];
    // an empty cell is no label (it would lump every unlabelled prompt into one group)
    if (v === undefined || v === null || v === '') continue;
    check(typeof v === 'string' || typeof v === 'number', `${where}: '${f}' must be a string, found ${typeof v}`);
    rec[f] = String(v);
  }
  return rec;
}

function recordId(v: Json | undefined, index: number, where: string): string {
  if (v === undefined || v === null) return String(index);
  check(typeof v === 'string' || typeof v === 'number', `${where}: 'id' must be a string or a number`);
  return String(v);
}

/** A known_1000 record: {known_id, subject, attribute, template, prediction, prompt, relation_id}. */
function knownRecord(obj: unknown, where: string): PromptRecord {
  check(isObject(obj), `${where}: expected a known_1000 object, found ${JSON.stringify(obj)?.slice(0, 40)}`);
  for (const f of ['prompt', 'attribute', 'subject'] as const) {
    check(typeof obj[f] === 'string' && (obj[f] as string).trim() !== '', `${where}: '${f}' is missing or not a non-empty string`);
  }
  check(typeof obj.known_id === 'number' || typeof obj.known_id === 'string', `${where}: 'known_id' is missing`);
  const rec: PromptRecord = { id: String(obj.known_id), prompt: obj.prompt as string, answer: obj.attribute as string, subject: obj.subject as string };
  if (typeof obj.relation_id === 'string' && obj.relation_id !== '') rec.group = obj.relation_id;
  return rec;
}

/** A counterfact record: requested_rewrite.prompt is a template whose {} is the subject. */
function counterfactRecord(obj: unknown, where: string): PromptRecord {
  check(isObject(obj), `${where}: expected a counterfact object, found ${JSON.stringify(obj)?.slice(0, 40)}`);
  const rw = obj.requested_rewrite;
  check(isObject(rw), `${where}: no 'requested_rewrite' object`);
  check(typeof rw.prompt === 'string', `${where}: 'requested_rewrite.prompt' is missing or not a string`);
  check(rw.prompt.includes('{}'), `${where}: 'requested_rewrite.prompt' has no {} for the subject`);
  check(typeof rw.subject === 'string' && rw.subject.trim() !== '', `${where}: 'requested_rewrite.subject' is missing or empty`);
  const tt = rw.target_true;
  check(isObject(tt) && typeof tt.str === 'string', `${where}: 'requested_rewrite.target_true.str' is missing or not a string`);
  const id = obj.case_id;
  check(typeof id === 'number' || typeof id === 'string', `${where}: 'case_id' is missing`);
  // A function replacer, so that `$&` and friends in the subject are taken literally.
  const prompt = rw.prompt.replace('{}', () => rw.subject as string);
  const rec: PromptRecord = { id: String(id), prompt, answer: tt.str, subject: rw.subject };
  if (typeof rw.relation_id === 'string' && rw.relation_id !== '') rec.group = rw.relation_id;
  return rec;
}

/** "line L column C" from a JSON.parse error, when it gives a position. */
function jsonErrorWhere(text: string, e: Error): string {
  const m = /position (\d+)/.exec(e.message);
  if (!m) return e.message;
  const pos = Number(m[1]);
  const before = text.slice(0, pos);
  const line = before.split('\n').length;
  const col = pos - before.lastIndexOf('\n');
  return `line ${line} column ${col}: ${e.message.replace(/\s*in JSON at position \d+.*$/, '')}`;
}

export interface Dropped<R = PromptRecord> {
  record: R;
  reason: string;
}

/** Split records by a (model-dependent) check; order is kept, so kept[i] keeps its relative position. */
export async function filterRecords<R>(
  records: readonly R[],
  predict: (rec: R, index: number) => Promise<{ correct: boolean; reason?: string }>,
): Promise<{ kept: R[]; dropped: Dropped<R>[] }> {
  const kept: R[] = [];
  const dropped: Dropped<R>[] = [];
  for (let i = 0; i < records.length; i++) {
    const r = await predict(records[i], i);
    if (r.correct) kept.push(records[i]);
    else dropped.push({ record: records[i], reason: r.reason ?? 'rejected' });
  }
  return { kept, dropped };
}

/** "kept 1053 of 1209 prompts; dropped 156: 150 wrong first token, 6 answer too long" (reasons by count, then name). */
export function summarizeFilter(kept: number | readonly unknown[], dropped: readonly { reason: string }[]): string {
  const k = typeof kept === 'number' ? kept : kept.length;
  const total = k + dropped.length;
  if (dropped.length === 0) return `kept ${k} of ${total} prompts`;
  const counts = new Map<string, number>();
  for (const d of dropped) counts.set(d.reason, (counts.get(d.reason) ?? 0) + 1);
  const parts = [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([r, n]) => `${n} ${r}`);
  return `kept ${k} of ${total} prompts; dropped ${dropped.length}: ${parts.join(', ')}`;
}
