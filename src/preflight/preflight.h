// Preflight: the host facilities a VM needs, each checked with a one-line
// fix hint, so a missing piece fails before anything is created.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "microvm/result.h"

namespace microvm {

struct PreflightInputs {
  std::string qemu;
  std::filesystem::path kernel;
  std::filesystem::path initramfs;
  std::filesystem::path runner;
};

// Returns the first failed check as an Error whose message ends with a hint.
Result<void> runPreflight(const PreflightInputs& inputs);

}  // namespace microvm
