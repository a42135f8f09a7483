import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ABLATIONS, ablationKind, CLI_KINDS, NOISE_SCALE, noisePositionsOf, noiseStd, samplesOf, subjectPositions } from '../src/causal/ablations.js';
import { analyze } from '../src/causal/analysis.js';
import { CleanBank } from '../src/causal/bank.js';
import { gaussian, mulberry32, sampleFrom, seedOf } from '../src/causal/random.js';
import { Readout } from '../src/causal/readout.js';
import { profilePrompt } from '../src/experiments/profile.js';
import { ResultsStore } from '../src/experiments/store.js';
import { runSweep } from '../src/experiments/sweep.js';
import { loadDataset } from '../src/io/datasets.js';
import { defaultModelDir, packageRoot, storiesRecallPath } from '../src/io/paths.js';
import { HookedModel } from '../src/models/model.js';
import { rejectsWith, tmpDir } from './helpers.js';

/**
 * The ablation kinds' rules (METHOD.md "Interventions"): resample sources that share the
 * prompt's answer are left out of the seeded draw unless allowed; noise goes to the subject's
 * tokens with 3 × the std of the dataset's subject-token embeddings; mean needs a pool.
 */
const cli = path.join(packageRoot, 'dist', 'src', 'cli', 'main.js');
let modelP: Promise<HookedModel> | undefined;
const stories = () => (modelP ??= HookedModel.load(defaultModelDir, { threads: 1 }));

async function storyPrompts(n: number): Promise<number[][]> {
  const model = await stories();
  return (await loadDataset(storiesRecallPath)).records.slice(0, n).map((r) => model.encode(r.prompt));
}

test('the registry: every kind once, what S means, the CLI kinds', () => {
  for (const [name, k] of Object.entries(ABLATIONS)) assert.equal(k.name, name);
  assert.deepEqual(CLI_KINDS, ['zero', 'mean', 'noise', 'resample']);
  assert.equal(samplesOf('resample', 7), 7);
  assert.equal(samplesOf('noise', undefined), 15);
  assert.equal(samplesOf('resample', 7, [[1, 2], [0, 2], [0, 1]]), 2);
  for (const k of ['zero', 'mean', 'custom'] as const) assert.equal(samplesOf(k, 7), 1);
  assert.throws(() => ablationKind('delete'), /unknown ablation kind 'delete'; use zero, mean, noise, resample, custom/);
  assert.deepEqual(ABLATIONS.resample.rules({}), { same_answer_sources: 'excluded' });
  assert.deepEqual(ABLATIONS.resample.rules({ allowSameAnswer: true }), { same_answer_sources: 'allowed' });
  assert.deepEqual(ABLATIONS.resample.rules({ sourcesGiven: true }), { same_answer_sources: 'as given' });
  assert.match(ABLATIONS.noise.rules({ subjects: true }).noise, /^subject tokens/);
  assert.match(ABLATIONS.noise.rules({ subjects: false }).noise, /^all positions/);
});

test('resample: sources sharing the clean token are excluded, reproducibly; allowed, the draw is the plain seeded one', async () => {
  const model = await stories();
  const prompts = await storyPrompts(16);
  const tokens = (await model.forward(prompts)).prompts.map((a) => a.token);
  assert.ok(new Set(tokens).size < tokens.length, 'the test needs prompts that share a clean token');
  const opts = { kind: 'resample' as const, targets: ['attn.1'], samples: 3, seed: 5 };
  const sourcesOf = (rs: Awaited<ReturnType<typeof analyze>>) => rs.map((r) => r.ablations['attn.1'].patches.map((p) => p.source!));

  const excluded = sourcesOf(await analyze(model, prompts, opts));
  excluded.forEach((list, n) => {
    assert.equal(new Set(list).size, 3);
    for (const j of list) {
      assert.notEqual(j, n);
      assert.notEqual(tokens[j], tokens[n], `prompt ${n}: source ${j} shares its clean token`);
    }
  });
  assert.deepEqual(sourcesOf(await analyze(model, prompts, opts)), excluded, 'the same seed draws the same sources');

  // Allowed: the seeded draw over every other prompt; some of those share the answer.
  const allowed = sourcesOf(await analyze(model, prompts, { ...opts, allowSameAnswer: true }));
  const plain = prompts.map((_, n) => sampleFrom([...prompts.keys()].filter((j) => j !== n), 3, mulberry32(seedOf(5, n, 1))));
  assert.deepEqual(allowed, plain);
  assert.ok(allowed.some((list, n) => list.some((j) => tokens[j] === tokens[n])));

  // Explicit lists are used as given, same answer or not.
  const given = prompts.map((_, n) => [(n + 1) % 16, (n + 2) % 16, (n + 3) % 16]);
  assert.deepEqual(sourcesOf(await analyze(model, prompts, { ...opts, sources: given })), given);

  // Too few sources with another answer: a clear error naming the way out.
  const lily = prompts.filter((_, n) => tokens[n] === tokens[0]).slice(0, 4);
  await rejectsWith(analyze(model, lily, { ...opts, samples: 2 }), /prompt 0 has only 0 source prompts whose clean token differs from its own; .*--allow-same-answer/);
});

test('sweep: the same-answer rule is recorded in run_config, and a resume with another rule is refused', async () => {
  const model = await stories();
  const out = path.join(tmpDir(), 'r.duckdb');
  const base = { model, modelName: 'stories260k', dataset: storiesRecallPath, ablation: 'resample' as const, samples: 2, limit: 16, out };
  await runSweep(base);
  const store = await ResultsStore.openReadOnly(out);
  try {
    assert.equal(store.config.options?.same_answer_sources, 'excluded');
    const shared = await store.query(`SELECT count(*)::INTEGER AS n FROM sources s JOIN prompts a USING (prompt_idx)
      JOIN prompts b ON b.prompt_idx = s.source WHERE a.token = b.token`);
    assert.equal(shared[0].n, 0);
    const all = await store.query('SELECT count(*)::INTEGER AS n FROM sources');
    assert.ok((all[0].n as number) > 0);
  } finally {
    await store.close();
  }
  await rejectsWith(runSweep({ ...base, allowSameAnswer: true }), /made with same_answer_sources=excluded, this run asks for allowed/);
});

test('subjectPositions: the tokens overlapping the subject, as ROME finds them', () => {
  const toks = ['<s>', 'V', 'inson', ' Mass', 'if', ' is', ' in'];
  assert.deepEqual(subjectPositions(toks, 'Vinson Massif'), [1, 2, 3, 4]);
  assert.deepEqual(subjectPositions(toks, 'son Ma'), [2, 3]);
  assert.deepEqual(subjectPositions(['A', ' cat', ' and', ' a', ' cat'], 'cat'), [1]);
  assert.throws(() => subjectPositions(toks, 'Everest', 'record 7'), /record 7: its subject "Everest" does not occur in the prompt's tokens/);
});

test('noise: the std is 3 × the std of the dataset\'s embeddings at the noised positions', async () => {
  const model = await stories();
  const prompts = await storyPrompts(5);
  const positions = prompts.map((p, n) => [n % p.length, p.length - 1]);
  // Independently: each prompt alone, its embeddings (what enters the first block) at those positions.
  const values: number[] = [];
  for (const [n, p] of prompts.entries()) {
    const e = (await model.forward([p], { allPositions: true })).prompts[0].positions!.get('embed')!;
    const d = model.spec.dModel;
    for (const t of positions[n]) for (let j = 0; j < d; j++) values.push(e[t * d + j]);
  }
  const mean = values.reduce((s, v) => s + v, 0) / values.length;
  const sd = Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / (values.length - 1));
  const got = await noiseStd(model, prompts, positions, 2);
  assert.ok(Math.abs(got - NOISE_SCALE * sd) < 1e-6 * sd, `${got} vs ${NOISE_SCALE * sd}`);
  const all = await noiseStd(model, prompts);
  assert.notEqual(all, got);
});

test('noise: only the subject positions get noise, and each patch is that noisy run', async () => {
  const model = await stories();
  const prompts = await storyPrompts(3);
  const d = model.spec.dModel;
  const positions = prompts.map((p) => [1, 2, p.length - 2]);
  const std = 0.7;
  const results = await analyze(model, prompts, { kind: 'noise', targets: ['attn.1', 'embed'], samples: 2, seed: 3, noisePositions: positions, noiseStd: std });
  const readout = new Readout(model);
  for (const [n, p] of prompts.entries()) {
    const clean = (await model.forward([p])).prompts[0];
    const q = readout.vector(clean.token);
    for (let s = 0; s < 2; s++) {
      // The noise, drawn as ROME's rule says: std × N(0, 1) at positions 1, 2 and T−2 only.
      const g = gaussian(mulberry32(seedOf(3, n, 2, s)));
      const add = new Float32Array(p.length * d);
      for (const t of positions[n]) for (let j = 0; j < d; j++) add[t * d + j] = std * g();
      const noisy = (await model.forward([p], { embedAdd: [add] })).prompts[0];
      const patchDe = (c: Float32Array) => c.reduce((acc, v, j) => acc + v * q[j], 0) / clean.sigma;
      const a = results[n].ablations['attn.1'].patches[s];
      const want = patchDe(noisy.components.get('attn.1')!) - results[n].de['attn.1'];
      assert.ok(Math.abs(a.dde_self - want) < 1e-4, `prompt ${n} sample ${s}: ΔDE ${a.dde_self} vs ${want}`);
      assert.notEqual(a.te, 0);
    }
    // The last position is not a subject position: its embedding, and so every effect of the embed target, is untouched.
    const e = results[n].ablations.embed;
    for (const f of ['te', 'dde_self', 'ce', 'ne'] as const) assert.ok(Math.abs(e[f]) < 1e-5, `prompt ${n} embed ${f}: ${e[f]}`);
    assert.equal(e.dde_self, 0, `prompt ${n}: the embed patch is the clean embedding`);
  }
});

test('noisePositionsOf: all prompts with a subject, or none; a mix is refused', async () => {
  const model = await stories();
  const ids = model.encode('Once upon a time, Lily met Ben');
  const pieces = ids.map((t) => model.tokenizer!.tokenText(t));
  const got = noisePositionsOf(model, [ids], ['Lily'], (i) => `entry ${i}`)!;
  assert.ok(got[0].length > 0);
  assert.equal(got[0].map((t) => pieces[t]).join('').trim(), 'Lily');
  assert.equal(noisePositionsOf(model, [ids, ids], [undefined, undefined], (i) => `entry ${i}`), undefined);
  assert.throws(() => noisePositionsOf(model, [ids, ids], ['Lily', undefined], (i) => `entry ${i}`), /entry 1 has no subject while 1 of 2 prompts have one/);
});

test('sweep with noise: subject tokens when the dataset gives subjects, the rule recorded', async () => {
  const model = await stories();
  const dir = tmpDir();
  const file = path.join(dir, 'subj.jsonl');
  const rows = (await loadDataset(storiesRecallPath)).records.slice(0, 6).map((r) => ({ prompt: r.prompt, answer: r.answer, subject: r.answer }));
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n'));
  const out = path.join(dir, 'noise.duckdb');
  await runSweep({ model, modelName: 'stories260k', dataset: file, ablation: 'noise', samples: 2, out, filter: false });
  const store = await ResultsStore.openReadOnly(out);
  try {
    assert.match(String(store.config.options?.noise), /^subject tokens; std 3 x the std of the embeddings of all subject tokens/);
    const te = await store.query(`SELECT count(*)::INTEGER AS n FROM effects WHERE te <> 0`);
    assert.ok((te[0].n as number) > 0);
  } finally {
    await store.close();
  }
  fs.writeFileSync(file, [...rows.slice(0, 3), { prompt: rows[3].prompt }].map((r) => JSON.stringify(r)).join('\n'));
  await rejectsWith(runSweep({ model, modelName: 'stories260k', dataset: file, ablation: 'noise', samples: 2, out: path.join(dir, 'mixed.duckdb'), filter: false }),
    /subj\.jsonl record 3 has no subject|dataset record 3 has no subject while 3 of 4 prompts have one/);
});

test('mean ablation needs a pool: an empty one is refused, never the prompt itself', async () => {
  const model = await stories();
  const ids = model.encode('Once upon a time');
  await rejectsWith(profilePrompt(model, ids, { kind: 'mean', targets: ['attn.1'], pool: [] }), /mean ablation needs source prompts, and none is usable/);
  await rejectsWith(analyze(model, [ids], { kind: 'mean', targets: ['attn.1'], pool: new CleanBank(model, []) }), /mean ablation needs prompts to average over, and the pool is empty/);

  // The CLI: a --sources dataset whose prompts are all too long for the context.
  const dir = tmpDir();
  const file = path.join(dir, 'long.jsonl');
  fs.writeFileSync(file, JSON.stringify({ prompt: 'Once upon a time '.repeat(200) }) + '\n');
  const r = spawnSync(process.execPath, [cli, 'profile', '--text', 'Once upon a time', '--ablate', 'attn.1', '--ablation', 'mean', '--sources', file, '--out', dir], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /^hydra: error: mean ablation needs source prompts, and none is usable/);
});

test('hydra effects --json records the rule it applied', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'prompts.json');
  fs.writeFileSync(file, JSON.stringify([
    { text: 'Once upon a time, Lily met Ben. Ben said hi to', subject: 'Lily' },
    { text: 'One day, Tom saw a cat. The cat ran to', subject: 'Tom' },
  ]));
  const run = (...args: string[]) => {
    const r = spawnSync(process.execPath, [cli, 'effects', '--prompts', file, '--targets', 'attn.1', '--samples', '1', '--json', ...args], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  assert.match(run('--ablation', 'noise').rules.noise, /^subject tokens/);
  assert.deepEqual(run('--ablation', 'resample', '--allow-same-answer').rules, { same_answer_sources: 'allowed' });
  assert.deepEqual(run('--ablation', 'zero').rules, {});
});
