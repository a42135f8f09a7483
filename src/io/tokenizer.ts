import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { HydraError } from './errors.js';

/** A model's tokenizer, behaving like its Hugging Face tokenizer. */
export interface HydraTokenizer {
  /** Ids exactly as the HF tokenizer gives with add_special_tokens=True (BOS prepended where the model's tokenizer does that). */
  encode(text: string): number[];
  /** Text of the ids, special tokens left out. */
  decode(ids: number[]): string;
  /** A readable string for one token, keeping its leading space (e.g. " Paris"); special tokens as written (e.g. "<s>"). */
  tokenText(id: number): string;
  /** Id of the tokenizer's BOS token (tokenizer_config bos_token), or null if it has none. encode adds it only where the HF tokenizer does. */
  readonly bosId: number | null;
  /** Whether encode prepends bosId. */
  readonly addsBos: boolean;
  /** Number of ids, added tokens included. */
  readonly vocabSize: number;
}

type Json = Record<string, unknown>;

/** Longest prompt text tokenized (characters). */
export const MAX_PROMPT_CHARS = 1_000_000;

function readJson(file: string): Json {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new HydraError(
      code === 'ENOENT'
        ? `tokenizer file ${file} does not exist; put the model's tokenizer.json there (from its Hugging Face repo)`
        : `cannot read tokenizer file ${file} (${code ?? String(e)}); check its permissions`,
    );
  }
  try {
    const v: unknown = JSON.parse(text);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Json;
  } catch (e) {
    throw new HydraError(`tokenizer file ${file} is not valid JSON (${(e as Error).message}); download it again`);
  }
}

/** True if `modelDir` holds a tokenizer.json. */
export function hasTokenizer(modelDir: string): boolean {
  return fs.existsSync(path.join(modelDir, 'tokenizer.json'));
}

/** GPT-2's byte <-> printable-unicode table, inverted: maps the printable char back to its byte. */
function byteLevelDecoder(): Map<string, number> {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  return new Map(bs.map((b, i) => [String.fromCodePoint(cs[i]), b]));
}

/** Whether a decoder config (possibly a Sequence) contains a component of `type`. */
function hasComponent(cfg: unknown, type: string): boolean {
  if (!cfg || typeof cfg !== 'object') return false;
  const c = cfg as { type?: string; decoders?: unknown[]; pretokenizers?: unknown[] };
  if (c.type === type) return true;
  return [...(c.decoders ?? []), ...(c.pretokenizers ?? [])].some((d) => hasComponent(d, type));
}

/** The content of a special-token entry of tokenizer_config.json (a string or an AddedToken-like object). */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

/** Load modelDir/tokenizer.json (and tokenizer_config.json if present). */
export async function loadTokenizer(modelDir: string): Promise<HydraTokenizer> {
  const tokPath = path.join(modelDir, 'tokenizer.json');
  const tokJson = readJson(tokPath);
  const cfgPath = path.join(modelDir, 'tokenizer_config.json');
  const cfgJson = fs.existsSync(cfgPath) ? readJson(cfgPath) : {};
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokJson, cfgJson);
  } catch (e) {
    throw new HydraError(`tokenizer file ${tokPath} cannot be loaded (${(e as Error).message}); it may be corrupt or an unsupported tokenizer type`);
  }

  const vocabSize = tok.get_vocab(true).size;
  const added = tok.get_added_tokens_decoder();
  const bosName = tokenContent(cfgJson.bos_token);
  let bosId: number | null = bosName !== null ? tok.token_to_id(bosName) ?? null : null;
  const probe = tok.encode('a').ids;
  // Without a bos_token in the config, the post-processor's leading special token is the BOS.
  if (bosId === null && probe.length > 0 && added.get(probe[0])?.special) bosId = probe[0];
  const addsBos = bosId !== null && probe[0] === bosId;

  const byteLevel = hasComponent(tokJson.decoder, 'ByteLevel') || hasComponent(tokJson.pre_tokenizer, 'ByteLevel');
  const byteMap = byteLevel ? byteLevelDecoder() : null;
  const utf8 = new TextDecoder('utf-8');
  const textCache = new Map<number, string>();

  const checkId = (id: number): void => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new HydraError(`token id ${id} is outside the vocabulary (0..${vocabSize - 1}) of ${tokPath}`);
  };

  // Per-token text without the decoder's whitespace stripping, so tables show " Paris" rather than "Paris".
  const tokenText = (id: number): string => {
    const hit = textCache.get(id);
    if (hit !== undefined) return hit;
    checkId(id);
    const raw = tok.id_to_token(id) ?? '';
    let text: string;
    if (added.has(id)) {
      text = added.get(id)!.content;
    } else if (byteMap) {
      const bytes = [...raw].map((ch) => byteMap.get(ch) ?? 63);
      text = utf8.decode(new Uint8Array(bytes));
    } else {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(raw);
      if (m) {
        const b = parseInt(m[1], 16);
        text = b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : b < 0x80 ? JSON.stringify(String.fromCharCode(b)).slice(1, -1) : raw;
      } else {
        text = raw.replace(/\u2581/g, ' ');
      }
    }
    textCache.set(id, text);
    return text;
  };

  return {
    encode: (text: string) => {
      // Checked before tokenizing: a huge text costs seconds and gigabytes before any length check.
      if (text.length > MAX_PROMPT_CHARS) throw new HydraError(`the prompt is ${text.length} characters, over the limit of ${MAX_PROMPT_CHARS}; no model context holds that much, shorten it`);
      return tok.encode(text, { add_special_tokens: true }).ids;
    },
    decode: (ids: number[]) => {
      ids.forEach(checkId);
      return tok.decode(ids, { skip_special_tokens: true });
    },
    tokenText,
    bosId,
    addsBos,
    vocabSize,
  };
}
