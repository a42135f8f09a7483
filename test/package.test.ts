import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess, type SpawnSyncOptions } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { analyze } from '../src/causal/analysis.js';
import { readPromptSet } from '../src/experiments/prompts.js';
import { defaultModelDir, packageRoot } from '../src/io/paths.js';
import { HookedModel } from '../src/models/model.js';
import { tmpDir } from './helpers.js';

/**
 * Hydra as a researcher installs it: `npm pack`, then a fresh project that installs the tarball
 * (offline, from the npm cache that the checkout's `npm ci` filled), runs `npx hydra demo`,
 * serves the explorer (its vendored Vega found by module resolution, a chart drawn in
 * Chromium), and compiles with tsc and runs the README's library example against the package.
 */
const CHROMIUM = process.env.HYDRA_CHROMIUM ?? '/usr/bin/chromium';
const hasBrowser = fs.existsSync(CHROMIUM);
if (!hasBrowser && process.env.HYDRA_REQUIRE_BROWSER === '1') throw new Error(`HYDRA_REQUIRE_BROWSER=1 but ${CHROMIUM} is missing; apt-get install chromium`);

const work = tmpDir('hydra-package-');
const project = path.join(work, 'project');
let tarball = '';
const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip', HF_HUB_OFFLINE: '1', npm_config_update_notifier: 'false' };

function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): string {
  const r = spawnSync(cmd, args, { cwd: project, env, encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return String(r.stdout);
}

/**
 * The project's lockfile: the tarball, and every runtime dependency at the version, URL and
 * integrity of the checkout's package-lock.json, so that `npm ci --offline` finds them all in
 * the npm cache without asking the registry.
 */
function projectLock(tgz: string): { pkg: object; lock: object } {
  const ours = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8'));
  const lock = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package-lock.json'), 'utf8'));
  const spec = `file:${path.relative(project, tgz)}`;
  const integrity = `sha512-${crypto.createHash('sha512').update(fs.readFileSync(tgz)).digest('base64')}`;
  const packages: Record<string, unknown> = {
    '': { name: 'project', dependencies: { 'hydra-effect': spec } },
    'node_modules/hydra-effect': { version: ours.version, resolved: spec, integrity, license: ours.license, dependencies: ours.dependencies, bin: ours.bin, engines: ours.engines },
  };
  for (const [k, v] of Object.entries(lock.packages as Record<string, { dev?: boolean }>)) if (k !== '' && !v.dev) packages[k] = v;
  return {
    pkg: { name: 'project', private: true, type: 'module', dependencies: { 'hydra-effect': spec } },
    lock: { name: 'project', lockfileVersion: 3, requires: true, packages },
  };
}

before(() => {
  fs.mkdirSync(project);
  const out = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: packageRoot });
  tarball = path.join(work, JSON.parse(out)[0].filename);
  const { pkg, lock } = projectLock(tarball);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify(pkg, null, 2));
  fs.writeFileSync(path.join(project, 'package-lock.json'), JSON.stringify(lock, null, 2));
  // The checkout's `npm ci` left every dependency in the npm cache; only a cache emptied since
  // then sends npm to the registry.
  const offline = spawnSync('npm', ['ci', '--offline', '--no-audit', '--no-fund'], { cwd: project, env, encoding: 'utf8' });
  if (offline.status !== 0) {
    assert.match(offline.stderr, /ENOTCACHED/, offline.stderr);
    run('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund']);
  }
});

after(() => fs.rmSync(work, { recursive: true, force: true }));

test('the tarball holds the library, its types, the CLI, the explorer and the bundled assets, and no tests', () => {
  const files = run('tar', ['-tzf', tarball]).split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
  for (const f of ['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'src/web/static/index.html', 'src/web/static/app.js',
    'assets/models/stories260k/model.safetensors', 'assets/data/known_1000/known_1000.json', 'assets/data/stories_recall/stories_recall.jsonl',
    'assets/fonts/DejaVuSans.ttf', 'docs/METHOD.md', 'README.md', 'package.json']) {
    assert.ok(files.includes(f), `${f} missing from the tarball`);
  }
  const extra = files.filter((f) => /^(test|dist\/test|dist\/bench|bench|\.ci)\//.test(f) || f.includes('fixtures') || f.endsWith('.ts') && !f.endsWith('.d.ts') || f.endsWith('.map'));
  assert.deepEqual(extra, []);
});

test('npx hydra demo in the installed project writes the results and the report', () => {
  const out = JSON.parse(run('npx', ['--no-install', 'hydra', 'demo', '--out', 'demo', '--json']));
  assert.equal(out.kept, 58);
  assert.equal(out.dropped, 6);
  assert.equal(path.resolve(project, out.results), path.join(project, 'demo', 'results.duckdb'));
  assert.ok(fs.readFileSync(out.report, 'utf8').includes('<svg') || fs.existsSync(path.join(path.dirname(out.report), 'figures')));
});

test('hydra serve from the installed project: Vega and Vega-Lite are served, and the page draws a chart', { skip: hasBrowser ? false : `no Chromium at ${CHROMIUM}` }, async () => {
  const child: ChildProcess = spawn('npx', ['--no-install', 'hydra', 'serve', '--port', '0', '--json'], { cwd: project, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let buf = '';
      child.stdout!.on('data', (d) => {
        buf += d;
        if (buf.includes('\n')) resolve(JSON.parse(buf.split('\n')[0]).url);
      });
      child.once('exit', (code) => reject(new Error(`hydra serve exited ${code}: ${stderr}`)));
    });
    for (const file of ['vega.min.js', 'vega-lite.min.js']) {
      const r = await fetch(new URL(`/vendor/${file}`, url));
      assert.equal(r.status, 200, file);
      assert.ok((await r.text()).length > 100_000, `${file} is the library`);
    }
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(url);
      await page.waitForSelector('body[data-ready="true"]');
      await page.fill('#prompt-text', 'Once upon a time, there was a little girl named Lily. She said, "Hi,');
      await page.click('#run');
      await page.click('td.comp[data-component="attn.1"]');
      await page.waitForSelector('#profile-chart[data-rendered="figure1_attn.1"] svg', { timeout: 60_000 });
      assert.ok((await page.locator('#profile-chart svg path').count()) > 5, 'the chart has marks');
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  } finally {
    if (child.exitCode === null) process.kill(-child.pid!, 'SIGTERM');
  }
});

test('the README library example type-checks against the package with tsc and runs', async () => {
  const readme = fs.readFileSync(path.join(packageRoot, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n## Library\n'));
  const code = /```ts\n([\s\S]*?)```/.exec(section)![1];
  assert.match(code, /from 'hydra-effect'/);
  fs.writeFileSync(path.join(project, 'example.ts'), code);
  fs.writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: true, lib: ['ES2022', 'DOM'], types: [] },
    files: ['example.ts'],
  }));
  run(process.execPath, [path.join(packageRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
  const out = run(process.execPath, ['example.js']).split('\n');

  // The printed effects of the first prompt, against this checkout's analyze on the same prompts.
  const model = await HookedModel.load(defaultModelDir);
  const prompts = await readPromptSet(model, 'stories_recall');
  const [first] = await analyze(model, prompts.ids.slice(0, 8), { kind: 'resample', samples: 5, seed: 0 });
  for (const [c, a] of Object.entries(first.ablations)) {
    assert.ok(out.includes(`${c}: DE ${first.de[c].toFixed(4)} TE ${a.te.toFixed(4)} CE ${a.ce.toFixed(4)}`), `${c} line missing from\n${out.join('\n')}`);
  }
  const ids = prompts.ids[0];
  const clean = (await model.forward([ids])).prompts[0];
  const zeroed = (await model.forward([ids], { interventions: [[{ component: 'attn.3', value: new Float32Array(model.spec.dModel) }]] })).prompts[0];
  assert.equal(out[0], `next token ${model.tokenizer!.tokenText(clean.token)} ; with attn.3 zeroed ${model.tokenizer!.tokenText(zeroed.token)}`);
  assert.match(out.at(-2)!, /^kept 2\d, dropped \d+; mean TE of attn\.3 over 2\d prompts -?\d\.\d{4}$/);
  assert.ok(fs.existsSync(path.join(project, 'example.duckdb')));
});
