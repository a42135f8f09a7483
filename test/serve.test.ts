import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ResultsStore } from '../src/experiments/store.js';
import { sourcePool } from '../src/experiments/profile.js';
import { defaultModelDir, packageRoot, storiesRecallPath } from '../src/io/paths.js';
import { HookedModel } from '../src/models/model.js';
import { startServer, type RunningServer } from '../src/web/server.js';
import { repairFromDatabase } from '../src/experiments/repair.js';
import { tmpDir } from './helpers.js';

/**
 * `hydra serve`: the page driven in Debian's Chromium with playwright-core (numbers on the page
 * against `hydra effects --json`), and the API's validation, cancellation and concurrency.
 * Without /usr/bin/chromium the browser tests are skipped, unless HYDRA_REQUIRE_BROWSER=1 (CI).
 */
const cli = path.join(packageRoot, 'dist', 'src', 'cli', 'main.js');
const CHROMIUM = process.env.HYDRA_CHROMIUM ?? '/usr/bin/chromium';
const hasBrowser = fs.existsSync(CHROMIUM);
if (!hasBrowser && process.env.HYDRA_REQUIRE_BROWSER === '1') throw new Error(`HYDRA_REQUIRE_BROWSER=1 but ${CHROMIUM} is missing; apt-get install chromium`);
const browserSkip = hasBrowser ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium)`;
const TEXT = 'Once upon a time, there was a girl named Lily. She liked to play with her ball. One day, Lily';
const shots = process.env.HYDRA_SCREENSHOTS ?? tmpDir('hydra-shots-');

let model: HookedModel;
let pool: number[][];
let server: RunningServer;
let dbServer: RunningServer;
let db: string;
let browser: Browser | undefined;

before(async () => {
  model = await HookedModel.load(defaultModelDir);
  pool = await sourcePool(model);
  server = await startServer({ model, modelName: 'stories260k', pool });
  db = path.join(tmpDir(), 'r.duckdb');
  const sweep = spawnSync(process.execPath, [cli, 'sweep', '--dataset', storiesRecallPath, '--limit', '16', '--samples', '3', '--out', db], { encoding: 'utf8' });
  assert.equal(sweep.status, 0, sweep.stderr);
  dbServer = await startServer({ model, modelName: 'stories260k', pool, db });
  if (hasBrowser) {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  }
});

after(async () => {
  assert.deepEqual(pageErrors, [], `errors in the page: ${pageErrors.join(' / ')}`);
  await browser?.close();
  await server?.close();
  await dbServer?.close();
});

function effectsJson(ids: number[], target: string, kind: string, samples: number) {
  const dir = tmpDir();
  const file = path.join(dir, 'prompts.json');
  fs.writeFileSync(file, JSON.stringify([{ ids }, ...pool.map((p) => ({ ids: p }))]));
  const r = spawnSync(process.execPath, [cli, 'effects', '--prompts', file, '--targets', target, '--heads', '--ablation', kind, '--samples', String(samples), '--seed', '0', '--json'], {
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout).prompts[0];
}

async function value(page: Page, selector: string): Promise<number> {
  const el = page.locator(selector);
  const v = Number(await el.getAttribute('data-value'));
  // What the page shows is that value to 4 decimals.
  assert.equal(await el.textContent(), v.toFixed(4), selector);
  return v;
}

const pageErrors: string[] = [];

async function openPage(url: string): Promise<Page> {
  const page = await browser!.newPage({ viewport: { width: 1280, height: 1000 }, acceptDownloads: true });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

test('prompt view: type a prompt, click a component; the page shows what hydra effects --json computes', { skip: browserSkip }, async () => {
  const page = await openPage(server.url);
  await page.fill('#prompt-text', TEXT);
  await page.click('#run');
  await page.waitForSelector('td.comp[data-component="attn.2"]');
  const ids = model.encode(TEXT);
  const expected = effectsJson(ids, 'attn.2', 'resample', 15);
  assert.equal(await page.locator('#clean-token').textContent(), JSON.stringify(model.tokenizer!.tokenText(expected.token)));
  assert.ok(Math.abs((await value(page, '#clean-sigma')) - expected.sigma) < 1e-5);
  for (let l = 0; l < model.spec.nLayers; l++) {
    for (const c of [`attn.${l}`, `mlp.${l}`]) assert.ok(Math.abs((await value(page, `td.comp[data-component="${c}"]`)) - expected.de[c]) < 1e-5, c);
  }

  await page.click('td.comp[data-component="attn.2"]');
  await page.waitForSelector('#profile-chart[data-rendered="figure1_attn.2"] svg');
  const a = expected.ablations['attn.2'];
  for (const f of ['te', 'dde_self', 'ce', 'ce_attn', 'ce_mlp', 'ne', 'ie']) {
    const shown = await value(page, `#effects td[data-field="${f}"]`);
    assert.ok(Math.abs(shown - a[f]) < 1e-5, `${f}: page ${shown}, hydra effects ${a[f]}`);
  }
  for (let l = 0; l < model.spec.nLayers; l++) {
    for (const c of [`attn.${l}`, `mlp.${l}`]) {
      const shown = await value(page, `#de-table td[data-de-prime="${c}"]`);
      assert.ok(Math.abs(shown - a.de_prime[c]) < 1e-5, `DE' ${c}`);
    }
  }
  assert.match((await page.locator('#closure').textContent())!, /TE = ΔDE \+ CE \+ NE/);
  // Figure 1 draws the clean line, the mean line and S faint patch lines.
  assert.ok((await page.locator('#profile-chart svg path').count()) >= 15);
  await page.screenshot({ path: path.join(shots, 'prompt-view.png'), fullPage: true });

  // Zero ablation of an MLP, chosen in the page.
  await page.selectOption('#kind', 'zero');
  await page.click('td.comp[data-component="mlp.1"]');
  await page.waitForSelector('#profile-chart[data-rendered="figure1_mlp.1"] svg');
  const z = effectsJson(ids, 'mlp.1', 'zero', 1).ablations['mlp.1'];
  assert.ok(Math.abs((await value(page, '#effects td[data-field="te"]')) - z.te) < 1e-5);
  assert.ok(Math.abs((await value(page, '#effects td[data-field="ce"]')) - z.ce) < 1e-5);

  // Heads view: DE per head and ΔDE per head after the ablation.
  await page.click('.tab[data-tab="heads"]');
  await page.waitForSelector('#heads-chart[data-rendered="heads_mlp.1"] svg');
  const rects = await page.locator('#heads-chart svg .mark-rect.role-mark path').count();
  assert.equal(rects, 2 * model.spec.nLayers * model.spec.nHeads);
  await page.screenshot({ path: path.join(shots, 'heads-view.png'), fullPage: true });

  // Export: SVG and PNG downloads of the chart.
  const [svg] = await Promise.all([page.waitForEvent('download'), page.click('#heads-chart button[data-export="svg"]')]);
  assert.match(fs.readFileSync((await svg.path())!, 'utf8'), /^<svg[\s\S]*<\/svg>\s*$/);
  const [png] = await Promise.all([page.waitForEvent('download'), page.click('#heads-chart button[data-export="png"]')]);
  assert.deepEqual([...fs.readFileSync((await png.path())!).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  await page.close();
});

test('prompt view: ablating every layer lists TE and CE per component; a bad prompt shows an error', { skip: browserSkip }, async () => {
  const page = await openPage(server.url);
  await page.fill('#prompt-text', TEXT);
  await page.click('#run');
  await page.waitForSelector('td.comp[data-component="attn.0"]');
  await page.selectOption('#kind', 'zero');
  await page.click('#ablate-all');
  await page.waitForSelector('#all-table tr[data-component="mlp.4"]');
  assert.equal(await page.locator('#all-table tbody tr').count(), 2 * model.spec.nLayers);
  const expected = effectsJson(model.encode(TEXT), 'attn.3', 'zero', 1).ablations['attn.3'];
  const te = Number(await page.locator('#all-table tr[data-component="attn.3"] td:nth-child(3)').getAttribute('data-value'));
  assert.ok(Math.abs(te - expected.te) < 1e-5);
  await page.fill('#prompt-text', '');
  await page.click('#run');
  await page.waitForSelector('#error:not([hidden])');
  assert.match((await page.locator('#error').textContent())!, /empty/);
  await page.close();
});

test('dataset view: Figures 2, 7 and 8 from --db; clicking a prompt\'s point opens its prompt view', { skip: browserSkip }, async () => {
  const page = await openPage(dbServer.url);
  await page.click('.tab[data-tab="dataset"]');
  for (const f of ['fig2', 'fig7', 'fig8']) await page.waitForSelector(`#${f}-chart .export`);
  await page.screenshot({ path: path.join(shots, 'dataset-view.png'), fullPage: true });
  // A point of Figure 2's scatter: each carries its prompt.
  const point = page.locator('#fig2-chart svg .mark-symbol.role-mark path[aria-label*="prompt: "]').first();
  await point.dispatchEvent('click');
  await page.waitForSelector('#tab-prompt:not([hidden]) td.comp[data-component="attn.0"]');
  const text = await page.inputValue('#prompt-text');
  const stories = fs.readFileSync(storiesRecallPath, 'utf8');
  assert.ok(text.length > 20 && stories.includes(JSON.stringify(text).slice(1, -1)), `opened prompt: ${text}`);
  // ... with the point's layer ablated as stored: the run's settings, its sources, the stored TE
  await page.waitForSelector('#stored-note:not([hidden])');
  const title = (await page.locator('#ablation-title').textContent())!;
  assert.match(title, /stored in r\.duckdb \(resample, S = 3, seed 0, sources \d+, \d+, \d+\)/);
  const component = (await page.locator('#ablation').getAttribute('data-component'))!;
  const store = await ResultsStore.openReadOnly(db);
  const idx = (await store.query(`SELECT prompt_idx FROM prompts WHERE text = '${text.replace(/'/g, "''")}'`))[0].prompt_idx;
  const te = (await store.query(`SELECT te FROM effects WHERE prompt_idx = ${idx} AND component = '${component}'`))[0].te as number;
  await store.close();
  assert.equal(Number(await page.locator('#effects td[data-field="te"]').getAttribute('data-value')), te);
  assert.match((await page.locator('#stored-note').textContent())!, /recomputed live with the stored sources/);
  assert.equal(await page.inputValue('#samples'), '3');
  // every term has a one-line definition on the page
  const terms = await page.locator('#terms dt').allTextContents();
  assert.deepEqual(terms, ['π̂', 'σ', 'DE', 'TE', 'DE′', 'ΔDE', 'CE', 'NE', 'IE']);
  await page.close();
});

test('heads view with --db: the repair matrix heatmap and each ablation\'s verdict, as hydra repair computes them', { skip: browserSkip }, async () => {
  const m = await repairFromDatabase(db, { bootstrap: 200 });
  const page = await openPage(dbServer.url);
  await page.click('.tab[data-tab="heads"]');
  await page.waitForSelector('#repair-chart[data-rendered="repair_layers"] .export');
  // one rect per downstream (ablated, responder) pair, one dot per row with a positive largest mean
  assert.equal(await page.locator('#repair-chart svg .mark-rect.role-mark path').count(), m.cells.length);
  assert.equal(await page.locator('#repair-chart svg .mark-symbol.role-mark path').count(), m.rows.filter((r) => r.top.length && r.top[0].mean_dde > 0).length);
  const rows = await page.locator('#repair-table tbody tr').evaluateAll((trs) => trs.map((tr) => Array.from(tr.querySelectorAll('td'), (td) => td.textContent)));
  assert.deepEqual(rows.map((r) => [r[0], r[1], r[3]]), m.rows.map((r) => [r.ablated, r.verdict, r.sentence]));
  await page.locator('#repair-block').screenshot({ path: path.join(shots, 'repair-view.png') });
  await page.close();
});

test('/api/stored gives the database\'s numbers, and the live recomputation with the stored sources agrees', async () => {
  const store = await ResultsStore.openReadOnly(db);
  const [row] = await store.query(`SELECT prompt_idx, te, ce, ce_attn, ne FROM effects WHERE component = 'attn.1' ORDER BY prompt_idx LIMIT 1`);
  const sources = (await store.query(`SELECT source FROM patches WHERE prompt_idx = ${row.prompt_idx} AND component = 'attn.1' ORDER BY patch_idx`)).map((r) => r.source);
  await store.close();
  const res = await request(new URL(`/api/stored?prompt=${row.prompt_idx}&component=attn.1`, dbServer.url).toString(), 'GET');
  assert.equal(res.status, 200, res.text);
  const msg = JSON.parse(res.text);
  const a = msg.result.ablations['attn.1'];
  for (const f of ['te', 'ce', 'ce_attn', 'ne']) assert.equal(a[f], row[f], f);
  assert.deepEqual(msg.sources, sources);
  assert.deepEqual(msg.settings, { kind: 'resample', samples: 3, seed: 0, database: 'r.duckdb' });
  assert.ok(msg.live.max_abs_diff < 1e-4, `live vs stored: ${msg.live.max_abs_diff}`);
  const bad = await request(new URL('/api/stored?prompt=99999&component=attn.1', dbServer.url).toString(), 'GET');
  assert.equal(bad.status, 404);
  assert.match(JSON.parse(bad.text).error, /not a kept prompt/);
});

// ---------------------------------------------------------------------- API

function request(url: string, method: string, body?: string, type = 'application/json'): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: body === undefined ? {} : { 'content-type': type } }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('the server binds to 127.0.0.1 and answers malformed requests with 4xx, never crashing', async () => {
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const u = (p: string) => new URL(p, server.url).toString();
  const cases: [string, string, string | undefined, number, RegExp][] = [
    ['POST', '/api/prompt', '{not json', 400, /not valid JSON/],
    ['POST', '/api/prompt', '[1, 2]', 400, /JSON object/],
    ['POST', '/api/prompt', '{"text": 5}', 400, /text must be a string/],
    ['POST', '/api/prompt', '{"text": ""}', 400, /empty/],
    ['POST', '/api/prompt', JSON.stringify({ text: 'a '.repeat(5000) }), 400, /context/],
    ['POST', '/api/prompt', JSON.stringify({ text: 'x'.repeat(70_000) }), 413, /over/],
    ['POST', '/api/ablate', JSON.stringify({ text: TEXT, component: 'attn.99' }), 400, /attn\.99/],
    ['POST', '/api/ablate', JSON.stringify({ text: TEXT, component: '../../etc/passwd' }), 400, /component/],
    ['POST', '/api/ablate', JSON.stringify({ text: TEXT, component: 'attn.1', kind: 'delete' }), 400, /kind must be one of/],
    ['POST', '/api/ablate', JSON.stringify({ text: TEXT, component: 'attn.1', samples: 0 }), 400, /samples must be an integer/],
    ['POST', '/api/ablate', JSON.stringify({ text: TEXT, component: 'attn.1', samples: 1.5 }), 400, /samples/],
    ['POST', '/api/ablate', JSON.stringify({ text: TEXT, component: 7 }), 400, /component must be a string/],
    ['GET', '/api/dataset', undefined, 404, /no results database/],
    ['GET', '/api/prompt', undefined, 405, /not allowed/],
    ['GET', '/static/../package.json', undefined, 404, /no such page/],
    ['GET', '/static/%2e%2e/%2e%2e/package.json', undefined, 404, /no such page/],
    ['GET', '/vendor/..%2f..%2fpackage.json', undefined, 404, /no such page/],
  ];
  for (const [method, p, body, status, re] of cases) {
    const r = await request(u(p), method, body);
    assert.equal(r.status, status, `${method} ${p}: ${r.text}`);
    assert.match(JSON.parse(r.text).error, re, `${method} ${p}`);
  }
  const wrongType = await request(u('/api/prompt'), 'POST', '{"text": "hi"}', 'text/plain');
  assert.equal(wrongType.status, 415);
  // Still serving.
  const ok = await request(u('/api/prompt'), 'POST', JSON.stringify({ text: TEXT }));
  assert.equal(ok.status, 200);
  assert.equal(JSON.parse(ok.text).token, (await model.forward([model.encode(TEXT)])).prompts[0].token);
});

test('a slow request does not block others, and closing it cancels its work', async () => {
  const u = (p: string) => new URL(p, server.url).toString();
  const events: string[] = [];
  // Every layer with 64 patches and heads: many queued units of model work.
  const slow = new Promise<string[]>((resolve, reject) => {
    const lines: string[] = [];
    const req = http.request(u('/api/ablate'), { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let buf = '';
      let asked = false;
      res.on('data', (d) => {
        buf += d;
        const parts = buf.split('\n');
        buf = parts.pop()!;
        for (const l of parts) {
          lines.push(l);
          if (!asked && /"progress":\[1,/.test(l)) {
            asked = true;
            // While it runs, other requests are answered.
            void Promise.all([
              request(u('/api/info'), 'GET').then((r) => events.push(`info ${r.status}`)),
              request(u('/api/prompt'), 'POST', JSON.stringify({ text: 'Once upon a time' })).then((r) => events.push(`prompt ${r.status}`)),
            ]).then(() => {
              events.push(`slow had ${lines.length} lines`);
              req.destroy(); // the browser's Cancel
            });
          }
        }
      });
      res.on('error', () => undefined);
      res.on('close', () => resolve(lines));
    });
    req.on('error', (e) => (/socket hang up|aborted/.test(e.message) ? resolve(lines) : reject(e)));
    req.end(JSON.stringify({ text: TEXT, component: 'all', kind: 'resample', samples: 64 }));
  });
  const lines = await slow;
  assert.deepEqual(events.slice(0, 2).sort(), ['info 200', 'prompt 200']);
  // The other requests finished before the slow one had got far, and it never reached a result.
  const progressAtAnswer = Number(/slow had (\d+) lines/.exec(events[2])![1]);
  assert.ok(progressAtAnswer < 2 * model.spec.nLayers, events.join('; '));
  assert.ok(!lines.some((l) => l.startsWith('{"result"')), 'the cancelled request still produced a result');
  // The server is fine afterwards.
  const r = await request(u('/api/ablate'), 'POST', JSON.stringify({ text: TEXT, component: 'mlp.0', kind: 'zero' }));
  assert.equal(r.status, 200);
  assert.match(r.text.trim().split('\n').pop()!, /^\{"result"/);
});

test('hydra serve refuses a non-loopback host without --allow-remote', () => {
  const r = spawnSync(process.execPath, [cli, 'serve', '--host', '0.0.0.0', '--port', '0'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /^hydra: error: --host 0\.0\.0\.0 is not a loopback address; add --allow-remote/);
});
