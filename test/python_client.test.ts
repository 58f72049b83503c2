// The Python client (python/keel, with keel.Steer applying the decisions) against a real
// `keel serve` and real torch.distributed: two gloo ranks spawned by torch.multiprocessing
// (Debian's torch 1.13 torchrun fails on Python 3.11). Skipped, with the reason printed, where
// Debian's python3-torch is not installed.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { serve, type Serving } from '../src/serve/server.ts';
import { REPO, sleep, startServer, tempRoot } from './helpers.ts';

const PY = '/usr/bin/python3';
const probe = spawnSync(PY, ['-c', 'import torch.distributed as d; assert d.is_available()'], { encoding: 'utf8' });
const skip =
  probe.status === 0 ? false : `Debian's python3-torch is not installed (${PY}: ${(probe.stderr || probe.error?.message || '').trim().split('\n').at(-1)})`;
if (skip) console.log(`# skipping the Python client tests: ${skip}`);

const { fresh } = tempRoot('pyclient');
let s: Serving | undefined;
after(() => s?.close());
let port = 29600;

interface Seen {
  step: number;
  kind: string;
  lr: number;
  batch: number;
  skip_data: [number, number] | null;
  to: number | null;
}

interface RankResult {
  seen: Seen[];
  kinds: string[];
  checksum: number;
  seconds: number;
}

/** Runs test/python/ddp_run.py without blocking this process (the server under test lives in it). */
function runPy(out: string, env: Record<string, string>, extra: string[] = []): Promise<{ status: number | null; stderr: string }> {
  const child = spawn(PY, [path.join(REPO, 'test/python/ddp_run.py'), out, '--port', String(port++), ...extra], {
    env: { ...process.env, ...env },
    cwd: path.dirname(out),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  return new Promise((resolve) =>
    child.on('exit', (status) => {
      clearTimeout(timer);
      resolve({ status, stderr });
    }),
  );
}

async function ddp(out: string, env: Record<string, string>, extra: string[] = [], running = runPy(out, env, extra)): Promise<RankResult[]> {
  const r = await running;
  assert.equal(r.status, 0, r.stderr);
  return [0, 1].map((k) => JSON.parse(fs.readFileSync(`${out}.rank${k}`, 'utf8')));
}

test('python client: a spike on one rank only makes both ranks skip the same step; parameters stay identical', { skip }, async () => {
  const dir = fresh('spike');
  fs.mkdirSync(dir, { recursive: true });
  s = await serve({ host: '127.0.0.1', port: 0, db: path.join(dir, 'keel.db') });
  const env = { KEEL_URL: s.url, KEEL_TOKEN: s.token };
  const [a, b] = await ddp(path.join(dir, 'out.json'), env, ['--spike-step', '20', '--spike-rank', '1', '--name', 'spiky']);
  assert.deepEqual(a.kinds, b.kinds, 'both ranks got the same decisions');
  assert.equal(a.kinds[19], 'skip', `step 20: ${a.kinds[19]}`);
  assert.equal(a.kinds.filter((k) => k !== 'proceed').length, 1, a.kinds.join(','));
  assert.equal(a.checksum, b.checksum);
  // The server holds every step, once.
  const runs = s.store.runs();
  assert.deepEqual(
    runs.map((r) => [r.name, r.reports, r.last_step]),
    [['spiky', 40, 40]],
  );
  const clean = await ddp(path.join(dir, 'clean.json'), env, ['--name', 'clean']);
  assert.deepEqual(clean[0].kinds, Array(40).fill('proceed'));
});

test('python client: rollback + skipped data on 2 ranks equals a reference run that never saw those batches', { skip }, async () => {
  const dir = fresh('rollback');
  fs.mkdirSync(dir, { recursive: true });
  s ??= await serve({ host: '127.0.0.1', port: 0, db: path.join(dir, 'keel.db') });
  const env = { KEEL_URL: s.url, KEEL_TOKEN: s.token };
  const policy = JSON.stringify({ on_spike: 'rollback', spike_window: 8 });
  const [a, b] = await ddp(path.join(dir, 'spiky.json'), env, ['--policy', policy, '--spike-step', '20', '--name', 'rb']);
  assert.deepEqual(a.seen, b.seen, 'both ranks saw the same decisions, LRs and batches');
  const rb = a.seen.filter((x) => x.kind !== 'proceed');
  assert.equal(rb.length, 1, JSON.stringify(rb));
  assert.equal(rb[0].kind, 'rollback');
  assert.equal(rb[0].step, 20);
  assert.equal(a.seen.at(-1)!.step, 40);
  const [from, to] = rb[0].skip_data!;
  assert.ok(rb[0].to! <= 15 && from < to, JSON.stringify(rb[0]));
  const [r0, r1] = await ddp(path.join(dir, 'ref.json'), env, ['--policy', policy, '--reference-skip', `${rb[0].to}:${to}`, '--name', 'ref']);
  assert.deepEqual(r0.kinds, Array(40).fill('proceed'));
  assert.equal(a.checksum, b.checksum);
  assert.equal(r0.checksum, r1.checksum);
  assert.equal(a.checksum, r0.checksum, "the rolled-back run ends with the reference run's parameters, bit for bit");
});

test('python client: a batch ramp and its LR rule change batch and LR on the same step on both ranks', { skip }, async () => {
  const dir = fresh('ramp');
  fs.mkdirSync(dir, { recursive: true });
  s ??= await serve({ host: '127.0.0.1', port: 0, db: path.join(dir, 'keel.db') });
  const policy = JSON.stringify({ on_spike: 'skip', batch_ramp: 'steps:4@0,8@20', lr_rule: 'sqrt' });
  const [a, b] = await ddp(path.join(dir, 'ramp.json'), { KEEL_URL: s.url, KEEL_TOKEN: s.token }, ['--policy', policy, '--name', 'ramp']);
  assert.deepEqual(a.seen, b.seen);
  const at = (n: number) => a.seen.find((x) => x.step === n)!;
  assert.equal(at(20).kind, 'set_batch');
  assert.deepEqual([at(20).batch, at(21).batch], [4, 8], 'the new batch from the step after the decision');
  // The scheduler's warm-up ends at step 10; the sqrt rule scales it by √(4/8) before the ramp's step.
  assert.ok(Math.abs(at(15).lr - 0.02 * Math.SQRT1_2) < 1e-12, String(at(15).lr));
  assert.ok(Math.abs(at(21).lr - 0.02) < 1e-12, String(at(21).lr));
});

test('python client: a server killed mid-run and restarted holds every step once; a spike during the outage arrives late, recorded as applied', {
  skip,
}, async () => {
  const dir = fresh('killed');
  const home = path.join(dir, 'home');
  fs.mkdirSync(home, { recursive: true });
  const db = path.join(dir, 'keel.db');
  const first = await startServer(db, home);
  const port0 = Number(new URL(first.info.url).port);
  const out = path.join(dir, 'out.json');
  const env = { KEEL_URL: first.info.url, KEEL_TOKEN: first.info.token };
  const policy = JSON.stringify({ on_spike: 'rollback', spike_window: 8, rollback_steps: 5, skip_batches: 2 });
  const running = runPy(out, env, ['--sleep', '0.1', '--name', 'killed', '--policy', policy, '--spike-step', '20']);
  const reports = async (srv: { url: string; token: string }) => {
    const r = await fetch(`${srv.url}/api/v1/runs`, { headers: { authorization: `Bearer ${srv.token}` } });
    return ((await r.json()) as { runs: { reports: number; last_step: number }[] }).runs[0];
  };
  let server: ChildProcess = first.child;
  for (let i = 0; i < 600 && ((await reports(first.info).catch(() => undefined))?.reports ?? 0) < 8; i++) await sleep(50);
  server.kill('SIGKILL');
  await new Promise((r) => server.once('exit', r));
  // Back only once the run is past the spike at step 20: the client spills each step it could not send.
  const spilled = () => (fs.existsSync(`${out}.spill0`) ? fs.readFileSync(`${out}.spill0`, 'utf8').split('\n').length - 1 : 0);
  for (let i = 0; i < 600 && spilled() < 15; i++) await sleep(50);
  const second = await startServer(db, home, port0);
  server = second.child;
  try {
    const [a] = await ddp(out, env, [], running);
    assert.equal(a.seen.length, 40);
    assert.deepEqual([...new Set(a.kinds)], ['proceed'], 'the run never heard of the past spike as an action');
    const run = await reports(second.info);
    assert.deepEqual([run.reports, run.last_step], [40, 40], 'every step stored once');
    const m = await fetch(`${second.info.url}/api/v1/runs/1/metrics`, { headers: { authorization: `Bearer ${second.info.token}` } });
    const rows = ((await m.json()) as { rows: { report: { step: number; late?: boolean }; decision: { reason: string; spikes?: unknown[] } }[] }).rows;
    const steps = rows.map((r) => r.report.step);
    const at20 = rows.find((r) => r.report.step === 20)!;
    assert.ok(at20.report.late && at20.decision.spikes && /reported late/.test(at20.decision.reason), JSON.stringify(at20));
    assert.deepEqual(
      steps,
      Array.from({ length: 40 }, (_, i) => i + 1),
    );
  } finally {
    server.kill('SIGTERM');
  }
});

test('python client: a server that accepts and never answers costs the run its timeouts, not a hang', { skip }, async () => {
  const dir = fresh('hanging');
  fs.mkdirSync(dir, { recursive: true });
  const held: net.Socket[] = [];
  const tarpit = net.createServer((c) => held.push(c));
  await new Promise<void>((r) => tarpit.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${(tarpit.address() as net.AddressInfo).port}`;
    const out = path.join(dir, 'out.json');
    const [a, b] = await ddp(out, { KEEL_URL: url, KEEL_TOKEN: 'x' }, ['--sleep', '0.05']);
    assert.deepEqual(a.kinds, Array(40).fill('proceed'));
    assert.equal(a.checksum, b.checksum);
    // 40 × 50 ms of its own sleep, plus 0.5 s timeouts at back-off intervals (1, 2, 4 s …): a handful.
    assert.ok(a.seconds < 2 + 0.5 * 6 + 1, `${a.seconds} s`);
    assert.ok(held.length >= 2 && held.length <= 8, `${held.length} tries`);
  } finally {
    held.forEach((c) => c.destroy());
    tarpit.close();
  }
});

test('python client: with the server absent, training finishes on time and keeps every report locally', { skip }, async () => {
  const dir = fresh('absent');
  fs.mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const out = path.join(dir, 'out.json');
  const [a, b] = await ddp(out, { KEEL_URL: 'http://127.0.0.1:9', KEEL_TOKEN: 'x' });
  assert.deepEqual(a.kinds, Array(40).fill('proceed'));
  assert.equal(a.checksum, b.checksum);
  assert.ok(a.seconds < 10, `${a.seconds} s`);
  assert.ok(performance.now() - t0 < 60_000);
  const spilled = fs
    .readFileSync(`${out}.spill0`, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    spilled.map((r) => r.step),
    Array.from({ length: 40 }, (_, i) => i + 1),
  );
});

test('python client: a wrong token is one warning, then offline', { skip }, async () => {
  const dir = fresh('token');
  fs.mkdirSync(dir, { recursive: true });
  s ??= await serve({ host: '127.0.0.1', port: 0, db: path.join(dir, 'keel.db') });
  const out = path.join(dir, 'out.json');
  const r = await runPy(out, { KEEL_URL: s.url, KEEL_TOKEN: 'wrong' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.match(/refused the token/g)?.length, 1, r.stderr);
  assert.deepEqual(JSON.parse(fs.readFileSync(`${out}.rank0`, 'utf8')).kinds, Array(40).fill('proceed'));
});

test("python client: the DDP noise-scale hook's sums agree with an explicit computation from each rank's gradient", { skip }, () => {
  const r = spawnSync(PY, [path.join(REPO, 'test/python/noise_hook.py'), String(port++)], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const { hook, explicit } = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.deepEqual([hook.b_small, hook.b_big], [5, 10]);
  for (const k of ['g_small_sq', 'g_big_sq']) assert.ok(Math.abs(hook[k] - explicit[k]) <= 1e-12 * explicit[k], `${k}: ${hook[k]} vs ${explicit[k]}`);
  assert.ok(hook.g_small_sq > hook.g_big_sq, "one rank's gradient is noisier than the mean of two");
});

test('python client: keel.Batches gives batch k the same indices across epochs and after any seek', { skip }, () => {
  const r = spawnSync(PY, [path.join(REPO, 'test/python/batches.py')], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const o = JSON.parse(r.stdout.trim());
  assert.equal(o.len, 3);
  assert.deepEqual(o.after_seek, o.drawn.slice(4, 7));
  assert.deepEqual(o.again, o.drawn);
  assert.deepEqual(o.seek7, o.drawn[7]);
  assert.equal(o.pos, 8);
  assert.notDeepEqual(o.drawn[0], o.drawn[3], 'a new epoch is shuffled anew (set_epoch)');
});

test('examples/torch_ddp.py: a small GPT on 2 gloo processes rolls back a one-rank fire drill and trains to the end', { skip }, async () => {
  const dir = fresh('example');
  fs.mkdirSync(dir, { recursive: true });
  const text = path.join(dir, 'text.txt');
  fs.writeFileSync(text, fs.readFileSync(path.join(REPO, 'README.md'), 'utf8').repeat(2));
  const srv = await serve({ host: '127.0.0.1', port: 0, db: path.join(dir, 'keel.db') });
  const out = path.join(dir, 'out.json');
  const child = spawn(
    PY,
    [path.join(REPO, 'examples/torch_ddp.py'), '--data', text, '--steps', '40', '--fault-step', '30', '--spawn', '2', '--port', String(port++), '--out', out],
    {
      env: { ...process.env, KEEL_URL: srv.url, KEEL_TOKEN: srv.token, PYTHONPATH: path.join(REPO, 'python') },
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (log += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (log += c));
  const status = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  await srv.close();
  assert.equal(status, 0, log);
  assert.equal(JSON.parse(fs.readFileSync(out, 'utf8')).steps, 40);
  assert.match(log, /step 30 loss [\d.]+ rollback/, log);
});
