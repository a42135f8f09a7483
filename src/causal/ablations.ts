/**
 * The ablation kinds (METHOD.md "Interventions"), one object each: how it builds patches, which
 * prompt pool it needs, what S means for it, and the rules it records with a run. Everything
 * else (analysis, CLI options and help, the sweep's run_config, the explorer) reads them here.
 */
import { HydraError } from '../io/errors.js';
import type { Component } from '../models/components.js';
import { interventionSite, type HookedModel, type PromptActivations } from '../models/model.js';
import { needsHeads, type CleanBank } from './bank.js';
import { gaussian, mulberry32, sampleFrom, seedOf } from './random.js';

export type AblationKind = 'zero' | 'mean' | 'noise' | 'resample' | 'custom';

export const DEFAULT_SAMPLES = 15;
/** Most patches per ablation: each is a run of the model per target and prompt (the paper uses 15). */
export const MAX_SAMPLES = 1000;
/** ROME's noise is this many times the std of the embeddings it perturbs. */
export const NOISE_SCALE = 3;

/** A run's settings that decide a kind's patches (a subset of analyze's options). */
export interface PatchOptions {
  samples?: number;
  seed?: number;
  /** Resample: the pool indices to resample from, one list per prompt, used as given. */
  sources?: number[][];
  /** Resample: also draw sources whose clean token is the prompt's own (METHOD: excluded by default). */
  allowSameAnswer?: boolean;
  /** Noise: per prompt, the token positions that get noise (ROME: the subject's tokens); null or absent: all. */
  noisePositions?: (number[] | null)[];
  /** Noise: the noise's std (default: noiseStd over the prompt set at the noised positions). */
  noiseStd?: number;
  /** Custom: the patch for each target. */
  custom?: Record<string, Float32Array>;
  batchPrompts?: number;
}

/** What a kind is given to plan the patches of one analysis. */
export interface PatchSetup {
  model: HookedModel;
  prompts: number[][];
  targets: Component[];
  opts: PatchOptions;
  S: number;
  /** The prompts patches come from; `ownPool`: it is the prompt set itself (a prompt is never its own source). */
  pool: CleanBank;
  ownPool: boolean;
}

/** The patch of (prompt p of the batch, target, sample s), with the resample source's pool index. */
export type BatchPatches = (p: number, target: Component, s: number) => { patch: Float32Array; source: number | null };

export interface PatchPlan {
  /** Patches of one batch of prompts (`chunk`: their indices, `clean`: their clean runs). */
  forBatch(chunk: number[], ids: number[][], clean: PromptActivations[]): Promise<BatchPatches>;
}

/** What a run's rules depend on, known before anything is computed (recorded in run_config). */
export interface RuleContext {
  sourcesGiven?: boolean;
  allowSameAnswer?: boolean;
  /** Noise: whether the prompts come with a subject. */
  subjects?: boolean;
}

export interface AblationKindDef {
  name: AblationKind;
  /** The patch, in a phrase (CLI help, the explorer). */
  summary: string;
  /**
   * The prompt pool it needs: 'sources' to draw from (resample), 'mean' to average (mean),
   * 'std' to scale the noise by (noise; optional: the prompts themselves serve without one), or none.
   */
  pool: 'sources' | 'mean' | 'std' | null;
  /** What S counts; null: one patch per ablation (S = 1). */
  samples: string | null;
  /** Offered by the CLI and the explorer (custom takes vectors, so only the library). */
  cli: boolean;
  /** Whether the prompts' subjects decide its patches (noise: the subject's tokens get the noise). */
  usesSubjects: boolean;
  /** The rules this kind applies, as recorded with a run (empty when there is no choice). */
  rules(ctx: RuleContext): Record<string, string>;
  plan(setup: PatchSetup): Promise<PatchPlan>;
}

const zeroKind: AblationKindDef = {
  name: 'zero',
  summary: 'the output set to 0',
  pool: null,
  samples: null,
  cli: true,
  usesSubjects: false,
  rules: () => ({}),
  async plan({ model }) {
    const zero = new Float32Array(model.spec.dModel);
    return { forBatch: async () => () => ({ patch: zero, source: null }) };
  },
};

const meanKind: AblationKindDef = {
  name: 'mean',
  summary: "the output's mean over a pool of prompts",
  pool: 'mean',
  samples: null,
  cli: true,
  usesSubjects: false,
  rules: () => ({}),
  async plan({ pool, targets }) {
    if (pool.size === 0) throw new HydraError('mean ablation needs prompts to average over, and the pool is empty; give source prompts the model can run');
    const means = new Map<string, Float32Array>();
    await pool.ensure(pool.prompts.keys(), targets);
    for (const t of targets) means.set(t.name, await pool.mean(t));
    return { forBatch: async () => (_p, t) => ({ patch: means.get(t.name)!, source: null }) };
  },
};

const resampleKind: AblationKindDef = {
  name: 'resample',
  summary: "another prompt's output, S seeded draws (paper default)",
  pool: 'sources',
  samples: 'resample sources per prompt',
  cli: true,
  usesSubjects: false,
  rules: (ctx) => ({ same_answer_sources: ctx.sourcesGiven ? 'as given' : ctx.allowSameAnswer ? 'allowed' : 'excluded' }),
  async plan({ prompts, targets, opts, S, pool, ownPool }) {
    const seed = opts.seed ?? 0;
    const given = opts.sources ? checkSources(opts.sources, prompts.length, pool.size, ownPool) : null;
    if (!given) checkSamples(S, pool.size, ownPool);
    // The draw excludes sources sharing the prompt's clean token: it needs every pool token
    // (and the targets' outputs, kept from the same run).
    if (!given && !opts.allowSameAnswer) await pool.ensure(pool.prompts.keys(), targets);
    const allow = !!opts.allowSameAnswer;
    // A prompt set that is its own pool is drawn up front, so that a prompt without enough sources fails before any work.
    const upfront = given ?? (ownPool ? prompts.map((_, n) => drawSources(n, allow ? -1 : pool.token(n), S, seed, pool, true, allow)) : null);
    return {
      async forBatch(chunk, _ids, clean) {
        const sources = chunk.map((n, p) => (upfront ? upfront[n] : drawSources(n, clean[p].token, S, seed, pool, false, allow)));
        await pool.ensure(sources.flat(), targets);
        return (p, t, s) => ({ patch: pool.output(sources[p][s], t.name), source: sources[p][s] });
      },
    };
  },
};

const noiseKind: AblationKindDef = {
  name: 'noise',
  summary: "the output when Gaussian noise (3 × the embeddings' std) is added to the input embeddings of the subject's tokens, or of every token without a subject (ROME)",
  pool: 'std',
  samples: 'noise samples per prompt',
  cli: true,
  usesSubjects: true,
  rules: (ctx) => ({
    noise: ctx.subjects
      ? `subject tokens; std ${NOISE_SCALE} x the std of the embeddings of all subject tokens of the prompt set`
      : `all positions; std ${NOISE_SCALE} x the std of the embeddings of all tokens of the prompt set`,
  }),
  async plan({ model, prompts, targets, opts, S }) {
    const positions = opts.noisePositions;
    if (positions && positions.length !== prompts.length) throw new HydraError(`noise positions: ${positions.length} entries for ${prompts.length} prompts; give one per prompt`);
    const std = opts.noiseStd ?? (await noiseStd(model, prompts, positions, opts.batchPrompts));
    if (!(Number.isFinite(std) && std >= 0)) throw new HydraError(`the noise std must be a non-negative number, got ${std}`);
    const seed = opts.seed ?? 0;
    const d = model.spec.dModel;
    return {
      async forBatch(chunk, ids) {
        const out = ids.map(() => new Map<string, Float32Array[]>(targets.map((t) => [t.name, []])));
        for (let s = 0; s < S; s++) {
          const noise = ids.map((p, b) => {
            const g = gaussian(mulberry32(seedOf(seed, chunk[b], 2, s)));
            const add = new Float32Array(p.length * d);
            for (const i of positions?.[chunk[b]] ?? p.keys()) for (let j = 0; j < d; j++) add[i * d + j] = std * g();
            return add;
          });
          const res = await model.forward(ids, { heads: needsHeads(targets), embedAdd: noise });
          res.prompts.forEach((a, b) => {
            for (const t of targets) out[b].get(t.name)!.push(interventionSite(a, t.name));
          });
        }
        return (p, t, s) => ({ patch: out[p].get(t.name)![s], source: null });
      },
    };
  },
};

const customKind: AblationKindDef = {
  name: 'custom',
  summary: 'a vector the caller gives per target',
  pool: null,
  samples: null,
  cli: false,
  usesSubjects: false,
  rules: () => ({}),
  async plan({ model, targets, opts }) {
    const d = model.spec.dModel;
    for (const t of targets) {
      const v = opts.custom?.[t.name];
      if (!v) throw new HydraError(`custom ablation: no patch vector given for ${t.name}`);
      if (v.length !== d) throw new HydraError(`custom ablation: the patch for ${t.name} has ${v.length} values; the model's width is ${d}`);
    }
    return { forBatch: async () => (_p, t) => ({ patch: opts.custom![t.name], source: null }) };
  },
};

/** Whether the kind cannot run without a pool. */
export function needsPool(kind: AblationKindDef): boolean {
  return kind.pool === 'sources' || kind.pool === 'mean';
}

/** Every kind, by name. */
export const ABLATIONS: Record<AblationKind, AblationKindDef> = {
  zero: zeroKind,
  mean: meanKind,
  noise: noiseKind,
  resample: resampleKind,
  custom: customKind,
};

/** The kinds the CLI and the explorer offer. */
export const CLI_KINDS = Object.values(ABLATIONS).filter((k) => k.cli).map((k) => k.name);

/** The kind named `name`, or a HydraError listing the kinds. */
export function ablationKind(name: string): AblationKindDef {
  const k = Object.hasOwn(ABLATIONS, name) ? ABLATIONS[name as AblationKind] : undefined;
  if (!k) throw new HydraError(`unknown ablation kind '${name}'; use ${Object.keys(ABLATIONS).join(', ')}`);
  return k;
}

/** S: patches per ablation (given sources count; 1 for kinds without samples). */
export function samplesOf(kind: AblationKind, samples?: number, sources?: number[][]): number {
  if (!ablationKind(kind).samples) return 1;
  const S = sources?.[0]?.length ?? samples ?? DEFAULT_SAMPLES;
  if (!Number.isSafeInteger(S) || S < 1 || S > MAX_SAMPLES) throw new HydraError(`samples must be an integer from 1 to ${MAX_SAMPLES}, got ${S}`);
  return S;
}

/** Help texts derived from the registry. */
export function kindsHelp(): string {
  return Object.values(ABLATIONS).filter((k) => k.cli).map((k) => `${k.name}: ${k.summary}`).join('; ');
}
export function samplesHelp(): string {
  return `S, patches per ablation: ${Object.values(ABLATIONS).filter((k) => k.cli && k.samples).map((k) => `${k.samples} (${k.name})`).join(', ')}`;
}

/** S must be a positive integer and no more than the pool's prompts to draw from (itself excluded when it is the prompt set). */
export function checkSamples(S: number, poolSize: number, ownPool: boolean): void {
  if (!Number.isInteger(S) || S < 1) throw new HydraError(`\`samples\` must be a positive integer, got ${S}`);
  const need = ownPool ? S + 1 : S;
  if (poolSize < need) throw new HydraError(`resample ablation with S=${S} needs at least ${need} ${ownPool ? '' : 'source '}prompts, but there are ${poolSize}; lower \`samples\` or add prompts`);
}

/** Given source lists: one per prompt, all of one length, pool indices (never the prompt itself when the pool is the prompt set). */
export function checkSources(given: number[][], n: number, poolSize: number, ownPool: boolean): number[][] {
  if (given.length !== n) throw new HydraError(`sources: ${given.length} entries for ${n} prompts; give one list of source indices per prompt`);
  const S = given[0]?.length;
  given.forEach((list, i) => {
    if (!Array.isArray(list) || list.length === 0) throw new HydraError(`sources: entry ${i} is not a non-empty list of prompt indices`);
    if (list.length !== S) throw new HydraError(`sources: entry ${i} has ${list.length} sources, entry 0 has ${S}; every prompt needs the same number`);
    for (const j of list) {
      if (!Number.isInteger(j) || j < 0 || j >= poolSize || (ownPool && j === i)) {
        throw new HydraError(`sources: entry ${i} names prompt ${j}; sources must be indices of ${ownPool ? `other prompts (0..${poolSize - 1}, not ${i})` : `source prompts (0..${poolSize - 1})`}`);
      }
    }
  });
  return given;
}

/**
 * Prompt n's S sources, drawn from a generator seeded by (seed, n): pool prompts other than n
 * itself and, unless allowed, other than those whose clean token is n's own (METHOD "Sources
 * that share the answer": such a source still promotes the token).
 */
export function drawSources(n: number, token: number, S: number, seed: number, pool: CleanBank, ownPool: boolean, allowSameAnswer: boolean): number[] {
  const candidates = [...pool.prompts.keys()].filter((j) => !(ownPool && j === n) && (allowSameAnswer || pool.token(j) !== token));
  if (candidates.length < S) {
    throw new HydraError(
      `resample ablation with S=${S}: prompt ${n} has only ${candidates.length} source prompts whose clean token differs from its own; lower --samples, add prompts, or allow sources that share the answer (--allow-same-answer)`,
    );
  }
  return sampleFrom(candidates, S, mulberry32(seedOf(seed, n, 1)));
}

/**
 * The token positions of `subject` inside a prompt, as ROME finds them: the subject's first
 * occurrence in the concatenated token texts, and every token overlapping it.
 */
export function subjectPositions(tokenTexts: string[], subject: string, label = 'prompt'): number[] {
  const whole = tokenTexts.join('');
  const at = subject === '' ? -1 : whole.indexOf(subject);
  if (at < 0) throw new HydraError(`${label}: its subject ${JSON.stringify(subject)} does not occur in the prompt's tokens; fix the subject or drop it to noise every position`);
  const out: number[] = [];
  let pos = 0;
  tokenTexts.forEach((t, i) => {
    const end = pos + t.length;
    if (end > at && pos < at + subject.length) out.push(i);
    pos = end;
  });
  return out;
}

/**
 * NOISE_SCALE × the std of the embeddings (what enters the first block, every coordinate pooled,
 * n − 1 in the denominator as ROME's torch.std) of the prompts at the noised positions.
 */
export async function noiseStd(model: HookedModel, prompts: number[][], positions?: (number[] | null)[], batch = 8): Promise<number> {
  const d = model.spec.dModel;
  let n = 0;
  let sum = 0;
  let sum2 = 0;
  for (let i = 0; i < prompts.length; i += batch) {
    const idx = [...prompts.keys()].slice(i, i + batch);
    const res = await model.forward(idx.map((k) => prompts[k]), { allPositions: true });
    res.prompts.forEach((a, b) => {
      const e = a.positions!.get('embed')!;
      for (const t of positions?.[idx[b]] ?? a.ids.keys()) {
        for (let j = 0; j < d; j++) {
          const v = e[t * d + j];
          sum += v;
          sum2 += v * v;
        }
        n += d;
      }
    });
  }
  if (n < 2) throw new HydraError('noise ablation: no token embeddings to take the noise std from; give prompts (and subjects) with tokens');
  const mean = sum / n;
  return NOISE_SCALE * Math.sqrt(Math.max(0, (sum2 - n * mean * mean) / (n - 1)));
}

/**
 * Noise positions of each prompt from its subject (subjectPositions on the model's token texts):
 * undefined when no prompt has a subject (noise goes to every position); an error when only
 * some have one, since one std cannot serve both rules.
 */
export function noisePositionsOf(model: HookedModel, prompts: number[][], subjects: (string | undefined)[], label: (i: number) => string): number[][] | undefined {
  const given = subjects.filter((s) => s !== undefined).length;
  if (given === 0) return undefined;
  if (given < subjects.length) {
    const i = subjects.findIndex((s) => s === undefined);
    throw new HydraError(`${label(i)} has no subject while ${given} of ${subjects.length} prompts have one; give every prompt a subject (noise on the subject's tokens) or none (noise on every position)`);
  }
  const tok = model.tokenizer;
  if (!tok) throw new HydraError(`${model.source.dir} has no tokenizer.json, which is needed to find the subjects' tokens; drop the subjects to noise every position`);
  return prompts.map((ids, i) => subjectPositions(ids.map((t) => tok.tokenText(t)), subjects[i]!, label(i)));
}
