import { HydraError } from './errors.js';

/**
 * Refuse JSON nested deeper than `max` before parsing it: deep input parses, but then overflows
 * the stack of whatever walks it (printing a record, for one).
 */
export function checkJsonDepth(text: string, max: number, where: string): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) throw new HydraError(`${where} is nested more than ${max} levels deep (the limit); a record is a flat object, fix the file`);
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
}

/** JSON for results: typed arrays become plain arrays and Maps objects (NaN and Infinity become null, as JSON.stringify does). */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v as unknown as ArrayLike<number>);
    if (v instanceof Map) return Object.fromEntries(v);
    return v;
  });
}
