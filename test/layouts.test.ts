import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { WeightStore, writeSafetensors } from '../src/io/safetensors.js';
import { HookedModel } from '../src/models/model.js';
import { fixtureModelDir, loadGolden, maxAbsDiff, tmpDir } from './helpers.js';

/**
 * Checkpoints laid out as the published ones are: bf16 or f16, sharded with
 * model.safetensors.index.json, and carrying the non-parameter buffers that the
 * published files hold (GPT-J's and GPT-Neo's causal-mask `bias` and `masked_bias`, the
 * `rotary_emb.inv_freq` of older Llama-lineage exports). Each must give exactly the
 * numbers of a float32 checkpoint of the same (rounded) values.
 */
type Raw = { dtype: string; shape: number[]; bytes: Buffer };

const BUFFERS: Record<string, (l: number, config: Record<string, number>) => Record<string, Raw>> = {
  'tiny-gptj': (l, c) => ({
    [`transformer.h.${l}.attn.bias`]: { dtype: 'BOOL', shape: [1, 1, c.n_positions, c.n_positions], bytes: Buffer.alloc(c.n_positions ** 2, 1) },
    [`transformer.h.${l}.attn.masked_bias`]: { dtype: 'F32', shape: [], bytes: Buffer.from(new Float32Array([-1e9]).buffer) },
  }),
  'tiny-gpt-neo': (l, c) => ({
    [`transformer.h.${l}.attn.attention.bias`]: { dtype: 'U8', shape: [1, 1, c.max_position_embeddings, c.max_position_embeddings], bytes: Buffer.alloc(c.max_position_embeddings ** 2, 1) },
    [`transformer.h.${l}.attn.attention.masked_bias`]: { dtype: 'F32', shape: [], bytes: Buffer.from(new Float32Array([-1e9]).buffer) },
  }),
  'tiny-qwen3': (l) => ({ [`model.layers.${l}.self_attn.rotary_emb.inv_freq`]: { dtype: 'F32', shape: [12], bytes: Buffer.alloc(48) } }),
  'tiny-olmo2': (l) => ({ [`model.layers.${l}.self_attn.rotary_emb.inv_freq`]: { dtype: 'F32', shape: [8], bytes: Buffer.alloc(32) } }),
  'tiny-phi3': () => ({}),
  'tiny-gemma2': () => ({}),
  'tiny-gemma3': () => ({}),
  'tiny-opt': () => ({}),
  'tiny-mistral-sw': (l) => ({ [`model.layers.${l}.self_attn.rotary_emb.inv_freq`]: { dtype: 'F32', shape: [8], bytes: Buffer.alloc(32) } }),
};

/** One safetensors file of raw tensors. */
function writeRaw(file: string, tensors: Record<string, Raw>): void {
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.length] };
    off += t.bytes.length;
  }
  let json = JSON.stringify(header);
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json), ...Object.values(tensors).map((t) => t.bytes)]));
}

/** The fixture's tensors in `dtype`, split over two shards with an index, plus the family's buffers. */
function publishedLayout(name: string, dtype: 'BF16' | 'F16'): { sharded: string; float32: string } {
  const src = fixtureModelDir(name);
  const config = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8'));
  const store = WeightStore.open(src);
  const names = store.names();
  const tensors = Object.fromEntries(names.map((n) => [n, { shape: store.entry(n)!.shape, data: store.get(n, store.entry(n)!.shape) }]));
  const dir = tmpDir(`hydra-layout-${name}-`);
  // Round through the two-byte type once, so both checkpoints hold the same values.
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, dtype);
  const r = WeightStore.open(dir);
  const values = Object.fromEntries(names.map((n) => [n, { shape: tensors[n].shape, data: r.get(n, tensors[n].shape) }]));
  const float32 = path.join(dir, 'f32');
  const sharded = path.join(dir, 'sharded');
  for (const d of [float32, sharded]) {
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ ...config, dtype: d === sharded ? (dtype === 'BF16' ? 'bfloat16' : 'float16') : 'float32' }));
  }
  writeSafetensors(path.join(float32, 'model.safetensors'), values);
  const half = Math.ceil(names.length / 2);
  const shardNames = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  const weightMap: Record<string, string> = {};
  [names.slice(0, half), names.slice(half)].forEach((part, i) => {
    writeSafetensors(path.join(sharded, shardNames[i]), Object.fromEntries(part.map((n) => [n, values[n]])), dtype);
    for (const n of part) weightMap[n] = shardNames[i];
  });
  // The buffers go in a third file of their own, as some exports write them.
  const buffers = Object.assign({}, ...[...Array(config.num_hidden_layers ?? config.n_layer ?? config.num_layers).keys()].map((l) => BUFFERS[name](l, config)));
  if (Object.keys(buffers).length) {
    writeRaw(path.join(sharded, 'buffers.safetensors'), buffers);
    for (const n of Object.keys(buffers)) weightMap[n] = 'buffers.safetensors';
  }
  fs.writeFileSync(path.join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return { sharded, float32 };
}

for (const name of Object.keys(BUFFERS)) {
  for (const dtype of ['BF16', 'F16'] as const) {
    test(`published layout (${dtype}, sharded, buffers) gives the float32 numbers: ${name}`, async () => {
      const { sharded, float32 } = publishedLayout(name, dtype);
      const ids = loadGolden(name).prompts.slice(0, 3).map((p: { ids: number[] }) => p.ids);
      const a = await (await HookedModel.load(sharded, { threads: 1 })).forward(ids, { heads: true });
      const b = await (await HookedModel.load(float32, { threads: 1 })).forward(ids, { heads: true });
      a.prompts.forEach((p, n) => {
        assert.equal(maxAbsDiff(p.logits, b.prompts[n].logits), 0, `${name} prompt ${n} logits`);
        for (const [c, v] of p.components) assert.equal(maxAbsDiff(v, b.prompts[n].components.get(c)!), 0, `${name} ${c}`);
      });
      // And the rounding was real: the two-byte values differ from the fixture's float32 ones.
      const orig = await (await HookedModel.load(fixtureModelDir(name), { threads: 1 })).forward(ids);
      assert.ok(maxAbsDiff(orig.prompts[0].logits, a.prompts[0].logits) > 0);
    });
  }
}
