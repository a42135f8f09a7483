/**
 * The repair matrix and the same-replacements statistics (experiments/repair.ts) against a
 * brute-force recomputation in JavaScript (pairwise top-set overlaps, the same group draws), on
 * the constructed self-repair model (attn.1 takes over when attn.0 is gone) against `analyze`
 * run directly, and compact head storage against full storage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { analyze } from '../src/causal/analysis.js';
import type { PromptResult } from '../src/causal/types.js';
import { repairDetail, repairFromDatabase, type RepairLevel, type RepairMatrix } from '../src/experiments/repair.js';
import { ResultsStore, type RunConfig } from '../src/experiments/store.js';
import { runSweep } from '../src/experiments/sweep.js';
import { packageRoot, storiesRecallPath } from '../src/io/paths.js';
import { HookedModel } from '../src/models/model.js';
import { analyzeDatabase } from '../src/report/database.js';
import { writeSelfRepair } from './constructed.js';
import { fixtureModelDir, rejectsWith, tmpDir, toLongLayout } from './helpers.js';
import { groupDraws, interval } from './recompute.js';

const TOL = 1e-9;
const cli = path.join(packageRoot, 'dist', 'src', 'cli', 'main.js');

/** Random prompts of an L-layer, H-head model; ΔDE of a few responders pushed up so that top sets repeat. */
function randomPrompts(n: number, L: number, H: number): PromptResult[] {
  let s = 12345;
  const rnd = () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 4294967296 - 0.5;
  };
  const comps = ['embed'];
  for (let l = 0; l < L; l++) comps.push(`attn.${l}`, ...[...Array(H).keys()].map((h) => `head.${l}.${h}`), `attn_bias.${l}`, `mlp.${l}`);
  const targets = comps.filter((c) => /^(attn|mlp|head)\./.test(c));
  return Array.from({ length: n }, (_, i) => {
    const de = Object.fromEntries(comps.map((c) => [c, rnd()]));
    const ablations: PromptResult['ablations'] = {};
    for (const k of targets) {
      // head.2.0 and mlp.2 often repair; on some prompts others do
      const dp = Object.fromEntries(comps.map((c) => [c, de[c] + rnd() + (c === 'head.2.0' || c === 'attn.2' ? 0.6 : c === 'mlp.2' && i % 3 ? 0.5 : 0)]));
      // ablations in layer 0: the same three responders take over on every prompt
      if (/^(attn|mlp|head)\.0/.test(k)) for (const c of ['attn.1', 'head.1.1', 'mlp.1', 'attn.2', 'head.2.0']) dp[c] += 3;
      // some ablations change nothing: those prompts are not repaired
      if (k === 'attn.1' && i % 5 === 0) Object.assign(dp, de);
      const e = { te: rnd(), ce: rnd(), ce_attn: rnd(), ce_mlp: rnd(), ne: rnd(), ie: rnd(), dde_self: rnd() };
      ablations[k] = { ...e, de_prime: dp, patches: [{ ...e, de_prime: dp, source: null, sigma_prime: 1, pi_hat_prime: 0 }] };
    }
    return { index: i, ids: [1, 2], token: 0, sigma: 1, pi_hat: 0, de, ablations };
  });
}

/** The sequential pre-norm stage, written out again: attn.l and its heads at 2l, mlp.l at 2l + 1. */
function stage(c: string): number {
  const [kind, l] = c.split('.');
  return 2 * Number(l) + (kind === 'mlp' ? 1 : 0);
}

/** The matrix statistics recomputed by brute force from the results, with the same draws. */
function bruteForce(prompts: PromptResult[], level: RepairLevel, k: string, groups: (string | null)[], B: number, seed: number) {
  const isResponder = (c: string) => (level === 'layers' ? /^(attn|mlp)\.\d+$/ : /^(head\.\d+\.\d+|mlp\.\d+)$/).test(c);
  const responders = Object.keys(prompts[0].de).filter((c) => isResponder(c) && c !== k && stage(c) > stage(k));
  const dde = prompts.map((p) => Object.fromEntries(responders.map((c) => [c, p.ablations[k].de_prime[c] - p.de[c]])));
  const m = Math.min(3, responders.length - 1);
  // a prompt is repaired when its largest ΔDE is above 1e-5 · max(1, max |DE|); top sets only there
  const tol = prompts.map((p) => 1e-5 * Math.max(1, ...Object.values(p.de).map(Math.abs)));
  const sets = dde.map((d, i) => {
    const s = [...responders].sort((a, b) => d[b] - d[a] || (a < b ? -1 : 1)).slice(0, m);
    return m > 0 && d[s[0]] > tol[i] ? s : [];
  });
  const repaired = (idx: number[]) => idx.filter((i) => sets[i].length > 0);
  const mean = (c: string) => (idx: number[]) => idx.reduce((s, i) => s + dde[i][c], 0) / idx.length;
  const frac = (c: string, first: boolean) => (all: number[]) => {
    const idx = repaired(all);
    return idx.length === 0 ? null : idx.filter((i) => (first ? sets[i][0] === c : sets[i].includes(c))).length / idx.length;
  };
  const stability = (all: number[]) => {
    const idx = repaired(all);
    if (idx.length < 2) return null;
    let sum = 0;
    let pairs = 0;
    for (let a = 0; a < idx.length; a++) {
      for (let b = 0; b < idx.length; b++) {
        if (a === b) continue;
        sum += sets[idx[a]].filter((c) => sets[idx[b]].includes(c)).length / m;
        pairs++;
      }
    }
    return sum / pairs;
  };
  const all = prompts.map((_, i) => i);
  const draws = groupDraws(groups, B, seed);
  return { responders, sets, mean, frac, stability, all, draws, iv: (f: (idx: number[]) => number | null) => interval(draws, f, 0.95) };
}

/** Equal structure, numbers within 1e-12 relative (sums whose terms came in another order). */
function closeDeep(a: unknown, b: unknown, where: string): void {
  if (typeof a === 'number' && typeof b === 'number') {
    assert.ok(a === b || Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)), `${where}: ${a} vs ${b}`);
  } else if (a && b && typeof a === 'object' && typeof b === 'object') {
    assert.deepEqual(Object.keys(a), Object.keys(b), where);
    for (const k of Object.keys(a)) closeDeep((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${where}.${k}`);
  } else assert.equal(a, b, where);
}

function near(a: number | null, b: number | null, what: string) {
  assert.ok(a !== null && b !== null ? Math.abs(a - b) <= TOL : a === b, `${what}: ${a} vs ${b}`);
}

function checkAgainstBruteForce(m: RepairMatrix, prompts: PromptResult[], groups: (string | null)[], B: number, seed: number) {
  for (const row of m.rows) {
    const bf = bruteForce(prompts, m.level, row.ablated, groups, B, seed);
    assert.equal(row.responders, bf.responders.length, `${row.ablated}: responders`);
    if (bf.responders.length === 0) continue;
    assert.equal(row.chance, bf.responders.length > 1 ? Math.min(3, bf.responders.length - 1) / bf.responders.length : null);
    // the matrix: every downstream pair's mean
    for (const c of bf.responders) near(m.cells.find((x) => x.ablated === row.ablated && x.responder === c)!.mean_dde, bf.mean(c)(bf.all), `${row.ablated} ${c} mean`);
    for (const [i, r] of [...row.top, ...row.frequent].entries()) {
      const what = `${row.ablated} → ${r.component}`;
      near(r.top1, bf.frac(r.component, true)(bf.all), `${what} top1`);
      near(r.top_set, bf.frac(r.component, false)(bf.all), `${what} top set`);
      // intervals for the listed ones: the top by mean and the first `top` by frequency
      const listed = i < row.top.length + 4 || row.top.some((t) => t.component === r.component);
      if (!listed) {
        assert.equal(r.mean_ci.lo, null, `${what}: no interval`);
        continue;
      }
      for (const [got, f] of [[r.mean_ci, bf.mean(r.component)], [r.top1_ci, bf.frac(r.component, true)], [r.top_set_ci, bf.frac(r.component, false)]] as const) {
        const want = bf.iv(f);
        near(got.lo, want.lo, `${what} lo`);
        near(got.hi, want.hi, `${what} hi`);
      }
    }
    near(row.stability, bf.stability(bf.all), `${row.ablated} stability`);
    const want = bf.iv(bf.stability);
    near(row.stability_ci.lo, want.lo, `${row.ablated} stability lo`);
    near(row.stability_ci.hi, want.hi, `${row.ablated} stability hi`);
    // the listed top responders are the largest means, and every top-set member is listed in `frequent`
    const byMean = [...bf.responders].sort((a, b) => bf.mean(b)(bf.all) - bf.mean(a)(bf.all));
    assert.deepEqual(row.top.map((r) => r.component), byMean.slice(0, row.top.length), `${row.ablated} top`);
    assert.deepEqual(new Set(row.frequent.map((r) => r.component)), new Set(bf.sets.flat()), `${row.ablated} frequent`);
    const often = [...new Set(bf.sets.flat())].sort((a, b) => bf.frac(b, true)(bf.all)! - bf.frac(a, true)(bf.all)! || bf.frac(b, false)(bf.all)! - bf.frac(a, false)(bf.all)! || bf.mean(b)(bf.all) - bf.mean(a)(bf.all));
    assert.deepEqual(row.frequent.map((r) => r.component), often, `${row.ablated} frequent order`);
    assert.equal(row.prompts_repaired, bf.sets.filter((s) => s.length > 0).length);
    // the verdict follows from the numbers: the stability interval against chance + 0.5 · (1 − chance)
    if (bf.responders.length < 2) continue;
    const bar = row.chance! + 0.5 * (1 - row.chance!);
    const lo = row.stability_ci.lo, hi = row.stability_ci.hi;
    const verdict = row.prompts_repaired === 0 || !(bf.mean(byMean[0])(bf.all) > 0) ? 'no repair'
      : lo === null || hi === null ? 'undecided' : lo >= bar ? 'consistent' : hi < bar ? 'varies' : 'undecided';
    assert.equal(row.verdict, verdict, `${row.ablated}: ${row.sentence}`);
  }
}

test('repair matrix, top-responder fractions and stability equal a brute-force recomputation with the same group draws', async () => {
  const dir = tmpDir('hydra-repair-');
  const prompts = randomPrompts(12, 3, 2);
  const groups = prompts.map((_, i) => (i % 4 === 3 ? null : `g${i % 3}`));
  const config: RunConfig = { model: 'random', dataset: 'synthetic', ablation: 'zero', samples: 1, seed: 0, heads: true };
  const db = path.join(dir, 'r.duckdb');
  const st = await ResultsStore.open(db, config);
  for (const p of prompts) await st.writePrompt(p, { group: groups[p.index] });
  await st.close();
  const verdicts: string[] = [];
  for (const level of ['layers', 'heads'] as const) {
    const m = await repairFromDatabase(db, { level, bootstrap: 150, seed: 5, top: 4 });
    assert.equal(m.downstream, 'assumed sequential');
    assert.equal(m.bootstrap.unit, 'groups');
    assert.deepEqual(m.ablated, level === 'layers' ? ['attn.0', 'mlp.0', 'attn.1', 'mlp.1', 'attn.2', 'mlp.2']
      : ['attn.0', 'head.0.0', 'head.0.1', 'mlp.0', 'attn.1', 'head.1.0', 'head.1.1', 'mlp.1', 'attn.2', 'head.2.0', 'head.2.1', 'mlp.2']);
    checkAgainstBruteForce(m, prompts, groups, 150, 5);
    verdicts.push(...m.rows.map((r) => r.verdict));
    const last = m.rows.find((r) => r.ablated === 'mlp.2')!;
    assert.equal(last.verdict, 'n/a');
  }
  // the data give both kinds of answer
  assert.ok(verdicts.includes('consistent') && verdicts.includes('varies'), verdicts.join(' '));
  // a level the store cannot give
  const layersOnly = path.join(dir, 'l.duckdb');
  const st2 = await ResultsStore.open(layersOnly, { ...config, heads: false });
  const strip = (p: PromptResult): PromptResult => {
    const keep = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).filter(([c]) => /^(embed|attn\.\d+|mlp\.\d+)$/.test(c)));
    const ablations = Object.fromEntries(Object.entries(p.ablations).filter(([k]) => !k.startsWith('head')).map(([k, a]) => [k, { ...a, de_prime: keep(a.de_prime), patches: a.patches.map((x) => ({ ...x, de_prime: keep(x.de_prime) })) }]));
    return { ...p, de: keep(p.de), ablations };
  };
  for (const p of prompts) await st2.writePrompt(strip(p));
  await st2.close();
  await rejectsWith(repairFromDatabase(layersOnly, { level: 'heads' }), /no per-head direct effects; sweep with heads/);
  assert.equal((await repairFromDatabase(layersOnly, { bootstrap: 10 })).level, 'layers');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('self-repair model: attn.1 (head.1.0) is the top responder to attn.0 on every repaired prompt, stability 1; the store equals analyze', async () => {
  const out = tmpDir('hydra-repair-constructed-');
  const model = await HookedModel.load(writeSelfRepair(), { threads: 1 });
  const prompts: { ids: number[] }[] = [];
  for (let len = 1; len <= 5; len++) for (let x = -1; x < len; x++) prompts.push({ ids: [...[...Array(len).keys()].map((j) => (j === x ? 1 : 2)), 3] });
  const data = path.join(out, 'repair.json');
  fs.writeFileSync(data, JSON.stringify(prompts));
  const db = path.join(out, 'results.duckdb');
  await runSweep({ model, modelName: 'self-repair', dataset: data, ablation: 'zero', heads: true, out: db });
  const kept = (await ResultsStore.openReadOnly(db).then(async (s) => {
    try {
      return (await s.query('SELECT prompt_idx FROM done WHERE kept ORDER BY prompt_idx')).map((r) => Number(r.prompt_idx));
    } finally {
      await s.close();
    }
  }));
  for (const [level, repairer] of [['layers', 'attn.1'], ['heads', 'head.1.0']] as const) {
    const m = await repairFromDatabase(db, { level, bootstrap: 200 });
    assert.equal(m.downstream, 'stored');
    const row = m.rows.find((r) => r.ablated === 'attn.0')!;
    assert.equal(row.top[0].component, repairer);
    assert.equal(row.frequent[0].component, repairer);
    assert.equal(row.frequent[0].top1, 1, `${repairer} is the top responder on every prompt`);
    assert.equal(row.stability, 1);
    assert.deepEqual([row.stability_ci.lo, row.stability_ci.hi], [1, 1]);
    // the prompts without X (1) remove nothing: ΔDE there is float32 rounding, not repair
    assert.equal(row.prompts_repaired, prompts.filter((p, i) => kept.includes(i) && p.ids.includes(1)).length);
    assert.equal(row.verdict, 'consistent');
    assert.match(row.sentence, new RegExp(`^A consistent set repairs.*${repairer.replace('.', '\\.')} is the top responder on 100% of repaired prompts`));
  }

  // the store's ΔDE (per prompt, averaged, and per patch) equals analyze's, run directly
  const direct = await analyze(model, kept.map((i) => prompts[i].ids), { kind: 'zero', heads: true });
  for (const level of ['layers', 'heads'] as const) {
    for (const k of ['attn.0', 'mlp.0', 'head.0.0']) {
      if (level === 'layers' && k.startsWith('head')) continue;
      const rows = await repairDetail(db, k, level);
      assert.ok(rows.length > 0);
      for (const r of rows) {
        const p = direct[kept.indexOf(r.prompt_idx)];
        const a = p.ablations[k];
        const want = (r.patch_idx === null ? a.de_prime : a.patches[r.patch_idx].de_prime)[r.responder] - p.de[r.responder];
        assert.ok(Math.abs(r.dde - want) <= TOL, `${level} ${k} → ${r.responder} prompt ${r.prompt_idx} patch ${r.patch_idx}: ${r.dde} vs ${want}`);
      }
      // every kept prompt and downstream responder is there, averaged
      const responders = level === 'layers' ? ['mlp.0', 'attn.1', 'mlp.1'] : ['mlp.0', 'head.1.0', 'mlp.1'];
      const down = k === 'mlp.0' ? responders.slice(1) : responders;
      assert.equal(rows.filter((r) => r.patch_idx === null).length, kept.length * down.length);
    }
  }
  fs.rmSync(out, { recursive: true, force: true });
});

test('compact head storage: the same report numbers and repair matrix as full storage, far fewer rows; older stores read, newer refused', async () => {
  const dir = tmpDir('hydra-repair-compact-');
  const model = await HookedModel.load(fixtureModelDir('stories260k'), { threads: 1 });
  const common = { model, modelName: 'stories260k', dataset: storiesRecallPath, ablation: 'resample' as const, samples: 3, seed: 0, heads: true, limit: 10 };
  const full = path.join(dir, 'full.duckdb');
  const compact = path.join(dir, 'compact.duckdb');
  await runSweep({ ...common, storePatches: 'all', out: full });
  await runSweep({ ...common, out: compact });

  const count = async (db: string) => {
    const s = await ResultsStore.openReadOnly(db);
    try {
      const [r] = await s.query(`SELECT (SELECT count(*) FROM de_prime) AS all_rows, (SELECT count(*) FROM de_prime WHERE patch_idx IS NULL) AS avg_rows,
        (SELECT count(*) FROM done WHERE kept) AS kept, (SELECT schema_version FROM run_config) AS version`);
      return { all_rows: Number(r.all_rows), avg_rows: Number(r.avg_rows), kept: Number(r.kept), version: Number(r.version), config: s.config };
    } finally {
      await s.close();
    }
  };
  const f = await count(full);
  const c = await count(compact);
  assert.equal(c.version, 3);
  assert.equal(c.config.options?.store_patches, 'layers');
  assert.equal(f.config.options?.store_patches, undefined);
  assert.deepEqual(c.config.downstream?.['attn.0']?.slice(0, 3), ['attn.1', 'attn.2', 'attn.3']);
  // per prompt: every (ablated, component) averaged; per patch only the layer-level components (11) of every ablation, 3 patches
  const L = model.spec.nLayers, H = model.spec.nHeads;
  const ablated = 2 * L + L * H, components = 1 + 2 * L + L * (H + 1); // heads and attn_bias.L
  assert.equal(c.avg_rows, f.avg_rows);
  assert.equal(Number(c.avg_rows), Number(c.kept) * ablated * components);
  assert.equal(Number(c.all_rows) - Number(c.avg_rows), Number(c.kept) * ablated * (1 + 2 * L) * 3);
  assert.equal(Number(f.all_rows), Number(f.kept) * ablated * components * 4);

  // the report's numbers (statistics, own scale, findings, figure data) and the repair matrix agree
  const a = await analyzeDatabase(full, { bootstrap: 100 });
  const b = await analyzeDatabase(compact, { bootstrap: 100 });
  assert.ok(a.ownScale !== null);
  for (const k of ['stats', 'findings', 'prompts', 'picks'] as const) assert.deepStrictEqual(b[k], a[k], k);
  // sums over de_prime rows (own scale, repair) meet the same rows in another physical order: equal up to the last bits
  closeDeep(b.ownScale, a.ownScale, 'ownScale');
  closeDeep(b.repair, a.repair, 'repair');
  assert.equal(a.repair.level, 'heads');
  const readLayers = async (db: string) => {
    const s = await ResultsStore.openReadOnly(db);
    try {
      return await s.readResults({ layersOnly: true });
    } finally {
      await s.close();
    }
  };
  assert.deepStrictEqual(await readLayers(compact), await readLayers(full));

  // a resume must keep the store's own layout
  await rejectsWith(runSweep({ ...common, storePatches: 'all', out: compact }), /made with store_patches=layers, this run asks for all \(which patches' DE' the store keeps; resume with the store's own `storePatches`\)/);

  // a version 1 store (written before compact storage and downstream sets) is read as before
  const old = path.join(dir, 'old.duckdb');
  fs.copyFileSync(full, old);
  const { downstream: _, ...olderConfig } = f.config;
  await toLongLayout(old, 1, JSON.stringify(olderConfig));
  const m = await repairFromDatabase(old, { bootstrap: 100 });
  assert.equal(m.downstream, 'assumed sequential');
  closeDeep({ ...m, downstream: 'stored' }, a.repair, 'repair of the version 1 store');
  const { DuckDBInstance } = await import('@duckdb/node-api');
  const inst = await DuckDBInstance.create(old);
  const con = await inst.connect();
  await con.run('UPDATE run_config SET schema_version = 4');
  con.closeSync();
  inst.closeSync();
  await rejectsWith(repairFromDatabase(old), /has schema version 4, this hydra reads 1, 2 and 3; use the hydra version that wrote it/);

  // hydra repair: text, JSON and the heatmap files
  const out = path.join(dir, 'repair');
  const r = spawnSync(process.execPath, [cli, 'repair', '--db', compact, '--out', out, '--bootstrap', '100', '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const json = JSON.parse(r.stdout);
  assert.deepEqual(json.rows.map((x: { verdict: string }) => x.verdict), a.repair.rows.map((x) => x.verdict));
  assert.equal(json.cells.length, a.repair.cells.length);
  assert.deepEqual([...fs.readFileSync(json.files.png).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.match(fs.readFileSync(json.files.svg, 'utf8'), /^<svg[\s\S]*Repair matrix[\s\S]*<\/svg>\s*$/);
  const text = spawnSync(process.execPath, [cli, 'repair', '--db', compact, '--out', out, '--bootstrap', '100', '--level', 'layers', '--top', '2'], { encoding: 'utf8' });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /^repair matrix \(layers\): \d+ prompts/);
  assert.match(text.stdout, /\nattn\.0: (consistent|varies|undecided|no repair) — /);
  const bad = spawnSync(process.execPath, [cli, 'repair', '--db', path.join(dir, 'missing.duckdb')], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^hydra: error: results database .*missing\.duckdb not found/);
  fs.rmSync(dir, { recursive: true, force: true });
});
