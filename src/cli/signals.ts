/**
 * Stop requests for a long command: SIGINT (Ctrl-C), SIGTERM (schedulers: SLURM, Kubernetes,
 * `timeout`) and SIGHUP (the terminal went away) all ask the run to finish its step, write a
 * checkpoint and exit with 128 + the signal's number (130, 143, 129). A second signal aborts at
 * once, but not one that arrives in the same event-loop turn as the first: both were queued
 * while a step or an evaluation held the thread, and are one request, not an abort.
 */
const EXIT_CODES = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
type StopSignal = keyof typeof EXIT_CODES;
const SIGNALS = Object.keys(EXIT_CODES) as StopSignal[];

export interface StopRequests {
  requested(): boolean;
  /** The exit code for the first signal (130 when none came). */
  exitCode(): number;
  dispose(): void;
}

export function watchStopSignals(): StopRequests {
  let first: StopSignal | null = null;
  let armed = false;
  const say = (line: string) => {
    try {
      process.stderr.write(line);
    } catch {
      // the terminal is gone (SIGHUP): nobody to tell
    }
  };
  const ignoreWriteErrors = () => {};
  process.stderr.on('error', ignoreWriteErrors);
  const on = (sig: StopSignal) => {
    if (first === null) {
      first = sig;
      setImmediate(() => (armed = true));
      const again = sig === 'SIGINT' ? 'Ctrl-C again' : 'a second signal';
      say(`\nkeel: ${sig} received: finishing the step and writing a checkpoint (${again} leaves without it)\n`);
      return;
    }
    if (!armed) return;
    say(`keel: ${sig} again: leaving without a checkpoint (the newest one on disk stays)\n`);
    process.exit(EXIT_CODES[first]);
  };
  const handlers = SIGNALS.map((sig) => [sig, () => on(sig)] as const);
  for (const [sig, h] of handlers) process.on(sig, h);
  return {
    requested: () => first !== null,
    exitCode: () => EXIT_CODES[first ?? 'SIGINT'],
    dispose: () => {
      for (const [sig, h] of handlers) process.off(sig, h);
      process.stderr.off('error', ignoreWriteErrors);
    },
  };
}
