// Fuzzes the framing of a saved network state (net/slirp_state.h): the file
// sits beside a snapshot's memory and a restore reads it as untrusted
// input. Whatever decodes must encode back to the same bytes, and what
// decodes is loaded into a real libslirp stack, as the runner does.
#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "base/event_loop.h"
#include "net/slirp_network.h"
#include "net/slirp_state.h"

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // SAFETY: viewing bytes as chars; char may alias any object.
  std::string_view file(reinterpret_cast<const char*>(data), size);
  auto state = microvm::net::decodeSlirpState(file);
  if (!state) return 0;
  if (microvm::net::encodeSlirpState(*state) != file) {
    (void)std::fprintf(stderr, "network state does not round-trip\n");
    std::abort();
  }
  static auto loop = microvm::EventLoop::create();
  int fds[2];
  if (!loop || ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  microvm::UniqueFd qemu(fds[0]);
  auto network = microvm::net::SlirpNetwork::create(*loop, microvm::UniqueFd(fds[1]), {});
  if (!network) std::abort();
  (void)(*network)->loadState(*state);
  return 0;
}
