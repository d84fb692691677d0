#include "runner/pod_network.h"

#include <unistd.h>

#include "net/network_config.h"

namespace microvm {

namespace {

// The TAP's name in the pod's namespace: one VM per namespace, so a fixed
// name; a stale one (a runner that died) would make the create fail loudly.
constexpr char kTapName[] = "microvm0";

}  // namespace

Result<std::unique_ptr<PodNetwork>> PodNetwork::create(EventLoop& loop, UniqueFd stream, const std::string& mode,
                                                       const Log& log) {
  auto netns = net::tapNamespace(mode);
  if (!netns) return Error(ErrorCode::kInvalidArgument, "network \"" + mode + "\" is not a TAP mode");
  if (::geteuid() != 0) {
    return Error(ErrorCode::kUnavailable, "--network " + mode +
                                              " needs root: the runner makes a TAP device in "
                                              "the namespace");
  }
  // The runner (and QEMU, which it starts) live in the pod's namespace from
  // here on; nothing of theirs listens on IP.
  if (!netns->empty()) MICROVM_TRY(net::joinNetworkNamespace(*netns));
  if (net::inHostNetworkNamespace()) {
    return Error(ErrorCode::kInvalidArgument, "--network " + mode +
                                                  ": this is the host's network namespace; TAP mode "
                                                  "takes over a namespace's interface, which would cut the host off");
  }
  auto link = net::findPodInterface();
  if (!link) return std::move(link).error().withContext("--network " + mode);
  auto tap = net::createTap(kTapName, link->mtu);
  if (!tap) return std::move(tap).error();
  MICROVM_TRY(net::mirrorLinks(link->index, tap->index));
  std::unique_ptr<PodNetwork> network(new PodNetwork());
  network->link_ = *link;
  auto relay = net::TapRelay::create(loop, std::move(stream), std::move(tap->fd));
  if (!relay) return std::move(relay).error();
  network->relay_ = std::move(*relay);
  log("network: tap on " + link->name + " (" + link->mac + ", mtu " + std::to_string(link->mtu) + ") through " +
      tap->name + ", guest " + link->address4 + "/" + std::to_string(link->prefix_length) +
      (link->gateway4.empty() ? ", no default route" : ", gateway " + link->gateway4));
  return network;
}

void describePodNetwork(const VmSpec& spec, const net::PodInterface& link, agent::WorkloadSpec& workload) {
  std::string hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  if (!spec.hostname.empty()) hosts += link.address4 + "\t" + spec.hostname + "\n";
  for (const auto& entry : spec.extra_hosts) {
    size_t colon = entry.find(':');
    if (colon == std::string::npos) continue;  // validated when the VM was created
    std::string ip = entry.substr(colon + 1);
    if (ip == "host-gateway") {
      if (link.gateway4.empty()) continue;
      ip = link.gateway4;
    }
    hosts += ip + "\t" + entry.substr(0, colon) + "\n";
  }
  workload.etc_hosts = hosts;
  workload.net_mac = link.mac;
  workload.net_address4 = link.address4 + "/" + std::to_string(link.prefix_length);
  workload.net_gateway4 = link.gateway4;
  workload.net_address6.clear();
  workload.net_gateway6.clear();
  workload.net_mtu = static_cast<uint32_t>(link.mtu);
  std::string resolv;
  for (const auto& upstream : spec.network_plan.dns) resolv += "nameserver " + upstream.address.toString() + "\n";
  workload.etc_resolv_conf = resolv;
}

}  // namespace microvm
