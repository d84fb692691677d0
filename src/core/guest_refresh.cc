// See guest_refresh.h.
#include "core/guest_refresh.h"

#include <sys/random.h>
#include <time.h>

#include <cerrno>
#include <string>

#include "agent/client.h"
#include "base/paths.h"

namespace microvm {

namespace {

// Enough to reseed: the kernel's CRNG keys are 32 bytes.
constexpr size_t kEntropyBytes = 64;
// The agent of a guest that just resumed answers at once; a loaded host
// under TCG gets some slack, but a restore never waits on a silent guest
// for long.
constexpr std::chrono::seconds kRefreshPatience{10};

Result<std::string> hostEntropy() {
  std::string bytes(kEntropyBytes, '\0');
  size_t filled = 0;
  while (filled < bytes.size()) {
    ssize_t got = ::getrandom(bytes.data() + filled, bytes.size() - filled, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return Error::fromErrno("getrandom");
    }
    filled += static_cast<size_t>(got);
  }
  return bytes;
}

int64_t hostRealtimeNs() {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

}  // namespace

Result<void> refreshGuest(const VmSpec& spec) {
  if (!spec.vsock) return success();  // --no-vsock: no agent to ask
  auto entropy = hostEntropy();
  if (!entropy) return std::move(entropy).error();
  auto client = agent::AgentClient::viaVsock(VmSockets(spec.runtime_dir).vsock());
  client.setPeerName("VM " + spec.name);
  agent::AgentTimeouts timeouts;
  timeouts.reply = kRefreshPatience;
  client.setTimeouts(timeouts);
  // The clock is read just before connecting: the agent answers CONNECT at
  // once, so the guest is set within milliseconds of the host.
  auto refreshed = client.refresh(hostRealtimeNs(), *entropy);
  if (!refreshed) return refreshed.error().withContext("set the clock and reseed the RNG of VM " + spec.name);
  return success();
}

}  // namespace microvm
