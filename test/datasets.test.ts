import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import { loadDataset, summarizeFilter, filterRecords } from '../src/io/datasets.js';
import { known1000Path } from '../src/io/paths.js';
import { fixturesDir, rejectsWith, tmpDir } from './helpers.js';

const fx = (name: string) => path.join(fixturesDir, 'datasets', name);


test('known_1000: 1209 records, first and last as in the ROME file', async () => {
  const ds = await loadDataset('known_1000');
  assert.equal(ds.name, 'known_1000');
  assert.equal(ds.source, known1000Path);
  assert.equal(ds.records.length, 1209);
  // relation_id is the prompt's group (the report's bootstrap resamples relations)
  assert.deepEqual(ds.records[0], { id: '0', prompt: 'Vinson Massif is located in the continent of', answer: 'Antarctica', subject: 'Vinson Massif', group: 'P30' });
  assert.deepEqual(ds.records[1], { id: '1', prompt: 'Beats Music is owned by', answer: 'Apple', subject: 'Beats Music', group: 'P127' });
  const raw = JSON.parse(fs.readFileSync(known1000Path, 'utf8'));
  const last = raw[raw.length - 1];
  assert.deepEqual(ds.records[1208], { id: String(last.known_id), prompt: last.prompt, answer: last.attribute, subject: last.subject, group: last.relation_id });
  assert.equal(new Set(ds.records.map((r) => r.group)).size, new Set(raw.map((r: { relation_id: string }) => r.relation_id)).size);
  assert.deepEqual((await loadDataset('known1000')).records.length, 1209);
  // A copy of the file, given by path, reads the same.
  const dir = tmpDir();
  fs.copyFileSync(known1000Path, path.join(dir, 'k.json'));
  assert.deepEqual((await loadDataset(path.join(dir, 'k.json'))).records, ds.records);
});

test('counterfact: template filled with the subject, answer = target_true', async () => {
  const ds = await loadDataset(fx('counterfact_sample.json'));
  assert.equal(ds.name, 'counterfact_sample');
  assert.deepEqual(ds.records, [
    { id: '0', prompt: 'The mother tongue of Danielle Darrieux is', answer: 'French', subject: 'Danielle Darrieux', group: 'P103' },
    // `$&` in a subject is literal text, not a replacement pattern.
    { id: '1', prompt: 'Edwin of Northumbria $& co is a native speaker of', answer: 'Dutch', subject: 'Edwin of Northumbria $& co', group: 'P1412' },
    { id: '7', prompt: 'The headquarter of Apple is located in', answer: 'Cupertino', subject: 'Apple', group: 'P159' },
  ]);
  await rejectsWith(loadDataset(fx('counterfact_bad.json')), /^counterfact_bad\.json record 1: 'requested_rewrite\.target_true\.str' is missing/);
});

test('jsonl: prompt or text, optional answer and id, blank lines skipped', async () => {
  const ds = await loadDataset(fx('prompts.jsonl'));
  assert.equal(ds.name, 'prompts');
  assert.deepEqual(ds.records, [
    { id: 'a1', prompt: 'The Eiffel Tower is in', answer: ' Paris' },
    { id: '1', prompt: 'The capital of Japan is', answer: 'Tokyo' },
    { id: '2', prompt: 'Water boils at' },
  ]);
  await rejectsWith(loadDataset(fx('missing_prompt.jsonl')), /^missing_prompt\.jsonl line 7: no 'prompt' field/);
  await rejectsWith(loadDataset(fx('bad_json.jsonl')), /^bad_json\.jsonl line 2: not valid JSON/);
  await rejectsWith(loadDataset(fx('bad_answer.jsonl')), /^bad_answer\.jsonl line 1: 'answer' must be a string, found number/);
  await rejectsWith(loadDataset(fx('empty.jsonl')), /^empty\.jsonl holds no prompts/);
  // No extension: sniffed from the content.
  assert.deepEqual((await loadDataset(fx('noext_data'))).records, [{ id: '0', prompt: 'sniffed as jsonl', answer: 'yes' }]);
});

test('csv: quoted commas, doubled quotes, newlines in quotes, empty answer', async () => {
  const ds = await loadDataset(fx('prompts.csv'));
  assert.deepEqual(ds.records, [
    { id: 'k1', prompt: 'Paris, the capital of', answer: 'France' },
    { id: 'k2', prompt: 'He said "hello", then', answer: 'left' },
    { id: 'k3', prompt: 'Water boils at' },
    { id: 'k4', prompt: 'A prompt\nover two lines', answer: 'two' },
  ]);
  await rejectsWith(loadDataset(fx('ragged.csv')), /^ragged\.csv: .*line 3/);
  await rejectsWith(loadDataset(fx('unclosed.csv')), /^unclosed\.csv: .*[Qq]uote/);
  await rejectsWith(loadDataset(fx('no_prompt_column.csv')), /^no_prompt_column\.csv line 1: the header \(question,answer\) has no 'prompt' column/);
});

test('json lists of {prompt|text, answer?} and of {ids}', async () => {
  assert.deepEqual((await loadDataset(fx('prompts.json'))).records, [
    { id: '0', prompt: 'The Space Needle is in', answer: ' Seattle' },
    { id: '1', prompt: 'Bananas are', subject: 'Bananas' },
  ]);
  assert.deepEqual((await loadDataset(fx('ids.json'))).records, [
    { id: '0', prompt: '', ids: [1, 5, 9] },
    { id: '1', prompt: 'two tokens', ids: [2, 3] },
  ]);
  await rejectsWith(loadDataset(fx('object.json')), /^object\.json must hold a JSON list/);
  await rejectsWith(loadDataset(fx('broken.json')), /^broken\.json is not valid JSON \(line 4/);
});

test('a group column or field: strings or numbers, empty cells mean none; anything else is refused', async () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'g.csv'), 'prompt,answer,group\nA is,x,t1\nB is,y,\nC is,z,7\n');
  assert.deepEqual((await loadDataset(path.join(dir, 'g.csv'))).records.map((r) => r.group), ['t1', undefined, '7']);
  fs.writeFileSync(path.join(dir, 'g.jsonl'), '{"prompt": "A is", "group": 3}\n{"prompt": "B is", "group": null}\n{"prompt": "C is", "group": "t"}\n');
  assert.deepEqual((await loadDataset(path.join(dir, 'g.jsonl'))).records.map((r) => r.group), ['3', undefined, 't']);
  fs.writeFileSync(path.join(dir, 'bad.jsonl'), '{"prompt": "A is", "group": [1]}\n');
  await rejectsWith(loadDataset(path.join(dir, 'bad.jsonl')), /^bad\.jsonl line 1: 'group' must be a string/);
});

test('missing files and directories are HydraErrors', async () => {
  await rejectsWith(loadDataset(fx('nope.jsonl')), /nope\.jsonl not found/);
  await rejectsWith(loadDataset(path.join(fixturesDir, 'datasets')), /is a directory/);
  await rejectsWith(loadDataset(''), /no dataset given/);
});

test('filterRecords and summarizeFilter', async () => {
  const recs = ['a', 'bb', 'c', 'dd', 'eee', 'f'];
  const { kept, dropped } = await filterRecords(recs, async (r) =>
    r.length === 1 ? { correct: true } : { correct: false, reason: r.length === 2 ? 'wrong first token' : 'answer too long' });
  assert.deepEqual(kept, ['a', 'c', 'f']);
  assert.deepEqual(dropped.map((d) => d.record), ['bb', 'dd', 'eee']);
  assert.equal(summarizeFilter(kept, dropped), 'kept 3 of 6 prompts; dropped 3: 2 wrong first token, 1 answer too long');
  assert.equal(summarizeFilter(5, []), 'kept 5 of 5 prompts');
});
