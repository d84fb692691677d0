// GuestNetwork: the runner's composition of the network subsystem for one
// VM: the user-mode stack (net/slirp_network.h) with the egress filter in
// front of it and the DNS forwarder behind the guest's DNS address
// (net/egress_policy.h, net/dns_forwarder.h), and the VM's port forwards.
//
//   auto network = GuestNetwork::create(loop, std::move(runner_end), guestNetworkPlan(spec), log);
//   MICROVM_TRY((*network)->addPort("8080:80"));      // also at runtime
//   state.ports = (*network)->ports();
//
// describeGuestNetwork() is the guest's half: what init configures (static
// addresses, /etc/hosts, /etc/resolv.conf), from the same spec.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/protocol.h"
#include "net/dns_forwarder.h"
#include "net/egress_policy.h"
#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "microvm/result.h"
#include "net/network_config.h"
#include "net/network_plan.h"
#include "state/vm_record.h"

namespace microvm {

namespace net {
class SlirpNetwork;
class EgressFilter;
class DnsForwarder;
}  // namespace net

// The VM's network as planned (core/vm_plan.h) and stored in spec.json
// (net/network_plan.h): what GuestNetwork is built from. A spec.json from
// before it was stored has only the strings: they are parsed then, which
// fails as the VM's creation would have.
Result<net::NetworkPlan> guestNetworkPlan(const VmSpec& spec);

class GuestNetwork {
 public:
  using Log = std::function<void(const std::string& line)>;

  // Builds the stack for `plan` (a "user" network) on `loop`, with QEMU's
  // stream at `stream`, and opens the plan's port forwards (a busy host port
  // is an error naming it). `log` receives network events and, with
  // --egress-log, every egress decision.
  static Result<std::unique_ptr<GuestNetwork>> create(EventLoop& loop, UniqueFd stream, const net::NetworkPlan& plan,
                                                      Log log);
  ~GuestNetwork();

  // Adds a forward from a port mapping's text (`-p` syntax); host port 0
  // picks a free one. Returns the mapping in effect.
  Result<net::PortMapping> addPort(std::string_view text);
  Result<net::PortMapping> addPort(net::PortMapping mapping);
  // Removes forwards: those on the host socket the text names, or, for a
  // bare GUESTPORT[/proto], every forward to that guest port.
  Result<void> removePort(std::string_view text);
  // The forwards in effect, canonical.
  std::vector<std::string> ports() const;

  // The stack's, filter's and DNS forwarder's counters, by name.
  std::map<std::string, uint64_t> counters() const;

  // The stack's own state, framed for a file (net/slirp_state.h), and
  // loaded from one into this stack before the restored guest runs.
  std::string saveState();
  Result<void> loadState(std::string_view file);

  // What the guest sent that the stack has yet to write to host sockets
  // (SlirpNetwork::bytesForHost).
  uint64_t bytesForHost() const;

 private:
  GuestNetwork(EventLoop& loop, Log log);

  EventLoop& loop_;
  Log log_;
  // Destroyed in reverse: the forwarder before the filter it hooks into,
  // and the stack (which calls the filter) before both.
  std::unique_ptr<net::EgressFilter> filter_;
  std::unique_ptr<net::DnsForwarder> dns_;
  std::unique_ptr<net::SlirpNetwork> stack_;
  std::vector<net::PortMapping> ports_;
  EventLoop::TimerId sweep_timer_ = 0;
  bool sweeping_ = false;
  void scheduleSweep();
};

// Fills the workload spec's network fields for `spec`: eth0's addresses and
// gateways (none for --network none), /etc/hosts (localhost, the hostname,
// --add-host entries) and /etc/resolv.conf (the guest's DNS address).
void describeGuestNetwork(const VmSpec& spec, agent::WorkloadSpec& workload);

}  // namespace microvm
