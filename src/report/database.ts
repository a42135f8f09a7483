import fs from 'node:fs';
import path from 'node:path';
import { computeFindings, type Findings } from '../experiments/findings.js';
import { ownScaleSeries, Statistics, storeSeries, type ComponentStats, type StatsOptions } from '../experiments/stats.js';
import { ResultsStore } from '../experiments/store.js';
import { repairOfStore, type RepairMatrix } from '../experiments/repair.js';
import { HydraError } from '../io/errors.js';
import { makeDir } from '../io/paths.js';
import type { PromptResult } from '../causal/types.js';
import { chooseProfiles, writeReport, type ProfilePick } from './html.js';

export interface DatabaseReportOptions {
  bootstrap?: number;
  seed?: number;
  /** The component of Figure 1 (e.g. attn.18); default: chosen by chooseProfiles. */
  figure1?: string;
}

/** Everything a report reads from a results database, computed in DuckDB. */
export interface DatabaseAnalysis {
  config: ResultsStore['config'];
  stats: Record<string, ComponentStats>;
  /** The same statistics with the ablated run's own final-norm scale (layer ablations only); null when not derivable. */
  ownScale: Record<string, ComponentStats> | null;
  findings: Findings;
  /** Kept prompts with their layer-level effects (no patches, no DE'): the dataset figures' points. */
  prompts: PromptResult[];
  /** Figure 1 and 3 choices, their prompts read with every patch. */
  picks: ProfilePick[];
  tokenTexts: Map<number, string>;
  /** Who repairs each ablation: heads and MLPs when the sweep ablated heads, else layers. */
  repair: RepairMatrix;
}

/** The statistics, findings and figure data of a sweep's database. */
export async function analyzeDatabase(db: string, opts: DatabaseReportOptions = {}): Promise<DatabaseAnalysis> {
  const store = await ResultsStore.openReadOnly(db);
  try {
    const con = store.readConnection();
    const series = await storeSeries(con, store.config.dataset);
    if (series.n === 0) throw new HydraError(`${db} holds no finished prompts; run hydra sweep (again) to compute them`);
    const sOpts: StatsOptions = { bootstrap: opts.bootstrap, seed: opts.seed, groups: series.groups };
    const run = await Statistics.fromSeries(con, 'series', series.n, sOpts);
    const findings = await computeFindings(run, series.grouping);
    const own = (await ownScaleSeries(con, store.config.downstream)) ? await Statistics.fromSeries(con, 'series_own', series.n, sOpts) : null;
    const prompts = await store.readResults({ patches: false, layersOnly: true, dePrime: false });
    const picks = chooseProfiles(prompts, run.stats, opts.figure1);
    const detailed = await store.readResults({ patches: true, layersOnly: true, prompts: picks.map((p) => p.prompt.index) });
    for (const p of picks) p.prompt = detailed.find((d) => d.index === p.prompt.index)!;
    const extras = await store.readPromptExtras();
    const tokenTexts = new Map([...extras].map(([i, e]) => [i, e.token_text ?? '']));
    const repair = await repairOfStore(store, { bootstrap: opts.bootstrap, seed: opts.seed });
    return { config: store.config, stats: run.stats, ownScale: own?.stats ?? null, findings, prompts, picks, tokenTexts, repair };
  } finally {
    await store.close();
  }
}

/** Read a sweep's database and write findings.json, the statistics, Figures 1, 2, 3, 7, 8 and index.html into outDir. */
export async function reportFromDatabase(db: string, outDir: string, opts: DatabaseReportOptions = {}): Promise<string> {
  const a = await analyzeDatabase(db, opts);
  const c = a.config;
  const out = path.resolve(outDir);
  makeDir(out, 'choose a writable `out`');
  fs.writeFileSync(path.join(out, 'findings.json'), JSON.stringify({ model: c.model, dataset: c.dataset, kind: c.ablation, n_prompts: a.prompts.length, ...a.findings }, null, 2) + '\n');
  return writeReport(out, {
    model: c.model,
    dataset: c.dataset,
    kind: c.ablation,
    config: { model: c.model, revision: c.model_revision ?? null, dataset: c.dataset, kind: c.ablation, samples: c.samples, seed: c.seed, heads: c.heads, prompts: a.prompts.length },
    prompts: a.prompts,
    stats: a.stats,
    ownScale: a.ownScale,
    findings: a.findings,
    repair: a.repair,
    picks: a.picks,
    promptTexts: a.prompts.map((p) => p.text ?? ''),
    tokenTexts: a.prompts.map((p) => a.tokenTexts.get(p.index) ?? String(p.token)),
  });
}
