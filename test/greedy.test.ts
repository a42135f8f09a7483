import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { HookedModel } from '../src/models/model.js';
import { greedyDecode } from '../src/models/generate.js';
import { fixtureModelDir, fixturesDir, maxAbsDiff } from './helpers.js';

interface Reference {
  greedy: { prompt_ids: number[]; steps: number; ids: number[] };
  logits: { prefix_ids: number[]; last_position_logits: number[]; argmax: number }[];
  encodings: { text: string; ids_with_bos: number[] }[];
}

const ref: Reference = JSON.parse(fs.readFileSync(path.join(fixturesDir, 'stories260k_upstream_reference_outputs.json'), 'utf8'));

test('greedy decoding from BOS reproduces the upstream 200 tokens (stories260k)', async () => {
  const model = await HookedModel.load(fixtureModelDir('stories260k'), { threads: 1 });
  assert.deepEqual(ref.greedy.prompt_ids, [1]);
  assert.equal(ref.greedy.ids.length, ref.greedy.steps + 1);
  const ids = await greedyDecode(model, ref.greedy.prompt_ids, ref.greedy.steps);
  const first = ids.findIndex((t, i) => t !== ref.greedy.ids[i]);
  assert.deepEqual(ids, ref.greedy.ids, `first difference at position ${first}`);
  if (model.tokenizer) assert.equal(model.tokenizer.decode(ids.slice(0, 5)), 'Once upon a time');
});

test('last-position logits match the float64 reference within 1e-4 (stories260k)', async () => {
  const model = await HookedModel.load(fixtureModelDir('stories260k'), { threads: 1 });
  assert.equal(ref.logits.length, 4);
  const { prompts } = await model.forward(ref.logits.map((c) => c.prefix_ids));
  ref.logits.forEach((c, n) => {
    const diff = maxAbsDiff(prompts[n].logits, c.last_position_logits);
    assert.ok(diff < 1e-4, `prefix ${n} (${c.prefix_ids.length} tokens): logits differ by ${diff}`);
    assert.equal(prompts[n].token, c.argmax);
  });
});

test('greedyDecode rejects a run past the context and bad step counts', async () => {
  const model = await HookedModel.load(fixtureModelDir('stories260k'), { threads: 1 });
  await assert.rejects(greedyDecode(model, [1], model.spec.nCtx), /context/);
  await assert.rejects(greedyDecode(model, [1], -1), /steps/);
  assert.deepEqual(await greedyDecode(model, [1, 403], 0), [1, 403]);
});
