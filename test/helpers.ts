import path from 'node:path';
import fs from 'node:fs';
import net from 'node:net';
import assert from 'node:assert/strict';
import { EFFECT_FIELDS, PATCH_FIELDS, type PromptResult } from '../src/causal/types.js';
import { HydraError } from '../src/io/errors.js';
import { packageRoot } from '../src/io/paths.js';

export const fixturesDir = path.join(packageRoot, 'test', 'fixtures');
export const goldenDir = path.join(fixturesDir, 'golden');
export const fixtureModelsDir = path.join(fixturesDir, 'models');
export const FIXTURE_MODELS = [
  'tiny-gpt2', 'tiny-neox-parallel', 'tiny-neox-sequential', 'tiny-llama-gqa', 'tiny-qwen2', 'tiny-gemma', 'stories260k',
  'tiny-qwen3', 'tiny-gemma2', 'tiny-gemma3', 'tiny-olmo2', 'tiny-phi3', 'tiny-phi3-longrope', 'tiny-gptj', 'tiny-gpt-neo', 'tiny-opt', 'tiny-mistral-sw',
];

/** Model directory of a fixture model (stories260k is the bundled default model). */
export function fixtureModelDir(name: string): string {
  return name === 'stories260k' ? path.join(packageRoot, 'assets', 'models', 'stories260k') : path.join(fixtureModelsDir, name);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function loadGolden(name: string): any {
  return JSON.parse(fs.readFileSync(path.join(goldenDir, `${name}.json`), 'utf8'));
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** A fresh temporary directory, removed by the caller or left for the OS. */
export function tmpDir(prefix = 'hydra-test-'): string {
  return fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', prefix));
}

/** Golden component names (e, attnL, mlpL, headL.H, bOL) in Hydra's naming. */
export function hydraName(golden: string): string {
  if (golden === 'e') return 'embed';
  let m = /^attn(\d+)$/.exec(golden);
  if (m) return `attn.${m[1]}`;
  m = /^mlp(\d+)$/.exec(golden);
  if (m) return `mlp.${m[1]}`;
  m = /^head(\d+)\.(\d+)$/.exec(golden);
  if (m) return `head.${m[1]}.${m[2]}`;
  m = /^bO(\d+)$/.exec(golden);
  if (m) return `attn_bias.${m[1]}`;
  throw new Error(`unknown golden component ${golden}`);
}


/** Rejects with a HydraError whose one-line message matches `re`. */
export async function rejectsWith(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof HydraError, `expected HydraError, got ${String(e)}`);
    assert.match(e.message, re);
    assert.ok(!e.message.includes('\n'), 'message must be one line');
    return true;
  });
}

/** One raw HTTP/1.1 request to 127.0.0.1:port (headers as written, Host included or not): status and body. */
export function rawRequest(port: number, request: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // Written, not ended: a half-closed socket may lose the answer to a slow request.
    const c = net.connect(port, '127.0.0.1', () => c.write(request));
    c.setTimeout(60_000, () => c.destroy(new Error('no answer within 60 s')));
    let text = '';
    c.on('data', (d) => (text += d.toString()));
    c.on('error', reject);
    c.on('close', () => resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0), body: text.slice(text.indexOf('\r\n\r\n') + 4) }));
  });
}

/**
 * The fast path's results agree with the naive path's, patch by patch: the same source, every
 * effect field, σ′ and π̂′, every DE′, and the closure TE = ΔDE(k) + CE + NE.
 */
export function assertPathsAgree(label: string, fast: PromptResult[], naive: PromptResult[], tol = 1e-4): void {
  const close = (what: string, got: number, want: number) => assert.ok(Math.abs(got - want) < tol, `${label} ${what}: ${got} vs ${want}`);
  assert.equal(fast.length, naive.length, `${label}: prompts`);
  fast.forEach((r, n) => {
    assert.deepEqual(Object.keys(r.ablations).sort(), Object.keys(naive[n].ablations).sort(), `${label} p${n}: targets`);
    for (const [t, a] of Object.entries(r.ablations)) {
      const b = naive[n].ablations[t];
      assert.equal(a.patches.length, b.patches.length, `${label} p${n} ${t}: patches`);
      a.patches.forEach((p, s) => {
        const q = b.patches[s];
        const at = `p${n} ${t} patch ${s}`;
        assert.equal(p.source, q.source, `${label} ${at}: source`);
        for (const k of [...EFFECT_FIELDS, ...PATCH_FIELDS]) close(`${at} ${k}`, p[k], q[k]);
        for (const c of Object.keys(q.de_prime)) close(`${at} DE'(${c})`, p.de_prime[c], q.de_prime[c]);
        close(`${at} closure`, p.te, p.dde_self + p.ce + p.ne);
      });
    }
  });
}

/**
 * Rewrite a store as hydra wrote it before schema version 3: DE' as the table de_prime, one value
 * a row in write order, and `version` in run_config (`config_json` too, when given).
 */
export async function toLongLayout(db: string, version: number, configJson?: string): Promise<void> {
  const { DuckDBInstance } = await import('@duckdb/node-api');
  const inst = await DuckDBInstance.create(db);
  const con = await inst.connect();
  try {
    await con.run(`CREATE TABLE de_prime_long AS SELECT prompt_idx, ablated, patch_idx, component, value FROM (
        SELECT v.prompt_idx, v.ablated, v.patch_idx, unnest(l.components) AS component, unnest(v.value) AS value,
          generate_subscripts(v.value, 1) AS i, v.rowid AS r
        FROM de_prime_values v JOIN de_prime_layouts l USING (layout)) ORDER BY r, i;
      DROP VIEW de_prime; DROP TABLE de_prime_values; DROP TABLE de_prime_layouts;
      ALTER TABLE de_prime_long RENAME TO de_prime;`);
    await con.run('UPDATE run_config SET schema_version = $1', [version]);
    if (configJson !== undefined) await con.run('UPDATE run_config SET config_json = $1', [configJson]);
  } finally {
    con.closeSync();
    inst.closeSync();
  }
}
