import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { analyze } from '../src/causal/analysis.js';
import { mulberry32 } from '../src/causal/random.js';
import { main } from '../src/cli/main.js';
import { sourcePool } from '../src/experiments/profile.js';
import { runSweep } from '../src/experiments/sweep.js';
import { loadDataset } from '../src/io/datasets.js';
import { HydraError } from '../src/io/errors.js';
import { defaultModelDir } from '../src/io/paths.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { HookedModel } from '../src/models/model.js';
import { startServer } from '../src/web/server.js';
import { fixtureModelDir, fixturesDir, maxAbsDiff, rawRequest, tmpDir } from './helpers.js';

/**
 * Seeded fuzzing of every input family: safetensors headers, config.json, CLI flags and
 * files, datasets, and HTTP requests. Each generated case must end in a clean one-line error
 * or a correct result, never an internal error, a crash or a NaN with exit 0. The number of
 * cases is fixed; printed with the failing case, the seed and case number reproduce it.
 */

const SEED = 20261202;
const rand = mulberry32(SEED);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
const int = (n: number) => Math.floor(rand() * n);
const TINY = fixtureModelDir('tiny-gpt2');
const PROMPT = [1, 2, 3, 4];

/** A library failure must be a one-line HydraError. */
function cleanError(e: unknown, what: string): void {
  assert.ok(e instanceof HydraError, `${what}: expected a HydraError, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  assert.ok(!e.message.includes('\n') && e.message.length > 0, `${what}: message not one line: ${e.message}`);
}

/** Every number in a value is finite, and no numeric field is null (NaN serialised). */
function allFinite(v: unknown, what: string, nullable: ReadonlySet<string> = new Set(), key = ''): void {
  if (typeof v === 'number') assert.ok(Number.isFinite(v), `${what}: ${key} is ${v}`);
  else if (v === null) assert.ok(nullable.has(key), `${what}: ${key} is null`);
  else if (ArrayBuffer.isView(v)) allFinite(Array.from(v as Float32Array), what, nullable, key);
  else if (v instanceof Map) for (const [k, x] of v) allFinite(x, what, nullable, String(k));
  else if (Array.isArray(v)) v.forEach((x) => allFinite(x, what, nullable, key));
  else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) allFinite(x, what, nullable, k);
}

// ---- safetensors headers ----

type Entry = { dtype: unknown; shape: unknown[]; data_offsets: unknown[] };

/** A mutation of a safetensors file that makes it invalid (or, for 'none' and '__metadata__', changes nothing the model reads). */
function mutateWeights(buf: Buffer): { bytes: Buffer; kind: string } {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, Entry>;
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const t = header[pick(names)];
  const data = Buffer.from(buf.subarray(8 + n));
  let lengthField: number | null = null;
  const kind = pick(['offset', 'offset-other', 'shape', 'dtype', 'delete', 'length', 'truncate', 'append', 'junk', 'nan', 'metadata', 'none'] as const);
  switch (kind) {
    case 'offset': {
      const k = int(2);
      const o = t.data_offsets[k] as number;
      t.data_offsets[k] = pick([o - 1, o + 1, o + 4, o - 4, o + 0.5, -o - 1, o + 1e6, 2 ** 53, 2 ** 64, String(o), null]);
      break;
    }
    case 'offset-other':
      t.data_offsets = [...header[pick(names)].data_offsets];
      if (t.data_offsets.length === 2) (t.data_offsets as number[])[1] += pick([0, 4]) as number;
      break;
    case 'shape': {
      const d = t.shape.length > 0 ? int(t.shape.length) : 0;
      const v = t.shape[d] as number;
      t.shape[d] = pick([0, -1, 0.5, v * 2, v + 1, String(v), null, 1e20, -v]);
      if (rand() < 0.2) t.shape.push(pick([0, 2, 1.5]));
      break;
    }
    case 'dtype':
      t.dtype = pick(['F16', 'BF16', 'F64', 'I32', 'U8', 'F33', 'f32', 7, null, 'I64']);
      break;
    case 'delete':
      delete header[pick(names)];
      break;
    case 'length':
      lengthField = pick([n - 1, n + 1, n + 8, 0, 1, 2 ** 40, buf.length]);
      break;
    case 'metadata':
      header.__metadata__ = pick([{ format: 'pt' }, { a: 'b' }, {}]) as unknown as Entry;
      break;
    default:
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(lengthField ?? json.length));
  let bytes = Buffer.concat([len, json, data]);
  if (kind === 'truncate') bytes = bytes.subarray(0, int(bytes.length));
  if (kind === 'append') bytes = Buffer.concat([bytes, Buffer.alloc(1 + int(64), int(256))]);
  if (kind === 'junk') Buffer.alloc(n, pick(['#', '{', ' ', '\0'])).copy(bytes, 8);
  if (kind === 'nan') bytes.writeUInt32LE(pick([0x7fc00000, 0x7f800000, 0xff800000]), 8 + json.length + 4 * int(data.length / 4));
  return { bytes, kind };
}

test('fuzz: 80 corrupted safetensors files load with the right weights or fail with one clean line', async () => {
  const original = fs.readFileSync(path.join(TINY, 'model.safetensors'));
  const reference = (await (await HookedModel.load(TINY, { threads: 1 })).forward([PROMPT])).prompts[0].logits;
  const dir = path.join(tmpDir('hydra-fuzz-'), 'model');
  fs.cpSync(TINY, dir, { recursive: true });
  const kinds = new Map<string, number>();
  for (let i = 0; i < 80; i++) {
    const { bytes, kind } = mutateWeights(original);
    fs.writeFileSync(path.join(dir, 'model.safetensors'), bytes);
    const what = `safetensors case ${i} (${kind})`;
    try {
      const model = await HookedModel.load(dir, { threads: 1 });
      const logits = (await model.forward([PROMPT])).prompts[0].logits;
      // Accepted: it must be the same model, number for number.
      assert.ok(maxAbsDiff(logits, reference) === 0, `${what}: loaded, but the logits differ from the original's`);
      kinds.set('accepted', (kinds.get('accepted') ?? 0) + 1);
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      cleanError(e, what);
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    }
  }
  assert.ok((kinds.get('accepted') ?? 0) > 0 && kinds.size > 8, `too few kinds of cases: ${JSON.stringify([...kinds])}`);
});

// ---- config.json ----

test('fuzz: 100 mutated config.json files give finite results or one clean line', async () => {
  const models = fs.readdirSync(path.join(fixturesDir, 'models'));
  const root = tmpDir('hydra-fuzz-');
  const values = [0, -1, 1, 2, 1.5, -0.5, 1e300, -1e300, 1e-300, 2 ** 53, 2 ** 31, '8', null, true, [], {}];
  let accepted = 0;
  for (let i = 0; i < 100; i++) {
    const name = pick(models);
    const dir = path.join(root, String(i));
    fs.cpSync(fixtureModelDir(name), dir, { recursive: true });
    const file = path.join(dir, 'config.json');
    const config = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    const keys = Object.keys(config).filter((k) => typeof config[k] === 'number' || config[k] === null);
    const key = pick(keys);
    const value = rand() < 0.15 ? undefined : pick(values);
    if (value === undefined) delete config[key];
    else config[key] = value;
    fs.writeFileSync(file, JSON.stringify(config));
    const what = `config case ${i}: ${name} ${key} = ${JSON.stringify(value) ?? '(deleted)'}`;
    try {
      const model = await HookedModel.load(dir, { threads: 1 });
      const results = await analyze(model, [PROMPT, [5, 6, 7]], { kind: 'zero', targets: ['attn.0', `mlp.${model.spec.nLayers - 1}`] });
      allFinite(results, what, new Set(['source']));
      accepted++;
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      cleanError(e, what);
    }
    fs.rmSync(dir, { recursive: true });
  }
  assert.ok(accepted > 0 && accepted < 100, `${accepted} of 100 accepted`);
});

// ---- the CLI, in process ----

interface CliOutcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `hydra ...args` in this process, capturing its output and exit code. */
async function cli(args: string[]): Promise<CliOutcome> {
  const out: string[] = [];
  const err: string[] = [];
  const writes = [process.stdout.write, process.stderr.write];
  const listeners = process.stdout.listeners('error');
  process.stdout.write = ((s: string | Uint8Array) => out.push(String(s)) > 0) as typeof process.stdout.write;
  process.stderr.write = ((s: string | Uint8Array) => err.push(String(s)) > 0) as typeof process.stderr.write;
  try {
    await main(['node', 'hydra', ...args]);
  } finally {
    [process.stdout.write, process.stderr.write] = writes;
    for (const l of process.stdout.listeners('error')) if (!listeners.includes(l)) process.stdout.off('error', l as () => void);
  }
  const code = Number(process.exitCode ?? 0);
  process.exitCode = undefined;
  return { code, stdout: out.join(''), stderr: err.join('') };
}

/** One clean error line (log lines before it are allowed), or success with finite JSON. */
function cleanOutcome(r: CliOutcome, what: string, json: boolean): void {
  assert.ok(!/internal error/.test(r.stderr) && !/^\s+at /m.test(r.stderr), `${what}: ${r.stderr}`);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('hydra: error: '));
  if (r.code !== 0) {
    assert.equal(r.code, 1, `${what}: exit ${r.code}`);
    assert.equal(errors.length, 1, `${what}: expected one error line, got:\n${r.stderr}`);
    return;
  }
  assert.equal(errors.length, 0, `${what}: exit 0 with ${r.stderr}`);
  if (json) allFinite(JSON.parse(r.stdout), what, new Set(['commit', 'token_texts', 'token_text', 'text', 'source', 'de_prime_own_scale']));
}

/** Values of each flag: [well-formed, malformed]; a flag draws a malformed value one time in four. */
const FLAGS = {
  threads: [['1', '2'], ['0', '-1', '1e20', '100000000000000000000', '1.5', 'abc', '', '1025']],
  samples: [['1', '2', '3'], ['0', '-3', '1000000000', '2.5', 'x', '1001']],
  seed: [['0', '1', '4294967296', '9007199254740991'], ['9007199254740992', '18446744073709551616', '-1', '1e3', '0x10']],
  targets: [['attn.0', 'mlp.2', 'embed', 'head.0.3', 'attn_bias.1', 'attn.1,mlp.0'], ['mlp.01', 'attn.-1', 'attn.3', 'head.0.4', 'attn.0,,mlp.1', '', 'mlp.1.0', 'MLP.1']],
  ids: [['1,2,3', ' 7 , 8 ', '319,0'], ['', '1,,2', '320', '-1', '1.5', '99999999999999999999', Array.from({ length: 129 }, (_, i) => i).join(',')]],
  bootstrap: [['1', '5', '20'], ['0', '10001', '99999999999999999999']],
  limit: [['1', '3', '8'], ['0', '99999999999', '-1']],
  shard: [['0/2', '1/2'], ['2/2', '0/0', 'a/b', '1/99999999999999999999']],
  ablation: [['zero', 'mean', 'resample', 'noise'], ['bogus']],
} as const;

const value = (flag: keyof typeof FLAGS): string => pick(FLAGS[flag][rand() < 0.25 ? 1 : 0]);
/** `--flag value` with probability p. */
const maybe = (flag: keyof typeof FLAGS, p = 0.5): string[] => (rand() < p ? [`--${flag}`, value(flag)] : []);

test('fuzz: 80 hydra command lines (flags, prompt files, datasets) end in a clean error or finite output', async () => {
  const dir = tmpDir('hydra-fuzz-');
  const files = {
    good: [{ ids: [1, 2, 3] }, { ids: [4, 5, 6, 7] }, { ids: [8, 9] }],
    deep: JSON.parse('['.repeat(5000) + ']'.repeat(5000)) as unknown,
    empty: [],
    negative: [{ ids: [1, -2] }],
    huge: [{ ids: [1, 2 ** 60] }],
    text: [{ text: 'no tokenizer here' }],
    long: [{ ids: Array.from({ length: 200 }, (_, i) => i) }],
    float: [{ ids: [1.5, 2] }],
    object: { ids: [1, 2] },
  };
  const promptFiles = Object.entries(files).map(([k, v]) => {
    const f = path.join(dir, `${k}.json`);
    fs.writeFileSync(f, k === 'deep' ? '['.repeat(5000) + ']'.repeat(5000) : JSON.stringify(v));
    return f;
  });
  const dataset = path.join(dir, 'ids.jsonl');
  fs.writeFileSync(dataset, Array.from({ length: 10 }, (_, i) => JSON.stringify({ ids: [1 + i, 2 + i, 3 + i] })).join('\n'));
  const datasets = [dataset, promptFiles[1], promptFiles[2], path.join(dir, 'missing.jsonl'), dir];
  const db = path.join(dir, 'good.duckdb');
  await runSweep({ model: await HookedModel.load(TINY, { threads: 1 }), modelName: TINY, dataset, ablation: 'zero', out: db, filter: false });
  const junkDb = path.join(dir, 'junk.duckdb');
  fs.writeFileSync(junkDb, 'junk');

  let succeeded = 0;
  let reported = false;
  for (let i = 0; i < 80; i++) {
    const command = pick(['forward', 'forward', 'effects', 'effects', 'effects', 'sweep', 'sweep', 'report'] as const);
    const good = rand() < 0.6;
    let args: string[];
    if (command === 'forward') args = ['forward', '--model', TINY, '--ids', value('ids'), ...maybe('threads', 0.3), '--json', ...(rand() < 0.3 ? ['--heads'] : [])];
    else if (command === 'effects') {
      const prompts = good ? promptFiles[0] : pick(promptFiles);
      args = ['effects', '--model', TINY, '--prompts', prompts, '--ablation', value('ablation'), ...maybe('samples'), ...maybe('seed'), ...maybe('targets', 0.7), ...maybe('threads', 0.2), '--json'];
    } else if (command === 'sweep') {
      const data = good ? dataset : pick(datasets);
      args = ['sweep', '--model', TINY, '--dataset', data, '--no-filter', '--ablation', value('ablation'), '--out', path.join(dir, `s${i}.duckdb`), ...maybe('samples'), ...maybe('seed'), ...maybe('limit'), ...maybe('shard', 0.3)];
    } else {
      // A report that succeeds renders every figure (seconds): one is enough.
      const reportDb = reported ? pick([junkDb, path.join(dir, 'none.duckdb')]) : db;
      args = ['report', '--db', reportDb, '--out', path.join(dir, `report${i}`), ...maybe('bootstrap', 0.8)];
    }
    const r = await cli(args);
    cleanOutcome(r, `command case ${i}: hydra ${args.join(' ')}`, command === 'forward' || command === 'effects');
    succeeded += r.code === 0 ? 1 : 0;
    reported ||= command === 'report' && r.code === 0;
  }
  assert.ok(succeeded >= 15 && succeeded <= 65, `${succeeded} of 80 command lines succeeded; the cases should mix both outcomes`);
});

// ---- datasets ----

/** A random JSON value, nested up to `depth`. */
function randomJson(depth: number): unknown {
  const leaf = () => pick([0, -1, 1.5, 2 ** 60, 'text', '', 'Paris', true, null, 'a'.repeat(int(300))]);
  if (depth <= 0 || rand() < 0.3) return leaf();
  if (rand() < 0.5) return Array.from({ length: int(4) }, () => randomJson(depth - 1));
  const keys = ['prompt', 'text', 'answer', 'ids', 'id', 'subject', 'known_id', 'attribute', 'requested_rewrite', 'x'];
  return Object.fromEntries(Array.from({ length: int(5) }, () => [pick(keys), randomJson(depth - 1)]));
}

test('fuzz: 60 generated dataset files load as valid records or fail with one clean line', async () => {
  const dir = tmpDir('hydra-fuzz-');
  for (let i = 0; i < 60; i++) {
    const ext = pick(['.json', '.jsonl', '.csv', '.txt']);
    const deep = rand() < 0.1;
    // Records as JSON text; a deep one is 10,000 nested lists.
    const records = Array.from({ length: int(5) }, () => (deep ? '['.repeat(10000) + ']'.repeat(10000) : JSON.stringify(randomJson(int(6))) ?? 'null'));
    let text: string;
    if (ext === '.jsonl') text = records.join('\n');
    else if (ext === '.csv') text = ['prompt,answer', ...records.map((r) => `${r},${pick(['Paris', '', '"a,b"'])}`)].join('\n');
    else text = rand() < 0.8 ? `[${records.join(',')}]` : (records[0] ?? 'null');
    const file = path.join(dir, `d${i}${ext}`);
    fs.writeFileSync(file, text);
    try {
      const ds = await loadDataset(file);
      for (const r of ds.records) {
        assert.equal(typeof r.prompt, 'string', `dataset case ${i}`);
        assert.ok(r.answer === undefined || typeof r.answer === 'string', `dataset case ${i}`);
        assert.ok(r.ids === undefined || r.ids.every((t) => Number.isSafeInteger(t) && t >= 0), `dataset case ${i}: ids ${r.ids}`);
        assert.ok(r.ids !== undefined || r.prompt.trim() !== '', `dataset case ${i}: empty prompt accepted`);
      }
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      cleanError(e, `dataset case ${i} (${ext}): ${text.slice(0, 80)}`);
    }
  }
});

// ---- HTTP requests to the explorer ----

test('fuzz: 40 HTTP requests get 2xx or a 4xx JSON error, and 403 unless addressed to the server', async () => {
  const model = await HookedModel.load(defaultModelDir, { threads: 1 });
  const logged: string[] = [];
  const server = await startServer({ model, modelName: 'stories260k', pool: (await sourcePool(model)).slice(0, 8), log: (l) => logged.push(l) });
  try {
    const port = Number(new URL(server.url).port);
    const own = `127.0.0.1:${port}`;
    for (let i = 0; i < 40; i++) {
      const host = pick([own, own, own, `localhost:${port}`, 'evil.example', `evil.example:${port}`, `127.0.0.1:${port + 1}`, '', `[::1]:${port}`]);
      const origin = pick([null, null, `http://${host}`, 'http://evil.example', 'null']);
      const [method, target] = pick([['GET', '/api/info'], ['GET', '/'], ['GET', '/api/dataset'], ['POST', '/api/prompt'], ['POST', '/api/ablate'], ['GET', '*'], ['GET', 'http://['],
        ['GET', '/%'], ['GET', '/../../etc/passwd'], ['DELETE', '/api/info'], ['POST', '/api/info']] as const);
      const body = JSON.stringify(pick([
        { text: 'Once upon a time' }, { text: '' }, { text: 7 }, { text: 'x'.repeat(30000) },
        { text: 'Once upon a time', component: pick(['attn.1', 'mlp.01', 'head.0.9', 'all', 7]), kind: pick(['zero', 'mean', 'resample', 'bogus']), samples: pick([1, 2, 0, 65, 1.5]), seed: pick([0, 2 ** 32, 2 ** 53, -1]) },
        [], 'text', null,
      ]));
      const headers = `${host ? `Host: ${host}\r\n` : ''}${origin ? `Origin: ${origin}\r\n` : ''}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n`;
      const r = await rawRequest(port, `${method} ${target} HTTP/1.1\r\n${headers}\r\n${method === 'POST' ? body : ''}`);
      const what = `request case ${i}: ${method} ${target} Host ${host} Origin ${origin}: ${r.status} ${r.body.slice(0, 200)}`;
      const ours = host === own || host === `localhost:${port}`;
      // Node itself answers 400 to an HTTP/1.1 request without Host.
      if (host === '') assert.equal(r.status, 400, what);
      else if (!ours || (origin !== null && origin !== `http://${host}`)) assert.equal(r.status, 403, what);
      else assert.ok((r.status >= 200 && r.status < 300) || (r.status >= 400 && r.status < 500), what);
      if (r.status >= 400 && host !== '') assert.match(r.body, /"error":"[^"\n]+"/, what);
      assert.ok(!/"error":"internal error/.test(r.body), what);
    }
  } finally {
    await server.close();
  }
  assert.deepEqual(logged, [], 'the server logged an internal error');
});
