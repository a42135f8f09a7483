import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import { HydraError } from './errors.js';

/** The package root (the folder holding package.json), found from this file's location in src/ or dist/src/. */
function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error('cannot locate the hydra package root');
}

export const packageRoot = findRoot();
/** Bundled assets: the default model, datasets and tokenizers. */
export const assetsDir = path.join(packageRoot, 'assets');
export const defaultModelDir = path.join(assetsDir, 'models', 'stories260k');
export const known1000Path = path.join(assetsDir, 'data', 'known_1000', 'known_1000.json');
export const gpt2TokenizerDir = path.join(assetsDir, 'tokenizers', 'gpt2');
/** The demo prompt set: story prompts where stories260k must recall a name from the context. */
export const storiesRecallPath = path.join(assetsDir, 'data', 'stories_recall', 'stories_recall.jsonl');

/**
 * mkdir -p with a one-line error. Node's recursive mkdirSync spins forever under /proc (it retries
 * the ENOENT it gets there), so each missing level is created here. `hint` says what to do instead.
 */
export function makeDir(dir: string, hint = 'choose a writable folder'): void {
  const abs = path.resolve(dir);
  const missing: string[] = [];
  for (let d = abs; !fs.existsSync(d) && path.dirname(d) !== d; d = path.dirname(d)) missing.push(d);
  try {
    for (const m of missing.reverse()) fs.mkdirSync(m);
  } catch (e) {
    throw new HydraError(`cannot create the folder ${dir} (${(e as NodeJS.ErrnoException).code ?? String(e)}); ${hint}`);
  }
  if (!fs.statSync(abs).isDirectory()) throw new HydraError(`${dir} is a file, not a folder; ${hint}`);
}
