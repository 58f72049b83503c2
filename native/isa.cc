// ISA detection, the KEEL_ISA override and the peak-throughput loop (see isa.h).
#include "isa.h"

#include <napi.h>

// GCC 12 warns that its own AVX-512 intrinsics (masked loads, set1) read an uninitialised
// temporary; the headers' false positive, not this file's.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "args.h"
#include "pool.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define KEEL_ISA_X86 1
#include <immintrin.h>
#else
#define KEEL_ISA_X86 0
#endif

namespace keel {

namespace {
const char* const kNames[] = {"portable", "avx2", "avx512f", "avx512bf16"};

Isa detect() {
#if KEEL_ISA_X86
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return Isa::kPortable;
  // The AVX-512 kernels use F, BW (16-bit lane moves) and VL; the OS must save zmm state,
  // which __builtin_cpu_supports checks through XGETBV.
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl")) {
    return Isa::kAvx2;
  }
  return __builtin_cpu_supports("avx512bf16") ? Isa::kAvx512bf16 : Isa::kAvx512f;
#else
  return Isa::kPortable;
#endif
}

Isa from_env(Isa best) {
  const char* env = std::getenv("KEEL_ISA");
  if (!env || !*env) return best;
  Isa want;
  if (!isa_parse(env, &want)) {
    std::fprintf(stderr, "keel: KEEL_ISA=%s is not one of portable, avx2, avx512f, avx512bf16; using %s\n", env,
                 isa_name(best));
    return best;
  }
  if (want > best) {
    std::fprintf(stderr, "keel: KEEL_ISA=%s is beyond this CPU; using %s\n", env, isa_name(best));
    return best;
  }
  return want;
}

// ---- peak loops ------------------------------------------------------------------------
// Twelve independent accumulators cover the multiply-add latency (4-5 cycles) on two pipes.
// Each returns a value derived from the accumulators so the loop is not optimised away.
constexpr int kChains = 12;

// One body for every path's loop (a macro, as each needs its own target attribute): kChains
// chains of a = STEP(a) on vectors of type V, started at SET1(i), summed by ADD and REDUCE.
#define KEEL_PEAK_LOOP(NAME, TARGET, V, SET1, STEP, ADD, REDUCE)   \
  TARGET float NAME(long n) {                                       \
    V a[kChains];                                                   \
    for (int i = 0; i < kChains; ++i) a[i] = SET1((float)i);        \
    for (long k = 0; k < n; ++k) {                                  \
      _Pragma("GCC unroll 12")                                      \
      for (int i = 0; i < kChains; ++i) a[i] = STEP(a[i]);          \
    }                                                               \
    V s = a[0];                                                     \
    for (int i = 1; i < kChains; ++i) s = ADD(s, a[i]);             \
    return REDUCE(s);                                               \
  }

#if KEEL_ISA_X86
#define KEEL_PEAK_AVX2 __attribute__((target("avx2,fma")))
#define KEEL_PEAK_AVX512 __attribute__((target("avx512f")))
#define KEEL_PEAK_BF16 __attribute__((target("avx512f,avx512bf16")))
KEEL_PEAK_AVX2 inline __m256 fma256(__m256 a) { return _mm256_fmadd_ps(a, _mm256_set1_ps(0.999f), _mm256_set1_ps(0.001f)); }
KEEL_PEAK_AVX512 inline __m512 fma512(__m512 a) { return _mm512_fmadd_ps(a, _mm512_set1_ps(0.999f), _mm512_set1_ps(0.001f)); }
// bf16 1.0 times bf16 ~0.001, pairwise.
KEEL_PEAK_BF16 inline __m512 dpbf16(__m512 a) {
  return _mm512_dpbf16_ps(a, (__m512bh)_mm512_set1_epi16(0x3f80), (__m512bh)_mm512_set1_epi16(0x3a83));
}
KEEL_PEAK_LOOP(loop_avx2, KEEL_PEAK_AVX2, __m256, _mm256_set1_ps, fma256, _mm256_add_ps, _mm256_cvtss_f32)
KEEL_PEAK_LOOP(loop_avx512, KEEL_PEAK_AVX512, __m512, _mm512_set1_ps, fma512, _mm512_add_ps, _mm512_reduce_add_ps)
KEEL_PEAK_LOOP(loop_dpbf16, KEEL_PEAK_BF16, __m512, _mm512_set1_ps, dpbf16, _mm512_add_ps, _mm512_reduce_add_ps)
#endif

typedef float v4f __attribute__((vector_size(16)));
inline v4f set4(float x) { return v4f{x, x, x, x}; }
inline v4f mul_add4(v4f a) { return a * set4(0.999f) + set4(0.001f); }
inline v4f add4(v4f a, v4f b) { return a + b; }
inline float first4(v4f a) { return a[0]; }
KEEL_PEAK_LOOP(loop_portable, , v4f, set4, mul_add4, add4, first4)

// Runs the path's loop for n iterations; returns flops per iteration and stores a sink value.
double run_loop(Isa isa, bool bf16, long n, float* sink) {
#if KEEL_ISA_X86
  if (isa == Isa::kAvx512bf16 && bf16) return *sink = loop_dpbf16(n), kChains * 16 * 4.0;
  if (isa >= Isa::kAvx512f) return *sink = loop_avx512(n), kChains * 16 * 2.0;
  if (isa == Isa::kAvx2) return *sink = loop_avx2(n), kChains * 8 * 2.0;
#endif
  return *sink = loop_portable(n), kChains * 4 * 2.0;
}
}  // namespace

Isa isa_supported() {
  static const Isa best = detect();
  return best;
}

Isa isa_active() {
  static const Isa active = from_env(isa_supported());
  return active;
}

const char* isa_name(Isa isa) { return kNames[(int)isa]; }

bool isa_parse(const char* name, Isa* out) {
  for (int i = 0; i < 4; ++i) {
    if (std::strcmp(name, kNames[i]) == 0) return *out = (Isa)i, true;
  }
  return false;
}

// Best of three timed rounds of ~10 ms per thread (a busy shared machine only slows a round
// down), after a warm-up round that brings the cores to their sustained clock.
double isa_peak_gflops(Isa isa, bool bf16, int threads) {
  const long n = 3000000;
  volatile float sink = 0;
  double per_iter = 0, best = 0;
  for (int round = 0; round < 4; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(
        threads,
        [&](int64_t, int64_t, int t) {
          float s;
          const double f = run_loop(isa, bf16, n, &s);
          if (t == 0) per_iter = f;
          sink = s;
        },
        1);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double gflops = per_iter * (double)n * threads / sec / 1e9;
    if (round > 0 && gflops > best) best = gflops;
  }
  (void)sink;
  return best;
}

// ---- JavaScript bindings ---------------------------------------------------------------
namespace {
Napi::Value IsaName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), isa_name(isa_active())); }

// isaSupported() → the path names this process may use, best first.
Napi::Value IsaSupported(const Napi::CallbackInfo& info) {
  Napi::Array out = Napi::Array::New(info.Env());
  for (int i = (int)isa_active(), j = 0; i >= 0; --i) out.Set(j++, Napi::String::New(info.Env(), kNames[i]));
  return out;
}
}  // namespace

void InitIsa(Napi::Env env, Napi::Object exports) {
  add_exports(env, exports, {{"isa", IsaName}, {"isaSupported", IsaSupported}});
}

}  // namespace keel
