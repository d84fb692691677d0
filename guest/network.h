// Network setup: lo, which every VM has (PID 1 brings it up before the spec,
// so a boot template has it up already), and the interfaces the host
// decided (eth0 with static IPv4 and IPv6 addresses and default routes when
// the VM has a network) with its /etc/hosts and /etc/resolv.conf, after the
// root switch. A failure stops the VM, since the workload was promised a
// network.
//
//   if (auto lo = bringLoopbackUp(); !lo.ok()) fail(lo.error());
//   ...receive the spec, enter the root...
//   if (auto network = configureNetwork(spec); !network.ok()) fail(network.error());
#pragma once

#include <string>
#include <string_view>

#include "agent/protocol.h"
#include "guest/support.h"
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

// Brings lo up, as Docker's network namespace has it.
Result<void> bringLoopbackUp();

// Brings eth0 up as the spec says and writes its /etc files (a read-only
// root keeps the image's: that is only logged).
Result<void> configureNetwork(const agent::WorkloadSpec& spec);

// The bytes in the send queues of the TCP sockets a /proc/net/tcp or
// /proc/net/tcp6 text lists (the tx_queue of each row: sent and not yet
// acknowledged, or not yet sent).
uint64_t tcpUnsentBytes(std::string_view proc_net_tcp);

// Waits, at most `timeout`, until the guest's TCP sockets have nothing left
// to send: a workload that exits right after close() leaves its last bytes
// queued, and the power-off would drop them. Logs what is left, if any.
void waitForTcpToDrain(milliseconds timeout);

}  // namespace microvm::guest
