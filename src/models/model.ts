import { attnInGraph, attnMixGraph, attnOutGraph, attnStepMixGraph, mlpGraph, unembedGraph } from '../engine/blocks.js';
import { ropeKey, ropeTables } from '../engine/rope.js';
import { createBlock, f32, i64, ort, ReusedBuffers, WeightFeeder, type Block, type EngineOptions, type SessionCache } from '../engine/runtime.js';
import type { ArchSpec, LayerVectors, LayerWeights, ModelWeights, NormWeights, RopeSpec } from '../engine/spec.js';
import os from 'node:os';
import { matrixBytes, meanRow, rowsOf, rowValues, type Matrix, type WeightDType } from '../io/matrix.js';
import { HydraError } from '../io/errors.js';
import { resolveModel, type ResolvedModel, type ResolveOptions } from '../io/hub.js';
import { WeightStore } from '../io/safetensors.js';
import { hasTokenizer, loadTokenizer, type HydraTokenizer } from '../io/tokenizer.js';
import { attnBiasName, attnName, headName, layerComponents, parseComponent } from './components.js';
import { normScaleOf, ResidualPlan, scaleBy, type BlockStep, type CleanLast, type Patch } from './plan.js';
import { familyFor, readConfig } from './registry.js';
import { archSpec, validateLayers } from './validate.js';

export type WeightsDtype = 'float32' | 'bfloat16' | 'float16';
export const WEIGHTS_DTYPES: Record<WeightsDtype, WeightDType> = { float32: 'F32', bfloat16: 'BF16', float16: 'F16' };

export interface LoadOptions extends EngineOptions, ResolveOptions {
  /**
   * Hold the weights in this dtype (default: each tensor's own, as the checkpoint stores it).
   * float32 costs twice the memory of a two-byte checkpoint and saves widening them at each
   * run; narrowing a float32 checkpoint rounds its weights (a slightly different model).
   */
  weightsDtype?: WeightsDtype;
  /** Bytes the model may use (default: the memory the system has available now). */
  memoryLimit?: number;
}

/** Node, onnxruntime and a forward pass's activations, beyond the weights (measured: ~0.15–0.3 GB). */
const BASE_BYTES = 0.3 * 2 ** 30;

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
  /** Patches applied when their stage is reached (a joint ablation's later members; plan.startRow's `later`). */
  later?: Patch[];
}

const MASKED = -1e30;

/**
 * A causal LM as a chain of onnxruntime sessions (embedding, one per attention block,
 * one per MLP block, unembedding), run in the order of its residual plan, with every
 * component addressable between them.
 */
/** One layer's sessions: the attention block's three (projection, mixing for whole prompts or one position, output) and the MLP's. */
interface LayerSessions {
  attnIn: Block;
  attnMix: Block;
  attnStepMix: Block;
  attnOut: Block;
  mlp: Block;
}

/** The model's two ends: its tables (held once, at their stored width), and what the readout derives from them. */
export interface Ends {
  wte: Matrix;
  wpe: Matrix | null;
  wU: Matrix;
  bU: Float32Array | null;
  lnF: NormWeights;
  /** mean_j W_U[j], in float64 (for the centred readout). */
  meanRow: Float64Array;
}

/** Vocabulary rows per unembedding run: bounds the widened copy of a two-byte unembedding. */
const VOCAB_CHUNK = 32768;

export class HookedModel {
  readonly plan: ResidualPlan;

  private constructor(
    readonly source: ResolvedModel,
    readonly spec: ArchSpec,
    /** Each layer's small tensors (norm gains, biases); the matrices live in the sessions only. */
    readonly layers: LayerVectors[],
    readonly unembed: Ends,
    readonly tokenizer: HydraTokenizer | null,
    private readonly unembedBlock: Block,
    private readonly sessions: LayerSessions[],
    /** Bytes of the weight matrices the model holds, at their stored width. */
    readonly weightBytes: number,
    private readonly feeder: WeightFeeder,
    /** The options sessions were built with (for sessions built on request). */
    private readonly engine: EngineOptions = {},
    /** Sessions shared by layers whose graphs are the same (also for sessions built on request). */
    private readonly sessionCache: SessionCache = new Map(),
  ) {
    this.plan = new ResidualPlan(spec, layers);
  }

  /** MLP graphs with neuron readouts, built on request (mlpNeurons), reusing the MLP's weights. */
  private readonly neuronBlocks = new Map<number, Promise<Block>>();
  private readonly lastBuffers = new ReusedBuffers();
  private readonly forwardBuffers = new ReusedBuffers();

  /**
   * Load a model. Every weight matrix is read from the checkpoint once, at its stored width
   * (two bytes a value for float16/bfloat16 checkpoints), and held by the model; the
   * sessions take the matrices as inputs at each run (see WeightFeeder), so nothing is
   * copied into onnxruntime and loading is reading the file and building small graphs.
   */
  static async load(model: string, opts: LoadOptions = {}): Promise<HookedModel> {
    const source = await resolveModel(model, opts);
    const config = readConfig(source.dir);
    const family = familyFor(config);
    const spec = archSpec(family, config);
    if (opts.weightsDtype !== undefined && !(opts.weightsDtype in WEIGHTS_DTYPES))
      throw new HydraError(`weightsDtype '${String(opts.weightsDtype)}' is not one of ${Object.keys(WEIGHTS_DTYPES).join(', ')}`);
    const store = WeightStore.open(source.dir, opts.weightsDtype ? WEIGHTS_DTYPES[opts.weightsDtype] : null);
    validateLayers(store.names(), spec, config._path);
    checkMemory(spec, store, opts);
    const weights = family.weights(store, spec, config);
    const tokenizer = hasTokenizer(source.dir) ? await loadTokenizer(source.dir) : null;
    const { wte, wpe, wU, bU, lnF } = weights;
    let bytes = matrixBytes(wU) + (wte === wU ? 0 : matrixBytes(wte)) + (wpe ? matrixBytes(wpe) : 0);
    const ends: Ends = { wte, wpe, wU, bU, lnF, meanRow: meanRow(wU) };
    const feeder = new WeightFeeder();
    const unembedBlock = await createBlock(unembedGraph(spec, lnF), opts, feeder);
    const sessionCache: SessionCache = new Map();
    const layers: LayerVectors[] = [];
    const sessions: LayerSessions[] = [];
    for (let l = 0; l < spec.nLayers; l++) {
      // One layer at a time, so that only one layer's matrices are ever in JavaScript.
      const lw = weights.layer(l);
      const [attnIn, attnMix, attnStepMix, attnOut, mlp] = await Promise.all([
        createBlock(attnInGraph(spec, lw, l), opts, feeder, sessionCache),
        createBlock(attnMixGraph(spec, lw, l), opts, feeder, sessionCache),
        createBlock(attnStepMixGraph(spec, lw, l), opts, feeder, sessionCache),
        createBlock(attnOutGraph(spec, lw, l), opts, feeder, sessionCache),
        createBlock(mlpGraph(spec, lw, l), opts, feeder, sessionCache),
      ]);
      sessions.push({ attnIn, attnMix, attnStepMix, attnOut, mlp });
      layers.push(vectorsOf(lw));
      bytes += layerMatrices(lw).reduce((s, m) => s + matrixBytes(m), 0);
    }
    return new HookedModel(source, spec, layers, ends, tokenizer, unembedBlock, sessions, bytes, feeder, opts, sessionCache);
  }

  /** Whether runs widen two-byte weight matrices to float32 (held as bfloat16 or float16). */
  get widensWeights(): boolean {
    return this.sessions.some((s) => s.mlp.weights.some(([, m]) => m.dtype !== 'F32'));
  }

  /** Distinct onnxruntime sessions the layers run on (layers of the same shape share one; each keeps one arena). */
  get layerSessionCount(): number {
    return this.sessionCache.size;
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
    if (!this.tokenizer) throw new HydraError(`${this.source.dir} has no tokenizer.json; pass token ids (\`ids\`) instead of text`);
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

    const embed = this.embed(prompts, T);
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

  /**
   * Token (+ position) embedding of right-padded prompts: [B, T, d], read from the tables in
   * float32 arithmetic (e·scale, then + position), as a graph would; padding rows stay 0.
   */
  private embed(prompts: number[][], T: number): Float32Array {
    const { dModel: d, embedScale, posOffset } = this.spec;
    const { wte, wpe } = this.unembed;
    const out = new Float32Array(prompts.length * T * d);
    prompts.forEach((ids, b) =>
      ids.forEach((id, t) => {
        const row = out.subarray((b * T + t) * d, (b * T + t + 1) * d);
        row.set(rowValues(wte, id));
        if (embedScale !== null) for (let j = 0; j < d; j++) row[j] *= embedScale;
        if (wpe) {
          const p = rowValues(wpe, t + posOffset);
          for (let j = 0; j < d; j++) row[j] += p[j];
        }
      }),
    );
    return out;
  }

  /** Unembedding rows W_U[t] of the tokens (float32). */
  async unembedRows(tokens: number[]): Promise<Float32Array[]> {
    return tokens.map((t) => rowValues(this.unembed.wU, t));
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
    const { dModel: d, nHeads: H, dHead: dh } = this.spec;
    const { lengths, T } = cache;
    const B = lengths.length;
    const { window, rope } = this.spec.layers[l];
    const s = this.sessions[l];
    const x = f32(resid, [B, T, d]);
    // The projections go to a buffer kept between layers and batches: only the mix reads them.
    const wide = (H + 2 * this.spec.nKvHeads) * dh;
    const mix = await this.forwardBuffers.use([B * T * wide], async ([buf]) => {
      const { qkv } = await s.attnIn.run({ x }, { qkv: f32(buf, [B, T, wide]) });
      const mixFeeds: Record<string, ort.Tensor> = { qkv, mask: inputs.get(`mask:${window}`)! };
      if (rope) Object.assign(mixFeeds, { cos: inputs.get(`cos:${ropeKey(rope)}`)!, sin: inputs.get(`sin:${ropeKey(rope)}`)! });
      return s.attnMix.run(mixFeeds);
    });
    cache.k.push(mix.k);
    cache.v.push(mix.v);
    const z = mix.z.data as Float32Array;
    // Rows to split into heads: those recorded with heads, and those a head or bias patch hits.
    const isPart = (iv: Intervention) => {
      const c = parseComponent(iv.component);
      return (c.kind === 'head' || c.kind === 'attn_bias') && c.layer === l;
    };
    const wanted: { b: number; t: number; record: boolean }[] = [];
    for (let b = 0; b < B; b++) {
      const rows = !heads ? [] : out[b].positions ? [...Array(lengths[b]).keys()] : [lengths[b] - 1];
      const patched = [...patches[b].keys()].filter((t) => patches[b].get(t)!.some(isPart));
      for (const t of [...new Set([...rows, ...patched])].sort((u, v) => u - v)) wanted.push({ b, t, record: rows.includes(t) });
    }
    const zRows = new Float32Array(wanted.length * H * dh);
    wanted.forEach(({ b, t }, i) => zRows.set(z.subarray((b * T + t) * H * dh, (b * T + t + 1) * H * dh), i * H * dh));
    const res = await s.attnOut.run({ z: mix.z, base: x, qs: f32(new Float32Array(d), [1, d]), zRows: f32(zRows, [wanted.length, H * dh]) }, this.partsFetches(l));
    const a = res.out.data as Float32Array;
    const pre = (res.pre?.data as Float32Array | undefined) ?? a;
    const headOut = res.heads.data as Float32Array;
    wanted.forEach(({ b, t, record }, i) => {
      const row = b * T + t;
      const parts = this.attentionParts(l, headOut.subarray(i * H * d, (i + 1) * H * d), pre, row, patches[b].get(t)?.filter(isPart) ?? []);
      if (parts.patched) a.set(parts.out, row * d);
      if (record) this.recordParts(out[b], l, parts, t, lengths[b]);
    });
    if (this.layers[l].attnPostNorm) for (let b = 0; b < B; b++) out[b].attnPre.push(pre.slice((b * T + lengths[b] - 1) * d, (b * T + lengths[b]) * d));
    this.replaceRows(block.component, a, patches, T);
    return a;
  }

  /**
   * One row of attention layer l split into its parts (each head's z_h W_O[h] from `heads`
   * [H, d], then the output bias), with patched parts replaced. `sites` are the parts as an
   * intervention replaces them, `components` what each adds to the residual (post-norm:
   * site / s ⊙ g), `out` the layer's output.
   */
  private attentionParts(l: number, heads: Float32Array, pre: Float32Array, row: number, patches: Intervention[]) {
    const { nHeads: H, dModel: d } = this.spec;
    const lw = this.layers[l];
    const sites: Float32Array[] = [];
    for (let h = 0; h < H; h++) sites.push(heads.slice(h * d, (h + 1) * d));
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
    const scale = this.normScale(preRow);
    return { sites, components: sites.map((v) => scaleBy(v, scale, post.g)), out: scaleBy(preRow, scale, post.g), patched: patches.length > 0 };
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

  /** Final norm and unembedding of residuals z [N, d]: raw logits [N, V]. */
  async logits(z: Float32Array, n: number): Promise<Float32Array> {
    const { vocab: V, dModel: d } = this.spec;
    const { wU, bU } = this.unembed;
    const logits = new Float32Array(n * V);
    const zs = f32(z.subarray(0, n * d), [n, d]);
    // The vocabulary in chunks, so that a two-byte unembedding is widened a chunk at a time.
    for (let v0 = 0; v0 < V; v0 += VOCAB_CHUNK) {
      const v1 = Math.min(V, v0 + VOCAB_CHUNK);
      const bias = bU ? bU.slice(v0, v1) : new Float32Array(v1 - v0);
      const res = await this.unembedBlock.run({ z: zs, bU: f32(bias, [v1 - v0]) }, undefined, [['wU', rowsOf(wU, v0, v1)]]);
      const part = res.logits.data as Float32Array;
      for (let r = 0; r < n; r++) logits.set(part.subarray(r * (v1 - v0), (r + 1) * (v1 - v0)), r * V + v0);
    }
    return logits;
  }

  /** σ(z): the final norm's scale (population variance for LayerNorm). */
  normScale(z: ArrayLike<number>): number {
    return normScaleOf(z, this.spec);
  }

  /** Names of the layer partition: embed, attn.0, mlp.0, ... */
  layerComponents(): string[] {
    return layerComponents(this.spec);
  }

  /** The MLP block's output m_l for rows x [n, d]. */
  async runMlp(l: number, x: Float32Array, n: number): Promise<Float32Array> {
    const d = this.spec.dModel;
    const rows = f32(x, [n, 1, d]);
    const res = await this.sessions[l].mlp.run({ x: rows, base: rows, qs: f32(new Float32Array(d), [1, d]) }, { out: null });
    return res.out.data as Float32Array;
  }

  /**
   * The neurons of MLP layer l on rows x [n, d] (each the residual entering the layer's
   * stage), each row read out with its own vector readout [n, d]: per row, every neuron's
   * share of the block's readout: [n, dMlp] (a_n · W_down[:, n] · r; after an RMS post-norm,
   * at the row's own norm scale).
   */
  async mlpNeurons(l: number, x: Float32Array, readout: Float32Array, n: number): Promise<Float32Array> {
    const d = this.spec.dModel;
    if (!this.neuronBlocks.has(l)) {
      const m = new Map(this.sessions[l].mlp.weights);
      const lw = { ...this.layers[l], wUp: m.get('wUp')!, wGate: m.get('wGate') ?? null, wDown: m.get('wDown')! };
      this.neuronBlocks.set(l, createBlock(mlpGraph(this.spec, lw, l, true), this.engine, this.feeder, this.sessionCache));
    }
    const block = await this.neuronBlocks.get(l)!;
    const rows = f32(x.subarray(0, n * d), [1, n, d]);
    const res = await block.run({ x: rows, base: rows, qs: f32(readout.subarray(0, n * d), [n, d]) }, { deNeurons: null });
    return res.deNeurons.data as Float32Array;
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
   *
   * A row's `later` patches replace its block outputs where their stage is reached (the
   * residual after the block becomes the one before it plus the patched output); `values`
   * returns what they set, with the rebuilt attention output and parts of a head patch.
   */
  async recomputeLast(
    cache: KVCache,
    rows: LastPositionRow[],
    readout: Float32Array[],
    heads: boolean,
    /** Stages whose input residual each row should also return (as `stageIn`), for rows recomputed there. */
    taps?: number[],
  ): Promise<{ z: Float32Array; de: Record<string, number>; stageIn?: Map<number, Float32Array>; values?: Map<string, Float32Array> }[]> {
    const { spec, plan } = this;
    const d = spec.dModel;
    const stages = plan.stages.length;
    const { groupPrompts, P, offset, width, slots, at, rowAt, startingAt, laterAt } = this.lastPositionLayout(rows);
    const values = rows.map(() => undefined as Map<string, Float32Array> | undefined);

    const fixed = this.stepInputs(cache, groupPrompts, readout);
    const noRows = f32(new Float32Array(0), [0, spec.nHeads * spec.dHead]);
    const de = rows.map(() => ({}) as Record<string, number>);
    const maxBlocks = Math.max(...plan.stages.map((s) => s.length));
    // Every block's outputs go to buffers reused by every layer, not to onnxruntime's arena
    // (onnxruntime-node still hands back a copy of each: garbage until V8 collects it).
    const wide = (spec.nHeads + 2 * spec.nKvHeads) * spec.dHead;
    const sizes = [...Array(maxBlocks + 1).fill(slots * P * d), slots * P * wide, slots * P * spec.nHeads * spec.dHead];
    return this.lastBuffers.use(sizes, async (all) => {
      const bufs = all.slice(0, maxBlocks + 1);
      const [qkvBuf, zBuf] = all.slice(maxBlocks + 1);
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
      const tapped = taps?.length ? rows.map(() => new Map<number, Float32Array>()) : null;
      for (let s = 0; s < stages; s++) {
        n = offset[s] + width[s];
        // The stage's new slots: zero (padding included), then the rows starting here.
        bufs[cur].fill(0, offset[s] * P * d, n * P * d);
        for (const k of startingAt[s]) bufs[cur].set(rows[k].resid, at[k] * d);
        if (tapped && taps!.includes(s)) rows.forEach((r, k) => at[k] >= 0 && r.start <= s && tapped[k].set(s, bufs[cur].slice(at[k] * d, (at[k] + 1) * d)));
        if (n === 0) continue;
        // Every block of the stage reads bufs[cur]; each adds its output to the previous block's result.
        let base = cur;
        for (const block of plan.stages[s]) {
          const to = (base + 1) % bufs.length === cur ? (base + 2) % bufs.length : (base + 1) % bufs.length;
          const s = this.sessions[block.layer];
          const hits = laterAt.get(block.component);
          if (block.kind === 'attn') {
            const l = block.layer;
            const { qkv } = await s.attnIn.run({ x: view(cur) }, { qkv: f32(qkvBuf.subarray(0, n * P * wide), [n, P, wide]) });
            const zOut = f32(zBuf.subarray(0, n * P * spec.nHeads * spec.dHead), [n, P, spec.nHeads * spec.dHead]);
            const { z } = await s.attnStepMix.run({ qkv, prompt: fixed.prompt, ...fixed.layer[l], pastK: cache.k[l], pastV: cache.v[l] }, { z: zOut });
            // Rows whose heads (or output bias) are patched here need their heads split out.
            const split = (hits ?? []).filter((h) => !h.patches.some((p) => p.component.kind === 'attn'));
            const zRows = split.length ? this.gatherRows(z.data as Float32Array, split.map((h) => at[h.k]), spec.nHeads * spec.dHead) : noRows;
            const more = split.length ? this.partsFetches(l) : {};
            const res = await s.attnOut.run({ z, base: view(base), qs: fixed.qs, zRows }, { resid: view(to), de: null, deHeads: null, ...more });
            record([block.component], res.de.data as Float32Array);
            if (heads) record([...Array(spec.nHeads).keys()].map((h) => headName(l, h)), res.deHeads.data as Float32Array);
            for (const h of hits ?? []) {
              const v = (values[h.k] ??= new Map());
              const i = split.indexOf(h);
              if (i < 0) v.set(block.component, h.patches[0].value);
              else plan.patchAttention(this.computedLayer(l, at[h.k], i, res), l, h.patches, v);
              this.replaceOutput(bufs[to], bufs[base], at[h.k], v.get(block.component)!);
            }
          } else {
            const res = await s.mlp.run({ x: view(cur), base: view(base), qs: fixed.qs }, { resid: view(to), de: null });
            record([block.component], res.de.data as Float32Array);
            for (const h of hits ?? []) {
              (values[h.k] ??= new Map()).set(block.component, h.patches[0].value);
              this.replaceOutput(bufs[to], bufs[base], at[h.k], h.patches[0].value);
            }
          }
          base = to;
        }
        cur = base;
      }
      const final = bufs[cur];
      return rows.map((r, k) => ({ z: at[k] < 0 ? r.resid : final.slice(at[k] * d, (at[k] + 1) * d), de: de[k], values: values[k], ...(tapped ? { stageIn: tapped[k] } : {}) }));
    });
  }

  /**
   * Where recomputeLast keeps each row (see its Layout): groups (one per prompt), each stage's
   * slots, each row's slot index `at` (-1 when it starts past the last stage), the row in each
   * slot, the rows starting at each stage, and the later patches by the block they replace.
   */
  private lastPositionLayout(rows: LastPositionRow[]) {
    const stages = this.plan.stages.length;
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
    const laterAt = new Map<string, { k: number; patches: Patch[] }[]>();
    rows.forEach((r, k) => {
      for (const p of r.later ?? []) {
        const block = this.plan.blockOf(p.component);
        const list = laterAt.get(block) ?? [];
        const hit = list.find((h) => h.k === k);
        if (hit) hit.patches.push(p);
        else list.push({ k, patches: [p] });
        laterAt.set(block, list);
      }
    });
    return { groupPrompts, P, offset, width, slots, at, rowAt, startingAt, laterAt };
  }

  /** The attention output's fetches that split a layer into its parts: its output, each head's, and a post-norm's input. */
  private partsFetches(l: number): Record<string, null> {
    return { out: null, heads: null, ...(this.layers[l].attnPostNorm ? { pre: null } : {}) };
  }

  /** Rows `at` of a [rows, width] buffer, packed. */
  private gatherRows(data: Float32Array, at: number[], width: number): ort.Tensor {
    const out = new Float32Array(at.length * width);
    at.forEach((b, i) => out.set(data.subarray(b * width, (b + 1) * width), i * width));
    return f32(out, [at.length, width]);
  }

  /** Residual after a block whose output a later patch replaces: the residual before it plus the patch. */
  private replaceOutput(to: Float32Array, base: Float32Array, b: number, value: Float32Array): void {
    const d = this.spec.dModel;
    for (let j = 0; j < d; j++) to[b * d + j] = base[b * d + j] + value[j];
  }

  /**
   * Attention layer l of one recomputed row (slot b, split row i) as the plan reads a run: its
   * output, each head's output before any post-norm, the output bias, and the pre-norm output.
   */
  private computedLayer(l: number, b: number, i: number, res: ort.InferenceSession.OnnxValueMapType): CleanLast {
    const { dModel: d, nHeads: H } = this.spec;
    const row = (t: ort.Tensor) => (t.data as Float32Array).slice(b * d, (b + 1) * d);
    const heads = res.heads.data as Float32Array;
    const components = new Map<string, Float32Array>([[attnName(l), row(res.out)], [attnBiasName(l), this.layers[l].bo ?? new Float32Array(d)]]);
    for (let h = 0; h < H; h++) components.set(headName(l, h), heads.slice((i * H + h) * d, (i * H + h + 1) * d));
    const attnPre: Float32Array[] = [];
    if (res.pre) attnPre[l] = row(res.pre);
    return { stageIn: [], components, sites: new Map(), attnPre };
  }

  /** The attention step's per-group inputs: prompt index, readout, and per layer its mask and rotary tables. */
  private stepInputs(cache: KVCache, groupPrompts: number[], readout: Float32Array[]) {
    const { spec } = this;
    const d = spec.dModel;
    const P = groupPrompts.length;
    const T = cache.T;
    const qs = new Float32Array(P * d);
    groupPrompts.forEach((p, i) => qs.set(readout[p], i * d));
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
    return {
      prompt: i64(BigInt64Array.from(groupPrompts.map(BigInt)), [P]),
      qs: f32(qs, [P, d]),
      layer: spec.layers.map(({ window, rope }) => ({ mask: maskFor(window), ...(rope ? ropeFor(rope) : {}) })),
    };
  }
}

/** What an intervention on `name` replaces in this run: the component, or a post-norm head's pre-norm output. */
export function interventionSite(acts: CleanLast, name: string): Float32Array {
  return acts.sites.get(name) ?? acts.components.get(name)!;
}

/**
 * Refuse, before reading any weight, a model that cannot fit: its weights at the chosen
 * dtype, the widening scratch (two-byte weights: the largest run's matrices in float32),
 * and the base cost, against the memory available.
 */
function checkMemory(spec: ArchSpec, store: WeightStore, opts: LoadOptions): void {
  const weights = store.floatBytes();
  const narrow = weights < store.floatBytes('F32');
  const { dModel: d, dMlp: f, nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  const scratch = narrow ? 4 * Math.max(3 * d * f, (H + 2 * KV) * dh * d, VOCAB_CHUNK * d) : 0;
  const need = weights + scratch + BASE_BYTES;
  const limit = opts.memoryLimit ?? os.freemem();
  if (need > limit) {
    const gb = (b: number) => `${(b / 2 ** 30).toFixed(1)} GB`;
    const hint = narrow || opts.weightsDtype === 'float32' ? '' : '; weights held as `weightsDtype=bfloat16` need half the memory';
    throw new HydraError(`the model needs about ${gb(need)} (${gb(weights)} of weights${scratch ? `, ${gb(scratch)} scratch` : ''}) but only ${gb(limit)} is available${hint}`);
  }
}

/** The small tensors of a layer: everything but its matrices. */
function vectorsOf(lw: LayerWeights): LayerVectors {
  const { wq, wk, wv, wo, wUp, wGate, wDown, ...vectors } = lw;
  void [wq, wk, wv, wo, wUp, wGate, wDown];
  return vectors;
}

function layerMatrices(lw: LayerWeights): Matrix[] {
  return [lw.wq, lw.wk, lw.wv, lw.wo, lw.wUp, lw.wDown, ...(lw.wGate ? [lw.wGate] : [])];
}

export function addInto(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}
