// Fuzzes the guest agent's connection handling as a hostile host-side peer
// drives it: the input is the whole byte stream a client sends (hello,
// request, then whatever the operation reads: a put's data, an exec's input,
// resizes and signals), served in-process by serveAgentConnection() over a
// socketpair. agent_protocol_fuzz covers the decoders alone; this one covers
// the sequencing, dispatch, argument checks and the handlers' frame loops.
//
// Safe to run as root on a shared machine:
// - file operations stay in a scratch directory: absolute request paths are
//   moved under it, and inputs with ".." in a path or an absolute or ".."
//   symlink target are skipped, so nothing created or resolved leaves it;
// - exec runs /bin/cat (no environment added, working directory in the
//   scratch directory) whatever was asked: its frame handling is the point,
//   not the program;
// - the process gets a network namespace of its own (loopback down), so the
//   probes reach nothing; where that is not allowed, probe inputs are skipped;
// - wait answers at once from an exit code published before the first input;
// - refresh (clock and RNG) has effects that do nothing: the host's clock is
//   never set.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "agent/protocol.h"
#include "guest/agent.h"

namespace {

namespace agent = microvm::agent;
namespace fs = std::filesystem;

// Inputs above this are skipped: the agent's answers to them must fit in the
// socket buffers, since nobody reads them until the connection is done.
constexpr size_t kMaxInput = size_t{64} << 10;
constexpr int kSocketBuffer = 8 << 20;
constexpr uint32_t kMaxProbeTimeoutMs = 50;

struct Harness {
  std::string scratch;
  bool isolated_network = false;
  std::optional<microvm::guest::WorkloadExitChannel> channel;
  microvm::guest::AgentOptions options;
};

Harness& harness() {
  static Harness* instance = [] {
    auto* made = new Harness();
    char pattern[] = "/tmp/microvm-agent-fuzz-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) std::abort();
    made->scratch = pattern;
    made->isolated_network = ::unshare(CLONE_NEWNET) == 0;
    ::signal(SIGPIPE, SIG_IGN);
    auto channel = microvm::guest::WorkloadExitChannel::create();
    if (!channel.ok()) std::abort();
    made->channel.emplace(std::move(*channel));
    made->channel->publish(3);
    made->options.confine = false;
    made->options.workload.workdir = made->scratch;
    made->options.exit_channel = &*made->channel;
    made->options.refresh.set_clock = [](int64_t) -> microvm::Result<void> { return microvm::success(); };
    made->options.refresh.add_entropy = [](std::string_view) -> microvm::Result<void> { return microvm::success(); };
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(harness().scratch, ec);
    });
    return made;
  }();
  return *instance;
}

bool hasDotDot(std::string_view text) { return text.find("..") != std::string_view::npos; }

// The request made safe to serve, or nullopt to skip the input.
std::optional<agent::AgentRequest> confine(agent::AgentRequest request, const Harness& h) {
  switch (static_cast<agent::AgentOp>(request.op)) {
    case agent::AgentOp::kPutFile:
    case agent::AgentOp::kGetFile:
    case agent::AgentOp::kStat:
    case agent::AgentOp::kList:
    case agent::AgentOp::kMkdir:
      if (hasDotDot(request.path)) return std::nullopt;
      if (!request.link_target.empty() && (request.link_target[0] == '/' || hasDotDot(request.link_target))) {
        return std::nullopt;
      }
      if (!request.path.empty() && request.path[0] == '/') request.path = h.scratch + request.path;
      return request;
    case agent::AgentOp::kExec:
      if (!request.argv.empty() && !request.argv[0].empty()) request.argv = {"/bin/cat"};
      request.env.clear();
      // The working directory is created if missing (Docker's WORKDIR).
      if (hasDotDot(request.cwd)) return std::nullopt;
      if (!request.cwd.empty()) request.cwd = h.scratch + "/" + request.cwd;
      return request;
    case agent::AgentOp::kProbeTcp:
    case agent::AgentOp::kProbeHttp:
      if (!h.isolated_network) return std::nullopt;
      request.timeout_ms = std::min(request.timeout_ms == 0 ? kMaxProbeTimeoutMs : request.timeout_ms,
                                    kMaxProbeTimeoutMs);
      return request;
    default: return request;
  }
}

// The input with its request frame (the first kRequest after the first
// frame, as the agent reads it) replaced by the confined one; nullopt to skip.
std::optional<std::string> confineStream(std::string_view input, const Harness& h) {
  size_t offset = 0;
  for (size_t index = 0; input.size() - offset >= agent::kHeaderSize; ++index) {
    const char* header = input.data() + offset;
    uint32_t length = agent::getLe32(header + 4);
    if (length > agent::kMaxPayload || input.size() - offset - agent::kHeaderSize < length) break;
    auto type = static_cast<agent::FrameType>(agent::getLe16(header));
    size_t next = offset + agent::kHeaderSize + length;
    if (index > 0 && type == agent::FrameType::kRequest) {
      auto request = agent::decodeRequest(input.substr(offset + agent::kHeaderSize, length));
      if (!request) return std::string(input);  // refused as malformed: nothing runs
      auto confined = confine(*request, h);
      if (!confined) return std::nullopt;
      if (*confined == *request) return std::string(input);
      std::string stream(input.substr(0, offset));
      agent::appendFrame(stream, agent::FrameType::kRequest, agent::encodeRequest(*confined));
      stream.append(input.substr(next));
      return stream;
    }
    offset = next;
  }
  return std::string(input);  // no request: nothing is dispatched
}

void clearScratch(const std::string& scratch) {
  std::error_code ec;
  for (fs::directory_iterator it(scratch, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ignored;
    fs::remove_all(it->path(), ignored);
  }
}

}  // namespace

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxInput) return 0;
  Harness& h = harness();
  // SAFETY: viewing bytes as chars; char may alias any object.
  auto stream = confineStream(std::string_view(reinterpret_cast<const char*>(data), size), h);
  if (!stream) return 0;

  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  for (int fd : fds) {
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &kSocketBuffer, sizeof kSocketBuffer) != 0) {
      (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kSocketBuffer, sizeof kSocketBuffer);
    }
  }
  microvm::UniqueFd peer(fds[0]);
  std::string_view rest = *stream;
  while (!rest.empty()) {
    ssize_t sent = ::send(peer.get(), rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent <= 0) break;  // what did not fit is not sent: a shorter stream
    rest.remove_prefix(static_cast<size_t>(sent));
  }
  ::shutdown(peer.get(), SHUT_WR);
  microvm::guest::serveAgentConnection(microvm::UniqueFd(fds[1]), h.options);

  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
  clearScratch(h.scratch);
  return 0;
}
