// Runs under a scheduler: SIGTERM and SIGHUP stop like Ctrl-C, two signals queued during one
// evaluation are one request, one writer per run directory (a stale lock after kill -9 is taken
// over), a full disk while appending the logs is a clean stop that can be resumed, --auto-resume
// starts, continues or starts over, and a kill -9 at 20 moments of the same command, rerun each
// time, ends with the weights of an uninterrupted run, byte for byte.
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { listCheckpoints, loadCheckpoint } from '../src/train/checkpoints.ts';
import { Rng } from '../src/util/rng.ts';
import { type Arg, englishText, keel, keelAsync, MICRO, sleep, tempRoot, trainLines, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('reliability');
const corpus = writeCorpus(path.join(root, 'data'));
const bigCorpus = writeCorpus(path.join(root, 'big'), englishText(1_200_000, 3));
const micro = writeJson(path.join(root, 'micro.json'), MICRO);
const base = (out: string, steps: number, data = corpus) => ['train', { config: micro, data, batch: 2, evalTokens: 257, steps, out }];

// A test that fails while its trainer runs must not leave it running (the runner would wait for it).
const live: ChildProcess[] = [];
after(() => live.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));
function start(args: Arg[]): ReturnType<typeof keelAsync> {
  const r = keelAsync(args);
  live.push(r.child);
  return r;
}

async function until(what: string, ok: () => boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(20);
  }
}

for (const [sig, code] of [
  ['SIGTERM', 143],
  ['SIGHUP', 129],
] as const) {
  test(`${sig}: finishes the step, writes a checkpoint, exits ${code} and prints the resume command`, async () => {
    const out = fresh(sig);
    const { child, done } = start([...base(out, 1_000_000), '--checkpoint-every', '0']);
    await until('three training lines', () => trainLines(out).length >= 3);
    child.kill(sig);
    const r = await done;
    assert.equal(r.status, code, `exit ${r.status} / ${r.signal}\n${r.stderr}`);
    assert.match(r.stderr, new RegExp(`${sig} received`));
    assert.match(r.stderr, /resume with: keel train --resume/);
    assert.doesNotMatch(r.stderr, /^\s+at /m);
    assert.equal(listCheckpoints(out).at(-1), trainLines(out).at(-1)!.step);
  });
}

test('two Ctrl-C 40 ms apart during one long evaluation are one request: the checkpoint is written', async () => {
  const out = fresh('double');
  // The tiny model evaluates 50,000 tokens after every step: the thread is in an evaluation
  // nearly all the time. The presses are 40 ms apart: back to back, the kernel would merge them.
  const { child, done } = start([
    'train',
    { config: 'tiny', data: bigCorpus, batch: 1, steps: 1000000, out, evalEvery: 1, evalTokens: 20000, checkpointEvery: 0 },
  ]);
  await until('a training line', () => trainLines(out).length >= 1, 120_000);
  child.kill('SIGINT');
  await sleep(40);
  child.kill('SIGINT');
  const r = await done;
  assert.equal(r.status, 130, r.stderr);
  assert.doesNotMatch(r.stderr, /leaving without a checkpoint/);
  assert.equal(listCheckpoints(out).at(-1), trainLines(out).at(-1)!.step);
});

test('two writers: a second keel train --resume on a run being written is refused with the pid; after kill -9 the lock is taken over', async () => {
  const out = fresh('writers');
  const { child } = start([...base(out, 1_000_000), '--checkpoint-every', '5']);
  await until('a checkpoint', () => listCheckpoints(out).length > 0);
  const second = keel(['train', { resume: out, steps: 1000 }]);
  assert.equal(second.status, 2, second.stderr);
  assert.match(second.stderr, new RegExp(`being written by another keel process \\(pid ${child.pid}`));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.ok(fs.existsSync(path.join(out, '.lock')), 'kill -9 leaves the lock behind');
  const from = listCheckpoints(out).at(-1)!;
  const third = keel(['train', { resume: out, steps: from + 3, json: true }]);
  assert.equal(third.status, 0, third.stderr);
  assert.equal(JSON.parse(third.stdout.trim().split('\n').at(-1)!).steps, from + 3);
  assert.ok(!fs.existsSync(path.join(out, '.lock')), 'released at exit');
});

/** A tmpfs of `kb` KiB at `dir`, or the reason it cannot be made here. */
function mountTmpfs(dir: string, kb: number): string | null {
  fs.mkdirSync(dir, { recursive: true });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${kb}k`, 'tmpfs', dir], { encoding: 'utf8' });
  return r.status === 0 ? null : `cannot mount a small tmpfs here (${(r.stderr || r.error?.message || '').trim()}): needs root with CAP_SYS_ADMIN`;
}

test('disk full while appending the logs: one line, exit 2, whole last lines, the checkpoint intact, and the run resumes once there is room', async (t) => {
  const disk = fresh('disk');
  const why = mountTmpfs(disk, 320);
  if (why) return t.skip(why);
  try {
    const out = path.join(disk, 'run');
    const first = keel([...base(out, 20), { checkpointEvery: 0 }]);
    assert.equal(first.status, 0, first.stderr);
    const full = keel(['train', { resume: out, steps: 1000000, checkpointEvery: 0 }]);
    assert.equal(full.status, 2, full.stderr);
    assert.match(full.stderr, /the disk is full/);
    assert.doesNotMatch(full.stderr, /^\s+at /m);
    for (const f of ['metrics.jsonl', 'control.jsonl']) {
      const text = fs.readFileSync(path.join(out, f), 'utf8');
      assert.ok(text.endsWith('\n'), `${f} ends with a whole line`);
      for (const line of text.trim().split('\n')) JSON.parse(line);
    }
    assert.equal(loadCheckpoint(out).state.step, 20, 'the checkpoint before is intact');
    spawnSync('mount', ['-o', 'remount,size=8m', disk]);
    const again = keel(['train', { resume: out, steps: 25, json: true }]);
    assert.equal(again.status, 0, again.stderr);
    assert.equal(loadCheckpoint(out).state.step, 25);
  } finally {
    spawnSync('umount', [disk]);
  }
});

test('--auto-resume: starts a missing directory, continues from the newest readable checkpoint, starts over a run that never checkpointed', () => {
  const out = fresh('auto');
  const cmd = (steps: number) => [...base(out, steps), '--checkpoint-every', '5', '--keep', '3', '--auto-resume', '--json'];
  const a = keel(cmd(10));
  assert.equal(a.status, 0, a.stderr);
  assert.deepEqual(listCheckpoints(out), [5, 10]);
  // Continue: same command, more steps. A kill during a checkpoint leaves a temporary directory; a missing config.json is rewritten.
  fs.mkdirSync(path.join(out, 'checkpoints', '.step-15.tmp-123-abcd'));
  fs.rmSync(path.join(out, 'config.json'));
  const b = keel(cmd(15));
  assert.equal(b.status, 0, b.stderr);
  assert.match(b.stderr, /continuing .* from step 10/);
  assert.deepEqual(listCheckpoints(out), [5, 10, 15]);
  assert.ok(!fs.existsSync(path.join(out, 'checkpoints', '.step-15.tmp-123-abcd')));
  assert.ok(fs.existsSync(path.join(out, 'config.json')));
  assert.deepEqual(
    trainLines(out).map((l) => l.step),
    Array.from({ length: 15 }, (_, i) => i + 1),
  );
  // An unreadable newest checkpoint is reported and the one before it used.
  fs.writeFileSync(path.join(out, 'checkpoints', 'step-15', 'trainer.json'), '{"trunc');
  const c = keel(cmd(20));
  assert.equal(c.status, 0, c.stderr);
  assert.match(c.stderr, /skipping unreadable checkpoint step-15: .*trainer.json/);
  assert.match(c.stderr, /from step 10/);
  // Without --auto-resume, the error names the older checkpoints.
  fs.writeFileSync(path.join(out, 'checkpoints', 'step-20', 'trainer.json'), '{"trunc');
  const d = keel(['train', { resume: out }]);
  assert.equal(d.status, 2);
  assert.match(d.stderr, /older checkpoints: .*step-10.*--resume .*step-1[05]/);

  // A run that died before its first checkpoint: a dead end without the flag, a fresh start with it.
  const dead = fresh('dead');
  fs.mkdirSync(dead, { recursive: true });
  fs.writeFileSync(path.join(dead, 'metrics.jsonl'), '{"step":1,"loss":5}\n{"step":2,');
  fs.writeFileSync(path.join(dead, 'config.json'), '{}');
  const plain = keel([...base(dead, 5)]);
  assert.equal(plain.status, 2);
  assert.match(plain.stderr, /stopped before its first checkpoint: add --auto-resume/);
  const resume = keel(['train', { resume: dead }]);
  assert.equal(resume.status, 2);
  assert.match(resume.stderr, /stopped before its first checkpoint: nothing to resume; start it over with --out .* --auto-resume/);
  const over = keel([...base(dead, 5), '--auto-resume']);
  assert.equal(over.status, 0, over.stderr);
  assert.match(over.stderr, /starting it over/);
  assert.deepEqual(
    trainLines(dead).map((l) => l.step),
    [1, 2, 3, 4, 5],
  );
  // Misuse is one line.
  assert.match(keel(['train', { resume: out, autoResume: true }]).stderr, /goes with --out/);
});

test('kill -9 at 20 moments of the same --auto-resume command, rerun each time: the weights equal an uninterrupted run byte for byte', async () => {
  const steps = 300; // more than 20 attempts of at most 13 steps can reach: every kill lands
  const cmd = (out: string) => [...base(out, steps), '--checkpoint-every', '6', '--keep', '2', '--eval-every', '40', '--auto-resume'];
  const ref = fresh('torture-ref');
  assert.equal(keel(cmd(ref)).status, 0);
  const out = fresh('torture');
  const rng = new Rng(2026);
  let kills = 0;
  for (let i = 0; i < 20; i++) {
    const before = trainLines(out).length;
    const { child, done } = start(cmd(out));
    // k = 0: during start-up (before the first step, even before the run directory exists);
    // otherwise after k more steps, often right at a checkpoint (every 6 steps) being written.
    const k = rng.int(14);
    if (k === 0) await sleep(rng.uniform() * 700);
    else await until(`${k} more steps`, () => trainLines(out).length >= before + k || child.exitCode !== null, 60_000);
    if (child.exitCode === null) {
      child.kill('SIGKILL');
      kills += 1;
    }
    await done;
  }
  const last = keel(cmd(out));
  assert.equal(last.status, 0, last.stderr);
  assert.ok(kills >= 18, `only ${kills} kills landed`);
  const file = (dir: string, f: string) => fs.readFileSync(path.join(dir, 'checkpoints', `step-${steps}`, f));
  for (const f of ['model.safetensors', 'optimizer.safetensors']) assert.ok(file(out, f).equals(file(ref, f)), `${f} differs after ${kills} kills`);
});
