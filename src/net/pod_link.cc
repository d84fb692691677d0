#include "net/pod_link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/tc_act/tc_mirred.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "base/fs.h"

namespace microvm::net {

namespace fs = std::filesystem;

Result<void> joinNetworkNamespace(const fs::path& path) {
  UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.valid()) return Error::fromErrno("open network namespace " + path.string());
  if (::setns(ns.get(), CLONE_NEWNET) != 0) return Error::fromErrno("join network namespace " + path.string());
  return success();
}

bool inHostNetworkNamespace() {
  struct stat own {};
  struct stat host {};
  if (::stat("/proc/thread-self/ns/net", &own) != 0 || ::stat("/proc/1/ns/net", &host) != 0) return false;
  return own.st_dev == host.st_dev && own.st_ino == host.st_ino;
}

namespace {

std::vector<std::string> splitFields(std::string_view line) {
  std::vector<std::string> fields;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) fields.emplace_back(line.substr(start, i - start));
  }
  return fields;
}

// Calls `visit(fields)` for each IPv4 default route of /proc/net/route
// (Iface Destination Gateway Flags ...; addresses in hex, host order of the
// kernel's little-endian words); stops when it returns true.
template <typename Visit>
void forEachDefaultRoute(std::string_view text, Visit visit) {
  size_t start = 0;
  bool header = true;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    if (header) {
      header = false;
      continue;
    }
    auto fields = splitFields(line);
    if (fields.size() < 8 || fields[1] != "00000000" || fields[7] != "00000000") continue;
    if (visit(fields)) return;
  }
}

}  // namespace

std::optional<std::string> defaultGateway4(std::string_view proc_net_route, std::string_view interface) {
  std::optional<std::string> out;
  forEachDefaultRoute(proc_net_route, [&](const std::vector<std::string>& fields) {
    if (fields[0] != interface) return false;
    unsigned long raw = 0;
    if (std::sscanf(fields[2].c_str(), "%lx", &raw) != 1 || raw == 0 || raw > 0xffffffffUL) return false;
    in_addr address{};
    // The kernel prints the __be32 as a native (little-endian here) word.
    address.s_addr = static_cast<uint32_t>(raw);
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &address, text, sizeof text);
    out = text;
    return true;
  });
  return out;
}

std::optional<std::string> defaultRouteInterface(std::string_view proc_net_route) {
  std::optional<std::string> out;
  forEachDefaultRoute(proc_net_route, [&](const std::vector<std::string>& fields) {
    out = fields[0];
    return true;
  });
  return out;
}

Result<PodInterface> findPodInterface() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return Error::fromErrno("list the namespace's interfaces");
  std::vector<PodInterface> candidates;
  std::vector<std::pair<std::string, std::string>> macs;
  for (ifaddrs* entry = list; entry; entry = entry->ifa_next) {
    if (!entry->ifa_addr || (entry->ifa_flags & IFF_LOOPBACK) || !(entry->ifa_flags & IFF_UP)) continue;
    if (entry->ifa_addr->sa_family == AF_PACKET) {
      // SAFETY: getifaddrs gives AF_PACKET entries a sockaddr_ll.
      const auto* link = reinterpret_cast<const sockaddr_ll*>(entry->ifa_addr);
      if (link->sll_halen != 6) continue;
      char mac[18];
      std::snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", link->sll_addr[0], link->sll_addr[1],
                    link->sll_addr[2], link->sll_addr[3], link->sll_addr[4], link->sll_addr[5]);
      macs.emplace_back(entry->ifa_name, mac);
    } else if (entry->ifa_addr->sa_family == AF_INET && entry->ifa_netmask) {
      PodInterface pod;
      pod.name = entry->ifa_name;
      // SAFETY: AF_INET entries carry sockaddr_in addresses and masks.
      const auto* address = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
      const auto* mask = reinterpret_cast<const sockaddr_in*>(entry->ifa_netmask);
      char text[INET_ADDRSTRLEN] = {};
      ::inet_ntop(AF_INET, &address->sin_addr, text, sizeof text);
      pod.address4 = text;
      pod.prefix_length = __builtin_popcount(mask->sin_addr.s_addr);
      candidates.push_back(std::move(pod));
    }
  }
  ::freeifaddrs(list);
  auto routes = readUntrustedFile("/proc/thread-self/net/route", 1 << 20);
  std::string route_text = routes ? *routes : std::string();
  std::optional<std::string> via = defaultRouteInterface(route_text);
  const PodInterface* chosen = nullptr;
  for (const auto& candidate : candidates) {
    if (via && candidate.name == *via) {
      chosen = &candidate;
      break;
    }
  }
  if (!chosen) {
    if (candidates.empty()) {
      return Error(ErrorCode::kNotFound, "the network namespace has no up interface with an IPv4 address but lo");
    }
    if (candidates.size() > 1) {
      return Error(ErrorCode::kInvalidArgument,
                   "the network namespace has several IPv4 interfaces and no default "
                   "route to choose one by");
    }
    chosen = &candidates.front();
  }
  PodInterface pod = *chosen;
  for (const auto& [name, mac] : macs) {
    if (name == pod.name) pod.mac = mac;
  }
  if (pod.mac.empty()) return Error(ErrorCode::kUnsupported, "interface " + pod.name + " is not an Ethernet link");
  pod.index = static_cast<int>(::if_nametoindex(pod.name.c_str()));
  if (pod.index == 0) return Error::fromErrno("index of " + pod.name);
  UniqueFd socket_fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq request{};
  std::strncpy(request.ifr_name, pod.name.c_str(), IFNAMSIZ - 1);
  // SAFETY: SIOCGIFMTU writes only into `request`.
  if (!socket_fd.valid() || ::ioctl(socket_fd.get(), SIOCGIFMTU, &request) != 0) {
    return Error::fromErrno("MTU of " + pod.name);
  }
  pod.mtu = request.ifr_mtu;
  pod.gateway4 = defaultGateway4(route_text, pod.name).value_or("");
  return pod;
}

Result<std::optional<PodInterface>> inspectNamespace(const fs::path& path) {
  UniqueFd own(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!own.valid()) return Error::fromErrno("open this thread's network namespace");
  struct stat own_ns {};
  struct stat target_ns {};
  if (::fstat(own.get(), &own_ns) == 0 && ::stat(path.c_str(), &target_ns) == 0 && own_ns.st_dev == target_ns.st_dev &&
      own_ns.st_ino == target_ns.st_ino) {
    return Error(ErrorCode::kInvalidArgument, path.string() + " is this process's own network namespace");
  }
  MICROVM_TRY(joinNetworkNamespace(path));
  bool host = inHostNetworkNamespace();
  auto pod = host ? Result<PodInterface>(Error(ErrorCode::kInvalidArgument, "it is the host's network namespace"))
                  : findPodInterface();
  if (::setns(own.get(), CLONE_NEWNET) != 0) return Error::fromErrno("return to this thread's network namespace");
  if (!pod) {
    if (pod.error().code() == ErrorCode::kNotFound) return std::optional<PodInterface>();
    return std::move(pod).error().withContext(path.string());
  }
  return std::optional<PodInterface>(std::move(*pod));
}

Result<Tap> createTap(const std::string& name, int mtu) {
  Tap tap;
  tap.fd.reset(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!tap.fd.valid()) return Error::fromErrno("open /dev/net/tun");
  ifreq request{};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  request.ifr_flags = IFF_TAP | IFF_NO_PI;
  // SAFETY: TUNSETIFF reads and writes only `request`, an ifreq alive here.
  if (::ioctl(tap.fd.get(), TUNSETIFF, &request) != 0) return Error::fromErrno("create TAP device " + name);
  tap.name = request.ifr_name;
  // The guest's link-local address (from the veth's MAC) is the guest's own;
  // the TAP must not autoconfigure or solicit on the link.
  if (UniqueFd sysctl(::open(("/proc/sys/net/ipv6/conf/" + tap.name + "/disable_ipv6").c_str(), O_WRONLY | O_CLOEXEC));
      sysctl.valid()) {
    (void)writeAll(sysctl.get(), "1");
  }
  UniqueFd socket_fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket_fd.valid()) return Error::fromErrno("socket for " + tap.name);
  request = {};
  std::strncpy(request.ifr_name, tap.name.c_str(), IFNAMSIZ - 1);
  request.ifr_mtu = mtu;
  // SAFETY: SIOCSIFMTU/SIOCGIFFLAGS/SIOCSIFFLAGS read and write only `request`.
  if (::ioctl(socket_fd.get(), SIOCSIFMTU, &request) != 0) return Error::fromErrno("set MTU of " + tap.name);
  if (::ioctl(socket_fd.get(), SIOCGIFFLAGS, &request) != 0) return Error::fromErrno("flags of " + tap.name);
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (::ioctl(socket_fd.get(), SIOCSIFFLAGS, &request) != 0) return Error::fromErrno("bring " + tap.name + " up");
  tap.index = static_cast<int>(::if_nametoindex(tap.name.c_str()));
  if (tap.index == 0) return Error::fromErrno("index of " + tap.name);
  return tap;
}

namespace {

// One rtnetlink request, built in place: nested attributes are opened and
// closed around what they hold.
class NetlinkRequest {
 public:
  NetlinkRequest(uint16_t type, uint16_t flags, const tcmsg& header) {
    nlmsghdr message{};
    message.nlmsg_type = type;
    message.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
    message.nlmsg_seq = 1;
    append(&message, sizeof message);
    append(&header, sizeof header);
  }
  void attribute(uint16_t type, const void* data, size_t size) {
    rtattr attr{};
    attr.rta_type = type;
    attr.rta_len = static_cast<uint16_t>(RTA_LENGTH(size));
    append(&attr, sizeof attr);
    append(data, size);
  }
  void string(uint16_t type, const char* text) { attribute(type, text, std::strlen(text) + 1); }
  size_t open(uint16_t type) {
    size_t at = buffer_.size();
    rtattr attr{};
    attr.rta_type = type;
    append(&attr, sizeof attr);
    return at;
  }
  void close(size_t at) {
    auto length = static_cast<uint16_t>(buffer_.size() - at);
    std::memcpy(buffer_.data() + at + offsetof(rtattr, rta_len), &length, sizeof length);
  }
  // Sends it on `socket_fd` and reads the kernel's acknowledgement.
  Result<void> send(int socket_fd, const std::string& what) {
    auto length = static_cast<uint32_t>(buffer_.size());
    std::memcpy(buffer_.data() + offsetof(nlmsghdr, nlmsg_len), &length, sizeof length);
    if (::send(socket_fd, buffer_.data(), buffer_.size(), 0) != static_cast<ssize_t>(buffer_.size())) {
      return Error::fromErrno(what);
    }
    alignas(nlmsghdr) char reply[4096];
    ssize_t got = ::recv(socket_fd, reply, sizeof reply, 0);
    if (got < static_cast<ssize_t>(NLMSG_LENGTH(sizeof(nlmsgerr)))) return Error::fromErrno(what + ": no answer");
    // SAFETY: the reply holds at least a header and an nlmsgerr (checked above).
    const auto* header = reinterpret_cast<const nlmsghdr*>(reply);
    if (header->nlmsg_type != NLMSG_ERROR) return Error(ErrorCode::kProtocol, what + ": unexpected netlink answer");
    const auto* error = static_cast<const nlmsgerr*>(NLMSG_DATA(header));
    if (error->error != 0) return Error::fromErrno(what, -error->error);
    return success();
  }

 private:
  void append(const void* data, size_t size) {
    const auto* bytes = static_cast<const char*>(data);
    buffer_.insert(buffer_.end(), bytes, bytes + size);
    buffer_.resize(NLMSG_ALIGN(buffer_.size()), '\0');
  }
  std::vector<char> buffer_;
};

Result<void> redirectIngress(int socket_fd, int from_index, int to_index) {
  std::string name = "link " + std::to_string(from_index);
  tcmsg qdisc{};
  qdisc.tcm_family = AF_UNSPEC;
  qdisc.tcm_ifindex = from_index;
  qdisc.tcm_handle = TC_H_MAKE(TC_H_INGRESS, 0);
  qdisc.tcm_parent = TC_H_INGRESS;
  // A VM that ran on this link before left its (now dead) redirect: replace
  // it. No ingress qdisc yet is the usual answer, and not an error.
  NetlinkRequest remove_qdisc(RTM_DELQDISC, 0, qdisc);
  (void)remove_qdisc.send(socket_fd, "remove the ingress qdisc of " + name);
  NetlinkRequest add_qdisc(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, qdisc);
  add_qdisc.string(TCA_KIND, "ingress");
  MICROVM_TRY(add_qdisc.send(socket_fd, "add an ingress qdisc to " + name));

  // u32 with one all-zero key matches every frame (cls_matchall is not
  // always built); mirred steals it and sends it out of the other link.
  tcmsg filter{};
  filter.tcm_family = AF_UNSPEC;
  filter.tcm_ifindex = from_index;
  filter.tcm_parent = TC_H_MAKE(TC_H_INGRESS, 0);
  filter.tcm_info = TC_H_MAKE(uint32_t{49152} << 16, htons(ETH_P_ALL));
  NetlinkRequest add_filter(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, filter);
  add_filter.string(TCA_KIND, "u32");
  size_t options = add_filter.open(TCA_OPTIONS);
  size_t actions = add_filter.open(TCA_U32_ACT);
  size_t first = add_filter.open(1);
  add_filter.string(TCA_ACT_KIND, "mirred");
  size_t mirred_options = add_filter.open(TCA_ACT_OPTIONS);
  tc_mirred mirred{};
  mirred.action = TC_ACT_STOLEN;
  mirred.eaction = TCA_EGRESS_REDIR;
  mirred.ifindex = static_cast<uint32_t>(to_index);
  add_filter.attribute(TCA_MIRRED_PARMS, &mirred, sizeof mirred);
  add_filter.close(mirred_options);
  add_filter.close(first);
  add_filter.close(actions);
  // A selector with one key (all zero: mask 0 matches anything) after it.
  char selector[sizeof(tc_u32_sel) + sizeof(tc_u32_key)] = {};
  // tc_u32_sel ends in a zero-length array of keys (a GNU extension clang
  // warns about); its one key follows it here, in `selector`.
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wzero-length-array"
#endif
  tc_u32_sel header{};
#if defined(__clang__)
#pragma clang diagnostic pop
#endif
  header.flags = TC_U32_TERMINAL;
  header.nkeys = 1;
  std::memcpy(selector, &header, sizeof header);
  add_filter.attribute(TCA_U32_SEL, selector, sizeof selector);
  add_filter.close(options);
  return add_filter.send(socket_fd, "mirror " + name + " to link " + std::to_string(to_index));
}

}  // namespace

Result<void> mirrorLinks(int first_index, int second_index) {
  UniqueFd socket_fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!socket_fd.valid()) return Error::fromErrno("netlink socket");
  MICROVM_TRY(redirectIngress(socket_fd.get(), first_index, second_index));
  return redirectIngress(socket_fd.get(), second_index, first_index);
}

}  // namespace microvm::net
