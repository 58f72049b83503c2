// Fuzzing the safetensors reader: mutations of a few valid files (bit flips, byte edits,
// truncation, extension, header-length changes, and structured edits of the header JSON:
// shifted, overlapping and holed offsets, wrong dtypes, huge or malformed shapes, duplicate
// keys, bad metadata) must end either in a valid parse or in a SafetensorsError with a named
// code and a one-line message: no other exception, no crash, no hang. Deterministic (Rng).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  DTYPE_SIZE,
  encodeFloats,
  encodeHeader,
  encodeSafetensors,
  MAX_HEADER_SIZE,
  openSafetensors,
  parseHeader,
  readSafetensors,
  SafetensorsError,
  type SafetensorsErrorCode,
  type SafetensorsHeader,
} from '../src/io/safetensors.ts';
import { Rng } from '../src/util/rng.ts';
import { tempRoot } from './helpers.ts';

const CODES: SafetensorsErrorCode[] = [
  'HeaderTooSmall',
  'HeaderTooLarge',
  'InvalidHeaderLength',
  'InvalidJson',
  'InvalidHeaderStart',
  'DuplicateKey',
  'InvalidTensorInfo',
  'InvalidDtype',
  'InvalidShape',
  'InvalidOffset',
  'TensorSizeMismatch',
  'HoleOrOverlap',
  'FileSizeMismatch',
  'InvalidMetadata',
];

// ---------------------------------------------------------------------------------------------
// Seeds: valid files of different shapes

function seeds(): Buffer[] {
  const rng = new Rng(7);
  const f32 = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
  const a = encodeSafetensors(
    [
      { name: 'wte', shape: [8, 4], data: f32(32) },
      { name: 'h.0.ln.bias', shape: [4], data: f32(4) },
      { name: 'scalar', shape: [], data: f32(1) },
    ],
    { format: 'pt', config: '{"n_layer":1}' },
  );
  const mixed = [
    { name: 'b', dtype: 'BF16' as const, shape: [3, 2], values: Float64Array.from({ length: 6 }, () => rng.normal()) },
    { name: 'h', dtype: 'F16' as const, shape: [5], values: Float64Array.from({ length: 5 }, () => rng.normal()) },
    { name: 'empty', dtype: 'F32' as const, shape: [0, 7], values: new Float64Array(0) },
    { name: 'd', dtype: 'F64' as const, shape: [2, 1, 1], values: Float64Array.from({ length: 2 }, () => rng.normal()) },
  ];
  const h = encodeHeader(mixed, { note: 'mixed' });
  const b = Buffer.concat([h.bytes, ...mixed.map((t) => encodeFloats(t.values, t.dtype))]);
  // Hand-written: unpadded, header order differs from data order, odd (unaligned) data start.
  const json = '{"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const c = Buffer.concat([len, Buffer.from(json), Buffer.from([0, 0x3c, 0, 0x40, 0, 0, 0x80, 0x3f])]);
  const empty = Buffer.concat([Buffer.from([2, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{}')]);
  return [a, b, c, empty];
}

// ---------------------------------------------------------------------------------------------
// Mutations

type Mutator = (b: Buffer, rng: Rng) => Buffer;

const U64 = (1n << 64n) - 1n;
/** The length prefix as a number (may exceed 2⁵³ and round: only for slicing). */
const headerLen = (b: Buffer) => (b.length >= 8 ? Number(b.readBigUInt64LE(0)) : 0);
const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)];

const INTERESTING_BYTES = [...'{}[]":,-.e0123456789 \\tnu'].map((c) => c.charCodeAt(0)).concat([0, 0xff, 0x80, 0xc3, 0x7f]);

const bitFlips: Mutator = (b, rng) => {
  const out = Buffer.from(b);
  if (out.length === 0) return out;
  const n = 1 + rng.int(8);
  const head = Math.min(out.length, 8 + headerLen(b));
  for (let i = 0; i < n; i++) {
    const pos = rng.uniform() < 0.8 && head > 0 ? rng.int(head) : rng.int(out.length);
    out[pos] ^= 1 << rng.int(8);
  }
  return out;
};

const byteEdits: Mutator = (b, rng) => {
  const out = Buffer.from(b);
  const n = 1 + rng.int(4);
  const head = Math.min(out.length, 8 + headerLen(b));
  for (let i = 0; i < n; i++) {
    const pos = 8 + rng.int(Math.max(1, head - 8));
    if (pos < out.length) out[pos] = rng.uniform() < 0.7 ? pick(rng, INTERESTING_BYTES) : rng.int(256);
  }
  return out;
};

const truncate: Mutator = (b, rng) => (b.length === 0 ? b : b.subarray(0, rng.int(b.length))); // Rng.int(0) never returns

const extend: Mutator = (b, rng) => Buffer.concat([b, Buffer.from(Array.from({ length: 1 + rng.int(16) }, () => rng.int(256)))]);

const lengthPrefix: Mutator = (b, rng) => {
  const out = Buffer.from(b);
  if (out.length < 8) return out;
  const n = b.readBigUInt64LE(0);
  const choices = [
    () => n + BigInt(1 + rng.int(16)),
    () => (n > 16n ? n - BigInt(1 + rng.int(16)) : 0n),
    () => 0n,
    () => 1n,
    () => 2n,
    () => BigInt(MAX_HEADER_SIZE),
    () => BigInt(MAX_HEADER_SIZE + 1),
    () => 1n << 63n,
    () => (1n << 64n) - 1n,
    () => BigInt(out.length),
    () => BigInt(out.length - 8),
    () => (BigInt(rng.nextU32()) << 32n) | BigInt(rng.nextU32()),
    () => BigInt(rng.nextU32()),
  ];
  out.writeBigUInt64LE(pick(rng, choices)() & U64);
  return out;
};

/** Structured edits of the header JSON, re-serialized with a matching length prefix (usually). */
const jsonEdit: Mutator = (b, rng) => {
  const n = headerLen(b);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(b.subarray(8, 8 + n).toString('utf8'));
  } catch {
    return bitFlips(b, rng);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return bitFlips(b, rng);
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const entry = () => (names.length ? (header[pick(rng, names)] as Record<string, unknown>) : undefined);
  let text: string | undefined;
  const edits = [
    () => {
      // shift one tensor's offsets (both, or one end)
      const e = entry();
      if (!e) return;
      const [s, t] = e.data_offsets as number[];
      const d = pick(rng, [-8, -4, -2, -1, 1, 2, 4, 8, 1000]);
      e.data_offsets = pick(rng, [
        [s + d, t + d],
        [s + d, t],
        [s, t + d],
      ]);
    },
    () => {
      // overlap: two tensors start at the same place
      if (names.length < 2) return;
      const a = header[names[0]] as Record<string, unknown>;
      const c = header[names[1]] as Record<string, unknown>;
      c.data_offsets = [...(a.data_offsets as number[])];
    },
    () => {
      // a hole: every tensor from some offset on moves up
      const cut = (entry()?.data_offsets as number[] | undefined)?.[0] ?? 0;
      const gap = 1 + rng.int(16);
      for (const k of names) {
        const e = header[k] as Record<string, unknown>;
        const [s, t] = e.data_offsets as number[];
        if (s >= cut) e.data_offsets = [s + gap, t + gap];
      }
    },
    () => {
      const e = entry();
      if (e) e.dtype = pick(rng, ['F32', 'F16', 'BF16', 'F64', 'I32', 'U8', 'BOOL', 'F8_E4M3', 'C64', 'f32', '', 'F', 42, null, ['F32'], { F32: 1 }]);
    },
    () => {
      const e = entry();
      if (e) {
        e.shape = pick(rng, [
          [2 ** 53],
          [2 ** 31, 2 ** 31],
          [2 ** 32, 2 ** 32, 2 ** 32],
          [1e308],
          [-1],
          [1.5],
          [],
          [0],
          [0, 2 ** 60],
          'x',
          null,
          [[2]],
          ['2'],
          [2 ** 26, 2 ** 26],
        ]);
      }
    },
    () => {
      const e = entry();
      if (e) e.data_offsets = pick(rng, [null, [0], [0, 1, 2], ['0', '4'], [-4, 0], [0.5, 4], [0, 2 ** 64], [0, 2 ** 53], 'x', {}]);
    },
    () => {
      const e = entry();
      if (e) delete e[pick(rng, ['dtype', 'shape', 'data_offsets'])];
    },
    () => {
      const e = entry();
      if (e) e[pick(rng, ['extra', 'dtype2', '__proto__'])] = pick(rng, [1, 'x', null, [1]]);
    },
    () => {
      if (names.length) header[pick(rng, names)] = pick(rng, [3, 'x', null, [1, 2], true]);
    },
    () => {
      header.__metadata__ = pick(rng, [{ a: 1 }, ['x'], 'x', 7, null, { a: { b: 'c' } }, { a: 'b', c: null }, {}]);
    },
    () => {
      // duplicate keys, in the text: a whole tensor entry, or a field inside one
      const s = JSON.stringify(header);
      if (!names.length) return;
      const k = pick(rng, names);
      const e = JSON.stringify({ [k]: header[k] }).slice(1, -1);
      text = rng.uniform() < 0.5 ? s.slice(0, -1) + ',' + e + '}' : s.replace('"dtype":', '"dtype":"F32","dtype":');
    },
    () => {
      // rename to a name that collides with another, or with the metadata key
      if (!names.length) return;
      const k = pick(rng, names);
      const s = JSON.stringify(header);
      text = s.replace(JSON.stringify(k) + ':', JSON.stringify(pick(rng, ['__metadata__', ...names, 'a\\u0000b', '\u00e9'])) + ':');
    },
    () => {
      text = pick(rng, ['[]', '"x"', '1', 'null', '{', '{"a":1,}', ' {}', '{}x', '{"a":' + '['.repeat(200) + ']'.repeat(200) + '}']);
    },
    () => {
      text = JSON.stringify(header).replace(/\d+/, pick(rng, ['1e400', '-0', '01', '1.0', '9007199254740993', '0x10', 'NaN', 'Infinity']));
    },
  ];
  const count = 1 + rng.int(2);
  for (let i = 0; i < count; i++) {
    try {
      pick(rng, edits)();
    } catch {
      // an earlier mutation left a shape this edit cannot handle (an entry that is not an object): skip it
    }
  }
  const json = Buffer.from(text ?? JSON.stringify(header), 'utf8');
  const padded = rng.uniform() < 0.5 ? Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]) : json;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(rng.uniform() < 0.9 ? BigInt(padded.length) : b.readBigUInt64LE(0));
  let data = b.subarray(8 + n);
  // Sometimes resize the data to what the edited header claims, so that later checks are reached.
  if (rng.uniform() < 0.3) {
    try {
      const ends = Object.entries(JSON.parse(json.toString('utf8')) as Record<string, { data_offsets?: number[] }>)
        .filter(([k]) => k !== '__metadata__')
        .map(([, v]) => Number(v?.data_offsets?.[1]) || 0);
      const want = Math.min(1 << 20, Math.max(0, ...ends));
      data = want <= data.length ? data.subarray(0, want) : Buffer.concat([data, Buffer.alloc(want - data.length)]);
    } catch {
      // not JSON any more: keep the data
    }
  }
  return Buffer.concat([len, padded, data]);
};

const MUTATORS: Array<[string, Mutator, number]> = [
  ['bitFlips', bitFlips, 3],
  ['byteEdits', byteEdits, 2],
  ['truncate', truncate, 1],
  ['extend', extend, 1],
  ['lengthPrefix', lengthPrefix, 1],
  ['jsonEdit', jsonEdit, 5],
];
const WEIGHTED = MUTATORS.flatMap(([, m, w]) => Array<Mutator>(w).fill(m));

function mutate(seed: Buffer, rng: Rng): Buffer {
  let b = seed;
  const rounds = rng.uniform() < 0.75 ? 1 : 2 + rng.int(2);
  for (let i = 0; i < rounds; i++) b = pick(rng, WEIGHTED)(b, rng);
  return b;
}

// ---------------------------------------------------------------------------------------------

/** A named error: SafetensorsError, a known code, one non-empty line. */
function checkError(e: unknown, what: string): SafetensorsErrorCode {
  if (!(e instanceof SafetensorsError)) {
    throw new assert.AssertionError({ message: `${what}: expected a SafetensorsError, got ${(e as Error)?.stack ?? e}` });
  }
  assert.ok(CODES.includes(e.code) || e.code === 'FileError', `${what}: unknown code ${e.code}`);
  assert.ok(e.message.length > 0 && !e.message.includes('\n'), `${what}: message "${e.message}"`);
  return e.code;
}

/** What a successful parse must satisfy: the tensors tile the data region exactly. */
function checkValid(h: SafetensorsHeader, size: number, what: string): void {
  let at = 0;
  for (const t of h.tensors) {
    assert.equal(t.begin, at, what);
    assert.equal(t.end - t.begin, t.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[t.dtype], what);
    at = t.end;
  }
  assert.equal(8 + h.headerSize + at, size, what);
}

describe('safetensors fuzz', () => {
  const SEEDS = seeds();

  test('the seeds are valid', () => {
    for (const s of SEEDS) checkValid(parseHeader(s, s.length), s.length, 'seed');
  });

  test('12,000 mutated headers: only named SafetensorsErrors, every code reached', { timeout: 120_000 }, (t) => {
    const rng = new Rng(20240601);
    const codes = new Map<string, number>();
    let valid = 0;
    let slowest = 0;
    const t0 = performance.now();
    const N = 12_000;
    for (let i = 0; i < N; i++) {
      const seed = SEEDS[i % SEEDS.length];
      const b = mutate(seed, rng);
      const what = `case ${i} (${b
        .subarray(0, Math.min(b.length, 8 + 200))
        .toString('latin1')
        .replace(/[^\x20-\x7e]/g, '.')})`;
      const c0 = performance.now();
      try {
        const h = parseHeader(b, b.length);
        checkValid(h, b.length, what);
        valid++;
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        const code = checkError(e, what);
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
      slowest = Math.max(slowest, performance.now() - c0);
    }
    const seconds = (performance.now() - t0) / 1000;
    t.diagnostic(
      `${N} cases in ${seconds.toFixed(2)} s (slowest ${slowest.toFixed(1)} ms): ${valid} valid, ${JSON.stringify(Object.fromEntries([...codes].sort()))}`,
    );
    for (const code of CODES) assert.ok((codes.get(code) ?? 0) > 0, `no case reached ${code}`);
    assert.ok(valid > 0, 'some mutations (data bits) stay valid');
    assert.ok(slowest < 2000, `a case took ${slowest} ms: a hang?`);
  });

  test('400 mutated files through both file readers: only named errors; valid files read fully', { timeout: 120_000 }, (t) => {
    const { fresh } = tempRoot('stfuzz');
    const dir = fresh('files');
    fs.mkdirSync(dir);
    const rng = new Rng(99);
    const codes = new Map<string, number>();
    let valid = 0;
    for (let i = 0; i < 400; i++) {
      const b = mutate(SEEDS[i % SEEDS.length], rng);
      const file = path.join(dir, `case-${i}.safetensors`);
      fs.writeFileSync(file, b);
      let whole: ReturnType<typeof readSafetensors> | undefined;
      try {
        whole = readSafetensors(file);
      } catch (e) {
        const code = checkError(e, `readSafetensors case ${i}`);
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
      try {
        const r = openSafetensors(file);
        try {
          assert.ok(whole, `case ${i}: openSafetensors accepted what readSafetensors rejected`);
          for (const info of r.infos) {
            const x: Float32Array = r.read(info.name);
            const y: Float32Array = whole.tensors.get(info.name)!;
            assert.deepEqual(Buffer.from(x.buffer, x.byteOffset, x.byteLength), Buffer.from(y.buffer, y.byteOffset, y.byteLength));
            const raw = new Uint8Array(info.end - info.begin);
            r.readInto(info.name, raw);
          }
          valid++;
        } finally {
          r.close();
        }
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        checkError(e, `openSafetensors case ${i}`);
        assert.equal(whole, undefined, `case ${i}: readSafetensors accepted what openSafetensors rejected`);
      }
      fs.rmSync(file);
    }
    t.diagnostic(`400 files: ${valid} valid, ${JSON.stringify(Object.fromEntries([...codes].sort()))}`);
    assert.ok(codes.size >= 8, 'the file cases reach many codes');
  });
});
