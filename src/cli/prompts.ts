import { Option, type Command } from 'commander';
import { METRICS, type Metric } from '../causal/readout.js';
import { answerToken } from '../experiments/filter.js';
import { readPromptSet } from '../experiments/prompts.js';
import { BUNDLED_DATASETS, type PromptRecord } from '../io/datasets.js';
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

/**
 * Each record's answer and counterfactual tokens for a metric: the `answer_id` / `counter_id`
 * fields as given, else the first token of the `answer` / `counter` text after the prompt.
 */
export function metricAnswers(model: HookedModel, records: PromptRecord[], metric: Metric, label: string): { answer?: number; counter?: number }[] | undefined {
  if (metric === 'argmax') return undefined;
  const need = metric === 'answer' ? (['answer'] as const) : (['answer', 'counter'] as const);
  return records.map((r, i) => {
    const out: { answer?: number; counter?: number } = {};
    for (const f of need) {
      const id = r[`${f}_id`];
      const text = r[f];
      if (id === undefined && text === undefined) throw new HydraError(`--metric ${metric}: ${label} record ${i} has no ${f}; give every record "${f}" (text) or "${f}_id" (a token id)`);
      if (id !== undefined && id >= model.spec.vocab) throw new HydraError(`--metric ${metric}: ${label} record ${i}: ${f}_id ${id} is outside the vocabulary (0..${model.spec.vocab - 1})`);
      if (id === undefined && !model.tokenizer) throw new HydraError(`--metric ${metric}: ${label} record ${i} gives its ${f} as text, but the model has no tokenizer.json; give "${f}_id" instead`);
      const t = id ?? answerToken(model, r.prompt, text!);
      if (t < 0) throw new HydraError(`--metric ${metric}: ${label} record ${i}: its ${f} ${JSON.stringify(text)} gives no token; fill it in`);
      out[f] = t;
    }
    return out;
  });
}
