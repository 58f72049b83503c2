// One suite for every optimizer: golden values (AdamW against PyTorch, the rest against an
// independent float64 NumPy implementation of docs/optimizers.md#how-it-works; fixtures from
// scripts/optim_golden.py), convergence on a quadratic and on Rosenbrock, state save/restore,
// non-finite gradients, option checks, and `keel optim replay`.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { encodeSafetensors, parseHeader, readSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import { nativeKernels } from '../src/kernels/native.ts';
import { referenceKernels } from '../src/kernels/reference/index.ts';
import type { Floats } from '../src/kernels/types.ts';
import { paramLayout } from '../src/model/params.ts';
import { createOptimizer, OPTIMIZER_NAMES } from '../src/optim/registry.ts';
import { loadStateTensors, stateBytes, stateMetadata, stateTensors } from '../src/optim/state.ts';
import type { Optimizer, TensorSpec } from '../src/optim/types.ts';
import { UserError } from '../src/errors.ts';
import { embeddingDrift } from '../src/monitor/embedding.ts';
import { keel, REPO, tempRoot } from './helpers.ts';

const FIXTURES = path.join(REPO, 'test', 'fixtures', 'optim');
const { fresh } = tempRoot('optim');

interface Fixture {
  name: string;
  optimizer: string;
  options: Record<string, unknown>;
  shape: number[];
  param: Float32Array;
  grads: Float32Array[];
  expected: Float64Array[];
}

/** Reads a fixture keeping the F64 expectations in float64 (readSafetensors gives float32). */
function readFixture(file: string): Fixture {
  const buf = fs.readFileSync(file);
  const h = parseHeader(buf, buf.byteLength);
  const data = buf.subarray(8 + h.headerSize);
  const get = (name: string) => {
    const t = h.tensors.find((x) => x.name === name)!;
    const bytes = Uint8Array.prototype.slice.call(data, t.begin, t.end);
    return t.dtype === 'F64' ? new Float64Array(bytes.buffer) : new Float32Array(bytes.buffer);
  };
  const steps = h.tensors.filter((t) => t.name.startsWith('grad.')).length;
  const idx = Array.from({ length: steps }, (_, i) => i + 1);
  return {
    name: path.basename(file, '.safetensors'),
    optimizer: h.metadata.optimizer,
    options: JSON.parse(h.metadata.options),
    shape: h.tensors.find((t) => t.name === 'param')!.shape,
    param: get('param') as Float32Array,
    grads: idx.map((i) => get(`grad.${i}`) as Float32Array),
    expected: idx.map((i) => get(`expected.${i}`) as Float64Array),
  };
}

const fixtures = fs
  .readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.safetensors'))
  .sort()
  .map((f) => readFixture(path.join(FIXTURES, f)));

function runFixture<F extends Floats>(fx: Fixture, Ctor: { from(a: ArrayLike<number>): F }, kernels?: ReturnType<typeof referenceKernels<F>>): F[] {
  const opt = createOptimizer<F>(fx.optimizer, fx.options, kernels ? { kernels } : undefined);
  const params = Ctor.from(fx.param);
  const tensor: TensorSpec = { name: 'param', shape: fx.shape, kind: 'weight', offset: 0, size: params.length };
  const state = opt.init(params, [tensor]);
  return fx.grads.map((g) => {
    opt.step(params, Ctor.from(g), state);
    return Ctor.from(params);
  });
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, atol: number, what: string): void {
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    assert.ok(err <= atol + rtol * Math.abs(want[i]), `${what}[${i}]: got ${got[i]}, want ${want[i]} (|Δ| ${err})`);
  }
}

describe('golden values', () => {
  test('every optimizer has fixtures, and every fixture names a known optimizer', () => {
    const covered = new Set(fixtures.map((f) => f.optimizer));
    for (const name of OPTIMIZER_NAMES) assert.ok(covered.has(name), `no golden fixture for ${name}`);
    for (const f of fixtures) assert.ok((OPTIMIZER_NAMES as string[]).includes(f.optimizer), f.name);
  });
  for (const fx of fixtures) {
    test(`${fx.name}: native float32 and reference float64 follow the golden trajectory`, () => {
      const nat = runFixture(fx, Float32Array);
      const ref = runFixture(fx, Float64Array, referenceKernels<Float64Array>());
      fx.expected.forEach((want, s) => {
        assertClose(ref[s], want, 1e-9, 1e-15, `${fx.name} reference step ${s + 1}`);
        assertClose(nat[s], want, 2e-5, 1e-10, `${fx.name} native step ${s + 1}`);
      });
      // The trajectory must move: a fixture whose parameter never changes would test nothing.
      assert.ok(
        fx.expected[fx.expected.length - 1].some((x, i) => x !== fx.param[i]),
        `${fx.name}: parameter never moves`,
      );
    });
  }
});

/** Plain full-batch descent on f from x0 with a linearly decaying lr; returns f at the end. */
function descend(opt: Optimizer, f: (x: Float32Array, g: Float32Array) => number, x0: number[], lr: number, steps: number): number {
  const x = Float32Array.from(x0);
  const g = new Float32Array(x.length);
  const state = opt.init(x);
  const own = opt.options.relativeStep === true;
  for (let t = 0; t < steps; t++) {
    f(x, g);
    opt.step(x, g, state, own ? {} : { lr: lr * (1 - t / steps) });
  }
  return f(x, g);
}

/** ½ Σ aᵢ xᵢ² with curvatures 1 … 10. */
function quadratic(x: Float32Array, g: Float32Array): number {
  let f = 0;
  for (let i = 0; i < x.length; i++) {
    const a = 1 + (9 * i) / (x.length - 1);
    f += 0.5 * a * x[i] * x[i];
    g[i] = a * x[i];
  }
  return f;
}

/** Σ over pairs of (1 − x)² + 100(y − x²)². */
function rosenbrock(p: Float32Array, g: Float32Array): number {
  let f = 0;
  for (let i = 0; i < p.length; i += 2) {
    const x = p[i],
      y = p[i + 1];
    f += (1 - x) ** 2 + 100 * (y - x * x) ** 2;
    g[i] = -2 * (1 - x) - 400 * x * (y - x * x);
    g[i + 1] = 200 * (y - x * x);
  }
  return f;
}

// lr per optimizer for the two problems (weight decay off: the minimum is not at 0 for Rosenbrock).
const PROBLEMS: Record<string, { options: Record<string, unknown>; quad: number; rosen: number }> = {
  adamw: { options: { weightDecay: 0 }, quad: 0.1, rosen: 0.02 },
  adafactor: { options: { relativeStep: false, scaleParameter: false, lr: 0.1 }, quad: 0.1, rosen: 0.01 },
  adax: { options: {}, quad: 0.1, rosen: 0.02 },
  lion: { options: {}, quad: 0.05, rosen: 0.005 },
  tiger: { options: { weightDecay: 0, rmsFloor: 0.5 }, quad: 0.05, rosen: 0.005 },
  signum: { options: {}, quad: 0.05, rosen: 0.005 },
  signsgd: { options: {}, quad: 0.05, rosen: 0.002 },
  softsign: { options: { eps: 1e-3 }, quad: 0.05, rosen: 0.005 },
  sgd: { options: {}, quad: 0.02, rosen: 2e-4 },
};

describe('convergence', () => {
  for (const name of OPTIMIZER_NAMES) {
    test(`${name}: quadratic and Rosenbrock`, () => {
      const p = PROBLEMS[name];
      const fq0 = quadratic(
        Float32Array.from({ length: 16 }, () => 1),
        new Float32Array(16),
      );
      const fq = descend(createOptimizer(name, p.options), quadratic, Array(16).fill(1), p.quad, 1000);
      assert.ok(fq < 1e-4 * fq0, `${name} quadratic: f ${fq} from ${fq0}`);
      const x0 = [-1.2, 1, -1.2, 1];
      const fr0 = rosenbrock(Float32Array.from(x0), new Float32Array(4));
      const fr = descend(createOptimizer(name, p.options), rosenbrock, x0, p.rosen, 6000);
      assert.ok(fr < 1e-2, `${name} Rosenbrock: f ${fr} from ${fr0}`);
    });
  }
});

/** A miniature GPT layout: embeddings, matrices, biases, gains (what Tiger's routing needs). */
const LAYOUT = paramLayout({ nLayer: 1, nHead: 2, nEmbd: 8, blockSize: 4, vocabSize: 11 });

function randomFill(a: Float32Array, seed: number, scale: number): Float32Array {
  // Hash the seed first: consecutive seeds must not give nearly equal LCG streams.
  let s = Math.imul((seed ^ 0x9e3779b9) >>> 0, 0x85ebca6b) >>> 0;
  s = Math.imul(s ^ (s >>> 13), 0xc2b2ae35) >>> 0;
  for (let i = 0; i < a.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return a;
}

// Each optimizer in its plain form plus the variants with extra state or policy.
const VARIANTS: [string, Record<string, unknown>][] = [
  ...OPTIMIZER_NAMES.map((n): [string, Record<string, unknown>] => [n, n === 'adafactor' ? { relativeStep: false, lr: 1e-2 } : { lr: 1e-2 }]),
  ['adafactor', { beta1: 0.9 }],
  ['adamw', { lr: 1e-2, epsMode: 'zero' }],
  ['tiger', { lr: 1e-2, accumSteps: 2 }],
  ['tiger', { lr: 1e-2, embeddingOptimizer: 'adamw' }],
  ['lion', { lr: 1e-2, embeddingOptimizer: 'adamw' }],
  ['lion', { lr: 1e-2, lazyEmbedding: true }],
];

describe('state save and restore', () => {
  for (const [name, options] of VARIANTS) {
    test(`${name} ${JSON.stringify(options)}: continuing from saved state is bit-identical`, () => {
      const n = LAYOUT.total;
      const gradAt = (s: number) => randomFill(new Float32Array(n), 100 + s, 0.1);
      const a = createOptimizer(name, options);
      const pa = randomFill(new Float32Array(n), 1, 0.5);
      const sa = a.init(pa, LAYOUT.tensors);
      for (let s = 0; s < 3; s++) a.step(pa, gradAt(s), sa);
      // Through the bytes of a file, as a checkpoint does.
      const bytes = encodeSafetensors(stateTensors(a, sa), stateMetadata(a, sa));
      const file = fresh('state') + '.safetensors';
      fs.writeFileSync(file, bytes);
      const read = readSafetensors(file);
      const b = createOptimizer(name, options);
      const pb = Float32Array.from(pa);
      const sb = b.init(pb, LAYOUT.tensors);
      loadStateTensors(b, sb, read.tensors, read.metadata, file);
      assert.equal(sb.t, 3);
      for (let s = 3; s < 6; s++) {
        a.step(pa, gradAt(s), sa);
        b.step(pb, gradAt(s), sb);
      }
      assert.deepEqual(pb, pa);
      for (const k of Object.keys(sa.slots)) assert.deepEqual(sb.slots[k], sa.slots[k], k);
      assert.ok(stateBytes(sa) > 0 || name === 'signsgd');
    });
  }

  test('state of another optimizer is refused with the fix in the message', () => {
    const a = createOptimizer('lion', { lr: 1e-3 });
    const s = a.init(new Float32Array(LAYOUT.total), LAYOUT.tensors);
    const b = createOptimizer('adamw', { lr: 1e-3 });
    const sb = b.init(new Float32Array(LAYOUT.total), LAYOUT.tensors);
    const tensors = new Map(stateTensors(a, s).map((t) => [t.name, t.data]));
    assert.throws(() => loadStateTensors(b, sb, tensors, stateMetadata(a, s), 'opt.safetensors'), /holds lion state.*--optimizer lion/);
  });

  test('state memory: AdamW 8 B/param, Lion 4, Adafactor ~0 for matrices', () => {
    const n = LAYOUT.total;
    const bytes = (name: string, o: Record<string, unknown>) => stateBytes(createOptimizer(name, o).init(new Float32Array(n), LAYOUT.tensors));
    assert.equal(bytes('adamw', {}), 8 * n);
    assert.equal(bytes('lion', {}), 4 * n);
    assert.equal(bytes('sgd', {}), 4 * n);
    assert.equal(bytes('signsgd', {}), 0);
    assert.equal(bytes('sgd', { momentum: 0 }), 0);
    const vectors = LAYOUT.tensors.filter((t) => t.shape.length < 2).reduce((a, t) => a + t.size, 0);
    const factored = LAYOUT.tensors.filter((t) => t.shape.length >= 2).reduce((a, t) => a + t.shape[0] + t.shape[1], 0);
    assert.equal(bytes('adafactor', {}), 4 * (vectors + factored));
  });
});

describe('non-finite gradients', () => {
  for (const [name, options] of VARIANTS) {
    test(`${name} ${JSON.stringify(options)}: a NaN/Inf tensor is skipped, the others move, nothing turns NaN`, () => {
      const n = LAYOUT.total;
      const opt = createOptimizer(name, options);
      const p = randomFill(new Float32Array(n), 3, 0.5);
      const state = opt.init(p, LAYOUT.tensors);
      const bad = LAYOUT.byName.get('transformer.h.0.attn.c_attn.weight')!;
      const good = LAYOUT.byName.get('transformer.h.0.mlp.c_fc.weight')!;
      for (let s = 0; s < 4; s++) {
        const g = randomFill(new Float32Array(n), 10 + s, 0.1);
        g[bad.offset + 5] = s % 2 ? Infinity : NaN;
        const before = Float32Array.from(p);
        const r = opt.step(p, g, state);
        assert.deepEqual(r.skipped, [bad.name]);
        const b = before.subarray(bad.offset, bad.offset + bad.size);
        const after = p.subarray(bad.offset, bad.offset + bad.size);
        if (name === 'tiger') after.forEach((x, i) => assert.ok(Math.abs(x - 0.99 * b[i]) <= 1e-7 * Math.abs(b[i]) + 1e-30));
        else assert.deepEqual(after, b);
        if (r.applied)
          assert.ok(
            p.subarray(good.offset, good.offset + good.size).some((x, i) => x !== before[good.offset + i]),
            'good tensor did not move',
          );
      }
      assert.ok(p.every(Number.isFinite));
      for (const [k, buf] of Object.entries(state.slots)) assert.ok(buf.every(Number.isFinite), `state ${k} has non-finite values`);
    });
  }

  test('adamw epsMode zero: all-zero gradient rows (fp16 underflow) never give NaN', () => {
    const opt = createOptimizer('adamw', { lr: 1e-2, epsMode: 'zero', weightDecay: 0 });
    const p = Float32Array.from([1, 2, 3, 4]);
    const s = opt.init(p);
    for (let t = 0; t < 5; t++) opt.step(p, Float32Array.from([0, 0, t, 0]), s);
    assert.deepEqual([p[0], p[1], p[3]], [1, 2, 4]);
    assert.ok(p.every(Number.isFinite));
  });
});

describe('options', () => {
  const err = (name: string, o: Record<string, unknown>, re: RegExp) =>
    assert.throws(
      () => createOptimizer(name, o),
      (e: unknown) => e instanceof UserError && re.test(e.message),
    );
  test('unknown options and bad values are one-line user errors', () => {
    err('lion', { eps: 1e-8 }, /lion has no option "eps"/);
    err('adamw', { epsMode: 'below' }, /epsMode must be one of outside, inside, zero, atan2/);
    err('adamw', { beta2: 1 }, /beta2 must be < 1/);
    err('tiger', { accumSteps: 1.5 }, /accumSteps must be an integer/);
    err('nadam', {}, /unknown optimizer "nadam"/);
  });
  test('adafactor guards the usual configuration traps', () => {
    err('adafactor', { relativeStep: true, lr: 1e-3 }, /relativeStep=true .* drop lr/);
    const abs = createOptimizer('adafactor', { relativeStep: false });
    const q = new Float32Array(4);
    assert.throws(() => abs.step(q, q, abs.init(q)), /no learning rate/);
    err('adafactor', { lr: 1e-3, warmupInit: true }, /warmupInit only applies with relativeStep/);
    err('adafactor', { decayRate: -0.8 }, /use 0\.8/);
    const a = createOptimizer('adafactor', {});
    const p = new Float32Array(4);
    assert.throws(() => a.step(p, p, a.init(p), { lr: 1e-3 }), /do not pass a learning rate/);
    assert.equal(createOptimizer('adafactor', { lr: 1e-3 }).options.relativeStep, false);
  });
  test('a step without any learning rate is refused', () => {
    const o = createOptimizer('lion', {});
    const p = new Float32Array(3);
    assert.throws(() => o.step(p, p, o.init(p)), /no learning rate/);
  });
  test('tensors must tile the buffer', () => {
    const o = createOptimizer('adamw', { lr: 1 });
    assert.throws(() => o.init(new Float32Array(10), [{ name: 'a', shape: [4], kind: 'weight', offset: 0, size: 4 }]), /cover 4 elements/);
  });
});

describe('keel optim replay', () => {
  test('replays a fixture trace and matches its golden values', () => {
    const fx = fixtures.find((f) => f.name === 'adafactor_abs_lr_momentum')!;
    const out = fresh('replay') + '.safetensors';
    const opts = Object.entries(fx.options).flatMap(([k, v]) => ['--opt', `${k}=${v}`]);
    const r = keel(['optim', 'replay', { optimizer: fx.optimizer }, ...opts, { trace: path.join(FIXTURES, `${fx.name}.safetensors`), out, json: true }]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).steps, fx.grads.length);
    const got = readSafetensors(out);
    fx.expected.forEach((want, s) => assertClose(got.tensors.get(`param.${s + 1}`)!, want, 2e-5, 1e-10, `param.${s + 1}`));
  });

  test('bad traces and options are one-line errors that write nothing', () => {
    const dir = fresh('bad');
    fs.mkdirSync(dir);
    const trace = (name: string, tensors: [string, number[]][]) => {
      const f = path.join(dir, name);
      writeSafetensors(
        f,
        tensors.map(([n, shape]) => ({ name: n, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) })),
      );
      return f;
    };
    const out = path.join(dir, 'out.safetensors');
    const cases: [string[], RegExp][] = [
      [['--trace', trace('nop.safetensors', [['grad.1', [2]]])], /no tensor "param"/],
      [
        [
          '--trace',
          trace('gap.safetensors', [
            ['param', [2]],
            ['grad.1', [2]],
            ['grad.3', [2]],
          ]),
        ],
        /grad\.2 is missing/,
      ],
      [
        [
          '--trace',
          trace('shape.safetensors', [
            ['param', [2]],
            ['grad.1', [3]],
          ]),
        ],
        /grad\.1 has shape \[3\]/,
      ],
      [['--trace', trace('nog.safetensors', [['param', [2]]])], /no gradients/],
      [['--trace', path.join(dir, 'missing.safetensors')], /does not exist/],
    ];
    for (const [args, re] of cases) {
      const r = keel(['optim', 'replay', { optimizer: 'adamw', opt: 'lr=1e-3' }, ...args, { out }]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, re);
      assert.ok(!r.stderr.includes('    at '), 'stack trace');
      assert.ok(!fs.existsSync(out));
    }
    const ok = trace('ok.safetensors', [
      ['param', [2]],
      ['grad.1', [2]],
    ]);
    for (const [args, re] of [
      [['--opt', 'lr'], /expected KEY=VALUE/],
      [['--opt', 'lr=fast'], /not a number/],
      [['--opt', 'lr=1', '--opt', 'bogus=1'], /adamw has no option "bogus"/],
      [['--opt', 'lr=1', '--opt', 'lr=2'], /given twice/],
    ] as [string[], RegExp][]) {
      const r = keel(['optim', 'replay', { optimizer: 'adamw' }, ...args, { trace: ok, out }]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, re);
    }
  });

  test('--help lists every optimizer and its options', () => {
    const r = keel(['optim', 'replay', '--help']);
    assert.equal(r.status, 0);
    for (const name of OPTIMIZER_NAMES) assert.match(r.stdout, new RegExp(`\\b${name}:`));
    for (const key of ['epsMode', 'decayRate', 'clipThreshold', 'eps1', 'eps2', 'relativeStep', 'scaleParameter', 'weightDecay']) {
      assert.ok(r.stdout.includes(key), key);
    }
  });
});

// Keep the native addon loaded once for the whole file (and fail early if it is missing).
nativeKernels();

describe('embedding drift under sign optimizers (docs/optimizers.md#embedding-drift)', () => {
  // 8 rows of 4; every row sees a gradient at step 1, then row 7 never again (a rare token).
  const emb: TensorSpec = { name: 'wte', shape: [8, 4], kind: 'embedding', offset: 0, size: 32 };
  function drift(name: string, options: Record<string, unknown>): { rms7: number; stats: ReturnType<typeof embeddingDrift> } {
    const opt = createOptimizer(name, options);
    const p = randomFill(new Float32Array(32), 5, 0.5);
    const state = opt.init(p, [emb]);
    for (let t = 0; t < 500; t++) {
      const g = randomFill(new Float32Array(32), 1000 + t, 1);
      if (t > 0) g.fill(0, 28);
      opt.step(p, g, state);
    }
    const row7 = p.subarray(28);
    return { rms7: Math.sqrt(row7.reduce((a, x) => a + x * x, 0) / 4), stats: embeddingDrift(p, { ...emb, shape: [8, 4] }) };
  }
  const lion = { lr: 0.01, weightDecay: 0.1 };
  test('Lion: the row drifts toward −sign(m)/λ, and the monitor flags it', () => {
    const { rms7, stats } = drift('lion', lion);
    // θ_t = θ* + (θ0 − θ*)(1 − ηλ)^t with |θ*| = 1/λ = 10: after 500 steps about 10·(1 − 0.999^500) ≈ 3.9.
    assert.ok(rms7 > 3 && rms7 < 10, `row 7 RMS ${rms7}`);
    assert.ok(stats.embed_drift_rows >= 1, JSON.stringify(stats));
  });
  test('remedies: lazy rows leave it where it was; AdamW for embeddings lets it settle', () => {
    const lazy = drift('lion', { ...lion, lazyEmbedding: true });
    assert.ok(lazy.rms7 < 0.5 && lazy.stats.embed_drift_rows === 0, JSON.stringify(lazy));
    const hybrid = drift('lion', { ...lion, embeddingOptimizer: 'adamw', embeddingLrScale: 1 });
    assert.ok(hybrid.rms7 < 1 && hybrid.stats.embed_drift_rows === 0, JSON.stringify(hybrid));
    const tigerLazy = drift('tiger', { lr: 0.05, lazyEmbedding: true, weightDecay: 0.1 });
    assert.ok(tigerLazy.rms7 < 0.5, JSON.stringify(tigerLazy));
    const tiger = drift('tiger', { lr: 0.05, weightDecay: 0.1 });
    assert.ok(tiger.rms7 > 2 * tigerLazy.rms7, `tiger ${tiger.rms7} vs lazy ${tigerLazy.rms7}`);
  });
});
