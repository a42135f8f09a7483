import fs from 'node:fs';
import { Command, Option } from 'commander';
import { analyze, DEFAULT_SAMPLES, MAX_SAMPLES } from '../causal/analysis.js';
import { MAX_SEED } from '../causal/random.js';
import type { AblationKind, PromptResult } from '../causal/types.js';
import { HydraError } from '../io/errors.js';
import type { HookedModel } from '../models/model.js';
import { addModelOptions, fmt, loadModelFromOptions, nonNegativeInt, positiveInt, printJson, type ModelOptions } from './util.js';

export interface EffectsCliOptions extends ModelOptions {
  prompts: string;
  ablation: AblationKind;
  samples: number;
  seed: number;
  sources?: string;
  targets?: string;
  heads?: boolean;
  json?: boolean;
  ownScale?: boolean;
  naive?: boolean;
}

/** `hydra effects`: DE, TE, CE, NE, IE of ablating every layer (or given components), per prompt. */
export function registerEffects(program: Command): void {
  addModelOptions(
    program
      .command('effects')
      .description('ablate every attention and MLP layer (or --targets) on each prompt and measure direct, total, compensatory, norm and indirect effects')
      .requiredOption('--prompts <file>', 'JSON list of prompts: [{"ids": [1, 2, 3]} or {"text": "..."}]')
      .addOption(new Option('--ablation <kind>', 'patch kind').choices(['zero', 'mean', 'noise', 'resample']).default('resample'))
      .option('--samples <S>', 'patches per prompt for resample and noise ablation', positiveInt('--samples', MAX_SAMPLES), DEFAULT_SAMPLES)
      .option('--seed <N>', 'seed for the choice of resample sources and for noise', nonNegativeInt('--seed', MAX_SEED), 0)
      .option('--sources <file>', 'JSON list, one entry per prompt, of the prompt indices to resample from (overrides the seeded choice)')
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
  if (sources && opts.ablation !== 'resample') throw new HydraError('--sources only applies to --ablation resample');
  const model = await loadModelFromOptions(opts);
  const prompts = entries.map((e, i) => promptIds(model, e, `${opts.prompts} entry ${i}`));
  const results = await analyze(model, prompts, {
    kind: opts.ablation,
    samples: opts.samples,
    seed: opts.seed,
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
      samples: opts.ablation === 'resample' || opts.ablation === 'noise' ? (sources?.[0].length ?? opts.samples) : 1,
      seed: opts.seed,
      prompts: results.map((r) => ({ ...r, text: entries[r.index].text, token_text: model.tokenizer?.tokenText(r.token) })),
    });
  } else {
    for (const r of results) process.stdout.write(effectsTable(model, r, entries[r.index].text) + '\n');
  }
}

interface PromptEntry {
  ids?: number[];
  text?: string;
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
    if (o.ids !== undefined) {
      if (!Array.isArray(o.ids) || !o.ids.every((t) => Number.isInteger(t) && t >= 0)) throw new HydraError(`${file}: entry ${i}: "ids" must be a list of non-negative integer token ids`);
      return { ids: o.ids, text: typeof o.text === 'string' ? o.text : undefined };
    }
    if (typeof o.text !== 'string') throw new HydraError(`${file}: entry ${i} has neither "ids" nor "text"`);
    return { text: o.text };
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
    `  ${'component'.padEnd(12)}${['DE', 'TE', 'ΔDE self', 'CE', 'CE attn', 'CE mlp', 'NE', 'IE'].map((h) => h.padStart(10)).join('')}`,
  ];
  for (const [c, a] of Object.entries(r.ablations)) {
    const vals = [r.de[c], a.te, a.dde_self, a.ce, a.ce_attn, a.ce_mlp, a.ne, a.ie];
    lines.push(`  ${c.padEnd(12)}${vals.map((v) => fmt(v, 4, 10)).join('')}`);
  }
  return lines.join('\n');
}
