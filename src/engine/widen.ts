import { decodeInto, type Matrix } from '../io/matrix.js';

/**
 * Two-byte weights widened to float32 for each session run, into one scratch buffer.
 * A bfloat16 is the top half of a float32, so widening it is a 16-bit shift; WebAssembly
 * SIMD does eight at a time. Measured on 16M values: 0.31 ns a value, against 1.06 for
 * the plain JavaScript loop, which had been a third of a bf16 sweep at the llama-1b shape.
 * float16 goes through decodeInto's table (no SIMD conversion in WebAssembly).
 *
 * The scratch lives in the module's memory, so onnxruntime reads the widened values
 * where WebAssembly wrote them. The checkpoint's bytes are copied in through a small
 * staging area (they live in JavaScript buffers the module cannot read).
 */

/*
 * The module, in text form:
 * (module
 *   (import "env" "memory" (memory 1))
 *   (func (export "widen") (param $src i32) (param $dst i32) (param $n i32)  ;; $n: a multiple of 8
 *     (block (br_if 0 (i32.eqz (local.get $n)))
 *       (loop
 *         (v128.store offset=0 (local.get $dst)
 *           (i32x4.shl (i32x4.extend_low_i16x8_u (v128.load (local.get $src))) (i32.const 16)))
 *         (v128.store offset=16 (local.get $dst)
 *           (i32x4.shl (i32x4.extend_high_i16x8_u (v128.load (local.get $src))) (i32.const 16)))
 *         (local.set $src (i32.add (local.get $src) (i32.const 16)))
 *         (local.set $dst (i32.add (local.get $dst) (i32.const 32)))
 *         (br_if 0 (local.tee $n (i32.sub (local.get $n) (i32.const 8))))))))
 */
function moduleBytes(): Uint8Array<ArrayBuffer> {
  const leb = (v: number) => {
    const out: number[] = [];
    do {
      const b = v & 0x7f;
      v >>>= 7;
      out.push(v ? b | 0x80 : b);
    } while (v);
    return out;
  };
  const simd = (op: number) => [0xfd, ...leb(op)];
  const [LOAD, STORE, EXTEND_LOW_U, EXTEND_HIGH_U, SHL] = [0x00, 0x0b, 0xa9, 0xaa, 0xab];
  const get = (i: number) => [0x20, i];
  const i32 = (v: number) => [0x41, ...leb(v)];
  const half = (extend: number, offset: number) => [
    ...get(1), ...get(0), ...simd(LOAD), 4, 0, ...simd(extend), ...i32(16), ...simd(SHL), ...simd(STORE), 4, offset,
  ];
  const body = [
    0x00, // no locals
    0x02, 0x40, ...get(2), 0x45, 0x0d, 0x00, // block; br_if (n == 0)
    0x03, 0x40, // loop
    ...half(EXTEND_LOW_U, 0),
    ...half(EXTEND_HIGH_U, 16),
    ...get(0), ...i32(16), 0x6a, 0x21, 0, // src += 16
    ...get(1), ...i32(32), 0x6a, 0x21, 1, // dst += 32
    ...get(2), ...i32(8), 0x6b, 0x22, 2, 0x0d, 0x00, // n -= 8; br_if loop
    0x0b, 0x0b, 0x0b, // end loop, block, function
  ];
  const section = (id: number, bytes: number[]) => [id, ...leb(bytes.length), ...bytes];
  const name = (s: string) => [s.length, ...Array.from(s, (c) => c.charCodeAt(0))];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 3, 0x7f, 0x7f, 0x7f, 0]), // type: (i32, i32, i32) -> ()
    ...section(2, [1, ...name('env'), ...name('memory'), 0x02, 0x00, 0x01]), // import memory
    ...section(3, [1, 0]),
    ...section(7, [1, ...name('widen'), 0x00, 0x00]),
    ...section(10, [1, ...leb(body.length), ...body]),
  ]);
}

const PAGE = 65536;
/** Values copied in per call: 128 KiB of bfloat16, which stays in the core's cache. */
const STAGE = 65536;
const SCRATCH_AT = STAGE * 2;
/** WebAssembly memory can hold 4 GiB; a larger scratch falls back to JavaScript. */
const MAX_PAGES = 65536;

type Widen = (src: number, dst: number, n: number) => void;
let compiled: WebAssembly.Module | null = null;

export class WideningScratch {
  private memory: WebAssembly.Memory | null = null;
  private widen: Widen | null = null;
  private values = new Float32Array(0);

  /** The scratch's values, at least n of them (growing it invalidates earlier views). */
  reserve(n: number): Float32Array {
    if (this.values.length >= n) return this.values;
    const pages = Math.ceil((SCRATCH_AT + n * 4) / PAGE);
    try {
      if (pages > MAX_PAGES) throw new RangeError('scratch beyond WebAssembly memory');
      if (!this.memory) {
        compiled ??= new WebAssembly.Module(moduleBytes());
        this.memory = new WebAssembly.Memory({ initial: pages, maximum: MAX_PAGES });
        this.widen = new WebAssembly.Instance(compiled, { env: { memory: this.memory } }).exports.widen as Widen;
      } else this.memory.grow(pages - this.memory.buffer.byteLength / PAGE);
      this.values = new Float32Array(this.memory.buffer, SCRATCH_AT, (this.memory.buffer.byteLength - SCRATCH_AT) / 4);
    } catch {
      // No WebAssembly memory this large here (or address space refused): widen in JavaScript.
      this.memory = null;
      this.values = new Float32Array(n);
    }
    return this.values;
  }

  /** Widen a two-byte matrix into the scratch at value offset `at`; returns its values there. */
  widenInto(m: Matrix, at: number): Float32Array {
    const n = m.rows * m.cols;
    const out = this.values.subarray(at, at + n);
    if (m.dtype !== 'BF16' || !this.memory || !this.widen) {
      decodeInto(m, out);
      return out;
    }
    const stage = new Uint8Array(this.memory.buffer, 0, STAGE * 2);
    const base = SCRATCH_AT + at * 4;
    const bulk = n - (n % 8);
    for (let i = 0; i < bulk; i += STAGE) {
      const k = Math.min(STAGE, bulk - i);
      stage.set(m.data.subarray(i * 2, (i + k) * 2));
      this.widen(0, base + i * 4, k);
    }
    const bits = new Uint32Array(this.memory.buffer, base, n);
    for (let i = bulk; i < n; i++) bits[i] = (m.data[2 * i] | (m.data[2 * i + 1] << 8)) << 16;
    return out;
  }
}
