#!/usr/bin/env node
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { HydraError } from '../io/errors.js';
import { packageVersion, withFlags } from './util.js';

/**
 * Subcommands. Each lives in its own module src/cli/<name>.ts exporting
 * `register<Name>(program: Command): void` (e.g. registerForward in forward.ts).
 * To add one, add (or uncomment) its ONE line here; nothing else in this file changes.
 */
type Registrar = (program: Command) => void;
const SUBCOMMANDS: Array<[name: string, load: () => Promise<object>]> = [
  ['forward', () => import('./forward.js')],
  ['effects', () => import('./effects.js')],
  ['iterate', () => import('./iterate.js')],
  ['sweep', () => import('./sweep.js')],
  ['report', () => import('./report.js')],
  // profile: registered by report.ts
  ['demo', () => import('./demo.js')],
  // merge, export: registered by sweep.ts
  ['serve', () => import('./serve.js')],
  ['repair', () => import('./repair.js')],
];

const debug = () => /^(1|true|yes|on)$/i.test(process.env.HYDRA_DEBUG ?? '');

/** One line: newlines and runs of whitespace collapsed. */
function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

function fail(e: unknown): void {
  process.exitCode = 1;
  if (e instanceof HydraError) {
    process.stderr.write(`hydra: error: ${oneLine(withFlags(e.message))}\n`);
    if (debug() && e.stack) process.stderr.write(`${e.stack}\n`);
    return;
  }
  const msg = e instanceof Error ? e.message : String(e);
  if (debug()) {
    process.stderr.write(`hydra: internal error: ${oneLine(msg)}\n${e instanceof Error && e.stack ? e.stack : ''}\n`);
  } else {
    process.stderr.write(`hydra: internal error: ${oneLine(msg) || 'unknown'} (set HYDRA_DEBUG=1 for a stack trace)\n`);
  }
}

/** Make commander throw instead of exiting, and stay quiet so we print its errors our way (recursively, for added subcommands too). */
function quietCommander(cmd: Command): void {
  cmd.exitOverride();
  cmd.configureOutput({ outputError: () => {} });
  for (const sub of cmd.commands) quietCommander(sub);
}

export async function buildProgram(): Promise<Command> {
  const program = new Command('hydra')
    .description('Causal analysis of transformer language models: direct, total and compensatory effects (the Hydra effect).')
    .version(packageVersion(), '-V, --version', 'print the version')
    .showSuggestionAfterError(true);
  for (const [name, load] of SUBCOMMANDS) {
    const mod = (await load()) as Record<string, unknown>;
    const fn = mod[`register${name[0].toUpperCase()}${name.slice(1)}`];
    if (typeof fn !== 'function') throw new Error(`src/cli/${name}.ts does not export register${name[0].toUpperCase()}${name.slice(1)}(program)`);
    (fn as Registrar)(program);
  }
  quietCommander(program);
  return program;
}

export async function main(argv: string[] = process.argv): Promise<void> {
  // A closed pipe (e.g. `hydra forward --json | head`) is not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    fail(e);
  });
  try {
    const program = await buildProgram();
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version: commander has already printed them.
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') {
        process.exitCode = e.exitCode;
        return;
      }
      process.exitCode = 1;
      process.stderr.write(`hydra: error: ${oneLine(e.message.replace(/^error:\s*/, ''))}\n`);
      return;
    }
    fail(e);
  }
}

/** True when this file is the program being run (directly, or through the npm bin symlink), not imported. */
function isEntryPoint(): boolean {
  if (!process.argv[1]) return false;
  try {
    return fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  process.on('unhandledRejection', (e) => {
    fail(e);
    process.exit(1);
  });
  process.on('uncaughtException', (e) => {
    fail(e);
    process.exit(1);
  });
  await main();
}
