// The pod's link: a VM that owns the address of an engine-made network
// namespace (CNI's or netavark's veth), as Kata does it. The runner, root
// while it starts, finds the namespace's configured interface, makes a TAP
// device beside it and mirrors every frame between the two with tc
// (an ingress qdisc on each and a u32 match-all filter whose mirred action
// redirects to the other's egress). Frames that arrive on the veth then go to
// the TAP and never reach the namespace's own IP stack, so the veth may keep
// its address (CNI's DEL still finds what it made) without the kernel
// answering for the guest. The runner relays the TAP to QEMU (tap_relay.h);
// the guest gets the veth's MAC, address, prefix, gateway and MTU.
//
//   MICROVM_TRY(net::joinNetworkNamespace("/run/netns/pod"));   // or already in it
//   auto pod = net::findPodInterface();                          // eth0, 10.88.0.2/24 via 10.88.0.1
//   auto tap = net::createTap("mvtap0", pod->mtu);
//   MICROVM_TRY(net::mirrorLinks(pod->index, tap->index));
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm::net {

struct PodInterface {
  std::string name;  // "eth0"
  int index = 0;     // ifindex in its namespace
  std::string mac;   // "aa:bb:cc:dd:ee:ff"
  int mtu = 1500;
  std::string address4;  // "10.88.0.2"
  int prefix_length = 0;
  std::string gateway4;  // "" without a default route through it

  bool operator==(const PodInterface&) const = default;
};

// Moves the calling thread into the network namespace at `path` (a
// /run/netns file or /proc/PID/ns/net).
Result<void> joinNetworkNamespace(const std::filesystem::path& path);

// Whether the calling thread is in the host's network namespace (PID 1's).
// TAP mode refuses it: mirroring the host's uplink into a VM would cut the
// host off its own network. False when /proc/1/ns/net cannot be read (some
// sandboxes): then nothing can tell.
bool inHostNetworkNamespace();

// The calling thread's namespace's interface the pod's address is on: the
// one the IPv4 default route leaves by, or else the only up, non-loopback
// interface with an IPv4 address. kNotFound when there is none (a namespace
// with only lo), kInvalidArgument when it is ambiguous.
Result<PodInterface> findPodInterface();

// findPodInterface() inside the namespace at `path`, from outside it: the
// calling thread enters and returns. nullopt when it has no such interface;
// an error when `path` is the caller's own or the host's namespace.
Result<std::optional<PodInterface>> inspectNamespace(const std::filesystem::path& path);

// The gateway of the IPv4 default route through `interface` in the text of
// /proc/net/route, dotted ("10.88.0.1"); nullopt when there is none.
std::optional<std::string> defaultGateway4(std::string_view proc_net_route, std::string_view interface);
// The interface of the first IPv4 default route in /proc/net/route's text.
std::optional<std::string> defaultRouteInterface(std::string_view proc_net_route);

struct Tap {
  UniqueFd fd;  // non-blocking; each read or write is one Ethernet frame
  std::string name;
  int index = 0;
};
// A TAP device in the calling thread's namespace, up, with `mtu` and no
// IPv6 of its own (the guest's link-local address is the guest's).
Result<Tap> createTap(const std::string& name, int mtu);

// tc: every frame arriving on either link leaves by the other one.
Result<void> mirrorLinks(int first_index, int second_index);

}  // namespace microvm::net
