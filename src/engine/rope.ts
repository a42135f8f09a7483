import type { RopeSpec } from './spec.js';

/** Inverse frequencies of the rotary embedding, after any scaling (computed in float64). */
export function inverseFrequencies(rope: RopeSpec): Float64Array {
  const half = rope.dim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / rope.theta ** ((2 * i) / rope.dim);
  const s = rope.scaling;
  if (s?.type === 'linear') for (let i = 0; i < half; i++) inv[i] /= s.factor;
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

/** cos and sin tables [positions.length, dim], each frequency repeated in both halves (rotate_half convention). */
export function ropeTables(rope: RopeSpec, positions: ArrayLike<number>): { cos: Float32Array; sin: Float32Array } {
  const inv = inverseFrequencies(rope);
  const half = rope.dim / 2;
  const cos = new Float32Array(positions.length * rope.dim);
  const sin = new Float32Array(positions.length * rope.dim);
  for (let p = 0; p < positions.length; p++) {
    for (let i = 0; i < half; i++) {
      const a = positions[p] * inv[i];
      const c = Math.cos(a);
      const s = Math.sin(a);
      cos[p * rope.dim + i] = cos[p * rope.dim + half + i] = c;
      sin[p * rope.dim + i] = sin[p * rope.dim + half + i] = s;
    }
  }
  return { cos, sin };
}
