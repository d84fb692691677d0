// Boots a command in a microVM from a root filesystem directory and returns
// its exit code; the workload's output streams to this process's stdout.
//   hello ROOTFS_DIR
#include <cstdio>

#include "microvm/runtime.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s ROOTFS_DIR\n", argv[0]);
    return 2;
  }
  auto runtime = microvm::Runtime::open();
  if (!runtime) {
    std::fprintf(stderr, "open: %s\n", runtime.error().message().c_str());
    return 1;
  }
  microvm::RunOptions options;
  options.rootfs = argv[1];
  options.command = {"/bin/sh", "-c", "echo hello from $(uname -s) $(hostname)"};
  options.hostname = "example";
  options.remove = true;  // no files left behind
  auto vm = runtime->run(options);
  if (!vm) {
    std::fprintf(stderr, "run: %s\n", vm.error().message().c_str());
    return 1;
  }
  auto code = vm->wait();
  return code ? *code : 1;
}
