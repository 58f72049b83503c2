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
// A row-major A is not packed at all: the micro-kernel broadcasts from its rows directly
// (six streams that L1 and the prefetchers handle well), which saves a transposing copy
// whose cost is not small next to the arithmetic when N is only 128.
//
// Micro-kernel 6×16: 12 ymm accumulators + 2 for the B row + 1 broadcast fill the 16
// registers; per k it issues 12 FMAs against 2 loads + 6 broadcasts, enough independent
// chains (12) to cover FMA latency on Zen 3's two FMA pipes. NR=16 divides every channel
// count GPT uses; MR=6 wastes < 3% on M edges at the sizes that matter.
//
// Threads: each thread runs the whole serial GEMM on its own slice of M or N (whichever
// balances better and repacks less), with its own packing buffers, so there is no
// synchronisation inside a product. The operand that is not split is packed by every
// thread; that repeat costs ~1/(rows per thread) of the arithmetic.
#include <napi.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "pool.h"
#include "simd.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define KEEL_MM_X86 1
#include <immintrin.h>
// The addon targets baseline x86-64; only these functions may use AVX2/FMA, and only when
// the CPU has them (checked at run time).
#define KEEL_MM_AVX2 __attribute__((target("avx2,fma")))
#else
#define KEEL_MM_X86 0
#endif

namespace keel {
namespace {

constexpr int MR = 6;
constexpr int NR = 16;
// Cache blocking for Zen 3 (32 KiB L1d, 512 KiB L2 per core). A KC×NR panel of B is 16 KiB
// at KC=256, half of L1, leaving room for the A rows streaming past it; an MC×KC block of A
// is 144 KiB, well inside L2. NC is wide enough that B is packed once per KC block for
// every shape GPT uses (packed B then sits in L2/L3). Measured on the target (bench/matmul.ts,
// one thread): KC 192/384/512, NC 384 with the ir loop outside jr, and packing row-major A
// all came within noise (±5%) of these or below them.
constexpr int64_t kKcMax = 256;
constexpr int64_t kMcMax = 144;  // multiple of MR
constexpr int64_t kNcMax = 3072;  // multiple of NR
// Below this many flops a product runs on the calling thread (waking a worker costs µs).
constexpr double kMinParallelFlops = 2e5;

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
};

// Micro-kernel: C[MR×NR] (+)= A-panel · B-panel over kc. `b` is a packed panel (NR floats
// per k, 32-byte aligned). lda == 0: `a` is a packed panel (MR floats per k); otherwise `a`
// points at row 0 of a row-major A with row stride lda. overwrite: C = AB + bias[0..NR)
// (bias may be null), else C += AB.
using Ukr = void (*)(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                     const float* bias, bool overwrite);
using PackB = void (*)(const View& b, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* dst);
using PackA = void (*)(const View& a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* dst,
                       float* rowsum);

struct Kernel {
  const char* name;
  Ukr packed;  // lda == 0
  Ukr direct;  // row-major A read in place
  PackA pack_a;
  PackB pack_b;
};

// ---- portable --------------------------------------------------------------------------
// Written with GCC/Clang vector extensions (4 floats: SSE2 on baseline x86-64, NEON on
// ARM) because GCC's own vectorisation of the plain loops shuffles the accumulators
// through memory (~1.7 GFLOP/s). Rows go in groups of three so the 3×16 accumulators
// (12 registers) plus the B row (4) fit in 16 vector registers.
#if defined(__GNUC__) || defined(__clang__)
typedef float v4f __attribute__((vector_size(16)));

template <bool kDirect>
void ukr_port(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
              const float* bias, bool overwrite) {
  constexpr int G = 3, V = NR / 4;
  for (int g = 0; g < MR; g += G) {
    v4f acc[G][V];
    for (int i = 0; i < G; ++i) {
      for (int v = 0; v < V; ++v) acc[i][v] = v4f{0, 0, 0, 0};
    }
    for (int64_t k = 0; k < kc; ++k) {
      v4f bv[V];
      for (int v = 0; v < V; ++v) std::memcpy(&bv[v], b + k * NR + 4 * v, sizeof(v4f));
      for (int i = 0; i < G; ++i) {
        const float s = kDirect ? a[(g + i) * lda + k] : a[k * MR + g + i];
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
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < MR; ++i) {
      const float ai = kDirect ? a[i * lda + k] : a[k * MR + i];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[k * NR + j];
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      c[i * ldc + j] = (overwrite ? (bias ? bias[j] : 0.0f) : c[i * ldc + j]) + acc[i][j];
    }
  }
}
#endif

// Packs A[m0:m0+mc, k0:k0+kc] into MR-high panels (dst[panel][k][i]), zero-padding the last
// panel, and adds each row's sum over this k range to rowsum (when given).
void pack_a_port(const View& a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* dst, float* rowsum) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR, dst += MR * kc) {
    const int64_t mr = mc - i0 < MR ? mc - i0 : MR;
    const float* src = a.p + (m0 + i0) * a.rs + k0 * a.cs;
    if (a.rs == 1) {  // consecutive rows are adjacent: copy MR floats per k
      for (int64_t k = 0; k < kc; ++k) {
        const float* s = src + k * a.cs;
        for (int64_t i = 0; i < MR; ++i) dst[k * MR + i] = i < mr ? s[i] : 0.0f;
      }
    } else {  // walk each row along k
      for (int64_t i = 0; i < MR; ++i) {
        const float* s = src + i * a.rs;
        if (i < mr) {
          for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = s[k * a.cs];
        } else {
          for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = 0.0f;
        }
      }
    }
    if (rowsum) {
      for (int64_t i = 0; i < mr; ++i) {
        float s = 0.0f;
        for (int64_t k = 0; k < kc; ++k) s += dst[k * MR + i];
        rowsum[m0 + i0 + i] += s;
      }
    }
  }
}

// Packs B[k0:k0+kc, n0:n0+nc] into NR-wide panels (dst[panel][k][j]), zero-padding the last.
void pack_b_port(const View& b, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* dst) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR, dst += NR * kc) {
    const int64_t nr = nc - j0 < NR ? nc - j0 : NR;
    const float* src = b.p + k0 * b.rs + (n0 + j0) * b.cs;
    if (b.cs == 1) {
      for (int64_t k = 0; k < kc; ++k) {
        const float* s = src + k * b.rs;
        for (int64_t j = 0; j < NR; ++j) dst[k * NR + j] = j < nr ? s[j] : 0.0f;
      }
    } else {
      for (int64_t j = 0; j < NR; ++j) {
        const float* s = src + j * b.cs;
        if (j < nr) {
          for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = s[k * b.rs];
        } else {
          for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = 0.0f;
        }
      }
    }
  }
}

const Kernel kPortable = {"portable", ukr_port<false>, ukr_port<true>, pack_a_port, pack_b_port};

// ---- AVX2 + FMA ------------------------------------------------------------------------
#if KEEL_MM_X86
template <bool kDirect>
KEEL_MM_AVX2 void ukr_avx2(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                           const float* bias, bool overwrite) {
  // The C tile is touched only after the k loop; start fetching it now.
  for (int i = 0; i < MR; ++i) {
    _mm_prefetch((const char*)(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch((const char*)(c + i * ldc + NR - 1), _MM_HINT_T0);
  }
  __m256 acc[MR][2];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b + k * NR);
    const __m256 b1 = _mm256_load_ps(b + k * NR + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(kDirect ? a + i * lda + k : a + k * MR + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  if (overwrite) {
    const __m256 z0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    const __m256 z1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      _mm256_storeu_ps(c + i * ldc, _mm256_add_ps(acc[i][0], z0));
      _mm256_storeu_ps(c + i * ldc + 8, _mm256_add_ps(acc[i][1], z1));
    }
  } else {
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      _mm256_storeu_ps(c + i * ldc, _mm256_add_ps(_mm256_loadu_ps(c + i * ldc), acc[i][0]));
      _mm256_storeu_ps(c + i * ldc + 8, _mm256_add_ps(_mm256_loadu_ps(c + i * ldc + 8), acc[i][1]));
    }
  }
}

// Lane mask selecting the first n (0..8) lanes.
KEEL_MM_AVX2 inline __m256i first_lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// As pack_a_port. The case that matters is doutᵀ for dW (a.rs == 1): MR adjacent floats
// per k, moved with one masked load and one 8-wide store that the next k overwrites past
// MR (the buffer has slack for the last one), summing rows on the way.
KEEL_MM_AVX2 void pack_a_avx2(const View& a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* dst,
                              float* rowsum) {
  if (a.rs != 1) {
    pack_a_port(a, m0, mc, k0, kc, dst, rowsum);
    return;
  }
  for (int64_t i0 = 0; i0 < mc; i0 += MR, dst += MR * kc) {
    const int64_t mr = mc - i0 < MR ? mc - i0 : MR;
    const __m256i mask = first_lanes(mr);
    const float* s = a.p + (m0 + i0) + k0 * a.cs;
    __m256 sum = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; ++k, s += a.cs) {
      const __m256 v = _mm256_maskload_ps(s, mask);
      sum = _mm256_add_ps(sum, v);
      _mm256_storeu_ps(dst + k * MR, v);
    }
    if (rowsum) {
      alignas(32) float t[8];
      _mm256_store_ps(t, sum);
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

// As pack_b_port, vectorised for both layouts: row-major B copies 16 floats per k; Wᵀ
// (the forward, b.rs == 1) moves 8×8 blocks through registers and transposes them.
KEEL_MM_AVX2 void pack_b_avx2(const View& b, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* dst) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR, dst += NR * kc) {
    const int64_t nr = nc - j0 < NR ? nc - j0 : NR;
    const float* src = b.p + k0 * b.rs + (n0 + j0) * b.cs;
    if (b.cs == 1) {
      if (nr == NR) {
        for (int64_t k = 0; k < kc; ++k) {
          _mm256_store_ps(dst + k * NR, _mm256_loadu_ps(src + k * b.rs));
          _mm256_store_ps(dst + k * NR + 8, _mm256_loadu_ps(src + k * b.rs + 8));
        }
      } else {
        const __m256i m0 = first_lanes(nr), m1 = first_lanes(nr - 8);
        for (int64_t k = 0; k < kc; ++k) {
          _mm256_store_ps(dst + k * NR, _mm256_maskload_ps(src + k * b.rs, m0));
          _mm256_store_ps(dst + k * NR + 8, _mm256_maskload_ps(src + k * b.rs + 8, m1));
        }
      }
    } else if (b.rs == 1 && nr == NR) {
      int64_t k = 0;
      for (; k + 8 <= kc; k += 8) {
        for (int h = 0; h < 2; ++h) {
          __m256 r[8];
          for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + (h * 8 + j) * b.cs + k);
          transpose8(r);
          for (int q = 0; q < 8; ++q) _mm256_store_ps(dst + (k + q) * NR + h * 8, r[q]);
        }
      }
      for (; k < kc; ++k) {
        for (int j = 0; j < NR; ++j) dst[k * NR + j] = src[j * b.cs + k];
      }
    } else {
      View sub = {src, b.rs, b.cs};
      pack_b_port(sub, 0, kc, 0, nr, dst);
    }
  }
}

const Kernel kAvx2 = {"avx2-fma", ukr_avx2<false>, ukr_avx2<true>, pack_a_avx2, pack_b_avx2};
#endif

bool avx2_supported() { return simd_supported(); }  // the CPU check of native/simd.h

const Kernel* best_kernel() {
#if KEEL_MM_X86
  if (avx2_supported()) return &kAvx2;
#endif
  return &kPortable;
}

// Selected by matmulSetKernel; read once per product on the JS thread.
const Kernel* g_kernel = nullptr;
const Kernel& kernel() {
  if (!g_kernel) g_kernel = best_kernel();
  return *g_kernel;
}

// ---- driver ----------------------------------------------------------------------------

// Per-thread packing buffers: allocated on the JS thread before a product starts (so an
// allocation failure becomes a JS error, not a crash in a worker), grown when a larger
// product comes, never freed (a training run uses the same few shapes over and over).
struct Workspace {
  float* ap = nullptr;
  float* bp = nullptr;
  int64_t ap_n = 0, bp_n = 0;
  alignas(64) float tmp[MR * NR];

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

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Blocking {
  int64_t kb, mc, nc;
  Blocking(int64_t M, int64_t N, int64_t K) {
    kb = K > 0 ? ceil_div(K, ceil_div(K, kKcMax)) : 1;  // equal blocks: K=384 → 2×192, not 256+128
    mc = M < kMcMax ? ceil_div(M, MR) * MR : kMcMax;
    nc = N < kNcMax ? ceil_div(N, NR) * NR : kNcMax;
  }
  // pack_a_avx2 stores 8 floats where MR are due: 8 floats of slack.
  int64_t ap_need() const { return mc * kb + 8; }
  int64_t bp_need() const { return nc * kb; }
};

// The whole blocked GEMM on one thread.
void gemm_serial(const Gemm& g, const Kernel& kern, Workspace& ws) {
  const int64_t M = g.M, N = g.N, K = g.K;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // empty sum: C = bias (or 0) when overwriting, unchanged otherwise
    if (g.overwrite) {
      for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < N; ++j) g.c[i * g.ldc + j] = g.bias ? g.bias[j] : 0.0f;
      }
    }
    return;
  }
  const Blocking bl(M, N, K);
  const int64_t kb = bl.kb, nc_max = bl.nc, mc_max = bl.mc;
  // Row-major A is read in place; only a partial last panel of MR rows is packed.
  const bool direct = g.a.cs == 1 && g.rowsum == nullptr;

  for (int64_t jc = 0; jc < N; jc += nc_max) {
    const int64_t nc = N - jc < nc_max ? N - jc : nc_max;
    for (int64_t pc = 0; pc < K; pc += kb) {
      const int64_t kc = K - pc < kb ? K - pc : kb;
      const bool overwrite = g.overwrite && pc == 0;
      kern.pack_b(g.b, pc, kc, jc, nc, ws.bp);
      for (int64_t ic = 0; ic < M; ic += mc_max) {
        const int64_t mc = M - ic < mc_max ? M - ic : mc_max;
        const int64_t full = mc / MR * MR;
        if (!direct) {
          kern.pack_a(g.a, ic, mc, pc, kc, ws.ap, jc == 0 ? g.rowsum : nullptr);
        } else if (full < mc) {
          kern.pack_a(g.a, ic + full, mc - full, pc, kc, ws.ap, nullptr);
        }
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t nr = nc - jr < NR ? nc - jr : NR;
          const float* bp = ws.bp + jr * kc;
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
            } else {
              ap = ws.ap + (direct ? 0 : ir * kc);
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
  const Kernel& kern = kernel();
  if (g.M <= 0 || g.N <= 0) return true;
  const int T = pool_threads();
  auto& ws = workspaces(T);
  // Buffers sized for the whole product fit any slice of it.
  const Blocking bl(g.M, g.N, g.K);
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
  const double apack = g.a.cs == 1 ? 0.0 : 8.0;
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

// Reads info[i] as a size: an integer in [0, 2^31).
bool size_at(const Napi::CallbackInfo& info, size_t i, int64_t* out) {
  Napi::Value v = info[i];
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
  if (!(d >= 0.0 && d < 2147483648.0) || d != (double)(int64_t)d) {
    return arg_error(info, "argument " + std::to_string(i) + " must be a non-negative integer size");
  }
  *out = (int64_t)d;
  return true;
}

bool enough_args(const Napi::CallbackInfo& info, size_t n, const char* name) {
  if (info.Length() >= n) return true;
  return arg_error(info, std::string(name) + " expects " + std::to_string(n) + " arguments");
}

Napi::Value oom(const Napi::CallbackInfo& info) {
  Napi::Error::New(info.Env(), "matmul: out of memory for packing buffers").ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

// matmulForward(out, inp, weight, bias|null, BT, C, OC)
Napi::Value MatmulForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t BT, C, OC;
  if (!enough_args(info, 7, "matmulForward") || !size_at(info, 4, &BT) || !size_at(info, 5, &C) ||
      !size_at(info, 6, &OC)) {
    return env.Undefined();
  }
  bool failed = false;
  float* out = f32(info, 0, BT * OC, false, &failed);
  const float* inp = failed ? nullptr : f32(info, 1, BT * C, false, &failed);
  const float* w = failed ? nullptr : f32(info, 2, OC * C, false, &failed);
  const float* bias = failed ? nullptr : f32(info, 3, OC, true, &failed);
  if (failed) return env.Undefined();
  if (!gemm(Gemm{BT, OC, C, {inp, C, 1}, {w, 1, C}, out, OC, bias, true, nullptr})) return oom(info);
  return env.Undefined();
}

// matmulBackward(dinp, dweight, dbias|null, dout, inp, weight, BT, C, OC)
Napi::Value MatmulBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t BT, C, OC;
  if (!enough_args(info, 9, "matmulBackward") || !size_at(info, 6, &BT) || !size_at(info, 7, &C) ||
      !size_at(info, 8, &OC)) {
    return env.Undefined();
  }
  bool failed = false;
  float* dinp = f32(info, 0, BT * C, false, &failed);
  float* dw = failed ? nullptr : f32(info, 1, OC * C, false, &failed);
  float* dbias = failed ? nullptr : f32(info, 2, OC, true, &failed);
  const float* dout = failed ? nullptr : f32(info, 3, BT * OC, false, &failed);
  const float* inp = failed ? nullptr : f32(info, 4, BT * C, false, &failed);
  const float* w = failed ? nullptr : f32(info, 5, OC * C, false, &failed);
  if (failed) return env.Undefined();
  // dinp[BT,C] += dout[BT,OC] · W[OC,C]
  if (!gemm(Gemm{BT, C, OC, {dout, OC, 1}, {w, C, 1}, dinp, C, nullptr, false, nullptr})) return oom(info);
  // dW[OC,C] += doutᵀ · inp, with dbias summed while packing doutᵀ
  if (C > 0) {
    if (!gemm(Gemm{OC, C, BT, {dout, 1, OC}, {inp, C, 1}, dw, C, nullptr, false, dbias})) return oom(info);
  } else if (dbias) {  // no dW product to ride on
    for (int64_t r = 0; r < BT; ++r) {
      for (int64_t o = 0; o < OC; ++o) dbias[o] += dout[r * OC + o];
    }
  }
  return env.Undefined();
}

Napi::Value MatmulKernel(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), kernel().name);
}

// matmulSetKernel("auto" | "avx2-fma" | "portable") → the name now in effect.
Napi::Value MatmulSetKernel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string name = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (name == "auto") {
    g_kernel = best_kernel();
  } else if (name == "portable") {
    g_kernel = &kPortable;
  } else if (name == "avx2-fma") {
#if KEEL_MM_X86
    if (!avx2_supported()) {
      arg_error(info, "matmulSetKernel: this CPU lacks AVX2/FMA");
      return env.Undefined();
    }
    g_kernel = &kAvx2;
#else
    arg_error(info, "matmulSetKernel: avx2-fma is not built for this architecture");
    return env.Undefined();
#endif
  } else {
    arg_error(info, "matmulSetKernel expects \"auto\", \"avx2-fma\" or \"portable\"");
    return env.Undefined();
  }
  return Napi::String::New(env, kernel().name);
}

}  // namespace

void InitMatmul(Napi::Env env, Napi::Object exports) {
  exports.Set("matmulForward", Napi::Function::New(env, MatmulForward));
  exports.Set("matmulBackward", Napi::Function::New(env, MatmulBackward));
  exports.Set("matmulKernel", Napi::Function::New(env, MatmulKernel));
  exports.Set("matmulSetKernel", Napi::Function::New(env, MatmulSetKernel));
}

}  // namespace keel
