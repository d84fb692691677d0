#include "runner/guest_network.h"

#include <algorithm>

#include "net/dns_forwarder.h"
#include "net/egress_policy.h"
#include "net/slirp_network.h"

namespace microvm {

namespace {

constexpr auto kSweepInterval = std::chrono::seconds(10);

// Docker's special --add-host value: the address that reaches the host.
constexpr char kHostGateway[] = "host-gateway";

net::IpAddress toNet(const VmSpec::IpAddress& address) {
  return address.v4 ? net::IpAddress::fromV4Bytes(address.bytes.data())
                    : net::IpAddress::fromV6Bytes(address.bytes.data());
}

VmSpec::IpAddress fromNet(const net::IpAddress& address) { return {address.bytes, address.v4}; }

net::EgressRule toNet(const VmSpec::EgressRule& rule) {
  net::EgressRule out;
  out.kind = static_cast<net::EgressRule::Kind>(rule.kind);
  out.host = rule.host;
  out.network = toNet(rule.network);
  out.prefix_bits = rule.prefix_bits;
  out.port = rule.port;
  out.protocol = static_cast<net::RuleProtocol>(rule.protocol);
  out.text = rule.text;
  return out;
}

VmSpec::EgressRule fromNet(const net::EgressRule& rule) {
  return {static_cast<VmSpec::EgressRule::Kind>(rule.kind), rule.host, fromNet(rule.network), rule.prefix_bits,
          rule.port, static_cast<VmSpec::EgressRule::Protocol>(rule.protocol), rule.text};
}

// The mirrored enums must keep net's numbering.
static_assert(static_cast<int>(VmSpec::EgressRule::Kind::kWildcard) == static_cast<int>(net::EgressRule::Kind::kWildcard));
static_assert(static_cast<int>(VmSpec::EgressRule::Kind::kNetwork) == static_cast<int>(net::EgressRule::Kind::kNetwork));
static_assert(static_cast<int>(VmSpec::EgressRule::Protocol::kTcp) == static_cast<int>(net::RuleProtocol::kTcp));
static_assert(static_cast<int>(VmSpec::EgressRule::Protocol::kUdp) == static_cast<int>(net::RuleProtocol::kUdp));

bool sameRule(const net::EgressRule& a, const net::EgressRule& b) {
  return a.kind == b.kind && a.host == b.host && a.network == b.network && a.prefix_bits == b.prefix_bits &&
         a.port == b.port && a.protocol == b.protocol && a.text == b.text;
}

bool sameRules(const std::vector<net::EgressRule>& a, const std::vector<net::EgressRule>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), sameRule);
}

}  // namespace

bool GuestNetworkPlan::operator==(const GuestNetworkPlan& other) const {
  auto same_dns = [](const net::DnsUpstream& a, const net::DnsUpstream& b) {
    return a.address == b.address && a.port == b.port;
  };
  return ports == other.ports && std::equal(dns.begin(), dns.end(), other.dns.begin(), other.dns.end(), same_dns) &&
         egress.active == other.egress.active && sameRules(egress.rules, other.egress.rules) &&
         sameRules(egress.deny_rules, other.egress.deny_rules) && egress.default_allow == other.egress.default_allow &&
         egress_log == other.egress_log;
}

namespace {

// The network of a spec.json written before it was stored parsed.
Result<GuestNetworkPlan> parseLegacyNetwork(const VmSpec& spec) {
  GuestNetworkPlan plan;
  for (const auto& text : spec.ports) {
    auto mapping = net::parsePortMapping(text);
    if (!mapping) return std::move(mapping).error();
    plan.ports.push_back(*mapping);
  }
  for (const auto& text : spec.dns) {
    auto upstream = net::parseDnsUpstream(text);
    if (!upstream) return std::move(upstream).error();
    plan.dns.push_back(*upstream);
  }
  auto policy = net::makeEgressPolicy(net::EgressPolicyRequest{spec.egress_allow, spec.egress_allow_cidr,
                                                               spec.egress_deny, spec.egress_deny_all,
                                                               spec.egress_default_allow});
  if (!policy) return std::move(policy).error();
  plan.egress = std::move(*policy);
  plan.egress_log = spec.egress_log;
  return plan;
}

}  // namespace

Result<GuestNetworkPlan> guestNetworkPlan(const VmSpec& spec) {
  const auto& parsed = spec.parsed_network;
  if (!parsed.recorded) return parseLegacyNetwork(spec);
  GuestNetworkPlan plan;
  for (const auto& port : parsed.ports) {
    plan.ports.push_back(
        {port.host_ip, port.host_port, port.guest_port, port.udp ? net::Transport::kUdp : net::Transport::kTcp});
  }
  for (const auto& upstream : parsed.dns) plan.dns.push_back({toNet(upstream.address), upstream.port});
  plan.egress.active = parsed.egress_active;
  for (const auto& rule : parsed.egress_rules) plan.egress.rules.push_back(toNet(rule));
  for (const auto& rule : parsed.egress_deny_rules) plan.egress.deny_rules.push_back(toNet(rule));
  plan.egress.default_allow = parsed.egress_default_allow;
  plan.egress_log = spec.egress_log;
  return plan;
}

VmSpec::ParsedNetwork parsedNetwork(const GuestNetworkPlan& plan) {
  VmSpec::ParsedNetwork parsed;
  for (const auto& port : plan.ports) {
    parsed.ports.push_back({port.host_ip, port.host_port, port.guest_port, port.transport == net::Transport::kUdp});
  }
  for (const auto& upstream : plan.dns) parsed.dns.push_back({fromNet(upstream.address), upstream.port});
  parsed.egress_active = plan.egress.active;
  for (const auto& rule : plan.egress.rules) parsed.egress_rules.push_back(fromNet(rule));
  for (const auto& rule : plan.egress.deny_rules) parsed.egress_deny_rules.push_back(fromNet(rule));
  parsed.egress_default_allow = plan.egress.default_allow;
  return parsed;
}

GuestNetwork::GuestNetwork(EventLoop& loop, Log log) : loop_(loop), log_(std::move(log)) {}

GuestNetwork::~GuestNetwork() {
  if (sweeping_) loop_.cancelTimer(sweep_timer_);
  stack_.reset();
  dns_.reset();
  filter_.reset();
}

Result<std::unique_ptr<GuestNetwork>> GuestNetwork::create(EventLoop& loop, UniqueFd stream,
                                                           const GuestNetworkPlan& plan, Log log) {
  std::unique_ptr<GuestNetwork> network(new GuestNetwork(loop, std::move(log)));
  bool active = plan.egress.active;
  // Every guest frame passes the filter, with or without a policy: it also
  // drops malformed frames before libslirp parses them.
  // GuestAddresses' defaults are network_config.h's addressing, which the
  // stack is configured with; the host's own addresses are this host's.
  net::GuestAddresses addresses;
  addresses.host = net::hostInterfaceAddresses();
  network->filter_ = std::make_unique<net::EgressFilter>(std::move(addresses), plan.egress);
  if (plan.egress_log) {
    network->filter_->setLog([log = network->log_](std::string_view line) { log("egress: " + std::string(line)); });
  }

  net::DnsForwarderOptions dns_options;
  dns_options.upstreams = plan.dns;
  if (dns_options.upstreams.empty()) dns_options.upstreams = net::hostDnsUpstreams();

  net::SlirpNetworkOptions options;
  // The gateway reaches the host's loopback as in QEMU's user networking;
  // under a policy the filter refuses it unless a rule allows it.
  options.host_loopback = true;
  // DNS is the forwarder's (upstream of our choice, policy applied).
  options.builtin_dns = false;
  options.mtu = net::kGuestMtu;
  auto stack = net::SlirpNetwork::create(loop, std::move(stream), options);
  if (!stack) return std::move(stack).error();
  network->stack_ = std::move(*stack);
  net::SlirpNetwork* stack_pointer = network->stack_.get();
  auto forwarder = net::DnsForwarder::create(loop, *network->filter_, std::move(dns_options),
                                             [stack_pointer](std::string frame) { stack_pointer->sendToGuest(frame); });
  if (!forwarder) return std::move(forwarder).error();
  network->dns_ = std::move(*forwarder);

  net::EgressFilter* filter = network->filter_.get();
  network->stack_->setGuestFrameHook([filter](std::span<const uint8_t> frame, std::vector<std::string>& to_guest) {
    return filter->onGuestFrame(frame, to_guest) == net::Verdict::kPass;
  });
  network->stack_->setHostFrameHook([filter](std::span<const uint8_t> frame) { filter->onHostFrame(frame); });

  for (const auto& mapping : plan.ports) {
    auto added = network->addPort(mapping);
    if (!added) return std::move(added).error();
  }
  network->scheduleSweep();
  network->log_(std::string("network: user (libslirp), guest ") + net::kGuestAddress4 + ", gateway " + net::kGateway4 +
                ", DNS " + net::kNameserver4 + (active ? ", egress policy active" : ", no egress policy"));
  return network;
}

void GuestNetwork::scheduleSweep() {
  sweeping_ = true;
  sweep_timer_ = loop_.addTimer(std::chrono::duration_cast<std::chrono::milliseconds>(kSweepInterval), [this] {
    sweeping_ = false;
    filter_->sweep();
    // The host's addresses change (DHCP, VPNs); a stale list would let a
    // name resolving to a new one reach the host.
    filter_->setHostAddresses(net::hostInterfaceAddresses());
    scheduleSweep();
  });
}

Result<net::PortMapping> GuestNetwork::addPort(std::string_view text) {
  auto mapping = net::parsePortMapping(text);
  if (!mapping) return std::move(mapping).error();
  return addPort(std::move(*mapping));
}

Result<net::PortMapping> GuestNetwork::addPort(net::PortMapping wanted) {
  auto* mapping = &wanted;
  if (mapping->host_port == 0) {
    auto port = net::pickFreeHostPort(*mapping);
    if (!port) return std::move(port).error();
    mapping->host_port = *port;
  }
  for (const auto& existing : ports_) {
    if (net::sameHostSocket(existing, *mapping)) {
      return Error(ErrorCode::kInvalidArgument, "host port " + std::to_string(mapping->host_port) + " on " +
                                                    mapping->host_ip + " is already forwarded (" +
                                                    net::describePortMapping(existing) + ")");
    }
  }
  MICROVM_TRY(stack_->addPortForward(*mapping));
  if (mapping->transport == net::Transport::kUdp) filter_->addInboundUdpPort(mapping->guest_port);
  ports_.push_back(*mapping);
  log_("network: forwarding " + net::describePortMapping(*mapping));
  return wanted;
}

Result<void> GuestNetwork::removePort(std::string_view text) {
  auto wanted = net::parsePortMapping(text);
  if (!wanted) return std::move(wanted).error();
  // "80" or "80/udp" names the guest port; anything with a host port names the host socket.
  bool by_guest_port = text.find(':') == std::string_view::npos;
  std::vector<net::PortMapping> removed;
  for (auto it = ports_.begin(); it != ports_.end();) {
    bool match = by_guest_port ? it->guest_port == wanted->guest_port && it->transport == wanted->transport
                               : net::sameHostSocket(*it, *wanted);
    if (!match) {
      ++it;
      continue;
    }
    MICROVM_TRY(stack_->removePortForward(*it));
    removed.push_back(*it);
    it = ports_.erase(it);
  }
  if (removed.empty()) return Error(ErrorCode::kNotFound, "no port mapping matches \"" + std::string(text) + "\"");
  for (const auto& mapping : removed) {
    // Another forward may still lead to the same guest UDP port.
    bool still_used = std::any_of(ports_.begin(), ports_.end(), [&](const net::PortMapping& other) {
      return other.transport == net::Transport::kUdp && other.guest_port == mapping.guest_port;
    });
    if (mapping.transport == net::Transport::kUdp && !still_used) filter_->removeInboundUdpPort(mapping.guest_port);
    log_("network: stopped forwarding " + net::describePortMapping(mapping));
  }
  return success();
}

std::vector<std::string> GuestNetwork::ports() const {
  std::vector<std::string> out;
  for (const auto& mapping : ports_) out.push_back(net::formatPortMapping(mapping));
  return out;
}

std::map<std::string, uint64_t> GuestNetwork::counters() const {
  const auto& stack = stack_->stats();
  const auto& egress = filter_->stats();
  const auto& dns = dns_->stats();
  return {
      {"frames_from_guest", stack.frames_from_guest},
      {"bytes_from_guest", stack.bytes_from_guest},
      {"frames_to_guest", stack.frames_to_guest},
      {"bytes_to_guest", stack.bytes_to_guest},
      {"frames_to_guest_dropped", stack.frames_queue_full},
      {"stream_write_waits", stack.stream_write_waits},
      {"egress_frames_passed", egress.frames_passed},
      {"egress_frames_dropped", egress.frames_dropped},
      {"egress_frames_malformed", egress.frames_malformed},
      {"egress_connections_allowed", egress.connections_allowed},
      {"egress_connections_inbound", egress.connections_inbound},
      {"egress_connections_refused", egress.connections_refused},
      {"egress_conntrack_entries", egress.conntrack_entries},
      {"dns_queries", dns.queries},
      {"dns_allowed", egress.dns_allowed},
      {"dns_denied", egress.dns_denied},
      {"dns_answered", dns.answered},
      {"dns_servfail", dns.servfail},
  };
}

void describeGuestNetwork(const VmSpec& spec, agent::WorkloadSpec& workload) {
  bool user = spec.network != "none";
  std::string hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  if (!spec.hostname.empty()) hosts += std::string(user ? net::kGuestAddress4 : "127.0.1.1") + "\t" + spec.hostname + "\n";
  for (const auto& entry : spec.extra_hosts) {
    size_t colon = entry.find(':');
    if (colon == std::string::npos) continue;  // validated when the VM was created
    std::string ip = entry.substr(colon + 1);
    if (ip == kHostGateway) ip = net::kGateway4;
    hosts += ip + "\t" + entry.substr(0, colon) + "\n";
  }
  workload.etc_hosts = hosts;
  if (!user) return;
  workload.net_address4 = std::string(net::kGuestAddress4) + "/" + std::to_string(net::kPrefixLength4);
  workload.net_gateway4 = net::kGateway4;
  workload.net_address6 = std::string(net::kGuestAddress6) + "/" + std::to_string(net::kPrefixLength6);
  workload.net_gateway6 = net::kGateway6;
  workload.etc_resolv_conf = std::string("nameserver ") + net::kNameserver4 + "\n";
}

}  // namespace microvm
