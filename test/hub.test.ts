import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import crypto from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { resolveModel, parseModelSpec } from '../src/io/hub.js';
import { HydraError } from '../src/io/errors.js';
import { gpt2TokenizerDir } from '../src/io/paths.js';
import { fixtureModelsDir, tmpDir } from './helpers.js';

// A fake Hugging Face Hub serving the endpoints @huggingface/hub calls for modelInfo + downloadFileToCacheDir:
//   GET  /api/models/{repo}/revision/{rev}      -> {sha, siblings, ...}
//   POST /api/models/{repo}/paths-info/{rev}    -> [{path, oid, size, lfs?, lastCommit}]
//   GET|HEAD /{repo}/resolve/{rev}/{path}       -> the file (LFS files: 302 to /cdn/{sha256}, like the Hub's CDN)
// with Range support, ETag / X-Linked-Etag / X-Linked-Size / X-Repo-Commit headers and Hub-style 404s.

interface RepoFile { data: Buffer; lfs: boolean }
interface FakeRepo { revisions: Record<string, string>; files: Map<string, RepoFile> }

const sha1 = (s: string): string => crypto.createHash('sha1').update(s).digest('hex');
const gitOid = (b: Buffer): string => crypto.createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const sha256 = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');

const tinyDir = path.join(fixtureModelsDir, 'tiny-gpt2');
const config = fs.readFileSync(path.join(tinyDir, 'config.json'));
const weights = fs.readFileSync(path.join(tinyDir, 'model.safetensors'));
const tokenizer = fs.readFileSync(path.join(gpt2TokenizerDir, 'tokenizer.json'));
const tokenizerConfig = fs.readFileSync(path.join(gpt2TokenizerDir, 'tokenizer_config.json'));

/** Tensor name -> raw bytes of a safetensors file. */
function readSafetensors(buf: Buffer): Map<string, Buffer> {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  const out = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(header)) if (k !== '__metadata__') out.set(k, buf.subarray(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]));
  return out;
}

/** Split a safetensors file into two valid safetensors files plus the HF index that maps tensors to them. */
function splitSafetensors(buf: Buffer): { shards: [string, Buffer][]; index: Buffer } {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const data = buf.subarray(8 + n);
  const names = Object.keys(header).filter((k) => k !== '__metadata__').sort();
  const halves = [names.slice(0, names.length >> 1), names.slice(names.length >> 1)];
  const shards: [string, Buffer][] = [];
  const weightMap: Record<string, string> = {};
  halves.forEach((group, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    const h: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    const parts: Buffer[] = [];
    let off = 0;
    for (const name of group) {
      const t = header[name];
      const bytes = data.subarray(t.data_offsets[0], t.data_offsets[1]);
      h[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes.length] };
      parts.push(bytes);
      off += bytes.length;
      weightMap[name] = file;
    }
    let json = JSON.stringify(h);
    json += ' '.repeat((8 - (json.length % 8)) % 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    shards.push([file, Buffer.concat([len, Buffer.from(json), ...parts])]);
  });
  const index = Buffer.from(JSON.stringify({ metadata: { total_size: data.length }, weight_map: weightMap }, null, 2));
  return { shards, index };
}

const split = splitSafetensors(weights);
const repos = new Map<string, FakeRepo>([
  ['org/tiny-gpt2', {
    revisions: { main: sha1('tiny main'), 'v1.0': sha1('tiny v1.0') },
    files: new Map<string, RepoFile>([
      ['.gitattributes', { data: Buffer.from('*.safetensors filter=lfs\n'), lfs: false }],
      ['README.md', { data: Buffer.from('# tiny\n'), lfs: false }],
      ['config.json', { data: config, lfs: false }],
      ['tokenizer.json', { data: tokenizer, lfs: false }],
      ['tokenizer_config.json', { data: tokenizerConfig, lfs: false }],
      ['model.safetensors', { data: weights, lfs: true }],
      ['pytorch_model.bin', { data: Buffer.from('not wanted'), lfs: true }],
    ]),
  }],
  ['org/tiny-gpt2-sharded', {
    revisions: { main: sha1('sharded main') },
    files: new Map<string, RepoFile>([
      ['config.json', { data: config, lfs: false }],
      ['tokenizer.json', { data: tokenizer, lfs: false }],
      ['model.safetensors.index.json', { data: split.index, lfs: false }],
      ...split.shards.map(([f, b]): [string, RepoFile] => [f, { data: b, lfs: true }]),
    ]),
  }],
  ['org/bin-only', {
    revisions: { main: sha1('bin main') },
    files: new Map<string, RepoFile>([
      ['config.json', { data: config, lfs: false }],
      ['pytorch_model.bin', { data: Buffer.from('pickle'), lfs: true }],
    ]),
  }],
]);

const log: string[] = [];
let server: http.Server;
let hubUrl = '';
let cacheDir = '';

function notFound(res: http.ServerResponse, code: string, msg: string): void {
  res.writeHead(404, { 'Content-Type': 'application/json', 'X-Error-Code': code });
  res.end(JSON.stringify({ error: msg }));
}

/** Serve bytes with HTTP Range support. */
function sendBytes(req: http.IncomingMessage, res: http.ServerResponse, data: Buffer, headers: Record<string, string>): void {
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  let status = 200;
  let body = data;
  const h: Record<string, string> = { ...headers, 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream' };
  if (m) {
    const start = Number(m[1]);
    const end = m[2] ? Math.min(Number(m[2]), data.length - 1) : data.length - 1;
    status = 206;
    body = data.subarray(start, end + 1);
    h['Content-Range'] = `bytes ${start}-${end}/${data.length}`;
  }
  h['Content-Length'] = String(body.length);
  res.writeHead(status, h);
  res.end(req.method === 'HEAD' ? undefined : body);
}

function handle(req: http.IncomingMessage, res: http.ServerResponse, body: string): void {
  const url = new URL(req.url ?? '/', 'http://x');
  const p = url.pathname;
  log.push(`${req.method} ${p}${req.headers.range ? ` [${req.headers.range}]` : ''}`);
  let m: RegExpExecArray | null;
  if ((m = /^\/cdn\/([0-9a-f]{64})$/.exec(p))) {
    for (const repo of repos.values()) for (const f of repo.files.values()) if (sha256(f.data) === m[1]) return sendBytes(req, res, f.data, { ETag: `"${m[1]}"` });
    return notFound(res, 'EntryNotFound', 'Entry not found');
  }
  m = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|paths-info)\/([^/]+)$/.exec(p) ?? /^\/([^/]+\/[^/]+)\/(resolve)\/([^/]+)\/(.+)$/.exec(p);
  if (!m) return notFound(res, 'NotFound', 'Not found');
  const [, repoName, kind, revEnc, filePath] = m;
  const repo = repos.get(repoName);
  if (!repo) return notFound(res, 'RepoNotFound', 'Repository not found');
  const rev = decodeURIComponent(revEnc);
  const commit = repo.revisions[rev] ?? (Object.values(repo.revisions).includes(rev) ? rev : undefined);
  if (!commit) return notFound(res, 'RevisionNotFound', `Invalid rev id: ${rev}`);

  if (kind === 'revision') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return void res.end(JSON.stringify({
      _id: sha1(repoName).slice(0, 24), id: repoName, private: false, gated: false, downloads: 0, likes: 0,
      lastModified: '2024-01-01T00:00:00.000Z', pipeline_tag: 'text-generation', sha: commit,
      siblings: [...repo.files.keys()].map((rfilename) => ({ rfilename })),
    }));
  }
  if (kind === 'paths-info') {
    const { paths } = JSON.parse(body) as { paths: string[] };
    const out = paths.filter((f) => repo.files.has(f)).map((f) => {
      const { data, lfs } = repo.files.get(f)!;
      return {
        type: 'file', path: f, oid: gitOid(lfs ? Buffer.from(`lfs pointer ${sha256(data)}`) : data), size: data.length,
        ...(lfs ? { lfs: { oid: sha256(data), size: data.length, pointerSize: 134 } } : {}),
        lastCommit: { id: commit, title: 'upload', date: '2024-01-01T00:00:00.000Z' },
        securityFileStatus: { status: 'safe' },
      };
    });
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return void res.end(JSON.stringify(out));
  }
  const file = repo.files.get(filePath);
  if (!file) return notFound(res, 'EntryNotFound', 'Entry not found');
  if (file.lfs) {
    const hash = sha256(file.data);
    res.writeHead(302, {
      Location: `/cdn/${hash}`, 'X-Repo-Commit': commit, 'X-Linked-Etag': `"${hash}"`, 'X-Linked-Size': String(file.data.length), ETag: `"${gitOid(file.data)}"`,
    });
    return void res.end();
  }
  sendBytes(req, res, file.data, { ETag: `"${gitOid(file.data)}"`, 'X-Repo-Commit': commit });
}

before(async () => {
  cacheDir = tmpDir('hydra-hub-cache-');
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => handle(req, res, body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  hubUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

async function stopServer(): Promise<void> {
  if (!server.listening) return;
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
}

after(async () => {
  await stopServer();
  fs.rmSync(cacheDir, { recursive: true, force: true });
});

const isHydra = (re: RegExp) => (e: unknown): boolean => e instanceof HydraError && re.test(e.message) && !e.message.includes('\n');
const same = (a: string, b: Buffer): void => assert.ok(fs.readFileSync(a).equals(b), `${a} differs from the served file`);

test('parseModelSpec', () => {
  assert.deepEqual(parseModelSpec('gpt2'), { repo: 'gpt2', revision: 'main' });
  assert.deepEqual(parseModelSpec('EleutherAI/pythia-160m@step1000'), { repo: 'EleutherAI/pythia-160m', revision: 'step1000' });
  assert.deepEqual(parseModelSpec('org/name@refs/pr/1'), { repo: 'org/name', revision: 'refs/pr/1' });
  for (const bad of ['', 'a/b/c', 'org/', '/name', 'org/na me', 'gpt2@', 'a@b@c', 'org--x/y', 'x/y..z']) {
    assert.throws(() => parseModelSpec(bad), HydraError, bad);
  }
});

test('local directories are returned as-is; missing paths are a HydraError', async () => {
  assert.deepEqual(await resolveModel(tinyDir, { cacheDir, hubUrl }), { dir: tinyDir, repo: null, revision: null, commit: null });
  for (const p of ['./no/such/dir', '/no/such/dir', 'a/b/c']) {
    await assert.rejects(resolveModel(p, { cacheDir, hubUrl }), isHydra(new RegExp(`model directory ${p.replace(/[./]/g, '\\$&')} does not exist`)));
  }
});

test('downloads a repo into the HF cache, records the commit, and reuses the cache', async () => {
  const repo = repos.get('org/tiny-gpt2')!;
  const progress: string[] = [];
  log.length = 0;
  const r = await resolveModel('org/tiny-gpt2', { cacheDir, hubUrl, offline: false, onProgress: (m) => progress.push(m) });
  const snap = path.join(cacheDir, 'models--org--tiny-gpt2', 'snapshots', repo.revisions.main);
  assert.deepEqual(r, { dir: snap, repo: 'org/tiny-gpt2', revision: 'main', commit: repo.revisions.main });
  assert.equal(fs.readFileSync(path.join(cacheDir, 'models--org--tiny-gpt2', 'refs', 'main'), 'utf8'), repo.revisions.main);
  assert.deepEqual(fs.readdirSync(snap).sort(), ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  for (const f of fs.readdirSync(snap)) same(path.join(snap, f), repo.files.get(f)!.data);
  assert.ok(log.includes('GET /cdn/' + sha256(weights)), 'weights fetched through the redirect');
  assert.ok(!log.some((l) => l.includes('pytorch_model.bin') || l.includes('README.md')), 'only needed files are fetched');
  assert.deepEqual(progress, ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'].map((f) => `downloading ${f} of org/tiny-gpt2`));

  // Same revision again: one revision lookup, nothing downloaded.
  log.length = 0;
  const again = await resolveModel('org/tiny-gpt2', { cacheDir, hubUrl, offline: false });
  assert.deepEqual(again, r);
  assert.deepEqual(log, [`GET /api/models/org/tiny-gpt2/revision/main`]);

  // Another revision: its own snapshot, identical bytes; the weights blob is already cached so is not fetched again.
  log.length = 0;
  const v1 = await resolveModel('org/tiny-gpt2@v1.0', { cacheDir, hubUrl, offline: false });
  assert.equal(v1.commit, repo.revisions['v1.0']);
  assert.equal(v1.revision, 'v1.0');
  assert.equal(v1.dir, path.join(cacheDir, 'models--org--tiny-gpt2', 'snapshots', repo.revisions['v1.0']));
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) same(path.join(v1.dir, f), repo.files.get(f)!.data);
  assert.ok(!log.some((l) => l.includes('/cdn/') || l.includes('resolve/' + repo.revisions['v1.0'] + '/model.safetensors')), log.join('\n'));

  // A commit sha as the revision.
  const bySha = await resolveModel(`org/tiny-gpt2@${repo.revisions.main}`, { cacheDir, hubUrl, offline: false });
  assert.equal(bySha.dir, r.dir);
});

test('sharded safetensors: the index and every shard are downloaded', async () => {
  const repo = repos.get('org/tiny-gpt2-sharded')!;
  const r = await resolveModel('org/tiny-gpt2-sharded', { cacheDir, hubUrl, offline: false });
  assert.equal(r.commit, repo.revisions.main);
  assert.deepEqual(fs.readdirSync(r.dir).sort(), ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'tokenizer.json']);
  for (const f of fs.readdirSync(r.dir)) same(path.join(r.dir, f), repo.files.get(f)!.data);
  // The shards hold exactly the original tensors.
  const index = JSON.parse(fs.readFileSync(path.join(r.dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
  const original = readSafetensors(weights);
  assert.equal(Object.keys(index.weight_map).length, original.size);
  assert.equal(original.size, 40);
  for (const [name, bytes] of original) {
    const shard = readSafetensors(fs.readFileSync(path.join(r.dir, index.weight_map[name])));
    assert.ok(shard.get(name)?.equals(bytes), `tensor ${name} survives sharding`);
  }
});

test('Hub errors: unknown repo, unknown revision, .bin-only repo', async () => {
  await assert.rejects(resolveModel('org/nope', { cacheDir, hubUrl, offline: false }), isHydra(/model org\/nope was not found on http:\/\/127\.0\.0\.1:\d+ \(Repository not found\)/));
  await assert.rejects(resolveModel('org/tiny-gpt2@nobranch', { cacheDir, hubUrl, offline: false }), isHydra(/org\/tiny-gpt2@nobranch was not found/));
  await assert.rejects(resolveModel('org/bin-only', { cacheDir, hubUrl, offline: false }), isHydra(/only PyTorch \.bin weights; Hydra requires safetensors/));
});

test('offline: cached repos resolve with the server stopped; uncached ones give a HydraError', async () => {
  const online = await resolveModel('org/tiny-gpt2', { cacheDir, hubUrl, offline: false });
  const sharded = await resolveModel('org/tiny-gpt2-sharded', { cacheDir, hubUrl, offline: false });
  await stopServer();
  log.length = 0;
  assert.deepEqual(await resolveModel('org/tiny-gpt2', { cacheDir, hubUrl, offline: true }), online);
  assert.deepEqual(await resolveModel('org/tiny-gpt2-sharded', { cacheDir, hubUrl, offline: true }), sharded);
  assert.equal((await resolveModel('org/tiny-gpt2@v1.0', { cacheDir, hubUrl, offline: true })).commit, repos.get('org/tiny-gpt2')!.revisions['v1.0']);
  assert.deepEqual(log, []);
  await assert.rejects(resolveModel('org/uncached', { cacheDir, hubUrl, offline: true }), isHydra(/model org\/uncached is not in the cache at .*; run once without `offline`/));
  // Online with the Hub unreachable: a one-line error that points to --offline for a cached model.
  await assert.rejects(resolveModel('org/tiny-gpt2', { cacheDir, hubUrl, offline: false }), isHydra(/could not reach .* for model org\/tiny-gpt2 .*`offline`/));
  await assert.rejects(resolveModel('org/uncached', { cacheDir, hubUrl, offline: false }), isHydra(/could not reach .*check your network/));
  // HF_HUB_OFFLINE=1 switches offline on by default.
  const saved = process.env.HF_HUB_OFFLINE;
  process.env.HF_HUB_OFFLINE = '1';
  try {
    assert.deepEqual(await resolveModel('org/tiny-gpt2', { cacheDir, hubUrl }), online);
  } finally {
    if (saved === undefined) delete process.env.HF_HUB_OFFLINE;
    else process.env.HF_HUB_OFFLINE = saved;
  }
});
