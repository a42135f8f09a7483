import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTarget } from '../src/models/components.js';
import { cleanContext } from '../src/causal/effects.js';
import { runFastPath } from '../src/causal/fastpath.js';
import { centredLogit, Readout } from '../src/causal/readout.js';
import { ort } from '../src/engine/runtime.js';
import { sourcePool } from '../src/experiments/profile.js';
import { defaultModelDir } from '../src/io/paths.js';
import { analyze } from '../src/causal/analysis.js';
import { HookedModel } from '../src/models/model.js';
import { fixtureModelDir, loadGolden } from './helpers.js';
import { startServer, type RunningServer } from '../src/web/server.js';

/**
 * The explorer keeps the pool's clean runs per model and pool: once they are cached, an ablation
 * click runs the prompt's clean forward and the fast path's ablated runs, nothing more. Session
 * runs are counted by wrapping onnxruntime's InferenceSession.prototype.run.
 */
let model: HookedModel;
let server: RunningServer;
let runs = 0;
// At run time InferenceSession is the class whose instances every session is.
const proto = (ort.InferenceSession as unknown as { prototype: { run: (...a: unknown[]) => Promise<unknown> } }).prototype;
const original = proto.run;

before(async () => {
  model = await HookedModel.load(defaultModelDir, { threads: 1 });
  server = await startServer({ model, modelName: 'stories260k', pool: await sourcePool(model) });
  proto.run = function (this: unknown, ...a: unknown[]) {
    runs++;
    return original.apply(this, a);
  };
});

after(async () => {
  proto.run = original;
  await server?.close();
});

/** Session runs of one click: POST /api/ablate, read to its result. */
async function click(text: string, component: string, kind: string, samples = 15): Promise<number> {
  runs = 0;
  const res = await fetch(new URL('/api/ablate', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text, component, kind, samples, seed: 0 }) });
  const last = JSON.parse((await res.text()).trim().split('\n').pop()!);
  assert.ok(last.result, JSON.stringify(last));
  return runs;
}

/** Session runs of the prompt's clean forward plus the fast path with `rows` rows of `target`. */
async function expected(text: string, target: string, rows: number): Promise<number> {
  runs = 0;
  const ids = model.encode(text);
  const clean = await model.forward([ids], { heads: true });
  const readout = new Readout(model);
  const qs = await readout.vectors(clean.prompts.map((a) => a.token));
  const ctxs = clean.prompts.map((a, i) => cleanContext(a, qs[i], centredLogit(a.logits, a.token)));
  const t = parseTarget(target, model.spec);
  const patch = new Float32Array(model.spec.dModel);
  await runFastPath(model, ctxs, clean.cache, Array.from({ length: rows }, () => ({ prompt: 0, target: t, patches: [patch] })), true);
  return runs;
}

test('an ablation click on a cached model runs the prompt once and the fast path, never the pool again', async () => {
  const a = 'Once upon a time, there was a girl named Lily. She liked to play with her ball. One day, Lily';
  const b = 'One day, a boy named Tim found a red ball in the park. He gave it to';
  const cold = await click(a, 'attn.1', 'resample');
  for (const text of [a, b]) {
    const want = await expected(text, 'attn.1', 15);
    assert.equal(await click(text, 'attn.1', 'resample'), want, `resample click on ${JSON.stringify(text.slice(0, 20))}`);
    assert.ok(cold > want, `the first click computes the pool (${cold} runs vs ${want})`);
    assert.equal(await click(text, 'attn.1', 'mean'), await expected(text, 'attn.1', 1), 'mean click');
    assert.equal(await click(text, 'mlp.2', 'resample'), await expected(text, 'mlp.2', 15), 'another component');
  }
  // "Ablate every layer": one unit per component, none of them running the pool.
  let want = 0;
  for (let l = 0; l < model.spec.nLayers; l++) for (const c of [`attn.${l}`, `mlp.${l}`]) want += await expected(b, c, 15);
  assert.equal(await click(b, 'all', 'resample'), want);
});

test('a resample analysis runs each batch clean once: the pool pass keeps its runs for the ablations', async () => {
  const golden = loadGolden('tiny-gpt2');
  const m = await HookedModel.load(fixtureModelDir('tiny-gpt2'), { threads: 1 });
  const prompts: number[][] = golden.prompts.map((p: { ids: number[] }) => p.ids);
  let forwards = 0;
  const forward = m.forward.bind(m);
  (m as { forward: typeof m.forward }).forward = (ids, o) => {
    forwards++;
    return forward(ids, o);
  };
  const opts = { kind: 'resample' as const, samples: 2, seed: 1, targets: ['attn.0', 'mlp.1'], batchPrompts: 3, allowSameAnswer: true };
  const once = await analyze(m, prompts, opts);
  assert.equal(forwards, 3, 'three batches of 3, 3 and 2 prompts, each run once');
  // Asking for heads, which the pool's own runs do not record, the batches the pool ran first run again
  // (batch 0 runs for the analysis first and serves the pool): 3 + 2, with the same numbers.
  forwards = 0;
  const twice = await analyze(m, prompts, { ...opts, heads: true });
  assert.equal(forwards, 5);
  once.forEach((r, n) => {
    for (const t of opts.targets) twice[n].ablations[t].patches.forEach((p, s) => assert.equal(p.te, r.ablations[t].patches[s].te));
  });
});
