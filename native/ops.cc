// Row-wise and elementwise kernels of GPT-2 training: LayerNorm, GELU, residual add,
// gradient accumulation, token+position encoder and fused softmax/cross-entropy (+ z-loss).
// Contracts: src/kernels/types.ts.
//
// Glossary: B batch, T time (sequence), C channels, V vocabulary, N rows (LayerNorm) or a
// flat element count (elementwise kernels), BT = B*T rows.
//
// Each kernel has a portable body (namespace port) and an AVX2/FMA body (namespace avx2),
// LayerNorm and GELU also an AVX-512F one (namespace avx512); those two kernels' SIMD bodies
// are written once, in ops_simd.inc. simd.h explains the run-time choice (KEEL_PICK). Work is split over rows (or elements, or channels for the encoder
// backward, whose rows scatter into shared embedding rows) with keel::parallel_for.
#include <napi.h>

#include <cmath>
#include <vector>

#include "args.h"
#include "kernel_util.h"
#include "pool.h"
#include "simd.h"

namespace keel {
namespace {

constexpr float kLnEps = 1e-5f;
constexpr float kGeluK = 0.7978845608028654f;  // √(2/π)
constexpr float kGeluA = 0.044715f;
// GELU uses 0.5·(1 + tanh(u)) = σ(2u) = 1/(1 + e^(−2u)), which needs only exp and keeps full
// relative accuracy for negative x, where 1 + tanh(u) would cancel. e^(−2u) is capped at e^80
// so that σ and e·σ² stay normal floats instead of becoming inf·0.
constexpr float kGeluExpCap = 80.0f;

// ---- cross-entropy ---------------------------------------------------------------------------
// Row r of logits[BT,V]: loss = log Σ e^(x−max) − (x[target] − max); lse (may be null) =
// log Z = log Σ e^(x−max) + max. dlogits (may alias logits) = (softmax·(1 + 2·zc·lse) −
// onehot)·scale, the gradient of scale·(loss + zc·lse²) (z-loss): e^(x−max) is stored first,
// then rescaled by xent_factor. zc = 0 keeps the plain factor scale/Σ bit for bit.
inline float xent_factor(float scale, float sum, float mx, double zc) {
  if (zc == 0.0) return scale / sum;
  const double lse = std::log((double)sum) + (double)mx;
  return (float)((double)scale * (1.0 + 2.0 * zc * lse) / (double)sum);
}

namespace port {

// ---- LayerNorm ---------------------------------------------------------------------------
// out[N,C] = (inp − mean)·rstd·weight + bias; mean[N], rstd[N] saved. Biased variance,
// computed in two passes over the (L1-resident) row for accuracy.

void ln_fwd(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                 int64_t r0, int64_t r1, int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = inp + r * C;
    float* o = out + r * C;
    float s = 0.0f;
    for (int64_t i = 0; i < C; ++i) s += x[i];
    const float m = s / (float)C;
    float v = 0.0f;
    for (int64_t i = 0; i < C; ++i) v += (x[i] - m) * (x[i] - m);
    const float rs = 1.0f / std::sqrt(v / (float)C + kLnEps);
    for (int64_t i = 0; i < C; ++i) o[i] = (x[i] - m) * rs * w[i] + b[i];
    mean[r] = m;
    rstd[r] = rs;
  }
}

// dinp[N,C] += ∂L/∂inp; dweight[C] and dbias[C] receive this range's partial sums (the
// caller reduces the per-thread partials, so rows never race on them).
void ln_bwd(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                 const float* mean, const float* rstd, int64_t r0, int64_t r1, int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = inp + r * C;
    const float* g = dout + r * C;
    float* dx = dinp + r * C;
    const float m = mean[r], rs = rstd[r];
    float sum_dn = 0.0f, sum_dn_n = 0.0f;
    for (int64_t i = 0; i < C; ++i) {
      const float n = (x[i] - m) * rs;
      const float dn = w[i] * g[i];
      sum_dn += dn;
      sum_dn_n += dn * n;
      db[i] += g[i];
      dw[i] += n * g[i];
    }
    const float a = sum_dn / (float)C, c = sum_dn_n / (float)C;
    for (int64_t i = 0; i < C; ++i) {
      const float n = (x[i] - m) * rs;
      dx[i] += (w[i] * g[i] - a - n * c) * rs;
    }
  }
}

// ---- GELU ----------------------------------------------------------------------------------

void gelu_fwd(float* out, const float* inp, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const float x = inp[i];
    const float u = kGeluK * (x + kGeluA * x * x * x);
    float t = -2.0f * u;
    if (t > kGeluExpCap) t = kGeluExpCap;
    out[i] = x / (1.0f + exp_scalar(t));
  }
}

// gelu'(x) = s + x·s(1−s)·2k(1 + 3a·x²) with s = σ(2u), and s(1−s) = e·s², e = e^(−2u).
void gelu_bwd(float* dinp, const float* inp, const float* dout, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const float x = inp[i];
    const float x2 = x * x;
    const float u = kGeluK * (x + kGeluA * x2 * x);
    float t = -2.0f * u;
    if (t > kGeluExpCap) t = kGeluExpCap;
    const float e = exp_scalar(t);
    const float s = 1.0f / (1.0f + e);
    const float ds = (e * s) * s;
    const float grad = s + x * ds * (2.0f * kGeluK) * (1.0f + 3.0f * kGeluA * x2);
    dinp[i] += grad * dout[i];
  }
}

// ---- residual / accumulate ------------------------------------------------------------------

void add(float* out, const float* a, const float* b, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
}

// ---- encoder -------------------------------------------------------------------------------
// out[B,T,C] = wte[tokens[b,t]] + wpe[t], rows [r0, r1) of BT.
void enc_fwd(float* out, const int32_t* tok, const float* wte, const float* wpe, int64_t r0, int64_t r1,
                  int64_t T, int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* e = wte + (int64_t)tok[r] * C;
    const float* p = wpe + (r % T) * C;
    float* o = out + r * C;
    for (int64_t i = 0; i < C; ++i) o[i] = e[i] + p[i];
  }
}

// dwte: channels [c0, c1) of every row. Rows sharing a token scatter into the same dwte
// row, so threads split channels (disjoint, fixed summation order) rather than rows.
// s scales what the lookup adds (the embedding-gradient shrink; s = 1 adds dout as it is).
void enc_bwd_wte(float* dwte, const float* dout, const int32_t* tok, int64_t BT, int64_t C, int64_t c0,
                      int64_t c1, float s) {
  for (int64_t r = 0; r < BT; ++r) {
    const float* g = dout + r * C;
    float* dte = dwte + (int64_t)tok[r] * C;
    if (s == 1.0f)
      for (int64_t i = c0; i < c1; ++i) dte[i] += g[i];
    else
      for (int64_t i = c0; i < c1; ++i) dte[i] += s * g[i];
  }
}

// dwpe: positions [t0, t1), each summed over the batch (threads split positions).
void enc_bwd_wpe(float* dwpe, const float* dout, int64_t B, int64_t T, int64_t C, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    float* dpe = dwpe + t * C;
    for (int64_t b = 0; b < B; ++b) {
      const float* g = dout + (b * T + t) * C;
      for (int64_t i = 0; i < C; ++i) dpe[i] += g[i];
    }
  }
}

// ---- cross-entropy (xent_factor above) ---------------------------------------------------
void xent(float* losses, float* lse, float* dl, const float* logits, const int32_t* targets, int64_t r0,
               int64_t r1, int64_t V, float scale, double zc) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = logits + r * V;
    const int32_t tgt = targets[r];
    const float xt = x[tgt];
    float mx = x[0];
    for (int64_t i = 1; i < V; ++i) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    if (dl) {
      float* d = dl + r * V;
      for (int64_t i = 0; i < V; ++i) {
        const float e = exp_scalar(x[i] - mx);  // x and d may alias: read before write
        d[i] = e;
        sum += e;
      }
      const float f = xent_factor(scale, sum, mx, zc);
      for (int64_t i = 0; i < V; ++i) d[i] *= f;
      d[tgt] -= scale;
    } else {
      for (int64_t i = 0; i < V; ++i) sum += exp_scalar(x[i] - mx);
    }
    const double lsum = std::log((double)sum);
    losses[r] = (float)(lsum - (double)(xt - mx));
    if (lse) lse[r] = (float)(lsum + (double)mx);
  }
}

}  // namespace port

#if KEEL_X86
namespace avx2 {
#define KEEL_VEC Vec8
#define KEEL_OPS_FN KEEL_AVX2
#include "ops_simd.inc"
#undef KEEL_VEC
#undef KEEL_OPS_FN

KEEL_AVX2 void add(float* out, const float* a, const float* b, int64_t i0, int64_t i1) {
  int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {
    const __m256 x0 = _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    const __m256 x1 = _mm256_add_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
    _mm256_storeu_ps(out + i, x0);
    _mm256_storeu_ps(out + i + 8, x1);
  }
  for (; i + 8 <= i1; i += 8) _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  for (; i < i1; ++i) out[i] = a[i] + b[i];
}

KEEL_AVX2 void enc_fwd(float* out, const int32_t* tok, const float* wte, const float* wpe, int64_t r0,
                            int64_t r1, int64_t T, int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* e = wte + (int64_t)tok[r] * C;
    const float* p = wpe + (r % T) * C;
    float* o = out + r * C;
    int64_t i = 0;
    for (; i + 8 <= C; i += 8) _mm256_storeu_ps(o + i, _mm256_add_ps(_mm256_loadu_ps(e + i), _mm256_loadu_ps(p + i)));
    for (; i < C; ++i) o[i] = e[i] + p[i];
  }
}

KEEL_AVX2 static inline void add_into(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), _mm256_loadu_ps(src + i)));
  for (; i < n; ++i) dst[i] += src[i];
}

KEEL_AVX2 void enc_bwd_wte(float* dwte, const float* dout, const int32_t* tok, int64_t BT, int64_t C,
                                int64_t c0, int64_t c1, float s) {
  if (s == 1.0f) {
    for (int64_t r = 0; r < BT; ++r) add_into(dwte + (int64_t)tok[r] * C + c0, dout + r * C + c0, c1 - c0);
    return;
  }
  const __m256 vs = _mm256_set1_ps(s);
  for (int64_t r = 0; r < BT; ++r) {
    float* dst = dwte + (int64_t)tok[r] * C + c0;
    const float* src = dout + r * C + c0;
    const int64_t n = c1 - c0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), _mm256_mul_ps(vs, _mm256_loadu_ps(src + i))));
    for (; i < n; ++i) dst[i] += s * src[i];
  }
}

KEEL_AVX2 void enc_bwd_wpe(float* dwpe, const float* dout, int64_t B, int64_t T, int64_t C, int64_t t0,
                                int64_t t1) {
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t b = 0; b < B; ++b) add_into(dwpe + t * C, dout + (b * T + t) * C, C);
}

KEEL_AVX2 void xent(float* losses, float* lse, float* dl, const float* logits, const int32_t* targets,
                         int64_t r0, int64_t r1, int64_t V, float scale, double zc) {
  const int64_t V8 = V & ~int64_t(7);
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = logits + r * V;
    const int32_t tgt = targets[r];
    const float xt = x[tgt];
    float mx = x[0];
    if (V8 > 0) {
      __m256 m0 = _mm256_loadu_ps(x);
      for (int64_t i = 8; i < V8; i += 8) m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
      mx = hmax256(m0);
    }
    for (int64_t i = V8; i < V; ++i) mx = x[i] > mx ? x[i] : mx;
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    float sum;
    int64_t i = 0;
    if (dl) {
      float* d = dl + r * V;
      for (; i + 16 <= V; i += 16) {  // x and d may alias: each block is read before written
        const __m256 e0 = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
        const __m256 e1 = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vmx));
        _mm256_storeu_ps(d + i, e0);
        _mm256_storeu_ps(d + i + 8, e1);
        s0 = _mm256_add_ps(s0, e0);
        s1 = _mm256_add_ps(s1, e1);
      }
      for (; i < V8; i += 8) {
        const __m256 e0 = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
        _mm256_storeu_ps(d + i, e0);
        s0 = _mm256_add_ps(s0, e0);
      }
      sum = hsum256(_mm256_add_ps(s0, s1));
      for (; i < V; ++i) {
        const float e = exp_scalar(x[i] - mx);
        d[i] = e;
        sum += e;
      }
      const float f = xent_factor(scale, sum, mx, zc);
      const __m256 vf = _mm256_set1_ps(f);
      for (i = 0; i < V8; i += 8) _mm256_storeu_ps(d + i, _mm256_mul_ps(_mm256_loadu_ps(d + i), vf));
      for (; i < V; ++i) d[i] *= f;
      d[tgt] -= scale;
    } else {
      for (; i + 16 <= V; i += 16) {
        s0 = _mm256_add_ps(s0, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx)));
        s1 = _mm256_add_ps(s1, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vmx)));
      }
      for (; i < V8; i += 8) s0 = _mm256_add_ps(s0, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx)));
      sum = hsum256(_mm256_add_ps(s0, s1));
      for (; i < V; ++i) sum += exp_scalar(x[i] - mx);
    }
    const double lsum = std::log((double)sum);
    losses[r] = (float)(lsum - (double)(xt - mx));
    if (lse) lse[r] = (float)(lsum + (double)mx);
  }
}

}  // namespace avx2

namespace avx512 {
#define KEEL_VEC Vec16
#define KEEL_OPS_FN KEEL_AVX512F
#include "ops_simd.inc"
#undef KEEL_VEC
#undef KEEL_OPS_FN
}  // namespace avx512
#endif  // KEEL_X86

// ---- kernels: plain pointers, work split over the pool -------------------------------------

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                       int64_t N, int64_t C) {
  const auto body = KEEL_PICK(ln_fwd);
  parallel_for(N, [&](int64_t r0, int64_t r1, int) { body(out, mean, rstd, inp, w, b, r0, r1, C); }, row_grain(C));
}

// dweight, dbias += their sums over the rows: per-thread partials (2·C each), reduced in
// thread order so the result does not depend on scheduling.
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* w, const float* mean, const float* rstd, int64_t N, int64_t C) {
  const auto body = KEEL_PICK(ln_bwd);
  const int nt = pool_threads();
  std::vector<float> part((size_t)nt * 2 * (size_t)C, 0.0f);
  std::vector<char> used((size_t)nt, 0);
  parallel_for(N, [&](int64_t r0, int64_t r1, int th) {
    float* pw = part.data() + (size_t)th * 2 * C;
    used[(size_t)th] = 1;
    body(dinp, pw, pw + C, dout, inp, w, mean, rstd, r0, r1, C);
  }, row_grain(C));
  for (int th = 0; th < nt; ++th) {
    if (!used[(size_t)th]) continue;
    const float* pw = part.data() + (size_t)th * 2 * C;
    const float* pb = pw + C;
    for (int64_t i = 0; i < C; ++i) {
      dweight[i] += pw[i];
      dbias[i] += pb[i];
    }
  }
}

void gelu_forward(float* out, const float* inp, int64_t N) {
  const auto body = KEEL_PICK(gelu_fwd);
  parallel_for(N, [&](int64_t i0, int64_t i1, int) { body(out, inp, i0, i1); }, 16384);
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N) {
  const auto body = KEEL_PICK(gelu_bwd);
  parallel_for(N, [&](int64_t i0, int64_t i1, int) { body(dinp, inp, dout, i0, i1); }, 16384);
}

// out = a + b; the same loop serves accumulate (out = dst = a).
void add_parallel(float* out, const float* a, const float* b, int64_t N) {
  const auto body = KEEL_PICK_AVX2(add);
  parallel_for(N, [&](int64_t i0, int64_t i1, int) { body(out, a, b, i0, i1); }, 32768);
}

void encoder_forward(float* out, const int32_t* tok, const float* wte, const float* wpe, int64_t B, int64_t T,
                     int64_t C) {
  const auto body = KEEL_PICK_AVX2(enc_fwd);
  parallel_for(B * T, [&](int64_t r0, int64_t r1, int) { body(out, tok, wte, wpe, r0, r1, T, C); },
               row_grain(C, 16384));
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tok, int64_t B, int64_t T,
                      int64_t C, float wte_scale) {
  const auto wte_body = KEEL_PICK_AVX2(enc_bwd_wte);
  const auto wpe_body = KEEL_PICK_AVX2(enc_bwd_wpe);
  const int64_t BT = B * T;
  // dwte by channel blocks that end on dwte's 64-byte lines (its base need not be aligned),
  // so the two threads never write the same cache line.
  const int64_t mis = (int64_t)(((uintptr_t)dwte / sizeof(float)) % 16);
  const int64_t nblk = (C + mis + 15) / 16;
  const int64_t grain = BT * C >= 32768 ? 1 : nblk;
  parallel_for(nblk, [&](int64_t k0, int64_t k1, int) {
    const int64_t c0 = k0 * 16 - mis < 0 ? 0 : k0 * 16 - mis;
    const int64_t c1 = k1 * 16 - mis < C ? k1 * 16 - mis : C;
    wte_body(dwte, dout, tok, BT, C, c0, c1, wte_scale);
  }, grain);
  // dwpe by positions.
  parallel_for(T, [&](int64_t t0, int64_t t1, int) { wpe_body(dwpe, dout, B, T, C, t0, t1); },
               row_grain(B * C, 32768));
}

// Returns Σ losses, in double and in row order.
double cross_entropy(float* losses, float* lse, float* dl, const float* logits, const int32_t* targets, int64_t BT,
                     int64_t V, float scale, double zc) {
  const auto body = KEEL_PICK_AVX2(xent);
  parallel_for(BT, [&](int64_t r0, int64_t r1, int) { body(losses, lse, dl, logits, targets, r0, r1, V, scale, zc); },
               row_grain(V, 4096));
  double total = 0.0;
  for (int64_t r = 0; r < BT; ++r) total += (double)losses[r];
  return total;
}

// ---- JS bindings --------------------------------------------------------------------------

// layernormForward(out, mean, rstd, inp, weight, bias, N, C); declarators are read in order.
Napi::Value LayernormForward(const Napi::CallbackInfo& info) {
  Args a(info, "layernormForward", 8);
  const int64_t N = a.size(6), C = a.size(7, 1);
  float *out = a.f32(0, N * C), *mean = a.f32(1, N), *rstd = a.f32(2, N);
  const float *inp = a.f32(3, N * C), *w = a.f32(4, C), *b = a.f32(5, C);
  if (a.ok()) layernorm_forward(out, mean, rstd, inp, w, b, N, C);
  return a.env().Undefined();
}

// layernormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C)
Napi::Value LayernormBackward(const Napi::CallbackInfo& info) {
  Args a(info, "layernormBackward", 10);
  const int64_t N = a.size(8), C = a.size(9, 1);
  float *dinp = a.f32(0, N * C), *dweight = a.f32(1, C), *dbias = a.f32(2, C);
  const float *dout = a.f32(3, N * C), *inp = a.f32(4, N * C), *w = a.f32(5, C);
  const float *mean = a.f32(6, N), *rstd = a.f32(7, N);
  if (a.ok()) layernorm_backward(dinp, dweight, dbias, dout, inp, w, mean, rstd, N, C);
  return a.env().Undefined();
}

Napi::Value GeluForward(const Napi::CallbackInfo& info) {  // (out, inp, N)
  return flat_binding(info, "geluForward", 2, [](float** x, int64_t N) { gelu_forward(x[0], x[1], N); });
}

Napi::Value GeluBackward(const Napi::CallbackInfo& info) {  // (dinp, inp, dout, N)
  return flat_binding(info, "geluBackward", 3, [](float** x, int64_t N) { gelu_backward(x[0], x[1], x[2], N); });
}

Napi::Value ResidualForward(const Napi::CallbackInfo& info) {  // (out, a, b, N)
  return flat_binding(info, "residualForward", 3, [](float** x, int64_t N) { add_parallel(x[0], x[1], x[2], N); });
}

Napi::Value Accumulate(const Napi::CallbackInfo& info) {  // (dst, src, N): dst += src
  return flat_binding(info, "accumulate", 2, [](float** x, int64_t N) { add_parallel(x[0], x[0], x[1], N); });
}

// Checks every token/target against [0, limit) up front: the kernels index with them.
void check_indices(Args& a, const int32_t* idx, int64_t n, int64_t limit, const char* what) {
  for (int64_t i = 0; a.ok() && i < n; ++i) {
    if (idx[i] < 0 || idx[i] >= limit) {
      a.fail_range(std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(idx[i]) +
                   " is outside [0, " + std::to_string(limit) + ")");
    }
  }
}

// An encoder call's B, T, C (arguments 4 to 6).
struct EncShape {
  int64_t B, T, C;
};
EncShape enc_shape(Args& a) { return {a.size(4), a.size(5, 1), a.size(6, 1)}; }  // read in order

// Whether the call is good so far and its tokens index rows of wte (argument wte_at, C floats
// a row).
bool tokens_ok(Args& a, const int32_t* tok, int64_t n, size_t wte_at, int64_t C) {
  check_indices(a, tok, n, a.ok() ? a.length(wte_at) / C : 0, "tokens");
  return a.ok();
}

Napi::Value EncoderForward(const Napi::CallbackInfo& info) {
  Args a(info, "encoderForward", 7);
  const auto [B, T, C] = enc_shape(a);
  float* out = a.f32(0, B * T * C);
  const int32_t* tok = a.i32(1, B * T);
  const float* wte = a.f32(2, C);
  const float* wpe = a.f32(3, T * C);
  if (tokens_ok(a, tok, B * T, 2, C)) encoder_forward(out, tok, wte, wpe, B, T, C);
  return a.env().Undefined();
}

Napi::Value EncoderBackward(const Napi::CallbackInfo& info) {
  Args a(info, "encoderBackward", 7);
  const auto [B, T, C] = enc_shape(a);
  float* dwte = a.f32(0, C);
  float* dwpe = a.f32(1, T * C);
  const float* dout = a.f32(2, B * T * C);
  const int32_t* tok = a.i32(3, B * T);
  const float wte_scale = (float)a.number_or(7, 1.0);
  if (tokens_ok(a, tok, B * T, 0, C)) encoder_backward(dwte, dwpe, dout, tok, B, T, C, wte_scale);
  return a.env().Undefined();
}

// crossEntropy(losses, dlogits|null, logits, targets, BT, V, scale, zCoef?, lse?) → Σ losses.
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Args a(info, "crossEntropy", 7);
  const int64_t BT = a.size(4), V = a.size(5, 1);
  const double scale = a.number(6);
  float* losses = a.f32(0, BT);
  float* dl = a.f32(1, BT * V, true);
  const float* logits = a.f32(2, BT * V);
  const int32_t* targets = a.i32(3, BT);
  check_indices(a, targets, BT, V, "targets");
  const double zc = a.number_or(7, 0.0);
  float* lse = a.f32(8, BT, true);
  if (!a.ok()) return a.env().Undefined();
  return Napi::Number::New(a.env(), cross_entropy(losses, lse, dl, logits, targets, BT, V, (float)scale, zc));
}

// opsSetSimd(on?: boolean): boolean — selects the AVX2 or portable bodies of every kernel in
// ops.cc, attention.cc and optim.cc; returns the state in effect (false without AVX2/FMA).
Napi::Value OpsSetSimd(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsBoolean()) simd_set(info[0].As<Napi::Boolean>().Value());
  return Napi::Boolean::New(info.Env(), simd_active());
}

// opsSetIsa(name?: string): string — selects the ISA level of those kernels ("portable",
// "avx2", "avx512f"; capped at this process's isa()); returns the level in effect.
Napi::Value OpsSetIsa(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsString()) {
    Isa want;
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    if (!isa_parse(name.c_str(), &want)) {
      arg_error(info, "opsSetIsa expects \"portable\", \"avx2\", \"avx512f\" or \"avx512bf16\"");
      return info.Env().Undefined();
    }
    ops_set_isa(want);
  }
  return Napi::String::New(info.Env(), isa_name(ops_isa() >= Isa::kAvx512f ? Isa::kAvx512f : ops_isa()));
}

}  // namespace

void InitOps(Napi::Env env, Napi::Object exports) {
  add_exports(env, exports, {{"layernormForward", LayernormForward}, {"layernormBackward", LayernormBackward},
                             {"geluForward", GeluForward}, {"geluBackward", GeluBackward},
                             {"residualForward", ResidualForward}, {"accumulate", Accumulate},
                             {"encoderForward", EncoderForward}, {"encoderBackward", EncoderBackward},
                             {"crossEntropy", CrossEntropy}, {"opsSetSimd", OpsSetSimd},
                             {"opsSetIsa", OpsSetIsa}});
}

}  // namespace keel
