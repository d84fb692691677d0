#include "net/network_config.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>

#include "base/unique_fd.h"

namespace microvm::net {

std::optional<std::string> tapNamespace(std::string_view mode) {
  if (mode == "tap") return std::string();
  if (mode.rfind("tap:", 0) != 0) return std::nullopt;
  return std::string(mode.substr(4));
}


namespace {

Error invalid(const std::string& message) { return Error(ErrorCode::kInvalidArgument, message); }

bool isIpv4(std::string_view text) {
  in_addr address{};
  return ::inet_pton(AF_INET, std::string(text).c_str(), &address) == 1;
}

bool isIpv6(std::string_view text) {
  in6_addr address{};
  return ::inet_pton(AF_INET6, std::string(text).c_str(), &address) == 1;
}

// A decimal port; `allow_zero` for "pick one".
std::optional<uint16_t> parsePort(std::string_view text, bool allow_zero) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value > 65535) return std::nullopt;
  if (value == 0 && !allow_zero) return std::nullopt;
  return static_cast<uint16_t>(value);
}

// The mapping's host socket address, for bind().
struct HostSocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  int family = AF_INET;
};

Result<HostSocketAddress> hostSocketAddress(const PortMapping& mapping, uint16_t port) {
  HostSocketAddress out;
  if (mapping.ipv6()) {
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    address.sin6_port = htons(port);
    if (::inet_pton(AF_INET6, mapping.host_ip.c_str(), &address.sin6_addr) != 1) {
      return invalid("bad host address " + mapping.host_ip);
    }
    std::memcpy(&out.storage, &address, sizeof address);
    out.length = sizeof address;
    out.family = AF_INET6;
  } else {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    if (::inet_pton(AF_INET, mapping.host_ip.c_str(), &address.sin_addr) != 1) {
      return invalid("bad host address " + mapping.host_ip);
    }
    std::memcpy(&out.storage, &address, sizeof address);
    out.length = sizeof address;
  }
  return out;
}

const char* transportName(Transport transport) { return transport == Transport::kUdp ? "udp" : "tcp"; }

std::string hostPart(const PortMapping& mapping) {
  return mapping.ipv6() ? "[" + mapping.host_ip + "]" : mapping.host_ip;
}

// Binds a socket like the stack's listener (SO_REUSEADDR, so a port held
// only by TIME_WAIT connections counts as free, as it will for the stack).
Result<UniqueFd> bindHost(const PortMapping& mapping, uint16_t port) {
  auto address = hostSocketAddress(mapping, port);
  if (!address) return std::move(address).error();
  int type = mapping.transport == Transport::kUdp ? SOCK_DGRAM : SOCK_STREAM;
  UniqueFd fd(::socket(address->family, type | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error::fromErrno("socket");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (address->family == AF_INET6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  // SAFETY: storage holds a sockaddr_in or sockaddr_in6 of `length` bytes, as bind expects.
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address->storage), address->length) != 0) {
    int error = errno;
    std::string where = "host port " + std::to_string(port) + "/" + transportName(mapping.transport) + " on " +
                        mapping.host_ip;
    if (error == EADDRINUSE) return Error(ErrorCode::kInvalidArgument, where + " is already in use", error);
    if (error == EADDRNOTAVAIL) {
      return Error(ErrorCode::kInvalidArgument, where + ": the address is not one of this host's", error);
    }
    if (error == EACCES) return Error(ErrorCode::kInvalidArgument, where + ": permission denied", error);
    return Error(ErrorCode::kIo, "bind " + where + ": " + std::strerror(error), error);
  }
  return fd;
}

}  // namespace

Result<PortMapping> parsePortMapping(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return invalid("invalid port mapping \"" + std::string(text) + "\": " + why +
                   " (want [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp] or GUESTPORT)");
  };
  PortMapping mapping;
  std::string_view rest = text;
  if (size_t slash = rest.rfind('/'); slash != std::string_view::npos) {
    std::string_view proto = rest.substr(slash + 1);
    if (proto == "tcp") {
      mapping.transport = Transport::kTcp;
    } else if (proto == "udp") {
      mapping.transport = Transport::kUdp;
    } else {
      return bad("unknown protocol \"" + std::string(proto) + "\"");
    }
    rest = rest.substr(0, slash);
  }
  std::string_view host_ip;
  if (!rest.empty() && rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      return bad("an IPv6 host address is written [ADDRESS]:HOSTPORT:GUESTPORT");
    }
    host_ip = rest.substr(1, close - 1);
    if (!isIpv6(host_ip)) return bad("\"" + std::string(host_ip) + "\" is not an IPv6 address");
    rest = rest.substr(close + 2);
  }
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    size_t colon = rest.find(':', start);
    parts.push_back(rest.substr(start, colon == std::string_view::npos ? std::string_view::npos : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  if (!host_ip.empty() && parts.size() != 2) return bad("want [ADDRESS]:HOSTPORT:GUESTPORT");
  if (parts.size() == 3) {
    host_ip = parts[0];
    parts.erase(parts.begin());
    if (host_ip.empty()) host_ip = "127.0.0.1";
    if (!isIpv4(host_ip)) return bad("\"" + std::string(host_ip) + "\" is not an IPv4 address");
  } else if (parts.size() > 3) {
    return bad("too many ':'");
  }
  if (!host_ip.empty()) mapping.host_ip = std::string(host_ip);
  std::string_view guest = parts.back();
  auto guest_port = parsePort(guest, false);
  if (!guest_port) return bad("guest port \"" + std::string(guest) + "\" is not 1..65535");
  mapping.guest_port = *guest_port;
  if (parts.size() == 2) {
    // An empty host port ("127.0.0.1::80") picks one, as in Docker.
    auto host_port = parts[0].empty() ? std::optional<uint16_t>(0) : parsePort(parts[0], true);
    if (!host_port) return bad("host port \"" + std::string(parts[0]) + "\" is not 0..65535");
    mapping.host_port = *host_port;
  }
  return mapping;
}

std::string formatPortMapping(const PortMapping& mapping) {
  return hostPart(mapping) + ":" + std::to_string(mapping.host_port) + ":" + std::to_string(mapping.guest_port) +
         "/" + transportName(mapping.transport);
}

std::string describePortMapping(const PortMapping& mapping) {
  return std::to_string(mapping.guest_port) + "/" + transportName(mapping.transport) + " -> " + hostPart(mapping) +
         ":" + std::to_string(mapping.host_port);
}

bool sameHostSocket(const PortMapping& a, const PortMapping& b) {
  return a.host_ip == b.host_ip && a.host_port == b.host_port && a.transport == b.transport;
}

Result<void> checkHostPortFree(const PortMapping& mapping) {
  if (mapping.host_port == 0) return success();
  auto bound = bindHost(mapping, mapping.host_port);
  if (!bound) return std::move(bound).error();
  if (mapping.transport == Transport::kTcp && ::listen(bound->get(), 1) != 0) {
    return Error(ErrorCode::kInvalidArgument, "host port " + std::to_string(mapping.host_port) + "/tcp on " +
                                                  mapping.host_ip + " is already in use", errno);
  }
  return success();
}

Result<uint16_t> pickFreeHostPort(const PortMapping& mapping) {
  auto bound = bindHost(mapping, 0);
  if (!bound) return std::move(bound).error();
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  // SAFETY: getsockname writes at most `length` bytes into the storage.
  if (::getsockname(bound->get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return Error::fromErrno("getsockname");
  }
  if (address.ss_family == AF_INET6) {
    // SAFETY: the family says the storage holds a sockaddr_in6.
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&address)->sin6_port);
  }
  // SAFETY: the family says the storage holds a sockaddr_in.
  return ntohs(reinterpret_cast<const sockaddr_in*>(&address)->sin_port);
}

Result<HostEntry> parseHostEntry(std::string_view text) {
  size_t colon = text.find(':');
  auto bad = invalid("invalid --add-host \"" + std::string(text) + "\" (want NAME:IP)");
  if (colon == std::string_view::npos || colon == 0) return bad;
  HostEntry entry{std::string(text.substr(0, colon)), std::string(text.substr(colon + 1))};
  if (entry.ip.size() > 2 && entry.ip.front() == '[' && entry.ip.back() == ']') {
    entry.ip = entry.ip.substr(1, entry.ip.size() - 2);
  }
  if (!validHostname(entry.name)) return invalid("--add-host: \"" + entry.name + "\" is not a valid host name");
  if (entry.ip != "host-gateway" && !isIpv4(entry.ip) && !isIpv6(entry.ip)) return invalid("--add-host: \"" + entry.ip + "\" is not an IP address");
  return entry;
}

std::vector<IpAddress> hostInterfaceAddresses() {
  std::vector<IpAddress> addresses;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return addresses;
  for (const ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
    if (entry->ifa_addr == nullptr) continue;
    IpAddress address;
    if (entry->ifa_addr->sa_family == AF_INET) {
      // SAFETY: the family says ifa_addr points to a sockaddr_in.
      const auto* in = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
      address = IpAddress::fromV4Bytes(reinterpret_cast<const uint8_t*>(&in->sin_addr));
    } else if (entry->ifa_addr->sa_family == AF_INET6) {
      // SAFETY: the family says ifa_addr points to a sockaddr_in6.
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(entry->ifa_addr);
      address = IpAddress::fromV6Bytes(reinterpret_cast<const uint8_t*>(&in6->sin6_addr));
    } else {
      continue;
    }
    if (std::find(addresses.begin(), addresses.end(), address) == addresses.end()) addresses.push_back(address);
  }
  ::freeifaddrs(list);
  return addresses;
}

bool validHostname(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  size_t label = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c == '.') {
      if (label == 0 || name[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok || (label == 0 && c == '-') || ++label > 63) return false;
  }
  return name.back() != '-' && name.back() != '.';
}

}  // namespace microvm::net
