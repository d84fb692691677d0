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
// ErrorCode::kProtocol error, never an assert.
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
  // SIGWINCH, which sends the window size of terminal_fd. -1: none.
  int signal_fd = -1;
  int terminal_fd = -1;
};

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
  // Streams `path` into `fd`; returns what it was.
  Result<FileInfo> getFile(const std::string& path, int fd) const;

  // Blocks until the workload exits; returns its exit code.
  Result<int> waitWorkload() const;
  // Readiness probes, run inside the guest against its loopback.
  Result<void> probeTcp(uint16_t port, std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) const;
  Result<int> probeHttp(uint16_t port, const std::string& path,
                        std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) const;

  // A connection that has sent its hello and `request` and read the agent's
  // hello; the caller carries the operation on (tests use this for raw frames).
  class Session;
  Result<Session> begin(const AgentRequest& request) const;
  // Connected (and past CONNECT for vsock) but nothing sent.
  Result<UniqueFd> connectRaw() const;
  Result<UniqueFd> connectOnce() const;

 private:
  AgentClient(std::filesystem::path socket, bool hybrid_vsock, uint32_t port)
      : socket_(std::move(socket)), hybrid_vsock_(hybrid_vsock), port_(port) {}

  std::filesystem::path socket_;
  bool hybrid_vsock_;
  uint32_t port_;
};

class AgentClient::Session {
 public:
  explicit Session(UniqueFd fd) : fd_(std::move(fd)) {}

  int fd() const { return fd_.get(); }
  Result<void> send(FrameType type, std::string_view payload);
  // The next frame; kProtocol if the stream is corrupt or ends first.
  Result<Frame> receive();
  // Reads what is there without blocking into the frame reader; false at EOF.
  Result<bool> readAvailable();
  std::optional<Frame> nextBuffered();
  // Waits for kResult (other frames are skipped) and turns failures into Errors.
  Result<AgentResult> result(const std::string& what);

 private:
  UniqueFd fd_;
  FrameReader reader_;
  bool eof_ = false;
};

// The Error for a failed AgentResult: "WHAT: MESSAGE", with the guest's errno
// and a code that says what kind of failure it was.
Error resultError(const AgentResult& result, const std::string& what);

}  // namespace microvm::agent
