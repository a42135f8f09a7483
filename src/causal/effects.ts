import type { Target } from '../models/components.js';
import type { PromptActivations } from '../models/model.js';
import type { ResidualPlan } from '../models/plan.js';
import { dot, type ReadoutTokens } from './readout.js';
import { EFFECT_FIELDS, type AblationResult, type PatchEffects } from './types.js';

/** Everything about the clean run of one prompt that the effects are measured against. */
export interface CleanContext {
  acts: PromptActivations;
  /** Readout vector q of the measured quantity (see Readout): q_i of the clean token by default. */
  q: Float64Array;
  /** The measured quantity's tokens (r = e_plus − e_minus). */
  readout: ReadoutTokens;
  /** r · π̂ of the clean run (π̂_i by default). */
  piHat: number;
  /** π̂_i = z·q/σ + const. */
  constant: number;
  /** DE(c) for every recorded component. */
  de: Record<string, number>;
}

export function cleanContext(acts: PromptActivations, q: Float64Array, piHat: number, readout: ReadoutTokens = { plus: acts.token, minus: null }): CleanContext {
  const de: Record<string, number> = {};
  for (const [name, c] of acts.components) de[name] = dot(c, q) / acts.sigma;
  return { acts, q, readout, piHat, constant: piHat - dot(acts.z, q) / acts.sigma, de };
}

/** What an ablated run must report for its effects to be computed. */
export interface AblatedRun {
  /** Final residual z' at the last position. */
  z: ArrayLike<number>;
  /** DE'_k(c) = û_σclean(c') for every component. */
  dePrime: Record<string, number>;
  /** π̂'_i when the run unembedded itself; otherwise it is read from z'. */
  piHatPrime?: number;
  /** Each member's component in the ablated run: its patch, or for a post-norm head p / s' ⊙ g. */
  memberValues: Float32Array[];
  /** Residual entering each stage asked for (neurons, src/causal/neurons.ts); absent where the stage was not recomputed. */
  stageIn?: Map<number, Float32Array>;
  /** Raw logits over the vocabulary, where the run unembedded itself (the naive path). */
  logits?: Float32Array;
}

/** σ of a residual, for the model's final norm. */
export type NormScale = (z: ArrayLike<number>) => number;

/**
 * TE, ΔDE(k), CE (attention and MLP parts), NE and IE of one patch run (METHOD.md). A joint
 * target (METHOD "Joint ablation"): ΔDE(k) is summed over the members, CE is over what is
 * downstream of any member, and IE puts every member back. Closure TE = ΔDE(k) + CE + NE
 * holds by construction up to float error.
 */
export function patchEffects(plan: ResidualPlan, ctx: CleanContext, target: Target, run: AblatedRun, normScale: NormScale, source: number | null): PatchEffects {
  const { acts, q, de } = ctx;
  const sigma = acts.sigma;
  const z = run.z;
  const sigmaPrime = normScale(z);
  const piHatPrime = run.piHatPrime ?? dot(z, q) / sigmaPrime + ctx.constant;
  const { down, layers } = namesFor(plan, target);
  const sumDelta = (names: string[]) => {
    let s = 0;
    for (const c of names) s += run.dePrime[c] - de[c];
    return s;
  };
  const ceAttn = sumDelta(down.attn);
  const ceMlp = sumDelta(down.mlp);
  let layerSum = 0;
  for (const c of layers) layerSum += run.dePrime[c];
  let ddeSelf = 0;
  target.members.forEach((m, i) => (ddeSelf += dot(run.memberValues[i], q) / sigma - de[m.name]));
  // IE: the members back at their clean values, everything downstream held at its ablated value.
  if (scratch.length !== z.length) scratch = new Float64Array(z.length);
  const zIe = scratch;
  for (let j = 0; j < zIe.length; j++) zIe[j] = z[j];
  target.members.forEach((m, i) => {
    const value = run.memberValues[i];
    const clean = acts.components.get(m.name)!;
    for (let j = 0; j < zIe.length; j++) zIe[j] = zIe[j] - value[j] + clean[j];
  });
  const ie = dot(zIe, q) / normScale(zIe) + ctx.constant - ctx.piHat;
  return {
    source,
    sigma_prime: sigmaPrime,
    pi_hat_prime: piHatPrime,
    te: piHatPrime - ctx.piHat,
    ce: ceAttn + ceMlp,
    ce_attn: ceAttn,
    ce_mlp: ceMlp,
    ne: (sigma / sigmaPrime - 1) * layerSum,
    ie,
    dde_self: ddeSelf,
    de_prime: run.dePrime,
  };
}

/** zIe of patchEffects, reused: one vector a patch run adds up to hundreds of MB a sweep. */
let scratch = new Float64Array(0);

/** The plan's downstream sets and layer partition per target, built once: patchEffects runs per patch. */
const namesCache = new WeakMap<ResidualPlan, Map<string, { down: { attn: string[]; mlp: string[] }; layers: string[] }>>();
function namesFor(plan: ResidualPlan, target: Target) {
  let byPlan = namesCache.get(plan);
  if (!byPlan) namesCache.set(plan, (byPlan = new Map()));
  let e = byPlan.get(target.name);
  if (!e) byPlan.set(target.name, (e = { down: plan.downstreamOfSet(target.members), layers: plan.layerPartition() }));
  return e;
}

/** Monte-Carlo average of effects over patches (never the effect of an averaged patch). */
export function averagePatches(patches: PatchEffects[]): AblationResult {
  const n = patches.length;
  const out = { patches } as AblationResult;
  for (const f of EFFECT_FIELDS) out[f] = patches.reduce((s, p) => s + p[f], 0) / n;
  if (patches[0].te_capped !== undefined) out.te_capped = patches.reduce((s, p) => s + p.te_capped!, 0) / n;
  out.de_prime = {};
  for (const c of Object.keys(patches[0].de_prime)) out.de_prime[c] = patches.reduce((s, p) => s + p.de_prime[c], 0) / n;
  if (patches[0].de_prime_own_scale) {
    out.de_prime_own_scale = {};
    for (const c of Object.keys(patches[0].de_prime_own_scale)) out.de_prime_own_scale[c] = patches.reduce((s, p) => s + p.de_prime_own_scale![c], 0) / n;
  }
  return out;
}
