import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ResultsStore } from '../src/experiments/store.js';
import { packageRoot, storiesRecallPath } from '../src/io/paths.js';
import { tmpDir } from './helpers.js';

const cli = path.join(packageRoot, 'dist', 'src', 'cli', 'main.js');
const ARGS = ['sweep', '--dataset', storiesRecallPath, '--limit', '24', '--samples', '6', '--heads', '--verbose'];

function hydra(args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function tables(db: string) {
  const store = await ResultsStore.openReadOnly(db);
  try {
    const results = await store.readResults();
    const dropped = await store.readDropped();
    const done = [...(await store.donePrompts())].sort((a, b) => a - b);
    return { results, dropped, done };
  } finally {
    await store.close();
  }
}

/** Run the sweep and SIGKILL it as soon as it has stored `after` prompts. */
function runAndKill(out: string, after: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...ARGS, '--out', out], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stored = 0;
    let buf = '';
    child.stderr.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) if (/stored prompt/.test(l) && ++stored === after) child.kill('SIGKILL');
    });
    child.on('error', reject);
    child.on('exit', () => resolve(stored));
  });
}

test('a sweep killed mid-way resumes to results identical to an uninterrupted run', async () => {
  const dir = tmpDir();
  const whole = path.join(dir, 'whole.duckdb');
  const resumed = path.join(dir, 'resumed.duckdb');
  const a = hydra([...ARGS, '--out', whole]);
  assert.equal(a.code, 0, a.stderr);

  const storedBeforeKill = await runAndKill(resumed, 3);
  assert.ok(storedBeforeKill >= 3);
  const partial = await tables(resumed);
  const full = await tables(whole);
  assert.ok(partial.done.length < full.done.length, `the kill came too late: ${partial.done.length} of ${full.done.length} prompts done`);

  const b = hydra([...ARGS, '--out', resumed]);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stderr, /already stored/);
  const again = await tables(resumed);
  assert.deepEqual(again.done, full.done);
  assert.deepEqual(again.dropped, full.dropped);
  assert.deepEqual(again.results, full.results);
  // Nothing stored before the kill was recomputed: the rerun logged only the missing prompts.
  const recomputed = b.stderr.split('\n').filter((l) => /stored prompt/.test(l)).map((l) => Number(/stored prompt (\d+)/.exec(l)![1]));
  for (const p of partial.done) assert.ok(!recomputed.includes(p), `prompt ${p} was recomputed`);
});

test('shards merged equal one whole run, number for number', async () => {
  const dir = tmpDir();
  const whole = path.join(dir, 'whole.duckdb');
  const merged = path.join(dir, 'merged.duckdb');
  const base = ['sweep', '--dataset', storiesRecallPath, '--limit', '20', '--samples', '4'];
  const first = hydra([...base, '--out', whole]);
  assert.equal(first.code, 0, first.stderr);
  // Progress counts prompts (the sweep reports whole batches): its last line is n/n.
  const computed = Number(/(\d+) prompts computed/.exec(first.stdout)?.[1]);
  const lines = first.stderr.trim().split('\n').filter((l) => l.startsWith('sweep: '));
  assert.match(lines.at(-1) ?? '', new RegExp(`^sweep: ${computed}/${computed} prompts \\(100\\.0%\\)`), first.stderr);
  for (const s of ['0/2', '1/2']) {
    const r = hydra([...base, '--shard', s, '--out', path.join(dir, `s${s[0]}.duckdb`)]);
    assert.equal(r.code, 0, r.stderr);
  }
  const m = hydra(['merge', '--out', merged, path.join(dir, 's0.duckdb'), path.join(dir, 's1.duckdb')]);
  assert.equal(m.code, 0, m.stderr);
  const a = await tables(whole);
  const b = await tables(merged);
  assert.ok(a.results.length >= 16, `only ${a.results.length} prompts kept`);
  assert.deepEqual(b.done, a.done);
  assert.deepEqual(b.dropped, a.dropped);
  assert.deepEqual(b.results, a.results);
});

test('sweep: bad input gets a one-line error and stored results survive', async () => {
  const dir = tmpDir();
  const db = path.join(dir, 'r.duckdb');
  const ok = hydra(['sweep', '--dataset', storiesRecallPath, '--limit', '8', '--samples', '2', '--out', db]);
  assert.equal(ok.code, 0, ok.stderr);
  const before = await tables(db);
  const malformed = path.join(dir, 'bad.jsonl');
  fs.writeFileSync(malformed, '{"prompt": "Once upon a time", "answer": "there"}\n{"answer": "x"}\n');
  const emptyAfterFilter = path.join(dir, 'wrong.jsonl');
  fs.writeFileSync(emptyAfterFilter, '{"prompt": "Once upon a time", "answer": "zebra"}\n');
  const cases: [string[], RegExp][] = [
    [['--dataset', malformed, '--out', path.join(dir, 'x.duckdb')], /bad\.jsonl line 2/],
    [['--dataset', emptyAfterFilter, '--out', path.join(dir, 'y.duckdb')], /no prompts left after filtering/],
    [['--dataset', storiesRecallPath, '--limit', '8', '--samples', '3', '--out', db], /was made with samples=2/],
    [['--dataset', storiesRecallPath, '--shard', '3/2', '--out', path.join(dir, 'z.duckdb')], /shard spec '3\/2'/],
    [['--dataset', storiesRecallPath, '--out', '/proc/hydra/results.duckdb'], /--out/],
    [['--dataset', path.join(dir, 'nope.jsonl'), '--out', path.join(dir, 'w.duckdb')], /not found/],
  ];
  for (const [args, re] of cases) {
    const r = hydra(['sweep', ...args]);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
    const lines = r.stderr.trim().split("\n").filter((l) => !/^hydra: (kept|checking|\d+ prompts|  e\.g\. )/.test(l));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^hydra: error: /);
    assert.match(lines[0], re);
  }
  assert.deepEqual(await tables(db), before);
});
