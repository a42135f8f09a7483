import { HydraError } from '../io/errors.js';
import { layerComponents, type Component } from '../models/components.js';
import { interventionSite, type HookedModel, type PromptActivations } from '../models/model.js';

export const DEFAULT_BATCH_PROMPTS = 8;

/** Prompts per block of a component's kept outputs. */
const SLAB = 64;

/** Whether reading these targets needs the clean run split into heads. */
export function needsHeads(targets: Component[]): boolean {
  return targets.some((t) => t.kind === 'head' || t.kind === 'attn_bias');
}

/**
 * The clean runs of a fixed list of prompts, kept as much as patches need: each prompt's clean
 * token and its components' outputs at the last position. Resample and mean patches depend only
 * on the model and this list, so one bank serves every ablation drawn from it (the explorer keeps
 * one per model and pool). A prompt's clean forward runs once, in the fixed batch [kB, (k+1)B)
 * that holds it, so no value depends on which prompts were asked for first. Layer components are
 * always kept; head components (head.{l}.{h}, attn_bias.{l}) once a target asks for them.
 */
/** A clean forward's result: every prompt's activations and the batch's keys and values. */
export type CleanRun = Awaited<ReturnType<HookedModel['forward']>>;

/** Most bytes of kept clean runs (a bank keeps a sixteenth of the model's weight bytes, within [32 MiB, this]). */
export const DEFAULT_RETAIN_BYTES = 512 * 2 ** 20;

/**
 * The bank's default budget for kept clean runs: a sixteenth of the weights' bytes, so that a
 * sweep's peak memory stays near the weights' (measured on the GPT-2-small shape: 512 MiB
 * kept runs were most of the sweep's overhead over its 474 MiB of weights; an eighth instead
 * of a sixteenth peaked 20-30 MB higher on its 64-prompt sweep, which ran 3 fewer clean
 * batches of its 8). Past the budget a batch runs clean twice (~5% of a sweep's work), with
 * the same numbers.
 */
export function retainBudgetFor(model: HookedModel): number {
  return Math.min(DEFAULT_RETAIN_BYTES, Math.max(32 * 2 ** 20, Math.round(model.weightBytes / 16)));
}

/** Bytes a clean run holds: its key/value caches and each prompt's recorded vectors. */
function runBytes(run: CleanRun): number {
  let n = 0;
  for (const t of [...run.cache.k, ...run.cache.v]) n += 4 * t.size;
  for (const a of run.prompts) {
    for (const v of a.components.values()) n += v.byteLength;
    for (const v of a.sites.values()) n += v.byteLength;
    for (const v of [...a.stageIn, ...a.attnPre, a.logits]) n += v.byteLength;
  }
  return n;
}

export class CleanBank {
  /** Whole clean runs kept for analyze to reuse (its batches are the bank's when the prompts are the pool). */
  private readonly runs = new Map<number, { run: CleanRun; heads: boolean; bytes: number }>();
  private retainedBytes = 0;
  private readonly tokens: Int32Array;
  /** Per component, prompts' outputs in blocks of SLAB prompts (see keep). */
  private readonly outputs = new Map<string, (Float32Array | undefined)[]>();
  private readonly kept = new Map<string, Uint8Array>();
  /** Per batch, the component names it has stored (undefined: not run yet). */
  private readonly stored: (Set<string> | undefined)[];
  private readonly means = new Map<string, Float32Array>();

  constructor(
    readonly model: HookedModel,
    readonly prompts: number[][],
    readonly batchPrompts = DEFAULT_BATCH_PROMPTS,
    /** Bytes of whole clean runs (keys, values, activations) kept for reuse; past it, analyze runs them again. */
    readonly retainBudget = retainBudgetFor(model),
  ) {
    if (!Number.isInteger(batchPrompts) || batchPrompts < 1) throw new HydraError(`batchPrompts must be a positive integer, got ${batchPrompts}`);
    this.tokens = new Int32Array(prompts.length).fill(-1);
    this.stored = new Array(Math.ceil(prompts.length / batchPrompts));
  }

  get size(): number {
    return this.prompts.length;
  }

  /** Run the clean forward of every batch holding one of `indices` that lacks a target's output. */
  async ensure(indices: Iterable<number>, targets: Component[] = []): Promise<void> {
    const B = this.batchPrompts;
    const batches = [...new Set([...indices].map((i) => Math.floor(i / B)))].sort((a, b) => a - b);
    for (const k of batches) {
      const have = this.stored[k];
      if (have && targets.every((t) => have.has(t.name))) continue;
      const idx = [...this.prompts.keys()].slice(k * B, (k + 1) * B);
      const heads = needsHeads(targets);
      const res = await this.model.forward(idx.map((n) => this.prompts[n]), { heads });
      this.adopt(k, res, targets);
      this.retain(k, res, heads);
    }
  }

  /** Take batch k's outputs from a clean run of it (the bank's own, or analyze's), so that it never runs again. */
  adopt(k: number, run: CleanRun, targets: Component[] = []): void {
    const idx = [...this.prompts.keys()].slice(k * this.batchPrompts, (k + 1) * this.batchPrompts);
    const have = this.stored[k] ?? new Set<string>();
    const names = new Set([...layerComponents(this.model.spec), ...targets.map((t) => t.name), ...have].filter((n) => have.has(n) || run.prompts[0].components.has(n)));
    run.prompts.forEach((a, b) => this.keep(idx[b], a, names));
    this.stored[k] = names;
  }

  /** Keep batch k's whole run while the budget allows (the first batches, which analyze reaches first). */
  private retain(k: number, run: CleanRun, heads: boolean): void {
    const old = this.runs.get(k);
    if (old) {
      this.retainedBytes -= old.bytes;
      this.runs.delete(k);
    }
    const bytes = runBytes(run);
    if (this.retainedBytes + bytes > this.retainBudget) return;
    this.runs.set(k, { run, heads, bytes });
    this.retainedBytes += bytes;
  }

  /**
   * Batch k's clean run, once, if the bank kept it and it recorded what is asked (heads): the
   * same batch of the same prompts, so the same numbers as running it again. The bank lets go
   * of it, so that what analyze has used frees its budget.
   */
  takeRun(k: number, heads: boolean): CleanRun | undefined {
    const kept = this.runs.get(k);
    if (!kept || (heads && !kept.heads)) return undefined;
    this.runs.delete(k);
    this.retainedBytes -= kept.bytes;
    return kept.run;
  }

  /**
   * Keep prompt n's outputs, copied into blocks of SLAB prompts a component: a sweep keeps
   * every prompt's, and one small buffer each, living as long as the bank amid the clean runs'
   * short-lived ones, left the allocator's heap full of holes.
   */
  private keep(n: number, a: PromptActivations, names: Set<string>): void {
    this.tokens[n] = a.token;
    const d = this.model.spec.dModel;
    for (const name of names) {
      // The value an intervention replaces (a post-norm head's pre-norm output), as the patch.
      const v = a.components.has(name) ? interventionSite(a, name) : undefined;
      if (!v) continue;
      let slabs = this.outputs.get(name);
      if (!slabs) {
        this.outputs.set(name, (slabs = new Array(Math.ceil(this.prompts.length / SLAB))));
        this.kept.set(name, new Uint8Array(this.prompts.length));
      }
      const slab = (slabs[Math.floor(n / SLAB)] ??= new Float32Array(SLAB * d));
      slab.set(v, (n % SLAB) * d);
      this.kept.get(name)![n] = 1;
    }
  }

  /** The clean token of prompt n (after ensure). */
  token(n: number): number {
    const t = this.tokens[n];
    if (t < 0) throw new Error(`CleanBank: prompt ${n} was not run; call ensure first`);
    return t;
  }

  /** Component `name`'s clean output at prompt n's last position (after ensure). */
  output(n: number, name: string): Float32Array {
    if (!this.kept.get(name)?.[n]) throw new Error(`CleanBank: no output of ${name} for prompt ${n}; call ensure with it`);
    const d = this.model.spec.dModel;
    return this.outputs.get(name)![Math.floor(n / SLAB)]!.subarray((n % SLAB) * d, (n % SLAB + 1) * d);
  }

  /** The mean over every prompt of the bank of the target's clean output (float64 sum, in prompt order). */
  async mean(target: Component): Promise<Float32Array> {
    let m = this.means.get(target.name);
    if (m) return m;
    await this.ensure(this.prompts.keys(), [target]);
    const sum = new Float64Array(this.model.spec.dModel);
    for (let n = 0; n < this.prompts.length; n++) {
      const v = this.output(n, target.name);
      for (let j = 0; j < sum.length; j++) sum[j] += v[j];
    }
    m = Float32Array.from(sum, (x) => x / this.prompts.length);
    this.means.set(target.name, m);
    return m;
  }
}
