// NetworkPlan: one VM's guest network, parsed: the port forwards, the DNS
// upstreams and the egress policy that the runner's GuestNetwork is built
// from (runner/guest_network.h). planVm (core/vm_plan.h) makes it once from
// the flags, spec.json stores it as it is (state/vm_record.h) and the runner
// reads it back, so no step after planning parses a port, DNS or egress
// string again.
#pragma once

#include <vector>

#include "net/dns_forwarder.h"
#include "net/egress_policy.h"
#include "net/network_config.h"

namespace microvm::net {

struct NetworkPlan {
  std::vector<PortMapping> ports;
  std::vector<DnsUpstream> dns;  // empty: the host's resolv.conf
  EgressPolicy egress;
  bool egress_log = false;

  bool operator==(const NetworkPlan&) const = default;
};

}  // namespace microvm::net
