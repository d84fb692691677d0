#include "guest/agent.h"

#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "base/eintr.h"
#include "guest/agent_operations.h"
#include "guest/control_port.h"
#include "guest/spawn.h"
#include "guest/support.h"

namespace microvm::guest {
namespace {

// A client gets this long to send its hello and request.
constexpr milliseconds kRequestTimeout{10'000};
// The most one read round takes from a connection before its frames are handled.
constexpr size_t kMaxReadRound = 4 * kChunk;


// kWait: answers once init publishes the workload's exit code.
void handleWait(FramedConnection& connection, const agent::AgentRequest& request, const AgentOptions& options) {
  WorkloadExitChannel* channel = options.exit_channel;
  channel->addWaiter(1);
  for (;;) {
    if (auto code = channel->exitCode()) {
      agent::AgentResult result;
      result.id = request.id;
      result.exit_code = static_cast<uint32_t>(*code);
      sendResult(connection, result);
      break;
    }
    pollfd watch[2] = {{channel->readFd(), POLLIN, 0}, {connection.fd(), POLLIN, 0}};
    if (retryOnEintr([&] { return ::poll(watch, 2, -1); }) < 0) break;
    // Anything from the client now is a hang-up or noise; a hang-up ends it.
    if (watch[1].revents != 0 && !connection.readSome()) break;
    if (watch[0].revents != 0 && !channel->exitCode()) {
      // EOF without a code: init is gone, which it never is while the VM runs.
      sendResult(connection, failure(request.id, "the workload's exit code is not available"));
      break;
    }
  }
  channel->addWaiter(-1);
}

// ---------------------------------------------------------------------------
// Dispatch.

void dispatch(FramedConnection& connection, const agent::AgentRequest& request, const AgentOptions& options) {
  agent::AgentResult ok;
  ok.id = request.id;
  switch (static_cast<agent::AgentOp>(request.op)) {
    case agent::AgentOp::kPing: sendResult(connection, ok); return;
    case agent::AgentOp::kExec:
      if (request.argv.empty() || request.argv[0].empty()) {
        agent::AgentResult bad = failure(request.id, "exec: no command", EINVAL);
        bad.status = agent::AgentStatus::kBadRequest;
        sendResult(connection, bad);
        return;
      }
      handleExec(connection, request, options);
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
    case agent::AgentOp::kRefresh:
      if (options.refresh.set_clock && options.refresh.add_entropy) {
        handleRefresh(connection, request, options);
        return;
      }
      break;
  }
  agent::AgentResult unsupported;
  unsupported.id = request.id;
  unsupported.status = agent::AgentStatus::kUnsupported;
  unsupported.message = "unsupported operation " + std::to_string(request.op);
  sendResult(connection, unsupported);
}

void badRequest(FramedConnection& connection, std::string message) {
  agent::AgentResult result;
  result.status = agent::AgentStatus::kBadRequest;
  result.message = std::move(message);
  sendResult(connection, result);
}

}  // namespace

void agentLog(std::string_view message) {
  std::string line = "microvm-agent: ";
  line += message;
  line += '\n';
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

Result<void> setNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return systemError("fcntl O_NONBLOCK");
  }
  return {};
}

agent::AgentResult failure(uint32_t id, std::string message, int error_number) {
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

bool sendResult(FramedConnection& connection, const agent::AgentResult& result) {
  return connection.send(agent::FrameType::kResult, agent::encodeResult(result));
}

// ---------------------------------------------------------------------------
// WorkloadExitChannel.

Result<WorkloadExitChannel> WorkloadExitChannel::create() {
  void* memory = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return systemError("mmap the exit channel");
  // A fresh anonymous mapping is zeroed and suitably aligned for Shared.
  auto* shared = new (memory) Shared();
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    ::munmap(memory, sizeof(Shared));
    return systemError("pipe for the exit channel");
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

int WorkloadExitChannel::waiters() const {
  return shared_->waiters.load();
}

void WorkloadExitChannel::addWaiter(int delta) {
  shared_->waiters.fetch_add(delta);
}

// ---------------------------------------------------------------------------
// The server.

void serveAgentConnection(UniqueFd fd, const AgentOptions& options) {
  if (!setNonBlocking(fd.get()).ok()) return;
  FramedConnection connection(std::move(fd),
                              {.write_idle_timeout = kTransferIdleTimeout, .max_read_round = kMaxReadRound});
  auto hello = connection.receive(kRequestTimeout);
  if (!hello) return;
  if (hello->type != agent::FrameType::kAgentHello) return badRequest(connection, "expected a hello frame first");
  if (!connection.send(agent::FrameType::kAgentHello, agent::encodeU32(agent::kAgentProtocolVersion))) return;
  auto version = agent::decodeU32(hello->payload);
  if (!version || *version != agent::kAgentProtocolVersion) {
    agent::AgentResult result;
    result.status = agent::AgentStatus::kUnsupported;
    result.message =
        "unsupported agent protocol version (this agent speaks " + std::to_string(agent::kAgentProtocolVersion) + ")";
    sendResult(connection, result);
    return;
  }
  std::optional<agent::Frame> frame;
  do {
    frame = connection.receive(kRequestTimeout);
    if (!frame) {
      if (connection.corrupt()) badRequest(connection, "malformed frame: " + connection.corruption());
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
  auto child_signals = blockChildSignals();
  if (!child_signals.ok()) return child_signals.error();
  uint64_t refused_peers = 0;
  for (;;) {
    pollfd watch[2] = {{listen_fd, POLLIN, 0}, {child_signals->get(), POLLIN, 0}};
    if (retryOnEintr([&] { return ::poll(watch, 2, -1); }) < 0) return systemError("poll");
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
      return systemError("accept");
    }
    sockaddr_storage peer{};
    socklen_t peer_length = sizeof peer;
    // SAFETY: sockaddr_storage is large and aligned enough for any family's
    // address; getpeername writes at most peer_length bytes.
    auto* peer_address = reinterpret_cast<sockaddr*>(&peer);
    if (::getpeername(connection.get(), peer_address, &peer_length) != 0 ||
        !agentPeerAllowed(peer_address, peer_length)) {
      // Logged a few times only: the guest could otherwise fill the console.
      if (refused_peers++ < 8) agentLog("refused a connection that is not from the host");
      continue;
    }
    pid_t pid = ::fork();
    if (pid < 0) {
      agentLog("fork for a connection: " + describeErrno(errno));
      continue;
    }
    if (pid == 0) {
      int code = 0;
      try {
        ::close(listen_fd);
        child_signals->reset();
        serveAgentConnection(std::move(connection), options);
      } catch (const std::exception& exception) {
        agentLog(std::string("connection: unexpected exception: ") + exception.what());
        code = 1;
      } catch (...) {
        code = 1;
      }
      ::_exit(code);
    }
  }
}

namespace {

// How long the agent looks for its virtio-serial port (it is named by the
// time init gets its spec; this only covers a slow udev-less probe).
constexpr milliseconds kAgentPortTimeout{2'000};

// The options the agent serves with in a VM: the real refresh effects, and
// the workload's confinement prepared once.
AgentOptions confined(const AgentOptions& options) {
  AgentOptions serving = options;
  if (!serving.refresh.set_clock) serving.refresh = systemRefreshEffects();
  if (serving.confine && !serving.confinement) {
    // Once here (unless init did it), instead of in every exec'd command.
    auto prepared = prepareConfinement(serving.workload, STDERR_FILENO);
    if (prepared.ok()) {
      serving.confinement = std::make_shared<const PreparedConfinement>(std::move(*prepared));
    } else {
      agentLog("confinement: " + prepared.error().message());  // each exec reports it then
    }
  }
  return serving;
}

// The agent on vsock port kAgentPort: VMs of runners before the
// microvm.agent port.
[[noreturn]] void serveOverVsock(const AgentOptions& options) {
  UniqueFd listener(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener.valid()) {
    agentLog("no agent port and no vsock (" + describeErrno(errno) +
             "): exec, cp and probes are not available in this VM");
    ::_exit(kAgentNoTransport);
  }
  sockaddr_vm address{};
  address.svm_family = AF_VSOCK;
  address.svm_cid = VMADDR_CID_ANY;
  address.svm_port = agent::kAgentPort;
  // SAFETY: sockaddr_vm is the sockaddr of AF_VSOCK, passed with its size.
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listener.get(), 128) != 0) {
    agentLog("listen on vsock port " + std::to_string(agent::kAgentPort) + ": " + describeErrno(errno));
    ::_exit(kAgentNoTransport);
  }
  Error stopped = serveAgent(listener.get(), confined(options));
  agentLog(stopped.message());
  ::_exit(1);
}

}  // namespace

void runAgentProcess(const AgentOptions& options) {
  try {
    resetChildSignals();
    if (options.exit_channel != nullptr) options.exit_channel->closeWriteEnd();
    auto port = openVirtioPort(agent::kAgentPortName, kAgentPortTimeout);
    if (!port.ok()) serveOverVsock(options);
    Error stopped = serveAgentOverMux(port->get(), confined(options));
    agentLog(stopped.message());
  } catch (...) {
    agentLog("unexpected exception");
  }
  ::_exit(1);
}

}  // namespace microvm::guest
