import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decode, type Matrix } from '../src/io/matrix.js';
import { WideningScratch } from '../src/engine/widen.js';

/** Every bfloat16 bit pattern (NaNs, infinities, subnormals, both zeros), at an odd byte offset. */
function everyBfloat16(): Matrix {
  const buf = new Uint8Array(1 + 2 * 65536);
  for (let b = 0; b < 65536; b++) {
    buf[1 + 2 * b] = b & 0xff;
    buf[2 + 2 * b] = b >> 8;
  }
  return { dtype: 'BF16', rows: 256, cols: 256, data: buf.subarray(1), layout: 'out_in' };
}

const bits = (v: Float32Array) => new Uint32Array(v.buffer, v.byteOffset, v.length);

test('WebAssembly widening gives every bfloat16 bit pattern the bits of its float32', () => {
  const m = everyBfloat16();
  const s = new WideningScratch();
  s.reserve(65536 + 3);
  // At an offset, so the SIMD loop starts unaligned to the scratch's start.
  const out = s.widenInto(m, 3);
  assert.deepEqual(bits(out), bits(decode(m.data, 'BF16')));
  for (let b = 0; b < 65536; b += 4099) assert.equal(bits(out)[b], (b << 16) >>> 0);
});

test('widening handles lengths that are not a multiple of eight, and keeps earlier values when the scratch grows', () => {
  const m = everyBfloat16();
  const s = new WideningScratch();
  for (const n of [1, 7, 9, 8 * 65536 / 8 - 5]) {
    const part: Matrix = { ...m, rows: 1, cols: n, data: m.data.subarray(0, 2 * n) };
    s.reserve(n + 100);
    const out = s.widenInto(part, 100);
    assert.deepEqual(bits(out), bits(decode(part.data, 'BF16')), `n = ${n}`);
  }
  const first = s.widenInto({ ...m, rows: 1, cols: 10, data: m.data.subarray(0, 20) }, 0).slice();
  // More values than one staging chunk: the loop over chunks, after a grow.
  const big: Matrix = { dtype: 'BF16', rows: 3, cols: 65536, data: new Uint8Array(3 * 65536 * 2).map((_, i) => (i * 131) & 0xff), layout: 'out_in' };
  s.reserve(3 * 65536 + 10);
  assert.deepEqual(bits(s.widenInto(big, 10)), bits(decode(big.data, 'BF16')));
  assert.deepEqual(bits(s.reserve(10).subarray(0, 10)), bits(first), 'growing keeps what was widened');
});

test('float16 is widened exactly too (through the table)', () => {
  const m: Matrix = { ...everyBfloat16(), dtype: 'F16' };
  const s = new WideningScratch();
  s.reserve(65536);
  const out = s.widenInto(m, 0);
  const want = decode(m.data, 'F16');
  for (let b = 0; b < 65536; b++) assert.ok(Object.is(out[b], want[b]) || (Number.isNaN(out[b]) && Number.isNaN(want[b])), `pattern ${b}`);
});
