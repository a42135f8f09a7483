/**
 * The report's verdicts (METHOD.md "Findings"): per claim and layer an estimate, its
 * Bonferroni-adjusted bootstrap interval (groups resampled when the dataset has them), a verdict
 * and one plain sentence made from those numbers; per claim a verdict for the model.
 *
 *  - found: the interval lies entirely on the claimed side of 0; opposite: entirely on the other
 *    side; inconclusive: it contains 0; n/a: the statistic is undefined (the reason is given).
 *  - Over the m layers tested for one claim the level is 1 − 0.05/m.
 *  - For the model: found if any layer is found (erasure: both of its tests), else not found.
 */
import { componentLabel, parseComponent } from '../models/components.js';
import { fmtNum } from './format.js';
import { undefinedReason, type BootstrapStat, type ComponentStats, type Statistics } from './stats.js';

export type LayerVerdict = 'found' | 'opposite' | 'inconclusive' | 'n/a' | 'reported';
export type ModelVerdict = 'found' | 'not found' | 'reported';
export type ClaimId = 'hydra_effect' | 'erasure' | 'restoration' | 'de_te_disagree';

export interface Estimate {
  statistic: BootstrapStat;
  estimate: number | null;
  lo: number | null;
  hi: number | null;
  /** Interval level, e.g. 0.9875 for m = 4. */
  level: number;
}

export interface LayerFinding extends Estimate {
  claim: ClaimId;
  /** Which test of the claim (a claim may have several, e.g. erasure). */
  test: string;
  component: string;
  /** The claimed side of 0. */
  side: '>' | '<' | null;
  n: number;
  n_groups: number;
  verdict: LayerVerdict;
  /** Why the statistic is undefined (verdict n/a). */
  reason?: string;
  /** Numbers reported beside the tested one (e.g. mean CE_attn), at the same level. */
  also: Estimate[];
  sentence: string;
}

export interface ModelFinding {
  claim: ClaimId;
  title: string;
  verdict: ModelVerdict;
  /** Layers with verdict found / opposite, per test. */
  found: string[];
  opposite: string[];
  /** The rule, in plain words. */
  rule: string;
  sentence: string;
}

export interface Findings {
  scale: string;
  grouping: string;
  bootstrap: ComponentStats['bootstrap'] | null;
  claims: ModelFinding[];
  layers: LayerFinding[];
}

interface TestDef {
  claim: ClaimId;
  test: string;
  stat: BootstrapStat;
  side: '>' | '<' | null;
  kinds: ('attn' | 'mlp')[];
  also: BootstrapStat[];
  /** What the statistic measures, for sentences. */
  what: string;
  /** What a found / opposite result means. */
  yes: string;
  no: string;
}

const TESTS: TestDef[] = [
  {
    claim: 'hydra_effect', test: 'slope_ce_attn', stat: 'slope_ce_attn', side: '>', kinds: ['attn'], also: ['mean_ce_attn'],
    what: 'slope of CE_attn on the removed DE', yes: 'downstream attention layers compensate (a Hydra effect)',
    no: 'downstream attention layers move further against the token (the opposite of a Hydra effect)',
  },
  {
    claim: 'erasure', test: 'mean_de', stat: 'mean_de', side: '<', kinds: ['mlp'], also: [],
    what: 'mean DE', yes: 'the layer writes against the predicted token (erasure)', no: 'the layer writes for the predicted token (no erasure)',
  },
  {
    claim: 'erasure', test: 'slope_ce_mlp', stat: 'slope_ce_mlp', side: '>', kinds: ['attn'], also: ['mean_ce_mlp'],
    what: 'slope of CE_mlp on the removed DE', yes: 'downstream MLPs ease off (less erasure)', no: 'downstream MLPs push further against the token',
  },
  {
    claim: 'restoration', test: 'slope_ce', stat: 'slope_ce', side: '>', kinds: ['attn', 'mlp'], also: ['slope_ne', 'mean_ce'],
    what: 'slope of CE on the removed DE (the share restored)', yes: 'downstream layers restore part of the removed direct effect',
    no: 'downstream layers add to the loss instead of restoring it',
  },
  {
    claim: 'de_te_disagree', test: 'pearson_de_vs_neg_te', stat: 'pearson_de_vs_neg_te', side: null, kinds: ['attn', 'mlp'], also: ['frac_de_gt_neg_te'],
    what: 'Pearson r of DE and −TE', yes: '', no: '',
  },
];

const TITLES: Record<ClaimId, string> = {
  hydra_effect: 'Hydra effect',
  erasure: 'Erasure',
  restoration: 'Restoration',
  de_te_disagree: 'DE and TE disagree',
};

const pct = (level: number) => `${fmtNum(100 * level)}%`;

function estimateOf(s: ComponentStats, stat: BootstrapStat): number | null {
  switch (stat) {
    case 'slope_ce': return s.ols_ce_on_removed.slope;
    case 'slope_ce_attn': return s.ols_ce_attn_on_removed.slope;
    case 'slope_ce_mlp': return s.ols_ce_mlp_on_removed.slope;
    case 'slope_ne': return s.ols_ne_on_removed.slope;
    case 'r2_ce': return s.ols_ce_on_removed.r2;
    case 'r2_ce_attn': return s.ols_ce_attn_on_removed.r2;
    case 'r2_ce_mlp': return s.ols_ce_mlp_on_removed.r2;
    case 'r2_ne': return s.ols_ne_on_removed.r2;
    case 'pearson_de_vs_neg_te': return s.pearson_de_vs_neg_te;
    case 'frac_de_gt_neg_te': return s.frac_de_gt_neg_te;
    default: return s.mean[stat.slice('mean_'.length) as keyof ComponentStats['mean']];
  }
}

export { estimateOf };

function verdictOf(side: '>' | '<', lo: number, hi: number): LayerVerdict {
  const above = lo > 0, below = hi < 0;
  if (side === '>') return above ? 'found' : below ? 'opposite' : 'inconclusive';
  return below ? 'found' : above ? 'opposite' : 'inconclusive';
}

function layerSentence(t: TestDef, f: LayerFinding): string {
  const who = componentLabel(f.component);
  const Who = who[0].toUpperCase() + who.slice(1);
  if (f.verdict === 'n/a') return `${Who}: ${t.what} is undefined (${f.reason}); not tested.`;
  const iv = `${pct(f.level)} interval [${fmtNum(f.lo)}, ${fmtNum(f.hi)}]`;
  const num = `${t.what} ${fmtNum(f.estimate)}, ${iv}`;
  const ablating = t.kinds.includes('attn') && t.test !== 'mean_de' ? `Ablating ${who}` : Who;
  switch (f.verdict) {
    case 'found': return `${ablating}: ${num}, so ${t.yes}.`;
    case 'opposite': return `${ablating}: ${num}, so ${t.no}.`;
    case 'inconclusive': return `${ablating}: ${num}; the interval contains 0, so the data do not decide.`;
    default: return `${Who}: ${num}.`;
  }
}

function ruleText(t: TestDef[], m: number[], claim: ClaimId): string {
  if (claim === 'de_te_disagree') {
    return 'Reported per layer, with no verdict: the Pearson correlation of DE with −TE across prompts and the fraction of prompts where DE > −TE (ablation under-states the direct effect).';
  }
  const parts = t.map((d, i) => `for at least one ${d.kinds.map((k) => (k === 'attn' ? 'attention' : 'MLP')).join(' or ')} layer the bootstrap interval of the ${d.what} lies entirely ${d.side === '>' ? 'above' : 'below'} 0`
    + ` (interval level ${m[i] > 0 ? pct(1 - 0.05 / m[i]) : 'n/a'}: 95% shared among the ${m[i]} layers tested, Bonferroni)`);
  return `Found when ${parts.join(', and ')}. A layer whose interval lies entirely on the other side of 0 is "opposite"; one whose interval contains 0 is "inconclusive"; a layer whose statistic is undefined is "n/a" and not counted in m.`;
}

/**
 * Findings from a statistics session. Layers are the ablated attn.L / mlp.L of `run.stats`;
 * intervals are recomputed at each test's Bonferroni level from the same resamples.
 */
export async function computeFindings(run: Statistics, grouping: string, scale = 'frozen: the clean run\'s final-norm scale σ (METHOD.md)'): Promise<Findings> {
  const stats = run.stats;
  const layers: LayerFinding[] = [];
  const claims: ModelFinding[] = [];
  const first = Object.values(stats)[0];
  for (const claim of ['hydra_effect', 'erasure', 'restoration', 'de_te_disagree'] as ClaimId[]) {
    const tests = TESTS.filter((t) => t.claim === claim);
    const ms: number[] = [];
    const foundPerTest: string[][] = [];
    const oppositePerTest: string[][] = [];
    const found: string[] = [], opposite: string[] = [];
    for (const t of tests) {
      const comps = Object.keys(stats).filter((k) => (t.kinds as string[]).includes(parseComponent(k).kind));
      const reasons = new Map(comps.map((k) => [k, undefinedReason(stats[k], t.stat) ?? (estimateOf(stats[k], t.stat) === null ? 'undefined in this sample' : null)]));
      const tested = comps.filter((k) => reasons.get(k) === null);
      const m = tested.length;
      ms.push(m);
      const level = t.side === null ? 0.95 : 1 - 0.05 / Math.max(m, 1);
      const ivs = await run.intervals([t.stat, ...t.also], level);
      const mine: string[] = [], against: string[] = [];
      for (const k of comps) {
        const s = stats[k];
        const iv = ivs.get(k)![t.stat];
        const reason = reasons.get(k) ?? undefined;
        const f: LayerFinding = {
          claim, test: t.test, component: k, side: t.side, statistic: t.stat, estimate: reason ? null : estimateOf(s, t.stat),
          lo: reason ? null : iv.lo, hi: reason ? null : iv.hi, level, n: s.n, n_groups: s.bootstrap.n_groups,
          verdict: 'reported', also: [], sentence: '',
        };
        if (reason) {
          f.verdict = 'n/a';
          f.reason = reason;
        } else if (t.side !== null) {
          f.verdict = f.lo === null || f.hi === null ? 'n/a' : verdictOf(t.side, f.lo, f.hi);
          if (f.verdict === 'n/a') f.reason = 'no resample where the statistic is defined';
        }
        for (const a of t.also) {
          const aReason = undefinedReason(s, a);
          const aiv = ivs.get(k)![a];
          f.also.push({ statistic: a, estimate: aReason ? null : estimateOf(s, a), lo: aReason ? null : aiv.lo, hi: aReason ? null : aiv.hi, level });
        }
        f.sentence = layerSentence(t, f);
        if (f.verdict === 'found') {
          mine.push(k);
          found.push(k);
        }
        if (f.verdict === 'opposite') {
          opposite.push(k);
          against.push(k);
        }
        layers.push(f);
      }
      foundPerTest.push(mine);
      oppositePerTest.push(against);
    }
    const title = TITLES[claim];
    let verdict: ModelVerdict;
    if (claim === 'de_te_disagree') verdict = 'reported';
    else verdict = foundPerTest.every((f) => f.length > 0) ? 'found' : 'not found';
    claims.push({ claim, title, verdict, found, opposite, rule: ruleText(tests, ms, claim), sentence: modelSentence(claim, verdict, tests, foundPerTest, oppositePerTest, layers) });
  }
  return { scale, grouping, bootstrap: first?.bootstrap ?? null, claims, layers };
}

const list = (ks: string[]) => ks.map(componentLabel).join(', ');

function modelSentence(claim: ClaimId, verdict: ModelVerdict, tests: TestDef[], foundPerTest: string[][], oppositePerTest: string[][], layers: LayerFinding[]): string {
  if (claim === 'de_te_disagree') {
    const mine = layers.filter((l) => l.claim === claim && l.estimate !== null);
    if (mine.length === 0) return 'No layer has a defined correlation of DE with −TE.';
    const lo = Math.min(...mine.map((l) => l.estimate!)), hi = Math.max(...mine.map((l) => l.estimate!));
    const fr = mine.map((l) => l.also[0]?.estimate).filter((v): v is number => v !== null && v !== undefined);
    return `Across layers the correlation of DE with −TE ranges from ${fmtNum(lo)} to ${fmtNum(hi)}${fr.length ? `, and DE exceeds −TE in ${fmtNum(100 * Math.min(...fr))}% to ${fmtNum(100 * Math.max(...fr))}% of prompts` : ''}.`;
  }
  const side = (t: TestDef) => (t.side === '>' ? 'above' : 'below');
  const other = (t: TestDef) => (t.side === '>' ? 'below' : 'above');
  const parts = tests.map((t, i) => (foundPerTest[i].length > 0
    ? `The ${t.what} is ${side(t)} 0 for ${list(foundPerTest[i])}`
    : `No layer has its ${t.what} ${side(t)} 0`)
    + (oppositePerTest[i].length > 0 ? `; it is ${other(t)} 0 (the opposite) for ${list(oppositePerTest[i])}` : ''));
  // the means reported beside a slope, where their intervals exclude 0
  for (const t of tests) {
    for (const a of t.also.filter((x) => x.startsWith('mean_'))) {
      const rows = layers.filter((l) => l.claim === claim && l.test === t.test).map((l) => ({ k: l.component, e: l.also.find((x) => x.statistic === a)! }));
      const below = rows.filter((r) => r.e.hi !== null && r.e.hi < 0).map((r) => r.k);
      const above = rows.filter((r) => r.e.lo !== null && r.e.lo > 0).map((r) => r.k);
      const label = a.slice('mean_'.length).toUpperCase().replace('CE_ATTN', 'CE_attn').replace('CE_MLP', 'CE_mlp');
      if (below.length || above.length) {
        parts.push(`Mean ${label} is ${[below.length ? `below 0 for ${list(below)}` : '', above.length ? `above 0 for ${list(above)}` : ''].filter(Boolean).join(' and ')}`);
      }
    }
  }
  return `${TITLES[claim]}: ${verdict}. ${parts.join('. ')}.`;
}
