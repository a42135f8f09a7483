/**
 * `npm run bench [-- --json] [-- --shape gpt2-small|llama-1b|qwen2.5-0.5b|mistral-7b] [-- --prompts N]`
 *
 * qwen2.5-0.5b and mistral-7b (bf16, mistral-7b sharded) measure memory and load time:
 * see loadBench. The other shapes time the sweep:
 *
 * the resample-ablation sweep (S = 15, every attention and MLP layer) on a seeded
 * random model of a real shape by running `runSweep`, the code behind `hydra sweep`,
 * results written to a DuckDB file in a temporary folder included, against the
 * machine's best float32 GEMM peak measured in the same run with the same threads
 * (bench/peak.ts: onnxruntime's MatMul and numpy's BLAS on the model's shapes). With
 * --json the last stdout line is one JSON object: best_peak_gflops, best_peak_library,
 * onnxruntime_peak_gflops, sweep_gflops, utilization (against the best peak),
 * utilization_onnxruntime, fast_runs_per_s, naive_runs_per_s, speedup,
 * projected_full_sweep_s, rss_mb (peak RSS when the sweep ends), weight_bytes,
 * rss_over_weights.
 *
 * Other options: --threads N (intra-op threads per session; default all cores),
 * --batch-prompts N, --batch-rows N (the sweep's batching), --naive-prompts N,
 * --spin (let idle onnxruntime threads spin, the runtime's default), --no-arena (sessions
 * without a memory arena: every intermediate on fresh pages, the engine's setting before),
 * --profile (time spent per kind of session call), --weights-dtype float32|bfloat16|float16
 * (hold the weights at another width than the checkpoint's; the speed/memory trade).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { analyze, defaultTargets } from '../src/causal/analysis.js';
import { ort } from '../src/engine/runtime.js';
import type { ArchSpec } from '../src/engine/spec.js';
import { parseComponent } from '../src/models/components.js';
import { HookedModel } from '../src/models/model.js';
import { gpt2TokenizerDir, known1000Path } from '../src/io/paths.js';
import { loadTokenizer } from '../src/io/tokenizer.js';
import { runSweep } from '../src/experiments/sweep.js';
import { ensureBenchModel, SHAPES, type BenchShape } from './model.js';
import { measurePeaks, modelShapes } from './peak.js';
import { WEIGHTS_DTYPES, type WeightsDtype } from '../src/models/model.js';

/** Prompts in the full known_1000 sweep (the kept set of the paper's setup). */
const FULL_SWEEP_PROMPTS = 1209;
const SAMPLES = 15;

interface Args {
  json: boolean;
  shape: BenchShape;
  prompts: number;
  naivePrompts: number;
  threads?: number;
  batchPrompts?: number;
  batchRows?: number;
  profile: boolean;
  arena: boolean;
  spin: boolean;
  weightsDtype?: WeightsDtype;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { json: false, shape: 'gpt2-small', prompts: -1, naivePrompts: 4, profile: false, arena: true, spin: false };
  const int = (flag: string, v: string | undefined) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} needs a positive integer, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') args.json = true;
    else if (a === '--profile') args.profile = true;
    else if (a === '--no-arena') args.arena = false;
    else if (a === '--spin') args.spin = true;
    else if (a === '--shape') {
      const s = argv[++i] as BenchShape;
      if (!SHAPES.includes(s)) throw new Error(`--shape must be one of ${SHAPES.join(', ')}, got ${s}`);
      args.shape = s;
    } else if (a === '--prompts') args.prompts = int(a, argv[++i]);
    else if (a === '--naive-prompts') args.naivePrompts = int(a, argv[++i]);
    else if (a === '--threads') args.threads = int(a, argv[++i]);
    else if (a === '--batch-prompts') args.batchPrompts = int(a, argv[++i]);
    else if (a === '--batch-rows') args.batchRows = int(a, argv[++i]);
    else if (a === '--weights-dtype') {
      const t = argv[++i] as WeightsDtype;
      if (!(t in WEIGHTS_DTYPES)) throw new Error(`--weights-dtype must be one of ${Object.keys(WEIGHTS_DTYPES).join(', ')}, got ${t}`);
      args.weightsDtype = t;
    }
    else throw new Error(`unknown option ${a}`);
  }
  if (args.prompts < 0) args.prompts = args.shape === 'llama-1b' ? 16 : 64;
  if (args.prompts < SAMPLES + 1) throw new Error(`--prompts must be at least ${SAMPLES + 1} (resample with S=${SAMPLES})`);
  if (args.naivePrompts < 3) throw new Error('--naive-prompts must be at least 3');
  return args;
}

const log = (msg: string) => process.stderr.write(msg + '\n');
const now = () => performance.now() / 1000;

/** Matrix FLOPs of one attention block at one position attending to `keys` positions. */
function attnFlops(spec: ArchSpec, keys: number): number {
  const { dModel: d, nHeads: H, nKvHeads: KV, dHead: dh } = spec;
  return 2 * d * (H * dh + 2 * KV * dh) + 2 * (H * dh) * d + 2 * 2 * H * dh * keys;
}

/** Matrix FLOPs of one MLP block at one position (3 matrices if gated). */
function mlpFlops(spec: ArchSpec): number {
  return 2 * (spec.gated ? 3 : 2) * spec.dModel * spec.dMlp;
}

/**
 * The useful FLOPs of one prompt's sweep, counted analytically (not measured).
 *
 * Per ablation run (one row = one target × one patch), the fast path's necessary matrix
 * work is, for each block causally downstream of the ablated component, at the last
 * position t only (T = prompt length, so t attends to T keys):
 *   attention: 2·d·(H·dh + 2·KV·dh) for q, k, v + 2·(H·dh)·d for the output projection
 *              + 2·2·H·dh·T for the scores and the weighted values;
 *   MLP:       2·2·d·dMlp (2·3·d·dMlp if gated).
 * Sequential blocks: ablating attn.l recomputes mlp.l and every later layer; ablating
 * mlp.l recomputes every later layer. Parallel blocks: both start at layer l+1.
 * Nothing else is counted for a row (its π̂' and DE' are dot products with q, O(d)).
 *
 * Plus one clean run of the prompt: every block at every position (T positions,
 * attention over the causal prefix: 2·2·H·dh·(1+...+T)) and the unembedding 2·d·V at
 * the last position. (analyze also runs a clean forward to collect resample patches;
 * that duplicate is overhead, not useful work, and is not counted.)
 */
function promptFlops(spec: ArchSpec, T: number, targets: string[], samples: number): { ablation: number; clean: number } {
  const L = spec.nLayers;
  const attn = attnFlops(spec, T);
  const mlp = mlpFlops(spec);
  let ablation = 0;
  for (const name of targets) {
    const t = parseComponent(name, spec);
    let blocks = 0;
    if (t.kind === 'embed') blocks = L * (attn + mlp);
    else if (spec.parallel) blocks = (L - 1 - t.layer) * (attn + mlp);
    else if (t.kind === 'mlp') blocks = (L - 1 - t.layer) * (attn + mlp);
    else blocks = mlp + (L - 1 - t.layer) * (attn + mlp);
    ablation += samples * blocks;
  }
  const { dModel: d, nHeads: H, dHead: dh, vocab: V } = spec;
  const cleanPerLayer = T * (attnFlops(spec, 0) + mlp) + 2 * 2 * H * dh * ((T * (T + 1)) / 2);
  const clean = L * cleanPerLayer + 2 * d * V;
  return { ablation, clean };
}

/** With --profile: wall time of session.run calls by kind of session. */
function installProfiler(): Map<string, { n: number; s: number }> {
  const stats = new Map<string, { n: number; s: number }>();
  const proto = (ort.InferenceSession as unknown as { prototype: unknown }).prototype as { run: (...a: unknown[]) => Promise<unknown> };
  const orig = proto.run;
  proto.run = async function (this: ort.InferenceSession, ...a: unknown[]) {
    const names = this.inputNames;
    const kind = names.includes('prompt')
      ? 'attention step (mix)'
      : names.includes('mask')
        ? 'attention (clean mix)'
        : names.includes('zRows')
          ? 'attention out'
          : this.outputNames.includes('qkv')
            ? 'attention in'
            : names.includes('wU')
              ? 'unembed'
              : this.outputNames.includes('out')
                ? 'mlp'
                : 'other';
    const t0 = now();
    try {
      return await orig.apply(this, a);
    } finally {
      const e = stats.get(kind) ?? { n: 0, s: 0 };
      e.n++;
      e.s += now() - t0;
      stats.set(kind, e);
    }
  };
  return stats;
}

/** Shapes measured by loading and one analysis, not a sweep (memory and load time are the question). */
const LOAD_SHAPES: BenchShape[] = ['qwen2.5-0.5b', 'mistral-7b'];

/** Seconds to read every safetensors file of a model directory once, sequentially (page cache as it is). */
function readTime(dir: string): { seconds: number; bytes: number } {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  const buf = Buffer.alloc(1 << 26);
  let bytes = 0;
  const t = now();
  for (const f of files) {
    const fd = fs.openSync(path.join(dir, f), 'r');
    let n: number;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) bytes += n;
    fs.closeSync(fd);
  }
  return { seconds: now() - t, bytes };
}

/**
 * Load a big model and run one analysis on it: for mistral-7b the equivalent of `hydra
 * profile` on one known_1000 prompt (every attention and MLP layer ablated, S = 15
 * resample patches from a 16-prompt pool), for qwen2.5-0.5b one forward pass of the
 * prompt. Reports peak RSS against the checkpoint's size, load time against the time to
 * read the files.
 */
async function loadBench(args: Args): Promise<void> {
  const tStart = now();
  const dir = ensureBenchModel(args.shape, log);
  const tGen = now() - tStart;
  const read = readTime(dir);
  const tok = await loadTokenizer(gpt2TokenizerDir);
  const data = JSON.parse(fs.readFileSync(known1000Path, 'utf8')) as { prompt: string }[];
  const t0 = now();
  const model = await HookedModel.load(dir, { threads: args.threads, offline: true, weightsDtype: args.weightsDtype });
  const tLoad = now() - t0;
  const rssLoad = process.memoryUsage().rss;
  const spec = model.spec;
  const pool = data.slice(0, SAMPLES + 2).map((r) => tok.encode(r.prompt).map((t) => t % spec.vocab));
  const target = pool.length - 1;
  let work: string;
  const t1 = now();
  if (args.shape === 'mistral-7b') {
    // Prompt 16 is analysed; prompts 0..15 are the pool its resample patches come from.
    const sources = pool.map((_, i) => [...Array(pool.length).keys()].filter((j) => j !== i).slice(0, SAMPLES));
    const skip = new Set([...Array(target).keys()]);
    const targets = defaultTargets(model, false);
    await analyze(model, pool, { kind: 'resample', samples: SAMPLES, sources, skip, targets });
    work = `profile: ${targets.length} targets × ${SAMPLES} patches on one ${pool[target].length}-token prompt`;
  } else {
    await model.forward([pool[target]]);
    work = `forward of one ${pool[target].length}-token prompt`;
  }
  const tWork = now() - t1;
  const peak = process.resourceUsage().maxRSS * 1024;
  const limit = rssTarget(read.bytes);
  const gb = (b: number) => round(b / 2 ** 30, 2);
  const result = {
    shape: args.shape,
    checkpoint_gb: gb(read.bytes),
    weight_bytes: model.weightBytes,
    read_s: round(read.seconds, 1),
    load_s: round(tLoad, 1),
    load_over_read: round(tLoad / read.seconds, 2),
    rss_after_load_gb: gb(rssLoad),
    peak_rss_gb: gb(peak),
    rss_over_weights: round(peak / read.bytes, 3),
    rss_target_gb: gb(limit),
    rss_target_met: peak <= limit,
    work_s: round(tWork, 1),
  };
  const rows: [string, string][] = [
    ['shape', `${args.shape} (${spec.nLayers}×${spec.dModel}, vocab ${spec.vocab}), ${result.checkpoint_gb} GiB checkpoint`],
    ['model generation (first use)', `${tGen.toFixed(1)} s`],
    ['reading the checkpoint', `${result.read_s} s`],
    ['model load', `${result.load_s} s (${result.load_over_read}× the read)`],
    ['RSS after load', `${result.rss_after_load_gb} GiB`],
    [work, `${result.work_s} s`],
    ['peak RSS', `${result.peak_rss_gb} GiB = ${result.rss_over_weights} × the checkpoint (target ≤ ${result.rss_target_gb} GiB: ${result.rss_target_met ? 'met' : 'NOT met'})`],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
  if (args.json) console.log(JSON.stringify(result));
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (LOAD_SHAPES.includes(args.shape)) return loadBench(args);
  const tStart = now();
  const dir = ensureBenchModel(args.shape, log);
  const tGen = now() - tStart;

  const tok = await loadTokenizer(gpt2TokenizerDir);
  const data = JSON.parse(fs.readFileSync(known1000Path, 'utf8')) as { prompt: string }[];
  const t0 = now();
  const model = await HookedModel.load(dir, { threads: args.threads, arena: args.arena, spin: args.spin, offline: true, weightsDtype: args.weightsDtype });
  const tLoad = now() - t0;
  const spec = model.spec;
  const prompts = data.slice(0, args.prompts).map((r) => tok.encode(r.prompt).map((t) => t % spec.vocab));
  const avgLen = prompts.reduce((s, p) => s + p.length, 0) / prompts.length;
  const peakMb = () => (process.resourceUsage().maxRSS / 1024).toFixed(0);
  log(`peak RSS after load: ${peakMb()} MiB`);
  log(`model ${args.shape}: ${spec.nLayers} layers, width ${spec.dModel}, ${spec.nHeads} heads (${spec.nKvHeads} kv), vocab ${spec.vocab}; loaded in ${tLoad.toFixed(1)} s`);
  log(`${prompts.length} prompts, ${avgLen.toFixed(2)} tokens on average; threads per session: ${args.threads ?? 'all cores'}`);

  const targets = defaultTargets(model, false);
  const batch = { batchPrompts: args.batchPrompts, batchRows: args.batchRows };
  // Warm-up: builds the step sessions (ablating attn.0 runs every later block).
  log('warm-up ...');
  await analyze(model, prompts.slice(0, SAMPLES + 1), { kind: 'resample', samples: SAMPLES, targets: ['attn.0'], path: 'fast', allowSameAnswer: true, ...batch });

  log(`peak RSS after warm-up: ${peakMb()} MiB`);
  const profile = args.profile ? installProfiler() : null;
  log(`fast path (hydra sweep): ${prompts.length} prompts × ${targets.length} targets × ${SAMPLES} patches ...`);
  // The prompts as a dataset of token ids, swept into a fresh DuckDB file.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-bench-'));
  const dataset = path.join(tmp, 'prompts.json');
  fs.writeFileSync(dataset, JSON.stringify(prompts.map((ids, i) => ({ ids, text: data[i].prompt }))));
  const tf = now();
  try {
    await runSweep({
      model,
      modelName: dir,
      dataset,
      ablation: 'resample',
      // Random weights predict few distinct tokens: every source is allowed, as the timing needs S of them.
      allowSameAnswer: true,
      samples: SAMPLES,
      filter: false,
      out: path.join(tmp, 'bench.duckdb'),
      ...batch,
      progress: (done, total) => {
        if (!args.json && done > 0 && done % 16 === 0) { const m = process.memoryUsage(); log(`  ${done}/${total} prompts, ${(now() - tf).toFixed(1)} s; RSS ${(m.rss / 2 ** 20).toFixed(0)} MiB, array buffers ${(m.arrayBuffers / 2 ** 20).toFixed(0)}, heap ${(m.heapUsed / 2 ** 20).toFixed(0)}`); }
      },
    });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const fastS = now() - tf;
  // The sweep's peak: what a `hydra sweep` process holds (the naive path and the GEMM probes come after).
  const sweepRss = process.resourceUsage().maxRSS * 1024;
  const mem = process.memoryUsage();
  log(`after the sweep: RSS ${(mem.rss / 2 ** 20).toFixed(0)} MiB (array buffers ${(mem.arrayBuffers / 2 ** 20).toFixed(0)} MiB, JS heap ${(mem.heapTotal / 2 ** 20).toFixed(0)} MiB, the rest native: onnxruntime, DuckDB, allocator)`);
  const fastRuns = prompts.length * targets.length * SAMPLES;
  const profFast = profile ? new Map(profile) : null;
  profile?.clear();

  const naiveIds = prompts.slice(0, args.naivePrompts);
  const naiveS = 2;
  log(`naive path: ${naiveIds.length} prompts × ${targets.length} targets × ${naiveS} patches ...`);
  const tn = now();
  await analyze(model, naiveIds, { kind: 'resample', samples: naiveS, targets, path: 'naive', allowSameAnswer: true, ...batch });
  const naiveTime = now() - tn;
  const naiveRuns = naiveIds.length * targets.length * naiveS;

  log('measuring the float32 GEMM peak (onnxruntime and numpy/BLAS, same shapes and threads) ...');
  const peak = await measurePeaks(modelShapes(spec.dModel, spec.dMlp, (spec.nHeads + 2 * spec.nKvHeads) * spec.dHead), args.threads);
  for (const r of peak.rows) log(`  ${r.library.padEnd(44)} ${r.shape.padEnd(24)} ${r.gflops.toFixed(1)} GFLOP/s`);
  if (peak.missing) log(`  (${peak.missing}: the best peak is onnxruntime's alone)`);

  let flops = 0;
  let cleanFlops = 0;
  for (const p of prompts) {
    const f = promptFlops(spec, p.length, targets, SAMPLES);
    flops += f.ablation + f.clean;
    cleanFlops += f.clean;
  }
  const sweepGflops = flops / fastS / 1e9;
  const fastRate = fastRuns / fastS;
  const naiveRate = naiveRuns / naiveTime;
  const result = {
    best_peak_gflops: round(peak.best, 1),
    best_peak_library: peak.bestLibrary,
    onnxruntime_peak_gflops: round(peak.onnxruntime, 1),
    sweep_gflops: round(sweepGflops, 1),
    utilization: round(sweepGflops / peak.best, 3),
    utilization_onnxruntime: round(sweepGflops / peak.onnxruntime, 3),
    fast_runs_per_s: round(fastRate, 1),
    naive_runs_per_s: round(naiveRate, 2),
    speedup: round(fastRate / naiveRate, 1),
    projected_full_sweep_s: round((FULL_SWEEP_PROMPTS * fastS) / prompts.length, 1),
    weights_dtype: args.weightsDtype ?? 'as stored',
    rss_mb: round(sweepRss / 2 ** 20, 0),
    weight_bytes: model.weightBytes,
    rss_over_weights: round(sweepRss / model.weightBytes, 2),
    rss_target_mb: round(rssTarget(model.weightBytes) / 2 ** 20, 0),
    rss_target_met: sweepRss <= rssTarget(model.weightBytes),
  };

  const rows: [string, string][] = [
    ['shape', `${args.shape} (${spec.nLayers}×${spec.dModel}, vocab ${spec.vocab})`],
    ['model generation (first use)', `${tGen.toFixed(1)} s`],
    ['model load', `${tLoad.toFixed(1)} s`],
    ['prompts / avg tokens', `${prompts.length} / ${avgLen.toFixed(2)}`],
    ['best GEMM peak', `${result.best_peak_gflops} GFLOP/s (${result.best_peak_library})`],
    ['onnxruntime GEMM peak', `${result.onnxruntime_peak_gflops} GFLOP/s`],
    ['fast sweep', `${fastRuns} runs in ${fastS.toFixed(2)} s (${((fastS / prompts.length) * 1000).toFixed(0)} ms/prompt)`],
    ['useful work', `${(flops / 1e9).toFixed(1)} GFLOP (clean runs ${(cleanFlops / 1e9).toFixed(1)})`],
    ['sweep throughput', `${result.sweep_gflops} GFLOP/s`],
    ['utilization', `${result.utilization} of the best peak (${result.utilization_onnxruntime} of onnxruntime's)`],
    ['fast runs/s', `${result.fast_runs_per_s}`],
    ['naive runs/s', `${result.naive_runs_per_s} (${naiveRuns} runs in ${naiveTime.toFixed(2)} s)`],
    ['speedup fast/naive', `${result.speedup}×`],
    [`projected sweep (${FULL_SWEEP_PROMPTS} prompts)`, `${result.projected_full_sweep_s} s`],
    ['peak RSS (sweep)', `${result.rss_mb} MiB = ${result.rss_over_weights} × the ${(model.weightBytes / 2 ** 20).toFixed(0)} MiB of weights (target ≤ ${result.rss_target_mb} MiB: ${result.rss_target_met ? 'met' : 'NOT met'})`],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
  if (profFast) {
    console.log('\nsession calls during the fast sweep:');
    for (const [k, v] of [...profFast].sort((a, b) => b[1].s - a[1].s)) console.log(`  ${k.padEnd(20)} ${String(v.n).padStart(6)} calls  ${v.s.toFixed(2).padStart(8)} s  (${((100 * v.s) / fastS).toFixed(1)}%)`);
    const inRuntime = [...profFast.values()].reduce((s, v) => s + v.s, 0);
    console.log(`  ${'outside sessions'.padEnd(20)} ${''.padStart(6)}        ${(fastS - inRuntime).toFixed(2).padStart(8)} s  (${((100 * (fastS - inRuntime)) / fastS).toFixed(1)}%)`);
  }
  if (args.json) console.log(JSON.stringify(result));
}

/** The issue's memory target, in bytes: 1.15 × the weights' (or checkpoint's) bytes + 0.4 GB (10^9 bytes). */
function rssTarget(bytes: number): number {
  return 1.15 * bytes + 0.4e9;
}

function round(x: number, digits: number): number {
  const k = 10 ** digits;
  return Math.round(x * k) / k;
}

main().catch((e) => {
  process.stderr.write(`bench: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
