// z-loss and QK-layernorm (Wortsman et al. 2023; docs/stability.md#z-loss,
// docs/stability.md#qk-layernorm) in the kernels, the
// model and its checkpoints: the cross-entropy kernel's z-loss term (native in every mode vs
// the reference, float64 finite differences), whole-model float64 finite-difference checks
// with qkNorm and with zLoss, native vs reference models, and a qkNorm checkpoint round trip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { eachMode, nk } from './native_modes.ts';
import { keel, tempRoot, writeJson } from './helpers.ts';
import * as ops from '../src/kernels/reference/ops.ts';
import { referenceKernels } from '../src/kernels/reference/index.ts';
import { nativeKernels } from '../src/kernels/native.ts';
import { readSafetensors } from '../src/io/safetensors.ts';
import { configFromMetadata, configToMetadata, loadModel, saveModel } from '../src/model/checkpoint.ts';
import { CONFIGS, resolveConfig, validateConfig, type GPTConfig } from '../src/model/config.ts';
import { GPT } from '../src/model/gpt.ts';
import { paramLayout } from '../src/model/params.ts';
import { Rng } from '../src/util/rng.ts';
import { centralDifference, near, perturb, randomArrays, tokenBatch } from './numeric.ts';

const { ints, randn, randn64 } = randomArrays(777);

// ---- kernel: crossEntropy's z-loss term --------------------------------------------------

test('cross-entropy z-loss: lse and dlogits, native (every mode) vs reference; zCoef = 0 unchanged', () => {
  for (const { BT, V } of [
    { BT: 1, V: 7 },
    { BT: 5, V: 11 },
    { BT: 37, V: 19 },
    { BT: 300, V: 256 },
  ]) {
    const logits = randn(BT * V, 3);
    logits[0] = 95; // log Z ≈ 95: the z term's gradient is large, the max-subtracted form must hold
    if (BT > 1) logits[V] = -95;
    const targets = ints(BT, V);
    for (const zc of [1e-4, 0.3]) {
      const l0 = new Float32Array(BT),
        dl0 = new Float32Array(BT * V),
        lse0 = new Float32Array(BT);
      const sum0 = ops.crossEntropy(l0, dl0, logits, targets, BT, V, 0.25, zc, lse0);
      // lse is log Σ exp, computed independently here in float64.
      for (let r = 0; r < BT; r++) {
        let mx = -Infinity;
        for (let i = 0; i < V; i++) mx = Math.max(mx, logits[r * V + i]);
        let s = 0;
        for (let i = 0; i < V; i++) s += Math.exp(logits[r * V + i] - mx);
        assert.ok(Math.abs(lse0[r] - (Math.log(s) + mx)) <= 1e-6 * (1 + Math.abs(mx)), `reference lse[${r}]`);
      }
      eachMode((m) => {
        const what = `${m} BT=${BT} V=${V} zc=${zc}`;
        const losses = new Float32Array(BT),
          lse = new Float32Array(BT),
          dl = new Float32Array(BT * V);
        const s = nk.crossEntropy(losses, dl, logits, targets, BT, V, 0.25, zc, lse);
        near(losses, l0, 2e-6, `${what} losses`);
        near(lse, lse0, 2e-6, `${what} lse`);
        near(dl, dl0, 2e-6, `${what} dlogits`);
        assert.ok(Math.abs(s - sum0) <= 1e-5 * Math.abs(sum0) + 1e-6, `${what}: Σ loss ${s} vs ${sum0} (no z term)`);
        const inplace = logits.slice();
        nk.crossEntropy(losses, inplace, inplace, targets, BT, V, 0.25, zc, null);
        near(inplace, dl0, 2e-6, `${what} dlogits in place`);
        // lse without dlogits (the forward's call).
        const lse2 = new Float32Array(BT);
        nk.crossEntropy(losses, null, logits, targets, BT, V, 0, 0, lse2);
        assert.deepEqual(lse2, lse, `${what} lse without dlogits`);
      });
    }
    // zCoef = 0, given or not, is bit-identical to the plain kernel (fixtures and resume rely on it).
    eachMode((m) => {
      const a = new Float32Array(BT * V),
        b = new Float32Array(BT * V),
        la = new Float32Array(BT),
        lb = new Float32Array(BT);
      const sa = nk.crossEntropy(la, a, logits, targets, BT, V, 0.25);
      const sb = nk.crossEntropy(lb, b, logits, targets, BT, V, 0.25, 0, new Float32Array(BT));
      assert.deepEqual(b, a, `${m} zCoef 0 dlogits`);
      assert.deepEqual(lb, la, `${m} zCoef 0 losses`);
      assert.equal(sb, sa);
    });
  }
  // Argument checks of the new trailing arguments.
  const f = (n: number) => new Float32Array(n);
  const t = new Int32Array([0, 1]);
  assert.throws(() => nk.crossEntropy(f(2), null, f(8), t, 2, 4, 1, 0, f(1)), /needs 2/);
  assert.throws(() => (nk.crossEntropy as (...a: unknown[]) => number)(f(2), null, f(8), t, 2, 4, 1, '1'), /number/);
  assert.throws(() => nk.crossEntropy(f(2), null, f(8), t, 2, 4, 1, 0, new Float64Array(2) as unknown as Float32Array), /Float32Array/);
});

test('cross-entropy z-loss: float64 finite differences of scale·Σ (loss + zCoef·lse²)', () => {
  const N = 6,
    V = 9,
    s = 0.37,
    zc = 0.05;
  const logits = randn64(N * V, 2),
    targets = ints(N, V);
  for (let i = 0; i < V; i++) logits[i] += 4; // a row with log Z far from 0
  const losses = new Float64Array(N),
    lse = new Float64Array(N);
  const L = () => {
    let z = 0;
    const ce = ops.crossEntropy(losses, null, logits, targets, N, V, 0, 0, lse);
    for (let r = 0; r < N; r++) z += lse[r] * lse[r];
    return s * (ce + zc * z);
  };
  const d = new Float64Array(N * V);
  ops.crossEntropy(losses, d, logits, targets, N, V, s, zc);
  const h = 1e-5;
  for (let i = 0; i < N * V; i++) {
    const fd = centralDifference(logits, i, L, h);
    assert.ok(Math.abs(fd - d[i]) <= 1e-7 * (1 + Math.abs(fd)), `dlogits[${i}]: analytic ${d[i]}, numeric ${fd}`);
  }
  // The z term's gradient sums to 2·zCoef·lse·scale per row (softmax sums to 1; the CE part to 0).
  L(); // lse of the unperturbed logits
  for (let r = 0; r < N; r++) {
    let sum = 0;
    for (let i = 0; i < V; i++) sum += d[r * V + i];
    assert.ok(Math.abs(sum - 2 * zc * lse[r] * s) < 1e-12, `row ${r}: Σ dlogits ${sum}`);
  }
});

// ---- model --------------------------------------------------------------------------------

/** Float64 central differences of the full objective (loss + zLoss·lastZLoss) at a few coordinates of every tensor. */
function modelGradCheck(cfg: GPTConfig, zLoss: number, what: string): void {
  const B = 2;
  const model = new GPT<Float64Array>(cfg, referenceKernels<Float64Array>(), { maxBatch: B, ctor: Float64Array, zLoss });
  assert.equal(model.zLoss, zLoss);
  perturb(model, 3, 0.3);
  // Large logits so log Z (and the z-loss gradient) is far from 0: scale the tied embedding up.
  const wte = model.layout.byName.get('transformer.wte.weight')!;
  for (let i = wte.offset; i < wte.offset + wte.size; i++) model.params[i] *= 3;
  const { tokens, targets } = tokenBatch(cfg, B, 9);
  const objective = () => {
    const ce = model.forward(tokens, targets, B);
    return ce + zLoss * model.lastZLoss;
  };
  model.zeroGrad();
  objective();
  model.backward(1);
  const r = new Rng(5);
  const h = 1e-6;
  for (const t of model.layout.tensors) {
    for (let j = 0; j < 4; j++) {
      const i = t.offset + r.int(t.size);
      const fd = centralDifference(model.params, i, objective, h);
      const an = model.grads[i];
      // Relative error, or an absolute one at the level of the differences' rounding noise
      // (k_norm.bias's gradient is exactly 0: a shift of every key adds the same q·b to each
      // logit of a softmax row).
      const err = Math.abs(fd - an) / Math.max(1e-6, Math.abs(fd) + Math.abs(an));
      assert.ok(err < 1e-5 || Math.abs(fd - an) < 2e-9, `${what}: ${t.name}[${i - t.offset}]: analytic ${an} vs numeric ${fd}`);
    }
  }
}

test('finite-difference gradient check of the whole model (float64): qkNorm, zLoss, both', () => {
  const base: GPTConfig = { nLayer: 2, nHead: 2, nEmbd: 8, blockSize: 5, vocabSize: 11 };
  modelGradCheck({ ...base, qkNorm: true }, 0, 'qkNorm');
  modelGradCheck(base, 0.2, 'zLoss 0.2');
  modelGradCheck({ ...base, nHead: 4, qkNorm: true }, 0.05, 'qkNorm (hs 2) + zLoss 0.05');
});

test('lastZLoss is the mean (log Z)² of the last forward; zLoss validation', () => {
  const cfg: GPTConfig = { nLayer: 1, nHead: 2, nEmbd: 8, blockSize: 4, vocabSize: 13 };
  const m = new GPT<Float64Array>(cfg, referenceKernels<Float64Array>(), { maxBatch: 2, ctor: Float64Array });
  assert.equal(m.zLoss, 0);
  assert.ok(Number.isNaN(m.lastZLoss));
  perturb(m, 1, 0.5);
  const { tokens, targets } = tokenBatch(cfg, 2, 2);
  const ce = m.forward(tokens, targets, 2);
  const logits = m.logits(2),
    V = cfg.vocabSize;
  let zsq = 0,
    ceSum = 0;
  for (let r = 0; r < 8; r++) {
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(logits[r * V + i]);
    zsq += Math.log(s) ** 2;
    ceSum += Math.log(s) - logits[r * V + targets[r]];
  }
  assert.ok(Math.abs(m.lastZLoss - zsq / 8) < 1e-12, `${m.lastZLoss} vs ${zsq / 8}`);
  assert.ok(Math.abs(ce - ceSum / 8) < 1e-12, 'forward still returns the plain mean cross-entropy');
  m.zLoss = 1e-4;
  assert.equal(m.forward(tokens, targets, 2), ce, 'the coefficient does not change the reported loss');
  assert.ok(Number.isNaN((m.forward(tokens, null, 2), m.lastZLoss)));
  assert.throws(() => {
    m.zLoss = -1;
  }, /zLoss/);
  assert.throws(() => {
    m.zLoss = NaN;
  }, /zLoss/);
  assert.throws(() => new GPT(cfg, referenceKernels(), { maxBatch: 1, zLoss: Infinity }), /zLoss/);
});

test('embedding-gradient shrink (float64): wte gradient = head share + α·lookup share; every other gradient unchanged', () => {
  const cfg: GPTConfig = { nLayer: 1, nHead: 2, nEmbd: 8, blockSize: 5, vocabSize: 13 };
  const model = new GPT<Float64Array>(cfg, referenceKernels<Float64Array>(), { maxBatch: 2, ctor: Float64Array });
  perturb(model, 5, 0.1);
  const { tokens, targets } = tokenBatch(cfg, 2, 9);
  const grads = (alpha: number) => {
    model.zeroGrad();
    model.forward(tokens, targets, 2);
    model.backward(1, alpha);
    return model.grads.slice();
  };
  const [g1, g0, ga] = [grads(1), grads(0), grads(0.1)];
  const wte = model.layout.byName.get('transformer.wte.weight')!;
  const inWte = (i: number) => i >= wte.offset && i < wte.offset + wte.size;
  let lookup = 0;
  for (let i = 0; i < g1.length; i++) {
    if (!inWte(i)) assert.equal(ga[i], g1[i], `index ${i} (not wte) changed`);
    else assert.ok(Math.abs(ga[i] - (g0[i] + 0.1 * (g1[i] - g0[i]))) < 1e-12, `wte ${i - wte.offset}`);
    if (inWte(i) && g1[i] !== g0[i]) lookup++;
  }
  // Rows of tokens the batch holds get a lookup share; the head's share reaches every row.
  const rows = new Set(tokens).size;
  assert.equal(lookup, rows * cfg.nEmbd);
  assert.ok(
    Array.from(g0.subarray(wte.offset, wte.offset + wte.size)).every((x) => x !== 0),
    'α = 0 keeps the head share',
  );
});

test('native model matches the reference model with qkNorm and zLoss: loss, z term, every gradient', () => {
  const cfg: GPTConfig = { nLayer: 2, nHead: 3, nEmbd: 24, blockSize: 7, vocabSize: 37, qkNorm: true };
  const B = 3;
  const nat = new GPT(cfg, nativeKernels(), { maxBatch: B, zLoss: 0.01 });
  const ref = new GPT(cfg, referenceKernels<Float32Array>(), { maxBatch: B, zLoss: 0.01 });
  perturb(nat, 11, 0.05);
  const wte = nat.layout.byName.get('transformer.wte.weight')!;
  for (let i = wte.offset; i < wte.offset + wte.size; i++) nat.params[i] *= 20; // log Z well away from log V
  ref.params.set(nat.params);
  for (const B1 of [B, 2]) {
    // the full batch and a smaller one (leading rows of every buffer)
    const { tokens, targets } = tokenBatch(cfg, B1, 100 + B1);
    const res = [nat, ref].map((m) => {
      m.zeroGrad();
      const loss = m.forward(tokens, targets, B1);
      m.backward(0.5);
      return { loss, z: m.lastZLoss };
    });
    assert.ok(Math.abs(res[0].loss - res[1].loss) < 1e-5 * res[1].loss, `B=${B1} loss ${res[0].loss} vs ${res[1].loss}`);
    assert.ok(Math.abs(res[0].z - res[1].z) < 1e-5 * res[1].z, `B=${B1} lastZLoss ${res[0].z} vs ${res[1].z}`);
    assert.ok(res[1].z > 1, `log Z is away from 0 (${res[1].z})`);
    for (const t of nat.layout.tensors) {
      let maxDiff = 0,
        maxAbs = 0;
      for (let i = t.offset; i < t.offset + t.size; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(nat.grads[i] - ref.grads[i]));
        maxAbs = Math.max(maxAbs, Math.abs(ref.grads[i]));
      }
      assert.ok(maxAbs > 0, `${t.name}: zero gradient`);
      assert.ok(maxDiff <= 1e-4 * maxAbs + 1e-7, `B=${B1} ${t.name}: max |Δgrad| ${maxDiff} (max |grad| ${maxAbs})`);
    }
  }
});

test('qkNorm makes attention invariant to the scale of the query and key projections', () => {
  // LayerNorm removes a positive per-row scale: scaling the q and k rows of c_attn (weight
  // and bias) by 8 leaves a qkNorm model's loss unchanged (up to LayerNorm's ε) and changes a
  // plain model's loss (its attention logits grow 64-fold).
  const lossAfterScaling = (qkNorm: boolean) => {
    const cfg: GPTConfig = { nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 8, vocabSize: 32, ...(qkNorm ? { qkNorm } : {}) };
    const m = new GPT<Float64Array>(cfg, referenceKernels<Float64Array>(), { maxBatch: 2, ctor: Float64Array });
    perturb(m, 4, 0.3);
    const { tokens, targets } = tokenBatch(cfg, 2, 6);
    const before = m.forward(tokens, targets, 2);
    const C = cfg.nEmbd;
    const w = m.layout.byName.get('transformer.h.0.attn.c_attn.weight')!;
    const b = m.layout.byName.get('transformer.h.0.attn.c_attn.bias')!;
    for (let i = 0; i < 2 * C * C; i++) m.params[w.offset + i] *= 8;
    for (let i = 0; i < 2 * C; i++) m.params[b.offset + i] *= 8;
    return Math.abs(m.forward(tokens, targets, 2) - before);
  };
  assert.ok(lossAfterScaling(true) < 1e-6, `qkNorm: Δloss ${lossAfterScaling(true)}`);
  assert.ok(lossAfterScaling(false) > 1e-3, `plain: Δloss ${lossAfterScaling(false)}`);
});

test('qkNorm parameters: names, shapes, kinds and place in the layout; init 1 and 0; the rest unchanged', () => {
  const base: GPTConfig = { nLayer: 2, nHead: 4, nEmbd: 16, blockSize: 8, vocabSize: 32 };
  const plain = paramLayout(base);
  const qk = paramLayout({ ...base, qkNorm: true });
  assert.equal(qk.total, plain.total + 2 * 4 * 4);
  const names = qk.tensors.map((t) => t.name);
  for (let i = 0; i < 2; i++) {
    const p = `transformer.h.${i}.attn.`;
    const at = names.indexOf(p + 'c_attn.bias');
    assert.deepEqual(names.slice(at + 1, at + 5), [p + 'q_norm.weight', p + 'q_norm.bias', p + 'k_norm.weight', p + 'k_norm.bias']);
    assert.deepEqual(
      qk.tensors.slice(at + 1, at + 5).map((t) => [t.shape, t.kind]),
      [
        [[4], 'gain'],
        [[4], 'bias'],
        [[4], 'gain'],
        [[4], 'bias'],
      ],
    );
  }
  assert.deepEqual(
    names.filter((n) => !/[qk]_norm/.test(n)),
    plain.tensors.map((t) => t.name),
  );
  assert.ok(!plain.tensors.some((t) => /[qk]_norm/.test(t.name)));
  // init: gains 1, biases 0; the other tensors get the same values as without qkNorm.
  const a = new GPT(base, nativeKernels(), { maxBatch: 1 });
  const b = new GPT({ ...base, qkNorm: true }, nativeKernels(), { maxBatch: 1 });
  a.init(7);
  b.init(7);
  for (const t of b.layout.tensors) {
    const v = b.params.subarray(t.offset, t.offset + t.size);
    if (/[qk]_norm\.weight/.test(t.name))
      assert.ok(
        v.every((x) => x === 1),
        t.name,
      );
    else if (/[qk]_norm\.bias/.test(t.name))
      assert.ok(
        v.every((x) => x === 0),
        t.name,
      );
    else {
      const s = a.layout.byName.get(t.name)!;
      assert.deepEqual(v, a.params.subarray(s.offset, s.offset + s.size), t.name);
    }
  }
  // At init (gain 1, bias 0) the normalised q, k have unit RMS per head: the loss is finite and near ln V.
  const { tokens, targets } = tokenBatch(base, 1, 3);
  const loss = b.forward(tokens, targets, 1);
  assert.ok(Math.abs(loss - Math.log(32)) < 0.1, `init loss ${loss}`);
});

// ---- config and checkpoints -----------------------------------------------------------------

test('config: qkNorm is optional, boolean, kept only when true; presets unchanged', () => {
  const raw = { nLayer: 1, nHead: 2, nEmbd: 8, blockSize: 4, vocabSize: 16 };
  assert.deepEqual(validateConfig(raw), raw);
  assert.deepEqual(validateConfig({ ...raw, qkNorm: false }), raw);
  assert.deepEqual(validateConfig({ ...raw, qkNorm: true }), { ...raw, qkNorm: true });
  assert.throws(() => validateConfig({ ...raw, qkNorm: 1 }), /"qkNorm" must be true or false/);
  assert.throws(() => validateConfig({ ...raw, qk_norm: true }), /unknown key "qk_norm"/);
  assert.ok(!('qkNorm' in CONFIGS.tiny) && !('qkNorm' in CONFIGS.small));
  const { root } = tempRoot('stability-config');
  const file = writeJson(path.join(root, 'qk.json'), { ...raw, qkNorm: true });
  assert.deepEqual(resolveConfig(file), { ...raw, qkNorm: true });
});

test('checkpoint metadata: qk_norm written only when true, a missing key reads back as false', () => {
  const cfg: GPTConfig = { nLayer: 1, nHead: 2, nEmbd: 8, blockSize: 4, vocabSize: 16 };
  assert.equal(configToMetadata(cfg), '{"n_layer":1,"n_head":2,"n_embd":8,"block_size":4,"vocab_size":16,"bias":true}');
  assert.deepEqual(JSON.parse(configToMetadata({ ...cfg, qkNorm: true })).qk_norm, true);
  assert.deepEqual(configFromMetadata(configToMetadata(cfg), 'x'), cfg);
  assert.deepEqual(configFromMetadata(configToMetadata({ ...cfg, qkNorm: true }), 'x'), { ...cfg, qkNorm: true });
  const explicitFalse = JSON.stringify({ ...JSON.parse(configToMetadata(cfg)), qk_norm: false });
  assert.deepEqual(configFromMetadata(explicitFalse, 'x'), cfg);
  const bad = JSON.stringify({ ...JSON.parse(configToMetadata(cfg)), qk_norm: 'yes' });
  assert.throws(() => configFromMetadata(bad, 'x.safetensors'), /x\.safetensors.*qkNorm/);
  // The committed parity fixture (written before qkNorm existed) still loads as a plain model.
  const fixture = loadModel('test/fixtures/parity/model.safetensors');
  assert.equal(fixture.config.qkNorm, undefined);
});

test('a qkNorm checkpoint round-trips: tensor names, flag, values, and keel eval agrees', () => {
  const cfg: GPTConfig = { nLayer: 2, nHead: 2, nEmbd: 16, blockSize: 16, vocabSize: 256, qkNorm: true };
  const m = new GPT(cfg, nativeKernels(), { maxBatch: 2 });
  perturb(m, 21, 0.05);
  const { root } = tempRoot('stability-ckpt');
  const file = path.join(root, 'model.safetensors');
  saveModel(file, cfg, m.params);
  const st = readSafetensors(file);
  for (let i = 0; i < 2; i++) {
    for (const n of ['q_norm.weight', 'q_norm.bias', 'k_norm.weight', 'k_norm.bias']) {
      const info = st.infos.find((x) => x.name === `transformer.h.${i}.attn.${n}`);
      assert.ok(info, `tensor ${n} of layer ${i}`);
      assert.deepEqual(info.shape, [8]);
    }
  }
  assert.equal(JSON.parse(st.metadata.config).qk_norm, true);
  const back = loadModel(file);
  assert.deepEqual(back.config, cfg);
  assert.deepEqual(back.params, m.params);
  // A plain model cannot load it by mistake (and vice versa): the layouts differ.
  const plainFile = path.join(root, 'plain.safetensors');
  const { qkNorm: _q, ...plainCfg } = cfg;
  saveModel(plainFile, plainCfg, new Float32Array(paramLayout(plainCfg).total));
  assert.equal(JSON.parse(readSafetensors(plainFile).metadata.config).qk_norm, undefined);
  // keel eval rebuilds the qkNorm model from the metadata and scores the same windows.
  const text = 'the quick brown fox jumps over the lazy dog. '.repeat(4);
  const data = path.join(root, 'text.txt');
  fs.writeFileSync(data, text);
  const r = keel(['eval', { checkpoint: file, data, tokens: 33, json: true }]);
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout.trim().split('\n').pop()!);
  const bytes = Buffer.from(text, 'utf8');
  const tokens = Int32Array.from(bytes.subarray(0, 32));
  const targets = Int32Array.from(bytes.subarray(1, 33));
  const want = m.forward(tokens, targets, 2);
  assert.equal(got.tokens, 32);
  assert.ok(Math.abs(got.loss - want) < 1e-5 * want, `keel eval ${got.loss} vs in-process ${want}`);
});
