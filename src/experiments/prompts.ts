import { loadDataset, type DatasetOptions, type PromptRecord } from '../io/datasets.js';
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
