// The float32 mean of `keel average` (src/average/stream.ts documents the arithmetic):
//   out[j] = float32( ((w₀·x₀[j] + w₁·x₁[j]) + … + w_{k−1}·x_{k−1}[j]) / W )
// products and sums in float64, left to right, one division, one rounding to nearest even.
// Multiplying by w = 1 and dividing by W = 1 are exact, so the kernel always does both.
//
// Bodies: AVX-512F (8 float64 lanes) with the explicit-rounding intrinsics, which the compiler
// never fuses into an FMA (a fused w·x + s would round once instead of twice: other bits);
// elsewhere a scalar loop compiled for baseline x86-64, which has no FMA to fuse into.
// It runs on the calling thread alone: the mean is memory-bound (one chunk takes well under a
// millisecond), and `keel average` overlaps it with reads and writes on libuv's threads,
// which kernel-pool workers spinning between jobs would compete with for the cores.
#include <napi.h>

#include <cstdint>
#include <vector>

#include "args.h"
#include "isa.h"
#include "kernel_util.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define KEEL_AVG_X86 1
#include <immintrin.h>
#else
#define KEEL_AVG_X86 0
#endif

namespace keel {
namespace {

struct MeanArgs {
  float* out;
  std::vector<const float*> xs;
  std::vector<double> ws;
  double W;
};

void mean_port(const MeanArgs& a, int64_t j0, int64_t j1) {
  const size_t k = a.xs.size();
  for (int64_t j = j0; j < j1; ++j) {
    double s = a.ws[0] * (double)a.xs[0][j];
    for (size_t i = 1; i < k; ++i) {
      const double p = a.ws[i] * (double)a.xs[i][j];
      s = s + p;
    }
    a.out[j] = (float)(s / a.W);
  }
}

#if KEEL_AVG_X86
constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

__attribute__((target("avx512f,avx512vl"))) void mean_avx512(const MeanArgs& a, int64_t j0, int64_t j1) {
  const size_t k = a.xs.size();
  const __m512d W = _mm512_set1_pd(a.W);
  // The tail runs masked too: a scalar tail compiled in this function could be fused.
  for (int64_t j = j0; j < j1; j += 8) {
    const __mmask8 m = j1 - j >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (j1 - j)) - 1u);
    __m512d s = _mm512_setzero_pd();
    for (size_t i = 0; i < k; ++i) {
      const __m512d x = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, a.xs[i] + j));
      const __m512d p = _mm512_mul_round_pd(_mm512_set1_pd(a.ws[i]), x, kRne);
      s = i == 0 ? p : _mm512_add_round_pd(s, p, kRne);  // (0 + p would turn −0 into +0)
    }
    _mm256_mask_storeu_ps(a.out + j, m, _mm512_cvt_roundpd_ps(_mm512_div_round_pd(s, W, kRne), kRne));
  }
}
#endif

// averageMeanF32(out, xs: Float32Array[], ws: number[], W, m): out[0..m) as above.
Napi::Value AverageMeanF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t m;
  double W;
  if (!need_args(info, 5, "averageMeanF32") || !num(info, 3, &W) || !size_arg(info, 4, &m)) return env.Undefined();
  if (!info[1].IsArray() || !info[2].IsArray()) {
    arg_error(info, "averageMeanF32: xs and ws must be arrays");
    return env.Undefined();
  }
  Napi::Array xs = info[1].As<Napi::Array>(), ws = info[2].As<Napi::Array>();
  if (xs.Length() == 0 || xs.Length() != ws.Length()) {
    arg_error(info, "averageMeanF32: xs and ws must be non-empty and of the same length");
    return env.Undefined();
  }
  MeanArgs a;
  a.W = W;
  bool failed = false;
  a.out = f32(info, 0, m, false, &failed);
  for (uint32_t i = 0; i < xs.Length() && !failed; ++i) {
    Napi::Value x = xs[i], w = ws[i];
    if (!x.IsTypedArray() || x.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
        (int64_t)x.As<Napi::Float32Array>().ElementLength() < m || !w.IsNumber()) {
      arg_error(info, "averageMeanF32: xs[" + std::to_string(i) + "] must be a Float32Array of ≥ m elements with a numeric weight");
      return env.Undefined();
    }
    a.xs.push_back(x.As<Napi::Float32Array>().Data());
    a.ws.push_back(w.As<Napi::Number>().DoubleValue());
  }
  if (failed) return env.Undefined();
#if KEEL_AVG_X86
  const bool wide = isa_active() >= Isa::kAvx512f;
#else
  const bool wide = false;
#endif
#if KEEL_AVG_X86
  if (wide) {
    mean_avx512(a, 0, m);
    return env.Undefined();
  }
#endif
  (void)wide;
  mean_port(a, 0, m);
  return env.Undefined();
}

}  // namespace

void InitAverage(Napi::Env env, Napi::Object exports) {
  exports.Set("averageMeanF32", Napi::Function::New(env, AverageMeanF32));
}

}  // namespace keel
