// Which instruction-set path the kernels take, decided once per process.
//
// Paths, best first: avx512bf16 (AVX-512F + the AVX512-BF16 dot product, used by bf16
// matmuls) → avx512f → avx2 (AVX2 + FMA) → portable (baseline C++). The best the CPU has is
// chosen at load time; KEEL_ISA=<name> forces a lower one (a higher one than the CPU has is
// refused with a warning on stderr and the best supported is used). AMX is not implemented:
// the machine this was written on has none to test it on.
//
// The ops/attention/optimizer kernels have AVX2 bodies, LayerNorm, GELU and attention also
// AVX-512F ones (see simd.h); every path from avx2 up runs them. The matmul has a body per
// path (matmul.cc).
#pragma once

namespace keel {

enum class Isa { kPortable = 0, kAvx2 = 1, kAvx512f = 2, kAvx512bf16 = 3 };

Isa isa_supported();  // the best path this CPU runs
Isa isa_active();     // isa_supported(), lowered by KEEL_ISA
const char* isa_name(Isa isa);
// Parses a path name ("portable", "avx2", "avx512f", "avx512bf16"); false if unknown.
bool isa_parse(const char* name, Isa* out);

// Peak FLOP/s (in GFLOP/s) of one path's multiply-add instruction over `threads` threads,
// measured now with a register-only loop: fp32 FMAs, or bf16 pair dot products (vdpbf16ps,
// 4 flops per lane) when bf16 is set and the path is avx512bf16.
double isa_peak_gflops(Isa isa, bool bf16, int threads);

}  // namespace keel
