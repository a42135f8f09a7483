import ort from 'onnxruntime-node';

export { ort };
export type Session = ort.InferenceSession;

export interface EngineOptions {
  /** Threads each session may use for one operator (default: all cores). */
  threads?: number;
  /**
   * Give each session its own memory arena (default false). An arena keeps the peak
   * of every run of its session, and the fast path's row batches make that tens to
   * hundreds of MB per session, for 3 sessions a layer. Without it, sessions allocate
   * from the process heap, which they then share.
   */
  arena?: boolean;
  /** Let idle intra-op threads spin between runs (default false; see createSession). */
  spin?: boolean;
}

export async function createSession(graph: Uint8Array, opts: EngineOptions): Promise<Session> {
  return ort.InferenceSession.create(graph, {
    executionProviders: ['cpu'],
    intraOpNumThreads: opts.threads ?? 0,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    enableCpuMemArena: opts.arena ?? false,
    // Every session has its own intra-op thread pool, whose workers spin after a run by
    // default. A model is a chain of ~40 sessions run one after another, so a spinning
    // pool of the previous session would take a core from the next one: on 2 cores that
    // halved the fast path's MLP throughput on small row batches (81 vs 204 GFLOP/s).
    extra: { 'session.intra_op.allow_spinning': opts.spin ? '1' : '0' },
  });
}

export function f32(data: Float32Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}

export function i64(data: number[] | BigInt64Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('int64', data instanceof BigInt64Array ? data : BigInt64Array.from(data.map(BigInt)), dims);
}
