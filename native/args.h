// Reading kernel arguments from JavaScript. Kernels trust sizes passed from TypeScript (the
// model computes them), but check every size and buffer length so a wrong call throws a JS
// error instead of reading or writing out of bounds.
//
// Two layers: the checks of one argument (f32, i32, size_arg, num, obj_arg, num_prop,
// bool_prop: each leaves a pending JS exception when it fails), and Args, with which a
// binding reads all its arguments in order and tests once whether they were good.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace keel {

inline bool arg_error(const Napi::CallbackInfo& info, const std::string& msg) {
  Napi::TypeError::New(info.Env(), msg).ThrowAsJavaScriptException();
  return false;
}

inline bool range_error(const Napi::CallbackInfo& info, const std::string& msg) {
  Napi::RangeError::New(info.Env(), msg).ThrowAsJavaScriptException();
  return false;
}

// ---- one argument ------------------------------------------------------------------------

// A Float32Array argument with at least `need` elements; nullptr (and a pending JS
// exception) otherwise. With allow_null, null/undefined gives nullptr without error.
inline float* f32(const Napi::CallbackInfo& info, size_t i, int64_t need, bool allow_null = false,
                  bool* failed = nullptr) {
  Napi::Value v = info[i];
  if (allow_null && (v.IsNull() || v.IsUndefined())) return nullptr;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    if (failed) *failed = true;
    arg_error(info, "argument " + std::to_string(i) + " must be a Float32Array");
    return nullptr;
  }
  auto a = v.As<Napi::Float32Array>();
  if ((int64_t)a.ElementLength() < need) {
    if (failed) *failed = true;
    arg_error(info, "argument " + std::to_string(i) + " has " + std::to_string(a.ElementLength()) +
                        " elements, needs " + std::to_string(need));
    return nullptr;
  }
  return a.Data();
}

inline int32_t* i32(const Napi::CallbackInfo& info, size_t i, int64_t need, bool* failed) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    *failed = true;
    arg_error(info, "argument " + std::to_string(i) + " must be an Int32Array");
    return nullptr;
  }
  auto a = v.As<Napi::Int32Array>();
  if ((int64_t)a.ElementLength() < need) {
    *failed = true;
    arg_error(info, "argument " + std::to_string(i) + " is too short");
    return nullptr;
  }
  return a.Data();
}

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

// Coefficient bundles (AdamCoefs, ...) arrive as plain JS objects. obj_arg reads info[i] as
// one; num_prop/bool_prop read a named property and fail with a TypeError naming
// `what.key` when it is missing or of the wrong type (a typo in the caller must not
// silently become NaN or false).
inline bool obj_arg(const Napi::CallbackInfo& info, size_t i, Napi::Object* out, const char* what) {
  Napi::Value v = info[i];
  if (!v.IsObject()) return arg_error(info, "argument " + std::to_string(i) + " (" + what + ") must be an object");
  *out = v.As<Napi::Object>();
  return true;
}

inline bool num_prop(const Napi::CallbackInfo& info, const Napi::Object& o, const char* key, double* out,
                     const char* what) {
  Napi::Value v = o.Get(key);
  if (info.Env().IsExceptionPending()) return false;  // a throwing getter
  if (!v.IsNumber()) return arg_error(info, std::string(what) + "." + key + " must be a number");
  *out = v.As<Napi::Number>().DoubleValue();
  return true;
}

inline bool bool_prop(const Napi::CallbackInfo& info, const Napi::Object& o, const char* key, bool* out,
                      const char* what) {
  Napi::Value v = o.Get(key);
  if (info.Env().IsExceptionPending()) return false;
  if (!v.IsBoolean()) return arg_error(info, std::string(what) + "." + key + " must be a boolean");
  *out = v.As<Napi::Boolean>().Value();
  return true;
}

// Element count of a typed-array argument already validated by f32()/i32().
inline int64_t typed_len(const Napi::CallbackInfo& info, size_t i) {
  return (int64_t)info[i].As<Napi::TypedArray>().ElementLength();
}

// ---- a whole call ------------------------------------------------------------------------

class Args;

// The named properties of one coefficient object, read through its Args (a failure here is
// the call's failure).
class Coefs {
 public:
  Coefs(Args& args, Napi::Object obj, const char* what) : args_(args), obj_(obj), what_(what) {}
  double num(const char* key);
  bool flag(const char* key);
  // An integer in [lo, hi] (an enum such as epsMode, or a size); a RangeError otherwise.
  int64_t integer(const char* key, int64_t lo, int64_t hi);

 private:
  Args& args_;
  Napi::Object obj_;
  const char* what_;
};

// Reads a binding's arguments in the order they are asked for. The first bad one throws its
// JS error; from then on every read is a no-op returning 0 or nullptr, so a binding reads
// everything and tests ok() once instead of after each argument. Each read is its own
// statement (or declarator), so the error reported is the first in reading order.
class Args {
 public:
  // `name`: the kernel's JS name; `n`: how many arguments it needs at least.
  Args(const Napi::CallbackInfo& info, const char* name, size_t n) : info_(info), ok_(need_args(info, n, name)) {}

  bool ok() const { return ok_; }
  Napi::Env env() const { return info_.Env(); }
  // Whether argument i was passed as something other than undefined.
  bool given(size_t i) const { return info_.Length() > i && !info_[i].IsUndefined(); }
  bool null_at(size_t i) const { return info_[i].IsNull() || info_[i].IsUndefined(); }

  // A size in [lo, 2^31). With `rule`, a failure reads "argument i <rule>" whatever was
  // wrong (matmul.cc's wording, which its callers have always seen).
  int64_t size(size_t i, int64_t lo = 0, const char* rule = nullptr) {
    int64_t v = 0;
    if (!ok_) return 0;
    if (!rule) {
      ok_ = size_arg(info_, i, &v, lo);
      return v;
    }
    const double d = info_[i].IsNumber() ? info_[i].As<Napi::Number>().DoubleValue() : -1.0;
    if (!(d >= (double)lo && d < 2147483648.0) || d != (double)(int64_t)d) fail("argument " + std::to_string(i) + " " + rule);
    return ok_ ? (int64_t)d : 0;
  }
  double number(size_t i) {
    double v = 0.0;
    if (ok_) ok_ = keel::num(info_, i, &v);
    return v;
  }
  // Argument i's text, or "" when it is not a string (the caller says what was expected).
  std::string text(size_t i) const { return ok_ && info_[i].IsString() ? info_[i].As<Napi::String>().Utf8Value() : ""; }
  // An optional trailing number: `otherwise` when absent or undefined.
  double number_or(size_t i, double otherwise) { return given(i) ? number(i) : otherwise; }
  // A Float32Array of at least `need` elements; with nullable, null or undefined (also an
  // absent argument) give nullptr.
  float* f32(size_t i, int64_t need, bool nullable = false) {
    if (!ok_) return nullptr;
    bool bad = false;
    float* p = keel::f32(info_, i, need, nullable, &bad);
    ok_ = !bad;
    return p;
  }
  // Arguments 0..n−1 as Float32Arrays of `need` elements each, into out[0..n): the layout
  // of the elementwise and optimizer kernels (buffers first, then their length).
  void f32s(size_t n, int64_t need, float** out) {
    for (size_t i = 0; i < n; ++i) out[i] = f32(i, need);
  }
  int32_t* i32(size_t i, int64_t need) {
    if (!ok_) return nullptr;
    bool bad = false;
    int32_t* p = keel::i32(info_, i, need, &bad);
    ok_ = !bad;
    return p;
  }
  // A coefficient object; `what` names it in errors ("AdamCoefs.lr must be a number").
  Coefs coefs(size_t i, const char* what) {
    Napi::Object o;
    if (ok_) ok_ = obj_arg(info_, i, &o, what);
    return Coefs(*this, o, what);
  }
  // Element count of argument i, once f32()/i32() accepted it.
  int64_t length(size_t i) const { return ok_ ? typed_len(info_, i) : 0; }

  // Throws a TypeError (or RangeError) unless an error is pending already; returns false.
  bool fail(const std::string& msg) {
    if (ok_) arg_error(info_, msg);
    return ok_ = false;
  }
  bool fail_range(const std::string& msg) {
    if (ok_) range_error(info_, msg);
    return ok_ = false;
  }

 private:
  friend class Coefs;
  const Napi::CallbackInfo& info_;
  bool ok_;
};

inline double Coefs::num(const char* key) {
  double v = 0.0;
  if (args_.ok_) args_.ok_ = num_prop(args_.info_, obj_, key, &v, what_);
  return v;
}

inline bool Coefs::flag(const char* key) {
  bool v = false;
  if (args_.ok_) args_.ok_ = bool_prop(args_.info_, obj_, key, &v, what_);
  return v;
}

inline int64_t Coefs::integer(const char* key, int64_t lo, int64_t hi) {
  const double d = num(key);
  if (!args_.ok_) return 0;
  if (!(d >= (double)lo && d <= (double)hi) || d != std::floor(d)) {
    args_.fail_range(std::string(what_) + "." + key + " must be an integer in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "], got " + std::to_string(d));
    return 0;
  }
  return (int64_t)d;
}

// The binding of a kernel over n ≤ 4 Float32Arrays of N elements with N after them (GELU,
// residual, accumulate): reads them and calls run(buffers, N) when they are good.
template <class Run>
Napi::Value flat_binding(const Napi::CallbackInfo& info, const char* name, size_t n, Run run) {
  Args a(info, name, n + 1);
  const int64_t N = a.size(n);
  float* x[4];
  a.f32s(n < 4 ? n : 4, N, x);
  if (a.ok()) run(x, N);
  return a.env().Undefined();
}

// ---- exports -----------------------------------------------------------------------------

// A binding and its JS name (src/kernels/types.ts); each kernel file's Init* adds its list.
struct Export {
  const char* name;
  Napi::Value (*fn)(const Napi::CallbackInfo&);
};

inline void add_exports(Napi::Env env, Napi::Object exports, std::initializer_list<Export> list) {
  for (const Export& e : list) exports.Set(e.name, Napi::Function::New(env, e.fn));
}

}  // namespace keel
