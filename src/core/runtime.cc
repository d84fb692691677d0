#include "microvm/runtime.h"

#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>

#include "base/fs.h"
#include "base/hash.h"
#include "base/process.h"
#include "base/scope_guard.h"
#include "hypervisor/accel.h"
#include "hypervisor/qemu/qemu_backend.h"
#include "image/root_disk.h"
#include "preflight/preflight.h"
#include "state/layout.h"
#include "state/vm_record.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

// The first non-empty of: explicit option, environment variable, fallback.
std::string pick(const std::string& option, const char* env_name, const std::string& fallback) {
  if (!option.empty()) return option;
  const char* value = std::getenv(env_name);
  if (value && *value) return value;
  return fallback;
}

Result<void> validate(const RunOptions& options) {
  auto invalid = [](const std::string& message) { return Error(ErrorCode::kInvalidArgument, message); };
  if (options.command.empty()) return invalid("no command given (put it after the options, or after --)");
  if (options.command[0].empty()) return invalid("the command is an empty string");
  if (options.rootfs.empty()) return invalid("no root filesystem given (--rootfs DIR)");
  std::error_code ec;
  if (!fs::is_directory(options.rootfs, ec)) {
    return invalid("rootfs " + options.rootfs.string() + ": " +
                   (fs::exists(options.rootfs, ec) ? "not a directory" : "no such directory"));
  }
  if (options.cpus < 1 || options.cpus > 64) return invalid("cpus must be between 1 and 64");
  if (options.memory_mib < 64 || options.memory_mib > 1024 * 1024) {
    return invalid("memory must be between 64 MiB and 1 TiB");
  }
  if (options.workdir.empty() || options.workdir[0] != '/') {
    return invalid("working directory \"" + options.workdir + "\" is not an absolute path");
  }
  for (const auto& var : options.env) {
    if (var.find('=') == std::string::npos || var[0] == '=') {
      return invalid("environment entry \"" + var + "\" is not KEY=VALUE");
    }
  }
  if (options.stop_timeout_seconds < 0) return invalid("stop timeout must not be negative");
  return success();
}

}  // namespace

VmHandle::VmHandle(VmHandle&& other) noexcept
    : id_(std::move(other.id_)), runner_pid_(std::exchange(other.runner_pid_, -1)) {}

VmHandle& VmHandle::operator=(VmHandle&& other) noexcept {
  id_ = std::move(other.id_);
  runner_pid_ = std::exchange(other.runner_pid_, -1);
  return *this;
}

void VmHandle::signal(int signal) const {
  if (runner_pid_ > 0) ::kill(runner_pid_, signal);
}

Result<int> VmHandle::wait() {
  if (runner_pid_ <= 0) return Error(ErrorCode::kInvalidArgument, "VM " + id_ + " was already waited for");
  int status = 0;
  while (::waitpid(runner_pid_, &status, 0) < 0) {
    if (errno != EINTR) return Error::fromErrno("wait for the runner of VM " + id_);
  }
  runner_pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return Error(ErrorCode::kInternal, "the runner of VM " + id_ + " was " + describeWaitStatus(status));
}

Result<Runtime> Runtime::open(RuntimeOptions options) {
  auto layout = Layout::resolve(options.data_dir);
  if (!layout) return std::move(layout).error();
  auto exe_dir = executableDir();
  if (!exe_dir) return std::move(exe_dir).error();

  Runtime runtime;
  runtime.data_dir_ = layout->dataDir();
  runtime.runtime_dir_ = layout->runtimeDir();
  runtime.cache_dir_ = layout->cacheDir();
  runtime.share_dir_ = (*exe_dir / ".." / "share" / "microvm").lexically_normal();
  runtime.kernel_ = pick(options.kernel, "MICROVM_KERNEL", (runtime.share_dir_ / "vmlinux").string());
  runtime.initramfs_ = pick(options.initramfs, "MICROVM_INITRAMFS", (runtime.share_dir_ / "initramfs.cpio").string());
  runtime.runner_ = pick("", "MICROVM_RUNNER", (*exe_dir / "microvm-runner").string());
  runtime.qemu_ = pick(options.qemu, "MICROVM_QEMU", "qemu-system-x86_64");
  runtime.accel_request_ = pick(options.accel, "MICROVM_ACCEL", "auto");
  if (auto request = parseAccelRequest(runtime.accel_request_); !request) return std::move(request).error();
  return runtime;
}

Result<void> Runtime::resolveAcceleration() {
  if (!accel_.empty()) return success();
  auto qemu = findOnPath(qemu_);
  if (!qemu) return Error(ErrorCode::kUnavailable, qemu_ + " not found on PATH (install qemu-system-x86 or set MICROVM_QEMU)");
  QemuBackend backend(qemu->string());
  AccelProbe probe;
  probe.backend = &backend;
  probe.qemu = qemu->string();
  probe.kernel = kernel_;
  probe.probe_initramfs = share_dir_ / "poweroff.cpio";
  probe.cache_file = cache_dir_ / "accel-probe.json";
  auto choice = chooseAcceleration(*parseAccelRequest(accel_request_), probe);
  if (!choice) return std::move(choice).error();
  accel_ = toString(choice->accel);
  accel_reason_ = choice->reason;
  return success();
}

Result<HostInfo> Runtime::info() {
  HostInfo info;
  auto qemu = findOnPath(qemu_);
  info.qemu = qemu ? qemu->string() : qemu_ + " (not found)";
  if (qemu) {
    std::string output;
    if (runCommand({qemu->string(), "--version"}, &output)) {
      info.qemu_version = output.substr(0, output.find('\n'));
    }
  }
  info.kernel = kernel_;
  info.initramfs = initramfs_;
  info.data_dir = data_dir_;
  if (qemu && fs::exists(kernel_)) {
    MICROVM_TRY(resolveAcceleration());
    info.accel = accel_;
    info.accel_reason = accel_reason_;
  } else {
    info.accel = "unknown";
    info.accel_reason = "needs QEMU and a guest kernel to decide";
  }
  return info;
}

Result<VmHandle> Runtime::start(const RunOptions& options) {
  MICROVM_TRY(validate(options));
  MICROVM_TRY(runPreflight({qemu_, kernel_, initramfs_, runner_}));
  MICROVM_TRY(resolveAcceleration());

  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  MICROVM_TRY(makeDirs(layout->vmsDir()));
  auto base = ensureBaseDisk(layout->rootfsCacheDir(), options.rootfs);
  if (!base) return std::move(base).error().withContext("build root disk");

  VmSpec spec;
  spec.id = randomHex(32);
  spec.name = options.name.empty() ? spec.id.substr(0, 12) : options.name;
  spec.created_at = nowRfc3339();
  spec.qemu = findOnPath(qemu_)->string();
  spec.accel = accel_;
  spec.tsc_khz = hostTscKhz();
  spec.cpus = options.cpus;
  spec.memory_mib = options.memory_mib;
  spec.kernel = fs::absolute(kernel_).string();
  spec.initramfs = fs::absolute(initramfs_).string();
  spec.base_disk = base->string();
  spec.argv = options.command;
  spec.env = options.env;
  spec.workdir = options.workdir;
  spec.user = options.user;
  spec.hostname = options.hostname.empty() ? spec.id.substr(0, 12) : options.hostname;
  spec.remove_on_exit = options.remove;
  spec.stop_timeout_seconds = options.stop_timeout_seconds;

  fs::path vm_dir = layout->vmDir(spec.id);
  spec.root_disk = (vm_dir / "disk.qcow2").string();
  spec.runtime_dir = layout->vmRuntimeDir(spec.id).string();
  MICROVM_TRY(checkSocketPath(fs::path(spec.runtime_dir) / "qmp.sock"));
  MICROVM_TRY(makeDirs(vm_dir));
  ScopeGuard remove_vm([&] { (void)removeTree(vm_dir); });
  MICROVM_TRY(createOverlay(*base, spec.root_disk));
  MICROVM_TRY(saveSpec(vm_dir, spec));

  SpawnOptions runner;
  runner.argv = {runner_.string(), vm_dir.string()};
  if (options.stdout_fd >= 0) runner.fds.push_back({1, options.stdout_fd});
  if (options.stderr_fd >= 0) runner.fds.push_back({2, options.stderr_fd});
  // Its own session: the VM outlives this process and its terminal.
  runner.new_session = true;
  auto process = spawn(runner);
  if (!process) return std::move(process).error().withContext("start runner");
  remove_vm.dismiss();
  return VmHandle(spec.id, process->release());
}

}  // namespace microvm
