import { Command, Option } from 'commander';
import { ablationKind, noisePositionsOf } from '../causal/ablations.js';
import type { Metric } from '../causal/readout.js';
import type { AblationKind } from '../causal/types.js';
import { iterateAblation, ITERATE_LEVELS, MAX_STEPS, type IterateLevel, type IterateResult } from '../experiments/iterate.js';
import { readPromptSet } from '../experiments/prompts.js';
import { createProgress } from './progress.js';
import { addAnswerColumn, addMetricOption, metricAnswers, PROMPTS_HELP } from './prompts.js';
import { addAblationOptions, addModelOptions, fmt, loadModelFromOptions, nonNegativeInt, printJson, type ModelOptions } from './util.js';

export interface IterateCliOptions extends ModelOptions {
  prompts: string;
  answerColumn?: string;
  ablate: string;
  steps: number;
  level: IterateLevel;
  ablation: AblationKind;
  samples: number;
  seed: number;
  allowSameAnswer?: boolean;
  metric: Metric;
  json?: boolean;
}

/** `hydra iterate`: ablate k, then k and its strongest responder jointly, and so on (paper Q7). */
export function registerIterate(program: Command): void {
  const cmd = addModelOptions(
    addAblationOptions(
      program
        .command('iterate')
        .description('iterated ablation: ablate a component, find the downstream responder with the largest mean positive ΔDE, ablate both jointly, repeat; reports TE, CE (attention/MLP), NE and the repair that remains at each step')
        .requiredOption('--prompts <name|file>', PROMPTS_HELP)
        .requiredOption('--ablate <component>', "the component ablated at step 0 (e.g. attn.3; a '+'-joined set also works)")
        .requiredOption('--steps <K>', `responders to add at most (steps 0..K run; up to ${MAX_STEPS})`, nonNegativeInt('--steps', MAX_STEPS))
        .addOption(new Option('--level <level>', 'responders are attention layers and MLPs (layers) or heads and MLPs (heads)').choices([...ITERATE_LEVELS]).default('layers')),
    ).option('--json', 'print {"steps": [...], "stopped": ...} instead of a table'),
  );
  addMetricOption(addAnswerColumn(cmd)).action(async (opts: IterateCliOptions) => runIterate(opts));
}

async function runIterate(opts: IterateCliOptions): Promise<void> {
  const kind = ablationKind(opts.ablation);
  const model = await loadModelFromOptions(opts);
  const { records, ids: prompts } = await readPromptSet(model, opts.prompts, { answerColumn: opts.answerColumn });
  const noisePositions = kind.usesSubjects ? noisePositionsOf(model, prompts, records.map((r) => r.subject), (i) => `${opts.prompts} record ${i}`) : undefined;
  const bar = createProgress(opts.steps + 1, 'iterate', { unit: 'steps' });
  const res = await iterateAblation(model, prompts, {
    ablate: opts.ablate,
    steps: opts.steps,
    level: opts.level,
    kind: opts.ablation,
    samples: opts.samples,
    seed: opts.seed,
    allowSameAnswer: opts.allowSameAnswer,
    noisePositions,
    metric: opts.metric,
    answers: metricAnswers(model, records, opts.metric, (i) => `${opts.prompts} record ${i}`),
    onStep: () => bar.tick(1),
  });
  bar.stop();
  if (opts.json) {
    printJson({
      model: model.source.repo ?? model.source.dir,
      ablation: opts.ablation,
      metric: opts.metric,
      level: opts.level,
      prompts: prompts.length,
      steps: res.steps.map(({ candidates, ...s }) => ({ ...s, candidates: candidates.slice(0, 10) })),
      stopped: res.stopped,
    });
  } else process.stdout.write(iterateTable(res, prompts.length) + '\n');
}

/** One line per step: the set, its mean effects, and the responder added next. */
export function iterateTable(res: IterateResult, n: number): string {
  const width = Math.max(12, ...res.steps.map((s) => s.target.length + 2));
  const head = ['TE', 'CE', 'CE attn', 'CE mlp', 'NE'].map((h) => h.padStart(10)).join('');
  const lines = [`means over ${n} prompts`, `step  ${'ablated set'.padEnd(width)}${head}  responder (mean ΔDE)`];
  for (const s of res.steps) {
    const e = s.effects;
    const vals = [e.te, e.ce, e.ce_attn, e.ce_mlp, e.ne].map((v) => fmt(v, 4, 10)).join('');
    lines.push(`${String(s.step).padEnd(6)}${s.target.padEnd(width)}${vals}  ${s.responder ? `${s.responder} (${fmt(s.responder_dde!)})` : 'none'}`);
  }
  lines.push(res.stopped ? `stopped: ${res.stopped}` : `ran all ${res.steps.length - 1} steps; the remaining repair (CE) is ${fmt(res.steps[res.steps.length - 1].remaining_repair)}`);
  return lines.join('\n');
}
