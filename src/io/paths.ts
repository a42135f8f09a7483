import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';

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
