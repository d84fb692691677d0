// The lifecycle of existing VMs: list, inspect, stop, signals, pause,
// ports, attach, remove, wait, prune. Each finds the VM's records through
// the runtime's store and, while it runs, talks to its runner.
#include <signal.h>

#include <algorithm>
#include <thread>

#include "base/paths.h"
#include "base/fs.h"
#include "base/process.h"
#include "core/attach.h"
#include "core/runtime_impl.h"
#include "net/network_config.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

VmInfo toInfo(const VmRecord& record) {
  VmInfo info;
  info.id = record.spec.id;
  info.name = record.spec.name;
  info.command = record.spec.argv;
  info.created_at = record.spec.created_at;
  info.status = toString(record.state.status);
  info.has_exit_code = record.state.exit_code.has_value();
  info.exit_code = record.state.exit_code.value_or(0);
  info.error = record.state.error;
  info.started_at = record.state.started_at;
  info.finished_at = record.state.finished_at;
  bool active = record.state.status == VmStatus::kRunning || record.state.status == VmStatus::kPaused;
  info.runner_pid = active ? record.state.runner_pid : 0;
  info.qemu_pid = active ? record.state.qemu_pid : 0;
  if (active && record.state.qemu_uid) info.qemu_uid = *record.state.qemu_uid;
  if (active && record.state.qemu_gid) info.qemu_gid = *record.state.qemu_gid;
  if (active && record.state.runner_uid) info.runner_uid = *record.state.runner_uid;
  info.accel = record.spec.accel;
  info.cpus = record.spec.cpus;
  info.memory_mib = record.spec.memory_mib;
  info.env = record.spec.env;
  info.workdir = record.spec.workdir;
  info.user = record.spec.user;
  info.hostname = record.spec.hostname;
  info.interactive = record.spec.open_stdin;
  info.tty = record.spec.tty;
  info.boot = record.spec.template_dir.empty() ? "cold" : "template";
  info.boot_note = record.spec.template_note;
  info.network = record.spec.network;
  if (active || record.state.status == VmStatus::kSuspended) {  // a resume forwards the same ones
    for (const auto& text : record.state.ports) {
      if (auto mapping = net::parsePortMapping(text); mapping) info.ports.push_back(net::describePortMapping(*mapping));
    }
  }
  info.published = record.spec.ports;
  info.dns = record.spec.dns;
  info.egress_allow = record.spec.egress_allow;
  info.egress_allow_cidr = record.spec.egress_allow_cidr;
  info.egress_deny = record.spec.egress_deny;
  info.egress_deny_all = record.spec.egress_deny_all;
  info.egress_default_allow = record.spec.egress_default_allow;
  info.timings_ms = record.spec.timings_ms;
  for (const auto& [step, ms] : record.state.timings_ms) info.timings_ms[step] = ms;
  info.net_counters = record.state.net_counters;
  info.dir = record.dir;
  if (record.spec.vsock) info.vsock_socket = VmSockets(record.spec.runtime_dir).vsock();
  for (const auto& port : record.spec.vsock_ports) info.vsock_ports.push_back({port.port, port.path, port.listen});
  return info;
}

// Sleeps with a growing pause until `done` or the deadline; false on timeout.
template <typename Done>
bool pollUntil(Done done, std::chrono::steady_clock::time_point deadline) {
  for (auto pause = std::chrono::milliseconds(5);; pause = std::min(pause * 2, std::chrono::milliseconds(100))) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
  }
}

// SIGKILLs pid if it is still the process that started at start_time.
void killIfSame(pid_t pid, unsigned long long start_time) {
  if (pid <= 0) return;
  auto now = processStartTime(pid);
  if (now && *now == start_time) ::kill(pid, SIGKILL);
}

}  // namespace

Result<std::vector<VmInfo>> Runtime::list(bool all) {
  auto store = impl_->store();
  if (!store) return std::move(store).error();
  auto records = store->list();
  if (!records) return std::move(records).error();
  std::vector<VmInfo> infos;
  for (const auto& record : *records) {
    // Suspended VMs are listed too, as Docker lists paused containers.
    if (all || isActive(record) || record.state.status == VmStatus::kSuspended) infos.push_back(toInfo(record));
  }
  return infos;
}

Result<VmInfo> Runtime::inspect(const std::string& reference) {
  auto record = impl_->findVm(reference);
  if (!record) return std::move(record).error();
  return toInfo(*record);
}

Result<void> Runtime::stop(const std::string& reference, int timeout_seconds) {
  auto store = impl_->store();
  if (!store) return std::move(store).error();
  auto record = store->find(reference);
  if (!record) return std::move(record).error();
  if (record->state.status == VmStatus::kSuspended) return discardSuspended(*record);
  if (!isActive(*record)) return success();  // as Docker: stopping a stopped VM is fine
  if (auto sent = sendRunnerRequest(runnerSocket(*record), StopRequest{timeout_seconds}); !sent) {
    // The runner may have finished between our look and the request.
    auto again = store->load(record->spec.id);
    if (again && !isActive(*again)) return success();
    return std::move(sent).error();
  }
  // The runner stops the VM hard at the timeout; allow it time to clean up.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds + 30);
  std::string id = record->spec.id;
  bool stopped = pollUntil(
      [&] {
        auto current = store->load(id);
        return !current || !isActive(*current);
      },
      deadline);
  if (!stopped) return Error(ErrorCode::kTimeout, "VM " + record->spec.name + " did not stop");
  return success();
}

Result<int> Runtime::attach(const std::string& reference, int in_fd, int out_fd, int err_fd) {
  auto record = impl_->findVm(reference);
  if (!record) return std::move(record).error();
  if (!isActive(*record)) return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is not running");
  bool with_stdin = in_fd >= 0 && record->spec.open_stdin;
  auto stream = openRunnerStream(runnerSocket(*record), AttachRequest{with_stdin});
  if (!stream) return std::move(stream).error();
  return relayAttached(std::move(*stream), with_stdin ? in_fd : -1, out_fd, err_fd);
}

Result<std::vector<std::string>> Runtime::ports(const std::string& reference) {
  auto info = inspect(reference);
  if (!info) return std::move(info).error();
  return info->ports;
}

Result<std::string> Runtime::addPort(const std::string& reference, const std::string& mapping) {
  auto parsed = net::parsePortMapping(mapping);
  if (!parsed) return std::move(parsed).error();
  MICROVM_TRY(net::checkHostPortFree(*parsed));
  auto before = ports(reference);
  if (!before) return std::move(before).error();
  MICROVM_TRY(impl_->requestRunning(reference, PortAddRequest{net::formatPortMapping(*parsed)}));
  // The runner recorded the mapping before it answered; the new line is it.
  auto after = ports(reference);
  if (!after) return std::move(after).error();
  for (const auto& line : *after) {
    if (std::find(before->begin(), before->end(), line) == before->end()) return line;
  }
  return net::describePortMapping(*parsed);
}

Result<void> Runtime::removePort(const std::string& reference, const std::string& mapping) {
  MICROVM_TRY(net::parsePortMapping(mapping));
  return impl_->requestRunning(reference, PortRemoveRequest{mapping});
}

Result<void> Runtime::kill(const std::string& reference, int signal) {
  return impl_->requestRunning(reference, KillRequest{signal});
}

Result<void> Runtime::resize(const std::string& reference, uint16_t rows, uint16_t cols) {
  if (rows == 0 || cols == 0) return Error(ErrorCode::kInvalidArgument, "resize: rows and cols must be at least 1");
  return impl_->requestRunning(reference, ResizeRequest{rows, cols});
}

Result<void> Runtime::pause(const std::string& reference) { return impl_->requestRunning(reference, PauseRequest{}); }

Result<void> Runtime::unpause(const std::string& reference) {
  return impl_->requestRunning(reference, ResumeRequest{});
}

Result<void> Runtime::remove(const std::string& reference, bool force) {
  auto store = impl_->store();
  if (!store) return std::move(store).error();
  auto record = store->find(reference);
  if (!record) return std::move(record).error();
  if (isActive(*record)) {
    if (!force) {
      return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name +
                                                    " is running: stop it first, or remove it with -f");
    }
    // Only the processes recorded for this VM, and only if they are still
    // those processes (pid + start time), are ended.
    killIfSame(record->state.runner_pid, record->state.runner_start_time);
    killIfSame(record->state.qemu_pid, record->state.qemu_start_time);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    bool gone = pollUntil(
        [&] {
          auto runner = processStartTime(record->state.runner_pid);
          auto qemu = processStartTime(record->state.qemu_pid);
          return (!runner || *runner != record->state.runner_start_time) &&
                 (!qemu || *qemu != record->state.qemu_start_time);
        },
        deadline);
    if (!gone) return Error(ErrorCode::kTimeout, "VM " + record->spec.name + "'s processes did not exit");
  }
  if (!record->spec.runtime_dir.empty()) MICROVM_TRY(removeTree(record->spec.runtime_dir));
  return removeTree(record->dir);
}

Result<int> Runtime::wait(const std::string& reference) {
  auto store = impl_->store();
  if (!store) return std::move(store).error();
  auto record = store->find(reference);
  if (!record) return std::move(record).error();
  std::string id = record->spec.id;
  std::optional<VmRecord> last;
  pollUntil(
      [&] {
        auto current = store->load(id);
        if (!current) return true;  // removed (--rm) while we waited
        last = std::move(*current);
        return last->state.status == VmStatus::kExited;
      },
      std::chrono::steady_clock::time_point::max());
  if (!last || last->state.status != VmStatus::kExited) {
    return Error(ErrorCode::kNotFound, "VM " + record->spec.name + " was removed before it exited");
  }
  return last->state.exit_code.value_or(125);
}

Result<std::vector<std::string>> Runtime::prune() {
  auto store = impl_->store();
  if (!store) return std::move(store).error();
  auto records = store->list();
  if (!records) return std::move(records).error();
  std::vector<std::string> removed;
  for (const auto& record : *records) {
    // A suspended VM is not over: its saved state is kept until it is
    // resumed, stopped or removed.
    if (isActive(record) || record.state.status == VmStatus::kSuspended) continue;
    MICROVM_TRY(removeTree(record.dir));
    removed.push_back(record.spec.id);
  }
  return removed;
}

}  // namespace microvm
