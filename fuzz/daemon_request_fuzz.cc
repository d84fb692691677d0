// Fuzzes microvmd's parsers of client input (src/daemon/requests.h): the
// create, exec and snapshot bodies, label filters, query strings, base64 and
// the UTF-8 check. Besides crashes it checks that base64 round-trips and
// that what the UTF-8 check accepts, JSON can carry.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "daemon/requests.h"

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // SAFETY: viewing bytes as chars; char may alias any object.
  std::string_view text(reinterpret_cast<const char*>(data), size);
  using namespace microvm::daemon;
  (void)parseCreateRequest(text);
  (void)parseExecRequest(text, false);
  (void)parseExecRequest(text, true);
  (void)parseSnapshotName(text);
  (void)parseForkCount(text);
  (void)parseLabelFilter(text);
  (void)queryValues(text, "path");
  (void)queryValues(text, "label");
  auto decoded = base64Decode(text);
  if (decoded && base64Encode(*decoded) != text) {
    // Only canonical padding bits round-trip; the decoder accepts others.
    auto again = base64Decode(base64Encode(*decoded));
    if (!again || *again != *decoded) {
      (void)std::fprintf(stderr, "base64 does not round-trip\n");
      std::abort();
    }
  }
  auto encoded = base64Decode(base64Encode(text));
  if (!encoded || *encoded != text) {
    (void)std::fprintf(stderr, "base64 of the input does not decode back to it\n");
    std::abort();
  }
  if (isUtf8(text)) {
    // JSON strings hold UTF-8: dumping must not throw.
    nlohmann::json j = std::string(text);
    (void)j.dump();
  }
  return 0;
}
