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

// Bytes per second: as fast as the disk takes it.
constexpr int64_t kUnthrottled = int64_t{1} << 40;

// Where guest RAM lives, which decides what the migration stream carries.
struct RamSaving {
  bool memfd = false;             // RAM is the runner's memfd (MachineConfig::memory_fd)
  bool is_private = false;        // mapped copy-on-write (MachineConfig::memory_private)
  bool incoming_has_ram = false;  // MachineConfig::incoming_has_ram
};

// A QEMU process and, once first needed, a QMP connection to it.
class QemuVmm : public Vmm {
 public:
  QemuVmm(Process process, std::filesystem::path qmp_socket, MachineConfig::WaitService while_waiting,
          RamSaving ram)
      : process_(std::move(process)),
        qmp_socket_(std::move(qmp_socket)),
        while_waiting_(std::move(while_waiting)),
        ram_(ram) {}

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
    // The runner saves a shared memfd's pages itself; private (copy-on-write)
    // RAM has this VM's own pages only in QEMU, so they go in the stream.
    if (ram_.memfd) MICROVM_TRY(skipSharedRam(!ram_.is_private));
    // QEMU throttles a migration to 32 MiB/s by default, which is meant for
    // a live migration over a network; this one goes to a local file while
    // the guest is stopped.
    auto unthrottled = qmp_->execute("migrate-set-parameters", {{"max-bandwidth", kUnthrottled}});
    if (!unthrottled) return std::move(unthrottled).error();
    auto started = qmp_->execute("migrate", {{"uri", "fd:snapshot"}});
    if (!started) return std::move(started).error();
    return waitFor("query-migrate", qmpMigrationOutcome);
  }

  Result<void> connectControl() override { return connectQmp(); }

  Result<void> finishRestore(const std::function<Result<void>()>& loaded) override {
    if (ram_.memfd) {
      // Started with -incoming defer: the capability must be set before the
      // state comes in, as it was when it went out.
      MICROVM_TRY(skipSharedRam(!ram_.incoming_has_ram));
      auto started = qmp_->execute("migrate-incoming", {{"uri", "fd:" + std::to_string(kQemuIncomingFd)}});
      if (!started) return std::move(started).error();
    }
    MICROVM_TRY(waitFor("query-status", qmpRestoreOutcome));
    if (loaded) MICROVM_TRY(loaded());
    return run("cont");
  }

 private:
  // Whether guest RAM in a shared file (which the runner saves itself)
  // stays out of the migration stream. Both ends must agree.
  Result<void> skipSharedRam(bool skip) {
    MICROVM_TRY(connectQmp());
    auto set = qmp_->execute("migrate-set-capabilities",
                             {{"capabilities", nlohmann::json::array({{{"capability", "x-ignore-shared"}, {"state", skip}}})}});
    if (!set) return std::move(set).error();
    return success();
  }

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
  RamSaving ram_;
  std::optional<QmpClient> qmp_;
};

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

// Opens what `entry` names, for QEMU; errors say what failed on which path.
Result<UniqueFd> openForQemu(const QemuFd& entry, bool other_user) {
  using Source = QemuFd::Source;
  const auto& path = entry.path;
  switch (entry.source) {
    case Source::kInherited: break;
    case Source::kReadOnlyFile: {
      auto file = openForReading(path, other_user);
      if (!file) return std::move(file).error().withContext(entry.what);
      return file;
    }
    case Source::kLogFile: {
      // O_NOFOLLOW: the directory may be writable by the VM's runner id.
      UniqueFd log(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
      if (!log.valid()) return Error::fromErrno("open " + path.string());
      return log;
    }
    case Source::kDisk:
    case Source::kReadOnlyDisk: {
      UniqueFd disk(::open(path.c_str(), (entry.source == Source::kDisk ? O_RDWR : O_RDONLY) | O_CLOEXEC));
      if (!disk.valid()) return Error::fromErrno("open " + path.string());
      return disk;
    }
    case Source::kDirectory: {
      UniqueFd dir(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!dir.valid()) return Error::fromErrno(entry.what);
      return dir;
    }
    case Source::kUnixConnect: {
      auto connected = connectUnix(path);
      if (!connected) return std::move(connected).error().withContext(entry.what);
      return connected;
    }
    case Source::kUnixListen: {
      auto listening = listenUnix(path, 4);
      if (!listening) return std::move(listening).error().withContext(entry.what);
      return listening;
    }
  }
  return Error(ErrorCode::kInvalidArgument, entry.what + ": an inherited fd is not opened");
}

}  // namespace

std::vector<std::string> QemuBackend::commandLine(const MachineConfig& config) const {
  return buildQemuCommand(binary_, config, ::geteuid() == 0).argv;
}

Result<std::unique_ptr<Vmm>> QemuBackend::launch(const MachineConfig& config) {
  QemuCommand command = buildQemuCommand(binary_, config, ::geteuid() == 0);
  SpawnOptions options;
  options.argv = std::move(command.argv);
  options.credentials = config.credentials;
  bool other_user = config.credentials.has_value();
  // Everything QEMU inherits, opened here; our copies close after the spawn.
  std::vector<UniqueFd> opened;
  for (const auto& entry : command.fds) {
    if (entry.source == QemuFd::Source::kInherited) {
      options.fds.push_back({entry.target, entry.fd});
      continue;
    }
    auto fd = openForQemu(entry, other_user);
    if (!fd) return std::move(fd).error();
    options.fds.push_back({entry.target, fd->get()});
    opened.push_back(std::move(*fd));
  }
  // The VMM must never outlive the runner that owns it.
  options.die_with_parent = true;
  auto process = spawn(options);
  if (!process) return std::move(process).error().withContext("start QEMU");
  return std::unique_ptr<Vmm>(std::make_unique<QemuVmm>(std::move(*process), config.qmp_socket, config.while_waiting,
                                                           RamSaving{.memfd = config.memory_fd >= 0,
                                                                     .is_private = config.memory_private,
                                                                     .incoming_has_ram = config.incoming_has_ram}));
}

}  // namespace microvm
