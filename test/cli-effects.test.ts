import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../src/io/paths.js';
import { fixtureModelDir, hydraName, loadGolden, tmpDir } from './helpers.js';

const cli = path.join(packageRoot, 'dist', 'src', 'cli', 'main.js');

function hydra(args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function files(name: string) {
  const golden = loadGolden(name);
  const dir = tmpDir();
  const prompts = path.join(dir, 'prompts.json');
  const sources = path.join(dir, 'sources.json');
  fs.writeFileSync(prompts, JSON.stringify(golden.prompts.map((p: { ids: number[] }) => ({ ids: p.ids }))));
  fs.writeFileSync(sources, JSON.stringify(golden.resample_sources));
  return { golden, dir, prompts, sources };
}

for (const name of ['tiny-gpt2', 'tiny-neox-parallel']) {
  test(`hydra effects --json reproduces golden resample and zero ablation: ${name}`, () => {
    const { golden, prompts, sources } = files(name);
    for (const kind of ['resample', 'zero']) {
      const args = ['effects', '--model', fixtureModelDir(name), '--prompts', prompts, '--ablation', kind, '--json', '--heads', '--targets', golden.targets.map(hydraName).join(',')];
      if (kind === 'resample') args.push('--sources', sources);
      const r = hydra(args);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.equal(out.prompts.length, golden.prompts.length);
      out.prompts.forEach((p: any, n: number) => {
        const gp = golden.prompts[n];
        assert.equal(p.token, gp.clean.clean_token);
        assert.ok(Math.abs(p.sigma - gp.clean.sigma) < 1e-4);
        for (const t of golden.targets as string[]) {
          const want = gp.ablations[kind][t].mean;
          const got = p.ablations[hydraName(t)];
          for (const [f, g] of [['te', 'TE'], ['ce', 'CE'], ['ce_attn', 'CE_attn'], ['ce_mlp', 'CE_mlp'], ['ne', 'NE'], ['ie', 'IE']]) {
            assert.ok(Math.abs(got[f] - want[g]) < 1e-4, `${name} ${kind} ${t} ${f}`);
          }
          golden.component_names.forEach((c: string, i: number) => assert.ok(Math.abs(got.de_prime[hydraName(c)] - want.DE_prime[i]) < 1e-4));
          assert.deepEqual(got.patches.map((x: any) => x.source), gp.ablations[kind][t].patches.map((x: any) => x.source));
        }
      });
    }
  });
}

test('hydra effects: bad input gets a one-line error', () => {
  const { dir, prompts } = files('tiny-gpt2');
  const model = fixtureModelDir('tiny-gpt2');
  const empty = path.join(dir, 'empty.json');
  fs.writeFileSync(empty, '[]');
  const badSources = path.join(dir, 'bad-sources.json');
  fs.writeFileSync(badSources, '{"0": [1]}');
  const selfSources = path.join(dir, 'self-sources.json');
  fs.writeFileSync(selfSources, JSON.stringify([[0], [0], [0], [0], [0], [0], [0], [0]]));
  const cases: [string[], RegExp][] = [
    [['--prompts', prompts, '--targets', 'attn.9'], /unknown component 'attn\.9'/],
    [['--prompts', prompts, '--targets', 'foo'], /unknown component 'foo'/],
    [['--prompts', prompts, '--samples', '8'], /S=8 needs at least 9 prompts/],
    [['--prompts', empty], /empty/],
    [['--prompts', path.join(dir, 'missing.json')], /missing\.json not found/],
    [['--prompts', prompts, '--sources', badSources], /malformed sources/],
    [['--prompts', prompts, '--sources', selfSources], /entry 0 names prompt 0/],
    [['--prompts', prompts, '--ablation', 'blur'], /blur/],
  ];
  for (const [args, re] of cases) {
    const r = hydra(['effects', '--model', model, ...args]);
    assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    assert.match(lines[0], /^hydra: error: /);
    assert.match(lines[0], re);
  }
});
