import type { ArchSpec, LayerVectors, NormWeights } from '../engine/spec.js';
import { attnBiasName, attnName, blockName, EMBED, headName, layerComponents, parseComponent, type Component } from './components.js';

/**
 * The residual plan: a model's wiring, written once.
 *
 * A decoder is a residual stream that blocks read and add to. The plan lists the blocks
 * (attention and MLP of each layer) in compute order, grouped into *stages*: the blocks of
 * one stage read the same residual, and the stream after a stage is the stream before it
 * plus the outputs of its blocks. Sequential models (GPT-2, Llama, ...) have one block per
 * stage; parallel ones (GPT-NeoX, GPT-J) put a layer's attention and MLP in one stage. What
 * happens inside a block (pre-norm, q/k norms, rotary, window, soft-capping, post-norm) is
 * the block's own business (src/engine/blocks.ts), fixed by the ArchSpec; what it adds to
 * the stream is its component.
 *
 * Everything that depends on the wiring derives from the stages: the clean forward and
 * the naive path run them over whole prompts, the last-position path runs them from the
 * stage after an intervention, "downstream of X" is "in a later stage than X", and where
 * an intervention's recomputation starts is the stage after it. A family never writes a
 * plan: it fills an ArchSpec (src/models/<family>.ts), and the plan follows from it.
 */
export interface BlockStep {
  component: string;
  kind: 'attn' | 'mlp';
  layer: number;
  /** Index of the stage (the residual it reads). */
  stage: number;
}

/** What an intervention at the last position changes before the stage it starts recomputing. */
export interface RowStart {
  /** The residual entering stage `start`. */
  resid: Float32Array;
  /** First stage to recompute (stages.length if none). */
  start: number;
  /** Components whose value the intervention set directly (the target, its layer's attention output and heads). */
  values: Map<string, Float32Array>;
  /** Patches of later stages (a joint ablation's later members): the executor applies each when its stage is reached. */
  later: Patch[];
}

/** A clean run's values at the last position that interventions start from. */
export interface CleanLast {
  /** Residual entering each stage. */
  stageIn: Float32Array[];
  components: Map<string, Float32Array>;
  /** What an intervention on a component replaces, where that is not the component (post-norm heads: their pre-norm output). */
  sites: Map<string, Float32Array>;
  /** Post-norm models: each attention layer's output before its post-norm. */
  attnPre: Float32Array[];
}

export interface Patch {
  component: Component;
  value: Float32Array;
}

export class ResidualPlan {
  readonly stages: BlockStep[][];
  readonly blocks: BlockStep[];
  private readonly stageByComponent = new Map<string, number>();

  constructor(
    readonly spec: ArchSpec,
    private readonly layers: LayerVectors[],
  ) {
    this.stages = [];
    for (let l = 0; l < spec.nLayers; l++) {
      const attn = { component: attnName(l), kind: 'attn' as const, layer: l, stage: this.stages.length };
      if (spec.parallel) this.stages.push([attn, { component: blockName('mlp', l), kind: 'mlp', layer: l, stage: attn.stage }]);
      else this.stages.push([attn], [{ component: blockName('mlp', l), kind: 'mlp', layer: l, stage: attn.stage + 1 }]);
    }
    this.blocks = this.stages.flat();
    for (const b of this.blocks) this.stageByComponent.set(b.component, b.stage);
  }

  /** The stage a component is added in (a head or output bias: its attention layer's); −1 for the embedding. */
  stageOf(c: Component): number {
    if (c.kind === 'embed') return -1;
    return this.stageByComponent.get(blockName(c.kind === 'mlp' ? 'mlp' : 'attn', c.layer))!;
  }

  /**
   * The components causally downstream of `target` at the last position (METHOD.md): the
   * blocks of later stages, and in a post-norm layer the other heads (and output bias) of
   * the target head's layer, which change through the layer's norm scale.
   */
  downstream(target: Component): { attn: string[]; mlp: string[] } {
    const s = this.stageOf(target);
    const later = this.blocks.filter((b) => b.stage > s);
    const attn = later.filter((b) => b.kind === 'attn').map((b) => b.component);
    if ((target.kind === 'head' || target.kind === 'attn_bias') && this.spec.postNorms) attn.unshift(...this.parts(target.layer).filter((p) => p !== target.name));
    return { attn, mlp: later.filter((b) => b.kind === 'mlp').map((b) => b.component) };
  }

  /**
   * Downstream of a set (METHOD "Joint ablation"): downstream of any member, members excluded.
   * A layer holding a head (or output bias) member is counted by its other parts, never as
   * attn.{l} (whose ΔDE includes the member's own): a set of one is `downstream`.
   */
  downstreamOfSet(members: Component[]): { attn: string[]; mlp: string[] } {
    if (members.length === 1) return this.downstream(members[0]);
    const names = new Set(members.map((m) => m.name));
    const partLayers = new Set(members.filter((m) => m.kind === 'head' || m.kind === 'attn_bias').map((m) => m.layer));
    const attn: string[] = [];
    const mlp: string[] = [];
    const add = (list: string[], n: string) => !names.has(n) && !list.includes(n) && list.push(n);
    for (const m of members) {
      const down = this.downstream(m);
      for (const n of down.attn) {
        const c = parseComponent(n);
        if (c.kind === 'attn' && partLayers.has(c.layer)) this.parts(c.layer).forEach((p) => add(attn, p));
        else add(attn, n);
      }
      down.mlp.forEach((n) => add(mlp, n));
    }
    const order = (list: string[]) => list.sort((a, b) => this.orderOf(a) - this.orderOf(b));
    return { attn: order(attn), mlp: order(mlp) };
  }

  /** Compute order of a block or part name (its stage; parts in layer order). */
  private orderOf(name: string): number {
    const i = this.blocks.findIndex((b) => b.component === name);
    if (i >= 0) return i;
    const l = parseComponent(name).layer;
    return this.blocks.findIndex((b) => b.component === attnName(l)) + this.parts(l).indexOf(name) / (this.parts(l).length + 1);
  }

  /** The block that adds a component to the stream (a head or output bias: its attention layer). */
  blockOf(c: Component): string {
    return blockName(c.kind === 'mlp' ? 'mlp' : 'attn', c.layer);
  }

  /** The parts of attention layer l: its heads, then its output bias where it has one. */
  parts(l: number): string[] {
    const heads = [...Array(this.spec.nHeads).keys()].map((h) => headName(l, h));
    return this.layers[l].bo ? [...heads, attnBiasName(l)] : heads;
  }

  /** The layer partition (embed, attn.0, mlp.0, ...): the components that sum to z. */
  layerPartition(): string[] {
    return layerComponents(this.spec);
  }

  /**
   * Apply patches at the last position of one clean run and find where recomputation
   * starts: the residual after the earliest patched stage, with the patched components
   * (and, for a head or output bias, its layer's attention output rebuilt) in place.
   * Patches of later stages (a joint ablation) are returned in `later`.
   */
  startRow(clean: CleanLast, patches: Patch[]): RowStart {
    const d = this.spec.dModel;
    const values = new Map<string, Float32Array>();
    const s = Math.min(...patches.map((p) => this.stageOf(p.component)));
    const later = patches.filter((p) => this.stageOf(p.component) > s);
    const first = later.length ? patches.filter((p) => this.stageOf(p.component) === s) : patches;
    if (s < 0) {
      const e = first[0];
      values.set(EMBED, e.value);
      return { resid: Float32Array.from(e.value), start: 0, values, later };
    }
    for (const p of first) {
      const c = p.component;
      if (c.kind === 'attn' || c.kind === 'mlp') values.set(c.name, p.value);
    }
    const parts = first.filter((p) => p.component.kind === 'head' || p.component.kind === 'attn_bias');
    for (const layer of new Set(parts.map((p) => p.component.layer))) {
      if (values.has(attnName(layer))) continue;
      this.patchAttention(clean, layer, parts.filter((p) => p.component.layer === layer), values);
    }
    const resid = Float32Array.from(clean.stageIn[s]);
    for (const b of this.stages[s]) {
      const v = values.get(b.component) ?? clean.components.get(b.component)!;
      for (let j = 0; j < d; j++) resid[j] += v[j];
    }
    return { resid, start: s + 1, values, later };
  }

  /**
   * Attention layer `l` with some heads (or its output bias) replaced: the new output and,
   * with a post-norm, every part's new component (all change through the norm's scale).
   * `clean` holds the layer as it was computed: the clean run, or a recomputed row.
   */
  patchAttention(clean: CleanLast, l: number, patches: Patch[], values: Map<string, Float32Array>): void {
    const d = this.spec.dModel;
    const post = this.layers[l].attnPostNorm;
    const site = (name: string) => clean.sites.get(name) ?? clean.components.get(name)!;
    const pre = Float32Array.from(post ? clean.attnPre[l] : clean.components.get(attnName(l))!);
    for (const p of patches) {
      const old = site(p.component.name);
      for (let j = 0; j < d; j++) pre[j] += p.value[j] - old[j];
    }
    if (!post) {
      for (const p of patches) values.set(p.component.name, p.value);
      values.set(attnName(l), pre);
      return;
    }
    const { y, scale } = normRow(pre, post, this.spec);
    values.set(attnName(l), y);
    for (const name of new Set([...this.parts(l), ...patches.map((p) => p.component.name)])) {
      const v = patches.find((p) => p.component.name === name)?.value ?? site(name);
      values.set(name, scaleBy(v, scale, post.g));
    }
  }
}

/** A norm's scale σ(x) of one row, in float64 (LayerNorm: about the row's mean; population variance). */
export function normScaleOf(x: ArrayLike<number>, spec: Pick<ArchSpec, 'norm' | 'normEps'>): number {
  return normStats(x, spec).scale;
}

/** The mean a norm centres a row on (0 for RMSNorm) and its scale σ(x), in float64. */
function normStats(x: ArrayLike<number>, spec: Pick<ArchSpec, 'norm' | 'normEps'>): { mean: number; scale: number } {
  const n = x.length;
  let mean = 0;
  if (spec.norm === 'layernorm') {
    for (let i = 0; i < n; i++) mean += x[i];
    mean /= n;
  }
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (x[i] - mean) ** 2;
  return { mean, scale: Math.sqrt(ss / n + spec.normEps) };
}

/** A norm applied to one row, in float64: N(x) and its scale σ(x). */
export function normRow(x: ArrayLike<number>, w: NormWeights, spec: ArchSpec): { y: Float32Array; scale: number } {
  const { mean, scale } = normStats(x, spec);
  const y = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = ((x[i] - mean) / scale) * w.g[i] + (w.b ? w.b[i] : 0);
  return { y, scale };
}

/** v / s ⊙ g: a part's share of a post-normed output (RMSNorm is linear at a fixed scale). */
export function scaleBy(v: ArrayLike<number>, s: number, g: Float32Array): Float32Array {
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = (v[i] / s) * g[i];
  return out;
}
