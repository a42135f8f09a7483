import { HydraError } from '../io/errors.js';
import type { HookedModel } from '../models/model.js';
import type { Component } from '../models/components.js';
import { averageDistribution, distributionReader } from './distribution.js';
import type { AblatedRun, CleanContext } from './effects.js';
import type { LogitReader } from './readout.js';
import type { AblationRow } from './fastpath.js';
import { averageNeurons, DEFAULT_TOP_NEURONS, neuronLayers, neuronTaps, runNeurons, topNeurons, type NeuronRun } from './neurons.js';
import type { AblationResult, PatchEffects } from './types.js';

/**
 * The optional measurements of an ablation (on request, each with its cost): the whole
 * distribution (distribution.ts) and the neurons of named MLP layers (neurons.ts). analyze
 * calls these hooks; nothing else there knows about them.
 */
export interface ExtraOptions {
  /** Also measure the effects on the whole next-token distribution (an unembedding per ablated run). */
  distribution?: boolean;
  /** MLP layers (mlp.L) whose neurons' ΔDE to report. */
  neurons?: string[];
  /** Neurons reported per (ablation, MLP layer), by |ΔDE_n| (default DEFAULT_TOP_NEURONS). */
  topNeurons?: number;
}

export interface Extras {
  layers: Component[];
  distribution: boolean;
  top: number;
  /** The stages whose input the fast path must return. */
  taps: number[] | undefined;
}

/** The extras asked for, checked; null when none. */
export function extrasOf(model: HookedModel, opts: ExtraOptions): Extras | null {
  const layers = opts.neurons ? neuronLayers(model, opts.neurons) : [];
  if (!opts.distribution && layers.length === 0) return null;
  const top = opts.topNeurons ?? DEFAULT_TOP_NEURONS;
  if (!Number.isInteger(top) || top < 1) throw new HydraError(`\`topNeurons\` must be a positive integer, got ${top}`);
  return { layers, distribution: !!opts.distribution, top, taps: layers.length ? neuronTaps(model, layers) : undefined };
}

/** Full neuron vectors of each patch, kept beside it (never serialised) until the patch average. */
const neuronRuns = new WeakMap<PatchEffects, NeuronRun[]>();

/** The extras read from a part's logits (the distribution), for analyze's one unembedding of the part. */
export function extraLogitReaders(model: HookedModel, x: Extras, ctxs: CleanContext[], rows: AblationRow[], effects: PatchEffects[]): LogitReader[] {
  return x.distribution ? [distributionReader(model, ctxs, rows, effects)] : [];
}

/** Measure the other extras of a part's runs (the neurons) and attach them to their patch effects (same order). */
export async function measureExtras(model: HookedModel, x: Extras, ctxs: CleanContext[], rows: AblationRow[], runs: AblatedRun[], effects: PatchEffects[]): Promise<void> {
  if (x.layers.length) {
    (await runNeurons(model, ctxs, rows, runs, x.layers)).forEach((ns, k) => {
      neuronRuns.set(effects[k], ns);
      effects[k].neurons = Object.fromEntries(ns.map((n) => [n.layer, topNeurons(n.de, n.dePrime, x.top)]));
    });
  }
}

/** The patch averages of the extras, onto an ablation's averaged result. */
export function averageExtras(x: Extras, a: AblationResult): void {
  if (x.distribution) a.distribution = averageDistribution(a.patches.map((p) => p.distribution!));
  if (x.layers.length) {
    const mean = averageNeurons(a.patches.map((p) => neuronRuns.get(p)!));
    a.neurons = Object.fromEntries(mean.map((n) => [n.layer, topNeurons(n.de, n.dePrime, x.top)]));
  }
}
