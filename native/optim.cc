// Optimizer-side kernels over the flat parameter buffer: AdamW, Σx² (for gradient-norm
// clipping) and in-place scaling. Contracts: src/kernels/types.ts.
//
// Glossary: N flat element count (0.8M–11M for Keel's models), t the 1-based AdamW step.
//
// All three are memory-bound streams: split over N into one contiguous chunk per thread,
// vectorised with AVX2/FMA (or the portable loops; see simd.h).
#include <napi.h>

#include <cmath>
#include <vector>

#include "args.h"
#include "kernel_util.h"
#include "pool.h"
#include "simd.h"

namespace keel {
namespace {

constexpr int64_t kGrain = 65536;  // elements; smaller calls stay on the calling thread

// Per-call constants of one AdamW step, in float (the state is float).
struct AdamConst {
  float b1, b2, omb1, omb2;  // β1, β2, 1−β1, 1−β2
  float step;                // lr / (1 − β1ᵗ)
  float inv_sqrt_bc2;        // 1 / √(1 − β2ᵗ)
  float eps;
  float decay;               // 1 − lr·λ (decoupled weight decay, applied first)
};

// PyTorch's order of operations: θ·(1−lr·λ); m, v updated; denom = √v/√bc2 + ε;
// θ −= (lr/bc1)·m/denom.
void adamw_port(float* p, const float* g, float* m, float* v, const AdamConst& k, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const float gi = g[i];
    const float mi = k.b1 * m[i] + k.omb1 * gi;
    const float vi = k.b2 * v[i] + k.omb2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) * k.inv_sqrt_bc2 + k.eps;
    p[i] = p[i] * k.decay - k.step * (mi / denom);
  }
}

double sumsq_port(const float* x, int64_t i0, int64_t i1) {
  double s = 0.0;
  for (int64_t i = i0; i < i1; ++i) s += (double)x[i] * (double)x[i];
  return s;
}

void scale_port(float* x, float s, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) x[i] *= s;
}

#if KEEL_X86
KEEL_AVX2 void adamw_avx2(float* p, const float* g, float* m, float* v, const AdamConst& k, int64_t i0, int64_t i1) {
  const __m256 b1 = _mm256_set1_ps(k.b1), b2 = _mm256_set1_ps(k.b2);
  const __m256 omb1 = _mm256_set1_ps(k.omb1), omb2 = _mm256_set1_ps(k.omb2);
  const __m256 step = _mm256_set1_ps(k.step), ibc2 = _mm256_set1_ps(k.inv_sqrt_bc2);
  const __m256 eps = _mm256_set1_ps(k.eps), decay = _mm256_set1_ps(k.decay);
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 mi = _mm256_fmadd_ps(b1, _mm256_loadu_ps(m + i), _mm256_mul_ps(omb1, gi));
    const __m256 vi = _mm256_fmadd_ps(b2, _mm256_loadu_ps(v + i), _mm256_mul_ps(_mm256_mul_ps(omb2, gi), gi));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    const __m256 denom = _mm256_fmadd_ps(_mm256_sqrt_ps(vi), ibc2, eps);
    const __m256 upd = _mm256_mul_ps(step, _mm256_div_ps(mi, denom));
    _mm256_storeu_ps(p + i, _mm256_fmsub_ps(_mm256_loadu_ps(p + i), decay, upd));
  }
  if (i < i1) adamw_port(p, g, m, v, k, i, i1);
}

KEEL_AVX2 double sumsq_avx2(const float* x, int64_t i0, int64_t i1) {
  __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd(), a2 = _mm256_setzero_pd(), a3 = _mm256_setzero_pd();
  int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {  // four independent accumulators hide the FMA latency
    const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
    const __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(x0));
    const __m256d d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(x0, 1));
    const __m256d d2 = _mm256_cvtps_pd(_mm256_castps256_ps128(x1));
    const __m256d d3 = _mm256_cvtps_pd(_mm256_extractf128_ps(x1, 1));
    a0 = _mm256_fmadd_pd(d0, d0, a0);
    a1 = _mm256_fmadd_pd(d1, d1, a1);
    a2 = _mm256_fmadd_pd(d2, d2, a2);
    a3 = _mm256_fmadd_pd(d3, d3, a3);
  }
  double s = hsum256d(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
  for (; i < i1; ++i) s += (double)x[i] * (double)x[i];
  return s;
}

KEEL_AVX2 void scale_avx2(float* x, float s, int64_t i0, int64_t i1) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
    _mm256_storeu_ps(x + i + 8, _mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vs));
  }
  for (; i < i1; ++i) x[i] *= s;
}
#endif  // KEEL_X86

Napi::Value Adamw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!need_args(info, 11, "adamw")) return env.Undefined();
  int64_t N = 0, t = 1;
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, wd = 0;
  if (!size_arg(info, 4, &N) || !num(info, 5, &lr) || !num(info, 6, &beta1) || !num(info, 7, &beta2) ||
      !num(info, 8, &eps) || !num(info, 9, &wd) || !size_arg(info, 10, &t, 1))
    return env.Undefined();
  float* p = f32(info, 0, N);
  if (!p) return env.Undefined();
  const float* g = f32(info, 1, N);
  if (!g) return env.Undefined();
  float* m = f32(info, 2, N);
  if (!m) return env.Undefined();
  float* v = f32(info, 3, N);
  if (!v) return env.Undefined();
  // Bias corrections in double: 1 − β2ᵗ for β2 near 1 loses digits in float.
  const double bc1 = 1.0 - std::pow(beta1, (double)t);
  const double bc2 = 1.0 - std::pow(beta2, (double)t);
  const AdamConst k{(float)beta1, (float)beta2, (float)(1.0 - beta1), (float)(1.0 - beta2),
                    (float)(lr / bc1), (float)(1.0 / std::sqrt(bc2)), (float)eps, (float)(1.0 - lr * wd)};
  const bool simd = simd_active();
  parallel_for(N, [&](int64_t i0, int64_t i1, int) {
#if KEEL_X86
    if (simd) return adamw_avx2(p, g, m, v, k, i0, i1);
#endif
    (void)simd;
    adamw_port(p, g, m, v, k, i0, i1);
  }, kGrain);
  return env.Undefined();
}

Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!need_args(info, 2, "sumSquares")) return env.Undefined();
  int64_t N;
  if (!size_arg(info, 1, &N)) return env.Undefined();
  const float* x = f32(info, 0, N);
  if (!x) return env.Undefined();
  const bool simd = simd_active();
  // One partial per thread, added in thread order: the result depends on the thread count
  // but never on scheduling.
  std::vector<double> part((size_t)pool_threads(), 0.0);
  parallel_for(N, [&](int64_t i0, int64_t i1, int th) {
#if KEEL_X86
    if (simd) {
      part[(size_t)th] = sumsq_avx2(x, i0, i1);
      return;
    }
#endif
    (void)simd;
    part[(size_t)th] = sumsq_port(x, i0, i1);
  }, kGrain);
  double s = 0.0;
  for (double v : part) s += v;
  return Napi::Number::New(env, s);
}

Napi::Value Scale(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!need_args(info, 3, "scale")) return env.Undefined();
  int64_t N;
  double s = 1.0;
  if (!size_arg(info, 1, &N) || !num(info, 2, &s)) return env.Undefined();
  float* x = f32(info, 0, N);
  if (!x) return env.Undefined();
  const bool simd = simd_active();
  const float fs = (float)s;
  parallel_for(N, [&](int64_t i0, int64_t i1, int) {
#if KEEL_X86
    if (simd) return scale_avx2(x, fs, i0, i1);
#endif
    (void)simd;
    scale_port(x, fs, i0, i1);
  }, kGrain);
  return env.Undefined();
}

}  // namespace

void InitOptim(Napi::Env env, Napi::Object exports) {
  exports.Set("adamw", Napi::Function::New(env, Adamw));
  exports.Set("sumSquares", Napi::Function::New(env, SumSquares));
  exports.Set("scale", Napi::Function::New(env, Scale));
}

}  // namespace keel
