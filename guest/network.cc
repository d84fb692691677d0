#include "guest/network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "base/eintr.h"
#include "base/unique_fd.h"
#include "guest/boot.h"
#include "guest/support.h"

namespace microvm::guest {
namespace {

// The kernel's struct in6_ifreq (linux/ipv6.h, which clashes with glibc's
// netinet/in.h): the argument of SIOCSIFADDR on an AF_INET6 socket.
struct In6Ifreq {
  in6_addr address;
  uint32_t prefix_length;
  int ifindex;
};

constexpr char kGuestInterface[] = "eth0";

Result<void> configureIpv4(const agent::WorkloadSpec& spec) {
  auto address = parseInterfaceAddress(spec.net_address4);
  if (!address.ok()) return address.error();
  if (address->ipv6)
    return Error(ErrorCode::kInvalidArgument, "network: " + spec.net_address4 + " is not an IPv4 address");
  UniqueFd socket_fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket_fd.valid()) return systemError("socket for eth0");
  ifreq request{};
  std::strncpy(request.ifr_name, kGuestInterface, IFNAMSIZ - 1);
  if (!spec.net_mac.empty()) {
    unsigned bytes[6] = {};
    if (std::sscanf(spec.net_mac.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x", &bytes[0], &bytes[1], &bytes[2], &bytes[3],
                    &bytes[4], &bytes[5]) != 6) {
      return Error(ErrorCode::kInvalidArgument, "network: bad MAC address \"" + spec.net_mac + "\"");
    }
    request.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    for (int i = 0; i < 6; ++i) request.ifr_hwaddr.sa_data[i] = static_cast<char>(bytes[i]);
    // SAFETY: SIOCSIFHWADDR reads only `request`, an ifreq that outlives the call.
    if (::ioctl(socket_fd.get(), SIOCSIFHWADDR, &request) != 0) return systemError("set MAC address of eth0");
  }
  sockaddr_in in{};
  in.sin_family = AF_INET;
  ::inet_pton(AF_INET, address->address.c_str(), &in.sin_addr);
  std::memcpy(&request.ifr_addr, &in, sizeof in);
  // SAFETY: SIOCSIFADDR/SIOCSIFNETMASK/SIOCGIFFLAGS/SIOCSIFFLAGS read and write
  // only `request`, an ifreq that outlives the calls.
  if (::ioctl(socket_fd.get(), SIOCSIFADDR, &request) != 0) return systemError("set address of eth0");
  in.sin_addr.s_addr = address->prefix_length == 0 ? 0 : htonl(~uint32_t{0} << (32 - address->prefix_length));
  std::memcpy(&request.ifr_netmask, &in, sizeof in);
  if (::ioctl(socket_fd.get(), SIOCSIFNETMASK, &request) != 0) return systemError("set netmask of eth0");
  if (spec.net_mtu != 0) {
    // The pod's link (--network tap): the veth's MTU, below the device's 65520.
    request.ifr_mtu = static_cast<int>(spec.net_mtu);
    // SAFETY: SIOCSIFMTU reads only `request`, an ifreq that outlives the call.
    if (::ioctl(socket_fd.get(), SIOCSIFMTU, &request) != 0) return systemError("set MTU of eth0");
  }
  if (::ioctl(socket_fd.get(), SIOCGIFFLAGS, &request) != 0) return systemError("get flags of eth0");
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (::ioctl(socket_fd.get(), SIOCSIFFLAGS, &request) != 0) return systemError("bring eth0 up");
  // The stack (libslirp) has no TCP window scaling, so the guest offers at
  // most 64 KiB of window, and the link's MTU makes one 64 KiB segment fill
  // it. With the default receive buffer (128 KiB, half of it window) one
  // unread segment's truesize leaves less than a segment of room: the guest
  // advertises a zero or sub-segment window, which libslirp's sender
  // silly-window avoidance does not use until its persist timer (5 s or
  // more) fires. A larger buffer keeps a whole segment of window open
  // (docs/NETWORKING.md, "Stalls"). --sysctl may still set its own.
  if (auto rmem = writeSysctl("net.ipv4.tcp_rmem=4096 1048576 6291456"); !rmem.ok()) log(rmem.error().message());
  if (spec.net_gateway4.empty()) return {};
  rtentry route{};
  sockaddr_in any{};
  any.sin_family = AF_INET;
  sockaddr_in gateway{};
  gateway.sin_family = AF_INET;
  if (::inet_pton(AF_INET, spec.net_gateway4.c_str(), &gateway.sin_addr) != 1) {
    return Error(ErrorCode::kInvalidArgument, "network: bad IPv4 gateway " + spec.net_gateway4);
  }
  std::memcpy(&route.rt_dst, &any, sizeof any);
  std::memcpy(&route.rt_genmask, &any, sizeof any);
  std::memcpy(&route.rt_gateway, &gateway, sizeof gateway);
  route.rt_flags = RTF_UP | RTF_GATEWAY;
  char device[IFNAMSIZ] = {};
  std::strncpy(device, kGuestInterface, IFNAMSIZ - 1);
  route.rt_dev = device;
  // SAFETY: SIOCADDRT reads `route` and the device name it points to, both alive here.
  if (::ioctl(socket_fd.get(), SIOCADDRT, &route) != 0)
    return systemError("add default route via " + spec.net_gateway4);
  return {};
}

Result<void> configureIpv6(const agent::WorkloadSpec& spec) {
  auto address = parseInterfaceAddress(spec.net_address6);
  if (!address.ok()) return address.error();
  if (!address->ipv6)
    return Error(ErrorCode::kInvalidArgument, "network: " + spec.net_address6 + " is not an IPv6 address");
  // Duplicate address detection would keep the address unusable for a
  // second; nothing else is on this link.
  if (auto dad = writeSysctl("net.ipv6.conf.eth0.accept_dad=0"); !dad.ok()) log(dad.error().message());
  UniqueFd socket_fd(::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket_fd.valid()) return systemError("socket for eth0 (IPv6)");
  ifreq index_request{};
  std::strncpy(index_request.ifr_name, kGuestInterface, IFNAMSIZ - 1);
  // SAFETY: SIOCGIFINDEX writes only into `index_request`.
  if (::ioctl(socket_fd.get(), SIOCGIFINDEX, &index_request) != 0) return systemError("index of eth0");
  In6Ifreq request{};
  ::inet_pton(AF_INET6, address->address.c_str(), &request.address);
  request.prefix_length = static_cast<uint32_t>(address->prefix_length);
  request.ifindex = index_request.ifr_ifindex;
  // SAFETY: on an AF_INET6 socket SIOCSIFADDR reads a struct in6_ifreq, whose layout In6Ifreq has.
  if (::ioctl(socket_fd.get(), SIOCSIFADDR, &request) != 0) return systemError("set IPv6 address of eth0");
  if (spec.net_gateway6.empty()) return {};
  in6_rtmsg route{};
  if (::inet_pton(AF_INET6, spec.net_gateway6.c_str(), &route.rtmsg_gateway) != 1) {
    return Error(ErrorCode::kInvalidArgument, "network: bad IPv6 gateway " + spec.net_gateway6);
  }
  route.rtmsg_flags = RTF_UP | RTF_GATEWAY;
  route.rtmsg_metric = 1;
  route.rtmsg_ifindex = index_request.ifr_ifindex;
  // SAFETY: on an AF_INET6 socket SIOCADDRT reads a struct in6_rtmsg that outlives the call.
  if (::ioctl(socket_fd.get(), SIOCADDRT, &route) != 0)
    return systemError("add IPv6 default route via " + spec.net_gateway6);
  return {};
}

// Puts `content` at `path` in the new root. Where the image has the file,
// ours is staged on /dev (init's tmpfs) and bind-mounted over it, as Docker
// bind-mounts its own: the root disk is not written, so nothing is left to
// flush at power-off, and even a read-only root gets the file. Where the
// image lacks it or has a symlink there, the file is written on the root
// disk instead (replacing the symlink), if the root is writable.
Result<void> writeEtcFile(const std::string& path, const std::string& content) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode)) {
    std::string staged = "/dev/.microvm-" + path.substr(path.rfind('/') + 1);
    UniqueFd fd(retryOnEintr(
        [&] { return ::open(staged.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644); }));
    if (fd.valid() && ::fchmod(fd.get(), 0644) == 0) {
      writeFully(fd.get(), content);
      fd.reset();
      bool bound = ::mount(staged.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) == 0;
      ::unlink(staged.c_str());  // the mount keeps the file
      if (bound) return {};
    }
  }
  if (auto made = makeDirectories("/etc", 0755); !made.ok()) return made;
  ::unlink(path.c_str());
  UniqueFd fd(
      retryOnEintr([&] { return ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644); }));
  if (!fd.valid()) return systemError("create " + path);
  writeFully(fd.get(), content);
  return {};
}
}  // namespace

Result<void> bringLoopbackUp() {
  UniqueFd socket_fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket_fd.valid()) return systemError("socket for lo");
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write only `request`, an ifreq
  // that outlives the calls.
  if (::ioctl(socket_fd.get(), SIOCGIFFLAGS, &request) != 0) return systemError("get flags of lo");
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (::ioctl(socket_fd.get(), SIOCSIFFLAGS, &request) != 0) return systemError("bring lo up");
  return {};
}

// The guest's interfaces as the host decided: eth0 with static addresses
// when the VM has a network. A failure here stops the VM: the
// workload was promised a network.
Result<void> configureNetwork(const agent::WorkloadSpec& spec) {
  if (!spec.net_address4.empty()) {
    if (auto done = configureIpv4(spec); !done.ok()) return done;
  }
  if (!spec.net_address6.empty()) {
    if (auto done = configureIpv6(spec); !done.ok()) return done;
  }
  // A read-only root keeps the image's files; that is not worth a failure.
  if (!spec.etc_hosts.empty()) {
    if (auto written = writeEtcFile("/etc/hosts", spec.etc_hosts); !written.ok()) log(written.error().message());
  }
  if (!spec.etc_resolv_conf.empty()) {
    if (auto written = writeEtcFile("/etc/resolv.conf", spec.etc_resolv_conf); !written.ok()) {
      log(written.error().message());
    }
  }
  return {};
}

Result<InterfaceAddress> parseInterfaceAddress(std::string_view text) {
  size_t slash = text.find('/');
  auto bad = Error(ErrorCode::kInvalidArgument,
                   "network: bad interface address \"" + std::string(text) + "\" (want ADDRESS/PREFIX)");
  if (slash == std::string_view::npos) return bad;
  InterfaceAddress out;
  out.address = std::string(text.substr(0, slash));
  std::string_view prefix = text.substr(slash + 1);
  auto [end, ec] = std::from_chars(prefix.data(), prefix.data() + prefix.size(), out.prefix_length);
  if (prefix.empty() || ec != std::errc() || end != prefix.data() + prefix.size()) return bad;
  in6_addr v6{};
  in_addr v4{};
  if (::inet_pton(AF_INET, out.address.c_str(), &v4) == 1) {
    if (out.prefix_length < 0 || out.prefix_length > 32) return bad;
  } else if (::inet_pton(AF_INET6, out.address.c_str(), &v6) == 1) {
    out.ipv6 = true;
    if (out.prefix_length < 0 || out.prefix_length > 128) return bad;
  } else {
    return bad;
  }
  return out;
}

uint64_t tcpUnsentBytes(std::string_view proc_net_tcp) {
  uint64_t total = 0;
  bool header = true;
  for (std::string_view line : split(proc_net_tcp, '\n')) {
    if (std::exchange(header, false)) continue;
    // "sl local_address rem_address st tx_queue:rx_queue ...", hex.
    std::vector<std::string_view> fields;
    for (std::string_view field : split(line, ' ')) {
      if (!field.empty()) fields.push_back(field);
      if (fields.size() == 5) break;
    }
    if (fields.size() < 5) continue;
    std::string_view queues = fields[4];
    std::string_view tx = queues.substr(0, queues.find(':'));
    uint64_t bytes = 0;
    auto [end, error] = std::from_chars(tx.data(), tx.data() + tx.size(), bytes, 16);
    if (error == std::errc() && end == tx.data() + tx.size()) total += bytes;
  }
  return total;
}

void waitForTcpToDrain(milliseconds timeout) {
  auto unsent = [] {
    uint64_t bytes = 0;
    for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
      if (auto text = readFileIfExists(table); text.ok()) bytes += tcpUnsentBytes(*text);
    }
    return bytes;
  };
  auto deadline = Clock::now() + timeout;
  uint64_t left = unsent();
  while (left > 0 && Clock::now() < deadline) {
    sleepFor(kPollInterval);
    left = unsent();
  }
  if (left > 0) log(std::to_string(left) + " bytes of TCP data were still unsent at power-off");
}

}  // namespace microvm::guest
