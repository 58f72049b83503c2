#include <napi.h>

#include "args.h"
#include "pool.h"

namespace keel {
void InitOptim(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }
}  // namespace keel
