// PodNetwork: the runner's `--network tap[:NETNS]` mode, in which the guest
// owns the address of a network namespace's interface (a pod's veth), as in
// Kata. The runner, still root, joins the namespace (or stays in the one an
// OCI engine gave it), finds the configured interface, makes a TAP beside
// it, mirrors the two with tc (net/pod_link.h) and relays the TAP to QEMU's
// frame stream (net/tap_relay.h). QEMU's command line is the user
// network's: it opens nothing and gets no privilege.
//
//   auto pod = PodNetwork::create(loop, std::move(runner_end), spec.network, log);
//   describePodNetwork(spec, (*pod)->link(), workload);   // eth0 = the veth's MAC, IP, gateway, MTU
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "agent/control_protocol.h"
#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "microvm/result.h"
#include "net/pod_link.h"
#include "net/tap_relay.h"
#include "state/vm_record.h"

namespace microvm {

class PodNetwork {
 public:
  using Log = std::function<void(const std::string& line)>;

  // `mode` is the spec's network ("tap" or "tap:NETNS"). Needs root
  // (CAP_NET_ADMIN in the namespace). `stream` is the runner's end of QEMU's
  // frame stream.
  static Result<std::unique_ptr<PodNetwork>> create(EventLoop& loop, UniqueFd stream, const std::string& mode,
                                                    const Log& log);

  const net::PodInterface& link() const { return link_; }
  std::map<std::string, uint64_t> counters() const { return relay_->counters(); }

 private:
  net::PodInterface link_;
  std::unique_ptr<net::TapRelay> relay_;
};

// The workload spec's network for a guest on `link`: its MAC, address,
// prefix, default gateway and MTU; /etc/hosts with the hostname at the pod's
// address; /etc/resolv.conf from the spec's --dns servers, or else the
// image's own (an OCI engine copies its resolv.conf into the root).
void describePodNetwork(const VmSpec& spec, const net::PodInterface& link, agent::WorkloadSpec& workload);

}  // namespace microvm
