/**
 * hydra-effect: the library. Everything a script needs, from one import:
 *
 *   import { HookedModel, analyze, readPromptSet } from 'hydra-effect';
 *
 * - Models: HookedModel.load (a directory or a Hub id), encode, forward with interventions
 *   (do(C = p) on any component) and every component's output read out.
 * - Effects (METHOD.md): analyze ablates components of a prompt set (zero, mean, noise,
 *   resample, custom) and returns DE, TE, CE, NE, IE per patch and averaged.
 * - Prompt sets: loadDataset / readPromptSet, the same reader as every CLI command.
 * - Sweeps and their results: runSweep, ResultsStore (readResults), mergeStores,
 *   exportParquet, datasetStatistics, reportFromDatabase.
 *
 * Errors a caller can fix are HydraError; their messages name the parameter at fault in
 * backticks (e.g. `samples`).
 */
export { HydraError } from './io/errors.js';

// Models
export { HookedModel } from './models/model.js';
export type { LoadOptions, ForwardOptions, Intervention, PromptActivations, KVCache } from './models/model.js';
export { layerComponents, headComponents, parseComponent, parseTarget, targetName } from './models/components.js';
export type { Component, ComponentKind } from './models/components.js';
export { greedyDecode } from './models/generate.js';
export type { HydraTokenizer } from './io/tokenizer.js';
export { defaultModelDir } from './io/paths.js';

// Readouts and effects
export { Readout, directEffect, centredLogit, softmax, topTokens, METRICS, readLogits } from './causal/readout.js';
export { analyze, defaultTargets, DEFAULT_BATCH_PROMPTS } from './causal/analysis.js';
export { ABLATIONS, ablationKind, DEFAULT_SAMPLES, NOISE_SCALE } from './causal/ablations.js';
export type { AblationKindDef } from './causal/ablations.js';
export { CleanBank } from './causal/bank.js';
export type { AblationOptions } from './causal/analysis.js';
export type { AblationKind, AblationResult, Effects, PatchEffects, PromptResult } from './causal/types.js';

// Where the repair comes from, neurons, the whole distribution (analyze options `distribution`, `neurons`)
export { DISTRIBUTION } from './causal/types.js';
export type { DistributionEffects, NeuronChange } from './causal/types.js';
export type { ExtraOptions } from './causal/extras.js';
export { distributionChange } from './causal/distribution.js';
export { neuronEffects, neuronLayers, biasDirectEffect } from './causal/neurons.js';
export { repairSources, promptRepairSources, responders } from './causal/sources.js';
export type { RepairSources } from './causal/sources.js';
export { datasetRepairSources } from './experiments/sources.js';
export type { DatasetRepairSources, MeanInterval } from './experiments/sources.js';

// Prompt sets
export { loadDataset, BUNDLED_DATASETS, summarizeFilter } from './io/datasets.js';
export type { Dataset, DatasetOptions, PromptRecord } from './io/datasets.js';
export { answerToken, filterKnown } from './experiments/filter.js';
export type { FilterResult } from './experiments/filter.js';
export { readPromptSet } from './experiments/prompts.js';
export type { PromptSet } from './experiments/prompts.js';

// Iterated ablation (paper Q7)
export { iterateAblation } from './experiments/iterate.js';
export type { IterateOptions, IterateResult, IterateStep } from './experiments/iterate.js';

// One prompt (Figure 1) and sweeps (Section 4)
export { profilePrompt, sourcePool } from './experiments/profile.js';
export { runSweep, dropCategory } from './experiments/sweep.js';
export type { SweepOptions, SweepSummary } from './experiments/sweep.js';
export { ResultsStore, mergeStores, exportParquet, SCHEMA_VERSION } from './experiments/store.js';
export type { RunConfig, ReadOptions, DroppedPrompt, PromptExtra, StorePatches } from './experiments/store.js';

// Statistics and reports
export { datasetStatistics, Statistics, undefinedReason } from './experiments/stats.js';
export type { ComponentStats, StatsOptions } from './experiments/stats.js';
export { repairFromDatabase, repairOfStore, repairDetail } from './experiments/repair.js';
export type { RepairMatrix, AblatedRepair, ResponderStat, RepairOptions, RepairLevel } from './experiments/repair.js';
export { reportFromDatabase, analyzeDatabase } from './report/database.js';
export { profileFigure, importanceFigure, compensationFigure, headsFigure } from './report/figures.js';
export { writeFigure, renderSvg } from './report/render.js';

// Findings: the report's verdicts (METHOD.md "Findings")
export { computeFindings } from './experiments/findings.js';
export type { Findings, LayerFinding, ModelFinding } from './experiments/findings.js';