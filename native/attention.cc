// Causal multi-head self-attention, forward and backward. Contract: src/kernels/types.ts.
//
// Glossary: B batch, T time (sequence), C channels, NH heads, hs = C/NH head size,
// qkv[B,T,3C] (q | k | v, head h at columns h·hs), att[B,NH,T,T] softmax probabilities
// (zeros above the diagonal), out[B,T,C]. scale = 1/√hs.
//
// Work is split over the B·NH (batch, head) pairs: pairs touch disjoint columns of out and
// dqkv, so threads never race. The portable body is the textbook per-row loop. The AVX2 body
// treats one pair as four small GEMMs over the lower triangle, computed with a register-
// blocked micro-kernel (R=4 rows × 16 columns of accumulators, one broadcast of A and two
// vector loads of B per k); operands are first packed into per-thread scratch, zero-padded
// so every vector load stays inside it:
//   forward:  S = Q·Kᵀ (row blocks, only the column tiles that reach the diagonal),
//             P = softmax(scale·S) (vectorised exp), out = P·V (k only up to the diagonal)
//   backward: dP = dO·Vᵀ,  dS = P ⊙ (dP − rowsum(P⊙dP))·scale,
//             dQ = dS·K,  dK = dSᵀ·Q,  dV = Pᵀ·dO   (k ranges cut at the diagonal).
#include <napi.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "args.h"
#include "kernel_util.h"
#include "pool.h"
#include "simd.h"

namespace keel {
namespace {

// Per-thread scratch, grown on first use and then reused by every later call on the
// same pool thread (no allocation in steady state).
float* scratch(size_t n) {
  static thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

struct Dims {
  int64_t B, T, C, NH, hs;
  float scale;
};

// ---- portable ------------------------------------------------------------------------------

void attn_fwd_port(float* out, float* att, const float* qkv, const Dims& d, int64_t bh) {
  const int64_t T = d.T, C = d.C, C3 = 3 * d.C, hs = d.hs;
  const int64_t b = bh / d.NH, h = bh % d.NH;
  for (int64_t t = 0; t < T; ++t) {
    const float* q = qkv + (b * T + t) * C3 + h * hs;
    float* row = att + (bh * T + t) * T;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t t2 = 0; t2 <= t; ++t2) {
      const float* k = qkv + (b * T + t2) * C3 + C + h * hs;
      float s = 0.0f;
      for (int64_t i = 0; i < hs; ++i) s += q[i] * k[i];
      s *= d.scale;
      row[t2] = s;
      mx = s > mx ? s : mx;
    }
    float sum = 0.0f;
    for (int64_t t2 = 0; t2 <= t; ++t2) {
      const float e = exp_scalar(row[t2] - mx);
      row[t2] = e;
      sum += e;
    }
    const float inv = 1.0f / sum;
    for (int64_t t2 = 0; t2 <= t; ++t2) row[t2] *= inv;
    for (int64_t t2 = t + 1; t2 < T; ++t2) row[t2] = 0.0f;
    float* o = out + (b * T + t) * C + h * hs;
    for (int64_t i = 0; i < hs; ++i) o[i] = 0.0f;
    for (int64_t t2 = 0; t2 <= t; ++t2) {
      const float* v = qkv + (b * T + t2) * C3 + 2 * C + h * hs;
      const float p = row[t2];
      for (int64_t i = 0; i < hs; ++i) o[i] += p * v[i];
    }
  }
}

void attn_bwd_port(float* dqkv, const float* dout, const float* qkv, const float* att, const Dims& d, int64_t bh) {
  const int64_t T = d.T, C = d.C, C3 = 3 * d.C, hs = d.hs;
  const int64_t b = bh / d.NH, h = bh % d.NH;
  float* dp = scratch((size_t)T);  // one row of dP, then dS
  for (int64_t t = 0; t < T; ++t) {
    const float* p = att + (bh * T + t) * T;
    const float* go = dout + (b * T + t) * C + h * hs;
    const float* q = qkv + (b * T + t) * C3 + h * hs;
    float* dq = dqkv + (b * T + t) * C3 + h * hs;
    float dot = 0.0f;
    for (int64_t t2 = 0; t2 <= t; ++t2) {
      const float* v = qkv + (b * T + t2) * C3 + 2 * C + h * hs;
      float* dv = dqkv + (b * T + t2) * C3 + 2 * C + h * hs;
      float s = 0.0f;
      for (int64_t i = 0; i < hs; ++i) {
        s += go[i] * v[i];
        dv[i] += p[t2] * go[i];
      }
      dp[t2] = s;
      dot += p[t2] * s;
    }
    for (int64_t t2 = 0; t2 <= t; ++t2) {
      const float ds = p[t2] * (dp[t2] - dot) * d.scale;
      const float* k = qkv + (b * T + t2) * C3 + C + h * hs;
      float* dk = dqkv + (b * T + t2) * C3 + C + h * hs;
      for (int64_t i = 0; i < hs; ++i) {
        dq[i] += ds * k[i];
        dk[i] += ds * q[i];
      }
    }
  }
}

// ---- AVX2 --------------------------------------------------------------------------------

#if KEEL_X86
// c[r][j] = Σ_{k<K} a[r·a_rs + k·a_ks] · b[k·ldb + j] for r < R, j < 8·NV (overwrites c).
// Strides let the same kernel read A row-major (a_ks = 1) or transposed (a_rs = 1).
template <int R, int NV>
KEEL_AVX2 static inline void tile(float* c, int64_t ldc, const float* a, int64_t a_rs, int64_t a_ks,
                                  const float* b, int64_t ldb, int64_t K) {
  __m256 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m256 bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = _mm256_loadu_ps(b + k * ldb + 8 * v);
    const float* ak = a + k * a_ks;
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(ak + r * a_rs);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
}

template <int R>
KEEL_AVX2 static inline void gemm_rows_r(float* c, int64_t ldc, const float* a, int64_t a_rs, int64_t a_ks,
                                         const float* b, int64_t ldb, int64_t K, int64_t ncols) {
  int64_t j = 0;
  for (; j + 16 <= ncols; j += 16) tile<R, 2>(c + j, ldc, a, a_rs, a_ks, b + j, ldb, K);
  if (j < ncols) tile<R, 1>(c + j, ldc, a, a_rs, a_ks, b + j, ldb, K);
}

// nr (1..4) rows × ncols (a multiple of 8) of C = A·B, with A addressed through strides.
KEEL_AVX2 void gemm_rows(int64_t nr, float* c, int64_t ldc, const float* a, int64_t a_rs, int64_t a_ks,
                         const float* b, int64_t ldb, int64_t K, int64_t ncols) {
  switch (nr) {
    case 4: return gemm_rows_r<4>(c, ldc, a, a_rs, a_ks, b, ldb, K, ncols);
    case 3: return gemm_rows_r<3>(c, ldc, a, a_rs, a_ks, b, ldb, K, ncols);
    case 2: return gemm_rows_r<2>(c, ldc, a, a_rs, a_ks, b, ldb, K, ncols);
    default: return gemm_rows_r<1>(c, ldc, a, a_rs, a_ks, b, ldb, K, ncols);
  }
}

constexpr int64_t kR = 4;  // rows per block of the micro-kernel

// src rows [T, hs] with row stride `ld` → dst [T, hsp] zero-padded.
void pack_rows(float* dst, const float* src, int64_t ld, int64_t T, int64_t hs, int64_t hsp) {
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(dst + t * hsp, src + t * ld, (size_t)hs * sizeof(float));
    for (int64_t i = hs; i < hsp; ++i) dst[t * hsp + i] = 0.0f;
  }
}

// src rows [T, hs] with row stride `ld` → dst [hs, Tp] (transposed), columns ≥ T zero.
void pack_transposed(float* dst, const float* src, int64_t ld, int64_t T, int64_t hs, int64_t Tp) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < hs; ++i) dst[i * Tp + t] = src[t * ld + i];
  for (int64_t i = 0; i < hs; ++i)
    for (int64_t t = T; t < Tp; ++t) dst[i * Tp + t] = 0.0f;
}

// Softmax of one scratch row s[0..n) (raw q·k): s ← e^(scale·(s − max)) / Σ, and s[n..end) ← 0.
KEEL_AVX2 void softmax_row(float* s, int64_t n, int64_t end, float scale) {
  const int64_t n8 = n & ~int64_t(7), rem = n - n8;
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256i tm = tail_mask(rem);
  __m256 vmax = ninf;
  for (int64_t i = 0; i < n8; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + i));
  __m256 last = ninf;
  if (rem) {
    last = _mm256_blendv_ps(ninf, _mm256_loadu_ps(s + n8), _mm256_castsi256_ps(tm));
    vmax = _mm256_max_ps(vmax, last);
  }
  const float mx = hmax256(vmax);
  const __m256 vs = _mm256_set1_ps(scale), vb = _mm256_set1_ps(-scale * mx);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 e = exp256(_mm256_fmadd_ps(_mm256_loadu_ps(s + i), vs, vb));
    _mm256_storeu_ps(s + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (rem) {
    const __m256 e = exp256(_mm256_fmadd_ps(last, vs, vb));  // −inf lanes → 0
    _mm256_storeu_ps(s + n8, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / hsum256(sum));
  const int64_t nb = n8 + (rem ? 8 : 0);
  for (int64_t i = 0; i < nb; i += 8) _mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), inv));
  for (int64_t i = nb; i < end; ++i) s[i] = 0.0f;
}

KEEL_AVX2 void attn_fwd_avx2(float* out, float* att, const float* qkv, const Dims& d, int64_t bh) {
  const int64_t T = d.T, C = d.C, C3 = 3 * d.C, hs = d.hs;
  const int64_t b = bh / d.NH, h = bh % d.NH;
  const int64_t Tp = round_up(T, 16), hsp = round_up(hs, 8);
  float* kt = scratch((size_t)(hs * Tp + T * hsp + kR * Tp + kR * hsp));  // Kᵀ | V | S | O
  float* vp = kt + hs * Tp;
  float* S = vp + T * hsp;
  float* O = S + kR * Tp;
  const float* base = qkv + b * T * C3 + h * hs;
  pack_transposed(kt, base + C, C3, T, hs, Tp);
  pack_rows(vp, base + 2 * C, C3, T, hs, hsp);
  for (int64_t t0 = 0; t0 < T; t0 += kR) {
    const int64_t nr = T - t0 < kR ? T - t0 : kR;
    const int64_t kend = t0 + nr;               // keys 0..kend-1 reach this block
    const int64_t ncol = round_up(kend, 16);   // ≤ Tp
    gemm_rows(nr, S, Tp, base + t0 * C3, C3, 1, kt, Tp, hs, ncol);
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t t = t0 + r;
      float* s = S + r * Tp;
      softmax_row(s, t + 1, ncol, d.scale);
      float* arow = att + (bh * T + t) * T;
      std::memcpy(arow, s, (size_t)(t + 1) * sizeof(float));
      std::memset(arow + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
    }
    gemm_rows(nr, O, hsp, S, Tp, 1, vp, hsp, kend, hsp);
    for (int64_t r = 0; r < nr; ++r)
      std::memcpy(out + (b * T + t0 + r) * C + h * hs, O + r * hsp, (size_t)hs * sizeof(float));
  }
}

// dst[0..hs) += src[0..hs)
KEEL_AVX2 static inline void add_row(float* dst, const float* src, int64_t hs) {
  int64_t i = 0;
  for (; i + 8 <= hs; i += 8) _mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), _mm256_loadu_ps(src + i)));
  for (; i < hs; ++i) dst[i] += src[i];
}

KEEL_AVX2 void attn_bwd_avx2(float* dqkv, const float* dout, const float* qkv, const float* att, const Dims& d,
                             int64_t bh) {
  const int64_t T = d.T, C = d.C, C3 = 3 * d.C, hs = d.hs;
  const int64_t b = bh / d.NH, h = bh % d.NH;
  const int64_t Tp = round_up(T, 16), hsp = round_up(hs, 8);
  // Vᵀ [hs,Tp] | Q, K, dO [T,hsp] | dS [T,Tp] | tile output [4,hsp]
  float* vt = scratch((size_t)(hs * Tp + 3 * T * hsp + T * Tp + kR * hsp));
  float* qp = vt + hs * Tp;
  float* kp = qp + T * hsp;
  float* dop = kp + T * hsp;
  float* dS = dop + T * hsp;
  float* O = dS + T * Tp;
  const float* base = qkv + b * T * C3 + h * hs;
  const float* dbase = dout + b * T * C + h * hs;
  const float* P = att + bh * T * T;
  float* dq_base = dqkv + b * T * C3 + h * hs;
  pack_transposed(vt, base + 2 * C, C3, T, hs, Tp);
  pack_rows(qp, base, C3, T, hs, hsp);
  pack_rows(kp, base + C, C3, T, hs, hsp);
  pack_rows(dop, dbase, C, T, hs, hsp);
  const __m256 vscale = _mm256_set1_ps(d.scale);

  // Row blocks: dP (into dS), then dS in place, then dQ for these rows.
  for (int64_t t0 = 0; t0 < T; t0 += kR) {
    const int64_t nr = T - t0 < kR ? T - t0 : kR;
    const int64_t kend = t0 + nr;
    const int64_t ncol = round_up(kend, 16);
    gemm_rows(nr, dS + t0 * Tp, Tp, dbase + t0 * C, C, 1, vt, Tp, hs, ncol);
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t t = t0 + r, n = t + 1;
      const int64_t n8 = n & ~int64_t(7), rem = n - n8;
      const __m256i tm = tail_mask(rem);
      const float* p = P + t * T;
      float* ds = dS + t * Tp;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t i = 0; i < n8; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(p + i), _mm256_loadu_ps(ds + i), acc);
      __m256 ptail = _mm256_setzero_ps();
      if (rem) {
        ptail = _mm256_maskload_ps(p + n8, tm);  // att rows end at T: masked, never past it
        acc = _mm256_fmadd_ps(ptail, _mm256_loadu_ps(ds + n8), acc);
      }
      const __m256 dot = _mm256_set1_ps(hsum256(acc));
      for (int64_t i = 0; i < n8; i += 8) {
        const __m256 g = _mm256_mul_ps(_mm256_loadu_ps(p + i), _mm256_sub_ps(_mm256_loadu_ps(ds + i), dot));
        _mm256_storeu_ps(ds + i, _mm256_mul_ps(g, vscale));
      }
      int64_t zero_from = n8;
      if (rem) {  // lanes past the diagonal have p = 0, so they come out 0
        const __m256 g = _mm256_mul_ps(ptail, _mm256_sub_ps(_mm256_loadu_ps(ds + n8), dot));
        _mm256_storeu_ps(ds + n8, _mm256_mul_ps(g, vscale));
        zero_from = n8 + 8;
      }
      for (int64_t i = zero_from; i < ncol; ++i) ds[i] = 0.0f;
    }
    gemm_rows(nr, O, hsp, dS + t0 * Tp, Tp, 1, kp, hsp, kend, hsp);  // dQ rows
    for (int64_t r = 0; r < nr; ++r) add_row(dq_base + (t0 + r) * C3, O + r * hsp, hs);
  }

  // Key blocks: dK = dSᵀ·Q and dV = Pᵀ·dO, over the queries at or after each key.
  for (int64_t j0 = 0; j0 < T; j0 += kR) {
    const int64_t nr = T - j0 < kR ? T - j0 : kR;
    const int64_t K = T - j0;
    gemm_rows(nr, O, hsp, dS + j0 * Tp + j0, 1, Tp, qp + j0 * hsp, hsp, K, hsp);
    for (int64_t r = 0; r < nr; ++r) add_row(dq_base + (j0 + r) * C3 + C, O + r * hsp, hs);
    gemm_rows(nr, O, hsp, P + j0 * T + j0, 1, T, dop + j0 * hsp, hsp, K, hsp);
    for (int64_t r = 0; r < nr; ++r) add_row(dq_base + (j0 + r) * C3 + 2 * C, O + r * hsp, hs);
  }
}
#endif  // KEEL_X86

bool read_dims(const Napi::CallbackInfo& info, size_t first, Dims* d) {
  if (!size_arg(info, first, &d->B) || !size_arg(info, first + 1, &d->T) || !size_arg(info, first + 2, &d->C) ||
      !size_arg(info, first + 3, &d->NH, 1))
    return false;
  if (d->C % d->NH != 0) {
    return range_error(info, "C (" + std::to_string(d->C) + ") must be divisible by NH (" + std::to_string(d->NH) + ")");
  }
  d->hs = d->C / d->NH;
  d->scale = d->hs > 0 ? (float)(1.0 / std::sqrt((double)d->hs)) : 0.0f;
  return true;
}

Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!need_args(info, 7, "attentionForward")) return env.Undefined();
  Dims d;
  if (!read_dims(info, 3, &d)) return env.Undefined();
  float* out = f32(info, 0, d.B * d.T * d.C);
  if (!out) return env.Undefined();
  float* att = f32(info, 1, d.B * d.NH * d.T * d.T);
  if (!att) return env.Undefined();
  const float* qkv = f32(info, 2, d.B * d.T * 3 * d.C);
  if (!qkv) return env.Undefined();
  if (d.B * d.T * d.C == 0) return env.Undefined();
  const bool simd = simd_active();
  parallel_for(d.B * d.NH, [&](int64_t p0, int64_t p1, int) {
    for (int64_t bh = p0; bh < p1; ++bh) {
#if KEEL_X86
      if (simd) {
        attn_fwd_avx2(out, att, qkv, d, bh);
        continue;
      }
#endif
      (void)simd;
      attn_fwd_port(out, att, qkv, d, bh);
    }
  }, 1);
  return env.Undefined();
}

Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!need_args(info, 8, "attentionBackward")) return env.Undefined();
  Dims d;
  if (!read_dims(info, 4, &d)) return env.Undefined();
  float* dqkv = f32(info, 0, d.B * d.T * 3 * d.C);
  if (!dqkv) return env.Undefined();
  const float* dout = f32(info, 1, d.B * d.T * d.C);
  if (!dout) return env.Undefined();
  const float* qkv = f32(info, 2, d.B * d.T * 3 * d.C);
  if (!qkv) return env.Undefined();
  const float* att = f32(info, 3, d.B * d.NH * d.T * d.T);
  if (!att) return env.Undefined();
  if (d.B * d.T * d.C == 0) return env.Undefined();
  const bool simd = simd_active();
  parallel_for(d.B * d.NH, [&](int64_t p0, int64_t p1, int) {
    for (int64_t bh = p0; bh < p1; ++bh) {
#if KEEL_X86
      if (simd) {
        attn_bwd_avx2(dqkv, dout, qkv, att, d, bh);
        continue;
      }
#endif
      (void)simd;
      attn_bwd_port(dqkv, dout, qkv, att, d, bh);
    }
  }, 1);
  return env.Undefined();
}

}  // namespace

void InitAttention(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward));
}

}  // namespace keel
