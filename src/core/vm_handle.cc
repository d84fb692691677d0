// VmHandle: every operation is the Runtime's of the same name for one VM.
#include <sys/wait.h>

#include <cerrno>
#include <csignal>

#include "base/process.h"
#include "microvm/runtime.h"

namespace microvm {

VmHandle::VmHandle(std::shared_ptr<Runtime> runtime, std::string id, pid_t runner_pid)
    : runtime_(std::move(runtime)), id_(std::move(id)), runner_pid_(runner_pid) {}

VmHandle::VmHandle(VmHandle&& other) noexcept
    : runtime_(std::move(other.runtime_)), id_(std::move(other.id_)), runner_pid_(std::exchange(other.runner_pid_, -1)) {}

VmHandle& VmHandle::operator=(VmHandle&& other) noexcept {
  runtime_ = std::move(other.runtime_);
  id_ = std::move(other.id_);
  runner_pid_ = std::exchange(other.runner_pid_, -1);
  return *this;
}

VmHandle::~VmHandle() = default;

void VmHandle::signal(int signal) const {
  if (runner_pid_ > 0) {
    ::kill(runner_pid_, signal);
  } else if (runtime_) {
    (void)runtime_->kill(id_, signal);
  }
}

Result<int> VmHandle::wait() {
  if (runner_pid_ <= 0) {
    // Not our child (Runtime::get, or waited for already): the records say.
    if (!runtime_) return Error(ErrorCode::kInvalidArgument, "VM handle without a runtime");
    return runtime_->wait(id_);
  }
  int status = 0;
  while (::waitpid(runner_pid_, &status, 0) < 0) {
    if (errno != EINTR) return Error::fromErrno("wait for the runner of VM " + id_);
  }
  runner_pid_ = -1;
  if (WIFEXITED(status) && runtime_) {
    // Our runner also ends when the VM is suspended: the VM goes on (resumed
    // by another runner, or stopped while suspended), and its record says.
    auto info = runtime_->inspect(id_);
    if (info && info->status != "exited") return runtime_->wait(id_);
    if (info && info->has_exit_code) return info->exit_code;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return Error(ErrorCode::kInternal, "the runner of VM " + id_ + " was " + describeWaitStatus(status));
}

Result<VmInfo> VmHandle::inspect() const { return runtime_->inspect(id_); }
Result<std::string> VmHandle::status() const {
  auto info = inspect();
  if (!info) return std::move(info).error();
  return info->status;
}
Result<void> VmHandle::stop(int timeout_seconds) const { return runtime_->stop(id_, timeout_seconds); }
Result<void> VmHandle::kill(int signal) const { return runtime_->kill(id_, signal); }
Result<void> VmHandle::resize(uint16_t rows, uint16_t cols) const { return runtime_->resize(id_, rows, cols); }
Result<void> VmHandle::pause() const { return runtime_->pause(id_); }
Result<void> VmHandle::unpause() const { return runtime_->unpause(id_); }
Result<void> VmHandle::suspend() const { return runtime_->suspend(id_); }
Result<void> VmHandle::resume() const { return runtime_->resume(id_); }
Result<std::vector<VmHandle>> VmHandle::fork(int count, const std::string& name_prefix) const {
  return runtime_->fork(id_, count, name_prefix);
}
Result<void> VmHandle::remove(bool force) const { return runtime_->remove(id_, force); }
Result<int> VmHandle::exec(const ExecOptions& options) const { return runtime_->exec(id_, options); }
Result<void> VmHandle::copyTo(const std::string& host_source, const std::string& guest_destination) const {
  return runtime_->copyTo(id_, host_source, guest_destination);
}
Result<void> VmHandle::copyFrom(const std::string& guest_source, const std::string& host_destination) const {
  return runtime_->copyFrom(id_, guest_source, host_destination);
}
Result<std::vector<std::string>> VmHandle::ports() const { return runtime_->ports(id_); }
Result<std::string> VmHandle::addPort(const std::string& mapping) const { return runtime_->addPort(id_, mapping); }
Result<void> VmHandle::logs(const LogOptions& options, int out_fd, int err_fd) const {
  return runtime_->logs(id_, options, out_fd, err_fd);
}
Result<void> VmHandle::snapshot(const std::string& name) const { return runtime_->snapshot(id_, name); }

}  // namespace microvm
