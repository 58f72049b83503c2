// One chunk of `keel average` (src/average/stream.ts documents the arithmetic), read, averaged
// and written on a libuv thread: averageChunk(task) → Promise.
//
// For each element j of the chunk, in float64:
//   s = w₀·x₀[j];  s = s + wᵢ·xᵢ[j] for i = 1 … k−1;  m = s / W
// every xᵢ converted to float64 exactly (F32, F64, F16, BF16), products and sums left to right,
// one division, then one rounding of m to the output dtype (nearest-even; F16/BF16 through a
// round-to-odd float32, which equals rounding the float64 once). Multiplying by w = 1 and
// dividing by W = 1 are exact, so the kernels always do both.
//
// Why the whole chunk (positioned reads, mean, positioned write) runs on one libuv thread: the
// stream keeps a few chunks in flight, so on a 2-core machine one chunk is read and averaged
// while another's write copies into the page cache, and the main thread only schedules. The
// chunk is processed in sub-chunks that fit the caller's scratch buffer (about 1 MiB): the bytes
// pread copies in are still in cache when the mean reads them, and the mean's output still in
// cache when pwrite copies it out (on 4 MiB pieces the mean ran 4× slower, from memory).
//
// Bodies, one per (input dtype, output dtype): AVX-512 (F/VL/BW) with the explicit-rounding
// intrinsics, which the compiler never fuses into an FMA (a fused w·x + s would round once
// instead of twice: other bits), and scalar code compiled for baseline x86-64, which has no FMA
// to fuse into. `portable` forces the scalar bodies (tests compare both with TypeScript).
#include <napi.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

#include "isa.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define KEEL_AVG_X86 1
#include <immintrin.h>
#else
#define KEEL_AVG_X86 0
#endif

namespace keel {
namespace {

// ---------------------------------------------------------------------------------------------
// Dtypes and exact conversions (the TypeScript twins are in src/io/safetensors.ts)

enum class Dt { kF32, kF64, kF16, kBF16 };

bool dt_parse(const std::string& s, Dt* out) {
  if (s == "F32") *out = Dt::kF32;
  else if (s == "F64") *out = Dt::kF64;
  else if (s == "F16") *out = Dt::kF16;
  else if (s == "BF16") *out = Dt::kBF16;
  else return false;
  return true;
}

size_t dt_size(Dt d) { return d == Dt::kF64 ? 8 : d == Dt::kF32 ? 4 : 2; }

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// binary16 → float32 bits, exact (NaN payloads kept, subnormals normalized).
uint32_t half_to_float_bits(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t frac = h & 0x3ff;
  if (exp == 0x1f) return sign | 0x7f800000u | (frac << 13);
  if (exp != 0) return sign | ((exp - 15 + 127) << 23) | (frac << 13);
  if (frac == 0) return sign;
  int e = -14;
  while ((frac & 0x400) == 0) {
    frac <<= 1;
    --e;
  }
  return sign | ((uint32_t)(e + 127) << 23) | ((frac & 0x3ff) << 13);
}

// float64 → float32 bits rounded to odd (truncate toward zero, set the last bit if inexact):
// rounding those 24 bits to nearest-even in a format of ≤ 22 bits equals rounding x once.
uint32_t odd_bits(double x) {
  const float f = (float)x;
  uint32_t u = float_to_bits(f);
  if ((double)f != x && x == x) {
    if (__builtin_fabs((double)f) > __builtin_fabs(x)) --u;  // rounded away from zero (or to ±inf)
    u |= 1;
  }
  return u;
}

uint16_t float_bits_to_bf16(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);  // overflow lands on ±inf
}

uint16_t float_bits_to_half(uint32_t u) {
  const uint32_t sign = (u >> 16) & 0x8000;
  const int exp = (int)((u >> 23) & 0xff);
  const uint32_t mant = u & 0x7fffff;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0));
  const int e = exp - 127 + 15;
  if (e >= 0x1f) return (uint16_t)(sign | 0x7c00);
  if (e <= 0) {  // a half subnormal or zero; below 2⁻²⁵ everything rounds to ±0
    if (e < -10) return (uint16_t)sign;
    const uint32_t m = mant | 0x800000;
    const int shift = 14 - e;
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;  // may become 0x400: the smallest normal
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // a carry may reach 0x7c00: inf
  return (uint16_t)(sign | h);
}

// ---------------------------------------------------------------------------------------------
// The mean of one sub-chunk. Every input of a tensor has the same dtype (the stream checks), so
// each body is a template on (input dtype, output dtype): no per-element dispatch.

struct Mean {
  Dt in_dt, out_dt;
  std::vector<double> ws;
  double W;
  bool portable;
};

template <Dt D>
double widen(const void* x, int64_t j) {
  if constexpr (D == Dt::kF32) return ((const float*)x)[j];
  if constexpr (D == Dt::kF64) return ((const double*)x)[j];
  if constexpr (D == Dt::kBF16) return bits_to_float((uint32_t)((const uint16_t*)x)[j] << 16);
  if constexpr (D == Dt::kF16) return bits_to_float(half_to_float_bits(((const uint16_t*)x)[j]));
}

template <Dt D>
void narrow(void* out, int64_t j, double m) {
  if constexpr (D == Dt::kF32) ((float*)out)[j] = (float)m;
  if constexpr (D == Dt::kF64) ((double*)out)[j] = m;
  if constexpr (D == Dt::kBF16) ((uint16_t*)out)[j] = float_bits_to_bf16(odd_bits(m));
  if constexpr (D == Dt::kF16) ((uint16_t*)out)[j] = float_bits_to_half(odd_bits(m));
}

template <Dt IN, Dt OUT>
void mean_scalar(const Mean& a, void* out, const std::vector<const void*>& xs, int64_t n) {
  const size_t k = xs.size();
  for (int64_t j = 0; j < n; ++j) {
    double s = a.ws[0] * widen<IN>(xs[0], j);
    for (size_t i = 1; i < k; ++i) {
      const double p = a.ws[i] * widen<IN>(xs[i], j);
      s = s + p;
    }
    narrow<OUT>(out, j, s / a.W);
  }
}

#if KEEL_AVG_X86
#define KEEL_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw")))
constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

// 8 elements widened to float64 exactly (vcvtph2ps widens binary16 exactly, as
// half_to_float_bits does; NaNs come out quiet either way once in float64).
template <Dt D>
KEEL_AVX512 __m512d widen8(const void* x, int64_t j, __mmask8 m) {
  if constexpr (D == Dt::kF32) return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, (const float*)x + j));
  if constexpr (D == Dt::kF64) return _mm512_maskz_loadu_pd(m, (const double*)x + j);
  const __m128i h = _mm_maskz_loadu_epi16(m, (const uint16_t*)x + j);
  if constexpr (D == Dt::kBF16) return _mm512_cvtps_pd(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
  return _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_cvtph_ps(_mm256_castsi128_si256(h))));
}

// odd_bits on 8 lanes.
KEEL_AVX512 __m256i odd_bits8(__m512d x) {
  const __m256 f = _mm512_cvt_roundpd_ps(x, kRne);
  const __m512d back = _mm512_cvtps_pd(f);
  const __mmask8 inexact = _mm512_cmp_pd_mask(back, x, _CMP_NEQ_OQ);  // false for NaN
  const __mmask8 away = _mm512_cmp_pd_mask(_mm512_abs_pd(back), _mm512_abs_pd(x), _CMP_GT_OQ);
  const __m256i one = _mm256_set1_epi32(1);
  __m256i u = _mm256_castps_si256(f);
  u = _mm256_mask_sub_epi32(u, away, u, one);
  return _mm256_mask_or_epi32(u, inexact, u, one);
}

// 8 results rounded once: BF16 by float_bits_to_bf16's bit steps; F16 by vcvtps2ph, which
// rounds float32 → binary16 to nearest even as float_bits_to_half does (NaN: quiet, top payload).
template <Dt D>
KEEL_AVX512 void narrow8(void* out, int64_t j, __mmask8 m, __m512d v) {
  if constexpr (D == Dt::kF32) _mm256_mask_storeu_ps((float*)out + j, m, _mm512_cvt_roundpd_ps(v, kRne));
  if constexpr (D == Dt::kF64) _mm512_mask_storeu_pd((double*)out + j, m, v);
  if constexpr (D == Dt::kBF16) {
    const __m256i u = odd_bits8(v);
    const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    const __mmask8 nan = _mm256_cmpgt_epu32_mask(abs, _mm256_set1_epi32(0x7f800000));
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    r = _mm256_mask_or_epi32(r, nan, _mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    _mm_mask_storeu_epi16((uint16_t*)out + j, m, _mm256_cvtepi32_epi16(r));
  }
  if constexpr (D == Dt::kF16) {
    const __m512 f = _mm512_castps256_ps512(_mm256_castsi256_ps(odd_bits8(v)));
    _mm_mask_storeu_epi16((uint16_t*)out + j, m, _mm256_castsi256_si128(_mm512_cvtps_ph(f, kRne)));
  }
}

// The explicit-rounding intrinsics are never fused into an FMA; the tail runs masked too (a
// scalar tail compiled in this function could be fused).
template <Dt IN, Dt OUT>
KEEL_AVX512 void mean_avx512(const Mean& a, void* out, const std::vector<const void*>& xs, int64_t n) {
  const size_t k = xs.size();
  const __m512d W = _mm512_set1_pd(a.W);
  for (int64_t j = 0; j < n; j += 8) {
    const __mmask8 m = n - j >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (n - j)) - 1u);
    __m512d s = _mm512_setzero_pd();
    for (size_t i = 0; i < k; ++i) {
      const __m512d p = _mm512_mul_round_pd(_mm512_set1_pd(a.ws[i]), widen8<IN>(xs[i], j, m), kRne);
      s = i == 0 ? p : _mm512_add_round_pd(s, p, kRne);  // (0 + p would turn −0 into +0)
    }
    narrow8<OUT>(out, j, m, _mm512_div_round_pd(s, W, kRne));
  }
}
#endif

using MeanFn = void (*)(const Mean&, void*, const std::vector<const void*>&, int64_t);

template <Dt IN, Dt OUT>
MeanFn body(bool wide) {
#if KEEL_AVG_X86
  if (wide) return mean_avx512<IN, OUT>;
#endif
  (void)wide;
  return mean_scalar<IN, OUT>;
}

template <Dt IN>
MeanFn body_for(Dt out, bool wide) {
  switch (out) {
    case Dt::kF32: return body<IN, Dt::kF32>(wide);
    case Dt::kF64: return body<IN, Dt::kF64>(wide);
    case Dt::kBF16: return body<IN, Dt::kBF16>(wide);
    default: return body<IN, Dt::kF16>(wide);
  }
}

// The body for a task: AVX-512 where this process runs it and `portable` is off.
MeanFn mean_body(const Mean& a) {
  const bool wide = KEEL_AVG_X86 && !a.portable && isa_active() >= Isa::kAvx512f;
  switch (a.in_dt) {
    case Dt::kF32: return body_for<Dt::kF32>(a.out_dt, wide);
    case Dt::kF64: return body_for<Dt::kF64>(a.out_dt, wide);
    case Dt::kBF16: return body_for<Dt::kBF16>(a.out_dt, wide);
    default: return body_for<Dt::kF16>(a.out_dt, wide);
  }
}

// ---------------------------------------------------------------------------------------------
// Positioned I/O: 0, an errno, or kEof (the file ended before the range did).

constexpr int kEof = -1;

int pread_all(int fd, uint8_t* buf, size_t len, int64_t pos) {
  while (len > 0) {
    const ssize_t got = pread(fd, buf, len, (off_t)pos);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return errno;
    if (got == 0) return kEof;
    buf += got, len -= (size_t)got, pos += got;
  }
  return 0;
}

int pwrite_all(int fd, const uint8_t* buf, size_t len, int64_t pos) {
  while (len > 0) {
    const ssize_t put = pwrite(fd, buf, len, (off_t)pos);
    if (put < 0 && errno == EINTR) continue;
    if (put < 0) return errno;
    buf += put, len -= (size_t)put, pos += put;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The work item

struct Input {
  int fd;
  int64_t position;  // file position of the chunk's first byte
};

class ChunkWork : public Napi::AsyncWorker {
 public:
  ChunkWork(Napi::Env env, Mean mean, std::vector<Input> inputs, int out_fd, int64_t out_position, int64_t m,
            Napi::ArrayBuffer scratch)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        mean_(std::move(mean)),
        inputs_(std::move(inputs)),
        out_fd_(out_fd),
        out_position_(out_position),
        m_(m),
        scratch_(Napi::Persistent(scratch)),
        base_((uint8_t*)scratch.Data()),
        bytes_(scratch.ByteLength()) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  // Elements per sub-chunk the scratch holds (k input pieces and the output piece, each
  // 64-byte aligned), a multiple of 8; 0 if not even 8.
  static int64_t SubChunk(const Mean& a, const uint8_t* base, size_t bytes) {
    const size_t k = a.ws.size(), per = k * dt_size(a.in_dt) + dt_size(a.out_dt), slack = 64 * (k + 1);
    const size_t lead = (64 - (uintptr_t)base % 64) % 64;
    if (bytes < lead + slack) return 0;
    return (int64_t)((bytes - lead - slack) / per / 8 * 8);
  }

  void Execute() override {
    const size_t k = inputs_.size();
    const int64_t sub = std::min<int64_t>(SubChunk(mean_, base_, bytes_), m_);
    uint8_t* at = base_ + (64 - (uintptr_t)base_ % 64) % 64;
    auto take = [&](size_t n) {
      uint8_t* p = at;
      at += (n + 63) / 64 * 64;
      return p;
    };
    const size_t size = dt_size(mean_.in_dt), osize = dt_size(mean_.out_dt);
    std::vector<uint8_t*> raw(k);
    for (size_t i = 0; i < k; ++i) raw[i] = take(sub * size);
    uint8_t* out = take(sub * osize);
    const std::vector<const void*> xs(raw.begin(), raw.end());
    const MeanFn body = mean_body(mean_);
    for (int64_t done = 0; done < m_; done += sub) {
      const int64_t n = std::min(sub, m_ - done);
      for (size_t i = 0; i < k; ++i) {
        const int err = pread_all(inputs_[i].fd, raw[i], n * size, inputs_[i].position + done * (int64_t)size);
        if (err != 0) return Fail((int)i, err, "read");
      }
      body(mean_, out, xs, n);
      const int err = pwrite_all(out_fd_, out, n * osize, out_position_ + done * (int64_t)osize);
      if (err != 0) return Fail(-1, err, "write");
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ == 0) {
      deferred_.Resolve(env.Undefined());
      return;
    }
    // Shaped like Node's fs errors (code, errno, syscall), plus which input failed (-1: the
    // output) and eof when the file ended early; src/average/stream.ts words the message.
    const bool eof = err_ == kEof;
    const std::string message = eof ? "the file ended early" : std::string(uv_err_name(-err_)) + ": " + uv_strerror(-err_) + ", " + syscall_;
    Napi::Error e = Napi::Error::New(env, message);
    e.Set("input", Napi::Number::New(env, failed_));
    e.Set("eof", Napi::Boolean::New(env, eof));
    e.Set("syscall", Napi::String::New(env, syscall_));
    if (!eof) {
      e.Set("code", Napi::String::New(env, uv_err_name(-err_)));
      e.Set("errno", Napi::Number::New(env, -err_));
    }
    deferred_.Reject(e.Value());
  }

 private:
  void Fail(int which, int err, const char* syscall) {
    failed_ = which;
    err_ = err;
    syscall_ = syscall;
  }

  Napi::Promise::Deferred deferred_;
  Mean mean_;
  std::vector<Input> inputs_;
  int out_fd_;
  int64_t out_position_;
  int64_t m_;
  Napi::Reference<Napi::ArrayBuffer> scratch_;  // keeps the buffer alive while the work runs
  uint8_t* base_;
  size_t bytes_;
  int failed_ = 0, err_ = 0;
  const char* syscall_ = "";
};

// ---------------------------------------------------------------------------------------------
// averageChunk({ inputs: [{ fd, position }], dtype, weights, W, m, out: { fd, position, dtype },
//                scratch: ArrayBuffer, portable }) → Promise<void>

bool type_error(Napi::Env env, const std::string& msg) {
  Napi::TypeError::New(env, "averageChunk: " + msg).ThrowAsJavaScriptException();
  return false;
}

bool int_prop(Napi::Env env, Napi::Object o, const char* key, int64_t* out) {
  Napi::Value v = o.Get(key);
  if (env.IsExceptionPending()) return false;
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d <= 9007199254740991.0 && d == (double)(int64_t)d)) return type_error(env, std::string(key) + " must be a non-negative integer");
  *out = (int64_t)d;
  return true;
}

bool dt_prop(Napi::Env env, Napi::Object o, Dt* out) {
  Napi::Value v = o.Get("dtype");
  if (env.IsExceptionPending()) return false;
  if (!v.IsString() || !dt_parse(v.As<Napi::String>().Utf8Value(), out)) return type_error(env, "dtype must be F32, F64, F16 or BF16");
  return true;
}

bool file_prop(Napi::Env env, Napi::Value v, Input* in) {
  if (!v.IsObject()) return type_error(env, "inputs[i] and out must be objects");
  Napi::Object o = v.As<Napi::Object>();
  int64_t fd;
  if (!int_prop(env, o, "fd", &fd) || !int_prop(env, o, "position", &in->position)) return false;
  in->fd = (int)fd;
  return true;
}

Napi::Value AverageChunk(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return type_error(env, "expects one task object"), env.Undefined();
  Napi::Object t = info[0].As<Napi::Object>();
  Napi::Value ins = t.Get("inputs"), ws = t.Get("weights"), W = t.Get("W"), scratch = t.Get("scratch"), portable = t.Get("portable");
  if (env.IsExceptionPending()) return env.Undefined();
  if (!ins.IsArray() || !ws.IsArray() || ins.As<Napi::Array>().Length() == 0 ||
      ins.As<Napi::Array>().Length() != ws.As<Napi::Array>().Length()) {
    return type_error(env, "inputs and weights must be non-empty arrays of the same length"), env.Undefined();
  }
  if (!W.IsNumber() || !scratch.IsArrayBuffer() || !portable.IsBoolean()) {
    return type_error(env, "W must be a number, scratch an ArrayBuffer, portable a boolean"), env.Undefined();
  }
  Mean a;
  a.W = W.As<Napi::Number>().DoubleValue();
  a.portable = portable.As<Napi::Boolean>().Value();
  std::vector<Input> inputs;
  Napi::Array in_arr = ins.As<Napi::Array>(), w_arr = ws.As<Napi::Array>();
  for (uint32_t i = 0; i < in_arr.Length(); ++i) {
    Input in;
    Napi::Value w = w_arr.Get(i);
    if (!file_prop(env, in_arr.Get(i), &in)) return env.Undefined();
    if (!w.IsNumber()) return type_error(env, "weights must be numbers"), env.Undefined();
    inputs.push_back(in);
    a.ws.push_back(w.As<Napi::Number>().DoubleValue());
  }
  Input out;
  int64_t m;
  Napi::Value out_v = t.Get("out");
  if (!dt_prop(env, t, &a.in_dt) || !file_prop(env, out_v, &out) || !dt_prop(env, out_v.As<Napi::Object>(), &a.out_dt) ||
      !int_prop(env, t, "m", &m)) {
    return env.Undefined();
  }
  Napi::ArrayBuffer buf = scratch.As<Napi::ArrayBuffer>();
  if (m > 0 && ChunkWork::SubChunk(a, (const uint8_t*)buf.Data(), buf.ByteLength()) == 0) {
    return type_error(env, "scratch is too small for 8 elements of every input"), env.Undefined();
  }
  auto* work = new ChunkWork(env, std::move(a), std::move(inputs), out.fd, out.position, m, buf);
  Napi::Promise promise = work->Promise();
  work->Queue();  // the work deletes itself after OnOK
  return promise;
}

}  // namespace

void InitAverage(Napi::Env env, Napi::Object exports) {
  exports.Set("averageChunk", Napi::Function::New(env, AverageChunk));
}

}  // namespace keel
