import net from 'node:net';
import fs from 'node:fs';
import type { Command } from 'commander';
import { sourcePool } from '../experiments/profile.js';
import { HydraError } from '../io/errors.js';
import { startServer } from '../web/server.js';
import { addModelOptions, loadModelFromOptions, modelLabel, nonNegativeInt, printJson, type ModelOptions } from './util.js';

interface ServeCliOptions extends ModelOptions {
  db?: string;
  port: number;
  host: string;
  allowRemote?: boolean;
  sources?: string;
  json?: boolean;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** `hydra serve`: the interactive explorer (src/web/server.ts) on 127.0.0.1. */
export function registerServe(program: Command): void {
  addModelOptions(
    program
      .command('serve')
      .description('interactive explorer in the browser: ablate components of a prompt and watch the Hydra effect')
      .option('--db <file>', 'a sweep database, for the dataset view (Figures 2, 7 and 8)')
      .option('--port <P>', 'port (0 picks a free one)', nonNegativeInt('--port'), 8080)
      .option('--host <addr>', 'address to listen on', '127.0.0.1')
      .option('--allow-remote', 'allow --host to be a non-loopback address (anyone who can reach it can run the model)')
      .option('--sources <dataset>', 'prompts that resample and mean patches come from (default: the bundled story prompts for the bundled model, else known_1000)')
      .option('--json', 'print {"url": ...} once listening, instead of a line'),
  ).action(async (opts: ServeCliOptions) => runServe(opts));
}

async function runServe(opts: ServeCliOptions): Promise<void> {
  if (!LOOPBACK.has(opts.host) && !opts.allowRemote) {
    throw new HydraError(`--host ${opts.host} is not a loopback address; add --allow-remote to serve beyond this machine`);
  }
  if (!LOOPBACK.has(opts.host) && net.isIP(opts.host) === 0) throw new HydraError(`--host ${opts.host} is not an IP address`);
  if (opts.port > 65535) throw new HydraError(`--port ${opts.port} is above 65535`);
  if (opts.db && !fs.existsSync(opts.db)) throw new HydraError(`results database ${opts.db} not found; run hydra sweep first or pass the right --db`);
  const model = await loadModelFromOptions(opts);
  const pool = await sourcePool(model, opts.sources);
  const server = await startServer({
    model,
    modelName: modelLabel(opts.model),
    pool,
    db: opts.db,
    host: opts.host,
    port: opts.port,
    log: (line) => process.stderr.write(`hydra: ${line}\n`),
  });
  if (opts.json) printJson({ url: server.url });
  else process.stdout.write(`hydra explorer on ${server.url}  (Ctrl-C to stop)\n`);
  await new Promise<void>((resolve) => {
    const stop = () => server.close().then(resolve);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
