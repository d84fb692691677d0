// Boots `echo` in a microVM from ROOTFS_DIR through the installed C++ API.
//   consumer ROOTFS_DIR
#include <microvm/runtime.h>
#include <microvm/version.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  auto runtime = microvm::Runtime::open();
  if (!runtime) {
    std::fprintf(stderr, "open: %s\n", runtime.error().message().c_str());
    return 1;
  }
  microvm::RunOptions options;
  options.rootfs = argv[1];
  options.command = {"echo", "consumer", microvm::kVersion};
  options.remove = true;
  auto vm = runtime->run(options);
  if (!vm) {
    std::fprintf(stderr, "run: %s\n", vm.error().message().c_str());
    return 1;
  }
  auto code = vm->wait();
  return code ? *code : 1;
}
