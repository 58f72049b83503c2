/**
 * `keel train --serve`: a Keel run shows in keel serve's dashboard beside the PyTorch runs. The
 * run keeps deciding in-process (src/control: no network on the step path); this mirror hands
 * what it reported and decided, its evaluations and checkpoints, to a worker thread
 * (src/serve/mirror_worker.js) that sends them in batches with a short timeout, backs off while
 * the server is away, warns once, and never makes the training wait: only close() waits, for a
 * bounded time.
 */
import { Worker } from 'node:worker_threads';
import type { Decision, Policy, RunFacts, StepReport } from '../control/types.ts';
import type { RunObserver } from '../train/trainer.ts';

export class Mirror implements RunObserver {
  private readonly worker: Worker;
  private closed: Promise<number> | null = null;

  constructor(
    url: string,
    token: string,
    private readonly name: string,
    private readonly config: Record<string, unknown>,
    private readonly warn: (line: string) => void,
  ) {
    this.worker = new Worker(new URL('./mirror_worker.js', import.meta.url), { workerData: { url, token } });
    this.worker.on('message', (m: { t: string; line?: string }) => {
      if (m.t === 'warn') this.warn(m.line!);
    });
    this.worker.on('error', (e) => this.warn(`keel serve mirror stopped: ${e.message}`));
    this.worker.unref(); // never what keeps the process alive
  }

  start(info: { policy: Policy; run: RunFacts; resumed: boolean }): void {
    this.worker.postMessage({
      t: 'start',
      create: { name: this.name, config: this.config, policy: info.policy, run: info.run, resume: info.resumed, mirror: true },
    });
  }

  step(report: StepReport, decision: Decision): void {
    this.worker.postMessage({ t: 'step', row: { report, decision } });
  }

  evaluation(step: number, metrics: Record<string, number>): void {
    const finite = Object.fromEntries(Object.entries(metrics).filter(([, v]) => Number.isFinite(v)));
    if (Object.keys(finite).length > 0) this.worker.postMessage({ t: 'eval', body: { step, metrics: finite } });
  }

  checkpoint(step: number, data: number, path: string): void {
    this.worker.postMessage({ t: 'checkpoint', body: { step, data, path } });
  }

  /** Sends what is queued, waiting at most `ms`, says what could not be sent, and ends the worker. */
  close(ms = 5000): Promise<number> {
    this.closed ??= new Promise<number>((resolve) => {
      this.worker.on('message', (m: { t: string; unsent?: number }) => {
        if (m.t !== 'closed') return;
        if (m.unsent! > 0) this.warn(`keel serve: ${m.unsent} step reports were not mirrored (the run itself is complete)`);
        resolve(m.unsent!);
      });
      this.worker.on('exit', () => resolve(-1));
      this.worker.ref();
      this.worker.postMessage({ t: 'close', ms });
    }).finally(() => this.worker.terminate());
    return this.closed;
  }
}
