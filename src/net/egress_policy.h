// The egress firewall: which connections a guest may open to the outside.
//
// Every frame the guest sends passes EgressFilter::onGuestFrame before it
// enters the user-mode network stack; every frame going to the guest passes
// onHostFrame (connection tracking for inbound port forwards, DNS learning).
// With no policy everything passes (malformed frames are still dropped).
// With a policy, an empty allowlist means deny all — never allow all.
// The full semantics are in docs/NETWORKING.md, "Egress policy".
//
//   net::EgressPolicy policy;
//   policy.active = true;
//   policy.rules.push_back(*net::parseEgressAllow("*.example.com:443/tcp"));
//   net::EgressFilter filter(net::GuestAddresses{}, policy);
//   std::vector<std::string> to_guest;
//   switch (filter.onGuestFrame(frame, to_guest)) {
//     case net::Verdict::kPass: slirp_input(...); break;
//     case net::Verdict::kDrop: case net::Verdict::kConsumed: break;
//   }
//   for (auto& reply : to_guest) sendToGuest(reply);   // RST / ICMP / NXDOMAIN
//   ...
//   filter.onHostFrame(frame_from_slirp); sendToGuest(frame_from_slirp);
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "microvm/result.h"
#include "net/dns.h"
#include "net/packet.h"

namespace microvm::net {

// The guest network's addresses. The defaults are the runner's slirp setup;
// the runner passes what it actually configured.
struct GuestAddresses {
  IpAddress guest_v4 = IpAddress::fromV4(0x0a00020f);    // 10.0.2.15
  IpAddress gateway_v4 = IpAddress::fromV4(0x0a000202);  // 10.0.2.2, reaches the host's loopback
  IpAddress dns_v4 = IpAddress::fromV4(0x0a000203);      // 10.0.2.3
  IpAddress guest_v6 = *IpAddress::parse("fd00::15");
  IpAddress gateway_v6 = *IpAddress::parse("fd00::2");
  IpAddress dns_v6 = *IpAddress::parse("fd00::3");
  // libslirp's IPv6 prefix: it connects every address in it (not only the
  // gateway: the DNS address too while its own DNS is off) to the host's ::1.
  IpAddress prefix_v6 = *IpAddress::parse("fd00::");
  unsigned prefix_v6_bits = 64;
  // The host's own interface addresses (the runner fills them in): a
  // connection to one reaches the host's services much as the gateway does.
  std::vector<IpAddress> host;
  size_t mtu = 1500;  // the guest's IP MTU: DNS replies larger than this are fragmented
};

enum class RuleProtocol : uint8_t { kAny, kTcp, kUdp };

// One --egress-allow or --egress-allow-cidr rule.
struct EgressRule {
  enum class Kind : uint8_t {
    kHost,      // exact DNS name: "example.com"
    kWildcard,  // "*.example.com": strict subdomains only, not example.com
    kNetwork,   // an IP address (prefix 32/128) or a CIDR
  };
  Kind kind = Kind::kHost;
  std::string host;  // kHost: the name; kWildcard: the suffix without "*." (lower case, no trailing dot)
  IpAddress network;
  unsigned prefix_bits = 0;
  uint16_t port = 0;  // 0: any port
  RuleProtocol protocol = RuleProtocol::kAny;
  std::string text;  // as given, for logs

  bool operator==(const EgressRule&) const = default;
  bool matchesName(std::string_view lower_case_name) const;
  bool matchesPort(uint8_t ip_protocol, uint16_t dst_port) const;
};

// --egress-allow HOST[:PORT][/tcp|/udp]; HOST is a DNS name, "*.suffix", an
// IPv4 address or an IPv6 address ("[v6]" when a port follows).
Result<EgressRule> parseEgressAllow(std::string_view text);
// --egress-allow-cidr CIDR[:PORT][/tcp|/udp]: "10.0.0.0/8", "10.0.0.0/8:443",
// "fd00::/8", "[fd00::]/8:443", "fd00::/8:443". Host bits must be zero.
Result<EgressRule> parseEgressAllowCidr(std::string_view text);

struct EgressPolicy {
  // False: no policy, everything passes. True: what `deny_rules` name is
  // refused, then what IP/CIDR `rules` allow passes, then the blocked ranges
  // (the host, private networks, cloud metadata) are refused, then the
  // default: deny (an active policy with no rules denies everything,
  // --egress-deny-all), or allow with `default_allow`.
  bool active = false;
  std::vector<EgressRule> rules;
  std::vector<EgressRule> deny_rules;
  bool default_allow = false;

  bool operator==(const EgressPolicy&) const = default;
};

// --egress-deny HOST|CIDR[:PORT][/tcp|/udp]: a CIDR when the address part
// has a "/prefix", else what --egress-allow takes.
Result<EgressRule> parseEgressDeny(std::string_view text);

// What the CLI's flags and the library's firewall rules ask for.
struct EgressPolicyRequest {
  std::vector<std::string> allow;       // --egress-allow
  std::vector<std::string> allow_cidr;  // --egress-allow-cidr
  std::vector<std::string> deny;        // --egress-deny
  bool deny_all = false;
  bool default_allow = false;
};
// Builds the policy: active if anything is asked.
Result<EgressPolicy> makeEgressPolicy(const EgressPolicyRequest& request);
inline Result<EgressPolicy> makeEgressPolicy(const std::vector<std::string>& allow,
                                             const std::vector<std::string>& allow_cidr, bool deny_all) {
  return makeEgressPolicy(EgressPolicyRequest{allow, allow_cidr, {}, deny_all, false});
}

enum class Verdict : uint8_t {
  kPass,      // hand the frame to the network stack
  kDrop,      // discard it (a refusal for the guest may be in to_guest)
  kConsumed,  // handled here (a DNS query went to the DNS handler, or was answered)
};

struct EgressStats {
  uint64_t frames_seen = 0;  // guest frames
  uint64_t frames_passed = 0;
  uint64_t frames_dropped = 0;  // includes the malformed ones
  uint64_t frames_malformed = 0;
  uint64_t frames_consumed = 0;
  uint64_t host_frames_seen = 0;
  uint64_t host_frames_malformed = 0;
  uint64_t dns_allowed = 0;  // queries for allowed names
  uint64_t dns_denied = 0;   // answered NXDOMAIN
  uint64_t dns_addresses_learned = 0;
  uint64_t dns_addresses_blocked = 0;  // learned addresses in blocked ranges (not usable)
  uint64_t connections_allowed = 0;    // new tracked flows, guest-initiated
  uint64_t connections_inbound = 0;    // new tracked flows, from a port forward
  uint64_t connections_refused = 0;    // TCP RST / ICMP unreachable sent
  uint64_t conntrack_entries = 0;      // current
  uint64_t conntrack_full = 0;         // new flows refused because the table was full
};

struct EgressFilterOptions {
  size_t max_frame_bytes = 65536 + kEthernetHeaderBytes;  // larger guest frames are dropped as malformed
  size_t max_conntrack_entries = 65536;
  size_t max_dynamic_addresses = 16384;
  std::chrono::seconds min_dns_ttl{30};
  std::chrono::seconds max_dns_ttl{3600};
  std::chrono::seconds tcp_idle_timeout{24 * 3600};
  std::chrono::seconds tcp_closing_timeout{120};  // after a FIN
  std::chrono::seconds udp_idle_timeout{180};
  // Milliseconds on a monotonic clock; default CLOCK_MONOTONIC_COARSE. Tests
  // substitute a fake clock to expire DNS entries.
  std::function<int64_t()> clock_ms;
};

class EgressFilter {
 public:
  using LogFn = std::function<void(std::string_view line)>;
  // Receives a guest frame that carries a UDP query to a DNS address, port
  // 53 (DnsForwarder installs itself here).
  using DnsHandler = std::function<void(const ParsedFrame& parsed, std::span<const uint8_t> frame)>;

  EgressFilter(GuestAddresses addresses, EgressPolicy policy, EgressFilterOptions options = {});

  // A frame from the guest. Replies for the guest (TCP RST, ICMP unreachable,
  // a synthesized NXDOMAIN when no DNS handler is set) are appended to
  // `to_guest`; the caller sends them after handling the verdict.
  Verdict onGuestFrame(std::span<const uint8_t> frame, std::vector<std::string>& to_guest);
  // A frame going to the guest (from the stack or the DNS forwarder is not
  // needed): tracks inbound port-forward flows and learns DNS answers that
  // the stack's own DNS relayed. Never blocks anything.
  void onHostFrame(std::span<const uint8_t> frame);

  // DNS: whether the guest may resolve `name` (counts allowed/denied and
  // logs); always true without a policy.
  bool allowsDnsName(std::string_view lower_case_name);
  // Adds the addresses of an answer for an allowed name to the dynamic allow
  // set, with the ports/protocols of the rules that allow the name, TTLs
  // clamped to [min_dns_ttl, max_dns_ttl]. No-op without a policy.
  void learnDnsAnswer(const DnsAnswer& answer);

  // UDP port forwards: datagrams from the host to these guest ports open a
  // flow that the guest may answer. (TCP needs no declaration: only a port
  // forward can deliver a SYN to the guest. UDP does: the stack delivers any
  // sender's datagram to a socket the guest opened.)
  void addInboundUdpPort(uint16_t guest_port);
  void removeInboundUdpPort(uint16_t guest_port);

  void setDnsHandler(DnsHandler handler) { dns_handler_ = std::move(handler); }
  void setLog(LogFn log) { log_ = std::move(log); }

  // Whether a new connection to dst:port over `ip_protocol` would be allowed
  // now (true without a policy). For tests, the log and ICMP echo.
  bool allowsDestination(const IpAddress& dst, uint8_t ip_protocol, uint16_t dst_port);

  // Replaces GuestAddresses::host (the runner refreshes it as the host's
  // interfaces change).
  void setHostAddresses(std::vector<IpAddress> host);
  // True for the addresses libslirp connects to the host's loopback: the
  // gateway, 255.255.255.255, every address of the IPv6 prefix, ff02::1.
  // Rules see all of them as the gateway of their family.
  bool reachesHostLoopback(const IpAddress& address) const;

  bool policyActive() const { return policy_.active; }
  const GuestAddresses& addresses() const { return addresses_; }
  const EgressStats& stats() const { return stats_; }
  // Drops expired conntrack and DNS entries (also done lazily when full).
  void sweep();

 private:
  struct FlowKey {
    IpAddress guest;
    IpAddress remote;
    uint16_t guest_port = 0;
    uint16_t remote_port = 0;
    uint8_t protocol = 0;
    bool operator==(const FlowKey&) const = default;
  };
  struct FlowKeyHash {
    size_t operator()(const FlowKey& key) const;
  };
  struct Flow {
    int64_t expires_ms = 0;
    bool closing = false;
  };
  struct Grant {
    uint16_t port = 0;
    RuleProtocol protocol = RuleProtocol::kAny;
    int64_t expires_ms = 0;
  };

  int64_t nowMs() const;
  bool isDnsService(const ParsedFrame& parsed) const;
  bool isBlockedRange(const IpAddress& address) const;
  const IpAddress& ruleAddress(const IpAddress& dst) const;
  const EgressRule* denyRuleFor(const IpAddress& dst, uint8_t ip_protocol, uint16_t dst_port) const;
  bool explicitRuleAllows(const IpAddress& dst, uint8_t ip_protocol, uint16_t dst_port,
                          const EgressRule** matched) const;
  bool dynamicAllows(const IpAddress& dst, uint8_t ip_protocol, uint16_t dst_port, int64_t now) const;
  Verdict handleDnsQuery(const ParsedFrame& parsed, std::vector<std::string>& to_guest);
  Verdict filterTransport(std::span<const uint8_t> frame, const ParsedFrame& parsed,
                          std::vector<std::string>& to_guest);
  Verdict filterIcmp(std::span<const uint8_t> frame, const ParsedFrame& parsed, std::vector<std::string>& to_guest);
  Verdict refuse(std::span<const uint8_t> frame, const ParsedFrame& parsed, std::vector<std::string>& to_guest,
                 const char* why);
  bool trackNew(const FlowKey& key, int64_t now, bool closing);
  int64_t flowTimeoutMs(uint8_t protocol, bool closing) const;
  void logFlow(const char* verdict, const ParsedFrame& parsed, const char* why);
  Verdict pass() {
    ++stats_.frames_passed;
    return Verdict::kPass;
  }
  Verdict drop() {
    ++stats_.frames_dropped;
    return Verdict::kDrop;
  }

  GuestAddresses addresses_;
  EgressPolicy policy_;
  EgressFilterOptions options_;
  EgressStats stats_;
  LogFn log_;
  DnsHandler dns_handler_;
  std::unordered_map<FlowKey, Flow, FlowKeyHash> flows_;
  std::unordered_map<IpAddress, std::vector<Grant>, IpAddressHash> dynamic_;
  std::vector<std::pair<IpAddress, unsigned>> blocked_ranges_;
  std::vector<uint16_t> inbound_udp_ports_;
};

}  // namespace microvm::net
