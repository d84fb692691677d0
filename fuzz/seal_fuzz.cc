// Fuzzes the parser of a snapshot's seal (core/snapshot_checks.h): seal.json
// sits on disk next to the saved memory, so a restore reads it as untrusted
// input. Besides crashes it checks that whatever parses encodes back to the
// same seal.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "core/snapshot_checks.h"

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // SAFETY: viewing bytes as chars; char may alias any object.
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto seal = microvm::parseSeal(text);
  if (seal) {
    auto again = microvm::parseSeal(microvm::encodeSeal(*seal));
    if (!again || !(*again == *seal)) {
      (void)std::fprintf(stderr, "seal does not round-trip\n");
      std::abort();
    }
  }
  return 0;
}
