#include "hypervisor/qemu/qemu_backend.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <thread>

#include "base/unique_fd.h"
#include "base/unix_socket.h"
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
    return waitFor("query-migrate", qmpMigrationOutcome);
  }

  Result<void> connectControl() override { return connectQmp(); }

  Result<void> finishRestore() override {
    MICROVM_TRY(waitFor("query-status", qmpRestoreOutcome));
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

std::string procFd(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

// The fd set (-add-fd ... set=N) each handed-over file is in; QEMU opens
// "/dev/fdset/N" by dup'ing the fd of the matching access mode.
constexpr int kConsoleFdSet = 1;
constexpr int kDiskFdSet = 2;
constexpr int kBaseDiskFdSet = 3;

// QEMU's option syntax doubles a comma that is part of a value.
std::string escapeCommas(const std::string& value) {
  std::string escaped;
  for (char c : value) escaped += c == ',' ? std::string(",,") : std::string(1, c);
  return escaped;
}

std::string fdSet(int set) { return "/dev/fdset/" + std::to_string(set); }
std::string addFd(int fd, int set) { return "fd=" + std::to_string(fd) + ",set=" + std::to_string(set); }

// A file QEMU reads by reopening /proc/self/fd/N, which checks the file's
// own permissions (not its directories'). A file another user may not read
// is copied into a sealed memfd, which anyone holding the fd may read.
Result<UniqueFd> openForReading(const std::filesystem::path& path, bool other_user) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::fromErrno("open " + path.string());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::fromErrno("stat " + path.string());
  if (!other_user || (st.st_mode & S_IROTH)) return fd;
  UniqueFd copy(::memfd_create(path.filename().c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!copy.valid()) return Error::fromErrno("memfd_create");
  for (off_t offset = 0; offset < st.st_size;) {
    ssize_t sent = ::sendfile(copy.get(), fd.get(), &offset, static_cast<size_t>(st.st_size - offset));
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) return Error::fromErrno("copy " + path.string());
  }
  if (::fcntl(copy.get(), F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
    return Error::fromErrno("seal the copy of " + path.string());
  }
  return copy;
}

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
  if (!config.name.empty()) add({"-name", "guest=" + escapeCommas(config.name)});
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
  add({"-kernel", procFd(kQemuKernelFd), "-initrd", procFd(kQemuInitramfsFd)});
  add({"-append", kernelCommandLine(config)});
  if (config.console_fd >= 0) {
    add({"-chardev", "socket,id=con,fd=" + std::to_string(kQemuConsoleFd), "-serial", "chardev:con"});
  } else if (config.console_log.empty()) {
    add({"-serial", "null"});
  } else {
    add({"-add-fd", addFd(kQemuConsoleFd, kConsoleFdSet), "-serial", "file:" + fdSet(kConsoleFdSet)});
  }
  if (!config.root_disk.empty()) {
    // The base is a node of its own, named as the overlay's backing: QEMU
    // does not open the path recorded in the overlay.
    std::string backing;
    if (!config.base_disk.empty()) {
      add({"-add-fd", addFd(kQemuBaseDiskFd, kBaseDiskFdSet), "-blockdev",
           "driver=raw,node-name=base,read-only=on,file.driver=file,file.filename=" + fdSet(kBaseDiskFdSet) +
               ",file.read-only=on"});
      backing = ",backing=base";
    }
    // A disk deleted with the VM (run --rm) ignores the guest's flushes: an
    // fdatasync per sync() in the guest bought nothing for a file about to go.
    std::string no_flush = config.ephemeral_disk ? ",cache.no-flush=on,file.cache.no-flush=on" : "";
    add({"-add-fd", addFd(kQemuDiskFd, kDiskFdSet), "-blockdev",
         "driver=qcow2,node-name=root,discard=unmap" + backing + no_flush + ",file.driver=file,file.filename=" +
             fdSet(kDiskFdSet) + ",file.discard=unmap",
         "-device", "virtio-blk-device,drive=root"});
  }
  for (size_t i = 0; i < config.shares.size(); ++i) {
    const auto& share = config.shares[i];
    std::string id = "fs" + std::to_string(i);
    // passthrough keeps the guest's owners on the host when QEMU may chown
    // (root, or a VMM user given CAP_CHOWN); otherwise files are simply
    // created as QEMU's user.
    std::string model = ::geteuid() == 0 ? "passthrough" : "none";
    add({"-fsdev", "local,id=" + id + ",path=" + procFd(kQemuFirstShareFd + static_cast<int>(i)) +
                       ",security_model=" + model + (share.readonly ? ",readonly=on" : ""),
         "-device", "virtio-9p-device,fsdev=" + id + ",mount_tag=" + share.tag});
  }
  if (!config.vhost_vsock_socket.empty()) {
    add({"-chardev", "socket,id=vsock,fd=" + std::to_string(kQemuVsockFd), "-device",
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
         "virtio-net-device,netdev=net0,host_mtu=" + std::to_string(config.net_mtu) + ",mac=" + kGuestMac});
  }
  if (!config.qmp_socket.empty()) {
    add({"-chardev", "socket,id=qmp,fd=" + std::to_string(kQemuQmpFd) + ",server=on,wait=off", "-mon",
         "chardev=qmp,mode=control"});
  }
  if (config.incoming_fd >= 0) add({"-incoming", "fd:" + std::to_string(kQemuIncomingFd)});
  return argv;
}

Result<std::unique_ptr<Vmm>> QemuBackend::launch(const MachineConfig& config) {
  SpawnOptions options;
  options.argv = commandLine(config);
  options.credentials = config.credentials;
  bool other_user = config.credentials.has_value();
  // Everything QEMU inherits, opened here; our copies close after the spawn.
  std::vector<UniqueFd> opened;
  auto hand = [&](int target, UniqueFd fd) {
    options.fds.push_back({target, fd.get()});
    opened.push_back(std::move(fd));
  };
  auto kernel = openForReading(config.kernel, other_user);
  if (!kernel) return std::move(kernel).error().withContext("guest kernel");
  hand(kQemuKernelFd, std::move(*kernel));
  auto initramfs = openForReading(config.initramfs, other_user);
  if (!initramfs) return std::move(initramfs).error().withContext("initramfs");
  hand(kQemuInitramfsFd, std::move(*initramfs));
  if (config.console_fd >= 0) {
    options.fds.push_back({kQemuConsoleFd, config.console_fd});
  } else if (!config.console_log.empty()) {
    // O_NOFOLLOW: the directory may be writable by the VM's runner id.
    UniqueFd console(::open(config.console_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!console.valid()) return Error::fromErrno("open " + config.console_log.string());
    hand(kQemuConsoleFd, std::move(console));
  }
  if (!config.root_disk.empty()) {
    UniqueFd disk(::open(config.root_disk.c_str(), O_RDWR | O_CLOEXEC));
    if (!disk.valid()) return Error::fromErrno("open " + config.root_disk.string());
    hand(kQemuDiskFd, std::move(disk));
    if (!config.base_disk.empty()) {
      UniqueFd base(::open(config.base_disk.c_str(), O_RDONLY | O_CLOEXEC));
      if (!base.valid()) return Error::fromErrno("open " + config.base_disk.string());
      hand(kQemuBaseDiskFd, std::move(base));
    }
  }
  for (size_t i = 0; i < config.shares.size(); ++i) {
    int target = kQemuFirstShareFd + static_cast<int>(i);
    const auto& share = config.shares[i];
    if (share.fd >= 0) {
      options.fds.push_back({target, share.fd});
      continue;
    }
    UniqueFd dir(::open(share.host.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir.valid()) return Error::fromErrno("volume " + share.host.string());
    hand(target, std::move(dir));
  }
  if (!config.vhost_vsock_socket.empty()) {
    auto vsock = connectUnix(config.vhost_vsock_socket);
    if (!vsock) return std::move(vsock).error().withContext("vsock");
    hand(kQemuVsockFd, std::move(*vsock));
  }
  if (!config.qmp_socket.empty()) {
    auto qmp = listenUnix(config.qmp_socket, 4);
    if (!qmp) return std::move(qmp).error().withContext("QMP");
    hand(kQemuQmpFd, std::move(*qmp));
  }
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
