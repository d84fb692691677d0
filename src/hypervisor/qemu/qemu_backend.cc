#include "hypervisor/qemu/qemu_backend.h"

#include <poll.h>
#include <unistd.h>

#include <optional>
#include <thread>

#include "hypervisor/qemu/qmp_client.h"

namespace microvm {

namespace {

// A QEMU process and, once first needed, a QMP connection to it.
class QemuVmm : public Vmm {
 public:
  QemuVmm(Process process, std::filesystem::path qmp_socket, MachineConfig::WaitService while_waiting)
      : process_(std::move(process)), qmp_socket_(std::move(qmp_socket)), while_waiting_(std::move(while_waiting)) {}

  Process& process() override { return process_; }
  Result<void> pause() override { return run("stop"); }
  Result<void> resume() override { return run("cont"); }

  Result<void> saveState(int fd) override {
    MICROVM_TRY(run("stop"));
    MICROVM_TRY(connectQmp());
    // QEMU may not spawn (-sandbox spawn=deny), so the state goes to an fd
    // we hand over, not to an exec: URI.
    auto passed = qmp_->executeWithFd("getfd", {{"fdname", "snapshot"}}, fd);
    if (!passed) return std::move(passed).error();
    auto started = qmp_->execute("migrate", {{"uri", "fd:snapshot"}});
    if (!started) return std::move(started).error();
    return waitFor("query-migrate", [](const nlohmann::json& reply) -> std::optional<Result<void>> {
      std::string status = reply.value("status", "");
      if (status == "completed") return success();
      if (status == "failed" || status == "cancelled") {
        return Error(ErrorCode::kIo, "saving the VM state " + status + ": " + reply.value("error-desc", ""));
      }
      return std::nullopt;
    });
  }

  Result<void> finishRestore() override {
    MICROVM_TRY(waitFor("query-status", [](const nlohmann::json& reply) -> std::optional<Result<void>> {
      std::string status = reply.value("status", "");
      if (status == "inmigrate" || status == "prelaunch") return std::nullopt;
      if (status == "paused" || status == "running") return success();
      return Error(ErrorCode::kIo, "restoring the VM state ended in state \"" + status + "\"");
    }));
    return run("cont");
  }

 private:
  Result<void> connectQmp() {
    if (qmp_) return success();
    if (qmp_socket_.empty()) return Error(ErrorCode::kUnsupported, "this VM has no QMP socket");
    auto client = QmpClient::connect(qmp_socket_, std::chrono::seconds(5), while_waiting_);
    if (!client) return std::move(client).error();
    qmp_.emplace(std::move(*client));
    return success();
  }

  Result<void> run(const std::string& command) {
    MICROVM_TRY(connectQmp());
    auto result = qmp_->execute(command);
    if (!result) return std::move(result).error();
    return success();
  }

  // Polls a query command until `verdict` decides (bounded: two minutes).
  template <typename Verdict>
  Result<void> waitFor(const std::string& query, Verdict verdict) {
    MICROVM_TRY(connectQmp());
    auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
    for (auto pause = std::chrono::milliseconds(2);; pause = std::min(pause * 2, std::chrono::milliseconds(50))) {
      auto reply = qmp_->execute(query);
      if (!reply) return std::move(reply).error();
      if (auto decided = verdict(*reply)) return std::move(*decided);
      if (std::chrono::steady_clock::now() >= deadline) {
        return Error(ErrorCode::kTimeout, query + " did not settle within two minutes");
      }
      idle(pause);
    }
  }

  // Sleeps for `duration`, serving the VMM's back-ends meanwhile.
  void idle(std::chrono::milliseconds duration) {
    if (while_waiting_.fd < 0) return std::this_thread::sleep_for(duration);
    pollfd pfd{while_waiting_.fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(duration.count())) == 1) while_waiting_.service();
  }

  Process process_;
  std::filesystem::path qmp_socket_;
  MachineConfig::WaitService while_waiting_;
  std::optional<QmpClient> qmp_;
};

}  // namespace

std::string kernelCommandLine(const MachineConfig& config) {
  // reboot=t: the guest "powers off" with a triple-fault reset, which
  // -no-reboot turns into QEMU exiting; microvm has no ACPI power button.
  // panic=-1: a guest panic resets at once, so QEMU exits instead of hanging.
  std::string cmdline = "console=ttyS0 reboot=t panic=-1 quiet";
  if (config.accel == Acceleration::kTcg && config.tsc_khz > 0) {
    // Without the hint a TCG guest calibrates its TSC against the PIT and
    // hangs at random (PLATFORM_NOTES: 13 of 18 parallel boots).
    // tsc=reliable: a TCG guest's TSC is the host's, but on a busy host the
    // clocksource watchdog misjudges it as unstable, falls back to jiffies
    // and costs a third of a second of boot.
    cmdline += " tsc_early_khz=" + std::to_string(config.tsc_khz) + " tsc=reliable";
  }
  return cmdline;
}

std::vector<std::string> QemuBackend::commandLine(const MachineConfig& config) const {
  std::vector<std::string> argv = {binary_};
  auto add = [&argv](std::initializer_list<std::string> args) { argv.insert(argv.end(), args); };

  std::string machine = "microvm,x-option-roms=off,isa-serial=on,acpi=off";
  if (!config.vhost_vsock_socket.empty()) {
    // A vhost-user back-end reads and writes guest RAM itself: it must be a
    // shared file it can map (PLATFORM_NOTES: vhost-user section).
    add({"-object", "memory-backend-memfd,id=mem,size=" + std::to_string(config.memory_mib) + "M,share=on"});
    machine += ",memory-backend=mem";
  }
  add({"-M", machine});
  if (config.accel == Acceleration::kKvm) {
    add({"-accel", "kvm", "-cpu", "host"});
  } else {
    add({"-accel", "tcg,thread=multi", "-cpu", "max"});
  }
  add({"-m", std::to_string(config.memory_mib), "-smp", std::to_string(config.cpus)});
  add({"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"});
  // The VMM itself may not spawn, elevate or use obsolete syscalls.
  add({"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"});
  add({"-kernel", config.kernel.string(), "-initrd", config.initramfs.string()});
  add({"-append", kernelCommandLine(config)});
  add({"-serial", config.console_log.empty() ? "null" : "file:" + config.console_log.string()});
  if (!config.root_disk.empty()) {
    add({"-drive", "id=root,file=" + config.root_disk.string() + ",format=qcow2,if=none,discard=unmap",
         "-device", "virtio-blk-device,drive=root"});
  }
  for (size_t i = 0; i < config.shares.size(); ++i) {
    const auto& share = config.shares[i];
    std::string id = "fs" + std::to_string(i);
    // passthrough keeps the guest's owners on the host when QEMU may chown
    // (root); otherwise files are simply created as QEMU's user.
    std::string model = ::geteuid() == 0 ? "passthrough" : "none";
    add({"-fsdev", "local,id=" + id + ",path=" + share.host.string() + ",security_model=" + model +
                       (share.readonly ? ",readonly=on" : ""),
         "-device", "virtio-9p-device,fsdev=" + id + ",mount_tag=" + share.tag});
  }
  if (!config.vhost_vsock_socket.empty()) {
    add({"-chardev", "socket,id=vsock,path=" + config.vhost_vsock_socket.string(), "-device",
         "vhost-user-vsock-device,chardev=vsock"});
  }
  if (config.control_fd >= 0) {
    add({"-chardev", "socket,id=ctl,fd=" + std::to_string(kQemuControlFd), "-device",
         "virtio-serial-device,max_ports=2", "-device", "virtserialport,chardev=ctl,name=microvm.ctl"});
  }
  if (config.net_fd >= 0) {
    // Frames go over the inherited stream socket (4-byte length + frame) to
    // the runner's network stack.
    add({"-netdev", "stream,id=net0,server=off,addr.type=fd,addr.str=" + std::to_string(kQemuNetFd), "-device",
         std::string("virtio-net-device,netdev=net0,mac=") + kGuestMac});
  }
  if (!config.qmp_socket.empty()) {
    add({"-qmp", "unix:" + config.qmp_socket.string() + ",server=on,wait=off"});
  }
  if (config.incoming_fd >= 0) add({"-incoming", "fd:" + std::to_string(kQemuIncomingFd)});
  return argv;
}

Result<std::unique_ptr<Vmm>> QemuBackend::launch(const MachineConfig& config) {
  SpawnOptions options;
  options.argv = commandLine(config);
  if (config.control_fd >= 0) options.fds.push_back({kQemuControlFd, config.control_fd});
  if (config.incoming_fd >= 0) options.fds.push_back({kQemuIncomingFd, config.incoming_fd});
  if (config.net_fd >= 0) options.fds.push_back({kQemuNetFd, config.net_fd});
  if (config.stderr_fd >= 0) options.fds.push_back({2, config.stderr_fd});
  // The VMM must never outlive the runner that owns it.
  options.die_with_parent = true;
  auto process = spawn(options);
  if (!process) return std::move(process).error().withContext("start QEMU");
  return std::unique_ptr<Vmm>(std::make_unique<QemuVmm>(std::move(*process), config.qmp_socket, config.while_waiting));
}

}  // namespace microvm
