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

test('hydra effects --targets a+b --metric: the JSON keys a joint ablation by its name and records the metric', () => {
  const golden = JSON.parse(fs.readFileSync(path.join(packageRoot, 'test', 'fixtures', 'golden', 'extra', 'tiny-gpt2.json'), 'utf8'));
  const dir = tmpDir();
  const prompts = path.join(dir, 'prompts.jsonl');
  // answer_id / counter_id as the golden's logit-diff tokens.
  fs.writeFileSync(prompts, golden.prompts.map((p: any) => JSON.stringify({ ids: p.ids, answer_id: p.metrics['logit-diff'].tokens.a, counter_id: p.metrics['logit-diff'].tokens.b })).join('\n'));
  const sources = path.join(dir, 'sources.json');
  fs.writeFileSync(sources, JSON.stringify(golden.resample_sources));
  const r = hydra(['effects', '--model', fixtureModelDir('tiny-gpt2'), '--prompts', prompts, '--sources', sources, '--targets', 'attn.0+attn.1,attn.1', '--heads', '--metric', 'logit-diff', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.metric, 'logit-diff');
  out.prompts.forEach((p: any, n: number) => {
    const gp = golden.prompts[n];
    assert.deepEqual(Object.keys(p.ablations), ['attn.0+attn.1', 'attn.1']);
    assert.deepEqual(p.readout, { metric: 'logit-diff', answer: gp.metrics['logit-diff'].tokens.a, counter: gp.metrics['logit-diff'].tokens.b });
    const want = gp.metrics['logit-diff'].ablations.resample.attn1.mean;
    assert.ok(Math.abs(p.ablations['attn.1'].te - want.TE) < 1e-4, `p${n} attn.1 logit-diff TE`);
    assert.ok(Math.abs(p.pi_hat - gp.metrics['logit-diff'].clean.readout) < 1e-4);
  });
  // argmax joint: the golden's joint resample.
  const a = hydra(['effects', '--model', fixtureModelDir('tiny-gpt2'), '--prompts', prompts, '--sources', sources, '--targets', 'attn.0+attn.1', '--json']);
  assert.equal(a.code, 0, a.stderr);
  JSON.parse(a.stdout).prompts.forEach((p: any, n: number) => {
    const want = golden.prompts[n].joint.resample['attn0+attn1'].mean;
    assert.ok(Math.abs(p.ablations['attn.0+attn.1'].te - want.TE) < 1e-4, `p${n} joint TE`);
    assert.ok(Math.abs(p.ablations['attn.0+attn.1'].dde_self - want.dDE_members_sum) < 1e-4, `p${n} joint dde_self`);
  });
  const bad = hydra(['effects', '--prompts', 'stories_recall', '--metric', 'logit-diff', '--ablation', 'zero']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^hydra: error: --metric logit-diff: stories_recall record 0 has no counter; give every record "counter" \(text\) or "counter_id" \(a token id\)\n$/);
});

test('hydra iterate: a table, and --json with the steps', () => {
  const r = hydra(['iterate', '--prompts', 'stories_recall', '--ablate', 'attn.2', '--steps', '3', '--ablation', 'zero', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.deepEqual(out.steps.map((s: any) => s.target), ['attn.2', 'attn.2+mlp.4', 'attn.2+mlp.4+attn.3']);
  assert.match(out.stopped, /no downstream component has a positive mean ΔDE after step 2/);
  assert.equal(out.steps[0].remaining_repair, out.steps[0].effects.ce);
  const t = hydra(['iterate', '--prompts', 'stories_recall', '--ablate', 'attn.2', '--steps', '1', '--ablation', 'zero']);
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /^1 +attn\.2\+mlp\.4 /m);
  const bad = hydra(['iterate', '--prompts', 'stories_recall', '--ablate', 'attn.9', '--steps', '1']);
  assert.match(bad.stderr, /^hydra: error: unknown component 'attn\.9'/);
});
