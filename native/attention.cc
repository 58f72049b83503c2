// Causal multi-head self-attention, forward and backward. Contract: src/kernels/types.ts.
//
// Glossary: B batch, T time (sequence), C channels, NH heads, hs = C/NH head size,
// qkv[B,T,3C] (q | k | v, head h at columns h·hs), att[B,NH,T,T] softmax probabilities
// (zeros above the diagonal), out[B,T,C]. scale = 1/√hs.
//
// Work is split over the B·NH (batch, head) pairs: pairs touch disjoint columns of out and
// dqkv, so threads never race. The portable body is the textbook per-row loop. The SIMD
// bodies (attention_simd.inc, compiled once for AVX2 and once for AVX-512F) treat one pair as
// small GEMMs over the lower triangle, computed with a register-blocked micro-kernel (AVX2:
// 4 rows × 16 columns of accumulators, one broadcast of A and two vector loads of B per k;
// AVX-512: 8 rows × 16 columns, one zmm per row), 16-row superblocks looping over B's 16-column strips outside the tiles (a strip
// stays in L1 for all four tiles), and causality cut at tile granularity. Operands are first
// packed into per-thread scratch (allocated once per pool thread, then reused), zero-padded
// so every vector load stays inside it, with row strides padded by a cache line so strided
// walks spread over the L1 sets:
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

namespace port {

void attn_fwd(float* out, float* att, const float* qkv, const Dims& d, int64_t bh) {
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

void attn_bwd(float* dqkv, const float* dout, const float* qkv, const float* att, const Dims& d, int64_t bh) {
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

}  // namespace port

#if KEEL_X86
// ---- AVX2 -----------------------------------------------------------------------------
namespace avx2 {
// c[r][j] = Σ_{k<K} a[r·a_rs + k·a_ks] · b[k·ldb + j] for r < R ≤ 4, j < 8·NV (overwrites c).
// Strides let the same kernel read A row-major (a_ks = 1) or transposed (a_rs = 1). The
// accumulators are named scalars rather than an array: GCC 12 keeps an __m256 array on the
// stack and stores it every iteration, which halves the speed.
template <int R, int NV>
KEEL_AVX2 static inline void tile(float* c, int64_t ldc, const float* a, int64_t a_rs, int64_t a_ks,
                                  const float* b, int64_t ldb, int64_t K) {
  static_assert(R >= 1 && R <= 4 && (NV == 1 || NV == 2), "tile shape");
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (int64_t k = 0; k < K; ++k) {
    const float* bk = b + k * ldb;
    const float* ak = a + k * a_ks;
    const __m256 b0 = _mm256_loadu_ps(bk);
    const __m256 b1 = NV > 1 ? _mm256_loadu_ps(bk + 8) : b0;
    __m256 av = _mm256_broadcast_ss(ak);
    c00 = _mm256_fmadd_ps(av, b0, c00);
    if constexpr (NV > 1) c01 = _mm256_fmadd_ps(av, b1, c01);
    if constexpr (R > 1) {
      av = _mm256_broadcast_ss(ak + a_rs);
      c10 = _mm256_fmadd_ps(av, b0, c10);
      if constexpr (NV > 1) c11 = _mm256_fmadd_ps(av, b1, c11);
    }
    if constexpr (R > 2) {
      av = _mm256_broadcast_ss(ak + 2 * a_rs);
      c20 = _mm256_fmadd_ps(av, b0, c20);
      if constexpr (NV > 1) c21 = _mm256_fmadd_ps(av, b1, c21);
    }
    if constexpr (R > 3) {
      av = _mm256_broadcast_ss(ak + 3 * a_rs);
      c30 = _mm256_fmadd_ps(av, b0, c30);
      if constexpr (NV > 1) c31 = _mm256_fmadd_ps(av, b1, c31);
    }
  }
  _mm256_storeu_ps(c, c00);
  if constexpr (NV > 1) _mm256_storeu_ps(c + 8, c01);
  if constexpr (R > 1) {
    _mm256_storeu_ps(c + ldc, c10);
    if constexpr (NV > 1) _mm256_storeu_ps(c + ldc + 8, c11);
  }
  if constexpr (R > 2) {
    _mm256_storeu_ps(c + 2 * ldc, c20);
    if constexpr (NV > 1) _mm256_storeu_ps(c + 2 * ldc + 8, c21);
  }
  if constexpr (R > 3) {
    _mm256_storeu_ps(c + 3 * ldc, c30);
    if constexpr (NV > 1) _mm256_storeu_ps(c + 3 * ldc + 8, c31);
  }
}

// One tile of nr (1..4) rows × w (8 or 16) columns.
KEEL_AVX2 void tile_any(int64_t nr, int64_t w, float* c, int64_t ldc, const float* a, int64_t a_rs,
                        int64_t a_ks, const float* b, int64_t ldb, int64_t K) {
  if (w == 16) {
    switch (nr) {
      case 4: return tile<4, 2>(c, ldc, a, a_rs, a_ks, b, ldb, K);
      case 3: return tile<3, 2>(c, ldc, a, a_rs, a_ks, b, ldb, K);
      case 2: return tile<2, 2>(c, ldc, a, a_rs, a_ks, b, ldb, K);
      default: return tile<1, 2>(c, ldc, a, a_rs, a_ks, b, ldb, K);
    }
  }
  switch (nr) {
    case 4: return tile<4, 1>(c, ldc, a, a_rs, a_ks, b, ldb, K);
    case 3: return tile<3, 1>(c, ldc, a, a_rs, a_ks, b, ldb, K);
    case 2: return tile<2, 1>(c, ldc, a, a_rs, a_ks, b, ldb, K);
    default: return tile<1, 1>(c, ldc, a, a_rs, a_ks, b, ldb, K);
  }
}


constexpr int64_t kR = 4;  // rows per micro-kernel tile

#define KEEL_ATT_FN KEEL_AVX2
#include "attention_simd.inc"
#undef KEEL_ATT_FN
}  // namespace avx2

// ---- AVX-512F -------------------------------------------------------------------------
// The same bodies with a tile of up to 8 rows × 16 columns in one zmm per row: 8 independent
// accumulators (the AVX2 tile's 4 rows × 2 ymm also have 8, but of half the width).
namespace avx512 {
template <int R>
KEEL_AVX512F static inline void tile(float* c, int64_t ldc, const float* a, int64_t a_rs, int64_t a_ks,
                                    const float* b, int64_t ldb, int64_t K, __mmask16 m) {
  static_assert(R >= 1 && R <= 8, "tile shape");
  // Named accumulators, as in the AVX2 tile (GCC keeps an array of them on the stack).
  __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  for (int64_t k = 0; k < K; ++k) {
    const __m512 bv = _mm512_maskz_loadu_ps(m, b + k * ldb);
    const float* ak = a + k * a_ks;
    c0 = _mm512_fmadd_ps(_mm512_set1_ps(ak[0]), bv, c0);
    if constexpr (R > 1) c1 = _mm512_fmadd_ps(_mm512_set1_ps(ak[a_rs]), bv, c1);
    if constexpr (R > 2) c2 = _mm512_fmadd_ps(_mm512_set1_ps(ak[2 * a_rs]), bv, c2);
    if constexpr (R > 3) c3 = _mm512_fmadd_ps(_mm512_set1_ps(ak[3 * a_rs]), bv, c3);
    if constexpr (R > 4) c4 = _mm512_fmadd_ps(_mm512_set1_ps(ak[4 * a_rs]), bv, c4);
    if constexpr (R > 5) c5 = _mm512_fmadd_ps(_mm512_set1_ps(ak[5 * a_rs]), bv, c5);
    if constexpr (R > 6) c6 = _mm512_fmadd_ps(_mm512_set1_ps(ak[6 * a_rs]), bv, c6);
    if constexpr (R > 7) c7 = _mm512_fmadd_ps(_mm512_set1_ps(ak[7 * a_rs]), bv, c7);
  }
  _mm512_mask_storeu_ps(c, m, c0);
  if constexpr (R > 1) _mm512_mask_storeu_ps(c + ldc, m, c1);
  if constexpr (R > 2) _mm512_mask_storeu_ps(c + 2 * ldc, m, c2);
  if constexpr (R > 3) _mm512_mask_storeu_ps(c + 3 * ldc, m, c3);
  if constexpr (R > 4) _mm512_mask_storeu_ps(c + 4 * ldc, m, c4);
  if constexpr (R > 5) _mm512_mask_storeu_ps(c + 5 * ldc, m, c5);
  if constexpr (R > 6) _mm512_mask_storeu_ps(c + 6 * ldc, m, c6);
  if constexpr (R > 7) _mm512_mask_storeu_ps(c + 7 * ldc, m, c7);
}

KEEL_AVX512F void tile_any(int64_t nr, int64_t w, float* c, int64_t ldc, const float* a, int64_t a_rs,
                          int64_t a_ks, const float* b, int64_t ldb, int64_t K) {
  const __mmask16 m = w == 16 ? (__mmask16)0xffff : (__mmask16)0x00ff;
  switch (nr) {
    case 8: return tile<8>(c, ldc, a, a_rs, a_ks, b, ldb, K, m);
    case 7: return tile<7>(c, ldc, a, a_rs, a_ks, b, ldb, K, m);
    case 6: return tile<6>(c, ldc, a, a_rs, a_ks, b, ldb, K, m);
    case 5: return tile<5>(c, ldc, a, a_rs, a_ks, b, ldb, K, m);
    case 4: return tile<4>(c, ldc, a, a_rs, a_ks, b, ldb, K, m);
    case 3: return tile<3>(c, ldc, a, a_rs, a_ks, b, ldb, K, m);
    case 2: return tile<2>(c, ldc, a, a_rs, a_ks, b, ldb, K, m);
    default: return tile<1>(c, ldc, a, a_rs, a_ks, b, ldb, K, m);
  }
}

constexpr int64_t kR = 8;  // rows per micro-kernel tile

#define KEEL_ATT_FN KEEL_AVX512F
#include "attention_simd.inc"
#undef KEEL_ATT_FN
}  // namespace avx512
#endif  // KEEL_X86

// The shape arguments B, T, C, NH from argument `first` on; C must split into NH heads.
Dims read_dims(Args& a, size_t first) {
  Dims d;
  d.B = a.size(first);
  d.T = a.size(first + 1);
  d.C = a.size(first + 2);
  d.NH = a.size(first + 3, 1);
  if (a.ok() && d.C % d.NH != 0) {
    a.fail_range("C (" + std::to_string(d.C) + ") must be divisible by NH (" + std::to_string(d.NH) + ")");
  }
  d.hs = d.NH > 0 ? d.C / d.NH : 0;
  d.scale = d.hs > 0 ? (float)(1.0 / std::sqrt((double)d.hs)) : 0.0f;
  return d;
}

// Pairs per thread chunk: a pair costs ~T²·hs multiply-adds; below ~64k of them a worker
// wake-up is not worth it and the call stays on the calling thread.
int64_t pair_grain(const Dims& d) {
  const int64_t work = d.T * d.T * d.hs + 1;
  return work >= 65536 ? 1 : 65536 / work + 1;
}

// attentionForward(out, att, qkv, B, T, C, NH)
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  Args a(info, "attentionForward", 7);
  const Dims d = read_dims(a, 3);
  float* out = a.f32(0, d.B * d.T * d.C);
  float* att = a.f32(1, d.B * d.NH * d.T * d.T);
  const float* qkv = a.f32(2, d.B * d.T * 3 * d.C);
  if (!a.ok() || d.B * d.T * d.C == 0) return a.env().Undefined();
  const auto body = KEEL_PICK(attn_fwd);
  parallel_for(d.B * d.NH, [&](int64_t p0, int64_t p1, int) {
    for (int64_t bh = p0; bh < p1; ++bh) body(out, att, qkv, d, bh);
  }, pair_grain(d));
  return a.env().Undefined();
}

// attentionBackward(dqkv, dout, qkv, att, B, T, C, NH)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Args a(info, "attentionBackward", 8);
  const Dims d = read_dims(a, 4);
  float* dqkv = a.f32(0, d.B * d.T * 3 * d.C);
  const float* dout = a.f32(1, d.B * d.T * d.C);
  const float* qkv = a.f32(2, d.B * d.T * 3 * d.C);
  const float* att = a.f32(3, d.B * d.NH * d.T * d.T);
  if (!a.ok() || d.B * d.T * d.C == 0) return a.env().Undefined();
  const auto body = KEEL_PICK(attn_bwd);
  parallel_for(d.B * d.NH, [&](int64_t p0, int64_t p1, int) {
    for (int64_t bh = p0; bh < p1; ++bh) body(dqkv, dout, qkv, att, d, bh);
  }, pair_grain(d));
  return a.env().Undefined();
}

}  // namespace

void InitAttention(Napi::Env env, Napi::Object exports) {
  add_exports(env, exports, {{"attentionForward", AttentionForward}, {"attentionBackward", AttentionBackward}});
}

}  // namespace keel
