// Optimizer-side kernels over the flat parameter buffer: the Adam family (`adam`), the
// sign/SGD momentum family (`momentum`), Adafactor on one tensor, the STREAM triad used as
// the bandwidth yardstick, Σx² (gradient-norm clipping) and in-place scaling.
// Contracts: src/kernels/types.ts.
//
// Glossary: N flat element count (0.8M–11M for Keel's models); m, v first and second
// moments; θ parameters; g gradients; η the effective step size of a block.
//
// adam, momentum, triad, sumSquares and scale are memory-bound streams: split over N into
// one contiguous chunk per thread, vectorised with AVX2/FMA (or the portable loops; see
// simd.h). Per-call scalars are computed in double and rounded to float once; the state is
// float. Reductions (RMS, means) accumulate in double with one partial per thread added in
// thread order, so results depend on the thread count but never on scheduling.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "args.h"
#include "kernel_util.h"
#include "pool.h"
#include "simd.h"

namespace keel {
namespace {

constexpr int64_t kGrain = 65536;  // elements; smaller calls stay on the calling thread

// ---- triad, sumSquares, scale --------------------------------------------------------------

// The triad and momentum AVX2 bodies target AVX2 without FMA: GCC contracts a·b + c into
// an FMA even across intrinsics (and in an inlined portable tail), and these two must round
// exactly like their portable bodies (the exact triad; the sign decision of momentum's d).
#define KEEL_AVX2_NOFMA __attribute__((target("avx2")))

namespace port {

// a = b + s·c with a separate multiply and add in both bodies (no FMA): the result is
// round(b + round(s·c)) either way, so the yardstick is exactly reproducible.
void triad(float* a, const float* b, const float* c, float s, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) a[i] = b[i] + s * c[i];
}

double sumsq(const float* x, int64_t i0, int64_t i1) {
  double s = 0.0;
  for (int64_t i = i0; i < i1; ++i) s += (double)x[i] * (double)x[i];
  return s;
}

void scale(float* x, float s, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) x[i] *= s;
}

}  // namespace port

#if KEEL_X86
namespace avx2 {

KEEL_AVX2_NOFMA void triad(float* a, const float* b, const float* c, float s, int64_t i0, int64_t i1) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {
    _mm256_storeu_ps(a + i, _mm256_add_ps(_mm256_loadu_ps(b + i), _mm256_mul_ps(vs, _mm256_loadu_ps(c + i))));
    _mm256_storeu_ps(a + i + 8,
                     _mm256_add_ps(_mm256_loadu_ps(b + i + 8), _mm256_mul_ps(vs, _mm256_loadu_ps(c + i + 8))));
  }
  if (i < i1) port::triad(a, b, c, s, i, i1);
}

KEEL_AVX2 double sumsq(const float* x, int64_t i0, int64_t i1) {
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

KEEL_AVX2 void scale(float* x, float s, int64_t i0, int64_t i1) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
    _mm256_storeu_ps(x + i + 8, _mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vs));
  }
  for (; i < i1; ++i) x[i] *= s;
}
}  // namespace avx2
#endif  // KEEL_X86

// ---- adam ----------------------------------------------------------------------------------

enum EpsMode { kOutside = 0, kInside = 1, kZero = 2, kAtan2 = 3 };

struct AdamK {
  float b1, g1, b2, g2;
  float step;         // lr·mScale: m̂ folded into the step (outside, inside, zero)
  float rvs, rvs2;    // rootVScale and its square (inside adds ε² to v̂ = rvs²·v)
  float eps, eps2;
  float lr, mscale;   // atan2 is not scale-invariant: it needs m̂ itself
  float decay;
};

// Outside mode keeps PyTorch's order of float ops: denom = √v·rootVScale + ε, then
// θ = θ·decay − (lr·mScale)·(m/denom).
namespace port {
template <int kMode>
void adam(float* p, const float* g, float* m, float* v, const AdamK& k, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const float gi = g[i];
    const float mi = k.b1 * m[i] + k.g1 * gi;
    const float vi = k.b2 * v[i] + k.g2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    if constexpr (kMode == kAtan2) {
      // atan2(±0, 0) = ±0: the both-zero case needs no guard.
      p[i] = p[i] * k.decay - k.lr * std::atan2(k.mscale * mi, std::sqrt(vi) * k.rvs);
    } else {
      float q;
      if constexpr (kMode == kOutside) {
        q = mi / (std::sqrt(vi) * k.rvs + k.eps);
      } else if constexpr (kMode == kInside) {
        q = mi / std::sqrt(k.rvs2 * vi + k.eps2);
      } else {
        const float d = std::sqrt(vi) * k.rvs;
        q = d == 0.0f ? 0.0f : mi / d;  // v̂ = 0 (then m = 0 too): no step, never 0/0
      }
      p[i] = p[i] * k.decay - k.step * q;
    }
  }
}
}  // namespace port

#if KEEL_X86
namespace avx2 {

// atan2(y, x) for x ≥ 0 (x = √v̂), 8 lanes: at most 2.2e-7 relative error in float (measured
// over y, x spanning 12 decades; std::atan2f rounded to float: 1.2e-7). Only the right half-plane is needed, so with q =
// min(|y|, x)/max(|y|, x) ∈ [0, 1]: atan2 = ±atan(q), or ±(π/2 − atan(q)) when |y| > x.
// Above tan(π/8), atan(q) = π/4 + atan((q − 1)/(q + 1)), leaving |q| ≤ tan(π/8), where
// atan(q) ≈ q + q·z·P(z), z = q², with P a cubic fitted for this file (iteratively reweighted
// least squares on relative error, i.e. near-minimax: 2.1e-8 in exact arithmetic).
// atan2(±0, 0) = ±0 and NaN inputs give NaN, like std::atan2 in the portable body.
namespace atanc {
constexpr float kTanPi8 = 0.414213562373095f;
constexpr float kPi4 = 0.785398163397448f, kPi2 = 1.57079632679490f;
constexpr float kP0 = -0.3333295f, kP1 = 0.19977722f, kP2 = -0.13877783f, kP3 = 0.08054014f;
}  // namespace atanc

KEEL_AVX2 static inline __m256 atan2_right256(__m256 y, __m256 x) {
  using namespace atanc;
  const __m256 signbit = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  const __m256 ay = _mm256_andnot_ps(signbit, y);
  const __m256 den = _mm256_max_ps(ay, x);
  __m256 q = _mm256_div_ps(_mm256_min_ps(ay, x), den);
  const __m256 big = _mm256_cmp_ps(q, _mm256_set1_ps(kTanPi8), _CMP_GT_OQ);
  q = _mm256_blendv_ps(q, _mm256_div_ps(_mm256_sub_ps(q, one), _mm256_add_ps(q, one)), big);
  const __m256 z = _mm256_mul_ps(q, q);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(kP3), z, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(kP0));
  __m256 a = _mm256_fmadd_ps(_mm256_mul_ps(q, z), p, q);
  a = _mm256_add_ps(a, _mm256_and_ps(big, _mm256_set1_ps(kPi4)));
  a = _mm256_blendv_ps(a, _mm256_sub_ps(_mm256_set1_ps(kPi2), a), _mm256_cmp_ps(ay, x, _CMP_GT_OQ));
  a = _mm256_andnot_ps(_mm256_cmp_ps(den, zero, _CMP_EQ_OQ), a);  // y = x = 0: 0/0 above, 0 here
  a = _mm256_or_ps(a, _mm256_and_ps(y, signbit));
  return _mm256_blendv_ps(a, _mm256_add_ps(x, y), _mm256_cmp_ps(x, y, _CMP_UNORD_Q));
}

template <int kMode>
KEEL_AVX2 void adam(float* p, const float* g, float* m, float* v, const AdamK& k, int64_t i0, int64_t i1) {
  const __m256 b1 = _mm256_set1_ps(k.b1), b2 = _mm256_set1_ps(k.b2);
  const __m256 g1 = _mm256_set1_ps(k.g1), g2 = _mm256_set1_ps(k.g2);
  const __m256 step = _mm256_set1_ps(k.step), rvs = _mm256_set1_ps(k.rvs), rvs2 = _mm256_set1_ps(k.rvs2);
  const __m256 eps = _mm256_set1_ps(k.eps), eps2 = _mm256_set1_ps(k.eps2), decay = _mm256_set1_ps(k.decay);
  const __m256 lr = _mm256_set1_ps(k.lr), mscale = _mm256_set1_ps(k.mscale);
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 mi = _mm256_fmadd_ps(b1, _mm256_loadu_ps(m + i), _mm256_mul_ps(g1, gi));
    const __m256 vi = _mm256_fmadd_ps(b2, _mm256_loadu_ps(v + i), _mm256_mul_ps(_mm256_mul_ps(g2, gi), gi));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    __m256 upd;
    if constexpr (kMode == kOutside) {
      upd = _mm256_mul_ps(step, _mm256_div_ps(mi, _mm256_fmadd_ps(_mm256_sqrt_ps(vi), rvs, eps)));
    } else if constexpr (kMode == kInside) {
      upd = _mm256_mul_ps(step, _mm256_div_ps(mi, _mm256_sqrt_ps(_mm256_fmadd_ps(rvs2, vi, eps2))));
    } else if constexpr (kMode == kZero) {
      const __m256 d = _mm256_mul_ps(_mm256_sqrt_ps(vi), rvs);
      const __m256 q = _mm256_div_ps(mi, d);
      // Lanes with d == 0 (0/0 = NaN) become 0; a NaN d (NaN state) compares false and stays NaN.
      upd = _mm256_mul_ps(step, _mm256_andnot_ps(_mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_EQ_OQ), q));
    } else {
      upd = _mm256_mul_ps(lr, atan2_right256(_mm256_mul_ps(mscale, mi), _mm256_mul_ps(_mm256_sqrt_ps(vi), rvs)));
    }
    _mm256_storeu_ps(p + i, _mm256_fmsub_ps(_mm256_loadu_ps(p + i), decay, upd));
  }
  if (i < i1) port::adam<kMode>(p, g, m, v, k, i, i1);
}
}  // namespace avx2
#endif

using AdamFn = void (*)(float*, const float*, float*, float*, const AdamK&, int64_t, int64_t);

AdamFn adam_body(int mode) {
  switch (mode) {
    case kOutside: return KEEL_PICK_AVX2(adam<kOutside>);
    case kInside: return KEEL_PICK_AVX2(adam<kInside>);
    case kZero: return KEEL_PICK_AVX2(adam<kZero>);
    default: return KEEL_PICK_AVX2(adam<kAtan2>);
  }
}

void adam(float* p, const float* g, float* m, float* v, int64_t N, const AdamK& k, int mode) {
  const AdamFn body = adam_body(mode);
  parallel_for(N, [&](int64_t i0, int64_t i1, int) { body(p, g, m, v, k, i0, i1); }, kGrain);
}

// adam(params, grads, m, v, N, AdamCoefs)
Napi::Value Adam(const Napi::CallbackInfo& info) {
  Args a(info, "adam", 6);
  const int64_t N = a.size(4);
  float* x[4];  // params, grads, m, v
  a.f32s(4, N, x);
  Coefs c = a.coefs(5, "AdamCoefs");
  const double beta1 = c.num("beta1"), g1 = c.num("g1"), beta2 = c.num("beta2"), g2 = c.num("g2");
  const double mScale = c.num("mScale"), rootVScale = c.num("rootVScale"), lr = c.num("lr"), eps = c.num("eps");
  const double decay = c.num("decay");
  const int64_t mode = c.integer("epsMode", 0, 3);
  if (!a.ok()) return a.env().Undefined();
  const AdamK k{(float)beta1, (float)g1, (float)beta2, (float)g2,
                (float)(lr * mScale), (float)rootVScale, (float)(rootVScale * rootVScale),
                (float)eps, (float)(eps * eps), (float)lr, (float)mScale, (float)decay};
  adam(x[0], x[1], x[2], x[3], N, k, (int)mode);
  return a.env().Undefined();
}

// ---- momentum ------------------------------------------------------------------------------

enum Phi { kSign = 0, kSoftsign = 1, kIdentity = 2 };

struct MomK {
  float dirM, dirG, keepM, addG, wd, eps2;
};

template <int kPhi>
inline float phi_scalar(float d, float eps2) {
  if constexpr (kPhi == kSign) {
    return d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : d);  // sign(±0) = ±0, NaN stays NaN
  } else if constexpr (kPhi == kSoftsign) {
    const float s = d * d + eps2;
    return s == 0.0f ? 0.0f : d / std::sqrt(s);  // ε = 0 and d = 0: 0, not 0/0
  } else {
    (void)eps2;
    return d;
  }
}

// Both bodies use the same float ops in the same order, without FMA (see KEEL_AVX2_NOFMA),
// so they agree bit for bit: a contracted d could differ in its last bit and flip sign(d).
namespace port {
template <int kPhi, bool kStep>
void mom(float* p, const float* g, float* m, const MomK& k, float eta, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const float gi = g[i], mi = m[i];
    const float d = k.dirM * mi + k.dirG * gi;
    m[i] = k.keepM * mi + k.addG * gi;
    if constexpr (kStep) {
      const float th = p[i];
      p[i] = th - eta * (phi_scalar<kPhi>(d, k.eps2) + k.wd * th);
    }
  }
}
}  // namespace port

#if KEEL_X86
namespace avx2 {
template <int kPhi, bool kStep>
KEEL_AVX2_NOFMA void mom(float* p, const float* g, float* m, const MomK& k, float eta, int64_t i0, int64_t i1) {
  const __m256 dirM = _mm256_set1_ps(k.dirM), dirG = _mm256_set1_ps(k.dirG);
  const __m256 keepM = _mm256_set1_ps(k.keepM), addG = _mm256_set1_ps(k.addG);
  const __m256 wd = _mm256_set1_ps(k.wd), eps2 = _mm256_set1_ps(k.eps2), veta = _mm256_set1_ps(eta);
  const __m256 one = _mm256_set1_ps(1.0f), signbit = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i), mi = _mm256_loadu_ps(m + i);
    const __m256 d = _mm256_add_ps(_mm256_mul_ps(dirM, mi), _mm256_mul_ps(dirG, gi));
    _mm256_storeu_ps(m + i, _mm256_add_ps(_mm256_mul_ps(keepM, mi), _mm256_mul_ps(addG, gi)));
    if constexpr (kStep) {
      __m256 ph;
      if constexpr (kPhi == kSign) {
        // ±1 with d's sign where d is non-zero and ordered; d itself (±0, NaN) elsewhere.
        const __m256 s = _mm256_or_ps(_mm256_and_ps(d, signbit), one);
        ph = _mm256_blendv_ps(d, s, _mm256_cmp_ps(d, zero, _CMP_NEQ_OQ));
      } else if constexpr (kPhi == kSoftsign) {
        const __m256 s = _mm256_add_ps(_mm256_mul_ps(d, d), eps2);
        ph = _mm256_andnot_ps(_mm256_cmp_ps(s, zero, _CMP_EQ_OQ), _mm256_div_ps(d, _mm256_sqrt_ps(s)));
      } else {
        ph = d;
      }
      const __m256 th = _mm256_loadu_ps(p + i);
      _mm256_storeu_ps(p + i, _mm256_sub_ps(th, _mm256_mul_ps(veta, _mm256_add_ps(ph, _mm256_mul_ps(wd, th)))));
    }
  }
  if (i < i1) port::mom<kPhi, kStep>(p, g, m, k, eta, i, i1);
}
}  // namespace avx2
#endif

using MomFn = void (*)(float*, const float*, float*, const MomK&, float, int64_t, int64_t);

template <int kPhi>
MomFn mom_for(bool step) {
  return step ? KEEL_PICK_AVX2(mom<kPhi, true>) : KEEL_PICK_AVX2(mom<kPhi, false>);
}

MomFn mom_body(int phi, bool step) {
  switch (phi) {
    case kSign: return mom_for<kSign>(step);
    case kSoftsign: return mom_for<kSoftsign>(step);
    default: return mom_for<kIdentity>(step);
  }
}

bool all_zero(const float* g, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i)
    if (g[i] != 0.0f) return false;  // NaN counts as non-zero
  return true;
}

using SumSqFn = double (*)(const float*, int64_t, int64_t);

// MomentumCoefs (src/kernels/types.ts) beyond the per-element ones: how η is formed per block.
struct MomSteps {
  double lr, rmsFloor;
  int64_t block;       // 0: one η for all N
  bool rms, skip;      // rmsScale, skipZeroRows
};

// One momentum step over the blocks of a buffer. Its parts share the element body and how
// η of a block comes from Σθ² over it (taken before the update).
struct MomRun {
  float* p;
  const float* g;
  float* m;
  int64_t N;
  MomK k;
  MomSteps s;
  MomFn body;
  SumSqFn sum_sq;

  bool scaled() const { return s.lr != 0.0 && s.rms; }  // only then is Σθ² of a block needed
  float eta(double ss) const { return (float)(s.lr * std::max(std::sqrt(ss / (double)s.block), s.rmsFloor)); }
};

// Many small blocks (embedding rows): each block whole on one thread, in cache for both
// passes (RMS, then update).
void mom_small_blocks(const MomRun& r) {
  const int64_t B = r.s.block;
  parallel_for(r.N / B, [&](int64_t b0, int64_t b1, int) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * B, i1 = i0 + B;
      if (r.s.skip && all_zero(r.g, i0, i1)) continue;
      const float eta = r.scaled() ? r.eta(r.sum_sq(r.p, i0, i1)) : (float)r.s.lr;
      r.body(r.p, r.g, r.m, r.k, eta, i0, i1);
    }
  }, row_grain(B, kGrain));
}

// Few big blocks (a whole tensor): each block split over the threads, two passes.
void mom_big_blocks(const MomRun& r) {
  const int64_t B = r.s.block;
  std::vector<double> part((size_t)pool_threads());
  std::vector<char> nonzero((size_t)pool_threads());
  for (int64_t i0 = 0; i0 < r.N; i0 += B) {
    const float* gb = r.g + i0;
    float* pb = r.p + i0;
    if (r.s.skip) {
      std::fill(nonzero.begin(), nonzero.end(), 0);
      parallel_for(B, [&](int64_t j0, int64_t j1, int th) { nonzero[(size_t)th] = !all_zero(gb, j0, j1); }, kGrain);
      if (std::none_of(nonzero.begin(), nonzero.end(), [](char z) { return z != 0; })) continue;
    }
    float eta = (float)r.s.lr;
    if (r.scaled()) {
      std::fill(part.begin(), part.end(), 0.0);
      parallel_for(B, [&](int64_t j0, int64_t j1, int th) { part[(size_t)th] = r.sum_sq(pb, j0, j1); }, kGrain);
      double ss = 0.0;
      for (double x : part) ss += x;
      eta = r.eta(ss);
    }
    parallel_for(B, [&](int64_t j0, int64_t j1, int) { r.body(pb, gb, r.m + i0, r.k, eta, j0, j1); }, kGrain);
  }
}

void momentum(float* p, const float* g, float* m, int64_t N, const MomK& k, int phi, const MomSteps& s) {
  const MomRun r{p, g, m, N, k, s, mom_body(phi, s.lr != 0.0), KEEL_PICK_AVX2(sumsq)};
  if (s.block == 0) {
    const float eta = (float)s.lr;
    parallel_for(N, [&](int64_t i0, int64_t i1, int) { r.body(p, g, m, k, eta, i0, i1); }, kGrain);
  } else if (s.block < kGrain) {
    mom_small_blocks(r);
  } else {
    mom_big_blocks(r);
  }
}

// momentum(params, grads, m, N, MomentumCoefs)
Napi::Value Momentum(const Napi::CallbackInfo& info) {
  Args a(info, "momentum", 5);
  const int64_t N = a.size(3);
  float* x[3];  // params, grads, m
  a.f32s(3, N, x);
  Coefs c = a.coefs(4, "MomentumCoefs");
  const double dirM = c.num("dirM"), dirG = c.num("dirG"), keepM = c.num("keepM"), addG = c.num("addG");
  MomSteps s{};
  s.lr = c.num("lr");
  const double wd = c.num("weightDecay");
  const int64_t phi = c.integer("phi", 0, 2);
  const double eps = c.num("eps");
  s.block = c.integer("block", 0, 2147483647);
  s.rmsFloor = c.num("rmsFloor");
  s.rms = c.flag("rmsScale");
  s.skip = c.flag("skipZeroRows");
  if (s.block > 0 && N % s.block != 0)
    a.fail_range("momentum: N = " + std::to_string(N) + " is not a multiple of block = " + std::to_string(s.block));
  if ((s.skip || s.rms) && s.block == 0)
    a.fail_range(std::string("momentum: ") + (s.skip ? "skipZeroRows" : "rmsScale") + " needs block > 0");
  if (!a.ok()) return a.env().Undefined();
  const MomK k{(float)dirM, (float)dirG, (float)keepM, (float)addG, (float)wd, (float)(eps * eps)};
  momentum(x[0], x[1], x[2], N, k, (int)phi, s);
  return a.env().Undefined();
}

// ---- adafactor -----------------------------------------------------------------------------
// One tensor [batch, rows, cols]. Three passes over g: (A) the second-moment statistics and
// Σθ², (B) Σu² for the RMS clip, (C) the update with u recomputed (no N-sized scratch).
// Factored, 1/√v̂_ij = 1/√(vr_i/mean(vr)) · 1/√vc_j, so u costs two multiplies per element;
// both factors (and the clip) are formed in double per row/column and rounded once.
// Reductions run in double. The element loops are plain C++ in both SIMD modes (only Σθ²
// uses the AVX2 sum): Adafactor is an alternative optimizer, not Keel's hot path, so
// correctness came first; row sums use four partials so the add latency does not bind.

struct AfK {
  double beta2, eps1, clip, lr, eps2, wd;
  float beta1, omb1;
  bool scaleParam;
};

// (C) for elements [i0, i1) of one row: u = g·rf·cf[j] (cf null: unfactored, cf = 1 and
// rf per element from vr), optional momentum, decoupled decay.
void af_update(float* p, const float* g, float* mom, float u_scale, float alpha, float keep, const AfK& k,
               int64_t n, const float* rf_elem, float rf_row, const float* cf) {
  for (int64_t j = 0; j < n; ++j) {
    float u = g[j] * (rf_elem ? rf_elem[j] : rf_row) * (cf ? cf[j] : 1.0f) * u_scale;
    if (mom) {
      u = k.beta1 * mom[j] + k.omb1 * u;
      mom[j] = u;
    }
    p[j] = p[j] * keep - alpha * u;
  }
}

// One tensor and its state: p, g, mom (may be null) hold batch·rows·cols; factored, vr holds
// batch·rows and vc batch·cols; unfactored (vc null), vr holds N.
struct AfTensor {
  float* p;
  const float* g;
  float* vr;
  float* vc;
  float* mom;
  int64_t batch, rows, cols;

  int64_t R() const { return batch * rows; }
  int64_t N() const { return batch * rows * cols; }
};

// Per-thread partial sums, added in thread order: Σθ² and Σu².
struct AfSums {
  std::vector<double> th, u;
  explicit AfSums(int n) : th((size_t)n, 0.0), u((size_t)n, 0.0) {}
};

// Factored (A): vr from the row means of g² + ε1 and Σθ² per thread; returns the column
// sums of g² + ε1 as per-thread partials of batch·cols (empty for a thread that got no rows).
std::vector<std::vector<double>> af_row_pass(const AfTensor& t, const AfK& k, SumSqFn sum_sq, AfSums& sums) {
  const int64_t rows = t.rows, cols = t.cols;
  std::vector<std::vector<double>> colacc((size_t)pool_threads());
  parallel_for(t.R(), [&](int64_t r0, int64_t r1, int th) {
    std::vector<double>& ca = colacc[(size_t)th];
    ca.assign((size_t)(t.batch * cols), 0.0);
    double sth = 0.0;
    for (int64_t r = r0; r < r1; ++r) {
      const float* gr = t.g + r * cols;
      double* car = ca.data() + (r / rows) * cols;
      // Four partial row sums: one chain would be bound by the add latency.
      double rs[4] = {0.0, 0.0, 0.0, 0.0};
      int64_t j = 0;
      for (; j + 4 <= cols; j += 4) {
        for (int l = 0; l < 4; ++l) {
          const double x = (double)gr[j + l] * (double)gr[j + l] + k.eps1;
          rs[l] += x;
          car[j + l] += x;
        }
      }
      for (; j < cols; ++j) {
        const double x = (double)gr[j] * (double)gr[j] + k.eps1;
        rs[0] += x;
        car[j] += x;
      }
      const double rsum = (rs[0] + rs[1]) + (rs[2] + rs[3]);
      t.vr[r] = (float)(k.beta2 * (double)t.vr[r] + (1.0 - k.beta2) * (rsum / (double)cols));
      sth += sum_sq(t.p + r * cols, 0, cols);
    }
    sums.th[(size_t)th] = sth;
  }, row_grain(cols, kGrain));
  return colacc;
}

// Factored, after (A): vc from the column sums, then the factors rf[R] = √(mean(vr)/vr) and
// cf[batch·cols] = 1/√vc, formed in double and rounded once.
void af_factors(const AfTensor& t, const AfK& k, const std::vector<std::vector<double>>& colacc,
                std::vector<float>& rf, std::vector<float>& cf) {
  const int64_t rows = t.rows, cols = t.cols;
  rf.resize((size_t)t.R());
  cf.resize((size_t)(t.batch * cols));
  for (int64_t b = 0; b < t.batch; ++b) {
    for (int64_t j = b * cols; j < (b + 1) * cols; ++j) {
      double s = 0.0;
      for (const auto& ca : colacc)
        if (!ca.empty()) s += ca[(size_t)j];
      t.vc[j] = (float)(k.beta2 * (double)t.vc[j] + (1.0 - k.beta2) * (s / (double)rows));
      cf[(size_t)j] = (float)(1.0 / std::sqrt((double)t.vc[j]));
    }
    double mean = 0.0;
    for (int64_t r = b * rows; r < (b + 1) * rows; ++r) mean += (double)t.vr[r];
    mean /= (double)rows;
    for (int64_t r = b * rows; r < (b + 1) * rows; ++r) rf[(size_t)r] = (float)std::sqrt(mean / (double)t.vr[r]);
  }
}

// Factored (B): Σu² per thread, u = g·rf·cf.
void af_sum_u(const AfTensor& t, const std::vector<float>& rf, const std::vector<float>& cf, AfSums& sums) {
  const int64_t rows = t.rows, cols = t.cols;
  parallel_for(t.R(), [&](int64_t r0, int64_t r1, int th) {
    double su[4] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t r = r0; r < r1; ++r) {
      const float* gr = t.g + r * cols;
      const float* cfr = cf.data() + (r / rows) * cols;
      const float f = rf[(size_t)r];
      int64_t j = 0;
      for (; j + 4 <= cols; j += 4) {
        for (int l = 0; l < 4; ++l) {
          const float u = gr[j + l] * f * cfr[j + l];
          su[l] += (double)u * (double)u;
        }
      }
      for (; j < cols; ++j) {
        const float u = gr[j] * f * cfr[j];
        su[0] += (double)u * (double)u;
      }
    }
    sums.u[(size_t)th] = (su[0] + su[1]) + (su[2] + su[3]);
  }, row_grain(cols, kGrain));
}

// Unfactored (A) and (B) in one pass: v̂ = vr is known element by element.
void af_unfactored_pass(const AfTensor& t, const AfK& k, AfSums& sums) {
  parallel_for(t.N(), [&](int64_t i0, int64_t i1, int th) {
    double sth = 0.0, su = 0.0;
    for (int64_t i = i0; i < i1; ++i) {
      const double gi = (double)t.g[i];
      t.vr[i] = (float)(k.beta2 * (double)t.vr[i] + (1.0 - k.beta2) * (gi * gi + k.eps1));
      const float u = t.g[i] * (float)(1.0 / std::sqrt((double)t.vr[i]));
      su += (double)u * (double)u;
      sth += (double)t.p[i] * (double)t.p[i];
    }
    sums.th[(size_t)th] = sth;
    sums.u[(size_t)th] = su;
  }, kGrain);
}

// (C) over the whole tensor, with the step's scalars: u_scale (the RMS clip), α and the decay.
void af_apply(const AfTensor& t, const AfK& k, const std::vector<float>& rf, const std::vector<float>& cf,
              float u_scale, float alpha, float keep) {
  const int64_t rows = t.rows, cols = t.cols;
  float* mom = t.mom;
  if (t.vc) {
    parallel_for(t.R(), [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r)
        af_update(t.p + r * cols, t.g + r * cols, mom ? mom + r * cols : nullptr, u_scale, alpha, keep, k, cols,
                  nullptr, rf[(size_t)r], cf.data() + (r / rows) * cols);
    }, row_grain(cols, kGrain));
    return;
  }
  // Unfactored: 1/√vr per element, in a small stack buffer so af_update stays one loop.
  parallel_for(t.N(), [&](int64_t i0, int64_t i1, int) {
    float inv[256];
    for (int64_t s = i0; s < i1; s += 256) {
      const int64_t n = std::min<int64_t>(256, i1 - s);
      for (int64_t j = 0; j < n; ++j) inv[j] = (float)(1.0 / std::sqrt((double)t.vr[s + j]));
      af_update(t.p + s, t.g + s, mom ? mom + s : nullptr, u_scale, alpha, keep, k, n, inv, 0.0f, nullptr);
    }
  }, kGrain);
}

void adafactor(const AfTensor& t, const AfK& k) {
  const int64_t N = t.N();
  if (N == 0) return;
  const int nth = pool_threads();
  AfSums sums(nth);
  std::vector<float> rf, cf;  // factored: per-row and per-column factors of 1/√v̂
  if (t.vc) {
    af_factors(t, k, af_row_pass(t, k, KEEL_PICK_AVX2(sumsq), sums), rf, cf);
    af_sum_u(t, rf, cf, sums);
  } else {
    af_unfactored_pass(t, k, sums);
  }
  double sth = 0.0, su = 0.0;
  for (int i = 0; i < nth; ++i) {
    sth += sums.th[(size_t)i];
    su += sums.u[(size_t)i];
  }
  const double rms_u = std::sqrt(su / (double)N), rms_p = std::sqrt(sth / (double)N);
  const double alpha = k.scaleParam ? k.lr * std::max(k.eps2, rms_p) : k.lr;
  const float u_scale = (float)(1.0 / std::max(1.0, rms_u / k.clip));
  af_apply(t, k, rf, cf, u_scale, (float)alpha, (float)(1.0 - alpha * k.wd));
}

// adafactor(params, grads, vr, vc|null, mom|null, batch, rows, cols, AdafactorCoefs)
Napi::Value Adafactor(const Napi::CallbackInfo& info) {
  Args a(info, "adafactor", 9);
  AfTensor t{};
  t.batch = a.size(5);
  t.rows = a.size(6);
  t.cols = a.size(7);
  if (a.ok() && (double)t.batch * (double)t.rows * (double)t.cols >= 2147483648.0)
    a.fail_range("adafactor: batch·rows·cols must be below 2^31");
  if (!a.ok()) return a.env().Undefined();
  const bool factored = !a.null_at(3);
  t.p = a.f32(0, t.N());
  t.g = a.f32(1, t.N());
  t.vr = a.f32(2, factored ? t.R() : t.N());
  t.vc = factored ? a.f32(3, t.batch * t.cols) : nullptr;
  t.mom = a.f32(4, t.N(), true);
  Coefs c = a.coefs(8, "AdafactorCoefs");
  AfK k{};
  k.beta2 = c.num("beta2");
  k.eps1 = c.num("eps1");
  k.clip = c.num("clipThreshold");
  const double beta1 = c.num("beta1");
  k.lr = c.num("lr");
  k.scaleParam = c.flag("scaleParameter");
  k.eps2 = c.num("eps2");
  k.wd = c.num("weightDecay");
  k.beta1 = (float)beta1;
  k.omb1 = (float)(1.0 - beta1);
  if (a.ok()) adafactor(t, k);
  return a.env().Undefined();
}

// ---- triad, lerp, sumSquares, scale ---------------------------------------------------------

void triad(float* a, const float* b, const float* c, float s, int64_t N) {
  const auto body = KEEL_PICK_AVX2(triad);
  parallel_for(N, [&](int64_t i0, int64_t i1, int) { body(a, b, c, s, i0, i1); }, kGrain);
}

// EMA of the weights: dst += w·(src − dst). Memory-bound; the plain loop (which the compiler
// vectorises with SSE) already streams at the bandwidth limit, so it has no AVX2 body.
void lerp(float* dst, const float* src, float w, int64_t N) {
  parallel_for(N, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) dst[i] += w * (src[i] - dst[i]);
  }, kGrain);
}

double sum_squares(const float* x, int64_t N) {
  const SumSqFn body = KEEL_PICK_AVX2(sumsq);
  std::vector<double> part((size_t)pool_threads(), 0.0);
  parallel_for(N, [&](int64_t i0, int64_t i1, int th) { part[(size_t)th] = body(x, i0, i1); }, kGrain);
  double s = 0.0;
  for (double v : part) s += v;
  return s;
}

void scale(float* x, float s, int64_t N) {
  const auto body = KEEL_PICK_AVX2(scale);
  parallel_for(N, [&](int64_t i0, int64_t i1, int) { body(x, s, i0, i1); }, kGrain);
}

// triad(a, b, c, N, s)
Napi::Value Triad(const Napi::CallbackInfo& info) {
  Args a(info, "triad", 5);
  const int64_t N = a.size(3);
  const double s = a.number(4);
  float* x[3];
  a.f32s(3, N, x);
  if (a.ok()) triad(x[0], x[1], x[2], (float)s, N);
  return a.env().Undefined();
}

// lerp(dst, src, N, w)
Napi::Value Lerp(const Napi::CallbackInfo& info) {
  Args a(info, "lerp", 4);
  const int64_t N = a.size(2);
  const double w = a.number(3);
  float* x[2];  // dst, src
  a.f32s(2, N, x);
  if (a.ok()) lerp(x[0], x[1], (float)w, N);
  return a.env().Undefined();
}

// sumSquares(x, N) → Σx² in double
Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  Args a(info, "sumSquares", 2);
  const int64_t N = a.size(1);
  const float* x = a.f32(0, N);
  if (!a.ok()) return a.env().Undefined();
  return Napi::Number::New(a.env(), sum_squares(x, N));
}

// scale(x, N, s)
Napi::Value Scale(const Napi::CallbackInfo& info) {
  Args a(info, "scale", 3);
  const int64_t N = a.size(1);
  const double s = a.number(2);
  float* x = a.f32(0, N);
  if (a.ok()) scale(x, (float)s, N);
  return a.env().Undefined();
}

}  // namespace

void InitOptim(Napi::Env env, Napi::Object exports) {
  add_exports(env, exports, {{"adam", Adam}, {"momentum", Momentum}, {"adafactor", Adafactor}, {"triad", Triad},
                             {"lerp", Lerp}, {"sumSquares", SumSquares}, {"scale", Scale}});
}

}  // namespace keel
