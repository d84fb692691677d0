// Wall-clock timestamps for records and logs.
#pragma once

#include <string>

namespace microvm {

// Now, as RFC 3339 UTC with nanoseconds: 2026-11-22T05:28:05.123456789Z.
std::string nowRfc3339();

}  // namespace microvm
