/**
 * Headless figure rendering: Vega-Lite spec -> Vega view (renderer 'none') -> SVG -> PNG (resvg).
 * The bundled DejaVu Sans (assets/fonts) is the only font used, by Vega's layout and by resvg, so
 * output does not depend on the machine's fonts.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { Resvg } from '@resvg/resvg-js';
import { assetsDir, makeDir } from '../io/paths.js';
import { HydraError } from '../io/errors.js';

export const FONT_FAMILY = 'DejaVu Sans';
export const fontsDir = path.join(assetsDir, 'fonts');
export const FONT_FILES = [path.join(fontsDir, 'DejaVuSans.ttf'), path.join(fontsDir, 'DejaVuSans-Bold.ttf')];

/** Advance widths of a TrueType font, in em units, from its cmap (format 4) and hmtx tables. */
interface FontMetrics {
  unitsPerEm: number;
  advance: (codePoint: number) => number;
}

function readFontMetrics(file: string): FontMetrics {
  const b = fs.readFileSync(file);
  const numTables = b.readUInt16BE(4);
  const tables: Record<string, number> = {};
  for (let i = 0; i < numTables; i++) {
    const rec = 12 + 16 * i;
    tables[b.toString('latin1', rec, rec + 4)] = b.readUInt32BE(rec + 8);
  }
  for (const t of ['head', 'hhea', 'hmtx', 'cmap']) {
    if (tables[t] === undefined) throw new HydraError(`font ${file} has no ${t} table; reinstall the package`);
  }
  const unitsPerEm = b.readUInt16BE(tables.head + 18);
  const nMetrics = b.readUInt16BE(tables.hhea + 34);
  const glyphAdvance = (g: number): number => b.readUInt16BE(tables.hmtx + 4 * Math.min(g, nMetrics - 1));
  // Windows Unicode BMP subtable (3,1), format 4: segments of code points mapped by delta or glyph array.
  const cmap = tables.cmap;
  let sub = -1;
  for (let i = 0, n = b.readUInt16BE(cmap + 2); i < n; i++) {
    const rec = cmap + 4 + 8 * i;
    const off = cmap + b.readUInt32BE(rec + 4);
    if (b.readUInt16BE(rec) === 3 && b.readUInt16BE(rec + 2) === 1 && b.readUInt16BE(off) === 4) sub = off;
  }
  if (sub < 0) throw new HydraError(`font ${file} has no Unicode BMP cmap; reinstall the package`);
  const segX2 = b.readUInt16BE(sub + 6);
  const ends = sub + 14, starts = ends + segX2 + 2, deltas = starts + segX2, rangeOffs = deltas + segX2;
  const cache = new Map<number, number>();
  const glyphOf = (c: number): number => {
    for (let s = 0; s < segX2; s += 2) {
      if (c > b.readUInt16BE(ends + s)) continue;
      const start = b.readUInt16BE(starts + s);
      if (c < start) return 0;
      const delta = b.readInt16BE(deltas + s);
      const ro = b.readUInt16BE(rangeOffs + s);
      if (ro === 0) return (c + delta) & 0xffff;
      const g = b.readUInt16BE(rangeOffs + s + ro + 2 * (c - start));
      return g === 0 ? 0 : (g + delta) & 0xffff;
    }
    return 0;
  };
  return {
    unitsPerEm,
    advance: (c) => {
      let w = cache.get(c);
      if (w === undefined) {
        w = c > 0xffff ? unitsPerEm * 0.6 : glyphAdvance(glyphOf(c));
        cache.set(c, w);
      }
      return w;
    },
  };
}

let metrics: { regular: FontMetrics; bold: FontMetrics } | null = null;

/** Make Vega measure text with the bundled font's real advance widths (it otherwise guesses 0.8 em per character). */
function installTextMetrics(): void {
  if (metrics) return;
  for (const f of FONT_FILES) {
    if (!fs.existsSync(f)) throw new HydraError(`font file ${f} is missing; reinstall the package`);
  }
  metrics = { regular: readFontMetrics(FONT_FILES[0]), bold: readFontMetrics(FONT_FILES[1]) };
  const m = metrics;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  (vega as any).textMetrics.width = (item: any, text: unknown): number => {
    const size = item.fontSize != null ? +item.fontSize || 0 : 11;
    const weight = item.fontWeight;
    const font = weight === 'bold' || weight === 'bolder' || (typeof weight === 'number' && weight >= 600) || (typeof weight === 'string' && +weight >= 600) ? m.bold : m.regular;
    const str = Array.isArray(text) ? text.join(' ') : text == null ? '' : String(text);
    let w = 0;
    for (const ch of str) w += font.advance(ch.codePointAt(0)!);
    return (w / font.unitsPerEm) * size;
  };
}

/** Vega-Lite spec -> SVG text, laid out and rendered without a browser. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  installTextMetrics();
  let vgSpec;
  try {
    vgSpec = compile(spec).spec;
  } catch (e) {
    throw new HydraError(`cannot compile figure spec: ${(e as Error).message}`);
  }
  const view = new vega.View(vega.parse(vgSpec), { renderer: 'none', logLevel: vega.Error });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** SVG -> PNG at `scale` times the SVG's size, white background, bundled fonts only. */
export function svgToPng(svg: string, scale = 2): Buffer {
  const r = new Resvg(svg, {
    font: {
      fontFiles: FONT_FILES,
      loadSystemFonts: false,
      defaultFontFamily: FONT_FAMILY,
      sansSerifFamily: FONT_FAMILY,
    },
    fitTo: { mode: 'zoom', value: scale },
    background: 'white',
    logLevel: 'off',
  });
  return r.render().asPng();
}

/** Render `spec` to `<outDir>/<basename>.svg` and `.png`; returns both paths. */
export async function writeFigure(spec: TopLevelSpec, outDir: string, basename: string): Promise<{ svg: string; png: string }> {
  const svgText = await renderSvg(spec);
  makeDir(outDir, 'choose a writable `out`');
  const svg = path.join(outDir, `${basename}.svg`);
  const png = path.join(outDir, `${basename}.png`);
  fs.writeFileSync(svg, svgText);
  fs.writeFileSync(png, svgToPng(svgText));
  return { svg, png };
}
