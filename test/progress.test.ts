import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createProgress, formatDuration, formatNumber, renderBar, type ProgressStream } from '../src/util/progress.ts';

class FakeStream implements ProgressStream {
  out = '';
  writes = 0;
  constructor(
    readonly isTTY = false,
    public columns?: number,
  ) {}
  write(chunk: string) {
    this.out += chunk;
    this.writes++;
    return true;
  }
}

/** A clock the test advances by hand. */
function fakeClock() {
  const clock = { t: 1_000, now: () => clock.t };
  return clock;
}

/** Each value formats to its text. */
function assertFormats(format: (x: number) => string, cases: [number, string][]): void {
  for (const [x, want] of cases) assert.equal(format(x), want, `${format.name}(${x})`);
}

test('formatNumber: compact suffixes, significant digits, non-finite', () => {
  assertFormats(formatNumber, [
    [0, '0'],
    [512, '512'],
    [2.34567, '2.346'],
    [12_345, '12.3k'],
    [999_950, '1M'],
    [999.96, '1k'],
    [1_234_567, '1.23M'],
    [-4500, '-4.5k'],
    [3e-4, '3e-4'],
    [1.234e-5, '1.23e-5'],
    [NaN, 'nan'],
    [-Infinity, '-inf'],
  ]);
});

test('formatDuration: s, m s, h m, d h; unknown is --', () => {
  assertFormats(formatDuration, [
    [0.5, '0.5s'],
    [42, '42s'],
    [83, '1m23s'],
    [7505, '2h05m'],
    [90_000, '1d01h'],
    [NaN, '--'],
    [Infinity, '--'],
  ]);
});

test('renderBar fills in proportion and clamps', () => {
  assert.equal(renderBar(0.5, 10), '█████░░░░░');
  assert.equal(renderBar(2, 4), '████');
  assert.equal(renderBar(NaN, 3), '░░░');
});

test('non-TTY: plain lines, no carriage returns, rate-limited', () => {
  const s = new FakeStream(false);
  const clock = fakeClock();
  const p = createProgress({ total: 1000, label: 'train', stream: s, now: clock.now });
  for (let step = 1; step <= 1000; step++) {
    clock.t += 1;
    p.update(step, { loss: 3 - step / 1000, 'tok/s': 12_345 });
  }
  p.done();
  assert.ok(!s.out.includes('\r') && !s.out.includes('\x1b'), 'no control characters');
  const lines = s.out.trimEnd().split('\n');
  assert.ok(lines.length <= 12, `${lines.length} lines for 1000 updates`);
  assert.match(lines[0], /^train 1\/1000 \(0%\)/);
  assert.match(lines.at(-1)!, /^train 1000\/1000 \(100%\)  loss 2  tok\/s 12\.3k  elapsed 1s  eta 0s$/);
  assert.equal(s.out.match(/1000\/1000/g)!.length, 1, 'done() does not repeat the last line');
});

test('non-TTY: a heartbeat line after a quiet interval', () => {
  const s = new FakeStream(false);
  const clock = fakeClock();
  const p = createProgress({ total: 1_000_000, stream: s, now: clock.now, everyMs: 10_000 });
  for (let step = 1; step <= 20; step++) {
    clock.t += 3_000; // 60 s in all, far below 10% of the total
    p.update(step);
  }
  const lines = s.out.trimEnd().split('\n');
  assert.equal(lines.length, 5, s.out); // steps 1, 5, 9, 13, 17: a line once 10 s have passed
  p.log('val loss 2.1');
  assert.ok(s.out.endsWith('\nval loss 2.1\n'));
});

test('TTY: one line redrawn in place, throttled, with ETA; log lines go above it', () => {
  const s = new FakeStream(true, 100);
  const clock = fakeClock();
  const p = createProgress({ total: 100, label: 'train', stream: s, now: clock.now, start: 0 });
  for (let step = 1; step <= 10; step++) {
    clock.t += 1000;
    p.update(step, { loss: 2.345, 'tok/s': 12_300 });
  }
  const frames = s.out.split('\r').filter(Boolean);
  assert.equal(frames.length, 10);
  const last = frames.at(-1)!;
  assert.ok(last.endsWith('\x1b[K'));
  assert.match(last, /^train \[█{3}░+\] 10% 10\/100  loss 2\.345  tok\/s 12\.3k  10s eta 1m30s\x1b\[K$/);
  assert.ok(last.replace('\x1b[K', '').length <= 99, 'fits the terminal');
  assert.ok(!s.out.includes('\n'), 'no newline while running');

  // 1000 updates within 50 ms: at most one redraw per 100 ms.
  const before = s.writes;
  for (let i = 0; i < 1000; i++) {
    clock.t += 0.05;
    p.update(10, { loss: 2.3 });
  }
  assert.ok(s.writes - before <= 1, `${s.writes - before} redraws`);

  p.log('step 10: val loss 2.2');
  assert.ok(s.out.includes('\r\x1b[Kstep 10: val loss 2.2\n\rtrain ['), 'cleared, printed, redrawn');
  p.update(100);
  p.done();
  p.done();
  assert.ok(s.out.endsWith('\rtrain [' + '█'.repeat(30) + '] 100% 100/100  10s eta 0s\x1b[K\n'), JSON.stringify(s.out.slice(-120)));
  assert.equal(s.out.match(/100\/100/g)!.length, 1, 'done() does not repeat a frame already drawn');
  assert.equal(s.out.match(/\n/g)!.length, 2, 'the log line and the final newline');
});

test('TTY: narrow terminals drop the bar and truncate instead of wrapping', () => {
  const s = new FakeStream(true, 30);
  const clock = fakeClock();
  const p = createProgress({ total: 50, label: 'averaging checkpoints', stream: s, now: clock.now });
  clock.t += 500;
  p.update(5, { loss: 1.5 });
  const line = s.out.replace('\r', '').replace('\x1b[K', '');
  assert.ok(line.length <= 29, line);
  assert.ok(!line.includes('█'));
});

test('TTY: a resumed job counts only the steps done now', () => {
  const s = new FakeStream(true, 120);
  const clock = fakeClock();
  const p = createProgress({ total: 1000, stream: s, now: clock.now });
  clock.t += 2000;
  p.update(501); // resumed at 500: one step in 2 s
  assert.match(s.out, /eta 16m38s/);
});

test('json: one object per line with step, total, eta and fields', () => {
  const s = new FakeStream(false);
  const clock = fakeClock();
  const p = createProgress({ total: 10, label: 'eval', stream: s, now: clock.now, json: true, start: 0 });
  for (let step = 1; step <= 10; step++) {
    clock.t += 100;
    p.update(step, { loss: 1.25 });
  }
  p.log('hello');
  p.done();
  const records = s.out
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.deepEqual(records[0], { label: 'eval', step: 1, total: 10, elapsed_s: 0.1, eta_s: 0.9, fields: { loss: 1.25 } });
  assert.deepEqual(records.at(-2), { label: 'eval', log: 'hello' });
  assert.equal(records.at(-1).done, true);
  assert.equal(records.at(-1).step, 10);
});
