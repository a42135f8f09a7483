import fs from 'node:fs';
import path from 'node:path';
import { HydraError } from '../io/errors.js';
import type { Family, HfConfig } from './family.js';
import { gemma } from './gemma.js';
import { gemma2 } from './gemma2.js';
import { gemma3 } from './gemma3.js';
import { gpt2 } from './gpt2.js';
import { gptNeo } from './gpt_neo.js';
import { gptNeox } from './gpt_neox.js';
import { gptj } from './gptj.js';
import { llama } from './llama.js';
import { olmo2 } from './olmo2.js';
import { opt } from './opt.js';
import { phi3 } from './phi3.js';
import { qwen2 } from './qwen2.js';
import { qwen3 } from './qwen3.js';

export const FAMILIES: Family[] = [gpt2, gptNeox, llama, qwen2, gemma, qwen3, gemma2, gemma3, olmo2, phi3, gptj, gptNeo, opt];
export const SUPPORTED_MODEL_TYPES = FAMILIES.flatMap((f) => f.modelTypes);

export function readConfig(dir: string): HfConfig {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new HydraError(`${file}: file not found; a model directory needs config.json`);
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new HydraError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new HydraError(`${file}: not a JSON object`);
  return { ...(json as Record<string, unknown>), _path: file };
}

export function familyFor(config: HfConfig): Family {
  const type = config.model_type;
  const fam = FAMILIES.find((f) => f.modelTypes.includes(String(type)));
  if (!fam) {
    throw new HydraError(`${config._path}: model_type '${String(type)}' is not supported; supported: ${SUPPORTED_MODEL_TYPES.join(', ')}`);
  }
  return fam;
}
