// Runtime::Impl: what a Runtime knows (its paths, its options, the
// acceleration it resolved), held by std::shared_ptr so that every VmHandle
// the runtime gives out shares it instead of copying it. The helpers here
// are the steps the public methods have in common: finding a VM's records by
// reference, sending a request to a running VM's runner, logging.
#pragma once

#include <filesystem>
#include <initializer_list>
#include <mutex>
#include <string>
#include <utility>

#include "base/paths.h"
#include "microvm/runtime.h"
#include "runner/control.h"
#include "state/layout.h"
#include "state/vm_record.h"
#include "state/vm_store.h"

namespace microvm {

struct Runtime::Impl {
  std::filesystem::path data_dir_;
  std::filesystem::path images_dir_;
  std::filesystem::path templates_dir_;
  std::filesystem::path runtime_dir_;
  std::filesystem::path cache_dir_;
  std::filesystem::path share_dir_;
  std::filesystem::path kernel_;
  std::filesystem::path initramfs_;
  std::filesystem::path runner_;
  std::string qemu_;
  std::string accel_request_;
  RuntimeOptions options_;  // insecure registries, credentials file, progress, hooks, logging

  // The data dir's layout, and a store over it.
  Result<Layout> layout() const { return Layout::resolve(data_dir_); }
  Result<VmStore> store() const;
  // The records of the VM `reference` names (full id, unique id prefix or name).
  Result<VmRecord> findVm(const std::string& reference) const;
  // Sends `request` to the runner of the running VM `reference` names.
  Result<void> requestRunning(const std::string& reference, const RunnerRequest& request) const;

  // "kvm" or "tcg" and why, resolved once (probing KVM if needed).
  Result<std::pair<std::string, std::string>> acceleration();

  void log(LogLevel level, std::string message,
           std::initializer_list<std::pair<std::string, std::string>> fields = {}) const;

 private:
  std::mutex accel_mutex_;
  std::string accel_;
  std::string accel_reason_;
};

// True while the VM's runner has it running or paused.
inline bool isActive(const VmRecord& record) {
  return record.state.status == VmStatus::kRunning || record.state.status == VmStatus::kPaused;
}

// `stop` of a suspended VM (core/suspend.cc): it is recorded as exited
// (hard-stopped, 137), then its saved state goes. A later start boots afresh.
Result<void> discardSuspended(const VmRecord& record);

// A new VM, not started, that resumes the state `source`'s VM saved in
// `saved_dir` (a snapshot's files) with its own copy of the disk
// (core/snapshots.cc); `note` is what inspect shows of how it began.
Result<std::string> createRestoredVm(const Layout& layout, const std::filesystem::path& saved_dir,
                                     const VmSpec& source, const std::string& name, bool remove,
                                     const std::string& note);

// Waits (bounded) until an active VM's workload has started. A VM saved
// before then would hold init halfway through taking its spec from this
// runner, which no restored copy could finish.
Result<void> waitForWorkload(const VmRecord& record);

inline std::filesystem::path runnerSocket(const VmRecord& record) {
  return VmSockets(record.spec.runtime_dir).runner();
}

}  // namespace microvm
