#include "agent/client.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <unordered_set>

#include "base/eintr.h"
#include "base/unix_socket.h"

namespace microvm::agent {

namespace {

constexpr size_t kChunk = size_t{64} * 1024;
// The session stops reading stdin while this much waits for the socket.
constexpr size_t kMaxPendingInput = size_t{256} * 1024;
// A hybrid-vsock answer line is short ("OK 1073741824\n").
constexpr size_t kMaxConnectReply = 64;
// How long a refused CONNECT is retried: a VM just started is still booting.
constexpr std::chrono::seconds kAgentStartPatience{20};

using Clock = std::chrono::steady_clock;

Error protocolError(const std::string& what) { return Error(ErrorCode::kProtocol, "agent: " + what); }

// "30 s", or "250 ms" below a second (the tests' timeouts).
std::string describeDuration(std::chrono::milliseconds duration) {
  if (duration.count() % 1000 == 0) return std::to_string(duration.count() / 1000) + " s";
  return std::to_string(duration.count()) + " ms";
}

// Milliseconds for poll(): -1 without a deadline, 0 once it has passed.
int pollTimeout(std::optional<Clock::time_point> deadline) {
  if (!deadline) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1'000'000));
}

// "agent on VM web did not answer within 30 s (WHAT)".
Error silenceError(const std::string& peer_name, std::chrono::milliseconds patience, const std::string& what) {
  return Error(ErrorCode::kTimeout, "agent on " + peer_name + " did not answer within " + describeDuration(patience) +
                                        (what.empty() ? "" : " (" + what + ")"));
}

std::optional<Clock::time_point> deadlineAfter(std::optional<std::chrono::milliseconds> patience) {
  if (!patience) return std::nullopt;
  return Clock::now() + *patience;
}

Error lostConnection() {
  return Error(ErrorCode::kProtocol, "agent: the connection ended in the middle of the operation");
}

// Writes everything to a possibly non-blocking fd.
Result<void> writeFully(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t written = retryOnEintr([&] { return ::write(fd, data.data(), data.size()); });
    if (written > 0) {
      data.remove_prefix(static_cast<size_t>(written));
    } else if (written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd watch{fd, POLLOUT, 0};
      (void)retryOnEintr([&] { return ::poll(&watch, 1, -1); });
    } else {
      return Error::fromErrno("write");
    }
  }
  return success();
}

// Sends everything, waiting for room until `deadline`; false (and no error)
// if the deadline passed first.
Result<bool> sendFully(int fd, std::string_view data, std::optional<Clock::time_point> deadline) {
  while (!data.empty()) {
    ssize_t sent = retryOnEintr([&] { return ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT); });
    if (sent > 0) {
      data.remove_prefix(static_cast<size_t>(sent));
      continue;
    }
    if (sent == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return Error::fromErrno("agent: send");
    pollfd watch{fd, POLLOUT, 0};
    int ready = retryOnEintr([&] { return ::poll(&watch, 1, pollTimeout(deadline)); });
    if (ready < 0) return Error::fromErrno("agent: poll");
    if (ready == 0) return false;
  }
  return true;
}

}  // namespace

Error resultError(const AgentResult& result, const std::string& what) {
  std::string message = what + ": " + (result.message.empty() ? "failed" : result.message);
  switch (result.status) {
    case AgentStatus::kUnsupported: return Error(ErrorCode::kUnsupported, message);
    case AgentStatus::kBadRequest: return Error(ErrorCode::kInvalidArgument, message, static_cast<int>(result.error_number));
    default: break;
  }
  ErrorCode code = ErrorCode::kIo;
  if (result.error_number == ENOENT) code = ErrorCode::kNotFound;
  if (result.error_number == EEXIST) code = ErrorCode::kAlreadyExists;
  if (result.error_number == ETIMEDOUT) code = ErrorCode::kTimeout;
  // The guest's errno numbers are Linux's, as the host's are.
  return Error(code, message, static_cast<int>(result.error_number));
}

// ---------------------------------------------------------------------------
// Session.

Error AgentClient::Session::silence(std::chrono::milliseconds patience, const std::string& what) const {
  return silenceError(peer_name_, patience, what);
}

Result<void> AgentClient::Session::send(FrameType type, std::string_view payload) {
  return send(type, payload, timeouts_.transfer);
}

Result<void> AgentClient::Session::send(FrameType type, std::string_view payload, Patience patience) {
  std::string wire;
  appendFrame(wire, type, payload);
  auto sent = sendFully(fd_.get(), wire, deadlineAfter(patience));
  if (!sent) return std::move(sent).error();
  if (!*sent) {
    return Error(ErrorCode::kTimeout,
                 "agent on " + peer_name_ + " took no data for " + describeDuration(*patience) + " (send)");
  }
  return success();
}

Result<bool> AgentClient::Session::readAvailable() {
  char buffer[kChunk];
  ssize_t got = retryOnEintr([&] { return ::recv(fd_.get(), buffer, sizeof buffer, MSG_DONTWAIT); });
  if (got > 0) {
    reader_.feed(std::string_view(buffer, static_cast<size_t>(got)));
    return true;
  }
  if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
  if (got < 0 && errno != ECONNRESET) return Error::fromErrno("agent: read");
  eof_ = true;
  return false;
}

std::optional<Frame> AgentClient::Session::nextBuffered() { return reader_.next(); }

Result<Frame> AgentClient::Session::receive() { return receive(timeouts_.reply); }

Result<Frame> AgentClient::Session::receive(Patience patience) {
  return receiveUntil(deadlineAfter(patience), patience, "");
}

Result<Frame> AgentClient::Session::receiveUntil(Deadline deadline, Patience patience, const std::string& what) {
  for (;;) {
    if (auto frame = reader_.next()) return std::move(*frame);
    if (reader_.failed()) return protocolError("malformed frame: " + reader_.failure());
    if (eof_) return lostConnection();
    pollfd watch{fd_.get(), POLLIN, 0};
    int ready = retryOnEintr([&] { return ::poll(&watch, 1, pollTimeout(deadline)); });
    if (ready < 0) return Error::fromErrno("agent: poll");
    // A frame trickled in byte by byte still has to be whole by the deadline.
    if (ready == 0) return silence(*patience, what);
    auto more = readAvailable();
    if (!more) return std::move(more).error();
  }
}

Result<AgentResult> AgentClient::Session::result(const std::string& what) { return result(what, timeouts_.reply); }

Result<AgentResult> AgentClient::Session::result(const std::string& what, Patience patience) {
  // One deadline for the whole wait: frames the result is not in (skipped)
  // do not extend it.
  Deadline deadline = deadlineAfter(patience);
  for (;;) {
    auto frame = receiveUntil(deadline, patience, what);
    if (!frame) return std::move(frame).error();
    if (frame->type != FrameType::kResult) continue;
    auto result = decodeResult(frame->payload);
    if (!result) return protocolError("malformed result for " + what + ": " + result.error().message());
    if (!result->ok()) return resultError(*result, what);
    return std::move(*result);
  }
}

// ---------------------------------------------------------------------------
// Connecting.

AgentClient AgentClient::viaVsock(std::filesystem::path socket, uint32_t port) {
  return AgentClient(std::move(socket), true, port);
}

AgentClient AgentClient::direct(std::filesystem::path socket) { return AgentClient(std::move(socket), false, 0); }

// A guest that is still booting has no agent listening yet, and refuses: that
// is retried with a growing pause for a bounded time, so that `exec` right
// after `run -d` works. A missing socket (the VM is not running) is not.
Result<UniqueFd> AgentClient::connectRaw() const {
  auto deadline = std::chrono::steady_clock::now() + kAgentStartPatience;
  for (auto pause = std::chrono::milliseconds(10);; pause = std::min(pause * 2, std::chrono::milliseconds(250))) {
    auto fd = connectOnce();
    if (fd || !hybrid_vsock_ || fd.error().code() != ErrorCode::kUnavailable || fd.error().sysErrno() != 0 ||
        std::chrono::steady_clock::now() + pause > deadline) {
      return fd;
    }
    std::this_thread::sleep_for(pause);
  }
}

Result<UniqueFd> AgentClient::connectOnce() const {
  auto connected = connectUnix(socket_);
  if (!connected) {
    const Error& error = connected.error();
    if (error.sysErrno() == ENOENT || error.sysErrno() == ECONNREFUSED) {
      return Error(ErrorCode::kUnavailable, error.message() + " (is the VM running, with a vsock device?)",
                   error.sysErrno());
    }
    return error;
  }
  UniqueFd fd = std::move(*connected);
  if (!hybrid_vsock_) return fd;
  // The runner answers once the guest has accepted (or refused) the
  // connection: a guest that does neither is cut off here.
  auto deadline = Clock::now() + timeouts_.reply;
  auto sent = sendFully(fd.get(), "CONNECT " + std::to_string(port_) + "\n", deadline);
  if (!sent) return std::move(sent).error();
  if (!*sent) return silenceError(peer_name_, timeouts_.reply, "CONNECT");
  // Byte by byte: what follows the line already belongs to the guest.
  std::string reply;
  while (reply.size() < kMaxConnectReply) {
    pollfd watch{fd.get(), POLLIN, 0};
    int ready = retryOnEintr([&] { return ::poll(&watch, 1, pollTimeout(deadline)); });
    if (ready < 0) return Error::fromErrno("poll for the vsock reply");
    if (ready == 0) return silenceError(peer_name_, timeouts_.reply, "CONNECT");
    char byte = 0;
    ssize_t got = retryOnEintr([&] { return ::read(fd.get(), &byte, 1); });
    if (got < 0) return Error::fromErrno("read the vsock reply");
    if (got == 0) break;
    if (byte == '\n') {
      if (reply.rfind("OK ", 0) == 0) return fd;
      break;
    }
    reply.push_back(byte);
  }
  return Error(ErrorCode::kUnavailable, "vsock port " + std::to_string(port_) +
                                            " of the guest did not accept the connection (is the agent running?)" +
                                            (reply.empty() ? "" : ": " + reply));
}

Result<AgentClient::Session> AgentClient::begin(const AgentRequest& request) const {
  auto fd = connectRaw();
  if (!fd) return std::move(fd).error();
  Session session(std::move(*fd), peer_name_, timeouts_);
  // Hello and request in one write: one round trip for the whole operation.
  std::string wire;
  appendFrame(wire, FrameType::kAgentHello, encodeU32(kAgentProtocolVersion));
  appendFrame(wire, FrameType::kRequest, encodeRequest(request));
  auto deadline = Clock::now() + timeouts_.reply;
  auto sent = sendFully(session.fd(), wire, deadline);
  if (!sent) return std::move(sent).error();
  if (!*sent) return session.silence(timeouts_.reply, "hello");
  for (;;) {
    auto frame = session.receiveUntil(deadline, timeouts_.reply, "hello");
    if (!frame) return std::move(frame).error();
    if (frame->type == FrameType::kAgentHello) break;
    if (frame->type == FrameType::kResult) {
      auto result = decodeResult(frame->payload);
      if (result && !result->ok()) return resultError(*result, "agent");
      return protocolError("answered before its hello");
    }
  }
  return session;
}

// ---------------------------------------------------------------------------
// Simple operations.

namespace {

AgentRequest requestFor(AgentOp op, const std::string& path = {}) {
  AgentRequest request;
  request.op = static_cast<uint32_t>(op);
  request.id = 1;
  request.path = path;
  return request;
}

}  // namespace

Result<void> AgentClient::ping() const {
  auto session = begin(requestFor(AgentOp::kPing));
  if (!session) return std::move(session).error();
  auto result = session->result("ping");
  if (!result) return std::move(result).error();
  return success();
}

Result<FileInfo> AgentClient::stat(const std::string& path) const {
  auto session = begin(requestFor(AgentOp::kStat, path));
  if (!session) return std::move(session).error();
  auto result = session->result("stat " + path);
  if (!result) return std::move(result).error();
  if (!result->info) return protocolError("stat answer without file information");
  return std::move(*result->info);
}

Result<std::vector<FileInfo>> AgentClient::list(const std::string& path) const {
  auto session = begin(requestFor(AgentOp::kList, path));
  if (!session) return std::move(session).error();
  std::vector<FileInfo> entries;
  // A listing has no declared length: these bounds stop a guest that sends
  // without end (frames of any type count towards the bytes).
  std::unordered_set<std::string> names;
  size_t received = 0;
  for (;;) {
    auto frame = session->receive();
    if (!frame) return std::move(frame).error();
    received += kHeaderSize + frame->payload.size();
    if (received > kMaxListBytes) {
      return protocolError("the listing of " + path + " exceeds " + std::to_string(kMaxListBytes >> 20) + " MiB");
    }
    if (frame->type == FrameType::kEntries) {
      auto batch = decodeEntries(frame->payload);
      if (!batch) return protocolError("malformed " + batch.error().message());
      for (auto& entry : *batch) {
        // A guest name with a '/' or a "." would make the caller write
        // somewhere other than inside the directory.
        if (entry.name.empty() || entry.name == "." || entry.name == ".." ||
            entry.name.find('/') != std::string::npos || entry.name.find('\0') != std::string::npos ||
            entry.name.size() > kMaxNameLength) {
          return protocolError("invalid name in the listing of " + path);
        }
        if (entry.link_target.size() > kMaxLinkTargetLength || entry.link_target.find('\0') != std::string::npos) {
          return protocolError("invalid link target for " + entry.name + " in the listing of " + path);
        }
        // A directory has each name once; a second one (a symlink, then a
        // directory of the same name) is a guest trying something.
        if (!names.insert(entry.name).second) {
          return protocolError("the listing of " + path + " names " + entry.name + " twice");
        }
        if (entries.size() == kMaxListEntries) {
          return protocolError("the listing of " + path + " has more than " + std::to_string(kMaxListEntries) +
                               " entries");
        }
        entries.push_back(std::move(entry));
      }
    } else if (frame->type == FrameType::kResult) {
      auto result = decodeResult(frame->payload);
      if (!result) return protocolError("malformed result for list: " + result.error().message());
      if (!result->ok()) return resultError(*result, "list " + path);
      return entries;
    }
  }
}

Result<void> AgentClient::mkdir(const std::string& path, std::optional<uint32_t> mode, bool parents) const {
  AgentRequest request = requestFor(AgentOp::kMkdir, path);
  request.mode = mode;
  request.parents = parents;
  auto session = begin(request);
  if (!session) return std::move(session).error();
  auto result = session->result("mkdir " + path);
  if (!result) return std::move(result).error();
  return success();
}

Result<void> AgentClient::putFile(const std::string& path, int fd, const PutOptions& options) const {
  AgentRequest request = requestFor(AgentOp::kPutFile, path);
  request.mode = options.mode;
  request.uid = options.uid;
  request.gid = options.gid;
  request.mtime = options.mtime;
  auto session = begin(request);
  if (!session) return std::move(session).error();
  std::string buffer(kChunk, '\0');
  for (;;) {
    ssize_t got = retryOnEintr([&] { return ::read(fd, buffer.data(), buffer.size()); });
    if (got < 0) return Error::fromErrno("read the data for " + path);
    // The agent reads to the end whatever happens, so these sends cannot
    // block for good; an early failure answers after the empty chunk.
    auto sent = session->send(FrameType::kData, std::string_view(buffer.data(), static_cast<size_t>(got)));
    if (!sent) {
      // The agent may have answered and closed: its answer says more.
      if (sent.error().code() == ErrorCode::kTimeout) return std::move(sent).error();
      auto result = session->result("put " + path);
      if (!result) return std::move(result).error();
      return std::move(sent).error();
    }
    if (got == 0) break;
  }
  auto result = session->result("put " + path, session->timeouts().transfer);
  if (!result) return std::move(result).error();
  return success();
}

Result<void> AgentClient::putSymlink(const std::string& path, const std::string& target) const {
  AgentRequest request = requestFor(AgentOp::kPutFile, path);
  request.link_target = target;
  auto session = begin(request);
  if (!session) return std::move(session).error();
  auto result = session->result("symlink " + path);
  if (!result) return std::move(result).error();
  return success();
}

Result<FileInfo> AgentClient::getFile(const std::string& path, int fd, uint64_t max_size) const {
  auto session = begin(requestFor(AgentOp::kGetFile, path));
  if (!session) return std::move(session).error();
  auto header = session->result("get " + path);
  if (!header) return std::move(header).error();
  if (!header->info) return protocolError("file answer without file information");
  // The agent declared the size: a file that grew since is cut there by the
  // agent, so more than that is a guest overrunning its word. Other frames
  // are skipped, within a budget.
  const uint64_t declared = header->info->size;
  if (declared > max_size) {
    return Error(ErrorCode::kIo,
                 "get " + path + ": the file has " + std::to_string(declared) + " bytes, more than the " +
                     std::to_string(max_size) + " this copy may still write",
                 EFBIG);
  }
  uint64_t written = 0;
  size_t skipped = 0;
  for (;;) {
    auto frame = session->receive(session->timeouts().transfer);
    if (!frame) return std::move(frame).error();
    if (frame->type == FrameType::kData) {
      if (frame->payload.empty()) return std::move(*header->info);
      if (frame->payload.size() > declared - written) {
        return protocolError("get " + path + ": the agent sent more than the " + std::to_string(declared) +
                             " bytes it declared");
      }
      MICROVM_TRY(writeFully(fd, frame->payload));
      written += frame->payload.size();
    } else if (frame->type == FrameType::kResult) {
      auto result = decodeResult(frame->payload);
      if (!result) return protocolError("malformed result for get: " + result.error().message());
      if (result->ok()) return protocolError("get " + path + ": the file ended without its end marker");
      return resultError(*result, "get " + path);
    } else {
      skipped += kHeaderSize + frame->payload.size();
      if (skipped > kMaxPayload) return protocolError("get " + path + ": too many frames that are not data");
    }
  }
}

Result<int> AgentClient::waitWorkload() const {
  auto session = begin(requestFor(AgentOp::kWait));
  if (!session) return std::move(session).error();
  // As long as the workload runs: no limit.
  auto result = session->result("wait", std::nullopt);
  if (!result) return std::move(result).error();
  return static_cast<int>(result->exit_code);
}

Result<void> AgentClient::refresh(std::optional<int64_t> realtime_ns, std::string_view entropy) const {
  AgentRequest request = requestFor(AgentOp::kRefresh);
  request.realtime_ns = realtime_ns;
  request.entropy = std::string(entropy.substr(0, kMaxRefreshEntropy));
  auto session = begin(request);
  if (!session) return std::move(session).error();
  auto result = session->result("refresh the guest's clock and RNG");
  if (!result) return std::move(result).error();
  return success();
}

Result<void> AgentClient::probeTcp(uint16_t port, std::chrono::milliseconds timeout) const {
  AgentRequest request = requestFor(AgentOp::kProbeTcp);
  request.port = port;
  request.timeout_ms = static_cast<uint32_t>(timeout.count());
  auto session = begin(request);
  if (!session) return std::move(session).error();
  // The agent answers once its own probe has ended, `timeout` at most.
  auto result = session->result("probe tcp port " + std::to_string(port), timeout + timeouts_.reply);
  if (!result) return std::move(result).error();
  return success();
}

Result<int> AgentClient::probeHttp(uint16_t port, const std::string& path, std::chrono::milliseconds timeout) const {
  AgentRequest request = requestFor(AgentOp::kProbeHttp, path);
  request.port = port;
  request.timeout_ms = static_cast<uint32_t>(timeout.count());
  auto session = begin(request);
  if (!session) return std::move(session).error();
  auto result = session->result("probe http port " + std::to_string(port), timeout + timeouts_.reply);
  if (!result) return std::move(result).error();
  return static_cast<int>(result->http_status);
}

// ---------------------------------------------------------------------------
// Exec.

namespace {

std::optional<WindowSize> terminalSize(int fd) {
  if (fd < 0) return std::nullopt;
  winsize size{};
  // SAFETY: TIOCGWINSZ writes one winsize, which lives on this frame.
  if (::ioctl(fd, TIOCGWINSZ, &size) != 0 || size.ws_row == 0 || size.ws_col == 0) return std::nullopt;
  return WindowSize{size.ws_row, size.ws_col};
}

}  // namespace

Result<int> AgentClient::exec(const ExecCommand& command, const ExecStreams& streams) const {
  AgentRequest request = requestFor(AgentOp::kExec);
  request.argv = command.argv;
  request.env = command.env;
  request.cwd = command.workdir;
  request.user = command.user;
  request.tty = command.tty;
  WindowSize window = command.window;
  if (command.tty && (window.rows == 0 || window.cols == 0)) {
    if (auto size = terminalSize(streams.terminal_fd)) window = *size;
  }
  request.rows = window.rows;
  request.cols = window.cols;
  auto session = begin(request);
  if (!session) return std::move(session).error();
  auto started = session->result("exec " + (command.argv.empty() ? std::string() : command.argv[0]));
  if (!started) return std::move(started).error();

  int stdin_fd = streams.stdin_fd;
  std::string outgoing;
  size_t outgoing_offset = 0;
  auto queue = [&](FrameType type, std::string_view payload) { appendFrame(outgoing, type, payload); };
  if (stdin_fd < 0) queue(FrameType::kInput, "");

  for (;;) {
    // Frames already buffered first: poll() knows nothing of them.
    while (auto frame = session->nextBuffered()) {
      switch (frame->type) {
        case FrameType::kOutput: MICROVM_TRY(writeFully(streams.stdout_fd, frame->payload)); break;
        case FrameType::kErrorOutput: MICROVM_TRY(writeFully(streams.stderr_fd, frame->payload)); break;
        case FrameType::kExited: {
          auto code = decodeU32(frame->payload);
          if (!code || *code > 255) return protocolError("malformed exit code");
          return static_cast<int>(*code);
        }
        default: break;
      }
    }
    size_t pending = outgoing.size() - outgoing_offset;
    enum { kSocket, kStdin, kSignals, kCount };
    pollfd watch[kCount] = {};
    watch[kSocket] = {session->fd(), static_cast<short>(POLLIN | (pending > 0 ? POLLOUT : 0)), 0};
    watch[kStdin] = {stdin_fd >= 0 && pending < kMaxPendingInput ? stdin_fd : -1, POLLIN, 0};
    watch[kSignals] = {streams.signal_fd, POLLIN, 0};
    if (retryOnEintr([&] { return ::poll(watch, kCount, -1); }) < 0) return Error::fromErrno("poll");

    if (watch[kSignals].revents & (POLLIN | POLLHUP | POLLERR)) {
      // One read per wakeup: the caller's signalfd may be blocking, and a
      // second read would then wait for the next signal with the session
      // stalled. A read returns every pending signal that fits.
      signalfd_siginfo info[8]{};
      ssize_t got = retryOnEintr([&] { return ::read(streams.signal_fd, info, sizeof info); });
      if (got == 0) {
        // A pipe standing in for a signalfd, closed: a guest that does not
        // end the command when told to is not waited for any longer.
        return Error(ErrorCode::kTimeout,
                     "the guest did not end the command when told to, and the caller stopped waiting; it may still "
                     "run in the guest");
      }
      for (ssize_t i = 0; got > 0 && i < got / static_cast<ssize_t>(sizeof info[0]); ++i) {
        if (static_cast<int>(info[i].ssi_signo) == SIGWINCH) {
          if (auto size = terminalSize(streams.terminal_fd)) queue(FrameType::kResize, encodeWindowSize(*size));
        } else {
          queue(FrameType::kExecSignal, encodeU32(info[i].ssi_signo));
        }
      }
    }
    if (watch[kStdin].revents != 0) {
      char buffer[kChunk];
      ssize_t got = retryOnEintr([&] { return ::read(stdin_fd, buffer, sizeof buffer); });
      if (got > 0) {
        queue(FrameType::kInput, std::string_view(buffer, static_cast<size_t>(got)));
      } else if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        queue(FrameType::kInput, "");
        stdin_fd = -1;
      }
    }
    if (outgoing.size() > outgoing_offset) {
      ssize_t sent = retryOnEintr([&] {
        return ::send(session->fd(), outgoing.data() + outgoing_offset, outgoing.size() - outgoing_offset,
                      MSG_NOSIGNAL | MSG_DONTWAIT);
      });
      if (sent > 0) {
        outgoing_offset += static_cast<size_t>(sent);
        if (outgoing_offset == outgoing.size()) {
          outgoing.clear();
          outgoing_offset = 0;
        }
      } else if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        // The agent closes once the command is done: its last frames may
        // still be readable, so the read below decides.
        outgoing.clear();
        outgoing_offset = 0;
        stdin_fd = -1;
      }
    }
    if (watch[kSocket].revents & (POLLIN | POLLHUP | POLLERR)) {
      auto more = session->readAvailable();
      if (!more) return std::move(more).error();
      if (!*more) {
        while (auto frame = session->nextBuffered()) {
          if (frame->type == FrameType::kOutput) MICROVM_TRY(writeFully(streams.stdout_fd, frame->payload));
          if (frame->type == FrameType::kErrorOutput) MICROVM_TRY(writeFully(streams.stderr_fd, frame->payload));
          if (frame->type == FrameType::kExited) {
            auto code = decodeU32(frame->payload);
            if (!code || *code > 255) return protocolError("malformed exit code");
            return static_cast<int>(*code);
          }
        }
        return lostConnection();
      }
    }
  }
}

}  // namespace microvm::agent
