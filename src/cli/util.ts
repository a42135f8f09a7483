import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { CLI_KINDS, DEFAULT_SAMPLES, kindsHelp, MAX_SAMPLES, samplesHelp } from '../causal/ablations.js';
import { MAX_SEED } from '../causal/random.js';
import { HydraError } from '../io/errors.js';
import { toJson } from '../io/json.js';

export { toJson };
import { defaultModelDir, packageRoot } from '../io/paths.js';
import { HookedModel, type WeightsDtype } from '../models/model.js';
import { waiting } from './progress.js';

/** The options every model-loading subcommand shares (see addModelOptions). */
export interface ModelOptions {
  /** A model directory or a Hugging Face Hub repo id ("org/name[@revision]"). */
  model?: string;
  threads?: number;
  weightsDtype?: WeightsDtype;
  offline?: boolean;
  cacheDir?: string;
}

/** The package's version, from package.json. */
export function packageVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/** The default bound of an integer flag: what DuckDB's INTEGER columns and typed arrays hold. */
const MAX_INT_FLAG = 2 ** 31 - 1;
/** Most CPU threads per operator that --threads accepts. */
export const MAX_THREADS = 1024;

/** A commander argument parser for a positive integer option, e.g. `.option('--threads <n>', '...', positiveInt('--threads', MAX_THREADS))`. */
export function positiveInt(flag: string, max = MAX_INT_FLAG): (value: string) => number {
  return intFlag(flag, 1, max, 'a positive integer');
}

/** A commander argument parser for a non-negative integer option. */
export function nonNegativeInt(flag: string, max = MAX_INT_FLAG): (value: string) => number {
  return intFlag(flag, 0, max, 'a non-negative integer');
}

function intFlag(flag: string, min: number, max: number, what: string): (value: string) => number {
  return (value: string) => {
    const v = value.trim();
    if (!/^\d+$/.test(v) || Number(v) < min) throw new InvalidArgumentError(`${flag} must be ${what}, got ${JSON.stringify(value)}`);
    if (Number(v) > max) throw new InvalidArgumentError(`${flag} ${v} is over the limit of ${max}`);
    return Number(v);
  };
}

/** Add --model, --threads, --offline, --cache-dir to a subcommand. */
export function addModelOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--model <dir|hub id>', 'model directory (config.json + model.safetensors) or Hugging Face Hub repo id, optionally with @revision').default(
        defaultModelDir,
        'the bundled stories260k',
      ),
    )
    .option('--threads <n>', 'CPU threads per operator (default: all cores)', positiveInt('--threads', MAX_THREADS))
    .addOption(new Option('--weights-dtype <dtype>', "hold the weights as float32, bfloat16 or float16 (default: the checkpoint's own; float32 trades memory for speed)").choices(['float32', 'bfloat16', 'float16']))
    .option('--offline', 'use only the local Hugging Face cache, never the network')
    .option('--cache-dir <dir>', 'Hugging Face cache directory (default: $HYDRA_CACHE, $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub)');
}

/** How to show a --model value: the bundled model by name, anything else as given. */
export function modelLabel(model: string | undefined): string {
  return model === undefined || path.resolve(model) === defaultModelDir ? 'stories260k (bundled)' : model;
}

/** Load the model named by the common options; download progress goes to stderr. */
export async function loadModelFromOptions(opts: ModelOptions): Promise<HookedModel> {
  const model = opts.model ?? defaultModelDir;
  if (model.trim() === '') throw new HydraError('--model is empty; give a model directory or a Hub repo id');
  return waiting(`loading model ${modelLabel(model)}`, () =>
    HookedModel.load(model, {
      threads: opts.threads,
      weightsDtype: opts.weightsDtype,
      offline: opts.offline ? true : undefined,
      cacheDir: opts.cacheDir,
      onProgress: (msg) => process.stderr.write(`hydra: ${msg}\n`),
    }),
  );
}

/**
 * Parse a comma-separated list of token ids ("1,2,3"; spaces allowed). An empty string gives [],
 * which the model rejects as an empty prompt.
 */
export function parseIds(text: string, flag = '--ids'): number[] {
  const s = text.trim();
  if (s === '') return [];
  return s.split(',').map((part, i) => {
    const p = part.trim();
    if (p === '') throw new HydraError(`${flag} "${text}": item ${i + 1} is empty; give comma-separated token ids such as 1,2,3`);
    if (!/^\d+$/.test(p)) throw new HydraError(`${flag} "${text}": item ${i + 1} (${JSON.stringify(p)}) is not a non-negative integer token id; give comma-separated ids such as 1,2,3`);
    const v = Number(p);
    if (!Number.isSafeInteger(v)) throw new HydraError(`${flag} "${text}": token id ${p} is too large`);
    return v;
  });
}

/** Print one JSON value on one line of stdout. Typed arrays become plain arrays; NaN/Infinity become null. */
export function printJson(value: unknown): void {
  process.stdout.write(toJson(value) + '\n');
}

/** Split a row-major [rows, cols] array into rows of plain numbers. */
export function rows(flat: ArrayLike<number>, cols: number): number[][] {
  const out: number[][] = [];
  for (let r = 0; r * cols < flat.length; r++) out.push(Array.from({ length: cols }, (_, c) => flat[r * cols + c]));
  return out;
}

/** Format a number with a fixed number of decimals, right-aligned to `width`. */
export function fmt(x: number, decimals = 4, width = 0): string {
  const s = Number.isFinite(x) ? x.toFixed(decimals) : String(x);
  return s.padStart(width);
}

/** The flag of each library parameter that library messages name in backticks. */
const PARAM_FLAGS: Record<string, string> = {
  samples: '--samples', seed: '--seed', out: '--out', limit: '--limit', filter: '--no-filter', answerColumn: '--answer-column', steps: '--steps', metric: '--metric',
  sources: '--sources', shard: '--shard', shardCount: '--shard-count', weightsDtype: '--weights-dtype', figure1: '--figure1', model: '--model', offline: '--offline', cacheDir: '--cache-dir', port: '--port', db: '--db', ids: '--ids', storePatches: '--store-patches', level: '--level', top: '--top',
  neurons: '--neurons', topNeurons: '--top-neurons',
};

/**
 * A library message as the CLI says it: `samples` becomes --samples and `answerColumn=target`
 * becomes --answer-column target (`filter=false` is --no-filter).
 */
export function withFlags(message: string): string {
  return message.replace(/`(\w+)(?:=([^`]*))?`/g, (whole, name: string, value?: string) => {
    const flag = PARAM_FLAGS[name];
    if (!flag) return whole;
    return value === undefined || flag.startsWith('--no-') ? flag : `${flag} ${value}`;
  });
}

/** --ablation, --samples and --seed, with choices and help from the ablation registry. */
export function addAblationOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--ablation <kind>', `patch kind (${kindsHelp()})`).choices(CLI_KINDS).default('resample'))
    .option('--samples <S>', samplesHelp(), positiveInt('--samples', MAX_SAMPLES), DEFAULT_SAMPLES)
    .option('--seed <N>', 'seed for the choice of resample sources and for noise', nonNegativeInt('--seed', MAX_SEED), 0)
    .option('--allow-same-answer', "resample: also draw sources whose clean token is the prompt's own (excluded by default)");
}
