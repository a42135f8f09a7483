import { Command, Option } from 'commander';
import type { AblationKind } from '../causal/types.js';
import type { Metric } from '../causal/readout.js';
import { exportParquet, mergeStores, STORE_PATCHES, type StorePatches } from '../experiments/store.js';
import { parseShard, shardFromEnvironment, runSweep } from '../experiments/sweep.js';
import { sweepProgress, waiting } from './progress.js';
import { addAnswerColumn, addMetricOption, PROMPTS_HELP } from './prompts.js';
import { addAblationOptions, addModelOptions, loadModelFromOptions, positiveInt, printJson, type ModelOptions } from './util.js';

export interface SweepCliOptions extends ModelOptions {
  dataset: string;
  ablation: AblationKind;
  samples: number;
  seed: number;
  allowSameAnswer?: boolean;
  out: string;
  heads?: boolean;
  storePatches: StorePatches;
  limit?: number;
  shard?: string;
  shardCount?: number;
  filter: boolean;
  verbose?: boolean;
  answerColumn?: string;
  json?: boolean;
}

/** `hydra sweep`, `hydra merge` and `hydra export`: the dataset-wide experiment and its database. */
export function registerSweep(program: Command): void {
  const sweep = addModelOptions(
    addAblationOptions(
      program
        .command('sweep')
        .description('ablate every attention and MLP layer (and head with --heads) on every kept prompt of a dataset; results go to DuckDB, and a rerun resumes')
        .option('--dataset <name|file>', `${PROMPTS_HELP}, or a counterfact.json`, 'known_1000'),
    )
      .option('--out <file>', 'results database', 'results.duckdb')
      .option('--heads', 'also ablate every attention head')
      .addOption(new Option('--store-patches <which>', "with --heads, whose per-patch DE' to store: layers (layer-level pairs; patch averages are always kept for every pair) or all").choices(STORE_PATCHES).default('layers'))
      .option('--limit <N>', 'only the first N prompts of the dataset (a larger N later extends the same --out)', positiveInt('--limit'))
      .option('--shard <i/n>', 'compute batches i, i+n, ... of the kept prompts only (merge the shards with hydra merge); default: the SLURM array task or Kubernetes Indexed Job index, if any')
      .option('--shard-count <n>', 'shards in all, with a Kubernetes Indexed Job (JOB_COMPLETION_INDEX) or to override SLURM_ARRAY_TASK_COUNT', positiveInt('--shard-count'))
      .option('--no-filter', 'keep every prompt, not only those the model answers correctly')
      .option('--verbose', 'log each prompt as it is stored')
      .option('--json', 'print the summary as one JSON object: counts, drop reasons, every dropped prompt'),
  );
  addMetricOption(addAnswerColumn(sweep)).action(async (opts: SweepCliOptions & { metric: Metric }) => {
    if (opts.shard === undefined) {
      const assigned = shardFromEnvironment(process.env, opts.shardCount);
      if (assigned) {
        opts.shard = assigned.shard;
        process.stderr.write(`hydra: shard ${assigned.shard} (from ${assigned.from})\n`);
      }
    }
    parseShard(opts.shard); // a bad spec fails before the model loads
    const model = await loadModelFromOptions(opts);
    const summary = await runSweep({
      model,
      modelName: opts.model!,
      dataset: opts.dataset,
      answerColumn: opts.answerColumn,
      ablation: opts.ablation,
      samples: opts.samples,
      seed: opts.seed,
      allowSameAnswer: opts.allowSameAnswer,
      heads: opts.heads,
      storePatches: opts.storePatches,
      metric: opts.metric,
      limit: opts.limit,
      shard: opts.shard,
      out: opts.out,
      filter: opts.filter,
      verbose: opts.verbose,
      log: (line) => process.stderr.write(`hydra: ${line}\n`),
      progress: sweepProgress('sweep'),
    });
    if (opts.json) return printJson(summary);
    const why = Object.entries(summary.dropReasons).map(([r, n]) => `${n} ${r}`).join(', ');
    process.stdout.write(`${summary.out}: ${summary.computed} prompts computed, ${summary.alreadyStored} already stored; ${summary.kept} kept, ${summary.dropped} dropped${why ? ` (${why})` : ''}\n`);
  });

  program
    .command('merge')
    .description('join shard databases of one sweep into one')
    .requiredOption('--out <file>', 'merged database')
    .argument('<shards...>', 'shard databases')
    .option('--json', 'print {"out", "merged": [...]} instead of a line')
    .action(async (shards: string[], opts: { out: string; json?: boolean }) => {
      await waiting(`merging ${shards.length} databases into ${opts.out}`, () => mergeStores(shards, opts.out));
      if (opts.json) printJson({ out: opts.out, merged: shards });
      else process.stdout.write(`merged ${shards.length} databases into ${opts.out}\n`);
    });

  program
    .command('export')
    .description('write every table of a results database as Parquet, for Python or R')
    .requiredOption('--db <file>', 'results database')
    .requiredOption('--out <dir>', 'folder for the .parquet files')
    .option('--json', 'print {"files": [...]} instead of one path a line')
    .action(async (opts: { db: string; out: string; json?: boolean }) => {
      const files = await waiting(`exporting ${opts.db} to Parquet`, () => exportParquet(opts.db, opts.out));
      if (opts.json) printJson({ files });
      else process.stdout.write(files.join('\n') + '\n');
    });
}
