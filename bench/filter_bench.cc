// Egress filter benchmark: the cost per frame of EgressFilter on the hot
// path, over synthetic TCP data frames (1448-byte payloads) of established
// flows, with a policy active (a CIDR rule, a name rule with learned
// addresses) and without one, and for frames going to the guest. Also counts
// heap allocations in the timed loops (the common case must make none).
// Prints one JSON object. bench/net.sh runs it.
//
//   build/bin/filter_bench [FRAMES]      (default 2000000)
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "net/dns.h"
#include "net/egress_policy.h"
#include "net/packet.h"

namespace {

uint64_t g_allocations = 0;

using microvm::net::IpAddress;

constexpr int kFlows = 64;  // a power of two: frames are picked with a mask, not a division

std::span<const uint8_t> bytesOf(const std::string& s) {
  // SAFETY: viewing chars as bytes; uint8_t may alias any object.
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

microvm::net::TcpSegment segment(const IpAddress& src, uint16_t sport, const IpAddress& dst, uint16_t dport,
                                 uint8_t flags) {
  microvm::net::TcpSegment s;
  s.src_mac = {0x52, 0x54, 0, 0x12, 0x34, 0x56};
  s.dst_mac = {0x52, 0x55, 0x0a, 0, 2, 2};
  s.src_ip = src;
  s.dst_ip = dst;
  s.src_port = sport;
  s.dst_port = dport;
  s.seq = 1000;
  s.ack = 1;
  s.flags = flags;
  return s;
}

// The remote of flow i: half covered by a CIDR rule, half learned from DNS.
IpAddress remote(int i) {
  return IpAddress::fromV4(i % 2 == 0 ? 0x5db8d800u + static_cast<uint32_t>(i) : 0x68100000u + static_cast<uint32_t>(i));
}

struct Run {
  double ns_per_frame = 0;
  uint64_t allocations = 0;
  uint64_t passed = 0;
};

Run timeGuest(microvm::net::EgressFilter& filter, const std::vector<std::string>& frames, uint64_t count) {
  std::vector<std::string> to_guest;
  to_guest.reserve(4);
  uint64_t before_passed = filter.stats().frames_passed;
  uint64_t before_allocations = g_allocations;
  auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < count; ++i) {
    to_guest.clear();
    (void)filter.onGuestFrame(bytesOf(frames[i & (kFlows - 1)]), to_guest);
  }
  auto elapsed = std::chrono::steady_clock::now() - start;
  Run run;
  run.ns_per_frame = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()) /
                     static_cast<double>(count);
  run.allocations = g_allocations - before_allocations;
  run.passed = filter.stats().frames_passed - before_passed;
  return run;
}

Run timeHost(microvm::net::EgressFilter& filter, const std::vector<std::string>& frames, uint64_t count) {
  uint64_t before_allocations = g_allocations;
  auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < count; ++i) filter.onHostFrame(bytesOf(frames[i & (kFlows - 1)]));
  auto elapsed = std::chrono::steady_clock::now() - start;
  Run run;
  run.ns_per_frame = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()) /
                     static_cast<double>(count);
  run.allocations = g_allocations - before_allocations;
  return run;
}

}  // namespace

// Counts heap allocations; the benchmark reports them per timed loop.
void* operator new(size_t size) {
  ++g_allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

int main(int argc, char** argv) {
  uint64_t count = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 2000000;
  if (count == 0) count = 1;
  IpAddress guest = IpAddress::fromV4(0x0a00020f);

  auto policy = microvm::net::makeEgressPolicy({"*.example.com:443/tcp", "api.example.net"},
                                              {"93.184.216.0/24:443", "192.168.0.0/16:5432"}, true);
  if (!policy) {
    (void)std::fprintf(stderr, "%s\n", policy.error().message().c_str());
    return 1;
  }
  microvm::net::EgressFilter with_policy(microvm::net::GuestAddresses{}, *policy);
  microvm::net::EgressFilter without_policy(microvm::net::GuestAddresses{}, microvm::net::EgressPolicy{});
  // The odd flows' addresses come from a DNS answer for an allowed name.
  microvm::net::DnsAnswer answer;
  answer.question.name = "cdn.example.com";
  for (int i = 1; i < kFlows; i += 2) answer.addresses.push_back({remote(i), 3600});
  with_policy.learnDnsAnswer(answer);

  std::string payload(1448, 'x');
  std::vector<std::string> data_frames, host_frames;
  std::vector<std::string> to_guest;
  for (int i = 0; i < kFlows; ++i) {
    auto syn = microvm::net::buildTcpFrame(segment(guest, static_cast<uint16_t>(40000 + i), remote(i), 443,
                                                   microvm::net::kTcpSyn));
    to_guest.clear();
    if (with_policy.onGuestFrame(bytesOf(syn), to_guest) != microvm::net::Verdict::kPass) {
      (void)std::fprintf(stderr, "flow %d was not allowed: the benchmark's policy is wrong\n", i);
      return 1;
    }
    data_frames.push_back(microvm::net::buildTcpFrame(
        segment(guest, static_cast<uint16_t>(40000 + i), remote(i), 443, microvm::net::kTcpAck | microvm::net::kTcpPsh),
        bytesOf(payload)));
    host_frames.push_back(microvm::net::buildTcpFrame(
        segment(remote(i), 443, guest, static_cast<uint16_t>(40000 + i), microvm::net::kTcpAck | microvm::net::kTcpPsh),
        bytesOf(payload)));
  }

  // Warm up, then measure.
  (void)timeGuest(with_policy, data_frames, count / 10 + 1);
  Run policy_run = timeGuest(with_policy, data_frames, count);
  Run open_run = timeGuest(without_policy, data_frames, count);
  Run host_run = timeHost(with_policy, host_frames, count);
  // A floor: parsing alone.
  uint64_t parse_allocations = g_allocations;
  auto start = std::chrono::steady_clock::now();
  uint64_t parsed_ok = 0;
  for (uint64_t i = 0; i < count; ++i) {
    microvm::net::ParsedFrame parsed;
    parsed_ok += microvm::net::parseFrame(bytesOf(data_frames[i & (kFlows - 1)]), parsed) ==
                 microvm::net::ParseStatus::kOk;
  }
  double parse_ns = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                            std::chrono::steady_clock::now() - start)
                                            .count()) /
                    static_cast<double>(count);
  parse_allocations = g_allocations - parse_allocations;
  if (policy_run.passed != count || open_run.passed != count || parsed_ok != count) {
    (void)std::fprintf(stderr, "frames were dropped in the benchmark: it measures the wrong path\n");
    return 1;
  }
  (void)std::printf(
      "{\"benchmark\": \"egress_filter\", \"frames\": %llu, \"flows\": %d, \"frame_bytes\": %zu, "
      "\"ns_per_frame\": %.1f, \"ns_per_frame_no_policy\": %.1f, \"ns_per_host_frame\": %.1f, "
      "\"ns_per_frame_parse_only\": %.1f, \"allocations_in_timed_loops\": %llu}\n",
      static_cast<unsigned long long>(count), kFlows, data_frames[0].size(), policy_run.ns_per_frame,
      open_run.ns_per_frame, host_run.ns_per_frame, parse_ns,
      static_cast<unsigned long long>(policy_run.allocations + open_run.allocations + host_run.allocations +
                                      parse_allocations));
  return 0;
}
