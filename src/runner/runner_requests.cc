#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

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
            MICROVM_TRY(vmm_->resume());
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
          [this](const PortAddRequest& add) -> Result<void> {
            if (!network_) return Error(ErrorCode::kInvalidArgument, "the VM has no network (--network none)");
            auto mapping = network_->addPort(add.mapping);
            if (!mapping) return std::move(mapping).error();
            state_.ports = network_->ports();
            setStatus(state_.status);
            return success();
          },
          [this](const PortRemoveRequest& remove) -> Result<void> {
            if (!network_) return Error(ErrorCode::kInvalidArgument, "the VM has no network (--network none)");
            MICROVM_TRY(network_->removePort(remove.mapping));
            state_.ports = network_->ports();
            setStatus(state_.status);
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

Result<void> Runner::snapshot(const fs::path& dir) {
  bool was_running = state_.status == VmStatus::kRunning;
  // Run as root, the runner's id cannot reach the snapshot directory: its
  // keeper creates the files there.
  UniqueFd memory;
  UniqueFd disk;
  if (keeper_) {
    auto files = keeper_->snapshotFiles(dir);
    if (!files) return std::move(files).error();
    memory = std::move(files->first);
    disk = std::move(files->second);
  } else {
    memory.reset(::open(SnapshotPaths::memory(dir).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!memory.valid()) return Error::fromErrno("create " + SnapshotPaths::memory(dir).string());
  }
  log("snapshot: saving to " + dir.string());
  auto saved = vmm_->saveState(memory.get());
  // The disk is consistent once the state is saved (QEMU flushed it); copy
  // it before the guest runs again.
  std::error_code ec;
  Result<void> copied = success();
  if (saved && disk.valid()) {
    copied = copyDisk(disk.get());
  } else if (saved) {
    fs::copy_file(spec_.root_disk, SnapshotPaths::disk(dir), ec);
  }
  if (was_running) {
    if (auto resumed = vmm_->resume(); !resumed) log("snapshot: resume failed: " + resumed.error().message());
  } else {
    setStatus(VmStatus::kPaused);
  }
  if (!saved) return saved;
  if (!copied) return copied;
  if (ec) return Error(ErrorCode::kIo, "copy disk to " + dir.string() + ": " + ec.message(), ec.value());
  log("snapshot: done");
  return success();
}

// The first step of a suspend: memory and devices into the VM directory's
// saving dir; the guest stays paused until the commit (or an unpause).
Result<void> Runner::suspend() {
  if (spec_.remove_on_exit) {
    return Error(ErrorCode::kInvalidArgument, "the VM was started with --rm: it would be removed, not suspended");
  }
  bool was_running = state_.status == VmStatus::kRunning;
  fs::path dir = VmPaths(vm_dir_).saving();
  fs::path file = dir / VmPaths(vm_dir_).savedMemory().filename();
  // Run as root, the runner's id cannot write in the directory the CLI
  // made: its keeper creates the file there.
  UniqueFd memory;
  if (keeper_) {
    auto created = keeper_->savedStateFile();
    if (!created) return std::move(created).error();
    memory = std::move(*created);
  } else {
    memory.reset(::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!memory.valid()) return Error::fromErrno("create " + file.string());
  }
  log("suspend: saving to " + file.string());
  auto saved = vmm_->saveState(memory.get());
  // Whole on disk before the caller marks the VM suspended.
  if (saved && ::fsync(memory.get()) != 0) saved = Error::fromErrno("fsync " + file.string());
  if (!saved) {
    if (was_running) {
      if (auto resumed = vmm_->resume(); !resumed) log("suspend: resume failed: " + resumed.error().message());
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
