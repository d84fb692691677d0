#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <variant>

#include "base/paths.h"
#include "base/fs.h"
#include "base/overloaded.h"
#include "runner/runner_internal.h"

namespace microvm {

namespace fs = std::filesystem;

void Runner::acceptRequest() {
  UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!client.valid()) return;
  // One short line per connection; a client that dawdles is dropped rather
  // than allowed to stall the loop that also carries the guest's output.
  timeval limit{1, 0};
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  std::string line;
  char chunk[1024];
  while (line.find('\n') == std::string::npos && line.size() < 65536) {
    ssize_t got = ::read(client.get(), chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return;
    line.append(chunk, static_cast<size_t>(got));
  }
  auto request = decodeRequest(line.substr(0, line.find('\n')));
  if (request && std::holds_alternative<AttachRequest>(*request) && !exit_code_ && !vmm_status_) {
    attach(std::move(client), std::get<AttachRequest>(*request));
    return;
  }
  Result<void> outcome = request ? handleRequest(*request) : Result<void>(request.error());
  if (!outcome) log("request refused: " + outcome.error().message());
  std::string reply = encodeReply(outcome);
  ::send(client.get(), reply.data(), reply.size(), MSG_NOSIGNAL);
}

// Every request is handled here, one handler per alternative and no
// default: a new kind of request does not compile until it has its own.
Result<void> Runner::handleRequest(const RunnerRequest& request) {
  auto noPortForwards = [this]() -> Result<void> {
    if (pod_network_) {
      return Error(ErrorCode::kInvalidArgument, "the VM owns its namespace's address (--network " + spec_.network +
                                                    "): reach it there, nothing is forwarded");
    }
    return Error(ErrorCode::kInvalidArgument, "the VM has no network (--network none)");
  };
  if (exit_code_ || vmm_status_) return Error(ErrorCode::kInvalidArgument, "the VM is exiting");
  return std::visit(
      Overloaded{
          [this](const StopRequest& stop) -> Result<void> {
            requestStop(stop.timeout_seconds);
            return success();
          },
          [this](const KillRequest& kill) -> Result<void> {
            if (state_.status == VmStatus::kPaused) {
              return Error(ErrorCode::kInvalidArgument, "the VM is paused; unpause it before killing its workload");
            }
            log("forwarding signal " + std::to_string(kill.signal) + " to the workload");
            sendFrame(agent::FrameType::kSignal, agent::encodeU32(static_cast<uint32_t>(kill.signal)));
            return success();
          },
          [this](const PauseRequest&) -> Result<void> {
            if (state_.status == VmStatus::kPaused) return Error(ErrorCode::kInvalidArgument, "the VM is already paused");
            MICROVM_TRY(vmm_->pause());
            setStatus(VmStatus::kPaused);
            log("paused");
            return success();
          },
          [this](const ResumeRequest&) -> Result<void> {
            if (state_.status != VmStatus::kPaused) return Error(ErrorCode::kInvalidArgument, "the VM is not paused");
            MICROVM_TRY(resumeGuest());
            suspend_saved_ = false;  // a held suspend that was not committed carries on
            setStatus(VmStatus::kRunning);
            log("resumed");
            return success();
          },
          [this](const SnapshotRequest& snapshot_request) -> Result<void> { return snapshot(snapshot_request.dir); },
          [this](const SuspendRequest&) -> Result<void> { return suspend(); },
          [this](const SuspendCommitRequest&) -> Result<void> { return commitSuspend(); },
          [](const AttachRequest&) -> Result<void> {
            // Attaching keeps the connection, so acceptRequest takes it before here.
            return Error(ErrorCode::kInvalidArgument, "attach needs its own connection");
          },
          [this, &noPortForwards](const PortAddRequest& add) -> Result<void> {
            if (!network_) return noPortForwards();
            auto mapping = network_->addPort(add.mapping);
            if (!mapping) return std::move(mapping).error();
            state_.ports = network_->ports();
            setStatus(state_.status);
            return success();
          },
          [this, &noPortForwards](const PortRemoveRequest& remove) -> Result<void> {
            if (!network_) return noPortForwards();
            MICROVM_TRY(network_->removePort(remove.mapping));
            state_.ports = network_->ports();
            setStatus(state_.status);
            return success();
          },
          [this](const ResizeRequest& resize) -> Result<void> {
            if (!spec_.tty) return Error(ErrorCode::kInvalidArgument, "the VM has no tty (it was not made with -t)");
            resizeTty({resize.rows, resize.cols});
            return success();
          },
          [this](const TimingRequest& timing) -> Result<void> {
            state_.timings_ms[timing.name] = timing.ms;
            setStatus(state_.status);
            return success();
          },
      },
      request);
}

// Copies the VM's disk, through the fd opened while root, to `to`.
Result<void> Runner::copyDisk(int to) {
  off_t offset = 0;
  for (;;) {
    char buffer[1 << 16];
    ssize_t got = ::pread(disk_read_.get(), buffer, sizeof buffer, offset);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return Error::fromErrno("read " + spec_.root_disk);
    if (got == 0) break;
    MICROVM_TRY(writeAll(to, std::string_view(buffer, static_cast<size_t>(got))));
    offset += got;
  }
  if (::fsync(to) != 0) return Error::fromErrno("fsync the snapshot's disk");
  return success();
}

// The user network's own state (IP id counter, DHCP leases), into `fd`
// (net/slirp_state.h); nothing when there is no such file or stack.
Result<void> Runner::saveNetworkState(int fd) {
  if (fd < 0 || !network_) return success();
  MICROVM_TRY(writeAll(fd, network_->saveState()));
  if (::fsync(fd) != 0) return Error::fromErrno("fsync the saved network state");
  return success();
}

// QEMU saves the devices (RAM is shared: x-ignore-shared) and leaves the
// guest stopped; the RAM is then consistent and copied, sparse, by us. Both
// files are on disk (fsync) when this returns. A VM on a template's shared
// memory has its own pages only in QEMU: they are in the stream, and the
// RAM file stays empty.
Result<void> Runner::saveMachine(const SnapshotFiles& files) {
  MICROVM_TRY(vmm_->saveState(files.memory.get()));
  if (::fsync(files.memory.get()) != 0) return Error::fromErrno("fsync the saved device state");
  MICROVM_TRY(saveNetworkState(files.network.get()));
  if (!guest_ram_.valid()) {
    log("saved guest memory with the device state (it is not in the runner's memfd)");
    return success();
  }
  uint64_t size = uint64_t{static_cast<uint64_t>(spec_.memory_mib)} << 20;
  auto ram = copySparse(guest_ram_.get(), files.ram.get(), size);
  if (!ram) return std::move(ram).error().withContext("save guest memory");
  if (::fsync(files.ram.get()) != 0) return Error::fromErrno("fsync the saved guest memory");
  log("saved " + std::to_string(*ram >> 20) + " MiB of guest memory in use");
  return success();
}

// A file of saved state, created write-only in a directory that must not
// have it yet (O_EXCL: nothing, not even a symlink, may be there).
static Result<void> createSavedFile(const fs::path& path, UniqueFd& fd) {
  fd.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error::fromErrno("create " + path.string());
  return success();
}

// Opened before QEMU runs and before the runner gives up root, in the
// staging directory the caller made (core/templates.cc); O_EXCL and
// O_NOFOLLOW, as nothing may be there yet.
Result<void> Runner::openTemplateCapture() {
  fs::path dir = spec_.template_capture;
  SnapshotFiles files;
  MICROVM_TRY(createSavedFile(TemplatePaths::memory(dir), files.memory));
  MICROVM_TRY(createSavedFile(TemplatePaths::ram(dir), files.ram));
  MICROVM_TRY(createSavedFile(TemplatePaths::saved(dir), files.disk));
  template_capture_ = std::move(files);
  return success();
}

// The guest has booted and init waits for its spec: nothing of this VM is
// in it yet, and its disk is not mounted. Saved, it is every later VM's
// start; a failure here only costs the template, not this VM's boot.
void Runner::captureTemplate() {
  SnapshotFiles files = std::move(*template_capture_);
  template_capture_.reset();
  auto started = std::chrono::steady_clock::now();
  auto saved = saveMachine(files);
  if (auto resumed = resumeGuest(); !resumed) log("template: resume failed: " + resumed.error().message());
  if (saved) saved = writeAll(files.disk.get(), "saved\n");
  if (!saved) {
    log("template: not saved: " + saved.error().message());
    return;
  }
  log("template: saved to " + spec_.template_capture + " in " +
      std::to_string(
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count()) +
      " ms");
}

// No save before the workload starts (workloadStarted); core waits first.
static Result<void> checkWorkloadStarted(const VmState& state) {
  if (workloadStarted(state)) return success();
  return Error(ErrorCode::kInvalidArgument, "the VM is still starting: its workload has not started yet");
}

Result<void> Runner::snapshot(const fs::path& dir) {
  MICROVM_TRY(checkWorkloadStarted(state_));
  bool was_running = state_.status == VmStatus::kRunning;
  // Run as root, the runner's id cannot reach the snapshot directory: its
  // keeper creates the files there.
  SnapshotFiles files;
  if (keeper_) {
    auto created = keeper_->snapshotFiles(dir);
    if (!created) return std::move(created).error();
    files = std::move(*created);
  } else {
    MICROVM_TRY(createSavedFile(SnapshotPaths::memory(dir), files.memory));
    MICROVM_TRY(createSavedFile(SnapshotPaths::ram(dir), files.ram));
    MICROVM_TRY(createSavedFile(SnapshotPaths::network(dir), files.network));
  }
  log("snapshot: saving to " + dir.string());
  auto started = std::chrono::steady_clock::now();
  // The disk is consistent too once the machine is saved: it is copied
  // before the guest runs again.
  auto saved = saveMachine(files);
  Result<void> copied = success();
  std::error_code ec;
  if (saved && files.disk.valid()) {
    copied = copyDisk(files.disk.get());
  } else if (saved) {
    fs::copy_file(spec_.root_disk, SnapshotPaths::disk(dir), ec);
  }
  if (was_running) {
    if (auto resumed = resumeGuest(); !resumed) log("snapshot: resume failed: " + resumed.error().message());
  } else {
    setStatus(VmStatus::kPaused);
  }
  if (!saved) return saved;
  if (!copied) return copied;
  if (ec) return Error(ErrorCode::kIo, "copy disk to " + dir.string() + ": " + ec.message(), ec.value());
  log("snapshot: done in " +
      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started)
                         .count()) +
      " ms");
  return success();
}

// The first step of a suspend: memory and devices into the VM directory's
// saving dir; the guest stays paused until the commit (or an unpause).
Result<void> Runner::suspend() {
  if (spec_.remove_on_exit) {
    return Error(ErrorCode::kInvalidArgument, "the VM was started with --rm: it would be removed, not suspended");
  }
  MICROVM_TRY(checkWorkloadStarted(state_));
  bool was_running = state_.status == VmStatus::kRunning;
  fs::path dir = VmPaths(vm_dir_).saving();
  fs::path file = dir / VmPaths(vm_dir_).savedMemory().filename();
  // Run as root, the runner's id cannot write in the directory the CLI
  // made: its keeper creates the files there.
  SnapshotFiles files;
  if (keeper_) {
    auto created = keeper_->savedStateFiles();
    if (!created) return std::move(created).error();
    files = std::move(*created);
  } else {
    files.memory.reset(::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!files.memory.valid()) return Error::fromErrno("create " + file.string());
    fs::path ram = dir / VmPaths(vm_dir_).savedRam().filename();
    files.ram.reset(::open(ram.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!files.ram.valid()) return Error::fromErrno("create " + ram.string());
    MICROVM_TRY(createSavedFile(dir / VmPaths(vm_dir_).savedNetwork().filename(), files.network));
  }
  log("suspend: saving to " + dir.string());
  auto saved = saveMachine(files);
  if (!saved) {
    if (was_running) {
      if (auto resumed = resumeGuest(); !resumed) log("suspend: resume failed: " + resumed.error().message());
    }
    log("suspend: " + saved.error().message());
    return saved;
  }
  suspend_saved_ = true;
  setStatus(VmStatus::kPaused);
  log("suspend: saved; held until the caller commits");
  return success();
}

// The second step: the caller has the saved state in place; QEMU goes and
// the runner follows (finish() records the VM as suspended).
Result<void> Runner::commitSuspend() {
  if (!suspend_saved_ || state_.status != VmStatus::kPaused) {
    return Error(ErrorCode::kInvalidArgument, "no suspend is in progress");
  }
  suspended_ = true;
  log("suspend: committed, ending QEMU");
  vmm_->process().kill(SIGKILL);
  return success();
}

}  // namespace microvm
