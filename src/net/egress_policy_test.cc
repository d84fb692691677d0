#include "net/egress_policy.h"

#include <gtest/gtest.h>

#include "net/net_test_util.h"
#include "net/network_config.h"

namespace microvm::net {
namespace {

using testing::bytes;
using testing::dnsQuery;
using testing::dnsResponse;
using testing::hostTcpFrame;
using testing::independentChecksumsOk;
using testing::ip;
using testing::rdataA;
using testing::tcpFrame;
using testing::udpFrame;

const IpAddress kGuest = ip("10.0.2.15");
const IpAddress kGuest6 = ip("fd00::15");
const IpAddress kGateway = ip("10.0.2.2");
const IpAddress kDns = ip("10.0.2.3");

// ---- rule parsing ----

TEST(EgressRules, ParsesHostForms) {
  auto rule = parseEgressAllow("API.Example.com.:443/TCP");
  ASSERT_TRUE(rule) << rule.error().message();
  EXPECT_EQ(rule->kind, EgressRule::Kind::kHost);
  EXPECT_EQ(rule->host, "api.example.com");
  EXPECT_EQ(rule->port, 443);
  EXPECT_EQ(rule->protocol, RuleProtocol::kTcp);
  EXPECT_EQ(rule->text, "API.Example.com.:443/TCP");

  rule = parseEgressAllow("*.example.com");
  ASSERT_TRUE(rule);
  EXPECT_EQ(rule->kind, EgressRule::Kind::kWildcard);
  EXPECT_EQ(rule->host, "example.com");
  EXPECT_EQ(rule->port, 0);
  EXPECT_TRUE(rule->matchesName("a.example.com"));
  EXPECT_TRUE(rule->matchesName("a.b.example.com"));
  EXPECT_FALSE(rule->matchesName("example.com"));
  EXPECT_FALSE(rule->matchesName("badexample.com"));
  EXPECT_FALSE(rule->matchesName("example.com.evil.net"));

  rule = parseEgressAllow("example.com/udp");
  ASSERT_TRUE(rule);
  EXPECT_EQ(rule->protocol, RuleProtocol::kUdp);
  EXPECT_TRUE(rule->matchesName("example.com"));
  EXPECT_FALSE(rule->matchesName("www.example.com"));
  EXPECT_TRUE(rule->matchesPort(kProtoUdp, 53));
  EXPECT_FALSE(rule->matchesPort(kProtoTcp, 53));

  rule = parseEgressAllow("1.2.3.4:80");
  ASSERT_TRUE(rule);
  EXPECT_EQ(rule->kind, EgressRule::Kind::kNetwork);
  EXPECT_EQ(rule->network, ip("1.2.3.4"));
  EXPECT_EQ(rule->prefix_bits, 32u);
  EXPECT_EQ(rule->port, 80);

  rule = parseEgressAllow("2001:db8::1");
  ASSERT_TRUE(rule);
  EXPECT_EQ(rule->network, ip("2001:db8::1"));
  EXPECT_EQ(rule->prefix_bits, 128u);
  EXPECT_EQ(rule->port, 0);

  rule = parseEgressAllow("[2001:db8::1]:8443/tcp");
  ASSERT_TRUE(rule);
  EXPECT_EQ(rule->network, ip("2001:db8::1"));
  EXPECT_EQ(rule->port, 8443);
  EXPECT_EQ(rule->protocol, RuleProtocol::kTcp);
}

TEST(EgressRules, RejectsBadHostRules) {
  struct Case {
    const char* text;
    const char* error_part;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"", "empty rule"},
           {"example.com:0", "port must be"},
           {"example.com:65536", "port must be"},
           {"example.com:http", "port must be"},
           {"example.com:", "empty port"},
           {"example.com/sctp", "--egress-allow-cidr"},
           {"10.0.0.0/8", "--egress-allow-cidr"},
           {"2001:db8::1:443x", "[ADDRESS]:PORT"},
           {"[1.2.3.4]:80", "IPv6"},
           {"[2001:db8::1", "missing ']'"},
           {"[2001:db8::1]443", "':PORT'"},
           {"foo.*.com", "'*'"},
           {"*example.com", "'*'"},
           {"*.", "'*'"},
           {"*..com", "empty label"},
           {"exa mple.com", "letters, digits"},
           {"a..com", "empty label"},
           {"999.1.1.1", "neither an IP address"},
           {":80", "empty host"},
       }) {
    auto rule = parseEgressAllow(c.text);
    ASSERT_FALSE(rule) << c.text;
    EXPECT_NE(rule.error().message().find(c.error_part), std::string::npos)
        << c.text << ": " << rule.error().message();
    EXPECT_EQ(rule.error().message().rfind("--egress-allow ", 0), 0u) << rule.error().message();
  }
}

TEST(EgressRules, ParsesCidrs) {
  auto rule = parseEgressAllowCidr("10.0.0.0/8");
  ASSERT_TRUE(rule);
  EXPECT_EQ(rule->network, ip("10.0.0.0"));
  EXPECT_EQ(rule->prefix_bits, 8u);
  EXPECT_EQ(rule->port, 0);
  rule = parseEgressAllowCidr("192.168.1.0/24:5432/tcp");
  ASSERT_TRUE(rule);
  EXPECT_EQ(rule->port, 5432);
  EXPECT_EQ(rule->protocol, RuleProtocol::kTcp);
  rule = parseEgressAllowCidr("fd00::/8:443");
  ASSERT_TRUE(rule);
  EXPECT_FALSE(rule->network.v4);
  EXPECT_EQ(rule->prefix_bits, 8u);
  EXPECT_EQ(rule->port, 443);
  rule = parseEgressAllowCidr("[2001:db8::]/32");
  ASSERT_TRUE(rule);
  EXPECT_EQ(rule->prefix_bits, 32u);
  rule = parseEgressAllowCidr("0.0.0.0/0");
  ASSERT_TRUE(rule);

  for (auto [text, part] : std::initializer_list<std::pair<const char*, const char*>>{
           {"10.0.0.0", "ADDRESS/PREFIX"},
           {"10.0.0.1/8", "did you mean 10.0.0.0/8"},
           {"10.0.0.0/33", "0 to 32"},
           {"fd00::/129", "0 to 128"},
           {"10.0.0.0/", "prefix length"},
           {"example.com/8", "not an IP address"},
           {"10.0.0.0/8:0", "port must be"},
           {"10.0.0.0/8:99999", "port must be"},
       }) {
    auto bad = parseEgressAllowCidr(text);
    ASSERT_FALSE(bad) << text;
    EXPECT_NE(bad.error().message().find(part), std::string::npos) << text << ": " << bad.error().message();
  }
}

TEST(EgressRules, MakePolicy) {
  auto none = makeEgressPolicy({}, {}, false);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->active);
  auto deny = makeEgressPolicy({}, {}, true);
  ASSERT_TRUE(deny);
  EXPECT_TRUE(deny->active);
  EXPECT_TRUE(deny->rules.empty());
  auto some = makeEgressPolicy({"example.com:443"}, {"10.1.0.0/16"}, false);
  ASSERT_TRUE(some);
  EXPECT_TRUE(some->active);
  EXPECT_EQ(some->rules.size(), 2u);
  auto bad = makeEgressPolicy({"example.com:443", "bad rule"}, {}, false);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("bad rule"), std::string::npos);
}

// ---- the filter ----

struct FakeClock {
  int64_t now_ms = 1'000'000;
  std::function<int64_t()> fn() {
    return [this] { return now_ms; };
  }
};

class FilterTest : public ::testing::Test {
 protected:
  EgressFilter make(std::vector<std::string> allow, std::vector<std::string> cidr = {}, bool deny_all = true,
                    EgressFilterOptions options = {}) {
    auto policy = makeEgressPolicy(allow, cidr, deny_all);
    EXPECT_TRUE(policy);
    options.clock_ms = clock_.fn();
    EgressFilter filter(GuestAddresses{}, *policy, options);
    filter.setLog([this](std::string_view line) { log_.emplace_back(line); });
    return filter;
  }
  Verdict guest(EgressFilter& filter, const std::string& frame) {
    to_guest_.clear();
    return filter.onGuestFrame(bytes(frame), to_guest_);
  }
  Verdict syn(EgressFilter& filter, const IpAddress& dst, uint16_t port, uint16_t sport = 40000) {
    return guest(filter, tcpFrame(dst.v4 ? kGuest : kGuest6, sport, dst, port, kTcpSyn));
  }
  Verdict udp(EgressFilter& filter, const IpAddress& dst, uint16_t port, uint16_t sport = 50000) {
    std::string payload = "ping";
    return guest(filter, udpFrame(dst.v4 ? kGuest : kGuest6, sport, dst, port, bytes(payload)));
  }
  void learn(EgressFilter& filter, const char* name, const char* address, uint32_t ttl) {
    auto answer = parseDnsAnswer(bytes(dnsResponse(1, name, kDnsTypeA, {{name, kDnsTypeA, ttl, rdataA(address)}})));
    ASSERT_TRUE(answer);
    filter.learnDnsAnswer(*answer);
  }

  FakeClock clock_;
  std::vector<std::string> to_guest_;
  std::vector<std::string> log_;
};

TEST_F(FilterTest, DenyRulesWinAndDefaultAllowPassesTheRest) {
  auto policy = makeEgressPolicy(EgressPolicyRequest{{}, {}, {"10.0.2.2:22/tcp", "192.0.2.0/24", "bad.example.com"},
                                                     false, true});
  ASSERT_TRUE(policy) << policy.error().message();
  EXPECT_EQ(policy->deny_rules.size(), 3u);
  EgressFilter filter(GuestAddresses{}, *policy, EgressFilterOptions{});
  EXPECT_EQ(syn(filter, kGateway, 22), Verdict::kDrop);
  EXPECT_FALSE(to_guest_.empty());  // refused with a RST, not silently
  // The gateway is a blocked range: only a rule naming it opens it.
  EXPECT_EQ(syn(filter, kGateway, 8080), Verdict::kDrop);
  EXPECT_EQ(syn(filter, ip("192.0.2.9"), 443), Verdict::kDrop);
  EXPECT_EQ(syn(filter, ip("198.51.100.1"), 443), Verdict::kPass);
  EXPECT_FALSE(filter.allowsDnsName("bad.example.com"));
  EXPECT_TRUE(filter.allowsDnsName("good.example.com"));

  // Deny rules also carve holes out of an allowlist.
  auto carved = makeEgressPolicy(EgressPolicyRequest{{"*.example.com"}, {"192.0.2.0/24"}, {"192.0.2.7"}, false, false});
  ASSERT_TRUE(carved);
  EgressFilter allowlist(GuestAddresses{}, *carved, EgressFilterOptions{});
  EXPECT_EQ(syn(allowlist, ip("192.0.2.8"), 80), Verdict::kPass);
  EXPECT_EQ(syn(allowlist, ip("192.0.2.7"), 80), Verdict::kDrop);
  EXPECT_EQ(syn(allowlist, ip("198.51.100.1"), 80), Verdict::kDrop);
}

TEST_F(FilterTest, DefaultAllowKeepsBlockedRangesBlocked) {
  auto policy = makeEgressPolicy(EgressPolicyRequest{{}, {}, {"bad.example.com"}, false, true});
  ASSERT_TRUE(policy);
  EgressFilter filter(GuestAddresses{}, *policy, EgressFilterOptions{});
  // The host's loopback through the gateway, metadata, private networks.
  for (const char* address : {"10.0.2.2", "169.254.169.254", "168.63.129.16", "192.168.1.1", "10.1.2.3", "127.0.0.1",
                              "100.100.100.200", "fd00::2", "fd00:ec2::254", "fe80::1"}) {
    EXPECT_EQ(syn(filter, ip(address), 8080), Verdict::kDrop) << address;
    EXPECT_EQ(udp(filter, ip(address), 8080), Verdict::kDrop) << address;
    EXPECT_FALSE(filter.allowsDestination(ip(address), kProtoTcp, 8080)) << address;
  }
  EXPECT_EQ(syn(filter, ip("198.51.100.1"), 443), Verdict::kPass);
  EXPECT_EQ(syn(filter, ip("2606:2800:220:1::248"), 443), Verdict::kPass);
  EXPECT_TRUE(filter.allowsDnsName("good.example.com"));

  // A rule that names the gateway (here with the library's explicit default
  // allow) opens it, on its port only.
  auto named = makeEgressPolicy(EgressPolicyRequest{{"10.0.2.2:8080/tcp"}, {}, {"bad.example.com"}, false, true});
  ASSERT_TRUE(named);
  EgressFilter opened(GuestAddresses{}, *named, EgressFilterOptions{});
  EXPECT_EQ(syn(opened, kGateway, 8080), Verdict::kPass);
  EXPECT_EQ(syn(opened, kGateway, 22), Verdict::kDrop);
  EXPECT_EQ(syn(opened, ip("198.51.100.1"), 22), Verdict::kPass);
}

TEST_F(FilterTest, EveryAddressTheStackSendsToTheHostIsTheGateway) {
  EgressFilter probe = make({});
  for (const char* address : {"10.0.2.2", "255.255.255.255", "fd00::2", "fd00::3", "fd00::99", "fd00::ffff:1",
                              "ff02::1"}) {
    EXPECT_TRUE(probe.reachesHostLoopback(ip(address))) << address;
  }
  for (const char* address : {"10.0.2.3", "10.0.2.99", "127.0.0.1", "fd00:0:0:1::2", "fd01::2", "ff02::2", "::1"}) {
    EXPECT_FALSE(probe.reachesHostLoopback(ip(address))) << address;
  }

  // A deny rule on the gateway covers the other names of the host's loopback,
  // even where a broad allow rule covers them.
  auto carved = makeEgressPolicy(
      EgressPolicyRequest{{}, {"fd00::/64", "ff00::/8", "240.0.0.0/4"}, {"10.0.2.2", "fd00::2"}, false, false});
  ASSERT_TRUE(carved);
  EgressFilter filter(GuestAddresses{}, *carved, EgressFilterOptions{});
  EXPECT_EQ(syn(filter, ip("fd00::3"), 8080), Verdict::kDrop);
  EXPECT_EQ(syn(filter, ip("fd00::99"), 8080), Verdict::kDrop);
  EXPECT_EQ(udp(filter, ip("ff02::1"), 8080), Verdict::kDrop);
  EXPECT_EQ(udp(filter, ip("255.255.255.255"), 8080), Verdict::kDrop);
  EXPECT_EQ(udp(filter, ip("ff02::2"), 8080), Verdict::kPass);  // not the host: the rule applies
  EXPECT_FALSE(filter.allowsDestination(ip("fd00::99"), kProtoTcp, 8080));

  // Under a denylist too.
  auto denylist = makeEgressPolicy(EgressPolicyRequest{{}, {"fd00::/64"}, {"[fd00::2]:22"}, false, true});
  ASSERT_TRUE(denylist);
  EgressFilter default_allow(GuestAddresses{}, *denylist, EgressFilterOptions{});
  EXPECT_EQ(syn(default_allow, ip("fd00::3"), 22), Verdict::kDrop);
  EXPECT_EQ(syn(default_allow, ip("fd00::3"), 80), Verdict::kPass);

  // A rule naming the gateway opens its other names on that port; a rule
  // naming another of them opens nothing (it is the host, by another name).
  EgressFilter named = make({"[fd00::2]:8080/tcp", "[fd00::99]:9090", "10.0.2.2:7070"});
  EXPECT_EQ(syn(named, ip("fd00::3"), 8080), Verdict::kPass);
  EXPECT_EQ(syn(named, ip("fd00::3"), 22), Verdict::kDrop);
  EXPECT_EQ(syn(named, ip("fd00::99"), 9090), Verdict::kDrop);
  EXPECT_EQ(udp(named, ip("255.255.255.255"), 7070), Verdict::kPass);
  EXPECT_EQ(udp(named, ip("255.255.255.255"), 22), Verdict::kDrop);
}

TEST_F(FilterTest, AzureAndTheHostsOwnAddressesAreNotLearned) {
  GuestAddresses addresses;
  addresses.host = {ip("203.0.113.7"), ip("2a01:4f8::7")};
  auto policy = makeEgressPolicy({"*.example.com"}, {}, true);
  ASSERT_TRUE(policy);
  EgressFilterOptions options;
  options.clock_ms = clock_.fn();
  EgressFilter filter(addresses, *policy, options);
  for (const char* address : {"168.63.129.16", "203.0.113.7"}) {
    learn(filter, "rebind.example.com", address, 300);
    EXPECT_EQ(syn(filter, ip(address), 80), Verdict::kDrop) << address;
  }
  EXPECT_FALSE(filter.allowsDestination(ip("2a01:4f8::7"), kProtoTcp, 80));
  EXPECT_EQ(filter.stats().dns_addresses_blocked, 2u);
  EXPECT_EQ(filter.stats().dns_addresses_learned, 0u);
  // The list follows the host's interfaces.
  filter.setHostAddresses({ip("203.0.113.8")});
  learn(filter, "a.example.com", "203.0.113.7", 300);
  EXPECT_EQ(syn(filter, ip("203.0.113.7"), 80), Verdict::kPass);
  learn(filter, "b.example.com", "203.0.113.8", 300);
  EXPECT_EQ(syn(filter, ip("203.0.113.8"), 80), Verdict::kDrop);
  // Under a denylist as well.
  auto denylist = makeEgressPolicy(EgressPolicyRequest{{}, {}, {"bad.example.com"}, false, true});
  ASSERT_TRUE(denylist);
  EgressFilter default_allow(addresses, *denylist, options);
  EXPECT_EQ(syn(default_allow, ip("203.0.113.7"), 80), Verdict::kDrop);
  EXPECT_EQ(syn(default_allow, ip("2a01:4f8::7"), 80), Verdict::kDrop);
  EXPECT_EQ(syn(default_allow, ip("203.0.113.9"), 80), Verdict::kPass);
}

TEST(EgressAddresses, DefaultsAreTheStacksAddressing) {
  // The runner configures libslirp from network_config.h and the filter
  // with GuestAddresses' defaults: they must be the same network.
  GuestAddresses addresses;
  EXPECT_EQ(addresses.guest_v4, ip(kGuestAddress4));
  EXPECT_EQ(addresses.gateway_v4, ip(kGateway4));
  EXPECT_EQ(addresses.dns_v4, ip(kNameserver4));
  EXPECT_EQ(addresses.guest_v6, ip(kGuestAddress6));
  EXPECT_EQ(addresses.gateway_v6, ip(kGateway6));
  EXPECT_EQ(addresses.dns_v6, ip(kNameserver6));
  EXPECT_EQ(addresses.prefix_v6, ip(kPrefix6));
  EXPECT_EQ(addresses.prefix_v6_bits, static_cast<unsigned>(kPrefixLength6));
}

TEST(EgressRules, DenyRulesTakeHostsAndCidrs) {
  EXPECT_EQ(parseEgressDeny("10.0.0.0/8:443/tcp")->kind, EgressRule::Kind::kNetwork);
  EXPECT_EQ(parseEgressDeny("10.0.0.0/8:443/tcp")->prefix_bits, 8u);
  EXPECT_EQ(parseEgressDeny("example.com:443/tcp")->kind, EgressRule::Kind::kHost);
  EXPECT_EQ(parseEgressDeny("*.example.com")->kind, EgressRule::Kind::kWildcard);
  EXPECT_EQ(parseEgressDeny("[fd00::]/8:443")->prefix_bits, 8u);
  auto bad = parseEgressDeny("10.1.2.3/8");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message().rfind("--egress-deny 10.1.2.3/8: ", 0), 0u) << bad.error().message();
}

TEST_F(FilterTest, NoPolicyPassesEverythingButMalformed) {
  EgressFilter filter = make({}, {}, false);
  EXPECT_FALSE(filter.policyActive());
  EXPECT_EQ(syn(filter, ip("1.1.1.1"), 443), Verdict::kPass);
  EXPECT_EQ(syn(filter, kGateway, 22), Verdict::kPass);
  EXPECT_EQ(udp(filter, ip("169.254.169.254"), 80), Verdict::kPass);
  std::string fragment = tcpFrame(kGuest, 1, ip("1.1.1.1"), 2, kTcpSyn);
  fragment[20] = 0x20;
  EXPECT_EQ(guest(filter, fragment), Verdict::kPass);
  EXPECT_EQ(guest(filter, std::string(10, 'x')), Verdict::kDrop);
  std::string truncated = tcpFrame(kGuest, 1, ip("1.1.1.1"), 2, kTcpSyn).substr(0, 40);
  EXPECT_EQ(guest(filter, truncated), Verdict::kDrop);
  std::string oversized = tcpFrame(kGuest, 1, ip("1.1.1.1"), 2, kTcpAck) + std::string(70000, '\0');
  EXPECT_EQ(guest(filter, oversized), Verdict::kDrop);
  EXPECT_TRUE(to_guest_.empty());
  EXPECT_EQ(filter.stats().frames_seen, 7u);
  EXPECT_EQ(filter.stats().frames_passed, 4u);
  EXPECT_EQ(filter.stats().frames_malformed, 3u);
  EXPECT_EQ(filter.stats().frames_dropped, 3u);
  // DNS without a handler goes to the stack.
  std::string query = dnsQuery(1, "anything.example");
  EXPECT_EQ(guest(filter, udpFrame(kGuest, 33333, kDns, 53, bytes(query))), Verdict::kPass);
}

TEST_F(FilterTest, DenyAllRefusesTcpWithRstAndUdpWithIcmp) {
  EgressFilter filter = make({});
  EXPECT_EQ(syn(filter, ip("93.184.216.34"), 443), Verdict::kDrop);
  ASSERT_EQ(to_guest_.size(), 1u);
  EXPECT_TRUE(independentChecksumsOk(to_guest_[0]));
  ParsedFrame rst;
  ASSERT_EQ(parseFrame(bytes(to_guest_[0]), rst), ParseStatus::kOk);
  EXPECT_EQ(rst.tcp_flags, kTcpRst | kTcpAck);
  EXPECT_EQ(rst.tcp_ack, 1001u);
  EXPECT_EQ(rst.src_ip, ip("93.184.216.34"));
  EXPECT_EQ(rst.dst_port, 40000);

  EXPECT_EQ(udp(filter, ip("93.184.216.34"), 443), Verdict::kDrop);
  ASSERT_EQ(to_guest_.size(), 1u);
  EXPECT_TRUE(independentChecksumsOk(to_guest_[0]));
  ParsedFrame icmp;
  ASSERT_EQ(parseFrame(bytes(to_guest_[0]), icmp), ParseStatus::kOk);
  EXPECT_EQ(icmp.icmp_type, 3);
  EXPECT_EQ(icmp.icmp_code, 13);
  EXPECT_EQ(icmp.src_ip, kGateway);

  EXPECT_EQ(udp(filter, ip("2001:db8:1::1"), 443), Verdict::kDrop);
  ASSERT_EQ(to_guest_.size(), 1u);
  ASSERT_EQ(parseFrame(bytes(to_guest_[0]), icmp), ParseStatus::kOk);
  EXPECT_EQ(icmp.protocol, kProtoIcmpv6);
  EXPECT_EQ(icmp.src_ip, ip("fd00::2"));
  EXPECT_TRUE(independentChecksumsOk(to_guest_[0]));

  EXPECT_EQ(filter.stats().connections_refused, 3u);
  EXPECT_EQ(filter.stats().connections_allowed, 0u);
  ASSERT_FALSE(log_.empty());
  EXPECT_EQ(log_[0], "deny tcp 10.0.2.15:40000 -> 93.184.216.34:443 (no rule allows it)");
}

TEST_F(FilterTest, EmptyAllowlistWithoutDenyAllFlagIsStillDenyAll) {
  // An active policy with no rules (e.g. every --egress-allow removed) denies.
  EgressPolicy policy;
  policy.active = true;
  EgressFilter filter(GuestAddresses{}, policy);
  EXPECT_EQ(syn(filter, ip("1.1.1.1"), 443), Verdict::kDrop);
  EXPECT_EQ(udp(filter, ip("1.1.1.1"), 53), Verdict::kDrop);
  EXPECT_FALSE(filter.allowsDnsName("example.com"));
}

TEST_F(FilterTest, IpRulesWithPortsAndProtocols) {
  EgressFilter filter = make({"93.184.216.34:443/tcp", "[2001:db8::1]:53/udp"});
  EXPECT_EQ(syn(filter, ip("93.184.216.34"), 443), Verdict::kPass);
  EXPECT_TRUE(to_guest_.empty());
  EXPECT_EQ(syn(filter, ip("93.184.216.34"), 80), Verdict::kDrop);
  EXPECT_EQ(udp(filter, ip("93.184.216.34"), 443), Verdict::kDrop);
  EXPECT_EQ(syn(filter, ip("93.184.216.35"), 443), Verdict::kDrop);
  EXPECT_EQ(udp(filter, ip("2001:db8::1"), 53), Verdict::kPass);
  EXPECT_EQ(syn(filter, ip("2001:db8::1"), 53), Verdict::kDrop);
  EXPECT_EQ(filter.stats().connections_allowed, 2u);
  EXPECT_EQ(log_[0], "allow tcp 10.0.2.15:40000 -> 93.184.216.34:443 (93.184.216.34:443/tcp)");
}

TEST_F(FilterTest, PrivateRangesNeedAnExplicitRule) {
  EgressFilter filter = make({"*.example.com", "10.0.2.2:8080", "fd00:ec2::254"}, {"192.168.0.0/16:5432"});
  // DNS rebinding: allowed names resolving into blocked ranges open nothing.
  for (const char* address : {"10.1.2.3", "127.0.0.1", "169.254.169.254", "172.16.0.1", "192.168.1.1",
                              "100.64.0.1", "10.0.2.2", "0.0.0.0", "224.0.0.1"}) {
    learn(filter, "rebind.example.com", address, 300);
    EXPECT_EQ(syn(filter, ip(address), 80), Verdict::kDrop) << address;
  }
  EXPECT_EQ(filter.stats().dns_addresses_blocked, 9u);
  EXPECT_EQ(filter.stats().dns_addresses_learned, 0u);
  // The gateway (the host's loopback) only on the named port.
  EXPECT_EQ(syn(filter, kGateway, 8080), Verdict::kPass);
  EXPECT_EQ(syn(filter, kGateway, 22), Verdict::kDrop);
  EXPECT_EQ(syn(filter, ip("192.168.7.7"), 5432), Verdict::kPass);
  EXPECT_EQ(syn(filter, ip("192.168.7.7"), 22), Verdict::kDrop);
  EXPECT_EQ(syn(filter, ip("fd00:ec2::254"), 80), Verdict::kPass);  // named explicitly
  EXPECT_EQ(syn(filter, ip("fd00::2"), 80), Verdict::kDrop);
  EXPECT_EQ(syn(filter, ip("fe80::1"), 80), Verdict::kDrop);
  EXPECT_EQ(syn(filter, ip("::ffff:93.184.216.34"), 80), Verdict::kDrop);
}

TEST_F(FilterTest, DnsNamesAnsweredNxDomainWithoutAHandler) {
  EgressFilter filter = make({"*.example.com:443"});
  std::string query = dnsQuery(0x4242, "example.com");  // the apex is not a subdomain
  EXPECT_EQ(guest(filter, udpFrame(kGuest, 33333, kDns, 53, bytes(query))), Verdict::kConsumed);
  ASSERT_EQ(to_guest_.size(), 1u);
  EXPECT_TRUE(independentChecksumsOk(to_guest_[0]));
  ParsedFrame reply;
  ASSERT_EQ(parseFrame(bytes(to_guest_[0]), reply), ParseStatus::kOk);
  EXPECT_EQ(reply.src_ip, kDns);
  EXPECT_EQ(reply.src_port, 53);
  EXPECT_EQ(reply.dst_ip, kGuest);
  EXPECT_EQ(reply.dst_port, 33333);
  auto answer = parseDnsAnswer(reply.payload);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->id, 0x4242);
  EXPECT_EQ(answer->rcode, DnsRcode::kNxDomain);

  query = dnsQuery(1, "api.example.com");
  EXPECT_EQ(guest(filter, udpFrame(kGuest, 33333, kDns, 53, bytes(query))), Verdict::kPass);
  // IPv6 DNS address too.
  query = dnsQuery(2, "evil.net", kDnsTypeAaaa);
  EXPECT_EQ(guest(filter, udpFrame(kGuest6, 33333, ip("fd00::3"), 53, bytes(query))), Verdict::kConsumed);
  ASSERT_EQ(to_guest_.size(), 1u);
  EXPECT_TRUE(independentChecksumsOk(to_guest_[0]));
  // A query that does not parse is dropped.
  std::string junk = "not dns";
  EXPECT_EQ(guest(filter, udpFrame(kGuest, 33333, kDns, 53, bytes(junk))), Verdict::kDrop);
  EXPECT_EQ(filter.stats().dns_denied, 2u);
  EXPECT_EQ(filter.stats().dns_allowed, 1u);
  // Other ports of the DNS address are not a way out.
  EXPECT_EQ(syn(filter, kDns, 53), Verdict::kDrop);
}

TEST_F(FilterTest, DnsHandlerConsumesQueries) {
  EgressFilter filter = make({}, {}, false);
  int handled = 0;
  filter.setDnsHandler([&](const ParsedFrame& parsed, std::span<const uint8_t>) {
    ++handled;
    EXPECT_EQ(parsed.dst_port, 53);
  });
  std::string query = dnsQuery(1, "x.example");
  EXPECT_EQ(guest(filter, udpFrame(kGuest, 1234, kDns, 53, bytes(query))), Verdict::kConsumed);
  EXPECT_EQ(guest(filter, udpFrame(kGuest, 1234, ip("8.8.8.8"), 53, bytes(query))), Verdict::kPass);
  EXPECT_EQ(handled, 1);
}

TEST_F(FilterTest, LearnedAddressesCarryTheRulePortAndExpireButFlowsStay) {
  EgressFilter filter = make({"*.example.com:443/tcp"});
  auto answer = parseDnsAnswer(bytes(dnsResponse(
      1, "api.example.com", kDnsTypeA,
      {{"api.example.com", kDnsTypeCname, 60, encodeDnsName("edge.cdn.net")},
       {"edge.cdn.net", kDnsTypeA, 5, rdataA("93.184.216.34")}})));
  ASSERT_TRUE(answer);
  filter.learnDnsAnswer(*answer);
  EXPECT_EQ(filter.stats().dns_addresses_learned, 1u);
  EXPECT_EQ(syn(filter, ip("93.184.216.34"), 80), Verdict::kDrop);   // not the rule's port
  EXPECT_EQ(udp(filter, ip("93.184.216.34"), 443), Verdict::kDrop);  // not the rule's protocol
  EXPECT_EQ(syn(filter, ip("93.184.216.34"), 443, 40001), Verdict::kPass);
  std::string data = tcpFrame(kGuest, 40001, ip("93.184.216.34"), 443, kTcpAck | kTcpPsh, 1001, 1, "GET / HTTP/1.1");

  // TTL 5 s is clamped up to 30 s.
  clock_.now_ms += 29'000;
  EXPECT_EQ(syn(filter, ip("93.184.216.34"), 443, 40002), Verdict::kPass);
  clock_.now_ms += 2'000;
  EXPECT_FALSE(filter.allowsDestination(ip("93.184.216.34"), kProtoTcp, 443));
  EXPECT_EQ(syn(filter, ip("93.184.216.34"), 443, 40003), Verdict::kDrop);
  // The flow allowed at SYN keeps going after the DNS entry expired.
  EXPECT_EQ(guest(filter, data), Verdict::kPass);
  clock_.now_ms += 3600'000;
  EXPECT_EQ(guest(filter, data), Verdict::kPass);
  // A RST ends it; afterwards the tuple is decided afresh.
  EXPECT_EQ(guest(filter, tcpFrame(kGuest, 40001, ip("93.184.216.34"), 443, kTcpRst, 2000)), Verdict::kPass);
  EXPECT_EQ(guest(filter, data), Verdict::kDrop);
  ASSERT_EQ(to_guest_.size(), 1u);  // a RST for the stale segment
}

TEST_F(FilterTest, TtlIsClampedToAnHour) {
  EgressFilter filter = make({"example.com"});
  learn(filter, "example.com", "93.184.216.34", 86400);
  clock_.now_ms += 3599'000;
  EXPECT_TRUE(filter.allowsDestination(ip("93.184.216.34"), kProtoUdp, 9));
  clock_.now_ms += 2'000;
  EXPECT_FALSE(filter.allowsDestination(ip("93.184.216.34"), kProtoUdp, 9));
  // Answers for names no rule allows teach nothing.
  learn(filter, "other.com", "1.1.1.1", 300);
  EXPECT_FALSE(filter.allowsDestination(ip("1.1.1.1"), kProtoTcp, 443));
}

TEST_F(FilterTest, Ipv6FilteredLikeIpv4) {
  EgressFilter filter = make({"v6.example.com:443"});
  IpAddress address = ip("2606:2800:220:1::248");
  std::string aaaa(reinterpret_cast<const char*>(address.bytes.data()), 16);  // SAFETY: bytes as chars
  auto answer = parseDnsAnswer(
      bytes(dnsResponse(1, "v6.example.com", kDnsTypeAaaa, {{"v6.example.com", kDnsTypeAaaa, 300, aaaa}})));
  ASSERT_TRUE(answer);
  filter.learnDnsAnswer(*answer);
  EXPECT_EQ(syn(filter, address, 443), Verdict::kPass);
  EXPECT_EQ(syn(filter, address, 80), Verdict::kDrop);
  ASSERT_EQ(to_guest_.size(), 1u);
  EXPECT_TRUE(independentChecksumsOk(to_guest_[0]));
  EXPECT_EQ(syn(filter, ip("2606:2800:220:1::249"), 443), Verdict::kDrop);
}

TEST_F(FilterTest, InboundPortForwardFlowsWorkBothWays) {
  EgressFilter filter = make({});
  // The host connects through a TCP port forward: slirp delivers a SYN from the gateway.
  filter.onHostFrame(bytes(hostTcpFrame(kGateway, 55555, kGuest, 8080, kTcpSyn)));
  EXPECT_EQ(filter.stats().connections_inbound, 1u);
  EXPECT_EQ(guest(filter, tcpFrame(kGuest, 8080, kGateway, 55555, kTcpSyn | kTcpAck, 1, 5001)), Verdict::kPass);
  EXPECT_EQ(guest(filter, tcpFrame(kGuest, 8080, kGateway, 55555, kTcpAck | kTcpPsh, 2, 5001, "hi")), Verdict::kPass);
  // Not a way for the guest to open other connections to the host.
  EXPECT_EQ(syn(filter, kGateway, 55555, 8081), Verdict::kDrop);
  // A FIN from the host shortens the flow's life; the guest's FIN/ACK still passes.
  filter.onHostFrame(bytes(hostTcpFrame(kGateway, 55555, kGuest, 8080, kTcpFin | kTcpAck)));
  EXPECT_EQ(guest(filter, tcpFrame(kGuest, 8080, kGateway, 55555, kTcpFin | kTcpAck, 4, 5002)), Verdict::kPass);
  clock_.now_ms += 121'000;
  EXPECT_EQ(guest(filter, tcpFrame(kGuest, 8080, kGateway, 55555, kTcpAck, 5, 5003)), Verdict::kDrop);

  // UDP: only declared forwards open flows (slirp hands any sender's datagram to a guest socket).
  std::string payload = "x";
  filter.onHostFrame(bytes(udpFrame(ip("198.51.100.7"), 4444, kGuest, 5353, bytes(payload), true)));
  EXPECT_EQ(udp(filter, ip("198.51.100.7"), 4444, 5353), Verdict::kDrop);
  filter.addInboundUdpPort(5353);
  filter.onHostFrame(bytes(udpFrame(ip("198.51.100.7"), 4444, kGuest, 5353, bytes(payload), true)));
  EXPECT_EQ(udp(filter, ip("198.51.100.7"), 4444, 5353), Verdict::kPass);
  filter.removeInboundUdpPort(5353);
  filter.onHostFrame(bytes(udpFrame(ip("198.51.100.8"), 4444, kGuest, 5353, bytes(payload), true)));
  EXPECT_EQ(udp(filter, ip("198.51.100.8"), 4444, 5353), Verdict::kDrop);
}

TEST_F(FilterTest, HostFramesFromTheStacksDnsTeachAddresses) {
  EgressFilter filter = make({"example.com:443"});
  std::string answer =
      dnsResponse(3, "example.com", kDnsTypeA, {{"example.com", kDnsTypeA, 300, rdataA("93.184.216.34")}});
  std::string spoofed =
      dnsResponse(3, "example.com", kDnsTypeA, {{"example.com", kDnsTypeA, 300, rdataA("6.6.6.6")}});
  // Only from the DNS address's port 53.
  filter.onHostFrame(bytes(udpFrame(ip("8.8.8.8"), 53, kGuest, 33333, bytes(spoofed), true)));
  filter.onHostFrame(bytes(udpFrame(kDns, 53, kGuest, 33333, bytes(answer), true)));
  EXPECT_EQ(syn(filter, ip("93.184.216.34"), 443), Verdict::kPass);
  EXPECT_EQ(syn(filter, ip("6.6.6.6"), 443), Verdict::kDrop);
  filter.onHostFrame(bytes(std::string(5, 'x')));
  EXPECT_EQ(filter.stats().host_frames_malformed, 1u);
}

TEST_F(FilterTest, IcmpEchoAndLocalMessages) {
  EgressFilter filter = make({"1.1.1.1:53/udp"});
  using testing::kGatewayMac;
  using testing::kGuestMac;
  EXPECT_EQ(guest(filter, buildEchoRequest(kGuestMac, kGatewayMac, kGuest, ip("1.1.1.1"), 1, 1)), Verdict::kPass);
  EXPECT_EQ(guest(filter, buildEchoRequest(kGuestMac, kGatewayMac, kGuest, ip("8.8.8.8"), 1, 1)), Verdict::kDrop);
  ASSERT_EQ(to_guest_.size(), 1u);  // administratively prohibited
  EXPECT_TRUE(independentChecksumsOk(to_guest_[0]));
  EXPECT_EQ(guest(filter, buildEchoRequest(kGuestMac, kGatewayMac, kGuest, kGateway, 1, 1)), Verdict::kPass);
  EXPECT_EQ(guest(filter, buildEchoRequest(kGuestMac, kGatewayMac, kGuest6, ip("fd00::2"), 1, 1)), Verdict::kPass);
  EXPECT_EQ(guest(filter, buildEchoRequest(kGuestMac, kGatewayMac, kGuest6, ip("2001:db8::9"), 1, 1)),
            Verdict::kDrop);
  // Neighbour solicitation (type 135) stays with the stack.
  std::string ns = buildEchoRequest(kGuestMac, kGatewayMac, kGuest6, ip("ff02::1:ff00:2"), 1, 1);
  ns[54] = static_cast<char>(135);
  EXPECT_EQ(guest(filter, ns), Verdict::kPass);
  // ARP passes; other EtherTypes and IP protocols do not.
  std::string arp(42, '\0');
  arp[12] = 0x08;
  arp[13] = 0x06;
  EXPECT_EQ(guest(filter, arp), Verdict::kPass);
  std::string vlan = arp;
  vlan[13] = 0x00;
  vlan[12] = static_cast<char>(0x81);
  EXPECT_EQ(guest(filter, vlan), Verdict::kDrop);
  std::string sctp = tcpFrame(kGuest, 1, ip("1.1.1.1"), 2, kTcpSyn);
  sctp[23] = static_cast<char>(132);
  EXPECT_EQ(guest(filter, sctp), Verdict::kDrop);
  std::string fragment = tcpFrame(kGuest, 1, ip("1.1.1.1"), 53, kTcpSyn);
  fragment[20] = 0x20;
  EXPECT_EQ(guest(filter, fragment), Verdict::kDrop);
}

TEST_F(FilterTest, ConntrackTableIsBounded) {
  EgressFilterOptions options;
  options.max_conntrack_entries = 2;
  EgressFilter filter = make({"1.1.1.1"}, {}, true, options);
  EXPECT_EQ(syn(filter, ip("1.1.1.1"), 443, 1), Verdict::kPass);
  EXPECT_EQ(syn(filter, ip("1.1.1.1"), 443, 2), Verdict::kPass);
  EXPECT_EQ(syn(filter, ip("1.1.1.1"), 443, 3), Verdict::kDrop);
  EXPECT_EQ(filter.stats().conntrack_full, 1u);
  EXPECT_EQ(filter.stats().conntrack_entries, 2u);
  // Expired entries make room.
  clock_.now_ms += 25 * 3600'000LL;
  EXPECT_EQ(syn(filter, ip("1.1.1.1"), 443, 3), Verdict::kPass);
  filter.sweep();
  EXPECT_EQ(filter.stats().conntrack_entries, 1u);
}

}  // namespace
}  // namespace microvm::net
