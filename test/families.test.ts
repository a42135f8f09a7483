import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { HookedModel } from '../src/models/model.js';
import { SUPPORTED_MODEL_TYPES } from '../src/models/registry.js';
import { fixtureModelDir, loadGolden, maxAbsDiff, rejectsWith, tmpDir } from './helpers.js';

/** A copy of a fixture model with its config.json edited. */
function editedModel(name: string, edit: (config: Record<string, unknown>) => void): string {
  const dir = path.join(tmpDir(), name);
  fs.cpSync(fixtureModelDir(name), dir, { recursive: true });
  const file = path.join(dir, 'config.json');
  const config = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(config);
  fs.writeFileSync(file, JSON.stringify(config));
  return dir;
}

async function logitsDiff(dir: string, golden: string): Promise<number> {
  const g = loadGolden(golden);
  const model = await HookedModel.load(dir, { threads: 1 });
  const { prompts } = await model.forward([g.prompts[0].ids]);
  return maxAbsDiff(prompts[0].logits, g.prompts[0].clean.logits);
}

test('Gemma with hidden_act "gelu" and no hidden_activation runs tanh GELU, as Hugging Face does', async () => {
  const asPublished = editedModel('tiny-gemma', (c) => {
    delete c.hidden_activation;
    c.hidden_act = 'gelu';
  });
  assert.ok((await logitsDiff(asPublished, 'tiny-gemma')) < 1e-4);
  // The exact GELU, asked for by name, gives other logits: the check above can tell them apart.
  const exact = editedModel('tiny-gemma', (c) => (c.hidden_activation = 'gelu'));
  assert.ok((await logitsDiff(exact, 'tiny-gemma')) > 1e-5);
});

test('Llama without tie_word_embeddings in its config uses its lm_head.weight (the Llama default is untied)', async () => {
  const dir = editedModel('tiny-llama-gqa', (c) => delete c.tie_word_embeddings);
  assert.ok((await logitsDiff(dir, 'tiny-llama-gqa')) < 1e-4);
  // Tied, the same weights give other logits.
  const tied = editedModel('tiny-llama-gqa', (c) => (c.tie_word_embeddings = true));
  assert.ok((await logitsDiff(tied, 'tiny-llama-gqa')) > 1e-3);
});

test('an untied config without lm_head.weight is a clear error', async () => {
  const dir = editedModel('tiny-qwen3', (c) => (c.tie_word_embeddings = false));
  await rejectsWith(HookedModel.load(dir), /tie_word_embeddings is false but the checkpoint has no lm_head\.weight/);
});

test('the families researchers use today are all supported, and the error for others lists them', async () => {
  for (const t of ['gpt2', 'gpt_neox', 'llama', 'mistral', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3_text', 'olmo2', 'phi3', 'gptj', 'gpt_neo', 'opt']) assert.ok(SUPPORTED_MODEL_TYPES.includes(t), t);
  const dir = editedModel('tiny-gpt2', (c) => (c.model_type = 'mamba'));
  await rejectsWith(HookedModel.load(dir), /model_type 'mamba' is not supported; supported: .*qwen3.*gemma2.*gemma3_text.*olmo2.*phi3.*gptj.*gpt_neo.*opt/);
});

test('post-norm OPT, OPT with project_in/out and multimodal Gemma-3 are refused clearly', async () => {
  await rejectsWith(HookedModel.load(editedModel('tiny-opt', (c) => (c.do_layer_norm_before = false))), /post-norm OPT .*not supported/);
  await rejectsWith(HookedModel.load(editedModel('tiny-opt', (c) => (c.word_embed_proj_dim = 32))), /word_embed_proj_dim/);
  await rejectsWith(HookedModel.load(editedModel('tiny-gemma3', (c) => (c.model_type = 'gemma3'))), /multimodal Gemma-3/);
});

test('a sliding window shorter than the prompt changes the logits, so the windowed goldens check the window', async () => {
  // Without its window the windowed Mistral gives other logits on a prompt longer than the window.
  const golden = loadGolden('tiny-mistral-sw');
  const long = golden.prompts.findIndex((p: { ids: number[] }) => p.ids.length > 8);
  const model = await HookedModel.load(editedModel('tiny-mistral-sw', (c) => (c.sliding_window = null)), { threads: 1 });
  const { prompts } = await model.forward([golden.prompts[long].ids]);
  assert.ok(maxAbsDiff(prompts[0].logits, golden.prompts[long].clean.logits) > 1e-3);
});
