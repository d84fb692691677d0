// Fuzzes the egress filter with a policy active: arbitrary frames from the
// guest and from the host, interleaved, with time moving on. Besides crashes
// it checks that every frame the filter sends to the guest (TCP RST, ICMP
// unreachable, NXDOMAIN) parses and carries correct checksums.
//
// Input: a sequence of records [flags][length: 2 bytes, big endian][frame].
// flags bit 0: the frame comes from the host (else from the guest);
// bits 1-7: seconds the clock moves on before the frame.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "net/egress_policy.h"
#include "net/packet.h"

namespace {

microvm::net::EgressPolicy fuzzPolicy() {
  auto policy = microvm::net::makeEgressPolicy({"example.com:443/tcp", "*.example.org", "1.1.1.1:53/udp",
                                               "[2001:db8::1]:443", "10.0.2.2:8080"},
                                              {"192.168.0.0/16:5432", "2001:db8:1::/48"}, true);
  if (!policy) std::abort();
  return *policy;
}

void checkReply(const std::string& frame) {
  // SAFETY: viewing chars as bytes; uint8_t may alias any object.
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(frame.data()), frame.size());
  microvm::net::ParsedFrame parsed;
  if (microvm::net::parseFrame(bytes, parsed) != microvm::net::ParseStatus::kOk || !parsed.is_ip) {
    (void)std::fprintf(stderr, "the filter sent the guest a frame that does not parse\n");
    std::abort();
  }
  if (!parsed.is_fragment && !microvm::net::checksumsValid(bytes)) {
    (void)std::fprintf(stderr, "the filter sent the guest a frame with a bad checksum\n");
    std::abort();
  }
}

}  // namespace

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int64_t now_ms = 1'000'000;
  microvm::net::EgressFilterOptions options;
  options.clock_ms = [&now_ms] { return now_ms; };
  options.max_conntrack_entries = 64;  // small, so that the full-table paths run too
  options.max_dynamic_addresses = 16;
  microvm::net::EgressFilter filter(microvm::net::GuestAddresses{}, fuzzPolicy(), options);
  filter.setLog([](std::string_view) {});
  filter.addInboundUdpPort(5353);
  std::vector<std::string> to_guest;
  std::span<const uint8_t> input(data, size);
  while (input.size() >= 3) {
    uint8_t flags = input[0];
    size_t length = (static_cast<size_t>(input[1]) << 8) | input[2];
    input = input.subspan(3);
    if (length > input.size()) length = input.size();
    std::span<const uint8_t> frame = input.first(length);
    input = input.subspan(length);
    now_ms += static_cast<int64_t>(flags >> 1) * 1000;
    if (flags & 1) {
      filter.onHostFrame(frame);
    } else {
      to_guest.clear();
      (void)filter.onGuestFrame(frame, to_guest);
      for (const auto& reply : to_guest) checkReply(reply);
    }
  }
  filter.sweep();
  return 0;
}
