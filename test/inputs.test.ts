import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { answerToken } from '../src/experiments/filter.js';
import { ResultsStore } from '../src/experiments/store.js';
import { loadDataset } from '../src/io/datasets.js';
import { defaultModelDir, gpt2TokenizerDir, packageRoot, storiesRecallPath } from '../src/io/paths.js';
import { loadTokenizer } from '../src/io/tokenizer.js';
import { rejectsWith, tmpDir } from './helpers.js';

/** The same prompt inputs in every command, the answer rule, sweeps that grow, and --json everywhere. */
const cli = path.join(packageRoot, 'dist', 'src', 'cli', 'main.js');

function hydra(args: string[], cwd = packageRoot) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', cwd, env: { ...process.env, HF_HUB_OFFLINE: '1' }, maxBuffer: 256 << 20 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** stdout of a successful --json run, parsed as one JSON document. */
function json(args: string[]) {
  const r = hydra([...args, '--json']);
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const PROMPTS = [
  'Once upon a time, there was a little girl named Lily. She was very happy. Her mom said, "Hi,',
  'One day, a little girl named Lily went to the park. She saw a big tree. "Wow!" said',
  'Once upon a time, there was a little boy named Tim. He liked to play.',
];

test('answers with or without a leading space mean the same token (GPT-2 and sentencepiece)', async () => {
  const gpt2 = await loadTokenizer(gpt2TokenizerDir);
  const paris = gpt2.encode(' Paris');
  assert.equal(paris.length, 1);
  for (const a of [' Paris', 'Paris', '  Paris']) assert.equal(answerToken(gpt2, 'The Eiffel Tower is in', a), paris[0], JSON.stringify(a));
  const stories = await loadTokenizer(defaultModelDir);
  const lily = answerToken(stories, PROMPTS[0], 'Lily');
  assert.equal(stories.tokenText(lily), ' Lily');
  assert.equal(answerToken(stories, PROMPTS[0], ' Lily'), lily);
});

test('bundled datasets by name; ids, subject and group in every format; answer-like columns are an error naming answerColumn', async () => {
  const stories = await loadDataset('stories_recall');
  assert.equal(stories.name, 'stories_recall');
  assert.equal(stories.source, storiesRecallPath);
  assert.equal(stories.records[0].prompt, PROMPTS[0]);
  assert.equal(stories.records[0].answer, 'Lily');

  const dir = tmpDir();
  const want = [
    { id: '0', prompt: 'Hello there', answer: 'friend', subject: 'Hello', group: 'g1' },
    { id: '1', prompt: '', ids: [1, 403, 407], group: 'g2' },
  ];
  fs.writeFileSync(path.join(dir, 'p.json'), JSON.stringify([{ prompt: 'Hello there', answer: 'friend', subject: 'Hello', group: 'g1' }, { ids: [1, 403, 407], group: 'g2' }]));
  fs.writeFileSync(path.join(dir, 'p.jsonl'), '{"prompt": "Hello there", "answer": "friend", "subject": "Hello", "group": "g1"}\n{"ids": [1, 403, 407], "group": "g2"}\n');
  fs.writeFileSync(path.join(dir, 'p.csv'), 'prompt,ids,answer,subject,group\nHello there,,friend,Hello,g1\n,1 403 407,,,g2\n');
  for (const f of ['p.json', 'p.jsonl', 'p.csv']) assert.deepEqual((await loadDataset(path.join(dir, f))).records, want, f);

  fs.writeFileSync(path.join(dir, 't.jsonl'), '{"prompt": "The Eiffel Tower is in", "target": " Paris"}\n');
  await rejectsWith(loadDataset(path.join(dir, 't.jsonl')), /t\.jsonl line 1: the field 'target' looks like an answer.*`answerColumn=target`/);
  const t = await loadDataset(path.join(dir, 't.jsonl'), { answerColumn: 'target' });
  assert.equal(t.records[0].answer, ' Paris');
  fs.writeFileSync(path.join(dir, 'l.csv'), 'prompt,label\nThe Eiffel Tower is in,Paris\n');
  await rejectsWith(loadDataset(path.join(dir, 'l.csv')), /the field 'label' looks like an answer/);
});

test('effects reads the same prompts from .json ids, .json text, .jsonl, .csv and a bundled name, with the same numbers', () => {
  const dir = tmpDir();
  const files = {
    'text.json': JSON.stringify(PROMPTS.map((text) => ({ text }))),
    'prompt.jsonl': PROMPTS.map((prompt) => JSON.stringify({ prompt, answer: ' Lily' })).join('\n'),
    'prompt.csv': 'prompt,answer,group\n' + PROMPTS.map((p) => `"${p.replace(/"/g, '""')}",Lily,a`).join('\n'),
  };
  for (const [f, body] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), body);
  const base = ['effects', '--targets', 'attn.1,mlp.3', '--ablation', 'resample', '--samples', '2'];
  const ref = json([...base, '--prompts', path.join(dir, 'text.json')]);
  assert.equal(ref.prompts.length, 3);
  fs.writeFileSync(path.join(dir, 'ids.json'), JSON.stringify(ref.prompts.map((p: { ids: number[] }) => ({ ids: p.ids }))));
  const strip = (o: { prompts: { text?: string }[] }) => o.prompts.map(({ text: _t, ...rest }) => rest);
  for (const f of ['ids.json', 'prompt.jsonl', 'prompt.csv']) {
    const out = json([...base, '--prompts', path.join(dir, f)]);
    assert.deepEqual(strip(out), strip(ref), f);
  }
  const named = json(['effects', '--targets', 'attn.0', '--ablation', 'zero', '--prompts', 'stories_recall']);
  assert.equal(named.prompts.length, 64);
  assert.equal(named.prompts[0].text, PROMPTS[0]);

  // forward and profile take one record of the same files.
  const fwd = json(['forward', '--prompts', path.join(dir, 'prompt.csv'), '--index', '1']);
  assert.deepEqual(fwd.tokens, ref.prompts[1].ids);
  const prof = json(['profile', '--prompts', path.join(dir, 'prompt.jsonl'), '--index', '2', '--ablate', 'mlp.3', '--ablation', 'zero', '--out', path.join(dir, 'prof')]);
  assert.deepEqual(prof.prompt.ids, ref.prompts[2].ids);
  assert.equal(prof.prompt.de['mlp.3'], ref.prompts[2].de['mlp.3']);

  // An answer-like column is one line that names --answer-column; with it the file reads.
  fs.writeFileSync(path.join(dir, 'target.jsonl'), PROMPTS.map((prompt) => JSON.stringify({ prompt, target: 'Lily' })).join('\n'));
  const bad = hydra([...base, '--prompts', path.join(dir, 'target.jsonl')]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^hydra: error: target\.jsonl line 1: the field 'target' looks like an answer, but answers are read from 'answer'; pass --answer-column target or rename the field\n$/);
  assert.deepEqual(strip(json([...base, '--prompts', path.join(dir, 'target.jsonl'), '--answer-column', 'target'])), strip(ref));
});

async function rows(db: string, table: string, where = ''): Promise<string[]> {
  const store = await ResultsStore.openReadOnly(db);
  try {
    const rs = await store.query(`SELECT * FROM ${table} ${where} ORDER BY rowid`);
    return rs.map((r) => JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? String(v) : v)));
  } finally {
    await store.close();
  }
}

const TABLES = ['prompts', 'clean_de', 'effects', 'patches', 'de_prime_values', 'sources', 'done'];

test('a sweep that keeps no prompt leaves no database, and a larger --limit extends a sweep with only the new prompts', async () => {
  const dir = tmpDir();
  const db = path.join(dir, 'r.duckdb');
  // stories260k knows no facts: nothing of known_1000 is kept, and no file is left behind.
  const none = hydra(['sweep', '--dataset', 'known_1000', '--limit', '6', '--out', db]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /hydra: kept 0 of 6 prompts; dropped 6: 6 wrong first token\n/);
  assert.match(none.stderr, /hydra: error: no prompts left after filtering 6 prompts of known_1000 \(6 wrong first token\).*--no-filter/);
  assert.ok(!fs.existsSync(db), 'a database was left behind');

  const base = ['sweep', '--dataset', 'stories_recall', '--samples', '3', '--ablation', 'resample'];
  const small = json([...base, '--limit', '12', '--out', db]);
  assert.ok(small.kept >= 9 && small.computed === small.kept, JSON.stringify(small));
  assert.equal(small.dropped, 12 - small.kept);
  assert.deepEqual(Object.values(small.dropReasons).reduce((a: number, b) => a + (b as number), 0), small.dropped);
  const before = Object.fromEntries(await Promise.all(TABLES.map(async (t) => [t, await rows(db, t)])));

  const grown = json([...base, '--limit', '30', '--out', db]);
  assert.equal(grown.alreadyStored, small.kept);
  assert.equal(grown.computed, grown.kept - small.kept);
  for (const t of TABLES) {
    const after = await rows(db, t, 'WHERE prompt_idx < 12');
    assert.deepEqual(after, before[t], `${t}: rows of the first 12 prompts changed`);
  }
  const store = await ResultsStore.openReadOnly(db);
  assert.equal(store.config.limit, 30);
  await store.close();

  // The new prompts are those a fresh run with --limit 30 computes, number for number.
  const fresh = path.join(dir, 'fresh.duckdb');
  json([...base, '--limit', '30', '--out', fresh]);
  for (const t of TABLES.filter((t) => t !== 'done')) {
    assert.deepEqual(await rows(db, t, 'WHERE prompt_idx >= 12'), await rows(fresh, t, 'WHERE prompt_idx >= 12'), t);
  }

  // A mean patch averages every kept prompt, so a mean sweep cannot grow.
  const mean = path.join(dir, 'mean.duckdb');
  json(['sweep', '--dataset', 'stories_recall', '--ablation', 'mean', '--limit', '10', '--out', mean]);
  const refused = hydra(['sweep', '--dataset', 'stories_recall', '--ablation', 'mean', '--limit', '20', '--out', mean]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /was made with limit=10, this run asks for 20/);
});

test('--json on every command prints one JSON document on stdout (progress stays on stderr)', async () => {
  const dir = tmpDir();
  const db = path.join(dir, 'a.duckdb');
  const fwd = json(['forward', '--text', 'Once upon a time']);
  assert.equal(fwd.tokens.length, fwd.token_texts.length);
  const fx = json(['effects', '--prompts', 'stories_recall', '--targets', 'mlp.0', '--ablation', 'zero']);
  assert.equal(fx.prompts.length, 64);
  const sw = json(['sweep', '--dataset', 'stories_recall', '--limit', '10', '--samples', '2', '--shard', '0/2', '--out', db]);
  assert.equal(sw.out, db);
  const other = path.join(dir, 'b.duckdb');
  json(['sweep', '--dataset', 'stories_recall', '--limit', '10', '--samples', '2', '--shard', '1/2', '--out', other]);
  const merged = path.join(dir, 'm.duckdb');
  assert.deepEqual(json(['merge', '--out', merged, db, other]), { out: merged, merged: [db, other] });
  const ex = json(['export', '--db', merged, '--out', path.join(dir, 'pq')]);
  assert.ok(ex.files.every((f: string) => fs.existsSync(f)) && ex.files.length === 8);
  const rep = json(['report', '--db', merged, '--out', path.join(dir, 'rep'), '--bootstrap', '20']);
  assert.ok(fs.existsSync(rep.report));
  const prof = json(['profile', '--text', 'Once upon a time', '--ablate', 'attn.2', '--samples', '3', '--out', path.join(dir, 'prof')]);
  assert.equal(prof.prompt.ablations['attn.2'].patches.length, 3);
  assert.ok(fs.existsSync(prof.figure.svg));
  const demo = json(['demo', '--out', path.join(dir, 'demo'), '--samples', '3']);
  assert.equal(demo.kept, 58);

  const serve = spawn(process.execPath, [cli, 'serve', '--port', '0', '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let buf = '';
      serve.stdout.on('data', (d) => {
        buf += d;
        if (buf.includes('\n')) resolve(buf.split('\n')[0]);
      });
      serve.once('exit', (code) => reject(new Error(`serve exited ${code}`)));
    });
    const { url } = JSON.parse(line);
    assert.equal((await fetch(new URL('/api/info', url))).status, 200);
  } finally {
    serve.kill('SIGTERM');
  }
});
