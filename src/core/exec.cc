// Runtime's operations on a running VM's guest agent: exec, cp, ping and the
// readiness probes. Each one looks the VM up, checks that it runs, and talks
// to the agent through the runner's hybrid-vsock socket.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "agent/client.h"
#include "base/eintr.h"
#include "base/unique_fd.h"
#include "core/copy_plan.h"
#include "microvm/runtime.h"
#include "state/layout.h"
#include "state/vm_record.h"
#include "state/vm_store.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

using agent::FileInfo;
using agent::FileType;

Result<agent::AgentClient> agentOf(const fs::path& data_dir, const std::string& reference) {
  auto layout = Layout::resolve(data_dir);
  if (!layout) return std::move(layout).error();
  auto record = VmStore(*layout).find(reference);
  if (!record) return std::move(record).error();
  if (record->state.status == VmStatus::kPaused) {
    return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is paused: unpause it first");
  }
  if (record->state.status != VmStatus::kRunning) {
    return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is not running");
  }
  return agent::AgentClient::viaVsock(vsockSocket(record->spec));
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

Result<void> writeHostFile(const agent::AgentClient& client, const std::string& source, const std::string& target) {
  static std::mt19937 random{std::random_device{}()};
  std::string temporary = joinPath(fs::path(target).parent_path().string(), ".microvm-cp-" + std::to_string(random()));
  if (fs::path(target).parent_path().empty()) temporary = ".microvm-cp-" + std::to_string(random());
  UniqueFd fd(retryOnEintr(
      [&] { return ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600); }));
  if (!fd.valid()) return Error::fromErrno("create " + temporary);
  auto info = client.getFile(source, fd.get());
  auto remove_temporary = [&] { ::unlink(temporary.c_str()); };
  if (!info) {
    remove_temporary();
    return std::move(info).error();
  }
  timespec times[2] = {{0, UTIME_OMIT}, {static_cast<time_t>(info->mtime), 0}};
  if (::fchmod(fd.get(), info->mode) != 0 || ::futimens(fd.get(), times) != 0 || ::close(fd.release()) != 0 ||
      ::rename(temporary.c_str(), target.c_str()) != 0) {
    auto error = Error::fromErrno("write " + target);
    remove_temporary();
    return error;
  }
  return success();
}

Result<void> getTree(const agent::AgentClient& client, const std::string& source, const FileInfo& info,
                     const std::string& target) {
  switch (info.type) {
    case FileType::kRegular: return writeHostFile(client, source, target);
    case FileType::kSymlink: {
      // The guest's link target is only text here; it is not followed.
      std::string temporary = target + ".microvm-cp-link";
      ::unlink(temporary.c_str());
      if (::symlink(info.link_target.c_str(), temporary.c_str()) != 0 ||
          ::rename(temporary.c_str(), target.c_str()) != 0) {
        auto error = Error::fromErrno("symlink " + target);
        ::unlink(temporary.c_str());
        return error;
      }
      return success();
    }
    case FileType::kDirectory: {
      if (::mkdir(target.c_str(), 0700) != 0 && errno != EEXIST) return Error::fromErrno("mkdir " + target);
      auto existing = hostStat(target, false);
      if (!existing) return std::move(existing).error();
      if (!*existing || (*existing)->type != FileType::kDirectory) {
        return Error(ErrorCode::kAlreadyExists, target + " exists and is not a directory");
      }
      ::chmod(target.c_str(), 0700 | info.mode);
      auto entries = client.list(source);
      if (!entries) return std::move(entries).error();
      for (const auto& entry : *entries) {
        // list() has checked that the name is one path component.
        MICROVM_TRY(getTree(client, joinPath(source, entry.name), entry, joinPath(target, entry.name)));
      }
      if (::chmod(target.c_str(), info.mode) != 0) return Error::fromErrno("chmod " + target);
      return success();
    }
    case FileType::kOther: break;
  }
  return Error(ErrorCode::kInvalidArgument, source + " in the guest: not a regular file, directory or symlink");
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
  auto client = agentOf(data_dir_, reference);
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
  return client->exec(command, streams);
}

Result<void> Runtime::ping(const std::string& reference) {
  auto client = agentOf(data_dir_, reference);
  if (!client) return std::move(client).error();
  return client->ping();
}

Result<void> Runtime::copyTo(const std::string& reference, const std::string& host_source,
                             const std::string& guest_destination) {
  auto client = agentOf(data_dir_, reference);
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
                               const std::string& host_destination) {
  auto client = agentOf(data_dir_, reference);
  if (!client) return std::move(client).error();
  std::string source_path = guestPath(guest_source);
  auto source = guestStat(*client, source_path);
  if (!source) return std::move(source).error();
  if (!*source) return Error(ErrorCode::kNotFound, source_path + " in the guest: no such file or directory");
  if ((*source)->type == FileType::kSymlink && (source_path.ends_with("/") || source_path.ends_with("/."))) {
    auto through = client->stat(source_path + (source_path.ends_with("/") ? "." : ""));
    if (through) (*source)->type = through->type;
  }
  auto existing = hostStat(host_destination, true);
  if (!existing) return std::move(existing).error();
  std::optional<FileType> destination_type;
  if (*existing) destination_type = (*existing)->type;
  auto target = planCopy(source_path, (*source)->type, host_destination, destination_type);
  if (!target) return std::move(target).error();
  return getTree(*client, source_path, **source, *target);
}

Result<void> Runtime::probeTcp(const std::string& reference, int port, int timeout_ms) {
  if (port < 1 || port > 65535) return Error(ErrorCode::kInvalidArgument, "invalid port " + std::to_string(port));
  auto client = agentOf(data_dir_, reference);
  if (!client) return std::move(client).error();
  return client->probeTcp(static_cast<uint16_t>(port), std::chrono::milliseconds(timeout_ms));
}

Result<int> Runtime::probeHttp(const std::string& reference, int port, const std::string& path, int timeout_ms) {
  if (port < 1 || port > 65535) return Error(ErrorCode::kInvalidArgument, "invalid port " + std::to_string(port));
  auto client = agentOf(data_dir_, reference);
  if (!client) return std::move(client).error();
  return client->probeHttp(static_cast<uint16_t>(port), path, std::chrono::milliseconds(timeout_ms));
}

}  // namespace microvm
