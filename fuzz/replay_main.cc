// The stand-in for libFuzzer's driver when the compiler has no libFuzzer
// (GCC): runs the linked fuzz target once over each file named on the command
// line, and over every file in each directory named, in sorted order. It is
// how the seed corpus is replayed as a test.
//
//   layer_fuzz fuzz/corpus/layer_fuzz crash-1234
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "base/fs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);  // NOLINT(readability-identifier-naming)

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> collectInputs(int argc, char** argv) {
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    fs::path arg = argv[i];
    std::error_code ec;
    if (!fs::is_directory(arg, ec)) {
      inputs.push_back(arg);
      continue;
    }
    std::vector<fs::path> files;
    for (fs::directory_iterator it(arg, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->is_regular_file(ec)) files.push_back(it->path());
    }
    std::sort(files.begin(), files.end());
    inputs.insert(inputs.end(), files.begin(), files.end());
  }
  return inputs;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<fs::path> inputs = collectInputs(argc, argv);
  // An empty run would pass without testing anything: a lost corpus must fail.
  if (inputs.empty()) {
    (void)std::fprintf(stderr, "usage: %s FILE_OR_DIR...: no inputs found\n", argv[0]);
    return 2;
  }
  for (const auto& input : inputs) {
    auto bytes = microvm::readFile(input);
    if (!bytes) {
      (void)std::fprintf(stderr, "%s\n", bytes.error().message().c_str());
      return 1;
    }
    // SAFETY: reading chars as bytes; uint8_t may alias any object.
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size());
  }
  (void)std::printf("replayed %zu inputs\n", inputs.size());
  return 0;
}
