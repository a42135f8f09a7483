import { Option, type Command } from 'commander';
import { METRICS } from '../causal/readout.js';
import { readPromptSet } from '../experiments/prompts.js';
export { metricAnswers } from '../experiments/prompts.js';
import { BUNDLED_DATASETS } from '../io/datasets.js';
import { HydraError } from '../io/errors.js';
import type { HookedModel } from '../models/model.js';
import { nonNegativeInt } from './util.js';

/** What every prompt-taking command reads (README, "Prompts"). */
export const PROMPTS_HELP = `a bundled dataset (${Object.keys(BUNDLED_DATASETS).join(', ')}) or a .json/.jsonl/.csv file of {prompt|text|ids, answer?, counter?, answer_id?, counter_id?, subject?, group?}`;

export interface PromptOptions {
  prompts?: string;
  answerColumn?: string;
}

/** --answer-column, for every command that reads a prompt file. */
export function addAnswerColumn(cmd: Command): Command {
  return cmd.option('--answer-column <name>', 'the column (field) holding the expected answer, when it is not "answer"');
}

/** Options to take one prompt from a prompt set: --prompts and --index. */
export function addPromptPick(cmd: Command): Command {
  return addAnswerColumn(
    cmd
      .option('--prompts <name|file>', `take the prompt from ${PROMPTS_HELP}`)
      .option('--index <i>', 'with --prompts, which record (0-based)', nonNegativeInt('--index'), 0),
  );
}

/** One record of --prompts, by --index. */
export async function pickPrompt(model: HookedModel, opts: PromptOptions & { index: number }): Promise<{ ids: number[]; text: string; label: string }> {
  const { records, ids } = await readPromptSet(model, opts.prompts!, { answerColumn: opts.answerColumn });
  if (opts.index >= records.length) throw new HydraError(`--index ${opts.index} is past the end of ${opts.prompts} (${records.length} records, 0..${records.length - 1})`);
  const r = records[opts.index];
  return { ids: ids[opts.index], text: r.prompt, label: `${opts.prompts} record ${opts.index}` };
}

/** --metric, for every command that measures effects. */
export function addMetricOption(cmd: Command): Command {
  return cmd.addOption(
    new Option('--metric <name>', "the measured quantity: argmax (the clean top token, the paper's), answer (each prompt's answer token: answer or answer_id), logit-diff (answer minus counterfactual: counter or counter_id)")
      .choices([...METRICS])
      .default('argmax'),
  );
}
