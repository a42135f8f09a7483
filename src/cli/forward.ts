import { Command } from 'commander';
import { checkActivations } from '../causal/finite.js';
import { centredLogit, directEffect, Readout, softmax, topTokens } from '../causal/readout.js';
import { HydraError } from '../io/errors.js';
import { attnName, mlpName } from '../models/components.js';
import type { HookedModel, PromptActivations } from '../models/model.js';
import { SUPPORTED_MODEL_TYPES } from '../models/registry.js';
import { addPromptPick, pickPrompt, type PromptOptions } from './prompts.js';
import { addModelOptions, fmt, loadModelFromOptions, parseIds, printJson, rows, type ModelOptions } from './util.js';

export interface ForwardCliOptions extends ModelOptions, PromptOptions {
  text?: string;
  ids?: string;
  index: number;
  json?: boolean;
  heads?: boolean;
  allPositions?: boolean;
}

/** `hydra forward`: one clean forward pass, its components and their direct effects. JSON schema: docs/forward-schema.md. */
export function registerForward(program: Command): void {
  const cmd = addModelOptions(
    program
      .command('forward')
      .description('run one prompt through the model: next-token prediction, every component at the last position, and their direct effects')
      .option('--text <text>', 'prompt text (tokenized with the model\'s tokenizer, which may add BOS)')
      .option('--ids <ids>', 'prompt as comma-separated token ids, e.g. 1,403,407')
      .option('--json', 'print one JSON object (schema: docs/forward-schema.md) instead of a summary')
      .option('--heads', 'also split attention into heads (head.L.H) and output bias (attn_bias.L)')
      .option('--all-positions', 'with --json, also give every component at every position ("positions")')
      .addHelpText('after', `\nSupported model families (config.json model_type): ${SUPPORTED_MODEL_TYPES.join(', ')}.`),
  );
  addPromptPick(cmd).action(async (opts: ForwardCliOptions) => runForward(opts));
}

/** The prompt ids from exactly one of --text, --ids and --prompts (with --index). */
export async function promptFromOptions(model: HookedModel, opts: ForwardCliOptions): Promise<{ ids: number[]; label: string }> {
  checkOnePrompt(opts);
  if (opts.prompts !== undefined) return pickPrompt(model, opts);
  if (opts.ids !== undefined) {
    const ids = parseIds(opts.ids, '--ids');
    if (ids.length === 0) throw new HydraError('--ids is empty; give at least one token id, e.g. --ids 1,2,3');
    return { ids, label: '--ids prompt' };
  }
  const ids = model.encode(opts.text!);
  if (ids.length === 0) throw new HydraError(`--text ${JSON.stringify(opts.text)} gives no tokens with the tokenizer of ${model.source.dir}; the prompt is empty, give some text`);
  return { ids, label: '--text prompt' };
}

function checkOnePrompt(opts: ForwardCliOptions): void {
  const given = [opts.text !== undefined && '--text', opts.ids !== undefined && '--ids', opts.prompts !== undefined && '--prompts'].filter(Boolean);
  if (given.length > 1) throw new HydraError(`give exactly one of --text, --ids and --prompts, not ${given.join(' and ')}`);
  if (given.length === 0) throw new HydraError('give the prompt with --text "...", --ids 1,2,3 or --prompts FILE --index I');
}

async function runForward(opts: ForwardCliOptions): Promise<void> {
  checkOnePrompt(opts);
  // Parse --ids before loading the model so a typo fails fast.
  if (opts.ids !== undefined) parseIds(opts.ids, '--ids');
  const model = await loadModelFromOptions(opts);
  const { ids, label } = await promptFromOptions(model, opts);
  model.checkPrompt(ids, label);
  const { prompts } = await model.forward([ids], { heads: opts.heads, allPositions: opts.allPositions && opts.json });
  const clean = prompts[0];
  checkActivations(clean, label);
  const de = await directEffect(new Readout(model), clean);
  const piHat = centredLogit(clean.logits, clean.token);
  if (opts.json) printJson(forwardJson(model, clean, de, piHat));
  else process.stdout.write(forwardSummary(model, clean, de, piHat));
}

/** The `hydra forward --json` object; keep docs/forward-schema.md in step with it. */
export function forwardJson(model: HookedModel, clean: PromptActivations, de: Record<string, number>, piHat: number): Record<string, unknown> {
  const tok = model.tokenizer;
  const d = model.spec.dModel;
  const out: Record<string, unknown> = {
    model: model.source.repo ? (model.source.revision && model.source.revision !== 'main' ? `${model.source.repo}@${model.source.revision}` : model.source.repo) : model.source.dir,
    commit: model.source.commit,
    tokens: clean.ids,
    token_texts: tok ? clean.ids.map((t) => tok.tokenText(t)) : null,
    token: clean.token,
    token_text: tok ? tok.tokenText(clean.token) : null,
    pi_hat: piHat,
    sigma: clean.sigma,
    logits: clean.logits,
    components: Object.fromEntries(clean.components),
    de,
  };
  if (clean.positions) out.positions = Object.fromEntries([...clean.positions].map(([name, flat]) => [name, rows(flat, d)]));
  return out;
}

/** The human-readable summary: prompt, top-5 next tokens, and each layer's direct effect on the top token. */
export function forwardSummary(model: HookedModel, clean: PromptActivations, de: Record<string, number>, piHat: number): string {
  const tok = model.tokenizer;
  const show = (id: number) => (tok ? JSON.stringify(tok.tokenText(id)) : `#${id}`);
  const lines: string[] = [];
  const src = model.source.repo ?? model.source.dir;
  lines.push(`model: ${src} (${model.spec.nLayers} layers, d_model ${model.spec.dModel}, vocab ${model.spec.vocab})`);
  lines.push(`prompt (${clean.ids.length} tokens): ${tok ? clean.ids.map(show).join(' ') : clean.ids.join(',')}`);
  if (tok) lines.push(`ids: ${clean.ids.join(',')}`);

  const p = softmax(clean.logits);
  const top = topTokens(p, 5);
  lines.push('', 'top next tokens:');
  const texts = top.map(show);
  const w = Math.max(...texts.map((t) => t.length));
  top.forEach((id, r) => lines.push(`  ${r + 1}. ${texts[r].padEnd(w)}  id ${String(id).padStart(6)}  p ${fmt(p[id], 4)}  logit ${fmt(clean.logits[id], 3)}`));

  lines.push('', `direct effect on the top token ${show(clean.token)} (id ${clean.token}): centred logit pi_hat ${fmt(piHat, 4)}, sigma ${fmt(clean.sigma, 4)}`);
  lines.push(`  ${'layer'.padEnd(6)} ${'DE attn'.padStart(10)} ${'DE mlp'.padStart(10)}`);
  lines.push(`  ${'embed'.padEnd(6)} ${fmt(de.embed ?? NaN, 4, 10)} ${''.padStart(10)}`);
  let sum = de.embed ?? 0;
  for (let l = 0; l < model.spec.nLayers; l++) {
    const a = de[attnName(l)] ?? NaN;
    const m = de[mlpName(l)] ?? NaN;
    sum += a + m;
    lines.push(`  ${String(l).padEnd(6)} ${fmt(a, 4, 10)} ${fmt(m, 4, 10)}`);
  }
  lines.push(`  sum of DEs ${fmt(sum, 4)} (= pi_hat ${fmt(piHat, 4)} minus the constant from biases)`);
  return lines.join('\n') + '\n';
}
