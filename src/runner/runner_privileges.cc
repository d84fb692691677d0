#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

#include "base/paths.h"
#include "base/fs.h"
#include "base/idmapped_mount.h"
#include "runner/machine_config.h"
#include "runner/runner_internal.h"

namespace microvm {

namespace fs = std::filesystem;

// The host directory with its owner shown as share.uid and its group as
// share.gid (and those ids stored as the owner and group on disk); every
// other id stays itself (swapIds).
Result<UniqueFd> idMappedShare(const VmSpec::Share& share) {
  auto context = "volume " + share.host + " with uid=/gid=";
  if (::geteuid() != 0) return Error(ErrorCode::kInvalidArgument, context + ": needs microvm to run as root");
  struct stat st {};
  if (::stat(share.host.c_str(), &st) != 0) return Error::fromErrno(context);
  auto tree = openIdMappedTree(share.host, swapIds(st.st_uid, share.uid.value_or(st.st_uid)),
                               swapIds(st.st_gid, share.gid.value_or(st.st_gid)), share.readonly);
  if (!tree) return std::move(tree).error().withContext(context);
  return tree;
}

// Run as root, QEMU gets a user of its own and keeps only the capabilities
// its shares need (vmm_user.h); everything it uses is handed over as fds.
Result<void> Runner::chooseVmmUser(MachineConfig& config) {
  auto user = VmmUser::allocate();
  if (!user) return std::move(user).error().withContext("pick a user for QEMU");
  vmm_user_.emplace(std::move(*user));
  std::optional<gid_t> kvm_group;
  if (config.accel == Acceleration::kKvm) {
    // /dev/kvm is usually root:kvm 0660: its group is the one QEMU may keep.
    struct stat st {};
    if (::stat("/dev/kvm", &st) == 0 && (st.st_mode & 0006) != 0006) kvm_group = st.st_gid;
  }
  auto credentials = vmmCredentials(config, vmm_user_->uid(), vmm_user_->gid(), kvm_group);
  config.credentials = credentials;
  state_.qemu_uid = credentials.uid;
  state_.qemu_gid = credentials.gid;
  log("QEMU runs as uid/gid " + std::to_string(credentials.uid) + ", capabilities 0x" +
      [&] {
        char hex[17];
        std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(credentials.capabilities));
        return std::string(hex);
      }());
  return success();
}

// QEMU runs: from here on the runner parses guest input (libslirp, vsock,
// the control port) and needs root no more. As root it becomes the VM's
// runner id (giveUpRoot); as anyone, it installs its seccomp filter.
Result<void> Runner::confine() {
  if (keeper_) {
    if (auto given_up = giveUpRoot(); !given_up) return std::move(given_up).error().withContext("runner: give up root");
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Error::fromErrno("runner: set no_new_privs");
  if (seccomp_ == nullptr) return success();
  if (auto filtered = seccomp_(); !filtered) return std::move(filtered).error().withContext("runner: seccomp filter");
  return success();
}

// The VM's directory becomes root:<runner gid> 01770: the runner may create
// files in it (state.json's temp file) and replace its own (state.json), but
// sticky, not root's (spec.json, the disk, the logs, state.lock), which root
// reads and acts on later. Root opens nothing there that the runner can
// replace, and reads state.json bounded and without following links.
Result<void> Runner::giveUpRoot() {
  uid_t uid = vmm_user_->runnerUid();
  gid_t gid = vmm_user_->runnerGid();
  // QMP's socket is in the runtime dir, which stays root's: connect now.
  if (auto connected = vmm_->connectControl(); !connected && connected.error().code() != ErrorCode::kUnsupported) {
    return std::move(connected).error().withContext("QMP");
  }
  auto open_read = [&](const char* name, UniqueFd& fd) -> Result<void> {
    fd.reset(::open((vm_dir_ / name).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (!fd.valid()) return Error::fromErrno("open " + (vm_dir_ / name).string());
    return success();
  };
  MICROVM_TRY(open_read(VmFiles::kConsoleLog, console_read_));
  disk_read_.reset(::open(spec_.root_disk.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!disk_read_.valid()) return Error::fromErrno("open " + spec_.root_disk);

  UniqueFd lock(::open(VmPaths(vm_dir_).stateLock().c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock.valid()) return Error::fromErrno("open " + VmPaths(vm_dir_).stateLock().string());
  if (::fchown(lock.get(), 0, gid) != 0 || ::fchmod(lock.get(), 0660) != 0) {
    return Error::fromErrno("give " + VmPaths(vm_dir_).stateLock().string() + " to the runner's group");
  }
  // state.json becomes the runner's, unless it is not a plain file of its
  // own (left by an earlier runner): then it goes, and the runner writes a
  // new one.
  fs::path state = VmPaths(vm_dir_).state();
  UniqueFd state_fd(::open(state.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  struct stat st {};
  if (state_fd.valid() && ::fstat(state_fd.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1) {
    if (::fchown(state_fd.get(), uid, gid) != 0) return Error::fromErrno("give " + state.string() + " to the runner");
  } else if (::unlink(state.c_str()) != 0 && errno != ENOENT) {
    return Error::fromErrno("remove " + state.string());
  }
  if (::chown(vm_dir_.c_str(), 0, gid) != 0 || ::chmod(vm_dir_.c_str(), 01770) != 0) {
    return Error::fromErrno("give " + vm_dir_.string() + " to the runner's group");
  }
  // The runner's id cannot search the data dir: it works from inside.
  if (::chdir(vm_dir_.c_str()) != 0) return Error::fromErrno("chdir " + vm_dir_.string());
  // The rotated logs become the runner's, so that it can rename them in the
  // sticky directory and start new ones; root reads them without following
  // links (RotatedLogReader), as it does state.json.
  std::vector<RotatingFile*> rotating_logs;
  for (auto* log : {&workload_log_, &console_log_}) {
    if (log->has_value()) rotating_logs.push_back(&**log);
  }
  if (log_) rotating_logs.push_back(&log_->file());
  for (const RotatingFile* rotating : rotating_logs) {
    for (const auto& path : rotatedLogFiles(rotating->path())) {
      UniqueFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
      struct stat log_st {};
      if (!file.valid() || ::fstat(file.get(), &log_st) != 0 || !S_ISREG(log_st.st_mode) || log_st.st_nlink != 1) {
        continue;  // not a plain file of its own: rotation will replace it
      }
      if (::fchown(file.get(), uid, gid) != 0) return Error::fromErrno("give " + path.string() + " to the runner");
    }
  }
  state_dir_ = ".";
  // The runner's id cannot search the data dir: rotate by name from here.
  for (RotatingFile* rotating : rotating_logs) rotating->renamePath(rotating->path().filename());
  MICROVM_TRY(becomeRunnerUser(uid, gid, runnerCapabilities()));
  state_.runner_uid = uid;
  log("runner runs as uid/gid " + std::to_string(uid));
  return success();
}

}  // namespace microvm
