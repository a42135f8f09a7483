/**
 * Result types shared by the causal engine, the sweep store, the report and the CLI.
 * Field names are the JSON schema of `hydra effects --json` (see README), and follow METHOD.md.
 *
 * The effects are declared once, in EFFECTS: the store's columns, the patch average, the CLI's
 * table and the explorer's table derive from it. Adding an effect is one entry here plus its
 * computation in effects.ts (patchEffects).
 */
export const EFFECTS = [
  { key: 'te', label: 'TE', doc: "total effect π̂′ᵢ − π̂ᵢ: how much the ablation moves the clean token's centred logit" },
  { key: 'ce', label: 'CE', doc: 'compensatory effect: the sum of ΔDE over the components downstream of the ablated one' },
  { key: 'ce_attn', label: 'CE attn', doc: 'the part of CE carried by downstream attention layers' },
  { key: 'ce_mlp', label: 'CE mlp', doc: 'the part of CE carried by downstream MLP layers' },
  { key: 'ne', label: 'NE', doc: "norm-scale effect (σ/σ′ − 1) Σ DE′: the part of TE carried by the final norm's scale" },
  { key: 'ie', label: 'IE', doc: 'indirect effect: the ablated component back at its clean value, everything downstream held ablated' },
  { key: 'dde_self', label: 'ΔDE self', doc: "ΔDE(k) = û_σ(p) − DE(k): the ablated component's own change of direct effect" },
] as const;

export type EffectField = (typeof EFFECTS)[number]['key'];
export const EFFECT_FIELDS: readonly EffectField[] = EFFECTS.map((e) => e.key);

/**
 * Optional group, measured only on request (`distribution`: it costs an unembedding of every
 * ablated run): effects on the whole next-token distribution, on the model's real logits
 * (soft-capped where the model caps them). Per patch, and averaged over patches.
 */
export const DISTRIBUTION = [
  { key: 'dh', label: 'ΔH', doc: 'change of the next-token entropy, H(p′) − H(p), in nats' },
  { key: 'kl', label: 'KL', doc: 'KL(p ‖ p′) in nats: the clean distribution p against the ablated p′' },
  { key: 'p_clean', label: 'p(i)', doc: "the clean token's probability in the clean run" },
  { key: 'p_ablated', label: 'p′(i)', doc: "the clean token's probability in the ablated run" },
  { key: 'rank_ablated', label: 'rank′', doc: "the clean token's rank in the ablated run (1 = still the argmax: 1 + the tokens with a higher logit)" },
] as const;

export type DistributionField = (typeof DISTRIBUTION)[number]['key'];
export type DistributionEffects = Record<DistributionField, number>;

/**
 * Optional group, measured only for the MLP layers named (`neurons`): a neuron's direct effect
 * DE_n = a_n · (W_out[:, n] · q) / σ (METHOD.md, "Neurons") in the clean and the ablated run.
 */
export interface NeuronChange {
  neuron: number;
  de: number;
  de_prime: number;
  /** ΔDE_n = DE′_n − DE_n. */
  dde: number;
}

/** Per patch run, besides the effects: the ablated run's σ′ and π̂′ᵢ. */
export const PATCH_FIELDS = ['sigma_prime', 'pi_hat_prime'] as const;

export type Effects = Record<EffectField, number> & {
  /** Only for models with final-logit soft-capping: TE on the real (capped) centred logits; every other effect is on the raw logits. */
  te_capped?: number;
  /** DE'_k(c), keyed by component name (embed, attn.{l}, mlp.{l}, head.{l}.{h}, attn_bias.{l}). */
  de_prime: Record<string, number>;
  /** Only with the own-scale option: û_σ'(c') = (σ/σ') DE'_k(c), the ablated run unembedded with its own scale. */
  de_prime_own_scale?: Record<string, number>;
  /** Only with `distribution`: see DISTRIBUTION. */
  distribution?: DistributionEffects;
  /** Only with `neurons`: per named MLP layer downstream of the target, its top neurons by |ΔDE_n| (largest first). */
  neurons?: Record<string, NeuronChange[]>;
};

/** One patch run (one resample source, one noise sample, or the single zero/mean patch). */
export type PatchEffects = Effects & {
  /** Resample: index (in the prompt set) of the prompt whose clean output is the patch; null otherwise. */
  source: number | null;
  /** The ablated run's own final-norm scale σ'. */
  sigma_prime: number;
  /** π̂'_i: the ablated run's centred logit of the clean token. */
  pi_hat_prime: number;
};

/** Effects of ablating one component, averaged over its patches (Monte-Carlo average of effects). */
export type AblationResult = Effects & {
  patches: PatchEffects[];
};

export interface PromptResult {
  /** Position of the prompt in its prompt set. */
  index: number;
  ids: number[];
  text?: string;
  /** Clean max-likelihood token i. */
  token: number;
  /** Clean final-norm scale σ. */
  sigma: number;
  /** Clean centred logit π̂_i. */
  pi_hat: number;
  /** Clean direct effect DE(c) of every component. */
  de: Record<string, number>;
  /** Keyed by ablated component (a joint ablation: its members joined by '+'). */
  ablations: Record<string, AblationResult>;
  /** With another measured quantity than the clean argmax: the metric and its tokens (pi_hat and every effect read r · π̂). */
  readout?: { metric: Metric; answer: number; counter: number | null };
}

export type { AblationKind } from './ablations.js';
import type { Metric } from './readout.js';
