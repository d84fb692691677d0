#include "core/runtime_impl.h"

#include "base/fs.h"
#include "base/log.h"
#include "core/runner_watch.h"
#include "hypervisor/accel.h"
#include "hypervisor/qemu/qemu_backend.h"

namespace microvm {

Result<VmStore> Runtime::Impl::store() const {
  auto resolved = layout();
  if (!resolved) return std::move(resolved).error();
  return VmStore(std::move(*resolved));
}

Result<VmRecord> Runtime::Impl::findVm(const std::string& reference) const {
  auto vms = store();
  if (!vms) return std::move(vms).error();
  return vms->find(reference);
}

Result<void> Runtime::Impl::requestRunning(const std::string& reference, const RunnerRequest& request) const {
  auto record = findVm(reference);
  if (!record) return std::move(record).error();
  if (!isActive(*record)) return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is not running");
  return sendRunnerRequest(runnerSocket(*record), request);
}

Result<void> waitForWorkload(const VmRecord& record) {
  if (workloadStarted(record.state)) return success();
  RunnerWatch watch(record.dir);
  watch.watchProcess(record.state.runner_pid);
  switch (watch.wait(workloadStarted, kRunnerStartTimeout)) {
    case RunnerWatch::kStarted: return success();
    case RunnerWatch::kExited:
      return Error(ErrorCode::kInvalidArgument, "VM " + record.spec.name + " exited before its workload started");
    case RunnerWatch::kTimedOut: break;
  }
  return Error(ErrorCode::kTimeout, "VM " + record.spec.name + " has not started its workload after " +
                                        std::to_string(kRunnerStartTimeout.count()) +
                                        " s; it cannot be saved before it does");
}

Result<std::pair<std::string, std::string>> Runtime::Impl::acceleration() {
  // Handles share this object, possibly across threads.
  std::lock_guard lock(accel_mutex_);
  if (!accel_.empty()) return std::make_pair(accel_, accel_reason_);
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
  return std::make_pair(accel_, accel_reason_);
}

void Runtime::Impl::log(LogLevel level, std::string message,
                        std::initializer_list<std::pair<std::string, std::string>> fields) const {
  Logger(options_.log_level, options_.log_format, options_.log_sink).log(level, std::move(message), fields);
}

}  // namespace microvm
