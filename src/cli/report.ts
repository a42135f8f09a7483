import { Command } from 'commander';
import { ablationKind } from '../causal/ablations.js';
import type { AblationKind, PromptResult } from '../causal/types.js';
import { profilePrompt, sourcePool } from '../experiments/profile.js';
import { reportFromDatabase } from '../report/database.js';
import { MAX_BOOTSTRAP } from '../experiments/stats.js';
import { HydraError } from '../io/errors.js';
import { makeDir } from '../io/paths.js';
import { attnName, mlpName, parseComponent } from '../models/components.js';
import { profileFigure } from '../report/figures.js';
import { writeFigure } from '../report/render.js';
import { waiting } from './progress.js';
import { addPromptPick, pickPrompt, type PromptOptions } from './prompts.js';
import { addAblationOptions, addModelOptions, fmt, loadModelFromOptions, nonNegativeInt, positiveInt, printJson, type ModelOptions } from './util.js';

/** `hydra report` (dataset figures and HTML from a sweep) and `hydra profile` (Figure 1 for one prompt). */
export function registerReport(program: Command): void {
  program
    .command('report')
    .description('findings, statistics, the paper\'s Figures 1, 2, 3, 7 and 8, and an HTML report from a sweep database')
    .requiredOption('--db <file>', 'results database written by hydra sweep')
    .option('--out <dir>', 'report folder', 'hydra-report')
    .option('--bootstrap <B>', 'bootstrap resamples for the intervals (groups of prompts when the dataset has them)', positiveInt('--bootstrap', MAX_BOOTSTRAP), 1000)
    .option('--seed <N>', 'seed of the bootstrap resampling', nonNegativeInt('--seed'), 0)
    .option('--figure1 <component>', 'the layer Figure 1 ablates, e.g. attn.18 (default: the attention layer with at least two attention layers downstream and the largest mean CE_attn)')
    .option('--json', 'print {"report": index.html path} instead of a line')
    .action(async (opts: { db: string; out: string; bootstrap: number; seed: number; figure1?: string; json?: boolean }) => {
      const index = await waiting(`writing the report of ${opts.db}`, () =>
        reportFromDatabase(opts.db, opts.out, { bootstrap: opts.bootstrap, seed: opts.seed, figure1: opts.figure1 }));
      if (opts.json) printJson({ report: index });
      else process.stdout.write(`report: ${index}\n`);
    });

  const profile = addModelOptions(
    addAblationOptions(
      program
        .command('profile')
        .description('Figure 1 for one prompt: clean DE per layer, and DE\' per patch and averaged after ablating one component')
        .option('--text <text>', 'the prompt (or --prompts FILE --index I)')
        .requiredOption('--ablate <component>', 'component to ablate, e.g. attn.3, mlp.2, head.1.0'),
    )
      .option('--sources <dataset>', 'prompts that resample and mean patches come from (default: the bundled story prompts for the bundled model, else known_1000)')
      .option('--out <dir>', 'folder for profile.svg and profile.png', 'hydra-profile')
      .option('--json', 'print the prompt\'s `hydra effects --json` entry and the figure paths instead of a table'),
  );
  addPromptPick(profile).action(async (opts: ProfileOptions) => runProfile(opts));
}

interface ProfileOptions extends ModelOptions, PromptOptions {
  text?: string;
  index: number;
  json?: boolean;
  ablate: string;
  ablation: AblationKind;
  samples: number;
  seed: number;
  allowSameAnswer?: boolean;
  sources?: string;
  out: string;
}

async function runProfile(opts: ProfileOptions): Promise<void> {
  if ((opts.text === undefined) === (opts.prompts === undefined)) throw new HydraError('give the prompt with exactly one of --text "..." and --prompts FILE --index I');
  const model = await loadModelFromOptions(opts);
  const target = parseComponent(opts.ablate, model.spec).name;
  const { ids, text } = opts.prompts !== undefined ? await pickPrompt(model, opts) : { ids: model.encode(opts.text!), text: opts.text! };
  if (ids.length === 0) throw new HydraError('--text gives no tokens; the prompt is empty');
  model.checkPrompt(ids, '--text prompt');
  const pool = ablationKind(opts.ablation).pool ? await sourcePool(model, opts.sources) : [];
  const result = await waiting(`ablating ${target}`, () => profilePrompt(model, ids, {
    kind: opts.ablation,
    samples: opts.samples,
    seed: opts.seed,
    allowSameAnswer: opts.allowSameAnswer,
    targets: [target],
    heads: ['head', 'attn_bias'].includes(parseComponent(target).kind),
    pool,
  }));
  const tokenText = model.tokenizer?.tokenText(result.token);
  makeDir(opts.out, 'choose a writable --out');
  const spec = profileFigure({ ...result, text }, target, { promptText: text, tokenText, kind: opts.ablation });
  const f = await writeFigure(spec, opts.out, 'profile');
  if (opts.json) {
    printJson({ model: model.source.repo ?? model.source.dir, ablated: target, ablation: opts.ablation, samples: result.ablations[target].patches.length, seed: opts.seed, prompt: { ...result, text, token_text: tokenText }, figure: f });
    return;
  }
  process.stdout.write(profileTable(model.tokenizer?.tokenText(result.token) ?? String(result.token), result, target, model.spec.nLayers));
  process.stdout.write(`figure: ${f.svg}\n        ${f.png}\n`);
}

function profileTable(tokenText: string, r: PromptResult, target: string, L: number): string {
  const a = r.ablations[target];
  const lines = [
    `clean token ${JSON.stringify(tokenText)}; ablating ${target} (${a.patches.length} patch${a.patches.length > 1 ? 'es' : ''}): TE ${fmt(a.te)}, ΔDE self ${fmt(a.dde_self)}, CE ${fmt(a.ce)} (attn ${fmt(a.ce_attn)}, mlp ${fmt(a.ce_mlp)}), NE ${fmt(a.ne)}`,
    `${'layer'.padEnd(6)}${['DE attn', "DE' attn", 'DE mlp', "DE' mlp"].map((h) => h.padStart(10)).join('')}`,
  ];
  for (let l = 0; l < L; l++) {
    const vals = [r.de[attnName(l)], a.de_prime[attnName(l)], r.de[mlpName(l)], a.de_prime[mlpName(l)]];
    lines.push(`${String(l).padEnd(6)}${vals.map((v) => fmt(v, 4, 10)).join('')}`);
  }
  return lines.join('\n') + '\n';
}
