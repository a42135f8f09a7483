import { HydraError } from '../io/errors.js';

/**
 * Seeded randomness for resample sources and noise. Each (seed, prompt, stream) gets
 * its own generator, so a prompt's draws do not depend on batching, sharding or --limit.
 */

/** mulberry32: a small, fast 32-bit generator; uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Seeds are integers from 0 to 2^53 − 1: every one a JavaScript number holds exactly. */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

/**
 * Mix several non-negative integers (up to 2^53 − 1) into one 32-bit seed. A part's high
 * word is mixed in only when it is non-zero, so that seeds below 2^32 draw as they always did.
 */
export function seedOf(...parts: number[]): number {
  let h = 0x9e3779b9;
  const mix = (w: number) => {
    h = Math.imul(h ^ w, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
  };
  for (const p of parts) {
    mix(p >>> 0);
    const hi = Math.floor(p / 2 ** 32);
    if (hi !== 0) mix(hi >>> 0);
  }
  return h >>> 0;
}

/** A seed as given by a user: an integer in [0, MAX_SEED], or an error naming the range. */
export function checkSeed(seed: unknown, label = '--seed'): number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw new HydraError(`${label} ${String(seed)} is not an integer from 0 to ${MAX_SEED} (2^53 - 1)`);
  }
  return seed;
}

/** Standard normal draws (Box–Muller). */
export function gaussian(rand: () => number): () => number {
  return () => {
    const u = 1 - rand();
    const v = rand();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

/** S distinct items of `candidates`, in draw order, by a partial Fisher–Yates shuffle. */
export function sampleFrom<T>(candidates: readonly T[], S: number, rand: () => number): T[] {
  const pool = [...candidates];
  for (let i = 0; i < S; i++) {
    const j = i + Math.floor(rand() * (pool.length - i));
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, S);
}
