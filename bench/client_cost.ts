// What Keel's Python client costs a PyTorch DDP run (docs/serving.md#what-the-client-costs):
//   node --import tsx bench/client_cost.ts [--rounds 3] [--steps 150] [--json]
// examples/torch_ddp.py on 2 gloo CPU processes, with Keel (a live keel serve in this process:
// reports, decisions, the noise-scale hook, snapshots every 10 steps) and --without-keel (the
// same loop, plain optimizer steps), alternating in each round; medians over the rounds, per
// step computed (a rollback's replayed steps count). Two
// model sizes: the example's default and a wider one. The machine runs the server and both ranks.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { serve } from '../src/serve/server.ts';
import { median } from '../src/util/stats.ts';
import { flag, opt } from './args.ts';

const ROUNDS = Number(opt('rounds', '3'));
const STEPS = Number(opt('steps', '150'));
const REPO = path.resolve(import.meta.dirname, '..');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-bench-client-'));
const text = path.join(dir, 'text.txt');
fs.writeFileSync(text, fs.readFileSync(path.join(REPO, 'README.md'), 'utf8').repeat(4));
const s = await serve({ host: '127.0.0.1', port: 0, db: path.join(dir, 'keel.db') });
const SIZES = { default: [], wide: ['--layers', '4', '--width', '256', '--block', '128', '--lr', '1e-3'] } as Record<string, string[]>;

interface Out {
  step_ms: number;
  report_ms?: number;
  snapshot_ms?: number;
}
let port = 29800;
/** One run of the example; asynchronous, so this process's event loop keeps serving it. */
async function once(size: string, keel: boolean, round: number): Promise<Out> {
  const out = path.join(dir, `${size}-${keel}-${round}.json`);
  const args = [
    path.join(REPO, 'examples/torch_ddp.py'),
    '--data',
    text,
    '--steps',
    String(STEPS),
    '--spawn',
    '2',
    '--port',
    String(port++),
    '--name',
    `${size}-${round}`,
    '--out',
    out,
    ...SIZES[size],
    ...(keel ? [] : ['--without-keel']),
  ];
  const child = spawn('/usr/bin/python3', args, {
    cwd: dir,
    env: { ...process.env, KEEL_URL: s.url, KEEL_TOKEN: s.token, PYTHONPATH: path.join(REPO, 'python') },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const status = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  if (status !== 0) throw new Error(`torch_ddp.py ${args.join(' ')}: exit ${status}\n${stderr}`);
  return JSON.parse(fs.readFileSync(out, 'utf8'));
}

const results: Record<string, unknown>[] = [];
for (const size of Object.keys(SIZES)) {
  const plain: number[] = [];
  const keel: Out[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? [false, true] : [true, false];
    for (const k of order) {
      const o = await once(size, k, r);
      if (k) keel.push(o);
      else plain.push(o.step_ms);
    }
  }
  const p = median(plain)!;
  const k = median(keel.map((o) => o.step_ms))!;
  const inCall = median(keel.map((o) => o.report_ms! + o.snapshot_ms!))!;
  results.push({ size, plain_step_ms: p, keel_step_ms: k, overhead_ms: k - p, overhead_share: (k - p) / p, in_call_ms: inCall, in_call_share: inCall / k });
}
await s.close();
fs.rmSync(dir, { recursive: true, force: true });
if (flag('json')) console.log(JSON.stringify({ rounds: ROUNDS, steps: STEPS, results }));
else {
  console.log(`examples/torch_ddp.py, 2 gloo ranks, ${STEPS} steps, median of ${ROUNDS} alternating rounds`);
  console.log('| model | step without Keel | step with Keel | difference | in run.step + snapshots |');
  console.log('|---|---|---|---|---|');
  for (const r of results as { size: string; [k: string]: number | string }[]) {
    const f = (k: string, d = 1) => (r[k] as number).toFixed(d);
    const pct = (k: string) => (100 * (r[k] as number)).toFixed(1);
    console.log(
      `| ${r.size} | ${f('plain_step_ms')} ms | ${f('keel_step_ms')} ms | ${f('overhead_ms')} ms (${pct('overhead_share')} %) | ${f('in_call_ms', 2)} ms (${pct('in_call_share')} %) |`,
    );
  }
}
