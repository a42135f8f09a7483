import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { encode, firstNonFinite } from '../src/io/matrix.js';
import { WeightStore, writeSafetensors } from '../src/io/safetensors.js';
import { HookedModel } from '../src/models/model.js';
import { fixtureModelDir, loadGolden, maxAbsDiff, rejectsWith, tmpDir } from './helpers.js';

/** A copy of a fixture model with every tensor stored as `dtype`. */
function asDtype(name: string, dtype: 'BF16' | 'F16'): string {
  const src = fixtureModelDir(name);
  const dir = tmpDir(`hydra-${dtype}-`);
  fs.copyFileSync(path.join(src, 'config.json'), path.join(dir, 'config.json'));
  const store = WeightStore.open(src);
  const tensors = Object.fromEntries(store.names().map((n) => [n, { shape: store.entry(n)!.shape, data: store.get(n, store.entry(n)!.shape) }]));
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, dtype);
  return dir;
}

function parameters(dir: string): number {
  const store = WeightStore.open(dir);
  return store.names().reduce((s, n) => s + store.entry(n)!.shape.reduce((a, b) => a * b, 1), 0);
}

for (const dtype of ['BF16', 'F16'] as const) {
  test(`a ${dtype} checkpoint is held at two bytes a parameter, and float32 on request gives the same numbers`, async () => {
    const dir = asDtype('tiny-llama-gqa', dtype);
    const model = await HookedModel.load(dir, { threads: 1 });
    // Every matrix the model holds (embedding, unembedding, every layer's) at two bytes; norms and biases are not matrices.
    const store = WeightStore.open(dir);
    const vectors = store.names().filter((n) => store.entry(n)!.shape.length === 1).reduce((s, n) => s + store.entry(n)!.shape[0], 0);
    assert.equal(model.weightBytes, 2 * (parameters(dir) - vectors));
    assert.equal(model.unembed.wU.dtype, dtype);
    const wide = await HookedModel.load(dir, { threads: 1, weightsDtype: 'float32' });
    assert.equal(wide.weightBytes, 2 * model.weightBytes);
    assert.ok(model.widensWeights && !wide.widensWeights, 'two-byte weights are widened per run, float32 ones are not');
    const ids = loadGolden('tiny-llama-gqa').prompts.slice(0, 3).map((p: { ids: number[] }) => p.ids);
    const [a, b] = [await model.forward(ids, { heads: true }), await wide.forward(ids, { heads: true })];
    a.prompts.forEach((p, n) => {
      // Widening two-byte values is exact: the same float32 arithmetic on the same values.
      assert.equal(maxAbsDiff(p.logits, b.prompts[n].logits), 0);
      for (const [c, v] of p.components) assert.equal(maxAbsDiff(v, b.prompts[n].components.get(c)!), 0, c);
    });
  });
}

test('float32 checkpoints are held once at four bytes; narrowing on request rounds the weights', async () => {
  const dir = fixtureModelDir('tiny-gpt2');
  const model = await HookedModel.load(dir, { threads: 1 });
  const store = WeightStore.open(dir);
  const matrices = store.names().filter((n) => store.entry(n)!.shape.length === 2);
  // GPT-2 ties its unembedding to the token embedding: one table, counted once.
  assert.equal(model.weightBytes, 4 * matrices.reduce((s, n) => s + store.entry(n)!.shape[0] * store.entry(n)!.shape[1], 0));
  const narrow = await HookedModel.load(dir, { threads: 1, weightsDtype: 'bfloat16' });
  assert.equal(narrow.weightBytes, model.weightBytes / 2);
  const ids = [loadGolden('tiny-gpt2').prompts[0].ids];
  const d = maxAbsDiff((await model.forward(ids)).prompts[0].logits, (await narrow.forward(ids)).prompts[0].logits);
  assert.ok(d > 0 && d < 0.05, `rounded to bfloat16, the logits move a little: ${d}`);
});

test('a model too big for the memory available is refused before loading, naming the need, the memory and the two-byte option', async () => {
  await rejectsWith(
    HookedModel.load(fixtureModelDir('tiny-gpt2'), { memoryLimit: 1e6 }),
    /needs about 0\.3 GB \(0\.0 GB of weights\) but only 0\.0 GB is available; weights held as `weightsDtype=bfloat16` need half the memory/,
  );
  await rejectsWith(HookedModel.load(fixtureModelDir('tiny-gpt2'), { weightsDtype: 'int8' as never }), /weightsDtype 'int8' is not one of float32, bfloat16, float16/);
});

test('non-finite weights are found wherever they sit, in every dtype', () => {
  for (const dtype of ['F32', 'BF16', 'F16'] as const) {
    for (const n of [1, 2, 5, 8]) {
      for (let at = 0; at < n; at++) {
        for (const bad of [NaN, Infinity, -Infinity]) {
          const v = Float32Array.from({ length: n }, (_, i) => (i === at ? bad : 0.5 - i));
          const m = { dtype, rows: 1, cols: n, layout: 'out_in' as const, data: encode(v, dtype) };
          assert.equal(firstNonFinite(m), at, `${dtype} n=${n} at=${at} ${bad}`);
        }
      }
      const ok = { dtype, rows: 1, cols: n, layout: 'out_in' as const, data: encode(Float32Array.from({ length: n }, (_, i) => 1e4 * (i - 2)), dtype) };
      assert.equal(firstNonFinite(ok), -1);
    }
  }
});

test('layers of the same shape share their sessions (one arena per kind of block), whatever their windows', async () => {
  // Five kinds of layer graph (attention in, mixing over prompts, mixing one position, attention out, MLP).
  for (const name of ['tiny-gpt2', 'tiny-llama-gqa', 'tiny-gemma2']) {
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    assert.ok(model.spec.nLayers >= 2, `${name} has several layers`);
    assert.equal(model.layerSessionCount, 5, name);
  }
  // Sharing changes no number: the golden forward of a windowed, soft-capped model.
  const golden = loadGolden('tiny-gemma2');
  const model = await HookedModel.load(fixtureModelDir('tiny-gemma2'), { threads: 1 });
  const { prompts } = await model.forward([golden.prompts[0].ids]);
  assert.ok(maxAbsDiff(prompts[0].logits, golden.prompts[0].clean.logits) < 1e-4);
});
