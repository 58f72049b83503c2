/**
 * GPT-2 forward and backward, written out explicitly over the kernel contract (no autograd).
 * Pre-LayerNorm blocks, causal multi-head attention, 4C GELU MLP, final LayerNorm, output
 * head tied to the token embedding; loss = mean next-token cross-entropy (nats).
 *
 * Two stability options of Wortsman et al. 2023 (docs/stability.md#z-loss, docs/stability.md#qk-layernorm):
 * - z-loss (`zLoss` coefficient, default 0): the training objective becomes
 *   mean CE + zLoss·mean (log Z)², Z the softmax normaliser of each position's logits.
 *   `forward` still returns the mean CE (what Keel logs as `loss`); `lastZLoss` holds the mean
 *   (log Z)² of the last forward; `backward` differentiates the whole objective (fused into the
 *   cross-entropy kernel: dlogits gains 2·zLoss·log Z·softmax).
 * - QK-layernorm (`config.qkNorm`): after c_attn, the queries and keys of every head are
 *   LayerNorm-ed over hs (gain and bias [hs] per layer, shared by the heads; see params.ts).
 *   The q (and k) block of a qkv row is NH contiguous rows of hs but rows sit 3C apart, so q and
 *   k are copied into contiguous [BT·NH, hs] buffers (kept: the pre-norm values the backward
 *   needs), normalised by the ordinary LayerNorm kernels, and written back into qkv, which the
 *   attention kernels then use unchanged. The copies are O(BT·C) per layer (the matmuls are
 *   O(BT·C²)), need no new kernel or strided variant, and run only when qkNorm is on.
 *
 * Glossary: B batch, T time (= blockSize), C channels, NH heads, V vocab, L layers.
 * Activations are allocated once for a maximum batch size; a call with a smaller B uses the
 * leading part of each buffer (every activation is laid out batch-major).
 */
import type { Floats, Kernels, MatmulPrecision } from '../kernels/types.ts';
import type { GPTConfig } from './config.ts';
import { paramLayout, type ParamLayout, views } from './params.ts';
import { Rng } from '../util/rng.ts';

type FloatCtor<F> = { new (n: number): F };

interface LayerParams<F> {
  ln1w: F;
  ln1b: F;
  qkvw: F;
  qkvb: F;
  attprojw: F;
  attprojb: F;
  ln2w: F;
  ln2b: F;
  fcw: F;
  fcb: F;
  fcprojw: F;
  fcprojb: F;
  /** QK-layernorm gains and biases [hs] (only with config.qkNorm). */
  qnw?: F;
  qnb?: F;
  knw?: F;
  knb?: F;
}

/** Each LayerParams field's tensor, named as in GPT-2 after `transformer.h.{i}.` (src/model/params.ts). */
const LAYER_TENSORS: Record<keyof LayerParams<unknown>, string> = {
  ln1w: 'ln_1.weight',
  ln1b: 'ln_1.bias',
  qkvw: 'attn.c_attn.weight',
  qkvb: 'attn.c_attn.bias',
  attprojw: 'attn.c_proj.weight',
  attprojb: 'attn.c_proj.bias',
  ln2w: 'ln_2.weight',
  ln2b: 'ln_2.bias',
  fcw: 'mlp.c_fc.weight',
  fcb: 'mlp.c_fc.bias',
  fcprojw: 'mlp.c_proj.weight',
  fcprojb: 'mlp.c_proj.bias',
  qnw: 'attn.q_norm.weight',
  qnb: 'attn.q_norm.bias',
  knw: 'attn.k_norm.weight',
  knb: 'attn.k_norm.bias',
};

/** QK-layernorm activations of one layer: pre-norm q and k (BT·NH, hs) and their statistics (BT·NH). */
interface QKActs<F> {
  qPre: F;
  qMean: F;
  qRstd: F;
  kPre: F;
  kMean: F;
  kRstd: F;
}

export interface GPTOptions<F> {
  /** Largest batch a forward may use (activations are allocated for it). */
  maxBatch: number;
  /** Float32Array (default) or Float64Array (gradient checks on the reference kernels). */
  ctor?: FloatCtor<F>;
  /** z-loss coefficient (≥ 0, default 0 = off); Wortsman et al. use 1e-4. */
  zLoss?: number;
  /**
   * Precision of the linear layers' matmuls (default 'fp32'). 'bf16' is mixed precision:
   * operands rounded to bfloat16, fp32 accumulation; weights, gradients, activations and
   * optimizer state stay fp32 (see MatmulPrecision).
   */
  precision?: MatmulPrecision;
}

// Row copies by TypedArray.set (a memcpy per row: ~3× faster than an element loop here).

/** rows × C floats: dst[r·C + i] = src[r·stride + off + i]. */
function gather<F extends Floats>(dst: F, src: F, rows: number, C: number, stride: number, off: number): void {
  for (let r = 0; r < rows; r++) dst.set(src.subarray(r * stride + off, r * stride + off + C), r * C);
}

/** The inverse of gather: dst[r·stride + off + i] = src[r·C + i]. */
function scatter<F extends Floats>(dst: F, src: F, rows: number, C: number, stride: number, off: number): void {
  for (let r = 0; r < rows; r++) dst.set(src.subarray(r * C, r * C + C), r * stride + off);
}

function checkPrecision(p: string): MatmulPrecision {
  if (p !== 'fp32' && p !== 'bf16') throw new RangeError(`precision must be 'fp32' or 'bf16', got ${p}`);
  return p;
}

function checkZLoss(z: number): number {
  if (!(Number.isFinite(z) && z >= 0)) throw new RangeError(`zLoss must be a finite number >= 0, got ${z}`);
  return z;
}

interface LayerActs<F> {
  inp: F; // (B,T,C) the residual stream entering the block
  ln1: F;
  ln1Mean: F;
  ln1Rstd: F; // (B,T,C), (B,T), (B,T)
  qkv: F; // (B,T,3C); with qkNorm q and k are stored normalised
  qk: QKActs<F> | null; // QK-layernorm (B·T·NH, hs) pre-norm values and statistics, or null
  att: F; // (B,NH,T,T)
  atty: F; // (B,T,C)
  attproj: F; // (B,T,C)
  res2: F; // (B,T,C)
  ln2: F;
  ln2Mean: F;
  ln2Rstd: F;
  fch: F; // (B,T,4C)
  fchGelu: F; // (B,T,4C)
  fcproj: F; // (B,T,C)
}

export class GPT<F extends Floats = Float32Array> {
  readonly config: GPTConfig;
  readonly layout: ParamLayout;
  /** All parameters, one flat buffer. */
  readonly params: F;
  /** All gradients, same layout. */
  readonly grads: F;
  readonly maxBatch: number;
  /** Precision of the linear layers' matmuls (GPTOptions.precision). */
  readonly precision: MatmulPrecision;
  private readonly k: Kernels<F>;
  private readonly p: { wte: F; wpe: F; lnfw: F; lnfb: F; layers: LayerParams<F>[] };
  private readonly g: { wte: F; wpe: F; lnfw: F; lnfb: F; layers: LayerParams<F>[] };
  private readonly acts: {
    encoded: F;
    layers: LayerActs<F>[];
    resid: F;
    lnf: F;
    lnfMean: F;
    lnfRstd: F;
    logits: F;
    losses: F;
    lse: F;
  };
  private readonly scratch: { dres: F; dC: F; dC2: F; d3C: F; d4C: F; d4C2: F };
  private lastBatch: { tokens: Int32Array; targets: Int32Array; B: number } | null = null;
  private zCoef = 0;
  /**
   * Mean over positions of (log Z)² in the last forward with targets (NaN before one, or
   * after a forward without targets). The objective backward differentiates is
   * `loss + zLoss·lastZLoss`.
   */
  lastZLoss = NaN;

  constructor(config: GPTConfig, kernels: Kernels<F>, opts: GPTOptions<F>) {
    this.config = config;
    this.k = kernels;
    this.maxBatch = opts.maxBatch;
    this.zCoef = checkZLoss(opts.zLoss ?? 0);
    this.precision = checkPrecision(opts.precision ?? 'fp32');
    const Ctor = opts.ctor ?? (Float32Array as unknown as FloatCtor<F>);
    this.layout = paramLayout(config);
    this.params = new Ctor(this.layout.total);
    this.grads = new Ctor(this.layout.total);
    this.p = this.bind(views(this.layout, this.params));
    this.g = this.bind(views(this.layout, this.grads));

    const { nLayer: L, nHead: NH, nEmbd: C, blockSize: T, vocabSize: V } = config;
    const B = opts.maxBatch;
    const qkNorm = config.qkNorm === true;
    const BT = B * T;
    const a = (n: number) => new Ctor(n);
    const layers: LayerActs<F>[] = [];
    const encoded = a(BT * C);
    let inp = encoded;
    for (let l = 0; l < L; l++) {
      const acts: LayerActs<F> = {
        inp,
        ln1: a(BT * C),
        ln1Mean: a(BT),
        ln1Rstd: a(BT),
        qkv: a(BT * 3 * C),
        att: a(B * NH * T * T),
        atty: a(BT * C),
        attproj: a(BT * C),
        res2: a(BT * C),
        ln2: a(BT * C),
        ln2Mean: a(BT),
        ln2Rstd: a(BT),
        fch: a(BT * 4 * C),
        fchGelu: a(BT * 4 * C),
        fcproj: a(BT * C),
        qk: qkNorm ? { qPre: a(BT * C), qMean: a(BT * NH), qRstd: a(BT * NH), kPre: a(BT * C), kMean: a(BT * NH), kRstd: a(BT * NH) } : null,
      };
      layers.push(acts);
      inp = a(BT * C); // the block's output = next block's input
    }
    this.acts = {
      encoded,
      layers,
      resid: inp,
      lnf: a(BT * C),
      lnfMean: a(BT),
      lnfRstd: a(BT),
      logits: a(BT * V),
      losses: a(BT),
      lse: a(BT),
    };
    this.scratch = { dres: a(BT * C), dC: a(BT * C), dC2: a(BT * C), d3C: a(BT * 3 * C), d4C: a(BT * 4 * C), d4C2: a(BT * 4 * C) };
  }

  /** z-loss coefficient (≥ 0; 0 = off). Takes effect at the next backward. */
  get zLoss(): number {
    return this.zCoef;
  }

  set zLoss(z: number) {
    this.zCoef = checkZLoss(z);
  }

  /** Number of parameters (the tied head counted once). */
  get numParams(): number {
    return this.layout.total;
  }

  /** Output of each block, in order (the input of the next one). */
  private blockOut(l: number): F {
    return l + 1 < this.config.nLayer ? this.acts.layers[l + 1].inp : this.acts.resid;
  }

  private bind(v: Map<string, F>) {
    const get = (n: string) => v.get(n)!;
    const layers = Array.from({ length: this.config.nLayer }, (_, i) => {
      const named = Object.entries(LAYER_TENSORS).map(([key, name]) => [key, v.get(`transformer.h.${i}.${name}`)]);
      return Object.fromEntries(named) as LayerParams<F>; // params.ts lays out every name (the q/k norms with qkNorm only)
    });
    return {
      wte: get('transformer.wte.weight'),
      wpe: get('transformer.wpe.weight'),
      lnfw: get('transformer.ln_f.weight'),
      lnfb: get('transformer.ln_f.bias'),
      layers,
    };
  }

  /**
   * GPT-2 initialisation (docs/architecture.md#initialisation): weights N(0, 0.02²), residual output projections
   * N(0, (0.02/√(2L))²), biases 0, LayerNorm gains 1 (QK-layernorm's included). Deterministic
   * in `seed` (the QK-layernorm tensors draw no random numbers, so the other tensors get the
   * same values with and without qkNorm).
   */
  init(seed: number): void {
    const rng = new Rng(seed);
    const residStd = 0.02 / Math.sqrt(2 * this.config.nLayer);
    for (const t of this.layout.tensors) {
      const view = this.params.subarray(t.offset, t.offset + t.size);
      if (t.kind === 'gain') view.fill(1);
      else if (t.kind === 'bias') view.fill(0);
      else {
        const std = t.name.endsWith('c_proj.weight') ? residStd : 0.02;
        for (let i = 0; i < t.size; i++) view[i] = rng.normal() * std;
      }
    }
  }

  /**
   * Forward pass over B sequences of T = blockSize tokens. Returns the mean cross-entropy when
   * targets are given (without the z term, which goes to `lastZLoss`), NaN otherwise.
   */
  forward(tokens: Int32Array, targets: Int32Array | null, B: number): number {
    const { nLayer: L, nHead: NH, nEmbd: C, blockSize: T, vocabSize: V } = this.config;
    if (B > this.maxBatch) throw new Error(`batch ${B} exceeds the model's maxBatch ${this.maxBatch}`);
    if (tokens.length < B * T) throw new Error(`expected ${B * T} tokens, got ${tokens.length}`);
    const k = this.k;
    const BT = B * T;
    const { p, acts } = this;
    k.encoderForward(acts.encoded, tokens, p.wte, p.wpe, B, T, C);
    for (let l = 0; l < L; l++) {
      const w = p.layers[l];
      const a = acts.layers[l];
      k.layernormForward(a.ln1, a.ln1Mean, a.ln1Rstd, a.inp, w.ln1w, w.ln1b, BT, C);
      k.matmulForward(a.qkv, a.ln1, w.qkvw, w.qkvb, BT, C, 3 * C, this.precision);
      if (a.qk) this.qkNormForward(a.qk, a.qkv, w, BT);
      k.attentionForward(a.atty, a.att, a.qkv, B, T, C, NH);
      k.matmulForward(a.attproj, a.atty, w.attprojw, w.attprojb, BT, C, C, this.precision);
      k.residualForward(a.res2, a.inp, a.attproj, BT * C);
      k.layernormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.res2, w.ln2w, w.ln2b, BT, C);
      k.matmulForward(a.fch, a.ln2, w.fcw, w.fcb, BT, C, 4 * C, this.precision);
      k.geluForward(a.fchGelu, a.fch, BT * 4 * C);
      k.matmulForward(a.fcproj, a.fchGelu, w.fcprojw, w.fcprojb, BT, 4 * C, C, this.precision);
      k.residualForward(this.blockOut(l), a.res2, a.fcproj, BT * C);
    }
    k.layernormForward(acts.lnf, acts.lnfMean, acts.lnfRstd, acts.resid, p.lnfw, p.lnfb, BT, C);
    k.matmulForward(acts.logits, acts.lnf, p.wte, null, BT, C, V, this.precision);
    this.lastBatch = targets ? { tokens, targets, B } : null;
    this.lastZLoss = NaN;
    if (!targets) return NaN;
    const ce = k.crossEntropy(acts.losses, null, acts.logits, targets, BT, V, 0, 0, acts.lse) / BT;
    let zsq = 0;
    for (let i = 0; i < BT; i++) zsq += acts.lse[i] * acts.lse[i];
    this.lastZLoss = zsq / BT;
    return ce;
  }

  /** QK-layernorm forward: normalises q (columns [0, C)) and k ([C, 2C)) of qkv in place. */
  private qkNormForward(qk: QKActs<F>, qkv: F, w: LayerParams<F>, BT: number): void {
    const { nHead: NH, nEmbd: C } = this.config;
    const hs = C / NH;
    const tmp = this.scratch.dC; // free during the forward
    gather(qk.qPre, qkv, BT, C, 3 * C, 0);
    this.k.layernormForward(tmp, qk.qMean, qk.qRstd, qk.qPre, w.qnw!, w.qnb!, BT * NH, hs);
    scatter(qkv, tmp, BT, C, 3 * C, 0);
    gather(qk.kPre, qkv, BT, C, 3 * C, C);
    this.k.layernormForward(tmp, qk.kMean, qk.kRstd, qk.kPre, w.knw!, w.knb!, BT * NH, hs);
    scatter(qkv, tmp, BT, C, 3 * C, C);
  }

  /**
   * QK-layernorm backward: replaces the q and k columns of dqkv (gradients w.r.t. the
   * normalised q, k) by the gradients w.r.t. the pre-norm q, k; accumulates the norms' gains
   * and biases into dw. Uses scratch dC and dC2.
   */
  private qkNormBackward(qk: QKActs<F>, dqkv: F, w: LayerParams<F>, dw: LayerParams<F>, BT: number): void {
    const { nHead: NH, nEmbd: C } = this.config;
    const hs = C / NH;
    const { dC: dn, dC2: dpre } = this.scratch;
    for (const [off, pre, mean, rstd, gw, dgw, dgb] of [
      [0, qk.qPre, qk.qMean, qk.qRstd, w.qnw!, dw.qnw!, dw.qnb!],
      [C, qk.kPre, qk.kMean, qk.kRstd, w.knw!, dw.knw!, dw.knb!],
    ] as const) {
      gather(dn, dqkv, BT, C, 3 * C, off);
      dpre.fill(0, 0, BT * C);
      this.k.layernormBackward(dpre, dgw, dgb, dn, pre, gw, mean, rstd, BT * NH, hs);
      scatter(dqkv, dpre, BT, C, 3 * C, off);
    }
  }

  /** Logits (B,T,V) of the last forward pass (overwritten by backward). */
  logits(B: number): F {
    return this.acts.logits.subarray(0, B * this.config.blockSize * this.config.vocabSize) as F;
  }

  /**
   * Backward pass of the last forward (which must have had targets). ACCUMULATES into grads
   * the gradient of lossScale × (mean loss + zLoss·mean (log Z)²) (lossScale = 1/accum for
   * gradient accumulation). embedScale < 1 is the embedding-gradient shrink: the token lookup's
   * share of wte's gradient × embedScale (docs/stability.md#embedding-gradient-shrink).
   */
  backward(lossScale = 1, embedScale = 1): void {
    if (!this.lastBatch) throw new Error('backward() needs a forward() with targets first');
    const { tokens, targets, B } = this.lastBatch;
    const { nLayer: L, nHead: NH, nEmbd: C, blockSize: T, vocabSize: V } = this.config;
    const k = this.k;
    const BT = B * T;
    const { p, g, acts } = this;
    const s = this.scratch;
    const zero = (x: F, n: number) => x.fill(0, 0, n);

    // Loss → logits (in place) → final LayerNorm.
    k.crossEntropy(acts.losses, acts.logits, acts.logits, targets, BT, V, lossScale / BT, this.zCoef);
    zero(s.dC, BT * C);
    k.matmulBackward(s.dC, g.wte, null, acts.logits, acts.lnf, p.wte, BT, C, V, this.precision);
    zero(s.dres, BT * C);
    k.layernormBackward(s.dres, g.lnfw, g.lnfb, s.dC, acts.resid, p.lnfw, acts.lnfMean, acts.lnfRstd, BT, C);

    // dres holds dLoss/d(residual stream) and flows down through every block.
    for (let l = L - 1; l >= 0; l--) {
      const w = p.layers[l];
      const dw = g.layers[l];
      const a = acts.layers[l];
      // MLP: out = res2 + fcproj(gelu(fc(ln2(res2)))).
      zero(s.d4C, BT * 4 * C);
      k.matmulBackward(s.d4C, dw.fcprojw, dw.fcprojb, s.dres, a.fchGelu, w.fcprojw, BT, 4 * C, C, this.precision);
      zero(s.d4C2, BT * 4 * C);
      k.geluBackward(s.d4C2, a.fch, s.d4C, BT * 4 * C);
      zero(s.dC, BT * C);
      k.matmulBackward(s.dC, dw.fcw, dw.fcb, s.d4C2, a.ln2, w.fcw, BT, C, 4 * C, this.precision);
      k.layernormBackward(s.dres, dw.ln2w, dw.ln2b, s.dC, a.res2, w.ln2w, a.ln2Mean, a.ln2Rstd, BT, C);
      // Attention: res2 = inp + attproj(attention(qkv(ln1(inp)))).
      zero(s.dC2, BT * C);
      k.matmulBackward(s.dC2, dw.attprojw, dw.attprojb, s.dres, a.atty, w.attprojw, BT, C, C, this.precision);
      zero(s.d3C, BT * 3 * C);
      k.attentionBackward(s.d3C, s.dC2, a.qkv, a.att, B, T, C, NH);
      if (a.qk) this.qkNormBackward(a.qk, s.d3C, w, dw, BT);
      zero(s.dC, BT * C);
      k.matmulBackward(s.dC, dw.qkvw, dw.qkvb, s.d3C, a.ln1, w.qkvw, BT, C, 3 * C, this.precision);
      k.layernormBackward(s.dres, dw.ln1w, dw.ln1b, s.dC, a.inp, w.ln1w, a.ln1Mean, a.ln1Rstd, BT, C);
    }
    // GLM-130B's shrink, e = α·e + (1 − α)·stop_grad(e): only the lookup's share of the tied wte gradient is scaled.
    k.encoderBackward(g.wte, g.wpe, s.dres, tokens, B, T, C, embedScale);
    this.lastBatch = null;
  }

  zeroGrad(): void {
    this.grads.fill(0);
  }
}
