// The agent's kRefresh: what must be fresh in a guest that resumes saved
// state (a restored snapshot runs many copies of one saved guest): its wall
// clock, stopped at the save, and its RNG, whose state every copy shares.
#include <fcntl.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "agent/control_protocol.h"
#include "base/eintr.h"
#include "guest/agent_operations.h"
#include "guest/support.h"

namespace microvm::guest {

namespace {

Result<void> setRealtimeClock(int64_t realtime_ns) {
  if (realtime_ns < 0) return Error(ErrorCode::kInvalidArgument, "set the clock: a time before 1970", EINVAL);
  timespec now{};
  now.tv_sec = static_cast<time_t>(realtime_ns / 1'000'000'000);
  now.tv_nsec = static_cast<long>(realtime_ns % 1'000'000'000);
  if (::clock_settime(CLOCK_REALTIME, &now) != 0) return systemError("clock_settime");
  return success();
}

Result<void> addEntropyAndReseed(std::string_view entropy) {
  UniqueFd random(retryOnEintr([] { return ::open("/dev/urandom", O_WRONLY | O_CLOEXEC); }));
  if (!random.valid()) return systemError("open /dev/urandom");
  if (!entropy.empty()) {
    // rand_pool_info ends in a flexible array of u32: room for the bytes,
    // rounded up, in u32s so that the header stays aligned.
    std::vector<uint32_t> storage(sizeof(rand_pool_info) / sizeof(uint32_t) + (entropy.size() + 3) / 4 + 1, 0);
    // SAFETY: storage is u32-aligned, zeroed and larger than the header plus
    // entropy.size() bytes; rand_pool_info is a plain C struct.
    auto* pool = reinterpret_cast<rand_pool_info*>(storage.data());
    pool->entropy_count = static_cast<int>(entropy.size() * 8);  // the host's getrandom is full entropy
    pool->buf_size = static_cast<int>(entropy.size());
    std::memcpy(pool->buf, entropy.data(), entropy.size());
    // SAFETY: RNDADDENTROPY reads a rand_pool_info and buf_size bytes after it.
    if (::ioctl(random.get(), RNDADDENTROPY, pool) != 0) return systemError("RNDADDENTROPY");
  }
  // SAFETY: RNDRESEEDCRNG takes no argument.
  if (::ioctl(random.get(), RNDRESEEDCRNG) != 0) return systemError("RNDRESEEDCRNG");
  return success();
}

}  // namespace

RefreshEffects systemRefreshEffects() {
  return {setRealtimeClock, addEntropyAndReseed};
}

void applyControlRefresh(std::string_view payload) {
  auto refresh = agent::decodeRefresh(payload);
  if (!refresh) {
    log("ignoring a malformed refresh frame: " + refresh.error().message());
    return;
  }
  RefreshEffects effects = systemRefreshEffects();
  if (auto set = effects.set_clock(refresh->realtime_ns); !set) log("refresh: " + set.error().message());
  if (!refresh->entropy.empty()) {
    if (auto added = effects.add_entropy(refresh->entropy); !added) log("refresh: " + added.error().message());
  }
  if (!refresh->hostname.empty() && ::sethostname(refresh->hostname.data(), refresh->hostname.size()) != 0) {
    log(systemError("refresh: sethostname " + refresh->hostname).message());
  }
}

void setClockFromHost(int64_t realtime_ns) {
  if (auto set = setRealtimeClock(realtime_ns); !set) log("clock: " + set.error().message());
}

void handleRefresh(FramedConnection& connection, const agent::AgentRequest& request, const AgentOptions& options) {
  // The clock first: the request was sent the moment the host read its own.
  if (request.realtime_ns) {
    auto set = options.refresh.set_clock(*request.realtime_ns);
    if (!set) {
      sendResult(connection, failure(request.id, set.error().message(), set.error().sysErrno()));
      return;
    }
  }
  auto mixed = options.refresh.add_entropy(request.entropy);
  if (!mixed) {
    sendResult(connection, failure(request.id, mixed.error().message(), mixed.error().sysErrno()));
    return;
  }
  agent::AgentResult ok;
  ok.id = request.id;
  sendResult(connection, ok);
}

}  // namespace microvm::guest
