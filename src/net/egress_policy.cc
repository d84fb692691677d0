#include "net/egress_policy.h"

#include <time.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace microvm::net {
namespace {

Error badRule(std::string_view flag, std::string_view text, const std::string& why) {
  return Error(ErrorCode::kInvalidArgument, std::string(flag) + " " + std::string(text) + ": " + why);
}

std::string lowerCase(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Strips a "/tcp" or "/udp" suffix into `protocol`.
void takeProtocolSuffix(std::string_view& text, RuleProtocol& protocol) {
  if (text.size() < 4) return;
  std::string suffix = lowerCase(text.substr(text.size() - 4));
  if (suffix == "/tcp") protocol = RuleProtocol::kTcp;
  if (suffix == "/udp") protocol = RuleProtocol::kUdp;
  if (protocol != RuleProtocol::kAny) text.remove_suffix(4);
}

// "1".."65535"; nullopt otherwise.
std::optional<uint16_t> parsePort(std::string_view text) {
  unsigned value = 0;
  if (text.empty() || text.size() > 5) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

// A DNS name as rules accept it: labels of letters, digits, '-' and '_',
// 1..63 bytes, 253 bytes in all, and not all-numeric at the end (that is a
// mistyped address, not a name).
const char* checkHostName(std::string_view name) {
  if (name.empty()) return "empty host name";
  if (name.size() > 253) return "host name longer than 253 bytes";
  size_t label_start = 0;
  bool last_label_numeric = true;
  for (size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      size_t length = i - label_start;
      if (length == 0) return "empty label in host name";
      if (length > 63) return "label longer than 63 bytes in host name";
      label_start = i + 1;
      if (i != name.size()) last_label_numeric = true;
      continue;
    }
    char c = name[i];
    if (c == '*') return "'*' is only allowed as the whole first label: *.example.com";
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && c != '-' && c != '_') return "host name may only hold letters, digits, '-', '_' and dots";
    if (!(c >= '0' && c <= '9')) last_label_numeric = false;
  }
  if (last_label_numeric) return "neither an IP address nor a host name";
  return nullptr;
}

int64_t coarseNowMs() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
}

const char* protocolName(uint8_t protocol) {
  switch (protocol) {
    case kProtoTcp: return "tcp";
    case kProtoUdp: return "udp";
    case kProtoIcmp: return "icmp";
    case kProtoIcmpv6: return "icmpv6";
    default: return "ip";
  }
}

std::string endpoint(const IpAddress& address, uint16_t port) {
  if (address.v4) return address.toString() + ":" + std::to_string(port);
  return "[" + address.toString() + "]:" + std::to_string(port);
}

// Ranges that neither a DNS answer nor a default-allow policy can open: the
// host (the gateway reaches its loopback), link-local and cloud metadata
// (Azure's is 168.63.129.16, a public address), private and shared
// networks, multicast, and IPv6 forms that embed IPv4 addresses. Only a rule
// that names an address inside them (an IP or CIDR rule) reaches them.
std::vector<std::pair<IpAddress, unsigned>> defaultBlockedRanges() {
  static constexpr std::pair<const char*, unsigned> kRanges[] = {
      {"0.0.0.0", 8},       {"10.0.0.0", 8},     {"100.64.0.0", 10},  {"127.0.0.0", 8},
      {"169.254.0.0", 16},  {"172.16.0.0", 12},  {"192.0.0.0", 24},   {"192.168.0.0", 16},
      {"198.18.0.0", 15},   {"224.0.0.0", 4},    {"240.0.0.0", 4},    {"::", 96},
      {"::ffff:0:0", 96},   {"64:ff9b::", 96},   {"64:ff9b:1::", 48}, {"100::", 64},
      {"2001:db8::", 32},   {"2002::", 16},      {"fc00::", 7},       {"fe80::", 10},
      {"fec0::", 10},       {"ff00::", 8},       {"168.63.129.16", 32},
  };
  std::vector<std::pair<IpAddress, unsigned>> ranges;
  for (const auto& [text, bits] : kRanges) ranges.emplace_back(*IpAddress::parse(text), bits);
  return ranges;
}

}  // namespace

bool EgressRule::matchesName(std::string_view name) const {
  switch (kind) {
    case Kind::kHost: return name == host;
    case Kind::kWildcard:
      return name.size() > host.size() + 1 && name.ends_with(host) && name[name.size() - host.size() - 1] == '.';
    case Kind::kNetwork: return false;
  }
  return false;
}

bool EgressRule::matchesPort(uint8_t ip_protocol, uint16_t dst_port) const {
  switch (protocol) {
    case RuleProtocol::kAny:
      if (ip_protocol != kProtoTcp && ip_protocol != kProtoUdp) return false;
      break;
    case RuleProtocol::kTcp:
      if (ip_protocol != kProtoTcp) return false;
      break;
    case RuleProtocol::kUdp:
      if (ip_protocol != kProtoUdp) return false;
      break;
  }
  return port == 0 || port == dst_port;
}

namespace {

Result<EgressRule> parseHostRule(std::string_view text, std::string_view flag) {
  EgressRule rule;
  rule.text = std::string(text);
  std::string_view rest = text;
  takeProtocolSuffix(rest, rule.protocol);
  if (rest.empty()) return badRule(flag, text, "empty rule; expected HOST[:PORT][/tcp|/udp]");
  if (rest.find('/') != std::string_view::npos) {
    return badRule(flag, text, "'/' may only give /tcp or /udp; for networks use --egress-allow-cidr");
  }
  std::string_view host = rest;
  std::string_view port;
  if (rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return badRule(flag, text, "missing ']' after an IPv6 address");
    host = rest.substr(1, close - 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return badRule(flag, text, "expected ':PORT' after ']'");
      port = after.substr(1);
      if (port.empty()) return badRule(flag, text, "empty port");
    }
    auto address = IpAddress::parse(host);
    if (!address || address->v4) return badRule(flag, text, "brackets must hold an IPv6 address");
  } else {
    size_t colons = std::count(rest.begin(), rest.end(), ':');
    if (colons == 1) {
      size_t colon = rest.find(':');
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
      if (port.empty()) return badRule(flag, text, "empty port");
    } else if (colons > 1 && !IpAddress::parse(rest)) {
      return badRule(flag, text, "not an IPv6 address; with a port write [ADDRESS]:PORT");
    }
  }
  if (!port.empty()) {
    auto number = parsePort(port);
    if (!number) return badRule(flag, text, "port must be a number from 1 to 65535");
    rule.port = *number;
  }
  if (host.empty()) return badRule(flag, text, "empty host");
  if (auto address = IpAddress::parse(host)) {
    rule.kind = EgressRule::Kind::kNetwork;
    rule.network = *address;
    rule.prefix_bits = address->v4 ? 32 : 128;
    return rule;
  }
  std::string name = lowerCase(host);
  if (name.ends_with('.')) name.pop_back();  // fully qualified
  if (name.starts_with("*.")) {
    rule.kind = EgressRule::Kind::kWildcard;
    name.erase(0, 2);
  }
  if (const char* why = checkHostName(name)) return badRule(flag, text, why);
  rule.host = std::move(name);
  return rule;
}

Result<EgressRule> parseCidrRule(std::string_view text, std::string_view flag) {
  EgressRule rule;
  rule.kind = EgressRule::Kind::kNetwork;
  rule.text = std::string(text);
  std::string_view rest = text;
  takeProtocolSuffix(rest, rule.protocol);
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return badRule(flag, text, "expected ADDRESS/PREFIX[:PORT], e.g. 10.0.0.0/8");
  std::string_view address_text = rest.substr(0, slash);
  std::string_view after = rest.substr(slash + 1);
  if (address_text.size() >= 2 && address_text.front() == '[' && address_text.back() == ']') {
    address_text = address_text.substr(1, address_text.size() - 2);
  }
  auto address = IpAddress::parse(address_text);
  if (!address) return badRule(flag, text, "'" + std::string(address_text) + "' is not an IP address");
  std::string_view prefix_text = after;
  size_t colon = after.find(':');
  if (colon != std::string_view::npos) {
    prefix_text = after.substr(0, colon);
    auto port = parsePort(after.substr(colon + 1));
    if (!port) return badRule(flag, text, "port must be a number from 1 to 65535");
    rule.port = *port;
  }
  unsigned bits = 0;
  unsigned max_bits = address->v4 ? 32 : 128;
  auto [end, ec] = std::from_chars(prefix_text.data(), prefix_text.data() + prefix_text.size(), bits);
  if (prefix_text.empty() || ec != std::errc() || end != prefix_text.data() + prefix_text.size() || bits > max_bits) {
    return badRule(flag, text, "prefix length must be a number from 0 to " + std::to_string(max_bits));
  }
  // Host bits must be zero: "10.1.2.3/8" is more likely a typo than a wish.
  IpAddress network;
  network.v4 = address->v4;
  for (unsigned bit = 0; bit < bits; ++bit) {
    uint8_t mask = static_cast<uint8_t>(0x80 >> (bit % 8));
    network.bytes[bit / 8] |= address->bytes[bit / 8] & mask;
  }
  if (!(network == *address)) {
    return badRule(flag, text,
                   "host bits are set; did you mean " + network.toString() + "/" + std::to_string(bits) + "?");
  }
  rule.network = network;
  rule.prefix_bits = bits;
  return rule;
}

}  // namespace

Result<EgressRule> parseEgressAllow(std::string_view text) { return parseHostRule(text, "--egress-allow"); }

Result<EgressRule> parseEgressAllowCidr(std::string_view text) { return parseCidrRule(text, "--egress-allow-cidr"); }

Result<EgressRule> parseEgressDeny(std::string_view text) {
  // A "/" followed by a digit is a prefix length; "/tcp" and "/udp" are not.
  for (size_t slash = text.find('/'); slash != std::string_view::npos; slash = text.find('/', slash + 1)) {
    if (slash + 1 < text.size() && text[slash + 1] >= '0' && text[slash + 1] <= '9') {
      return parseCidrRule(text, "--egress-deny");
    }
  }
  return parseHostRule(text, "--egress-deny");
}

Result<EgressPolicy> makeEgressPolicy(const EgressPolicyRequest& request) {
  EgressPolicy policy;
  policy.active = request.deny_all || request.default_allow || !request.allow.empty() ||
                  !request.allow_cidr.empty() || !request.deny.empty();
  policy.default_allow = request.default_allow && !request.deny_all;
  for (const auto& text : request.allow) {
    auto rule = parseEgressAllow(text);
    if (!rule) return rule.error();
    policy.rules.push_back(std::move(*rule));
  }
  for (const auto& text : request.allow_cidr) {
    auto rule = parseEgressAllowCidr(text);
    if (!rule) return rule.error();
    policy.rules.push_back(std::move(*rule));
  }
  for (const auto& text : request.deny) {
    auto rule = parseEgressDeny(text);
    if (!rule) return rule.error();
    policy.deny_rules.push_back(std::move(*rule));
  }
  return policy;
}

EgressFilter::EgressFilter(GuestAddresses addresses, EgressPolicy policy, EgressFilterOptions options)
    : addresses_(std::move(addresses)),
      policy_(std::move(policy)),
      options_(std::move(options)),
      blocked_ranges_(defaultBlockedRanges()) {
  // The runner's own addresses are never a destination, whatever its subnet.
  for (const IpAddress* own : {&addresses_.gateway_v4, &addresses_.dns_v4, &addresses_.guest_v4,
                               &addresses_.gateway_v6, &addresses_.dns_v6, &addresses_.guest_v6}) {
    blocked_ranges_.emplace_back(*own, own->v4 ? 32 : 128);
  }
  flows_.reserve(std::min<size_t>(options_.max_conntrack_entries, 1024));
}

int64_t EgressFilter::nowMs() const { return options_.clock_ms ? options_.clock_ms() : coarseNowMs(); }

size_t EgressFilter::FlowKeyHash::operator()(const FlowKey& key) const {
  uint64_t words[4];
  std::memcpy(words, key.guest.bytes.data(), 16);
  std::memcpy(words + 2, key.remote.bytes.data(), 16);
  uint64_t h = (static_cast<uint64_t>(key.guest_port) << 32) ^ (static_cast<uint64_t>(key.remote_port) << 16) ^
               key.protocol ^ (key.remote.v4 ? 0x100 : 0);
  for (uint64_t word : words) {
    h ^= word;
    h *= 0x9e3779b97f4a7c15ULL;
    h ^= h >> 29;
  }
  return static_cast<size_t>(h);
}

bool EgressFilter::isDnsService(const ParsedFrame& parsed) const {
  return parsed.protocol == kProtoUdp && parsed.has_l4 && parsed.dst_port == 53 &&
         (parsed.dst_ip == addresses_.dns_v4 || parsed.dst_ip == addresses_.dns_v6);
}

bool EgressFilter::isBlockedRange(const IpAddress& address) const {
  for (const auto& [network, bits] : blocked_ranges_) {
    if (address.inPrefix(network, bits)) return true;
  }
  return std::find(addresses_.host.begin(), addresses_.host.end(), address) != addresses_.host.end();
}

void EgressFilter::setHostAddresses(std::vector<IpAddress> host) { addresses_.host = std::move(host); }

bool EgressFilter::reachesHostLoopback(const IpAddress& address) const {
  // libslirp 4.7, sotranslate_out: the gateway and the limited broadcast
  // address become 127.0.0.1; every address of the prefix and the all-nodes
  // multicast group become ::1.
  static const IpAddress kBroadcast = IpAddress::fromV4(0xffffffff);
  static const IpAddress kAllNodes = *IpAddress::parse("ff02::1");
  if (address.v4) return address == addresses_.gateway_v4 || address == kBroadcast;
  return address.inPrefix(addresses_.prefix_v6, addresses_.prefix_v6_bits) || address == kAllNodes;
}

// What rules are matched against: every address that libslirp connects to
// the host's loopback is the gateway, so that a rule naming (or denying) the
// gateway covers all of them and a rule naming another of them (a CIDR over
// fd00::/64, say) does not open the host by another name.
const IpAddress& EgressFilter::ruleAddress(const IpAddress& dst) const {
  if (!reachesHostLoopback(dst)) return dst;
  return dst.v4 ? addresses_.gateway_v4 : addresses_.gateway_v6;
}

const EgressRule* EgressFilter::denyRuleFor(const IpAddress& dst, uint8_t ip_protocol, uint16_t dst_port) const {
  for (const EgressRule& rule : policy_.deny_rules) {
    if (rule.kind != EgressRule::Kind::kNetwork || !dst.inPrefix(rule.network, rule.prefix_bits)) continue;
    if (ip_protocol == kProtoIcmp || ip_protocol == kProtoIcmpv6 || rule.matchesPort(ip_protocol, dst_port)) return &rule;
  }
  return nullptr;
}

bool EgressFilter::explicitRuleAllows(const IpAddress& dst, uint8_t ip_protocol, uint16_t dst_port,
                                      const EgressRule** matched) const {
  for (const EgressRule& rule : policy_.rules) {
    if (rule.kind != EgressRule::Kind::kNetwork || !dst.inPrefix(rule.network, rule.prefix_bits)) continue;
    // ICMP echo (port 0 here) needs only the address.
    if (ip_protocol == kProtoIcmp || ip_protocol == kProtoIcmpv6 || rule.matchesPort(ip_protocol, dst_port)) {
      if (matched) *matched = &rule;
      return true;
    }
  }
  return false;
}

bool EgressFilter::dynamicAllows(const IpAddress& dst, uint8_t ip_protocol, uint16_t dst_port, int64_t now) const {
  auto it = dynamic_.find(dst);
  if (it == dynamic_.end()) return false;
  bool echo = ip_protocol == kProtoIcmp || ip_protocol == kProtoIcmpv6;
  for (const Grant& grant : it->second) {
    if (grant.expires_ms <= now) continue;
    if (echo) return true;
    EgressRule probe;
    probe.port = grant.port;
    probe.protocol = grant.protocol;
    if (probe.matchesPort(ip_protocol, dst_port)) return true;
  }
  return false;
}

bool EgressFilter::allowsDestination(const IpAddress& destination, uint8_t ip_protocol, uint16_t dst_port) {
  if (!policy_.active) return true;
  const IpAddress& dst = ruleAddress(destination);
  if (denyRuleFor(dst, ip_protocol, dst_port)) return false;
  if (explicitRuleAllows(dst, ip_protocol, dst_port, nullptr)) return true;
  if (isBlockedRange(dst)) return false;
  return policy_.default_allow || dynamicAllows(dst, ip_protocol, dst_port, nowMs());
}

bool EgressFilter::allowsDnsName(std::string_view name) {
  if (!policy_.active) return true;
  auto names = [&](const EgressRule& rule) { return rule.matchesName(name); };
  bool allowed = !std::any_of(policy_.deny_rules.begin(), policy_.deny_rules.end(), names) &&
                 (policy_.default_allow || std::any_of(policy_.rules.begin(), policy_.rules.end(), names));
  if (allowed) {
    ++stats_.dns_allowed;
  } else {
    ++stats_.dns_denied;
  }
  if (log_) log_(std::string(allowed ? "allow dns " : "deny dns ") + std::string(name) + (allowed ? "" : " (nxdomain)"));
  return allowed;
}

void EgressFilter::learnDnsAnswer(const DnsAnswer& answer) {
  if (!policy_.active || answer.addresses.empty()) return;
  int64_t now = nowMs();
  for (const DnsAddressRecord& record : answer.addresses) {
    if (isBlockedRange(record.address)) {
      // DNS rebinding: a public name must not open the host or private networks.
      ++stats_.dns_addresses_blocked;
      if (log_) log_("ignore dns " + answer.question.name + " -> " + record.address.toString() + " (blocked range)");
      continue;
    }
    auto ttl = std::clamp<int64_t>(record.ttl, options_.min_dns_ttl.count(), options_.max_dns_ttl.count());
    int64_t expires = now + ttl * 1000;
    auto existing = dynamic_.find(record.address);
    if (existing == dynamic_.end()) {
      if (dynamic_.size() >= options_.max_dynamic_addresses) sweep();
      if (dynamic_.size() >= options_.max_dynamic_addresses) {
        if (log_) log_("ignore dns " + answer.question.name + " -> " + record.address.toString() + " (table full)");
        continue;
      }
      existing = dynamic_.emplace(record.address, std::vector<Grant>{}).first;
    }
    bool learned = false;
    for (const EgressRule& rule : policy_.rules) {
      if (!rule.matchesName(answer.question.name)) continue;
      auto grant = std::find_if(existing->second.begin(), existing->second.end(), [&](const Grant& g) {
        return g.port == rule.port && g.protocol == rule.protocol;
      });
      if (grant == existing->second.end()) {
        existing->second.push_back({rule.port, rule.protocol, expires});
      } else {
        grant->expires_ms = std::max(grant->expires_ms, expires);
      }
      learned = true;
    }
    if (!learned) continue;
    ++stats_.dns_addresses_learned;
    if (log_) {
      log_("learn dns " + answer.question.name + " -> " + record.address.toString() + " ttl " + std::to_string(ttl) +
           "s");
    }
  }
}

void EgressFilter::addInboundUdpPort(uint16_t guest_port) {
  if (std::find(inbound_udp_ports_.begin(), inbound_udp_ports_.end(), guest_port) == inbound_udp_ports_.end()) {
    inbound_udp_ports_.push_back(guest_port);
  }
}

void EgressFilter::removeInboundUdpPort(uint16_t guest_port) {
  std::erase(inbound_udp_ports_, guest_port);
}

void EgressFilter::sweep() {
  int64_t now = nowMs();
  std::erase_if(flows_, [&](const auto& entry) { return entry.second.expires_ms <= now; });
  for (auto it = dynamic_.begin(); it != dynamic_.end();) {
    std::erase_if(it->second, [&](const Grant& grant) { return grant.expires_ms <= now; });
    it = it->second.empty() ? dynamic_.erase(it) : std::next(it);
  }
  stats_.conntrack_entries = flows_.size();
}

int64_t EgressFilter::flowTimeoutMs(uint8_t protocol, bool closing) const {
  if (protocol == kProtoUdp) return options_.udp_idle_timeout.count() * 1000;
  return (closing ? options_.tcp_closing_timeout : options_.tcp_idle_timeout).count() * 1000;
}

bool EgressFilter::trackNew(const FlowKey& key, int64_t now, bool closing) {
  if (flows_.size() >= options_.max_conntrack_entries) sweep();
  if (flows_.size() >= options_.max_conntrack_entries) {
    ++stats_.conntrack_full;
    return false;
  }
  flows_[key] = Flow{now + flowTimeoutMs(key.protocol, closing), closing};
  stats_.conntrack_entries = flows_.size();
  return true;
}

void EgressFilter::logFlow(const char* verdict, const ParsedFrame& parsed, const char* why) {
  if (!log_) return;
  log_(std::string(verdict) + " " + protocolName(parsed.protocol) + " " + endpoint(parsed.src_ip, parsed.src_port) +
       " -> " + endpoint(parsed.dst_ip, parsed.dst_port) + " (" + why + ")");
}

Verdict EgressFilter::refuse(std::span<const uint8_t> frame, const ParsedFrame& parsed,
                             std::vector<std::string>& to_guest, const char* why) {
  std::string reply;
  if (parsed.protocol == kProtoTcp) {
    reply = buildTcpReset(parsed);
  } else {
    reply = buildIcmpProhibited(frame, parsed, parsed.src_ip.v4 ? addresses_.gateway_v4 : addresses_.gateway_v6);
  }
  if (!reply.empty()) to_guest.push_back(std::move(reply));
  ++stats_.connections_refused;
  logFlow("deny", parsed, why);
  return drop();
}

Verdict EgressFilter::handleDnsQuery(const ParsedFrame& parsed, std::vector<std::string>& to_guest) {
  auto query = parseDnsQuery(parsed.payload);
  if (!query) {
    if (log_) log_("drop dns query: " + query.error().message());
    return drop();
  }
  if (allowsDnsName(query->question.name)) return pass();
  std::string reply = buildDnsErrorReply(parsed.payload, *query, DnsRcode::kNxDomain);
  // SAFETY: viewing the reply's chars as bytes; uint8_t may alias them.
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(reply.data()), reply.size());
  for (auto& frame : buildUdpFrames(replyEndpoints(parsed), bytes, addresses_.mtu)) to_guest.push_back(std::move(frame));
  ++stats_.frames_consumed;
  return Verdict::kConsumed;
}

Verdict EgressFilter::onGuestFrame(std::span<const uint8_t> frame, std::vector<std::string>& to_guest) {
  ++stats_.frames_seen;
  ParsedFrame parsed;
  if (frame.size() > options_.max_frame_bytes || parseFrame(frame, parsed) != ParseStatus::kOk) {
    ++stats_.frames_malformed;
    return drop();
  }
  if (!parsed.is_ip) {
    // ARP is how the guest finds the gateway; other EtherTypes (VLANs, raw
    // Ethernet protocols) have no business leaving under a policy.
    if (!policy_.active || parsed.ether_type == kEtherTypeArp) return pass();
    return drop();
  }
  if (isDnsService(parsed)) {
    if (dns_handler_) {
      dns_handler_(parsed, frame);
      ++stats_.frames_consumed;
      return Verdict::kConsumed;
    }
    if (policy_.active) return handleDnsQuery(parsed, to_guest);
    return pass();
  }
  if (!policy_.active) return pass();
  if (parsed.is_fragment) {
    // A fragment's ports cannot be checked; the guest's own traffic (TCP with
    // path MTU discovery, small UDP) does not fragment.
    logFlow("deny", parsed, "ip fragment");
    return drop();
  }
  switch (parsed.protocol) {
    case kProtoTcp:
    case kProtoUdp: return filterTransport(frame, parsed, to_guest);
    case kProtoIcmp:
    case kProtoIcmpv6: return filterIcmp(frame, parsed, to_guest);
    default: logFlow("deny", parsed, "protocol not allowed"); return drop();
  }
}

Verdict EgressFilter::filterTransport(std::span<const uint8_t> frame, const ParsedFrame& parsed,
                                      std::vector<std::string>& to_guest) {
  FlowKey key{parsed.src_ip, parsed.dst_ip, parsed.src_port, parsed.dst_port, parsed.protocol};
  bool tcp = parsed.protocol == kProtoTcp;
  int64_t now = nowMs();
  auto flow = flows_.find(key);
  if (flow != flows_.end()) {
    bool reopened = tcp && parsed.isTcpSyn() && flow->second.closing;
    if (flow->second.expires_ms > now && !reopened) {
      if (tcp && (parsed.tcp_flags & kTcpRst)) {
        flows_.erase(flow);
        stats_.conntrack_entries = flows_.size();
        return pass();
      }
      if (tcp && (parsed.tcp_flags & kTcpFin)) flow->second.closing = true;
      flow->second.expires_ms = now + flowTimeoutMs(parsed.protocol, flow->second.closing);
      return pass();
    }
    flows_.erase(flow);  // expired, or a closed connection's tuple reused: decide afresh
    stats_.conntrack_entries = flows_.size();
  }
  // A RST of an unknown flow says nothing and needs no answer. Other TCP
  // segments outside any flow (the tail of a connection the peer reset, a
  // retransmission after the entry expired) get a RST so that the socket
  // fails at once, but they are not connection attempts: the refusal count
  // means attempts (SYNs and new UDP flows) only.
  if (tcp && (parsed.tcp_flags & kTcpRst)) return drop();
  if (tcp && !parsed.isTcpSyn()) {
    if (std::string reset = buildTcpReset(parsed); !reset.empty()) to_guest.push_back(std::move(reset));
    logFlow("reset", parsed, "not part of a known connection");
    return drop();
  }

  const EgressRule* rule = nullptr;
  const char* why = nullptr;
  const IpAddress& dst = ruleAddress(parsed.dst_ip);
  if (const EgressRule* deny = denyRuleFor(dst, parsed.protocol, parsed.dst_port)) {
    return refuse(frame, parsed, to_guest, ("denied by " + deny->text).c_str());
  } else if (explicitRuleAllows(dst, parsed.protocol, parsed.dst_port, &rule)) {
    why = rule->text.c_str();
  } else if (isBlockedRange(dst)) {
    // Before the default: a denylist does not open the host or private networks either.
    return refuse(frame, parsed, to_guest, "address in a blocked range and no IP rule names it");
  } else if (policy_.default_allow) {
    why = "default allow";
  } else if (dynamicAllows(dst, parsed.protocol, parsed.dst_port, now)) {
    why = "dns";
  } else {
    return refuse(frame, parsed, to_guest, "no rule allows it");
  }
  if (!trackNew(key, now, tcp && (parsed.tcp_flags & kTcpFin))) {
    return refuse(frame, parsed, to_guest, "connection table full");
  }
  ++stats_.connections_allowed;
  logFlow("allow", parsed, why);
  return pass();
}

Verdict EgressFilter::filterIcmp(std::span<const uint8_t> frame, const ParsedFrame& parsed,
                                 std::vector<std::string>& to_guest) {
  bool v6 = parsed.protocol == kProtoIcmpv6;
  uint8_t type = parsed.icmp_type;
  // Neighbour discovery and multicast listener messages stay on the link
  // with the stack: router/neighbour solicitation and advertisement, MLD.
  if (v6 && ((type >= 133 && type <= 137) || (type >= 130 && type <= 132) || type == 143)) return pass();
  bool echo_request = v6 ? type == 128 : type == 8;
  if (!echo_request) {
    // Errors and other messages from the guest: the stack would not forward
    // them anyway.
    return drop();
  }
  // Pings of the gateway and DNS addresses never leave the stack.
  const IpAddress& dst = parsed.dst_ip;
  if (dst == addresses_.gateway_v4 || dst == addresses_.dns_v4 || dst == addresses_.gateway_v6 ||
      dst == addresses_.dns_v6) {
    return pass();
  }
  bool allowed = allowsDestination(dst, parsed.protocol, 0);
  if (!allowed) return refuse(frame, parsed, to_guest, "no rule allows the address");
  return pass();
}

void EgressFilter::onHostFrame(std::span<const uint8_t> frame) {
  ++stats_.host_frames_seen;
  ParsedFrame parsed;
  if (parseFrame(frame, parsed) != ParseStatus::kOk) {
    ++stats_.host_frames_malformed;
    return;
  }
  if (!policy_.active || !parsed.has_l4) return;
  if (parsed.protocol == kProtoUdp) {
    if (parsed.src_port == 53 && (parsed.src_ip == addresses_.dns_v4 || parsed.src_ip == addresses_.dns_v6)) {
      // The stack's own DNS relayed an answer (no forwarder in use): learn it
      // if the guest may resolve the name at all.
      auto answer = parseDnsAnswer(parsed.payload);
      if (answer && std::any_of(policy_.rules.begin(), policy_.rules.end(), [&](const EgressRule& rule) {
            return rule.matchesName(answer->question.name);
          })) {
        learnDnsAnswer(*answer);
      }
      return;
    }
    if (std::find(inbound_udp_ports_.begin(), inbound_udp_ports_.end(), parsed.dst_port) ==
        inbound_udp_ports_.end()) {
      return;
    }
  } else if (parsed.protocol != kProtoTcp) {
    return;
  }
  FlowKey key{parsed.dst_ip, parsed.src_ip, parsed.dst_port, parsed.src_port, parsed.protocol};
  int64_t now = nowMs();
  if (parsed.protocol == kProtoTcp) {
    if (parsed.isTcpSyn()) {
      auto flow = flows_.find(key);
      if (flow == flows_.end() || flow->second.expires_ms <= now || flow->second.closing) {
        if (trackNew(key, now, false)) {
          ++stats_.connections_inbound;
          logFlow("allow inbound", parsed, "port forward");
        }
      }
      return;
    }
    if (!(parsed.tcp_flags & (kTcpFin | kTcpRst))) return;  // the common case: no lookup
    auto flow = flows_.find(key);
    if (flow == flows_.end()) return;
    if (parsed.tcp_flags & kTcpRst) {
      flows_.erase(flow);
      stats_.conntrack_entries = flows_.size();
    } else {
      flow->second.closing = true;
      flow->second.expires_ms = std::min(flow->second.expires_ms, now + flowTimeoutMs(kProtoTcp, true));
    }
    return;
  }
  auto flow = flows_.find(key);
  if (flow != flows_.end() && flow->second.expires_ms > now) {
    flow->second.expires_ms = now + flowTimeoutMs(kProtoUdp, false);
    return;
  }
  if (trackNew(key, now, false)) {
    ++stats_.connections_inbound;
    logFlow("allow inbound", parsed, "udp port forward");
  }
}

}  // namespace microvm::net
