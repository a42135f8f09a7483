import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mergeStores, ResultsStore } from '../src/experiments/store.js';
import { runSweep, type SweepOptions } from '../src/experiments/sweep.js';
import { defaultModelDir, storiesRecallPath } from '../src/io/paths.js';
import { HookedModel } from '../src/models/model.js';
import { rejectsWith, tmpDir } from './helpers.js';

/**
 * A sweep's database is bound to the content of its model files and dataset: a resume or a
 * merge after either changed is refused, however the same model directory is written.
 */

/** A private copy of the bundled model and of the first 16 story prompts. */
function setup(): { dir: string; model: string; dataset: string } {
  const dir = tmpDir('hydra-identity-');
  const model = path.join(dir, 'stories260k');
  fs.cpSync(defaultModelDir, model, { recursive: true });
  const dataset = path.join(dir, 'stories.jsonl');
  fs.writeFileSync(dataset, fs.readFileSync(storiesRecallPath, 'utf8').split('\n').slice(0, 16).join('\n') + '\n');
  return { dir, model, dataset };
}

async function sweep(modelName: string, dataset: string, out: string, extra: Partial<SweepOptions> = {}) {
  const model = await HookedModel.load(modelName, { threads: 1 });
  return runSweep({ model, modelName, dataset, out, ablation: 'zero', ...extra });
}

/** Change one float of the last tensor in place: same header, same size, same mtime. */
function editWeightsInPlace(modelDir: string): void {
  const file = path.join(modelDir, 'model.safetensors');
  const { mtime, atime } = fs.statSync(file);
  const buf = fs.readFileSync(file);
  buf.writeFloatLE(buf.readFloatLE(buf.length - 4) + 0.25, buf.length - 4);
  fs.writeFileSync(file, buf);
  fs.utimesSync(file, atime, mtime);
}

test('a model given as a relative path, an absolute path or with a trailing slash is one model', async () => {
  const { dir, model, dataset } = setup();
  const out = path.join(dir, 'r.duckdb');
  const first = await sweep(path.relative(process.cwd(), model), dataset, out, { limit: 8 });
  assert.ok(first.computed > 0);
  for (const name of [model, `${model}/`, `${path.relative(process.cwd(), model)}/`]) {
    const again = await sweep(name, dataset, out, { limit: 8 });
    assert.equal(again.computed, 0, name);
    assert.equal(again.alreadyStored, first.computed, name);
  }
  const store = await ResultsStore.openReadOnly(out);
  assert.equal(store.config.model, model);
  assert.match(String(store.config.model_hash), /^sha256:[0-9a-f]{64}$/);
  assert.match(String(store.config.options?.dataset_hash), /^sha256:[0-9a-f]{64}$/);
  await store.close();
});

test('a resume after the weights were edited in place (same size, same mtime) is refused', async () => {
  const { dir, model, dataset } = setup();
  const out = path.join(dir, 'r.duckdb');
  await sweep(model, dataset, out, { limit: 8 });
  const before = fs.readFileSync(out);
  editWeightsInPlace(model);
  await rejectsWith(sweep(model, dataset, out, { limit: 16 }), /r\.duckdb was made with model_hash=sha256:\w+, this run asks for sha256:\w+ \(the content of the model files.*changed\)/);
  assert.deepEqual(fs.readFileSync(out), before, 'the refused resume wrote nothing');
});

test('a resume after the dataset was edited (same name, same row count) is refused', async () => {
  const { dir, model, dataset } = setup();
  const out = path.join(dir, 'r.duckdb');
  await sweep(model, dataset, out);
  const lines = fs.readFileSync(dataset, 'utf8').split('\n');
  lines[3] = lines[3].replace('Once upon a time', 'Long ago');
  fs.writeFileSync(dataset, lines.join('\n'));
  await rejectsWith(sweep(model, dataset, out), /was made with dataset_hash=sha256:\w+, this run asks for sha256:\w+ \(the content of the dataset records changed\)/);
  // The original records again, written with an extra blank line: the same dataset.
  fs.writeFileSync(dataset, fs.readFileSync(storiesRecallPath, 'utf8').split('\n').slice(0, 16).join('\n') + '\n\n');
  assert.equal((await sweep(model, dataset, out)).computed, 0);
});

test('shards computed from different weights are not merged', async () => {
  const { dir, model, dataset } = setup();
  const s0 = path.join(dir, 's0.duckdb');
  const s1 = path.join(dir, 's1.duckdb');
  await sweep(model, dataset, s0, { shard: '0/2' });
  editWeightsInPlace(model);
  await sweep(model, dataset, s1, { shard: '1/2' });
  await rejectsWith(mergeStores([s0, s1], path.join(dir, 'm.duckdb')), /s0\.duckdb and .*s1\.duckdb differ in model_hash \(sha256:\w+ vs sha256:\w+\) \(the content of the model files/);
});
