#include "guest/agent.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "guest/spawn.h"

namespace microvm::guest {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A client gets this long to send its hello and request, and, once a file
// transfer has started, to send each following frame.
constexpr milliseconds kRequestTimeout{10'000};
constexpr milliseconds kTransferIdleTimeout{60'000};
constexpr milliseconds kDefaultProbeTimeout{1'000};
// After an exec'd process exits, its output pipes are read until they close,
// or until they stay quiet this long (a background child may hold them).
constexpr milliseconds kExecDrainIdle{250};

constexpr size_t kChunk = size_t{64} * 1024;
static_assert(kChunk <= agent::kMaxPayload);
// Backpressure bounds: the agent stops reading a command's output while this
// much waits for the socket, and stops reading the socket while this much
// stdin waits for the command.
constexpr size_t kMaxPendingOutput = size_t{256} * 1024;
constexpr size_t kMaxPendingInput = size_t{1} << 20;
constexpr size_t kEntriesBatch = size_t{256} * 1024;
// The most one read round takes from a connection before its frames are handled.
constexpr size_t kMaxReadRound = 4 * kChunk;

constexpr int kExitCannotRun = 126;

void log(std::string_view message) {
  std::string line = "microvm-agent: ";
  line += message;
  line += '\n';
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

int millisecondsUntil(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1'000'000));
}

Status setNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return Error{"fcntl O_NONBLOCK: " + describeErrno(errno)};
  }
  return Ok{};
}

agent::AgentResult failure(uint32_t id, std::string message, int error_number = 0) {
  agent::AgentResult result;
  result.id = id;
  result.status = agent::AgentStatus::kFailed;
  result.error_number = static_cast<uint32_t>(error_number);
  result.message = std::move(message);
  return result;
}

agent::AgentResult systemFailure(uint32_t id, std::string_view what) {
  int saved = errno;
  return failure(id, std::string(what) + ": " + describeErrno(saved), saved);
}

// ---------------------------------------------------------------------------
// One connection: frames in and out over a non-blocking socket.

class Connection {
 public:
  explicit Connection(UniqueFd fd) : fd_(std::move(fd)) {}

  int fd() const { return fd_.get(); }
  bool broken() const { return broken_; }
  bool corrupt() const { return reader_.failed(); }

  // Queues a frame; flush() or the exec loop writes it.
  void queue(agent::FrameType type, std::string_view payload) { agent::appendFrame(out_, type, payload); }
  size_t pending() const { return out_.size() - out_offset_; }

  // Writes what it can without blocking. False once the peer is gone.
  bool writeSome() {
    while (pending() > 0 && !broken_) {
      ssize_t sent = retryOnEintr(
          [&] { return ::send(fd_.get(), out_.data() + out_offset_, pending(), MSG_NOSIGNAL | MSG_DONTWAIT); });
      if (sent > 0) {
        out_offset_ += static_cast<size_t>(sent);
      } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else {
        broken_ = true;
      }
    }
    if (out_offset_ == out_.size()) {
      out_.clear();
      out_offset_ = 0;
    } else if (out_offset_ > kChunk) {
      out_.erase(0, out_offset_);
      out_offset_ = 0;
    }
    return !broken_;
  }

  // Writes everything queued, waiting for room (the peer's backpressure).
  bool flush() {
    while (pending() > 0 && !broken_) {
      if (!writeSome()) return false;
      if (pending() == 0) break;
      pollfd watch{fd_.get(), POLLOUT, 0};
      if (retryOnEintr([&] { return ::poll(&watch, 1, static_cast<int>(kTransferIdleTimeout.count())); }) <= 0) {
        broken_ = true;
      } else if ((watch.revents & POLLOUT) == 0) {
        broken_ = true;
      }
    }
    return !broken_;
  }

  bool send(agent::FrameType type, std::string_view payload) {
    queue(type, payload);
    return flush();
  }

  bool sendResult(const agent::AgentResult& result) { return send(agent::FrameType::kResult, agent::encodeResult(result)); }

  // Reads what is available, up to kMaxReadRound. False once the peer
  // closed or failed. The bound matters: a client that sends as fast as the
  // agent reads would otherwise keep this loop going, and everything it
  // sent would pile up unparsed (a 256 MiB `cp` stalled for seconds).
  bool readSome() {
    char buffer[kChunk];
    for (size_t total = 0; total < kMaxReadRound;) {
      ssize_t got = retryOnEintr([&] { return ::recv(fd_.get(), buffer, sizeof buffer, MSG_DONTWAIT); });
      if (got > 0) {
        reader_.feed(std::string_view(buffer, static_cast<size_t>(got)));
        if (static_cast<size_t>(got) < sizeof buffer) return true;
        total += static_cast<size_t>(got);
        continue;
      }
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      broken_ = true;
      return false;
    }
    return true;
  }

  std::optional<agent::Frame> nextFrame() { return reader_.next(); }

  // The next frame, waiting up to `timeout`; nullopt if the peer went away,
  // corrupted the stream or was silent for that long.
  std::optional<agent::Frame> receive(milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      if (auto frame = reader_.next()) return frame;
      if (reader_.failed() || broken_) return std::nullopt;
      pollfd watch{fd_.get(), POLLIN, 0};
      int ready = retryOnEintr([&] { return ::poll(&watch, 1, millisecondsUntil(deadline)); });
      if (ready <= 0) return std::nullopt;
      if (!readSome() && !reader_.next().has_value()) {
        // Frames that arrived with the close are still delivered above.
        return std::nullopt;
      }
    }
  }

 private:
  UniqueFd fd_;
  agent::FrameReader reader_;
  std::string out_;
  size_t out_offset_ = 0;
  bool broken_ = false;
};

// ---------------------------------------------------------------------------
// Files.

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

void handleStat(Connection& connection, const agent::AgentRequest& request) {
  if (!validPath(request.path)) return (void)connection.sendResult(invalidPath(request));
  struct stat st {};
  if (::lstat(request.path.c_str(), &st) != 0) {
    return (void)connection.sendResult(systemFailure(request.id, "stat " + request.path));
  }
  agent::AgentResult result;
  result.id = request.id;
  result.info = fileInfo(st);
  if (S_ISLNK(st.st_mode)) result.info->link_target = readLink(AT_FDCWD, request.path);
  connection.sendResult(result);
}

void handleList(Connection& connection, const agent::AgentRequest& request) {
  if (!validPath(request.path)) return (void)connection.sendResult(invalidPath(request));
  UniqueFd dir_fd(retryOnEintr(
      [&] { return ::open(request.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
  if (!dir_fd.valid()) return (void)connection.sendResult(systemFailure(request.id, "open " + request.path));
  int scan_fd = ::dup(dir_fd.get());
  DIR* dir = scan_fd >= 0 ? ::fdopendir(scan_fd) : nullptr;
  if (dir == nullptr) {
    if (scan_fd >= 0) ::close(scan_fd);
    return (void)connection.sendResult(systemFailure(request.id, "opendir " + request.path));
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
  connection.sendResult(result);
}

Status makeOneDirectory(const std::string& path, mode_t mode, bool exist_ok) {
  if (::mkdir(path.c_str(), mode) == 0) return Ok{};
  int saved = errno;
  struct stat st {};
  if (saved == EEXIST && exist_ok && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return Ok{};
  errno = saved;
  return Error{"mkdir " + path + ": " + describeErrno(saved)};
}

void handleMkdir(Connection& connection, const agent::AgentRequest& request) {
  if (!validPath(request.path)) return (void)connection.sendResult(invalidPath(request));
  mode_t mode = request.mode.value_or(0755) & 07777;
  if (request.parents) {
    for (size_t slash = request.path.find('/', 1); slash != std::string::npos;
         slash = request.path.find('/', slash + 1)) {
      if (auto made = makeOneDirectory(request.path.substr(0, slash), 0755, true); !made.ok()) {
        return (void)connection.sendResult(failure(request.id, made.error().message, errno));
      }
    }
  }
  if (auto made = makeOneDirectory(request.path, mode, request.parents); !made.ok()) {
    return (void)connection.sendResult(failure(request.id, made.error().message, errno));
  }
  // mkdir(2) applies the umask; the caller asked for exactly this mode.
  if (request.mode && ::chmod(request.path.c_str(), mode) != 0) {
    return (void)connection.sendResult(systemFailure(request.id, "chmod " + request.path));
  }
  if ((request.uid || request.gid) &&
      ::lchown(request.path.c_str(), request.uid ? *request.uid : static_cast<uid_t>(-1),
               request.gid ? *request.gid : static_cast<gid_t>(-1)) != 0) {
    return (void)connection.sendResult(systemFailure(request.id, "chown " + request.path));
  }
  agent::AgentResult result;
  result.id = request.id;
  connection.sendResult(result);
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

// Writes the data to a temporary file beside the target and renames it over
// the target, so that a reader sees the old file or the whole new one. The
// data is read to its end even after a failure, so that the answer comes
// after what the client sent, where it looks for it.
void handlePutFile(Connection& connection, const agent::AgentRequest& request) {
  std::optional<agent::AgentResult> failed;
  if (!validPath(request.path) || request.path == "/") failed = invalidPath(request);
  std::string temporary = failed ? "" : temporaryName(request.path);
  UniqueFd file;
  if (!failed && request.link_target.empty()) {
    file.reset(retryOnEintr([&] {
      return ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    }));
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
    connection.sendResult(*failed);
    return;
  }
  agent::AgentResult result;
  result.id = request.id;
  connection.sendResult(result);
}

void handleGetFile(Connection& connection, const agent::AgentRequest& request) {
  if (!validPath(request.path)) return (void)connection.sendResult(invalidPath(request));
  UniqueFd file(retryOnEintr([&] { return ::open(request.path.c_str(), O_RDONLY | O_CLOEXEC); }));
  if (!file.valid()) return (void)connection.sendResult(systemFailure(request.id, "open " + request.path));
  struct stat st {};
  if (::fstat(file.get(), &st) != 0) return (void)connection.sendResult(systemFailure(request.id, "stat " + request.path));
  if (!S_ISREG(st.st_mode)) {
    return (void)connection.sendResult(
        failure(request.id, request.path + ": not a regular file", S_ISDIR(st.st_mode) ? EISDIR : EINVAL));
  }
  agent::AgentResult header;
  header.id = request.id;
  header.info = fileInfo(st);
  if (!connection.sendResult(header)) return;
  // The size just declared is all the host takes: a file that grows while it
  // is read (a log) is cut there, as tar cuts it at its header's size.
  uint64_t left = header.info->size;
  std::string buffer(kChunk, '\0');
  for (;;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(left, buffer.size()));
    ssize_t got = want == 0 ? 0 : retryOnEintr([&] { return ::read(file.get(), buffer.data(), want); });
    if (got < 0) return (void)connection.sendResult(systemFailure(request.id, "read " + request.path));
    left -= static_cast<uint64_t>(got);
    if (!connection.send(agent::FrameType::kData, std::string_view(buffer.data(), static_cast<size_t>(got)))) return;
    if (got == 0) return;  // The empty chunk just sent ends the file.
  }
}

// ---------------------------------------------------------------------------
// Wait and probes.

void handleWait(Connection& connection, const agent::AgentRequest& request, const AgentOptions& options) {
  WorkloadExitChannel* channel = options.exit_channel;
  channel->addWaiter(1);
  for (;;) {
    if (auto code = channel->exitCode()) {
      agent::AgentResult result;
      result.id = request.id;
      result.exit_code = static_cast<uint32_t>(*code);
      connection.sendResult(result);
      break;
    }
    pollfd watch[2] = {{channel->readFd(), POLLIN, 0}, {connection.fd(), POLLIN, 0}};
    if (retryOnEintr([&] { return ::poll(watch, 2, -1); }) < 0) break;
    // Anything from the client now is a hang-up or noise; a hang-up ends it.
    if (watch[1].revents != 0 && !connection.readSome()) break;
    if (watch[0].revents != 0 && !channel->exitCode()) {
      // EOF without a code: init is gone, which it never is while the VM runs.
      connection.sendResult(failure(request.id, "the workload's exit code is not available"));
      break;
    }
  }
  channel->addWaiter(-1);
}

// Connects to address within the deadline; returns the connected socket.
Result<UniqueFd> connectWithin(const sockaddr* address, socklen_t length, Clock::time_point deadline) {
  UniqueFd fd(::socket(address->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Error{"socket: " + describeErrno(errno)};
  if (::connect(fd.get(), address, length) != 0) {
    if (errno != EINPROGRESS) return Error{describeErrno(errno)};
    pollfd watch{fd.get(), POLLOUT, 0};
    int ready = retryOnEintr([&] { return ::poll(&watch, 1, millisecondsUntil(deadline)); });
    if (ready == 0) {
      errno = ETIMEDOUT;
      return Error{"connection timed out"};
    }
    int error = 0;
    socklen_t size = sizeof error;
    if (ready < 0 || ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &size) != 0) {
      return Error{describeErrno(errno)};
    }
    if (error != 0) {
      errno = error;
      return Error{describeErrno(error)};
    }
  }
  return fd;
}

// 127.0.0.1:port, then [::1]:port.
Result<UniqueFd> connectLoopback(uint32_t port, Clock::time_point deadline, int& error_number) {
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(static_cast<uint16_t>(port));
  v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // SAFETY: sockaddr_in is a sockaddr for connect(2), with its own length.
  auto first = connectWithin(reinterpret_cast<const sockaddr*>(&v4), sizeof v4, deadline);
  if (first.ok()) return first;
  error_number = errno;
  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons(static_cast<uint16_t>(port));
  v6.sin6_addr = in6addr_loopback;
  // SAFETY: as above, for sockaddr_in6.
  auto second = connectWithin(reinterpret_cast<const sockaddr*>(&v6), sizeof v6, deadline);
  if (second.ok()) return second;
  return Error{"127.0.0.1:" + std::to_string(port) + ": " + first.error().message + "; [::1]:" +
               std::to_string(port) + ": " + second.error().message};
}

bool validPort(uint32_t port) { return port >= 1 && port <= 65535; }

void handleProbeTcp(Connection& connection, const agent::AgentRequest& request) {
  if (!validPort(request.port)) {
    agent::AgentResult result = failure(request.id, "invalid port " + std::to_string(request.port), EINVAL);
    result.status = agent::AgentStatus::kBadRequest;
    return (void)connection.sendResult(result);
  }
  auto timeout = request.timeout_ms != 0 ? milliseconds(request.timeout_ms) : kDefaultProbeTimeout;
  int error_number = 0;
  auto connected = connectLoopback(request.port, Clock::now() + timeout, error_number);
  if (!connected.ok()) return (void)connection.sendResult(failure(request.id, connected.error().message, error_number));
  agent::AgentResult result;
  result.id = request.id;
  connection.sendResult(result);
}

// "HTTP/1.1 200 OK" -> 200.
std::optional<uint32_t> parseStatusLine(std::string_view line) {
  if (!line.starts_with("HTTP/")) return std::nullopt;
  size_t space = line.find(' ');
  if (space == std::string_view::npos || line.size() < space + 4) return std::nullopt;
  uint32_t status = 0;
  for (size_t i = space + 1; i < space + 4; ++i) {
    if (line[i] < '0' || line[i] > '9') return std::nullopt;
    status = status * 10 + static_cast<uint32_t>(line[i] - '0');
  }
  return status;
}

void handleProbeHttp(Connection& connection, const agent::AgentRequest& request) {
  std::string path = request.path.empty() ? "/" : request.path;
  bool clean_path = path.front() == '/' && std::none_of(path.begin(), path.end(), [](char c) {
    return static_cast<unsigned char>(c) <= ' ' || c == 0x7f;
  });
  if (!validPort(request.port) || !clean_path) {
    agent::AgentResult result = failure(request.id, "invalid port or request path", EINVAL);
    result.status = agent::AgentStatus::kBadRequest;
    return (void)connection.sendResult(result);
  }
  auto deadline = Clock::now() + (request.timeout_ms != 0 ? milliseconds(request.timeout_ms) : kDefaultProbeTimeout);
  int error_number = 0;
  auto connected = connectLoopback(request.port, deadline, error_number);
  if (!connected.ok()) return (void)connection.sendResult(failure(request.id, connected.error().message, error_number));
  std::string http = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\nUser-Agent: microvm-agent\r\n\r\n";
  std::string_view rest = http;
  std::string response;
  auto timed_out = [&] { return failure(request.id, "no HTTP response within the timeout", ETIMEDOUT); };
  while (!rest.empty()) {
    pollfd watch{connected->get(), POLLOUT, 0};
    if (retryOnEintr([&] { return ::poll(&watch, 1, millisecondsUntil(deadline)); }) <= 0) {
      return (void)connection.sendResult(timed_out());
    }
    ssize_t sent = retryOnEintr([&] { return ::send(connected->get(), rest.data(), rest.size(), MSG_NOSIGNAL); });
    if (sent <= 0) return (void)connection.sendResult(systemFailure(request.id, "send the HTTP request"));
    rest.remove_prefix(static_cast<size_t>(sent));
  }
  while (response.find('\n') == std::string::npos && response.size() < 1024) {
    pollfd watch{connected->get(), POLLIN, 0};
    if (retryOnEintr([&] { return ::poll(&watch, 1, millisecondsUntil(deadline)); }) <= 0) {
      return (void)connection.sendResult(timed_out());
    }
    char buffer[1024];
    ssize_t got = retryOnEintr([&] { return ::recv(connected->get(), buffer, sizeof buffer, 0); });
    if (got < 0) return (void)connection.sendResult(systemFailure(request.id, "read the HTTP response"));
    if (got == 0) break;
    response.append(buffer, static_cast<size_t>(got));
  }
  auto status = parseStatusLine(response.substr(0, response.find('\r')));
  if (!status) return (void)connection.sendResult(failure(request.id, "not an HTTP response", EPROTO));
  agent::AgentResult result;
  result.id = request.id;
  result.http_status = *status;
  connection.sendResult(result);
}

// ---------------------------------------------------------------------------
// Exec.

// SIGCHLD is blocked and read through a signalfd, so that no exit is missed
// between fork and the loop.
Result<UniqueFd> childSignalFd() {
  sigset_t child;
  sigemptyset(&child);
  sigaddset(&child, SIGCHLD);
  if (::sigprocmask(SIG_BLOCK, &child, nullptr) != 0) return Error{"sigprocmask: " + describeErrno(errno)};
  UniqueFd fd(::signalfd(-1, &child, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd.valid()) return Error{"signalfd: " + describeErrno(errno)};
  return fd;
}

struct PipePair {
  UniqueFd read;
  UniqueFd write;
};

Result<PipePair> makePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Error{"pipe: " + describeErrno(errno)};
  return PipePair{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// A pseudo-terminal pair: the master for the agent, the slave for the command.
struct Terminal {
  UniqueFd master;
  UniqueFd slave;
};

Result<Terminal> openTerminal(uint16_t rows, uint16_t cols) {
  UniqueFd master(retryOnEintr([] { return ::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC); }));
  if (!master.valid()) return Error{"open /dev/ptmx: " + describeErrno(errno)};
  int unlock = 0;
  // SAFETY: TIOCSPTLCK reads one int, which lives on this frame.
  if (::ioctl(master.get(), TIOCSPTLCK, &unlock) != 0) return Error{"unlock pty: " + describeErrno(errno)};
  // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd for
  // the slave of this master, whichever devpts instance it lives in.
  UniqueFd slave(::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!slave.valid()) return Error{"open the pty's slave: " + describeErrno(errno)};
  if (rows != 0 && cols != 0) {
    winsize size{rows, cols, 0, 0};
    // SAFETY: TIOCSWINSZ reads one winsize, which lives on this frame.
    (void)::ioctl(master.get(), TIOCSWINSZ, &size);
  }
  return Terminal{std::move(master), std::move(slave)};
}

// The spec the command is exec'd with: the workload's, with the request's
// command, added environment, working directory and user.
agent::WorkloadSpec execSpec(const agent::AgentRequest& request, const AgentOptions& options) {
  agent::WorkloadSpec spec = options.workload;
  spec.argv = request.argv;
  spec.env.insert(spec.env.end(), request.env.begin(), request.env.end());
  if (request.tty && std::none_of(spec.env.begin(), spec.env.end(),
                                  [](const std::string& var) { return var.starts_with("TERM="); })) {
    spec.env.emplace_back("TERM=xterm");
  }
  if (!request.cwd.empty()) spec.workdir = request.cwd;
  if (!request.user.empty()) spec.user = request.user;
  return spec;
}

class ExecSession {
 public:
  ExecSession(Connection& connection, const agent::AgentRequest& request, const AgentOptions& options)
      : connection_(connection), request_(request), options_(options) {}

  void run() {
    auto started = start();
    if (!started.ok()) {
      connection_.sendResult(failure(request_.id, started.error().message, errno));
      return;
    }
    agent::AgentResult result;
    result.id = request_.id;
    result.pid = static_cast<uint32_t>(pid_);
    connection_.queue(agent::FrameType::kResult, agent::encodeResult(result));
    loop();
  }

 private:
  Status start() {
    auto signals = childSignalFd();
    if (!signals.ok()) return signals.error();
    child_signals_ = std::move(*signals);
    UniqueFd child_in, child_out, child_err;
    if (request_.tty) {
      auto terminal = openTerminal(request_.rows, request_.cols);
      if (!terminal.ok()) return terminal.error();
      terminal_ = std::move(terminal->master);
      child_in = std::move(terminal->slave);
    } else {
      auto in = makePipe();
      auto out = makePipe();
      auto err = makePipe();
      if (!in.ok()) return in.error();
      if (!out.ok()) return out.error();
      if (!err.ok()) return err.error();
      stdin_ = std::move(in->write);
      stdout_ = std::move(out->read);
      stderr_ = std::move(err->read);
      child_in = std::move(in->read);
      child_out = std::move(out->write);
      child_err = std::move(err->write);
    }
    agent::WorkloadSpec spec = execSpec(request_, options_);
    pid_ = spawnSharingMemory([&] { runChild(spec, child_in.get(), child_out.get(), child_err.get()); });
    if (pid_ < 0) return Error{"clone: " + describeErrno(errno)};
    for (int fd : {stdin_.get(), stdout_.get(), stderr_.get(), terminal_.get()}) {
      if (fd >= 0) {
        if (auto set = setNonBlocking(fd); !set.ok()) return set;
      }
    }
    return Ok{};
  }

  [[noreturn]] void runChild(const agent::WorkloadSpec& spec, int in, int out, int err) {
    try {
      resetChildSignals();
      ::setsid();
      int console_fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
      if (request_.tty) {
        // SAFETY: TIOCSCTTY takes an int argument by value (0: do not steal).
        if (::ioctl(in, TIOCSCTTY, 0) != 0) ::_exit(kExitCannotRun);
        out = err = in;
      }
      if (::dup2(in, STDIN_FILENO) < 0 || ::dup2(out, STDOUT_FILENO) < 0 || ::dup2(err, STDERR_FILENO) < 0) {
        ::_exit(kExitCannotRun);
      }
      execConfined(spec, console_fd, options_.confine, options_.confinement.get());
    } catch (...) {
      ::_exit(kExitCannotRun);
    }
  }

  void loop() {
    enum { kSocket, kStdin, kStdout, kStderr, kTerminal, kSignals, kCount };
    for (;;) {
      bool room = connection_.pending() < kMaxPendingOutput;
      // A throttled reader is not a quiet pipe.
      if (!room) last_output_ = Clock::now();
      bool outputs_open = stdout_.valid() || stderr_.valid() || terminal_.valid();
      if (exit_code_ && (!outputs_open || Clock::now() - last_output_ >= kExecDrainIdle)) break;
      if (connection_.broken()) return abandon();
      pollfd watch[kCount] = {};
      short socket_events = connection_.pending() > 0 ? POLLOUT : 0;
      if (input_.size() < kMaxPendingInput) socket_events |= POLLIN;
      watch[kSocket] = {connection_.fd(), socket_events, 0};
      watch[kStdin] = {input_.empty() ? -1 : stdin_.get(), POLLOUT, 0};
      watch[kStdout] = {room ? stdout_.get() : -1, POLLIN, 0};
      watch[kStderr] = {room ? stderr_.get() : -1, POLLIN, 0};
      short terminal_events = room ? POLLIN : 0;
      if (!input_.empty()) terminal_events |= POLLOUT;
      watch[kTerminal] = {terminal_events != 0 ? terminal_.get() : -1, terminal_events, 0};
      watch[kSignals] = {child_signals_.get(), POLLIN, 0};
      int timeout = exit_code_ ? millisecondsUntil(last_output_ + kExecDrainIdle) : -1;
      int ready = retryOnEintr([&] { return ::poll(watch, kCount, timeout); });
      if (ready < 0) return abandon();

      if (watch[kSignals].revents != 0) reap();
      bool output_read = false;
      if (watch[kStdout].revents != 0) output_read |= forward(stdout_, agent::FrameType::kOutput);
      if (watch[kStderr].revents != 0) output_read |= forward(stderr_, agent::FrameType::kErrorOutput);
      if (watch[kTerminal].revents & (POLLIN | POLLHUP | POLLERR)) {
        output_read |= forward(terminal_, agent::FrameType::kOutput);
      }
      if (output_read) last_output_ = Clock::now();
      if (watch[kSocket].revents & POLLIN) {
        if (!connection_.readSome()) return abandon();
        handleClientFrames();
        if (connection_.corrupt()) return abandon();
      } else if (watch[kSocket].revents & (POLLHUP | POLLERR)) {
        return abandon();
      }
      if (!input_.empty() && (watch[kStdin].revents != 0 || (watch[kTerminal].revents & POLLOUT))) writeInput();
      if (connection_.pending() > 0) connection_.writeSome();
    }
    connection_.queue(agent::FrameType::kExited, agent::encodeU32(static_cast<uint32_t>(*exit_code_)));
    connection_.flush();
  }

  // Reads one chunk into a frame. False if nothing was read (closed included).
  bool forward(UniqueFd& fd, agent::FrameType type) {
    if (!fd.valid()) return false;
    char buffer[kChunk];
    ssize_t got = retryOnEintr([&] { return ::read(fd.get(), buffer, sizeof buffer); });
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    if (got <= 0) {
      // EIO is how a pty master reports that every slave fd is closed.
      fd.reset();
      if (&fd == &terminal_) stdin_closed_ = true;
      return false;
    }
    connection_.queue(type, std::string_view(buffer, static_cast<size_t>(got)));
    return true;
  }

  void handleClientFrames() {
    while (auto frame = connection_.nextFrame()) {
      switch (frame->type) {
        case agent::FrameType::kInput:
          if (frame->payload.empty()) {
            stdin_eof_ = true;
          } else if (!stdin_eof_ && !stdin_closed_) {
            input_ += frame->payload;
          }
          break;
        case agent::FrameType::kResize: {
          auto size = agent::decodeWindowSize(frame->payload);
          if (size && terminal_.valid()) {
            winsize window{size->rows, size->cols, 0, 0};
            // SAFETY: TIOCSWINSZ reads one winsize, which lives on this frame.
            (void)::ioctl(terminal_.get(), TIOCSWINSZ, &window);
          }
          break;
        }
        case agent::FrameType::kExecSignal: {
          auto sig = agent::decodeU32(frame->payload);
          // Once reaped, the pid may name another process.
          if (sig && *sig > 0 && *sig < static_cast<uint32_t>(NSIG) && !exit_code_) {
            ::kill(pid_, static_cast<int>(*sig));
          }
          break;
        }
        default: break;  // Unknown frames are ignored.
      }
    }
    if (stdin_eof_ && input_.empty()) closeInput();
  }

  void writeInput() {
    int fd = request_.tty ? terminal_.get() : stdin_.get();
    ssize_t written = retryOnEintr([&] { return ::write(fd, input_.data(), input_.size()); });
    if (written > 0) {
      input_.erase(0, static_cast<size_t>(written));
    } else if (written < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      // The command closed its stdin: what it did not read is dropped.
      input_.clear();
      stdin_closed_ = true;
      stdin_.reset();
    }
    if (stdin_eof_ && input_.empty()) closeInput();
  }

  // EOF for the command: the pipe closes; a terminal gets its EOF character.
  void closeInput() {
    if (stdin_closed_) return;
    stdin_closed_ = true;
    if (request_.tty) {
      if (terminal_.valid()) {
        char eof = 4;  // VEOF's default, ^D
        termios modes {};
        if (::tcgetattr(terminal_.get(), &modes) == 0) eof = static_cast<char>(modes.c_cc[VEOF]);
        (void)!::write(terminal_.get(), &eof, 1);
      }
    } else {
      stdin_.reset();
    }
  }

  void reap() {
    signalfd_siginfo info[8];
    while (::read(child_signals_.get(), info, sizeof info) > 0) {
    }
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) return;
      if (pid == pid_) {
        exit_code_ = exitCodeFromWaitStatus(status);
        last_output_ = Clock::now();
      }
    }
  }

  // The client is gone: nobody will read the output or send input, so the
  // command and its process group end now rather than linger.
  void abandon() {
    if (!exit_code_) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      int status = 0;
      (void)retryOnEintr([&] { return ::waitpid(pid_, &status, 0); });
    }
  }

  Connection& connection_;
  const agent::AgentRequest& request_;
  const AgentOptions& options_;
  pid_t pid_ = -1;
  UniqueFd child_signals_;
  UniqueFd stdin_;
  UniqueFd stdout_;
  UniqueFd stderr_;
  UniqueFd terminal_;
  std::string input_;
  bool stdin_eof_ = false;
  bool stdin_closed_ = false;
  std::optional<int> exit_code_;
  Clock::time_point last_output_;
};

// ---------------------------------------------------------------------------
// Dispatch.

void dispatch(Connection& connection, const agent::AgentRequest& request, const AgentOptions& options) {
  agent::AgentResult ok;
  ok.id = request.id;
  switch (static_cast<agent::AgentOp>(request.op)) {
    case agent::AgentOp::kPing: connection.sendResult(ok); return;
    case agent::AgentOp::kExec:
      if (request.argv.empty() || request.argv[0].empty()) {
        agent::AgentResult bad = failure(request.id, "exec: no command", EINVAL);
        bad.status = agent::AgentStatus::kBadRequest;
        connection.sendResult(bad);
        return;
      }
      ExecSession(connection, request, options).run();
      return;
    case agent::AgentOp::kPutFile: handlePutFile(connection, request); return;
    case agent::AgentOp::kGetFile: handleGetFile(connection, request); return;
    case agent::AgentOp::kStat: handleStat(connection, request); return;
    case agent::AgentOp::kList: handleList(connection, request); return;
    case agent::AgentOp::kMkdir: handleMkdir(connection, request); return;
    case agent::AgentOp::kWait:
      if (options.exit_channel != nullptr) {
        handleWait(connection, request, options);
        return;
      }
      break;
    case agent::AgentOp::kProbeTcp: handleProbeTcp(connection, request); return;
    case agent::AgentOp::kProbeHttp: handleProbeHttp(connection, request); return;
  }
  agent::AgentResult unsupported;
  unsupported.id = request.id;
  unsupported.status = agent::AgentStatus::kUnsupported;
  unsupported.message = "unsupported operation " + std::to_string(request.op);
  connection.sendResult(unsupported);
}

void badRequest(Connection& connection, std::string message) {
  agent::AgentResult result;
  result.status = agent::AgentStatus::kBadRequest;
  result.message = std::move(message);
  connection.sendResult(result);
}

}  // namespace

// ---------------------------------------------------------------------------
// WorkloadExitChannel.

Result<WorkloadExitChannel> WorkloadExitChannel::create() {
  void* memory = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return Error{"mmap the exit channel: " + describeErrno(errno)};
  // A fresh anonymous mapping is zeroed and suitably aligned for Shared.
  auto* shared = new (memory) Shared();
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    ::munmap(memory, sizeof(Shared));
    return Error{"pipe for the exit channel: " + describeErrno(errno)};
  }
  return WorkloadExitChannel(shared, UniqueFd(fds[0]), UniqueFd(fds[1]));
}

WorkloadExitChannel::WorkloadExitChannel(WorkloadExitChannel&& other) noexcept
    : shared_(std::exchange(other.shared_, nullptr)),
      read_end_(std::move(other.read_end_)),
      write_end_(std::move(other.write_end_)) {}

WorkloadExitChannel::~WorkloadExitChannel() {
  if (shared_ != nullptr) ::munmap(shared_, sizeof(Shared));
}

void WorkloadExitChannel::publish(int exit_code) {
  shared_->exit_code.store(exit_code);
  write_end_.reset();
}

std::optional<int> WorkloadExitChannel::exitCode() const {
  int code = shared_->exit_code.load();
  if (code < 0) return std::nullopt;
  return code;
}

int WorkloadExitChannel::waiters() const { return shared_->waiters.load(); }

void WorkloadExitChannel::addWaiter(int delta) { shared_->waiters.fetch_add(delta); }

// ---------------------------------------------------------------------------
// The server.

void serveAgentConnection(UniqueFd fd, const AgentOptions& options) {
  if (!setNonBlocking(fd.get()).ok()) return;
  Connection connection(std::move(fd));
  auto hello = connection.receive(kRequestTimeout);
  if (!hello) return;
  if (hello->type != agent::FrameType::kAgentHello) return badRequest(connection, "expected a hello frame first");
  if (!connection.send(agent::FrameType::kAgentHello, agent::encodeU32(agent::kAgentProtocolVersion))) return;
  auto version = agent::decodeU32(hello->payload);
  if (!version || *version != agent::kAgentProtocolVersion) {
    agent::AgentResult result;
    result.status = agent::AgentStatus::kUnsupported;
    result.message = "unsupported agent protocol version (this agent speaks " +
                     std::to_string(agent::kAgentProtocolVersion) + ")";
    connection.sendResult(result);
    return;
  }
  std::optional<agent::Frame> frame;
  do {
    frame = connection.receive(kRequestTimeout);
    if (!frame) {
      if (connection.corrupt()) badRequest(connection, "malformed frame");
      return;
    }
  } while (frame->type != agent::FrameType::kRequest);  // Unknown frames are skipped.
  auto request = agent::decodeRequest(frame->payload);
  if (!request) return badRequest(connection, "malformed " + request.error().message());
  dispatch(connection, *request, options);
}

bool agentPeerAllowed(const sockaddr* peer, socklen_t length) {
  if (length < static_cast<socklen_t>(sizeof(sa_family_t))) return false;
  if (peer->sa_family == AF_UNIX) return true;
  if (peer->sa_family != AF_VSOCK || length < static_cast<socklen_t>(sizeof(sockaddr_vm))) return false;
  sockaddr_vm address;
  std::memcpy(&address, peer, sizeof address);
  return address.svm_cid == VMADDR_CID_HOST;
}

Error serveAgent(int listen_fd, const AgentOptions& options) {
  // Broken connections show up as EPIPE from send(), not as a fatal signal.
  ::signal(SIGPIPE, SIG_IGN);
  auto child_signals = childSignalFd();
  if (!child_signals.ok()) return child_signals.error();
  uint64_t refused_peers = 0;
  for (;;) {
    pollfd watch[2] = {{listen_fd, POLLIN, 0}, {child_signals->get(), POLLIN, 0}};
    if (retryOnEintr([&] { return ::poll(watch, 2, -1); }) < 0) return Error{"poll: " + describeErrno(errno)};
    if (watch[1].revents != 0) {
      signalfd_siginfo info[8];
      while (::read(child_signals->get(), info, sizeof info) > 0) {
      }
      while (::waitpid(-1, nullptr, WNOHANG) > 0) {
      }
    }
    if (watch[0].revents == 0) continue;
    UniqueFd connection(retryOnEintr([&] { return ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC); }));
    if (!connection.valid()) {
      // A connection that died before accept, or a momentary shortage of fds
      // or memory, must not stop the agent.
      if (errno == ECONNABORTED || errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS ||
          errno == EAGAIN || errno == EPERM || errno == EPROTO) {
        continue;
      }
      return Error{"accept: " + describeErrno(errno)};
    }
    sockaddr_storage peer{};
    socklen_t peer_length = sizeof peer;
    // SAFETY: sockaddr_storage is large and aligned enough for any family's
    // address; getpeername writes at most peer_length bytes.
    auto* peer_address = reinterpret_cast<sockaddr*>(&peer);
    if (::getpeername(connection.get(), peer_address, &peer_length) != 0 ||
        !agentPeerAllowed(peer_address, peer_length)) {
      // Logged a few times only: the guest could otherwise fill the console.
      if (refused_peers++ < 8) log("refused a connection that is not from the host");
      continue;
    }
    pid_t pid = ::fork();
    if (pid < 0) {
      log("fork for a connection: " + describeErrno(errno));
      continue;
    }
    if (pid == 0) {
      int code = 0;
      try {
        ::close(listen_fd);
        child_signals->reset();
        serveAgentConnection(std::move(connection), options);
      } catch (const std::exception& exception) {
        log(std::string("connection: unexpected exception: ") + exception.what());
        code = 1;
      } catch (...) {
        code = 1;
      }
      ::_exit(code);
    }
  }
}

void runAgentProcess(const AgentOptions& options) {
  try {
    resetChildSignals();
    if (options.exit_channel != nullptr) options.exit_channel->closeWriteEnd();
    UniqueFd listener(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener.valid()) {
      log("no vsock (" + describeErrno(errno) + "): exec, cp and probes are not available in this VM");
      ::_exit(kAgentNoTransport);
    }
    sockaddr_vm address{};
    address.svm_family = AF_VSOCK;
    address.svm_cid = VMADDR_CID_ANY;
    address.svm_port = agent::kAgentPort;
    // SAFETY: sockaddr_vm is the sockaddr of AF_VSOCK, passed with its size.
    if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listener.get(), 128) != 0) {
      log("listen on vsock port " + std::to_string(agent::kAgentPort) + ": " + describeErrno(errno));
      ::_exit(kAgentNoTransport);
    }
    AgentOptions serving = options;
    if (serving.confine && !serving.confinement) {
      // Once here (unless init did it), instead of in every exec'd command.
      auto prepared = prepareConfinement(serving.workload, STDERR_FILENO);
      if (prepared.ok()) {
        serving.confinement = std::make_shared<const PreparedConfinement>(std::move(*prepared));
      } else {
        log("confinement: " + prepared.error().message);  // each exec reports it then
      }
    }
    Error stopped = serveAgent(listener.get(), serving);
    log(stopped.message);
  } catch (...) {
    log("unexpected exception");
  }
  ::_exit(1);
}

}  // namespace microvm::guest
