import { HydraError } from '../io/errors.js';
import { parseComponent, type Component } from '../models/components.js';
import type { HookedModel } from '../models/model.js';
import type { AblatedRun, CleanContext } from './effects.js';
import type { AblationRow } from './fastpath.js';
import type { NeuronChange } from './types.js';

/**
 * Neurons of named MLP layers (paper Q6; Rushing & Nanda 2024): which neurons' direct effects
 * change most when a component upstream is ablated. A neuron's direct effect is
 *
 *     DE_n = a_n · (W_out[:, n] · q) / σ
 *
 * with a_n its activation at the last position (gated MLPs: act(gate)·up), q the clean
 * token's readout and σ the clean final-norm scale, so Σ_n DE_n + DE(output bias) = DE(mlp.L).
 * After an RMS post-norm (Gemma-2/3, OLMo-2) the block is linear at its own norm scale s, as
 * for post-norm heads: DE_n = a_n · (W_out[:, n] ⊙ g) · q / (s σ), s that run's.
 */

/** The MLP layers named (`mlp.L`, checked against the model); anything else is refused. */
export function neuronLayers(model: HookedModel, names: string[]): Component[] {
  const L = model.spec.nLayers;
  if (names.length === 0) throw new HydraError('`neurons` names no MLP layer; give MLP layers such as mlp.0,mlp.1');
  const layers = names.map((n) => {
    let c: Component | null = null;
    try {
      c = parseComponent(n);
    } catch {
      // reported below, with what to give instead
    }
    if (!c || c.kind !== 'mlp') throw new HydraError(`\`neurons\`: '${n}' is not an MLP layer; neurons are split for MLP layers only, mlp.0 to mlp.${L - 1}`);
    if (c.layer >= L) throw new HydraError(`\`neurons\`: ${n} does not exist; the model's MLP layers are mlp.0 to mlp.${L - 1}`);
    const lv = model.layers[c.layer];
    // A LayerNorm post-norm (none of the supported families) is not linear in the neurons at a
    // fixed scale because of its mean and bias; a bias under a post-norm has no family either.
    if (lv.mlpPostNorm && (model.spec.norm !== 'rmsnorm' || lv.bDown)) throw new HydraError(`\`neurons\`: ${n} has a post-norm with a mean or bias, so its output does not split into neurons; this family is not supported`);
    return c;
  });
  return [...new Map(layers.map((c) => [c.name, c])).values()];
}

/** DE of MLP layer l's output bias (a constant of the model: the same in every run of a pre-norm block). */
export function biasDirectEffect(model: HookedModel, layer: number, ctx: CleanContext): number {
  const b = model.layers[layer].bDown;
  if (!b) return 0;
  let s = 0;
  for (let j = 0; j < b.length; j++) s += b[j] * ctx.q[j];
  return s / ctx.acts.sigma;
}

/** Each neuron's DE in the MLP layer `layer` for residuals entering its stage, one per context. */
export async function neuronEffects(model: HookedModel, layer: number, inputs: Float32Array[], ctxs: CleanContext[]): Promise<Float32Array[]> {
  const d = model.spec.dModel;
  const f = model.spec.dMlp;
  const x = new Float32Array(inputs.length * d);
  const r = new Float32Array(inputs.length * d);
  inputs.forEach((v, k) => {
    x.set(v, k * d);
    for (let j = 0; j < d; j++) r[k * d + j] = ctxs[k].q[j] / ctxs[k].acts.sigma;
  });
  const deNeurons = await model.mlpNeurons(layer, x, r, inputs.length);
  return inputs.map((_, k) => deNeurons.slice(k * f, (k + 1) * f));
}

/** The stage each named layer reads: the fast path returns the residual entering it. */
export function neuronTaps(model: HookedModel, layers: Component[]): number[] {
  return layers.map((c) => model.plan.stageOf(c));
}

/** Clean neuron DEs, per context and layer, computed once per clean context. */
const cleanCache = new WeakMap<CleanContext, Map<number, Float32Array>>();

async function cleanNeurons(model: HookedModel, layer: Component, ctxs: CleanContext[]): Promise<Float32Array[]> {
  const todo = ctxs.filter((c) => !cleanCache.get(c)?.has(layer.layer));
  const unique = [...new Set(todo)];
  if (unique.length) {
    const s = model.plan.stageOf(layer);
    const des = await neuronEffects(model, layer.layer, unique.map((c) => c.acts.stageIn[s]), unique);
    unique.forEach((c, k) => {
      if (!cleanCache.has(c)) cleanCache.set(c, new Map());
      cleanCache.get(c)!.set(layer.layer, des[k]);
    });
  }
  return ctxs.map((c) => cleanCache.get(c)!.get(layer.layer)!);
}

/** Per run, per named layer downstream of its target: DE′_n (float32, from the run) and DE_n (clean). */
export interface NeuronRun {
  layer: string;
  de: ArrayLike<number>;
  dePrime: ArrayLike<number>;
}

/**
 * The neuron DEs of every ablated run in each named layer downstream of its target (the
 * target itself, and layers not downstream, are left out: their neurons do not change, or
 * are replaced by the patch).
 */
export async function runNeurons(model: HookedModel, ctxs: CleanContext[], rows: AblationRow[], runs: AblatedRun[], layers: Component[]): Promise<NeuronRun[][]> {
  const out: NeuronRun[][] = rows.map(() => []);
  for (const layer of layers) {
    const s = model.plan.stageOf(layer);
    const which = rows.map((r, k) => k).filter((k) => model.plan.downstreamOfSet(rows[k].target.members).mlp.includes(layer.name));
    if (which.length === 0) continue;
    const inputs = which.map((k) => {
      const x = runs[k].stageIn?.get(s);
      if (!x) throw new Error(`neurons: the run did not return the input of stage ${s}`);
      return x;
    });
    const rowCtxs = which.map((k) => ctxs[rows[k].prompt]);
    const [primes, cleans] = await Promise.all([neuronEffects(model, layer.layer, inputs, rowCtxs), cleanNeurons(model, layer, rowCtxs)]);
    which.forEach((k, i) => out[k].push({ layer: layer.name, de: cleans[i], dePrime: primes[i] }));
  }
  return out;
}

/** The `top` neurons of a layer by |ΔDE_n| (largest first; ties: lower index first), in one pass. */
export function topNeurons(de: ArrayLike<number>, dePrime: ArrayLike<number>, top: number): NeuronChange[] {
  const best: number[] = [];
  const size = (n: number) => Math.abs(dePrime[n] - de[n]);
  for (let n = 0; n < de.length; n++) {
    const v = size(n);
    if (best.length === top && v <= size(best[top - 1])) continue;
    let at = best.length;
    while (at > 0 && size(best[at - 1]) < v) at--;
    best.splice(at, 0, n);
    if (best.length > top) best.pop();
  }
  return best.map((n) => ({ neuron: n, de: de[n], de_prime: dePrime[n], dde: dePrime[n] - de[n] }));
}

/** Per layer, the patch average of DE′_n (the Monte-Carlo average of effects), with the clean DE_n. */
export function averageNeurons(patches: NeuronRun[][]): NeuronRun[] {
  if (patches.length === 0) return [];
  return patches[0].map((first, li) => {
    const mean = new Float64Array(first.dePrime.length);
    for (const p of patches) {
      const v = p[li].dePrime;
      for (let n = 0; n < mean.length; n++) mean[n] += v[n] / patches.length;
    }
    return { layer: first.layer, de: first.de, dePrime: mean };
  });
}

/** Default number of neurons reported per (ablation, MLP layer). */
export const DEFAULT_TOP_NEURONS = 10;
