import { test } from 'node:test';
import assert from 'node:assert/strict';
import { analyze } from '../src/causal/analysis.js';
import { cleanContext } from '../src/causal/effects.js';
import { biasDirectEffect, neuronEffects, neuronLayers, topNeurons } from '../src/causal/neurons.js';
import { centredLogit, Readout } from '../src/causal/readout.js';
import type { Effects, NeuronChange, PromptResult } from '../src/causal/types.js';
import { mlpName, parseComponent } from '../src/models/components.js';
import { HookedModel } from '../src/models/model.js';
import { FIXTURE_MODELS, fixtureModelDir, hydraName, loadGolden, rejectsWith } from './helpers.js';


async function cleanOf(model: HookedModel, ids: number[][]) {
  const clean = await model.forward(ids);
  const qs = await new Readout(model).vectors(clean.prompts.map((a) => a.token));
  return clean.prompts.map((a, i) => cleanContext(a, qs[i], centredLogit(a.logits, a.token)));
}

// Σ_n DE_n + DE(output bias) = DE(mlp.L): against Hydra's DE and the independent golden DE.
// Every family: pre-norm (LayerNorm, RMSNorm, gated, fused gate/up, parallel) and post-norm (Gemma-2/3 sandwich, OLMo-2).
for (const name of FIXTURE_MODELS) {
  test(`neuron DEs sum to the MLP layer's DE: ${name}`, async () => {
    const golden = loadGolden(name);
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    const ctxs = await cleanOf(model, golden.prompts.map((p: { ids: number[] }) => p.ids));
    for (let l = 0; l < model.spec.nLayers; l++) {
      const mlp = parseComponent(mlpName(l), model.spec);
      const des = await neuronEffects(model, l, ctxs.map((c) => c.acts.stageIn[model.plan.stageOf(mlp)]), ctxs);
      ctxs.forEach((c, n) => {
        assert.equal(des[n].length, model.spec.dMlp);
        const sum = des[n].reduce((s, v) => s + v, 0) + biasDirectEffect(model, l, c);
        const label = `${name} prompt ${n} mlp.${l}`;
        assert.ok(Math.abs(sum - c.de[mlp.name]) < 1e-5, `${label}: Σ DE_n + bias = ${sum} vs DE ${c.de[mlp.name]}`);
        assert.ok(Math.abs(sum - golden.prompts[n].clean.DE[`mlp${l}`]) < 1e-5, `${label}: vs golden ${golden.prompts[n].clean.DE[`mlp${l}`]}`);
      });
    }
  });
}

function byNeuron(list: NeuronChange[]): NeuronChange[] {
  return [...list].sort((a, b) => a.neuron - b.neuron);
}

async function run(model: HookedModel, name: string, path: 'fast' | 'naive'): Promise<PromptResult[]> {
  const golden = loadGolden(name);
  const neurons = [...Array(model.spec.nLayers).keys()].map(mlpName);
  return analyze(model, golden.prompts.map((p: { ids: number[] }) => p.ids), {
    kind: 'resample',
    sources: golden.resample_sources,
    targets: golden.targets.map(hydraName),
    heads: true,
    path,
    neurons,
    topNeurons: model.spec.dMlp,
    batchPrompts: 3,
    batchRows: 20,
  });
}

// Neuron ΔDE: the fast path equals the naive full recompute, per patch and averaged; every
// named layer downstream of the target is reported, and over all neurons Σ ΔDE_n = ΔDE(mlp.L).
for (const name of ['tiny-gpt2', 'tiny-neox-parallel', 'tiny-llama-gqa', 'tiny-gemma2']) {
  test(`neuron ΔDE: fast path equals naive path: ${name}`, async () => {
    const model = await HookedModel.load(fixtureModelDir(name), { threads: 1 });
    const fast = await run(model, name, 'fast');
    const naive = await run(model, name, 'naive');
    let compared = 0;
    fast.forEach((r, n) => {
      for (const [t, a] of Object.entries(r.ablations)) {
        const down = model.plan.downstream(parseComponent(t, model.spec)).mlp;
        assert.deepEqual(Object.keys(a.neurons!).sort(), [...down].sort(), `${name} ${t}: layers reported`);
        const pairs: [Effects, Effects][] = [[a, naive[n].ablations[t]], ...a.patches.map((p, s): [Effects, Effects] => [p, naive[n].ablations[t].patches[s]])];
        for (const [f, g] of pairs) {
          for (const layer of down) {
            const fl = byNeuron(f.neurons![layer]);
            const gl = byNeuron(g.neurons![layer]);
            assert.equal(fl.length, model.spec.dMlp);
            fl.forEach((x, i) => {
              assert.ok(Math.abs(x.dde - gl[i].dde) < 1e-5, `${name} ${t} ${layer} neuron ${x.neuron}: ${x.dde} vs ${gl[i].dde}`);
              assert.ok(Math.abs(x.de_prime - x.de - x.dde) < 1e-6);
              if (Math.abs(x.dde) > 1e-4) compared++;
            });
            const sum = fl.reduce((s, x) => s + x.dde, 0);
            const want = f.de_prime[layer] - r.de[layer];
            assert.ok(Math.abs(sum - want) < 1e-5, `${name} ${t} ${layer}: Σ ΔDE_n ${sum} vs ΔDE ${want}`);
          }
        }
      }
    });
    assert.ok(compared > 0, 'some neuron changes');
  });
}

test('top neurons: largest |ΔDE| first, ties by index', () => {
  const top = topNeurons([0, 0, 0, 0], [0.5, -2, 2, 0.1], 3);
  assert.deepEqual(top.map((x) => x.neuron), [1, 2, 0]);
  assert.deepEqual(top.map((x) => x.dde), [-2, 2, 0.5]);
});

test('neurons: only MLP layers of the model', async () => {
  const model = await HookedModel.load(fixtureModelDir('tiny-gpt2'), { threads: 1 });
  assert.throws(() => neuronLayers(model, ['attn.1']), /'attn.1' is not an MLP layer; .* mlp.0 to mlp.2/);
  assert.throws(() => neuronLayers(model, ['mlp.9']), /mlp.9 does not exist; the model's MLP layers are mlp.0 to mlp.2/);
  assert.throws(() => neuronLayers(model, ['mlp']), /'mlp' is not an MLP layer/);
  assert.throws(() => neuronLayers(model, []), /names no MLP layer/);
  assert.deepEqual(neuronLayers(model, ['mlp.1', 'mlp.1']).map((c) => c.name), ['mlp.1']);
  await rejectsWith(analyze(model, [[1, 2, 3]], { kind: 'zero', targets: ['attn.0'], neurons: ['mlp.0'], topNeurons: 0 }), /`topNeurons` must be a positive integer, got 0/);
});
