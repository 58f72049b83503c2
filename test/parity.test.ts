// PyTorch parity: a Keel checkpoint loaded into a PyTorch GPT-2 with nanoGPT's module names
// (scripts/torch_parity.py, run once with Debian's python3-torch) gives the loss recorded in
// expected.json; `keel eval` on the same file and windows must agree to 1e-4 relative.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

const dir = 'test/fixtures/parity';

test('keel eval matches PyTorch (nanoGPT names) on a committed checkpoint', () => {
  const expected = JSON.parse(fs.readFileSync(`${dir}/expected.json`, 'utf8'));
  const r = spawnSync(
    process.execPath,
    ['bin/keel.js', 'eval', '--checkpoint', `${dir}/model.safetensors`, '--data', `${dir}/text.txt`, '--tokens', '4097', '--json'],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(got.tokens, expected.tokens);
  assert.ok(Math.abs(got.loss - expected.loss) / expected.loss < 1e-4, `keel ${got.loss} vs torch ${expected.loss}`);
  // A trained checkpoint, not a fresh one: the loss is far below ln 256.
  assert.ok(expected.loss < 4.5);
});
