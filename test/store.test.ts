import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { DuckDBInstance } from '@duckdb/node-api';
import { ResultsStore, mergeStores, exportParquet, type RunConfig } from '../src/experiments/store.js';
import type { PromptResult } from '../src/causal/types.js';
import { analyze } from '../src/causal/analysis.js';
import { fmtNum } from '../src/experiments/format.js';
import { reportFromDatabase } from '../src/report/database.js';
import { HookedModel } from '../src/models/model.js';
import { fixtureModelDir, loadGolden, rejectsWith, tmpDir, toLongLayout } from './helpers.js';
import { createProgress, formatDuration, sweepProgress } from '../src/cli/progress.js';

/**
 * A deterministic synthetic PromptResult with full-precision doubles. Self-contained (no outside
 * names) because the crash test sends its source to a child process.
 */
function synth(idx: number, layers: number, samples: number, heads: number, resample: boolean): PromptResult {
  let s = (idx * 2654435761 + 97) >>> 0;
  const u32 = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  // 64 random bits -> a double using all 53 mantissa bits.
  const rnd = (): number => ((u32() + u32() / 4294967296) / 4294967296) * 20 - 10;
  const comps = ['embed'];
  for (let l = 0; l < layers; l++) {
    comps.push(`attn.${l}`);
    for (let h = 0; h < heads; h++) comps.push(`head.${l}.${h}`);
    if (heads > 0) comps.push(`attn_bias.${l}`);
    comps.push(`mlp.${l}`);
  }
  const dp = (): Record<string, number> => Object.fromEntries(comps.map((c) => [c, rnd()]));
  const eff = () => ({ te: rnd(), ce: rnd(), ce_attn: rnd(), ce_mlp: rnd(), ne: rnd(), ie: rnd(), dde_self: rnd() });
  const ablations: PromptResult['ablations'] = {};
  for (const k of comps.slice(1)) {
    const patches = Array.from({ length: samples }, (_, j) => ({
      ...eff(), de_prime: dp(), source: resample ? (idx + 1 + j * 7) % 1000 : null, sigma_prime: rnd(), pi_hat_prime: rnd(),
    }));
    ablations[k] = { ...eff(), de_prime: dp(), patches };
  }
  return { index: idx, ids: [1, 17 + idx, 3, 2 * idx], text: `prompt "${idx}", it's`, token: (idx * 31) % 50257, sigma: rnd() + 20, pi_hat: rnd(), de: dp(), ablations };
}

const config: RunConfig = { model: 'tiny-gpt2', model_revision: 'abc123', model_hash: 'sha256:00ff', dataset: 'known_1000', ablation: 'resample', samples: 3, seed: 7, heads: true };


test('round trip: PromptResults read back exactly, ordered by index', async () => {
  const file = path.join(tmpDir(), 'nested', 'results.duckdb');
  const results = [3, 0, 2, 1].map((i) => synth(i, 2, 3, 2, true));
  // Values that a lossy path would change.
  const r0 = results[1];
  r0.de.embed = -0;
  r0.ablations['attn.0'].te = NaN;
  r0.ablations['attn.0'].patches[1].ce = 5e-324;
  r0.ablations['mlp.1'].de_prime['head.0.1'] = -1.7976931348623157e308;
  r0.sigma = 1 / 3;
  delete results[2].text;

  const st = await ResultsStore.open(file, config);
  for (const r of results) await st.writePrompt(r, { dataset_id: `k${r.index}`, answer: ' Paris', token_text: ' Paris' });
  const sorted = [...results].sort((a, b) => a.index - b.index);
  assert.deepStrictEqual(await st.readResults(), sorted);
  assert.ok(Object.is((await st.readResults())[0].de.embed, -0));
  // Key order follows write order.
  assert.deepEqual(Object.keys((await st.readResults())[1].de), Object.keys(sorted[1].de));
  assert.deepEqual([...(await st.donePrompts())].sort(), [0, 1, 2, 3]);

  // Without patches: averages only.
  const light = sorted.map((r) => ({ ...r, ablations: Object.fromEntries(Object.entries(r.ablations).map(([k, a]) => [k, { ...a, patches: [] }])) }));
  assert.deepStrictEqual(await st.readResults({ patches: false }), light);

  // Row counts: 2 layers × (attn, 2 heads, bias, mlp) + embed = 11 components, 10 ablated, 3 patches.
  const n = (await st.query(`SELECT (SELECT count(*) FROM clean_de) AS de, (SELECT count(*) FROM effects) AS eff,
    (SELECT count(*) FROM patches) AS pat, (SELECT count(*) FROM de_prime) AS dp, (SELECT count(*) FROM sources) AS src`))[0];
  assert.deepEqual(n, { de: 44n, eff: 40n, pat: 120n, dp: 4n * 10n * 4n * 11n, src: 12n });
  const srcRows = await st.query('SELECT patch_idx, source FROM sources WHERE prompt_idx = 2 ORDER BY patch_idx');
  assert.deepEqual(srcRows, [{ patch_idx: 0, source: 3 }, { patch_idx: 1, source: 10 }, { patch_idx: 2, source: 17 }]);
  const p = await st.query('SELECT dataset_id, answer, token_text, ids, kept, drop_reason FROM prompts WHERE prompt_idx = 1');
  assert.deepEqual(p, [{ dataset_id: 'k1', answer: ' Paris', token_text: ' Paris', ids: [1, 18, 3, 2], kept: true, drop_reason: null }]);
  assert.deepEqual(await st.readPromptExtras(), new Map([0, 1, 2, 3].map((i) => [i, { dataset_id: `k${i}`, answer: ' Paris', token_text: ' Paris' }])));
  await st.close();

  // And after reopening, read-only.
  const ro = await ResultsStore.openReadOnly(file);
  assert.deepStrictEqual(await ro.readResults(), sorted);
  assert.equal(ro.config.model_hash, 'sha256:00ff');
  await rejectsWith(ro.writePrompt(synth(9, 1, 1, 0, false)), /opened read-only/);
  await ro.close();
});

test('zero ablation (one patch, no source), dropped prompts, done set, duplicates', async () => {
  const file = path.join(tmpDir(), 'z.duckdb');
  const cfg: RunConfig = { ...config, ablation: 'zero', samples: 1, heads: false };
  const st = await ResultsStore.open(file, cfg);
  const r = synth(4, 3, 1, 0, false);
  await st.writePrompt(r);
  await st.writeDropped({ index: 2, reason: 'wrong first token', text: 'x', ids: [5, 6], token: 9, token_text: ' no', answer: ' yes', dataset_id: '2' });
  await st.writeDropped({ index: 0, reason: 'wrong first token' });
  assert.deepEqual([...(await st.donePrompts())].sort(), [0, 2, 4]);
  assert.deepStrictEqual(await st.readResults(), [r]);
  assert.deepEqual((await st.readDropped()).map((d) => [d.index, d.reason, d.ids, d.token_text]), [[0, 'wrong first token', null, null], [2, 'wrong first token', [5, 6], ' no']]);
  assert.deepEqual(await st.query('SELECT count(*) AS n FROM sources'), [{ n: 0n }]);
  await rejectsWith(st.writePrompt(r), /prompt 4 is already stored in .*z\.duckdb/);
  await rejectsWith(st.writeDropped({ index: 2, reason: 'again' }), /prompt 2 is already stored/);
  await rejectsWith(st.writePrompts([{ result: synth(6, 3, 1, 0, false) }, { result: synth(6, 3, 1, 0, false) }]), /prompt 6 is given twice in one write/);
  await rejectsWith(st.writePrompt(synth(-1, 3, 1, 0, false)), /prompt index -1 is not a non-negative integer/);
  // A bad value is refused and nothing of that prompt is written.
  const bad = synth(5, 3, 1, 0, false);
  (bad.ablations['mlp.2'].patches[0] as unknown as Record<string, unknown>).ne = undefined;
  await rejectsWith(st.writePrompt(bad), /prompt 5 ablation mlp\.2 patch 0 ne: it is missing/);
  assert.deepEqual([...(await st.donePrompts())].sort(), [0, 2, 4]);
  assert.deepEqual(await st.query('SELECT count(*) AS n FROM effects WHERE prompt_idx = 5'), [{ n: 0n }]);
  await st.writePrompt(synth(5, 3, 1, 0, false));
  assert.deepEqual((await st.readResults()).map((x) => x.index), [4, 5]);
  await st.close();
  await st.close();
});

test('prompt groups: stored with kept and dropped prompts; a store without the column gets it when reopened', async () => {
  const file = path.join(tmpDir(), 'g.duckdb');
  const cfg: RunConfig = { ...config, ablation: 'zero', samples: 1, heads: false };
  const st = await ResultsStore.open(file, cfg);
  await st.writePrompt(synth(1, 2, 1, 0, false), { group: 'P30' });
  await st.writePrompt(synth(3, 2, 1, 0, false));
  await st.writeDropped({ index: 2, reason: 'wrong first token', group: 'P17' });
  assert.deepEqual(await st.query('SELECT prompt_idx, group_id FROM prompts ORDER BY prompt_idx'),
    [{ prompt_idx: 1, group_id: 'P30' }, { prompt_idx: 2, group_id: 'P17' }, { prompt_idx: 3, group_id: null }]);
  assert.equal((await st.readDropped())[0].group, 'P17');
  // the report's light read: layer components only, no DE', one prompt when asked
  const light = await st.readResults({ patches: false, layersOnly: true, dePrime: false, prompts: [3] });
  assert.deepEqual(light.map((r) => r.index), [3]);
  assert.deepEqual(Object.keys(light[0].ablations), ['attn.0', 'mlp.0', 'attn.1', 'mlp.1']);
  assert.deepEqual(light[0].ablations['attn.0'].de_prime, {});
  assert.equal(light[0].ablations['attn.0'].te, synth(3, 2, 1, 0, false).ablations['attn.0'].te);
  await st.close();
  // a store written before the column existed
  const old = path.join(tmpDir(), 'old.duckdb');
  const o = await ResultsStore.open(old, cfg);
  await o.writePrompt(synth(1, 2, 1, 0, false));
  await (o as unknown as { con: { run(sql: string): Promise<void> } }).con.run('ALTER TABLE prompts DROP COLUMN group_id');
  await o.close();
  const again = await ResultsStore.open(old, cfg);
  await again.writePrompt(synth(2, 2, 1, 0, false), { group: 'g' });
  assert.deepEqual(await again.query('SELECT prompt_idx, group_id FROM prompts ORDER BY prompt_idx'), [{ prompt_idx: 1, group_id: null }, { prompt_idx: 2, group_id: 'g' }]);
  await again.close();
});

test('config mismatch is refused and leaves the stored data intact', async () => {
  const file = path.join(tmpDir(), 'results.duckdb');
  const rs = [0, 1].map((i) => synth(i, 2, 3, 2, true));
  const st = await ResultsStore.open(file, config);
  for (const r of rs) await st.writePrompt(r);
  await st.close();
  const before = fs.readFileSync(file);

  await rejectsWith(ResultsStore.open(file, { ...config, ablation: 'zero' }),
    /results\.duckdb was made with ablation=resample, this run asks for zero; use another `out` or the same settings$/);
  await rejectsWith(ResultsStore.open(file, { ...config, samples: 15 }), /made with samples=3, this run asks for 15/);
  await rejectsWith(ResultsStore.open(file, { ...config, model_revision: null }), /made with model_revision=abc123, this run asks for none/);
  await rejectsWith(ResultsStore.open(file, { ...config, heads: false }), /made with heads=true, this run asks for false/);
  await rejectsWith(ResultsStore.open(file, { ...config, options: { norm_scale: 'ablated' } }), /made with norm_scale=none, this run asks for ablated/);
  assert.deepEqual(fs.readFileSync(file), before);

  // limit and hydra_version may change on resume.
  const again = await ResultsStore.open(file, { ...config, limit: 50, hydra_version: '9.9.9' });
  assert.deepStrictEqual(await again.readResults(), rs);
  assert.equal(again.config.limit, null);
  await again.close();
});

test('unusable paths are HydraErrors', async () => {
  const dir = tmpDir();
  const aFile = path.join(dir, 'plain.txt');
  fs.writeFileSync(aFile, 'not a database, just some text that is long enough to look like a header...'.repeat(100));
  await rejectsWith(ResultsStore.open(path.join(aFile, 'sub', 'results.duckdb'), config), /cannot create the folder .*plain\.txt\/sub \(ENOTDIR\); choose a writable `out`/);
  await rejectsWith(ResultsStore.open(dir, config), /is a directory; give a file path/);
  // Node's own recursive mkdir never returns here.
  await rejectsWith(ResultsStore.open('/proc/hydra/results.duckdb', config), /cannot create the folder \/proc\/hydra \(ENOENT\); choose a writable `out`/);
  await rejectsWith(ResultsStore.open(aFile, config), /plain\.txt is not a hydra results database|cannot open results database .*plain\.txt/);
  await rejectsWith(ResultsStore.openReadOnly(path.join(dir, 'missing.duckdb')), /missing\.duckdb not found/);
  // A DuckDB file that is not a results store.
  const other = path.join(dir, 'other.duckdb');
  const inst = await DuckDBInstance.create(other);
  const con = await inst.connect();
  await con.run('CREATE TABLE t (x INTEGER)');
  con.closeSync();
  inst.closeSync();
  await rejectsWith(ResultsStore.open(other, config), /other\.duckdb is not a hydra results database/);
  // Opening one file twice in a process would corrupt it.
  const f = path.join(dir, 'once.duckdb');
  const st = await ResultsStore.open(f, config);
  await rejectsWith(ResultsStore.open(f, config), /already open in this process/);
  await st.close();
});

test('merging two shards gives the same store as one run', async () => {
  const dir = tmpDir();
  const all = [0, 1, 2, 3, 4].map((i) => synth(i, 2, 3, 2, true));
  const single = await ResultsStore.open(path.join(dir, 'single.duckdb'), config);
  for (const r of all) await single.writePrompt(r, { dataset_id: String(r.index) });
  await single.writeDropped({ index: 5, reason: 'wrong first token' });

  const a = await ResultsStore.open(path.join(dir, 'a.duckdb'), { ...config, shard: '0/2' });
  for (const i of [0, 1, 2]) await a.writePrompt(all[i], { dataset_id: String(i) });
  await a.writeDropped({ index: 5, reason: 'wrong first token' });
  await a.close();
  const b = await ResultsStore.open(path.join(dir, 'b.duckdb'), { ...config, shard: '1/2' });
  // Prompt 2 is in both shards, identically.
  for (const i of [4, 2, 3]) await b.writePrompt(all[i], { dataset_id: String(i) });
  await b.close();

  const merged = path.join(dir, 'merged.duckdb');
  await mergeStores([path.join(dir, 'a.duckdb'), path.join(dir, 'b.duckdb')], merged);
  const m = await ResultsStore.openReadOnly(merged);
  assert.deepStrictEqual(await m.readResults(), await single.readResults());
  assert.deepEqual(await m.donePrompts(), await single.donePrompts());
  assert.deepEqual(await m.readDropped(), await single.readDropped());
  assert.equal(m.config.shard, null);
  for (const t of ['prompts', 'clean_de', 'effects', 'patches', 'de_prime', 'sources']) {
    const q = `SELECT * EXCLUDE (prompt_idx), prompt_idx FROM ${t} ORDER BY ALL`;
    assert.deepEqual(await m.query(q), await single.query(q), t);
  }
  await m.close();
  await single.close();

  // A shard of another run, or overlapping prompts that differ, are refused.
  const c = await ResultsStore.open(path.join(dir, 'c.duckdb'), { ...config, seed: 8, shard: '1/2' });
  await c.writePrompt(all[3]);
  await c.close();
  await rejectsWith(mergeStores([path.join(dir, 'a.duckdb'), path.join(dir, 'c.duckdb')], path.join(dir, 'm2.duckdb')), /differ in seed \(7 vs 8\); only shards of the same run/);
  assert.ok(!fs.existsSync(path.join(dir, 'm2.duckdb')));
  const d = await ResultsStore.open(path.join(dir, 'd.duckdb'), { ...config, shard: '1/2' });
  await d.writePrompt(synth(2, 2, 3, 2, false));
  await d.close();
  await rejectsWith(mergeStores([path.join(dir, 'a.duckdb'), path.join(dir, 'd.duckdb')], path.join(dir, 'm3.duckdb')), /both hold prompts \(e\.g\. 2\) with different/);
});

test("stores of schema version 1 and 2 (DE' a value a row): read as they are, moved into lists when written to or merged", async () => {
  const dir = tmpDir();
  const all = [0, 1, 2, 3].map((i) => synth(i, 2, 3, 2, true));
  const ref = await ResultsStore.open(path.join(dir, 'ref.duckdb'), config);
  for (const r of all) await ref.writePrompt(r);
  const old = path.join(dir, 'old.duckdb');
  const o = await ResultsStore.open(old, { ...config, shard: '0/2' });
  for (const i of [0, 1]) await o.writePrompt(all[i]);
  await o.close();
  await toLongLayout(old, 2);
  const fresh = await ResultsStore.open(path.join(dir, 'new.duckdb'), { ...config, shard: '1/2' });
  for (const i of [2, 3]) await fresh.writePrompt(all[i]);
  await fresh.close();

  const longRows = (s: ResultsStore, where = '') => s.query(`SELECT * FROM de_prime ${where} ORDER BY ALL`);
  const ro = await ResultsStore.openReadOnly(old);
  assert.equal((await ro.query('SELECT schema_version AS v FROM run_config'))[0].v, 2);
  for (const opts of [{}, { layersOnly: true }, { patches: false }]) {
    assert.deepStrictEqual(await ro.readResults(opts), await ref.readResults({ ...opts, prompts: [0, 1] }), JSON.stringify(opts));
  }
  assert.deepEqual(await longRows(ro), await longRows(ref, 'WHERE prompt_idx < 2'));
  await ro.close();

  // A merge reads either layout and numbers each component list once.
  const merged = path.join(dir, 'merged.duckdb');
  await mergeStores([old, path.join(dir, 'new.duckdb')], merged);
  const m = await ResultsStore.openReadOnly(merged);
  assert.deepStrictEqual(await m.readResults(), all);
  assert.deepEqual(await longRows(m), await longRows(ref));
  assert.deepEqual(await m.query('SELECT components FROM de_prime_layouts ORDER BY layout'), await ref.query('SELECT components FROM de_prime_layouts ORDER BY layout'));
  await m.close();

  // A run with other settings is refused before anything is moved.
  await rejectsWith(ResultsStore.open(old, { ...config, seed: 8, shard: '0/2' }), /made with seed=7, this run asks for 8/);
  const still = await ResultsStore.openReadOnly(old);
  assert.equal((await still.query('SELECT schema_version AS v FROM run_config'))[0].v, 2);
  await still.close();
  // A resume moves the old store's DE' into lists (same values), then writes as version 3.
  const w = await ResultsStore.open(old, { ...config, shard: '0/2' });
  assert.equal((await w.query('SELECT schema_version AS v FROM run_config'))[0].v, 3);
  assert.deepStrictEqual(await w.readResults(), all.slice(0, 2));
  await w.writePrompt(all[2]);
  assert.deepStrictEqual(await w.readResults(), all.slice(0, 3));
  assert.deepEqual(await longRows(w), await longRows(ref, 'WHERE prompt_idx < 3'));
  await w.close();
  await ref.close();
});

test("a write that fails stores nothing, and the DE' layouts it numbered are numbered again by the next", async () => {
  const st = await ResultsStore.open(path.join(tmpDir(), 'r.duckdb'), { ...config, heads: false });
  const bad = synth(0, 2, 3, 0, true);
  (bad.ablations['mlp.1'].patches[2] as unknown as Record<string, unknown>).te = 'x';
  await rejectsWith(st.writePrompt(bad), /cannot store prompt 0 ablation mlp\.1 patch 2 te: it is string/);
  assert.deepEqual(await st.query('SELECT count(*) AS n FROM de_prime_layouts'), [{ n: 0n }]);
  const good = synth(1, 2, 3, 0, true);
  await st.writePrompt(good);
  assert.deepStrictEqual(await st.readResults(), [good]);
  await st.close();
});

test('parquet export: one file per table, row counts match', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'results.duckdb');
  const st = await ResultsStore.open(file, config);
  for (const i of [0, 1, 2]) await st.writePrompt(synth(i, 2, 3, 2, true));
  await st.writeDropped({ index: 3, reason: 'wrong first token' });
  const tables = ['run_config', 'prompts', 'clean_de', 'effects', 'patches', 'de_prime', 'sources', 'done'];
  const counts: Record<string, bigint> = {};
  for (const t of tables) counts[t] = (await st.query(`SELECT count(*) AS n FROM ${t}`))[0].n as bigint;
  await st.close();
  assert.deepEqual({ ...counts }, { run_config: 1n, prompts: 4n, clean_de: 33n, effects: 30n, patches: 90n, de_prime: 3n * 10n * 4n * 11n, sources: 9n, done: 4n });

  const files = await exportParquet(file, path.join(dir, 'parquet'));
  assert.deepEqual(files, tables.map((t) => path.join(dir, 'parquet', `${t}.parquet`)));
  const inst = await DuckDBInstance.create(':memory:');
  const con = await inst.connect();
  for (const t of tables) {
    const r = await con.runAndReadAll(`SELECT count(*) FROM read_parquet('${path.join(dir, 'parquet', `${t}.parquet`)}')`);
    assert.equal(r.getRowsJS()[0][0], counts[t], t);
  }
  const v = await con.runAndReadAll(`SELECT value FROM read_parquet('${path.join(dir, 'parquet', 'de_prime.parquet')}')
    WHERE prompt_idx = 1 AND ablated = 'mlp.1' AND patch_idx = 2 AND component = 'head.1.0'`);
  assert.equal(v.getRowsJS()[0][0], synth(1, 2, 3, 2, true).ablations['mlp.1'].patches[2].de_prime['head.1.0']);
  con.closeSync();
  inst.closeSync();
});

/**
 * Runs a child that writes synth prompts 0..7 and prints each index once written. `killAt`:
 * null = the parent SIGKILLs it after 3 prompts; otherwise the child SIGKILLs itself while writing
 * prompt 3, just before ('before') or just after issuing ('after') the SQL statement starting
 * with `sql`: a kill inside the transaction, or one racing its commit.
 */
async function runAndKill(file: string, killAt: { sql: string; when: 'before' | 'after' } | null): Promise<number> {
  const storeUrl = new URL('../src/experiments/store.js', import.meta.url).href;
  const child = `
    import { ResultsStore } from ${JSON.stringify(storeUrl)};
    const synth = ${synth.toString()};
    const killAt = ${JSON.stringify(killAt)};
    // Made up front, so that the time between two prompts is spent inside writePrompt.
    const rs = Array.from({ length: 8 }, (_, i) => synth(i, 12, 15, 2, true));
    const st = await ResultsStore.open(${JSON.stringify(file)}, ${JSON.stringify(config)});
    let current = -1;
    const con = st.con, run = con.run.bind(con);
    con.run = (sql, ...rest) => {
      const hit = killAt && current === 3 && sql.trimStart().startsWith(killAt.sql);
      if (hit && killAt.when === 'before') process.kill(process.pid, 'SIGKILL');
      const p = run(sql, ...rest);
      if (hit) process.kill(process.pid, 'SIGKILL');
      return p;
    };
    for (const r of rs) { current = r.index; await st.writePrompt(r); process.stdout.write(r.index + '\\n'); }
  `;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', child], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  let out = '';
  proc.stdout.on('data', (d) => {
    out += d;
    if (killAt === null && out.split('\n').length > 3) proc.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => proc.on('exit', (code, sig) =>
    sig === 'SIGKILL' ? resolve() : reject(new Error(`child exited (${code}): ${stderr}`))));
  const lines = out.split('\n').filter((x) => x !== '');
  return lines.length ? Number(lines[lines.length - 1]) : -1;
}

for (const killAt of [null, { sql: 'INSERT INTO done', when: 'before' }, { sql: 'COMMIT', when: 'after' }] as const) {
  const name = killAt ? `${killAt.when} ${killAt.sql} of prompt 3` : 'by the parent';
  test(`a writer killed with SIGKILL (${name}) leaves only whole prompts`, async () => {
    const file = path.join(tmpDir(), 'crash.duckdb');
    const reported = await runAndKill(file, killAt);
    assert.ok(reported >= 2, `the child wrote prompts 0..2 before the kill (reported ${reported})`);

    const st = await ResultsStore.open(file, config);
    const done = [...(await st.donePrompts())].sort((a, b) => a - b);
    // Every prompt reported written is there; the one being written is whole or absent.
    assert.ok(done.length >= reported + 1);
    assert.deepEqual(done, done.map((_, i) => i));
    if (killAt?.when === 'before') assert.equal(done.length, 3);
    assert.deepStrictEqual(await st.readResults(), done.map((i) => synth(i, 12, 15, 2, true)));
    for (const t of ['prompts', 'clean_de', 'effects', 'patches', 'de_prime', 'sources']) {
      const stray = await st.query(`SELECT count(*) AS n FROM ${t} WHERE prompt_idx NOT IN (SELECT prompt_idx FROM done)`);
      assert.deepEqual(stray, [{ n: 0n }], `rows of an unfinished prompt in ${t}`);
    }
    // The run resumes where it stopped.
    const next = done.length;
    await st.writePrompt(synth(next, 12, 15, 2, true));
    assert.deepEqual((await st.readResults()).map((r) => r.index), [...done, next]);
    await st.close();
  });
}

// The sweep's progress lines (src/cli/progress.ts), when stderr is not a terminal.
test('progress: plain lines at most every interval, and a final one', () => {
  const lines: string[] = [];
  const stream = { isTTY: false, write: (s: string) => (lines.push(s), true) } as unknown as NodeJS.WritableStream;
  let t = 1000;
  const p = createProgress(1209, 'sweep', { stream, now: () => t, intervalMs: 5000 });
  for (let i = 0; i < 120; i++) { t += 25; p.tick(); }
  assert.deepEqual(lines, []);
  t += 2000;
  p.tick(0, 'kept 100');
  assert.deepEqual(lines, ['sweep: 120/1209 prompts (9.9%), 24.0 prompts/s, ETA 45s; kept 100\n']);
  t += 1000;
  p.tick(2);
  assert.equal(lines.length, 1);
  p.stop();
  p.stop();
  assert.deepEqual(lines.slice(1), ['sweep: 122/1209 prompts (10.1%), 20.3 prompts/s, done in 6s; kept 100\n']);
  // A resumed run counts only its own prompts in the rate.
  const more: string[] = [];
  const q = createProgress(10, 'demo', { stream: { isTTY: false, write: (s: string) => (more.push(s), true) } as unknown as NodeJS.WritableStream, now: () => t, start: 8, unit: 'items' });
  t += 4000;
  q.tick(2);
  q.stop();
  assert.deepEqual(more, ['demo: 10/10 items (100.0%), 0.50 items/s, done in 4s\n']);
  assert.deepEqual([formatDuration(31.4), formatDuration(312), formatDuration(7384), formatDuration(NaN)], ['31s', '5m12s', '2h03m', '?']);
});

// runSweep reports the prompts finished so far after each batch; the bar counts prompts.
test('sweepProgress: a batch of prompts ticks the bar by its size', () => {
  const lines: string[] = [];
  const stream = { isTTY: false, write: (s: string) => (lines.push(s), true) } as unknown as NodeJS.WritableStream;
  let t = 0;
  const progress = sweepProgress('sweep', { stream, now: () => t, intervalMs: 5000 });
  progress(0, 20);
  t += 6000;
  progress(8, 20);
  progress(16, 20);
  t += 2000;
  progress(20, 20);
  assert.deepEqual(lines, ['sweep: 8/20 prompts (40.0%), 1.3 prompts/s, ETA 9s\n', 'sweep: 20/20 prompts (100.0%), 2.5 prompts/s, done in 8s\n']);
});

test('te_capped (soft-capped models) is stored beside te, per patch and averaged, and read back', async () => {
  const golden = loadGolden('tiny-gemma2');
  const model = await HookedModel.load(fixtureModelDir('tiny-gemma2'), { threads: 1 });
  const results = await analyze(model, golden.prompts.slice(0, 4).map((p: { ids: number[] }) => p.ids), { kind: 'zero', targets: ['attn.0', 'mlp.2'] });
  assert.ok(results.every((r) => Object.values(r.ablations).every((a) => a.te_capped !== undefined && a.patches.every((p) => p.te_capped !== undefined))));
  const file = path.join(tmpDir(), 'capped.duckdb');
  const st = await ResultsStore.open(file, { ...config, model: 'tiny-gemma2', ablation: 'zero', samples: 1, heads: false });
  await st.writePrompts(results.map((result) => ({ result })));
  assert.deepStrictEqual(await st.readResults(), results);
  const [row] = await st.query('SELECT count(te_capped) AS n, count(*) AS all FROM patches');
  assert.equal(Number(row.n), Number(row.all));
  await st.close();
  // The report shows it beside TE, with the mean over the prompts.
  const out = path.join(tmpDir(), 'report');
  await reportFromDatabase(file, out, { bootstrap: 50 });
  const html = fs.readFileSync(path.join(out, 'index.html'), 'utf8');
  const mean = results.reduce((s, r) => s + r.ablations['attn.0'].te_capped!, 0) / results.length;
  assert.match(html, /Soft-capped logits/);
  assert.ok(html.includes(fmtNum(mean)), `mean TE_capped ${fmtNum(mean)} in the report`);
});
