import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { analyze } from '../src/causal/analysis.js';
import { checkSeed, seedOf } from '../src/causal/random.js';
import { ResultsStore } from '../src/experiments/store.js';
import { datasetStatistics } from '../src/experiments/stats.js';
import { loadDataset } from '../src/io/datasets.js';
import { HydraError } from '../src/io/errors.js';
import { defaultModelDir, gpt2TokenizerDir, packageRoot } from '../src/io/paths.js';
import { WeightStore, writeSafetensors } from '../src/io/safetensors.js';
import { MAX_PROMPT_CHARS } from '../src/io/tokenizer.js';
import { HookedModel } from '../src/models/model.js';
import { startServer } from '../src/web/server.js';
import { fixtureModelDir, rawRequest, tmpDir } from './helpers.js';

/**
 * Every bad input gives a HydraError whose one-line message names the file (or flag) and the
 * field at fault, both through the library and through the CLI (exit 1, one stderr line, no stack).
 */

const CLI = path.join(packageRoot, 'dist', 'src', 'cli', 'main.js');
const TINY = fixtureModelDir('tiny-gpt2');
const WEIGHTS = 'model.safetensors';

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function runCli(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, HF_HUB_OFFLINE: '1' };
    delete env.HYDRA_DEBUG;
    execFile(process.execPath, [CLI, ...args], { env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Expect a one-line HydraError containing every fragment. */
function checkMessage(e: unknown, fragments: (string | RegExp)[]): true {
  assert.ok(e instanceof HydraError, `expected a HydraError, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  assert.ok(!e.message.includes('\n'), `message is not one line: ${e.message}`);
  for (const f of fragments) {
    if (typeof f === 'string') assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    else assert.match(e.message, f);
  }
  return true;
}

async function apiLoadFails(dir: string, ...fragments: (string | RegExp)[]): Promise<void> {
  await assert.rejects(HookedModel.load(dir, { threads: 1, offline: true }), (e) => checkMessage(e, fragments));
}

async function cliFails(args: string[], ...fragments: (string | RegExp)[]): Promise<void> {
  const r = await runCli(args);
  assert.equal(r.code, 1, `exit ${r.code}; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 1, `expected one stderr line, got:\n${r.stderr}`);
  assert.match(lines[0], /^hydra: error: /);
  assert.ok(!/^\s+at /m.test(r.stderr), `stack trace in stderr:\n${r.stderr}`);
  assert.ok(!r.stderr.includes('internal error'), r.stderr);
  assert.equal(r.stdout, '');
  for (const f of fragments) {
    if (typeof f === 'string') assert.ok(lines[0].includes(f), `stderr ${JSON.stringify(lines[0])} lacks ${JSON.stringify(f)}`);
    else assert.match(lines[0], f);
  }
}

/** A bad model directory fails the same way through HookedModel.load and `hydra forward`. */
async function bothFail(dir: string, ...fragments: (string | RegExp)[]): Promise<void> {
  await apiLoadFails(dir, ...fragments);
  await cliFails(['forward', '--model', dir, '--ids', '1,2,3', '--threads', '1'], ...fragments);
}

/** A fresh copy of tiny-gpt2 in a temporary directory. */
function copyTiny(): string {
  const dir = path.join(tmpDir('hydra-bad-'), 'tiny-gpt2');
  fs.cpSync(TINY, dir, { recursive: true });
  return dir;
}

/** Every tensor of a model directory, as read by WeightStore (with its stored shape). */
function readAll(dir: string): Record<string, { shape: number[]; data: Float32Array }> {
  const store = WeightStore.open(dir);
  const out: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const name of store.names()) {
    const shape = store.entry(name)!.shape;
    out[name] = { shape, data: store.get(name, shape) };
  }
  return out;
}

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const file = path.join(dir, 'config.json');
  const c = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(c);
  fs.writeFileSync(file, JSON.stringify(c, null, 2));
}

test('missing model directory', async () => {
  const dir = path.join(tmpDir(), 'no-such-model');
  await bothFail(dir, dir, 'does not exist');
});

test('model path that is a file', async () => {
  const file = path.join(copyTiny(), 'config.json');
  await bothFail(file, file, 'is a file');
});

test('directory without config.json', async () => {
  const dir = copyTiny();
  fs.rmSync(path.join(dir, 'config.json'));
  await bothFail(dir, path.join(dir, 'config.json'), 'not found');
});

test('config.json that is not JSON', async () => {
  const dir = copyTiny();
  fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type": "gpt2",');
  await bothFail(dir, path.join(dir, 'config.json'), 'not valid JSON');
});

test('config.json missing a required field', async () => {
  const dir = copyTiny();
  editConfig(dir, (c) => delete c.n_embd);
  await bothFail(dir, path.join(dir, 'config.json'), "'n_embd'");
});

test('missing model.safetensors', async () => {
  const dir = copyTiny();
  fs.rmSync(path.join(dir, WEIGHTS));
  await bothFail(dir, dir, 'model.safetensors');
});

test('truncated safetensors file', async () => {
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
  await bothFail(dir, file, 'truncated', /tensor '[^']+'/);
});

test('safetensors header that is not JSON', async () => {
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  buf.fill('#'.charCodeAt(0), 8, 8 + n); // same length, garbage content
  fs.writeFileSync(file, buf);
  await bothFail(dir, file, 'header', 'not valid JSON');
});

test('safetensors header length larger than the file', async () => {
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  const buf = fs.readFileSync(file);
  buf.writeBigUInt64LE(BigInt(buf.length * 4), 0);
  fs.writeFileSync(file, buf);
  await bothFail(dir, file, 'header length', String(buf.length * 4));
});

test('safetensors file too short for a header', async () => {
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  fs.writeFileSync(file, Buffer.from([1, 2, 3]));
  await bothFail(dir, file, 'too short');
});

test('tensor of the wrong shape', async () => {
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  const tensors = readAll(dir);
  const name = 'transformer.h.1.mlp.c_fc.weight';
  assert.deepEqual(tensors[name].shape, [64, 256]);
  tensors[name].shape = [256, 64];
  writeSafetensors(file, tensors);
  await bothFail(dir, file, `'${name}'`, '[256, 64]', '[64, 256]');
});

test('missing weight', async () => {
  const dir = copyTiny();
  const tensors = readAll(dir);
  const name = 'transformer.h.2.ln_2.bias';
  assert.ok(tensors[name]);
  delete tensors[name];
  writeSafetensors(path.join(dir, WEIGHTS), tensors);
  await bothFail(dir, dir, `'${name}'`, 'missing weight');
});

test('unknown model_type lists the supported types', async () => {
  const dir = copyTiny();
  editConfig(dir, (c) => (c.model_type = 'mamba'));
  await bothFail(dir, path.join(dir, 'config.json'), "'mamba'", 'model_type', 'gpt2', 'llama', 'gpt_neox', 'qwen2', 'gemma');
});

test('prompt longer than the context', async () => {
  const model = await HookedModel.load(TINY, { threads: 1 });
  assert.equal(model.spec.nCtx, 128);
  const ids = Array.from({ length: 129 }, (_, i) => i % 300);
  await assert.rejects(model.forward([ids]), (e) => checkMessage(e, ['129', '128', 'context']));
  // Exactly the context length is fine.
  await model.forward([ids.slice(0, 128)]);
  await cliFails(['forward', '--model', TINY, '--ids', ids.join(','), '--threads', '1'], '--ids', '129', '128', 'context');
});

test('empty prompt: --ids "" and text that tokenizes to nothing', async () => {
  const model = await HookedModel.load(TINY, { threads: 1 });
  await assert.rejects(model.forward([[]]), (e) => checkMessage(e, ['prompt', 'empty']));
  await cliFails(['forward', '--model', TINY, '--ids', ''], '--ids', 'empty');
  await cliFails(['forward', '--model', TINY, '--ids', ' '], '--ids', 'empty');

  // tiny-gpt2 with GPT-2's tokenizer (no BOS added): "" encodes to no tokens.
  const dir = copyTiny();
  fs.copyFileSync(path.join(gpt2TokenizerDir, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  const withTok = await HookedModel.load(dir, { threads: 1 });
  assert.deepEqual(withTok.encode(''), []);
  await assert.rejects(withTok.forward([withTok.encode('')]), (e) => checkMessage(e, ['prompt', 'empty']));
  await cliFails(['forward', '--model', dir, '--text', ''], '--text', 'no tokens', 'empty');
});

test('token id outside the vocabulary', async () => {
  const model = await HookedModel.load(TINY, { threads: 1 });
  await assert.rejects(model.forward([[1, 320]]), (e) => checkMessage(e, ['320', 'vocabulary', '319']));
  await assert.rejects(model.forward([[1, -1]]), (e) => checkMessage(e, ['-1', 'vocabulary']));
  await cliFails(['forward', '--model', TINY, '--ids', '1,320'], '--ids', '320', 'vocabulary');
  await cliFails(['forward', '--model', TINY, '--ids', '1,abc'], '--ids', 'abc');
});

// ---- safetensors: the header is checked strictly ----

type Header = Record<string, { dtype: string; shape: unknown[]; data_offsets: unknown[] } | Record<string, string>>;

/** Rewrite a safetensors file's header (the data area is kept byte for byte). */
function editHeader(file: string, edit: (h: Header) => void): void {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Header;
  edit(header);
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, buf.subarray(8 + n)]));
}

const FC = 'transformer.h.1.mlp.c_fc.weight';
const tensor = (h: Header, name: string) => h[name] as { dtype: string; shape: unknown[]; data_offsets: number[] };

test('safetensors offsets: overlapping, negative, fractional, shifted, gaps and uncovered bytes are refused', async () => {
  const cases: [string, (h: Header) => void, (string | RegExp)[]][] = [
    ['overlapping', (h) => {
      // Point one tensor at another of the same size: both would read the same bytes.
      const a = tensor(h, 'transformer.h.0.ln_1.bias');
      const b = tensor(h, 'transformer.h.0.ln_1.weight');
      a.data_offsets = [...b.data_offsets];
    }, ['overlaps']],
    ['negative', (h) => {
      const t = tensor(h, FC);
      t.data_offsets = [t.data_offsets[0] - 8 - 1000000, t.data_offsets[1] - 8 - 1000000];
    }, [`'${FC}'`, 'non-negative integers']],
    ['fractional', (h) => {
      const t = tensor(h, FC);
      t.data_offsets = [t.data_offsets[0] + 0.5, t.data_offsets[1] + 0.5];
    }, [`'${FC}'`, 'non-negative integers']],
    ['shifted by 4 bytes', (h) => {
      const t = tensor(h, FC);
      t.data_offsets = [t.data_offsets[0] + 4, t.data_offsets[1] + 4];
    }, [/overlaps|belong to no tensor/]],
    ['end before begin', (h) => {
      const t = tensor(h, FC);
      t.data_offsets = [t.data_offsets[1], t.data_offsets[0]];
    }, [`'${FC}'`, 'before it begins']],
    ['a tensor dropped from the header (a gap)', (h) => delete h['transformer.h.0.ln_2.bias'], ['belong to no tensor']],
    ['unknown dtype', (h) => (tensor(h, FC).dtype = 'F33'), [`'${FC}'`, 'unknown dtype', 'F33']],
    ['fractional shape', (h) => (tensor(h, FC).shape = [32.5, 512]), [`'${FC}'`, 'shape', 'non-negative integers']],
    ['size not dtype × shape', (h) => (tensor(h, FC).dtype = 'F16'), [`'${FC}'`, 'needs']],
  ];
  for (const [what, edit, fragments] of cases) {
    const dir = copyTiny();
    const file = path.join(dir, WEIGHTS);
    editHeader(file, edit);
    await apiLoadFails(dir, file, 'corrupt safetensors header', ...fragments).catch((e) => assert.fail(`${what}: ${(e as Error).message}`));
  }
  // Bytes after the last tensor are refused too.
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  fs.appendFileSync(file, Buffer.alloc(12));
  await bothFail(dir, file, 'the last 12 bytes of the data area belong to no tensor');
});

test('a directory in place of model.safetensors, and bad shard names in the index', async () => {
  const dir = copyTiny();
  const file = path.join(dir, WEIGHTS);
  fs.rmSync(file);
  fs.mkdirSync(file);
  await bothFail(dir, file, 'not a regular file');

  const sharded = copyTiny();
  const names = Object.keys(readAll(sharded));
  fs.renameSync(path.join(sharded, WEIGHTS), path.join(sharded, 'model-00001-of-00001.safetensors'));
  const index = path.join(sharded, 'model.safetensors.index.json');
  const writeIndex = (shard: unknown) => fs.writeFileSync(index, JSON.stringify({ weight_map: Object.fromEntries(names.map((n) => [n, shard])) }));
  writeIndex('model-00001-of-00001.safetensors');
  await HookedModel.load(sharded, { threads: 1 }); // the well-formed index loads
  writeIndex(1);
  await bothFail(sharded, index, 'weight_map', 'shard 1', 'a file name in the model folder');
  writeIndex('../tiny-gpt2/model.safetensors');
  await bothFail(sharded, index, 'weight_map', 'a file name in the model folder');
});

test('non-finite weights are refused at load, naming the file and tensor', async () => {
  for (const [value, dtype] of [[NaN, 'F32'], [Infinity, 'BF16'], [-Infinity, 'F16']] as const) {
    const dir = copyTiny();
    const file = path.join(dir, WEIGHTS);
    const tensors = readAll(dir);
    tensors[FC].data[77] = value;
    writeSafetensors(file, tensors, dtype);
    await bothFail(dir, file, `'${FC}'`, `${value}`, 'flat index 77', 'finite');
  }
});

// ---- config.json: numbers validated, layers matched ----

test('config numbers: positive integers, heads dividing the width, eps > 0, rope_theta > 0', async () => {
  const gpt2: [string, unknown, (string | RegExp)[]][] = [
    ['n_layer', 1.5, ['n_layer is 1.5', 'number of layers must be an integer from 1 to 1000']],
    ['n_layer', 0, ['n_layer is 0', 'number of layers']],
    ['n_layer', -2, ['n_layer is -2', 'number of layers']],
    ['n_layer', 2 ** 31, ['n_layer is 2147483648', 'from 1 to 1000']],
    ['n_head', -4, ['attention heads', '-4']],
    ['n_head', 3, ['hidden size 64 is not divisible by 3 heads']],
    ['n_embd', 64.5, ['hidden size', '64.5']],
    ['vocab_size', 1e300, ['vocabulary size', '1e+300']],
    ['layer_norm_epsilon', -1, ['norm epsilon', '-1', 'above 0']],
    ['layer_norm_epsilon', 0, ['norm epsilon', 'is 0']],
  ];
  for (const [field, value, fragments] of gpt2) {
    const dir = copyTiny();
    editConfig(dir, (c) => (c[field] = value));
    await apiLoadFails(dir, path.join(dir, 'config.json'), ...fragments);
  }
  const llama: [string, unknown, (string | RegExp)[]][] = [
    ['rope_theta', 0, ['rope_theta', 'is 0', 'above 0']],
    ['rope_theta', -10000, ['rope_theta', '-10000']],
    ['rms_norm_eps', -1e-5, ['norm epsilon', '-0.00001']],
    ['num_key_value_heads', 3, ['not a multiple of num_key_value_heads (3)']],
    ['num_key_value_heads', 0.5, ['key/value heads', '0.5']],
  ];
  for (const [field, value, fragments] of llama) {
    const dir = path.join(tmpDir('hydra-bad-'), 'llama');
    fs.cpSync(fixtureModelDir('tiny-llama-gqa'), dir, { recursive: true });
    editConfig(dir, (c) => (c[field] = value));
    await apiLoadFails(dir, path.join(dir, 'config.json'), ...fragments);
  }
  const dir = copyTiny();
  editConfig(dir, (c) => (c.n_layer = 1.5));
  await cliFails(['forward', '--model', dir, '--ids', '1,2'], 'n_layer is 1.5', 'number of layers');
});

test('the checkpoint must hold exactly the layers config.json names', async () => {
  const dir = copyTiny();
  editConfig(dir, (c) => (c.n_layer = 2));
  await bothFail(dir, path.join(dir, 'config.json'), 'layer 2', 'names 2 layers', "'transformer.h.2.");
  const more = copyTiny();
  editConfig(more, (c) => (c.n_layer = 4));
  await bothFail(more, "'transformer.h.3.", 'missing weight');
});

test('a number that overflows inside the model is an error naming the component, never NaN with exit 0', async () => {
  const dir = copyTiny();
  const tensors = readAll(dir);
  tensors[FC].data.fill(3e38); // finite weights whose products overflow float32
  writeSafetensors(path.join(dir, WEIGHTS), tensors);
  await cliFails(['forward', '--model', dir, '--ids', '1,2,3', '--json'], '--ids prompt', 'mlp.1 holds', 'overflowed');
  const prompts = path.join(tmpDir(), 'p.json');
  fs.writeFileSync(prompts, JSON.stringify([{ ids: [1, 2, 3] }, { ids: [4, 5] }]));
  await cliFails(['effects', '--model', dir, '--prompts', prompts, '--ablation', 'zero', '--json'], 'prompt 0', 'mlp.1 holds');
});

// ---- bounds on flags and inputs ----

test('huge flags are refused with their limit, before any work', async () => {
  const prompts = path.join(tmpDir(), 'p.json');
  fs.writeFileSync(prompts, JSON.stringify([{ ids: [1, 2] }]));
  await cliFails(['forward', '--model', TINY, '--ids', '1', '--threads', '100000000000000000000'], '--threads', 'limit of 1024');
  await cliFails(['effects', '--model', TINY, '--prompts', prompts, '--ablation', 'noise', '--samples', '1000000000'], '--samples', 'limit of 1000');
  await cliFails(['report', '--db', 'x.duckdb', '--bootstrap', '99999999999999999999'], '--bootstrap', 'limit of 10000');
  await cliFails(['sweep', '--model', TINY, '--seed', '18446744073709551616'], '--seed', 'limit of 9007199254740991');
  await cliFails(['sweep', '--model', TINY, '--limit', '99999999999'], '--limit', 'limit of 2147483647');
  await cliFails(['effects', '--model', TINY, '--prompts', prompts, '--ablation', 'zero', '--targets', 'mlp.01'], "'mlp.01'", 'not a component name');
  // The library refuses them too.
  await assert.rejects(datasetStatistics([], { bootstrap: 1e12 }), (e) => checkMessage(e, ['bootstrap', '10000']));
});

test('a prompt over the character limit is refused before it is tokenized', async () => {
  const model = await HookedModel.load(defaultModelDir, { threads: 1 });
  const long = 'a'.repeat(MAX_PROMPT_CHARS + 1);
  assert.throws(() => model.encode(long), (e) => checkMessage(e, [String(MAX_PROMPT_CHARS + 1), `limit of ${MAX_PROMPT_CHARS}`]));
  assert.ok(model.encode('a'.repeat(1000)).length > 1);
});

test('datasets nested too deep or too large are refused with the limit', async () => {
  const dir = tmpDir();
  const deep = path.join(dir, 'deep.json');
  fs.writeFileSync(deep, '['.repeat(10000) + ']'.repeat(10000));
  await assert.rejects(loadDataset(deep), (e) => checkMessage(e, ['deep.json', 'more than 32 levels']));
  const deepLine = path.join(dir, 'deep.jsonl');
  fs.writeFileSync(deepLine, `{"prompt": "a", "x": ${'['.repeat(10000)}${']'.repeat(10000)}}\n`);
  await assert.rejects(loadDataset(deepLine), (e) => checkMessage(e, ['deep.jsonl line 1', 'more than 32 levels']));
  // Brackets inside strings are text, not nesting.
  const brackets = path.join(dir, 'brackets.json');
  fs.writeFileSync(brackets, JSON.stringify([{ prompt: '[[[[{{{{'.repeat(100) + '\\"]' }]));
  assert.equal((await loadDataset(brackets)).records.length, 1);
  const huge = path.join(dir, 'huge.jsonl');
  fs.writeFileSync(huge, '');
  fs.truncateSync(huge, 300 * 1024 * 1024); // sparse: no disk used
  await assert.rejects(loadDataset(huge), (e) => checkMessage(e, ['huge.jsonl', `${300 * 1024 * 1024} bytes`, 'limit of 268435456']));
  await cliFails(['sweep', '--model', TINY, '--dataset', deep, '--out', path.join(dir, 'r.duckdb')], 'deep.json', 'more than 32 levels');
});

// ---- seeds ----

test('seeds are full 53-bit integers: seed 2^32 differs from seed 0, seeds below 2^32 mix as before', async () => {
  const model = await HookedModel.load(TINY, { threads: 1 });
  const prompts = Array.from({ length: 12 }, (_, i) => [1 + i, 40 + 3 * i, 7 + i]);
  const sources = async (seed: number) =>
    (await analyze(model, prompts, { kind: 'resample', samples: 3, seed, targets: ['attn.0'], allowSameAnswer: true })).map((r) => r.ablations['attn.0'].patches.map((p) => p.source));
  const noiseTe = async (seed: number) => (await analyze(model, prompts.slice(0, 2), { kind: 'noise', samples: 2, seed, targets: ['mlp.0'] })).map((r) => r.ablations['mlp.0'].te);
  assert.notDeepEqual(await sources(2 ** 32), await sources(0));
  assert.notDeepEqual(await sources(2 ** 32 + 5), await sources(5));
  assert.deepEqual(await sources(2 ** 32), await sources(2 ** 32));
  assert.notDeepEqual(await noiseTe(2 ** 32), await noiseTe(0));
  assert.notEqual(seedOf(2 ** 32, 1, 2), seedOf(0, 1, 2));
  assert.notEqual(seedOf(2 ** 53 - 1, 1), seedOf(2 ** 32 - 1, 1));
  // Seeds below 2^32 mix as in earlier releases (so stored sweeps still resume identically).
  assert.equal(seedOf(0, 1, 2), 722861143);
  assert.equal(seedOf(4294967295, 3, 1), 475551005);
  assert.equal(checkSeed(2 ** 53 - 1), 2 ** 53 - 1);
  for (const bad of [2 ** 53, -1, 1.5, NaN]) assert.throws(() => checkSeed(bad), (e) => checkMessage(e, ['--seed', '9007199254740991']));
  await assert.rejects(analyze(model, prompts, { kind: 'zero', seed: 2 ** 53, targets: ['attn.0'] }), (e) => checkMessage(e, ['9007199254740991']));
});

// ---- results databases ----

test('database errors say what is wrong: not a DuckDB file, corrupt, locked by a pid', async () => {
  const dir = tmpDir();
  const text = path.join(dir, 'text.duckdb');
  fs.writeFileSync(text, 'hello\n');
  await assert.rejects(ResultsStore.openReadOnly(text), (e) => checkMessage(e, ['text.duckdb', 'not a DuckDB file']));
  // An SQLite file: DuckDB would want its sqlite extension (never fetched or loaded here).
  const sqlite = path.join(dir, 'sqlite.duckdb');
  fs.writeFileSync(sqlite, Buffer.concat([Buffer.from('SQLite format 3\0'), Buffer.alloc(4096 - 16)]));
  await assert.rejects(ResultsStore.openReadOnly(sqlite), (e) => checkMessage(e, ['sqlite.duckdb', 'not a DuckDB file']));

  const good = path.join(dir, 'good.duckdb');
  const inst = await DuckDBInstance.create(good);
  const con = await inst.connect();
  await con.run('CREATE TABLE t AS SELECT range AS x, range::VARCHAR AS y FROM range(200000)');
  con.closeSync();
  inst.closeSync();
  const corrupt = path.join(dir, 'corrupt.duckdb');
  const bytes = fs.readFileSync(good);
  bytes.fill(0xff, 5000, 25000); // the database headers and the first block
  fs.writeFileSync(corrupt, bytes);
  await assert.rejects(ResultsStore.openReadOnly(corrupt), (e) => checkMessage(e, ['corrupt.duckdb', 'corrupt DuckDB database']));

  // Another process holds the write lock.
  const holder = spawn(process.execPath, ['--input-type=module', '-e',
    `import { DuckDBInstance } from '@duckdb/node-api'; const i = await DuckDBInstance.create(${JSON.stringify(good)}); await i.connect(); console.log('ready'); setTimeout(() => {}, 60000);`],
  { cwd: packageRoot, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      holder.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      holder.on('exit', (code) => reject(new Error(`lock holder exited with ${code}`)));
    });
    await assert.rejects(ResultsStore.openReadOnly(good), (e) => checkMessage(e, ['good.duckdb', `locked by another process (pid ${holder.pid})`]));
  } finally {
    holder.kill('SIGKILL');
  }
});

// ---- the explorer's server ----

test('the server answers only its own Host and Origin (403 otherwise), 400 to malformed targets, and checks --db at start', async () => {
  const model = await HookedModel.load(TINY, { threads: 1 });
  const server = await startServer({ model, modelName: 'tiny-gpt2', pool: [] });
  try {
    const port = Number(new URL(server.url).port);
    const get = async (target: string, headers: string) => (await rawRequest(port, `GET ${target} HTTP/1.1\r\n${headers}Connection: close\r\n\r\n`)).status;
    const own = `Host: 127.0.0.1:${port}\r\n`;
    assert.equal(await get('/api/info', own), 200);
    assert.equal(await get('/api/info', `Host: localhost:${port}\r\n`), 200);
    assert.equal(await get('/api/info', `${own}Origin: http://127.0.0.1:${port}\r\n`), 200);
    assert.equal(await get('/api/info', 'Host: evil.example\r\n'), 403);
    assert.equal(await get('/api/dataset', `Host: evil.example:${port}\r\n`), 403);
    assert.equal(await get('/', `Host: 127.0.0.1:${port + 1}\r\n`), 403);
    assert.equal(await get('/api/info', `${own}Origin: http://evil.example\r\n`), 403);
    assert.equal(await get('/api/info', `${own}Origin: null\r\n`), 403);
    assert.equal(await get('http://[', own), 400);
    assert.equal(await get('*', own), 400);
    assert.equal(await get('//evil.example/', own), 404);
  } finally {
    await server.close();
  }
  const junk = path.join(tmpDir(), 'junk.duckdb');
  fs.writeFileSync(junk, 'junk');
  await assert.rejects(startServer({ model, modelName: 'tiny-gpt2', pool: [], db: junk }), (e) => checkMessage(e, ['junk.duckdb', 'not a DuckDB file']));
});
