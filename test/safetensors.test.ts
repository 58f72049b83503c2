import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../src/errors.ts';
import {
  encodeSafetensors,
  openSafetensors,
  parseHeader,
  readSafetensors,
  SafetensorsError,
  writeSafetensors,
  type DType,
  type SafetensorsErrorCode,
} from '../src/io/safetensors.ts';
import { halfBitsToFloatBits } from '../src/util/float16.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-st-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

/** A file by hand: u64 LE header length, the header text exactly as given (no padding), data. */
function craft(header: string | object | Uint8Array, data: Uint8Array | number = 0, lengthOverride?: bigint): Buffer {
  const json = header instanceof Uint8Array ? Buffer.from(header) : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  return Buffer.concat([len, json, typeof data === 'number' ? Buffer.alloc(data) : data]);
}

function writeTmp(name: string, bytes: Uint8Array): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, bytes);
  return p;
}

function bytesOf(a: ArrayBufferView): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Asserts a SafetensorsError with `code` whose message contains every `words`. */
function throwsCode(f: () => unknown, code: SafetensorsErrorCode, ...words: string[]): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${e}`);
    assert.ok(e instanceof UserError);
    assert.equal(e.code, code, e.message);
    for (const w of words) assert.ok(e.message.includes(w), `"${e.message}" should mention ${w}`);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  });
}

const parse = (b: Buffer) => parseHeader(b, b.length);
const entry = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });

describe('safetensors encoding', () => {
  test('matches the bytes the reference (Python) writer produces for a 2-tensor file', () => {
    // safetensors.numpy.save({"a": [1, -2.5], "b": [[0.5], [3]]} (float32), metadata={"format": "pt"}):
    // compact JSON, metadata first, tensors in name order; 141 JSON bytes + 3 spaces = 144 = 0x90.
    const json =
      '{"__metadata__":{"format":"pt"},' + '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' + '"b":{"dtype":"F32","shape":[2,1],"data_offsets":[8,16]}}';
    assert.equal(json.length, 141);
    const expected = Buffer.concat([
      Buffer.from('9000000000000000', 'hex'),
      Buffer.from(json + '   ', 'ascii'),
      Buffer.from('0000803f' + '000020c0', 'hex'), // 1.0, -2.5
      Buffer.from('0000003f' + '00004040', 'hex'), // 0.5, 3.0
    ]);
    const got = encodeSafetensors(
      [
        { name: 'a', shape: [2], data: new Float32Array([1, -2.5]) },
        { name: 'b', shape: [2, 1], data: new Float32Array([0.5, 3]) },
      ],
      { format: 'pt' },
    );
    assert.deepEqual(got, expected);
  });

  test('pads the header with spaces to a multiple of 8 and keeps the given order', () => {
    for (const name of ['x', 'xy', 'xyz', 'long_tensor_name_1']) {
      const b = encodeSafetensors([
        { name: 'z', shape: [1], data: new Float32Array([1]) },
        { name, shape: [1], data: new Float32Array([2]) },
      ]);
      const h = parse(b);
      assert.equal(h.headerSize % 8, 0);
      assert.match(b.subarray(8, 8 + h.headerSize).toString(), /^\{.*\} *$/);
      assert.deepEqual(
        h.tensors.map((t) => t.name),
        ['z', name],
      );
    }
  });

  test('rejects inconsistent input to the writer', () => {
    const d = new Float32Array(3);
    assert.throws(() => encodeSafetensors([{ name: 'a', shape: [2], data: d }]), /3/);
    assert.throws(
      () =>
        encodeSafetensors([
          { name: 'a', shape: [3], data: d },
          { name: 'a', shape: [3], data: d },
        ]),
      /twice/,
    );
    assert.throws(() => encodeSafetensors([{ name: '__metadata__', shape: [3], data: d }]));
    assert.throws(() => encodeSafetensors([{ name: 'a', shape: [-3], data: d }]));
  });
});

describe('safetensors round trip', () => {
  const special = new Float32Array([NaN, -0, Infinity, -Infinity, 1e-45, 3.4028234663852886e38, -1.5]);
  const tensors = [
    { name: 'transformer.wte.weight', shape: [3, 2], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
    { name: 'scalar', shape: [], data: new Float32Array([7]) }, // 0-d: one element
    { name: 'empty', shape: [0], data: new Float32Array(0) },
    { name: 'empty3d', shape: [3, 0, 2], data: new Float32Array(0) },
    { name: 'special', shape: [7], data: special },
    { name: '__proto__', shape: [1, 1, 1], data: new Float32Array([8]) },
    { name: 'ünïcode "quoted"\n', shape: [1], data: new Float32Array([9]) },
  ];
  const metadata = { format: 'pt', config: '{"n_layer":4}', ключ: 'значение "x"\n', __proto__x: 'y' };

  test('writeSafetensors → readSafetensors keeps names, shapes, bits, order and metadata', () => {
    const file = path.join(tmp, 'round.safetensors');
    writeSafetensors(file, tensors, metadata);
    assert.deepEqual(fs.readFileSync(file), encodeSafetensors(tensors, metadata));
    const got = readSafetensors(file);
    assert.deepEqual(got.metadata, metadata);
    assert.deepEqual(
      got.infos.map((i) => i.name),
      tensors.map((t) => t.name),
    );
    for (const t of tensors) {
      const info = got.infos.find((i) => i.name === t.name)!;
      assert.equal(info.dtype, 'F32');
      assert.deepEqual(info.shape, t.shape);
      assert.deepEqual(bytesOf(got.tensors.get(t.name)!), bytesOf(t.data), t.name);
    }
  });

  test('openSafetensors reads tensors one at a time', () => {
    const file = path.join(tmp, 'lazy.safetensors');
    writeSafetensors(file, tensors, metadata);
    const r = openSafetensors(file);
    try {
      assert.deepEqual(r.metadata, metadata);
      for (const t of [...tensors].reverse()) assert.deepEqual(bytesOf(r.read(t.name)), bytesOf(t.data));
      throwsCode(() => r.read('nope'), 'TensorNotFound', 'nope', file);
    } finally {
      r.close();
    }
    r.close(); // idempotent
    assert.throws(() => r.read('scalar'), /after close/);
  });

  test('writing subarray views writes only the view', () => {
    const flat = new Float32Array([0, 1, 2, 3, 4, 5]);
    const b = encodeSafetensors([{ name: 'mid', shape: [2], data: flat.subarray(2, 4) }]);
    const h = parse(b);
    assert.deepEqual(bytesOf(b.subarray(8 + h.headerSize)), bytesOf(new Float32Array([2, 3])));
  });

  test('no metadata means no __metadata__ key', () => {
    const b = encodeSafetensors([{ name: 'a', shape: [1], data: new Float32Array([1]) }]);
    assert.ok(!b.toString().includes('__metadata__'));
    assert.deepEqual(parse(b).metadata, {});
  });
});

describe('safetensors dtypes', () => {
  /** One tensor file with raw `data` of `dtype`. */
  function oneTensor(dtype: DType, shape: number[], data: Uint8Array): string {
    return writeTmp(`${dtype}.safetensors`, craft({ t: entry(dtype, shape, [0, data.length]) }, data));
  }

  test('F16, including subnormals, infinities, NaN and -0', () => {
    const halves = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x8000, 0x3555]);
    const want = [1, -2, 65504, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, Infinity, -Infinity, -0, 0.333251953125];
    const got = readSafetensors(oneTensor('F16', [2, 5], bytesOf(halves))).tensors.get('t')!;
    assert.deepEqual(Array.from(got), want);
    assert.ok(Object.is(got[8], -0));
    const nan = readSafetensors(oneTensor('F16', [1], bytesOf(new Uint16Array([0x7e00])))).tensors.get('t')!;
    assert.ok(Number.isNaN(nan[0]));
  });

  test('F16 → F32 is exact for all 65536 bit patterns', () => {
    const f = new Float32Array(1);
    const bits = new Uint32Array(f.buffer);
    for (let h = 0; h < 65536; h++) {
      const s = h >> 15 ? -1 : 1;
      const e = (h >> 10) & 31;
      const m = h & 1023;
      const want = e === 31 ? (m ? NaN : s * Infinity) : e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
      bits[0] = halfBitsToFloatBits(h);
      if (Number.isNaN(want)) assert.ok(Number.isNaN(f[0]), `0x${h.toString(16)}`);
      else assert.ok(Object.is(f[0], want), `0x${h.toString(16)}: ${f[0]} vs ${want}`);
    }
  });

  test('BF16 is the top half of a float32', () => {
    const b = new Uint16Array([0x3f80, 0xc040, 0x7f80, 0x0001, 0x4049]);
    const got = readSafetensors(oneTensor('BF16', [5], bytesOf(b))).tensors.get('t')!;
    const want = new Float32Array(new Uint32Array(Array.from(b, (x) => x << 16)).buffer);
    assert.deepEqual(bytesOf(got), bytesOf(want));
    assert.deepEqual(Array.from(got.subarray(0, 3)), [1, -3, Infinity]);
  });

  test('F64 rounds to float32', () => {
    const d = new Float64Array([1.5, -2.25, 1e-300, 3.5e39, 0.1]);
    const got = readSafetensors(oneTensor('F64', [5], bytesOf(d))).tensors.get('t')!;
    assert.deepEqual(Array.from(got), [1.5, -2.25, 0, Infinity, Math.fround(0.1)]);
  });

  test('unaligned data is copied, whole-file and lazy', () => {
    // A 13-byte header puts the data at byte 21: no typed array can view it in place.
    const values = new Float32Array([1.25, -3, 1e30]);
    const header = JSON.stringify({ t: entry('F32', [3], [0, 12]) }) + ' '.repeat(3);
    const n = Buffer.byteLength(header);
    assert.equal((8 + n) % 4 !== 0, true);
    const file = writeTmp('unaligned.safetensors', craft(header, bytesOf(values)));
    assert.deepEqual(readSafetensors(file).tensors.get('t'), values);
    const r = openSafetensors(file);
    assert.deepEqual(r.read('t'), values);
    r.close();
    const h = new Uint16Array([0x3c00, 0x4000]); // also F16/BF16 at an odd offset
    const odd = craft(JSON.stringify({ t: entry('F16', [2], [0, 4]) }) + ' ', bytesOf(h));
    assert.equal((8 + odd.readUInt32LE(0)) % 2, 1);
    assert.deepEqual(Array.from(readSafetensors(writeTmp('odd16.safetensors', odd)).tensors.get('t')!), [1, 2]);
  });

  test('header order does not matter: tensors are sorted by offset', () => {
    const data = bytesOf(new Float32Array([1, 2, 3]));
    const b = craft({ b: entry('F32', [2], [4, 12]), __metadata__: { k: 'v' }, a: entry('F32', [1], [0, 4]) }, data);
    const h = parse(b);
    assert.deepEqual(
      h.tensors.map((t) => [t.name, t.begin, t.end]),
      [
        ['a', 0, 4],
        ['b', 4, 12],
      ],
    );
    assert.deepEqual(h.metadata, { k: 'v' });
  });
});

describe('safetensors validation', () => {
  const ok = { w: entry('F32', [2], [0, 8]) };

  test('HeaderTooSmall', () => {
    throwsCode(() => parse(Buffer.from([1, 2, 3])), 'HeaderTooSmall');
    throwsCode(() => parse(craft('', 0)), 'HeaderTooSmall');
  });

  test('HeaderTooLarge', () => {
    throwsCode(() => parse(craft('{}', 0, 100_000_001n)), 'HeaderTooLarge', '100000001');
    throwsCode(() => parse(craft('{}', 0, 0xffffffffffffffffn)), 'HeaderTooLarge');
  });

  test('InvalidHeaderLength: the header runs past the end of the file', () => {
    throwsCode(() => parse(craft('{}', 0, 50n)), 'InvalidHeaderLength', '50');
  });

  test('InvalidJson', () => {
    throwsCode(() => parse(craft('{"w":', 0)), 'InvalidJson');
    throwsCode(() => parse(craft('{"w":{"dtype":"F32",}}', 0)), 'InvalidJson');
    throwsCode(() => parse(craft('{"w\\q":1}', 0)), 'InvalidJson'); // bad escape
    throwsCode(() => parse(craft('{} x', 0)), 'InvalidJson');
    throwsCode(() => parse(craft('{"a":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}', 0)), 'InvalidJson', 'nesting');
    const badUtf8 = Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]); // {"<0xff>":1}
    throwsCode(() => parse(craft(badUtf8)), 'InvalidJson', 'UTF-8');
  });

  test('InvalidHeaderStart', () => {
    throwsCode(() => parse(craft('[1, 2]', 0)), 'InvalidHeaderStart');
    throwsCode(() => parse(craft('  {}', 0)), 'InvalidHeaderStart');
  });

  test('DuplicateKey, at the top level and inside an entry', () => {
    const dup = '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
    throwsCode(() => parse(craft(dup, 4)), 'DuplicateKey', '"w"');
    const inner = '{"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}';
    throwsCode(() => parse(craft(inner, 4)), 'DuplicateKey', 'dtype');
  });

  test('InvalidTensorInfo', () => {
    throwsCode(() => parse(craft({ w: 3 }, 0)), 'InvalidTensorInfo', '"w"');
  });

  test('InvalidDtype: unsupported, unknown or missing', () => {
    throwsCode(() => parse(craft({ w: entry('I32', [2], [0, 8]) }, 8)), 'InvalidDtype', '"w"', 'I32', 'not supported');
    throwsCode(() => parse(craft({ w: entry('F17', [2], [0, 8]) }, 8)), 'InvalidDtype', '"w"', 'F17');
    throwsCode(() => parse(craft({ w: { shape: [2], data_offsets: [0, 8] } }, 8)), 'InvalidDtype', '"w"');
  });

  test('InvalidShape', () => {
    for (const shape of [[-1], [1.5], 'x', [2 ** 53], null, [[2]]]) {
      throwsCode(() => parse(craft({ w: entry('F32', shape, [0, 8]) }, 8)), 'InvalidShape', '"w"');
    }
    throwsCode(() => parse(craft({ w: entry('F32', [2 ** 30, 2 ** 30], [0, 8]) }, 8)), 'InvalidShape', 'too large');
  });

  test('InvalidOffset', () => {
    for (const off of [[8, 0], [0], [0, 8, 9], [-8, 0], ['0', '8'], null]) {
      throwsCode(() => parse(craft({ w: entry('F32', [2], off) }, 8)), 'InvalidOffset', '"w"');
    }
  });

  test('TensorSizeMismatch', () => {
    throwsCode(() => parse(craft({ w: entry('F32', [3], [0, 8]) }, 8)), 'TensorSizeMismatch', '"w"', '12', '8');
    throwsCode(() => parse(craft({ w: entry('F16', [2], [0, 8]) }, 8)), 'TensorSizeMismatch', '"w"');
  });

  test('HoleOrOverlap', () => {
    const hole = { a: entry('F32', [1], [0, 4]), b: entry('F32', [1], [8, 12]) };
    throwsCode(() => parse(craft(hole, 12)), 'HoleOrOverlap', '"b"', 'hole');
    const overlap = { a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [4, 12]) };
    throwsCode(() => parse(craft(overlap, 12)), 'HoleOrOverlap', '"b"', 'overlaps');
    throwsCode(() => parse(craft({ a: entry('F32', [1], [4, 8]) }, 8)), 'HoleOrOverlap', '"a"');
  });

  test('FileSizeMismatch: truncated data or trailing bytes', () => {
    throwsCode(() => parse(craft(ok, 7)), 'FileSizeMismatch', 'truncated');
    throwsCode(() => parse(craft(ok, 9)), 'FileSizeMismatch', 'trailing');
  });

  test('InvalidMetadata', () => {
    throwsCode(() => parse(craft({ __metadata__: { a: 1 }, ...ok }, 8)), 'InvalidMetadata', 'a');
    throwsCode(() => parse(craft({ __metadata__: 'x', ...ok }, 8)), 'InvalidMetadata');
    throwsCode(() => parse(craft({ __metadata__: ['x'], ...ok }, 8)), 'InvalidMetadata');
    assert.deepEqual(parse(craft({ __metadata__: null, ...ok }, 8)).metadata, {});
  });

  test('an empty file set ({}) is valid', () => {
    assert.deepEqual(parse(craft('{}', 0)).tensors, []);
  });
});

describe('safetensors files the user got wrong', () => {
  const cases: Array<[string, Buffer | null, SafetensorsErrorCode]> = [
    ['missing.safetensors', null, 'FileError'],
    ['tiny.safetensors', Buffer.from('hey'), 'HeaderTooSmall'],
    ['garbage.safetensors', Buffer.from('this is certainly not a tensor file, just text'), 'HeaderTooLarge'],
    ['truncated.safetensors', encodeSafetensors([{ name: 'w', shape: [100], data: new Float32Array(100) }]).subarray(0, 300), 'FileSizeMismatch'],
    ['cut-header.safetensors', encodeSafetensors([{ name: 'w', shape: [1], data: new Float32Array(1) }]).subarray(0, 20), 'InvalidHeaderLength'],
  ];
  for (const [name, bytes, code] of cases) {
    test(`${name}: ${code}, naming the file, from both readers`, () => {
      const file = bytes ? writeTmp(name, bytes) : path.join(tmp, name);
      throwsCode(() => readSafetensors(file), code, file);
      throwsCode(() => openSafetensors(file), code, file);
    });
  }

  test('a directory is not a file', () => {
    throwsCode(() => readSafetensors(tmp), 'FileError', tmp, 'directory');
  });

  test('openSafetensors does not leak the descriptor on a bad file', { skip: !fs.existsSync('/proc/self/fd') }, () => {
    const file = writeTmp('bad-lazy.safetensors', craft('{"w":1}', 0));
    const before = fs.readdirSync('/proc/self/fd').length;
    for (let i = 0; i < 20; i++) assert.throws(() => openSafetensors(file), SafetensorsError);
    assert.ok(fs.readdirSync('/proc/self/fd').length <= before + 1);
  });
});
