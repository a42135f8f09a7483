/**
 * The paper's figures (METHOD.md "Figures") as Vega-Lite specs. Pure functions of the results, with
 * inline data and no Node dependencies, so the web explorer can embed the same specs; render.ts
 * turns them into SVG/PNG headlessly.
 *
 *  - profileFigure: Figures 1 and 3 (one prompt, one ablated component; DE and DE'_k per layer).
 *  - importanceFigure: Figure 2 (DE vs −TE per layer, their scatter, correlation and fraction).
 *  - compensationFigure: Figure 7 (CE_k vs removed DE, slope and R² per layer).
 *  - compensationSplitFigure: Figure 8 (the same split into CE_attn and CE_mlp).
 *  - repairHeatmap: the repair matrix (ablated × responding component, mean ΔDE).
 */
import type { TopLevelSpec } from 'vega-lite';
import type { PromptResult } from '../causal/types.js';
import type { RepairMatrix } from '../experiments/repair.js';
import { undefinedReason, type ComponentStats, type Interval, type Ols } from '../experiments/stats.js';
import { HydraError } from '../io/errors.js';
import { componentLabel, parseComponent } from '../models/components.js';

export { componentLabel, parseComponent };

/** Font of every figure; render.ts bundles it and measures text with it. */
export const FIGURE_FONT = 'DejaVu Sans';

// Sizes are at 1x; the PNG is rendered at 2x. Nothing smaller than 11 px.
export const FIGURE_CONFIG = {
  font: FIGURE_FONT,
  background: 'white',
  padding: 12,
  title: { fontSize: 16, subtitleFontSize: 12, subtitleColor: '#444', anchor: 'start', offset: 10 },
  axis: { labelFontSize: 12, titleFontSize: 13, titleFontWeight: 'normal', titleColor: '#222', labelColor: '#333', gridColor: '#e6e6e6' },
  legend: { labelFontSize: 12, titleFontSize: 12, labelLimit: 420, titleLimit: 420, symbolStrokeWidth: 2 },
  header: { labelFontSize: 13, titleFontSize: 13, labelFontWeight: 'bold', labelPadding: 6 },
  view: { stroke: '#bbb' },
  concat: { spacing: 28 },
  facet: { spacing: 24 },
} as const;

const BLUE = '#1f5fa8';
const RED = '#d62728';
const FAINT_RED = '#f2a7a7';
const GREY = '#b8b8b8';
const ATTN_COLOR = '#1f77b4';
const MLP_COLOR = '#e6750a';
const W = 300;
const H = 200;

export type LayerType = 'Attention' | 'MLP';

/** Layer-level components (attn.L / mlp.L) of a name list, with their layer and type. */
function layerComponents(names: string[]): { name: string; layer: number; type: LayerType }[] {
  const out: { name: string; layer: number; type: LayerType }[] = [];
  for (const n of names) {
    const c = parseComponent(n);
    if (c.kind === 'attn') out.push({ name: n, layer: c.layer, type: 'Attention' });
    else if (c.kind === 'mlp') out.push({ name: n, layer: c.layer, type: 'MLP' });
  }
  return out;
}

/** Components ablated (at layer level) in every prompt, in first-prompt order. */
function ablatedLayers(prompts: PromptResult[]): { name: string; layer: number; type: LayerType }[] {
  if (prompts.length === 0) throw new HydraError('no prompts to plot');
  const names = Object.keys(prompts[0].ablations).filter((k) => prompts.every((p) => k in p.ablations));
  const out = layerComponents(names);
  if (out.length === 0) throw new HydraError('no attention or MLP layer was ablated in every prompt; nothing to plot');
  return out;
}

function trim(text: string, max: number): string {
  const t = text.replace(/\s+/g, ' ').trim();
  return t.length > max ? `…${t.slice(t.length - max + 1)}` : t;
}

const layerAxis = (n: number) => ({
  field: 'layer', type: 'quantitative', title: 'layer',
  // a little room either side so end points and the ablated-layer rule stay clear of the frame
  scale: { domain: [-0.25, Math.max(n - 1, 1) + 0.25], nice: false, zero: false },
  axis: { tickMinStep: 1, format: 'd' },
});

function top(spec: Record<string, unknown>): TopLevelSpec {
  return { $schema: 'https://vega.github.io/schema/vega-lite/v6.json', config: FIGURE_CONFIG, ...spec } as unknown as TopLevelSpec;
}

function nLayers(names: string[]): number {
  let n = 0;
  for (const k of names) {
    const c = parseComponent(k);
    n = Math.max(n, c.layer + 1);
  }
  return n;
}

// ---------------------------------------------------------------- Figures 1 and 3

export interface ProfileOptions {
  /** The prompt text to show (defaults to prompt.text). */
  promptText?: string;
  /** The clean predicted token, decoded. */
  tokenText?: string;
  /** Ablation kind, for the title. */
  kind?: string;
  title?: string;
}

export const PROFILE_SERIES = {
  clean: 'clean run: DE',
  mean: "after ablation: DE', mean over patches",
  patch: "after ablation: DE', one patch",
} as const;

/**
 * Figures 1 and 3: for one prompt and ablated component k, the direct effect of every attention
 * and MLP layer in the clean run and after ablating k (per patch, faint; averaged, solid). A dashed
 * rule marks the ablated layer. Rows: 2L clean + 2L·S per patch (only when S > 1) + 2L mean + 1 rule.
 */
export function profileFigure(prompt: PromptResult, k: string, opts: ProfileOptions = {}): TopLevelSpec {
  const ab = prompt.ablations[k];
  if (!ab) throw new HydraError(`prompt ${prompt.index} has no ablation of ${k}`);
  const comps = layerComponents(Object.keys(prompt.de));
  if (comps.length === 0) throw new HydraError(`prompt ${prompt.index} has no attention or MLP direct effects to plot`);
  const L = nLayers(comps.map((c) => c.name));
  const rows: Record<string, unknown>[] = [];
  for (const c of comps) rows.push({ layer: c.layer, type: c.type, series: PROFILE_SERIES.clean, patch: -1, value: prompt.de[c.name] });
  if (ab.patches.length > 1) {
    ab.patches.forEach((p, i) => {
      for (const c of comps) {
        const v = p.de_prime[c.name];
        if (v !== undefined) rows.push({ layer: c.layer, type: c.type, series: PROFILE_SERIES.patch, patch: i, value: v });
      }
    });
  }
  for (const c of comps) {
    const v = ab.de_prime[c.name];
    if (v !== undefined) rows.push({ layer: c.layer, type: c.type, series: PROFILE_SERIES.mean, patch: -1, value: v });
  }
  const target = parseComponent(k);
  if (target.layer >= 0) {
    rows.push({ layer: target.layer, type: target.kind === 'mlp' ? 'MLP' : 'Attention', series: 'ablated', patch: -1, value: null });
  }
  const text = opts.promptText ?? prompt.text;
  const subtitle: string[] = [];
  if (text) subtitle.push(`prompt: "${trim(text, 90)}"${opts.tokenText !== undefined ? `  →  predicted "${trim(opts.tokenText, 20)}"` : ''}`);
  subtitle.push(`dashed line: the ablated layer${opts.kind ? `; ${opts.kind} ablation` : ''}${ab.patches.length > 1 ? `, ${ab.patches.length} patches` : ''}`);
  const color = {
    field: 'series', type: 'nominal', title: null,
    scale: { domain: [PROFILE_SERIES.clean, PROFILE_SERIES.mean, PROFILE_SERIES.patch], range: [BLUE, RED, FAINT_RED] },
    legend: { orient: 'bottom', direction: 'vertical', symbolType: 'stroke', symbolSize: 400, symbolStrokeWidth: 3 },
  };
  const lines = (series: string, extra: Record<string, unknown>) => ({
    transform: [{ filter: { field: 'series', equal: series } }],
    mark: { type: 'line', point: series !== PROFILE_SERIES.patch, ...extra },
    encoding: {
      x: layerAxis(L),
      y: { field: 'value', type: 'quantitative', title: 'direct effect on the logit of the predicted token' },
      color,
      detail: { field: 'patch', type: 'nominal' },
      order: { field: 'layer', type: 'quantitative' },
    },
  });
  return top({
    title: { text: opts.title ?? `Direct effect of each layer before and after ablating ${componentLabel(k)}`, subtitle },
    data: { values: rows },
    facet: { column: { field: 'type', type: 'nominal', title: null, sort: ['Attention', 'MLP'], header: { labelExpr: "datum.value + ' layers'" } } },
    spec: {
      width: W,
      height: H + 40,
      layer: [
        lines(PROFILE_SERIES.patch, { strokeWidth: 1, opacity: 0.8 }),
        lines(PROFILE_SERIES.clean, { strokeWidth: 2.5 }),
        lines(PROFILE_SERIES.mean, { strokeWidth: 2.5 }),
        {
          transform: [{ filter: { field: 'series', equal: 'ablated' } }],
          mark: { type: 'rule', strokeDash: [6, 4], color: '#333', strokeWidth: 1.5 },
          encoding: { x: { field: 'layer', type: 'quantitative' } },
        },
      ],
    },
    resolve: { scale: { y: 'shared' } },
  });
}

// ---------------------------------------------------------------- Figure 2

const MEASURE_DE = 'DE: direct effect (unembedding)';
const MEASURE_TE = '−TE: importance by ablation';

function ciRows(iv: Interval | undefined): { lo: number | null; hi: number | null } {
  return { lo: iv?.lo ?? null, hi: iv?.hi ?? null };
}

/** Layer position nudged by series so that two series' error bars at one layer stay apart. */
function nudge(layer: number, second: boolean): number {
  return layer + (second ? 0.08 : -0.08);
}

const nudgedLayerAxis = (n: number) => ({ ...layerAxis(n), field: 'x' });

/** Figure 2 data: per prompt and layer-level component, DE(k) and −TE_k. */
export function importanceRows(prompts: PromptResult[]): { prompt: number; layer: number; type: LayerType; de: number; neg_te: number }[] {
  const comps = ablatedLayers(prompts);
  const rows: { prompt: number; layer: number; type: LayerType; de: number; neg_te: number }[] = [];
  for (const p of prompts) {
    for (const c of comps) {
      const de = p.de[c.name];
      if (de === undefined) throw new HydraError(`prompt ${p.index} has no clean direct effect for ${c.name}`);
      rows.push({ prompt: p.index, layer: c.layer, type: c.type, de, neg_te: -p.ablations[c.name].te });
    }
  }
  return rows;
}

/** Endpoints of y = x inside the data's bounding box (so the reference line does not stretch the axes). */
function diagonalRows(xs: number[], ys: number[]): { v: number }[] {
  const fx = xs.filter(Number.isFinite), fy = ys.filter(Number.isFinite);
  if (fx.length === 0 || fy.length === 0) return [];
  const lo = Math.max(Math.min(...fx), Math.min(...fy));
  const hi = Math.min(Math.max(...fx), Math.max(...fy));
  return hi > lo ? [{ v: lo }, { v: hi }] : [];
}

/** Colour by the ablated layer's depth (viridis over 0..L−1). */
const depthColor = (L: number) => ({ field: 'layer', type: 'quantitative', title: 'layer', scale: { scheme: 'viridis', domain: [0, Math.max(L - 1, 1)] }, legend: { format: 'd', tickMinStep: 1 } });

/** The dashed y = x reference line of a scatter, inside its data. */
function diagonalLayer(xs: number[], ys: number[]): Record<string, unknown> {
  return {
    data: { values: diagonalRows(xs, ys) },
    mark: { type: 'line', strokeDash: [6, 4], color: '#555', strokeWidth: 1.5 },
    encoding: { x: { field: 'v', type: 'quantitative' }, y: { field: 'v', type: 'quantitative' } },
  };
}

/** Figure 2 (a, b): per layer, DE and −TE, per prompt (grey) and mean (blue); rows = 2 per (prompt, layer component). */
export function importanceProfiles(prompts: PromptResult[]): Record<string, unknown> {
  const rows = importanceRows(prompts).flatMap((r) => [
    { prompt: r.prompt, layer: r.layer, type: r.type, measure: MEASURE_DE, value: r.de },
    { prompt: r.prompt, layer: r.layer, type: r.type, measure: MEASURE_TE, value: r.neg_te },
  ]);
  const L = Math.max(...rows.map((r) => r.layer)) + 1;
  const color = { scale: { domain: ['each prompt', 'mean over prompts'], range: [GREY, BLUE] }, title: null, legend: { orient: 'top', symbolType: 'stroke', symbolSize: 400, symbolStrokeWidth: 3 } };
  return {
    title: { text: '(a, b) Importance of each layer by unembedding (DE) and by ablation (−TE)', fontSize: 14 },
    data: { values: rows },
    facet: {
      row: { field: 'measure', type: 'nominal', title: null, sort: [MEASURE_DE, MEASURE_TE], header: { labelAngle: 0, labelAlign: 'left', labelAnchor: 'start', labelOrient: 'top' } },
      column: { field: 'type', type: 'nominal', title: null, sort: ['Attention', 'MLP'], header: { labelExpr: "datum.value + ' layers'" } },
    },
    spec: {
      width: W,
      height: H - 40,
      layer: [
        {
          mark: { type: 'line', strokeWidth: 1, opacity: 0.7 },
          encoding: {
            x: layerAxis(L),
            y: { field: 'value', type: 'quantitative', title: 'effect on predicted-token logit' },
            detail: { field: 'prompt', type: 'nominal' },
            color: { datum: 'each prompt', ...color },
          },
        },
        {
          mark: { type: 'line', strokeWidth: 3, point: true },
          encoding: {
            x: layerAxis(L),
            y: { aggregate: 'mean', field: 'value', type: 'quantitative' },
            color: { datum: 'mean over prompts', ...color },
          },
        },
      ],
    },
    resolve: { scale: { y: 'independent' } },
  };
}

/** Figure 2 (c): DE vs −TE for every prompt × layer, coloured by layer, with y = x. */
export function importanceScatter(prompts: PromptResult[]): Record<string, unknown> {
  const rows = importanceRows(prompts);
  const L = Math.max(...rows.map((r) => r.layer)) + 1;
  return {
    title: { text: '(c) DE against −TE, all prompts and layers', fontSize: 14, subtitle: 'points below the dashed line y = x: ablation under-states the direct effect' },
    width: W,
    height: W,
    layer: [
      diagonalLayer(rows.map((r) => r.de), rows.map((r) => r.neg_te)),
      {
        data: { values: rows },
        mark: { type: 'point', filled: true, size: 55, opacity: 0.8 },
        encoding: {
          x: { field: 'de', type: 'quantitative', title: 'DE: direct effect (logit units)' },
          y: { field: 'neg_te', type: 'quantitative', title: '−TE: drop in logit when ablated' },
          color: depthColor(L),
          shape: { field: 'type', type: 'nominal', title: 'ablated', scale: { domain: ['Attention', 'MLP'], range: ['circle', 'triangle-up'] } },
          tooltip: [{ field: 'prompt' }, { field: 'layer' }, { field: 'type' }, { field: 'de', format: '.4f' }, { field: 'neg_te', format: '.4f' }],
        },
      },
    ],
  };
}

const STAT_R = 'Pearson r of DE and −TE';
const STAT_FRAC = 'fraction of prompts with DE > −TE';

/** Figure 2 (d) data: per layer component, r and fraction with bootstrap 95% intervals. */
export function importanceSummaryRows(stats: Record<string, ComponentStats>): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = [];
  for (const c of layerComponents(Object.keys(stats))) {
    const s = stats[c.name];
    rows.push({ layer: c.layer, x: nudge(c.layer, c.type === 'MLP'), type: c.type, stat: STAT_R, value: s.pearson_de_vs_neg_te, ...ciRows(s.bootstrap95.pearson_de_vs_neg_te) });
    rows.push({ layer: c.layer, x: nudge(c.layer, c.type === 'MLP'), type: c.type, stat: STAT_FRAC, value: s.frac_de_gt_neg_te, ...ciRows(s.bootstrap95.frac_de_gt_neg_te) });
  }
  return rows;
}

const typeColor = { field: 'type', type: 'nominal', title: 'ablated', scale: { domain: ['Attention', 'MLP'], range: [ATTN_COLOR, MLP_COLOR] } };

function summaryPanel(title: string, rows: Record<string, unknown>[], L: number, yTitle: string, statField: string, color: Record<string, unknown>, statOrder: string[]): Record<string, unknown> {
  return {
    title: { text: title, fontSize: 14 },
    data: { values: rows },
    facet: { column: { field: statField, type: 'nominal', title: null, sort: statOrder } },
    spec: {
      width: W - 60,
      height: H,
      layer: [
        {
          transform: [{ filter: 'isValid(datum.lo) && isValid(datum.hi)' }],
          mark: { type: 'rule', strokeWidth: 1.5, opacity: 0.6 },
          encoding: { x: nudgedLayerAxis(L), y: { field: 'lo', type: 'quantitative', title: yTitle }, y2: { field: 'hi' }, color },
        },
        {
          transform: [{ filter: 'isValid(datum.value)' }],
          mark: { type: 'line', point: true, strokeWidth: 2 },
          encoding: { x: nudgedLayerAxis(L), y: { field: 'value', type: 'quantitative', title: yTitle }, color },
        },
      ],
    },
    resolve: { scale: { y: 'independent' } },
  };
}

/** Figure 2 (d): per layer, Pearson r and fraction DE > −TE, with bootstrap 95% bars. */
export function importanceSummary(stats: Record<string, ComponentStats>): Record<string, unknown> {
  const rows = importanceSummaryRows(stats);
  const L = nLayers(Object.keys(stats));
  return summaryPanel('(d) Agreement of DE and −TE per layer (bars: bootstrap 95% interval)', rows, L, 'correlation or fraction', 'stat', typeColor, [STAT_R, STAT_FRAC]);
}

/** Figure 2: (a, b) profiles, (c) scatter, (d) per-layer correlation and fraction. */
export function importanceFigure(prompts: PromptResult[], stats: Record<string, ComponentStats>, opts: { kind?: string } = {}): TopLevelSpec {
  return top({
    title: { text: 'Layer importance by unembedding (DE) and by ablation (−TE)', subtitle: opts.kind ? `${opts.kind} ablation, ${prompts.length} prompts` : `${prompts.length} prompts`, fontSize: 17 },
    vconcat: [importanceProfiles(prompts), { hconcat: [importanceScatter(prompts), importanceSummary(stats)], resolve: { scale: { color: 'independent', shape: 'independent' } } }],
    resolve: { scale: { color: 'independent' } },
  });
}

// ---------------------------------------------------------------- Figures 7 and 8

/** Per prompt and ablated layer-level component: removed DE (−ΔDE_k(k)) and CE, CE_attn, CE_mlp. */
export function compensationRows(prompts: PromptResult[]): { prompt: number; component: string; layer: number; type: LayerType; removed: number; ce: number; ce_attn: number; ce_mlp: number }[] {
  const comps = ablatedLayers(prompts);
  const rows = [];
  for (const p of prompts) {
    for (const c of comps) {
      const a = p.ablations[c.name];
      rows.push({ prompt: p.index, component: c.name, layer: c.layer, type: c.type, removed: -a.dde_self, ce: a.ce, ce_attn: a.ce_attn, ce_mlp: a.ce_mlp });
    }
  }
  return rows;
}

function compensationScatter(mine: ReturnType<typeof compensationRows>, L: number, title: string, fit?: Ols): Record<string, unknown> {
  const layers: Record<string, unknown>[] = [
    diagonalLayer(mine.map((r) => r.removed), mine.map((r) => r.ce)),
    {
      data: { values: mine },
      mark: { type: 'point', filled: true, size: 55, opacity: 0.8 },
      encoding: {
        x: { field: 'removed', type: 'quantitative', title: 'removed direct effect, −ΔDE(k)' },
        y: { field: 'ce', type: 'quantitative', title: 'compensatory effect CE' },
        color: depthColor(L),
        tooltip: [{ field: 'prompt' }, { field: 'component' }, { field: 'removed', format: '.4f' }, { field: 'ce', format: '.4f' }],
      },
    },
  ];
  if (fit && fit.slope !== null && fit.intercept !== null && mine.length > 0) {
    const xs = mine.map((r) => r.removed);
    const line = [Math.min(...xs), Math.max(...xs)].map((x) => ({ x, y: fit.intercept! + fit.slope! * x }));
    layers.push({ data: { values: line }, mark: { type: 'line', color: RED, strokeWidth: 2 }, encoding: { x: { field: 'x', type: 'quantitative' }, y: { field: 'y', type: 'quantitative' } } });
  }
  return { title: { text: title, fontSize: 14 }, width: W, height: W - 40, layer: layers };
}

const STAT_SLOPE = 'OLS slope';
const STAT_R2 = 'R² (variance explained)';

/** Per ablated layer: slope and R² (with bootstrap 95% intervals) of CE, CE_attn or CE_mlp on the removed DE. */
export function regressionRows(stats: Record<string, ComponentStats>, which: 'ce' | 'ce_attn' | 'ce_mlp'): Record<string, unknown>[] {
  const part = which === 'ce' ? 'total compensation CE' : which === 'ce_attn' ? 'attention compensation CE_attn' : 'MLP compensation CE_mlp';
  const rows: Record<string, unknown>[] = [];
  for (const c of layerComponents(Object.keys(stats))) {
    const s = stats[c.name];
    const o = which === 'ce' ? s.ols_ce_on_removed : which === 'ce_attn' ? s.ols_ce_attn_on_removed : s.ols_ce_mlp_on_removed;
    const b = s.bootstrap95;
    const slopeIv = which === 'ce' ? b.slope_ce : which === 'ce_attn' ? b.slope_ce_attn : b.slope_ce_mlp;
    const r2Iv = which === 'ce' ? b.r2_ce : which === 'ce_attn' ? b.r2_ce_attn : b.r2_ce_mlp;
    // an undefined slope (nothing downstream) is left out, not drawn as 0
    const na = undefinedReason(s, `slope_${which}`) !== null;
    const slope = na ? { value: null, lo: null, hi: null } : { value: o.slope, ...ciRows(slopeIv) };
    rows.push({ layer: c.layer, x: nudge(c.layer, which === 'ce_mlp' || (which === 'ce' && c.type === 'MLP')), type: c.type, part, stat: STAT_SLOPE, ...slope });
    rows.push({ layer: c.layer, x: nudge(c.layer, which === 'ce_mlp' || (which === 'ce' && c.type === 'MLP')), type: c.type, part, stat: STAT_R2, value: o.r2, ...ciRows(r2Iv) });
  }
  return rows;
}

/**
 * Figure 7: (a) attention and (c) MLP ablations, CE_k against the removed direct effect coloured by
 * depth; (b) the layer `best` (the paper: highest R²) with its fit; (d) slope and R² per layer.
 */
export function compensationFigure(prompts: PromptResult[], stats: Record<string, ComponentStats>, opts: { kind?: string; best?: string | null } = {}): TopLevelSpec {
  const rows = compensationRows(prompts);
  const L = Math.max(...rows.map((r) => r.layer)) + 1;
  const scatters: Record<string, unknown>[] = [];
  const attn = rows.filter((r) => r.type === 'Attention'), mlp = rows.filter((r) => r.type === 'MLP');
  if (attn.length) scatters.push(compensationScatter(attn, L, '(a) Attention layers ablated'));
  if (opts.best) {
    const s = stats[opts.best];
    scatters.push(compensationScatter(rows.filter((r) => r.component === opts.best), L,
      `(b) ${componentLabel(opts.best)}: highest R² (${s?.ols_ce_on_removed.r2?.toFixed(2) ?? 'n/a'})`, s?.ols_ce_on_removed));
  }
  if (mlp.length) scatters.push(compensationScatter(mlp, L, '(c) MLP layers ablated'));
  const reg = regressionRows(stats, 'ce');
  return top({
    title: {
      text: 'Compensatory effect against the removed direct effect',
      subtitle: `each point is one prompt; dashed line y = x is full compensation${opts.kind ? `; ${opts.kind} ablation` : ''}, ${prompts.length} prompts`,
      fontSize: 17,
    },
    vconcat: [
      { hconcat: scatters, resolve: { scale: { color: 'shared' } } },
      summaryPanel('(d) Regression of CE on the removed DE, per ablated layer (bars: bootstrap 95% interval)', reg, L, 'slope or R²', 'stat', typeColor, [STAT_SLOPE, STAT_R2]),
    ],
    resolve: { scale: { color: 'independent' } },
  });
}

/** Evenly spaced choice of `n` items (the paper shows a selection of layers). */
function spread<T>(xs: T[], n: number): T[] {
  if (xs.length <= n) return xs;
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(xs[Math.round((i * (xs.length - 1)) / (n - 1))]);
  return out;
}

const PART_ATTN = 'attention compensation CE_attn';
const PART_MLP = 'MLP compensation CE_mlp';
const partColor = { field: 'part', type: 'nominal', title: null, scale: { domain: [PART_ATTN, PART_MLP], range: [ATTN_COLOR, MLP_COLOR] }, legend: { orient: 'top' } };

/**
 * Figure 8 (scatter part) data: for the chosen ablated components, CE_attn and CE_mlp against the
 * removed DE (2 rows per prompt and component), plus OLS fit lines (2 endpoints × 2 parts per component).
 */
export function compensationSplitRows(prompts: PromptResult[], stats: Record<string, ComponentStats>, components: string[]): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = [];
  for (const k of components) {
    const panel = componentLabel(k);
    const xs: number[] = [];
    for (const p of prompts) {
      const a = p.ablations[k];
      if (!a) throw new HydraError(`prompt ${p.index} has no ablation of ${k}`);
      xs.push(-a.dde_self);
      rows.push({ panel, prompt: p.index, mark: 'point', part: PART_ATTN, removed: -a.dde_self, value: a.ce_attn });
      rows.push({ panel, prompt: p.index, mark: 'point', part: PART_MLP, removed: -a.dde_self, value: a.ce_mlp });
    }
    const s = stats[k];
    if (!s) continue;
    const lo = Math.min(...xs), hi = Math.max(...xs);
    for (const [part, o, stat] of [[PART_ATTN, s.ols_ce_attn_on_removed, 'slope_ce_attn'], [PART_MLP, s.ols_ce_mlp_on_removed, 'slope_ce_mlp']] as const) {
      // no fit where the part is undefined (nothing of that type downstream)
      if (o.slope === null || o.intercept === null || undefinedReason(s, stat) !== null) continue;
      for (const x of [lo, hi]) rows.push({ panel, prompt: -1, mark: 'fit', part, removed: x, value: o.intercept + o.slope * x });
    }
  }
  return rows;
}

/** Figure 8: compensation split into attention (CE_attn) and MLP (CE_mlp) parts. */
export function compensationSplitFigure(
  prompts: PromptResult[],
  stats: Record<string, ComponentStats>,
  opts: { kind?: string; components?: string[]; maxPanels?: number } = {},
): TopLevelSpec {
  const all = ablatedLayers(prompts);
  const attn = all.filter((c) => c.type === 'Attention').map((c) => c.name);
  const chosen = opts.components ?? spread(attn.length > 0 ? attn : all.map((c) => c.name), opts.maxPanels ?? 4);
  const panels = chosen.map(componentLabel);
  const rows = compensationSplitRows(prompts, stats, chosen);
  const L = nLayers(all.map((c) => c.name));
  const reg = [...regressionRows(stats, 'ce_attn'), ...regressionRows(stats, 'ce_mlp')].map((r) => ({ ...r, panel: `${r.type} layers ablated: ${r.stat}` }));
  const regPanels = ['Attention', 'MLP'].flatMap((t) => [STAT_SLOPE, STAT_R2].map((s) => `${t} layers ablated: ${s}`)).filter((p) => reg.some((r) => r.panel === p));
  const xy = {
    x: { field: 'removed', type: 'quantitative', title: 'removed direct effect, −ΔDE(k)' },
    y: { field: 'value', type: 'quantitative', title: 'compensatory effect' },
    color: partColor,
  };
  return top({
    title: {
      text: 'Compensation split into attention (CE_attn) and MLP (CE_mlp) parts',
      subtitle: `lines: least-squares fits${opts.kind ? `; ${opts.kind} ablation` : ''}, ${prompts.length} prompts`,
      fontSize: 17,
    },
    vconcat: [
      {
        title: { text: '(a) Selected ablated layers: each point is one prompt', fontSize: 14 },
        data: { values: rows },
        facet: { column: { field: 'panel', type: 'nominal', title: null, sort: panels } },
        spec: {
          width: 210,
          height: 200,
          layer: [
            { transform: [{ filter: { field: 'mark', equal: 'point' } }], mark: { type: 'point', filled: true, size: 50, opacity: 0.8 }, encoding: xy },
            { transform: [{ filter: { field: 'mark', equal: 'fit' } }], mark: { type: 'line', strokeWidth: 2 }, encoding: xy },
          ],
        },
        resolve: { scale: { x: 'independent', y: 'independent' } },
      },
      {
        title: { text: '(b) Regression of each part on the removed DE, per ablated layer (bars: bootstrap 95% interval)', fontSize: 14 },
        data: { values: reg },
        facet: { field: 'panel', type: 'nominal', title: null, sort: regPanels },
        columns: 2,
        spec: {
          width: W,
          height: H - 20,
          layer: [
            {
              transform: [{ filter: 'isValid(datum.lo) && isValid(datum.hi)' }],
              mark: { type: 'rule', strokeWidth: 1.5, opacity: 0.6 },
              encoding: { x: nudgedLayerAxis(L), y: { field: 'lo', type: 'quantitative', title: 'slope or R²' }, y2: { field: 'hi' }, color: partColor },
            },
            {
              transform: [{ filter: 'isValid(datum.value)' }],
              mark: { type: 'line', point: true, strokeWidth: 2 },
              encoding: { x: nudgedLayerAxis(L), y: { field: 'value', type: 'quantitative', title: 'slope or R²' }, color: partColor },
            },
          ],
        },
        resolve: { scale: { y: 'independent' } },
      },
    ],
  });
}

// ---------------------------------------------------------------- heads

/**
 * DE per head for one prompt (left) and, given an ablation k, ΔDE = DE'_k − DE per head (right):
 * where the "replacement" heads show up. Each panel has its own diverging scale centred at 0.
 */
export function headsFigure(prompt: PromptResult, k?: string, opts: { tokenText?: string } = {}): TopLevelSpec {
  const heads = Object.keys(prompt.de).map((n) => ({ n, c: parseComponent(n) })).filter((x) => x.c.kind === 'head');
  if (heads.length === 0) throw new HydraError(`prompt ${prompt.index} has no per-head direct effects; run it with heads`);
  const ab = k ? prompt.ablations[k] : undefined;
  if (k && !ab) throw new HydraError(`prompt ${prompt.index} has no ablation of ${k}`);
  const panel = (title: string, value: (n: string) => number) => ({
    title,
    width: 26 * (Math.max(...heads.map((x) => x.c.head)) + 1),
    height: 22 * nLayers(heads.map((x) => x.n)),
    data: { values: heads.map(({ n, c }) => ({ component: n, layer: c.layer, head: c.head, value: value(n) })) },
    mark: { type: 'rect', stroke: 'white', strokeWidth: 1 },
    encoding: {
      x: { field: 'head', type: 'ordinal', title: 'head', axis: { labelAngle: 0 } },
      y: { field: 'layer', type: 'ordinal', title: 'layer' },
      color: { field: 'value', type: 'quantitative', title: null, scale: { scheme: 'redblue', reverse: true, domainMid: 0 } },
      tooltip: [{ field: 'component' }, { field: 'value', format: '.4f' }],
    },
  });
  const token = opts.tokenText === undefined ? '' : ` on ${JSON.stringify(opts.tokenText)}`;
  const panels = [panel(`clean DE per head${token}`, (n) => prompt.de[n])];
  if (ab && k) panels.push(panel(`ΔDE per head after ablating ${componentLabel(k)}`, (n) => ab.de_prime[n] - prompt.de[n]));
  return top({ hconcat: panels, resolve: { scale: { color: 'independent' } } });
}

// ---------------------------------------------------------------- repair matrix

/**
 * The repair matrix as a heatmap: one row per ablated component, one column per responder, the
 * colour the mean ΔDE over prompts (red: the responder's direct effect rises, i.e. it repairs;
 * blue: it falls). Cells of responders not downstream are left empty; a dot marks each row's
 * largest mean ΔDE when it is positive.
 */
export function repairHeatmap(m: RepairMatrix): TopLevelSpec {
  // cells as large as fit about 720 px, at least 9 px; below 14 px every other label is left out
  const cell = Math.max(9, Math.min(28, Math.floor(720 / Math.max(m.responders.length, m.ablated.length, 1))));
  const what = m.level === 'heads' ? 'head or MLP' : 'layer';
  const axis = { labelOverlap: cell < 14 ? 'parity' : false, labelFontSize: 11 };
  const tops = m.rows.filter((r) => r.top.length > 0 && r.top[0].mean_dde > 0).map((r) => ({ ablated: r.ablated, responder: r.top[0].component, mean_dde: r.top[0].mean_dde }));
  const x = { field: 'responder', type: 'ordinal', sort: m.responders, scale: { domain: m.responders }, title: `responding ${what}`, axis: { ...axis, labelAngle: -90 } };
  const y = { field: 'ablated', type: 'ordinal', sort: m.ablated, scale: { domain: m.ablated }, title: 'ablated component', axis };
  return top({
    title: { text: `Repair matrix: mean ΔDE of each downstream ${what}`, subtitle: `after ablating each component; ${m.n_prompts} prompts; dot: the largest positive mean ΔDE of the row` },
    width: cell * Math.max(m.responders.length, 1),
    height: cell * Math.max(m.ablated.length, 1),
    layer: [
      {
        data: { values: m.cells },
        mark: { type: 'rect' },
        encoding: {
          x, y,
          color: { field: 'mean_dde', type: 'quantitative', title: 'mean ΔDE', scale: { scheme: 'redblue', reverse: true, domainMid: 0 } },
          tooltip: [{ field: 'ablated' }, { field: 'responder' }, { field: 'mean_dde', title: 'mean ΔDE', format: '.4f' }],
        },
      },
      {
        data: { values: tops },
        mark: { type: 'point', filled: true, color: 'black', size: Math.round(cell * cell * 0.15) },
        encoding: { x, y, tooltip: [{ field: 'ablated' }, { field: 'responder', title: 'top responder' }, { field: 'mean_dde', title: 'mean ΔDE', format: '.4f' }] },
      },
    ],
  });
}
