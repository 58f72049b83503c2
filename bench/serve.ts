// keel serve under load, on loopback (docs/serving.md#load):
//   node --import tsx bench/serve.ts [--runs 8] [--steps 2000] [--json]
// 1. round trip of one step report (one run, one report per request): median and p99;
// 2. `runs` concurrent runs × `steps` steps, one report per request each, all at once:
//    throughput, and a check that the server holds every step exactly once.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { StepReport } from '../src/control/types.ts';
import { serve } from '../src/serve/server.ts';
import { flag, opt } from './args.ts';

const RUNS = Number(opt('runs', '8'));
const STEPS = Number(opt('steps', '2000'));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-bench-serve-'));
const s = await serve({ host: '127.0.0.1', port: 0, db: path.join(dir, 'keel.db') });
const headers = { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' };
const post = async (route: string, body: unknown) => {
  const r = await fetch(`${s.url}/api/v1${route}`, { method: 'POST', headers, body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error(`${route}: ${r.status} ${await r.text()}`);
  return r.json() as Promise<Record<string, unknown>>;
};
const report = (step: number): StepReport => ({
  v: 1,
  step,
  attempt: 0,
  loss: 2 + 0.01 * Math.sin(step),
  grad_norm: 1,
  nonfinite: { loss: false, grad: false },
  lr: 1e-3,
  tokens: step * 1024,
  batch: 8,
  data: [step - 1, step],
});
const newRun = async (name: string) =>
  (await post('/runs', { name, policy: { on_spike: 'rollback' }, run: { steps: STEPS, batch: 8, micro_batch: 8, seq_len: 128, params: 1e6 } })).id as number;
const drive = async (id: number, steps: number, times?: number[]) => {
  for (let n = 1; n <= steps; n++) {
    const t0 = performance.now();
    await post(`/runs/${id}/reports`, { reports: [report(n)] });
    times?.push(performance.now() - t0);
  }
};

const times: number[] = [];
await drive(await newRun('latency'), 1000, times);
times.sort((a, b) => a - b);
const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))];

const t0 = performance.now();
const ids = await Promise.all(Array.from({ length: RUNS }, (_, i) => newRun(`load-${i}`)));
await Promise.all(ids.map((id) => drive(id, STEPS)));
const seconds = (performance.now() - t0) / 1000;
const rows = s.store.runs().filter((r) => r.name.startsWith('load-'));
const complete = rows.length === RUNS && rows.every((r) => r.reports === STEPS && r.last_step === STEPS);
const result = {
  round_trip_ms: { median: q(0.5), p99: q(0.99) },
  runs: RUNS,
  steps: STEPS,
  seconds,
  reports_per_s: (RUNS * STEPS) / seconds,
  all_stored_once: complete,
};
await s.close();
fs.rmSync(dir, { recursive: true, force: true });
if (flag('json')) console.log(JSON.stringify(result));
else {
  console.log(`round trip of one step: median ${result.round_trip_ms.median.toFixed(2)} ms, p99 ${result.round_trip_ms.p99.toFixed(2)} ms`);
  console.log(
    `${RUNS} runs × ${STEPS} steps at once: ${seconds.toFixed(1)} s, ${Math.round(result.reports_per_s)} reports/s, every step stored once: ${complete}`,
  );
}
if (!complete) process.exitCode = 1;
