// Helpers to read kernel arguments from JavaScript. Kernels trust sizes passed from
// TypeScript (the model computes them), but check buffer lengths so a wrong call throws
// a JS error instead of writing out of bounds.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

namespace keel {

inline bool arg_error(const Napi::CallbackInfo& info, const std::string& msg) {
  Napi::TypeError::New(info.Env(), msg).ThrowAsJavaScriptException();
  return false;
}

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

inline int64_t int_arg(const Napi::CallbackInfo& info, size_t i) {
  return info[i].As<Napi::Number>().Int64Value();
}
inline double num_arg(const Napi::CallbackInfo& info, size_t i) {
  return info[i].As<Napi::Number>().DoubleValue();
}

}  // namespace keel
