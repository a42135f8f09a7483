import { parseComponent, parseTarget } from '../models/components.js';
import type { ResidualPlan } from '../models/plan.js';
import type { Effects, PromptResult } from './types.js';

/**
 * Where the repair comes from (paper Q6; Rushing & Nanda 2024). An ablation of k removes the
 * direct effect −ΔDE(k); the closure TE = ΔDE(k) + CE + NE says what comes back: the ΔDE of
 * each component downstream of k (attention layers, their heads, MLP layers) and NE, the part
 * carried by the final norm's scale. This splits one ablation's result that way; it reads only
 * the measured DE and DE′, so it holds per patch and for the patch average alike.
 */
export interface RepairSources {
  /** −ΔDE(k): the direct effect the ablation removed. */
  removed: number;
  /** CE_attn: what comes back through downstream attention. */
  attn: number;
  /** CE_mlp: what comes back through downstream MLPs (negative: they erase less, or more). */
  mlp: number;
  /** NE: what comes back through the final norm's scale. */
  ne: number;
  /** (CE + NE) / removed: the share of the removed direct effect that comes back; null when nothing was removed. */
  restored: number | null;
  /** ΔDE of each downstream layer-level component (attn.L, mlp.L), in compute order. */
  layers: Record<string, number>;
  /** With heads recorded: ΔDE of each head (and output bias) of the downstream attention layers. */
  heads: Record<string, number>;
}

/** The split of one ablation of `target` (a component or a joint set; its averaged result, or one patch) against the prompt's clean DE. */
export function repairSources(plan: ResidualPlan, clean: PromptResult, target: string, e: Effects): RepairSources {
  const members = parseTarget(target, plan.spec).members.map((m) => m.name);
  const down = plan.downstreamOfSet(parseTarget(target, plan.spec).members);
  const delta = (c: string) => e.de_prime[c] - clean.de[c];
  const layers: Record<string, number> = {};
  const heads: Record<string, number> = {};
  const attnLayers = new Set<number>();
  for (const b of plan.blocks) {
    if (down.attn.includes(b.component) || down.mlp.includes(b.component)) {
      layers[b.component] = delta(b.component);
      if (b.kind === 'attn') attnLayers.add(b.layer);
    }
  }
  // Heads: those of downstream attention layers, and a post-norm head target's own layer-mates.
  for (const c of Object.keys(clean.de)) {
    const p = parseComponent(c);
    if (p.kind !== 'head' && p.kind !== 'attn_bias') continue;
    if (c in e.de_prime && (attnLayers.has(p.layer) || down.attn.includes(c)) && !members.includes(c)) heads[c] = delta(c);
  }
  const removed = -e.dde_self;
  const back = e.ce + e.ne;
  return { removed, attn: e.ce_attn, mlp: e.ce_mlp, ne: e.ne, restored: removed === 0 ? null : back / removed, layers, heads };
}

/** The split for every ablation of a prompt's result: averaged, and (with `patches`) per patch. */
export function promptRepairSources(plan: ResidualPlan, r: PromptResult, patches = false): Record<string, RepairSources & { patches?: RepairSources[] }> {
  const out: Record<string, RepairSources & { patches?: RepairSources[] }> = {};
  for (const [t, a] of Object.entries(r.ablations)) {
    out[t] = repairSources(plan, r, t, a);
    if (patches) out[t].patches = a.patches.map((p) => repairSources(plan, r, t, p));
  }
  return out;
}

/**
 * The responders: the finest split of CE the result has. Each downstream attention layer is
 * replaced by its heads (and output bias) where they were recorded; MLP layers stay whole.
 * Their ΔDE sum to CE.
 */
export function responders<T>(s: { layers: Record<string, T>; heads: Record<string, T> }): Record<string, T> {
  const out: Record<string, T> = {};
  const headLayers = new Set(Object.keys(s.heads).map((c) => parseComponent(c).layer));
  for (const [c, v] of Object.entries(s.layers)) {
    const p = parseComponent(c);
    if (p.kind !== 'attn' || !headLayers.has(p.layer)) out[c] = v;
  }
  return { ...out, ...s.heads };
}
