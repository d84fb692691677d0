// The guest network's fixed addressing and the user-facing network options:
// port mappings (`-p`) and extra hosts entries (`--add-host`); DNS upstreams
// are dns_forwarder.h's. Pure parsing and formatting, so that the CLI, the
// library core and the runner agree on one canonical text form, which
// spec.json and state.json store.
//
//   auto mapping = net::parsePortMapping("8080:80");        // 127.0.0.1:8080 -> guest 80/tcp
//   net::formatPortMapping(*mapping);                        // "127.0.0.1:8080:80/tcp"
//   net::describePortMapping(*mapping);                      // "80/tcp -> 127.0.0.1:8080" (as `docker port`)
//   MICROVM_TRY(net::checkHostPortFree(*mapping));           // before boot: a busy port is a clear error
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "microvm/result.h"
#include "net/packet.h"

namespace microvm::net {

// The guest side of user networking. Static: init configures it from the
// workload spec, there is no DHCP. The gateway and DNS addresses live inside
// the runner's stack; the gateway reaches the host's loopback (as QEMU's user
// networking does) unless an egress policy forbids it.
inline constexpr char kGuestAddress4[] = "10.0.2.15";
inline constexpr char kNetwork4[] = "10.0.2.0";
inline constexpr int kPrefixLength4 = 24;
inline constexpr char kGateway4[] = "10.0.2.2";
inline constexpr char kNameserver4[] = "10.0.2.3";
inline constexpr char kPrefix6[] = "fd00::";
inline constexpr int kPrefixLength6 = 64;
inline constexpr char kGuestAddress6[] = "fd00::15";
inline constexpr char kGateway6[] = "fd00::2";
inline constexpr char kNameserver6[] = "fd00::3";
// The link's MTU, as passt's: a guest TCP segment (and each one the stack
// sends back) carries up to 64 KiB instead of 1460 bytes, so bulk transfers
// cost a fortieth of the frames, each of which crosses QEMU, the stream
// socket, the egress filter and libslirp. Nothing leaves the host at this
// size: libslirp terminates TCP and UDP here and the host's sockets send
// with the host's own MTU.
inline constexpr int kGuestMtu = 65520;

// `--network tap[:NETNS]`: the guest owns the address of a network
// namespace's interface (pod_link.h): the namespace at NETNS, or without it
// the one the runner starts in (an OCI engine's, which the runtime joined).
// nullopt: `mode` is not a TAP mode; "": the runner's own namespace.
std::optional<std::string> tapNamespace(std::string_view mode);

enum class Transport { kTcp, kUdp };

struct PortMapping {
  std::string host_ip = "127.0.0.1";  // IPv4 or IPv6 literal (no brackets)
  uint16_t host_port = 0;             // 0: a free port is picked when the VM starts
  uint16_t guest_port = 0;
  Transport transport = Transport::kTcp;

  bool ipv6() const { return host_ip.find(':') != std::string::npos; }
  bool operator==(const PortMapping&) const = default;
};

// `[HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp]` or `GUESTPORT[/proto]`; an IPv6
// host address is bracketed: `[::1]:8080:80`. Host IP defaults to 127.0.0.1.
Result<PortMapping> parsePortMapping(std::string_view text);
// Canonical form, parsePortMapping's inverse: "127.0.0.1:8080:80/tcp", "[::1]:0:53/udp".
std::string formatPortMapping(const PortMapping& mapping);
// Docker's `port` line: "80/tcp -> 127.0.0.1:8080" ("-> [::1]:8080" for IPv6).
std::string describePortMapping(const PortMapping& mapping);
// True if `a` and `b` name the same host socket (address, port, transport).
bool sameHostSocket(const PortMapping& a, const PortMapping& b);

// Binds (and releases) the mapping's host socket the way the stack will, so
// a port in use fails before the VM boots with a message naming it.
Result<void> checkHostPortFree(const PortMapping& mapping);
// A host port that is free now on the mapping's address and transport.
Result<uint16_t> pickFreeHostPort(const PortMapping& mapping);

// `--add-host NAME:IP` (IP may be IPv6: split at the first colon; Docker's
// "host-gateway" stands for the gateway address, which reaches the host).
struct HostEntry {
  std::string name;
  std::string ip;
};
Result<HostEntry> parseHostEntry(std::string_view text);

// The addresses of the host's own interfaces (getifaddrs), IPv4 and IPv6,
// without duplicates; empty if they cannot be listed. A guest connection to
// one of them reaches the host's services, so the egress policy blocks them
// like the gateway.
std::vector<IpAddress> hostInterfaceAddresses();

// A hostname the guest kernel and /etc/hosts accept (RFC 1123 label rules,
// at most 64 bytes).
bool validHostname(std::string_view name);

}  // namespace microvm::net
