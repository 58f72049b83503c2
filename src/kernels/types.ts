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

export interface Kernels<F extends Floats = Float32Array> {
  /** out[BT,OC] = inp[BT,C] · weight[OC,C]ᵀ + bias[OC] (bias may be null). Overwrites out. */
  matmulForward(out: F, inp: F, weight: F, bias: F | null, BT: number, C: number, OC: number): void;
  /**
   * dinp[BT,C] += dout[BT,OC] · weight[OC,C];  dweight[OC,C] += doutᵀ · inp;
   * dbias[OC] += Σ_rows dout (dbias may be null).
   */
  matmulBackward(
    dinp: F, dweight: F, dbias: F | null, dout: F, inp: F, weight: F,
    BT: number, C: number, OC: number,
  ): void;

  /**
   * LayerNorm over the last dimension with ε = 1e-5: out = (x − mean)·rstd·weight + bias.
   * Saves mean[N] and rstd[N] (N rows) for the backward pass.
   */
  layernormForward(out: F, mean: F, rstd: F, inp: F, weight: F, bias: F, N: number, C: number): void;
  /** Accumulates dinp[N,C], dweight[C], dbias[C]. */
  layernormBackward(
    dinp: F, dweight: F, dbias: F, dout: F, inp: F, weight: F, mean: F, rstd: F, N: number, C: number,
  ): void;

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
  /** dwte[tokens[b,t]] += dout[b,t];  dwpe[t] += dout[b,t]. */
  encoderBackward(dwte: F, dwpe: F, dout: F, tokens: Int32Array, B: number, T: number, C: number): void;

  /**
   * Fused softmax + cross-entropy over BT rows of V logits. losses[i] = −log softmax(logits[i])[targets[i]].
   * If dlogits is non-null, also writes dlogits[i] = (softmax(logits[i]) − onehot(targets[i]))·scale;
   * dlogits may alias logits (the probabilities are never stored separately). Returns Σ losses
   * (in float64).
   */
  crossEntropy(losses: F, dlogits: F | null, logits: F, targets: Int32Array, BT: number, V: number, scale: number): number;

  /**
   * One AdamW step (PyTorch semantics) over N elements:
   *   m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;  m̂ = m/(1−β1ᵗ);  v̂ = v/(1−β2ᵗ)
   *   θ = θ − lr·(m̂/(√v̂ + ε) + weightDecay·θ)   (decoupled decay: θ·(1 − lr·λ) first)
   * t is the 1-based step number.
   */
  adamw(
    params: F, grads: F, m: F, v: F, N: number,
    lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, t: number,
  ): void;
  /** Σ g² over N elements, accumulated in float64. */
  sumSquares(x: F, N: number): number;
  /** x *= s over N elements (gradient clipping). */
  scale(x: F, N: number, s: number): void;
}
