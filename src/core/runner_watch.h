// RunnerWatch: how start() learns that the runner it spawned has the VM
// going, or has exited, without polling: an inotify watch on the VM's
// directory (the runner replaces state.json by a rename) and a pidfd on the
// runner. Where either cannot be had, it falls back to looking every 50 ms.
//
//   RunnerWatch watch(vm_dir);                     // before the spawn
//   auto process = spawn(...);
//   watch.watchProcess(process->pid());
//   switch (watch.wait([](const VmState& s) { return s.status != VmStatus::kCreated; }, 30s)) { ... }
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>

#include "base/unique_fd.h"
#include "state/vm_record.h"

namespace microvm {

inline constexpr std::chrono::seconds kRunnerStartTimeout{30};

class RunnerWatch {
 public:
  enum Outcome { kStarted, kExited, kTimedOut };

  explicit RunnerWatch(std::filesystem::path vm_dir);
  // The runner: our child, which wait() never reaps.
  void watchProcess(pid_t pid);

  // Until the runner has exited (kExited), or state.json names it as the
  // runner with a state `started` accepts (kStarted), or `timeout` passes.
  Outcome wait(const std::function<bool(const VmState&)>& started, std::chrono::milliseconds timeout);

 private:
  bool exited() const;

  std::filesystem::path vm_dir_;
  pid_t pid_ = -1;
  UniqueFd inotify_;
  UniqueFd pidfd_;
};

}  // namespace microvm
