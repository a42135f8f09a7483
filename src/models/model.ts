import { attentionGraph, attentionStepGraph, embedGraph, mlpGraph, unembedGraph } from '../engine/blocks.js';
import { ropeKey, ropeTables } from '../engine/rope.js';
import { createSession, f32, i64, ort, type EngineOptions, type Session } from '../engine/runtime.js';
import type { ArchSpec, ModelWeights, RopeSpec } from '../engine/spec.js';
import { HydraError } from '../io/errors.js';
import { resolveModel, type ResolvedModel, type ResolveOptions } from '../io/hub.js';
import { WeightStore } from '../io/safetensors.js';
import { hasTokenizer, loadTokenizer, type HydraTokenizer } from '../io/tokenizer.js';
import { attnBiasName, headName, layerComponents, parseComponent } from './components.js';
import { ResidualPlan, scaleBy, type BlockStep, type CleanLast } from './plan.js';
import { familyFor, readConfig } from './registry.js';
import { archSpec, validateLayers } from './validate.js';

export interface LoadOptions extends EngineOptions, ResolveOptions {}

/** Everything read out of one prompt's clean run, at its last position unless noted. */
export interface PromptActivations extends CleanLast {
  ids: number[];
  /** Logits over the vocabulary at the last position (raw: before any final soft-capping). */
  logits: Float32Array;
  /** argmax of the logits: the clean max-likelihood token i. */
  token: number;
  /** Final norm's scale σ(z). */
  sigma: number;
  /** Residual entering the final norm. */
  z: Float32Array;
  /** Every component's output: embed, attn.{l}, mlp.{l}, and with heads, head.{l}.{h}, attn_bias.{l}. */
  components: Map<string, Float32Array>;
  /** With allPositions: each component at every position, [T, d] row-major. */
  positions?: Map<string, Float32Array>;
}

/** Keys and values of a clean batch, kept for runs that recompute only the last position. */
export interface KVCache {
  lengths: number[];
  /** Padded length of the batch. */
  T: number;
  /** Per layer [B, KV, 1, T, dh]. */
  k: ort.Tensor[];
  v: ort.Tensor[];
}

export interface ForwardOptions {
  /** Also split attention into heads and output bias. */
  heads?: boolean;
  /** Also return every component at every position. */
  allPositions?: boolean;
  /** do(C = p): per prompt, component outputs to replace (at the last position unless `position` is given). */
  interventions?: Intervention[][];
  /** Per prompt, a [T, d] array added to the input embeddings (noise ablation). */
  embedAdd?: (Float32Array | null)[];
}

export interface Intervention {
  component: string;
  value: Float32Array;
  position?: number;
}

/** One row of a last-position recomputation: a prompt of the clean batch, from stage `start` on. */
export interface LastPositionRow {
  prompt: number;
  /** Residual entering stage `start`. */
  resid: Float32Array;
  start: number;
}

const MASKED = -1e30;

/**
 * A causal LM as a chain of onnxruntime sessions (embedding, one per attention block,
 * one per MLP block, unembedding), run in the order of its residual plan, with every
 * component addressable between them.
 */
export class HookedModel {
  private stepSessions: Session[] = [];
  private headStepSessions: Session[] = [];
  readonly plan: ResidualPlan;

  private constructor(
    readonly source: ResolvedModel,
    readonly spec: ArchSpec,
    readonly weights: ModelWeights,
    readonly tokenizer: HydraTokenizer | null,
    private readonly embedSession: Session,
    private readonly attnSessions: Session[],
    private readonly mlpSessions: Session[],
    private readonly unembedSession: Session,
    private readonly engine: EngineOptions,
    private readonly wteTensor: ort.Tensor,
    private readonly wpeTensor: ort.Tensor | null,
  ) {
    this.plan = new ResidualPlan(spec, weights);
  }

  static async load(model: string, opts: LoadOptions = {}): Promise<HookedModel> {
    const source = await resolveModel(model, opts);
    const config = readConfig(source.dir);
    const family = familyFor(config);
    const spec = archSpec(family, config);
    const store = WeightStore.open(source.dir);
    validateLayers(store.names(), spec, config._path);
    const weights = family.weights(store, spec, config);
    const tokenizer = hasTokenizer(source.dir) ? await loadTokenizer(source.dir) : null;
    const L = [...Array(spec.nLayers).keys()];
    const [embed, unembed, attn, mlp] = await Promise.all([
      createSession(embedGraph(spec, weights), opts),
      createSession(unembedGraph(spec, weights), opts),
      Promise.all(L.map((l) => createSession(attentionGraph(spec, weights.layers[l], l), opts))),
      Promise.all(L.map((l) => createSession(mlpGraph(spec, weights.layers[l], l), opts))),
    ]);
    const wte = f32(weights.wte, [spec.vocab, spec.dModel]);
    const wpe = weights.wpe ? f32(weights.wpe, [weights.wpe.length / spec.dModel, spec.dModel]) : null;
    return new HookedModel(source, spec, weights, tokenizer, embed, attn, mlp, unembed, opts, wte, wpe);
  }

  /** Check a prompt before running it: not empty, ids in the vocabulary, within the context. */
  checkPrompt(ids: number[], label = 'prompt'): void {
    if (ids.length === 0) throw new HydraError(`${label} is empty; give at least one token`);
    if (ids.length > this.spec.nCtx) throw new HydraError(`${label} has ${ids.length} tokens, longer than the model's context of ${this.spec.nCtx}; shorten it`);
    const bad = ids.find((t) => !Number.isInteger(t) || t < 0 || t >= this.spec.vocab);
    if (bad !== undefined) throw new HydraError(`${label}: token id ${bad} is outside the vocabulary (0..${this.spec.vocab - 1})`);
  }

  /** Tokenize text with the model's tokenizer. */
  encode(text: string): number[] {
    if (!this.tokenizer) throw new HydraError(`${this.source.dir} has no tokenizer.json; pass token ids (--ids) instead of text`);
    return this.tokenizer.encode(text);
  }

  /** Forward pass over a batch of prompts of any lengths (right-padded together), running the plan's stages. */
  async forward(prompts: number[][], opts: ForwardOptions = {}): Promise<{ prompts: PromptActivations[]; cache: KVCache }> {
    prompts.forEach((ids, b) => this.checkPrompt(ids, prompts.length > 1 ? `prompt ${b}` : 'prompt'));
    const { dModel: d } = this.spec;
    const B = prompts.length;
    const T = Math.max(...prompts.map((p) => p.length));
    const lengths = prompts.map((p) => p.length);
    const last = (b: number) => lengths[b] - 1;
    const patches = this.checkInterventions(opts.interventions, lengths);

    const embed = await this.embed(prompts, T);
    opts.embedAdd?.forEach((noise, b) => {
      if (noise) for (let i = 0; i < lengths[b] * d; i++) embed[b * T * d + i] += noise[i];
    });

    const out: PromptActivations[] = prompts.map((ids) => ({
      ids,
      logits: new Float32Array(0),
      token: -1,
      sigma: NaN,
      z: new Float32Array(d),
      components: new Map(),
      sites: new Map(),
      positions: opts.allPositions ? new Map() : undefined,
      stageIn: [],
      attnPre: [],
    }));
    const lastRow = (full: Float32Array, b: number) => full.slice((b * T + last(b)) * d, (b * T + last(b) + 1) * d);
    const record = (name: string, full: Float32Array) => {
      for (let b = 0; b < B; b++) {
        out[b].components.set(name, lastRow(full, b));
        out[b].positions?.set(name, full.slice(b * T * d, (b * T + lengths[b]) * d));
      }
    };

    this.replaceRows('embed', embed, patches, T);
    record('embed', embed);
    const resid = Float32Array.from(embed);
    const cache: KVCache = { lengths, T, k: [], v: [] };
    const attnInputs = this.attentionInputs(lengths, T);
    for (const stage of this.plan.stages) {
      for (let b = 0; b < B; b++) out[b].stageIn.push(lastRow(resid, b));
      const outputs: Float32Array[] = [];
      for (const block of stage) {
        const o = block.kind === 'attn' ? await this.runAttention(block, resid, attnInputs, patches, out, cache, !!opts.heads) : await this.runMlp(block.layer, resid, B * T);
        if (block.kind === 'mlp') this.replaceRows(block.component, o, patches, T);
        record(block.component, o);
        outputs.push(o);
      }
      for (const o of outputs) addInto(resid, o);
    }

    const zLast = new Float32Array(B * d);
    for (let b = 0; b < B; b++) {
      out[b].z = lastRow(resid, b);
      zLast.set(out[b].z, b * d);
      out[b].sigma = this.normScale(out[b].z);
    }
    const logits = await this.logits(zLast, B);
    for (let b = 0; b < B; b++) {
      out[b].logits = logits.slice(b * this.spec.vocab, (b + 1) * this.spec.vocab);
      out[b].token = argmax(out[b].logits);
    }
    return { prompts: out, cache };
  }

  /** Token (+ position) embedding of right-padded prompts: [B, T, d]. */
  private async embed(prompts: number[][], T: number): Promise<Float32Array> {
    const B = prompts.length;
    const ids = new BigInt64Array(B * T);
    const pos = new BigInt64Array(B * T);
    prompts.forEach((p, b) => p.forEach((t, i) => (ids[b * T + i] = BigInt(t))));
    for (let b = 0; b < B; b++) for (let i = 0; i < T; i++) pos[b * T + i] = BigInt(i + this.spec.posOffset);
    const feeds: Record<string, ort.Tensor> = { ids: i64(ids, [B, T]), wte: this.wteTensor };
    if (this.wpeTensor) Object.assign(feeds, { pos: i64(pos, [B, T]), wpe: this.wpeTensor });
    return (await this.embedSession.run(feeds)).out.data as Float32Array;
  }

  /** Masks (one per window size) and rotary tables (one per rotary spec) of a batch, keyed as attentionFeeds reads them. */
  private attentionInputs(lengths: number[], T: number): Map<string, ort.Tensor> {
    const B = lengths.length;
    const inputs = new Map<string, ort.Tensor>();
    for (const { window, rope } of this.spec.layers) {
      const mk = `mask:${window}`;
      if (!inputs.has(mk)) inputs.set(mk, f32(this.causalMask(lengths, T, window), [B, 1, 1, T, T]));
      const rk = ropeKey(rope);
      if (rope && !inputs.has(`cos:${rk}`)) {
        const positions = lengths.flatMap(() => [...Array(T).keys()]);
        const seqLens = lengths.flatMap((len) => new Array<number>(T).fill(len));
        const { cos, sin } = ropeTables(rope, positions, seqLens);
        inputs.set(`cos:${rk}`, f32(cos, [B, 1, 1, T, rope.dim]));
        inputs.set(`sin:${rk}`, f32(sin, [B, 1, 1, T, rope.dim]));
      }
    }
    return inputs;
  }

  /** Run attention block l over the batch: record its keys/values, patch its rows, record its heads. */
  private async runAttention(
    block: BlockStep,
    resid: Float32Array,
    inputs: Map<string, ort.Tensor>,
    patches: Map<number, Intervention[]>[],
    out: PromptActivations[],
    cache: KVCache,
    heads: boolean,
  ): Promise<Float32Array> {
    const l = block.layer;
    const { dModel: d } = this.spec;
    const { lengths, T } = cache;
    const B = lengths.length;
    const { window, rope } = this.spec.layers[l];
    const feeds: Record<string, ort.Tensor> = { x: f32(resid, [B, T, d]), mask: inputs.get(`mask:${window}`)! };
    if (rope) Object.assign(feeds, { cos: inputs.get(`cos:${ropeKey(rope)}`)!, sin: inputs.get(`sin:${ropeKey(rope)}`)! });
    const res = await this.attnSessions[l].run(feeds);
    cache.k.push(res.k);
    cache.v.push(res.v);
    const a = res.out.data as Float32Array;
    const z = res.z.data as Float32Array;
    const pre = (res.pre?.data as Float32Array | undefined) ?? a;
    const isPart = (iv: Intervention) => /^(head|attn_bias)\./.test(iv.component) && parseComponent(iv.component).layer === l;
    for (let b = 0; b < B; b++) {
      const rows = !heads ? [] : out[b].positions ? [...Array(lengths[b]).keys()] : [lengths[b] - 1];
      const patched = [...patches[b].keys()].filter((t) => patches[b].get(t)!.some(isPart));
      const all = [...new Set([...rows, ...patched])].sort((x, y) => x - y);
      for (const t of all) {
        const row = b * T + t;
        const parts = this.attentionParts(l, z, pre, row, patches[b].get(t)?.filter(isPart) ?? []);
        if (parts.patched) a.set(parts.out, row * d);
        if (rows.includes(t)) this.recordParts(out[b], l, parts, t, lengths[b]);
      }
      if (this.weights.layers[l].attnPostNorm) out[b].attnPre.push(pre.slice((b * T + lengths[b] - 1) * d, (b * T + lengths[b]) * d));
    }
    this.replaceRows(block.component, a, patches, T);
    return a;
  }

  /**
   * One row of attention layer l split into its parts (each head's z_h W_O[h], then the output
   * bias), with patched parts replaced. `sites` are the parts as an intervention replaces them,
   * `components` what each adds to the residual (post-norm: site / s ⊙ g), `out` the layer's output.
   */
  private attentionParts(l: number, z: Float32Array, pre: Float32Array, row: number, patches: Intervention[]) {
    const { nHeads: H, dModel: d } = this.spec;
    const lw = this.weights.layers[l];
    const sites: Float32Array[] = [];
    for (let h = 0; h < H; h++) sites.push(this.headOutput(l, h, z, row));
    sites.push(Float32Array.from(lw.bo ?? new Float32Array(d)));
    const preRow = pre.slice(row * d, (row + 1) * d);
    for (const iv of patches) {
      const c = parseComponent(iv.component);
      const i = c.kind === 'head' ? c.head : H;
      for (let j = 0; j < d; j++) preRow[j] += iv.value[j] - sites[i][j];
      sites[i] = Float32Array.from(iv.value);
    }
    const post = lw.attnPostNorm;
    if (!post) return { sites, components: sites, out: preRow, patched: patches.length > 0 };
    const scale = this.normScaleWith(preRow);
    return { sites, components: sites.map((s) => scaleBy(s, scale, post.g)), out: scaleBy(preRow, scale, post.g), patched: patches.length > 0 };
  }

  /** Record a row's heads and output bias as components (and their sites when they differ). */
  private recordParts(p: PromptActivations, l: number, parts: ReturnType<HookedModel['attentionParts']>, t: number, len: number): void {
    const d = this.spec.dModel;
    const names = [...Array(this.spec.nHeads).keys()].map((h) => headName(l, h)).concat(attnBiasName(l));
    names.forEach((name, i) => {
      if (t === len - 1) {
        p.components.set(name, parts.components[i]);
        if (parts.sites !== parts.components) p.sites.set(name, parts.sites[i]);
      }
      if (p.positions) {
        if (!p.positions.has(name)) p.positions.set(name, new Float32Array(len * d));
        p.positions.get(name)!.set(parts.components[i], t * d);
      }
    });
  }

  /** Interventions by prompt and position, checked once. */
  private checkInterventions(all: Intervention[][] | undefined, lengths: number[]): Map<number, Intervention[]>[] {
    return lengths.map((len, b) => {
      const byPos = new Map<number, Intervention[]>();
      for (const iv of all?.[b] ?? []) {
        const t = iv.position ?? len - 1;
        if (!Number.isInteger(t) || t < 0 || t >= len) throw new HydraError(`intervention on ${iv.component}: position ${t} is outside prompt ${b} (length ${len})`);
        parseComponent(iv.component, this.spec);
        if (iv.value.length !== this.spec.dModel) throw new HydraError(`intervention on ${iv.component}: the value has ${iv.value.length} entries; the model's width is ${this.spec.dModel}`);
        byPos.set(t, [...(byPos.get(t) ?? []), iv]);
      }
      return byPos;
    });
  }

  /** Replace the rows of block output `name` that an intervention sets outright. */
  private replaceRows(name: string, full: Float32Array, patches: Map<number, Intervention[]>[], T: number): void {
    const d = this.spec.dModel;
    patches.forEach((byPos, b) => {
      for (const [t, list] of byPos) for (const iv of list) if (iv.component === name) full.set(iv.value, (b * T + t) * d);
    });
  }

  /** z_{l,h} W_O[h] at one row of z [N, H*dh]. */
  headOutput(l: number, h: number, z: ArrayLike<number>, row: number): Float32Array {
    const { nHeads: H, dHead: dh, dModel: d } = this.spec;
    const wo = this.weights.layers[l].wo;
    const out = new Float32Array(d);
    for (let i = 0; i < dh; i++) {
      const zi = z[row * H * dh + h * dh + i];
      const wRow = (h * dh + i) * d;
      for (let j = 0; j < d; j++) out[j] += zi * wo[wRow + j];
    }
    return out;
  }

  /** Final norm and unembedding of residuals z [N, d]: raw logits [N, V]. */
  async logits(z: Float32Array, n: number): Promise<Float32Array> {
    return (await this.unembedSession.run({ z: f32(z, [n, this.spec.dModel]) })).logits.data as Float32Array;
  }

  /** σ(z): the final norm's scale (population variance for LayerNorm). */
  normScale(z: ArrayLike<number>): number {
    return this.normScaleWith(z);
  }

  private normScaleWith(z: ArrayLike<number>): number {
    const n = z.length;
    let mean = 0;
    if (this.spec.norm === 'layernorm') {
      for (let i = 0; i < n; i++) mean += z[i];
      mean /= n;
    }
    let ss = 0;
    for (let i = 0; i < n; i++) ss += (z[i] - mean) ** 2;
    return Math.sqrt(ss / n + this.spec.normEps);
  }

  /** Names of the layer partition: embed, attn.0, mlp.0, ... */
  layerComponents(): string[] {
    return layerComponents(this.spec);
  }

  /** The MLP block's output m_l for rows x [n, d]. */
  async runMlp(l: number, x: Float32Array, n: number): Promise<Float32Array> {
    const d = this.spec.dModel;
    const rows = f32(x, [n, 1, d]);
    const res = await this.mlpSessions[l].run({ x: rows, base: rows, qs: f32(new Float32Array(d), [1, d]) }, { out: null });
    return res.out.data as Float32Array;
  }

  /** Additive attention mask [B, 1, 1, T, T]: causal, padded keys masked, and a window W where given (i − W < j ≤ i). */
  causalMask(lengths: number[], T: number, window: number | null): Float32Array {
    const m = new Float32Array(lengths.length * T * T);
    lengths.forEach((len, b) => {
      for (let i = 0; i < T; i++)
        for (let j = 0; j < T; j++) if (j > i || j >= len || (window !== null && i - j >= window)) m[(b * T + i) * T + j] = MASKED;
    });
    return m;
  }

  /**
   * Recompute only the last position of clean-batch prompts, each row from its own start
   * stage on, attending to the clean keys and values (the fast path's engine). `readout[p]`
   * (width d) is dotted with every recomputed block's output, and with `heads` with every
   * head's component. Returns each row's final residual and those readouts by component.
   *
   * Layout: rows live in one buffer of slots × groups × d, a group per prompt (the attention
   * step shares a prompt's cached keys/values across its group). Rows get slots in the order
   * their recomputation starts, so the rows a stage computes are always a prefix of the
   * buffer; each block's session writes the residual after it (and the readouts) straight
   * into the next buffer. No row is copied between blocks.
   */
  async recomputeLast(cache: KVCache, rows: LastPositionRow[], readout: Float32Array[], heads: boolean): Promise<{ z: Float32Array; de: Record<string, number> }[]> {
    const { spec, plan } = this;
    const d = spec.dModel;
    const stages = plan.stages.length;
    const groupPrompts = [...new Set(rows.map((r) => r.prompt))].sort((a, b) => a - b);
    const P = groupPrompts.length;
    const groupOf = new Map(groupPrompts.map((p, i) => [p, i]));
    // Stage s owns slots [offset[s], offset[s] + width[s]): as many as the group with most rows starting there needs.
    const counts = Array.from({ length: stages }, () => new Array<number>(P).fill(0));
    const slotInStage = rows.map((r) => (r.start < stages ? counts[r.start][groupOf.get(r.prompt)!]++ : -1));
    const width = counts.map((c) => Math.max(0, ...c));
    const offset: number[] = [];
    let slots = 0;
    for (let s = 0; s < stages; s++) {
      offset.push(slots);
      slots += width[s];
    }
    const at = rows.map((r, k) => (slotInStage[k] < 0 ? -1 : (offset[r.start] + slotInStage[k]) * P + groupOf.get(r.prompt)!));
    const rowAt = new Int32Array(slots * P).fill(-1);
    at.forEach((b, k) => b >= 0 && (rowAt[b] = k));
    const startingAt = Array.from({ length: stages }, () => [] as number[]);
    rows.forEach((r, k) => at[k] >= 0 && startingAt[r.start].push(k));

    const fixed = this.stepInputs(cache, groupPrompts, readout);
    const de = rows.map(() => ({}) as Record<string, number>);
    const maxBlocks = Math.max(...plan.stages.map((s) => s.length));
    const bufs = Array.from({ length: maxBlocks + 1 }, () => new Float32Array(slots * P * d));
    let cur = 0;
    let n = 0;
    const view = (b: number) => f32(bufs[b].subarray(0, n * P * d), [n, P, d]);
    const record = (names: string[], values: Float32Array) => {
      const per = names.length;
      for (let b = 0; b < n * P; b++) {
        const k = rowAt[b];
        if (k >= 0) for (let h = 0; h < per; h++) de[k][names[h]] = values[b * per + h];
      }
    };
    for (let s = 0; s < stages; s++) {
      for (const k of startingAt[s]) bufs[cur].set(rows[k].resid, at[k] * d);
      n = offset[s] + width[s];
      if (n === 0) continue;
      // Every block of the stage reads bufs[cur]; each adds its output to the previous block's result.
      let base = cur;
      for (const block of plan.stages[s]) {
        const to = (base + 1) % bufs.length === cur ? (base + 2) % bufs.length : (base + 1) % bufs.length;
        if (block.kind === 'attn') {
          const l = block.layer;
          const step = await this.attentionStep(l, heads);
          const feeds = { ...fixed.common, ...fixed.layer[l], x: view(cur), base: view(base), pastK: cache.k[l], pastV: cache.v[l] };
          const res = await step.run(feeds, { resid: view(to), de: null, ...(heads ? { deHeads: null } : {}) });
          record([block.component], res.de.data as Float32Array);
          if (heads) record([...Array(spec.nHeads).keys()].map((h) => headName(l, h)), res.deHeads.data as Float32Array);
        } else {
          const res = await this.mlpSessions[block.layer].run({ x: view(cur), base: view(base), qs: fixed.common.qs }, { resid: view(to), de: null });
          record([block.component], res.de.data as Float32Array);
        }
        base = to;
      }
      cur = base;
    }
    const final = bufs[cur];
    return rows.map((r, k) => ({ z: at[k] < 0 ? r.resid : final.slice(at[k] * d, (at[k] + 1) * d), de: de[k] }));
  }

  /** The attention step's per-group inputs: prompt index, readout, and per layer its mask, rotary tables and head readouts. */
  private stepInputs(cache: KVCache, groupPrompts: number[], readout: Float32Array[]) {
    const { spec } = this;
    const { dModel: d, nHeads: H, dHead: dh } = spec;
    const P = groupPrompts.length;
    const T = cache.T;
    const qs = new Float32Array(P * d);
    groupPrompts.forEach((p, i) => qs.set(readout[p], i * d));
    const common: Record<string, ort.Tensor> = { prompt: i64(BigInt64Array.from(groupPrompts.map(BigInt)), [P]), qs: f32(qs, [P, d]) };
    const masks = new Map<number | null, ort.Tensor>();
    const ropes = new Map<string, Record<string, ort.Tensor>>();
    const maskFor = (w: number | null) => {
      if (!masks.has(w)) {
        // Past keys j < t the position t sees (i − W < j within a window), then its own key.
        const m = new Float32Array(P * (T + 1)).fill(MASKED);
        groupPrompts.forEach((p, i) => {
          const t = cache.lengths[p] - 1;
          m.fill(0, i * (T + 1) + (w === null ? 0 : Math.max(0, t - w + 1)), i * (T + 1) + t);
          m[i * (T + 1) + T] = 0;
        });
        masks.set(w, f32(m, [P, 1, 1, T + 1]));
      }
      return masks.get(w)!;
    };
    const ropeFor = (rope: RopeSpec) => {
      const key = ropeKey(rope);
      if (!ropes.has(key)) {
        const lens = groupPrompts.map((p) => cache.lengths[p]);
        const { cos, sin } = ropeTables(rope, lens.map((len) => len - 1), lens);
        ropes.set(key, { cos: f32(cos, [P, 1, 1, 1, rope.dim]), sin: f32(sin, [P, 1, 1, 1, rope.dim]) });
      }
      return ropes.get(key)!;
    };
    const layer = spec.layers.map(({ window, rope }, l) => {
      const feeds: Record<string, ort.Tensor> = { mask: maskFor(window), ...(rope ? ropeFor(rope) : {}) };
      // Head h's readout through the output projection: W_O[h] (g ⊙ r), g the post-norm's gain if any.
      const lw = this.weights.layers[l];
      const u = new Float32Array(P * H * dh);
      groupPrompts.forEach((p, i) => {
        const r = lw.attnPostNorm ? readout[p].map((v, j) => v * lw.attnPostNorm!.g[j]) : readout[p];
        for (let row = 0; row < H * dh; row++) {
          let s = 0;
          for (let j = 0; j < d; j++) s += lw.wo[row * d + j] * r[j];
          u[i * H * dh + row] = s;
        }
      });
      feeds.u = f32(u, [P, H * dh]);
      return feeds;
    });
    return { common, layer };
  }

  /** Session for one attention block run at a single new position per row, with or without per-head readouts (built on first use). */
  private async attentionStep(l: number, heads: boolean): Promise<Session> {
    const sessions = heads ? this.headStepSessions : this.stepSessions;
    if (!sessions[l]) sessions[l] = await createSession(attentionStepGraph(this.spec, this.weights.layers[l], l, heads), this.engine);
    return sessions[l];
  }
}

/** What an intervention on `name` replaces in this run: the component, or a post-norm head's pre-norm output. */
export function interventionSite(acts: CleanLast, name: string): Float32Array {
  return acts.sites.get(name) ?? acts.components.get(name)!;
}

export function addInto(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}
