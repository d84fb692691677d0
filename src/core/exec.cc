// Runtime's operations on a running VM's guest agent: exec, cp, ping and the
// readiness probes. Each one looks the VM up, checks that it runs, and talks
// to the agent through the runner's hybrid-vsock socket.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "agent/client.h"
#include "base/paths.h"
#include "base/eintr.h"
#include "base/fs.h"
#include "base/unique_fd.h"
#include "core/copy_plan.h"
#include "core/guest_copy.h"
#include "core/runtime_impl.h"
#include "microvm/runtime.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

using agent::FileInfo;
using agent::FileType;

// The agent of the running VM `record` is (as Runtime::Impl::findVm found it).
Result<agent::AgentClient> agentOf(Result<VmRecord> record) {
  if (!record) return std::move(record).error();
  if (record->state.status == VmStatus::kSuspended) {
    return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is suspended: resume it first");
  }
  if (record->state.status == VmStatus::kPaused) {
    return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is paused: unpause it first");
  }
  if (record->state.status != VmStatus::kRunning) {
    return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is not running");
  }
  auto client = agent::AgentClient::viaVsock(VmSockets(record->spec.runtime_dir).vsock());
  client.setPeerName("VM " + record->spec.name);
  return client;
}

// Guest paths are absolute; Docker reads "VM:relative" from the root.
std::string guestPath(const std::string& path) { return !path.empty() && path[0] == '/' ? path : "/" + path; }

FileType hostFileType(mode_t mode) {
  if (S_ISREG(mode)) return FileType::kRegular;
  if (S_ISDIR(mode)) return FileType::kDirectory;
  if (S_ISLNK(mode)) return FileType::kSymlink;
  return FileType::kOther;
}

Result<std::optional<FileInfo>> hostStat(const std::string& path, bool follow) {
  struct stat st {};
  if ((follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) != 0) {
    if (errno == ENOENT) return std::optional<FileInfo>();
    return Error::fromErrno("stat " + path);
  }
  FileInfo info;
  info.type = hostFileType(st.st_mode);
  info.mode = st.st_mode & 07777;
  info.size = static_cast<uint64_t>(st.st_size);
  info.mtime = st.st_mtim.tv_sec;
  return std::optional<FileInfo>(info);
}

Result<std::optional<FileInfo>> guestStat(const agent::AgentClient& client, const std::string& path) {
  auto info = client.stat(path);
  if (!info) {
    if (info.error().code() == ErrorCode::kNotFound) return std::optional<FileInfo>();
    return std::move(info).error();
  }
  return std::optional<FileInfo>(std::move(*info));
}

// --- host -> guest.

Result<void> putTree(const agent::AgentClient& client, const std::string& source, const FileInfo& info,
                     const std::string& target) {
  switch (info.type) {
    case FileType::kRegular: {
      UniqueFd fd(retryOnEintr([&] { return ::open(source.c_str(), O_RDONLY | O_CLOEXEC); }));
      if (!fd.valid()) return Error::fromErrno("open " + source);
      agent::PutOptions options;
      options.mode = info.mode;
      options.mtime = info.mtime;
      return client.putFile(target, fd.get(), options);
    }
    case FileType::kSymlink: {
      std::error_code ec;
      fs::path link = fs::read_symlink(source, ec);
      if (ec) return Error(ErrorCode::kIo, "readlink " + source + ": " + ec.message());
      return client.putSymlink(target, link.string());
    }
    case FileType::kDirectory: {
      MICROVM_TRY(client.mkdir(target, info.mode | 0700, true));
      std::error_code ec;
      for (const auto& entry : fs::directory_iterator(source, ec)) {
        std::string child = entry.path().string();
        auto child_info = hostStat(child, false);
        if (!child_info) return std::move(child_info).error();
        if (!*child_info) continue;  // Gone in between.
        MICROVM_TRY(putTree(client, child, **child_info, joinPath(target, entry.path().filename().string())));
      }
      if (ec) return Error(ErrorCode::kIo, "list " + source + ": " + ec.message());
      // Owner-writable while it was filled; now the source's own mode.
      if ((info.mode | 0700) != info.mode) MICROVM_TRY(client.mkdir(target, info.mode, true));
      return success();
    }
    case FileType::kOther: break;
  }
  return Error(ErrorCode::kInvalidArgument, source + ": not a regular file, directory or symlink");
}

// --- guest -> host.
//
// Below the destination, every name comes from the guest. Each is created and
// opened relative to its directory's fd with O_NOFOLLOW, so that a symlink
// (written by this copy, an earlier one, or anyone else meanwhile) never
// redirects a write out of the destination.

// The agent opens absolute paths, which the guest kernel caps at PATH_MAX:
// a longer one is a guest whose directories would nest without end.
constexpr size_t kMaxGuestPath = 4095;

// The process's umask, read without changing it: umask(2) only sets it, and
// setting and restoring it would race with other threads creating files.
mode_t currentUmask() {
  if (auto status = readFile("/proc/self/status")) {
    size_t at = status->find("\nUmask:");
    if (at != std::string::npos) {
      unsigned long mask = std::strtoul(status->c_str() + at + 7, nullptr, 8);
      return static_cast<mode_t>(mask & 0777);
    }
  }
  mode_t mask = ::umask(022);
  ::umask(mask);
  return mask;
}

std::string temporaryName() {
  static std::mt19937 random{std::random_device{}()};
  return ".microvm-cp-" + std::to_string(random());
}

// Where one guest entry goes: `name` in the directory `dir_fd`, shown in
// messages as `shown`.
struct HostSlot {
  int dir_fd;
  std::string name;
  std::string shown;
};

// What the guest may still make one copy write on the host: file bytes, and
// kEntryCost for each entry (so that empty files cannot come without end).
struct CopyBudget {
  uint64_t limit;
  uint64_t left;
};

// An entry costs what its header costs in a tar stream.
constexpr uint64_t kEntryCost = 512;

Result<void> charge(CopyBudget& budget, uint64_t bytes, const std::string& shown) {
  if (bytes > budget.left) {
    return Error(ErrorCode::kIo,
                 "copy " + shown + ": the copy is larger than its limit of " + std::to_string(budget.limit) + " bytes",
                 EFBIG);
  }
  budget.left -= bytes;
  return success();
}

Result<void> writeHostFile(const agent::AgentClient& client, const std::string& source, const HostSlot& slot,
                           mode_t umask, CopyBudget& budget) {
  std::string temporary = temporaryName();
  UniqueFd fd(retryOnEintr([&] {
    return ::openat(slot.dir_fd, temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  }));
  if (!fd.valid()) return Error::fromErrno("create a temporary file for " + slot.shown);
  auto remove_temporary = [&] { ::unlinkat(slot.dir_fd, temporary.c_str(), 0); };
  auto info = client.getFile(source, fd.get(), budget.left);
  if (!info) {
    remove_temporary();
    return std::move(info).error();
  }
  budget.left -= info->size;  // getFile kept it within what was left
  timespec times[2] = {{0, UTIME_OMIT}, {static_cast<time_t>(info->mtime), 0}};
  if (::fchmod(fd.get(), hostModeFor(info->mode, umask)) != 0 || ::futimens(fd.get(), times) != 0 ||
      ::close(fd.release()) != 0 || ::renameat(slot.dir_fd, temporary.c_str(), slot.dir_fd, slot.name.c_str()) != 0) {
    auto error = Error::fromErrno("write " + slot.shown);
    remove_temporary();
    return error;
  }
  return success();
}

Result<void> getTree(const agent::AgentClient& client, const std::string& source, const FileInfo& info,
                     const HostSlot& slot, mode_t umask, CopyBudget& budget);

// Copies the entries of the guest directory `source` into the open host
// directory `dir_fd`.
Result<void> getEntries(const agent::AgentClient& client, const std::string& source, int dir_fd,
                        const std::string& shown, mode_t umask, CopyBudget& budget) {
  auto entries = client.list(source);
  if (!entries) return std::move(entries).error();
  for (const auto& entry : *entries) {
    // list() has checked that the name is one path component, and that no
    // name comes twice.
    std::string child = joinPath(source, entry.name);
    if (child.size() > kMaxGuestPath) {
      return Error(ErrorCode::kProtocol, "agent: guest path longer than " + std::to_string(kMaxGuestPath) +
                                             " bytes under " + source);
    }
    MICROVM_TRY(
        getTree(client, child, entry, HostSlot{dir_fd, entry.name, joinPath(shown, entry.name)}, umask, budget));
  }
  return success();
}

Result<void> getTree(const agent::AgentClient& client, const std::string& source, const FileInfo& info,
                     const HostSlot& slot, mode_t umask, CopyBudget& budget) {
  MICROVM_TRY(charge(budget, kEntryCost, slot.shown));
  switch (info.type) {
    case FileType::kRegular: return writeHostFile(client, source, slot, umask, budget);
    case FileType::kSymlink: {
      // The guest's link target is only text here; it is not followed, now
      // or later (nothing below is opened through a symlink).
      std::string temporary = temporaryName();
      if (::symlinkat(info.link_target.c_str(), slot.dir_fd, temporary.c_str()) != 0) {
        return Error::fromErrno("symlink " + slot.shown);
      }
      if (::renameat(slot.dir_fd, temporary.c_str(), slot.dir_fd, slot.name.c_str()) != 0) {
        auto error = Error::fromErrno("symlink " + slot.shown);
        ::unlinkat(slot.dir_fd, temporary.c_str(), 0);
        return error;
      }
      return success();
    }
    case FileType::kDirectory: {
      bool created = ::mkdirat(slot.dir_fd, slot.name.c_str(), 0700) == 0;
      if (!created && errno != EEXIST) return Error::fromErrno("mkdir " + slot.shown);
      UniqueFd dir(retryOnEintr([&] {
        return ::openat(slot.dir_fd, slot.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      }));
      if (!dir.valid() && (errno == ENOTDIR || errno == ELOOP)) {
        return Error(ErrorCode::kAlreadyExists, slot.shown + " exists and is not a directory");
      }
      if (!dir.valid()) return Error::fromErrno("open " + slot.shown);
      MICROVM_TRY(getEntries(client, source, dir.get(), slot.shown, umask, budget));
      // Owner-only while it was filled; an existing directory keeps its own.
      if (created && ::fchmod(dir.get(), hostModeFor(info.mode, umask)) != 0) {
        return Error::fromErrno("chmod " + slot.shown);
      }
      return success();
    }
    case FileType::kOther: break;
  }
  return Error(ErrorCode::kInvalidArgument, source + " in the guest: not a regular file, directory or symlink");
}

std::string withoutTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

}  // namespace

Result<int> Runtime::exec(const std::string& reference, const ExecOptions& options) {
  if (options.command.empty() || options.command[0].empty()) {
    return Error(ErrorCode::kInvalidArgument, "exec: no command given");
  }
  for (const auto& var : options.env) {
    if (var.find('=') == std::string::npos || var[0] == '=') {
      return Error(ErrorCode::kInvalidArgument, "environment entry \"" + var + "\" is not KEY=VALUE");
    }
  }
  auto client = agentOf(impl_->findVm(reference));
  if (!client) return std::move(client).error();
  agent::ExecCommand command;
  command.argv = options.command;
  command.env = options.env;
  command.workdir = options.workdir;
  command.user = options.user;
  command.tty = options.tty;
  agent::ExecStreams streams;
  streams.stdin_fd = options.stdin_fd;
  streams.stdout_fd = options.stdout_fd;
  streams.stderr_fd = options.stderr_fd;
  streams.signal_fd = options.signal_fd;
  streams.terminal_fd = options.terminal_fd;
  auto code = client->exec(command, streams);
  if (!code && code.error().code() == ErrorCode::kProtocol) {
    // The session was cut: say so if the VM was suspended, stopped or
    // restored under it, rather than only that the connection ended.
    if (auto now = impl_->findVm(reference); now && now->state.status != VmStatus::kRunning &&
                                             now->state.status != VmStatus::kPaused) {
      return Error(ErrorCode::kUnavailable, "exec in VM " + now->spec.name + " ended: the VM is " +
                                                std::string(toString(now->state.status)) + " (" +
                                                code.error().message() + ")");
    }
  }
  return code;
}

Result<void> Runtime::ping(const std::string& reference) {
  auto client = agentOf(impl_->findVm(reference));
  if (!client) return std::move(client).error();
  return client->ping();
}

Result<void> Runtime::copyTo(const std::string& reference, const std::string& host_source,
                             const std::string& guest_destination) {
  auto client = agentOf(impl_->findVm(reference));
  if (!client) return std::move(client).error();
  // A trailing "/" or "/." means the directory itself, not a link to it.
  bool follow = host_source.ends_with("/") || host_source.ends_with("/.");
  auto source = hostStat(host_source, follow);
  if (!source) return std::move(source).error();
  if (!*source) return Error(ErrorCode::kNotFound, host_source + ": no such file or directory");
  std::string destination = guestPath(guest_destination);
  auto existing = guestStat(*client, destination);
  if (!existing) return std::move(existing).error();
  std::optional<FileType> destination_type;
  if (*existing) destination_type = (*existing)->type;
  // A symlink to a directory is the directory for this purpose.
  if (destination_type == FileType::kSymlink && !destination.ends_with("/")) {
    auto through = client->stat(destination + "/.");
    if (through && through->type == FileType::kDirectory) destination_type = FileType::kDirectory;
  }
  auto target = planCopy(host_source, (*source)->type, destination, destination_type);
  if (!target) return std::move(target).error();
  return putTree(*client, host_source, **source, *target);
}

Result<void> Runtime::copyFrom(const std::string& reference, const std::string& guest_source,
                               const std::string& host_destination, uint64_t max_bytes) {
  auto client = agentOf(impl_->findVm(reference));
  if (!client) return std::move(client).error();
  return copyFromGuest(*client, guest_source, host_destination, max_bytes);
}

Result<void> copyFromGuest(const agent::AgentClient& client, const std::string& guest_source,
                           const std::string& host_destination, uint64_t max_bytes) {
  std::string source_path = guestPath(guest_source);
  auto source = guestStat(client, source_path);
  if (!source) return std::move(source).error();
  if (!*source) return Error(ErrorCode::kNotFound, source_path + " in the guest: no such file or directory");
  if ((*source)->type == FileType::kSymlink && (source_path.ends_with("/") || source_path.ends_with("/."))) {
    auto through = client.stat(source_path + (source_path.ends_with("/") ? "." : ""));
    if (through) (*source)->type = through->type;
  }
  auto existing = hostStat(host_destination, true);
  if (!existing) return std::move(existing).error();
  std::optional<FileType> destination_type;
  if (*existing) destination_type = (*existing)->type;
  auto target = planCopy(source_path, (*source)->type, host_destination, destination_type);
  if (!target) return std::move(target).error();
  mode_t umask = currentUmask();
  CopyBudget budget{max_bytes, max_bytes};
  // The destination the user named may be reached through symlinks of
  // theirs; only what lies below it is the guest's to name.
  if (destination_type == FileType::kDirectory && *target == withoutTrailingSlashes(host_destination)) {
    // "DIR/." into an existing directory: its entries, the directory as it is.
    UniqueFd dir(retryOnEintr([&] { return ::open(target->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
    if (!dir.valid()) return Error::fromErrno("open " + *target);
    return getEntries(client, source_path, dir.get(), *target, umask, budget);
  }
  fs::path target_path(*target);
  std::string name = target_path.filename().string();
  if (name.empty() || name == "." || name == "..") {
    return Error(ErrorCode::kInvalidArgument, *target + ": not a name to create");
  }
  std::string parent = target_path.parent_path().string();
  if (parent.empty()) parent = ".";
  UniqueFd parent_fd(retryOnEintr([&] { return ::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC); }));
  if (!parent_fd.valid()) return Error::fromErrno("open " + parent);
  return getTree(client, source_path, **source, HostSlot{parent_fd.get(), name, *target}, umask, budget);
}

Result<void> Runtime::probeTcp(const std::string& reference, int port, int timeout_ms) {
  if (port < 1 || port > 65535) return Error(ErrorCode::kInvalidArgument, "invalid port " + std::to_string(port));
  auto client = agentOf(impl_->findVm(reference));
  if (!client) return std::move(client).error();
  return client->probeTcp(static_cast<uint16_t>(port), std::chrono::milliseconds(timeout_ms));
}

Result<int> Runtime::probeHttp(const std::string& reference, int port, const std::string& path, int timeout_ms) {
  if (port < 1 || port > 65535) return Error(ErrorCode::kInvalidArgument, "invalid port " + std::to_string(port));
  auto client = agentOf(impl_->findVm(reference));
  if (!client) return std::move(client).error();
  return client->probeHttp(static_cast<uint16_t>(port), path, std::chrono::milliseconds(timeout_ms));
}

}  // namespace microvm
