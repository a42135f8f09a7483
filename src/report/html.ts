/**
 * The static report: figures (SVG + PNG), statistics (CSV + JSON) and one index.html with inline CSS
 * that explains in plain words what each figure and number means. Figures are referenced as files
 * (Vega's SVGs reuse element ids, so several cannot be inlined into one document safely).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import type { PromptResult } from '../causal/types.js';
import { statsToCsv, type ComponentStats, type Interval } from '../experiments/stats.js';
import { HydraError } from '../io/errors.js';
import { makeDir } from '../io/paths.js';
import { compensationFigure, compensationSplitFigure, componentLabel, importanceFigure, parseComponent, profileFigure } from './figures.js';
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
  /** Override the (prompt position, component) shown in Figures 1 and 3. */
  figure1?: { prompt: number; component: string };
  figure3?: { prompt: number; component: string };
  title?: string;
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

function fmt(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(2) : v.toPrecision(3);
}

function withCi(v: number | null, iv: Interval | undefined): string {
  const main = escapeHtml(fmt(v));
  if (!iv || iv.lo === null || iv.hi === null) return main;
  return `${main}<span class="ci">[${escapeHtml(fmt(iv.lo))}, ${escapeHtml(fmt(iv.hi))}]</span>`;
}

/** The (prompt, component) of type `kind` with the largest clean DE, among components ablated in every prompt. */
function pickProfile(prompts: PromptResult[], kind: 'attn' | 'mlp'): { prompt: number; component: string } | null {
  const names = Object.keys(prompts[0]?.ablations ?? {}).filter((k) => parseComponent(k).kind === kind && prompts.every((p) => k in p.ablations));
  if (names.length === 0) return null;
  // the paper shows layers with a high direct effect: take the layer with the largest mean DE, then its strongest prompt
  const meanDe = (k: string) => prompts.reduce((s, p) => s + (p.de[k] ?? 0), 0) / prompts.length;
  const comp = names.reduce((a, b) => (meanDe(b) > meanDe(a) ? b : a));
  let best = 0;
  prompts.forEach((p, i) => {
    if ((p.de[comp] ?? -Infinity) > (prompts[best].de[comp] ?? -Infinity)) best = i;
  });
  return { prompt: best, component: comp };
}

const CSS = `
body{font-family:"DejaVu Sans",Verdana,system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1.2em;color:#222;line-height:1.5}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta{color:#555}figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{margin-top:.5em}.explain{background:#f6f8fa;border-left:4px solid #1f5fa8;padding:.6em 1em;margin:.8em 0}
table{border-collapse:collapse;font-size:.85em;margin:.8em 0;width:100%}th,td{border:1px solid #ddd;padding:.3em .45em;text-align:right;white-space:nowrap}
th{background:#f0f2f5;position:sticky;top:0}td:first-child,th:first-child{text-align:left}.ci{display:block;color:#777;font-size:.85em}
.tablewrap{overflow-x:auto;max-height:80vh}pre{background:#f6f8fa;padding:.8em;overflow-x:auto}dt{font-weight:bold;margin-top:.4em}
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
<dt>The Hydra effect</dt><dd>When one attention layer is ablated, later layers change their output to compensate, like the
heads of the Hydra growing back. So ablation (−TE) can under-state how much a layer contributes directly (DE), and the
compensatory effect tracks the removed direct effect. Late MLP layers that normally <em>erase</em> evidence also erase less.</dd>
</dl>`;

function statsTable(stats: Record<string, ComponentStats>): string {
  const head = [
    'component', 'n', 'Pearson r (DE, −TE)', 'fraction DE &gt; −TE',
    'CE slope', 'CE intercept', 'CE R²', 'CE<sub>attn</sub> slope', 'CE<sub>attn</sub> R²', 'CE<sub>mlp</sub> slope', 'CE<sub>mlp</sub> R²',
    'mean DE', 'mean TE', 'mean CE', 'mean NE', 'mean IE',
  ];
  const rows = Object.values(stats).map((s) => {
    const b = s.bootstrap95;
    const cells = [
      escapeHtml(s.component), String(s.n),
      withCi(s.pearson_de_vs_neg_te, b.pearson_de_vs_neg_te), withCi(s.frac_de_gt_neg_te, b.frac_de_gt_neg_te),
      withCi(s.ols_ce_on_removed.slope, b.slope_ce), escapeHtml(fmt(s.ols_ce_on_removed.intercept)), withCi(s.ols_ce_on_removed.r2, b.r2_ce),
      withCi(s.ols_ce_attn_on_removed.slope, b.slope_ce_attn), withCi(s.ols_ce_attn_on_removed.r2, b.r2_ce_attn),
      withCi(s.ols_ce_mlp_on_removed.slope, b.slope_ce_mlp), withCi(s.ols_ce_mlp_on_removed.r2, b.r2_ce_mlp),
      withCi(s.mean.de, b.mean_de), withCi(s.mean.te, b.mean_te), withCi(s.mean.ce, b.mean_ce), withCi(s.mean.ne, b.mean_ne), withCi(s.mean.ie, b.mean_ie),
    ];
    return `<tr>${cells.map((c) => `<td>${c}</td>`).join('')}</tr>`;
  });
  return `<div class="tablewrap"><table><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows.join('\n')}</tbody></table></div>`;
}

/**
 * Write the report into `outDir` (created if needed): figures/*.svg|png, stats.csv, stats.json, index.html.
 * Returns the path of index.html.
 */
export async function writeReport(outDir: string, input: ReportInput): Promise<string> {
  const { prompts, stats } = input;
  if (prompts.length === 0) throw new HydraError('no prompts to report on; check the prompt filter');
  const kind = input.kind ?? (typeof input.config?.kind === 'string' ? (input.config.kind as string) : 'resample');
  const figDir = path.join(outDir, 'figures');
  makeDir(figDir, 'choose a writable --out');

  const figures: FigureEntry[] = [];
  const add = async (id: string, title: string, spec: TopLevelSpec, explanation: string) => {
    const f = await writeFigure(spec, figDir, id);
    figures.push({ id, title, svg: path.relative(outDir, f.svg), png: path.relative(outDir, f.png), explanation });
  };
  const profileExplain = (k: string) =>
    `Each point is one layer's <b>direct effect</b> on the predicted token for this one prompt. Blue: the intact model. ` +
    `Red: after ablating ${escapeHtml(componentLabel(k))} (dashed line); faint red lines are individual patches, the solid red line their mean. ` +
    `At the dashed line the red value is what the patch itself contributes. Where red rises above blue in later layers, those layers ` +
    `<b>compensate</b> for the ablation (the Hydra effect); where an MLP's red line is less negative than its blue one, it erases less.`;
  const profileSpec = (pick: { prompt: number; component: string }) =>
    profileFigure(prompts[pick.prompt], pick.component, {
      kind,
      promptText: input.promptTexts?.[pick.prompt],
      tokenText: input.tokenTexts?.[pick.prompt],
    });
  const notes: string[] = [];

  const f1 = input.figure1 ?? pickProfile(prompts, 'attn');
  if (f1) await add('fig1_profile_attention', `Figure 1 — one prompt, ablating ${componentLabel(f1.component)}`, profileSpec(f1), profileExplain(f1.component));
  else notes.push('Figure 1 needs an attention-layer ablation; none was run.');

  const hasLayers = Object.keys(stats).some((k) => ['attn', 'mlp'].includes(parseComponent(k).kind));
  if (hasLayers) {
    await add('fig2_importance', 'Figure 2 — unembedding vs ablation importance', importanceFigure(prompts, stats, { kind }),
      '(a, b) For every layer, its direct effect DE (top) and its importance by ablation −TE (bottom); grey lines are single prompts, ' +
      'blue their mean. (c) Every prompt and layer as one point: if ablation measured the same thing as the direct effect, points would ' +
      'lie on the dashed line y = x. Points <b>below</b> the line are cases where the ablation hurts less than the layer\'s direct ' +
      'contribution, because other layers make up for it. (d) Per layer, the correlation of DE with −TE across prompts and the fraction ' +
      'of prompts where DE &gt; −TE; bars are bootstrap 95% intervals over prompts.');
  } else notes.push('Figures 2, 7 and 8 need attention and MLP layer ablations; none were run.');

  const f3 = input.figure3 ?? pickProfile(prompts, 'mlp');
  if (f3) await add('fig3_profile_mlp', `Figure 3 — one prompt, ablating ${componentLabel(f3.component)}`, profileSpec(f3), profileExplain(f3.component));
  else notes.push('Figure 3 needs an MLP-layer ablation; none was run.');

  if (hasLayers) {
    await add('fig7_compensation', 'Figure 7 — compensation against removed direct effect', compensationFigure(prompts, stats, { kind }),
      '(a, b) Each point is one prompt and one ablated layer (colour = depth). The x axis is the direct effect the ablation removed ' +
      '(−ΔDE of the ablated layer); the y axis is the compensatory effect CE, how much downstream layers changed their direct effects. ' +
      'On the dashed line y = x compensation would be complete. (c) Per ablated layer, the least-squares slope of CE on the removed ' +
      'effect (what fraction is restored on average) and R² (how much of CE\'s variation the removed effect explains). A layer with ' +
      'nothing downstream has CE = 0, so its R² is undefined and not drawn.');
    await add('fig8_compensation_split', 'Figure 8 — attention vs MLP compensation', compensationSplitFigure(prompts, stats, { kind }),
      'The compensatory effect split into the change of downstream <b>attention</b> layers (CE<sub>attn</sub>, the Hydra effect proper) ' +
      'and of downstream <b>MLP</b> layers (CE<sub>mlp</sub>, often reduced erasure). (a) For a few ablated layers, both parts against ' +
      'the removed direct effect, with least-squares lines. (b) Slope and R² of each part per ablated layer, with bootstrap 95% intervals.');
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
  };
  fs.writeFileSync(path.join(outDir, 'stats.json'), JSON.stringify(json, null, 2) + '\n');

  const title = input.title ?? `Hydra effect report: ${input.model}`;
  const boot = first?.bootstrap;
  const figHtml = figures
    .map(
      (f) => `<section id="${f.id}"><h2>${escapeHtml(f.title)}</h2>
<figure><a href="${escapeHtml(f.png)}"><img src="${escapeHtml(f.svg)}" alt="${escapeHtml(f.title)}"></a>
<figcaption><div class="explain">${f.explanation}</div>
Files: <a href="${escapeHtml(f.svg)}">SVG</a> · <a href="${escapeHtml(f.png)}">PNG</a></figcaption></figure></section>`,
    )
    .join('\n');
  const html = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${CSS}</style></head>
<body>
<h1>${escapeHtml(title)}</h1>
<p class="meta">Model <b>${escapeHtml(input.model)}</b> · prompt set <b>${escapeHtml(input.dataset)}</b> · ${prompts.length} prompts ·
${escapeHtml(kind)} ablation${boot ? ` · ${boot.B} bootstrap resamples${boot.seed !== null ? ` (seed ${boot.seed})` : ''}` : ''}</p>
<section id="about"><h2>What is measured</h2>
<p>This report reproduces the measurements of McGrath et al. (2023), "The Hydra Effect". All effects are on the centred logit
of the token the intact model predicts at the last prompt position, in logit units.</p>
${GLOSSARY}
${notes.length ? `<p><em>${notes.map(escapeHtml).join(' ')}</em></p>` : ''}
</section>
${figHtml}
<section id="statistics"><h2>Statistics per ablated component</h2>
<div class="explain">One row per ablated component, over all ${prompts.length} prompts, using each prompt's effects averaged over
its patches. Small grey brackets are bootstrap 95% intervals (resampling prompts). "Pearson r" compares the direct effect with the
importance by ablation; "fraction DE &gt; −TE" is how often ablation under-states the direct effect. Slope and R² come from a
least-squares fit of the compensatory effect (total, attention part, MLP part) on the removed direct effect: a slope near 1 means
the loss is fully restored, near 0 means no compensation. "—" marks a value that is undefined (for example R² when nothing is
downstream of the component, so CE is always 0).</div>
${statsTable(stats)}
<p>Download: <a href="stats.csv">stats.csv</a> · <a href="stats.json">stats.json</a></p>
</section>
<section id="config"><h2>Run settings</h2><pre>${escapeHtml(JSON.stringify(input.config ?? {}, null, 2))}</pre></section>
</body></html>
`;
  const index = path.join(outDir, 'index.html');
  fs.writeFileSync(index, html);
  return index;
}
