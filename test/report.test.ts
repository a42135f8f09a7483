import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { loadGolden, tmpDir } from './helpers.js';
import { goldenPrompts } from './fixtures/report/golden-prompts.js';
import { datasetStatistics } from '../src/experiments/stats.js';
import { compensationRows, compensationSplitRows, importanceRows, profileFigure, PROFILE_SERIES } from '../src/report/figures.js';
import { renderSvg, svgToPng } from '../src/report/render.js';
import { writeReport } from '../src/report/html.js';

/** Light XML well-formedness check: balanced tags, one root element, which is <svg> in the SVG namespace. */
function checkSvg(text: string, what: string): void {
  const body = text.replace(/<\?[\s\S]*?\?>/g, '').replace(/<!--[\s\S]*?-->/g, '').replace(/<!\[CDATA\[[\s\S]*?\]\]>/g, '');
  const stack: string[] = [];
  let roots = 0;
  let rootName = '';
  for (const m of body.matchAll(/<(\/?)([A-Za-z_][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>/g)) {
    const [, close, name, , selfClose] = m;
    if (close) {
      assert.equal(stack.pop(), name, `${what}: mismatched </${name}>`);
    } else {
      if (stack.length === 0) {
        roots++;
        rootName = name;
        assert.match(m[0], /xmlns="http:\/\/www\.w3\.org\/2000\/svg"/, `${what}: root lacks the SVG namespace`);
      }
      if (!selfClose) stack.push(name);
    }
  }
  assert.equal(stack.length, 0, `${what}: unclosed <${stack.at(-1)}>`);
  assert.equal(roots, 1, `${what}: expected one root element`);
  assert.equal(rootName, 'svg', `${what}: root is <${rootName}>`);
  // every '<' must start a tag we parsed (no stray markup)
  const tags = body.match(/<[^>]*>/g) ?? [];
  assert.equal(tags.length, body.split('<').length - 1, `${what}: stray '<'`);
}

/** Decode a PNG's structure: signature, IHDR size, chunk CRC-free walk, and IDAT inflating to the expected byte count. */
function checkPng(buf: Buffer, what: string): { width: number; height: number } {
  assert.deepEqual([...buf.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10], `${what}: PNG signature`);
  let off = 8;
  let width = 0, height = 0, bitDepth = 0, colorType = 0;
  const idat: Buffer[] = [];
  let ended = false;
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      bitDepth = data[8];
      colorType = data[9];
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') ended = true;
    off += 12 + len;
  }
  assert.ok(ended, `${what}: no IEND`);
  assert.ok(width > 0 && height > 0, `${what}: IHDR ${width}x${height}`);
  assert.equal(bitDepth, 8);
  const channels = ({ 0: 1, 2: 3, 4: 2, 6: 4 } as Record<number, number>)[colorType];
  assert.ok(channels, `${what}: colour type ${colorType}`);
  const raw = zlib.inflateSync(Buffer.concat(idat));
  assert.equal(raw.length, height * (1 + width * channels), `${what}: pixel data size`);
  return { width, height };
}

function localRefs(html: string): string[] {
  return [...html.matchAll(/\b(?:src|href)\s*=\s*"([^"]*)"/g)].map((m) => m[1]).filter((u) => !/^(?:[a-z]+:|#)/i.test(u));
}

for (const model of ['stories260k', 'tiny-gpt2']) {
  test(`report for ${model}: figures, statistics and links`, async () => {
    const g = loadGolden(model);
    const prompts = goldenPrompts(g, 'resample', true);
    const stats = await datasetStatistics(prompts, { indices: g.bootstrap_indices });
    const out = tmpDir('hydra-report-');
    const index = await writeReport(out, {
      model, dataset: g.prompt_set?.kind ?? 'golden', config: { kind: 'resample', patches: 3 }, prompts, stats,
      tokenTexts: prompts.map((p) => `#${p.token}`),
    });
    assert.equal(index, path.join(out, 'index.html'));
    const html = fs.readFileSync(index, 'utf8');

    const figs = fs.readdirSync(path.join(out, 'figures'));
    for (const base of ['fig1_profile_attention', 'fig2_importance', 'fig3_profile_attention', 'fig7_compensation', 'fig8_compensation_split']) {
      assert.ok(figs.includes(`${base}.svg`) && figs.includes(`${base}.png`), `${base} written`);
      assert.ok(html.includes(`figures/${base}.svg`), `${base} referenced`);
    }
    for (const f of figs) {
      const p = path.join(out, 'figures', f);
      if (f.endsWith('.svg')) checkSvg(fs.readFileSync(p, 'utf8'), f);
      else if (f.endsWith('.png')) {
        const { width, height } = checkPng(fs.readFileSync(p), f);
        assert.ok(width > 400 && height > 300, `${f}: ${width}x${height}`);
      } else assert.fail(`unexpected file ${f}`);
    }

    const refs = localRefs(html);
    assert.ok(refs.length >= 12, 'links to figures and data');
    for (const r of refs) assert.ok(fs.existsSync(path.join(out, decodeURIComponent(r))), `link target exists: ${r}`);
    for (const word of ['direct effect', 'total effect', 'compensatory effect', 'Hydra effect', 'norm effect']) {
      assert.ok(html.toLowerCase().includes(word.toLowerCase()), `explains ${word}`);
    }

    const json = JSON.parse(fs.readFileSync(path.join(out, 'stats.json'), 'utf8'));
    const expected = (g.targets as string[]).map((t) =>
      t.replace(/^attn(\d+)$/, 'attn.$1').replace(/^mlp(\d+)$/, 'mlp.$1').replace(/^head(\d+)\.(\d+)$/, 'head.$1.$2'));
    assert.deepEqual(Object.keys(json.components), expected);
    assert.equal(json.n_prompts, g.prompts.length);
    const mlp0 = json.components['mlp.0'];
    assert.equal(mlp0.ols_ce_on_removed.slope, stats['mlp.0'].ols_ce_on_removed.slope);
    assert.equal(mlp0.bootstrap95.slope_ce.n_valid, g.bootstrap.B);

    const csv = fs.readFileSync(path.join(out, 'stats.csv'), 'utf8').trim().split('\n');
    assert.equal(csv.length, 1 + expected.length);
    assert.deepEqual(csv.slice(1).map((l) => l.split(',')[0]), expected);
    fs.rmSync(out, { recursive: true, force: true });
  });
}

test('figure specs carry the expected data rows', async () => {
  const g = loadGolden('tiny-gpt2');
  const prompts = goldenPrompts(g, 'resample', true);
  const stats = await datasetStatistics(prompts, { indices: g.bootstrap_indices });
  const L = g.model.arch?.n_layers ?? 3;
  const S = prompts[0].ablations['attn.1'].patches.length;
  assert.equal(S, 3);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const spec = profileFigure(prompts[0], 'attn.1') as any;
  const rows = spec.data.values as { series: string; value: number; layer: number; type: string }[];
  // 2L clean + 2L·S per-patch + 2L mean + 1 rule at the ablated layer
  assert.equal(rows.length, 2 * L + 2 * L * S + 2 * L + 1);
  assert.equal(rows.filter((r) => r.series === PROFILE_SERIES.clean).length, 2 * L);
  const clean = rows.find((r) => r.series === PROFILE_SERIES.clean && r.type === 'MLP' && r.layer === 2)!;
  assert.equal(clean.value, g.prompts[0].clean.DE.mlp2);
  const mean = rows.find((r) => r.series === PROFILE_SERIES.mean && r.type === 'Attention' && r.layer === 2)!;
  assert.equal(mean.value, g.prompts[0].ablations.resample.attn1.mean.DE_prime[g.component_names.indexOf('attn2')]);
  assert.equal(rows.filter((r) => r.series === 'ablated').length, 1);
  // zero ablation: one patch, so no per-patch lines
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const z = profileFigure(goldenPrompts(g, 'zero', true)[0], 'mlp.0') as any;
  assert.equal(z.data.values.length, 2 * L + 2 * L + 1);

  const P = prompts.length;
  assert.equal(importanceRows(prompts).length, P * 2 * L);
  assert.equal(compensationRows(prompts).length, P * 2 * L);
  // two parts per prompt, plus two fit endpoints per part
  assert.equal(compensationSplitRows(prompts, stats, ['attn.0', 'attn.1']).length, 2 * (2 * P + 4));
});

test('rendering works headless and draws text with the bundled font', async () => {
  const g = loadGolden('tiny-gpt2');
  const svg = await renderSvg(profileFigure(goldenPrompts(g, 'resample', true)[0], 'mlp.1', { promptText: 'hello' }));
  checkSvg(svg, 'profile');
  assert.match(svg, /font-family="DejaVu Sans"/);
  assert.match(svg, /MLP layer 1/);
  assert.throws(() => checkSvg('<svg xmlns="http://www.w3.org/2000/svg"><g></svg>', 'bad'));
  const png = svgToPng(svg, 1);
  const big = svgToPng(svg, 2);
  const a = checkPng(png, 'png@1x'), b = checkPng(big, 'png@2x');
  assert.equal(b.width, 2 * a.width);
});
