// Small argument helpers shared by ops.cc, attention.cc and optim.cc, on top of args.h:
// size arguments are checked to be non-negative integers before any buffer length is
// computed from them, so a wrong call throws instead of reading or writing out of bounds.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

#include "args.h"

namespace keel {

// Fails (with a pending JS exception) unless the call has at least `n` arguments.
inline bool need_args(const Napi::CallbackInfo& info, size_t n, const char* name) {
  if (info.Length() >= n) return true;
  return arg_error(info, std::string(name) + " expects " + std::to_string(n) + " arguments, got " +
                             std::to_string(info.Length()));
}

// Reads info[i] as a size: an integer in [lo, 2^31). Fails with a JS error otherwise.
inline bool size_arg(const Napi::CallbackInfo& info, size_t i, int64_t* out, int64_t lo = 0) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) return arg_error(info, "argument " + std::to_string(i) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= (double)lo && d < 2147483648.0) || d != (double)(int64_t)d) {
    return arg_error(info, "argument " + std::to_string(i) + " must be an integer >= " + std::to_string(lo) +
                               ", got " + std::to_string(d));
  }
  *out = (int64_t)d;
  return true;
}

// Reads info[i] as a finite-or-not double; fails unless it is a number.
inline bool num(const Napi::CallbackInfo& info, size_t i, double* out) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) return arg_error(info, "argument " + std::to_string(i) + " must be a number");
  *out = v.As<Napi::Number>().DoubleValue();
  return true;
}

inline bool range_error(const Napi::CallbackInfo& info, const std::string& msg) {
  Napi::RangeError::New(info.Env(), msg).ThrowAsJavaScriptException();
  return false;
}

// Element count of a typed-array argument already validated by f32()/i32().
inline int64_t typed_len(const Napi::CallbackInfo& info, size_t i) {
  return (int64_t)info[i].As<Napi::TypedArray>().ElementLength();
}

// Rows per parallel chunk so that one chunk holds at least ~`elems` floats of work: calls
// smaller than that run on the calling thread alone (waking a worker costs microseconds).
inline int64_t row_grain(int64_t row_len, int64_t elems = 8192) {
  if (row_len < 1) row_len = 1;
  int64_t g = elems / row_len;
  return g < 1 ? 1 : g;
}

}  // namespace keel
