import fs from 'node:fs';
import { Command } from 'commander';
import { ablationKind, noisePositionsOf, samplesOf } from '../causal/ablations.js';
import { analyze } from '../causal/analysis.js';
import type { AblationKind, PromptResult } from '../causal/types.js';
import { readPromptSet } from '../experiments/prompts.js';
import { HydraError } from '../io/errors.js';
import type { HookedModel } from '../models/model.js';
import { parseTarget } from '../models/components.js';
import { EFFECTS } from '../causal/types.js';
import { addExtraOptions, datasetJson, datasetTable, extraAnalyzeOptions, extraTables, promptJson, type ExtrasCliOptions } from './effects-extras.js';
import { createProgress } from './progress.js';
import { addAnswerColumn, addMetricOption, metricAnswers, PROMPTS_HELP } from './prompts.js';
import type { Metric } from '../causal/readout.js';
import { addAblationOptions, addModelOptions, fmt, loadModelFromOptions, printJson, type ModelOptions } from './util.js';

export interface EffectsCliOptions extends ModelOptions, ExtrasCliOptions {
  prompts: string;
  answerColumn?: string;
  ablation: AblationKind;
  samples: number;
  seed: number;
  allowSameAnswer?: boolean;
  sources?: string;
  targets?: string;
  metric: Metric;
  heads?: boolean;
  json?: boolean;
  ownScale?: boolean;
  naive?: boolean;
}

/** `hydra effects`: DE, TE, CE, NE, IE of ablating every layer (or given components), per prompt. */
export function registerEffects(program: Command): void {
  const cmd = addModelOptions(
    addAblationOptions(
      program
        .command('effects')
        .description('ablate every attention and MLP layer (or --targets) on each prompt and measure direct, total, compensatory, norm and indirect effects')
        .requiredOption('--prompts <name|file>', `${PROMPTS_HELP} (noise goes to the subject's tokens when every prompt has a "subject")`),
    )
      .option('--sources <file>', 'JSON list, one entry per prompt, of the prompt indices to resample from (used as given, instead of the seeded choice)')
      .option('--targets <list>', "comma-separated components to ablate, e.g. attn.3,mlp.5,head.2.1; join components by '+' to ablate them together in one run (attn.0+attn.1) (default: every attn and mlp layer, and every head with --heads)")
      .option('--heads', 'split attention into heads: report DE and DE\' per head, and ablate every head')
      .option('--own-scale', 'also report DE\' with the ablated run\'s own final-norm scale (field de_prime_own_scale)')
      .option('--naive', 'recompute whole prompts instead of the last-position fast path (slow; for checking)')
      .option('--json', 'print {"prompts": [...]} (schema in the README) instead of tables'),
  );
  addExtraOptions(addMetricOption(addAnswerColumn(cmd))).action(async (opts: EffectsCliOptions) => runEffects(opts));
}

async function runEffects(opts: EffectsCliOptions): Promise<void> {
  const sources = opts.sources ? readSourcesFile(opts.sources) : undefined;
  const extras = extraAnalyzeOptions(opts);
  const kind = ablationKind(opts.ablation);
  if (sources && kind.pool !== 'sources') throw new HydraError('--sources only applies to --ablation resample');
  const model = await loadModelFromOptions(opts);
  const { records, ids: prompts } = await readPromptSet(model, opts.prompts, { answerColumn: opts.answerColumn });
  const subjects = records.map((r) => r.subject);
  const noisePositions = kind.usesSubjects ? noisePositionsOf(model, prompts, subjects, (i) => `${opts.prompts} record ${i}`) : undefined;
  const answers = metricAnswers(model, records, opts.metric, (i) => `${opts.prompts} record ${i}`);
  const bar = createProgress(prompts.length, 'effects');
  const results = await analyze(model, prompts, {
    kind: opts.ablation,
    samples: opts.samples,
    seed: opts.seed,
    allowSameAnswer: opts.allowSameAnswer,
    noisePositions,
    sources,
    targets: opts.targets?.split(',').map((s) => s.trim()).filter(Boolean),
    heads: opts.heads,
    metric: opts.metric,
    answers,
    ownScale: opts.ownScale,
    path: opts.naive ? 'naive' : 'fast',
    ...extras,
    onBatch: (rs) => bar.tick(rs.length),
  });
  bar.stop();
  const text = (i: number) => records[i].prompt || undefined;
  if (opts.json) {
    printJson({
      model: model.source.repo ?? model.source.dir,
      ablation: opts.ablation,
      samples: samplesOf(opts.ablation, opts.samples, sources),
      seed: opts.seed,
      metric: opts.metric,
      rules: kind.rules({ sourcesGiven: !!sources, allowSameAnswer: opts.allowSameAnswer, subjects: subjects.some((x) => x !== undefined) }),
      prompts: results.map((r) => ({ ...promptJson(model, r, opts), text: text(r.index), token_text: model.tokenizer?.tokenText(r.token) })),
      ...datasetJson(model, results, opts),
    });
  } else {
    for (const r of results) process.stdout.write([effectsTable(model, r, text(r.index)), extraTables(model, r, opts)].filter(Boolean).join('\n') + '\n');
    const summary = datasetTable(model, results, opts);
    if (summary) process.stdout.write(summary + '\n');
  }
}

function readSourcesFile(file: string): number[][] {
  if (!fs.existsSync(file)) throw new HydraError(`${file}: file not found; --sources needs a JSON list with one list of prompt indices per prompt`);
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new HydraError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(json) || !json.every((l) => Array.isArray(l) && l.every((j) => Number.isInteger(j)))) {
    throw new HydraError(`${file}: malformed sources; expected a JSON list with one list of integer prompt indices per prompt, e.g. [[1, 2], [0, 2], [0, 1]]`);
  }
  return json as number[][];
}

/** A per-layer table: clean DE and, for each layer's ablation, TE and the compensation it triggers. */
export function effectsTable(model: HookedModel, r: PromptResult, text?: string): string {
  const tok = (t: number) => model.tokenizer?.tokenText(t);
  const quoted = (t: number) => (tok(t) !== undefined ? ` ${JSON.stringify(tok(t))}` : '');
  const measured = r.readout
    ? `${r.readout.metric} ${r.readout.answer}${quoted(r.readout.answer)}${r.readout.counter !== null ? ` − ${r.readout.counter}${quoted(r.readout.counter)}` : ''} = ${fmt(r.pi_hat)}`
    : `π̂ = ${fmt(r.pi_hat)}`;
  const width = Math.max(12, ...Object.keys(r.ablations).map((c) => c.length + 2));
  const lines = [
    `prompt ${r.index}${text !== undefined ? ` ${JSON.stringify(text)}` : ''}: clean token ${r.token}${quoted(r.token)}, σ = ${fmt(r.sigma)}, ${measured}`,
    `  ${'component'.padEnd(width)}${['DE', ...EFFECTS.map((e) => e.label)].map((h) => h.padStart(10)).join('')}`,
  ];
  for (const [c, a] of Object.entries(r.ablations)) {
    // A joint target's DE: the sum of its members' (what ΔDE self compares against).
    const de = parseTarget(c).members.reduce((sum, m) => sum + r.de[m.name], 0);
    const vals = [de, ...EFFECTS.map((e) => a[e.key])];
    lines.push(`  ${c.padEnd(width)}${vals.map((v) => fmt(v, 4, 10)).join('')}`);
  }
  return lines.join('\n');
}
