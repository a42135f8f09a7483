/**
 * The sweep results database: one DuckDB file (default `results.duckdb`) per run.
 *
 * Schema (schema_version 3). Version 1 and 2 stores hold de_prime as a table, one value a row
 * (version 1: version 2 with store_patches 'all'); they are read as they are, and a run that
 * writes to one (a resume, a merge into it) first moves its DE' into version 3's lists; a merge
 * reads shards of any of them. Every table except run_config and de_prime_layouts has a
 * prompt_idx column: the prompt's 0-based position in the dataset. Component names are those of src/causal/types.ts:
 * embed, attn.{l}, mlp.{l}, head.{l}.{h}, attn_bias.{l}. Effects follow METHOD.md.
 *
 *   run_config  one row: the settings the numbers depend on.
 *     schema_version INTEGER, model VARCHAR (a local model: its absolute path), model_revision VARCHAR,
 *     model_hash VARCHAR ('sha256:...' of the model files' content; experiments/sweep.ts modelHash),
 *     dataset VARCHAR, ablation VARCHAR (zero|mean|noise|resample|custom), samples INTEGER (S),
 *     seed BIGINT, heads BOOLEAN, "limit" INTEGER, shard VARCHAR ('i/n' or NULL),
 *     hydra_version VARCHAR, created_at TIMESTAMPTZ, config_json VARCHAR (the whole config,
 *     options included, e.g. the sweep's dataset_hash; this is what a reopen and a merge compare, and
 *     `downstream`: for each ablated component the components downstream of it in the model's
 *     residual plan, models/plan.ts, heads of downstream layers included; not compared, absent in
 *     stores written before it, where the repair matrix assumes a sequential pre-norm model). The
 *     options hold the ablation kind's rules (causal/ablations.ts), e.g. same_answer_sources
 *     ('excluded', 'allowed') for resample and noise (which positions, and the std's rule) for noise.
 *   prompts     one row per prompt handled, kept or dropped by the filter.
 *     prompt_idx INTEGER PRIMARY KEY, dataset_id VARCHAR, text VARCHAR, ids INTEGER[],
 *     answer VARCHAR, token INTEGER (clean argmax i), token_text VARCHAR, sigma DOUBLE (clean σ),
 *     pi_hat DOUBLE (clean π̂_i), kept BOOLEAN, drop_reason VARCHAR (NULL when kept),
 *     group_id VARCHAR (the dataset's group of the prompt: known_1000 relation_id, a `group`
 *     column; NULL when none; the report's bootstrap resamples whole groups). Stores written
 *     before this column existed get it, all NULL, when opened for writing; readers check for it.
 *   clean_de    prompt_idx INTEGER, component VARCHAR, de DOUBLE — DE(c) in the clean run.
 *   effects     patch-averaged effects of ablating `component`:
 *     prompt_idx INTEGER, component VARCHAR, te, ce, ce_attn, ce_mlp, ne, ie, dde_self DOUBLE
 *     (one DOUBLE per effect of causal/types.ts EFFECTS; the tables are declared in TABLES below),
 *     te_capped DOUBLE (TE on the real, soft-capped logits, for models that cap them — Gemma-2;
 *     NULL otherwise; added, all NULL, to older stores opened for writing).
 *   patches     the same per patch run, patch_idx 0..S-1 (0 alone for zero/mean/custom):
 *     prompt_idx INTEGER, component VARCHAR, patch_idx INTEGER, source INTEGER (resample source
 *     prompt_idx, else NULL), sigma_prime DOUBLE (σ'), pi_hat_prime DOUBLE (π̂'_i),
 *     te, ce, ce_attn, ce_mlp, ne, ie, dde_self, te_capped DOUBLE.
 *   de_prime    a view of DE'_k(c), one value a row (what every query reads): prompt_idx INTEGER,
 *     ablated VARCHAR (k), patch_idx INTEGER (NULL = patch average), component VARCHAR (c),
 *     value DOUBLE. It unnests two tables:
 *   de_prime_values  one row per (prompt, k, patch): prompt_idx INTEGER, ablated VARCHAR,
 *     patch_idx INTEGER, layout INTEGER, value DOUBLE[] (DE' of the layout's components, in order);
 *   de_prime_layouts  layout INTEGER PRIMARY KEY, components VARCHAR[]: each distinct list of
 *     components, once. (With a row a value, DuckDB held ~95 MB more while a 64-prompt GPT-2-small
 *     sweep wrote its 614 k values, and appending took 5x longer.)
 *     The patch average is stored for every (k, c). Per patch it depends on the run's
 *     options.store_patches: absent ('all', every version 1 store) every (k, patch, c); 'layers'
 *     (the default of `hydra sweep --heads`) only where c is layer-level (embed, attn.L, mlp.L):
 *     what the own-scale statistics and the profile figures (Figures 1 and 3, the explorer's
 *     stored ablations) read per patch. A head sweep of GPT-2 small then stores 93 k values a
 *     prompt instead of 487 k; the repair matrix (experiments/repair.ts) reads
 *     the patch averages. readResults gives the patches of a compact store the layer-level DE' only.
 *   sources     the resample choices: prompt_idx INTEGER, patch_idx INTEGER, source INTEGER.
 *   done        prompt_idx INTEGER PRIMARY KEY, kept BOOLEAN, written_at TIMESTAMPTZ.
 *
 * Each prompt (all its rows in every table, and its `done` row) is written in one transaction (a
 * sweep writes each batch of prompts in one), so after a crash a prompt is either complete and in
 * `done`, or absent everywhere. Rows of a
 * prompt keep their write order (rowid), which readResults uses for key order.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  DuckDBInstance, DuckDBConnection, DuckDBDataChunk, DuckDBType, DuckDBValue, type DuckDBListValue,
  BOOLEAN, INTEGER, DOUBLE, VARCHAR, LIST, TIMESTAMPTZ, listValue,
} from '@duckdb/node-api';
import { layerKind } from '../models/components.js';
import { EFFECT_FIELDS, PATCH_FIELDS, type AblationKind, type AblationResult, type Effects, type PatchEffects, type PromptResult } from '../causal/types.js';
import { HydraError, check } from '../io/errors.js';
import { makeDir, packageRoot } from '../io/paths.js';

export const SCHEMA_VERSION = 3;
/** Versions this hydra reads: 1 and 2 have de_prime as a table (see the header). */
const READABLE_VERSIONS = [1, 2, 3];

/** Per-patch DE' rows a store keeps (header: de_prime). */
export type StorePatches = 'all' | 'layers';
export const STORE_PATCHES: readonly StorePatches[] = ['all', 'layers'];

/** The store's per-patch DE' policy, from its options ('all' when absent). */
export function storePatchesOf(config: RunConfig): StorePatches {
  const v = config.options?.store_patches;
  return v === 'layers' ? 'layers' : 'all';
}

export interface RunConfig {
  model: string;
  model_revision?: string | null;
  model_hash?: string | null;
  dataset: string;
  ablation: AblationKind;
  /** S: patches per ablation (resample sources or noise samples). */
  samples: number;
  seed: number;
  /** Whether heads (head.{l}.{h}, attn_bias.{l}) were ablated too. */
  heads: boolean;
  /** Not compared on reopen: a resumed run may go further. */
  limit?: number | null;
  /** 'i/n' for one shard of a split run; mergeStores joins shards. */
  shard?: string | null;
  /** Not compared on reopen; defaults to this package's version. */
  hydra_version?: string;
  /** Any other setting that changes the numbers (e.g. the norm-scale choice); compared on reopen. */
  options?: Record<string, string | number | boolean | null>;
  /** Per ablated component, the components downstream of it (models/plan.ts); not compared. */
  downstream?: Record<string, string[]> | null;
}

/** What a PromptResult does not hold but the prompts table records. */
export interface PromptExtra {
  dataset_id?: string | null;
  answer?: string | null;
  token_text?: string | null;
  /** The prompt's group (template, relation) for the clustered bootstrap. */
  group?: string | null;
}

export interface DroppedPrompt {
  index: number;
  reason: string;
  dataset_id?: string | null;
  text?: string | null;
  ids?: number[] | null;
  answer?: string | null;
  token?: number | null;
  token_text?: string | null;
  sigma?: number | null;
  pi_hat?: number | null;
  group?: string | null;
}

export interface ReadOptions {
  /** Include per-patch results (patches and their de_prime); default true. */
  patches?: boolean;
  /** Only these prompt indices (default: every kept prompt). */
  prompts?: number[];
  /** Only layer-level components (embed, attn.L, mlp.L) as ablated and read-out components. */
  layersOnly?: boolean;
  /** Read DE' (default true); without it `de_prime` stays empty, for callers that need the effects only. */
  dePrime?: boolean;
}

/** A column: name, type, and any constraint. */
type Column = [name: string, type: DuckDBType, constraint?: string];
const doubles = (names: readonly string[]): Column[] => names.map((n) => [n, DOUBLE]);

/**
 * The tables holding per-prompt rows, in write order. The schema, the appenders and the
 * effect columns all derive from this (the effects from causal/types.ts EFFECTS).
 */
const TABLES = {
  prompts: [['prompt_idx', INTEGER, 'PRIMARY KEY'], ['dataset_id', VARCHAR], ['text', VARCHAR], ['ids', LIST(INTEGER)], ['answer', VARCHAR],
    ['token', INTEGER], ['token_text', VARCHAR], ['sigma', DOUBLE], ['pi_hat', DOUBLE], ['kept', BOOLEAN, 'NOT NULL'], ['drop_reason', VARCHAR], ['group_id', VARCHAR]],
  clean_de: [['prompt_idx', INTEGER], ['component', VARCHAR], ['de', DOUBLE]],
  effects: [['prompt_idx', INTEGER], ['component', VARCHAR], ...doubles(EFFECT_FIELDS), ['te_capped', DOUBLE]],
  patches: [['prompt_idx', INTEGER], ['component', VARCHAR], ['patch_idx', INTEGER], ['source', INTEGER], ...doubles(PATCH_FIELDS), ...doubles(EFFECT_FIELDS), ['te_capped', DOUBLE]],
  de_prime_values: [['prompt_idx', INTEGER], ['ablated', VARCHAR], ['patch_idx', INTEGER], ['layout', INTEGER], ['value', LIST(DOUBLE)]],
  sources: [['prompt_idx', INTEGER], ['patch_idx', INTEGER], ['source', INTEGER]],
  done: [['prompt_idx', INTEGER, 'PRIMARY KEY'], ['kept', BOOLEAN], ['written_at', TIMESTAMPTZ, 'DEFAULT current_timestamp']],
} satisfies Record<string, Column[]>;
type PromptTable = keyof typeof TABLES;
/** Tables holding per-prompt rows, in write order. */
const PROMPT_TABLES = Object.keys(TABLES) as PromptTable[];
/** The per-prompt relations a reader sees, DE' as the long view de_prime (a table in version 1 and 2 stores). */
const PROMPT_RELATIONS = PROMPT_TABLES.map((t) => (t === 'de_prime_values' ? 'de_prime' : t));
const LAYOUTS_SQL = 'CREATE TABLE de_prime_layouts (layout INTEGER PRIMARY KEY, components VARCHAR[])';
/** Two unnests in one select list go in step: the i-th component with the i-th value. */
const DE_PRIME_VIEW_SQL = `CREATE VIEW de_prime AS
  SELECT v.prompt_idx, v.ablated, v.patch_idx, unnest(l.components) AS component, unnest(v.value) AS value
  FROM de_prime_values v JOIN de_prime_layouts l USING (layout)`;
/** Config fields that must match on reopen (and across merged shards, shard aside). */
const COMPARED: (keyof RunConfig)[] = ['model', 'model_revision', 'model_hash', 'dataset', 'ablation', 'samples', 'seed', 'heads', 'shard'];

/** Layer-level component names (embed, attn.L, mlp.L), as a DuckDB regular expression. */
export const LAYER_RE = '(embed|attn\\.[0-9]+|mlp\\.[0-9]+)';
const SCHEMA_SQL = `
CREATE TABLE run_config (schema_version INTEGER, model VARCHAR, model_revision VARCHAR, model_hash VARCHAR,
  dataset VARCHAR, ablation VARCHAR, samples INTEGER, seed BIGINT, heads BOOLEAN, "limit" INTEGER, shard VARCHAR,
  hydra_version VARCHAR, created_at TIMESTAMPTZ DEFAULT current_timestamp, config_json VARCHAR);
${PROMPT_TABLES.map(createTableSql).join('\n')}
${LAYOUTS_SQL};
${DE_PRIME_VIEW_SQL};
`;

function createTableSql(t: PromptTable): string {
  return `CREATE TABLE ${t} (${(TABLES[t] as Column[]).map(([n, type, c]) => `${n} ${type.toString()}${c ? ` ${c}` : ''}`).join(', ')});`;
}

const sqlString = (s: string) => `'${s.replace(/'/g, "''")}'`;
const errText = (e: unknown) => String((e as Error)?.message ?? e).split('\n')[0];

function packageVersion(): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The config as stored and compared: undefined -> null, options sorted. */
function normalizeConfig(c: RunConfig): Required<RunConfig> {
  const options: Record<string, string | number | boolean | null> = {};
  for (const k of Object.keys(c.options ?? {}).sort()) options[k] = c.options![k] ?? null;
  // 'all' is the layout of every store written before the option existed: recorded as its absence.
  if (options.store_patches === 'all') delete options.store_patches;
  check(options.store_patches === undefined || STORE_PATCHES.includes(options.store_patches as StorePatches), `store_patches must be one of ${STORE_PATCHES.join(', ')}, got ${String(options.store_patches)}`);
  return {
    model: c.model, model_revision: c.model_revision ?? null, model_hash: c.model_hash ?? null, dataset: c.dataset,
    ablation: c.ablation, samples: c.samples, seed: c.seed, heads: c.heads, limit: c.limit ?? null,
    shard: c.shard ?? null, hydra_version: c.hydra_version ?? packageVersion(), options, downstream: c.downstream ?? null,
  };
}

/** The first compared field that differs, as [name, stored, wanted], or null. */
function configDiff(stored: RunConfig, wanted: RunConfig, ignore: string[] = []): [string, unknown, unknown] | null {
  const a = normalizeConfig(stored);
  const b = normalizeConfig(wanted);
  for (const k of COMPARED) {
    if (!ignore.includes(k) && a[k] !== b[k]) return [k, a[k], b[k]];
  }
  // an absent store_patches is 'all' (normalizeConfig)
  const opt = (o: Record<string, unknown>, k: string) => o[k] ?? (k === 'store_patches' ? 'all' : null);
  for (const k of new Set([...Object.keys(a.options), ...Object.keys(b.options)])) {
    if (a.options[k] !== b.options[k]) return [k, opt(a.options, k), opt(b.options, k)];
  }
  return null;
}

/** What a differing fingerprint means, for the error that reports it. */
function diffMeaning(k: string): string {
  if (k === 'model_hash') return ' (the content of the model files, weights, config or tokenizer, changed)';
  if (k === 'dataset_hash') return ' (the content of the dataset records changed)';
  if (k === 'store_patches') return " (which patches' DE' the store keeps; resume with the store's own `storePatches`)";
  return '';
}

/** DuckDB's open errors, as one line saying what is wrong and what to do. */
function openError(file: string, e: unknown, readOnly = false): HydraError {
  const m = errText(e);
  const other = readOnly ? '' : ' or use another `out`';
  if (/Could not set lock|Conflicting lock/i.test(m)) {
    const pid = /PID (\d+)/.exec(m)?.[1];
    return new HydraError(`${file} is locked by another process${pid ? ` (pid ${pid})` : ''}; wait for it to finish${other}`);
  }
  if (/Corrupt database|checksum/i.test(m)) return new HydraError(`${file} is a corrupt DuckDB database (${m}); restore it from a copy${other}`);
  // DuckDB recognises SQLite files and would need its sqlite extension: not ours either way.
  if (/not a valid DuckDB database|sqlite|Extension .* not found/i.test(m)) return new HydraError(`${file} is not a hydra results database (not a DuckDB file at all); pass a database written by hydra sweep${other}`);
  if (/Serialization Error|Catalog Error/i.test(m)) return new HydraError(`${file} is not a hydra results database (${m})${other ? '; use another `out`' : ''}`);
  return new HydraError(`cannot open results database ${file} (${m}); check the path is writable${other}`);
}

/** DuckDB never fetches or loads extensions on its own: a results file needs none, and hydra works offline. */
const DUCKDB_OPTIONS = { autoload_known_extensions: 'false', autoinstall_known_extensions: 'false' };
/**
 * A writer runs DuckDB on one thread: the sweep's appends and commits otherwise take cores from
 * the model's sessions (measured on 2 cores, GPT-2-small shape: 913 -> 1180 runs/s). It
 * checkpoints every 4 MB of log (with DuckDB's default, 16 MB, a 64-prompt GPT-2-small sweep
 * ended with 33 MB of committed rows in memory), and caches at most 64 MB of the file's blocks
 * (by default DuckDB may keep 80% of the machine's memory, and a full known_1000 sweep's
 * resident memory grew with the file: 1.24 GB at 512 prompts; 1.15 GB with this limit and the
 * bank's kept outputs in blocks). A transaction larger than the limit still commits (4M rows
 * in one: checked). A new file gets 64 KiB blocks instead of 256: DuckDB fills a block per
 * column of each table a transaction appends to (~60 columns here), and the 64-prompt sweep
 * peaked ~30 MB lower with the same file size (16 KiB: ~10 MB lower still). DuckDB reads such
 * files since 1.2.
 */
const WRITER_OPTIONS = { ...DUCKDB_OPTIONS, threads: '1', checkpoint_threshold: '4MB', memory_limit: '64MB', default_block_size: '65536' };

/** Paths open in this process: two DuckDB instances on one file would corrupt it. */
const openPaths = new Set<string>();

async function openInstance(file: string, readOnly: boolean): Promise<{ instance: DuckDBInstance; con: DuckDBConnection }> {
  const abs = path.resolve(file);
  check(!openPaths.has(abs), `${file} is already open in this process; close it first`);
  let instance: DuckDBInstance | undefined;
  try {
    instance = await DuckDBInstance.create(abs, readOnly ? { ...DUCKDB_OPTIONS, access_mode: 'READ_ONLY' } : WRITER_OPTIONS);
    const con = await instance.connect();
    openPaths.add(abs);
    return { instance, con };
  } catch (e) {
    instance?.closeSync();
    throw openError(file, e, readOnly);
  }
}

/** The tables and views of a database (its own, or an attached one's). */
async function tableNames(con: DuckDBConnection, catalog?: string): Promise<Set<string>> {
  const where = `schema_name = 'main' AND ${catalog ? `database_name = ${sqlString(catalog)}` : 'database_name = current_database()'}`;
  const r = await con.runAndReadAll(`SELECT table_name FROM duckdb_tables() WHERE ${where} UNION ALL SELECT view_name FROM duckdb_views() WHERE ${where}`);
  return new Set(r.getColumnsJS()[0]?.map(String) ?? []);
}

/** Whether a store holds DE' as lists (version 3) rather than one value a row. */
async function hasDePrimeLists(con: DuckDBConnection, catalog?: string): Promise<boolean> {
  return (await tableNames(con, catalog)).has('de_prime_values');
}

async function readStoredConfig(con: DuckDBConnection, file: string, catalog?: string): Promise<RunConfig> {
  const tables = await tableNames(con, catalog);
  check(tables.has('run_config') && PROMPT_RELATIONS.every((t) => tables.has(t)), `${file} is not a hydra results database (tables missing); use another \`out\``);
  const r = await con.runAndReadAll(`SELECT schema_version, config_json FROM ${catalog ? `${catalog}.` : ''}run_config`);
  const rows = r.getRowsJS();
  check(rows.length === 1, `${file} has ${rows.length} run_config rows, expected 1; the file is damaged, use another \`out\``);
  check(READABLE_VERSIONS.includes(rows[0][0] as number), `${file} has schema version ${String(rows[0][0])}, this hydra reads ${READABLE_VERSIONS.slice(0, -1).join(', ')} and ${READABLE_VERSIONS.at(-1)}; use the hydra version that wrote it or another \`out\``);
  return JSON.parse(String(rows[0][1])) as RunConfig;
}

/** Appends columns to a table through data chunks (vector_size rows each): far faster than INSERTs. */
export async function appendColumns(con: DuckDBConnection, table: string, types: DuckDBType[], columns: DuckDBValue[][]): Promise<void> {
  const n = columns[0].length;
  if (n === 0) return;
  const appender = await con.createAppender(table);
  try {
    const step = 2048;
    for (let off = 0; off < n; off += step) {
      const chunk = DuckDBDataChunk.create(types);
      chunk.setColumns(off === 0 && n <= step ? columns : columns.map((c) => c.slice(off, off + step)));
      appender.appendDataChunk(chunk);
    }
    appender.flushSync();
  } finally {
    appender.closeSync();
  }
}

function num(v: unknown, what: () => string): number {
  if (typeof v !== 'number') throw new HydraError(`cannot store ${what()}: it is ${v === undefined ? 'missing' : typeof v}, not a number (a bug in the caller)`);
  return v;
}

/**
 * The component lists of a store's DE' rows (de_prime_layouts), each numbered once. Numbers
 * given during a transaction are pending until it commits; a rollback forgets them.
 */
class Layouts {
  private readonly ids = new Map<string, number>();
  private readonly byId = new Map<number, string[]>();
  private next = 0;
  private pending: [number, string[]][] = [];

  static async load(con: DuckDBConnection): Promise<Layouts> {
    const layouts = new Layouts();
    const r = await con.runAndReadAll('SELECT layout, components FROM de_prime_layouts ORDER BY layout');
    for (const [id, names] of r.getRowsJS() as [number, string[]][]) {
      layouts.ids.set(names.join('\n'), id);
      layouts.byId.set(id, names);
      layouts.next = Math.max(layouts.next, id + 1);
    }
    return layouts;
  }

  /** The components of a stored layout. */
  names(id: number): string[] {
    return this.byId.get(id)!;
  }

  id(names: string[]): number {
    const key = names.join('\n');
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.next++;
      this.ids.set(key, id);
      this.pending.push([id, names]);
    }
    return id;
  }

  /** The layouts numbered since the last commit, to insert with the rows that use them. */
  async append(con: DuckDBConnection): Promise<void> {
    await appendColumns(con, 'de_prime_layouts', [INTEGER, LIST(VARCHAR)], [this.pending.map(([id]) => id), this.pending.map(([, names]) => listValue(names))]);
  }

  commit(): void {
    this.pending = [];
  }

  rollback(): void {
    for (const [, names] of this.pending) this.ids.delete(names.join('\n'));
    this.next -= this.pending.length;
    this.pending = [];
  }
}

/** The rows of a batch of prompts, as columns of every prompt table (checked as they are added). */
class PromptRows {
  constructor(
    /** Store per-patch DE' of layer-level components only (store_patches 'layers'). */
    private readonly layersOnly: boolean,
    private readonly layouts: Layouts,
  ) {}
  private readonly cols = Object.fromEntries(PROMPT_TABLES.map((t) => [t, TABLES[t].map(() => [] as DuckDBValue[])])) as Record<PromptTable, DuckDBValue[][]>;
  private readonly prompts = this.cols.prompts;
  private readonly cleanDe = this.cols.clean_de;
  private readonly effects = this.cols.effects;
  private readonly patches = this.cols.patches;
  private readonly dePrime = this.cols.de_prime_values;
  private readonly sources = this.cols.sources;

  add(result: PromptResult, extra: PromptExtra): void {
    const p = result.index;
    check(Array.isArray(result.ids) && result.ids.every(Number.isInteger), `prompt ${p}: ids must be a list of integer token ids`);
    const row: DuckDBValue[] = [p, extra.dataset_id ?? null, result.text ?? null, listValue(result.ids), extra.answer ?? null,
      num(result.token, () => `prompt ${p} token`), extra.token_text ?? null,
      num(result.sigma, () => `prompt ${p} sigma`), num(result.pi_hat, () => `prompt ${p} pi_hat`), true, null, extra.group ?? null];
    row.forEach((v, j) => this.prompts[j].push(v));
    for (const c in result.de) push(this.cleanDe, p, c, num(result.de[c], () => `prompt ${p} de[${c}]`));

    const pushEffects = (cols: DuckDBValue[][], start: number, e: Effects, where: () => string) => {
      for (let j = 0; j < EFFECT_FIELDS.length; j++) cols[start + j].push(num(e[EFFECT_FIELDS[j]], () => `${where()} ${EFFECT_FIELDS[j]}`));
      // TE on soft-capped logits, for the models that cap them (null otherwise).
      cols[start + EFFECT_FIELDS.length].push(e.te_capped === undefined ? null : num(e.te_capped, () => `${where()} te_capped`));
    };
    // The bulk of a sweep's values (every component per patch): one list a patch.
    const pushDePrime = (k: string, patch: number | null, de: Record<string, number>) => {
      const compact = patch !== null && this.layersOnly;
      const names: string[] = [];
      const values: number[] = [];
      for (const c of Object.keys(de)) {
        const v = de[c];
        if (typeof v !== 'number') num(v, () => `prompt ${p} ablation ${k} de_prime[${c}]`);
        if (compact && layerKind(c) === null) continue;
        names.push(c);
        values.push(v);
      }
      if (names.length) push(this.dePrime, p, k, patch, this.layouts.id(names), listValue(values));
    };
    const src = new Map<string, [number, number]>();
    for (const [k, a] of Object.entries(result.ablations) as [string, AblationResult][]) {
      push(this.effects, p, k);
      pushEffects(this.effects, 2, a, () => `prompt ${p} ablation ${k}`);
      pushDePrime(k, null, a.de_prime);
      a.patches.forEach((pe: PatchEffects, j: number) => {
        const where = () => `prompt ${p} ablation ${k} patch ${j}`;
        check(pe.source === null || Number.isInteger(pe.source), () => `${where()}: source must be a prompt index or null`);
        push(this.patches, p, k, j, pe.source, ...PATCH_FIELDS.map((f) => num(pe[f], () => `${where()} ${f}`)));
        pushEffects(this.patches, 4 + PATCH_FIELDS.length, pe, where);
        pushDePrime(k, j, pe.de_prime);
        if (pe.source !== null) src.set(`${j}:${pe.source}`, [j, pe.source]);
      });
    }
    for (const [j, source] of [...src.values()].sort((x, y) => x[0] - y[0] || x[1] - y[1])) push(this.sources, p, j, source);
  }

  async append(con: DuckDBConnection): Promise<void> {
    await this.layouts.append(con);
    for (const t of PROMPT_TABLES) {
      if (t !== 'done') await appendColumns(con, t, TABLES[t].map((c) => c[1]), this.cols[t]);
    }
  }
}

/** Push one row's values onto the leading columns. */
function push(cols: DuckDBValue[][], ...values: DuckDBValue[]): void {
  values.forEach((v, j) => cols[j].push(v));
}

export class ResultsStore {
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(
    readonly file: string,
    readonly config: RunConfig,
    private readonly instance: DuckDBInstance,
    private readonly con: DuckDBConnection,
    readonly readOnly: boolean,
    /** DE' as lists (version 3), else one value a row (a version 1 or 2 store opened read-only). */
    private readonly dePrimeLists: boolean,
    /** The DE' layouts, for writing. */
    private readonly layouts: Layouts | null,
  ) {}

  /**
   * Open `file` for writing, creating it (and its folder) if needed. An existing store must have
   * been made with the same settings (see COMPARED and `options`); its values are never changed
   * here (a version 1 or 2 store's DE' is moved into lists, the same values).
   */
  static async open(file: string, config: RunConfig): Promise<ResultsStore> {
    const abs = path.resolve(file);
    makeDir(path.dirname(abs), 'choose a writable `out`');
    const stat = fs.statSync(abs, { throwIfNoEntry: false });
    check(!stat?.isDirectory(), `${file} is a directory; give a file path such as ${path.join(file, 'results.duckdb')}`);
    try {
      fs.accessSync(path.dirname(abs), fs.constants.W_OK);
    } catch {
      throw new HydraError(`cannot write in the folder of ${file}; choose a writable \`out\``);
    }
    const { instance, con } = await openInstance(file, false);
    try {
      const tables = await tableNames(con);
      let stored: RunConfig;
      if (tables.size === 0) {
        stored = normalizeConfig(config);
        await con.run('BEGIN TRANSACTION');
        await con.run(SCHEMA_SQL);
        await con.run(
          `INSERT INTO run_config (schema_version, model, model_revision, model_hash, dataset, ablation, samples, seed, heads, "limit", shard, hydra_version, config_json)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
          [SCHEMA_VERSION, stored.model, stored.model_revision ?? null, stored.model_hash ?? null, stored.dataset, stored.ablation,
            stored.samples, BigInt(stored.seed), stored.heads, stored.limit ?? null, stored.shard ?? null, stored.hydra_version!, JSON.stringify(stored)],
        );
        await con.run('COMMIT');
      } else {
        stored = await readStoredConfig(con, file);
        const d = configDiff(stored, config);
        if (d) {
          const show = (v: unknown) => (v === null ? 'none' : String(v));
          throw new HydraError(`${file} was made with ${d[0]}=${show(d[1])}, this run asks for ${show(d[2])}${diffMeaning(d[0])}; use another \`out\` or the same settings`);
        }
        if (!(await hasDePrimeLists(con))) await upgradeDePrime(con);
        await con.run('ALTER TABLE prompts ADD COLUMN IF NOT EXISTS group_id VARCHAR');
        for (const t of ['effects', 'patches']) await con.run(`ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS te_capped DOUBLE`);
        // A larger limit extends the run: record how far it now goes.
        if (stored.limit != null && (config.limit == null || config.limit > stored.limit)) {
          stored = { ...stored, limit: config.limit ?? null };
          await con.run('UPDATE run_config SET "limit" = $1, config_json = $2', [stored.limit ?? null, JSON.stringify(stored)], [INTEGER, VARCHAR]);
        }
        // Stores written before the downstream sets were recorded get them from the run that resumes them.
        if (!stored.downstream && config.downstream) {
          stored = { ...stored, downstream: config.downstream };
          await con.run('UPDATE run_config SET config_json = $1', [JSON.stringify(stored)], [VARCHAR]);
        }
      }
      return new ResultsStore(file, stored, instance, con, false, true, await Layouts.load(con));
    } catch (e) {
      con.closeSync();
      instance.closeSync();
      openPaths.delete(abs);
      if (e instanceof HydraError) throw e;
      throw openError(file, e);
    }
  }

  /** Open an existing store to read (report, export); its config comes from the file. */
  static async openReadOnly(file: string): Promise<ResultsStore> {
    check(fs.existsSync(file), `results database ${file} not found; run \`hydra sweep\` first or pass the right path`);
    const { instance, con } = await openInstance(file, true);
    try {
      return new ResultsStore(file, await readStoredConfig(con, file), instance, con, true, await hasDePrimeLists(con), null);
    } catch (e) {
      con.closeSync();
      instance.closeSync();
      openPaths.delete(path.resolve(file));
      throw e instanceof HydraError ? e : openError(file, e, true);
    }
  }

  /** Runs `fn` after every earlier call: one transaction at a time on the one connection. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    check(!this.closed, `results database ${this.file} is closed`);
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Everything about one prompt in a single transaction: all of it lands, or none. */
  private async transaction(what: string, fn: () => Promise<void>): Promise<void> {
    check(!this.readOnly, `${this.file} was opened read-only`);
    return this.serial(async () => {
      await this.con.run('BEGIN TRANSACTION');
      try {
        await fn();
        await this.con.run('COMMIT');
        this.layouts!.commit();
      } catch (e) {
        await this.con.run('ROLLBACK').catch(() => undefined);
        this.layouts!.rollback();
        if (e instanceof HydraError) throw e;
        throw new HydraError(`could not write ${what} to ${this.file} (${errText(e)}); nothing of it was stored, check the disk and rerun to resume`);
      }
    });
  }

  private async assertNotDone(indices: number[]): Promise<void> {
    for (const p of indices) check(Number.isInteger(p) && p >= 0, `prompt index ${p} is not a non-negative integer`);
    const r = await this.con.runAndReadAll(`SELECT min(prompt_idx) FROM done WHERE prompt_idx IN (${indices.join(', ')})`);
    const dup = r.getRowsJS()[0][0];
    check(dup === null, `prompt ${String(dup)} is already stored in ${this.file}; skip the prompts in donePrompts()`);
  }

  /** Prompt indices fully handled: written (kept) or dropped by the filter. */
  async donePrompts(): Promise<Set<number>> {
    return this.serial(async () => {
      const r = await this.con.runAndReadAll('SELECT prompt_idx FROM done');
      return new Set((r.getColumnsJS()[0] ?? []).map(Number));
    });
  }

  async writePrompt(result: PromptResult, extra: PromptExtra = {}): Promise<void> {
    await this.writePrompts([{ result, extra }]);
  }

  /**
   * Several prompts in one transaction (a sweep's batch): all of them land, or none. Their
   * rows go in with one appender per table, in prompt order.
   */
  async writePrompts(list: { result: PromptResult; extra?: PromptExtra }[]): Promise<void> {
    if (list.length === 0) return;
    const what = list.length === 1 ? `prompt ${list[0].result.index}` : `prompts ${list.map((x) => x.result.index).join(', ')}`;
    const indices = list.map((x) => x.result.index);
    indices.forEach((p, i) => check(indices.indexOf(p) === i, `prompt ${p} is given twice in one write; give each prompt once`));
    await this.transaction(what, async () => {
      await this.assertNotDone(indices);
      // Made inside the transaction: the DE' layouts it numbers land with it, or are forgotten.
      const rows = new PromptRows(storePatchesOf(this.config) === 'layers', this.layouts!);
      for (const { result, extra } of list) rows.add(result, extra ?? {});
      await rows.append(this.con);
      await this.con.run(`INSERT INTO done (prompt_idx, kept) VALUES ${indices.map((p) => `(${p}, true)`).join(', ')}`);
    });
  }

  /** Record a prompt the filter rejected, so that a resumed run skips it too. */
  async writeDropped(d: DroppedPrompt): Promise<void> {
    await this.transaction(`dropped prompt ${d.index}`, async () => {
      await this.assertNotDone([d.index]);
      check(typeof d.reason === 'string' && d.reason !== '', `dropped prompt ${d.index}: give a reason`);
      await this.con.run(
        `INSERT INTO prompts VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, false, $10, $11)`,
        [d.index, d.dataset_id ?? null, d.text ?? null, d.ids ? listValue(d.ids) : null, d.answer ?? null, d.token ?? null,
          d.token_text ?? null, d.sigma ?? null, d.pi_hat ?? null, d.reason, d.group ?? null],
        [INTEGER, VARCHAR, VARCHAR, LIST(INTEGER), VARCHAR, INTEGER, VARCHAR, DOUBLE, DOUBLE, VARCHAR, VARCHAR],
      );
      await this.con.run('INSERT INTO done (prompt_idx, kept) VALUES ($1, false)', [d.index]);
    });
  }

  /** The filtered-out prompts, by index. */
  async readDropped(): Promise<DroppedPrompt[]> {
    return this.serial(async () => {
      const r = await this.con.runAndReadAll(
        `SELECT p.* FROM prompts p JOIN done USING (prompt_idx) WHERE NOT p.kept ORDER BY prompt_idx`);
      return r.getRowObjectsJS().map((o) => ({
        index: Number(o.prompt_idx), reason: String(o.drop_reason), dataset_id: o.dataset_id as string | null,
        text: o.text as string | null, ids: o.ids === null ? null : (o.ids as number[]), answer: o.answer as string | null,
        token: o.token as number | null, token_text: o.token_text as string | null, sigma: o.sigma as number | null,
        pi_hat: o.pi_hat as number | null, group: (o.group_id ?? null) as string | null,
      }));
    });
  }

  /** The extra per-prompt fields (dataset id, answer, token text) of the kept prompts, by index. */
  async readPromptExtras(): Promise<Map<number, PromptExtra>> {
    return this.serial(async () => {
      const r = await this.con.runAndReadAll(
        `SELECT prompt_idx, dataset_id, answer, token_text FROM prompts JOIN done USING (prompt_idx) WHERE prompts.kept ORDER BY prompt_idx`);
      return new Map(r.getRowsJS().map((row) => [Number(row[0]), {
        dataset_id: row[1] as string | null, answer: row[2] as string | null, token_text: row[3] as string | null,
      }]));
    });
  }

  /** Every kept, complete prompt as a PromptResult, ordered by prompt index. */
  async readResults(opts: ReadOptions = {}): Promise<PromptResult[]> {
    const withPatches = opts.patches ?? true;
    return this.serial(async () => {
      const con = this.con;
      const byIdx = new Map<number, PromptResult>();
      check(!opts.prompts || opts.prompts.every(Number.isInteger), 'prompt indices must be integers');
      const only = opts.prompts ? ` AND prompt_idx IN (${opts.prompts.join(', ') || 'NULL'})` : '';
      const kept = `(SELECT prompt_idx FROM done WHERE kept${only})`;
      const layers = (col: string) => (opts.layersOnly ? ` AND regexp_full_match(${col}, '${LAYER_RE}')` : '');
      const prompts = await con.runAndReadAll(
        `SELECT prompt_idx, text, ids, token, sigma, pi_hat FROM prompts WHERE kept AND prompt_idx IN ${kept} ORDER BY prompt_idx`);
      for (const [idx, text, ids, token, sigma, pi_hat] of prompts.getRowsJS()) {
        const r: PromptResult = { index: Number(idx), ids: (ids as number[]) ?? [], token: token as number, sigma: sigma as number, pi_hat: pi_hat as number, de: {}, ablations: {} };
        if (text !== null) r.text = text as string;
        byIdx.set(r.index, r);
      }
      await this.scan(`SELECT prompt_idx, component, de FROM clean_de WHERE prompt_idx IN ${kept}${layers('component')} ORDER BY prompt_idx, rowid`, (row) => {
        byIdx.get(row[0] as number)!.de[row[1] as string] = row[2] as number;
      });
      const effectsOf = (row: unknown[], start: number): Effects => {
        const e = { de_prime: {} } as Effects;
        for (let j = 0; j < EFFECT_FIELDS.length; j++) e[EFFECT_FIELDS[j]] = row[start + j] as number;
        const capped = row[start + EFFECT_FIELDS.length];
        if (capped !== null && capped !== undefined) e.te_capped = capped as number;
        return e;
      };
      await this.scan(`SELECT prompt_idx, component, ${EFFECT_FIELDS.join(', ')}, te_capped FROM effects WHERE prompt_idx IN ${kept}${layers('component')} ORDER BY prompt_idx, rowid`, (row) => {
        const e = effectsOf(row, 2);
        byIdx.get(row[0] as number)!.ablations[row[1] as string] = { ...e, patches: [] };
      });
      if (withPatches) {
        await this.scan(
          `SELECT prompt_idx, component, patch_idx, source, ${[...PATCH_FIELDS, ...EFFECT_FIELDS].join(', ')}, te_capped FROM patches
           WHERE prompt_idx IN ${kept}${layers('component')} ORDER BY prompt_idx, rowid`, (row) => {
            const a = byIdx.get(row[0] as number)!.ablations[row[1] as string];
            const e = effectsOf(row, 4 + PATCH_FIELDS.length) as PatchEffects;
            e.source = row[3] as number | null;
            PATCH_FIELDS.forEach((f, j) => (e[f] = row[4 + j] as number));
            a.patches[row[2] as number] = e;
          });
      }
      if (opts.dePrime === false) return [...byIdx.values()];
      const where = `WHERE prompt_idx IN ${kept}${withPatches ? '' : ' AND patch_idx IS NULL'}${layers('ablated')}`;
      const targetOf = (row: unknown[]) => {
        const a = byIdx.get(row[0] as number)!.ablations[row[1] as string];
        return row[2] === null ? a : a.patches[row[2] as number];
      };
      if (!this.dePrimeLists) {
        await this.scan(`SELECT prompt_idx, ablated, patch_idx, component, value FROM de_prime ${where}${layers('component')} ORDER BY prompt_idx, rowid`, (row) => {
          targetOf(row).de_prime[row[3] as string] = row[4] as number;
        });
        return [...byIdx.values()];
      }
      const layouts = await Layouts.load(con);
      await this.scan(`SELECT prompt_idx, ablated, patch_idx, layout, value FROM de_prime_values ${where} ORDER BY prompt_idx, rowid`, (row) => {
        const de = targetOf(row).de_prime;
        const names = layouts.names(row[3] as number);
        const values = (row[4] as DuckDBListValue).items as number[];
        names.forEach((c, i) => {
          if (!opts.layersOnly || layerKind(c) !== null) de[c] = values[i];
        });
      });
      return [...byIdx.values()];
    });
  }

  /** Streams a query chunk by chunk, so a full sweep's millions of rows are never all in JS at once. */
  private async scan(sql: string, onRow: (row: unknown[]) => void): Promise<void> {
    const result = await this.con.stream(sql);
    for (;;) {
      const chunk = await result.fetchChunk();
      if (!chunk || chunk.rowCount === 0) break;
      const cols = Array.from({ length: chunk.columnCount }, (_, i) => chunk.getColumnVector(i));
      const row: unknown[] = new Array(cols.length);
      for (let r = 0; r < chunk.rowCount; r++) {
        for (let c = 0; c < cols.length; c++) row[c] = cols[c].getItem(r);
        onRow(row);
      }
    }
  }

  /** Fold the write-ahead log into the file and release it. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.queue;
    this.closed = true;
    try {
      if (!this.readOnly) await this.con.run('CHECKPOINT');
    } finally {
      this.con.closeSync();
      this.instance.closeSync();
      openPaths.delete(path.resolve(this.file));
    }
  }

  /** The connection of a store opened read-only, for analysis in SQL (temp tables are allowed). */
  readConnection(): DuckDBConnection {
    check(this.readOnly && !this.closed, `${this.file} must be open read-only for analysis queries`);
    return this.con;
  }

  /** Run a read query on the store (for reports and tests); rows as plain JS values. */
  async query(sql: string): Promise<Record<string, unknown>[]> {
    return this.serial(async () => (await this.con.runAndReadAll(sql)).getRowObjectsJS());
  }
}

/**
 * DE' rows given as the temp table dp_rows (prompt_idx, ablated, patch_idx, components, value,
 * r: write order) go into de_prime_values, their component lists numbered in de_prime_layouts
 * where they are new.
 */
async function insertDePrimeRows(con: DuckDBConnection): Promise<void> {
  await con.run(`INSERT INTO main.de_prime_layouts
    SELECT (SELECT coalesce(max(layout) + 1, 0) FROM main.de_prime_layouts) + row_number() OVER (ORDER BY first) - 1, components
    FROM (SELECT components, min(r) AS first FROM dp_rows GROUP BY components)
    WHERE components NOT IN (SELECT components FROM main.de_prime_layouts)`);
  await con.run(`INSERT INTO main.de_prime_values
    SELECT d.prompt_idx, d.ablated, d.patch_idx, l.layout, d.value FROM dp_rows d JOIN main.de_prime_layouts l ON l.components = d.components ORDER BY d.r`);
  await con.run('DROP TABLE dp_rows');
}

/** dp_rows from a version 1 or 2 store's table `from` (one value a row, in rowid order). */
function longRowsSql(from: string, where = ''): string {
  return `CREATE OR REPLACE TEMP TABLE dp_rows AS
    SELECT prompt_idx, ablated, patch_idx, list(component ORDER BY r) AS components, list(value ORDER BY r) AS value, min(r) AS r
    FROM (SELECT *, rowid AS r FROM ${from} ${where}) GROUP BY prompt_idx, ablated, patch_idx`;
}

/** dp_rows from the lists of database `db` (another store's numbers are its own: the lists are joined in). */
function listRowsSql(db: string, where = ''): string {
  return `CREATE OR REPLACE TEMP TABLE dp_rows AS
    SELECT prompt_idx, ablated, patch_idx, l.components, v.value, v.rowid AS r
    FROM ${db}.de_prime_values v JOIN ${db}.de_prime_layouts l USING (layout) ${where}`;
}

/** `fn` in one transaction on `con`: committed, or rolled back and its error rethrown. */
async function inTransaction(con: DuckDBConnection, fn: () => Promise<void>): Promise<void> {
  await con.run('BEGIN TRANSACTION');
  try {
    await fn();
    await con.run('COMMIT');
  } catch (e) {
    await con.run('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

/** A version 1 or 2 store opened for writing: its DE' table becomes version 3's lists and view, in one transaction. */
async function upgradeDePrime(con: DuckDBConnection): Promise<void> {
  await inTransaction(con, async () => {
    await con.run(`${createTableSql('de_prime_values')} ${LAYOUTS_SQL};`);
    await con.run(longRowsSql('main.de_prime'));
    await insertDePrimeRows(con);
    await con.run(`DROP TABLE main.de_prime; ${DE_PRIME_VIEW_SQL}; UPDATE run_config SET schema_version = ${SCHEMA_VERSION}`);
  });
}

/**
 * Join shard stores into `out` (created, or an existing store of the same run). All inputs must
 * share the config except `shard` and `limit`; a prompt present in several must be identical in
 * all. The merged store's shard is NULL.
 */
export async function mergeStores(inputs: string[], out: string): Promise<void> {
  check(inputs.length > 0, 'nothing to merge; give at least one shard database');
  const outAbs = path.resolve(out);
  for (const f of inputs) {
    check(fs.existsSync(f), `shard database ${f} not found; check the path`);
    check(path.resolve(f) !== outAbs, `${out} is both an input and the output; write the merge to a new file`);
  }
  // Read every config first, so that a mismatch is reported before anything is written.
  const configs: RunConfig[] = [];
  for (const f of inputs) {
    const s = await ResultsStore.openReadOnly(f);
    configs.push(s.config);
    await s.close();
  }
  for (let i = 1; i < inputs.length; i++) {
    const d = configDiff(configs[0], configs[i], ['shard']);
    if (d) {
      throw new HydraError(`${inputs[0]} and ${inputs[i]} differ in ${d[0]} (${String(d[1])} vs ${String(d[2])})${diffMeaning(d[0])}; only shards of the same run can be merged`);
    }
  }
  const store = await ResultsStore.open(out, { ...configs[0], shard: null });
  // Internals: the merge runs SQL on the store's own connection.
  const con = (store as unknown as { con: DuckDBConnection }).con;
  try {
    for (const f of inputs) {
      await con.run(`ATTACH ${sqlString(path.resolve(f))} AS shard_src (READ_ONLY)`);
      try {
        await con.run(`CREATE OR REPLACE TEMP TABLE merge_overlap AS
          SELECT prompt_idx FROM shard_src.done INTERSECT SELECT prompt_idx FROM main.done`);
        // DE' is compared as values (the long view): each store numbers its layouts its own way.
        for (const t of PROMPT_RELATIONS) {
          if (t === 'done') continue;
          const diff = await con.runAndReadAll(`SELECT count(*) FROM (
            (SELECT * FROM shard_src.${t} WHERE prompt_idx IN (SELECT prompt_idx FROM merge_overlap)
             EXCEPT ALL SELECT * FROM main.${t} WHERE prompt_idx IN (SELECT prompt_idx FROM merge_overlap))
            UNION ALL
            (SELECT * FROM main.${t} WHERE prompt_idx IN (SELECT prompt_idx FROM merge_overlap)
             EXCEPT ALL SELECT * FROM shard_src.${t} WHERE prompt_idx IN (SELECT prompt_idx FROM merge_overlap)))`);
          const n = Number(diff.getRowsJS()[0][0]);
          if (n > 0) {
            const which = await con.runAndReadAll(`SELECT min(prompt_idx) FROM merge_overlap`);
            throw new HydraError(`${f} and the shards merged before it both hold prompts (e.g. ${String(which.getRowsJS()[0][0])}) with different ${t} rows; they are not shards of one run, merge them separately`);
          }
        }
        await inTransaction(con, async () => {
          await con.run(`CREATE OR REPLACE TEMP TABLE merge_new AS
            SELECT prompt_idx FROM shard_src.done WHERE prompt_idx NOT IN (SELECT prompt_idx FROM main.done)`);
          const fresh = 'WHERE prompt_idx IN (SELECT prompt_idx FROM merge_new)';
          for (const t of PROMPT_TABLES) {
            if (t === 'de_prime_values') {
              await con.run((await hasDePrimeLists(con, 'shard_src')) ? listRowsSql('shard_src', fresh) : longRowsSql('shard_src.de_prime', fresh));
              await insertDePrimeRows(con);
            } else await con.run(`INSERT INTO main.${t} BY NAME SELECT * FROM shard_src.${t} ${fresh} ORDER BY rowid`);
          }
        });
      } finally {
        await con.run('DETACH shard_src');
      }
    }
  } catch (e) {
    await store.close();
    if (e instanceof HydraError) throw e;
    throw new HydraError(`merging into ${out} failed (${errText(e)}); the shards are untouched, remove ${out} and retry`);
  }
  await store.close();
}

/** Write one <table>.parquet per table of the store into outDir; returns the files written. */
export async function exportParquet(db: string, outDir: string): Promise<string[]> {
  const store = await ResultsStore.openReadOnly(db);
  try {
    makeDir(outDir);
    const con = (store as unknown as { con: DuckDBConnection }).con;
    const files: string[] = [];
    const lists = await hasDePrimeLists(con);
    for (const t of ['run_config', ...PROMPT_RELATIONS]) {
      const file = path.join(outDir, `${t}.parquet`);
      const order = t === 'run_config' ? '' : ' ORDER BY prompt_idx, rowid';
      // DE' one value a row, in write order (the view has no rowid).
      const rows = t === 'de_prime' && lists
        ? `SELECT prompt_idx, ablated, patch_idx, component, value FROM (
            SELECT v.prompt_idx, v.ablated, v.patch_idx, unnest(l.components) AS component, unnest(v.value) AS value,
              generate_subscripts(v.value, 1) AS i, v.rowid AS r
            FROM de_prime_values v JOIN de_prime_layouts l USING (layout)) ORDER BY prompt_idx, r, i`
        : `SELECT * FROM ${t}${order}`;
      try {
        await con.run(`COPY (${rows}) TO ${sqlString(path.resolve(file))} (FORMAT parquet)`);
      } catch (e) {
        throw new HydraError(`cannot write ${file} (${errText(e)}); check that ${outDir} is writable`);
      }
      files.push(file);
    }
    return files;
  } finally {
    await store.close();
  }
}
