import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { analyze } from '../src/causal/analysis.js';
import { EFFECT_FIELDS } from '../src/causal/types.js';
import { iterateAblation, responders } from '../src/experiments/iterate.js';
import { HookedModel } from '../src/models/model.js';
import { writeSelfRepair } from './constructed.js';
import { fixtureModelDir, loadGolden, rejectsWith } from './helpers.js';

const TOL = 1e-9;

test('iterate: step 0 equals effects for the same component and patches; each step equals a direct joint ablation of its set', async () => {
  const model = await HookedModel.load(fixtureModelDir('stories260k'), { threads: 1 });
  const ids: number[][] = loadGolden('stories260k').prompts.slice(0, 6).map((p: { ids: number[] }) => p.ids);
  const opts = { kind: 'resample' as const, samples: 3, seed: 5, allowSameAnswer: true };
  for (const level of ['layers', 'heads'] as const) {
    const res = await iterateAblation(model, ids, { ...opts, ablate: 'attn.0', steps: 2, level });
    assert.equal(res.steps.length, 3, `${level}: two responders (${res.stopped})`);
    assert.equal(res.stopped, null);
    const single = await analyze(model, ids, { ...opts, targets: ['attn.0'], heads: level === 'heads' });
    assert.deepEqual(res.results[0], single, `${level}: step 0 = effects`);
    for (const s of res.steps) {
      assert.equal(s.target, s.set.join('+'));
      const direct = await analyze(model, ids, { ...opts, targets: [s.target] });
      for (const f of EFFECT_FIELDS) {
        const mean = direct.reduce((a, r) => a + r.ablations[s.target][f], 0) / direct.length;
        assert.ok(Math.abs(s.effects[f] - mean) < 1e-6, `${level} step ${s.step} ${f}: ${s.effects[f]} vs ${mean}`);
      }
      // The responder is the downstream candidate with the largest mean ΔDE, and is then in the set.
      const cands = responders(model, s.set, level);
      assert.deepEqual([...cands].sort(), s.candidates.map((c) => c.component).sort());
      if (s.responder) {
        assert.equal(s.responder, s.candidates[0].component);
        assert.ok(s.responder_dde! > 0);
        const next = res.steps[s.step + 1];
        if (next) assert.deepEqual(next.set, [...s.set, s.responder]);
      }
      if (level === 'heads') assert.ok(cands.every((c) => !c.startsWith('attn.')), 'heads level offers heads and MLPs');
    }
  }
});

test('iterate on the constructed self-repair model: attn.1 is the first responder, and after one step the repair is gone', async () => {
  const dir = writeSelfRepair();
  try {
    const model = await HookedModel.load(dir, { threads: 1 });
    const prompts: number[][] = [];
    for (let len = 1; len <= 4; len++) for (let x = -1; x < len; x++) prompts.push([...[...Array(len).keys()].map((j) => (j === x ? 1 : 2)), 3]);
    const res = await iterateAblation(model, prompts, { kind: 'zero', ablate: 'attn.0', steps: 3 });
    assert.deepEqual(res.steps[0].candidates.map((c) => c.component), ['attn.1', 'mlp.1', 'mlp.0']);
    const [s0, s1] = res.steps;
    assert.equal(s0.responder, 'attn.1');
    assert.ok(s0.effects.ce_attn > 0.1, `attn.1 repairs: CE attn ${s0.effects.ce_attn}`);
    assert.deepEqual(s1.set, ['attn.0', 'attn.1']);
    // attn.1 was the repair: with it ablated too, nothing downstream compensates. What CE is left
    // is mlp.0's side output to Y (DELTA), which counts against the clean token; mlp.1 is empty.
    assert.equal(s1.effects.ce_attn, 0);
    assert.ok(s1.effects.ce < 0 && s1.effects.ce > -0.2, `remaining repair ${s1.effects.ce}`);
    const [r1] = res.results[1];
    assert.ok(Math.abs(r1.ablations['attn.0+attn.1'].de_prime['mlp.1'] - r1.de['mlp.1']) < TOL);
    assert.ok(s1.candidates.every((c) => c.dde <= 0), JSON.stringify(s1.candidates));
    assert.equal(s1.remaining_repair, s1.effects.ce);
    assert.ok(s1.effects.te < s0.effects.te, `TE grows when the repair is cut: ${s1.effects.te} vs ${s0.effects.te}`);
    assert.equal(s1.responder, null);
    assert.match(res.stopped!, /no downstream component has a positive mean ΔDE after step 1/);
    assert.equal(res.steps.length, 2);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('iterate: bad input is a clear one-line error', async () => {
  const model = await HookedModel.load(fixtureModelDir('tiny-gpt2'), { threads: 1 });
  const ids = [[1, 2, 3], [4, 5, 6]];
  await rejectsWith(iterateAblation(model, ids, { kind: 'zero', ablate: 'attn.7', steps: 1 }), /unknown component 'attn\.7'/);
  await rejectsWith(iterateAblation(model, ids, { kind: 'zero', ablate: 'attn.0', steps: -1 }), /`steps` must be an integer/);
  await rejectsWith(iterateAblation(model, ids, { kind: 'zero', ablate: 'attn.0', steps: 1, level: 'neurons' as 'heads' }), /unknown level 'neurons'/);
});
