import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createProgress, waiting } from '../src/cli/progress.js';
import { withFlags } from '../src/cli/util.js';

/** A terminal that records what is written to it. */
function fakeTty(out: string[]) {
  return { isTTY: true, columns: 200, write: (s: string) => (out.push(s), true) } as unknown as NodeJS.WritableStream & { isTTY: boolean };
}

test('progress bar on a terminal: our ETA, "?" before any rate, never cli-progress\'s NFs/INF', () => {
  const out: string[] = [];
  let t = 0;
  const bar = createProgress(20, 'sweep', { stream: fakeTty(out), now: () => t });
  t += 4000;
  bar.tick(8);
  bar.stop();
  const text = out.join('');
  assert.match(text, /sweep \[[^\]]*\] 0\/20 prompts \| 0% \| ETA \?/);
  assert.match(text, /8\/20 prompts \| 40% \| ETA 6s/);
  assert.doesNotMatch(text, /NF|INF|NULL/);
});

test('waiting: silent when the work is quick, else the label and how long it took', async () => {
  const quick: string[] = [];
  assert.equal(await waiting('loading', Promise.resolve(7), { stream: { isTTY: false, write: (s: string) => (quick.push(s), true) } as unknown as NodeJS.WritableStream }), 7);
  assert.deepEqual(quick, []);
  const slow: string[] = [];
  const v = await waiting('loading model m', () => new Promise((r) => setTimeout(() => r('x'), 150)), {
    afterMs: 20,
    stream: { isTTY: false, write: (s: string) => (slow.push(s), true) } as unknown as NodeJS.WritableStream,
  });
  assert.equal(v, 'x');
  assert.equal(slow[0], 'hydra: loading model m...\n');
  assert.match(slow[1], /^hydra: loading model m: done in 0\.\ds\n$/);
  assert.equal(slow.length, 2);
  // A failure still ends the notice, and is passed on.
  const failed: string[] = [];
  await assert.rejects(waiting('x', () => new Promise((_, j) => setTimeout(() => j(new Error('boom')), 60)), { afterMs: 10, stream: { isTTY: false, write: (s: string) => (failed.push(s), true) } as unknown as NodeJS.WritableStream }), /boom/);
  assert.equal(failed.length, 2);
});

test('withFlags: library parameters in backticks become the CLI\'s flags', () => {
  assert.equal(withFlags('lower `samples` or add prompts'), 'lower --samples or add prompts');
  assert.equal(withFlags('weights held as `weightsDtype=bfloat16` need half'), 'weights held as --weights-dtype bfloat16 need half');
  assert.equal(withFlags("pass `answerColumn=target` or rename the field"), 'pass --answer-column target or rename the field');
  assert.equal(withFlags('or `filter=false` to keep them all'), 'or --no-filter to keep them all');
  assert.equal(withFlags('use another `out`; `unknownParam` stays'), 'use another --out; `unknownParam` stays');
});
