// Work splitting shared by the kernel files (ops.cc, attention.cc, optim.cc, reduce.cc); their
// arguments are read with args.h, which this includes.
#pragma once
#include <cstdint>

#include "args.h"

namespace keel {

// Rows per parallel chunk so that one chunk holds at least ~`elems` floats of work: calls
// smaller than that run on the calling thread alone (waking a worker costs microseconds).
inline int64_t row_grain(int64_t row_len, int64_t elems = 8192) {
  if (row_len < 1) row_len = 1;
  int64_t g = elems / row_len;
  return g < 1 ? 1 : g;
}

}  // namespace keel
