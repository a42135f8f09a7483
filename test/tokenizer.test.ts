import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { loadTokenizer, hasTokenizer } from '../src/io/tokenizer.js';
import { HydraError } from '../src/io/errors.js';
import { defaultModelDir, gpt2TokenizerDir, known1000Path } from '../src/io/paths.js';
import { fixturesDir, tmpDir } from './helpers.js';

// gpt-3-encoder is CommonJS; its encode() is OpenAI's original GPT-2 BPE.
const require = createRequire(import.meta.url);
const openai = require('gpt-3-encoder') as { encode(text: string): number[]; decode(ids: number[]): string };

interface Known { prompt: string; attribute: string }
const known = JSON.parse(fs.readFileSync(known1000Path, 'utf8')) as Known[];

test('GPT-2 tokenizer encodes all known_1000 prompts and answers exactly like OpenAI gpt-3-encoder', async () => {
  const tok = await loadTokenizer(gpt2TokenizerDir);
  assert.equal(known.length, 1209);
  assert.equal(tok.vocabSize, 50257);
  assert.equal(tok.bosId, 50256);
  assert.equal(tok.addsBos, false);
  let mismatches = 0;
  for (const k of known) {
    for (const text of [k.prompt, ' ' + k.attribute]) {
      const ours = tok.encode(text);
      const ref = openai.encode(text);
      if (JSON.stringify(ours) !== JSON.stringify(ref)) {
        mismatches++;
        if (mismatches <= 3) assert.deepEqual(ours, ref, `encoding of ${JSON.stringify(text)}`);
      }
      assert.equal(tok.decode(ours), text);
    }
  }
  assert.equal(mismatches, 0);
});

test('GPT-2 tokenText keeps the leading space and decodes bytes', async () => {
  const tok = await loadTokenizer(gpt2TokenizerDir);
  const ids = openai.encode(' Paris café');
  assert.deepEqual(ids.map((id) => tok.tokenText(id)).join(''), ' Paris café');
  assert.equal(tok.tokenText(openai.encode(' Paris')[0]), ' Paris');
  assert.equal(tok.tokenText(50256), '<|endoftext|>');
  assert.throws(() => tok.tokenText(50257), HydraError);
});

test('stories260k tokenizer matches the upstream reference encodings', async () => {
  const ref = JSON.parse(fs.readFileSync(path.join(fixturesDir, 'stories260k_upstream_reference_outputs.json'), 'utf8')) as {
    bos_id: number;
    encodings: { text: string; ids_with_bos: number[]; roundtrip: string }[];
  };
  assert.ok(hasTokenizer(defaultModelDir));
  const tok = await loadTokenizer(defaultModelDir);
  assert.equal(tok.vocabSize, 512);
  assert.equal(tok.bosId, ref.bos_id);
  assert.equal(tok.addsBos, true);
  assert.equal(ref.encodings.length, 4);
  for (const c of ref.encodings) {
    const ids = tok.encode(c.text);
    assert.deepEqual(ids, c.ids_with_bos, c.text);
    assert.equal(tok.decode(ids), c.roundtrip);
  }
  // "Once upon a time" -> [<s>, ▁Once, ▁upon, ▁a, ▁time]
  assert.deepEqual([1, 403, 407, 261, 378].map((id) => tok.tokenText(id)), ['<s>', ' Once', ' upon', ' a', ' time']);
});

test('missing or corrupt tokenizer.json gives a HydraError naming the file', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'tokenizer.json');
  assert.equal(hasTokenizer(dir), false);
  await assert.rejects(loadTokenizer(dir), (e: unknown) => e instanceof HydraError && e.message.includes(file) && !e.message.includes('\n'));
  fs.writeFileSync(file, '{"version": "1.0", "model": {');
  assert.equal(hasTokenizer(dir), true);
  await assert.rejects(loadTokenizer(dir), (e: unknown) => e instanceof HydraError && e.message.includes(file) && /not valid JSON/.test(e.message));
  fs.writeFileSync(file, '{"version": "1.0", "model": {"type": "NoSuchModel"}}');
  await assert.rejects(loadTokenizer(dir), (e: unknown) => e instanceof HydraError && e.message.includes(file));
  fs.rmSync(dir, { recursive: true, force: true });
});
