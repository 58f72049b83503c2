// keel train --tensorboard DIR: the metrics as TensorBoard scalar event files, read back through
// Keel's own TFRecord/Event reader (src/io/logs.ts, which keel analyze uses), value for value.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { crc32c, readLog, readTfRecords } from '../src/io/logs.ts';
import { keel, metrics, MICRO, tempRoot, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('tensorboard');
const corpus = writeCorpus(path.join(root, 'data'));
const micro = writeJson(path.join(root, 'micro.json'), MICRO);

test('keel train --tensorboard: every logged scalar is in the event file at its step (float32), CRCs valid', () => {
  const out = fresh('run');
  const tb = fresh('tb');
  const r = keel(['train', { config: micro, data: corpus, batch: 2, steps: 30, evalEvery: 10, evalTokens: 257, out, tensorboard: tb }]);
  assert.equal(r.status, 0, r.stderr);
  const files = fs.readdirSync(tb);
  assert.equal(files.length, 1);
  assert.match(files[0], /^events\.out\.tfevents\.\d+\./);
  const bytes = fs.readFileSync(path.join(tb, files[0]));
  assert.ok(readTfRecords(bytes).length >= 31, 'a version record, then one per step and evaluation');
  const log = readLog(tb);
  assert.equal(log.format, 'tfevents');
  for (const name of ['loss', 'grad_norm', 'lr', 'val_loss']) assert.ok(log.metrics.includes(name), `${name} in ${log.metrics}`);
  const lines = metrics(out);
  for (const name of ['loss', 'val_loss']) {
    const want = lines.filter((l) => typeof l[name] === 'number').map((l) => [l.step, Math.fround(l[name] as number)]);
    assert.deepEqual(
      log.series(name).map((p) => [p.step, p.value]),
      want,
    );
  }
  // A resume appends to the same directory (a new file, as TensorBoard expects of a restart).
  const again = keel(['train', { resume: out, steps: 35 }]);
  assert.equal(again.status, 0, again.stderr);
  assert.ok(fs.readdirSync(tb).length >= 1);
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
});
