// Causal multi-head self-attention, forward and backward. Contract: src/kernels/types.ts.
//
// Glossary: B batch, T time (sequence), C channels, NH heads, hs = C/NH head size,
// qkv[B,T,3C] (q | k | v, head h at columns h·hs), att[B,NH,T,T] softmax probabilities
// (zeros above the diagonal), out[B,T,C]. scale = 1/√hs.
//
// Work is split over the B·NH (batch, head) pairs: pairs touch disjoint columns of out and
// dqkv, so threads never race. The portable body is the textbook per-row loop. The AVX2 body
// treats one pair as small GEMMs over the lower triangle, computed with a register-blocked
// micro-kernel (4 rows × 16 columns of accumulators, one broadcast of A and two vector loads
// of B per k), 16-row superblocks looping over B's 16-column strips outside the tiles (a strip
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

constexpr int64_t kR = 4;    // rows per micro-kernel tile
constexpr int64_t kSB = 16;  // rows per superblock: tiles of a superblock share each B strip in L1

// The three GEMM shapes of attention, each over one superblock of nrows rows (4-row tiles),
// looping over 16-column strips of B outside the tiles so a strip is loaded into L1 once.
//
// Rows are queries t0 + r. C[r][c] = Σ_{k<K} A[r][k]·B[k][c] for the strips that reach
// the diagonal of r's tile (S = Q·Kᵀ, dP = dO·Vᵀ).
KEEL_AVX2 void gemm_lower(int64_t t0, int64_t nrows, float* c, int64_t ldc, const float* a, int64_t lda,
                          const float* b, int64_t ldb, int64_t K) {
  const int64_t ncol = round_up(t0 + nrows, 16);
  for (int64_t j = 0; j < ncol; j += 16) {
    for (int64_t r0 = 0; r0 < nrows; r0 += kR) {
      const int64_t nr = nrows - r0 < kR ? nrows - r0 : kR;
      if (j > t0 + r0 + nr - 1) continue;  // strip entirely above the diagonal
      tile_any(nr, 16, c + r0 * ldc + j, ldc, a + r0 * lda, lda, 1, b + j, ldb, K);
    }
  }
}

// Rows are queries t0 + r. C[r][0..ncols) = Σ_k A[r][k]·B[k][·] with k up to the end of r's
// tile (out = P·V, dQ = dS·K); A must be zero between the diagonal and the tile end.
KEEL_AVX2 void gemm_causal_k(int64_t t0, int64_t nrows, float* c, int64_t ldc, const float* a, int64_t lda,
                             const float* b, int64_t ldb, int64_t ncols) {
  for (int64_t j = 0; j < ncols; j += 16) {
    const int64_t w = ncols - j < 16 ? ncols - j : 16;
    for (int64_t r0 = 0; r0 < nrows; r0 += kR) {
      const int64_t nr = nrows - r0 < kR ? nrows - r0 : kR;
      tile_any(nr, w, c + r0 * ldc + j, ldc, a + r0 * lda, lda, 1, b + j, ldb, t0 + r0 + nr);
    }
  }
}

// Rows are keys j0 + r. C[r][·] = Σ_{t ≥ j0+r0} A[t][j0+r]·B[t][·] (dK = dSᵀ·Q, dV = Pᵀ·dO),
// with A's columns j0..j0+15 packed as panel[(t − j0)·16 + r] so the transposed reads are
// contiguous instead of one cache line per 1 KiB-strided row.
KEEL_AVX2 void gemm_keys(int64_t j0, int64_t nrows, int64_t T, float* c, int64_t ldc, const float* panel,
                         const float* b, int64_t ldb, int64_t ncols) {
  for (int64_t j = 0; j < ncols; j += 16) {
    const int64_t w = ncols - j < 16 ? ncols - j : 16;
    for (int64_t r0 = 0; r0 < nrows; r0 += kR) {
      const int64_t nr = nrows - r0 < kR ? nrows - r0 : kR;
      tile_any(nr, w, c + r0 * ldc + j, ldc, panel + r0 * 16 + r0, 1, 16, b + (j0 + r0) * ldb + j, ldb,
               T - j0 - r0);
    }
  }
}

// panel[(t − j0)·16 + i] = src[t·ld + j0 + i] for t in [j0, T), i < 16 (zeros past column T).
void pack_panel(float* panel, const float* src, int64_t ld, int64_t j0, int64_t T) {
  const int64_t w = T - j0 < 16 ? T - j0 : 16;
  for (int64_t t = j0; t < T; ++t) {
    float* p = panel + (t - j0) * 16;
    std::memcpy(p, src + t * ld + j0, (size_t)w * sizeof(float));
    for (int64_t i = w; i < 16; ++i) p[i] = 0.0f;
  }
}

// src rows [T, hs] with row stride `ld` → dst [T, hsp] with row stride ldd, zero-padded.
void pack_rows(float* dst, int64_t ldd, const float* src, int64_t ld, int64_t T, int64_t hs, int64_t hsp) {
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(dst + t * ldd, src + t * ld, (size_t)hs * sizeof(float));
    for (int64_t i = hs; i < hsp; ++i) dst[t * ldd + i] = 0.0f;
  }
}

// src rows [T, hs] with row stride `ld` → dst [hs, Tp] (transposed, row stride ldd), columns
// T..Tp zero. Blocks of 8 source rows: each dst row gets 8 contiguous floats per pass rather
// than one float per strided row (which 4K-aliases; ~15% of the forward when done naively).
void pack_transposed(float* dst, int64_t ldd, const float* src, int64_t ld, int64_t T, int64_t hs, int64_t Tp) {
  int64_t t0 = 0;
  for (; t0 + 8 <= T; t0 += 8)
    for (int64_t i = 0; i < hs; ++i)
      for (int64_t j = 0; j < 8; ++j) dst[i * ldd + t0 + j] = src[(t0 + j) * ld + i];
  for (int64_t i = 0; i < hs; ++i) {
    for (int64_t t = t0; t < T; ++t) dst[i * ldd + t] = src[t * ld + i];
    for (int64_t t = T; t < Tp; ++t) dst[i * ldd + t] = 0.0f;
  }
}

// Softmax of one scratch row s[0..n) of raw q·k: p = e^(scale·(s − max)) / Σ, written to s
// (zeros on to `end`, where the P·V tile stops reading) and to the att row arow[0..T)
// (zeros past the diagonal).
KEEL_AVX2 void softmax_row(float* s, int64_t n, int64_t end, float scale, float* arow, int64_t T) {
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
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(s + i), inv);
    _mm256_storeu_ps(s + i, p);
    _mm256_storeu_ps(arow + i, p);
  }
  int64_t nb = n8;
  if (rem) {
    const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(s + n8), inv);
    _mm256_storeu_ps(s + n8, p);
    _mm256_maskstore_ps(arow + n8, tm, p);  // the att row may end inside this block
    nb += 8;
  }
  for (int64_t i = nb; i < end; ++i) s[i] = 0.0f;
  std::memset(arow + n, 0, (size_t)(T - n) * sizeof(float));
}

// dst[0..hs) += src[0..hs)
KEEL_AVX2 static inline void add_row(float* dst, const float* src, int64_t hs) {
  int64_t i = 0;
  for (; i + 8 <= hs; i += 8) _mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), _mm256_loadu_ps(src + i)));
  for (; i < hs; ++i) dst[i] += src[i];
}

// Prefetches rows [r0, r0 + n) × hs floats of a dqkv section (row stride ld): those lines
// come from L3/DRAM and would otherwise stall add_row after the GEMMs that produce them.
KEEL_AVX2 static inline void prefetch_rows(const float* p, int64_t ld, int64_t n, int64_t hs) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < hs; i += 16) _mm_prefetch((const char*)(p + r * ld + i), _MM_HINT_T0);
}

// Scratch geometry for one (b, h) pair. Row strides get one extra cache line so that
// strided walks down a column (B strips, 1 KiB apart when T = 256) spread over all L1 sets.
struct Geom {
  int64_t Tp, ldT, hsp, ldh;
  explicit Geom(const Dims& d)
      : Tp(round_up(d.T, 16)), ldT(round_up(d.T, 16) + 16), hsp(round_up(d.hs, 8)), ldh(round_up(d.hs, 8) + 16) {}
};

// End (exclusive) of the 4-row tile holding row r of a superblock of nrows rows at t0.
inline int64_t tile_end(int64_t t0, int64_t r, int64_t nrows) {
  const int64_t e = (r / kR + 1) * kR;
  return t0 + (e < nrows ? e : nrows);
}

KEEL_AVX2 void attn_fwd_avx2(float* out, float* att, const float* qkv, const Dims& d, int64_t bh) {
  const int64_t T = d.T, C = d.C, C3 = 3 * d.C, hs = d.hs;
  const int64_t b = bh / d.NH, h = bh % d.NH;
  const Geom g(d);
  // Kᵀ [hs, ldT] | V [T, ldh] | S [16, ldT] | O [16, ldh]
  float* kt = scratch((size_t)(hs * g.ldT + T * g.ldh + kSB * g.ldT + kSB * g.ldh));
  float* vp = kt + hs * g.ldT;
  float* S = vp + T * g.ldh;
  float* O = S + kSB * g.ldT;
  const float* base = qkv + b * T * C3 + h * hs;
  pack_transposed(kt, g.ldT, base + C, C3, T, hs, g.Tp);
  pack_rows(vp, g.ldh, base + 2 * C, C3, T, hs, g.hsp);
  for (int64_t t0 = 0; t0 < T; t0 += kSB) {
    const int64_t nsb = T - t0 < kSB ? T - t0 : kSB;
    gemm_lower(t0, nsb, S, g.ldT, base + t0 * C3, C3, kt, g.ldT, hs);
    for (int64_t r = 0; r < nsb; ++r) {
      const int64_t t = t0 + r;
      softmax_row(S + r * g.ldT, t + 1, tile_end(t0, r, nsb), d.scale, att + (bh * T + t) * T, T);
    }
    gemm_causal_k(t0, nsb, O, g.ldh, S, g.ldT, vp, g.ldh, g.hsp);
    for (int64_t r = 0; r < nsb; ++r)
      std::memcpy(out + (b * T + t0 + r) * C + h * hs, O + r * g.ldh, (size_t)hs * sizeof(float));
  }
}

KEEL_AVX2 void attn_bwd_avx2(float* dqkv, const float* dout, const float* qkv, const float* att, const Dims& d,
                             int64_t bh) {
  const int64_t T = d.T, C = d.C, C3 = 3 * d.C, hs = d.hs;
  const int64_t b = bh / d.NH, h = bh % d.NH;
  const Geom g(d);
  // Vᵀ [hs, ldT] | Q, K, dO [T, ldh] | dS [T, ldT] | tile output [16, ldh] | panel [T, 16]
  float* vt = scratch((size_t)(hs * g.ldT + 3 * T * g.ldh + T * g.ldT + kSB * g.ldh + T * 16));
  float* qp = vt + hs * g.ldT;
  float* kp = qp + T * g.ldh;
  float* dop = kp + T * g.ldh;
  float* dS = dop + T * g.ldh;
  float* O = dS + T * g.ldT;
  float* panel = O + kSB * g.ldh;
  const float* base = qkv + b * T * C3 + h * hs;
  const float* dbase = dout + b * T * C + h * hs;
  const float* P = att + bh * T * T;
  float* dq_base = dqkv + b * T * C3 + h * hs;
  pack_transposed(vt, g.ldT, base + 2 * C, C3, T, hs, g.Tp);
  pack_rows(qp, g.ldh, base, C3, T, hs, g.hsp);
  pack_rows(kp, g.ldh, base + C, C3, T, hs, g.hsp);
  pack_rows(dop, g.ldh, dbase, C, T, hs, g.hsp);
  const __m256 vscale = _mm256_set1_ps(d.scale);

  // Query superblocks: dP (into dS), then dS in place, then dQ for these rows.
  for (int64_t t0 = 0; t0 < T; t0 += kSB) {
    const int64_t nsb = T - t0 < kSB ? T - t0 : kSB;
    prefetch_rows(dq_base + t0 * C3, C3, nsb, hs);
    gemm_lower(t0, nsb, dS + t0 * g.ldT, g.ldT, dbase + t0 * C, C, vt, g.ldT, hs);
    for (int64_t r = 0; r < nsb; ++r) {
      const int64_t t = t0 + r, n = t + 1;
      const int64_t n8 = n & ~int64_t(7), rem = n - n8;
      const __m256i tm = tail_mask(rem);
      const float* p = P + t * T;
      float* ds = dS + t * g.ldT;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t i = 0; i < n8; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(p + i), _mm256_loadu_ps(ds + i), acc);
      __m256 ptail = _mm256_setzero_ps();
      if (rem) {
        ptail = _mm256_maskload_ps(p + n8, tm);  // att rows end at T: masked, never past it
        acc = _mm256_fmadd_ps(ptail, _mm256_loadu_ps(ds + n8), acc);
      }
      const __m256 dot = _mm256_set1_ps(hsum256(acc));
      for (int64_t i = 0; i < n8; i += 8) {
        const __m256 gr = _mm256_mul_ps(_mm256_loadu_ps(p + i), _mm256_sub_ps(_mm256_loadu_ps(ds + i), dot));
        _mm256_storeu_ps(ds + i, _mm256_mul_ps(gr, vscale));
      }
      int64_t zero_from = n8;
      if (rem) {  // lanes past the diagonal have p = 0, so they come out 0
        const __m256 gr = _mm256_mul_ps(ptail, _mm256_sub_ps(_mm256_loadu_ps(ds + n8), dot));
        _mm256_storeu_ps(ds + n8, _mm256_mul_ps(gr, vscale));
        zero_from = n8 + 8;
      }
      // dQ and dK read this row up to its tile's end: the part above the diagonal must be 0.
      const int64_t te = tile_end(t0, r, nsb);
      for (int64_t i = zero_from; i < te; ++i) ds[i] = 0.0f;
    }
    gemm_causal_k(t0, nsb, O, g.ldh, dS + t0 * g.ldT, g.ldT, kp, g.ldh, g.hsp);  // dQ rows
    for (int64_t r = 0; r < nsb; ++r) add_row(dq_base + (t0 + r) * C3, O + r * g.ldh, hs);
  }

  // Key superblocks: dK = dSᵀ·Q and dV = Pᵀ·dO over the queries at or after each key.
  for (int64_t j0 = 0; j0 < T; j0 += kSB) {
    const int64_t nsb = T - j0 < kSB ? T - j0 : kSB;
    prefetch_rows(dq_base + j0 * C3 + C, C3, nsb, hs);
    prefetch_rows(dq_base + j0 * C3 + 2 * C, C3, nsb, hs);
    pack_panel(panel, dS, g.ldT, j0, T);
    gemm_keys(j0, nsb, T, O, g.ldh, panel, qp, g.ldh, g.hsp);
    for (int64_t r = 0; r < nsb; ++r) add_row(dq_base + (j0 + r) * C3 + C, O + r * g.ldh, hs);
    pack_panel(panel, P, T, j0, T);
    gemm_keys(j0, nsb, T, O, g.ldh, panel, dop, g.ldh, g.hsp);
    for (int64_t r = 0; r < nsb; ++r) add_row(dq_base + (j0 + r) * C3 + 2 * C, O + r * g.ldh, hs);
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

// Pairs per thread chunk: a pair costs ~T²·hs multiply-adds; below ~64k of them a worker
// wake-up is not worth it and the call stays on the calling thread.
int64_t pair_grain(const Dims& d) {
  const int64_t work = d.T * d.T * d.hs + 1;
  return work >= 65536 ? 1 : 65536 / work + 1;
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
  }, pair_grain(d));
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
  }, pair_grain(d));
  return env.Undefined();
}

}  // namespace

void InitAttention(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward));
}

}  // namespace keel
