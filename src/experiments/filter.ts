import { HydraError } from '../io/errors.js';

/** Anything that tokenizes like a HydraTokenizer: encode (BOS prepended where the tokenizer does that). */
export interface TokenizerLike {
  encode(text: string): number[];
  /** Whether encode prepends a BOS token (HydraTokenizer.addsBos); taken as false if absent. */
  readonly addsBos?: boolean;
}

/** Something that runs clean forwards: a HookedModel (or a stand-in with the same shape). */
export interface ForwardLike {
  encode(text: string): number[];
  readonly tokenizer: { readonly addsBos?: boolean; tokenText?(id: number): string; decode?(ids: number[]): string } | null;
  forward(prompts: number[][]): Promise<{ prompts: { token: number }[] }>;
}

/** A prompt with the answer its continuation should start with. */
export interface KnownRecord {
  prompt: string;
  answer?: string | null;
  /** The prompt already tokenized (as HookedModel.encode gives it); run as is instead of encoding `prompt`. */
  ids?: number[];
}

export interface FilterResult {
  /** Indices of the records whose clean argmax equals their answer token, in order. */
  kept: number[];
  /** Indices left out, with why (e.g. "model predicts ' the' not ' Lily'", "no answer"). */
  dropped: { index: number; reason: string }[];
  /** Per record, the clean argmax token (-1 where the record has no answer and was not run). */
  tokens: number[];
}

function isForwardLike(t: TokenizerLike | ForwardLike): t is ForwardLike {
  return typeof (t as ForwardLike).forward === 'function' && 'tokenizer' in t;
}

function addsBosOf(t: TokenizerLike | ForwardLike): boolean {
  if (isForwardLike(t)) return Boolean(t.tokenizer?.addsBos);
  return Boolean(t.addsBos);
}

/**
 * The token the model should predict after `prompt` if it knows `answer`. The rule: the answer
 * follows the prompt after one space, written with or without it (" Paris" and "Paris" both give
 * GPT-2's " Paris"; TransformerLens writes the space, ROME does not). With answer's leading
 * whitespace dropped and full = encode(prompt + " " + answer), if full starts with encode(prompt) it is
 * full[encode(prompt).length]; otherwise (the tokenizer merged across the boundary) the
 * first token of encode(" " + answer) without its BOS (or, where that is only a lone space token
 * followed by encode(answer), as with a tokenizer that prepends "▁" itself, the first token of
 * encode(answer)). Returns -1 only if no token comes out (an empty answer).
 */
export function answerToken(tok: TokenizerLike | ForwardLike, prompt: string, written: string): number {
  const answer = written.trimStart();
  const p = tok.encode(prompt);
  const full = tok.encode(`${prompt} ${answer}`);
  if (full.length > p.length && p.every((id, i) => full[i] === id)) return full[p.length];
  const bos = addsBosOf(tok);
  const strip = (ids: number[]) => (bos ? ids.slice(1) : ids);
  const spaced = strip(tok.encode(` ${answer}`));
  // A sentencepiece tokenizer that prepends "▁" itself encodes " Lily" as ["▁", "▁Lily"]: the
  // lone space token is an artefact of the doubled space, and encode("Lily") = ["▁Lily"] holds the word token.
  const bare = strip(tok.encode(answer));
  if (spaced.length === bare.length + 1 && bare.length > 0 && bare.every((id, i) => spaced[i + 1] === id)) return bare[0];
  return spaced.length > 0 ? spaced[0] : -1;
}

function show(model: ForwardLike, id: number): string {
  const text = model.tokenizer?.tokenText ? model.tokenizer.tokenText(id) : String(id);
  return `'${text}'`;
}

/**
 * Run the clean forward of every record that has an answer, `batch` prompts at a time, and keep
 * those whose argmax next token equals answerToken(model, prompt, answer).
 */
export async function filterKnown(model: ForwardLike, records: KnownRecord[], batch = 16): Promise<FilterResult> {
  if (!Number.isInteger(batch) || batch < 1) throw new HydraError(`batch size ${batch} is not a positive integer`);
  const tokens: number[] = new Array<number>(records.length).fill(-1);
  const expected: number[] = new Array<number>(records.length).fill(-1);
  const dropped: { index: number; reason: string }[] = [];
  const kept: number[] = [];
  const todo: { index: number; ids: number[] }[] = [];
  const why = new Map<number, string>();
  records.forEach((r, index) => {
    const answer = typeof r.answer === 'string' ? r.answer.trim() : '';
    if (!answer) return void why.set(index, 'no answer');
    if (!model.tokenizer) return void why.set(index, 'no answer token: the model has no tokenizer to encode the answer');
    // Records given only as ids: their text is what the ids decode to.
    const text = r.prompt || (r.ids && model.tokenizer.decode ? model.tokenizer.decode(r.ids) : '');
    const want = answerToken(model, text, answer);
    if (want < 0) return void why.set(index, 'no answer token: the answer encodes to nothing');
    expected[index] = want;
    todo.push({ index, ids: r.ids ?? model.encode(r.prompt) });
  });
  for (let s = 0; s < todo.length; s += batch) {
    const chunk = todo.slice(s, s + batch);
    const out = await model.forward(chunk.map((c) => c.ids));
    chunk.forEach((c, k) => (tokens[c.index] = out.prompts[k].token));
  }
  records.forEach((_, index) => {
    if (expected[index] < 0) dropped.push({ index, reason: why.get(index) ?? 'no answer' });
    else if (tokens[index] === expected[index]) kept.push(index);
    else dropped.push({ index, reason: `model predicts ${show(model, tokens[index])} not ${show(model, expected[index])}` });
  });
  return { kept, dropped, tokens };
}
