/**
 * Weight matrices as the checkpoint stores them: raw little-endian bytes in their own
 * dtype (float32, float16 or bfloat16). The model holds them once, at their width; the
 * engine widens two-byte ones to float32 for each session run (engine/widen.ts), so the
 * arithmetic is float32 throughout (widening float16/bfloat16 is exact).
 */
export type WeightDType = 'F32' | 'F16' | 'BF16';

export const DTYPE_SIZE: Record<WeightDType, number> = { F32: 4, F16: 2, BF16: 2 };

export interface Matrix {
  dtype: WeightDType;
  /** Stored shape. */
  rows: number;
  cols: number;
  data: Uint8Array;
  /** 'out_in': rows are outputs (nn.Linear, embeddings); 'in_out': rows are inputs (GPT-2's Conv1D). */
  layout: 'out_in' | 'in_out';
}

export function matrixBytes(m: Matrix): number {
  return m.data.byteLength;
}

/** Number of outputs and inputs of a matrix used as a linear map. */
export function outputsOf(m: Matrix): number {
  return m.layout === 'out_in' ? m.rows : m.cols;
}
export function inputsOf(m: Matrix): number {
  return m.layout === 'out_in' ? m.cols : m.rows;
}

/** Outputs [from, to) of a linear map (a fused projection's part): row copies, whatever the dtype. */
export function sliceOutputs(m: Matrix, from: number, to: number): Matrix {
  const size = DTYPE_SIZE[m.dtype];
  if (m.layout === 'out_in') return { ...m, rows: to - from, data: m.data.slice(from * m.cols * size, to * m.cols * size) };
  const width = to - from;
  const data = new Uint8Array(m.rows * width * size);
  for (let r = 0; r < m.rows; r++) data.set(m.data.subarray((r * m.cols + from) * size, (r * m.cols + to) * size), r * width * size);
  return { ...m, cols: width, data };
}

/** Linear maps with the same inputs, side by side: one map whose outputs are theirs in order. */
export function concatOutputs(ms: Matrix[]): Matrix {
  const same = ms.every((m) => m.dtype === ms[0].dtype && m.layout === ms[0].layout);
  const parts = same ? ms : ms.map((m) => toDType(m, 'F32'));
  const first = parts[0];
  const size = DTYPE_SIZE[first.dtype];
  if (first.layout === 'out_in') {
    const data = new Uint8Array(parts.reduce((s, m) => s + m.data.byteLength, 0));
    let at = 0;
    for (const m of parts) {
      data.set(m.data, at);
      at += m.data.byteLength;
    }
    return { ...first, rows: parts.reduce((s, m) => s + m.rows, 0), data };
  }
  const cols = parts.reduce((s, m) => s + m.cols, 0);
  const data = new Uint8Array(first.rows * cols * size);
  for (let r = 0; r < first.rows; r++) {
    let at = r * cols * size;
    for (const m of parts) {
      data.set(m.data.subarray(r * m.cols * size, (r + 1) * m.cols * size), at);
      at += m.cols * size;
    }
  }
  return { ...first, cols, data };
}

/** Float32 values of a matrix's row (a token's embedding or unembedding). */
export function rowValues(m: Matrix, r: number): Float32Array {
  if (m.layout !== 'out_in') throw new Error('rowValues: rows of an in_out matrix are inputs');
  const size = DTYPE_SIZE[m.dtype];
  return decode(m.data.subarray(r * m.cols * size, (r + 1) * m.cols * size), m.dtype);
}

/** Mean of the rows, in float64, read in chunks (the unembedding's mean token row). */
export function meanRow(m: Matrix): Float64Array {
  const mean = new Float64Array(m.cols);
  const size = DTYPE_SIZE[m.dtype];
  const chunk = Math.max(1, Math.floor((1 << 22) / m.cols));
  for (let r0 = 0; r0 < m.rows; r0 += chunk) {
    const r1 = Math.min(m.rows, r0 + chunk);
    const v = decode(m.data.subarray(r0 * m.cols * size, r1 * m.cols * size), m.dtype);
    for (let r = 0; r < r1 - r0; r++) {
      const at = r * m.cols;
      for (let j = 0; j < m.cols; j++) mean[j] += v[at + j];
    }
  }
  for (let j = 0; j < m.cols; j++) mean[j] /= m.rows;
  return mean;
}

/** Rows [from, to) of a matrix, sharing its bytes (no copy). */
export function rowsOf(m: Matrix, from: number, to: number): Matrix {
  const row = m.cols * DTYPE_SIZE[m.dtype];
  return { ...m, rows: to - from, data: m.data.subarray(from * row, to * row) };
}

/** A float32 matrix's values, without a copy where the bytes are aligned. */
export function float32View(m: Matrix): Float32Array {
  if (m.dtype !== 'F32') throw new Error('float32View: not a float32 matrix');
  const bytes = m.data.byteOffset % 4 === 0 ? m.data : m.data.slice();
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

let halfTable: Float32Array | null = null;

/** Widen a two-byte matrix into `out` (exact): bfloat16 is the top half of a float32; float16 through a table of its 65,536 values. */
export function decodeInto(m: Matrix, out: Float32Array): void {
  const n = m.rows * m.cols;
  const bytes = m.data.byteOffset % 2 === 0 ? m.data : m.data.slice();
  const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  if (m.dtype === 'BF16') {
    const u = new Uint32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) u[i] = h[i] << 16;
  } else if (m.dtype === 'F16') {
    if (!halfTable) halfTable = Float32Array.from({ length: 65536 }, (_, b) => halfToFloat(b));
    const t = halfTable;
    for (let i = 0; i < n; i++) out[i] = t[h[i]];
  } else out.set(float32View(m).subarray(0, n));
}

/** Widen raw values to float32 (exact for float16 and bfloat16). */
export function decode(bytes: Uint8Array, dtype: WeightDType): Float32Array {
  const n = bytes.byteLength / DTYPE_SIZE[dtype];
  const aligned = bytes.byteOffset % DTYPE_SIZE[dtype] === 0 ? bytes : bytes.slice();
  if (dtype === 'F32') return new Float32Array(aligned.buffer, aligned.byteOffset, n).slice();
  const h = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
  const out = new Float32Array(n);
  if (dtype === 'BF16') {
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u[i] = h[i] << 16;
    return out;
  }
  for (let i = 0; i < n; i++) out[i] = halfToFloat(h[i]);
  return out;
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** A matrix converted to another dtype (float32 ← any is exact; narrowing rounds to nearest even). */
export function toDType(m: Matrix, dtype: WeightDType): Matrix {
  if (m.dtype === dtype) return m;
  const v = decode(m.data, m.dtype);
  return { ...m, dtype, data: encode(v, dtype) };
}

export function encode(v: Float32Array, dtype: WeightDType): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  const out = new Uint16Array(v.length);
  const u = new Uint32Array(v.buffer, v.byteOffset, v.length);
  if (dtype === 'BF16') for (let i = 0; i < v.length; i++) out[i] = ((u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16) & 0xffff;
  else for (let i = 0; i < v.length; i++) out[i] = floatToHalf(v[i]);
  return new Uint8Array(out.buffer);
}

function floatToHalf(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  const sign = (u >> 16) & 0x8000;
  const exp = ((u >> 23) & 0xff) - 127 + 15;
  let mant = u & 0x7fffff;
  if (((u >> 23) & 0xff) === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant = (mant | 0x800000) >> (1 - exp);
    return sign | ((mant + 0x1000) >> 13);
  }
  if (exp >= 31) return sign | 0x7c00;
  const h = sign | (exp << 10) | (mant >> 13);
  return (mant & 0x1000) !== 0 ? h + 1 : h;
}

/** Index of the first NaN or ±Inf in an array of numbers, or −1. */
export function firstNonFiniteValue(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (a[i] - a[i] !== 0) return i;
  return -1;
}

/** The first non-finite value's index, or −1 (checked once at load, on the raw bits, two-byte values two at a time). */
export function firstNonFinite(m: Matrix): number {
  const bytes = m.data.byteOffset % 4 === 0 ? m.data : m.data.slice();
  const u = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  const exp = m.dtype === 'F32' ? 0x7f800000 : m.dtype === 'BF16' ? 0x7f80 : 0x7c00;
  const hi = m.dtype === 'F32' ? 0 : exp << 16;
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    if ((x & exp) === exp || (hi !== 0 && (x & hi) >>> 0 === hi >>> 0)) return m.dtype === 'F32' ? i : 2 * i + ((x & exp) === exp ? 0 : 1);
  }
  // An odd count of two-byte values leaves one past the last whole word.
  const n = bytes.byteLength;
  if (m.dtype !== 'F32' && n % 4 === 2 && (((bytes[n - 1] << 8) | bytes[n - 2]) & exp) === exp) return n / 2 - 1;
  return -1;
}
