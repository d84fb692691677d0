#include "net/packet.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace microvm::net {
namespace {

constexpr size_t kIpv4HeaderBytes = 20;
constexpr size_t kIpv6HeaderBytes = 40;
constexpr size_t kTcpHeaderBytes = 20;
constexpr size_t kUdpHeaderBytes = 8;
constexpr size_t kIcmpHeaderBytes = 8;  // type, code, checksum, 4 bytes of rest-of-header
constexpr size_t kIpv6FragmentHeaderBytes = 8;
// An IPv6 packet may chain extension headers; legitimate ones use a few.
constexpr int kMaxIpv6ExtensionHeaders = 8;
constexpr uint8_t kDefaultHopLimit = 64;

uint16_t load16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t load32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | p[3];
}
void store16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void store32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// SAFETY: std::string's storage is contiguous chars; uint8_t may alias them.
uint8_t* bytesOf(std::string& s) { return reinterpret_cast<uint8_t*>(s.data()); }
std::span<const uint8_t> viewOf(const std::string& s, size_t offset, size_t length) {
  // SAFETY: as above, read-only.
  return {reinterpret_cast<const uint8_t*>(s.data()) + offset, length};
}

// Parses the TCP/UDP/ICMP header at [l4, end) into `out`.
ParseStatus parseTransport(std::span<const uint8_t> frame, size_t l4, size_t end, ParsedFrame& out) {
  const uint8_t* p = frame.data() + l4;
  size_t available = end - l4;
  out.l4_offset = l4;
  switch (out.protocol) {
    case kProtoTcp: {
      if (available < kTcpHeaderBytes) return ParseStatus::kMalformed;
      size_t header = static_cast<size_t>(p[12] >> 4) * 4;
      if (header < kTcpHeaderBytes || header > available) return ParseStatus::kMalformed;
      out.src_port = load16(p);
      out.dst_port = load16(p + 2);
      out.tcp_seq = load32(p + 4);
      out.tcp_ack = load32(p + 8);
      out.tcp_flags = p[13];
      out.payload = frame.subspan(l4 + header, available - header);
      break;
    }
    case kProtoUdp: {
      if (available < kUdpHeaderBytes) return ParseStatus::kMalformed;
      size_t length = load16(p + 4);
      if (length < kUdpHeaderBytes || length > available) return ParseStatus::kMalformed;
      out.src_port = load16(p);
      out.dst_port = load16(p + 2);
      out.payload = frame.subspan(l4 + kUdpHeaderBytes, length - kUdpHeaderBytes);
      break;
    }
    case kProtoIcmp:
    case kProtoIcmpv6: {
      if (available < 4) return ParseStatus::kMalformed;
      out.icmp_type = p[0];
      out.icmp_code = p[1];
      out.payload = frame.subspan(l4 + 4, available - 4);
      break;
    }
    default:
      return ParseStatus::kOk;  // another protocol: no L4 fields
  }
  out.has_l4 = true;
  return ParseStatus::kOk;
}

ParseStatus parseIpv4(std::span<const uint8_t> frame, ParsedFrame& out) {
  size_t l3 = kEthernetHeaderBytes;
  if (frame.size() < l3 + kIpv4HeaderBytes) return ParseStatus::kMalformed;
  const uint8_t* p = frame.data() + l3;
  if ((p[0] >> 4) != 4) return ParseStatus::kMalformed;
  size_t header = static_cast<size_t>(p[0] & 0x0f) * 4;
  size_t total = load16(p + 2);
  if (header < kIpv4HeaderBytes || total < header || l3 + total > frame.size()) return ParseStatus::kMalformed;
  out.is_ip = true;
  out.l3_offset = l3;
  out.l3_end = l3 + total;
  out.hop_limit = p[8];
  out.protocol = p[9];
  out.src_ip = IpAddress::fromV4Bytes(p + 12);
  out.dst_ip = IpAddress::fromV4Bytes(p + 16);
  uint16_t fragment = load16(p + 6);
  out.is_fragment = (fragment & 0x3fff) != 0;  // MF set or a non-zero offset
  if (out.is_fragment) return ParseStatus::kOk;
  return parseTransport(frame, l3 + header, out.l3_end, out);
}

ParseStatus parseIpv6(std::span<const uint8_t> frame, ParsedFrame& out) {
  size_t l3 = kEthernetHeaderBytes;
  if (frame.size() < l3 + kIpv6HeaderBytes) return ParseStatus::kMalformed;
  const uint8_t* p = frame.data() + l3;
  if ((p[0] >> 4) != 6) return ParseStatus::kMalformed;
  size_t payload_length = load16(p + 4);
  // A zero payload length means a jumbogram, which no guest link here carries.
  if (payload_length == 0 || l3 + kIpv6HeaderBytes + payload_length > frame.size()) return ParseStatus::kMalformed;
  out.is_ip = true;
  out.l3_offset = l3;
  out.l3_end = l3 + kIpv6HeaderBytes + payload_length;
  out.hop_limit = p[7];
  out.src_ip = IpAddress::fromV6Bytes(p + 8);
  out.dst_ip = IpAddress::fromV6Bytes(p + 24);
  uint8_t next = p[6];
  size_t offset = l3 + kIpv6HeaderBytes;
  for (int i = 0;; ++i) {
    if (next != 0 && next != 43 && next != 60 && next != 51 && next != 44) break;  // not an extension we skip
    if (i == kMaxIpv6ExtensionHeaders) return ParseStatus::kMalformed;
    if (offset + 8 > out.l3_end) return ParseStatus::kMalformed;
    const uint8_t* ext = frame.data() + offset;
    if (next == 44) {  // fragment: the upper-layer header may not be in this packet
      out.is_fragment = true;
      out.protocol = ext[0];
      return ParseStatus::kOk;
    }
    // Hop-by-hop (0), routing (43), destination options (60): 8-octet units
    // beyond the first 8; AH (51): 4-octet units beyond the first 8.
    size_t length = next == 51 ? (static_cast<size_t>(ext[1]) + 2) * 4 : (static_cast<size_t>(ext[1]) + 1) * 8;
    if (offset + length > out.l3_end) return ParseStatus::kMalformed;
    next = ext[0];
    offset += length;
  }
  out.protocol = next;
  return parseTransport(frame, offset, out.l3_end, out);
}

void writeEthernet(uint8_t* p, const MacAddress& dst, const MacAddress& src, uint16_t ether_type) {
  std::memcpy(p, dst.data(), 6);
  std::memcpy(p + 6, src.data(), 6);
  store16(p + 12, ether_type);
}

// Writes an IPv4 header (checksummed) at p.
void writeIpv4(uint8_t* p, const IpAddress& src, const IpAddress& dst, uint8_t protocol, size_t total_length,
               uint16_t id, uint16_t fragment_field) {
  p[0] = 0x45;
  p[1] = 0;
  store16(p + 2, static_cast<uint16_t>(total_length));
  store16(p + 4, id);
  store16(p + 6, fragment_field);
  p[8] = kDefaultHopLimit;
  p[9] = protocol;
  store16(p + 10, 0);
  std::memcpy(p + 12, src.bytes.data(), 4);
  std::memcpy(p + 16, dst.bytes.data(), 4);
  store16(p + 10, checksumFinish(checksumPartial({p, kIpv4HeaderBytes})));
}

void writeIpv6(uint8_t* p, const IpAddress& src, const IpAddress& dst, uint8_t next_header, size_t payload_length) {
  store32(p, 0x60000000);
  store16(p + 4, static_cast<uint16_t>(payload_length));
  p[6] = next_header;
  p[7] = kDefaultHopLimit;
  std::memcpy(p + 8, src.bytes.data(), 16);
  std::memcpy(p + 24, dst.bytes.data(), 16);
}

// A frame holding one unfragmented IP packet whose upper-layer part is
// `l4_length` bytes; returns it with the L2/L3 headers written and the offset
// of the upper-layer part in `l4_offset`.
std::string makeIpFrame(const MacAddress& src_mac, const MacAddress& dst_mac, const IpAddress& src,
                        const IpAddress& dst, uint8_t protocol, size_t l4_length, size_t& l4_offset) {
  size_t l3_header = src.v4 ? kIpv4HeaderBytes : kIpv6HeaderBytes;
  std::string frame(kEthernetHeaderBytes + l3_header + l4_length, '\0');
  uint8_t* p = bytesOf(frame);
  writeEthernet(p, dst_mac, src_mac, src.v4 ? kEtherTypeIpv4 : kEtherTypeIpv6);
  if (src.v4) {
    writeIpv4(p + kEthernetHeaderBytes, src, dst, protocol, l3_header + l4_length, 0, 0);
  } else {
    writeIpv6(p + kEthernetHeaderBytes, src, dst, protocol, l4_length);
  }
  l4_offset = kEthernetHeaderBytes + l3_header;
  return frame;
}

// Fills in the checksum at `checksum_at` (relative to the L4 start) of the
// upper-layer part of a frame made by makeIpFrame.
void finishL4Checksum(std::string& frame, size_t l4_offset, size_t checksum_at, const IpAddress& src,
                      const IpAddress& dst, uint8_t protocol) {
  size_t length = frame.size() - l4_offset;
  uint32_t sum = protocol == kProtoIcmp ? 0 : pseudoHeaderSum(src, dst, protocol, static_cast<uint32_t>(length));
  uint16_t checksum = checksumFinish(checksumPartial(viewOf(frame, l4_offset, length), sum));
  // A computed UDP checksum of zero is sent as all ones (zero means "none").
  if (protocol == kProtoUdp && checksum == 0) checksum = 0xffff;
  store16(bytesOf(frame) + l4_offset + checksum_at, checksum);
}

bool isIcmpError(const ParsedFrame& parsed) {
  if (parsed.protocol == kProtoIcmp) {
    if (!parsed.has_l4) return parsed.is_fragment;  // cannot tell: treat as an error, never answer it
    uint8_t type = parsed.icmp_type;
    return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
  }
  if (parsed.protocol == kProtoIcmpv6) return !parsed.has_l4 || parsed.icmp_type < 128;
  return false;
}

}  // namespace

IpAddress IpAddress::fromV4(uint32_t host_order) {
  IpAddress address;
  store32(address.bytes.data(), host_order);
  return address;
}

IpAddress IpAddress::fromV4Bytes(const uint8_t* four) {
  IpAddress address;
  std::memcpy(address.bytes.data(), four, 4);
  return address;
}

IpAddress IpAddress::fromV6Bytes(const uint8_t* sixteen) {
  IpAddress address;
  address.v4 = false;
  std::memcpy(address.bytes.data(), sixteen, 16);
  return address;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.empty() || text.size() > 45) return std::nullopt;
  char buffer[46];
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  IpAddress address;
  if (::inet_pton(AF_INET, buffer, address.bytes.data()) == 1) return address;
  address.v4 = false;
  if (::inet_pton(AF_INET6, buffer, address.bytes.data()) == 1) return address;
  return std::nullopt;
}

uint32_t IpAddress::v4HostOrder() const { return load32(bytes.data()); }

bool IpAddress::inPrefix(const IpAddress& network, unsigned prefix_bits) const {
  if (v4 != network.v4) return false;
  unsigned max_bits = v4 ? 32 : 128;
  if (prefix_bits > max_bits) prefix_bits = max_bits;
  size_t whole = prefix_bits / 8;
  if (std::memcmp(bytes.data(), network.bytes.data(), whole) != 0) return false;
  unsigned rest = prefix_bits % 8;
  if (rest == 0) return true;
  auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (bytes[whole] & mask) == (network.bytes[whole] & mask);
}

std::string IpAddress::toString() const {
  char buffer[INET6_ADDRSTRLEN];
  if (::inet_ntop(v4 ? AF_INET : AF_INET6, bytes.data(), buffer, sizeof(buffer)) == nullptr) return "?";
  return buffer;
}

size_t IpAddressHash::operator()(const IpAddress& address) const {
  uint64_t a, b;
  std::memcpy(&a, address.bytes.data(), 8);
  std::memcpy(&b, address.bytes.data() + 8, 8);
  uint64_t h = (a ^ (b * 0x9e3779b97f4a7c15ULL) ^ (address.v4 ? 1 : 2)) * 0xbf58476d1ce4e5b9ULL;
  return static_cast<size_t>(h ^ (h >> 31));
}

ParseStatus parseFrame(std::span<const uint8_t> frame, ParsedFrame& out) {
  out = ParsedFrame{};
  if (frame.size() < kEthernetHeaderBytes) return ParseStatus::kMalformed;
  std::memcpy(out.dst_mac.data(), frame.data(), 6);
  std::memcpy(out.src_mac.data(), frame.data() + 6, 6);
  out.ether_type = load16(frame.data() + 12);
  switch (out.ether_type) {
    case kEtherTypeIpv4: return parseIpv4(frame, out);
    case kEtherTypeIpv6: return parseIpv6(frame, out);
    case kEtherTypeArp:
      // ARP for IPv4 over Ethernet is 28 bytes; anything shorter is junk.
      return frame.size() >= kEthernetHeaderBytes + 28 ? ParseStatus::kOk : ParseStatus::kMalformed;
    default: return ParseStatus::kOk;
  }
}

uint32_t checksumPartial(std::span<const uint8_t> bytes, uint32_t initial) {
  uint64_t sum = initial;
  size_t i = 0;
  for (; i + 1 < bytes.size(); i += 2) sum += load16(bytes.data() + i);
  if (i < bytes.size()) sum += static_cast<uint32_t>(bytes[i]) << 8;
  while (sum >> 32) sum = (sum & 0xffffffff) + (sum >> 32);
  return static_cast<uint32_t>(sum);
}

uint16_t checksumFinish(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

uint32_t pseudoHeaderSum(const IpAddress& src, const IpAddress& dst, uint8_t protocol, uint32_t length) {
  uint32_t sum = checksumPartial({src.bytes.data(), src.size()});
  sum = checksumPartial({dst.bytes.data(), dst.size()}, sum);
  uint64_t total = static_cast<uint64_t>(sum) + protocol + (length >> 16) + (length & 0xffff);
  while (total >> 32) total = (total & 0xffffffff) + (total >> 32);
  return static_cast<uint32_t>(total);
}

bool checksumsValid(std::span<const uint8_t> frame) {
  ParsedFrame parsed;
  if (parseFrame(frame, parsed) != ParseStatus::kOk || !parsed.is_ip) return false;
  if (parsed.src_ip.v4) {
    size_t header = static_cast<size_t>(frame[parsed.l3_offset] & 0x0f) * 4;
    if (checksumFinish(checksumPartial(frame.subspan(parsed.l3_offset, header))) != 0) return false;
  }
  if (!parsed.has_l4) return true;
  auto l4 = frame.subspan(parsed.l4_offset, parsed.l3_end - parsed.l4_offset);
  if (parsed.protocol == kProtoUdp) {
    if (parsed.src_ip.v4 && load16(l4.data() + 6) == 0) return true;
    l4 = l4.first(load16(l4.data() + 4));
  }
  uint32_t sum = parsed.protocol == kProtoIcmp
                     ? 0
                     : pseudoHeaderSum(parsed.src_ip, parsed.dst_ip, parsed.protocol, static_cast<uint32_t>(l4.size()));
  return checksumFinish(checksumPartial(l4, sum)) == 0;
}

std::string buildTcpFrame(const TcpSegment& segment, std::span<const uint8_t> payload) {
  size_t l4 = 0;
  std::string frame = makeIpFrame(segment.src_mac, segment.dst_mac, segment.src_ip, segment.dst_ip, kProtoTcp,
                                  kTcpHeaderBytes + payload.size(), l4);
  uint8_t* p = bytesOf(frame) + l4;
  store16(p, segment.src_port);
  store16(p + 2, segment.dst_port);
  store32(p + 4, segment.seq);
  store32(p + 8, segment.ack);
  p[12] = (kTcpHeaderBytes / 4) << 4;
  p[13] = segment.flags;
  store16(p + 14, segment.window);
  if (!payload.empty()) std::memcpy(p + kTcpHeaderBytes, payload.data(), payload.size());
  finishL4Checksum(frame, l4, 16, segment.src_ip, segment.dst_ip, kProtoTcp);
  return frame;
}

std::string buildTcpReset(const ParsedFrame& segment) {
  if (!segment.has_l4 || segment.protocol != kProtoTcp || (segment.tcp_flags & kTcpRst)) return {};
  TcpSegment rst;
  rst.src_mac = segment.dst_mac;
  rst.dst_mac = segment.src_mac;
  rst.src_ip = segment.dst_ip;
  rst.dst_ip = segment.src_ip;
  rst.src_port = segment.dst_port;
  rst.dst_port = segment.src_port;
  rst.window = 0;
  if (segment.tcp_flags & kTcpAck) {
    rst.seq = segment.tcp_ack;
    rst.flags = kTcpRst;
  } else {
    auto length = static_cast<uint32_t>(segment.payload.size());
    if (segment.tcp_flags & kTcpSyn) ++length;
    if (segment.tcp_flags & kTcpFin) ++length;
    rst.seq = 0;
    rst.ack = segment.tcp_seq + length;
    rst.flags = kTcpRst | kTcpAck;
  }
  return buildTcpFrame(rst);
}

std::string buildIcmpProhibited(std::span<const uint8_t> original, const ParsedFrame& parsed,
                                const IpAddress& router) {
  if (!parsed.is_ip || isIcmpError(parsed) || router.v4 != parsed.src_ip.v4) return {};
  // RFC 1812 / RFC 4443: quote as much as fits in the minimum MTU (576 / 1280).
  size_t l3_header = parsed.src_ip.v4 ? kIpv4HeaderBytes : kIpv6HeaderBytes;
  size_t max_quote = (parsed.src_ip.v4 ? 576 : 1280) - l3_header - kIcmpHeaderBytes;
  size_t quote = std::min(parsed.l3_end - parsed.l3_offset, max_quote);
  uint8_t protocol = parsed.src_ip.v4 ? kProtoIcmp : kProtoIcmpv6;
  size_t l4 = 0;
  std::string frame =
      makeIpFrame(parsed.dst_mac, parsed.src_mac, router, parsed.src_ip, protocol, kIcmpHeaderBytes + quote, l4);
  uint8_t* p = bytesOf(frame) + l4;
  if (parsed.src_ip.v4) {
    p[0] = 3;   // destination unreachable
    p[1] = 13;  // communication administratively prohibited
  } else {
    p[0] = 1;  // destination unreachable
    p[1] = 1;  // communication with destination administratively prohibited
  }
  std::memcpy(p + kIcmpHeaderBytes, original.data() + parsed.l3_offset, quote);
  finishL4Checksum(frame, l4, 2, router, parsed.src_ip, protocol);
  return frame;
}

UdpEndpoints replyEndpoints(const ParsedFrame& request) {
  UdpEndpoints endpoints;
  endpoints.src_mac = request.dst_mac;
  endpoints.dst_mac = request.src_mac;
  endpoints.src_ip = request.dst_ip;
  endpoints.dst_ip = request.src_ip;
  endpoints.src_port = request.dst_port;
  endpoints.dst_port = request.src_port;
  return endpoints;
}

std::vector<std::string> buildUdpFrames(const UdpEndpoints& endpoints, std::span<const uint8_t> payload, size_t mtu,
                                        uint32_t ip_id) {
  std::vector<std::string> frames;
  size_t udp_length = kUdpHeaderBytes + payload.size();
  if (udp_length > 0xffff || endpoints.src_ip.v4 != endpoints.dst_ip.v4) return frames;
  bool v4 = endpoints.src_ip.v4;
  size_t l3_header = v4 ? kIpv4HeaderBytes : kIpv6HeaderBytes;
  mtu = std::max(mtu, v4 ? size_t{576} : size_t{1280});

  // The whole datagram first: its checksum covers all of it.
  std::string datagram(udp_length, '\0');
  uint8_t* u = bytesOf(datagram);
  store16(u, endpoints.src_port);
  store16(u + 2, endpoints.dst_port);
  store16(u + 4, static_cast<uint16_t>(udp_length));
  if (!payload.empty()) std::memcpy(u + kUdpHeaderBytes, payload.data(), payload.size());
  uint16_t checksum = checksumFinish(checksumPartial(
      viewOf(datagram, 0, udp_length),
      pseudoHeaderSum(endpoints.src_ip, endpoints.dst_ip, kProtoUdp, static_cast<uint32_t>(udp_length))));
  store16(u + 6, checksum == 0 ? 0xffff : checksum);

  if (l3_header + udp_length <= mtu) {
    size_t l4 = 0;
    std::string frame = makeIpFrame(endpoints.src_mac, endpoints.dst_mac, endpoints.src_ip, endpoints.dst_ip,
                                    kProtoUdp, udp_length, l4);
    std::memcpy(bytesOf(frame) + l4, datagram.data(), udp_length);
    frames.push_back(std::move(frame));
    return frames;
  }
  // Fragments carry multiples of 8 bytes, except the last.
  size_t per_fragment = (mtu - l3_header - (v4 ? 0 : kIpv6FragmentHeaderBytes)) & ~size_t{7};
  for (size_t offset = 0; offset < udp_length; offset += per_fragment) {
    size_t chunk = std::min(per_fragment, udp_length - offset);
    bool more = offset + chunk < udp_length;
    size_t extra = v4 ? 0 : kIpv6FragmentHeaderBytes;
    std::string frame(kEthernetHeaderBytes + l3_header + extra + chunk, '\0');
    uint8_t* p = bytesOf(frame);
    writeEthernet(p, endpoints.dst_mac, endpoints.src_mac, v4 ? kEtherTypeIpv4 : kEtherTypeIpv6);
    uint8_t* l3 = p + kEthernetHeaderBytes;
    if (v4) {
      auto field = static_cast<uint16_t>((offset / 8) | (more ? 0x2000 : 0));
      writeIpv4(l3, endpoints.src_ip, endpoints.dst_ip, kProtoUdp, l3_header + chunk, static_cast<uint16_t>(ip_id),
                field);
    } else {
      writeIpv6(l3, endpoints.src_ip, endpoints.dst_ip, 44, kIpv6FragmentHeaderBytes + chunk);
      uint8_t* fragment = l3 + kIpv6HeaderBytes;
      fragment[0] = kProtoUdp;
      fragment[1] = 0;
      store16(fragment + 2, static_cast<uint16_t>(offset | (more ? 1 : 0)));
      store32(fragment + 4, ip_id);
    }
    std::memcpy(p + kEthernetHeaderBytes + l3_header + extra, datagram.data() + offset, chunk);
    frames.push_back(std::move(frame));
  }
  return frames;
}

std::string buildEchoRequest(const MacAddress& src_mac, const MacAddress& dst_mac, const IpAddress& src_ip,
                             const IpAddress& dst_ip, uint16_t id, uint16_t sequence) {
  uint8_t protocol = src_ip.v4 ? kProtoIcmp : kProtoIcmpv6;
  constexpr size_t kData = 8;
  size_t l4 = 0;
  std::string frame = makeIpFrame(src_mac, dst_mac, src_ip, dst_ip, protocol, kIcmpHeaderBytes + kData, l4);
  uint8_t* p = bytesOf(frame) + l4;
  p[0] = src_ip.v4 ? 8 : 128;
  store16(p + 4, id);
  store16(p + 6, sequence);
  std::memcpy(p + kIcmpHeaderBytes, "microvm!", kData);
  finishL4Checksum(frame, l4, 2, src_ip, dst_ip, protocol);
  return frame;
}

}  // namespace microvm::net
