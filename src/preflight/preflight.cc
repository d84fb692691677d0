#include "preflight/preflight.h"

#include <unistd.h>

#include "base/fs.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

Result<void> needTool(const std::string& tool, const std::string& hint) {
  if (auto found = findOnPath(tool); !found) {
    return Error(ErrorCode::kUnavailable, tool + " not found on PATH (" + hint + ")");
  }
  return success();
}

Result<void> needFile(const fs::path& path, const std::string& what, const std::string& hint) {
  if (::access(path.c_str(), R_OK) != 0) {
    return Error(ErrorCode::kUnavailable, "no " + what + " at " + path.string() + " (" + hint + ")", errno);
  }
  return success();
}

}  // namespace

Result<void> runPreflight(const PreflightInputs& inputs) {
  MICROVM_TRY(needTool(inputs.qemu, "install qemu-system-x86 or set MICROVM_QEMU"));
  MICROVM_TRY(needTool("qemu-img", "install qemu-utils"));
  MICROVM_TRY(needTool("mkfs.ext4", "install e2fsprogs"));
  MICROVM_TRY(needFile(inputs.kernel, "guest kernel", "build it with kernel/build.sh, or set MICROVM_KERNEL"));
  MICROVM_TRY(needFile(inputs.initramfs, "guest initramfs", "build microvm, or set MICROVM_INITRAMFS"));
  MICROVM_TRY(needFile(inputs.runner, "runner binary", "build microvm, or set MICROVM_RUNNER"));
  return success();
}

}  // namespace microvm
