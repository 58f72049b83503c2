// Matrix multiplication for the linear layers (contract: src/kernels/types.ts).
//
// All three products of a linear layer are one GEMM, C[M,N] (+)= A[M,K]·B[K,N], with the
// transposes expressed as strides of A and B (see View) and absorbed by the packing:
//   forward   out  = inp·Wᵀ (+bias)  M=BT N=OC K=C    A row-major, B = Wᵀ (strided in n)
//   backward  dinp += dout·W         M=BT N=C  K=OC   A row-major, B row-major
//             dW   += doutᵀ·inp      M=OC N=C  K=BT   A = doutᵀ (strided in k), B row-major
// and dbias += Σ_rows dout is summed while packing doutᵀ for dW (it reads dout exactly once).
//
// Structure (BLIS): loops jc (NC columns) → pc (KC depth; B block packed into NR-wide
// panels) → ic (MC rows; A block packed into MR-high panels) → jr → ir → micro-kernel,
// which keeps an MR×NR tile of C in registers for the whole KC depth. The packed B panel
// (KC·NR floats) stays in L1 across the ir loop, the packed A block in L2 across jr.
// A row-major A is not packed at all for fp32: the micro-kernel broadcasts from its rows
// directly, which saves a transposing copy whose cost is not small next to the arithmetic
// when N is only 128.
//
// One micro-kernel per ISA path (isa.h), each with its own tile and depth block (avx2-fma and
// avx512f are one body, matmul_ukr.inc, on 8 or 16 lanes):
//   portable   6×16, vector extensions (4 floats)
//   avx2-fma   6×16: 12 ymm accumulators + 2 B + 1 broadcast of the 16 registers
//   avx512f    12×32: 24 zmm accumulators + 2 B + 1 broadcast of the 32; per k 24 FMAs
//              against 2 loads and 12 broadcasts, enough chains for two 512-bit FMA pipes
//   avx512bf16 12×32 on bf16 pairs (vdpbf16ps: two k per instruction), bf16 precision only
//
// bf16 precision (mixed precision as big runs use it): both operands are rounded to bf16
// (nearest even, NaN kept quiet, fp32 subnormals flushed to ±0: the hardware's rounding)
// while packing; products and sums stay fp32 (bias and dbias
// too, the latter summed from the unrounded dout). With avx512bf16 the packed panels hold
// k-pairs of bf16 that vdpbf16ps multiplies; on every other path the packed fp32 panels are
// rounded in place and the fp32 micro-kernel runs on them (the emulated path: the same
// operands, exact bf16×bf16 products, fp32 sums — only the order and rounding of the sums
// differ).
//
// Threads: each thread runs the whole serial GEMM on its own slice of M or N (whichever
// balances better and repacks less), with its own packing buffers, so there is no
// synchronisation inside a product. The operand that is not split is packed by every
// thread; that repeat costs ~1/(rows per thread) of the arithmetic.
#include <napi.h>

// GCC 12 warns that its own AVX-512 intrinsics (masked loads, set1) read an uninitialised
// temporary; the headers' false positive, not this file's.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "isa.h"
#include "pool.h"
#include "simd.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define KEEL_MM_X86 1
#include <immintrin.h>
// The addon targets baseline x86-64; only these functions may use the wider ISAs, and only
// when isa_active() says the CPU has them.
#define KEEL_MM_AVX2 __attribute__((target("avx2,fma")))
#define KEEL_MM_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))
#define KEEL_MM_BF16 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define KEEL_MM_X86 0
#endif

namespace keel {
namespace {

// Largest tile of any kernel (the edge-tile scratch holds one).
constexpr int kMaxTile = 12 * 32;
// Cache blocking. An MC×KC block of A (144 rows) stays well inside L2; NC is wide enough
// that B is packed once per KC block for every shape GPT uses (packed B then sits in L2/L3).
// KC is per kernel: its KC×NR panel of B should take about half of L1.
constexpr int64_t kMcMax = 144;   // multiple of every MR
constexpr int64_t kNcMax = 3072;  // multiple of every NR
// Below this many flops a product runs on the calling thread (waking a worker costs µs).
constexpr double kMinParallelFlops = 2e5;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// X(i, j) = p[i·rs + j·cs].
struct View {
  const float* p;
  int64_t rs, cs;
};

struct Gemm {
  int64_t M, N, K;
  View a;  // M×K
  View b;  // K×N
  float* c;
  int64_t ldc;          // C is M×N row-major with row stride ldc
  const float* bias;    // [N], used when overwrite (may be null)
  bool overwrite;       // C = A·B + bias, never reading C; else C += A·B
  float* rowsum;        // if set: rowsum[m] += Σ_k A(m,k)
  bool bf16;            // operands rounded to bf16 (see the top of the file)
};

// Micro-kernel: C[MR×NR] (+)= A-panel · B-panel over kc. `b` is a packed panel (NR floats
// per k, 64-byte aligned). lda == 0: `a` is a packed panel (MR floats per k); otherwise `a`
// points at row 0 of a row-major A with row stride lda. overwrite: C = AB + bias[0..NR)
// (bias may be null), else C += AB. Pair kernels read panels of bf16 k-pairs instead (one
// 32-bit word per pair and row/column, the last pair zero-padded when kc is odd).
using Ukr = void (*)(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                     const float* bias, bool overwrite);
using PackB = void (*)(const View& b, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* dst);
using PackA = void (*)(const View& a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* dst,
                       float* rowsum);
// Rounds n packed floats to bf16 in place (the emulated bf16 path).
using RoundFn = void (*)(float* p, int64_t n);

struct Kernel {
  const char* name;
  Isa isa;         // the path it needs (and whose peak it is measured against)
  int mr, nr;      // tile
  int64_t kc_max;  // depth block
  bool pairs;      // panels hold bf16 k-pairs (a bf16-only kernel)
  Ukr packed;
  Ukr direct;      // row-major A read in place; null if the kernel always packs A
  PackA pack_a;
  PackB pack_b;
  RoundFn round;   // for emulated bf16 on this kernel's path
  // Pair kernels: packs a row-major A as rows of pair words (rows padded to a multiple of
  // `mr`), which `packed` reads with lda = words per row. Null elsewhere.
  void (*pack_a_rows)(const View& a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* dst, int64_t mr);
};

// 32-bit words per k of a packed panel row: one per k, or one per k-pair.
inline int64_t panel_words(const Kernel& k, int64_t kc) { return k.pairs ? (kc + 1) / 2 : kc; }

// float → bf16 bits: round to nearest even, NaN stays NaN (quiet), and fp32 subnormals
// flush to ±0 — what vcvtne2ps2bf16 does, and vdpbf16ps treats subnormal operands as zero
// anyway, so every path multiplies the same operands.
inline uint32_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7f800000u) == 0) return (u >> 16) & 0x8000u;
  if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x40u) & 0xffffu;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

void round_port(float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = bf16_bits(p[i]) << 16;
    std::memcpy(p + i, &u, sizeof u);
  }
}

// ---- portable --------------------------------------------------------------------------
// Written with GCC/Clang vector extensions (4 floats: SSE2 on baseline x86-64, NEON on
// ARM) because GCC's own vectorisation of the plain loops shuffles the accumulators
// through memory (~1.7 GFLOP/s). Rows go in groups of three so the 3×16 accumulators
// (12 registers) plus the B row (4) fit in 16 vector registers.
constexpr int kMrP = 6, kNrP = 16;
#if defined(__GNUC__) || defined(__clang__)
typedef float v4f __attribute__((vector_size(16)));

template <bool kDirect>
void ukr_port(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
              const float* bias, bool overwrite) {
  constexpr int G = 3, V = kNrP / 4;
  for (int g = 0; g < kMrP; g += G) {
    v4f acc[G][V];
    for (int i = 0; i < G; ++i) {
      for (int v = 0; v < V; ++v) acc[i][v] = v4f{0, 0, 0, 0};
    }
    for (int64_t k = 0; k < kc; ++k) {
      v4f bv[V];
      for (int v = 0; v < V; ++v) std::memcpy(&bv[v], b + k * kNrP + 4 * v, sizeof(v4f));
      for (int i = 0; i < G; ++i) {
        const float s = kDirect ? a[(g + i) * lda + k] : a[k * kMrP + g + i];
        const v4f ai = {s, s, s, s};
        for (int v = 0; v < V; ++v) acc[i][v] += ai * bv[v];
      }
    }
    for (int i = 0; i < G; ++i) {
      float* cr = c + (g + i) * ldc;
      for (int v = 0; v < V; ++v) {
        v4f x;
        if (overwrite) {
          x = v4f{0, 0, 0, 0};
          if (bias) std::memcpy(&x, bias + 4 * v, sizeof x);
        } else {
          std::memcpy(&x, cr + 4 * v, sizeof x);
        }
        x += acc[i][v];
        std::memcpy(cr + 4 * v, &x, sizeof x);
      }
    }
  }
}
#else
template <bool kDirect>
void ukr_port(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
              const float* bias, bool overwrite) {
  float acc[kMrP][kNrP] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < kMrP; ++i) {
      const float ai = kDirect ? a[i * lda + k] : a[k * kMrP + i];
      for (int j = 0; j < kNrP; ++j) acc[i][j] += ai * b[k * kNrP + j];
    }
  }
  for (int i = 0; i < kMrP; ++i) {
    for (int j = 0; j < kNrP; ++j) {
      c[i * ldc + j] = (overwrite ? (bias ? bias[j] : 0.0f) : c[i * ldc + j]) + acc[i][j];
    }
  }
}
#endif

// Packs X[r0:r0+rows, k0:k0+kc] into W-wide panels (dst[panel][k][r]), zero-padding the
// last: A's MR-high row panels, or B's NR-wide column panels with X = Bᵀ.
template <int W>
void pack_panels(const View& x, int64_t r0, int64_t rows, int64_t k0, int64_t kc, float* dst) {
  for (int64_t i0 = 0; i0 < rows; i0 += W, dst += W * kc) {
    const int64_t w = rows - i0 < W ? rows - i0 : W;
    const float* src = x.p + (r0 + i0) * x.rs + k0 * x.cs;
    if (x.rs == 1) {  // consecutive rows are adjacent: copy W floats per k
      for (int64_t k = 0; k < kc; ++k) {
        const float* s = src + k * x.cs;
        for (int64_t i = 0; i < W; ++i) dst[k * W + i] = i < w ? s[i] : 0.0f;
      }
    } else {  // walk each row along k
      for (int64_t i = 0; i < W; ++i) {
        const float* s = src + i * x.rs;
        if (i < w) {
          for (int64_t k = 0; k < kc; ++k) dst[k * W + i] = s[k * x.cs];
        } else {
          for (int64_t k = 0; k < kc; ++k) dst[k * W + i] = 0.0f;
        }
      }
    }
  }
}

// Packs A[m0:m0+mc, k0:k0+kc] into MR-high panels and adds each row's sum over this k range
// to rowsum (when given).
template <int MR>
void pack_a_port(const View& a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* dst, float* rowsum) {
  pack_panels<MR>(a, m0, mc, k0, kc, dst);
  if (!rowsum) return;
  for (int64_t i0 = 0; i0 < mc; i0 += MR, dst += MR * kc) {
    const int64_t mr = mc - i0 < MR ? mc - i0 : MR;
    for (int64_t i = 0; i < mr; ++i) {
      float s = 0.0f;
      for (int64_t k = 0; k < kc; ++k) s += dst[k * MR + i];
      rowsum[m0 + i0 + i] += s;
    }
  }
}

// Packs B[k0:k0+kc, n0:n0+nc] into NR-wide panels (dst[panel][k][j]).
template <int NR>
void pack_b_port(const View& b, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* dst) {
  pack_panels<NR>(View{b.p, b.cs, b.rs}, n0, nc, k0, kc, dst);
}

// KC: 256 × 16 floats = 16 KiB of B panel, half of a 32 KiB L1.
const Kernel kPortable = {"portable", Isa::kPortable, kMrP, kNrP, 256, false,
                          ukr_port<false>, ukr_port<true>, pack_a_port<kMrP>, pack_b_port<kNrP>, round_port, nullptr};

// ---- AVX2 + FMA ------------------------------------------------------------------------
#if KEEL_MM_X86
namespace mm_avx2 {
#define KEEL_VEC Vec8
#define KEEL_MM_FN KEEL_MM_AVX2
#define KEEL_MR 6
#define KEEL_UNROLL_K _Pragma("GCC unroll 4")
#include "matmul_ukr.inc"
#undef KEEL_VEC
#undef KEEL_MM_FN
#undef KEEL_MR
#undef KEEL_UNROLL_K
}  // namespace mm_avx2
constexpr int kMr2 = mm_avx2::kMr, kNr2 = mm_avx2::kNr;  // 6×16

// As pack_a_port. The case that matters is doutᵀ for dW (a.rs == 1): MR adjacent floats
// per k, moved 8 at a time with masked loads and 8-wide stores that the next k overwrites
// past MR (the buffer has 16 floats of slack for the last one), summing rows on the way.
template <int MR>
KEEL_MM_AVX2 void pack_a_avx2(const View& a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* dst,
                              float* rowsum) {
  static_assert(MR <= 16, "two 8-lane groups at most");
  if (a.rs != 1) {
    pack_a_port<MR>(a, m0, mc, k0, kc, dst, rowsum);
    return;
  }
  constexpr int G = (MR + 7) / 8;
  for (int64_t i0 = 0; i0 < mc; i0 += MR, dst += MR * kc) {
    const int64_t mr = mc - i0 < MR ? mc - i0 : MR;
    __m256i mask[G];
    __m256 sum[G];
    for (int g = 0; g < G; ++g) {
      mask[g] = tail_mask(mr - 8 * g);
      sum[g] = _mm256_setzero_ps();
    }
    const float* s = a.p + (m0 + i0) + k0 * a.cs;
    for (int64_t k = 0; k < kc; ++k, s += a.cs) {
      for (int g = 0; g < G; ++g) {
        const __m256 v = _mm256_maskload_ps(s + 8 * g, mask[g]);
        sum[g] = _mm256_add_ps(sum[g], v);
        _mm256_storeu_ps(dst + k * MR + 8 * g, v);
      }
    }
    if (rowsum) {
      alignas(32) float t[8 * G];
      for (int g = 0; g < G; ++g) _mm256_store_ps(t + 8 * g, sum[g]);
      for (int64_t i = 0; i < mr; ++i) rowsum[m0 + i0 + i] += t[i];
    }
  }
}

// Transposes the 8×8 block r[0..8) in place (row i becomes column i).
KEEL_MM_AVX2 inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// As pack_b_port, vectorised for both layouts: row-major B copies NR floats per k; Wᵀ
// (the forward, b.rs == 1) moves 8×8 blocks through registers and transposes them.
template <int NR>
KEEL_MM_AVX2 void pack_b_avx2(const View& b, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* dst) {
  static_assert(NR % 8 == 0, "panels of whole 8-lane groups");
  for (int64_t j0 = 0; j0 < nc; j0 += NR, dst += NR * kc) {
    const int64_t nr = nc - j0 < NR ? nc - j0 : NR;
    const float* src = b.p + k0 * b.rs + (n0 + j0) * b.cs;
    if (b.cs == 1) {
      if (nr == NR) {
        for (int64_t k = 0; k < kc; ++k) {
          for (int h = 0; h < NR; h += 8) _mm256_store_ps(dst + k * NR + h, _mm256_loadu_ps(src + k * b.rs + h));
        }
      } else {
        for (int64_t k = 0; k < kc; ++k) {
          for (int h = 0; h < NR; h += 8) {
            _mm256_store_ps(dst + k * NR + h, _mm256_maskload_ps(src + k * b.rs + h, tail_mask(nr - h)));
          }
        }
      }
    } else if (b.rs == 1 && nr == NR) {
      int64_t k = 0;
      for (; k + 8 <= kc; k += 8) {
        for (int h = 0; h < NR; h += 8) {
          __m256 r[8];
          for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + (h + j) * b.cs + k);
          transpose8(r);
          for (int q = 0; q < 8; ++q) _mm256_store_ps(dst + (k + q) * NR + h, r[q]);
        }
      }
      for (; k < kc; ++k) {
        for (int j = 0; j < NR; ++j) dst[k * NR + j] = src[j * b.cs + k];
      }
    } else {
      View sub = {src, b.rs, b.cs};
      pack_b_port<NR>(sub, 0, kc, 0, nr, dst);
    }
  }
}

const Kernel kAvx2 = {"avx2-fma", Isa::kAvx2, kMr2, kNr2, 256, false,
                      mm_avx2::ukr<false>, mm_avx2::ukr<true>, pack_a_avx2<kMr2>, pack_b_avx2<kNr2>, round_port, nullptr};

// ---- AVX-512F --------------------------------------------------------------------------
namespace mm_avx512 {
#define KEEL_VEC Vec16
#define KEEL_MM_FN KEEL_MM_AVX512
#define KEEL_MR 12
#define KEEL_UNROLL_K _Pragma("GCC unroll 2")
#include "matmul_ukr.inc"
#undef KEEL_VEC
#undef KEEL_MM_FN
#undef KEEL_MR
#undef KEEL_UNROLL_K
}  // namespace mm_avx512
constexpr int kMr5 = mm_avx512::kMr, kNr5 = mm_avx512::kNr;  // 12×32

// Rounds packed floats to bf16 in place, 16 at a time (tail scalar).
KEEL_MM_AVX512 void round_avx512(float* p, int64_t n) {
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
  const __m512i hi = _mm512_set1_epi32((int)0xffff0000u), quiet = _mm512_set1_epi32(0x400000);
  const __m512i abs = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_loadu_si512(p + i);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
    __m512i r = _mm512_and_si512(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), hi);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs), inf);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_and_si512(_mm512_or_si512(u, quiet), hi));
    const __mmask16 sub = _mm512_testn_epi32_mask(u, inf);  // exponent 0: ±0 or subnormal
    r = _mm512_mask_mov_epi32(r, sub, _mm512_andnot_si512(abs, u));
    _mm512_storeu_si512(p + i, r);
  }
  round_port(p + i, n - i);
}

const Kernel kAvx512 = {"avx512f", Isa::kAvx512f, kMr5, kNr5, 192, false,
                        mm_avx512::ukr<false>, mm_avx512::ukr<true>, pack_a_avx2<kMr5>, pack_b_avx2<kNr5>, round_avx512, nullptr};

// ---- AVX512-BF16 (bf16 precision only) ---------------------------------------------------
// Panels of bf16 k-pairs: word (p, i) of an A panel holds A(i, 2p) in its low half and
// A(i, 2p+1) in its high half; a B panel likewise per column. vdpbf16ps multiplies the
// pairs of a broadcast A word with 16 columns' pairs and adds both products into fp32.

// Word for the pair (x, y): bf16(x) low, bf16(y) high.
inline uint32_t pair_word(float x, float y) { return bf16_bits(x) | (bf16_bits(y) << 16); }

// Generic pair packing of X(r, k) for r in [0, rows) of a panel `width` wide (zero beyond
// `valid`), k in [0, kc) (the odd last pair's high half zero).
inline void pack_pairs(const View& x, int64_t r0, int64_t valid, int64_t width, int64_t k0, int64_t kc,
                       uint32_t* dst) {
  const int64_t kp = (kc + 1) / 2;
  for (int64_t p = 0; p < kp; ++p) {
    const int64_t k = k0 + 2 * p;
    const bool two = 2 * p + 1 < kc;
    for (int64_t r = 0; r < width; ++r) {
      if (r < valid) {
        const float* s = x.p + (r0 + r) * x.rs + k * x.cs;
        dst[p * width + r] = pair_word(s[0], two ? s[x.cs] : 0.0f);
      } else {
        dst[p * width + r] = 0;
      }
    }
  }
}

// The hardware conversion (vcvtne2ps2bf16) rounds exactly as bf16_bits does.
// Pair words of two rows of 16 floats: word j = bf16(x0[j]) | bf16(x1[j]) << 16.
KEEL_MM_BF16 inline __m512i pair_words(__m512 x0, __m512 x1) {
  const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);  // x0's 16 bf16, then x1's
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                              23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, both);
}
// 32 consecutive floats → 16 pair words (consecutive k stay adjacent).
KEEL_MM_BF16 inline __m512i run_words(const float* s) {
  return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + 16), _mm512_loadu_ps(s));
}

// Rows of X along the panel are adjacent in memory (X.rs == 1) and k advances by X.cs:
// the words of pair p pair up rows k and k+1 of the source, 16 lanes at a time.
// Also adds each row's fp32 sum over the k range to rowsum[0..valid) when given.
KEEL_MM_BF16 void pack_pairs_adjacent(const float* src, int64_t cs, int64_t valid, int64_t width, int64_t kc,
                                        uint32_t* dst, float* rowsum = nullptr) {
  const int64_t kp = (kc + 1) / 2;
  __m512 sum[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t p = 0; p < kp; ++p) {
    const float* s0 = src + 2 * p * cs;
    const bool two = 2 * p + 1 < kc;
    for (int64_t h = 0; h < width; h += 16) {
      const int64_t n = valid - h < 0 ? 0 : (valid - h > 16 ? 16 : valid - h);
      const __mmask16 m = (__mmask16)((1u << n) - 1u);
      const __m512 x0 = _mm512_maskz_loadu_ps(m, s0 + h);
      const __m512 x1 = two ? _mm512_maskz_loadu_ps(m, s0 + cs + h) : _mm512_setzero_ps();
      if (rowsum && h < 32) sum[h / 16] = _mm512_add_ps(sum[h / 16], _mm512_add_ps(x0, x1));
      const __m512i w = pair_words(x0, x1);
      _mm512_mask_storeu_epi32(dst + p * width + h, width - h >= 16 ? (__mmask16)0xffff
                                                                    : (__mmask16)((1u << (width - h)) - 1u), w);
    }
  }
  if (rowsum) {
    alignas(64) float t[32];
    _mm512_store_ps(t, sum[0]);
    _mm512_store_ps(t + 16, sum[1]);
    for (int64_t i = 0; i < valid && i < 32; ++i) rowsum[i] += t[i];
  }
}

// Each row of X along the panel is contiguous in k (X.cs == 1): 32 floats of a row become 16
// pair words (round, then narrow to 16 bits, which keeps pairs adjacent), stored with the
// panel's stride.
KEEL_MM_BF16 void pack_pairs_rows(const float* src, int64_t rs, int64_t valid, int64_t width, int64_t kc,
                                    uint32_t* dst) {
  const int64_t kp = (kc + 1) / 2;
  for (int64_t r = 0; r < width; ++r) {
    if (r >= valid) {
      for (int64_t p = 0; p < kp; ++p) dst[p * width + r] = 0;
      continue;
    }
    const float* s = src + r * rs;
    int64_t k = 0;
    for (; k + 32 <= kc; k += 32) {
      alignas(64) uint32_t w[16];
      _mm512_store_si512(w, run_words(s + k));
      for (int q = 0; q < 16; ++q) dst[(k / 2 + q) * width + r] = w[q];
    }
    for (; k < kc; k += 2) dst[(k / 2) * width + r] = pair_word(s[k], k + 1 < kc ? s[k + 1] : 0.0f);
  }
}

template <int MR>
KEEL_MM_BF16 void pack_a_pairs(const View& a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* dst,
                                 float* rowsum) {
  const int64_t kp = (kc + 1) / 2;
  uint32_t* d = reinterpret_cast<uint32_t*>(dst);
  for (int64_t i0 = 0; i0 < mc; i0 += MR, d += MR * kp) {
    const int64_t mr = mc - i0 < MR ? mc - i0 : MR;
    const float* src = a.p + (m0 + i0) * a.rs + k0 * a.cs;
    if (a.rs == 1) {  // summing rows on the way (fp32 values, not the rounded ones)
      static_assert(MR <= 32, "rowsum lanes");
      pack_pairs_adjacent(src, a.cs, mr, MR, kc, d, rowsum ? rowsum + m0 + i0 : nullptr);
      continue;
    }
    if (a.cs == 1) {
      pack_pairs_rows(src, a.rs, mr, MR, kc, d);
    } else {
      pack_pairs(a, m0 + i0, mr, MR, k0, kc, d);
    }
    if (rowsum) {  // from the fp32 values, not the rounded ones
      for (int64_t i = 0; i < mr; ++i) {
        float s = 0.0f;
        for (int64_t k = 0; k < kc; ++k) s += src[i * a.rs + k * a.cs];
        rowsum[m0 + i0 + i] += s;
      }
    }
  }
}

template <int NR>
KEEL_MM_BF16 void pack_b_pairs(const View& b, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* dst) {
  const int64_t kp = (kc + 1) / 2;
  uint32_t* d = reinterpret_cast<uint32_t*>(dst);
  // B(k, n) as X(n, k): the panel runs along n.
  const View x = {b.p, b.cs, b.rs};
  for (int64_t j0 = 0; j0 < nc; j0 += NR, d += NR * kp) {
    const int64_t nr = nc - j0 < NR ? nc - j0 : NR;
    const float* src = b.p + k0 * b.rs + (n0 + j0) * b.cs;
    if (b.cs == 1) {
      pack_pairs_adjacent(src, b.rs, nr, NR, kc, d);
    } else if (b.rs == 1) {
      pack_pairs_rows(src, b.cs, nr, NR, kc, d);
    } else {
      pack_pairs(x, n0 + j0, nr, NR, k0, kc, d);
    }
  }
}

// lda == 0: `a` is a packed panel (MR words per pair); otherwise `a` is row 0 of MR rows of
// pair words, lda words apart (see pack_a_pair_rows).
KEEL_MM_BF16 void ukr_dpbf16(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                             const float* bias, bool overwrite) {
  constexpr int MR = kMr5, NR = kNr5;
  const int64_t kp = (kc + 1) / 2;
  const uint32_t* ap = reinterpret_cast<const uint32_t*>(a);
  const uint32_t* bp = reinterpret_cast<const uint32_t*>(b);
  // Word (p, i) of A: packed panel or pair rows.
  const int64_t rs = lda ? lda : 1, ps = lda ? 1 : MR;
  __m512 acc[MR][2];
  mm_avx512::start_tile(acc, c, ldc);
#pragma GCC unroll 2
  for (int64_t p = 0; p < kp; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(bp + p * NR);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(bp + p * NR + 16);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32((int)ap[p * ps + i * rs]);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  mm_avx512::store_tile(acc, c, ldc, bias, overwrite);
}

// A row-major A (a.cs == 1) is not transposed into panels: each row's k range becomes a row
// of pair words (round, narrow to 16 bits: the pairs stay adjacent), kw = ⌈kc/2⌉ words
// apart, rows up to a multiple of MR (the padding rows zero). The micro-kernel broadcasts
// from these rows as the fp32 kernels do from A itself.
KEEL_MM_BF16 void pack_a_pair_rows(const View& a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* dst,
                                     int64_t mr) {
  const int64_t kw = (kc + 1) / 2;
  uint32_t* d = reinterpret_cast<uint32_t*>(dst);
  const int64_t rows = ceil_div(mc, mr) * mr;
  for (int64_t i = 0; i < rows; ++i, d += kw) {
    if (i >= mc) {
      std::memset(d, 0, (size_t)kw * sizeof *d);
      continue;
    }
    const float* s = a.p + (m0 + i) * a.rs + k0;
    int64_t k = 0;
    for (; k + 32 <= kc; k += 32) _mm512_storeu_si512(d + k / 2, run_words(s + k));
    for (; k < kc; k += 2) d[k / 2] = pair_word(s[k], k + 1 < kc ? s[k + 1] : 0.0f);
  }
}

// KC 384: a B panel of 192 pair words × 32 = 24 KiB, half of a 48 KiB L1.
const Kernel kDpbf16 = {"avx512bf16", Isa::kAvx512bf16, kMr5, kNr5, 384, true,
                        ukr_dpbf16, nullptr, pack_a_pairs<kMr5>, pack_b_pairs<kNr5>, nullptr, pack_a_pair_rows};
#endif

// ---- selection -------------------------------------------------------------------------
// The fp32 kernel, and whether bf16 products use the native pair kernel (else they are
// emulated on the fp32 kernel). Chosen once from isa_active(), changed by matmulSetKernel;
// read once per product on the JS thread.
struct Selection {
  const Kernel* fp32;
  bool native_bf16;
};

Selection best_selection() {
#if KEEL_MM_X86
  const Isa isa = isa_active();
  if (isa >= Isa::kAvx512f) return {&kAvx512, isa >= Isa::kAvx512bf16};
  if (isa >= Isa::kAvx2) return {&kAvx2, false};
#endif
  return {&kPortable, false};
}

Selection& selection() {
  static Selection s = best_selection();
  return s;
}

const Kernel& kernel_for(bool bf16) {
#if KEEL_MM_X86
  if (bf16 && selection().native_bf16) return kDpbf16;
#endif
  return *selection().fp32;
}

// ---- driver ----------------------------------------------------------------------------

// Per-thread packing buffers: allocated on the JS thread before a product starts (so an
// allocation failure becomes a JS error, not a crash in a worker), grown when a larger
// product comes, never freed (a training run uses the same few shapes over and over).
struct Workspace {
  float* ap = nullptr;
  float* bp = nullptr;
  int64_t ap_n = 0, bp_n = 0;
  alignas(64) float tmp[kMaxTile];

  static bool grow(float** p, int64_t* have, int64_t need) {
    if (need <= *have) return true;
    std::free(*p);
    const size_t bytes = ((size_t)need * sizeof(float) + 63) & ~(size_t)63;
    *p = static_cast<float*>(std::aligned_alloc(64, bytes));
    *have = *p ? need : 0;
    return *p != nullptr;
  }
  ~Workspace() {
    std::free(ap);
    std::free(bp);
  }
};

std::vector<std::unique_ptr<Workspace>>& workspaces(int n) {
  static std::vector<std::unique_ptr<Workspace>> ws;
  while ((int)ws.size() < n) ws.emplace_back(new Workspace());
  return ws;
}

struct Blocking {
  int64_t kb, mc, nc;
  Blocking(const Kernel& kern, int64_t M, int64_t N, int64_t K) {
    // Equal blocks: K=384 at KC 256 → 2×192, not 256+128.
    kb = K > 0 ? ceil_div(K, ceil_div(K, kern.kc_max)) : 1;
    mc = M < kMcMax ? ceil_div(M, kern.mr) * kern.mr : kMcMax;
    nc = N < kNcMax ? ceil_div(N, kern.nr) * kern.nr : kNcMax;
  }
  // pack_a_avx2 stores 8 floats where fewer are due: 16 floats of slack.
  int64_t ap_need() const { return mc * kb + 16; }
  int64_t bp_need() const { return nc * kb; }
};

// The whole blocked GEMM on one thread.
void gemm_serial(const Gemm& g, const Kernel& kern, Workspace& ws) {
  const int64_t M = g.M, N = g.N, K = g.K;
  const int64_t MR = kern.mr, NR = kern.nr;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // empty sum: C = bias (or 0) when overwriting, unchanged otherwise
    if (g.overwrite) {
      for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < N; ++j) g.c[i * g.ldc + j] = g.bias ? g.bias[j] : 0.0f;
      }
    }
    return;
  }
  const Blocking bl(kern, M, N, K);
  const int64_t kb = bl.kb, nc_max = bl.nc, mc_max = bl.mc;
  // Rounded in place after packing: the emulated bf16 path.
  const bool emulate = g.bf16 && !kern.pairs;
  // Row-major A is read in place when the kernel can and nothing must be rounded; only a
  // partial last panel of MR rows is packed.
  const bool direct = kern.direct && !emulate && g.a.cs == 1 && g.rowsum == nullptr;
  // The pair kernel's counterpart: a row-major A packed as rows of pair words.
  const bool pair_rows = kern.pack_a_rows && g.a.cs == 1 && g.rowsum == nullptr;

  for (int64_t jc = 0; jc < N; jc += nc_max) {
    const int64_t nc = N - jc < nc_max ? N - jc : nc_max;
    for (int64_t pc = 0; pc < K; pc += kb) {
      const int64_t kc = K - pc < kb ? K - pc : kb;
      const int64_t kw = panel_words(kern, kc);
      const bool overwrite = g.overwrite && pc == 0;
      kern.pack_b(g.b, pc, kc, jc, nc, ws.bp);
      if (emulate) kern.round(ws.bp, ceil_div(nc, NR) * NR * kc);
      for (int64_t ic = 0; ic < M; ic += mc_max) {
        const int64_t mc = M - ic < mc_max ? M - ic : mc_max;
        const int64_t full = mc / MR * MR;
        if (pair_rows) {
          kern.pack_a_rows(g.a, ic, mc, pc, kc, ws.ap, MR);
        } else if (!direct) {
          kern.pack_a(g.a, ic, mc, pc, kc, ws.ap, jc == 0 ? g.rowsum : nullptr);
          if (emulate) kern.round(ws.ap, ceil_div(mc, MR) * MR * kc);
        } else if (full < mc) {
          kern.pack_a(g.a, ic + full, mc - full, pc, kc, ws.ap, nullptr);
        }
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t nr = nc - jr < NR ? nc - jr : NR;
          const float* bp = ws.bp + jr * kw;
          const float* bias = g.bias && overwrite ? g.bias + jc + jr : nullptr;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t mr = mc - ir < MR ? mc - ir : MR;
            float* c = g.c + (ic + ir) * g.ldc + jc + jr;
            const float* ap;
            int64_t lda;
            Ukr ukr;
            if (direct && mr == MR) {
              ap = g.a.p + (ic + ir) * g.a.rs + pc;
              lda = g.a.rs;
              ukr = kern.direct;
            } else if (pair_rows) {
              ap = ws.ap + ir * kw;
              lda = kw;
              ukr = kern.packed;
            } else {
              ap = ws.ap + (direct ? 0 : ir * kw);
              lda = 0;
              ukr = kern.packed;
            }
            if (mr == MR && nr == NR) {
              ukr(kc, ap, lda, bp, c, g.ldc, bias, overwrite);
            } else {  // edge tile: compute the full tile aside, keep the valid part
              ukr(kc, ap, lda, bp, ws.tmp, NR, nullptr, true);
              for (int64_t i = 0; i < mr; ++i) {
                float* cr = c + i * g.ldc;
                const float* t = ws.tmp + i * NR;
                if (overwrite) {
                  for (int64_t j = 0; j < nr; ++j) cr[j] = t[j] + (bias ? bias[j] : 0.0f);
                } else {
                  for (int64_t j = 0; j < nr; ++j) cr[j] += t[j];
                }
              }
            }
          }
        }
      }
    }
  }
}

// Splits the product over M or N between the pool's threads and runs gemm_serial on each
// slice. The split is chosen by a crude cost: padded tile work of the busiest thread plus
// the packing it repeats.
// Returns false (nothing computed) when the packing buffers cannot be allocated.
bool gemm(const Gemm& g) {
  const Kernel& kern = kernel_for(g.bf16);
  const int64_t MR = kern.mr, NR = kern.nr;
  if (g.M <= 0 || g.N <= 0) return true;
  const int T = pool_threads();
  auto& ws = workspaces(T);
  // Buffers sized for the whole product fit any slice of it.
  const Blocking bl(kern, g.M, g.N, g.K);
  for (int t = 0; t < T; ++t) {
    if (!Workspace::grow(&ws[t]->ap, &ws[t]->ap_n, bl.ap_need()) ||
        !Workspace::grow(&ws[t]->bp, &ws[t]->bp_n, bl.bp_need())) {
      return false;
    }
  }
  const double flops = 2.0 * (double)g.M * (double)g.N * (double)g.K;
  if (T <= 1 || flops < 2 * kMinParallelFlops) {
    gemm_serial(g, kern, *ws[0]);
    return true;
  }
  // Busiest thread's cost in multiply-adds for either split: its padded tiles, plus the
  // packing it does (every thread packs all of the operand not split; packing an element
  // costs about what 8 multiply-adds do). Row-major A is never packed.
  const int64_t tm = ceil_div(g.M, MR), tn = ceil_div(g.N, NR);
  const double K = (double)g.K;
  const double rows = (double)ceil_div(tm, T) * MR, cols = (double)ceil_div(tn, T) * NR;
  const double apack = g.a.cs == 1 && kern.direct && !g.bf16 ? 0.0 : 8.0;
  const double cost_m = rows * (double)(tn * NR) * K + 8.0 * K * (double)g.N + apack * K * rows;
  const double cost_n = cols * (double)(tm * MR) * K + 8.0 * K * cols + apack * K * (double)g.M;
  const bool split_m = cost_m <= cost_n;
  const int64_t tiles = split_m ? tm : tn;
  const int64_t grain = (int64_t)(kMinParallelFlops / (flops / (double)tiles)) + 1;
  parallel_for(
      tiles,
      [&](int64_t b, int64_t e, int t) {
        Gemm s = g;
        if (split_m) {
          const int64_t m0 = b * MR, m1 = e * MR < g.M ? e * MR : g.M;
          s.M = m1 - m0;
          s.a.p += m0 * g.a.rs;
          s.c += m0 * g.ldc;
          if (s.rowsum) s.rowsum += m0;
        } else {
          const int64_t n0 = b * NR, n1 = e * NR < g.N ? e * NR : g.N;
          s.N = n1 - n0;
          s.b.p += n0 * g.b.cs;
          s.c += n0;
          if (s.bias) s.bias += n0;
          if (n0 != 0) s.rowsum = nullptr;  // the slice holding column 0 sums the rows
        }
        gemm_serial(s, kern, *ws[t]);
      },
      grain);
  return true;
}

// ---- JavaScript bindings ---------------------------------------------------------------

// Sizes read with matmul's wording of the error.
int64_t mm_size(Args& a, size_t i) { return a.size(i, 0, "must be a non-negative integer size"); }

// Reads the optional precision argument i: absent/undefined or "fp32" → false, "bf16" →
// true; anything else fails.
bool read_precision(Args& a, size_t i) {
  const std::string p = a.given(i) ? a.text(i) : "fp32";
  if (p != "fp32" && p != "bf16") a.fail("argument " + std::to_string(i) + " (precision) must be \"fp32\" or \"bf16\"");
  return p == "bf16";
}

Napi::Value oom(const Napi::CallbackInfo& info) {
  Napi::Error::New(info.Env(), "matmul: out of memory for packing buffers").ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

// out[BT,OC] = inp[BT,C]·Wᵀ (+ bias). False when the packing buffers cannot be allocated.
bool matmul_forward(float* out, const float* inp, const float* w, const float* bias, int64_t BT, int64_t C,
                    int64_t OC, bool bf16) {
  return gemm(Gemm{BT, OC, C, {inp, C, 1}, {w, 1, C}, out, OC, bias, true, nullptr, bf16});
}

// dinp += dout·W, dW += doutᵀ·inp, dbias += Σ_rows dout. False on allocation failure.
bool matmul_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
                     int64_t BT, int64_t C, int64_t OC, bool bf16) {
  // dinp[BT,C] += dout[BT,OC] · W[OC,C]
  if (!gemm(Gemm{BT, C, OC, {dout, OC, 1}, {w, C, 1}, dinp, C, nullptr, false, nullptr, bf16})) return false;
  // dW[OC,C] += doutᵀ · inp, with dbias summed while packing doutᵀ
  if (C > 0) return gemm(Gemm{OC, C, BT, {dout, 1, OC}, {inp, C, 1}, dw, C, nullptr, false, dbias, bf16});
  if (dbias) {  // no dW product to ride on
    for (int64_t r = 0; r < BT; ++r) {
      for (int64_t o = 0; o < OC; ++o) dbias[o] += dout[r * OC + o];
    }
  }
  return true;
}

// matmulForward(out, inp, weight, bias|null, BT, C, OC, precision?)
Napi::Value MatmulForward(const Napi::CallbackInfo& info) {
  Args a(info, "matmulForward", 7);
  const int64_t BT = mm_size(a, 4), C = mm_size(a, 5), OC = mm_size(a, 6);
  const bool bf16 = read_precision(a, 7);
  float* out = a.f32(0, BT * OC);
  const float* inp = a.f32(1, BT * C);
  const float* w = a.f32(2, OC * C);
  const float* bias = a.f32(3, OC, true);
  if (!a.ok()) return a.env().Undefined();
  return matmul_forward(out, inp, w, bias, BT, C, OC, bf16) ? a.env().Undefined() : oom(info);
}

// matmulBackward(dinp, dweight, dbias|null, dout, inp, weight, BT, C, OC, precision?)
Napi::Value MatmulBackward(const Napi::CallbackInfo& info) {
  Args a(info, "matmulBackward", 9);
  const int64_t BT = mm_size(a, 6), C = mm_size(a, 7), OC = mm_size(a, 8);
  const bool bf16 = read_precision(a, 9);
  float* dinp = a.f32(0, BT * C);
  float* dw = a.f32(1, OC * C);
  float* dbias = a.f32(2, OC, true);
  const float* dout = a.f32(3, BT * OC);
  const float* inp = a.f32(4, BT * C);
  const float* w = a.f32(5, OC * C);
  if (!a.ok()) return a.env().Undefined();
  return matmul_backward(dinp, dw, dbias, dout, inp, w, BT, C, OC, bf16) ? a.env().Undefined() : oom(info);
}

// The name of the kernel serving `bf16` products: the fp32 kernel's, the pair kernel's, or
// "<fp32 kernel>/bf16-emulated".
std::string kernel_label(bool bf16) {
  const Kernel& k = kernel_for(bf16);
  if (!bf16 || k.pairs) return k.name;
  return std::string(k.name) + "/bf16-emulated";
}

// matmulKernel(precision?) → the kernel serving that precision (default fp32).
Napi::Value MatmulKernel(const Napi::CallbackInfo& info) {
  Args a(info, "matmulKernel", 0);
  const bool bf16 = read_precision(a, 0);
  if (!a.ok()) return a.env().Undefined();
  return Napi::String::New(a.env(), kernel_label(bf16));
}

// matmulSetKernel("auto" | "portable" | "avx2-fma" | "avx512f" | "avx512bf16") → the name now
// in effect. "avx512bf16" is avx512f for fp32 with native bf16 products; every other name
// emulates bf16 on that kernel.
Napi::Value MatmulSetKernel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string name = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  Selection s = best_selection();
  const char* label = nullptr;
  Isa need = Isa::kPortable;
  if (name == "auto") {
    label = s.native_bf16 ? "avx512bf16" : s.fp32->name;
  } else if (name == "portable") {
    s = {&kPortable, false};
#if KEEL_MM_X86
  } else if (name == "avx2-fma") {
    s = {&kAvx2, false}, need = Isa::kAvx2;
  } else if (name == "avx512f") {
    s = {&kAvx512, false}, need = Isa::kAvx512f;
  } else if (name == "avx512bf16") {
    s = {&kAvx512, true}, need = Isa::kAvx512bf16;
#endif
  } else {
    arg_error(info, "matmulSetKernel expects \"auto\", \"portable\", \"avx2-fma\", \"avx512f\" or \"avx512bf16\"");
    return env.Undefined();
  }
  if (isa_active() < need) {
    arg_error(info, "matmulSetKernel: " + name + " needs the " + isa_name(need) + " path; this process runs " +
                        isa_name(isa_active()));
    return env.Undefined();
  }
  selection() = s;
  return Napi::String::New(env, label ? label : name);
}

// matmulPeakGflops(precision?) → measured peak GFLOP/s of the multiply-add instruction the
// kernel serving that precision uses, over the pool's threads.
Napi::Value MatmulPeakGflops(const Napi::CallbackInfo& info) {
  Args a(info, "matmulPeakGflops", 0);
  const bool bf16 = read_precision(a, 0);
  if (!a.ok()) return a.env().Undefined();
  const Kernel& k = kernel_for(bf16);
  return Napi::Number::New(a.env(), isa_peak_gflops(k.isa, k.pairs, pool_threads()));
}

}  // namespace

void InitMatmul(Napi::Env env, Napi::Object exports) {
  add_exports(env, exports, {{"matmulForward", MatmulForward}, {"matmulBackward", MatmulBackward},
                             {"matmulKernel", MatmulKernel}, {"matmulSetKernel", MatmulSetKernel},
                             {"matmulPeakGflops", MatmulPeakGflops}});
}

}  // namespace keel
