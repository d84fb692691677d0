// Fuzzes layer extraction: arbitrary bytes applied as an image layer (tar,
// gzip or zstd) onto a fresh rootfs inside a sandbox directory. Besides
// crashes and sanitizer reports it checks the extractor's promise: whatever
// the input, nothing appears in the sandbox next to the rootfs.
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string_view>

#include "base/fs.h"
#include "base/temp_dir.h"
#include "image/layer_extractor.h"

namespace {

namespace fs = std::filesystem;

// One sandbox per process, removed at exit; each input gets a new rootfs.
const fs::path& sandbox() {
  static std::optional<microvm::TempDir> dir = [] {
    auto created = microvm::TempDir::create("microvm-layer-fuzz");
    if (!created) {
      (void)std::fprintf(stderr, "%s\n", created.error().message().c_str());
      std::abort();
    }
    return std::optional<microvm::TempDir>(std::move(*created));
  }();
  return dir->path();
}

// The sandbox must hold exactly the rootfs: anything else escaped.
void checkNothingEscaped(const fs::path& rootfs) {
  std::error_code ec;
  for (fs::directory_iterator it(sandbox(), ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path() != rootfs) {
      (void)std::fprintf(stderr, "layer wrote outside the rootfs: %s\n", it->path().c_str());
      std::abort();
    }
  }
}

}  // namespace

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fs::path rootfs = sandbox() / "rootfs";
  if (::mkdir(rootfs.c_str(), 0755) != 0) std::abort();
  // Small caps keep each run fast; the limits themselves are under test too.
  microvm::ExtractLimits limits{.max_bytes = 16u << 20, .max_entries = 4096, .max_path_length = 4096};
  // SAFETY: viewing bytes as chars; char may alias any object.
  std::string_view layer(reinterpret_cast<const char*>(data), size);
  auto stats = microvm::applyLayerFromMemory(layer, rootfs, limits);
  (void)stats;  // errors are expected; only crashes and escapes are bugs
  checkNothingEscaped(rootfs);
  if (!microvm::removeTree(rootfs)) std::abort();
  return 0;
}
