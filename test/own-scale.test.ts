import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { analyze } from '../src/causal/analysis.js';
import { ownScaleSeries, storeSeries } from '../src/experiments/stats.js';
import { ResultsStore } from '../src/experiments/store.js';
import { runSweep } from '../src/experiments/sweep.js';
import { parseComponent } from '../src/models/components.js';
import { HookedModel } from '../src/models/model.js';
import { fixtureModelDir, loadGolden, tmpDir } from './helpers.js';

/**
 * The report's own-scale variant reads what is downstream of each ablated layer from the sweep's
 * stored plan; it must give, per prompt, CE_attn and CE_mlp of DE' at the ablated run's own
 * scale, as analyze computes them with ownScale — on a sequential and a parallel model (where
 * attn.l's own MLP is not downstream). The name rule kept for older stores agrees on the
 * sequential one; on this parallel one its guess from CE_mlp was wrong, which is why the
 * stored sets replace it.
 */
for (const name of ['tiny-gpt2', 'tiny-neox-parallel']) {
  test(`own-scale series from the stored downstream sets equal analyze's (${name})`, async () => {
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    const prompts = loadGolden(name).prompts.map((p: { ids: number[] }) => p.ids) as number[][];
    const dir = tmpDir();
    const dataset = path.join(dir, 'prompts.json');
    fs.writeFileSync(dataset, JSON.stringify(prompts.map((ids) => ({ ids }))));
    const out = path.join(dir, 'r.duckdb');
    const opts = { kind: 'resample' as const, samples: 3, seed: 1, allowSameAnswer: true };
    await runSweep({ model, modelName: name, dataset, ablation: 'resample', samples: 3, seed: 1, allowSameAnswer: true, filter: false, out });
    const direct = await analyze(model, prompts, { ...opts, ownScale: true });
    const store = await ResultsStore.openReadOnly(out);
    try {
      const con = store.readConnection();
      await storeSeries(con, store.config.dataset);
      assert.ok(store.config.downstream, 'the sweep stored its downstream sets');
      const read = async () => (await con.runAndReadAll('SELECT pos, component, ce_attn, ce_mlp FROM series_own ORDER BY pos, component')).getRowObjectsJS();
      assert.equal(await ownScaleSeries(con, store.config.downstream), true);
      const stored = await read();
      assert.equal(await ownScaleSeries(con), true);
      const inferred = await read();
      assert.equal(stored.length, prompts.length * 2 * model.spec.nLayers);
      stored.forEach((r, i) => {
        const a = direct[Number(r.pos)].ablations[String(r.component)];
        const down = model.plan.downstream(parseComponent(String(r.component)));
        const ce = (names: string[]) => a.patches.reduce((s, p) => s + names.reduce((t, c) => t + p.de_prime_own_scale![c] - direct[Number(r.pos)].de[c], 0), 0) / a.patches.length;
        assert.ok(Math.abs(Number(r.ce_attn) - ce(down.attn)) < 1e-9, `${name} ${r.component} CE_attn`);
        assert.ok(Math.abs(Number(r.ce_mlp) - ce(down.mlp)) < 1e-9, `${name} ${r.component} CE_mlp`);
        // Stores without downstream sets fall back to the name rule, which holds for sequential blocks.
        if (!model.spec.parallel) assert.ok(Math.abs(Number(r.ce_mlp) - Number(inferred[i].ce_mlp)) < 1e-12 && Math.abs(Number(r.ce_attn) - Number(inferred[i].ce_attn)) < 1e-12);
      });
    } finally {
      await store.close();
    }
  });
}
