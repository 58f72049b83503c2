// Reductions that feed the training monitors. `sqDiffCopy` is the gradient-noise-scale
// estimator's kernel (src/monitor/noise_scale.ts): with gradient accumulation the trainer sums
// micro-batch gradients into one buffer, so the estimator keeps a copy `prev` of that buffer as
// it was before the micro-batch and, after the micro-batch's backward, needs
//   s = Σ (cur − prev)²   (the squared norm of what this micro-batch added), then prev ← cur.
// One fused pass: read cur and prev, write prev. Contract: src/kernels/types.ts.
//
// Same conventions as optim.cc: N is split into one contiguous chunk per thread, AVX2/FMA or
// portable bodies (simd.h), the difference and its square are taken in double (the difference
// of two floats is exact in double unless their exponents differ by more than 29), and the
// per-thread partials are added in thread order, so the result depends on the thread count but
// never on scheduling.
#include <napi.h>

#include <vector>

#include "args.h"
#include "kernel_util.h"
#include "pool.h"
#include "simd.h"

namespace keel {
namespace {

constexpr int64_t kGrain = 65536;  // elements; smaller calls stay on the calling thread

namespace port {
double sqdiff_copy(float* prev, const float* cur, int64_t i0, int64_t i1) {
  double s = 0.0;
  for (int64_t i = i0; i < i1; ++i) {
    const double d = (double)cur[i] - (double)prev[i];
    s += d * d;
    prev[i] = cur[i];
  }
  return s;
}
}  // namespace port

#if KEEL_X86
namespace avx2 {
KEEL_AVX2 double sqdiff_copy(float* prev, const float* cur, int64_t i0, int64_t i1) {
  __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {  // two independent accumulators; the loop is bandwidth-bound
    const __m256 c = _mm256_loadu_ps(cur + i), p = _mm256_loadu_ps(prev + i);
    const __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(c)), _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
    const __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(c, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)));
    a0 = _mm256_fmadd_pd(d0, d0, a0);
    a1 = _mm256_fmadd_pd(d1, d1, a1);
    _mm256_storeu_ps(prev + i, c);
  }
  double s = hsum256d(_mm256_add_pd(a0, a1));
  for (; i < i1; ++i) {
    const double d = (double)cur[i] - (double)prev[i];
    s += d * d;
    prev[i] = cur[i];
  }
  return s;
}
}  // namespace avx2
#endif  // KEEL_X86

double sq_diff_copy(float* prev, const float* cur, int64_t N) {
  const auto body = KEEL_PICK_AVX2(sqdiff_copy);
  std::vector<double> part((size_t)pool_threads(), 0.0);
  parallel_for(N, [&](int64_t i0, int64_t i1, int th) { part[(size_t)th] = body(prev, cur, i0, i1); }, kGrain);
  double s = 0.0;
  for (double v : part) s += v;
  return s;
}

// sqDiffCopy(prev, cur, N) → Σ (cur − prev)², then prev ← cur (the first N elements).
Napi::Value SqDiffCopy(const Napi::CallbackInfo& info) {
  Args a(info, "sqDiffCopy", 3);
  const int64_t N = a.size(2);
  float* x[2];  // prev, cur
  a.f32s(2, N, x);
  if (!a.ok()) return a.env().Undefined();
  return Napi::Number::New(a.env(), sq_diff_copy(x[0], x[1], N));
}

}  // namespace

void InitReduce(Napi::Env env, Napi::Object exports) {
  add_exports(env, exports, {{"sqDiffCopy", SqDiffCopy}});
}

}  // namespace keel
