// Keel's native kernels. Each kernel file registers its functions here; the exported
// names match src/kernels/types.ts, which documents every kernel's contract.
#include <napi.h>

#include "pool.h"

namespace keel {
void InitIsa(Napi::Env env, Napi::Object exports);
void InitMatmul(Napi::Env env, Napi::Object exports);
void InitOps(Napi::Env env, Napi::Object exports);
void InitAttention(Napi::Env env, Napi::Object exports);
void InitOptim(Napi::Env env, Napi::Object exports);
void InitReduce(Napi::Env env, Napi::Object exports);
void InitAverage(Napi::Env env, Napi::Object exports);
}  // namespace keel

static Napi::Value Threads(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsNumber()) keel::pool_set_threads(info[0].As<Napi::Number>().Int32Value());
  return Napi::Number::New(info.Env(), keel::pool_threads());
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("threads", Napi::Function::New(env, Threads));
  keel::InitIsa(env, exports);
  keel::InitMatmul(env, exports);
  keel::InitOps(env, exports);
  keel::InitAttention(env, exports);
  keel::InitOptim(env, exports);
  keel::InitReduce(env, exports);
  keel::InitAverage(env, exports);
  return exports;
}

NODE_API_MODULE(keel, Init)
