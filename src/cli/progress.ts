/**
 * Progress on stderr: a cli-progress bar with ETA on a terminal; otherwise (CI, logs, pipes)
 * plain lines at most every few seconds and once at the end, e.g.
 *   sweep: 120/1209 prompts (9.9%), 35.2 prompts/s, ETA 31s
 */
import cliProgress from 'cli-progress';

export interface Progress {
  /** Count `n` (default 1) more items done; `info` is shown beside the bar or line. */
  tick(n?: number, info?: string): void;
  /** Finish: the bar is closed, or the last line printed. Safe to call twice. */
  stop(): void;
}

export interface ProgressOptions {
  /** Plural noun of the items (default 'prompts'). */
  unit?: string;
  /** Items already done before this process (a resumed run); the rate counts only new ones. */
  start?: number;
  /** Where to write (default process.stderr); a bar only if it is a TTY. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Least time between plain lines (default 5000 ms). */
  intervalMs?: number;
  /** Clock in ms (tests). */
  now?: () => number;
}

/** "31s", "5m12s", "2h03m". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** One plain progress line; `newDone` items took `elapsedS` seconds. */
export function progressLine(label: string, done: number, total: number, unit: string, newDone: number, elapsedS: number, final: boolean, info?: string): string {
  const pct = total > 0 ? ((100 * done) / total).toFixed(1) : '100.0';
  const rate = elapsedS > 0 ? newDone / elapsedS : 0;
  const rateText = rate >= 10 ? rate.toFixed(1) : rate.toPrecision(2);
  const tail = final ? `done in ${formatDuration(elapsedS)}` : `ETA ${rate > 0 ? formatDuration((total - done) / rate) : '?'}`;
  return `${label}: ${done}/${total} ${unit} (${pct}%), ${rateText} ${unit}/s, ${tail}${info ? `; ${info}` : ''}`;
}

export function createProgress(total: number, label: string, opts: ProgressOptions = {}): Progress {
  const unit = opts.unit ?? 'prompts';
  const stream = opts.stream ?? process.stderr;
  const now = opts.now ?? (() => performance.now());
  const interval = opts.intervalMs ?? 5000;
  const start = opts.start ?? 0;
  let done = start;
  let info = '';
  let stopped = false;

  if (stream.isTTY) {
    const t0 = now();
    // Our own ETA: cli-progress's reads "NFs" until its buffer has a rate.
    const eta = () => {
      const rate = (done - start) / ((now() - t0) / 1000);
      return `ETA ${rate > 0 ? formatDuration((total - done) / rate) : '?'}`;
    };
    const bar = new cliProgress.SingleBar({
      format: `${label} [{bar}] {value}/{total} ${unit} | {percentage}% | {eta_text} {info}`,
      stream,
      etaBuffer: 50,
      hideCursor: null,
      barsize: 30,
    }, cliProgress.Presets.shades_classic);
    bar.start(total, start, { info: '', eta_text: 'ETA ?' });
    // The bar turns terminal line wrapping off until stop(); restore it however the process ends.
    const onExit = () => bar.stop();
    process.once('exit', onExit);
    return {
      tick(n = 1, i) {
        if (stopped) return;
        done += n;
        if (i !== undefined) info = i;
        bar.update(done, { info, eta_text: eta() });
      },
      stop() {
        if (stopped) return;
        stopped = true;
        process.removeListener('exit', onExit);
        bar.stop();
      },
    };
  }

  const t0 = now();
  let lastPrint = t0;
  let printedAt = -1;
  const print = (final: boolean) => {
    const t = now();
    stream.write(progressLine(label, done, total, unit, done - start, (t - t0) / 1000, final, info) + '\n');
    lastPrint = t;
    printedAt = done;
  };
  return {
    tick(n = 1, i) {
      if (stopped) return;
      done += n;
      if (i !== undefined) info = i;
      if (now() - lastPrint >= interval) print(false);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      if (printedAt !== done || done !== total) print(true);
    },
  };
}

/**
 * runSweep's progress callback as a bar: it is called with the prompts finished so far
 * (0 first, once the total is known, then after each batch), so the bar ticks by the difference.
 */
export function sweepProgress(label: string, opts: ProgressOptions = {}): (done: number, total: number) => void {
  let bar: Progress | null = null;
  let shown = 0;
  return (done, total) => {
    bar ??= createProgress(total, label, opts);
    bar.tick(done - shown);
    shown = done;
    if (done === total) bar.stop();
  };
}

/**
 * Await `work`, and when it takes more than `afterMs` (default 2 s) say so on stderr: the label
 * with the seconds waited so far (updated in place on a terminal), then how long it took.
 */
export async function waiting<T>(label: string, work: Promise<T> | (() => Promise<T>), opts: { afterMs?: number; stream?: NodeJS.WritableStream & { isTTY?: boolean } } = {}): Promise<T> {
  const stream = opts.stream ?? process.stderr;
  const t0 = performance.now();
  const seconds = () => ((performance.now() - t0) / 1000).toFixed(1);
  let shown = false;
  let ticker: NodeJS.Timeout | undefined;
  const show = () => {
    shown = true;
    stream.write(stream.isTTY ? `\rhydra: ${label}... ${seconds()}s` : `hydra: ${label}...\n`);
  };
  const first = setTimeout(() => {
    show();
    if (stream.isTTY) ticker = setInterval(show, 1000);
  }, opts.afterMs ?? 2000);
  try {
    return await (typeof work === 'function' ? work() : work);
  } finally {
    clearTimeout(first);
    clearInterval(ticker);
    if (shown) stream.write(`${stream.isTTY ? '\r' : ''}hydra: ${label}: done in ${seconds()}s\n`);
  }
}
