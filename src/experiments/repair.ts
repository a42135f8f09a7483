/**
 * Who repairs (the paper's open questions 2 and 3), from a results store, in DuckDB.
 *
 * The repair matrix: for an ablated component k and a responder c downstream of k (a later
 * attention layer or MLP at level 'layers'; a head of a later attention layer or a later MLP
 * at level 'heads'), ΔDE_k(c) = DE'_k(c) − DE(c), each prompt's patch average. Across prompts:
 * the mean with a bootstrap interval (stats.ts bootstrapWeights: the same group bootstrap as
 * the report's statistics).
 *
 * The same replacements across prompts? A prompt is repaired (for k) when its largest ΔDE exceeds
 * REPAIR_TOL · max(1, max_c |DE(c)|): the engine computes in float32, so a prompt where the
 * ablation removes nothing still shows ΔDE of about 1e-7, and its "top responder" would be
 * rounding noise. On a repaired prompt the top set A_p is the m = min(3, R − 1) responders with
 * the largest ΔDE (R: responders downstream of k; ties by name; never all R, which would agree
 * on every prompt whatever the data). Over the repaired prompts, per
 * responder: the fraction where it is the top responder and where it is in A_p; and the stability
 * score, the mean over pairs of distinct repaired prompts of |A_p ∩ A_q| / m (1 when they all have
 * the same top set). In a resample with prompt weights w (N = Σ w over repaired prompts), pairs
 * of distinct draws give (Σ_c n_c² − m·N) / (m·N·(N − 1)) with n_c = Σ_p w_p [c ∈ A_p], so every
 * resample is one sum.
 *
 * Top sets drawn at random would overlap by m/R on average (chance), so the bar is STABILITY_THRESHOLD
 * of the way from chance to 1: bar = m/R + θ·(1 − m/R) (θ = 0.5; about 0.5 for GPT-2's heads).
 * The verdict, from these numbers: n/a with fewer than two responders; no repair when no prompt
 * is repaired or no responder's mean ΔDE is positive; a consistent set when the stability's 95%
 * interval lies at or above the bar; different components on different prompts when it lies
 * below; undecided otherwise.
 */
import type { DuckDBConnection } from '@duckdb/node-api';
import { HydraError, check } from '../io/errors.js';
import { parseComponent } from '../models/components.js';
import { fmtNum } from './format.js';
import { bootstrapWeights, rows, storeSeries, type BootstrapInfo, type Interval } from './stats.js';
import { ResultsStore, type RunConfig } from './store.js';

export type RepairLevel = 'layers' | 'heads';
export const REPAIR_LEVELS: readonly RepairLevel[] = ['layers', 'heads'];

/** A top set this size (or all responders, when fewer). */
export const TOP_SET = 3;
/** How far from chance (m/R) to identical top sets (1) the stability's interval must lie for a consistent set. */
export const STABILITY_THRESHOLD = 0.5;
/** Relative size of a ΔDE that counts as a response, above float32 rounding (see the header). */
export const REPAIR_TOL = 1e-5;
/** Ablated components whose bootstrap runs in one query (bounds its memory). */
const CHUNK = 24;
/** Responders listed per ablated component by default. */
export const DEFAULT_TOP = 5;

export interface RepairOptions {
  /** Default: heads when the store has them, else layers. */
  level?: RepairLevel;
  /** Responders listed per ablated component, by mean ΔDE (default DEFAULT_TOP). */
  top?: number;
  bootstrap?: number;
  seed?: number;
}

export interface ResponderStat {
  component: string;
  /** Mean over prompts of the patch-averaged ΔDE. */
  mean_dde: number;
  mean_ci: Interval;
  /** Fraction of the repaired prompts where it is the top responder (null: none repaired). */
  top1: number | null;
  top1_ci: Interval;
  /** Fraction of the repaired prompts where it is in the top set. */
  top_set: number | null;
  top_set_ci: Interval;
}

export type RepairVerdict = 'consistent' | 'varies' | 'undecided' | 'no repair' | 'n/a';

export interface AblatedRepair {
  ablated: string;
  n: number;
  /** Responders downstream of the ablated component at this level. */
  responders: number;
  /** m = min(TOP_SET, responders − 1). */
  set_size: number;
  /** The stability of top sets drawn at random, m / responders, and the bar a consistent set clears. */
  chance: number | null;
  bar: number | null;
  /** The `top` responders by mean ΔDE. */
  top: ResponderStat[];
  /** Every responder that is in some prompt's top set, by how often it is the top responder (then in the top set); the first `top` with intervals. */
  frequent: ResponderStat[];
  stability: number | null;
  stability_ci: Interval;
  /** Prompts whose largest ΔDE is above rounding (REPAIR_TOL): those the top sets are taken over. */
  prompts_repaired: number;
  verdict: RepairVerdict;
  sentence: string;
}

export interface RepairMatrix {
  level: RepairLevel;
  n_prompts: number;
  /** Rows and columns of the heatmap, in model order. */
  ablated: string[];
  responders: string[];
  /** Mean ΔDE of every downstream (ablated, responder) pair. */
  cells: { ablated: string; responder: string; mean_dde: number }[];
  rows: AblatedRepair[];
  bootstrap: BootstrapInfo;
  grouping: string;
  /** Where the downstream sets came from: the sweep's model plan, or (older stores) the sequential pre-norm rule. */
  downstream: 'stored' | 'assumed sequential';
  threshold: number;
  top_set: number;
}

/** Sort key of a component in model order: embed, then per layer attn, its heads, its bias, mlp. */
export function modelOrder(name: string): number {
  const c = parseComponent(name);
  if (c.kind === 'embed') return -1;
  const within = { attn: 0, head: 1 + c.head / 1e6, attn_bias: 2, mlp: 3 }[c.kind];
  return c.layer * 4 + within;
}

const byModelOrder = (a: string, b: string) => modelOrder(a) - modelOrder(b);
/** Ties broken by name as SQL's ORDER BY does (code points). */
const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Whether `name` is a responder, and whether it is ablated, at `level`. */
function responderAt(level: RepairLevel, name: string): boolean {
  const k = parseComponent(name).kind;
  return level === 'layers' ? k === 'attn' || k === 'mlp' : k === 'head' || k === 'mlp';
}
function ablatedAt(level: RepairLevel, name: string): boolean {
  const k = parseComponent(name).kind;
  return level === 'layers' ? k === 'attn' || k === 'mlp' : k === 'attn' || k === 'mlp' || k === 'head';
}

/** Downstream of k in a sequential pre-norm model: a later stage (attn.l and its heads at 2l, mlp.l at 2l + 1). */
function sequentialDownstream(k: string, c: string): boolean {
  const stage = (n: string) => {
    const p = parseComponent(n);
    return p.kind === 'embed' ? -1 : 2 * p.layer + (p.kind === 'mlp' ? 1 : 0);
  };
  return stage(c) > stage(k);
}

/** The (ablated, responder) pairs at `level`, from the stored downstream sets or the sequential rule. */
function downstreamPairs(config: RunConfig, level: RepairLevel, ablated: string[], components: string[]): [string, string][] {
  const responders = components.filter((c) => responderAt(level, c));
  const pairs: [string, string][] = [];
  for (const k of ablated.filter((a) => ablatedAt(level, a))) {
    const stored = config.downstream?.[k];
    const down = stored ? new Set(stored) : null;
    for (const c of responders) if (c !== k && (down ? down.has(c) : sequentialDownstream(k, c))) pairs.push([k, c]);
  }
  return pairs;
}

/** Names in a table column, in model order. */
async function names(con: DuckDBConnection, sql: string): Promise<string[]> {
  return (await rows(con, sql)).map((r) => String(r.name)).sort(byModelOrder);
}

/**
 * Temp table rep_dde (pos, prompt_idx, ablated, responder, dde) of the patch-averaged ΔDE of
 * every downstream pair at `level`, on a read-only store's connection (after storeSeries).
 */
async function repairTable(con: DuckDBConnection, config: RunConfig, level: RepairLevel): Promise<{ pairs: number; ablated: string[] }> {
  const ablated = await names(con, 'SELECT DISTINCT component AS name FROM effects');
  const components = await names(con, 'SELECT DISTINCT component AS name FROM clean_de');
  if (level === 'heads') check(components.some((c) => parseComponent(c).kind === 'head'), 'the store has no per-head direct effects; sweep with heads (hydra sweep --heads) or use `level=layers`');
  const pairs = downstreamPairs(config, level, ablated, components);
  await con.run(`CREATE OR REPLACE TEMP TABLE rep_down AS SELECT split_part(x, '|', 1) AS ablated, split_part(x, '|', 2) AS responder
    FROM (SELECT unnest(string_split($1, ',')) AS x)`, [pairs.map((p) => p.join('|')).join(',')]);
  await con.run(`CREATE OR REPLACE TEMP TABLE rep_dde AS
    WITH tol AS (SELECT prompt_idx, ${REPAIR_TOL} * greatest(1, max(abs(de))) AS tol FROM clean_de JOIN stat_prompts USING (prompt_idx) GROUP BY prompt_idx)
    SELECT k.pos, dp.prompt_idx, dp.ablated, dp.component AS responder, dp.value - c.de AS dde, tol.tol
    FROM de_prime dp JOIN stat_prompts k USING (prompt_idx) JOIN tol USING (prompt_idx)
    JOIN rep_down d ON d.ablated = dp.ablated AND d.responder = dp.component
    JOIN clean_de c ON c.prompt_idx = dp.prompt_idx AND c.component = dp.component
    WHERE dp.patch_idx IS NULL`);
  return { pairs: pairs.length, ablated: ablated.filter((a) => ablatedAt(level, a)) };
}

const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const ci = (q: unknown, n: unknown): Interval => {
  const qs = q as number[] | null;
  return { lo: qs?.[0] ?? null, hi: qs?.[1] ?? null, n_valid: Number(n) };
};

/** The repair matrix and the top-set statistics of a store opened read-only. */
export async function repairOfStore(store: ResultsStore, opts: RepairOptions = {}): Promise<RepairMatrix> {
  const con = store.readConnection();
  const level = opts.level ?? (store.config.heads ? 'heads' : 'layers');
  check(REPAIR_LEVELS.includes(level), `\`level\` must be one of ${REPAIR_LEVELS.join(', ')}, got ${String(level)}`);
  const top = opts.top ?? DEFAULT_TOP;
  check(Number.isInteger(top) && top >= 1, `\`top\` must be a positive integer, got ${top}`);
  const series = await storeSeries(con, store.config.dataset);
  if (series.n === 0) throw new HydraError(`${store.file} holds no finished prompts; run hydra sweep (again) to compute them`);
  const n = series.n;
  const { ablated } = await repairTable(con, store.config, level);
  const incomplete = await rows(con, `SELECT ablated, responder, count(*) AS c FROM rep_dde GROUP BY ALL HAVING count(*) <> ${n} LIMIT 1`);
  check(incomplete.length === 0, () => `${incomplete[0].ablated} was not ablated in every prompt (${incomplete[0].c} of ${n}); the repair matrix needs every prompt ablated at the same components`);

  await con.run(`CREATE OR REPLACE TEMP TABLE rep_cells AS SELECT ablated, responder, avg(dde) AS mean_dde FROM rep_dde GROUP BY ALL`);
  await con.run(`CREATE OR REPLACE TEMP TABLE rep_top AS
    WITH r AS (SELECT pos, ablated, responder, dde, tol, row_number() OVER (PARTITION BY pos, ablated ORDER BY dde DESC, responder) AS rk,
      max(dde) OVER (PARTITION BY pos, ablated) AS best FROM rep_dde),
    m AS (SELECT ablated, least(${TOP_SET}, count(*) - 1)::INTEGER AS m FROM rep_down GROUP BY ablated)
    SELECT r.pos, r.ablated, r.responder, r.dde, r.rk = 1 AS top1, m.m FROM r JOIN m USING (ablated) WHERE r.rk <= m.m AND r.best > r.tol`);
  // Each responder's share of the repaired prompts where it is the top responder, and in the top set.
  await con.run(`CREATE OR REPLACE TEMP TABLE rep_freq AS
    WITH nr AS (SELECT ablated, count(DISTINCT pos)::DOUBLE AS N FROM rep_top GROUP BY ablated)
    SELECT t.ablated, t.responder, sum(t.top1::INTEGER) / any_value(nr.N) AS top1, count(*) / any_value(nr.N) AS top_set, any_value(c.mean_dde) AS mean_dde
    FROM rep_top t JOIN nr USING (ablated) JOIN rep_cells c USING (ablated, responder) GROUP BY t.ablated, t.responder`);
  // Intervals for the listed responders: the top by mean ΔDE and the top by how often they lead
  // (the bootstrap's cost grows with the pairs it covers; a random-weight GPT-2 puts ~50 heads in some top set).
  await con.run(`CREATE OR REPLACE TEMP TABLE rep_sel AS
    SELECT ablated, responder FROM (SELECT ablated, responder, row_number() OVER (PARTITION BY ablated ORDER BY mean_dde DESC, responder) AS rk FROM rep_cells) WHERE rk <= ${top}
    UNION SELECT ablated, responder FROM (SELECT ablated, responder,
      row_number() OVER (PARTITION BY ablated ORDER BY top1 DESC, top_set DESC, mean_dde DESC, responder) AS rk FROM rep_freq) WHERE rk <= ${top}`);

  const { table: W, info } = await bootstrapWeights(con, n, { bootstrap: opts.bootstrap, seed: opts.seed, groups: series.groups });
  try {
    await con.run(`CREATE OR REPLACE TEMP TABLE rep_tot AS SELECT b, sum(w)::DOUBLE AS N FROM ${W} GROUP BY b`);
    // the repaired prompts' weight per ablated component and resample (absent: none drawn)
    await con.run(`CREATE OR REPLACE TEMP TABLE rep_nrep AS
      SELECT r.ablated, w.b, sum(w.w)::DOUBLE AS N FROM (SELECT DISTINCT ablated, pos FROM rep_top) r JOIN ${W} w USING (pos) GROUP BY ALL`);
    // In chunks of ablated components: each resample × pair is a hash-table group, and the chunks bound their number.
    const chunks = Array.from({ length: Math.ceil(ablated.length / CHUNK) }, (_, i) => ablated.slice(i * CHUNK, (i + 1) * CHUNK));
    for (const [i, chunk] of chunks.entries()) {
      const into = (t: string) => (i === 0 ? `CREATE OR REPLACE TEMP TABLE ${t} AS` : `INSERT INTO ${t}`);
      const only = `ablated IN (${chunk.map((k) => `'${k}'`).join(', ')})`;
      await con.run(`${into('rep_boot')}
        WITH mean_b AS (SELECT d.ablated, d.responder, w.b, sum(w.w * d.dde) AS s FROM rep_dde d JOIN rep_sel USING (ablated, responder) JOIN ${W} w USING (pos) WHERE d.${only} GROUP BY ALL),
        top_b AS (SELECT t.ablated, t.responder, w.b, sum(w.w * t.top1::INTEGER) AS c1, sum(w.w) AS cm FROM rep_top t JOIN rep_sel USING (ablated, responder) JOIN ${W} w USING (pos) WHERE t.${only} GROUP BY ALL)
        SELECT m.ablated, m.responder, m.b, m.s / tot.N AS mean_dde, coalesce(t.c1, 0) / nr.N AS top1, coalesce(t.cm, 0) / nr.N AS top_set
        FROM mean_b m JOIN rep_tot tot USING (b) LEFT JOIN rep_nrep nr USING (ablated, b) LEFT JOIN top_b t USING (ablated, responder, b)`);
      await con.run(`${into('rep_stab')}
        WITH c AS (SELECT t.ablated, w.b, t.responder, sum(w.w)::DOUBLE AS c FROM rep_top t JOIN ${W} w USING (pos) WHERE t.${only} GROUP BY ALL),
        s AS (SELECT ablated, b, sum(c * c) AS s2 FROM c GROUP BY ALL),
        m AS (SELECT DISTINCT ablated, m FROM rep_top)
        SELECT s.ablated, s.b, CASE WHEN nr.N < 2 THEN NULL ELSE (s.s2 - m.m * nr.N) / (m.m * nr.N * (nr.N - 1)) END AS stability
        FROM s JOIN m USING (ablated) JOIN rep_nrep nr USING (ablated, b)`);
    }
  } finally {
    await con.run(`DROP TABLE IF EXISTS ${W}`);
  }
  const q = `[0.025, 0.975]`;
  const stat = (s: string) => `quantile_cont(${s}, ${q}) FILTER (WHERE b > 0) AS ${s}_q, count(${s}) FILTER (WHERE b > 0) AS ${s}_n`;
  const responderRows = await rows(con, `SELECT ablated, responder, any_value(top1) FILTER (WHERE b = 0) AS top1, any_value(top_set) FILTER (WHERE b = 0) AS top_set,
      ${stat('mean_dde')}, ${stat('top1')}, ${stat('top_set')}
    FROM rep_boot GROUP BY ALL`);
  const cells = (await rows(con, 'SELECT ablated, responder, mean_dde FROM rep_cells'))
    .map((r) => ({ ablated: String(r.ablated), responder: String(r.responder), mean_dde: Number(r.mean_dde) }))
    .sort((x, y) => byModelOrder(x.ablated, y.ablated) || byModelOrder(x.responder, y.responder));
  const mean = new Map(cells.map((c) => [`${c.ablated}|${c.responder}`, c.mean_dde]));
  const stats = new Map<string, Map<string, ResponderStat>>();
  const add = (k: string, x: ResponderStat) => {
    if (!stats.has(k)) stats.set(k, new Map());
    stats.get(k)!.set(x.component, x);
  };
  const none: Interval = { lo: null, hi: null, n_valid: 0 };
  // responders in some top set but not listed: their shares, without intervals
  for (const r of await rows(con, 'SELECT ablated, responder, top1, top_set FROM rep_freq')) {
    add(String(r.ablated), { component: String(r.responder), mean_dde: mean.get(`${String(r.ablated)}|${String(r.responder)}`)!, mean_ci: none,
      top1: Number(r.top1), top1_ci: none, top_set: Number(r.top_set), top_set_ci: none });
  }
  for (const r of responderRows) {
    add(String(r.ablated), {
      component: String(r.responder), mean_dde: mean.get(`${String(r.ablated)}|${String(r.responder)}`)!, mean_ci: ci(r.mean_dde_q, r.mean_dde_n),
      top1: numOrNull(r.top1), top1_ci: ci(r.top1_q, r.top1_n), top_set: numOrNull(r.top_set), top_set_ci: ci(r.top_set_q, r.top_set_n),
    });
  }
  const stab = new Map((await rows(con, `SELECT ablated, any_value(stability) FILTER (WHERE b = 0) AS s, ${stat('stability')} FROM rep_stab GROUP BY ablated`))
    .map((r) => [String(r.ablated), { value: r.s === null ? null : Number(r.s), ci: ci(r.stability_q, r.stability_n) }]));
  const sizes = new Map((await rows(con, `SELECT d.ablated, count(*) AS r, (SELECT count(*) FROM rep_top t WHERE t.ablated = d.ablated AND t.top1) AS repaired
      FROM rep_down d GROUP BY d.ablated`)).map((r) => [String(r.ablated), { r: Number(r.r), repaired: Number(r.repaired) }]));

  const out: AblatedRepair[] = ablated.map((k) => {
    const list = [...(stats.get(k)?.values() ?? [])];
    const sz = sizes.get(k) ?? { r: 0, repaired: 0 };
    const s = stab.get(k) ?? { value: null, ci: { lo: null, hi: null, n_valid: 0 } };
    const row: AblatedRepair = {
      ablated: k, n, responders: sz.r, set_size: setSize(sz.r), chance: sz.r > 1 ? setSize(sz.r) / sz.r : null,
      bar: sz.r > 1 ? setSize(sz.r) / sz.r + STABILITY_THRESHOLD * (1 - setSize(sz.r) / sz.r) : null,
      top: [...list].sort((a, b) => b.mean_dde - a.mean_dde || byName(a.component, b.component)).slice(0, top),
      frequent: list.filter((x) => (x.top_set ?? 0) > 0).sort((a, b) => b.top1! - a.top1! || b.top_set! - a.top_set! || b.mean_dde - a.mean_dde || byName(a.component, b.component)),
      stability: s.value, stability_ci: s.ci, prompts_repaired: sz.repaired, verdict: 'n/a', sentence: '',
    };
    [row.verdict, row.sentence] = verdictOf(row, level);
    return row;
  });
  const responders = [...new Set(cells.map((c) => c.responder))].sort(byModelOrder);
  return {
    level, n_prompts: n, ablated, responders, cells, rows: out, bootstrap: info, grouping: series.grouping,
    downstream: store.config.downstream ? 'stored' : 'assumed sequential', threshold: STABILITY_THRESHOLD, top_set: TOP_SET,
  };
}

/** `repairOfStore` on the database file `db`. */
export async function repairFromDatabase(db: string, opts: RepairOptions = {}): Promise<RepairMatrix> {
  const store = await ResultsStore.openReadOnly(db);
  try {
    return await repairOfStore(store, opts);
  } finally {
    await store.close();
  }
}

const setSize = (responders: number) => Math.max(0, Math.min(TOP_SET, responders - 1));
const withCi = (v: number | null, c: Interval) => `${fmtNum(v)} [${fmtNum(c.lo)}, ${fmtNum(c.hi)}]`;
const pct = (v: number) => `${Math.round(v * 100)}%`;

/** The verdict and its sentence, made from the row's numbers only. */
function verdictOf(r: AblatedRepair, level: RepairLevel): [RepairVerdict, string] {
  const what = level === 'heads' ? 'heads and MLPs' : 'layers';
  const one = level === 'heads' ? 'head or MLP' : 'layer';
  if (r.responders === 0) return ['n/a', `Nothing downstream of ${r.ablated} at the level of ${what}.`];
  const best = r.top[0];
  if (r.responders === 1) return ['n/a', `One ${one} is downstream of ${r.ablated} (${best.component}, mean ΔDE ${withCi(best.mean_dde, best.mean_ci)}): nothing to compare.`];
  if (r.prompts_repaired === 0) return ['no repair', `No repair: on none of the ${r.n} prompts does a downstream ${one} raise its direct effect beyond float rounding.`];
  const freq = r.frequent[0];
  const repaired = `${r.prompts_repaired} of ${r.n} prompts are repaired (some ${one} raises its direct effect)`;
  if (!(best.mean_dde > 0)) {
    return ['no repair', `No repair on average: no downstream ${one} raises its direct effect in the mean (largest mean ΔDE ${fmtNum(best.mean_dde)}, ${best.component}), though on ${r.prompts_repaired} of ${r.n} prompts some ${one} raises its own.`];
  }
  const lead = `${best.component} has the largest mean ΔDE, ${withCi(best.mean_dde, best.mean_ci)}; ${freq.component} is the top responder on ${pct(freq.top1!)} of repaired prompts [${fmtNum(freq.top1_ci.lo)}, ${fmtNum(freq.top1_ci.hi)}]; ${repaired}.`;
  const s = r.stability_ci;
  const bar = r.bar!;
  const stab = `stability ${withCi(r.stability, s)}; chance ${fmtNum(r.chance)}, bar ${fmtNum(bar)}`;
  if (r.stability === null || s.lo === null || s.hi === null) return ['undecided', `Cannot tell whether the same ${what} repair on every prompt (${r.prompts_repaired < 2 ? 'fewer than two repaired prompts' : 'no interval'}). ${lead}`];
  if (s.lo >= bar) return ['consistent', `A consistent set repairs: the top-${r.set_size} sets agree across prompts (${stab}). ${lead}`];
  if (s.hi < bar) return ['varies', `Different ${what} repair on different prompts: the top-${r.set_size} sets overlap little (${stab}). ${lead}`];
  return ['undecided', `Cannot tell whether the same ${what} repair on every prompt: the interval contains the bar (${stab}). ${lead}`];
}

/**
 * ΔDE per prompt (patch average) and, where the store keeps them, per patch, of one ablated
 * component's downstream responders at `level`: the matrix's inputs, for checks and drill-down.
 */
export async function repairDetail(db: string, ablated: string, level: RepairLevel): Promise<{ prompt_idx: number; patch_idx: number | null; responder: string; dde: number }[]> {
  const store = await ResultsStore.openReadOnly(db);
  try {
    const con = store.readConnection();
    await storeSeries(con, store.config.dataset);
    await repairTable(con, store.config, level);
    const k = parseComponent(ablated).name;
    const avg = await rows(con, `SELECT prompt_idx, NULL AS patch_idx, responder, dde FROM rep_dde WHERE ablated = $1`, [k]);
    const patches = await rows(con, `SELECT dp.prompt_idx, dp.patch_idx, dp.component AS responder, dp.value - c.de AS dde
      FROM de_prime dp JOIN stat_prompts USING (prompt_idx) JOIN rep_down d ON d.ablated = dp.ablated AND d.responder = dp.component
      JOIN clean_de c ON c.prompt_idx = dp.prompt_idx AND c.component = dp.component
      WHERE dp.ablated = $1 AND dp.patch_idx IS NOT NULL`, [k]);
    return [...avg, ...patches].map((r) => ({ prompt_idx: Number(r.prompt_idx), patch_idx: r.patch_idx === null ? null : Number(r.patch_idx), responder: String(r.responder), dde: Number(r.dde) }))
      .sort((a, b) => a.prompt_idx - b.prompt_idx || (a.patch_idx ?? -1) - (b.patch_idx ?? -1) || byModelOrder(a.responder, b.responder));
  } finally {
    await store.close();
  }
}
