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

// The network of a spec.json written before it was stored parsed.
Result<net::NetworkPlan> parseLegacyNetwork(const VmSpec& spec) {
  net::NetworkPlan plan;
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

Result<net::NetworkPlan> guestNetworkPlan(const VmSpec& spec) {
  if (!spec.network_plan_recorded) return parseLegacyNetwork(spec);
  return spec.network_plan;
}

GuestNetwork::GuestNetwork(EventLoop& loop, Log log) : loop_(loop), log_(std::move(log)) {}

GuestNetwork::~GuestNetwork() {
  if (sweeping_) loop_.cancelTimer(sweep_timer_);
  stack_.reset();
  dns_.reset();
  filter_.reset();
}

Result<std::unique_ptr<GuestNetwork>> GuestNetwork::create(EventLoop& loop, UniqueFd stream,
                                                           const net::NetworkPlan& plan, Log log) {
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

uint64_t GuestNetwork::bytesForHost() const { return stack_->bytesForHost(); }

std::string GuestNetwork::saveState() { return net::encodeSlirpState(stack_->saveState()); }

Result<void> GuestNetwork::loadState(std::string_view file) {
  auto state = net::decodeSlirpState(file);
  if (!state) return std::move(state).error();
  return stack_->loadState(*state);
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
  // Locally administered, unicast, from the VM's id: its own, also when it
  // was restored from a boot template saved by another VM.
  std::string mac = "02";
  for (size_t i = 0; i < 5; ++i) mac += ":" + (spec.id.size() >= 2 * (i + 1) ? spec.id.substr(2 * i, 2) : std::string("00"));
  workload.net_mac = mac;
  workload.net_address4 = std::string(net::kGuestAddress4) + "/" + std::to_string(net::kPrefixLength4);
  workload.net_gateway4 = net::kGateway4;
  workload.net_address6 = std::string(net::kGuestAddress6) + "/" + std::to_string(net::kPrefixLength6);
  workload.net_gateway6 = net::kGateway6;
  workload.etc_resolv_conf = std::string("nameserver ") + net::kNameserver4 + "\n";
}

}  // namespace microvm
