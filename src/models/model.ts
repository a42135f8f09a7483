import { attentionGraph, attentionStepGraph, embedGraph, mlpGraph, unembedGraph } from '../engine/blocks.js';
import { ropeTables } from '../engine/rope.js';
import { createSession, f32, i64, ort, type EngineOptions, type Session } from '../engine/runtime.js';
import type { ArchSpec, ModelWeights } from '../engine/spec.js';
import { HydraError } from '../io/errors.js';
import { resolveModel, type ResolvedModel, type ResolveOptions } from '../io/hub.js';
import { WeightStore } from '../io/safetensors.js';
import { hasTokenizer, loadTokenizer, type HydraTokenizer } from '../io/tokenizer.js';
import { layerComponents } from './components.js';
import { familyFor, readConfig } from './registry.js';
import { validateLayers, validateSpec } from './validate.js';

export interface LoadOptions extends EngineOptions, ResolveOptions {}

/** Everything read out of one prompt's clean run, at its last position unless noted. */
export interface PromptActivations {
  ids: number[];
  /** Logits over the vocabulary at the last position. */
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
  /** Residual entering attention block l, and MLP block l, at the last position. */
  attnIn: Float32Array[];
  mlpIn: Float32Array[];
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

const MASKED = -1e30;

/**
 * A causal LM as a chain of onnxruntime sessions (embedding, one per attention block,
 * one per MLP block, unembedding), with every component addressable between them.
 */
export class HookedModel {
  private stepSessions: Session[] = [];
  private headStepSessions: Session[] = [];

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
  ) {}

  static async load(model: string, opts: LoadOptions = {}): Promise<HookedModel> {
    const source = await resolveModel(model, opts);
    const config = readConfig(source.dir);
    const family = familyFor(config);
    const spec = family.arch(config);
    validateSpec(spec, config._path);
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
    const wpe = weights.wpe ? f32(weights.wpe, [spec.nCtx, spec.dModel]) : null;
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

  /** Clean forward pass over a batch of prompts of any lengths (right-padded together). */
  async forward(prompts: number[][], opts: ForwardOptions = {}): Promise<{ prompts: PromptActivations[]; cache: KVCache }> {
    prompts.forEach((ids, b) => this.checkPrompt(ids, prompts.length > 1 ? `prompt ${b}` : 'prompt'));
    const { dModel: d, nLayers } = this.spec;
    const B = prompts.length;
    const T = Math.max(...prompts.map((p) => p.length));
    const lengths = prompts.map((p) => p.length);
    const last = (b: number) => lengths[b] - 1;

    const idsFlat = new BigInt64Array(B * T);
    const posFlat = new BigInt64Array(B * T);
    prompts.forEach((p, b) => p.forEach((t, i) => (idsFlat[b * T + i] = BigInt(t))));
    for (let b = 0; b < B; b++) for (let i = 0; i < T; i++) posFlat[b * T + i] = BigInt(i);

    const embedFeeds: Record<string, ort.Tensor> = { ids: i64(idsFlat, [B, T]), wte: this.wteTensor };
    if (this.wpeTensor) Object.assign(embedFeeds, { pos: i64(posFlat, [B, T]), wpe: this.wpeTensor });
    const embed = (await this.embedSession.run(embedFeeds)).out.data as Float32Array;

    const attnFeeds: Record<string, ort.Tensor> = { mask: f32(this.causalMask(lengths, T), [B, 1, 1, T, T]) };
    if (this.spec.rope) {
      const { cos, sin } = ropeTables(this.spec.rope, [...Array(T).keys()]);
      attnFeeds.cos = f32(cos, [T, this.spec.rope.dim]);
      attnFeeds.sin = f32(sin, [T, this.spec.rope.dim]);
    }

    const out: PromptActivations[] = prompts.map((ids) => ({
      ids,
      logits: new Float32Array(0),
      token: -1,
      sigma: NaN,
      z: new Float32Array(d),
      components: new Map(),
      positions: opts.allPositions ? new Map() : undefined,
      attnIn: [],
      mlpIn: [],
    }));
    const record = (name: string, full: Float32Array) => {
      for (let b = 0; b < B; b++) {
        out[b].components.set(name, full.slice((b * T + last(b)) * d, (b * T + last(b) + 1) * d));
        out[b].positions?.set(name, full.slice(b * T * d, (b * T + lengths[b]) * d));
      }
    };
    const recordResid = (list: 'attnIn' | 'mlpIn', full: Float32Array) => {
      for (let b = 0; b < B; b++) out[b][list].push(full.slice((b * T + last(b)) * d, (b * T + last(b) + 1) * d));
    };

    opts.embedAdd?.forEach((noise, b) => {
      if (noise) for (let i = 0; i < lengths[b] * d; i++) embed[b * T * d + i] += noise[i];
    });
    const intervene = (name: string, full: Float32Array, z?: Float32Array) => this.intervene(name, full, opts.interventions, lengths, T, z);
    intervene('embed', embed);
    record('embed', embed);
    const resid = Float32Array.from(embed);
    const cache: KVCache = { lengths, T, k: [], v: [] };
    for (let l = 0; l < nLayers; l++) {
      recordResid('attnIn', resid);
      const a = await this.attnSessions[l].run({ ...attnFeeds, x: f32(resid, [B, T, d]) });
      const attn = a.out.data as Float32Array;
      cache.k.push(a.k);
      cache.v.push(a.v);
      const heads = intervene(`attn.${l}`, attn, a.z.data as Float32Array);
      record(`attn.${l}`, attn);
      if (opts.heads) this.recordHeads(out, l, a.z.data as Float32Array, lengths, T);
      // A patched head or bias reads as its patch.
      for (const [b, name, t, value] of heads) {
        if (t === lengths[b] - 1) out[b].components.set(name, Float32Array.from(value));
        out[b].positions?.get(name)?.set(value, t * d);
      }
      // Parallel blocks: the MLP reads the residual before attention is added.
      if (!this.spec.parallel) addInto(resid, attn);
      recordResid('mlpIn', resid);
      const mlp = await this.runMlp(l, resid, B * T);
      intervene(`mlp.${l}`, mlp);
      if (this.spec.parallel) addInto(resid, attn);
      addInto(resid, mlp);
      record(`mlp.${l}`, mlp);
    }

    const zLast = new Float32Array(B * d);
    for (let b = 0; b < B; b++) {
      out[b].z = resid.slice((b * T + last(b)) * d, (b * T + last(b) + 1) * d);
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
   * Apply the interventions that target block output `name` (or, for an attention
   * output, its heads and output bias) in place. Returns the head/bias patches applied,
   * so that the recorded head components can show them.
   */
  private intervene(
    name: string,
    full: Float32Array,
    all: Intervention[][] | undefined,
    lengths: number[],
    T: number,
    z?: Float32Array,
  ): [number, string, number, Float32Array][] {
    const applied: [number, string, number, Float32Array][] = [];
    if (!all) return applied;
    const d = this.spec.dModel;
    const layer = name.startsWith('attn.') ? Number(name.slice(5)) : -1;
    all.forEach((list, b) =>
      list.forEach((iv) => {
        const t = iv.position ?? lengths[b] - 1;
        if (t < 0 || t >= lengths[b]) throw new HydraError(`intervention on ${iv.component}: position ${t} is outside prompt ${b} (length ${lengths[b]})`);
        const at = (b * T + t) * d;
        if (iv.component === name) {
          full.set(iv.value, at);
          return;
        }
        if (layer < 0 || !z) return;
        const m = /^(head|attn_bias)\.(\d+)(?:\.(\d+))?$/.exec(iv.component);
        if (!m || Number(m[2]) !== layer) return;
        // The attention output is a sum of heads and the bias: swap the one part.
        const old = m[1] === 'head' ? this.headOutput(layer, Number(m[3]), z, b * T + t) : this.weights.layers[layer].bo ?? new Float32Array(d);
        for (let j = 0; j < d; j++) full[at + j] += iv.value[j] - old[j];
        applied.push([b, iv.component, t, iv.value]);
      }),
    );
    return applied;
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

  /** Final norm and unembedding of residuals z [N, d]: logits [N, V]. */
  async logits(z: Float32Array, n: number): Promise<Float32Array> {
    return (await this.unembedSession.run({ z: f32(z, [n, this.spec.dModel]) })).logits.data as Float32Array;
  }

  /** σ(z): the final norm's scale (population variance for LayerNorm). */
  normScale(z: ArrayLike<number>): number {
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

  /** Session for one attention block run at a single new position per row, with or without per-head readouts (built on first use). */
  async attentionStep(l: number, heads: boolean): Promise<Session> {
    const sessions = heads ? this.headStepSessions : this.stepSessions;
    if (!sessions[l]) sessions[l] = await createSession(attentionStepGraph(this.spec, this.weights.layers[l], l, heads), this.engine);
    return sessions[l];
  }

  /** The MLP block's output m_l for rows x [n, d]. */
  async runMlp(l: number, x: Float32Array, n: number): Promise<Float32Array> {
    const d = this.spec.dModel;
    const rows = f32(x, [n, 1, d]);
    const res = await this.mlpSessions[l].run({ x: rows, base: rows, qs: f32(new Float32Array(d), [1, d]) }, { out: null });
    return res.out.data as Float32Array;
  }

  /** The MLP block session itself (inputs and outputs in mlpGraph), for the fast path. */
  mlpBlock(l: number): Session {
    return this.mlpSessions[l];
  }

  /** Additive attention mask [B, 1, 1, T, T]: causal, padded keys masked, sliding window if any. */
  causalMask(lengths: number[], T: number): Float32Array {
    const m = new Float32Array(lengths.length * T * T);
    const w = this.spec.slidingWindow;
    lengths.forEach((len, b) => {
      for (let i = 0; i < T; i++)
        for (let j = 0; j < T; j++) if (j > i || j >= len || (w !== null && i - j >= w)) m[(b * T + i) * T + j] = MASKED;
    });
    return m;
  }

  /**
   * head.{l}.{h} = z_{l,h} W_O[h] (the head's rows of the output projection) and
   * attn_bias.{l} = b_O, at the last position (and every position if asked).
   */
  private recordHeads(out: PromptActivations[], l: number, z: Float32Array, lengths: number[], T: number): void {
    const { nHeads: H, dHead: dh, dModel: d } = this.spec;
    const { wo, bo } = this.weights.layers[l];
    const zw = H * dh;
    out.forEach((p, b) => {
      const rows = p.positions ? [...Array(lengths[b]).keys()] : [lengths[b] - 1];
      for (let h = 0; h < H; h++) {
        const full = new Float32Array(rows.length * d);
        rows.forEach((t, r) => {
          const zt = (b * T + t) * zw + h * dh;
          for (let i = 0; i < dh; i++) {
            const zi = z[zt + i];
            const wRow = (h * dh + i) * d;
            for (let j = 0; j < d; j++) full[r * d + j] += zi * wo[wRow + j];
          }
        });
        p.components.set(`head.${l}.${h}`, full.slice((rows.length - 1) * d));
        p.positions?.set(`head.${l}.${h}`, full);
      }
      const bias = bo ?? new Float32Array(d);
      p.components.set(`attn_bias.${l}`, Float32Array.from(bias));
      if (p.positions) {
        const full = new Float32Array(lengths[b] * d);
        for (let t = 0; t < lengths[b]; t++) full.set(bias, t * d);
        p.positions.set(`attn_bias.${l}`, full);
      }
    });
  }
}

export function addInto(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}
