import { HydraError } from '../io/errors.js';

/**
 * Component names, as in METHOD.md, parsed and formatted here and nowhere else:
 * `embed`, `attn.{l}`, `mlp.{l}`, `head.{l}.{h}` (a head's share of the output
 * projection, value bias included) and `attn_bias.{l}` (the output projection's bias).
 */
export type ComponentKind = 'embed' | 'attn' | 'mlp' | 'head' | 'attn_bias';

export interface Component {
  name: string;
  kind: ComponentKind;
  layer: number; // -1 for embed
  head: number; // -1 unless a head
}

/** The sizes a name is checked against. */
export interface ComponentBounds {
  nLayers: number;
  nHeads: number;
}

export const EMBED = 'embed';
export const attnName = (l: number): string => `attn.${l}`;
export const mlpName = (l: number): string => `mlp.${l}`;
export const headName = (l: number, h: number): string => `head.${l}.${h}`;
export const attnBiasName = (l: number): string => `attn_bias.${l}`;

/** The name of a block component of layer l. */
export function blockName(kind: 'attn' | 'mlp', l: number): string {
  return kind === 'attn' ? attnName(l) : mlpName(l);
}

/** The layer partition of the final residual: embed, attn.0, mlp.0, attn.1, ... (Σ = z). */
export function layerComponents(spec: ComponentBounds): string[] {
  const out = [EMBED];
  for (let l = 0; l < spec.nLayers; l++) out.push(attnName(l), mlpName(l));
  return out;
}

/** Every head of the given layers (default all). */
export function headsOf(spec: ComponentBounds, layers?: number[]): string[] {
  return (layers ?? [...Array(spec.nLayers).keys()]).flatMap((l) => [...Array(spec.nHeads).keys()].map((h) => headName(l, h)));
}

/** Every head and output bias, layer by layer. */
export function headComponents(spec: ComponentBounds, layers?: number[]): string[] {
  return (layers ?? [...Array(spec.nLayers).keys()]).flatMap((l) => [...headsOf(spec, [l]), attnBiasName(l)]);
}

/** The default ablation targets: every attention and MLP layer, and with heads every head. */
export function defaultTargets(spec: ComponentBounds, heads: boolean): string[] {
  return [...layerComponents(spec).slice(1), ...(heads ? headsOf(spec) : [])];
}

const INDEX = '(0|[1-9][0-9]*)';
const BLOCK = new RegExp(`^(attn|mlp|attn_bias)\\.${INDEX}$`);
const HEAD = new RegExp(`^head\\.${INDEX}\\.${INDEX}$`);

/** The kind of a layer-partition member (embed, attn.L, mlp.L); null for heads, output biases and other names. */
export function layerKind(name: string): 'embed' | 'attn' | 'mlp' | null {
  if (name === EMBED) return 'embed';
  const m = BLOCK.exec(name);
  return m && m[1] !== 'attn_bias' ? (m[1] as 'attn' | 'mlp') : null;
}

/** Parse a name (canonical form only: `mlp.01` is refused); with bounds, check that it exists. */
export function parseComponent(name: string, bounds?: ComponentBounds): Component {
  const limits = bounds ? ` with L < ${bounds.nLayers}, H < ${bounds.nHeads}` : '';
  const bad = (why: string) => new HydraError(`unknown component '${name}': ${why}; use embed, attn.L, mlp.L, head.L.H or attn_bias.L${limits}`);
  if (name === EMBED) return { name, kind: 'embed', layer: -1, head: -1 };
  const block = BLOCK.exec(name);
  const head = HEAD.exec(name);
  if (!block && !head) throw bad('not a component name');
  const c: Component = block
    ? { name, kind: block[1] as ComponentKind, layer: Number(block[2]), head: -1 }
    : { name, kind: 'head', layer: Number(head![1]), head: Number(head![2]) };
  if (bounds && c.layer >= bounds.nLayers) throw bad(`layer ${c.layer} does not exist`);
  if (bounds && c.head >= bounds.nHeads) throw bad(`head ${c.head} does not exist`);
  return c;
}

/** Words for a component, for titles and captions. */
export function componentLabel(name: string): string {
  const c = parseComponent(name);
  switch (c.kind) {
    case 'embed':
      return 'the embedding';
    case 'attn':
      return `attention layer ${c.layer}`;
    case 'mlp':
      return `MLP layer ${c.layer}`;
    case 'head':
      return `attention head ${c.layer}.${c.head}`;
    case 'attn_bias':
      return `the attention output bias of layer ${c.layer}`;
  }
}

/** Joint ablations (METHOD "Joint ablation"): a target is a set of components, named by its members joined by '+'. */
export const JOINT_SEPARATOR = '+';

/** An ablation target: one component, or several ablated together in one run. */
export interface Target {
  /** The members joined by '+' (a single component: its own name). */
  name: string;
  members: Component[];
}

/** The name of a set of components: `attn.0+attn.1`. */
export function targetName(members: string[]): string {
  return members.join(JOINT_SEPARATOR);
}

/**
 * Parse a target: a component name or several joined by '+'. A member may appear once, and a
 * head or output bias may not be joined with its own layer's attention output (which holds it).
 */
export function parseTarget(name: string, bounds?: ComponentBounds): Target {
  const members = name.split(JOINT_SEPARATOR).map((m) => parseComponent(m, bounds));
  const names = members.map((m) => m.name);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw new HydraError(`target '${name}' names ${twice} twice; list each component of a joint ablation once`);
  const held = members.find((m) => (m.kind === 'head' || m.kind === 'attn_bias') && names.includes(attnName(m.layer)));
  if (held) throw new HydraError(`target '${name}' joins ${held.name} with ${attnName(held.layer)}, which contains it; ablate one or the other`);
  return { name: targetName(names), members };
}
