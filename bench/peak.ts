/**
 * The machine's float32 GEMM peak, measured in the bench's own run on the model's shapes
 * and thread count, by every library at hand: onnxruntime's MatMul (the engine's; weights
 * baked in as initializers, which it may pre-pack, and weights fed as inputs, as the engine
 * feeds them) and an optimised BLAS through numpy (OpenBLAS on these machines), started as
 * a small Python probe. Utilization is reported against the best of them, so that a GEMM
 * library slower than the machine's best does not flatter the sweep.
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { GraphBuilder } from '../src/engine/onnx.js';
import { createSession, f32 } from '../src/engine/runtime.js';

export type Shape = [M: number, K: number, N: number];

export interface PeakRow {
  library: string;
  shape: string;
  gflops: number;
}

export interface Peaks {
  rows: PeakRow[];
  /** Best of onnxruntime's variants. */
  onnxruntime: number;
  /** Best of everything measured, and who reached it. */
  best: number;
  bestLibrary: string;
  /** Why a probe could not run (null when every probe ran). */
  missing: string | null;
}

const now = () => performance.now() / 1000;
const label = ([M, K, N]: Shape) => `[${M},${K}]x[${K},${N}]`;

/** The GEMMs a sweep's blocks do, at a typical row count, and one large square one. */
export function modelShapes(d: number, dMlp: number, wide: number, rows = 1024): Shape[] {
  return [
    [rows, d, dMlp],
    [rows, dMlp, d],
    [rows, d, wide],
    [2048, 2048, 2048],
  ];
}

async function onnxruntimeGflops(shape: Shape, threads: number | undefined, asInput: boolean, minS: number): Promise<number> {
  const [M, K, N] = shape;
  const g = new GraphBuilder('gemm');
  const x = g.input('x', [M, K]);
  const wData = Float32Array.from({ length: K * N }, (_, i) => Math.sin(i) * 0.02);
  const w = asInput ? g.input('w', [K, N]) : g.weight('w', wData, [K, N]);
  g.output(g.op('MatMul', [x, w]), 'y', [M, N]);
  const s = await createSession(g.build(), { threads });
  const feeds: Record<string, ReturnType<typeof f32>> = { x: f32(Float32Array.from({ length: M * K }, (_, i) => Math.cos(i)), [M, K]) };
  if (asInput) feeds.w = f32(wData, [K, N]);
  for (let i = 0; i < 2; i++) await s.run(feeds);
  let n = 0;
  const t0 = now();
  while (now() - t0 < minS || n < 3) {
    await s.run(feeds);
    n++;
  }
  const gf = (2 * M * K * N * n) / (now() - t0) / 1e9;
  await s.release();
  return gf;
}

/** numpy's float32 matmul on the same shapes and threads; null with the reason when python3 or numpy is missing. */
function numpyGflops(shapes: Shape[], threads: number, minS: number): { library: string; gflops: number[] } | string {
  const script = `
import json, sys, time
import numpy as np
lib = 'numpy ' + np.__version__
try:
    blas = np.show_config(mode='dicts')['Build Dependencies']['blas']
    lib = '%s %s (numpy %s)' % (blas.get('name'), blas.get('version'), np.__version__)
    import ctypes, glob, os
    for so in glob.glob(os.path.join(os.path.dirname(np.__file__), '..', 'numpy.libs', '*openblas*')):
        l = ctypes.CDLL(so)
        for f in ('scipy_openblas_get_corename64_', 'scipy_openblas_get_corename', 'openblas_get_corename'):
            if hasattr(l, f):
                fn = getattr(l, f); fn.restype = ctypes.c_char_p
                lib += ', kernel ' + fn().decode(); break
except Exception:
    pass
out = []
for M, K, N in json.loads(sys.argv[1]):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K), dtype=np.float32); b = rng.standard_normal((K, N), dtype=np.float32)
    c = np.empty((M, N), dtype=np.float32)
    for _ in range(2): np.matmul(a, b, out=c)
    n = 0; t = time.perf_counter()
    while time.perf_counter() - t < ${minS} or n < 3:
        np.matmul(a, b, out=c); n += 1
    out.append(2 * M * K * N * n / (time.perf_counter() - t) / 1e9)
print(json.dumps({'library': lib, 'gflops': out}))
`;
  const t = String(threads);
  const r = spawnSync('python3', ['-c', script, JSON.stringify(shapes)], {
    encoding: 'utf8',
    env: { ...process.env, OPENBLAS_NUM_THREADS: t, OMP_NUM_THREADS: t, MKL_NUM_THREADS: t },
    timeout: 600_000,
  });
  if (r.error) return `python3 not runnable (${r.error.message})`;
  if (r.status !== 0) return `numpy probe failed: ${(r.stderr || '').trim().split('\n').pop()}`;
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

/** Every probe on every shape; the best is the machine's peak for the utilization figure. */
export async function measurePeaks(shapes: Shape[], threads: number | undefined, minS = 0.6): Promise<Peaks> {
  const rows: PeakRow[] = [];
  for (const shape of shapes) {
    rows.push({ library: 'onnxruntime MatMul (weights baked in)', shape: label(shape), gflops: await onnxruntimeGflops(shape, threads, false, minS) });
    rows.push({ library: 'onnxruntime MatMul (weights as inputs)', shape: label(shape), gflops: await onnxruntimeGflops(shape, threads, true, minS) });
  }
  const np = numpyGflops(shapes, threads ?? os.availableParallelism(), minS);
  if (typeof np !== 'string') shapes.forEach((s, i) => rows.push({ library: np.library, shape: label(s), gflops: np.gflops[i] }));
  const ort = rows.filter((r) => r.library.startsWith('onnxruntime'));
  const best = rows.reduce((a, b) => (b.gflops > a.gflops ? b : a));
  return {
    rows,
    onnxruntime: Math.max(...ort.map((r) => r.gflops)),
    best: best.gflops,
    bestLibrary: `${best.library} ${best.shape}`,
    missing: typeof np === 'string' ? np : null,
  };
}
