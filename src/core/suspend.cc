// Suspend and resume to disk: a VM's memory and device state go into its own
// directory (VmPaths::saved), QEMU and the runner end, and the VM is
// "suspended" until `resume` starts a runner that loads the state again
// (the runner restores when state.json says suspended). The disk overlay
// stays where it is: nothing writes it while the VM is stopped.
//
// Suspending is two runner requests around the caller's part, so that a
// failure at any point leaves the VM running (or paused, as it was) or
// suspended with a whole, sealed state file, never marked suspended with a
// half one:
//   1. SuspendRequest: the runner saves into <vm dir>/.saving and holds the
//      VM paused (a failure there resumes it);
//   2. here: seal the file, rename .saving to saved (atomic);
//   3. SuspendCommitRequest: the runner ends QEMU and records "suspended".
// A failure in 2 or 3 unpauses the VM and removes what was written.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "base/fs.h"
#include "base/paths.h"
#include "base/process.h"
#include "base/scope_guard.h"
#include "base/unique_fd.h"
#include "core/runtime_impl.h"
#include "core/snapshot_checks.h"
#include "microvm/runtime.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

constexpr std::chrono::seconds kSuspendEndTimeout{30};

// Whether the recorded process still runs. An exited one that its parent
// has not reaped yet (a runner the library's caller started) is gone: it
// holds no memory.
bool stillRuns(pid_t pid, unsigned long long start_time) {
  if (pid <= 0) return false;
  auto now = processStartTime(pid);
  if (!now || *now != start_time) return false;
  auto stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat ? stat->rfind(')') : std::string::npos;
  if (close == std::string::npos || close + 2 >= stat->size()) return true;
  char state = (*stat)[close + 2];
  return state != 'Z' && state != 'X';
}

// One suspend, resume or discard of a VM at a time: an exclusive flock on
// the VM's directory (nothing else locks it; the runner never does), held
// for the whole operation. A second caller is refused rather than queued:
// what it asked for is probably being done already.
Result<UniqueFd> lockForSuspend(const VmRecord& record) {
  UniqueFd fd(::open(record.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Error::fromErrno("open " + record.dir.string());
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Error(ErrorCode::kInvalidArgument, "VM " + record.spec.name + " is being suspended or resumed already");
    }
    if (errno != EINTR) return Error::fromErrno("lock " + record.dir.string());
  }
  return fd;
}

// Marks the VM suspended in place of a runner that died after the commit,
// with the port mappings it had.
Result<void> recordSuspended(const VmRecord& before, const VmState& now) {
  auto lock = StateLock::acquire(before.dir);
  if (!lock) return std::move(lock).error();
  VmState state = now;
  state.status = VmStatus::kSuspended;
  state.exit_code.reset();
  state.error.clear();
  state.finished_at.clear();
  state.ports = before.state.ports;
  MICROVM_TRY(saveState(before.dir, state));
  // What the runner would have removed as it ended.
  return before.spec.runtime_dir.empty() ? success() : removeTree(before.spec.runtime_dir);
}

std::string millis(std::chrono::steady_clock::time_point since) {
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
  return std::to_string(static_cast<long long>(std::round(ms)));
}

}  // namespace

Result<void> Runtime::suspend(const std::string& reference) {
  auto store = impl_->store();
  if (!store) return std::move(store).error();
  auto record = store->find(reference);
  if (!record) return std::move(record).error();
  auto lock = lockForSuspend(*record);
  if (!lock) return std::move(lock).error();
  record = store->load(record->spec.id);  // as it is now that it is ours
  if (!record) return std::move(record).error();
  const VmSpec& spec = record->spec;
  if (record->state.status == VmStatus::kSuspended) {
    return Error(ErrorCode::kInvalidArgument, "VM " + spec.name + " is already suspended");
  }
  if (!isActive(*record)) return Error(ErrorCode::kInvalidArgument, "VM " + spec.name + " is not running");
  if (spec.remove_on_exit) {
    return Error(ErrorCode::kInvalidArgument,
                 "VM " + spec.name + " was started with --rm: it would be removed, not suspended");
  }
  MICROVM_TRY(checkCanSnapshot(spec));
  MICROVM_TRY(waitForWorkload(*record));
  auto started = std::chrono::steady_clock::now();
  bool was_running = record->state.status == VmStatus::kRunning;
  VmPaths paths(record->dir);
  fs::path socket = runnerSocket(*record);

  // The runner (or, as root, its keeper) writes the memory file into a
  // fresh directory of ours.
  MICROVM_TRY(removeTree(paths.saving()));
  MICROVM_TRY(makeDirs(paths.saving()));
  ScopeGuard remove_saving([&] { (void)removeTree(paths.saving()); });
  MICROVM_TRY(sendRunnerRequest(socket, SuspendRequest{}));
  // From here the VM is held paused: a failure lets it carry on as it was.
  ScopeGuard carry_on([&] {
    if (was_running) (void)sendRunnerRequest(socket, ResumeRequest{});
  });
  fs::path memory = paths.saving() / paths.savedMemory().filename();
  MICROVM_TRY(writeSeal(memory, spec, paths.saving() / paths.savedSeal().filename()));
  MICROVM_TRY(syncDirectory(paths.saving()));
  // Whole, or not there: saved/ appears by one rename.
  MICROVM_TRY(removeTree(paths.saved()));
  if (::rename(paths.saving().c_str(), paths.saved().c_str()) != 0) {
    return Error::fromErrno("rename " + paths.saving().string() + " to " + paths.saved().string());
  }
  remove_saving.dismiss();
  ScopeGuard remove_saved([&] { (void)removeTree(paths.saved()); });
  MICROVM_TRY(syncDirectory(record->dir));
  std::string id = spec.id;
  if (auto committed = sendRunnerRequest(socket, SuspendCommitRequest{}); !committed) {
    // A runner that refused carries on; one that died took QEMU with it,
    // and the saved state is whole: the VM is suspended all the same.
    auto now = store->load(id);
    if (!now || now->state.status != VmStatus::kExited) return committed;
    MICROVM_TRY(recordSuspended(*record, now->state));
  }
  remove_saved.dismiss();
  carry_on.dismiss();

  // The runner records "suspended" as it ends; return once neither it nor
  // QEMU is left.
  auto deadline = std::chrono::steady_clock::now() + kSuspendEndTimeout;
  for (auto pause = std::chrono::milliseconds(5);; pause = std::min(pause * 2, std::chrono::milliseconds(100))) {
    auto current = store->load(id);
    if (!current) return std::move(current).error();
    bool gone = !stillRuns(record->state.runner_pid, record->state.runner_start_time) &&
                !stillRuns(record->state.qemu_pid, record->state.qemu_start_time);
    if (current->state.status == VmStatus::kSuspended && gone) break;
    if (current->state.status == VmStatus::kExited) {
      // The runner died between the commit and its record; QEMU died with
      // it (PR_SET_PDEATHSIG). The saved state is whole and sealed: the VM
      // is suspended all the same.
      MICROVM_TRY(recordSuspended(*record, current->state));
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return Error(ErrorCode::kTimeout, "VM " + spec.name + "'s runner did not end after saving its state");
    }
    std::this_thread::sleep_for(pause);
  }
  std::error_code ec;
  auto bytes = fs::file_size(paths.savedMemory(), ec);
  impl_->log(LogLevel::kInfo, "suspended",
             {{"vm", id.substr(0, 12)}, {"ms", millis(started)}, {"bytes", ec ? "?" : std::to_string(bytes)}});
  return success();
}

Result<void> Runtime::resume(const std::string& reference) {
  auto store = impl_->store();
  if (!store) return std::move(store).error();
  auto record = store->find(reference);
  if (!record) return std::move(record).error();
  auto lock = lockForSuspend(*record);
  if (!lock) return std::move(lock).error();
  record = store->load(record->spec.id);
  if (!record) return std::move(record).error();
  const VmSpec& spec = record->spec;
  // resume() unpaused before suspend existed: a paused VM still unpauses.
  if (record->state.status == VmStatus::kPaused) return unpause(spec.id);
  if (record->state.status != VmStatus::kSuspended) {
    return Error(ErrorCode::kInvalidArgument, "VM " + spec.name + " is not suspended (it is " +
                                                  toString(record->state.status) + ")");
  }
  VmPaths paths(record->dir);
  if (!fs::exists(paths.savedMemory())) {
    return Error(ErrorCode::kNotFound, "VM " + spec.name + " is suspended but its saved state " +
                                           paths.savedMemory().string() + " is missing; stop it to boot it afresh");
  }
  MICROVM_TRY(checkSeal(paths.savedMemory(), spec, paths.savedSeal()));
  auto started = std::chrono::steady_clock::now();
  // The runner loads the saved state and records "running" only once it is
  // loaded; if it fails, it records "suspended" again and keeps the file.
  auto handle = spawnRunner(spec.id, -1, -1, -1);
  if (!handle) return std::move(handle).error().withContext("resume " + spec.name);
  std::string loaded_ms = millis(started);
  // QEMU has loaded it: the state lives in the guest again.
  if (auto removed = removeTree(paths.saved()); !removed) {
    impl_->log(LogLevel::kWarn, "saved state not removed", {{"vm", spec.id.substr(0, 12)}, {"error", removed.error().message()}});
  }
  // The runner refreshed the guest's clock and RNG as it resumed it.
  impl_->log(LogLevel::kInfo, "resumed", {{"vm", spec.id.substr(0, 12)}, {"ms", loaded_ms}});
  return success();
}

Result<void> discardSuspended(const VmRecord& record) {
  VmPaths paths(record.dir);
  auto suspend_lock = lockForSuspend(record);
  if (!suspend_lock) return std::move(suspend_lock).error();
  {
    auto lock = StateLock::acquire(record.dir);
    if (!lock) return std::move(lock).error();
    auto current = loadState(record.dir);
    if (!current) return std::move(current).error();
    if (current->status != VmStatus::kSuspended) {
      return Error(ErrorCode::kInvalidArgument, "VM " + record.spec.name + " was resumed meanwhile; stop it again");
    }
    VmState state = *current;
    state.status = VmStatus::kExited;
    state.exit_code = 137;  // as a hard stop: the workload never finished
    state.finished_at = nowRfc3339();
    state.ports.clear();
    state.error.clear();
    // Exited first: a crash before the files go leaves an exited VM with a
    // stale saved dir (start removes it), never a suspended one without state.
    MICROVM_TRY(saveState(record.dir, state));
  }
  MICROVM_TRY(removeTree(paths.saved()));
  MICROVM_TRY(removeTree(paths.saving()));
  if (!record.spec.runtime_dir.empty()) MICROVM_TRY(removeTree(record.spec.runtime_dir));
  return success();
}

}  // namespace microvm
