// Fuzzes everything parsed from a registry or a user's command line: image
// references, indexes, manifests, configs, platform strings and layer media
// types. Besides crashes it checks that a parsed reference prints to a string
// that parses back to the same reference.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "image/manifest.h"
#include "image/reference.h"

namespace {

void fuzzReference(std::string_view text) {
  auto reference = microvm::parseReference(text);
  if (!reference) return;
  auto again = microvm::parseReference(reference->toString());
  if (!again || !(*again == *reference)) {
    (void)std::fprintf(stderr, "reference %s does not round-trip\n", reference->toString().c_str());
    std::abort();
  }
}

void fuzzManifests(std::string_view text) {
  for (std::string_view content_type : {"", "application/vnd.oci.image.index.v1+json", "text/plain"}) {
    auto document = microvm::parseIndexOrManifest(text, content_type);
    if (!document) continue;
    if (auto* index = std::get_if<microvm::ImageIndex>(&*document)) {
      (void)microvm::selectPlatform(*index);
      (void)microvm::selectPlatform(*index, "linux/arm/v7");
      (void)microvm::selectPlatform(*index, "linux/arm64");
    }
  }
  (void)microvm::parseImageIndex(text);
  (void)microvm::parseImageManifest(text);
  (void)microvm::parseImageConfig(text);
}

}  // namespace

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // SAFETY: viewing bytes as chars; char may alias any object.
  std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzzReference(text);
  fuzzManifests(text);
  (void)microvm::parsePlatform(text);
  (void)microvm::layerCompression(text);
  return 0;
}
