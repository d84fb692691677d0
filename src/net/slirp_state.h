// libslirp's own state in a file of a saved VM (network.state beside
// memory.bin): what slirp_state_save holds (its IP id counter, DHCP leases
// and guestfwd sockets), so that a restored copy's stack continues where
// the saved one was. Framed as
//   "MVNS"  u32 slirp state version  u32 length  u64 XXH64 of the bytes  bytes
// (little-endian), so that a truncated or corrupted file is refused with
// the reason before libslirp parses it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "microvm/result.h"

namespace microvm::net {

// The most a file may hold: libslirp's state is a few hundred bytes.
inline constexpr size_t kMaxSlirpStateBytes = 64 * 1024;
// The most a network.state file may be: the state and its framing.
inline constexpr size_t kMaxSlirpStateFileBytes = kMaxSlirpStateBytes + 64;

struct SlirpState {
  int version = 0;  // slirp_state_version() when it was saved
  std::string bytes;
};

std::string encodeSlirpState(const SlirpState& state);
// Refuses, with the reason, anything but a whole, unchanged encoding.
Result<SlirpState> decodeSlirpState(std::string_view file);

}  // namespace microvm::net
