// keel train --serve: a Keel run mirrored to a real keel serve (in this process, real sockets and
// SQLite) while the CLI trains in a child process. Every report and decision of control.jsonl
// reaches the server, so do evaluations and checkpoints; a resume continues the same served run;
// a server that is away never stops the training.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { serve, type Serving } from '../src/serve/server.ts';
import { keel, keelAsync, MICRO, tempRoot, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('serve-train');
const corpus = writeCorpus(path.join(root, 'data'));
const micro = writeJson(path.join(root, 'micro.json'), MICRO);
let s: Serving | undefined;
after(() => s?.close());

const base = (out: string) => ['train', { config: micro, data: corpus, batch: 2, evalEvery: 10, evalTokens: 64, checkpointEvery: 10, out }];

function controlLog(run: string): { t: string; step: number; attempt: number; kind?: string; seq?: number }[] {
  return fs
    .readFileSync(path.join(run, 'control.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
}

test('keel train --serve: every report and decision, the evaluations and checkpoints reach keel serve; a resume continues the same run', async () => {
  const dir = fresh('mirror');
  fs.mkdirSync(dir, { recursive: true });
  s = await serve({ host: '127.0.0.1', port: 0, db: path.join(dir, 'keel.db') });
  const run = path.join(dir, 'run');
  const env = { KEEL_URL: s.url, KEEL_TOKEN: s.token };
  const first = keelAsync(
    [...base(run), { steps: 30, onSpike: 'rollback', spikeWindow: 8, fault: '15:nan-grad', rollbackSteps: 6, skipBatches: 3, serve: true }],
    env,
  );
  const r = await first.done;
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /not mirrored|not answering|refused/);
  const runs = s.store.runs();
  assert.deepEqual(
    runs.map((x) => [x.name, x.mirror]),
    [['run', true]],
  );
  const rows = s.store.metrics(runs[0].id, 10_000);
  const log = controlLog(run);
  const decisions = log.filter((l) => l.t === 'decision');
  assert.ok(
    decisions.some((d) => d.kind === 'rollback'),
    `the fire drill rolled the run back: ${decisions.map((d) => d.kind).join(',')}`,
  );
  // The stored rows are the run's own reports and decisions, one per step and attempt.
  const key = (step: number, attempt: number) => `${step}/${attempt}`;
  assert.deepEqual(rows.map((x) => key(x.report.step, x.report.attempt)).sort(), decisions.map((d) => key(d.step, d.attempt)).sort());
  for (const x of rows) assert.equal(x.decision.kind, decisions.find((d) => d.step === x.decision.step && d.attempt === x.decision.attempt)!.kind);
  assert.deepEqual(
    s.store.evals(runs[0].id).map((e) => e.step),
    [10, 20, 30],
  );
  // The resumed run attaches to the same served run and adds its steps.
  const second = await keelAsync(['train', { resume: run, steps: 40, serve: true }], env).done;
  assert.equal(second.status, 0, second.stderr);
  const after2 = s.store.runs();
  assert.equal(after2.length, 1, JSON.stringify(after2));
  assert.equal(after2[0].last_step, 40);
  assert.deepEqual(
    s.store.evals(runs[0].id).map((e) => e.step),
    [10, 20, 30, 40],
  );
});

test('keel train --serve: a server that is away costs one warning, not the run', async () => {
  const out = path.join(fresh('away'), 'run');
  const r = await keelAsync([...base(out), { steps: 12, serve: true }], { KEEL_URL: 'http://127.0.0.1:9', KEEL_TOKEN: 'x' }).done;
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.match(/not answering/g)?.length, 1, r.stderr);
  assert.match(r.stderr, /12 step reports were not mirrored/);
  assert.ok(fs.existsSync(path.join(out, 'checkpoints')));
});

test('keel train --serve: no server to find is a usage error before anything is written', () => {
  const out = path.join(fresh('none'), 'run');
  const r = keel([...base(out), { steps: 5, serve: true }], { env: { KEEL_HOME: fresh('empty-home'), KEEL_URL: '', KEEL_TOKEN: '' } });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /no keel serve found/);
  assert.ok(!fs.existsSync(out));
});
