// Fuzzes the index files of local image sources: a docker-archive's
// manifest.json (docker save's list of images with their config and layer
// members) and an OCI layout's index.json. Both come with images from
// anywhere; a bad one must give an error, never a crash or an exception.
#include <cstdint>
#include <string_view>

#include "image/docker_archive_source.h"
#include "image/manifest.h"
#include "image/oci_layout_source.h"

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // SAFETY: viewing bytes as chars; char may alias any object.
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const char* tag : {"", "test/app:latest", "busybox:latest"}) {
    (void)microvm::parseDockerArchiveManifest(text, tag);
  }
  for (const char* reference : {"", "latest", "busybox"}) {
    auto entry = microvm::selectOciIndexEntry(text, reference, "index.json");
    if (entry && !microvm::isSha256Digest(entry->digest)) __builtin_trap();
  }
  return 0;
}
