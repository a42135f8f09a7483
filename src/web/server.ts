/**
 * `hydra serve`: the interactive explorer. Node serves one page and a small JSON API; every number is
 * computed here with the same code as `hydra effects` (experiments/profile.ts), and every chart is a
 * Vega-Lite spec from report/figures.ts that the page renders with Vega.
 *
 *   GET  /                       the page (src/web/static/index.html)
 *   GET  /static/{app.js,style.css}, /vendor/{vega,vega-lite}.min.js   fixed files only
 *   GET  /api/info               model shape, ablation kinds, the effect fields, whether a database is loaded
 *   POST /api/prompt   {text}    clean run: tokens, top next tokens, DE per component, heads figure
 *   POST /api/ablate   {text, component, kind, samples, seed, allow_same_answer}
 *                                NDJSON stream: {"progress": [done, total]} lines, then {"result": ...}
 *                                (the `hydra effects --json` prompt entry) or {"error": ...}.
 *                                component "all" ablates every attention and MLP layer in turn.
 *                                Closing the request cancels the work between two components.
 *   GET  /api/dataset            with --db: Figures 2, 7 and 8, the findings and the prompts' texts
 *   GET  /api/repair             with --db: the repair matrix heatmap and each ablation's verdict and top responders
 *   GET  /api/stored?prompt=N&component=K
 *                                with --db: prompt N's stored results for ablating K (the `hydra
 *                                effects --json` entry, one ablation), the run's settings and
 *                                sources, Figure 1 from the stored numbers, and (resample and zero
 *                                ablation, same model) the same ablation recomputed live with the
 *                                stored sources, with the largest difference from the stored effects.
 *
 * Only requests whose Host (and Origin, when sent) is this server's own address and port are
 * answered (403 otherwise: no DNS rebinding).
 *
 * The pool's clean runs are computed on the first ablation that needs them and kept (profile.ts
 * poolBank), so an ablation runs only the prompt's clean forward and its ablated runs.
 *
 * Requests are validated and answered 4xx with {"error"} when malformed; nothing from the browser
 * is used as a path. Model work is queued one unit (one component's ablation) at a time, so a long
 * request never holds the model for long and other requests interleave with it.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { ablationKind, CLI_KINDS, DEFAULT_SAMPLES, needsPool, samplesOf } from '../causal/ablations.js';
import { analyze, defaultTargets } from '../causal/analysis.js';
import { checkActivations } from '../causal/finite.js';
import { MAX_SEED } from '../causal/random.js';
import { centredLogit, directEffect, Readout, softmax, topTokens } from '../causal/readout.js';
import { EFFECTS, type AblationKind, type PromptResult } from '../causal/types.js';
import { profilePrompt } from '../experiments/profile.js';
import { ResultsStore } from '../experiments/store.js';
import { modelHash } from '../experiments/sweep.js';
import { HydraError } from '../io/errors.js';
import { toJson } from '../io/json.js';
import { packageRoot } from '../io/paths.js';
import { layerComponents, parseComponent } from '../models/components.js';
import type { HookedModel } from '../models/model.js';
import { analyzeDatabase } from '../report/database.js';
import { compensationFigure, compensationSplitFigure, headsFigure, importanceFigure, profileFigure, repairHeatmap } from '../report/figures.js';

export interface ServeOptions {
  model: HookedModel;
  /** How the model was named, shown on the page. */
  modelName: string;
  /** Source prompts for resample and mean ablation (experiments/profile.ts sourcePool). */
  pool: number[][];
  /** A sweep database for the dataset view. */
  db?: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  log?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  close(): Promise<void>;
}

const MAX_BODY = 64 * 1024;
const MAX_TEXT = 20_000;
const MAX_SAMPLES = 64;

const STATIC: Record<string, [string, string]> = {
  '/': [path.join(packageRoot, 'src', 'web', 'static', 'index.html'), 'text/html; charset=utf-8'],
  '/static/app.js': [path.join(packageRoot, 'src', 'web', 'static', 'app.js'), 'text/javascript; charset=utf-8'],
  '/static/style.css': [path.join(packageRoot, 'src', 'web', 'static', 'style.css'), 'text/css; charset=utf-8'],
  '/vendor/vega.min.js': [vendorFile('vega', 'vega.min.js'), 'text/javascript; charset=utf-8'],
  '/vendor/vega-lite.min.js': [vendorFile('vega-lite', 'vega-lite.min.js'), 'text/javascript; charset=utf-8'],
};

/**
 * A browser build beside a package's entry point, found by module resolution: installed as a
 * dependency, npm hoists vega out of Hydra's own node_modules.
 */
function vendorFile(pkg: string, file: string): string {
  return path.join(path.dirname(fileURLToPath(import.meta.resolve(pkg))), file);
}

/** A 4xx answer: the request, not the server, is at fault. */
class RequestError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** Runs model work one unit at a time, in arrival order. */
class ModelQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const host = opts.host ?? '127.0.0.1';
  // A bad --db fails at start, not on the first visit to the dataset view.
  if (opts.db) await (await ResultsStore.openReadOnly(opts.db)).close();
  const app = new Explorer(opts);
  const server = http.createServer((req, res) => {
    app.handle(req, res).catch((e: unknown) => app.fail(res, e));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new HydraError(`cannot listen on ${host}:${opts.port ?? 0} (${e.code ?? e.message}); choose another \`port\``)),
    );
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

class Explorer {
  private readonly queue = new ModelQueue();
  private dataset?: Promise<unknown>;

  constructor(private readonly opts: ServeOptions) {}

  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    checkHost(req);
    let url: URL;
    try {
      // Origin-form ("/path", "//path" included) or absolute-form; anything else is malformed.
      const target = req.url ?? '/';
      url = new URL(target.startsWith('/') ? `http://localhost${target}` : target);
    } catch {
      throw new RequestError(400, 'malformed request target');
    }
    const route = `${req.method} ${url.pathname}`;
    if (req.method === 'GET' && url.pathname in STATIC) return this.file(res, ...STATIC[url.pathname]);
    switch (route) {
      case 'GET /api/info':
        return this.json(res, 200, this.info());
      case 'POST /api/prompt':
        return this.json(res, 200, await this.prompt(await readJson(req)));
      case 'POST /api/ablate':
        return this.ablate(req, res, await readJson(req));
      case 'GET /api/dataset':
        return this.json(res, 200, await this.datasetView());
      case 'GET /api/stored':
        return this.json(res, 200, await this.stored(url.searchParams));
      case 'GET /api/repair':
        return this.json(res, 200, ((await this.datasetView()) as { repair: unknown }).repair);
    }
    const known = Object.keys(STATIC).includes(url.pathname) || ['/api/info', '/api/prompt', '/api/ablate', '/api/dataset', '/api/stored', '/api/repair'].includes(url.pathname);
    throw new RequestError(known ? 405 : 404, known ? `${req.method} is not allowed on ${url.pathname}` : `no such page: ${url.pathname}`);
  }

  fail(res: http.ServerResponse, e: unknown): void {
    const status = e instanceof RequestError ? e.status : e instanceof HydraError ? 400 : 500;
    const message = e instanceof RequestError || e instanceof HydraError ? e.message : 'internal error; see the server log';
    if (status === 500) this.opts.log?.(`error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    if (res.headersSent) {
      if (!res.writableEnded) res.end(JSON.stringify({ error: message }) + '\n');
      return;
    }
    this.json(res, status, { error: message });
  }

  private json(res: http.ServerResponse, status: number, body: unknown): void {
    const text = toJson(body);
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
    res.end(text);
  }

  private file(res: http.ServerResponse, file: string, type: string): void {
    const body = fs.readFileSync(file);
    res.writeHead(200, { 'content-type': type, 'x-content-type-options': 'nosniff', 'content-security-policy': "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:" });
    res.end(body);
  }

  private info() {
    const { spec } = this.opts.model;
    return {
      model: this.opts.modelName,
      layers: spec.nLayers,
      heads: spec.nHeads,
      width: spec.dModel,
      context: spec.nCtx,
      parallel_residual: spec.parallel,
      kinds: CLI_KINDS.map((k) => ({ name: k, summary: ablationKind(k).summary, samples: ablationKind(k).samples })),
      effects: EFFECTS,
      default_samples: DEFAULT_SAMPLES,
      max_samples: Math.min(MAX_SAMPLES, this.opts.pool.length),
      components: layerComponents(spec),
      dataset: this.opts.db ? path.basename(this.opts.db) : null,
    };
  }

  /** The prompt's token ids, checked against the context. */
  private encode(body: Record<string, unknown>): { text: string; ids: number[] } {
    const text = body.text;
    if (typeof text !== 'string') throw new RequestError(400, 'text must be a string');
    if (text.length > MAX_TEXT) throw new RequestError(400, `text is ${text.length} characters; the limit is ${MAX_TEXT}`);
    if (text.trim() === '') throw new RequestError(400, 'the prompt is empty; type some text');
    const ids = this.opts.model.encode(text);
    this.opts.model.checkPrompt(ids, 'the prompt');
    return { text, ids };
  }

  /** Clean run: top next tokens and every component's DE (heads included). */
  private async prompt(body: Record<string, unknown>) {
    const { text, ids } = this.encode(body);
    const { model } = this.opts;
    const clean = (await this.queue.run(() => model.forward([ids], { heads: true }))).prompts[0];
    checkActivations(clean, 'the prompt');
    const de = await directEffect(new Readout(model), clean);
    const p = softmax(clean.logits);
    const tokenText = (id: number) => model.tokenizer?.tokenText(id) ?? String(id);
    const result: PromptResult = { index: 0, ids, token: clean.token, sigma: clean.sigma, pi_hat: centredLogit(clean.logits, clean.token), de, ablations: {} };
    return {
      text,
      ids,
      pieces: ids.map(tokenText),
      token: clean.token,
      token_text: tokenText(clean.token),
      sigma: clean.sigma,
      pi_hat: result.pi_hat,
      top: topTokens(p, 10).map((id) => ({ id, text: tokenText(id), prob: p[id], logit: clean.logits[id] })),
      de,
      heads_figure: headsFigure(result, undefined, { tokenText: tokenText(clean.token) }),
    };
  }

  private async ablate(req: http.IncomingMessage, res: http.ServerResponse, body: Record<string, unknown>): Promise<void> {
    const { model, pool } = this.opts;
    const { text, ids } = this.encode(body);
    const kind = body.kind ?? 'resample';
    if (typeof kind !== 'string' || !CLI_KINDS.includes(kind as AblationKind)) throw new RequestError(400, `kind must be one of ${CLI_KINDS.join(', ')}`);
    const def = ablationKind(kind);
    const samples = intField(body, 'samples', DEFAULT_SAMPLES, 1, MAX_SAMPLES);
    const seed = intField(body, 'seed', 0, 0, MAX_SEED);
    const allowSameAnswer = body.allow_same_answer ?? false;
    if (typeof allowSameAnswer !== 'boolean') throw new RequestError(400, 'allow_same_answer must be true or false');
    if (typeof body.component !== 'string') throw new RequestError(400, 'component must be a string such as attn.3, mlp.2, head.1.0 or all');
    const targets = body.component === 'all' ? defaultTargets(model, false) : [parseComponent(body.component, model.spec).name];
    if (needsPool(def) && pool.length === 0) throw new RequestError(400, `${kind} ablation needs source prompts; start hydra serve with --sources`);
    if (def.pool === 'sources' && samples > pool.length) throw new RequestError(400, `samples=${samples} is more than the ${pool.length} source prompts; lower it`);

    // From here on the answer streams: progress lines, then the result.
    let cancelled = false;
    res.on('close', () => (cancelled = !res.writableFinished));
    res.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-store' });
    const send = (o: unknown) => res.write(toJson(o) + '\n');
    send({ progress: [0, targets.length] });
    let result: PromptResult | undefined;
    try {
      for (const [i, t] of targets.entries()) {
        if (cancelled) return;
        const r = await this.queue.run(() =>
          cancelled ? Promise.resolve(undefined) : profilePrompt(model, ids, { kind: def.name, targets: [t], samples, seed, allowSameAnswer, heads: true, pool }),
        );
        if (!r) return;
        result = result ? { ...result, ablations: { ...result.ablations, ...r.ablations } } : r;
        send({ progress: [i + 1, targets.length] });
      }
    } catch (e) {
      if (!(e instanceof HydraError)) this.opts.log?.(`error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      send({ error: e instanceof HydraError ? e.message : 'internal error; see the server log' });
      res.end();
      return;
    }
    const r = result!;
    const tokenText = model.tokenizer?.tokenText(r.token);
    const entry = { ...r, text, token_text: tokenText };
    const figures = targets.length === 1
      ? { profile: profileFigure({ ...r, text }, targets[0], { promptText: text, tokenText, kind }), heads: headsFigure(r, targets[0], { tokenText }) }
      : {};
    send({ result: entry, figures, settings: { kind, samples: samplesOf(def.name, samples), seed, rules: def.rules({ allowSameAnswer }) } });
    res.end();
  }

  /** Figures 2, 7 and 8 and the findings of the loaded database, computed once (statistics in DuckDB). */
  private datasetView(): Promise<unknown> {
    const db = this.database();
    this.dataset ??= (async () => {
      const a = await analyzeDatabase(db, { bootstrap: 200 });
      const kind = a.config.ablation;
      return {
        database: path.basename(db),
        config: a.config,
        prompts: a.prompts.map((p) => ({ index: p.index, text: p.text ?? null })),
        findings: a.findings.claims.map((c) => ({ claim: c.claim, title: c.title, verdict: c.verdict, sentence: c.sentence })),
        figures: {
          fig2: importanceFigure(a.prompts, a.stats, { kind }),
          fig7: compensationFigure(a.prompts, a.stats, { kind }),
          fig8: compensationSplitFigure(a.prompts, a.stats, { kind }),
        },
        repair: {
          level: a.repair.level,
          n_prompts: a.repair.n_prompts,
          figure: repairHeatmap(a.repair),
          rows: a.repair.rows.map((r) => ({ ablated: r.ablated, verdict: r.verdict, sentence: r.sentence, stability: r.stability, top: r.top.slice(0, 3).map((t) => ({ component: t.component, mean_dde: t.mean_dde })) })),
        },
      };
    })();
    this.dataset.catch(() => (this.dataset = undefined));
    return this.dataset;
  }

  private database(): string {
    if (!this.opts.db) throw new RequestError(404, 'no results database loaded; start hydra serve with --db results.duckdb');
    return this.opts.db;
  }

  /** One prompt's stored ablation of one component, and the same recomputed live where the run can be repeated. */
  private async stored(q: URLSearchParams) {
    const db = this.database();
    const index = Number(q.get('prompt'));
    const component = q.get('component') ?? '';
    if (!Number.isInteger(index) || index < 0) throw new RequestError(400, 'prompt must be a prompt index of the database');
    const { model } = this.opts;
    const target = parseComponent(component, model.spec).name;
    const store = await ResultsStore.openReadOnly(db);
    let r: PromptResult | undefined;
    let sourceIds: number[][] = [];
    const config = store.config;
    try {
      [r] = await store.readResults({ prompts: [index], layersOnly: !['head', 'attn_bias'].includes(parseComponent(target).kind) });
      if (!r) throw new RequestError(404, `prompt ${index} is not a kept prompt of ${path.basename(db)}`);
      if (!r.ablations[target]) throw new RequestError(404, `${target} was not ablated in prompt ${index} of ${path.basename(db)}`);
      const sources = r.ablations[target].patches.map((p) => p.source).filter((x): x is number => x !== null);
      if (sources.length) {
        const rows = await store.query(`SELECT prompt_idx, ids FROM prompts WHERE prompt_idx IN (${sources.join(', ')})`);
        const ids = new Map(rows.map((x) => [Number(x.prompt_idx), x.ids as number[]]));
        sourceIds = sources.map((s) => ids.get(s)!);
      }
    } finally {
      await store.close();
    }
    const a = r.ablations[target];
    const storedResult: PromptResult = { ...r, ablations: { [target]: a } };
    const sameModel = !!config.model_hash && config.model_hash === modelHash(model.source.dir);
    let live: PromptResult | null = null;
    let note: string;
    if (!sameModel) note = 'the loaded model is not the one this run was computed with; showing the stored numbers only';
    else if (config.ablation === 'resample' || config.ablation === 'zero') {
      // the prompt, then its stored sources; only the prompt is ablated
      const prompts = [r.ids, ...sourceIds];
      const S = sourceIds.length;
      const sources = config.ablation === 'resample' ? prompts.map((_, i) => (i === 0 ? [...Array(S).keys()].map((j) => j + 1) : [...Array(S + 1).keys()].filter((j) => j !== i))) : undefined;
      const skip = new Set([...Array(S).keys()].map((j) => j + 1));
      [live] = await this.queue.run(() => analyze(model, prompts, { kind: config.ablation, targets: [target], sources, skip, heads: !!config.heads }));
      note = `recomputed live with the stored ${config.ablation === 'resample' ? `sources (prompts ${a.patches.map((p) => p.source).join(', ')})` : 'settings'}`;
    } else note = `${config.ablation} ablation depends on the whole run (its dataset mean or noise draws); showing the stored numbers only`;
    const fields = ['te', 'ce', 'ce_attn', 'ce_mlp', 'ne', 'ie', 'dde_self'] as const;
    const diff = live ? Math.max(...fields.map((f) => Math.abs(live!.ablations[target][f] - a[f]))) : null;
    return {
      text: r.text ?? null,
      prompt: index,
      component: target,
      settings: { kind: config.ablation, samples: config.samples, seed: config.seed, database: path.basename(db) },
      sources: a.patches.map((p) => p.source),
      result: { ...storedResult, ablations: { [target]: { ...a, patches: a.patches.map((p) => ({ ...p, de_prime: {} })) } } },
      live: live ? { te: live.ablations[target].te, ce: live.ablations[target].ce, max_abs_diff: diff } : null,
      note,
      figures: { profile: profileFigure(storedResult, target, { promptText: r.text, kind: config.ablation }) },
    };
  }
}

/**
 * Answer only requests addressed to this server: Host must be the address and port the
 * connection came in on (or localhost on a loopback address), and Origin, when sent, the
 * same. Otherwise any web page could reach the API through DNS rebinding.
 */
function checkHost(req: http.IncomingMessage): void {
  const { localAddress, localPort } = req.socket;
  const addr = (localAddress ?? '').replace(/^::ffff:/, '');
  const hosts = [`${addr.includes(':') ? `[${addr}]` : addr}:${localPort}`];
  if (addr === '127.0.0.1' || addr === '::1') hosts.push(`localhost:${localPort}`);
  const host = (req.headers.host ?? '').toLowerCase();
  if (!hosts.includes(host)) throw new RequestError(403, `Host ${JSON.stringify(req.headers.host ?? '')} is not this server (${hosts.join(' or ')})`);
  const origin = req.headers.origin;
  if (origin !== undefined && origin.toLowerCase() !== `http://${host}`) throw new RequestError(403, `Origin ${JSON.stringify(origin)} is not this server's page`);
}

function intField(body: Record<string, unknown>, name: string, dflt: number, min: number, max: number): number {
  const v = body[name] ?? dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new RequestError(400, `${name} must be an integer from ${min} to ${max}`);
  return v;
}

/** The request body as a JSON object, at most MAX_BODY bytes. */
async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const type = req.headers['content-type'] ?? '';
  if (!/^application\/json\b/.test(type)) throw new RequestError(415, 'send the request body as application/json');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new RequestError(413, `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new RequestError(400, 'the request body is not valid JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new RequestError(400, 'the request body must be a JSON object');
  return body as Record<string, unknown>;
}
