// Absurd sizes, odd paths and silent surprises: every case refused with one
// line and exit 2 before anything is written, and the surprises said out loud.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

import path from 'node:path';
import { train } from '../src/train/trainer.ts';
import { cgroupRoom } from '../src/train/memory.ts';
import { Controller, spikeWarmup } from '../src/control/controller.ts';
import { SpikeDetector } from '../src/monitor/spikes.ts';
import { createProgress, type ProgressStream } from '../src/util/progress.ts';
import { assertUserError, KEEL, keel, metrics, MICRO, stepReport, tempRoot, trainOptions, walk, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('reliab');
const corpus = writeCorpus(path.join(root, 'data'));
const microJson = writeJson(path.join(root, 'micro.json'), MICRO);
const quick = ['--data', corpus, '--steps', '2', '--batch', '2', '--eval-tokens', '257'];

describe("absurd sizes: refused with the figure and the machine's memory, before anything is allocated or written", () => {
  const refused = (name: string, args: string[], why: RegExp) =>
    test(name, () => {
      const top = fresh('absurd');
      const out = path.join(top, 'nested', 'run');
      const t0 = Date.now();
      const r = keel(['train', ...quick, ...args, { out }]);
      assertUserError(r, why);
      assert.ok(Date.now() - t0 < 20_000, 'took too long: was something allocated?');
      assert.equal(fs.existsSync(top), false, `something was created: ${fs.existsSync(top) ? walk(top) : ''}`);
    });
  const memory = /needs about [\d.]+ [MGTP]B of memory \(.*\) but the machine has [\d.]+ [kMG]B \((MemAvailable|total memory|cgroup memory limit [^)]*)\)/;
  refused('--batch 100000000', ['--config', microJson, '--batch', '100000000'], new RegExp(memory.source + '.*use --batch \\d+ or less'));
  refused(
    'nEmbd 100000',
    ['--config', writeJson(path.join(root, 'wide.json'), { ...MICRO, nHead: 4, nEmbd: 100_000 })],
    new RegExp(memory.source + '.*smaller model'),
  );
  refused('nLayer 100000', ['--config', writeJson(path.join(root, 'deep.json'), { ...MICRO, nLayer: 100_000, nEmbd: 128 })], memory);
  refused(
    'vocabSize below the byte alphabet',
    ['--config', writeJson(path.join(root, 'vocab.json'), { ...MICRO, vocabSize: 100 })],
    /vocabSize 100 is smaller than the tokenizer's alphabet.*256/,
  );
  refused('--fault after the last step', ['--config', microJson, '--fault', '3:nan-grad'], /--fault at step 3 is after the last step \(2\)/);

  test('keel bench --batch 100000000 and nLayer 100000', () => {
    assertUserError(keel(['bench', { batch: 100000000 }]), new RegExp(memory.source + '.*use --batch \\d+ or less'));
    assertUserError(keel(['bench', { config: path.join(root, 'deep.json') }]), memory);
  });
});

describe('odd --out paths: one line, exit 2, never a stack trace or a spin, nothing made', () => {
  const refusedOut = (name: string, out: () => string, why: RegExp) =>
    test(name, () => {
      const t0 = Date.now();
      assertUserError(keel(['train', { config: microJson }, ...quick, { out: out() }]), why);
      assert.ok(Date.now() - t0 < 20_000, 'took too long (a spin?)');
    });

  let file = '';
  before(() => {
    file = path.join(fresh('file'), 'a-file');
    fs.mkdirSync(path.dirname(file));
    fs.writeFileSync(file, 'not a directory\n');
  });
  refusedOut('under a regular file', () => path.join(file, 'run'), /a-file is not a directory/);
  refusedOut('a regular file itself', () => file, /a-file exists and is not a directory/);
  // mkdirSync('/proc/…', { recursive: true }) never returns on Node 20: this would hang.
  refusedOut('under /proc', () => '/proc/keel-test/run', /is on procfs, a kernel file system/);
  refusedOut('under /proc/self', () => '/proc/self/keel-test/run', /is on procfs, a kernel file system/);
  refusedOut('under /sys', () => '/sys/keel-test/run', /is on sysfs, a kernel file system/);

  test('on a read-only file system (a read-only tmpfs in a private mount namespace)', (t) => {
    const mnt = fresh('ro');
    fs.mkdirSync(mnt);
    // unshare gives an unprivileged user (or root in a container) its own mount namespace, where
    // a read-only tmpfs is a real EROFS, not a permission check root would bypass.
    const probe = spawnSync(
      'unshare',
      ['--user', '--map-root-user', '--mount', 'sh', '-c', 'mount -t tmpfs -o ro none "$1" && ! touch "$1/x" 2>/dev/null', 'sh', mnt],
      { encoding: 'utf8' },
    );
    if (probe.error || probe.status !== 0) {
      t.skip(`cannot make a read-only file system here (unshare/mount: ${probe.error?.message ?? probe.stderr.trim()})`);
      return;
    }
    const script = 'mount -t tmpfs -o ro none "$1" && shift && exec "$@"';
    const r = spawnSync(
      'unshare',
      [
        '--user',
        '--map-root-user',
        '--mount',
        'sh',
        '-c',
        script,
        'sh',
        mnt,
        process.execPath,
        KEEL,
        'train',
        '--config',
        microJson,
        ...quick,
        '--out',
        path.join(mnt, 'runs', 'a'),
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assertUserError({ status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr }, /cannot write in .*: the file system is read-only/);
  });

  test('in a directory without write permission (non-root only)', (t) => {
    if (process.getuid?.() === 0) {
      t.skip('running as root, which writes through chmod 0555: the read-only tmpfs test covers this');
      return;
    }
    const dir = fresh('no-write');
    fs.mkdirSync(dir, { mode: 0o555 });
    try {
      assertUserError(keel(['train', { config: microJson }, ...quick, { out: path.join(dir, 'run') }]), /cannot write in .*: permission denied/);
    } finally {
      fs.chmodSync(dir, 0o755);
    }
  });

  test("the experiments' --out under /proc: one line, no spin", () => {
    for (const e of ['spikes', 'lawa']) assertUserError(keel(['experiment', e, { out: `/proc/keel-test/${e}` }]), /is on procfs, a kernel file system/);
  });

  test('keel analyze /dev/zero (a file that never ends) is refused, as train --data is', () => {
    const t0 = Date.now();
    assertUserError(keel(['analyze', '/dev/zero']), /\/dev\/zero is neither a regular file nor a directory/);
    assert.ok(Date.now() - t0 < 20_000);
  });
});

describe('silent surprises, said out loud', () => {
  test('an 80-step run with --on-spike rollback and a fault at step 60 rolls back (the 128-step window used to leave it unprotected)', async () => {
    const out = fresh('short');
    const lines: string[] = [];
    const progress = { update() {}, log: (l: string) => lines.push(l), done() {} };
    const opts = trainOptions(out, corpus, { steps: 80, batch: 2, onSpike: 'rollback', faults: ['60:grad-scale:1000'] });
    const summary = await train(opts, { progress });
    const m = metrics(out);
    assert.ok(
      m.some((r) => r.event === 'spike' && r.step === 60 && r.metric === 'grad_norm'),
      'no spike at step 60',
    );
    assert.ok(
      m.some((r) => r.event === 'rollback' && r.step === 60),
      'no rollback at step 60',
    );
    assert.ok(summary.rollbacks >= 1);
    // Said at start: the detectors warm up on 20 steps, not the 128 of the window.
    assert.ok(
      lines.some((l) => /spike protection \(--on-spike rollback\) arms after step 20: the 128-step --spike-window is longer than this 80-step run/.test(l)),
      lines.join('\n'),
    );
  });

  test('the warm-up window: shorter only where the full window does not fit in the first quarter of the run', () => {
    assert.equal(spikeWarmup(128, 1400), null, 'the default run is unchanged');
    assert.equal(spikeWarmup(128, 512), null);
    assert.equal(spikeWarmup(128, 80), 20);
    assert.equal(spikeWarmup(128, 10), 16, 'never fewer than 16 values');
    assert.equal(spikeWarmup(8, 10), null, 'never longer than the window');
    const note = (steps: number) => new Controller({ on_spike: 'skip' }, { steps, batch: 2, micro_batch: 2, seq_len: 16, params: 100, eps: 0 });
    assert.equal(note(80).detectorWarmup, 20);
    assert.equal(note(1400).detectorWarmup, 128);
  });

  test('a detector with a warm-up tests from then on, and its state round-trips through JSON bit for bit', () => {
    const a = new SpikeDetector('loss', { window: 64, warmup: 16 });
    let fired: number | null = null;
    for (let i = 0; i < 40; i++) {
      const v = i === 30 ? 50 : 3 + 0.01 * Math.sin(i);
      if (i === 16) assert.equal(a.active, true, 'active once 16 values are in');
      if (a.observe(i, v) && fired === null) fired = i;
    }
    assert.equal(fired, 30);
    const b = SpikeDetector.fromJSON(JSON.parse(JSON.stringify(a.toJSON())));
    for (let i = 40; i < 200; i++) {
      const v = 3 + 0.01 * Math.cos(i);
      assert.deepEqual(b.observe(i, v), a.observe(i, v));
    }
    assert.deepEqual(b.toJSON(), a.toJSON());
    assert.throws(() => new SpikeDetector('loss', { window: 8, warmup: 9 }), /warm-up must be an integer in \[2, window 8\]/);
  });

  test("during a warm-up only the z test runs: the jump test's EMA waits for the full window", () => {
    const d = new SpikeDetector('loss', { window: 64, warmup: 16, jump: 0.5 });
    // 16 values alternating 1 and 3 (σ ≈ 1): their EMA, started at 1, is still ≈ 1.3.
    for (let i = 0; i < 16; i++) d.observe(i, i % 2 === 0 ? 1 : 3);
    assert.equal(d.active, true);
    assert.equal(d.observe(16, 3.2), null, '3.2 is > 1.5 × the EMA but well within 6σ: no jump flag yet');
    const full = new SpikeDetector('loss', { window: 16, jump: 0.5 });
    for (let i = 0; i < 16; i++) full.observe(i, i % 2 === 0 ? 1 : 3);
    assert.equal(full.observe(16, 3.2)?.test, 'jump', 'with a full window the same value is a jump');
  });

  test('a controller with a warm-up: its JSON state round-trips and it then decides exactly as the original', () => {
    const facts = { steps: 80, batch: 2, micro_batch: 2, seq_len: 16, params: 100, eps: 0 };
    const a = new Controller({ on_spike: 'skip' }, facts);
    const report = (step: number) => {
      const v = step === 60 ? 50 : 2 + 0.1 * Math.sin(step);
      return stepReport(step, { loss: v, grad_norm: v, tokens: step * 32, batch: 2 });
    };
    for (let n = 1; n <= 40; n++) a.report(report(n));
    const b = Controller.fromJSON(JSON.parse(JSON.stringify(a.toJSON())));
    for (let n = 41; n <= 80; n++) assert.deepEqual(b.report(report(n)), a.report(report(n)), `step ${n}`);
    assert.deepEqual(b.toJSON(), a.toJSON());
    assert.equal(a.spikes, 2, 'loss and grad norm flagged at step 60 (the 128-step window would not have been full)');
  });

  test('start: one line with parameters, tokens per step, data size and run directory; no noise-scale warning for the defaults', () => {
    const out = fresh('start');
    const r = keel(['train', { config: microJson }, ...quick, { out }]);
    assert.equal(r.status, 0, r.stderr);
    const bytes = fs.statSync(corpus).size;
    const line = r.stderr.split('\n').find((l) => l.includes('parameters'));
    assert.ok(line, r.stderr);
    const params = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).params as number;
    assert.match(
      line,
      new RegExp(
        `^${(params / 1e3).toFixed(1)} k parameters, ${2 * MICRO.blockSize} tokens per step, data ${(bytes / 1e3).toPrecision(3)} kB \\(.*corpus\\.txt\\), run ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`,
      ),
    );
    assert.doesNotMatch(r.stderr, /noise scale/i, 'the default --accum 1 run warned about the noise scale');
    assert.doesNotMatch(r.stderr, /spike protection/, 'no protection note when --on-spike is none');
  });

  test('a renamed newest checkpoint is reported, not silently skipped', async () => {
    const run = fresh('renamed');
    await train(trainOptions(run, corpus, { steps: 4, checkpointEvery: 2 }), { progress: false });
    fs.renameSync(path.join(run, 'checkpoints', 'step-4'), path.join(run, 'checkpoints', 'step-4.bak'));
    const r = keel(['eval', { checkpoint: run, data: corpus, tokens: 257, json: true }]);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /checkpoints\/step-4\.bak is not named step-<N> \(renamed\?\) and not used; .*: using checkpoints\/step-2$/);
    // With no usable checkpoint left, the refusal names the renamed one (still one line).
    fs.renameSync(path.join(run, 'checkpoints', 'step-2'), path.join(run, 'checkpoints', 'old-2'));
    assertUserError(
      keel(['eval', { checkpoint: run, data: corpus }]),
      /neither a checkpoint nor a run directory with checkpoints: checkpoints\/old-2, checkpoints\/step-4\.bak are not named step-<N>/,
    );
  });

  test('keel analyze: a flat series with a 1e-4 bump is no spike; NaN and Infinity are non-finite values, not spikes', () => {
    const dir = fresh('flat');
    fs.mkdirSync(dir);
    const file = path.join(dir, 'log.jsonl');
    const rows = Array.from({ length: 300 }, (_, step) => `{"step": ${step}, "loss": ${step === 200 ? 3.0001 : 3}}`);
    rows.push('{"step": 300, "loss": NaN}', '{"step": 301, "loss": Infinity}', '{"step": 302, "loss": 3}');
    fs.writeFileSync(file, rows.join('\n') + '\n');
    const j = keel(['analyze', file, '--json']);
    assert.equal(j.status, 0, j.stderr);
    const out = JSON.parse(j.stdout);
    assert.deepEqual(out.spikes, []);
    assert.deepEqual(out.nonfinite, { count: 2, steps: [300, 301] });
    assert.equal(out.points, 303);
    // Without the minimum rise, σ's floor makes the bump a ~33,000σ spike: the test can fail.
    const raw = JSON.parse(keel(['analyze', file, { json: true, minRise: 0 }]).stdout);
    assert.equal(raw.spikes.length, 1);
    assert.ok(raw.spikes[0].height_sigma > 10_000);
    const text = keel(['analyze', file]);
    assert.match(text.stdout, /2 non-finite values \(NaN or ±Infinity\) at steps 300, 301\n/);
    assert.match(text.stdout, /no spikes/);
  });

  test('the progress bar on a terminal that reports zero columns falls back to plain lines', () => {
    for (const columns of [0, 5]) {
      let written = '';
      const stream: ProgressStream = { isTTY: true, columns, write: (s: string) => (written += s) };
      const p = createProgress({ total: 10, label: 'train', stream, now: () => 0 });
      for (let s = 1; s <= 10; s++) p.update(s, { loss: 2 });
      p.done();
      assert.doesNotMatch(written, /\r|\x1b/, `columns ${columns}: escape codes`);
      assert.match(written, /^train 1\/10 \(10%\) {2}loss 2/m);
    }
    // Narrowed to 0 columns mid-run: the status line is ended, then plain lines follow.
    let resized = '';
    const narrowing: ProgressStream = { isTTY: true, columns: 80, write: (s: string) => (resized += s) };
    const q = createProgress({ total: 10, label: 'train', stream: narrowing, now: () => 0 });
    q.update(1);
    narrowing.columns = 0;
    const mark = resized.length;
    for (let s = 2; s <= 10; s++) q.update(s);
    q.done();
    assert.doesNotMatch(resized.slice(mark), /\r|\x1b/, 'escape codes after the terminal narrowed');
    assert.match(resized.slice(mark), /^train 10\/10 \(100%\)/m);
    let tty = '';
    createProgress({ total: 10, stream: { isTTY: true, columns: 80, write: (s: string) => (tty += s) }, now: () => 0 }).update(1);
    assert.match(tty, /\r/, 'a normal terminal still gets the redrawn bar');
  });
});

describe('memory cgroups: a container or job limit is the memory there is, not the host MemAvailable', () => {
  const MB = 2 ** 20;
  /** A cgroup hierarchy under a temporary "mount": per group (its path below the root) limit and usage in MB (or a limit as written) and memory.stat. */
  const tree = (v: 'v1' | 'v2', groups: Record<string, [limit: number | string, usage: number, stat?: string]>) => {
    const mount = fresh('cgroup');
    const [limitFile, usageFile] = v === 'v2' ? ['memory.max', 'memory.current'] : ['memory.limit_in_bytes', 'memory.usage_in_bytes'];
    for (const [rel, [limit, usage, stat]] of Object.entries(groups)) {
      const dir = path.join(mount, v === 'v1' ? 'memory' : '', rel);
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, limitFile), `${typeof limit === 'number' ? limit * MB : limit}\n`);
      fs.writeFileSync(path.join(dir, usageFile), `${usage * MB}\n`);
      if (stat) fs.writeFileSync(path.join(dir, 'memory.stat'), stat);
    }
    return mount;
  };
  const self = (text: string) => writeCorpus(fresh('proc'), text, 'cgroup');

  test('v2: the tightest limit on the path (a parent can be tighter), inactive page cache counted as free, "max" is none', () => {
    const stat = `anon ${200 * MB}\ninactive_file ${50 * MB}\nactive_file 0\n`;
    const mount = tree('v2', { '': ['max', 900], job: [1024, 300, stat], 'job/step': [4096, 100] });
    const room = cgroupRoom(self('0::/job/step\n'), mount);
    assert.equal(room?.bytes, (1024 - 300 + 50) * MB);
    assert.match(room!.source, /^cgroup memory limit 1\.07 GB, 262 MB in use$/);
    assert.equal(cgroupRoom(self('0::/\n'), mount), null, 'the root has no limit');
  });

  test('v1: the memory controller line, limit_in_bytes with 2^63 − 4096 as none; nothing readable is null', () => {
    const mount = tree('v1', { '': ['9223372036854771712', 5000], 'slurm/job_1': [512, 112, `cache ${80 * MB}\ntotal_inactive_file ${12 * MB}\n`] });
    assert.equal(cgroupRoom(self('12:pids:/slurm\n4:memory:/slurm/job_1\n1:name=systemd:/\n'), mount)?.bytes, (512 - 112 + 12) * MB);
    assert.equal(cgroupRoom(self('4:memory:/\n'), mount), null);
    assert.equal(cgroupRoom(path.join(root, 'no-such-file'), mount), null);
    assert.equal(cgroupRoom(self('0::/job\n'), fresh('empty')), null);
  });

  // The real thing: `keel train` inside a memory cgroup of 256 MB (root and a writable cgroup mount only).
  const made = makeCgroup(256 * MB);
  test('keel train in a 256 MB cgroup: refused with the cgroup figure', { skip: made.skip }, () => {
    try {
      const out = fresh('cg-run');
      const args = ['train', '--config', microJson, ...quick, '--batch', '20000', '--out', out];
      const r = spawnSync('sh', ['-c', `echo $$ > "${made.procs}" && exec "$0" "$@"`, process.execPath, KEEL, ...args], { encoding: 'utf8', timeout: 60_000 });
      assertUserError(
        { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr },
        /the machine has [\d.]+ MB \(cgroup memory limit 268 MB, [\d.]+ [kM]B in use\): use --batch \d+ or less/,
      );
      assert.equal(fs.existsSync(out), false);
    } finally {
      made.remove?.();
    }
  });
});

/** A fresh memory cgroup with `limit` bytes (v1 or v2); skip says why where none can be made. */
function makeCgroup(limit: number): { skip: string | false; procs?: string; remove?: () => void } {
  const v1 = '/sys/fs/cgroup/memory';
  const v2 = '/sys/fs/cgroup';
  const isV2 = fs.existsSync(path.join(v2, 'cgroup.controllers'));
  const base = isV2 ? v2 : v1;
  const dir = path.join(base, `keel-test-${process.pid}`);
  try {
    // v2: only where the memory controller is already on for children (the test changes nothing else).
    if (isV2 && !fs.readFileSync(path.join(v2, 'cgroup.subtree_control'), 'utf8').includes('memory'))
      throw new Error('memory is not in cgroup.subtree_control');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, isV2 ? 'memory.max' : 'memory.limit_in_bytes'), String(limit));
  } catch (e) {
    if (fs.existsSync(dir)) fs.rmdirSync(dir);
    const why = `no memory cgroup could be made under ${base} (${(e as Error).message.split('\n')[0]})`;
    console.log(`# skipped: ${why}`);
    return { skip: why };
  }
  return { skip: false, procs: path.join(dir, 'cgroup.procs'), remove: () => fs.rmdirSync(dir) };
}
