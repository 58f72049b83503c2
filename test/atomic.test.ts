import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../src/errors.ts';
import { isTempName, writeDirAtomic, writeFileAtomic } from '../src/io/atomic.ts';
import { MetricsLog, parseMetricsLine, readMetrics } from '../src/io/metrics.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-atomic-'));
process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = () => {
  const d = path.join(root, `case-${n++}`);
  fs.mkdirSync(d);
  return d;
};

describe('writeFileAtomic', () => {
  test('writes and replaces a file, leaving no temporary files', () => {
    const dir = freshDir();
    const f = path.join(dir, 'config.json');
    writeFileAtomic(f, '{"a":1}\n');
    writeFileAtomic(f, new Uint8Array([104, 105]));
    assert.equal(fs.readFileSync(f, 'utf8'), 'hi');
    writeFileAtomic(f, [new Uint8Array([1, 2]), new Uint8Array(0), new Uint8Array([3])]);
    assert.deepEqual([...fs.readFileSync(f)], [1, 2, 3]);
    assert.deepEqual(fs.readdirSync(dir), ['config.json']);
  });

  test('a missing directory is a UserError naming the file, with nothing left behind', () => {
    const f = path.join(freshDir(), 'nope', 'x.json');
    assert.throws(
      () => writeFileAtomic(f, 'x'),
      (e: unknown) => e instanceof UserError && e.message.includes(f),
    );
    assert.deepEqual(fs.readdirSync(path.dirname(path.dirname(f))), []);
  });
});

describe('writeDirAtomic', () => {
  test('builds the directory under a temporary name, then renames it into place', () => {
    const parent = freshDir();
    const final = path.join(parent, 'checkpoints', 'step-10');
    let tmpSeen = '';
    writeDirAtomic(final, (tmp) => {
      tmpSeen = tmp;
      assert.equal(path.dirname(tmp), path.dirname(final)); // same file system: rename is atomic
      assert.ok(isTempName(path.basename(tmp)));
      assert.ok(!fs.existsSync(final), 'not visible while being written');
      fs.writeFileSync(path.join(tmp, 'model.safetensors'), 'm');
      fs.mkdirSync(path.join(tmp, 'sub'));
      fs.writeFileSync(path.join(tmp, 'sub', 'x'), 'x');
    });
    assert.ok(!fs.existsSync(tmpSeen));
    assert.equal(fs.readFileSync(path.join(final, 'model.safetensors'), 'utf8'), 'm');
    assert.equal(fs.readFileSync(path.join(final, 'sub', 'x'), 'utf8'), 'x');
    assert.deepEqual(fs.readdirSync(path.dirname(final)), ['step-10']);
  });

  test('when fill throws: the same error, no destination, no temporary directory', () => {
    const parent = freshDir();
    const final = path.join(parent, 'step-5');
    const boom = new Error('disk on fire');
    assert.throws(
      () =>
        writeDirAtomic(final, (tmp) => {
          fs.writeFileSync(path.join(tmp, 'model.safetensors'), 'half');
          throw boom;
        }),
      (e) => e === boom,
    );
    assert.deepEqual(fs.readdirSync(parent), []);
  });

  test('replaces an existing directory whole, and keeps it when fill throws', () => {
    const parent = freshDir();
    const final = path.join(parent, 'step-7');
    writeDirAtomic(final, (tmp) => {
      fs.writeFileSync(path.join(tmp, 'a'), 'old');
      fs.writeFileSync(path.join(tmp, 'stale'), 'old');
    });
    assert.throws(
      () =>
        writeDirAtomic(final, () => {
          throw new Error('x');
        }),
      /x/,
    );
    assert.deepEqual(fs.readdirSync(final).sort(), ['a', 'stale']);
    writeDirAtomic(final, (tmp) => fs.writeFileSync(path.join(tmp, 'a'), 'new'));
    assert.deepEqual(fs.readdirSync(final), ['a']);
    assert.equal(fs.readFileSync(path.join(final, 'a'), 'utf8'), 'new');
    assert.deepEqual(fs.readdirSync(parent), ['step-7']);
  });

  test('isTempName matches only the names this module makes', () => {
    assert.ok(isTempName('.step-5.tmp-123-0a1b2c3d'));
    assert.ok(isTempName('.step-5.old-123-0a1b2c3d'));
    assert.ok(!isTempName('step-5'));
    assert.ok(!isTempName('.hidden'));
  });
});

describe('metrics.jsonl', () => {
  test('one JSON object per line; non-finite numbers are written as null', () => {
    const f = path.join(freshDir(), 'run', 'metrics.jsonl');
    const log = new MetricsLog(f);
    log.write({ step: 1, loss: 5.5, lr: 1e-3 });
    log.write({ step: 2, loss: NaN, grad_norm: Infinity, x: -Infinity });
    log.write({ event: 'spike', step: 2 });
    log.close();
    log.close();
    const lines = fs.readFileSync(f, 'utf8').split('\n');
    assert.equal(lines.length, 4);
    assert.equal(lines[3], '');
    for (const l of lines.slice(0, 3)) JSON.parse(l);
    assert.deepEqual(readMetrics(f), [
      { step: 1, loss: 5.5, lr: 1e-3 },
      { step: 2, loss: null, grad_norm: null, x: null },
      { event: 'spike', step: 2 },
    ]);
    assert.throws(() => log.write({ step: 3 }), /after close/);
  });

  test('appends on reopen; a truncated line (crash mid-write) is skipped, before or after a resume', () => {
    const f = path.join(freshDir(), 'metrics.jsonl');
    const a = new MetricsLog(f);
    a.write({ step: 1 });
    a.close();
    fs.appendFileSync(f, '{"step": 2, "lo'); // the process died here
    assert.deepEqual(readMetrics(f), [{ step: 1 }]);
    const b = new MetricsLog(f); // resume: the fragment must not swallow the next record
    b.write({ step: 2, loss: 1 });
    b.close();
    assert.deepEqual(readMetrics(f), [{ step: 1 }, { step: 2, loss: 1 }]);
  });

  test("Python's bare NaN / Infinity read as null, like Keel's own spelling; strings are left alone", () => {
    const f = path.join(freshDir(), 'py.jsonl');
    fs.writeFileSync(f, '{"step": 1, "loss": NaN, "grad_norm": Infinity, "x": [-Infinity, 1]}\n{"step": 2, "note": "NaN, Infinity"}\n');
    assert.deepEqual(readMetrics(f), [
      { step: 1, loss: null, grad_norm: null, x: [null, 1] },
      { step: 2, note: 'NaN, Infinity' },
    ]);
    assert.deepEqual(parseMetricsLine('  {"step": 3, "loss": -Infinity}  '), { step: 3, loss: null });
    assert.equal(parseMetricsLine('{"step": 4, "loss": NaNa}'), null, 'not a bare token: a broken line');
  });

  test('skips blank lines and non-object lines; a missing file is a UserError', () => {
    const f = path.join(freshDir(), 'm.jsonl');
    fs.writeFileSync(f, '\n{"step":1}\n\n[1,2]\n3\n{"step":2}\n');
    assert.deepEqual(readMetrics(f), [{ step: 1 }, { step: 2 }]);
    assert.throws(
      () => readMetrics(path.join(root, 'none.jsonl')),
      (e: unknown) => e instanceof UserError && e.message.includes('none.jsonl'),
    );
  });
});
