import type { ArchSpec } from '../engine/spec.js';
import { HydraError } from '../io/errors.js';

/**
 * Component names, as in METHOD.md: `embed`, `attn.{l}`, `mlp.{l}`, `head.{l}.{h}`
 * (a head's share of the output projection, value bias included) and `attn_bias.{l}`
 * (the output projection's bias).
 */
export type ComponentKind = 'embed' | 'attn' | 'mlp' | 'head' | 'attn_bias';

export interface Component {
  name: string;
  kind: ComponentKind;
  layer: number; // -1 for embed
  head: number; // -1 unless a head
}

/** The layer partition of the final residual: embed, attn.0, mlp.0, attn.1, ... (Σ = z). */
export function layerComponents(spec: ArchSpec): string[] {
  const out = ['embed'];
  for (let l = 0; l < spec.nLayers; l++) out.push(`attn.${l}`, `mlp.${l}`);
  return out;
}

/** Every head and output bias, layer by layer. */
export function headComponents(spec: ArchSpec, layers?: number[]): string[] {
  const out: string[] = [];
  for (const l of layers ?? [...Array(spec.nLayers).keys()]) {
    for (let h = 0; h < spec.nHeads; h++) out.push(`head.${l}.${h}`);
    out.push(`attn_bias.${l}`);
  }
  return out;
}

export function parseComponent(name: string, spec: ArchSpec): Component {
  const bad = (why: string) =>
    new HydraError(`unknown component '${name}': ${why}; use embed, attn.L, mlp.L, head.L.H or attn_bias.L with L < ${spec.nLayers}, H < ${spec.nHeads}`);
  if (name === 'embed') return { name, kind: 'embed', layer: -1, head: -1 };
  const m = /^(attn|mlp|attn_bias)\.(\d+)$/.exec(name) ?? /^(head)\.(\d+)\.(\d+)$/.exec(name);
  if (!m) throw bad('not a component name');
  const layer = Number(m[2]);
  if (layer >= spec.nLayers) throw bad(`layer ${layer} does not exist`);
  const head = m[3] === undefined ? -1 : Number(m[3]);
  if (head >= spec.nHeads) throw bad(`head ${head} does not exist`);
  return { name, kind: m[1] as ComponentKind, layer, head };
}
