import type { Metric } from '../causal/readout.js';
import { loadDataset, type DatasetOptions, type PromptRecord } from '../io/datasets.js';
import { answerToken } from './filter.js';
import { HydraError } from '../io/errors.js';
import type { HookedModel } from '../models/model.js';

/** A prompt set ready to run: its records and each one's token ids. */
export interface PromptSet {
  name: string;
  records: PromptRecord[];
  ids: number[][];
}

/**
 * Read a prompt set (a bundled name or a .json/.jsonl/.csv file, see loadDataset) and tokenize
 * it for `model`: records given as ids are taken as they are, text is encoded with the model's
 * tokenizer. Every prompt is checked (not empty, within the context, ids in the vocabulary).
 */
export async function readPromptSet(model: HookedModel, spec: string, opts: DatasetOptions = {}): Promise<PromptSet> {
  const ds = await loadDataset(spec, opts);
  const ids = ds.records.map((r, i) => {
    const label = `${ds.name} record ${i}${r.id !== String(i) ? ` (id ${r.id})` : ''}`;
    if (!r.ids && !model.tokenizer) throw new HydraError(`${label} is text, but ${model.source.dir} has no tokenizer.json; give token ids ("ids") instead`);
    const t = r.ids ?? model.encode(r.prompt);
    model.checkPrompt(t, label);
    return t;
  });
  return { name: ds.name, records: ds.records, ids };
}

/**
 * Each record's answer and counterfactual tokens for a metric: the `answer_id` / `counter_id`
 * fields as given, else the first token of the `answer` / `counter` text after the prompt.
 */
export function metricAnswers(model: HookedModel, records: PromptRecord[], metric: Metric, label: (i: number) => string): { answer?: number; counter?: number }[] | undefined {
  if (metric === 'argmax') return undefined;
  const need = metric === 'answer' ? (['answer'] as const) : (['answer', 'counter'] as const);
  return records.map((r, i) => {
    const out: { answer?: number; counter?: number } = {};
    for (const f of need) {
      const id = r[`${f}_id`];
      const text = r[f];
      if (id === undefined && text === undefined) throw new HydraError(`\`metric=${metric}\`: ${label(i)} has no ${f}; give every record "${f}" (text) or "${f}_id" (a token id)`);
      if (id !== undefined && id >= model.spec.vocab) throw new HydraError(`\`metric=${metric}\`: ${label(i)}: ${f}_id ${id} is outside the vocabulary (0..${model.spec.vocab - 1})`);
      if (id === undefined && !model.tokenizer) throw new HydraError(`\`metric=${metric}\`: ${label(i)} gives its ${f} as text, but the model has no tokenizer.json; give "${f}_id" instead`);
      const t = id ?? answerToken(model, r.prompt, text!);
      if (t < 0) throw new HydraError(`\`metric=${metric}\`: ${label(i)}: its ${f} ${JSON.stringify(text)} gives no token; fill it in`);
      out[f] = t;
    }
    return out;
  });
}
