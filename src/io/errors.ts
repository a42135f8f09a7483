/**
 * A problem the user can fix: bad input, a missing file, an unsupported model.
 * The CLI prints its message as one line, never a stack trace, so the message
 * must name the thing that is wrong and what to do about it.
 */
export class HydraError extends Error {
  override name = 'HydraError';
  constructor(message: string) {
    super(message);
  }
}

/** Throw a HydraError unless `cond` holds. */
export function check(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new HydraError(typeof message === 'function' ? message() : message);
}
