// The host side of the agent protocol (protocol.h): runs commands in a VM and
// moves files in and out of it, through the guest agent on vsock port
// kAgentPort. Every operation opens its own connection, so one client can be
// used from many threads, and many operations run at once.
//
//   auto client = agent::AgentClient::viaVsock(runtime_dir / "vsock.sock");
//   MICROVM_TRY(client.ping());
//   agent::ExecCommand command;
//   command.argv = {"/bin/sh", "-c", "echo hi"};
//   auto code = client.exec(command, agent::ExecStreams{});   // 0
//   auto status = client.probeHttp(8080, "/healthz");         // 200
//
// Everything the guest sends is untrusted: frames are bounds-checked by the
// shared FrameReader, results by decodeResult(); anything malformed is an
// ErrorCode::kProtocol error, never an assert. A listing is bounded (entries,
// bytes, name lengths, no duplicate names) and a file never grows past the
// size the agent declared for it. Every reply the host waits for has a
// deadline (AgentTimeouts), so a silent guest is an ErrorCode::kTimeout error
// ("agent on VM web did not answer within 30 s"), never a hang; only a
// command's own run time (exec) and the workload's (waitWorkload) are not
// bounded.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "agent/protocol.h"
#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm::agent {

struct ExecCommand {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "KEY=VALUE", added to the workload's
  std::string workdir;           // empty: the workload's
  std::string user;              // empty: the workload's
  bool tty = false;
  WindowSize window;             // initial size of the tty (0: the agent's default)
};

// Where an exec session's streams go. The session uses poll(); it blocks on
// writes to stdout/stderr (that is the backpressure towards the guest).
struct ExecStreams {
  int stdin_fd = -1;   // read until EOF and forwarded; -1: EOF at once
  int stdout_fd = 1;   // the command's stdout (and, with a tty, everything)
  int stderr_fd = 2;
  // A signalfd: every signal read from it is delivered to the command, except
  // SIGWINCH, which sends the window size of terminal_fd. -1: none. A pipe of
  // signalfd records may stand in for it: its EOF ends the exec (kTimeout)
  // whatever the guest does, which is how a caller bounds its wait.
  int signal_fd = -1;
  int terminal_fd = -1;
};

// How long the host waits for the agent. The defaults leave room for a guest
// under TCG on a loaded host; the unit tests shorten them.
struct AgentTimeouts {
  // The runner's CONNECT answer, the agent's hello, and each answer to a
  // request (a stat, a mkdir, a batch of a listing, the start of an exec, the
  // header of a file, a probe's result beyond the probe's own timeout).
  std::chrono::milliseconds reply{30'000};
  // Each step of a file transfer: the next chunk of a file coming in, room
  // for the next chunk going out, and the answer once it is all sent. The
  // agent gives the client 60 s per step too.
  std::chrono::milliseconds transfer{60'000};
};

// Bounds on one listing, whatever the guest sends: beyond them list() fails.
inline constexpr size_t kMaxListEntries = size_t{1} << 20;
inline constexpr size_t kMaxListBytes = size_t{256} << 20;  // all frames of the answer
inline constexpr size_t kMaxNameLength = 255;               // NAME_MAX
inline constexpr size_t kMaxLinkTargetLength = 4095;        // PATH_MAX - 1

struct PutOptions {
  uint32_t mode = 0644;
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
  std::optional<int64_t> mtime;
};

class AgentClient {
 public:
  // Through the runner's hybrid-vsock socket: "CONNECT <port>\n", "OK ...\n".
  static AgentClient viaVsock(std::filesystem::path socket, uint32_t port = kAgentPort);
  // Straight to a unix socket an agent listens on (the agent's unit tests).
  static AgentClient direct(std::filesystem::path socket);

  // Names the peer in errors: "VM web" gives "agent on VM web did not answer
  // within 30 s". Default: the socket's path.
  void setPeerName(std::string name) { peer_name_ = std::move(name); }
  void setTimeouts(const AgentTimeouts& timeouts) { timeouts_ = timeouts; }
  const AgentTimeouts& timeouts() const { return timeouts_; }

  // One round trip through the agent: the latency floor.
  Result<void> ping() const;

  // Runs a command; returns its exit code (0-255, 128+N for signal N).
  Result<int> exec(const ExecCommand& command, const ExecStreams& streams) const;

  Result<FileInfo> stat(const std::string& path) const;  // lstat
  Result<std::vector<FileInfo>> list(const std::string& path) const;
  Result<void> mkdir(const std::string& path, std::optional<uint32_t> mode, bool parents) const;
  // Streams `fd` (read to EOF) into `path`, replaced atomically.
  Result<void> putFile(const std::string& path, int fd, const PutOptions& options) const;
  Result<void> putSymlink(const std::string& path, const std::string& target) const;
  // Streams `path` into `fd`; returns what it was. Writes at most the size
  // the agent declared in its answer: more is a kProtocol error. A declared
  // size above `max_size` is refused before anything is written (kIo, EFBIG).
  Result<FileInfo> getFile(const std::string& path, int fd, uint64_t max_size = UINT64_MAX) const;

  // Blocks until the workload exits; returns its exit code.
  Result<int> waitWorkload() const;
  // Readiness probes, run inside the guest against its loopback.
  Result<void> probeTcp(uint16_t port, std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) const;
  Result<int> probeHttp(uint16_t port, const std::string& path,
                        std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) const;

  // After a restore: sets the guest's wall clock to `realtime_ns` (the
  // host's CLOCK_REALTIME, read just before; unset: left alone) and mixes
  // `entropy` (at most kMaxRefreshEntropy bytes) into the guest's RNG, which
  // then reseeds. An agent older than the operation answers kUnsupported.
  Result<void> refresh(std::optional<int64_t> realtime_ns, std::string_view entropy) const;

  // A connection that has sent its hello and `request` and read the agent's
  // hello; the caller carries the operation on (tests use this for raw frames).
  class Session;
  Result<Session> begin(const AgentRequest& request) const;
  // Connected (and past CONNECT for vsock) but nothing sent.
  Result<UniqueFd> connectRaw() const;
  Result<UniqueFd> connectOnce() const;

 private:
  AgentClient(std::filesystem::path socket, bool hybrid_vsock, uint32_t port)
      : socket_(std::move(socket)), hybrid_vsock_(hybrid_vsock), port_(port), peer_name_(socket_.string()) {}

  std::filesystem::path socket_;
  bool hybrid_vsock_;
  uint32_t port_;
  std::string peer_name_;
  AgentTimeouts timeouts_;
};

class AgentClient::Session {
 public:
  using Patience = std::optional<std::chrono::milliseconds>;  // nullopt: no limit

  explicit Session(UniqueFd fd, std::string peer_name = "agent", AgentTimeouts timeouts = {})
      : fd_(std::move(fd)), peer_name_(std::move(peer_name)), timeouts_(timeouts) {}

  int fd() const { return fd_.get(); }
  const AgentTimeouts& timeouts() const { return timeouts_; }
  // Sends one frame; kTimeout if the agent takes none of it for `patience`
  // (default: timeouts().transfer).
  Result<void> send(FrameType type, std::string_view payload);
  Result<void> send(FrameType type, std::string_view payload, Patience patience);
  // The next frame; kProtocol if the stream is corrupt or ends first,
  // kTimeout if it is not complete within `patience` (default:
  // timeouts().reply).
  Result<Frame> receive();
  Result<Frame> receive(Patience patience);
  // Reads what is there without blocking into the frame reader; false at EOF.
  Result<bool> readAvailable();
  std::optional<Frame> nextBuffered();
  // Waits for kResult (other frames are skipped) and turns failures into
  // Errors; the whole wait is bounded by `patience` (default:
  // timeouts().reply).
  Result<AgentResult> result(const std::string& what);
  Result<AgentResult> result(const std::string& what, Patience patience);

  // "agent on VM web did not answer within 30 s (WHAT)".
  Error silence(std::chrono::milliseconds patience, const std::string& what) const;

 private:
  friend class AgentClient;  // begin() waits for the hello within its own deadline
  using Deadline = std::optional<std::chrono::steady_clock::time_point>;
  Result<Frame> receiveUntil(Deadline deadline, Patience patience, const std::string& what);

  UniqueFd fd_;
  FrameReader reader_;
  bool eof_ = false;
  std::string peer_name_;
  AgentTimeouts timeouts_;
};

// The Error for a failed AgentResult: "WHAT: MESSAGE", with the guest's errno
// and a code that says what kind of failure it was.
Error resultError(const AgentResult& result, const std::string& what);

}  // namespace microvm::agent
