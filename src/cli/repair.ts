import fs from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { fmtNum } from '../experiments/format.js';
import { DEFAULT_TOP, REPAIR_LEVELS, repairFromDatabase, type AblatedRepair, type RepairLevel, type RepairMatrix, type ResponderStat } from '../experiments/repair.js';
import { DEFAULT_BOOTSTRAP, MAX_BOOTSTRAP } from '../experiments/stats.js';
import { makeDir } from '../io/paths.js';
import { repairHeatmap } from '../report/figures.js';
import { writeFigure } from '../report/render.js';
import { waiting } from './progress.js';
import { nonNegativeInt, positiveInt, printJson } from './util.js';

interface RepairCliOptions {
  db: string;
  level?: RepairLevel;
  top: number;
  bootstrap: number;
  seed: number;
  out: string;
  json?: boolean;
}

/** `hydra repair`: who repairs each ablation, and whether the same components do on every prompt. */
export function registerRepair(program: Command): void {
  program
    .command('repair')
    .description('the repair matrix of a sweep: for each ablated component, the downstream components whose direct effect rises (mean ΔDE with intervals), how often each is the top responder, and a heatmap')
    .requiredOption('--db <file>', 'results database written by hydra sweep')
    .addOption(new Option('--level <level>', 'responders: layers (attention and MLP layers) or heads (heads and MLPs; needs a sweep with --heads); default heads when the sweep has them').choices(REPAIR_LEVELS))
    .option('--top <N>', 'responders listed per ablated component, by mean ΔDE', positiveInt('--top'), DEFAULT_TOP)
    .option('--bootstrap <B>', 'bootstrap resamples for the intervals (groups of prompts when the dataset has them)', positiveInt('--bootstrap', MAX_BOOTSTRAP), DEFAULT_BOOTSTRAP)
    .option('--seed <N>', 'seed of the bootstrap resampling', nonNegativeInt('--seed'), 0)
    .option('--out <dir>', 'folder for repair_heatmap.svg, repair_heatmap.png and repair.json', 'hydra-repair')
    .option('--json', 'print the matrix, the statistics and the file paths as one JSON object')
    .action(async (opts: RepairCliOptions) => {
      const m = await waiting(`computing the repair matrix of ${opts.db}`, () =>
        repairFromDatabase(opts.db, { level: opts.level, top: opts.top, bootstrap: opts.bootstrap, seed: opts.seed }));
      makeDir(opts.out, 'choose a writable --out');
      const fig = await waiting('drawing the heatmap', () => writeFigure(repairHeatmap(m), opts.out, 'repair_heatmap'));
      const json = path.join(opts.out, 'repair.json');
      fs.writeFileSync(json, JSON.stringify(m, null, 2) + '\n');
      if (opts.json) return printJson({ ...m, files: { svg: fig.svg, png: fig.png, json } });
      process.stdout.write(repairText(m));
      process.stdout.write(`heatmap: ${fig.svg}\n         ${fig.png}\ndata:    ${json}\n`);
    });
}

const pct = (v: number | null) => (v === null ? 'n/a' : `${Math.round(v * 100)}%`);
const iv = (lo: number | null, hi: number | null, f: (v: number | null) => string) => `[${f(lo)}, ${f(hi)}]`;

function responderLine(r: ResponderStat): string {
  return `    ${r.component.padEnd(12)}${fmtNum(r.mean_dde).padStart(9)} ${iv(r.mean_ci.lo, r.mean_ci.hi, fmtNum).padEnd(22)}` +
    `${pct(r.top1).padStart(6)} ${iv(r.top1_ci.lo, r.top1_ci.hi, pct).padEnd(19)}${pct(r.top_set).padStart(5)} ${iv(r.top_set_ci.lo, r.top_set_ci.hi, pct)}`;
}

function ablatedBlock(a: AblatedRepair, setSize: number): string[] {
  const lines = [`${a.ablated}: ${a.verdict} — ${a.sentence}`];
  if (a.top.length === 0) return lines;
  lines.push(`    ${'responder'.padEnd(12)}${'mean ΔDE'.padStart(9)} ${'95% interval'.padEnd(22)}${'top-1'.padStart(6)} ${'95%'.padEnd(19)}${`in top ${setSize}`.padStart(5)}`);
  for (const r of a.top) lines.push(responderLine(r));
  // then those that most often lead, with intervals, and the rest of the top sets' members
  const listed = new Set(a.top.map((t) => t.component));
  const more = a.frequent.filter((f) => !listed.has(f.component));
  const withIntervals = more.filter((f) => f.mean_ci.lo !== null);
  if (withIntervals.length) lines.push(`    most often the top responder:`, ...withIntervals.map(responderLine));
  const rest = more.filter((f) => f.mean_ci.lo === null);
  if (rest.length) lines.push(`    also in some prompt's top ${setSize}: ${rest.map((r) => `${r.component} (${pct(r.top_set)})`).join(', ')}`);
  return lines;
}

/** The matrix as text: per ablated component its verdict and top responders. */
export function repairText(m: RepairMatrix): string {
  const b = m.bootstrap;
  const head = [
    `repair matrix (${m.level}): ${m.n_prompts} prompts; mean ΔDE = DE' − DE of each downstream ${m.level === 'heads' ? 'head and MLP' : 'layer'}; ` +
      `95% intervals from ${b.B} bootstrap resamples of ${b.n_groups} ${b.unit} (seed ${b.seed ?? 'given'}); top-set fractions over repaired prompts; ` +
      `consistent when the stability interval lies at or above the bar, ${m.threshold} of the way from chance (top sets at random) to 1` + (m.downstream === 'stored' ? '' : '; downstream sets assumed sequential (older store)'),
  ];
  return [...head, ...m.rows.flatMap((a) => ablatedBlock(a, a.set_size || m.top_set))].join('\n') + '\n';
}
