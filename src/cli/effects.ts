import fs from 'node:fs';
import { Command } from 'commander';
import { ablationKind, noisePositionsOf, samplesOf } from '../causal/ablations.js';
import { analyze } from '../causal/analysis.js';
import type { AblationKind, PromptResult } from '../causal/types.js';
import { HydraError } from '../io/errors.js';
import type { HookedModel } from '../models/model.js';
import { EFFECTS } from '../causal/types.js';
import { addAblationOptions, addModelOptions, fmt, loadModelFromOptions, printJson, type ModelOptions } from './util.js';

export interface EffectsCliOptions extends ModelOptions {
  prompts: string;
  ablation: AblationKind;
  samples: number;
  seed: number;
  allowSameAnswer?: boolean;
  sources?: string;
  targets?: string;
  heads?: boolean;
  json?: boolean;
  ownScale?: boolean;
  naive?: boolean;
}

/** `hydra effects`: DE, TE, CE, NE, IE of ablating every layer (or given components), per prompt. */
export function registerEffects(program: Command): void {
  addModelOptions(addAblationOptions(
    program
      .command('effects')
      .description('ablate every attention and MLP layer (or --targets) on each prompt and measure direct, total, compensatory, norm and indirect effects')
      .requiredOption('--prompts <file>', 'JSON list of prompts: [{"ids": [1, 2, 3]} or {"text": "...", "subject": "..."}] (noise goes to the subject\'s tokens when every prompt has one)'))
      .option('--sources <file>', 'JSON list, one entry per prompt, of the prompt indices to resample from (used as given, instead of the seeded choice)')
      .option('--targets <list>', 'comma-separated components to ablate, e.g. attn.3,mlp.5,head.2.1 (default: every attn and mlp layer, and every head with --heads)')
      .option('--heads', 'split attention into heads: report DE and DE\' per head, and ablate every head')
      .option('--own-scale', 'also report DE\' with the ablated run\'s own final-norm scale (field de_prime_own_scale)')
      .option('--naive', 'recompute whole prompts instead of the last-position fast path (slow; for checking)')
      .option('--json', 'print {"prompts": [...]} (schema in the README) instead of tables'),
  ).action(async (opts: EffectsCliOptions) => runEffects(opts));
}

async function runEffects(opts: EffectsCliOptions): Promise<void> {
  const entries = readPromptsFile(opts.prompts);
  const sources = opts.sources ? readSourcesFile(opts.sources) : undefined;
  const kind = ablationKind(opts.ablation);
  if (sources && kind.pool !== 'sources') throw new HydraError('--sources only applies to --ablation resample');
  const model = await loadModelFromOptions(opts);
  const prompts = entries.map((e, i) => promptIds(model, e, `${opts.prompts} entry ${i}`));
  const subjects = entries.map((e) => e.subject);
  const noisePositions = kind.usesSubjects ? noisePositionsOf(model, prompts, subjects, (i) => `${opts.prompts} entry ${i}`) : undefined;
  const results = await analyze(model, prompts, {
    kind: opts.ablation,
    samples: opts.samples,
    seed: opts.seed,
    allowSameAnswer: opts.allowSameAnswer,
    noisePositions,
    sources,
    targets: opts.targets?.split(',').map((s) => s.trim()).filter(Boolean),
    heads: opts.heads,
    ownScale: opts.ownScale,
    path: opts.naive ? 'naive' : 'fast',
  });
  if (opts.json) {
    printJson({
      model: model.source.repo ?? model.source.dir,
      ablation: opts.ablation,
      samples: samplesOf(opts.ablation, opts.samples, sources),
      seed: opts.seed,
      rules: kind.rules({ sourcesGiven: !!sources, allowSameAnswer: opts.allowSameAnswer, subjects: subjects.some((x) => x !== undefined) }),
      prompts: results.map((r) => ({ ...r, text: entries[r.index].text, token_text: model.tokenizer?.tokenText(r.token) })),
    });
  } else {
    for (const r of results) process.stdout.write(effectsTable(model, r, entries[r.index].text) + '\n');
  }
}

interface PromptEntry {
  ids?: number[];
  text?: string;
  /** Noise ablation: the subject, whose tokens get the noise. */
  subject?: string;
}

/** A prompts file: a JSON list of {"ids": [...]} or {"text": "..."}. */
export function readPromptsFile(file: string): PromptEntry[] {
  if (!fs.existsSync(file)) throw new HydraError(`${file}: file not found; --prompts needs a JSON list of {"ids": [...]} or {"text": "..."}`);
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new HydraError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(json)) throw new HydraError(`${file}: expected a JSON list of prompts, got ${typeof json}`);
  if (json.length === 0) throw new HydraError(`${file}: the prompt list is empty; give at least one prompt`);
  return json.map((e: unknown, i) => {
    const o = e as PromptEntry;
    if (typeof o !== 'object' || o === null) throw new HydraError(`${file}: entry ${i} is not an object; use {"ids": [...]} or {"text": "..."}`);
    if (o.subject !== undefined && typeof o.subject !== 'string') throw new HydraError(`${file}: entry ${i}: "subject" must be a string`);
    if (o.ids !== undefined) {
      if (!Array.isArray(o.ids) || !o.ids.every((t) => Number.isInteger(t) && t >= 0)) throw new HydraError(`${file}: entry ${i}: "ids" must be a list of non-negative integer token ids`);
      return { ids: o.ids, text: typeof o.text === 'string' ? o.text : undefined, subject: o.subject };
    }
    if (typeof o.text !== 'string') throw new HydraError(`${file}: entry ${i} has neither "ids" nor "text"`);
    return { text: o.text, subject: o.subject };
  });
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

function promptIds(model: HookedModel, e: PromptEntry, label: string): number[] {
  const ids = e.ids ?? model.encode(e.text!);
  if (ids.length === 0) throw new HydraError(`${label} is empty; give at least one token`);
  return ids;
}

/** A per-layer table: clean DE and, for each layer's ablation, TE and the compensation it triggers. */
export function effectsTable(model: HookedModel, r: PromptResult, text?: string): string {
  const tok = model.tokenizer?.tokenText(r.token);
  const lines = [
    `prompt ${r.index}${text !== undefined ? ` ${JSON.stringify(text)}` : ''}: clean token ${r.token}${tok !== undefined ? ` ${JSON.stringify(tok)}` : ''}, σ = ${fmt(r.sigma)}, π̂ = ${fmt(r.pi_hat)}`,
    `  ${'component'.padEnd(12)}${['DE', ...EFFECTS.map((e) => e.label)].map((h) => h.padStart(10)).join('')}`,
  ];
  for (const [c, a] of Object.entries(r.ablations)) {
    const vals = [r.de[c], ...EFFECTS.map((e) => a[e.key])];
    lines.push(`  ${c.padEnd(12)}${vals.map((v) => fmt(v, 4, 10)).join('')}`);
  }
  return lines.join('\n');
}
