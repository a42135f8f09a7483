/**
 * The report's findings (METHOD.md "Findings") on data without the effect (the bundled demo:
 * stories260k on the story prompts) and with it (the constructed self-repair model, where
 * attn.1 takes over when attn.0 is gone): verdicts, estimates and Bonferroni intervals against
 * an independent recomputation from the exported Parquet files with the same draws, and the
 * report's words against its own numbers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { exportParquet } from '../src/experiments/store.js';
import { runSweep } from '../src/experiments/sweep.js';
import type { Findings, LayerFinding } from '../src/experiments/findings.js';
import { defaultModelDir, storiesRecallPath } from '../src/io/paths.js';
import { HookedModel } from '../src/models/model.js';
import { analyzeDatabase, reportFromDatabase } from '../src/report/database.js';
import { tmpDir } from './helpers.js';
import { writeSelfRepair } from './constructed.js';
import { groupDraws, interval, mean, ols } from './recompute.js';

const TOL = 1e-9;

interface Row {
  prompt_idx: number;
  component: string;
  de: number;
  te: number;
  ce: number;
  ce_attn: number;
  ce_mlp: number;
  ne: number;
  dde_self: number;
  group_id: string | null;
}

/** Per-prompt rows of the kept prompts, from the exported Parquet files, in prompt order. */
async function readParquet(dir: string): Promise<Row[]> {
  const db = await DuckDBInstance.create(':memory:');
  const con = await db.connect();
  try {
    const f = (t: string) => `'${path.join(dir, `${t}.parquet`)}'`;
    const r = await con.runAndReadAll(`SELECT e.prompt_idx, e.component, c.de, e.te, e.ce, e.ce_attn, e.ce_mlp, e.ne, e.dde_self, p.group_id
      FROM ${f('effects')} e JOIN ${f('clean_de')} c USING (prompt_idx, component) JOIN ${f('prompts')} p USING (prompt_idx)
      WHERE p.kept ORDER BY e.prompt_idx`);
    return r.getRowObjectsJS() as unknown as Row[];
  } finally {
    con.closeSync();
    db.closeSync();
  }
}

/** The statistic of a finding, recomputed from one component's rows on the prompts `idx`. */
function recompute(rows: Row[], f: LayerFinding): (idx: number[]) => number | null {
  const x = rows.map((r) => -r.dde_self);
  const at = (v: number[], idx: number[]) => idx.map((i) => v[i]);
  const ys: Record<string, number[]> = { slope_ce: rows.map((r) => r.ce), slope_ce_attn: rows.map((r) => r.ce_attn), slope_ce_mlp: rows.map((r) => r.ce_mlp) };
  if (f.statistic === 'mean_de') return (idx) => mean(at(rows.map((r) => r.de), idx));
  const y = ys[f.statistic];
  assert.ok(y, `no recomputation for ${f.statistic}`);
  return (idx) => ols(at(x, idx), at(y, idx)).slope;
}

/** Every tested finding equals the recomputation with the same group draws, and its verdict follows its interval. */
async function checkAgainstParquet(db: string, findings: Findings): Promise<void> {
  const dir = tmpDir('hydra-findings-parquet-');
  await exportParquet(db, dir);
  const rows = await readParquet(dir);
  fs.rmSync(dir, { recursive: true, force: true });
  const prompts = [...new Set(rows.map((r) => r.prompt_idx))];
  const groups = prompts.map((p) => rows.find((r) => r.prompt_idx === p)!.group_id);
  const b = findings.bootstrap!;
  assert.equal(b.generator, 'mulberry32');
  const draws = groupDraws(groups, b.B, b.seed!);
  for (const f of findings.layers.filter((l) => l.claim !== 'de_te_disagree')) {
    const mine = rows.filter((r) => r.component === f.component);
    assert.equal(mine.length, prompts.length, `${f.component}: one row per prompt`);
    const what = `${f.claim} ${f.test} ${f.component}`;
    // m = the layers of this test whose statistic is defined; level 1 − 0.05/m
    const m = findings.layers.filter((l) => l.test === f.test && l.claim === f.claim && l.verdict !== 'n/a').length;
    assert.ok(Math.abs(f.level - (1 - 0.05 / m)) < 1e-12, `${what}: level ${f.level} for m = ${m}`);
    if (f.verdict === 'n/a') {
      const y = f.statistic === 'slope_ce' ? mine.map((r) => r.ce) : f.statistic === 'slope_ce_attn' ? mine.map((r) => r.ce_attn) : mine.map((r) => r.ce_mlp);
      assert.ok(y.every((v) => v === 0), `${what}: n/a only when nothing is downstream`);
      assert.match(f.reason!, /downstream/);
      assert.equal(f.estimate, null);
      continue;
    }
    const stat = recompute(mine, f);
    const point = stat(mine.map((_, i) => i))!;
    assert.ok(Math.abs(f.estimate! - point) <= TOL * Math.max(1, Math.abs(point)), `${what}: estimate ${f.estimate} vs ${point}`);
    const iv = interval(draws, stat, f.level);
    assert.ok(Math.abs(f.lo! - iv.lo!) <= TOL * Math.max(1, Math.abs(iv.lo!)), `${what}: lo ${f.lo} vs ${iv.lo}`);
    assert.ok(Math.abs(f.hi! - iv.hi!) <= TOL * Math.max(1, Math.abs(iv.hi!)), `${what}: hi ${f.hi} vs ${iv.hi}`);
    const claimed = f.side === '>' ? iv.lo! > 0 : iv.hi! < 0;
    const against = f.side === '>' ? iv.hi! < 0 : iv.lo! > 0;
    assert.equal(f.verdict, claimed ? 'found' : against ? 'opposite' : 'inconclusive', `${what}: verdict`);
  }
  // the model's verdict: found iff every test of the claim has a found layer
  for (const c of findings.claims.filter((x) => x.claim !== 'de_te_disagree')) {
    const tests = [...new Set(findings.layers.filter((l) => l.claim === c.claim).map((l) => l.test))];
    const found = tests.every((t) => findings.layers.some((l) => l.claim === c.claim && l.test === t && l.verdict === 'found'));
    assert.equal(c.verdict, found ? 'found' : 'not found', `${c.claim}: model verdict`);
  }
}

/** Sentences that assert compensation; a report may only say them when its findings do. */
const ASSERTIONS = [/because other layers make up for it/, /Compensation: downstream layers restore/, /\(Hydra effect\)/, /\(reduced erasure\)/, /measures of layer importance disagree/];

function figureTexts(out: string): string {
  const dir = path.join(out, 'figures');
  return fs.readdirSync(dir).filter((f) => f.endsWith('.svg')).map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('\n');
}

test('demo data (no effect): findings not found, equal to a recomputation from Parquet, no claims in titles', async () => {
  const out = tmpDir('hydra-findings-demo-');
  const model = await HookedModel.load(defaultModelDir, { threads: 1 });
  const db = path.join(out, 'results.duckdb');
  await runSweep({ model, modelName: 'stories260k', dataset: storiesRecallPath, ablation: 'resample', samples: 15, seed: 0, out: db });
  const index = await reportFromDatabase(db, path.join(out, 'report'));
  const findings = JSON.parse(fs.readFileSync(path.join(out, 'report', 'findings.json'), 'utf8')) as Findings;
  const verdict = (c: string) => findings.claims.find((x) => x.claim === c)!.verdict;
  assert.notEqual(verdict('hydra_effect'), 'found');
  assert.notEqual(verdict('erasure'), 'found');
  // the story templates are the groups: 14 of the 15 keep a prompt after the filter
  assert.equal(findings.bootstrap!.unit, 'groups');
  assert.equal(findings.bootstrap!.n_groups, 14);
  await checkAgainstParquet(db, findings);

  const html = fs.readFileSync(index, 'utf8');
  assert.ok(html.indexOf('id="findings"') < html.indexOf('id="about"'), 'findings come first');
  assert.match(html, /Hydra effect: <span class="verdict v-not-found">not found<\/span>/);
  assert.match(html, /resample draws whole groups/);
  // nothing on the page asserts an effect the numbers do not support
  for (const re of ASSERTIONS) {
    assert.doesNotMatch(html, re, `page: ${re}`);
    assert.doesNotMatch(figureTexts(path.join(out, 'report')), re, `figures: ${re}`);
  }
  // attn.4 has no attention layer downstream: n/a with the reason, never 0 [0, 0]
  const last = findings.layers.find((l) => l.claim === 'hydra_effect' && l.component === 'attn.4')!;
  assert.equal(last.verdict, 'n/a');
  assert.equal(last.also[0].estimate, null);
  assert.match(html, /no attention layer downstream of attn\.4/);
  // the frozen and own scale side by side, and which one the findings use
  assert.match(html, /own σ′/);
  assert.match(html, /The findings use the frozen scale/);
  fs.rmSync(out, { recursive: true, force: true });
});

test('positive control: the self-repair model gets found, and its Figure 1 shows the repair', async () => {
  const out = tmpDir('hydra-findings-repair-');
  const dir = writeSelfRepair();
  try {
    const model = await HookedModel.load(dir, { threads: 1 });
    // Y (2) fillers of length 1 to 5 with at most one X (1), ending in Q (3): the removed DE varies with
    // where X sits and how long the prompt is, and attn.1 makes up for about 0.6 of it
    const prompts: { ids: number[] }[] = [];
    for (let len = 1; len <= 5; len++) {
      for (let x = -1; x < len; x++) prompts.push({ ids: [...[...Array(len).keys()].map((j) => (j === x ? 1 : 2)), 3] });
    }
    const data = path.join(out, 'repair.json');
    fs.writeFileSync(data, JSON.stringify(prompts));
    const db = path.join(out, 'results.duckdb');
    await runSweep({ model, modelName: 'self-repair', dataset: data, ablation: 'zero', out: db });
    await reportFromDatabase(db, path.join(out, 'report'));
    const findings = JSON.parse(fs.readFileSync(path.join(out, 'report', 'findings.json'), 'utf8')) as Findings;
    const hydra = findings.claims.find((c) => c.claim === 'hydra_effect')!;
    assert.equal(hydra.verdict, 'found', JSON.stringify(findings.layers.filter((l) => l.claim === 'hydra_effect')));
    assert.deepEqual(hydra.found, ['attn.0']);
    assert.equal(findings.bootstrap!.unit, 'prompts');
    await checkAgainstParquet(db, findings);

    const a = await analyzeDatabase(db);
    const fig1 = a.picks[0];
    assert.equal(fig1.component, 'attn.0');
    assert.equal(fig1.why, 'compensation');
    // Figure 1's data: attn.1's direct effect rises after attn.0 is ablated (red above blue)
    const p = fig1.prompt;
    assert.ok(p.ablations['attn.0'].de_prime['attn.1'] > p.de['attn.1'] + 0.5, `attn.1 DE' ${p.ablations['attn.0'].de_prime['attn.1']} vs DE ${p.de['attn.1']}`);
    const html = fs.readFileSync(path.join(out, 'report', 'index.html'), 'utf8');
    assert.match(html, /Hydra effect: <span class="verdict v-found">found<\/span>/);
    assert.match(html, /largest mean CE<sub>attn<\/sub>/);
    assert.ok(fs.existsSync(path.join(out, 'report', 'figures', 'fig1_profile_attention.png')));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(out, { recursive: true, force: true });
  }
});
