/**
 * Known-answer tests: tiny transformers (Llama and GPT-2 families) with hand-made weights, whose
 * DE, TE, CE, NE and IE (METHOD.md) are worked out here from the weights alone and
 * compared with Hydra's, on the fast and the naive path.
 *
 * Shared layout (d = 8, vocabulary of 4, one head of width 8, norm ε = 1e-5):
 *   residual dims  A=0 X=1 Y=2 Q=3 (read by the unembedding, one per token)
 *                  F=4 (flag)  B=5 (constant)  N=6 ("flag absent")  7 unused
 *   tokens         0 "A": 2e_A + e_B   1 "X": 2e_X + e_B   2 "Y": 2e_Y + e_B   3 "Q": e_A + e_Q + e_B
 *   lm_head        [I₄ | 0]: token v reads dim v; F, B, N are invisible to the logits
 *                  but count in the final norm's scale σ
 *   final norm     g = (2, 1, 1, 0.5, 1, 1, 1, 1)
 *   attention      q_proj = k_proj = 0, so every score is 0 and attention is uniform
 *                  over positions 0..t (rotary rotates zeros): attn_l(t) = mean_{s≤t} W_O W_V x̂_s
 * All prompts end in "Q", whose clean argmax is token A (the clean token i = 0).
 *
 * Model "erasure" (SiLU):
 *   attn.0: W_V reads x̂_X, W_O writes α = 3 of it to A and to F.
 *   mlp.1 : gate reads x̂_F, up reads x̂_B, down writes −c to A and to F, with c
 *           chosen so that on prompt [X, Q] mlp.1 exactly cancels attn.0 (Eq. 31).
 *   mlp.0, attn.1: zero.
 * Model "self-repair" (ReLU), the Hydra motif (Eq. 32):
 *   attn.0: as above (writes the answer A and the flag F).
 *   mlp.0 : gate = x̂_B − x̂_F, up = x̂_B, down writes the hidden unit to N and δ = 0.25 of it to Y:
 *           fires only where the flag is absent (its Y output makes CE_mlp ≠ 0).
 *   attn.1: W_V reads x̂_N, W_O writes γ = 2 of it to A: takes over when attn.0 is gone.
 *   mlp.1 : zero.
 * Model "LayerNorm erasure" (GPT-2 family, ReLU): the erasure model with LayerNorm
 *   everywhere (mean subtraction in the readout), learned positions wpe[s] = 0.25·s·e_7,
 *   an attention output bias 0.5 e_B, mlp.1 = relu(LN(x)_F − 0.5) written as −2 to A
 *   and F plus a c_proj bias 0.1 e_B, and a final-norm bias β = 0.3 e_A + 0.2 e_Q.
 *
 * The expected numbers come from a hand forward pass (handRun: closed-form layer
 * functions of the weights above, float64) and the METHOD.md definitions (handEffects);
 * nothing of Hydra's is used to compute them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { analyze } from '../src/causal/analysis.js';
import type { AblationKind, Effects, PromptResult } from '../src/causal/types.js';
import { HookedModel } from '../src/models/model.js';
import {
  add, centre, filled, lnScale, rms, relu, scale, set, silu, sub, unit, writeLlama, zeros, writeGpt2, type Matrix, type Vector,
  A, ALPHA, B, D, DELTA, EMBED, EPS, F, GAIN_F, GAMMA, LM_HEAD, N, Q, V, X, Y, attn0Weights, writeSelfRepair,
} from './constructed.js';

const TOL = 1e-5;
const TARGETS = ['attn.0', 'mlp.0', 'attn.1', 'mlp.1'];
const LAYER_PARTITION = ['embed', 'attn.0', 'mlp.0', 'attn.1', 'mlp.1'];
/** Causally downstream of each target at t, in a sequential 2-layer block (METHOD.md), written out by hand. */
const DOWNSTREAM: Record<string, { attn: string[]; mlp: string[] }> = {
  'attn.0': { attn: ['attn.1'], mlp: ['mlp.0', 'mlp.1'] },
  'mlp.0': { attn: ['attn.1'], mlp: ['mlp.1'] },
  'attn.1': { attn: [], mlp: ['mlp.1'] },
  'mlp.1': { attn: [], mlp: [] },
};


/* ---------- the hand computation ---------- */

/** A layer of a constructed model, as closed-form functions of the residual. */
interface HandLayer {
  /** Norm₁(x) W_V W_O (+ biases): what one position contributes to a uniform attention average. */
  value: (x: Vector) => Vector;
  mlp: (x: Vector) => Vector;
}

/** A constructed model worked out by hand. All share LM_HEAD and the final gain GAIN_F. */
interface HandModel {
  /** Token embedding plus position embedding (if any) at position s. */
  embed: (tok: number, s: number) => Vector;
  layers: HandLayer[];
  norm: 'rms' | 'ln';
  /** The final LayerNorm's bias β (a constant of the model: in π̂, never in a DE). */
  betaF?: Vector;
}
const ZERO = (): Vector => filled(D, 0);

interface Run {
  comps: Record<string, Vector>;
  z: Vector;
}

/**
 * Forward pass of a constructed model, by hand: uniform causal attention, so
 * attn_l(s) = mean_{s'≤s} value_l(x_{s'}); do(target = p) at the last position only.
 */
function handRun(M: HandModel, prompt: number[], iv?: { target: string; p: Vector }): Run {
  const t = prompt.length - 1;
  const at = (name: string, s: number, v: Vector) => (iv && iv.target === name && s === t ? [...iv.p] : v);
  const resid = prompt.map((tok, s) => at('embed', s, M.embed(tok, s)));
  const comps: Record<string, Vector> = { embed: resid[t] };
  M.layers.forEach((L, l) => {
    const vals = resid.map((x) => L.value(x));
    const attn = resid.map((_, s) => at(`attn.${l}`, s, scale(add(...vals.slice(0, s + 1)), 1 / (s + 1))));
    attn.forEach((a, s) => (resid[s] = add(resid[s], a)));
    const mlp = resid.map((x, s) => at(`mlp.${l}`, s, L.mlp(x)));
    mlp.forEach((m, s) => (resid[s] = add(resid[s], m)));
    comps[`attn.${l}`] = attn[t];
    comps[`mlp.${l}`] = mlp[t];
  });
  return { comps, z: resid[t] };
}

/** The final norm's projection P: identity (RMSNorm) or mean subtraction (LayerNorm). */
const projP = (M: HandModel, z: Vector) => (M.norm === 'ln' ? centre(z) : z);
/** σ(z): sqrt(mean(z²)+ε) for RMSNorm, sqrt(var(z)+ε) for LayerNorm. */
const sigmaOf = (M: HandModel, z: Vector) => (M.norm === 'ln' ? lnScale(z, EPS) : rms(z, EPS));
/** Logits of residual z unembedded with scale s: (P(z)/s ⊙ g [+ β]) W_Uᵀ. */
function logitsOf(M: HandModel, z: Vector, s: number, withBeta: boolean): Vector {
  const pz = projP(M, z);
  const n = pz.map((v, j) => (v / s) * GAIN_F[j] + (withBeta && M.betaF ? M.betaF[j] : 0));
  return LM_HEAD.map((row) => row.reduce((acc, w, j) => acc + w * n[j], 0));
}
/** Centred logit of token i: logits_i − mean_j logits_j; without β this is û_s(z). */
function centred(M: HandModel, z: Vector, s: number, i: number, withBeta = false): number {
  const l = logitsOf(M, z, s, withBeta);
  return l[i] - l.reduce((a, b) => a + b, 0) / l.length;
}
/** π̂_i of a run: its own final-norm scale, biases included. */
const piHat = (M: HandModel, z: Vector, i: number) => centred(M, z, sigmaOf(M, z), i, true);

interface Expected extends Omit<Effects, 'de_prime'> {
  de_prime: Record<string, number>;
  sigma_prime: number;
  pi_hat_prime: number;
}

interface CleanExpected {
  run: Run;
  token: number;
  sigma: number;
  piHat: number;
  de: Record<string, number>;
}

function handClean(M: HandModel, prompt: number[]): CleanExpected {
  const run = handRun(M, prompt);
  const sigma = sigmaOf(M, run.z);
  const logits = logitsOf(M, run.z, sigma, true);
  const token = logits.indexOf(Math.max(...logits));
  const de = Object.fromEntries(LAYER_PARTITION.map((c) => [c, centred(M, run.comps[c], sigma, token)]));
  return { run, token, sigma, piHat: piHat(M, run.z, token), de };
}

/** The METHOD.md effects of do(target = p) at the last position, from the definitions. */
function handEffects(M: HandModel, prompt: number[], target: string, p: Vector): Expected {
  const clean = handClean(M, prompt);
  const i = clean.token;
  const abl = handRun(M, prompt, { target, p });
  const sigmaPrime = sigmaOf(M, abl.z);
  const dePrime = Object.fromEntries(LAYER_PARTITION.map((c) => [c, centred(M, abl.comps[c], clean.sigma, i)]));
  const dd = (c: string) => dePrime[c] - clean.de[c];
  const down = DOWNSTREAM[target];
  const ceAttn = down.attn.reduce((s, c) => s + dd(c), 0);
  const ceMlp = down.mlp.reduce((s, c) => s + dd(c), 0);
  const zIe = add(sub(abl.z, p), clean.run.comps[target]);
  return {
    te: piHat(M, abl.z, i) - clean.piHat,
    ce: ceAttn + ceMlp,
    ce_attn: ceAttn,
    ce_mlp: ceMlp,
    ne: (clean.sigma / sigmaPrime - 1) * LAYER_PARTITION.reduce((s, c) => s + dePrime[c], 0),
    ie: piHat(M, zIe, i) - clean.piHat,
    dde_self: centred(M, p, clean.sigma, i) - clean.de[target],
    de_prime: dePrime,
    sigma_prime: sigmaPrime,
    pi_hat_prime: piHat(M, abl.z, i),
  };
}

/** Patch-averaged effects (the Monte-Carlo average of effects, never the effect of an averaged patch). */
function average(list: Expected[]): Expected {
  const n = list.length;
  const mean = (f: (e: Expected) => number) => list.reduce((s, e) => s + f(e), 0) / n;
  return {
    te: mean((e) => e.te),
    ce: mean((e) => e.ce),
    ce_attn: mean((e) => e.ce_attn),
    ce_mlp: mean((e) => e.ce_mlp),
    ne: mean((e) => e.ne),
    ie: mean((e) => e.ie),
    dde_self: mean((e) => e.dde_self),
    de_prime: Object.fromEntries(LAYER_PARTITION.map((c) => [c, mean((e) => e.de_prime[c])])),
    sigma_prime: NaN,
    pi_hat_prime: NaN,
  };
}

/* ---------- the two models ---------- */

/** The Llama models: token embedding only (rotary positions), RMSNorm. */
const llamaBase = { embed: (tok: number) => [...EMBED[tok]], norm: 'rms' as const };

/** x̂_j = x_j / sqrt(mean(x²) + ε): RMSNorm with unit gain, one coordinate. */
const hat = (x: Vector, j: number) => x[j] / rms(x, EPS);

/** attn.0 of both models, by hand. */
const attn0Value = (x: Vector): Vector => add(unit(D, A, ALPHA * hat(x, X)), unit(D, F, ALPHA * hat(x, X)));

/** Erasure mlp.1: silu(x̂_F)·x̂_B, written as −c to A and to F. */
const erasureMlp = (c: number) => (x: Vector): Vector => {
  const h = silu(hat(x, F)) * hat(x, B);
  return add(unit(D, A, -c * h), unit(D, F, -c * h));
};

/** c such that, on prompt [X, Q], mlp.1 writes exactly −attn.0 (then rounded to the float32 the weights hold). */
function erasureC(): number {
  const pre = handRun({ ...llamaBase, layers: [{ value: attn0Value, mlp: ZERO }, { value: ZERO, mlp: ZERO }] }, [1, 3]);
  const x = add(pre.comps.embed, pre.comps['attn.0']);
  return Math.fround(pre.comps['attn.0'][A] / (silu(hat(x, F)) * hat(x, B)));
}

const C_ERASE = erasureC();
const ERASURE: HandModel = {
  ...llamaBase,
  layers: [
    { value: attn0Value, mlp: ZERO },
    { value: ZERO, mlp: erasureMlp(C_ERASE) },
  ],
};
const SELF_REPAIR: HandModel = { ...llamaBase, layers: [
  // mlp.0: h = relu(x̂_B − x̂_F)·x̂_B written to N, and δ·h to Y.
  {
    value: attn0Value,
    mlp: (x) => {
      const h = relu(hat(x, B) - hat(x, F)) * hat(x, B);
      return add(unit(D, N, h), unit(D, Y, DELTA * h));
    },
  },
  // attn.1: γ·x̂_N written to A.
  { value: (x) => unit(D, A, GAMMA * hat(x, N)), mlp: ZERO },
] };

function writeErasure(): string {
  return writeLlama({
    d: D,
    vocab: V,
    f: 2,
    eps: EPS,
    act: 'silu',
    embed: EMBED,
    lmHead: LM_HEAD,
    finalNorm: GAIN_F,
    layers: [
      attn0Weights,
      {
        gate: set(zeros(2, D), [[0, F, 1]]),
        up: set(zeros(2, D), [[0, B, 1]]),
        down: set(zeros(D, 2), [
          [A, 0, -C_ERASE],
          [F, 0, -C_ERASE],
        ]),
      },
    ],
  });
}


/* GPT-2 variant of the erasure model: LayerNorm (mean subtraction), learned positions, biases, ReLU. */

const BO = scale(unit(D, B), 0.5);
const BFC = -0.5;
const C_LN = 2;
const BPROJ = scale(unit(D, B), 0.1);
const BETA_F = [0.3, 0, 0, 0.2, 0, 0, 0, 0];
const N_CTX = 8;
const WPE: Matrix = Array.from({ length: N_CTX }, (_, s) => unit(D, 7, 0.25 * s));
/** LayerNorm with unit gain and zero bias: (x − mean x)/sqrt(var x + ε). */
const lnHat = (x: Vector) => scale(centre(x), 1 / lnScale(x, EPS));

const ERASURE_LN: HandModel = {
  embed: (tok, s) => add(EMBED[tok], WPE[s]),
  norm: 'ln',
  betaF: BETA_F,
  layers: [
    // attn.0: value reads LN(x)_X, c_proj writes α of it to A and F, plus the output bias b_O = 0.5 e_B.
    { value: (x) => add(unit(D, A, ALPHA * lnHat(x)[X]), unit(D, F, ALPHA * lnHat(x)[X]), BO), mlp: ZERO },
    // mlp.1: relu(LN(x)_F − 0.5), written as −2 to A and F, plus c_proj's bias 0.1 e_B.
    {
      value: ZERO,
      mlp: (x) => {
        const h = relu(lnHat(x)[F] + BFC);
        return add(unit(D, A, -C_LN * h), unit(D, F, -C_LN * h), BPROJ);
      },
    },
  ],
};

function writeErasureLn(): string {
  return writeGpt2({
    d: D,
    vocab: V,
    f: 2,
    nCtx: N_CTX,
    eps: EPS,
    act: 'relu',
    wte: EMBED,
    wpe: WPE,
    lmHead: LM_HEAD,
    lnF: { g: GAIN_F, b: BETA_F },
    layers: [
      {
        v: set(zeros(D, D), [[X, 0, 1]]),
        o: set(zeros(D, D), [
          [0, A, ALPHA],
          [0, F, ALPHA],
        ]),
        bo: BO,
      },
      {
        fc: set(zeros(D, 2), [[F, 0, 1]]),
        bfc: [BFC, 0],
        proj: set(zeros(2, D), [
          [0, A, -C_LN],
          [0, F, -C_LN],
        ]),
        bproj: BPROJ,
      },
    ],
  });
}

/* ---------- comparison ---------- */

const FIELDS = ['te', 'ce', 'ce_attn', 'ce_mlp', 'ne', 'ie', 'dde_self'] as const;

function near(got: number, want: number, label: string, tol = TOL): void {
  assert.ok(Number.isFinite(got) && Math.abs(got - want) <= tol, `${label}: Hydra ${got}, by hand ${want} (diff ${got - want})`);
}

function checkClean(r: PromptResult, want: CleanExpected, label: string): void {
  assert.equal(r.token, want.token, `${label} clean token`);
  assert.equal(r.token, A, `${label}: the construction makes token A the clean argmax`);
  near(r.sigma, want.sigma, `${label} σ`);
  near(r.pi_hat, want.piHat, `${label} π̂`);
  for (const c of LAYER_PARTITION) near(r.de[c], want.de[c], `${label} DE(${c})`);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function checkEffects(got: any, want: Expected, label: string): void {
  for (const f of FIELDS) near(got[f], want[f], `${label} ${f}`);
  for (const c of LAYER_PARTITION) near(got.de_prime[c], want.de_prime[c], `${label} DE'(${c})`);
  if (Number.isFinite(want.sigma_prime)) {
    // A single-patch ablation carries σ' and π̂' on its one patch.
    const run = got.sigma_prime === undefined ? got.patches[0] : got;
    if (got.patches) assert.equal(got.patches.length, 1, `${label}: one patch`);
    near(run.sigma_prime, want.sigma_prime, `${label} σ'`);
    near(run.pi_hat_prime, want.pi_hat_prime, `${label} π̂'`);
  }
  // Closure: TE = ΔDE(k) + CE + NE, to float precision.
  near(got.te, got.dde_self + got.ce + got.ne, `${label} closure`, 1e-6);
  // CE is the sum of its parts.
  near(got.ce, got.ce_attn + got.ce_mlp, `${label} CE parts`, 1e-9);
}

/** ΔDE of every component not downstream of the target (and not the target) is exactly 0. */
function checkUpstreamExact(r: PromptResult, target: string, label: string): void {
  const down = new Set([...DOWNSTREAM[target].attn, ...DOWNSTREAM[target].mlp, target]);
  for (const c of LAYER_PARTITION.filter((c) => !down.has(c))) {
    assert.equal(r.ablations[target].de_prime[c] - r.de[c], 0, `${label}: ΔDE(${c}) must be exactly 0 (${c} is not downstream of ${target})`);
  }
}

const erasureDir = writeErasure();
const repairDir = writeSelfRepair();
const lnDir = writeErasureLn();
process.on('exit', () => {
  for (const d of [erasureDir, repairDir, lnDir]) fs.rmSync(d, { recursive: true, force: true });
});

const PATHS = ['fast', 'naive'] as const;

/* ---------- erasure ---------- */

// [X, Q]: mlp.1 cancels attn.0 exactly; [X, X, Q], [X, X, X, Q]: partial erasure.
const ERASURE_PROMPTS = [
  [1, 3],
  [1, 1, 3],
  [1, 1, 1, 3],
];

test('hand computation of the erasure model: sanity of the construction', () => {
  const c = handClean(ERASURE, [1, 3]);
  // mlp.1 exactly undoes attn.0 on [X, Q]; zero-ablating attn.0 leaves z unchanged.
  assert.ok(c.de['attn.0'] > 5, `DE(attn.0) ${c.de['attn.0']}`);
  assert.ok(Math.abs(c.de['attn.0'] + c.de['mlp.1']) < 1e-6);
  const e = handEffects(ERASURE, [1, 3], 'attn.0', ZERO());
  assert.ok(Math.abs(e.te) < 1e-6 && Math.abs(e.ne) < 1e-6, `TE ${e.te}, NE ${e.ne}`);
  assert.ok(Math.abs(e.ce_mlp + e.dde_self) < 1e-6);
});

for (const path of PATHS) {
  test(`erasure model, zero ablation (${path} path): DE, TE, CE, NE, IE match the hand computation`, async () => {
    const model = await HookedModel.load(erasureDir, { threads: 1 });
    const results = await analyze(model, ERASURE_PROMPTS, { kind: 'zero', targets: TARGETS, path });
    results.forEach((r, n) => {
      const prompt = ERASURE_PROMPTS[n];
      const label = `erasure ${path} prompt ${JSON.stringify(prompt)}`;
      checkClean(r, handClean(ERASURE, prompt), label);
      for (const t of TARGETS) {
        checkEffects(r.ablations[t], handEffects(ERASURE, prompt, t, ZERO()), `${label} ablate ${t}`);
        checkUpstreamExact(r, t, `${label} ablate ${t}`);
      }
    });
    // The erasure motif on [X, Q]: a large direct effect, no total effect, and the
    // MLP's compensation is exactly the direct effect removed.
    const a = results[0].ablations['attn.0'];
    assert.ok(results[0].de['attn.0'] > 5);
    assert.ok(Math.abs(a.te) < 1e-5, `TE ${a.te}`);
    near(a.ce_mlp, -a.dde_self, 'CE_mlp = −ΔDE_self');
    assert.equal(a.ce_attn, 0);
  });
}

/* ---------- self-repair ---------- */

// [X, Q] and [X, Y, Y, Q]: the flag is set everywhere, mlp.0 and attn.1 silent in the clean run;
// [Y, X, Q]: mlp.0 fires at position 0, so attn.1 has a clean output too (read through the cached values).
const REPAIR_PROMPTS = [
  [1, 3],
  [2, 1, 3],
  [1, 2, 2, 3],
];

test('hand computation of the self-repair model: sanity of the construction', () => {
  const c = handClean(SELF_REPAIR, [1, 3]);
  assert.equal(c.de['attn.1'], 0);
  const e = handEffects(SELF_REPAIR, [1, 3], 'attn.0', ZERO());
  assert.ok(e.ce_attn > 1, `CE_attn ${e.ce_attn}`);
  assert.ok(e.ce_mlp < 0 && Math.abs(e.te) < 0.5 * Math.abs(e.dde_self), `TE ${e.te} vs ΔDE_self ${e.dde_self}`);
});

async function repairRun(kind: AblationKind, path: 'fast' | 'naive', extra: Record<string, unknown> = {}): Promise<PromptResult[]> {
  const model = await HookedModel.load(repairDir, { threads: 1 });
  return analyze(model, REPAIR_PROMPTS, { kind, path, ...extra });
}

for (const path of PATHS) {
  test(`self-repair model, zero ablation (${path} path): attn.1 takes over, numbers match the hand computation`, async () => {
    const results = await repairRun('zero', path, { targets: TARGETS });
    results.forEach((r, n) => {
      const prompt = REPAIR_PROMPTS[n];
      const label = `self-repair ${path} prompt ${JSON.stringify(prompt)}`;
      checkClean(r, handClean(SELF_REPAIR, prompt), label);
      for (const t of TARGETS) {
        checkEffects(r.ablations[t], handEffects(SELF_REPAIR, prompt, t, ZERO()), `${label} ablate ${t}`);
        checkUpstreamExact(r, t, `${label} ablate ${t}`);
      }
      // The Hydra effect: attention compensates, and TE = ΔDE_self + CE + NE.
      const a = r.ablations['attn.0'];
      assert.ok(a.ce_attn > 0.5, `${label} CE_attn ${a.ce_attn}`);
      near(a.te, a.dde_self + a.ce + a.ne, `${label} closure`, 1e-6);
    });
  });

  test(`self-repair model, custom, mean and resample patches (${path} path)`, async () => {
    // custom: 1.5 e_A into attn.0 (direct effect, no flag: the repair fires as well).
    const p = unit(D, A, 1.5);
    const custom = await repairRun('custom', path, { targets: ['attn.0', 'attn.1'], custom: { 'attn.0': Float32Array.from(p), 'attn.1': Float32Array.from(p) } });
    custom.forEach((r, n) => {
      const prompt = REPAIR_PROMPTS[n];
      for (const t of ['attn.0', 'attn.1']) {
        checkEffects(r.ablations[t], handEffects(SELF_REPAIR, prompt, t, p), `custom ${path} ${JSON.stringify(prompt)} ${t}`);
        checkUpstreamExact(r, t, `custom ${path} ${JSON.stringify(prompt)} ${t}`);
      }
    });

    // mean: the patch is the mean of the clean outputs at the prompts' last positions.
    const meanPatch = (t: string) => scale(add(...REPAIR_PROMPTS.map((q) => handRun(SELF_REPAIR, q).comps[t])), 1 / REPAIR_PROMPTS.length);
    const mean = await repairRun('mean', path, { targets: ['attn.0', 'mlp.0'] });
    mean.forEach((r, n) => {
      for (const t of ['attn.0', 'mlp.0']) checkEffects(r.ablations[t], handEffects(SELF_REPAIR, REPAIR_PROMPTS[n], t, meanPatch(t)), `mean ${path} prompt ${n} ${t}`);
    });

    // resample, two given sources per prompt: each patch is the source's clean output, effects averaged.
    const sources = [
      [1, 2],
      [2, 0],
      [0, 1],
    ];
    const res = await repairRun('resample', path, { targets: ['attn.0', 'mlp.0'], sources });
    res.forEach((r, n) => {
      for (const t of ['attn.0', 'mlp.0']) {
        const per = sources[n].map((s) => handEffects(SELF_REPAIR, REPAIR_PROMPTS[n], t, handRun(SELF_REPAIR, REPAIR_PROMPTS[s]).comps[t]));
        const got = r.ablations[t];
        assert.equal(got.patches.length, 2);
        got.patches.forEach((gp, s) => {
          assert.equal(gp.source, sources[n][s]);
          checkEffects(gp, per[s], `resample ${path} prompt ${n} ${t} patch ${s}`);
        });
        checkEffects(got, average(per), `resample ${path} prompt ${n} ${t} mean`);
      }
    });
  });
}

/* ---------- GPT-2 / LayerNorm ---------- */

for (const path of PATHS) {
  test(`LayerNorm erasure model (GPT-2, ${path} path): mean subtraction, β and biases handled as METHOD.md says`, async () => {
    const model = await HookedModel.load(lnDir, { threads: 1 });
    const zero = await analyze(model, ERASURE_PROMPTS, { kind: 'zero', targets: TARGETS, path });
    zero.forEach((r, n) => {
      const prompt = ERASURE_PROMPTS[n];
      const label = `LN erasure ${path} prompt ${JSON.stringify(prompt)}`;
      checkClean(r, handClean(ERASURE_LN, prompt), label);
      for (const t of TARGETS) {
        checkEffects(r.ablations[t], handEffects(ERASURE_LN, prompt, t, ZERO()), `${label} ablate ${t}`);
        checkUpstreamExact(r, t, `${label} ablate ${t}`);
      }
    });
    // Resample: patches from prompts of other lengths (each source's own final position).
    const sources = [
      [1, 2],
      [2, 0],
      [0, 1],
    ];
    const res = await analyze(model, ERASURE_PROMPTS, { kind: 'resample', targets: ['attn.0', 'mlp.1'], sources, path });
    res.forEach((r, n) => {
      for (const t of ['attn.0', 'mlp.1']) {
        const per = sources[n].map((s) => handEffects(ERASURE_LN, ERASURE_PROMPTS[n], t, handRun(ERASURE_LN, ERASURE_PROMPTS[s]).comps[t]));
        r.ablations[t].patches.forEach((gp, s) => checkEffects(gp, per[s], `LN resample ${path} prompt ${n} ${t} patch ${s}`));
        checkEffects(r.ablations[t], average(per), `LN resample ${path} prompt ${n} ${t} mean`);
      }
    });
  });
}
