#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <string>

#include "base/eintr.h"
#include "guest/agent_operations.h"
#include "guest/support.h"

namespace microvm::guest {
namespace {

// Directory entries are sent in batches of about this size.
constexpr size_t kEntriesBatch = size_t{256} * 1024;

agent::FileType fileType(mode_t mode) {
  if (S_ISREG(mode)) return agent::FileType::kRegular;
  if (S_ISDIR(mode)) return agent::FileType::kDirectory;
  if (S_ISLNK(mode)) return agent::FileType::kSymlink;
  return agent::FileType::kOther;
}

agent::FileInfo fileInfo(const struct stat& st) {
  agent::FileInfo info;
  info.type = fileType(st.st_mode);
  info.mode = st.st_mode & 07777;
  info.size = static_cast<uint64_t>(st.st_size);
  info.mtime = st.st_mtim.tv_sec;
  info.uid = st.st_uid;
  info.gid = st.st_gid;
  return info;
}

std::string readLink(int dir_fd, const std::string& path) {
  std::string target(4096, '\0');
  ssize_t length = ::readlinkat(dir_fd, path.c_str(), target.data(), target.size());
  if (length < 0) return {};
  target.resize(static_cast<size_t>(length));
  return target;
}

bool validPath(std::string_view path) {
  return !path.empty() && path.front() == '/' && path.find('\0') == std::string_view::npos;
}

agent::AgentResult invalidPath(const agent::AgentRequest& request) {
  agent::AgentResult result = failure(request.id, "path \"" + request.path + "\" is not absolute", EINVAL);
  result.status = agent::AgentStatus::kBadRequest;
  return result;
}

Result<void> makeOneDirectory(const std::string& path, mode_t mode, bool exist_ok) {
  if (::mkdir(path.c_str(), mode) == 0) return {};
  int saved = errno;
  struct stat st {};
  if (saved == EEXIST && exist_ok && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return {};
  errno = saved;
  return Error::fromErrno("mkdir " + path, saved);
}

std::string temporaryName(const std::string& path) {
  static unsigned counter = 0;
  size_t slash = path.rfind('/');
  return path.substr(0, slash + 1) + ".microvm-put-" + std::to_string(::getpid()) + "-" + std::to_string(++counter) +
         "-" + path.substr(slash + 1, 32);
}

// Copies `source` over the regular file `target`, truncating it first; the
// target keeps its own mode and owner. False (errno set) if that could not
// be done.
bool rewriteInPlace(const std::string& source, const std::string& target) {
  UniqueFd in(retryOnEintr([&] { return ::open(source.c_str(), O_RDONLY | O_CLOEXEC); }));
  if (!in.valid()) return false;
  UniqueFd out(retryOnEintr([&] { return ::open(target.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW); }));
  return out.valid() && copyToEnd(in.get(), out.get()) == CopyResult::kDone;
}

}  // namespace

void handleStat(FramedConnection& connection, const agent::AgentRequest& request) {
  if (!validPath(request.path)) return (void)sendResult(connection, invalidPath(request));
  struct stat st {};
  if (::lstat(request.path.c_str(), &st) != 0) {
    return (void)sendResult(connection, systemFailure(request.id, "stat " + request.path));
  }
  agent::AgentResult result;
  result.id = request.id;
  result.info = fileInfo(st);
  if (S_ISLNK(st.st_mode)) result.info->link_target = readLink(AT_FDCWD, request.path);
  sendResult(connection, result);
}

void handleList(FramedConnection& connection, const agent::AgentRequest& request) {
  if (!validPath(request.path)) return (void)sendResult(connection, invalidPath(request));
  UniqueFd dir_fd(retryOnEintr([&] { return ::open(request.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
  if (!dir_fd.valid()) return (void)sendResult(connection, systemFailure(request.id, "open " + request.path));
  int scan_fd = ::dup(dir_fd.get());
  DIR* dir = scan_fd >= 0 ? ::fdopendir(scan_fd) : nullptr;
  if (dir == nullptr) {
    if (scan_fd >= 0) ::close(scan_fd);
    return (void)sendResult(connection, systemFailure(request.id, "opendir " + request.path));
  }
  struct CloseDir {
    void operator()(DIR* d) const { ::closedir(d); }
  };
  std::unique_ptr<DIR, CloseDir> owner(dir);
  std::string batch;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    // An entry that vanished in between is simply not listed.
    if (::fstatat(dir_fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    agent::FileInfo info = fileInfo(st);
    info.name = name;
    if (S_ISLNK(st.st_mode)) info.link_target = readLink(dir_fd.get(), name);
    agent::appendField(batch, agent::AgentTag::kEntry, agent::encodeFileInfo(info));
    if (batch.size() >= kEntriesBatch) {
      if (!connection.send(agent::FrameType::kEntries, batch)) return;
      batch.clear();
    }
  }
  if (!batch.empty() && !connection.send(agent::FrameType::kEntries, batch)) return;
  agent::AgentResult result;
  result.id = request.id;
  sendResult(connection, result);
}

void handleMkdir(FramedConnection& connection, const agent::AgentRequest& request) {
  if (!validPath(request.path)) return (void)sendResult(connection, invalidPath(request));
  mode_t mode = request.mode.value_or(0755) & 07777;
  if (request.parents) {
    for (size_t slash = request.path.find('/', 1); slash != std::string::npos;
         slash = request.path.find('/', slash + 1)) {
      if (auto made = makeOneDirectory(request.path.substr(0, slash), 0755, true); !made.ok()) {
        return (void)sendResult(connection, failure(request.id, made.error().message(), made.error().sysErrno()));
      }
    }
  }
  if (auto made = makeOneDirectory(request.path, mode, request.parents); !made.ok()) {
    return (void)sendResult(connection, failure(request.id, made.error().message(), made.error().sysErrno()));
  }
  // mkdir(2) applies the umask; the caller asked for exactly this mode.
  if (request.mode && ::chmod(request.path.c_str(), mode) != 0) {
    return (void)sendResult(connection, systemFailure(request.id, "chmod " + request.path));
  }
  if ((request.uid || request.gid) &&
      ::lchown(request.path.c_str(), request.uid ? *request.uid : static_cast<uid_t>(-1),
               request.gid ? *request.gid : static_cast<gid_t>(-1)) != 0) {
    return (void)sendResult(connection, systemFailure(request.id, "chown " + request.path));
  }
  agent::AgentResult result;
  result.id = request.id;
  sendResult(connection, result);
}

// Writes the data to a temporary file beside the target and renames it over
// the target, so that a reader sees the old file or the whole new one. The
// data is read to its end even after a failure, so that the answer comes
// after what the client sent, where it looks for it.
void handlePutFile(FramedConnection& connection, const agent::AgentRequest& request) {
  std::optional<agent::AgentResult> failed;
  if (!validPath(request.path) || request.path == "/") failed = invalidPath(request);
  std::string temporary = failed ? "" : temporaryName(request.path);
  UniqueFd file;
  if (!failed && request.link_target.empty()) {
    file.reset(retryOnEintr(
        [&] { return ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600); }));
    if (!file.valid()) failed = systemFailure(request.id, "create " + temporary);
  }
  bool created = file.valid();
  if (!request.link_target.empty()) {
    if (!failed && ::symlink(request.link_target.c_str(), temporary.c_str()) != 0) {
      failed = systemFailure(request.id, "symlink " + request.path);
    }
    created = !failed;
  } else {
    for (;;) {
      auto frame = connection.receive(kTransferIdleTimeout);
      if (!frame) {
        if (created) ::unlink(temporary.c_str());
        return;  // The client is gone: nobody to answer.
      }
      if (frame->type != agent::FrameType::kData) continue;
      if (frame->payload.empty()) break;
      if (failed) continue;
      std::string_view data = frame->payload;
      while (!data.empty()) {
        ssize_t written = retryOnEintr([&] { return ::write(file.get(), data.data(), data.size()); });
        if (written <= 0) {
          failed = systemFailure(request.id, "write " + request.path);
          break;
        }
        data.remove_prefix(static_cast<size_t>(written));
      }
    }
  }
  bool is_link = !request.link_target.empty();
  if (!failed && !is_link && ::fchmod(file.get(), request.mode.value_or(0644) & 07777) != 0) {
    failed = systemFailure(request.id, "chmod " + request.path);
  }
  if (!failed && (request.uid || request.gid) &&
      ::lchown(temporary.c_str(), request.uid ? *request.uid : static_cast<uid_t>(-1),
               request.gid ? *request.gid : static_cast<gid_t>(-1)) != 0) {
    failed = systemFailure(request.id, "chown " + request.path);
  }
  if (!failed && request.mtime) {
    timespec times[2] = {{0, UTIME_OMIT}, {static_cast<time_t>(*request.mtime), 0}};
    if (::utimensat(AT_FDCWD, temporary.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      failed = systemFailure(request.id, "set mtime of " + request.path);
    }
  }
  if (!failed && file.valid() && ::close(file.release()) != 0) failed = systemFailure(request.id, "close " + temporary);
  if (!failed && ::rename(temporary.c_str(), request.path.c_str()) != 0) {
    // A file mounted over (/etc/hosts, /etc/resolv.conf) cannot be replaced,
    // only rewritten in place.
    if (errno != EBUSY || is_link || !rewriteInPlace(temporary, request.path)) {
      failed = systemFailure(request.id, "rename onto " + request.path);
    } else {
      ::unlink(temporary.c_str());
    }
  }
  if (failed) {
    if (created) ::unlink(temporary.c_str());
    sendResult(connection, *failed);
    return;
  }
  agent::AgentResult result;
  result.id = request.id;
  sendResult(connection, result);
}

void handleGetFile(FramedConnection& connection, const agent::AgentRequest& request) {
  if (!validPath(request.path)) return (void)sendResult(connection, invalidPath(request));
  UniqueFd file(retryOnEintr([&] { return ::open(request.path.c_str(), O_RDONLY | O_CLOEXEC); }));
  if (!file.valid()) return (void)sendResult(connection, systemFailure(request.id, "open " + request.path));
  struct stat st {};
  if (::fstat(file.get(), &st) != 0)
    return (void)sendResult(connection, systemFailure(request.id, "stat " + request.path));
  if (!S_ISREG(st.st_mode)) {
    return (void)sendResult(
        connection, failure(request.id, request.path + ": not a regular file", S_ISDIR(st.st_mode) ? EISDIR : EINVAL));
  }
  agent::AgentResult header;
  header.id = request.id;
  header.info = fileInfo(st);
  if (!sendResult(connection, header)) return;
  // The size just declared is all the host takes: a file that grows while it
  // is read (a log) is cut there, as tar cuts it at its header's size.
  uint64_t left = header.info->size;
  std::string buffer(kChunk, '\0');
  for (;;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(left, buffer.size()));
    ssize_t got = want == 0 ? 0 : retryOnEintr([&] { return ::read(file.get(), buffer.data(), want); });
    if (got < 0) return (void)sendResult(connection, systemFailure(request.id, "read " + request.path));
    left -= static_cast<uint64_t>(got);
    if (!connection.send(agent::FrameType::kData, std::string_view(buffer.data(), static_cast<size_t>(got)))) return;
    if (got == 0) return;  // The empty chunk just sent ends the file.
  }
}

}  // namespace microvm::guest
