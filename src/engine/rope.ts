import type { RopeSpec } from './spec.js';

/** Inverse frequencies of the rotary embedding for a sequence of `seqLen` tokens, after any scaling (float64). */
export function inverseFrequencies(rope: RopeSpec, seqLen: number): Float64Array {
  const half = rope.dim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / rope.theta ** ((2 * i) / rope.dim);
  const s = rope.scaling;
  if (s?.type === 'linear') for (let i = 0; i < half; i++) inv[i] /= s.factor;
  if (s?.type === 'longrope') {
    // The factor set depends on the sequence's length, as Hugging Face's dynamic update does.
    const ext = seqLen > s.originalMaxPositions ? s.longFactor : s.shortFactor;
    for (let i = 0; i < half; i++) inv[i] /= ext[i];
  }
  if (s?.type === 'llama3') {
    // Long wavelengths are slowed by `factor`, short ones kept, and the band between interpolated.
    const lowWave = s.originalMaxPositions / s.lowFreqFactor;
    const highWave = s.originalMaxPositions / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wave = (2 * Math.PI) / inv[i];
      if (wave > lowWave) inv[i] /= s.factor;
      else if (wave >= highWave) {
        const smooth = (s.originalMaxPositions / wave - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i] / s.factor) + smooth * inv[i];
      }
    }
  }
  return inv;
}

/**
 * cos and sin tables [positions.length, dim] for rows at `positions` of sequences of
 * `seqLens` tokens: frequency i sits at i and i + dim/2 ('half') or at 2i and 2i+1
 * ('interleaved'). Longrope scales both by its attention factor.
 */
export function ropeTables(rope: RopeSpec, positions: ArrayLike<number>, seqLens: ArrayLike<number>): { cos: Float32Array; sin: Float32Array } {
  const half = rope.dim / 2;
  const mag = rope.scaling?.type === 'longrope' ? rope.scaling.attentionFactor : 1;
  const cos = new Float32Array(positions.length * rope.dim);
  const sin = new Float32Array(positions.length * rope.dim);
  const byLen = new Map<number, Float64Array>();
  for (let p = 0; p < positions.length; p++) {
    let inv = byLen.get(seqLens[p]);
    if (!inv) byLen.set(seqLens[p], (inv = inverseFrequencies(rope, seqLens[p])));
    for (let i = 0; i < half; i++) {
      const a = positions[p] * inv[i];
      const [c, s] = [mag * Math.cos(a), mag * Math.sin(a)];
      const [i0, i1] = rope.style === 'half' ? [i, half + i] : [2 * i, 2 * i + 1];
      cos[p * rope.dim + i0] = cos[p * rope.dim + i1] = c;
      sin[p * rope.dim + i0] = sin[p * rope.dim + i1] = s;
    }
  }
  return { cos, sin };
}

/** A key that is equal for layers whose rotary tables are equal. */
export function ropeKey(rope: RopeSpec | null): string {
  return rope ? JSON.stringify(rope) : 'none';
}
