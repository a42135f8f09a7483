import { Command, Option } from 'commander';
import { DEFAULT_SAMPLES, MAX_SAMPLES } from '../causal/analysis.js';
import { MAX_SEED } from '../causal/random.js';
import type { AblationKind } from '../causal/types.js';
import { exportParquet, mergeStores } from '../experiments/store.js';
import { parseShard, runSweep } from '../experiments/sweep.js';
import { sweepProgress } from './progress.js';
import { addModelOptions, loadModelFromOptions, nonNegativeInt, positiveInt, type ModelOptions } from './util.js';

export interface SweepCliOptions extends ModelOptions {
  dataset: string;
  ablation: AblationKind;
  samples: number;
  seed: number;
  out: string;
  heads?: boolean;
  limit?: number;
  shard?: string;
  filter: boolean;
  verbose?: boolean;
}

/** `hydra sweep`, `hydra merge` and `hydra export`: the dataset-wide experiment and its database. */
export function registerSweep(program: Command): void {
  addModelOptions(
    program
      .command('sweep')
      .description('ablate every attention and MLP layer (and head with --heads) on every kept prompt of a dataset; results go to DuckDB, and a rerun resumes')
      .option('--dataset <name|file>', 'known_1000 (bundled), a counterfact.json, or a .jsonl/.csv/.json file of {prompt, answer}', 'known_1000')
      .addOption(new Option('--ablation <kind>', 'patch kind').choices(['zero', 'mean', 'noise', 'resample']).default('resample'))
      .option('--samples <S>', 'patches per prompt for resample and noise', positiveInt('--samples', MAX_SAMPLES), DEFAULT_SAMPLES)
      .option('--seed <N>', 'seed for resample sources and noise', nonNegativeInt('--seed', MAX_SEED), 0)
      .option('--out <file>', 'results database', 'results.duckdb')
      .option('--heads', 'also ablate every attention head')
      .option('--limit <N>', 'only the first N prompts of the dataset', positiveInt('--limit'))
      .option('--shard <i/n>', 'compute batches i, i+n, ... of the kept prompts only (merge the shards with hydra merge)')
      .option('--no-filter', 'keep every prompt, not only those the model answers correctly')
      .option('--verbose', 'log each prompt as it is stored'),
  ).action(async (opts: SweepCliOptions) => {
    parseShard(opts.shard); // a bad spec fails before the model loads
    const model = await loadModelFromOptions(opts);
    const summary = await runSweep({
      model,
      modelName: opts.model!,
      dataset: opts.dataset,
      ablation: opts.ablation,
      samples: opts.samples,
      seed: opts.seed,
      heads: opts.heads,
      limit: opts.limit,
      shard: opts.shard,
      out: opts.out,
      filter: opts.filter,
      verbose: opts.verbose,
      log: (line) => process.stderr.write(`hydra: ${line}\n`),
      progress: sweepProgress('sweep'),
    });
    process.stdout.write(`${summary.out}: ${summary.computed} prompts computed, ${summary.alreadyStored} already stored; ${summary.kept} kept, ${summary.dropped} dropped\n`);
  });

  program
    .command('merge')
    .description('join shard databases of one sweep into one')
    .requiredOption('--out <file>', 'merged database')
    .argument('<shards...>', 'shard databases')
    .action(async (shards: string[], opts: { out: string }) => {
      await mergeStores(shards, opts.out);
      process.stdout.write(`merged ${shards.length} databases into ${opts.out}\n`);
    });

  program
    .command('export')
    .description('write every table of a results database as Parquet, for Python or R')
    .requiredOption('--db <file>', 'results database')
    .requiredOption('--out <dir>', 'folder for the .parquet files')
    .action(async (opts: { db: string; out: string }) => {
      const files = await exportParquet(opts.db, opts.out);
      process.stdout.write(files.join('\n') + '\n');
    });
}
