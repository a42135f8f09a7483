/**
 * The static report: figures (SVG + PNG), statistics (CSV + JSON) and one index.html with inline CSS
 * that explains in plain words what each figure and number means. Figures are referenced as files
 * (Vega's SVGs reuse element ids, so several cannot be inlined into one document safely).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import type { PromptResult } from '../causal/types.js';
import { estimateOf, type Findings, type LayerFinding } from '../experiments/findings.js';
import type { AblatedRepair, RepairMatrix, RepairVerdict } from '../experiments/repair.js';
import { fmtNum } from '../experiments/format.js';
import { statsToCsv, undefinedReason, type BootstrapStat, type ComponentStats, type Interval } from '../experiments/stats.js';
import { HydraError } from '../io/errors.js';
import { makeDir } from '../io/paths.js';
import { compensationFigure, compensationSplitFigure, componentLabel, importanceFigure, parseComponent, profileFigure, repairHeatmap } from './figures.js';
import { writeFigure } from './render.js';

export interface ReportInput {
  /** Model name or path, as the user gave it. */
  model: string;
  /** Prompt set name. */
  dataset: string;
  /** Run settings shown in the report (ablation kind, patches, seed...). */
  config?: Record<string, unknown>;
  /** Ablation kind, for titles (default: config.kind, else 'resample'). */
  kind?: string;
  prompts: PromptResult[];
  stats: Record<string, ComponentStats>;
  /** Decoded prompt texts and predicted tokens, by position in `prompts`, for the profile figures. */
  promptTexts?: string[];
  tokenTexts?: string[];
  /** Figures 1 and 3: the ablated component and prompt of each (default: chosen from the statistics). */
  picks?: ProfilePick[];
  /** The verdicts (findings.json); without them the report has no Findings section. */
  findings?: Findings;
  /** The same statistics with the ablated run's own final-norm scale, shown beside the frozen-scale ones. */
  ownScale?: Record<string, ComponentStats> | null;
  /** Who repairs each ablation (experiments/repair.ts); without it the report has no repair section. */
  repair?: RepairMatrix | null;
  title?: string;
}

/** A Figure 1 / 3 choice and why it was made. */
export interface ProfilePick {
  component: string;
  prompt: PromptResult;
  /** named: --figure1; compensation: largest mean CE_attn > 0; removed_de: no layer compensates on average, largest removed DE. */
  why: 'named' | 'compensation' | 'removed_de';
  /** Attention layers with at least two attention layers downstream. */
  candidates: number;
}

interface FigureEntry {
  id: string;
  title: string;
  svg: string;
  png: string;
  explanation: string;
}

export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

const fmt = fmtNum;

/** A value with its interval, or "n/a" with the reason when the statistic is undefined. */
function withCi(v: number | null, iv: Interval | undefined, reason: string | null = null): string {
  if (reason !== null || v === null) return `<span class="na" title="${escapeHtml(reason ?? 'undefined')}">n/a</span>`;
  const main = escapeHtml(fmt(v));
  if (!iv || iv.lo === null || iv.hi === null) return main;
  return `${main}<span class="ci">[${escapeHtml(fmt(iv.lo))}, ${escapeHtml(fmt(iv.hi))}]</span>`;
}

/** withCi for one bootstrapped statistic of a component. */
function statCell(s: ComponentStats, stat: BootstrapStat): string {
  return withCi(estimateOf(s, stat), s.bootstrap95[stat], undefinedReason(s, stat));
}

const CSS = `
body{font-family:"DejaVu Sans",Verdana,system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1.2em;color:#222;line-height:1.5}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta{color:#555}figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{margin-top:.5em}.explain{background:#f6f8fa;border-left:4px solid #1f5fa8;padding:.6em 1em;margin:.8em 0}
table{border-collapse:collapse;font-size:.85em;margin:.8em 0;width:100%}th,td{border:1px solid #ddd;padding:.3em .45em;text-align:right;white-space:nowrap}
th{background:#f0f2f5;position:sticky;top:0}td:first-child,th:first-child{text-align:left}.ci{display:block;color:#777;font-size:.85em}
.tablewrap{overflow-x:auto;max-height:80vh}pre{background:#f6f8fa;padding:.8em;overflow-x:auto}dt{font-weight:bold;margin-top:.4em}
.na{color:#777;font-style:italic}.verdict{font-weight:bold}.v-found{color:#116611}.v-opposite{color:#a01010}.v-inconclusive,.v-n\/a{color:#666}
.v-not-found{color:#a01010}.claim{margin:.8em 0;padding:.5em 1em;border:1px solid #ddd;border-radius:4px}.rule{color:#555;font-size:.9em}
td.sentence{white-space:normal;text-align:left;min-width:22em}td.list{text-align:left}td.wrap{white-space:normal;text-align:left;min-width:8em}
.v-consistent{color:#116611}.v-varies{color:#8a5a00}.v-undecided,.v-no-repair{color:#666}
`;

const GLOSSARY = `
<dl>
<dt>DE — direct effect</dt><dd>How much a component (an attention layer, MLP layer or head) pushes up the centred logit of the
token the model predicts, read off directly by passing its output through the final norm (scale frozen) and the unembedding.
This is the "logit lens" / unembedding measure of importance.</dd>
<dt>TE — total effect</dt><dd>The change in that logit when the component is ablated (its output replaced by a patch) and
the rest of the network is re-run. Negative when the ablation hurts; −TE is "importance by ablation".</dd>
<dt>CE — compensatory effect</dt><dd>The summed change in the direct effects of the layers <em>downstream</em> of the ablated
one. Positive CE means downstream layers made up for part of what was removed. CE<sub>attn</sub> and CE<sub>mlp</sub> split it
into attention and MLP layers.</dd>
<dt>NE — norm effect</dt><dd>The part of the total effect carried by the change of the final norm's scale.
The parts add up exactly: TE = ΔDE(k) + CE + NE, where ΔDE(k) is the change of the ablated component's own direct effect
(its negative is the "removed direct effect").</dd>
<dt>IE — indirect effect</dt><dd>The effect of the ablation that flows only through downstream components.</dd>
<dt>The Hydra effect</dt><dd>The paper's name for downstream attention layers changing their output to make up for an
ablated attention layer, like the heads of the Hydra growing back; it also reports late MLP layers that <em>erase</em>
evidence for the token and erase less after an ablation. Whether these happen in this model on these prompts is what the
Findings section above tests; nothing in this report assumes them.</dd>
</dl>`;

function statsTable(stats: Record<string, ComponentStats>): string {
  const head = [
    'component', 'n', 'Pearson r (DE, −TE)', 'fraction DE &gt; −TE',
    'CE slope', 'CE intercept', 'CE R²', 'CE<sub>attn</sub> slope', 'CE<sub>attn</sub> R²', 'CE<sub>mlp</sub> slope', 'CE<sub>mlp</sub> R²',
    'mean DE', 'mean TE', 'mean CE', 'mean NE', 'mean IE',
  ];
  const rows = Object.values(stats).map((s) => {
    const cells = [
      escapeHtml(s.component), String(s.n),
      statCell(s, 'pearson_de_vs_neg_te'), statCell(s, 'frac_de_gt_neg_te'),
      statCell(s, 'slope_ce'), withCi(s.ols_ce_on_removed.intercept, undefined, undefinedReason(s, 'slope_ce')), statCell(s, 'r2_ce'),
      statCell(s, 'slope_ce_attn'), statCell(s, 'r2_ce_attn'), statCell(s, 'slope_ce_mlp'), statCell(s, 'r2_ce_mlp'),
      statCell(s, 'mean_de'), statCell(s, 'mean_te'), statCell(s, 'mean_ce'), statCell(s, 'mean_ne'), statCell(s, 'mean_ie'),
    ];
    return `<tr>${cells.map((c) => `<td>${c}</td>`).join('')}</tr>`;
  });
  return `<div class="tablewrap"><table><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows.join('\n')}</tbody></table></div>`;
}

const componentName = (k: string) => escapeHtml(componentLabel(k));

/** Figure 1 / 3 choice (METHOD.md "Findings"; issue: show a compensation case when there is one). */
export function chooseProfiles(prompts: PromptResult[], stats: Record<string, ComponentStats>, figure1?: string): ProfilePick[] {
  const layerOf = (k: string) => parseComponent(k).layer;
  const attn = Object.keys(stats).filter((k) => parseComponent(k).kind === 'attn' && prompts.every((p) => k in p.ablations));
  if (figure1 !== undefined && !(figure1 in stats && prompts.every((p) => figure1 in p.ablations))) {
    const layers = Object.keys(stats).filter((k) => ['attn', 'mlp'].includes(parseComponent(k).kind));
    throw new HydraError(`\`figure1\` ${figure1} was not ablated in this run; choose one of ${layers.join(', ')}`);
  }
  if (attn.length === 0 && figure1 === undefined) return [];
  const top = Math.max(...attn.map(layerOf));
  const candidates = attn.filter((k) => layerOf(k) <= top - 2);
  const pool = candidates.length > 0 ? candidates : attn;
  const meanCeAttn = (k: string) => stats[k].mean.ce_attn ?? -Infinity;
  const meanRemoved = (k: string) => stats[k].mean.removed_de ?? -Infinity;
  const compensating = attn.filter((k) => meanCeAttn(k) > 0);
  // compensation cases by mean CE_attn first, then the rest by mean removed DE; Figure 3 may go beyond the pool
  const rank = (ks: string[]) => [
    ...ks.filter((k) => compensating.includes(k)).sort((x, y) => meanCeAttn(y) - meanCeAttn(x)),
    ...ks.filter((k) => !compensating.includes(k)).sort((x, y) => meanRemoved(y) - meanRemoved(x)),
  ];
  const ranked = [...rank(pool), ...rank(attn.filter((k) => !pool.includes(k)))];
  const order = figure1 !== undefined ? [figure1, ...ranked.filter((k) => k !== figure1)] : ranked;
  return order.slice(0, 2).map((k) => {
    const comp = meanCeAttn(k) > 0;
    // the prompt that shows the repair best, or (no repair on average) the largest removed effect
    const key = (p: PromptResult) => (comp ? p.ablations[k].ce_attn : -p.ablations[k].dde_self);
    const prompt = prompts.reduce((best, p) => (key(p) > key(best) ? p : best));
    return { component: k, prompt, why: k === figure1 ? 'named' : comp ? 'compensation' : 'removed_de', candidates: candidates.length };
  });
}

/** Why this prompt and layer are shown (Figure 1: first = true; Figure 3: the next by the same rule), and its numbers. */
function pickExplain(pick: ProfilePick, stats: Record<string, ComponentStats>, first: boolean): string {
  const k = pick.component;
  const s = stats[k];
  const a = pick.prompt.ablations[k];
  const who = componentName(k);
  const pool = pick.candidates > 0 ? 'attention layer with at least two attention layers downstream' : 'attention layer';
  let reason: string;
  if (pick.why === 'named') reason = `${who} was chosen with <code>--figure1</code>.`;
  else if (!first) {
    reason = `The next attention layer by the rule of Figure 1: ${who}, ${pick.why === 'compensation'
      ? `whose ablation gives a positive mean CE<sub>attn</sub> (${fmt(s.mean.ce_attn)}), on the prompt where CE<sub>attn</sub> is largest.`
      : `which removes ${fmt(s.mean.removed_de)} of direct effect on average (its mean CE<sub>attn</sub> is not positive), on the prompt where it removes the most.`}`;
  } else if (pick.why === 'compensation') {
    reason = `Shown: ${who}, the ${pool} whose ablation gives the largest mean CE<sub>attn</sub> (${fmt(s.mean.ce_attn)}), on the prompt where CE<sub>attn</sub> is largest.`;
  } else {
    reason = `No ${pool} has a positive mean CE<sub>attn</sub>, so there is no compensation case to show: this is ${who}, the one whose ablation removes the most direct effect on average (${fmt(s.mean.removed_de)}), on the prompt where it removes the most.`;
  }
  return `${reason} In this prompt: TE ${fmt(a.te)}, removed DE ${fmt(-a.dde_self)}, CE<sub>attn</sub> ${fmt(a.ce_attn)}, CE<sub>mlp</sub> ${fmt(a.ce_mlp)}, NE ${fmt(a.ne)}.`;
}

const VERDICT_CLASS = (v: string) => `verdict v-${v.replace(/ /g, '-')}`;

function intervalText(f: { lo: number | null; hi: number | null; level: number }): string {
  return f.lo === null || f.hi === null ? 'n/a' : `[${fmt(f.lo)}, ${fmt(f.hi)}] (${fmt(100 * f.level)}%)`;
}

const STAT_LABEL: Partial<Record<BootstrapStat, string>> = {
  slope_ce: 'slope of CE', slope_ce_attn: 'slope of CE<sub>attn</sub>', slope_ce_mlp: 'slope of CE<sub>mlp</sub>', slope_ne: 'slope of NE',
  mean_de: 'mean DE', mean_ce: 'mean CE', mean_ce_attn: 'mean CE<sub>attn</sub>', mean_ce_mlp: 'mean CE<sub>mlp</sub>',
  pearson_de_vs_neg_te: 'Pearson r (DE, −TE)', frac_de_gt_neg_te: 'fraction DE &gt; −TE',
};

function findingRow(f: LayerFinding): string {
  const also = f.also.map((a) => `${STAT_LABEL[a.statistic] ?? a.statistic} ${escapeHtml(fmt(a.estimate))}${a.lo !== null ? ` <span class="ci">${escapeHtml(intervalText(a))}</span>` : ''}`).join('<br>');
  const cells = [
    componentName(f.component), STAT_LABEL[f.statistic] ?? f.statistic,
    f.estimate === null ? `<span class="na" title="${escapeHtml(f.reason ?? '')}">n/a</span>` : escapeHtml(fmt(f.estimate)),
    escapeHtml(intervalText(f)), `<span class="${VERDICT_CLASS(f.verdict)}">${escapeHtml(f.verdict)}</span>`, also,
  ];
  return `<tr>${cells.map((c) => `<td>${c}</td>`).join('')}<td class="sentence">${escapeHtml(f.sentence)}</td></tr>`;
}

function findingsSection(f: Findings): string {
  const b = f.bootstrap;
  const boot = b
    ? `${b.B} bootstrap resamples${b.seed !== null ? ` (seed ${b.seed})` : ''} of ${b.unit === 'groups' ? `the ${b.n_groups} groups of prompts (grouping: ${escapeHtml(f.grouping)}); a resample draws whole groups, since prompts of one group are not independent` : `the ${b.n_groups} prompts (grouping: ${escapeHtml(f.grouping)})`}`
    : 'no bootstrap';
  const claims = f.claims.map((c) => {
    const rows = f.layers.filter((l) => l.claim === c.claim).map(findingRow).join('\n');
    return `<div class="claim" id="claim-${c.claim}"><h3>${escapeHtml(c.title)}: <span class="${VERDICT_CLASS(c.verdict)}">${escapeHtml(c.verdict)}</span></h3>
<p>${escapeHtml(c.sentence)}</p><p class="rule">Rule: ${escapeHtml(c.rule)}</p>
<div class="tablewrap"><table><thead><tr><th>layer ablated</th><th>statistic</th><th>estimate</th><th>interval</th><th>verdict</th><th>also reported</th><th>in words</th></tr></thead>
<tbody>${rows}</tbody></table></div></div>`;
  }).join('\n');
  return `<section id="findings"><h2>Findings</h2>
<div class="explain">What these data show, claim by claim, computed from the stored results. Each estimate has a bootstrap
percentile interval from ${boot}. For a claim tested on <i>m</i> layers each interval has level 1 − 0.05/<i>m</i> (Bonferroni),
so that all <i>m</i> hold together with 95% confidence. A layer is <b>found</b> when its interval lies entirely on the claimed
side of 0, <b>opposite</b> when it lies entirely on the other side, <b>inconclusive</b> when it contains 0, and <b>n/a</b> when the
statistic is undefined (the reason is given). The model shows a claim (<b>found</b>) when at least one layer is found, else
<b>not found</b>. Direct effects use ${escapeHtml(f.scale)}. All numbers: <a href="findings.json">findings.json</a>.</div>
${claims}
</section>`;
}

function scaleSection(stats: Record<string, ComponentStats>, own: Record<string, ComponentStats>): string {
  const STATS: BootstrapStat[] = ['slope_ce', 'slope_ce_attn', 'slope_ce_mlp', 'mean_ce'];
  const comps = Object.keys(own).filter((k) => k in stats);
  const head = ['layer ablated', ...STATS.flatMap((st) => [`${STAT_LABEL[st]} (frozen σ)`, `${STAT_LABEL[st]} (own σ′)`])];
  const rows = comps.map((k) => `<tr><td>${escapeHtml(k)}</td>${STATS.map((st) => `<td>${statCell(stats[k], st)}</td><td>${statCell(own[k], st)}</td>`).join('')}</tr>`);
  return `<section id="scale"><h2>Frozen scale and own scale</h2>
<div class="explain">METHOD.md measures every direct effect after an ablation, DE′, with the final norm's scale frozen at the clean
run's σ, so that layers upstream of the ablation keep their direct effect; the part of the total effect carried by the change of
scale is NE. The alternative divides by the ablated run's own scale σ′ (DE′·σ/σ′), which folds that change into every layer's DE′.
The key statistics under both are side by side below (95% bootstrap intervals). <b>The findings use the frozen scale.</b> Where
the two columns differ much, the norm's scale, not the layers, carries the difference.</div>
<div class="tablewrap"><table><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows.join('\n')}</tbody></table></div>
</section>`;
}

/** Models with final-logit soft-capping: mean TE on the raw logits (every effect's scale) beside TE on the real, capped ones. */
function cappedSection(prompts: PromptResult[]): string {
  const comps = Object.keys(prompts[0]?.ablations ?? {}).filter((k) => prompts.every((p) => p.ablations[k]?.te_capped !== undefined));
  if (comps.length === 0) return '';
  const mean = (k: string, f: 'te' | 'te_capped') => prompts.reduce((s, p) => s + p.ablations[k][f]!, 0) / prompts.length;
  const rows = comps.map((k) => `<tr><td>${escapeHtml(k)}</td><td>${escapeHtml(fmt(mean(k, 'te')))}</td><td>${escapeHtml(fmt(mean(k, 'te_capped')))}</td></tr>`);
  return `<section id="capped"><h2>Soft-capped logits</h2>
<div class="explain">This model caps its final logits (c·tanh(π/c)). As METHOD.md fixes, every effect in this report is measured on the
raw logits before the cap, where the direct effects add up exactly; TE<sub>capped</sub> is the total effect on the model's real,
capped logits, reported beside TE (means over the prompts).</div>
<div class="tablewrap"><table><thead><tr><th>ablated</th><th>mean TE (raw)</th><th>mean TE<sub>capped</sub></th></tr></thead><tbody>${rows.join('\n')}</tbody></table></div>
</section>`;
}

/** Undefined statistics of the table, each with its reason, once per component and reason. */
function naList(stats: Record<string, ComponentStats>): string {
  const items: string[] = [];
  for (const s of Object.values(stats)) {
    const reasons = new Set<string>();
    for (const st of ['slope_ce', 'slope_ce_attn', 'slope_ce_mlp', 'pearson_de_vs_neg_te'] as BootstrapStat[]) {
      const r = undefinedReason(s, st);
      if (r) reasons.add(r);
    }
    for (const r of reasons) items.push(`<li>${escapeHtml(s.component)}: ${escapeHtml(r)}</li>`);
  }
  return items.length ? `<p>Statistics shown as n/a are undefined:</p><ul>${items.join('')}</ul>` : '';
}

/** The highest-R² layer of CE on the removed DE (the paper's Figure 7b), or null. */
function bestR2(stats: Record<string, ComponentStats>): string | null {
  let best: string | null = null;
  for (const [k, s] of Object.entries(stats)) {
    if (!['attn', 'mlp'].includes(parseComponent(k).kind) || s.ols_ce_on_removed.r2 === null) continue;
    if (best === null || s.ols_ce_on_removed.r2 > stats[best].ols_ce_on_removed.r2!) best = k;
  }
  return best;
}

const VERDICT_WORDS: Record<RepairVerdict, string> = {
  consistent: 'a consistent set repairs', varies: 'different components on different prompts', undecided: 'undecided', 'no repair': 'no repair', 'n/a': 'nothing downstream',
};

function repairRow(a: AblatedRepair): string {
  const pct = (v: number | null) => (v === null ? 'n/a' : `${Math.round(v * 100)}%`);
  const pctCi = (v: number | null, lo: number | null, hi: number | null) => (v === null ? '<span class="na">n/a</span>' : `${pct(v)}<span class="ci">[${pct(lo)}, ${pct(hi)}]</span>`);
  const tops = a.top.slice(0, 3).map((r) => `${escapeHtml(r.component)} ${withCi(r.mean_dde, r.mean_ci)}`).join('');
  const often = a.frequent.slice(0, 3).map((r) => `${escapeHtml(r.component)} ${pctCi(r.top1, r.top1_ci.lo, r.top1_ci.hi)}`).join('');
  const cells = [
    escapeHtml(a.ablated), `<span class="${VERDICT_CLASS(a.verdict)}">${escapeHtml(VERDICT_WORDS[a.verdict])}</span>`,
    a.responders ? withCi(a.stability, a.stability_ci) : '', `${a.prompts_repaired} / ${a.n}`, tops, often,
  ];
  return `<tr>${cells.map((c, i) => `<td${i >= 4 ? ' class="list"' : i === 1 ? ' class="wrap"' : ''}>${c}</td>`).join('')}<td class="sentence">${escapeHtml(a.sentence)}</td></tr>`;
}

/** The repair section: what the matrix shows, the heatmap, and per ablated component its verdict and top responders. */
function repairSection(m: RepairMatrix, fig: { svg: string; png: string }): string {
  const what = m.level === 'heads' ? 'head and MLP' : 'attention and MLP layer';
  const counts = (Object.keys(VERDICT_WORDS) as RepairVerdict[]).map((v) => [v, m.rows.filter((r) => r.verdict === v).length] as const).filter(([, n]) => n > 0);
  const summary = `Of ${m.rows.length} ablated components: ${counts.map(([v, n]) => `${n} ${VERDICT_WORDS[v]}`).join(', ')}.`;
  const head = ['ablated', 'repair', 'stability', 'repaired prompts', 'largest mean ΔDE', 'most often the top responder', 'from the numbers'];
  return `<section id="repair"><h2>Who repairs: the repair matrix</h2>
<div class="explain">For each ablated component (row) and each ${what} downstream of it (column), the mean over the ${m.n_prompts} prompts of
ΔDE = DE′ − DE, the change of the responder's direct effect when the row's component is ablated (each prompt's average over its
patches). Red cells: the responder's direct effect rises, so it makes up for part of what was removed; blue: it falls. A dot marks
each row's largest positive mean. In the table, a prompt is <em>repaired</em> when some responder's ΔDE rises above float rounding;
on each repaired prompt the top set is the ${m.top_set} responders with the largest ΔDE (fewer when fewer than ${m.top_set + 1} are downstream: the
set never holds every responder, or it would agree on every prompt whatever the data). "Most often the top responder" gives the fraction of
repaired prompts where a responder has the largest ΔDE. The <b>stability</b> is the mean overlap |A∩B|/m of the top sets (size m) of two
different repaired prompts: 1 when the same components repair on every prompt; sets drawn at random would give m/R (R responders; "chance").
The repair is called consistent when the stability's 95% interval lies at or above the bar, ${m.threshold} of the way from chance to 1
(about ${m.threshold} when many components are downstream), different components on different prompts when it lies below the bar, undecided when it contains it. Intervals: ${m.bootstrap.B} bootstrap resamples of ${m.bootstrap.n_groups} ${m.bootstrap.unit}
(${escapeHtml(m.grouping)}).${m.downstream === 'stored' ? '' : ' This store predates recorded downstream sets: they are taken to be those of a sequential pre-norm model.'}</div>
<p>${escapeHtml(summary)}</p>
<figure><a href="${escapeHtml(fig.png)}"><img src="${escapeHtml(fig.svg)}" alt="repair matrix heatmap"></a>
<figcaption>Files: <a href="${escapeHtml(fig.svg)}">SVG</a> · <a href="${escapeHtml(fig.png)}">PNG</a> · <a href="repair.json">repair.json</a></figcaption></figure>
<div class="tablewrap"><table><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead><tbody>
${m.rows.map(repairRow).join('\n')}
</tbody></table></div></section>`;
}

/**
 * Write the report into `outDir` (created if needed): figures/*.svg|png, stats.csv, stats.json, index.html.
 * Returns the path of index.html.
 */
export async function writeReport(outDir: string, input: ReportInput): Promise<string> {
  const { prompts, stats, findings } = input;
  if (prompts.length === 0) throw new HydraError('no prompts to report on; check the prompt filter');
  const kind = input.kind ?? (typeof input.config?.kind === 'string' ? (input.config.kind as string) : 'resample');
  const figDir = path.join(outDir, 'figures');
  makeDir(figDir, 'choose a writable `out`');
  const said = (claim: string) => {
    const c = findings?.claims.find((x) => x.claim === claim);
    return c ? ` <b>Finding:</b> ${escapeHtml(c.sentence)}` : '';
  };

  const figures: FigureEntry[] = [];
  const add = async (id: string, title: string, spec: TopLevelSpec, explanation: string) => {
    const f = await writeFigure(spec, figDir, id);
    figures.push({ id, title, svg: path.relative(outDir, f.svg), png: path.relative(outDir, f.png), explanation });
  };
  const profileExplain = (k: string) =>
    `Each point is one layer's <b>direct effect</b> on the predicted token for this one prompt. Blue: the intact model. ` +
    `Red: after ablating ${componentName(k)} (dashed line); faint red lines are individual patches, the solid red line their mean. ` +
    `At the dashed line the red value is what the patch itself contributes. A later layer whose red point lies above its blue one ` +
    `raised its direct effect after the ablation (compensation); below, it lowered it.`;
  const profileSpec = (pick: ProfilePick) => {
    const i = prompts.findIndex((p) => p.index === pick.prompt.index);
    return profileFigure(pick.prompt, pick.component, { kind, promptText: input.promptTexts?.[i], tokenText: input.tokenTexts?.[i] });
  };
  const notes: string[] = [];
  const picks = input.picks ?? chooseProfiles(prompts, stats);
  const ids = ['fig1_profile_attention', 'fig3_profile_attention'];
  for (let i = 0; i < 2; i++) {
    const pick = picks[i];
    if (!pick) {
      notes.push(`Figure ${i === 0 ? 1 : 3} needs ${i === 0 ? 'an' : 'a second'} attention-layer ablation; none was run.`);
      continue;
    }
    await add(ids[i], `Figure ${i === 0 ? 1 : 3} — one prompt, ablating ${componentLabel(pick.component)}`, profileSpec(pick),
      `${pickExplain(pick, stats, i === 0)} ${profileExplain(pick.component)}${i === 0 ? said('hydra_effect') : ''}`);
  }

  const hasLayers = Object.keys(stats).some((k) => ['attn', 'mlp'].includes(parseComponent(k).kind));
  if (hasLayers) {
    await add('fig2_importance', 'Figure 2 — unembedding vs ablation importance', importanceFigure(prompts, stats, { kind }),
      '(a, b) For every layer, its direct effect DE (top) and its importance by ablation −TE (bottom); grey lines are single prompts, ' +
      'blue their mean. (c) Every prompt and layer as one point: if ablation measured the same thing as the direct effect, points would ' +
      'lie on the dashed line y = x; points below it are cases where ablating the layer costs less than its direct contribution. ' +
      '(d) Per layer, the correlation of DE with −TE across prompts and the fraction of prompts where DE &gt; −TE; bars are bootstrap ' +
      `95% intervals.${said('de_te_disagree')}`);
  } else notes.push('Figures 2, 7 and 8 need attention and MLP layer ablations; none were run.');

  if (hasLayers) {
    const best = bestR2(stats);
    await add('fig7_compensation', 'Figure 7 — compensation against removed direct effect', compensationFigure(prompts, stats, { kind, best }),
      '(a, c) Each point is one prompt and one ablated layer (colour = depth), attention layers in (a) and MLP layers in (c). The x axis ' +
      'is the direct effect the ablation removed (−ΔDE of the ablated layer); the y axis is the compensatory effect CE, how much ' +
      'downstream layers changed their direct effects. On the dashed line y = x compensation would be complete; below 0, downstream ' +
      `layers add to the loss. (b) The layer with the highest R²${best ? ` (${componentName(best)}, R² ${fmt(stats[best].ols_ce_on_removed.r2)})` : ''}, with its least-squares line. ` +
      '(d) Per ablated layer, the least-squares slope of CE on the removed effect (the share restored on average) and R² (how much of ' +
      'CE\'s variation the removed effect explains), with bootstrap 95% intervals. A layer with nothing downstream has CE = 0, so its ' +
      `R² is undefined and not drawn.${said('restoration')}`);
    await add('fig8_compensation_split', 'Figure 8 — attention vs MLP compensation', compensationSplitFigure(prompts, stats, { kind }),
      'The compensatory effect split into the change of downstream <b>attention</b> layers (CE<sub>attn</sub>; positive slopes would ' +
      'be the Hydra effect) and of downstream <b>MLP</b> layers (CE<sub>mlp</sub>; positive slopes would be reduced erasure). (a) For a ' +
      'few ablated layers, both parts against the removed direct effect, with least-squares lines. (b) Slope and R² of each part per ' +
      `ablated layer, with bootstrap 95% intervals.${said('hydra_effect')}${said('erasure')}`);
  }

  let repairHtml = '';
  if (input.repair) {
    const f = await writeFigure(repairHeatmap(input.repair), figDir, 'repair_heatmap');
    fs.writeFileSync(path.join(outDir, 'repair.json'), JSON.stringify(input.repair, null, 2) + '\n');
    repairHtml = repairSection(input.repair, { svg: path.relative(outDir, f.svg), png: path.relative(outDir, f.png) });
  }

  // statistics files
  fs.writeFileSync(path.join(outDir, 'stats.csv'), statsToCsv(stats));
  const first = Object.values(stats)[0];
  const json = {
    model: input.model,
    dataset: input.dataset,
    kind,
    n_prompts: prompts.length,
    prompt_indices: prompts.map((p) => p.index),
    bootstrap: first?.bootstrap ?? null,
    config: input.config ?? {},
    components: stats,
    own_scale: input.ownScale ?? null,
  };
  fs.writeFileSync(path.join(outDir, 'stats.json'), JSON.stringify(json, null, 2) + '\n');

  const title = input.title ?? `Hydra analysis report: ${input.model}`;
  const boot = first?.bootstrap;
  const figHtml = figures
    .map(
      (f) => `<section id="${f.id}"><h2>${escapeHtml(f.title)}</h2>
<figure><a href="${escapeHtml(f.png)}"><img src="${escapeHtml(f.svg)}" alt="${escapeHtml(f.title)}"></a>
<figcaption><div class="explain">${f.explanation}</div>
Files: <a href="${escapeHtml(f.svg)}">SVG</a> · <a href="${escapeHtml(f.png)}">PNG</a></figcaption></figure></section>`,
    )
    .join('\n');
  const bootText = boot
    ? ` · ${boot.B} bootstrap resamples${boot.seed !== null ? ` (seed ${boot.seed})` : ''} of ${boot.n_groups} ${boot.unit === 'groups' ? 'groups' : 'prompts'}`
    : '';
  const html = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${CSS}</style></head>
<body>
<h1>${escapeHtml(title)}</h1>
<p class="meta">Model <b>${escapeHtml(input.model)}</b> · prompt set <b>${escapeHtml(input.dataset)}</b> · ${prompts.length} prompts ·
${escapeHtml(kind)} ablation${escapeHtml(bootText)}</p>
${findings ? findingsSection(findings) : ''}
<section id="about"><h2>What is measured</h2>
<p>This report applies the measurements of McGrath et al. (2023), "The Hydra Effect", to this model and prompt set. All effects
are on the centred logit of the token the intact model predicts at the last prompt position, in logit units.</p>
${GLOSSARY}
${notes.length ? `<p><em>${notes.map(escapeHtml).join(' ')}</em></p>` : ''}
</section>
${input.ownScale ? scaleSection(stats, input.ownScale) : ''}
${cappedSection(prompts)}
${figHtml}
${repairHtml}
<section id="statistics"><h2>Statistics per ablated component</h2>
<div class="explain">One row per ablated component, over all ${prompts.length} prompts, using each prompt's effects averaged over
its patches. Small grey brackets are bootstrap 95% intervals${boot?.unit === 'groups' ? ' (resampling groups of prompts)' : ' (resampling prompts)'}. "Pearson r" compares the direct effect with the
importance by ablation; "fraction DE &gt; −TE" is how often ablation under-states the direct effect. Slope and R² come from a
least-squares fit of the compensatory effect (total, attention part, MLP part) on the removed direct effect: a slope of 1 means
the loss is fully restored, 0 no compensation, below 0 downstream layers add to the loss. "n/a" marks an undefined statistic;
hover for the reason, or see the list below the table.</div>
${statsTable(stats)}
${naList(stats)}
<p>Download: <a href="stats.csv">stats.csv</a> · <a href="stats.json">stats.json</a>${findings ? ' · <a href="findings.json">findings.json</a>' : ''}</p>
</section>
<section id="config"><h2>Run settings</h2><pre>${escapeHtml(JSON.stringify(input.config ?? {}, null, 2))}</pre></section>
</body></html>
`;
  const index = path.join(outDir, 'index.html');
  fs.writeFileSync(index, html);
  return index;
}
