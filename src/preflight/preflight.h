// Preflight: the host facilities a VM needs, each checked with a one-line
// fix hint. `microvm doctor` shows every check; `run` stops at the first
// required one that fails, before anything is created.
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
  std::filesystem::path data_dir;
  std::vector<int> host_ports;  // ports the VM will listen on (127.0.0.1)
};

struct PreflightCheck {
  std::string name;     // "qemu", "kernel", "data_dir", ...
  bool ok = false;
  bool required = true;
  std::string detail;   // what was found: a version, a path, a size
  std::string hint;     // how to fix it, when not ok
};

// Every check, in a stable order. Never fails itself: a check that cannot
// be made is reported as failed. `detailed` adds what costs a process spawn
// (the QEMU version); `run` leaves it out to keep boots fast.
std::vector<PreflightCheck> runPreflightChecks(const PreflightInputs& inputs, bool detailed = true);

// The first failed required check as an Error ("<detail> (<hint>)").
Result<void> runPreflight(const PreflightInputs& inputs);

}  // namespace microvm
