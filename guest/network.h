// Network setup: the guest's interfaces as the host decided them (lo always;
// eth0 with static IPv4 and IPv6 addresses and default routes when the VM has
// a network) and its /etc/hosts and /etc/resolv.conf. PID 1 runs it after the
// root switch; a failure stops the VM, since the workload was promised a
// network.
//
//   if (auto network = configureNetwork(spec); !network.ok()) fail(network.error());
#pragma once

#include <string>
#include <string_view>

#include "agent/protocol.h"
#include "microvm/result.h"

namespace microvm::guest {

// "10.0.2.15/24" or "fd00::15/64": the address and its prefix length.
struct InterfaceAddress {
  std::string address;
  int prefix_length = 0;
  bool ipv6 = false;
};
// Refuses a missing or out-of-range prefix and anything inet_pton refuses.
Result<InterfaceAddress> parseInterfaceAddress(std::string_view text);

// Brings lo and eth0 up as the spec says and writes its /etc files (a read-only
// root keeps the image's: that is only logged).
Result<void> configureNetwork(const agent::WorkloadSpec& spec);

}  // namespace microvm::guest
