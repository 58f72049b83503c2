/**
 * The kernel contract shared by the native addon (native/*.cc) and its plain TypeScript
 * twin (src/kernels/reference/). The model calls kernels only through this interface, so a
 * test can run the same model on either and compare.
 *
 * Conventions (llm.c style): outputs first, then inputs, then sizes. Glossary: B batch,
 * T time (sequence), C channels, OC output channels, NH heads, V vocabulary, N a flat
 * element count, BT = B*T rows. All matrices are row-major. Backward kernels ACCUMULATE
 * (`+=`) into their gradient outputs; zeroing gradients is the caller's job.
 *
 * Native kernels take Float32Array (views into larger buffers are fine: subarray()).
 * Reference kernels also accept Float64Array so gradient checks can run in float64.
 */
export type Floats = Float32Array | Float64Array;

/** Coefficients of `adam`; see there. epsMode: 0 outside, 1 inside, 2 zero, 3 atan2. */
export interface AdamCoefs {
  beta1: number;
  g1: number;
  beta2: number;
  g2: number;
  mScale: number;
  rootVScale: number;
  lr: number;
  eps: number;
  decay: number;
  epsMode: 0 | 1 | 2 | 3;
}

/** Coefficients of `momentum`; see there. phi: 0 sign, 1 softsign, 2 identity. */
export interface MomentumCoefs {
  dirM: number;
  dirG: number;
  keepM: number;
  addG: number;
  lr: number;
  weightDecay: number;
  phi: 0 | 1 | 2;
  eps: number;
  block: number;
  rmsScale: boolean;
  rmsFloor: number;
  skipZeroRows: boolean;
}

/** Coefficients of `adafactor`; see there. */
export interface AdafactorCoefs {
  beta2: number;
  eps1: number;
  clipThreshold: number;
  beta1: number;
  lr: number;
  scaleParameter: boolean;
  eps2: number;
  weightDecay: number;
}

/**
 * Precision of a matmul's operands. 'bf16': inp, weight and dout are rounded to bfloat16
 * (nearest even) before multiplying; products, sums, bias and dbias (summed from the
 * unrounded dout) stay float32, as do all stored tensors (mixed precision).
 */
export type MatmulPrecision = 'fp32' | 'bf16';

export interface Kernels<F extends Floats = Float32Array> {
  /** out[BT,OC] = inp[BT,C] · weight[OC,C]ᵀ + bias[OC] (bias may be null). Overwrites out. */
  matmulForward(out: F, inp: F, weight: F, bias: F | null, BT: number, C: number, OC: number, precision?: MatmulPrecision): void;
  /**
   * dinp[BT,C] += dout[BT,OC] · weight[OC,C];  dweight[OC,C] += doutᵀ · inp;
   * dbias[OC] += Σ_rows dout (dbias may be null).
   */
  matmulBackward(dinp: F, dweight: F, dbias: F | null, dout: F, inp: F, weight: F, BT: number, C: number, OC: number, precision?: MatmulPrecision): void;

  /**
   * LayerNorm over the last dimension with ε = 1e-5: out = (x − mean)·rstd·weight + bias.
   * Saves mean[N] and rstd[N] (N rows) for the backward pass.
   */
  layernormForward(out: F, mean: F, rstd: F, inp: F, weight: F, bias: F, N: number, C: number): void;
  /** Accumulates dinp[N,C], dweight[C], dbias[C]. */
  layernormBackward(dinp: F, dweight: F, dbias: F, dout: F, inp: F, weight: F, mean: F, rstd: F, N: number, C: number): void;

  /**
   * Causal multi-head self-attention. qkv[B,T,3C] holds q, k, v (each C = NH·hs, head h at
   * columns h·hs…). att[B,NH,T,T] receives the softmax probabilities (row t uses only
   * columns ≤ t; the rest is left as zeros), out[B,T,C] = att · v per head. Scale 1/√hs.
   */
  attentionForward(out: F, att: F, qkv: F, B: number, T: number, C: number, NH: number): void;
  /** Accumulates dqkv[B,T,3C] from dout[B,T,C], using qkv and att saved by the forward. */
  attentionBackward(dqkv: F, dout: F, qkv: F, att: F, B: number, T: number, C: number, NH: number): void;

  /** out = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), elementwise over N. */
  geluForward(out: F, inp: F, N: number): void;
  /** dinp += gelu'(inp) · dout. */
  geluBackward(dinp: F, inp: F, dout: F, N: number): void;

  /** out = a + b over N elements (out may alias a or b). */
  residualForward(out: F, a: F, b: F, N: number): void;
  /** dst += src over N elements (the backward of a residual or of a fan-out). */
  accumulate(dst: F, src: F, N: number): void;

  /** out[B,T,C] = wte[tokens[b,t]] + wpe[t]. tokens are Int32Array of length B*T. */
  encoderForward(out: F, tokens: Int32Array, wte: F, wpe: F, B: number, T: number, C: number): void;
  /**
   * dwte[tokens[b,t]] += wteScale·dout[b,t];  dwpe[t] += dout[b,t]. wteScale (default 1) is the
   * embedding-gradient shrink α: the lookup's share of the tied wte gradient, not the head's.
   */
  encoderBackward(dwte: F, dwpe: F, dout: F, tokens: Int32Array, B: number, T: number, C: number, wteScale?: number): void;

  /**
   * Fused softmax + cross-entropy over BT rows of V logits, with an optional z-loss (Wortsman
   * et al. 2023, docs/stability.md#z-loss). With lse_i = log Z_i = log Σ_j exp(logits[i,j]):
   *   losses[i] = lse_i − logits[i, targets[i]]  (= −log softmax(logits[i])[targets[i]]; never
   *   includes the z term). If lse is non-null, lse[i] = log Z_i (so the caller forms the z term
   *   Σ lse_i² itself, in float64). If dlogits is non-null, writes the gradient of
   *   scale·Σ_i (losses[i] + zCoef·lse_i²):
   *     dlogits[i] = (softmax(logits[i])·(1 + 2·zCoef·lse_i) − onehot(targets[i]))·scale;
   * with zCoef = 0 (the default) this is bit-identical to the plain cross-entropy gradient.
   * dlogits may alias logits (the probabilities are never stored separately). Returns Σ losses
   * (in float64).
   */
  crossEntropy(losses: F, dlogits: F | null, logits: F, targets: Int32Array, BT: number, V: number, scale: number, zCoef?: number, lse?: F | null): number;

  /**
   * One Adam-family step over N elements (AdamW, AdaX; docs/optimizers.md#adamw, docs/optimizers.md#adax), in place:
   *   m = beta1·m + g1·g;   v = beta2·v + g2·g²;   m̂ = mScale·m;   √v̂ = rootVScale·√v
   *   θ = decay·θ − lr·r,  with r by epsMode:
   *     0 outside  r = m̂/(√v̂ + ε)          (PyTorch; op order: √v·rootVScale + ε)
   *     1 inside   r = m̂/√(v̂ + ε²)
   *     2 zero     r = m̂/√v̂, and r = 0 where v̂ = 0 (never NaN)
   *     3 atan2    r = atan2(m̂, √v̂)          (Adam-atan2, a = b = 1; r = 0 where both are 0)
   * AdamW passes g1 = 1−β1, g2 = 1−β2, mScale = 1/(1−β1ᵗ), rootVScale = 1/√(1−β2ᵗ),
   * decay = 1 − lr·λ. Scalars are rounded to float32 once per call.
   */
  adam(params: F, grads: F, m: F, v: F, N: number, c: AdamCoefs): void;

  /**
   * One momentum step of the sign/SGD family (Lion, Tiger, Signum/SignSGD, SoftSign, SGD), in place:
   *   d = dirM·m + dirG·g          (direction, from the OLD m)
   *   m = keepM·m + addG·g
   *   if lr ≠ 0:  θ = θ − η·(φ(d) + weightDecay·θ)
   * φ by phi: 0 sign (sign(0) = 0), 1 softsign d/√(d² + ε²), 2 identity.
   * block > 0 splits the buffer into consecutive blocks of that many elements (it must divide N).
   * η = lr, or with rmsScale (requires block > 0) η = lr·max(RMS(θ_block), rmsFloor) per block, RMS
   * taken before the update (Tiger's per-tensor block = N and per-embedding-row block = C rates).
   * When skipZeroRows is set (requires block > 0), a block whose gradient is all zero is left
   * completely untouched, m included (lazy embedding updates, docs/optimizers.md#embedding-drift).
   * Lion: d = β1·m + (1−β1)·g, m = β2·m + (1−β2)·g. Tiger: dir = keep coefficients (d = new m).
   */
  momentum(params: F, grads: F, m: F, N: number, c: MomentumCoefs): void;

  /**
   * One Adafactor step (docs/optimizers.md#adafactor) of ONE tensor viewed as [batch, rows, cols], in place.
   * Factored (vc non-null; vr has batch·rows, vc batch·cols elements):
   *   vr = beta2·vr + (1−beta2)·rowmean(g² + eps1);  vc = beta2·vc + (1−beta2)·colmean(g² + eps1)
   *   v̂_ij = vr_i·vc_j / mean(vr)   (means per batch item)
   * Unfactored (vc null; vr has N = batch·rows·cols elements): vr = beta2·vr + (1−beta2)·(g² + eps1), v̂ = vr.
   * Then u = g/√v̂;  u /= max(1, RMS(u)/clipThreshold)  (RMS over the whole tensor);
   *   if mom non-null: mom = beta1·mom + (1−beta1)·u; u = mom;
   *   α = lr·max(eps2, RMS(θ)) if scaleParameter else lr;
   *   θ = θ·(1 − α·weightDecay) − α·u.
   */
  adafactor(params: F, grads: F, vr: F, vc: F | null, mom: F | null, batch: number, rows: number, cols: number, c: AdafactorCoefs): void;

  /** STREAM triad a = b + s·c over N elements (the memory-bandwidth yardstick of the optimizer bench). */
  triad(a: F, b: F, c: F, N: number, s: number): void;
  /** dst += w·(src − dst) over N elements (the weight EMA: w = 1 − β). */
  lerp(dst: F, src: F, N: number, w: number): void;

  /** Σ g² over N elements, accumulated in float64. */
  sumSquares(x: F, N: number): number;
  /** x *= s over N elements (gradient clipping). */
  scale(x: F, N: number, s: number): void;

  /**
   * Σ (cur − prev)² over N elements (difference and square in float64), then prev ← cur: one
   * fused pass. The gradient-noise-scale estimator (src/monitor/noise_scale.ts) keeps `prev` as
   * the accumulated gradient before a micro-batch, so the sum is that micro-batch's share.
   */
  sqDiffCopy(prev: F, cur: F, N: number): number;
}
