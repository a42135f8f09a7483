/**
 * Component names as the results store holds them (embed, attn.L, mlp.L, head.L.H, attn_bias.L),
 * parsed without a model, and how reports write them and their numbers.
 */
import { HydraError } from '../io/errors.js';

export type NameKind = 'embed' | 'attn' | 'mlp' | 'head' | 'attn_bias';

/** Parse a component name: embed, attn.{l}, mlp.{l}, head.{l}.{h}, attn_bias.{l}. */
export function parseComponent(name: string): { kind: NameKind; layer: number | null; head: number | null } {
  if (name === 'embed') return { kind: 'embed', layer: null, head: null };
  let m = /^(attn|mlp|attn_bias)\.(\d+)$/.exec(name);
  if (m) return { kind: m[1] as 'attn' | 'mlp' | 'attn_bias', layer: +m[2], head: null };
  m = /^head\.(\d+)\.(\d+)$/.exec(name);
  if (m) return { kind: 'head', layer: +m[1], head: +m[2] };
  throw new HydraError(`unknown component name ${name}; expected embed, attn.L, mlp.L, head.L.H or attn_bias.L`);
}

export function componentKind(name: string): NameKind {
  return parseComponent(name).kind;
}

/** Readable "attention layer 3", "MLP layer 2", "head 1.2" for titles. */
export function componentLabel(name: string): string {
  const c = parseComponent(name);
  switch (c.kind) {
    case 'embed': return 'the embedding';
    case 'attn': return `attention layer ${c.layer}`;
    case 'mlp': return `MLP layer ${c.layer}`;
    case 'head': return `attention head ${c.layer}.${c.head}`;
    case 'attn_bias': return `the attention output bias of layer ${c.layer}`;
  }
}

/** A number for reading: 3 significant digits, exponent form when very large or small; 'n/a' when undefined. */
export function fmtNum(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  if (v === 0) return '0';
  const a = Math.abs(v);
  const s = a >= 1e4 || a < 1e-3 ? v.toExponential(2) : String(Number(v.toPrecision(3)));
  return s.replace(/^-/, '−');
}
