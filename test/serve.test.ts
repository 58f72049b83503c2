// `keel serve` over real sockets and a real SQLite file: the API end to end (a rollback decided
// by the served controller), idempotent retries, refusals that store nothing, a fuzz that
// leaves the server up, a kill -9 that loses nothing acknowledged, and a clean SIGTERM.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, test } from 'node:test';
import type { StepReport } from '../src/control/types.ts';
import Database from 'better-sqlite3';
import { serve, type Serving } from '../src/serve/server.ts';
import { SCHEMA_VERSION, Store } from '../src/serve/store.ts';
import { Rng } from '../src/util/rng.ts';
import { keel, startServer, stepReport, tempRoot } from './helpers.ts';

const { fresh } = tempRoot('serve');

interface Res {
  status: number;
  body: Record<string, unknown>;
}

/** One HTTP request with full control of the headers (fetch would not let a test forge Host). */
function call(url: string, method: string, route: string, body?: unknown, headers: Record<string, string> = {}): Promise<Res> {
  const u = new URL(url);
  const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, method, path: route, headers: { ...(data ? { 'content-type': 'application/json' } : {}), ...headers } },
      (res) => {
        let text = '';
        res
          .setEncoding('utf8')
          .on('data', (c: string) => (text += c))
          .on('end', () => resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : {} }));
      },
    );
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

const client =
  (s: { url: string; token: string }) =>
  (method: string, route: string, body?: unknown, headers: Record<string, string> = {}) =>
    call(s.url, method, `/api/v1${route}`, body, { authorization: `Bearer ${s.token}`, ...headers });

const report = (step: number, loss: number, attempt = 0): StepReport =>
  stepReport(step, { attempt, loss, grad_norm: 1 + 0.01 * Math.sin(step), tokens: step * 64, batch: 4, data: [2 * step - 2, 2 * step] });
const RUN = { steps: 100, batch: 4, micro_batch: 2, seq_len: 16, params: 1000 };
const POLICY = { on_spike: 'rollback', spike_window: 8, rollback_steps: 5, skip_batches: 3 };

let s: Serving;
let api: ReturnType<typeof client>;
const db = path.join(fresh('db'), 'keel.db');
fs.mkdirSync(path.dirname(db), { recursive: true });
after(() => s?.close());

test("serve: a run reports steps, registers checkpoints, and gets the controller's rollback back", async () => {
  s = await serve({ host: '127.0.0.1', port: 0, db });
  api = client(s);
  assert.deepEqual((await api('GET', '/health')).body, { ok: true, version: 1, schema: SCHEMA_VERSION });
  const created = await api('POST', '/runs', { name: 'torch-run', config: { model: 'gpt2' }, policy: POLICY, run: RUN });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const id = created.body.id as number;
  assert.equal(created.body.batch, 4);
  assert.equal((await api('POST', `/runs/${id}/checkpoints`, { step: 0, data: 0, path: '/ckpt/0' })).status, 200);
  const batch = Array.from({ length: 12 }, (_, i) => report(i + 1, 2 + 0.01 * Math.cos(i)));
  const r1 = await api('POST', `/runs/${id}/reports`, { reports: batch });
  assert.equal(r1.status, 200, JSON.stringify(r1.body));
  assert.deepEqual(
    (r1.body.decisions as { kind: string }[]).map((d) => d.kind),
    Array(12).fill('proceed'),
  );
  assert.equal((await api('POST', `/runs/${id}/checkpoints`, { step: 10, data: 20, path: '/ckpt/10' })).status, 200);
  // A retry of steps already stored changes nothing and gets the same decisions back.
  const again = await api('POST', `/runs/${id}/reports`, { reports: batch.slice(10) });
  assert.deepEqual(again.body.decisions, (r1.body.decisions as unknown[]).slice(10));
  // A spike at step 16: roll back to the checkpoint at least 5 steps back, skip 3 steps of data.
  const spiky = await api('POST', `/runs/${id}/reports`, { reports: [report(13, 2), report(14, 2), report(15, 2), report(16, 30)] });
  const d = (spiky.body.decisions as Record<string, unknown>[]).at(-1)!;
  assert.equal(d.kind, 'rollback');
  assert.deepEqual(d.rollback, { to_step: 10, skip_data: [20, 26] });
  // The next report is step 11 on attempt 1; an old attempt is refused with the reason.
  const stale = await api('POST', `/runs/${id}/reports`, { reports: [report(17, 2)] });
  assert.equal(stale.status, 400);
  assert.match(String(stale.body.error), /expected step 11/);
  assert.equal((await api('POST', `/runs/${id}/reports`, { reports: [report(11, 2, 1)] })).status, 200);
  const runs = (await api('GET', '/runs')).body.runs as Record<string, unknown>[];
  assert.deepEqual(
    runs.map((r) => [r.name, r.reports, r.last_step]),
    [['torch-run', 17, 16]],
  );
  const m = await api('GET', `/runs/${id}/metrics?max=5`);
  const rows = m.body.rows as { decision: { kind: string } }[];
  assert.ok(rows.length <= 7 && rows.some((r) => r.decision.kind === 'rollback'), 'downsampled, decisions kept');
  // resume: a restarted job gets the same run and its attempt.
  const resumed = await api('POST', '/runs', { name: 'torch-run', policy: POLICY, run: RUN, resume: true });
  assert.deepEqual([resumed.body.id, resumed.body.resumed, resumed.body.attempt], [id, true, 1]);
});

test('serve: reports kept through an outage arrive late in one batch with a spike among them; all are stored as applied, the live one decided', async () => {
  const id = (await api('POST', '/runs', { name: 'outage', policy: POLICY, run: RUN })).body.id as number;
  await api('POST', `/runs/${id}/checkpoints`, { step: 0, data: 0 });
  const backlog = Array.from({ length: 12 }, (_, i) => ({ ...report(i + 1, i === 9 ? 30 : 2 + 0.01 * Math.cos(i)), late: true }));
  const r = await api('POST', `/runs/${id}/reports`, { reports: [...backlog, report(13, 2)] });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const decisions = r.body.decisions as { kind: string; reason: string; spikes?: unknown[] }[];
  assert.deepEqual([...new Set(decisions.map((d) => d.kind))], ['proceed']);
  assert.ok(decisions[9].spikes && /reported late/.test(decisions[9].reason), decisions[9].reason);
  const run = ((await api('GET', '/runs')).body.runs as { name: string; reports: number; last_step: number }[]).find((x) => x.name === 'outage')!;
  assert.deepEqual([run.reports, run.last_step], [13, 13]);
});

test('serve: refused requests get the right status, name the problem, and store nothing', async () => {
  const before = JSON.stringify((await api('GET', '/runs')).body);
  const good = { name: 'x', policy: POLICY, run: RUN };
  const cases: [number, Promise<Res>, RegExp?][] = [
    [401, call(s.url, 'POST', '/api/v1/runs', good), /token/],
    [401, api('POST', '/runs', good, { authorization: 'Bearer nope' }), /token/],
    [421, api('POST', '/runs', good, { host: 'evil.example:80' }), /Host/],
    [403, api('POST', '/runs', good, { origin: 'http://evil.example' }), /Origin/],
    [400, api('POST', '/runs', '{"name":'), /not valid JSON/],
    [400, api('POST', '/runs', { ...good, run: { ...RUN, batch: 0 } }), /^run\.batch/],
    [400, api('POST', '/runs', { ...good, policy: { on_spike: 'panic' } }), /^policy\.on_spike/],
    [400, api('POST', '/runs', { ...good, policy: { on_spike: 'skip', spike_min_rise: -0.1 } }), /^policy\.spike_min_rise/],
    [400, api('POST', '/runs', { ...good, run: { ...RUN, batch: 3 } }), /multiple of micro_batch/],
    [400, api('POST', '/runs/1/reports', { reports: [{ ...report(12, 2, 1), loss: 'high' }] }), /^reports\.0\.loss/],
    [404, api('POST', '/runs/99/reports', { reports: [report(1, 2)] }), /no run 99/],
    [404, api('GET', '/nothing'), /no route/],
    [405, api('DELETE', '/runs'), /not allowed/],
    [413, api('POST', '/runs', 'x'.repeat(5 * 1024 * 1024)), /body over/],
  ];
  for (const [status, p, re] of cases) {
    const r = await p;
    assert.equal(r.status, status, JSON.stringify(r.body));
    if (re) assert.match(String(r.body.error), re);
  }
  assert.equal(JSON.stringify((await api('GET', '/runs')).body), before, 'nothing stored from a refused call');
});

test('serve: a few thousand fuzzed requests get 4xx answers and leave the server up and the store unchanged', async () => {
  const before = JSON.stringify((await api('GET', '/runs')).body);
  const rng = new Rng(7);
  const pick = <T>(xs: readonly T[]): T => xs[rng.int(xs.length)];
  const values = [null, 0, -1, 1.5, 1e308, '', 'x', [], {}, true, [1, 2, 3], { v: 1 }];
  const mutate = (o: Record<string, unknown>): Record<string, unknown> => {
    const keys = Object.keys(o);
    const out = { ...o };
    const k = pick([...keys, 'extra']);
    if (rng.int(3) === 0) delete out[k];
    else out[k] = pick(values);
    return out;
  };
  const routes = ['/runs', '/runs/1/reports', '/runs/1/checkpoints', '/runs/abc/reports', '/runs/1/metrics?max=-3', '/health'];
  const statuses = new Map<number, number>();
  for (let i = 0; i < 2000; i++) {
    const route = pick(routes);
    // Reports for step 13 (the run expects 12): refused whatever the mutation, so the run must not change.
    const base = route.includes('reports')
      ? { reports: [mutate(report(13, 2, 1) as unknown as Record<string, unknown>)] }
      : route.includes('checkpoints')
        ? mutate({ step: -1, data: 'x' })
        : mutate({ name: 'fuzz', policy: mutate(POLICY), run: mutate(RUN) });
    const body = rng.int(10) === 0 ? '{' + 'x'.repeat(rng.int(50)) : base;
    const r = await api(pick(['POST', 'POST', 'GET', 'PUT']), route, body);
    statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    assert.ok(r.status < 500, `${route} ${JSON.stringify(body)} → ${r.status} ${JSON.stringify(r.body)}`);
  }
  assert.equal((await api('GET', '/health')).status, 200);
  const runs = (await api('GET', '/runs')).body.runs as { name: string }[];
  // A fuzzed run creation may be valid (then it is stored, as it should be); the torch run is untouched.
  assert.equal(
    JSON.stringify(runs.filter((r) => r.name !== 'fuzz')),
    JSON.stringify((JSON.parse(before).runs as { name: string }[]).filter((r) => r.name !== 'fuzz')),
  );
  assert.ok((statuses.get(400) ?? 0) > 500, JSON.stringify([...statuses]));
});

const exited = (c: ChildProcess) => new Promise<number | null>((resolve) => c.once('exit', (code) => resolve(code)));

test('serve: kill -9 loses nothing acknowledged; a restarted server carries on with the same controller', async () => {
  const home = fresh('home');
  const file = path.join(home, 'keel.db');
  fs.mkdirSync(home, { recursive: true });
  const a = await startServer(file, home);
  assert.equal(fs.statSync(path.join(home, 'serve.json')).mode & 0o777, 0o600, 'only its owner can read the token');
  const found = JSON.parse(fs.readFileSync(path.join(home, 'serve.json'), 'utf8'));
  assert.deepEqual([found.url, found.token], [a.info.url, a.info.token]);
  let api1 = client(a.info);
  const id = (await api1('POST', '/runs', { name: 'durable', policy: POLICY, run: RUN })).body.id;
  const acked: unknown[] = [];
  for (let n = 1; n <= 40; n++)
    acked.push(((await api1('POST', `/runs/${id}/reports`, { reports: [report(n, 2 + 0.01 * Math.sin(n))] })).body.decisions as unknown[])[0]);
  a.child.kill('SIGKILL');
  await exited(a.child);
  const b = await startServer(file, home);
  assert.equal(b.info.token, a.info.token, 'the token is kept in the database: clients carry on');
  api1 = client(b.info);
  const runs = (await api1('GET', '/runs')).body.runs as Record<string, unknown>[];
  assert.deepEqual(
    runs.map((r) => [r.name, r.reports, r.last_step]),
    [['durable', 40, 40]],
  );
  // Retries of the last steps get the stored decisions; the next step goes on where it stopped.
  assert.deepEqual((await api1('POST', `/runs/${id}/reports`, { reports: [report(40, 2 + 0.01 * Math.sin(40))] })).body.decisions, [acked[39]]);
  const next = await api1('POST', `/runs/${id}/reports`, { reports: [report(41, 2)] });
  assert.equal(next.status, 200, JSON.stringify(next.body));
  assert.equal((next.body.decisions as { seq: number }[])[0].seq, 40, "the controller's sequence carried over");
  b.child.kill('SIGTERM');
  assert.equal(await exited(b.child), 0, 'SIGTERM: clean exit');
  assert.ok(!fs.existsSync(path.join(home, 'serve.json')), 'its discovery file is removed');
});

test('serve CLI: a bad port is a usage error (exit 2)', () => {
  const r = keel(['serve', { port: 70000 }]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--port 70000/);
});

test('serve: a mirrored run (keel train --serve) stores the decisions it made; evaluations travel with the metrics', async () => {
  const dir = fresh('mirror');
  fs.mkdirSync(dir, { recursive: true });
  const m = await serve({ host: '127.0.0.1', port: 0, db: path.join(dir, 'keel.db') });
  try {
    const api2 = client(m);
    const id = (await api2('POST', '/runs', { name: 'keel-run', policy: POLICY, run: RUN, mirror: true })).body.id as number;
    const decision = (step: number, kind = 'proceed') => ({ v: 1, seq: step - 1, step, attempt: 0, kind, apply: kind === 'proceed', reason: 'in-process' });
    const rows = [1, 2, 3].map((n) => ({ report: report(n, 2), decision: decision(n, n === 3 ? 'skip' : 'proceed') }));
    assert.equal((await api2('POST', `/runs/${id}/log`, { rows })).status, 200);
    // A resumed run replays step 3: the newer pass replaces the stored one.
    assert.equal((await api2('POST', `/runs/${id}/log`, { rows: [{ report: report(3, 1.5), decision: decision(3) }] })).status, 200);
    assert.equal((await api2('POST', `/runs/${id}/evals`, { step: 3, metrics: { val_loss: 1.9 } })).status, 200);
    const got = (await api2('GET', `/runs/${id}/metrics`)).body as { rows: { report: StepReport; decision: { kind: string } }[]; evals: unknown[] };
    assert.deepEqual(
      got.rows.map((r) => [r.report.step, r.report.loss, r.decision.kind]),
      [
        [1, 2, 'proceed'],
        [2, 2, 'proceed'],
        [3, 1.5, 'proceed'],
      ],
    );
    assert.deepEqual(got.evals, [{ step: 3, metrics: { val_loss: 1.9 } }]);
    // A mirrored run is not decided by the server, and a served run takes no decisions from outside.
    assert.match(String((await api2('POST', `/runs/${id}/reports`, { reports: [report(4, 2)] })).body.error), /decides for itself/);
    const served = (await api2('POST', '/runs', { name: 'torch', policy: POLICY, run: RUN })).body.id as number;
    assert.equal((await api2('POST', `/runs/${served}/log`, { rows })).status, 400);
    assert.match(String((await api2('POST', `/runs/${id}/evals`, { step: 3, metrics: {} })).body.error), /metrics/);
    assert.deepEqual(
      ((await api2('GET', '/runs')).body.runs as { mirror: boolean }[]).map((r) => r.mirror),
      [true, false],
    );
  } finally {
    await m.close();
  }
});

test('serve: a database of schema version 1 is migrated in place and keeps its runs', () => {
  const file = path.join(fresh('migrate'), 'old.db');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const old = new Store(file);
  old.createRun('before', {}, { on_spike: 'skip' }, RUN, false);
  old.report(1, [report(1, 2)]);
  old.close();
  // Take it back to version 1 by hand: what an older keel serve left on disk.
  const raw = new Database(file);
  raw.exec('DROP TABLE meta; DROP TABLE evals; ALTER TABLE runs DROP COLUMN mirror; PRAGMA user_version = 1;');
  raw.close();
  const store = new Store(file);
  try {
    assert.deepEqual(
      store.runs().map((r) => [r.name, r.reports, r.mirror]),
      [['before', 1, false]],
    );
    assert.equal(store.report(1, [report(2, 2)])[0].seq, 1, 'its controller carries on');
    assert.match(store.token(false), /^[0-9a-f]{48}$/);
    assert.equal(store.token(false), store.token(false));
  } finally {
    store.close();
  }
  const v = new Database(file);
  assert.equal(v.pragma('user_version', { simple: true }), SCHEMA_VERSION);
  v.close();
});
