/**
 * Iterated ablation (the paper's question 7: how many components must be cut before the Hydra
 * stops growing heads). Step 0 ablates k; each step finds the responder, the downstream
 * component (at the chosen level, not already ablated) with the largest mean positive ΔDE over
 * prompts and patches, and the next step ablates the set jointly (METHOD "Joint ablation").
 */
import { analyze, type AblationOptions } from '../causal/analysis.js';
import { EFFECT_FIELDS, type EffectField, type PromptResult } from '../causal/types.js';
import { HydraError } from '../io/errors.js';
import { attnName, headsOf, parseComponent, parseTarget, targetName } from '../models/components.js';
import type { HookedModel } from '../models/model.js';

export type IterateLevel = 'heads' | 'layers';
export const ITERATE_LEVELS: readonly IterateLevel[] = ['layers', 'heads'];
/** Most steps (each is one ablation run over every prompt). */
export const MAX_STEPS = 100;

export interface IterateOptions extends Omit<AblationOptions, 'targets' | 'heads' | 'skip' | 'onPrompt' | 'onBatch'> {
  /** The component (or '+'-joined set) ablated at step 0. */
  ablate: string;
  /** Responders added, at most: steps 0..K run. */
  steps: number;
  /** Responders are attention layers and MLPs (layers), or heads and MLPs (heads). Default layers. */
  level?: IterateLevel;
  /** Called after each step. */
  onStep?: (s: IterateStep) => void | Promise<void>;
}

export interface IterateStep {
  step: number;
  /** The ablated set, in the order its members were added. */
  set: string[];
  /** The set's '+'-joined name (its key in each prompt's ablations). */
  target: string;
  /** Means over the prompts of the patch-averaged effects. */
  effects: Record<EffectField, number>;
  /** CE: the repair that remains. */
  remaining_repair: number;
  /** The downstream component with the largest mean positive ΔDE (null: none), and that ΔDE. */
  responder: string | null;
  responder_dde: number | null;
  /** Every candidate's mean ΔDE, largest first. */
  candidates: { component: string; dde: number }[];
}

export interface IterateResult {
  steps: IterateStep[];
  /** Why the iteration stopped before K steps (null: it ran them all). */
  stopped: string | null;
  /** Each step's per-prompt results. */
  results: PromptResult[][];
}

export async function iterateAblation(model: HookedModel, prompts: number[][], opts: IterateOptions): Promise<IterateResult> {
  const level = opts.level ?? 'layers';
  if (!ITERATE_LEVELS.includes(level)) throw new HydraError(`unknown level '${level}'; use ${ITERATE_LEVELS.join(' or ')}`);
  if (!Number.isInteger(opts.steps) || opts.steps < 0 || opts.steps > MAX_STEPS) throw new HydraError(`\`steps\` must be an integer from 0 to ${MAX_STEPS}, got ${opts.steps}`);
  const set = parseTarget(opts.ablate, model.spec).members.map((m) => m.name);
  const { steps: K, onStep, ...rest } = opts;
  const ablation: AblationOptions = { ...rest };
  const steps: IterateStep[] = [];
  const results: PromptResult[][] = [];
  let stopped: string | null = null;
  for (let step = 0; step <= K; step++) {
    const target = targetName(set);
    const rs = await analyze(model, prompts, { ...ablation, targets: [target], heads: level === 'heads' });
    const candidates = responders(model, set, level)
      .map((c) => ({ component: c, dde: meanOf(rs, (r) => r.ablations[target].de_prime[c] - r.de[c]) }))
      .sort((a, b) => b.dde - a.dde);
    const top = candidates[0];
    const chosen = top && top.dde > 0 ? top : null;
    const effects = {} as Record<EffectField, number>;
    for (const f of EFFECT_FIELDS) effects[f] = meanOf(rs, (r) => r.ablations[target][f]);
    const s: IterateStep = { step, set: [...set], target, effects, remaining_repair: effects.ce, responder: chosen?.component ?? null, responder_dde: chosen?.dde ?? null, candidates };
    steps.push(s);
    results.push(rs);
    await onStep?.(s);
    if (step === K) break;
    if (!chosen) {
      stopped = top
        ? `no downstream component has a positive mean ΔDE after step ${step} (largest: ${top.component}, ${top.dde.toPrecision(3)})`
        : `nothing at the ${level} level is downstream of ${target}`;
      break;
    }
    set.push(chosen.component);
  }
  return { steps, stopped, results };
}

/**
 * The responders a set can recruit: the components downstream of it (METHOD "Joint ablation"),
 * at the level asked (attention layers, or their heads), never a member, nor a part of one.
 */
export function responders(model: HookedModel, set: string[], level: IterateLevel): string[] {
  const members = set.map((n) => parseComponent(n, model.spec));
  const down = model.plan.downstreamOfSet(members);
  const out: string[] = [];
  for (const n of down.attn) {
    const c = parseComponent(n);
    if (c.kind === 'attn') out.push(...(level === 'heads' ? headsOf(model.spec, [c.layer]) : [n]));
    else if (c.kind === 'head') out.push(level === 'heads' ? n : attnName(c.layer));
  }
  out.push(...down.mlp);
  const parts = new Set(members.filter((m) => m.kind === 'head' || m.kind === 'attn_bias').map((m) => m.layer));
  const whole = new Set(members.filter((m) => m.kind === 'attn').map((m) => m.layer));
  // Never a member, a head of an ablated layer, or the layer of an ablated head.
  const taken = (n: string) => {
    const c = parseComponent(n);
    return set.includes(n) || (c.kind === 'head' && whole.has(c.layer)) || (c.kind === 'attn' && parts.has(c.layer));
  };
  return [...new Set(out)].filter((n) => !taken(n));
}

function meanOf(rs: PromptResult[], f: (r: PromptResult) => number): number {
  return rs.reduce((s, r) => s + f(r), 0) / rs.length;
}
