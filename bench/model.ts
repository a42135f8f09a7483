import fs from 'node:fs';
import path from 'node:path';
import { encode } from '../src/io/matrix.js';
import { packageRoot } from '../src/io/paths.js';

/**
 * Seeded random models of real shapes for the benchmark, written once as Hugging Face
 * model directories (config.json + model.safetensors) under `.cache/bench/<shape>/`
 * and reused afterwards. The weights are random (normal, std 0.02; norm gains
 * 1 + small noise), so the numbers measure speed only; the architecture and the
 * cost of every operator are those of the real model.
 */

export type BenchShape = 'gpt2-small' | 'llama-1b' | 'qwen2.5-0.5b' | 'mistral-7b';
export const SHAPES: BenchShape[] = ['gpt2-small', 'llama-1b', 'qwen2.5-0.5b', 'mistral-7b'];

interface ShapeDef {
  config: Record<string, unknown>;
  /** Storage dtype, as the published checkpoints of the shape (the model holds it as stored). */
  dtype: 'F32' | 'BF16';
  /** Shard the checkpoint (model.safetensors.index.json) at about this many bytes a file. */
  shardBytes?: number;
  tensors: () => [string, number[], Init][];
}

/** The tensors of a Llama-lineage checkpoint (Llama, Mistral, Qwen2) in Hugging Face layout. */
function llamaTensors(o: { d: number; f: number; layers: number; heads: number; kvHeads: number; dh: number; vocab: number; tied: boolean; qkvBias: boolean }): [string, number[], Init][] {
  const { d, f, dh } = o;
  const q = o.heads * dh;
  const kv = o.kvHeads * dh;
  const out: [string, number[], Init][] = [['model.embed_tokens.weight', [o.vocab, d], normal]];
  for (let l = 0; l < o.layers; l++) {
    const p = `model.layers.${l}`;
    out.push(
      [`${p}.input_layernorm.weight`, [d], gain],
      [`${p}.self_attn.q_proj.weight`, [q, d], normal],
      [`${p}.self_attn.k_proj.weight`, [kv, d], normal],
      [`${p}.self_attn.v_proj.weight`, [kv, d], normal],
      ...(o.qkvBias ? ([[`${p}.self_attn.q_proj.bias`, [q], bias], [`${p}.self_attn.k_proj.bias`, [kv], bias], [`${p}.self_attn.v_proj.bias`, [kv], bias]] as [string, number[], Init][]) : []),
      [`${p}.self_attn.o_proj.weight`, [d, q], normal],
      [`${p}.post_attention_layernorm.weight`, [d], gain],
      [`${p}.mlp.gate_proj.weight`, [f, d], normal],
      [`${p}.mlp.up_proj.weight`, [f, d], normal],
      [`${p}.mlp.down_proj.weight`, [d, f], normal],
    );
  }
  out.push(['model.norm.weight', [d], gain]);
  if (!o.tied) out.push(['lm_head.weight', [o.vocab, d], normal]);
  return out;
}

type Init = { kind: 'normal'; std: number } | { kind: 'gain' } | { kind: 'bias' };

const STD = 0.02;
const normal: Init = { kind: 'normal', std: STD };
const gain: Init = { kind: 'gain' };
const bias: Init = { kind: 'bias' };

const DEFS: Record<BenchShape, ShapeDef> = {
  'gpt2-small': {
    dtype: 'F32',
    config: {
      model_type: 'gpt2',
      architectures: ['GPT2LMHeadModel'],
      n_embd: 768,
      n_head: 12,
      n_layer: 12,
      n_positions: 1024,
      n_ctx: 1024,
      vocab_size: 50257,
      layer_norm_epsilon: 1e-5,
      activation_function: 'gelu_new',
      tie_word_embeddings: true,
    },
    tensors: () => {
      const d = 768;
      const f = 4 * d;
      const out: [string, number[], Init][] = [
        ['wte.weight', [50257, d], normal],
        ['wpe.weight', [1024, d], { kind: 'normal', std: 0.01 }],
      ];
      for (let l = 0; l < 12; l++) {
        const h = `h.${l}`;
        out.push(
          [`${h}.ln_1.weight`, [d], gain],
          [`${h}.ln_1.bias`, [d], bias],
          [`${h}.attn.c_attn.weight`, [d, 3 * d], normal],
          [`${h}.attn.c_attn.bias`, [3 * d], bias],
          [`${h}.attn.c_proj.weight`, [d, d], normal],
          [`${h}.attn.c_proj.bias`, [d], bias],
          [`${h}.ln_2.weight`, [d], gain],
          [`${h}.ln_2.bias`, [d], bias],
          [`${h}.mlp.c_fc.weight`, [d, f], normal],
          [`${h}.mlp.c_fc.bias`, [f], bias],
          [`${h}.mlp.c_proj.weight`, [f, d], normal],
          [`${h}.mlp.c_proj.bias`, [d], bias],
        );
      }
      out.push(['ln_f.weight', [d], gain], ['ln_f.bias', [d], bias]);
      return out;
    },
  },
  'llama-1b': {
    dtype: 'BF16',
    config: {
      model_type: 'llama',
      architectures: ['LlamaForCausalLM'],
      hidden_size: 2048,
      num_hidden_layers: 16,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      intermediate_size: 8192,
      vocab_size: 32000,
      max_position_embeddings: 2048,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      hidden_act: 'silu',
      tie_word_embeddings: true,
    },
    tensors: () => llamaTensors({ d: 2048, f: 8192, layers: 16, heads: 32, kvHeads: 8, dh: 64, vocab: 32000, tied: true, qkvBias: false }),
  },
  'qwen2.5-0.5b': {
    dtype: 'BF16',
    config: {
      model_type: 'qwen2',
      architectures: ['Qwen2ForCausalLM'],
      hidden_size: 896,
      num_hidden_layers: 24,
      num_attention_heads: 14,
      num_key_value_heads: 2,
      intermediate_size: 4864,
      vocab_size: 151936,
      max_position_embeddings: 32768,
      rms_norm_eps: 1e-6,
      rope_theta: 1000000,
      hidden_act: 'silu',
      tie_word_embeddings: true,
      torch_dtype: 'bfloat16',
    },
    tensors: () => llamaTensors({ d: 896, f: 4864, layers: 24, heads: 14, kvHeads: 2, dh: 64, vocab: 151936, tied: true, qkvBias: true }),
  },
  'mistral-7b': {
    dtype: 'BF16',
    shardBytes: 5e9,
    config: {
      model_type: 'mistral',
      architectures: ['MistralForCausalLM'],
      hidden_size: 4096,
      num_hidden_layers: 32,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 128,
      intermediate_size: 14336,
      vocab_size: 32000,
      max_position_embeddings: 32768,
      rms_norm_eps: 1e-5,
      rope_theta: 1000000,
      sliding_window: null,
      hidden_act: 'silu',
      tie_word_embeddings: false,
      torch_dtype: 'bfloat16',
    },
    tensors: () => llamaTensors({ d: 4096, f: 14336, layers: 32, heads: 32, kvHeads: 8, dh: 128, vocab: 32000, tied: false, qkvBias: false }),
  },
};

/** xorshift128+-style generator on 32-bit halves (fast, seeded); uniform in (0, 1]. */
function uniform(seed: number): () => number {
  let a = seed >>> 0 || 1;
  let b = (seed * 2654435761) >>> 0 || 2;
  let c = 0x9e3779b9;
  let d = 0x7f4a7c15;
  return () => {
    const t = a ^ (a << 11);
    a = b;
    b = c;
    c = d;
    d = (d ^ (d >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    return (d + 1) / 4294967297;
  };
}

function hash(s: string, seed: number): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** 2^20 standard normal draws (Box–Muller), shared by every tensor. */
let pool: Float32Array | null = null;
const POOL = 1 << 20;

/**
 * Fill with normal(mean, std) values: entries of a fixed pool of normal draws, read at a
 * seeded odd stride from a seeded offset. The weights only need to look like weights
 * (the benchmark measures speed and memory), and this fills billions of them quickly.
 */
function fillNormal(out: Float32Array, std: number, rand: () => number, mean = 0): void {
  if (!pool) {
    pool = new Float32Array(POOL);
    const r0 = uniform(99);
    for (let i = 0; i < POOL; i += 2) {
      const r = Math.sqrt(-2 * Math.log(r0()));
      const th = 2 * Math.PI * r0();
      pool[i] = r * Math.cos(th);
      pool[i + 1] = r * Math.sin(th);
    }
  }
  const p = pool;
  const stride = (Math.floor(rand() * POOL) | 1) & (POOL - 1);
  let at = Math.floor(rand() * POOL);
  for (let i = 0; i < out.length; i++) {
    out[i] = mean + std * p[at];
    at = (at + stride) & (POOL - 1);
  }
}

export function benchModelDir(shape: BenchShape): string {
  return path.join(packageRoot, '.cache', 'bench', shape);
}

/** The benchmark model's directory, generated (seeded, deterministic) on first use. */
export function ensureBenchModel(shape: BenchShape, log: (msg: string) => void = () => {}, seed = 1234): string {
  const dir = benchModelDir(shape);
  const done = path.join(dir, '.complete');
  if (fs.existsSync(done)) return dir;
  const def = DEFS[shape];
  const t0 = performance.now();
  log(`generating the ${shape} benchmark model (seeded random weights) in ${dir} ...`);
  fs.mkdirSync(dir, { recursive: true });
  const specs = def.tensors();
  const size = def.dtype === 'F32' ? 4 : 2;
  // Tensors go to shards in order, a new shard once one passes shardBytes; one tensor in memory at a time.
  const shards: [string, number[], Init][][] = [[]];
  let bytes = 0;
  for (const t of specs) {
    const b = t[1].reduce((a, x) => a * x, 1) * size;
    if (def.shardBytes && bytes > 0 && bytes + b > def.shardBytes) {
      shards.push([]);
      bytes = 0;
    }
    shards[shards.length - 1].push(t);
    bytes += b;
  }
  const names = shards.length === 1 ? ['model.safetensors'] : shards.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`);
  const weightMap: Record<string, string> = {};
  let n = 0;
  shards.forEach((list, i) => {
    writeShard(path.join(dir, names[i]), list, def.dtype, seed);
    for (const [name, dims] of list) {
      weightMap[name] = names[i];
      n += dims.reduce((a, x) => a * x, 1);
    }
    log(`  ${names[i]} written (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  });
  if (shards.length > 1) fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: n * size }, weight_map: weightMap }, null, 2));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(def.config, null, 2));
  fs.writeFileSync(done, JSON.stringify({ seed, params: n, dtype: def.dtype }));
  log(`  ${(n / 1e6).toFixed(1)}M parameters written (${def.dtype}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return dir;
}

/** One safetensors file, written tensor by tensor (each drawn, encoded and written before the next). */
function writeShard(file: string, list: [string, number[], Init][], dtype: 'F32' | 'BF16', seed: number): void {
  const size = dtype === 'F32' ? 4 : 2;
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const [name, dims] of list) {
    const b = dims.reduce((a, x) => a * x, 1) * size;
    header[name] = { dtype, shape: dims, data_offsets: [off, off + b] };
    off += b;
  }
  let json = JSON.stringify(header);
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, len);
    fs.writeSync(fd, Buffer.from(json));
    for (const [name, dims, init] of list) {
      const data = new Float32Array(dims.reduce((a, x) => a * x, 1));
      const rand = uniform(hash(name, seed));
      if (init.kind === 'normal') fillNormal(data, init.std, rand);
      else if (init.kind === 'gain') fillNormal(data, 0.02, rand, 1);
      else fillNormal(data, 0.01, rand);
      const bytes = encode(data, dtype);
      for (let at = 0; at < bytes.byteLength; at += 1 << 28) fs.writeSync(fd, bytes, at, Math.min(1 << 28, bytes.byteLength - at));
    }
  } finally {
    fs.closeSync(fd);
  }
}
