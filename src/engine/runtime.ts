import ort from 'onnxruntime-node';

export { ort };
export type Session = ort.InferenceSession;

export interface EngineOptions {
  /** Threads each session may use for one operator (default: all cores). */
  threads?: number;
}

export async function createSession(graph: Uint8Array, opts: EngineOptions): Promise<Session> {
  return ort.InferenceSession.create(graph, {
    executionProviders: ['cpu'],
    intraOpNumThreads: opts.threads ?? 0,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
}

export function f32(data: Float32Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}

export function i64(data: number[] | BigInt64Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('int64', data instanceof BigInt64Array ? data : BigInt64Array.from(data.map(BigInt)), dims);
}
