import { createHash } from 'node:crypto';
import ort from 'onnxruntime-node';
import { float32View, type Matrix } from '../io/matrix.js';
import type { Graph } from './onnx.js';
import { WideningScratch } from './widen.js';

export { ort };
export type Session = ort.InferenceSession;

export interface EngineOptions {
  /** Threads each session may use for one operator (default: all cores). */
  threads?: number;
  /**
   * Let sessions keep a memory arena (default true). Without one, every intermediate
   * tensor is a fresh allocation whose pages the kernel must fault in on first write:
   * measured on the llama-1b shape, an elementwise Mul over [512, 8192] took 14 ns a value
   * that way, and a whole MLP block ran at 83 GFLOP/s against 130 with the arena. Layers
   * of the same shape share one session (and so one arena), which bounds what the arenas keep.
   */
  arena?: boolean;
  /** Let idle intra-op threads spin between runs (default false; see createSession). */
  spin?: boolean;
}

export async function createSession(graph: Graph, opts: EngineOptions): Promise<Session> {
  return ort.InferenceSession.create(graph.bytes, {
    executionProviders: ['cpu'],
    intraOpNumThreads: opts.threads ?? 0,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    enableCpuMemArena: opts.arena ?? true,
    // onnxruntime's memory pattern (one planned block for a run's intermediates) stays on:
    // without it a 64-prompt GPT-2-small sweep peaked 30-40 MB lower, but the llama-1b
    // sweep ran 103 against 118 runs/s.
    // Every session has its own intra-op thread pool, whose workers spin after a run by
    // default. A model runs its sessions one after another (attention in, mixing, out, MLP,
    // layer after layer), so a spinning pool of the previous session would take a core from
    // the next one: on 2 cores that halved the fast path's MLP throughput on small row
    // batches (81 vs 204 GFLOP/s).
    extra: {
      'session.intra_op.allow_spinning': opts.spin ? '1' : '0',
    },
  });
}

export function f32(data: Float32Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}

export function i64(data: number[] | BigInt64Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('int64', data instanceof BigInt64Array ? data : BigInt64Array.from(data.map(BigInt)), dims);
}

/**
 * Feeds weight matrices to sessions at each run. A model holds each weight once, at its
 * stored width; float32 matrices are passed as they are (onnxruntime reads JavaScript
 * memory without a copy), two-byte ones are widened into one scratch buffer that every
 * run reuses (see WideningScratch). Runs go one at a time (they share the scratch buffer;
 * each uses every core).
 */
export class WeightFeeder {
  private scratch = new WideningScratch();
  private queue: Promise<unknown> = Promise.resolve();

  run(session: Session, weights: [string, Matrix][], vectors: [string, Float32Array][], feeds: Record<string, ort.Tensor>, fetches?: ort.InferenceSession.FetchesType): Promise<ort.InferenceSession.OnnxValueMapType> {
    const go = () => {
      const w: Record<string, ort.Tensor> = {};
      for (const [name, v] of vectors) w[name] = f32(v, [v.length]);
      // Reserve the whole run's scratch first: growing it would move what is already widened.
      this.scratch.reserve(weights.reduce((s, [, m]) => s + (m.dtype === 'F32' ? 0 : m.rows * m.cols), 0));
      let at = 0;
      for (const [name, m] of weights) {
        if (m.dtype === 'F32') {
          w[name] = f32(float32View(m), [m.rows, m.cols]);
          continue;
        }
        w[name] = f32(this.scratch.widenInto(m, at), [m.rows, m.cols]);
        at += m.rows * m.cols;
      }
      return fetches ? session.run({ ...feeds, ...w }, fetches) : session.run({ ...feeds, ...w });
    };
    const run = this.queue.then(go, go);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

/** A session with the weights and vectors it is fed (one layer's). */
export class Block {
  constructor(
    private readonly session: Session,
    readonly weights: [string, Matrix][],
    private readonly vectors: [string, Float32Array][],
    private readonly feeder: WeightFeeder,
  ) {}

  /** Run with the block's weights, or with `weights` given per run (the unembedding's vocabulary chunks). */
  run(feeds: Record<string, ort.Tensor>, fetches?: ort.InferenceSession.FetchesType, weights = this.weights): Promise<ort.InferenceSession.OnnxValueMapType> {
    return this.feeder.run(this.session, weights, this.vectors, feeds, fetches);
  }
}

/** Sessions by their graph's bytes: the layers of a model whose graphs are the same bytes share one. */
export type SessionCache = Map<string, Promise<Session>>;

export async function createBlock(graph: Graph, opts: EngineOptions, feeder: WeightFeeder, cache?: SessionCache): Promise<Block> {
  const key = createHash('sha256').update(graph.bytes).digest('hex');
  let session = cache?.get(key);
  if (!session) {
    session = createSession(graph, opts);
    cache?.set(key, session);
  }
  return new Block(await session, graph.weights, graph.vectors, feeder);
}

/**
 * Float32 buffers kept from one call to the next (the fast path's row parts, all alike):
 * fresh ones each call cost fresh pages, and the allocator keeps the holes they leave (a
 * 64-prompt GPT-2-small sweep peaked ~20 MB lower with the fast path's reused). A fetch given
 * one of these is written there instead of in onnxruntime's arena, but onnxruntime-node 1.30
 * still returns a fresh copy of it (checked: the returned data is another buffer). Buffers
 * come with stale values: callers write before they read. One user at a time; a concurrent
 * second one gets fresh buffers.
 */
export class ReusedBuffers {
  private bufs: Float32Array[] = [];
  private busy = false;

  async use<T>(sizes: number[], f: (bufs: Float32Array[]) => Promise<T>): Promise<T> {
    if (this.busy) return f(sizes.map((n) => new Float32Array(n)));
    this.busy = true;
    try {
      sizes.forEach((n, i) => {
        if (!(this.bufs[i]?.length >= n)) this.bufs[i] = new Float32Array(n);
      });
      return await f(sizes.map((n, i) => this.bufs[i].subarray(0, n)));
    } finally {
      this.busy = false;
    }
  }
}
