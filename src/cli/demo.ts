import path from 'node:path';
import { Command } from 'commander';
import { MAX_SAMPLES } from '../causal/ablations.js';
import { reportFromDatabase } from '../report/database.js';
import { runSweep } from '../experiments/sweep.js';
import { defaultModelDir, storiesRecallPath } from '../io/paths.js';
import { sweepProgress, waiting } from './progress.js';
import { loadModelFromOptions, MAX_THREADS, positiveInt, printJson } from './util.js';

/** `hydra demo`: the whole Hydra analysis on the bundled model and prompt set, ending in a report. */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the Hydra analysis on the bundled stories260k model and story prompts, and write the report')
    .option('--out <dir>', 'output folder', 'hydra-demo')
    .option('--samples <S>', 'resample patches per prompt', positiveInt('--samples', MAX_SAMPLES), 15)
    .option('--threads <n>', 'CPU threads per operator', positiveInt('--threads', MAX_THREADS))
    .option('--json', 'print {"results", "report", "kept", "dropped", ...} instead of two lines')
    .action(async (opts: { out: string; samples: number; threads?: number; json?: boolean }) => {
      const model = await loadModelFromOptions({ model: defaultModelDir, threads: opts.threads });
      const db = path.join(opts.out, 'results.duckdb');
      const summary = await runSweep({
        model,
        modelName: 'stories260k (bundled)',
        dataset: storiesRecallPath,
        ablation: 'resample',
        samples: opts.samples,
        seed: 0,
        out: db,
        log: (line) => process.stderr.write(`hydra: ${line}\n`),
        progress: sweepProgress('demo sweep'),
      });
      const index = await waiting('writing the report', () => reportFromDatabase(db, path.join(opts.out, 'report')));
      if (opts.json) printJson({ results: db, report: index, kept: summary.kept, dropped: summary.dropped, drop_reasons: summary.dropReasons });
      else process.stdout.write(`results: ${db}\nreport:  ${index}\n`);
    });
}
