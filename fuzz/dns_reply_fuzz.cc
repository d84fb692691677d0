// Fuzzes what the DNS forwarder does with a datagram from an upstream
// resolver (net::relayUpstreamReply, the forwarder's own path): parse it as
// the answer to the guest's pending query, let the egress filter learn its
// addresses, relay it to the guest as UDP frames (fragmented past the MTU).
// The upstream, or anyone who can spoof it, controls every byte. Besides
// crashes it checks that:
// - a datagram that is not the answer (id, question) changes nothing;
// - the relayed frames parse, carry the whole message with the guest's id
//   (valid checksums when unfragmented) and fit the MTU;
// - no learned address opens the host, private networks or metadata.
//
// Input: [selector: 1 byte][the upstream's datagram]. Selector bits 0-1
// pick the query's name, bit 2 A or AAAA, bit 3 an IPv4 or IPv6 guest,
// bit 4 an MTU of 1500 or 65520. The id the forwarder sent upstream is 0xbeef.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "net/dns.h"
#include "net/dns_forwarder.h"
#include "net/egress_policy.h"
#include "net/packet.h"

namespace {

using namespace microvm::net;  // NOLINT(google-build-using-namespace): a fuzz target's one namespace

constexpr uint16_t kUpstreamId = 0xbeef;
constexpr uint16_t kGuestId = 0x1234;

[[noreturn]] void fail(const char* what) {
  (void)std::fprintf(stderr, "dns_reply_fuzz: %s\n", what);
  std::abort();
}

std::span<const uint8_t> bytesOf(const std::string& text) {
  // SAFETY: viewing chars as bytes; uint8_t may alias any object.
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

DnsQuery guestQuery(uint8_t selector) {
  static const char* const kNames[] = {"example.com", "api.example.com", "cdn.example.org", "other.example.net"};
  uint16_t type = (selector & 4) ? kDnsTypeAaaa : kDnsTypeA;
  std::string message = {
      static_cast<char>(kGuestId >> 8), static_cast<char>(kGuestId & 0xff), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
  message += encodeDnsName(kNames[selector & 3]);
  message += {0, static_cast<char>(type), 0, static_cast<char>(kDnsClassIn)};
  auto query = parseDnsQuery(bytesOf(message));
  if (!query) fail("the target's own query does not parse");
  return *query;
}

EgressPolicy fuzzPolicy() {
  auto policy = makeEgressPolicy({"example.com:443/tcp", "*.example.com", "cdn.example.org:80"}, {}, true);
  if (!policy) fail("the target's policy does not parse");
  return *policy;
}

// Written apart from the filter's table: where no DNS answer may lead.
bool mustStayClosed(const EgressFilter& filter, const IpAddress& address) {
  static const std::pair<const char*, unsigned> kClosed[] = {
      {"127.0.0.0", 8},   {"10.0.0.0", 8},     {"169.254.0.0", 16}, {"168.63.129.16", 32},
      {"172.16.0.0", 12}, {"192.168.0.0", 16}, {"100.64.0.0", 10},  {"0.0.0.0", 8},
      {"224.0.0.0", 3},   {"::", 96},          {"::ffff:0:0", 96},  {"fc00::", 7},
      {"fe80::", 10},     {"ff00::", 8},       {"203.0.113.7", 32}, {"2a01:4f8::7", 128},
  };
  for (const auto& [text, bits] : kClosed) {
    if (address.inPrefix(*IpAddress::parse(text), bits)) return true;
  }
  return filter.reachesHostLoopback(address);
}

}  // namespace

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint8_t selector = data[0];
  std::span<const uint8_t> message(data + 1, size - 1);

  int64_t now_ms = 1'000'000;
  GuestAddresses addresses;
  addresses.host = {*IpAddress::parse("203.0.113.7"), *IpAddress::parse("2a01:4f8::7")};
  addresses.mtu = (selector & 16) ? 65520 : 1500;
  EgressFilterOptions options;
  options.clock_ms = [&now_ms] { return now_ms; };
  options.max_dynamic_addresses = 64;
  EgressFilter filter(addresses, fuzzPolicy(), options);
  filter.setLog([](std::string_view) {});

  bool v6 = selector & 8;
  UdpEndpoints reply_to;
  reply_to.src_ip = v6 ? addresses.dns_v6 : addresses.dns_v4;
  reply_to.dst_ip = v6 ? addresses.guest_v6 : addresses.guest_v4;
  reply_to.src_port = 53;
  reply_to.dst_port = 33333;

  DnsQuery query = guestQuery(selector);
  std::vector<std::string> frames;
  bool relayed = relayUpstreamReply(message, query, kUpstreamId, reply_to, 7, filter,
                                    [&frames](std::string frame) { frames.push_back(std::move(frame)); });
  if (!relayed) {
    if (!frames.empty() || filter.stats().dns_addresses_learned != 0) fail("an ignored reply had an effect");
    return 0;
  }
  if (frames.empty()) fail("a relayed reply sent the guest nothing");

  size_t udp_bytes = 0;
  for (const auto& frame : frames) {
    ParsedFrame parsed;
    if (parseFrame(bytesOf(frame), parsed) != ParseStatus::kOk || !parsed.is_ip || parsed.protocol != kProtoUdp) {
      fail("a relayed frame does not parse as UDP");
    }
    if (parsed.l3_end - parsed.l3_offset > addresses.mtu) fail("a relayed frame exceeds the MTU");
    if (parsed.src_ip != reply_to.src_ip || parsed.dst_ip != reply_to.dst_ip) fail("a relayed frame is misaddressed");
    if (parsed.is_fragment) {
      // The fragment's data: after the IPv4 header, or the IPv6 header and its fragment header.
      size_t header = parsed.src_ip.v4 ? (static_cast<uint8_t>(frame[parsed.l3_offset]) & 0x0fu) * 4u : 40u + 8u;
      udp_bytes += parsed.l3_end - parsed.l3_offset - header;
    } else {
      udp_bytes += parsed.l3_end - parsed.l4_offset;
    }
    if (frames.size() == 1) {
      if (!checksumsValid(bytesOf(frame))) fail("the relayed frame's checksums are wrong");
      std::span<const uint8_t> payload = parsed.payload;
      if (payload.size() != message.size() || payload[0] != (kGuestId >> 8) || payload[1] != (kGuestId & 0xff) ||
          std::memcmp(payload.data() + 2, message.data() + 2, message.size() - 2) != 0) {
        fail("the relayed message is not the upstream's with the guest's id");
      }
    }
  }
  if (udp_bytes != 8 + message.size()) fail("the fragments do not carry the whole message");

  auto answer = parseDnsAnswer(message);
  if (!answer) fail("a relayed reply does not parse");
  for (const auto& record : answer->addresses) {
    for (uint16_t port : {uint16_t{443}, uint16_t{80}, uint16_t{22}}) {
      if (filter.allowsDestination(record.address, kProtoTcp, port) && mustStayClosed(filter, record.address)) {
        fail("a DNS answer opened a blocked address");
      }
    }
  }
  // Time moves past the longest TTL: everything learned expires.
  now_ms += 3601'000;
  for (const auto& record : answer->addresses) {
    if (filter.allowsDestination(record.address, kProtoTcp, 443)) fail("a learned address outlived its TTL cap");
  }
  filter.sweep();
  return 0;
}
