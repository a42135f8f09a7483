import path from 'node:path';
import type { PromptResult } from '../causal/types.js';
import { HydraError } from '../io/errors.js';
import { writeReport } from '../report/html.js';
import { datasetStatistics } from './stats.js';
import { ResultsStore } from './store.js';

/** Above this many prompts the report reads patch-averaged results only (per-patch lines are left out of Figures 1 and 3). */
const MAX_PROMPTS_WITH_PATCHES = 300;

/** Read a sweep's database and write the statistics, Figures 1, 2, 3, 7, 8 and index.html into outDir. */
export async function reportFromDatabase(db: string, outDir: string, opts: { bootstrap?: number; seed?: number } = {}): Promise<string> {
  const store = await ResultsStore.openReadOnly(db);
  let prompts: PromptResult[];
  let extras: Awaited<ReturnType<ResultsStore['readPromptExtras']>>;
  try {
    const n = (await store.donePrompts()).size;
    prompts = await store.readResults({ patches: n <= MAX_PROMPTS_WITH_PATCHES });
    extras = await store.readPromptExtras();
  } finally {
    await store.close();
  }
  if (prompts.length === 0) throw new HydraError(`${db} holds no finished prompts; run hydra sweep (again) to compute them`);
  const stats = datasetStatistics(prompts, opts);
  const c = store.config;
  return writeReport(path.resolve(outDir), {
    model: c.model,
    dataset: c.dataset,
    kind: c.ablation,
    config: { model: c.model, revision: c.model_revision ?? null, dataset: c.dataset, kind: c.ablation, samples: c.samples, seed: c.seed, heads: c.heads, prompts: prompts.length },
    prompts,
    stats,
    promptTexts: prompts.map((p) => p.text ?? ''),
    tokenTexts: prompts.map((p) => extras.get(p.index)?.token_text ?? String(p.token)),
  });
}
