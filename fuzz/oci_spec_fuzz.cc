// Fuzzes microvm-runtime's parsers of an engine's files: a bundle's
// config.json (planBundle) and an exec's process.json (planProcess). The
// bundle is a real directory with a rootfs/ and a file and a folder to bind,
// so mounts get as far as the host checks. Besides crashes it checks what a
// plan promises: a command, an absolute rootfs, sizes in range, guest paths
// absolute.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "oci/bundle_spec.h"

namespace {

const std::filesystem::path& bundle() {
  static const std::filesystem::path path = [] {
    std::filesystem::path dir = std::filesystem::temp_directory_path() / "oci_spec_fuzz_bundle";
    std::filesystem::create_directories(dir / "rootfs");
    std::filesystem::create_directories(dir / "data");
    std::ofstream(dir / "hosts") << "127.0.0.1 localhost\n";
    return dir;
  }();
  return path;
}

void check(bool ok, const char* what) {
  if (!ok) {
    (void)std::fprintf(stderr, "plan broke a promise: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto plan = microvm::oci::planBundle(text, bundle());
  if (plan) {
    const auto& options = plan->options;
    check(!options.command.empty(), "a command");
    check(options.rootfs.is_absolute(), "an absolute rootfs");
    check(options.cpus >= 1 && options.cpus <= 64, "cpus in range");
    check(options.memory_mib >= 64, "memory in range");
    check(options.network == "none" || options.network == "user", "a known network");
    for (const auto& volume : options.volumes) check(!volume.guest.empty() && volume.guest[0] == '/', "guest paths");
    for (const auto& file : plan->files) check(!file.guest.empty() && file.guest[0] == '/', "guest file paths");
  }
  auto process = microvm::oci::planProcess(text);
  if (process) check(!process->args.empty(), "exec args");
  return 0;
}
