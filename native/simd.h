// SIMD support shared by the kernel files (ops.cc, attention.cc, optim.cc, reduce.cc, matmul.cc).
//
// Every kernel has a portable C++ body (plain loops the compiler may auto-vectorise for the
// baseline ISA) and an AVX2/FMA one written with intrinsics, some also an AVX-512F one. The
// SIMD bodies are compiled with __attribute__((target)) so the addon itself still targets
// baseline x86-64; which body runs is decided per call from ops_isa() (KEEL_PICK below):
//   - portable when the ISA path (isa.h: the CPU's best, or KEEL_ISA) is below avx2,
//   - portable when the environment sets KEEL_SIMD=0 at load time,
//   - otherwise whatever the JS exports opsSetSimd(on) / opsSetIsa(name) last chose (tests
//     flip them to run every body against the reference).
//
// Also here: Vec8/Vec16, the vector operations in which bodies shared by two ISAs are written
// (simd_exp.inc, ops_simd.inc, matmul_ukr.inc), and a vectorised exp (Cephes-style range
// reduction + a minimax polynomial fitted for this file) with its scalar twin, so GELU and
// softmax never call expf/tanhf per element.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "isa.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define KEEL_X86 1
#include <immintrin.h>
// Functions that use AVX2/FMA intrinsics. Helpers called from them must carry it too, or
// GCC refuses to inline them ("target specific option mismatch").
#define KEEL_AVX2 __attribute__((target("avx2,fma")))
#else
#define KEEL_X86 0
#endif

namespace keel {

// The switch itself: the ISA level the ops/attention/optim bodies may use (attention, LayerNorm
// and GELU have AVX-512 bodies; everything else tops out at AVX2). Written only from the JS thread between
// kernel calls, read at the start of each kernel, so a plain variable suffices.
inline Isa& ops_isa_level() {
  static Isa level = [] {
    const char* env = std::getenv("KEEL_SIMD");
    return env && std::strcmp(env, "0") == 0 ? Isa::kPortable : isa_active();
  }();
  return level;
}
inline Isa ops_isa() { return ops_isa_level(); }
inline bool simd_active() { return ops_isa() >= Isa::kAvx2; }
// Sets the level (capped at isa_active()); returns the level in effect.
inline Isa ops_set_isa(Isa want) { return ops_isa_level() = want < isa_active() ? want : isa_active(); }
// on: the best level this process has; off: portable. Returns whether SIMD is now on.
inline bool simd_set(bool on) { return ops_set_isa(on ? isa_active() : Isa::kPortable) >= Isa::kAvx2; }

// ---- dispatch ----------------------------------------------------------------------------
// A kernel file puts each body of a kernel under the same name in namespaces port, avx2 and
// (when it has one) avx512; KEEL_PICK(name) is the body for the level in effect, read once
// per call on the JS thread, and KEEL_PICK_AVX2(name) the same for a kernel whose best body
// is the AVX2 one. Template bodies work too: KEEL_PICK(adam<kMode>). Without x86 only the
// portable bodies exist.
template <class Fn>
inline Fn pick_body(Fn port, Fn avx2, Fn avx512) {
  const Isa isa = ops_isa();
  return isa >= Isa::kAvx512f ? avx512 : isa >= Isa::kAvx2 ? avx2 : port;
}
#if KEEL_X86
#define KEEL_PICK(...) ::keel::pick_body(&port::__VA_ARGS__, &avx2::__VA_ARGS__, &avx512::__VA_ARGS__)
#define KEEL_PICK_AVX2(...) ::keel::pick_body(&port::__VA_ARGS__, &avx2::__VA_ARGS__, &avx2::__VA_ARGS__)
#else
#define KEEL_PICK(...) (&port::__VA_ARGS__)
#define KEEL_PICK_AVX2(...) (&port::__VA_ARGS__)
#endif

// ---- exp ---------------------------------------------------------------------------------
// e^x = 2^n · e^r with n = round(x·log2 e) and r = x − n·ln2 (|r| ≤ ln2/2, ln2 split in a
// high part exact in float and a low correction). e^r ≈ 1 + r + r²·P(r) with P of degree 3,
// coefficients fitted for this file (iteratively reweighted least squares, i.e. minimax on
// relative error, over |r| ≤ ln2/2): max relative error 1.7e-7 evaluated in float, one FMA
// cheaper than the 6.5e-8 degree-4 fit. Inputs are clamped to the range where 2^n is a normal
// float; below it the result is flushed to 0 (no denormals, and e^−inf = 0 exactly).
//
// Rounding uses the 1.5·2^23 trick: adding kRound to a float below 2^22 in magnitude rounds
// it to an integer held in the low mantissa bits. With kRound + 127 as the constant, those
// bits are n + 127, so shifting the sum left by 23 gives the bit pattern of 2^n directly
// (no round/convert instructions in the AVX2 body).
namespace expc {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;           // 355/512, exact in 9 bits
constexpr float kLn2Lo = -2.12194440e-4f;        // ln2 − kLn2Hi
constexpr float kMax = 88.3762626647949f;        // e^kMax ≈ FLT_MAX
constexpr float kMin = -87.3365447505531f;       // e^kMin ≈ FLT_MIN (smallest normal)
constexpr float kP0 = 0.499992311000824f;
constexpr float kP1 = 0.16667114198207855f;
constexpr float kP2 = 0.04189009591937065f;
constexpr float kP3 = 0.008312505669891834f;
constexpr float kRound = 12582912.0f;            // 1.5·2^23
constexpr float kRoundBias = 12583039.0f;        // 1.5·2^23 + 127
}  // namespace expc

inline float exp_scalar(float x) {
  using namespace expc;
  if (!(x >= kMin)) return x != x ? x : 0.0f;  // NaN stays NaN; tiny/−inf → 0
  if (x > kMax) x = kMax;
  const float t = x * kLog2e + kRoundBias;     // kRoundBias + round(x·log2 e)
  const float n = t - kRoundBias;
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = kP3;
  p = p * r + kP2;
  p = p * r + kP1;
  p = p * r + kP0;
  const float y = p * (r * r) + r + 1.0f;
  uint32_t bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits <<= 23;                                  // (n + 127) << 23: the bits of 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

#if KEEL_X86
// Functions that use AVX-512F intrinsics (with the AVX2 ones, which they may call).
#define KEEL_AVX512F __attribute__((target("avx2,fma,avx512f")))

KEEL_AVX2 static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

KEEL_AVX2 static inline float hmax256(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

KEEL_AVX2 static inline double hsum256d(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

// ---- vector operations -------------------------------------------------------------------
// The bodies written once for several ISAs (simd_exp.inc, matmul_ukr.inc) use these names;
// each struct maps them to one ISA's intrinsics, so a body included once per ISA compiles to
// that ISA's instructions (a template alone cannot: the target attribute is per function).
// The operations whose intrinsics differ only in their prefix (_mm256 or _mm512); FN is the
// target attribute. The structs below add those that differ in more.
#define KEEL_VEC_COMMON(P, FN)                                       \
  FN static V zero() { return P##_setzero_ps(); }                   \
  FN static V set1(float x) { return P##_set1_ps(x); }              \
  FN static V load(const float* p) { return P##_load_ps(p); }       \
  FN static V loadu(const float* p) { return P##_loadu_ps(p); }     \
  FN static void storeu(float* p, V v) { P##_storeu_ps(p, v); }     \
  FN static V add(V a, V b) { return P##_add_ps(a, b); }            \
  FN static V sub(V a, V b) { return P##_sub_ps(a, b); }            \
  FN static V mul(V a, V b) { return P##_mul_ps(a, b); }            \
  FN static V div(V a, V b) { return P##_div_ps(a, b); }            \
  FN static V min(V a, V b) { return P##_min_ps(a, b); }            \
  FN static V max(V a, V b) { return P##_max_ps(a, b); }            \
  FN static V fmadd(V a, V b, V c) { return P##_fmadd_ps(a, b, c); } \
  FN static V fnmadd(V a, V b, V c) { return P##_fnmadd_ps(a, b, c); }

struct Vec8 {  // AVX2 + FMA; load needs 32-byte alignment
  using V = __m256;
  using Mask = __m256;  // all-ones lanes
  static constexpr int kLanes = 8;
  // A row's last partial vector is done element by element (the bodies' scalar tails).
  static constexpr bool kMaskedTail = false;
  using Tail = int;
  static Tail tail(int64_t) { return 0; }
  KEEL_VEC_COMMON(_mm256, KEEL_AVX2)
  KEEL_AVX2 static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
  KEEL_AVX2 static float hsum(V v) { return hsum256(v); }
  KEEL_AVX2 static Mask lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  KEEL_AVX2 static V zero_where(Mask m, V v) { return _mm256_andnot_ps(m, v); }
  // The float whose bits are those of t shifted left by 23 (2^n when t's low bits hold n + 127).
  KEEL_AVX2 static V shl23(V t) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23)); }
};

struct Vec16 {  // AVX-512F; load needs 64-byte alignment
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  // A row's last partial vector is one masked vector (masked-off lanes load as 0).
  static constexpr bool kMaskedTail = true;
  using Tail = __mmask16;
  static Tail tail(int64_t rem) { return rem >= 16 ? (Tail)0xffff : (Tail)((1u << rem) - 1u); }
  KEEL_VEC_COMMON(_mm512, KEEL_AVX512F)
  KEEL_AVX512F static V bcast(const float* p) { return _mm512_set1_ps(*p); }
  KEEL_AVX512F static float hsum(V v) { return _mm512_reduce_add_ps(v); }
  KEEL_AVX512F static Mask lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  KEEL_AVX512F static V zero_where(Mask m, V v) { return _mm512_mask_mov_ps(v, m, _mm512_setzero_ps()); }
  KEEL_AVX512F static V shl23(V t) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(t), 23)); }
  KEEL_AVX512F static V loadz(Tail m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  KEEL_AVX512F static void store_masked(float* p, Tail m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  KEEL_AVX512F static V subz(Tail m, V a, V b) { return _mm512_maskz_sub_ps(m, a, b); }
};
#undef KEEL_VEC_COMMON

// exp256 and exp512: one body (simd_exp.inc) on 8 and 16 lanes, hence the same value per lane.
// kFlush: inputs below kMin give exactly 0 (softmax relies on e^−inf = 0 for masked lanes).
// Without it they give e^kMin ≈ 1.2e−38, two instructions cheaper (GELU, which adds 1).
#define KEEL_VEC Vec8
#define KEEL_VEC_FN KEEL_AVX2
#define KEEL_EXP exp256
#include "simd_exp.inc"
#undef KEEL_VEC
#undef KEEL_VEC_FN
#undef KEEL_EXP
#define KEEL_VEC Vec16
#define KEEL_VEC_FN KEEL_AVX512F
#define KEEL_EXP exp512
#include "simd_exp.inc"
#undef KEEL_VEC
#undef KEEL_VEC_FN
#undef KEEL_EXP
// Either by the vector's type, for bodies written once for both (ops_simd.inc).
template <bool kFlush = true>
KEEL_AVX2 static inline __m256 vexp(__m256 x) { return exp256<kFlush>(x); }
template <bool kFlush = true>
KEEL_AVX512F static inline __m512 vexp(__m512 x) { return exp512<kFlush>(x); }

// Lane mask for the first `rem` lanes (rem clamped to 0..8), for maskload/maskstore tails.
KEEL_AVX2 static inline __m256i tail_mask(int64_t rem) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rem), idx);
}
#endif

}  // namespace keel
