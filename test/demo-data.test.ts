import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { answerToken, filterKnown, type ForwardLike } from '../src/experiments/filter.js';
import { defaultModelDir, gpt2TokenizerDir, storiesRecallPath } from '../src/io/paths.js';
import { loadTokenizer } from '../src/io/tokenizer.js';
import { HookedModel } from '../src/models/model.js';

/**
 * The bundled demo prompts (assets/data/stories_recall) for the bundled model stories260k:
 * the model gets at least 75% right under the sweep's rule, and no answer token covers more
 * than 30% of the prompts, so a constant guess cannot score well.
 */

interface Row {
  prompt: string;
  answer: string;
  group: string;
}

function loadRows(): Row[] {
  const lines = fs.readFileSync(storiesRecallPath, 'utf8').split('\n').filter((l) => l.trim() !== '');
  return lines.map((l, i) => {
    const r = JSON.parse(l) as Partial<Row>;
    assert.equal(typeof r.prompt, 'string', `line ${i + 1}: prompt`);
    assert.equal(typeof r.answer, 'string', `line ${i + 1}: answer`);
    assert.deepEqual(Object.keys(r).sort(), ['answer', 'group', 'prompt'], `line ${i + 1}: keys`);
    assert.match(r.group!, /^[a-z-]+$/, `line ${i + 1}: group is a template id`);
    return r as Row;
  });
}

test('stories_recall: 40-64 distinct prompts, each with an answer', () => {
  const rows = loadRows();
  assert.ok(rows.length >= 40 && rows.length <= 64, `${rows.length} prompts`);
  assert.equal(new Set(rows.map((r) => r.prompt)).size, rows.length, 'duplicate prompts');
  for (const r of rows) {
    assert.ok(r.prompt.trim() !== '' && r.answer.trim() === r.answer && r.answer !== '', JSON.stringify(r));
    assert.ok(!r.prompt.endsWith(' '), `prompt ends with a space: ${JSON.stringify(r.prompt)}`);
    // The answer appears earlier in the prompt: it is recalled from the context.
    assert.ok(r.prompt.includes(r.answer), `answer ${r.answer} not in its prompt`);
  }
});

test('stories_recall: stories260k gets >= 75% right, no answer token > 30%', async () => {
  const rows = loadRows();
  const model = await HookedModel.load(defaultModelDir, { threads: 1 });
  const tok = model.tokenizer!;
  const res = await filterKnown(model, rows, 16);
  assert.equal(res.kept.length + res.dropped.length, rows.length);
  assert.equal(res.tokens.length, rows.length);
  const accuracy = res.kept.length / rows.length;
  assert.ok(accuracy >= 0.75, `accuracy ${accuracy.toFixed(3)}: ${res.dropped.map((d) => `#${d.index} ${d.reason}`).join('; ')}`);
  for (const d of res.dropped) assert.match(d.reason, /^model predicts '.*' not '.*'$/s);

  const answers = rows.map((r) => answerToken(model, r.prompt, r.answer));
  res.kept.forEach((i) => assert.equal(res.tokens[i], answers[i]));
  const counts = new Map<number, number>();
  for (const a of answers) counts.set(a, (counts.get(a) ?? 0) + 1);
  const [top, n] = [...counts].sort((a, b) => b[1] - a[1])[0];
  assert.ok(n / rows.length <= 0.3, `answer token '${tok.tokenText(top)}' is ${n} of ${rows.length}`);
  assert.ok(counts.size >= 8, `only ${counts.size} distinct answer tokens`);
  // No answer starts with a bare space token, and the model's own guesses vary too.
  for (const a of counts.keys()) assert.notEqual(tok.tokenText(a).trim(), '', 'an answer token is a lone space');
  const guesses = new Map<number, number>();
  for (const t of res.tokens) guesses.set(t, (guesses.get(t) ?? 0) + 1);
  assert.ok(Math.max(...guesses.values()) / rows.length <= 0.3, 'the model guesses one token for most prompts');
});

test('answerToken: GPT-2 " Paris" after "The Eiffel Tower is in"', async () => {
  const gpt2 = await loadTokenizer(gpt2TokenizerDir);
  assert.equal(gpt2.addsBos, false);
  const id = answerToken(gpt2, 'The Eiffel Tower is in', 'Paris');
  assert.equal(id, 6342);
  assert.equal(gpt2.tokenText(id), ' Paris');
  // Multi-token answers give their first token.
  assert.equal(gpt2.tokenText(answerToken(gpt2, 'The Eiffel Tower is in', 'Parisian suburbs')), ' Paris');
});

test('answerToken: stories260k (sentencepiece, BOS) gives the word token, not a lone space', async () => {
  const tok = await loadTokenizer(defaultModelDir);
  assert.equal(tok.addsBos, true);
  const prompt = 'Once upon a time, there was a little girl named Lily. She was very happy. Her mom said, "Hi,';
  assert.equal(tok.tokenText(answerToken(tok, prompt, 'Lily')), ' Lily');
  assert.equal(tok.tokenText(answerToken(tok, prompt, 'Sue')), ' S');
  assert.equal(tok.tokenText(answerToken(tok, 'She played with the', 'ball')), ' b');
});

test('answerToken: fallback when the prompt is not a prefix of prompt + answer', () => {
  // A toy tokenizer where "ab" + " c" merges across the boundary.
  const table: Record<string, number[]> = { ab: [1, 10], 'ab c': [1, 11, 12], ' c': [1, 7, 12], c: [1, 12], ' d': [1, 20], d: [1, 21], 'ab d': [1, 11, 22] };
  const enc = (text: string) => {
    const ids = table[text];
    if (!ids) throw new Error(`no entry for ${JSON.stringify(text)}`);
    return ids;
  };
  // " c" = lone space + encode("c"): the tokenizer prepends its own space, take encode("c")'s first token.
  assert.equal(answerToken({ encode: enc, addsBos: true }, 'ab', 'c'), 12);
  // Otherwise the first token of " d" without the BOS.
  assert.equal(answerToken({ encode: enc, addsBos: true }, 'ab', 'd'), 20);
  // Without addsBos, nothing is stripped.
  assert.equal(answerToken({ encode: enc }, 'ab', 'd'), 1);
  // The prefix property holding wins over the fallback.
  table['ab e'] = [1, 10, 30];
  assert.equal(answerToken({ encode: enc, addsBos: true }, 'ab', 'e'), 30);
});

test('filterKnown: batches, keeps correct prompts, explains the others', async () => {
  const vocab = ['<s>', ' the', ' Lily', ' Tom', 'x', 'y', 'z', 'w'];
  const enc = (text: string) => [0, ...text.split(/(?= )/).filter((w) => w !== '').map((w) => {
    const i = vocab.indexOf(w);
    if (i < 0) throw new Error(`unknown word ${w}`);
    return i;
  })];
  const batches: number[] = [];
  // The stand-in model predicts the token after the prompt's last token in this cycle.
  const next: Record<number, number> = { 4: 2, 5: 1, 6: 3, 7: 2 };
  const model: ForwardLike = {
    encode: enc,
    tokenizer: { addsBos: true, tokenText: (id: number) => vocab[id] },
    forward: async (prompts: number[][]) => {
      batches.push(prompts.length);
      return { prompts: prompts.map((p) => ({ token: next[p[p.length - 1]] })) };
    },
  };
  const recs = [
    { prompt: 'x', answer: 'Lily' },
    { prompt: 'y', answer: 'Lily' },
    { prompt: 'z' },
    { prompt: 'z', answer: 'Tom' },
    { prompt: 'w', answer: '  ' },
    { prompt: '', ids: [0, 7], answer: 'Lily' },
  ];
  const res = await filterKnown(model, recs, 2);
  assert.deepEqual(res.kept, [0, 3, 5]);
  assert.deepEqual(res.dropped, [
    { index: 1, reason: "model predicts ' the' not ' Lily'" },
    { index: 2, reason: 'no answer' },
    { index: 4, reason: 'no answer' },
  ]);
  assert.deepEqual(res.tokens, [2, 1, -1, 3, -1, 2]);
  assert.deepEqual(batches, [2, 2]);
  await assert.rejects(filterKnown(model, recs, 0));
});
