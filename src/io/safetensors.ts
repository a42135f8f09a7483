import fs from 'node:fs';
import path from 'node:path';
import { HydraError } from './errors.js';

/**
 * Reads Hugging Face safetensors weights: one `model.safetensors`, or shards listed
 * by `model.safetensors.index.json`. Tensors are read on demand straight from the
 * file (never the whole file at once), and converted to float32.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}}, then the data.
 */

export type DType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';
const DTYPE_BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  file: string;
  /** Absolute byte offset of the data in `file`. */
  offset: number;
  byteLength: number;
}

/** Largest header accepted (the reference implementation's limit): a bigger one is corrupt, not a model. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/**
 * Parse one safetensors header strictly: header length, JSON, dtype names, shapes, and
 * offsets (non-negative integers, size = dtype × shape, no overlaps, together covering the
 * data area exactly), so that no byte is read as a weight unless the header says so.
 */
export function readHeader(file: string): TensorEntry[] {
  const stat = fs.statSync(file, { throwIfNoEntry: false });
  if (!stat) throw new HydraError(`${file}: file not found; the model directory needs model.safetensors (or model.safetensors.index.json and its shards)`);
  if (!stat.isFile()) throw new HydraError(`${file}: is not a regular file (a directory?); it must be the safetensors weights file`);
  const size = stat.size;
  const corrupt = (why: string) => new HydraError(`${file}: corrupt safetensors header (${why}); re-download or re-export the weights`);
  if (size < 8) throw corrupt(`file is ${size} bytes, too short for a header`);
  const fd = fs.openSync(file, 'r');
  let json: unknown;
  let n: number;
  try {
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    n = Number(lenBuf.readBigUInt64LE(0));
    if (n <= 1 || 8 + n > size) throw corrupt(`header length ${n} does not fit in a file of ${size} bytes; the file may be truncated`);
    if (n > MAX_HEADER_BYTES) throw corrupt(`header length ${n} is over the limit of ${MAX_HEADER_BYTES} bytes`);
    const hdr = Buffer.alloc(n);
    fs.readSync(fd, hdr, 0, n, 8);
    try {
      json = JSON.parse(hdr.toString('utf8'));
    } catch (e) {
      throw corrupt(`header is not valid JSON: ${(e as Error).message}`);
    }
  } finally {
    fs.closeSync(fd);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw corrupt('header is not a JSON object');
  const dataStart = 8 + n;
  const entries = Object.entries(json as Record<string, unknown>)
    .filter(([name]) => name !== '__metadata__')
    .map(([name, v]) => headerEntry(name, v, file, dataStart, corrupt));
  checkCoverage(entries, size - dataStart, dataStart, corrupt);
  return entries;
}

/** One tensor's header entry, its dtype, shape and offsets checked. */
function headerEntry(name: string, v: unknown, file: string, dataStart: number, corrupt: (why: string) => HydraError): TensorEntry {
  const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (!t || typeof t !== 'object' || typeof t.dtype !== 'string' || !Array.isArray(t.shape) || !Array.isArray(t.data_offsets) || t.data_offsets.length !== 2) {
    throw corrupt(`entry '${name}' lacks dtype/shape/data_offsets`);
  }
  const bytes = DTYPE_BYTES[t.dtype];
  if (!bytes) throw corrupt(`tensor '${name}' has unknown dtype ${JSON.stringify(t.dtype)}; known: ${Object.keys(DTYPE_BYTES).join(', ')}`);
  const count = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
  if (!t.shape.every(count)) throw corrupt(`tensor '${name}' has shape ${JSON.stringify(t.shape)}; dimensions must be non-negative integers`);
  if (!t.data_offsets.every(count)) throw corrupt(`tensor '${name}' has data_offsets ${JSON.stringify(t.data_offsets)}; offsets must be non-negative integers`);
  const shape = t.shape as number[];
  const [b, e] = t.data_offsets as number[];
  if (e < b) throw corrupt(`tensor '${name}' ends (byte ${e}) before it begins (byte ${b})`);
  const need = shape.reduce((a, d) => a * d, 1) * bytes;
  if (e - b !== need) throw corrupt(`tensor '${name}' spans ${e - b} bytes but shape [${shape}] of ${t.dtype} needs ${need}`);
  return { name, dtype: t.dtype as DType, shape, file, offset: dataStart + b, byteLength: e - b };
}

/** The tensors must tile the data area: no gap, no overlap, nothing past the end, nothing left over. */
function checkCoverage(entries: TensorEntry[], dataBytes: number, dataStart: number, corrupt: (why: string) => HydraError): void {
  const sorted = [...entries].sort((x, y) => x.offset - y.offset || x.byteLength - y.byteLength);
  let at = 0;
  let prev = '';
  let gap: HydraError | null = null;
  for (const e of sorted) {
    const b = e.offset - dataStart;
    if (b + e.byteLength > dataBytes) throw corrupt(`tensor '${e.name}' ends at byte ${e.offset + e.byteLength}, past the end of the ${dataStart + dataBytes}-byte file; the file is truncated`);
    if (b < at) throw corrupt(`tensor '${e.name}' (data bytes ${b}..${b + e.byteLength}) overlaps tensor '${prev}' (which ends at ${at})`);
    // An overlap elsewhere says more than the gap it leaves: report gaps last.
    if (b > at) gap ??= corrupt(`data bytes ${at}..${b}, before tensor '${e.name}', belong to no tensor`);
    at = b + e.byteLength;
    if (e.byteLength > 0) prev = e.name;
  }
  if (gap) throw gap;
  if (at !== dataBytes) throw corrupt(`the last ${dataBytes - at} bytes of the data area belong to no tensor`);
}

/** Index of the first NaN or ±Inf, or -1. */
export function firstNonFinite(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (a[i] - a[i] !== 0) return i;
  return -1;
}

/** bfloat16 and float16 to float32. */
function toFloat32(bytes: Buffer, dtype: DType, numel: number): Float32Array {
  const out = new Float32Array(numel);
  if (dtype === 'F32') {
    new Uint8Array(out.buffer).set(bytes);
  } else if (dtype === 'BF16') {
    // bf16 is the top half of a float32.
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < numel; i++) u32[i] = bytes.readUInt16LE(2 * i) << 16;
  } else if (dtype === 'F16') {
    for (let i = 0; i < numel; i++) out[i] = halfToFloat(bytes.readUInt16LE(2 * i));
  } else if (dtype === 'F64') {
    for (let i = 0; i < numel; i++) out[i] = bytes.readDoubleLE(8 * i);
  } else {
    throw new HydraError(`tensor of dtype ${dtype} cannot be used as float weights`);
  }
  return out;
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** model.safetensors.index.json's weight_map: tensor name -> shard file name in the same folder. */
export function readWeightMap(index: string): Record<string, string> {
  let map: unknown;
  try {
    map = JSON.parse(fs.readFileSync(index, 'utf8')).weight_map;
  } catch (e) {
    throw new HydraError(`${index}: not valid JSON (${(e as Error).message})`);
  }
  if (!map || typeof map !== 'object' || Array.isArray(map)) throw new HydraError(`${index}: no 'weight_map' object`);
  for (const [name, shard] of Object.entries(map)) {
    // A shard is a file beside the index: a name, not a number or a path out of the folder.
    if (typeof shard !== 'string' || shard === '' || path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      throw new HydraError(`${index}: weight_map gives tensor '${name}' the shard ${JSON.stringify(shard)}; a shard must be a file name in the model folder, such as "model-00001-of-00002.safetensors"`);
    }
  }
  return map as Record<string, string>;
}

/** All tensors of a model directory, from one file or from shards. */
export class WeightStore {
  private constructor(
    readonly dir: string,
    private readonly entries: Map<string, TensorEntry>,
  ) {}

  static open(dir: string): WeightStore {
    const single = path.join(dir, 'model.safetensors');
    const index = path.join(dir, 'model.safetensors.index.json');
    const entries = new Map<string, TensorEntry>();
    if (fs.existsSync(single)) {
      for (const e of readHeader(single)) entries.set(e.name, e);
    } else if (fs.existsSync(index)) {
      const map = readWeightMap(index);
      const shards = new Map<string, Map<string, TensorEntry>>();
      for (const shard of new Set(Object.values(map))) shards.set(shard, new Map(readHeader(path.join(dir, shard)).map((t) => [t.name, t])));
      for (const [name, shard] of Object.entries(map)) {
        const e = shards.get(shard)!.get(name);
        if (!e) throw new HydraError(`${path.join(dir, shard)}: has no tensor '${name}', which ${index} says it holds`);
        entries.set(name, e);
      }
    } else if (fs.existsSync(path.join(dir, 'pytorch_model.bin'))) {
      throw new HydraError(`${dir}: has only pytorch_model.bin; Hydra reads safetensors: convert the weights (e.g. save_pretrained(..., safe_serialization=True))`);
    } else {
      throw new HydraError(`${dir}: no model.safetensors or model.safetensors.index.json found; point \`model\` at a Hugging Face model directory`);
    }
    return new WeightStore(dir, entries);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): TensorEntry | undefined {
    return this.entries.get(name);
  }

  /**
   * Read a float tensor as float32, checking its shape.
   * `why` names what needs it (a config field) so a mismatch can be explained.
   */
  get(name: string, shape: number[], why = ''): Float32Array {
    const e = this.entries.get(name);
    if (!e) throw new HydraError(`${this.dir}: missing weight '${name}'${why ? ` (${why})` : ''}; the checkpoint does not match its config.json`);
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
      throw new HydraError(`${e.file}: tensor '${name}' has shape [${e.shape.join(', ')}], expected [${shape.join(', ')}]${why ? ` from config.json (${why})` : ''}`);
    }
    if (!FLOAT_DTYPES.has(e.dtype)) throw new HydraError(`${e.file}: tensor '${name}' has dtype ${e.dtype}; float32, float16 or bfloat16 expected`);
    const buf = Buffer.alloc(e.byteLength);
    const fd = fs.openSync(e.file, 'r');
    try {
      let done = 0;
      while (done < e.byteLength) {
        const n = fs.readSync(fd, buf, done, e.byteLength - done, e.offset + done);
        if (n === 0) throw new HydraError(`${e.file}: unexpected end of file reading '${name}'; the file is truncated`);
        done += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    const out = toFloat32(buf, e.dtype, e.shape.reduce((a, d) => a * d, 1));
    // Each weight is read once, at load: the one cheap place to stop NaN/Inf from reaching any output.
    const bad = firstNonFinite(out);
    if (bad >= 0) throw new HydraError(`${e.file}: tensor '${name}' holds ${out[bad]} at flat index ${bad}; weights must be finite, re-export or re-download them`);
    return out;
  }

  /** Like get, but returns null when the tensor is absent (optional biases). */
  maybe(name: string, shape: number[], why = ''): Float32Array | null {
    return this.entries.has(name) ? this.get(name, shape, why) : null;
  }
}

/** Write tensors as one safetensors file (for tests, constructed models and the benchmark model). */
export function writeSafetensors(file: string, tensors: Record<string, { shape: number[]; data: Float32Array }>, dtype: 'F32' | 'F16' | 'BF16' = 'F32'): void {
  const header: Record<string, unknown> = {};
  const parts: Buffer[] = [];
  let off = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const numel = t.shape.reduce((a, d) => a * d, 1);
    if (numel !== t.data.length) throw new Error(`writeSafetensors: '${name}' has ${t.data.length} values for shape [${t.shape}]`);
    const buf = encode(t.data, dtype);
    header[name] = { dtype, shape: t.shape, data_offsets: [off, off + buf.length] };
    parts.push(buf);
    off += buf.length;
  }
  let json = JSON.stringify(header);
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json), ...parts]));
}

function encode(data: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Buffer {
  if (dtype === 'F32') return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const out = Buffer.alloc(2 * data.length);
  const u32 = new Uint32Array(Float32Array.from(data).buffer);
  for (let i = 0; i < data.length; i++) {
    if (dtype === 'BF16') {
      // round to nearest even
      const x = u32[i];
      out.writeUInt16LE(((x + 0x7fff + ((x >> 16) & 1)) >>> 16) & 0xffff, 2 * i);
    } else {
      out.writeUInt16LE(floatToHalf(data[i]), 2 * i);
    }
  }
  return out;
}

function floatToHalf(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >> 16) & 0x8000;
  const exp = ((u >> 23) & 0xff) - 127 + 15;
  let mant = u & 0x7fffff;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant = (mant | 0x800000) >> (1 - exp);
    return sign | ((mant + 0x1000) >> 13);
  }
  if (exp >= 31) return sign | 0x7c00;
  const h = sign | (exp << 10) | (mant >> 13);
  return (mant & 0x1000) !== 0 ? h + 1 : h;
}
