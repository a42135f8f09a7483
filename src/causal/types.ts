/**
 * Result types shared by the causal engine, the sweep store, the report and the CLI.
 * Field names are the JSON schema of `hydra effects --json` (see README), and follow
 * METHOD.md: te = TE_k, ce = CE_k, ce_attn/ce_mlp its parts, ne = NE_k, ie = IE_k,
 * dde_self = ΔDE_k(k) = û_σ(p) − DE(k), de_prime = DE'_k(c) for every component c.
 */
export interface Effects {
  te: number;
  ce: number;
  ce_attn: number;
  ce_mlp: number;
  ne: number;
  ie: number;
  dde_self: number;
  /** Only for models with final-logit soft-capping: TE on the real (capped) centred logits; every other effect is on the raw logits. */
  te_capped?: number;
  /** DE'_k(c), keyed by component name (embed, attn.{l}, mlp.{l}, head.{l}.{h}, attn_bias.{l}). */
  de_prime: Record<string, number>;
  /** Only with the own-scale option: û_σ'(c') = (σ/σ') DE'_k(c), the ablated run unembedded with its own scale. */
  de_prime_own_scale?: Record<string, number>;
}

/** One patch run (one resample source, one noise sample, or the single zero/mean patch). */
export interface PatchEffects extends Effects {
  /** Resample: index (in the prompt set) of the prompt whose clean output is the patch; null otherwise. */
  source: number | null;
  /** The ablated run's own final-norm scale σ'. */
  sigma_prime: number;
  /** π̂'_i: the ablated run's centred logit of the clean token. */
  pi_hat_prime: number;
}

/** Effects of ablating one component, averaged over its patches (Monte-Carlo average of effects). */
export interface AblationResult extends Effects {
  patches: PatchEffects[];
}

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
  /** Keyed by ablated component. */
  ablations: Record<string, AblationResult>;
}

export type AblationKind = 'zero' | 'mean' | 'noise' | 'resample' | 'custom';
