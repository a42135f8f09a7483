import { test } from 'node:test';
import assert from 'node:assert/strict';
import { softcap } from '../src/causal/readout.js';
import { parseComponent } from '../src/models/components.js';
import { HookedModel, interventionSite } from '../src/models/model.js';
import { FIXTURE_MODELS, fixtureModelDir, hydraName, loadGolden, maxAbsDiff } from './helpers.js';

const TOL = 1e-4;

for (const name of FIXTURE_MODELS) {
  test(`forward matches golden: ${name}`, async () => {
    const golden = loadGolden(name);
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    const ids: number[][] = golden.prompts.map((p: { ids: number[] }) => p.ids);
    const batched = await model.forward(ids, { heads: true });
    for (let n = 0; n < ids.length; n++) {
      const want = golden.prompts[n].clean;
      const got = batched.prompts[n];
      assert.ok(maxAbsDiff(got.logits, want.logits) < TOL, `${name} prompt ${n} logits differ by ${maxAbsDiff(got.logits, want.logits)}`);
      assert.equal(got.token, want.clean_token);
      assert.ok(Math.abs(got.sigma - want.sigma) < TOL, `${name} prompt ${n} sigma ${got.sigma} vs ${want.sigma}`);
      assert.ok(maxAbsDiff(got.z, want.z) < TOL);
      for (const [g, vec] of Object.entries(want.outputs as Record<string, number[]>)) {
        const c = got.components.get(hydraName(g));
        assert.ok(c, `${name}: component ${hydraName(g)} missing`);
        const diff = maxAbsDiff(c, vec);
        assert.ok(diff < TOL, `${name} prompt ${n} ${hydraName(g)} differs by ${diff}`);
      }
      // Post-norm families: a head's pre-norm output is what an intervention on it replaces.
      for (const [g, vec] of Object.entries((want.head_pre_norm ?? {}) as Record<string, number[]>)) {
        const diff = maxAbsDiff(interventionSite(got, hydraName(g)), vec);
        assert.ok(diff < TOL, `${name} prompt ${n} pre-norm ${hydraName(g)} differs by ${diff}`);
      }
      if (want.logits_capped) assert.ok(maxAbsDiff(softcap(got.logits, model.spec.finalSoftcap!), want.logits_capped) < TOL, `${name} capped logits`);
    }
    // The plan's downstream sets are the reference's.
    for (const [t, want] of Object.entries(golden.downstream as Record<string, { attn: string[]; mlp: string[] }>)) {
      const got = model.plan.downstream(parseComponent(hydraName(t), model.spec));
      assert.deepEqual([...got.attn].sort(), want.attn.map(hydraName).sort(), `${name} downstream attn of ${t}`);
      assert.deepEqual([...got.mlp].sort(), want.mlp.map(hydraName).sort(), `${name} downstream mlp of ${t}`);
    }
    // Batching with padding gives the same numbers as each prompt alone.
    for (let n = 0; n < ids.length; n++) {
      const alone = (await model.forward([ids[n]], { heads: true })).prompts[0];
      assert.ok(maxAbsDiff(alone.logits, batched.prompts[n].logits) < 1e-5);
      for (const [c, v] of alone.components) assert.ok(maxAbsDiff(v, batched.prompts[n].components.get(c)!) < 1e-5, `${c} batched vs alone`);
    }
  });
}
