import type { Command } from 'commander';
import type { ExtraOptions } from '../causal/extras.js';
import { DEFAULT_TOP_NEURONS } from '../causal/neurons.js';
import { promptRepairSources, responders, type RepairSources } from '../causal/sources.js';
import { DISTRIBUTION, type NeuronChange, type PromptResult } from '../causal/types.js';
import { datasetRepairSources, type MeanInterval } from '../experiments/sources.js';
import { HydraError } from '../io/errors.js';
import type { HookedModel } from '../models/model.js';
import { fmt, positiveInt } from './util.js';

/**
 * `hydra effects`' optional measurements, kept apart from the command's core: the whole
 * distribution (--distribution), the neurons of named MLP layers (--neurons, --top-neurons)
 * and where the repair comes from (--where-repair). Flags, tables and JSON fields.
 */
export interface ExtrasCliOptions {
  distribution?: boolean;
  neurons?: string;
  topNeurons?: number;
  whereRepair?: boolean;
  seed: number;
}

/** Responders named per ablation in the tables (the JSON has them all). */
const TOP_RESPONDERS = 3;

export function addExtraOptions(cmd: Command): Command {
  return cmd
    .option('--distribution', "also measure the whole next-token distribution: ΔH, KL(clean ‖ ablated), the clean token's probability and rank (costs an unembedding per ablated run)")
    .option('--neurons <list>', 'MLP layers whose neurons to follow, e.g. mlp.10,mlp.11: the neurons whose direct effect changes most under each ablation upstream')
    .option('--top-neurons <N>', `neurons reported per ablation and MLP layer (default ${DEFAULT_TOP_NEURONS})`, positiveInt('--top-neurons'))
    .option('--where-repair', 'split each ablation\'s removed direct effect into what comes back through each downstream attention layer, head, MLP and the final norm\'s scale; over several prompts, means with bootstrap intervals');
}

/** The analysis options the flags ask for. */
export function extraAnalyzeOptions(opts: ExtrasCliOptions): ExtraOptions {
  if (opts.topNeurons !== undefined && opts.neurons === undefined) throw new HydraError('--top-neurons needs --neurons (the MLP layers whose neurons to report)');
  return {
    distribution: opts.distribution,
    neurons: opts.neurons?.split(',').map((s) => s.trim()).filter(Boolean),
    topNeurons: opts.topNeurons,
  };
}

/** A prompt's JSON, with `where_repair` on each ablation when asked. */
export function promptJson(model: HookedModel, r: PromptResult, opts: ExtrasCliOptions): PromptResult {
  if (!opts.whereRepair) return r;
  const split = promptRepairSources(model.plan, r);
  return { ...r, ablations: Object.fromEntries(Object.entries(r.ablations).map(([t, a]) => [t, { ...a, where_repair: split[t] }])) };
}

/** Top-level JSON fields: `where_repair` over the prompt set. */
export function datasetJson(model: HookedModel, results: PromptResult[], opts: ExtrasCliOptions): Record<string, unknown> {
  return opts.whereRepair ? { where_repair: datasetRepairSources(model.plan, results, { seed: opts.seed }) } : {};
}

/** The tables of one prompt's extras (empty when none asked). */
export function extraTables(model: HookedModel, r: PromptResult, opts: ExtrasCliOptions): string {
  const out: string[] = [];
  const entries = Object.entries(r.ablations);
  if (opts.distribution) {
    out.push(`  ${'distribution'.padEnd(12)}${DISTRIBUTION.map((f) => f.label.padStart(10)).join('')}`);
    for (const [t, a] of entries) out.push(`  ${t.padEnd(12)}${DISTRIBUTION.map((f) => fmt(a.distribution![f.key], 4, 10)).join('')}`);
  }
  if (opts.neurons !== undefined) {
    out.push('  neurons: ΔDE_n (DE_n → DE′_n), largest |ΔDE_n| first, averaged over patches');
    for (const [t, a] of entries) for (const [layer, ns] of Object.entries(a.neurons ?? {})) out.push(`  ${t} → ${layer}: ${ns.map(neuronText).join(', ')}`);
  }
  if (opts.whereRepair) {
    const split = promptRepairSources(model.plan, r);
    out.push(`  ${'where repair'.padEnd(12)}${['removed', 'attn', 'mlp', 'NE', 'restored'].map((h) => h.padStart(10)).join('')}   top responders (ΔDE)`);
    for (const [t, s] of Object.entries(split)) {
      const vals = [s.removed, s.attn, s.mlp, s.ne].map((v) => fmt(v, 4, 10)).join('') + (s.restored === null ? 'n/a'.padStart(10) : fmt(s.restored, 3, 10));
      out.push(`  ${t.padEnd(12)}${vals}   ${topResponders(s)}`);
    }
  }
  return out.join('\n');
}

/** Over several prompts: where the repair comes from, means with their 95% bootstrap intervals. */
export function datasetTable(model: HookedModel, results: PromptResult[], opts: ExtrasCliOptions): string {
  if (!opts.whereRepair || results.length < 2) return '';
  const all = datasetRepairSources(model.plan, results, { seed: opts.seed });
  const lines = [`where the repair comes from, over ${results.length} prompts: mean [95% bootstrap interval over prompts]`];
  for (const [t, d] of Object.entries(all)) {
    const parts = (['removed', 'attn', 'mlp', 'ne', 'restored'] as const).map((k) => `${k === 'ne' ? 'NE' : k} ${interval(d[k])}`);
    const top = Object.entries(responders(d))
      .filter(([, m]) => m.mean !== null)
      .sort((a, b) => Math.abs(b[1].mean!) - Math.abs(a[1].mean!))
      .slice(0, TOP_RESPONDERS)
      .map(([c, m]) => `${c} ${interval(m)}`);
    lines.push(`  ${t}: ${parts.join(', ')}`, `    top responders: ${top.join(', ') || 'none downstream'}`);
  }
  return lines.join('\n');
}

function neuronText(n: NeuronChange): string {
  return `#${n.neuron} ${signed(n.dde)} (${fmt(n.de)} → ${fmt(n.de_prime)})`;
}

function topResponders(s: RepairSources): string {
  const all = Object.entries(responders(s)).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
  return all.length === 0 ? 'none downstream' : all.slice(0, TOP_RESPONDERS).map(([c, v]) => `${c} ${signed(v)}`).join(', ');
}

function interval(m: MeanInterval): string {
  if (m.mean === null) return 'n/a';
  return m.lo === null ? fmt(m.mean) : `${fmt(m.mean)} [${fmt(m.lo)}, ${fmt(m.hi!)}]`;
}

function signed(v: number): string {
  return `${v >= 0 ? '+' : ''}${fmt(v)}`;
}
