import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { downloadFileToCacheDir, modelInfo, HubApiError } from '@huggingface/hub';
import { HydraError } from './errors.js';
import { makeDir } from './paths.js';
import { readWeightMap } from './safetensors.js';

export interface ResolveOptions {
  /** Default: $HYDRA_CACHE, $HF_HUB_CACHE, $HF_HOME/hub, or ~/.cache/huggingface/hub (HF cache layout). */
  cacheDir?: string;
  /** Use only the cache. Default: true if HF_HUB_OFFLINE or HYDRA_OFFLINE is set to 1. */
  offline?: boolean;
  /** Default: $HF_ENDPOINT or https://huggingface.co */
  hubUrl?: string;
  /** Default: $HF_TOKEN */
  accessToken?: string;
  onProgress?: (msg: string) => void;
}

export interface ResolvedModel {
  dir: string;
  repo: string | null;
  revision: string | null;
  commit: string | null;
}

const COMMIT_RE = /^[0-9a-f]{40}$/;
// Hub repo ids: [owner/]name, letters, digits, '-', '_', '.', no '--' or '..', at most 96 chars per part.
const NAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$/;
const OPTIONAL_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];
const INDEX_FILE = 'model.safetensors.index.json';

/** "gpt2" -> {repo: "gpt2", revision: "main"}; "org/name@rev" -> revision "rev". */
export function parseModelSpec(spec: string): { repo: string; revision: string } {
  const at = spec.indexOf('@');
  const repo = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? 'main' : spec.slice(at + 1);
  const parts = repo.split('/');
  const ok =
    parts.length <= 2 && parts.every((p) => NAME_RE.test(p) && !p.includes('--') && !p.includes('..')) &&
    revision.length > 0 && !/[\s@~^:?*[\\]|\.\.|^\/|\/$/.test(revision);
  if (!ok) {
    throw new HydraError(`model spec ${JSON.stringify(spec)} is malformed; use a local directory, a Hub repo id such as "gpt2" or "EleutherAI/pythia-160m", optionally with "@revision"`);
  }
  return { repo, revision };
}

function envFlag(name: string): boolean {
  const v = (process.env[name] ?? '').trim().toLowerCase();
  return v === '1' || v === 'true' || v === 'yes' || v === 'on';
}

export function defaultCacheDir(): string {
  const env = process.env;
  if (env.HYDRA_CACHE) return env.HYDRA_CACHE;
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return path.join(env.HF_HOME, 'hub');
  return path.join(os.homedir(), '.cache', 'huggingface', 'hub');
}

/** Cache folder of a model repo, as huggingface_hub lays it out. */
function repoFolder(cacheDir: string, repo: string): string {
  return path.join(cacheDir, ['models', ...repo.split('/')].join('--'));
}

/** The files Hydra needs that the snapshot `dir` lacks (config.json and the safetensors weights). */
function missingFiles(dir: string): string[] {
  const missing = fs.existsSync(path.join(dir, 'config.json')) ? [] : ['config.json'];
  const indexPath = path.join(dir, INDEX_FILE);
  if (fs.existsSync(indexPath)) {
    try {
      for (const shard of shardNames(indexPath)) if (!fs.existsSync(path.join(dir, shard))) missing.push(shard);
    } catch {
      missing.push(INDEX_FILE);
    }
  } else if (!fs.existsSync(path.join(dir, 'model.safetensors'))) {
    missing.push('model.safetensors');
  }
  return missing;
}

/** Shard file names listed by a model.safetensors.index.json. */
function shardNames(indexPath: string): string[] {
  const names = [...new Set(Object.values(readWeightMap(indexPath)))];
  if (names.length === 0) throw new HydraError(`${indexPath} has an empty "weight_map"; delete it and download again`);
  return names;
}

/** The cached snapshot for repo@revision, or null if it is not (completely) cached. */
function cachedSnapshot(cacheDir: string, repo: string, revision: string): { dir: string; commit: string } | null {
  const folder = repoFolder(cacheDir, repo);
  let commit = revision;
  if (!COMMIT_RE.test(revision)) {
    try {
      commit = fs.readFileSync(path.join(folder, 'refs', revision), 'utf8').trim();
    } catch {
      return null;
    }
  }
  const dir = path.join(folder, 'snapshots', commit);
  return fs.existsSync(dir) && missingFiles(dir).length === 0 ? { dir, commit } : null;
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

/**
 * Resolve a model spec to a local directory: an existing directory as-is, else a Hub repo ("org/name[@revision]"),
 * downloading only what Hydra needs into the HF-layout cache.
 */
export async function resolveModel(spec: string, opts: ResolveOptions = {}): Promise<ResolvedModel> {
  if (fs.existsSync(spec) && fs.statSync(spec).isDirectory()) return { dir: spec, repo: null, revision: null, commit: null };
  // Repo ids have at most one '/', so anything else path-like is a directory that is not there.
  const looksLikePath = /^[.~/]/.test(spec) || spec.includes('\\') || spec.split('/').length > 2 || path.isAbsolute(spec);
  if (fs.existsSync(spec)) throw new HydraError(`model path ${spec} is a file; pass the directory holding config.json and model.safetensors`);
  if (looksLikePath) throw new HydraError(`model directory ${spec} does not exist; pass a directory holding config.json and model.safetensors, or a Hub repo id`);

  const { repo, revision } = parseModelSpec(spec);
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const offline = opts.offline ?? (envFlag('HF_HUB_OFFLINE') || envFlag('HYDRA_OFFLINE'));
  const hubUrl = (opts.hubUrl ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const accessToken = opts.accessToken ?? (process.env.HF_TOKEN || undefined);
  const progress = opts.onProgress ?? (() => {});
  const label = revision === 'main' ? repo : `${repo}@${revision}`;

  if (offline) {
    const hit = cachedSnapshot(cacheDir, repo, revision);
    if (!hit) throw new HydraError(`model ${label} is not in the cache at ${cacheDir}; run once without \`offline\` to download it`);
    return { dir: hit.dir, repo, revision, commit: hit.commit };
  }

  const fail = (e: unknown, what: string): never => {
    if (e instanceof HydraError) throw e;
    if (e instanceof HubApiError) {
      const hubMsg = oneLine(e.message.replace(/\.? ?URL: .*$/s, ''));
      if (e.statusCode === 404) throw new HydraError(`model ${label} was not found on ${hubUrl} (${hubMsg}); check the repo id and revision`);
      if (e.statusCode === 401 || e.statusCode === 403) {
        throw new HydraError(`access to model ${label} on ${hubUrl} was refused (${e.statusCode}); if it is gated or private, accept its licence on the Hub and set HF_TOKEN`);
      }
      throw new HydraError(`the Hub at ${hubUrl} answered ${e.statusCode} while ${what} for ${label} (${hubMsg}); try again later`);
    }
    const cause = (e as { cause?: { code?: string; message?: string } })?.cause;
    const detail = oneLine(cause?.code ?? cause?.message ?? (e instanceof Error ? e.message : String(e)));
    const hint = cachedSnapshot(cacheDir, repo, revision)
      ? `it is in the cache at ${cacheDir}, so you can run with \`offline\``
      : 'check your network or HF_ENDPOINT';
    throw new HydraError(`could not reach ${hubUrl} while ${what} for model ${label} (${detail}); ${hint}`);
  };

  let commit: string;
  let files: Set<string>;
  try {
    const info = await modelInfo({ name: repo, revision, hubUrl, accessToken, additionalFields: ['sha', 'filePaths'] });
    commit = info.sha;
    files = new Set(info.filePaths);
  } catch (e) {
    return fail(e, 'looking up the revision');
  }
  if (typeof commit !== 'string' || !COMMIT_RE.test(commit)) throw new HydraError(`the Hub at ${hubUrl} gave no commit sha for ${label}; check HF_ENDPOINT`);

  if (!files.has('config.json')) throw new HydraError(`model ${label} has no config.json; Hydra needs a transformers causal LM repo`);
  const sharded = !files.has('model.safetensors') && files.has(INDEX_FILE);
  if (!files.has('model.safetensors') && !sharded) {
    const hasBin = [...files].some((f) => /^pytorch_model.*\.bin$/.test(f));
    throw new HydraError(
      hasBin
        ? `model ${label} has only PyTorch .bin weights; Hydra requires safetensors (model.safetensors), so pick a revision or repo that has them`
        : `model ${label} has no model.safetensors or ${INDEX_FILE}; Hydra requires safetensors weights`,
    );
  }
  if (!files.has('tokenizer.json')) progress(`${label} has no tokenizer.json; only token-id prompts will work`);

  // Record the branch/tag -> commit mapping so --offline finds this snapshot later.
  const folder = repoFolder(cacheDir, repo);
  if (revision !== commit) {
    const refPath = path.join(folder, 'refs', revision);
    makeDir(path.dirname(refPath), 'check the cache folder (\`cacheDir\` or HF_HOME) is writable');
    fs.writeFileSync(refPath, commit);
  }

  // Downloading by commit sha puts every file in snapshots/<commit>/ and skips files already there.
  const fetchFile = async (file: string): Promise<string> => {
    const debug = console.debug;
    // The library announces real downloads (not cache hits) with console.debug on stdout; report them via onProgress instead.
    console.debug = () => progress(`downloading ${file} of ${label}`);
    try {
      return await downloadFileToCacheDir({ repo, path: file, revision: commit, cacheDir, hubUrl, accessToken });
    } catch (e) {
      return fail(e, `downloading ${file}`);
    } finally {
      console.debug = debug;
    }
  };

  const wanted = ['config.json', ...OPTIONAL_FILES.filter((f) => files.has(f)), sharded ? INDEX_FILE : 'model.safetensors'];
  let last = '';
  for (const f of wanted) last = await fetchFile(f);
  if (sharded) {
    const shards = shardNames(last);
    const absent = shards.filter((s) => !files.has(s));
    if (absent.length) throw new HydraError(`model ${label}: ${INDEX_FILE} lists ${absent[0]}, which is not in the repo`);
    for (const s of shards) await fetchFile(s);
  }

  const dir = path.join(folder, 'snapshots', commit);
  const missing = missingFiles(dir);
  if (missing.length) throw new HydraError(`download of ${label} into ${dir} is incomplete (missing ${missing.join(', ')}); run again`);
  return { dir, repo, revision, commit };
}
