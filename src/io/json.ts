/** JSON for results: typed arrays become plain arrays and Maps objects (NaN and Infinity become null, as JSON.stringify does). */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v as unknown as ArrayLike<number>);
    if (v instanceof Map) return Object.fromEntries(v);
    return v;
  });
}
