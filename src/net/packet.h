// Ethernet/IPv4/IPv6/TCP/UDP/ICMP parsing and the few frames the egress
// filter sends to the guest (TCP RST, ICMP unreachable, UDP replies).
//
// Every byte here comes from the guest or the network: parsing is bounds-
// checked, allocation-free and never asserts; a frame that does not parse is
// reported as malformed and the caller drops and counts it.
//
//   net::ParsedFrame parsed;
//   if (net::parseFrame(frame, parsed) != net::ParseStatus::kOk) drop();
//   if (parsed.protocol == net::kProtoTcp && parsed.isTcpSyn()) ...
//   std::string rst = net::buildTcpReset(parsed);
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace microvm::net {

inline constexpr uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr uint16_t kEtherTypeArp = 0x0806;
inline constexpr uint16_t kEtherTypeIpv6 = 0x86dd;

inline constexpr uint8_t kProtoIcmp = 1;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;
inline constexpr uint8_t kProtoIcmpv6 = 58;

inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;
inline constexpr uint8_t kTcpPsh = 0x08;
inline constexpr uint8_t kTcpAck = 0x10;

inline constexpr size_t kEthernetHeaderBytes = 14;

using MacAddress = std::array<uint8_t, 6>;

// An IPv4 or IPv6 address. IPv4 lives in bytes[0..3], the rest zero: the
// family is part of the value, so ::ffff:1.2.3.4 never equals 1.2.3.4.
struct IpAddress {
  std::array<uint8_t, 16> bytes{};
  bool v4 = true;

  static IpAddress fromV4(uint32_t host_order);
  static IpAddress fromV4Bytes(const uint8_t* four);
  static IpAddress fromV6Bytes(const uint8_t* sixteen);
  // Parses "10.0.2.15" or "fd00::1" (no brackets, no zone). nullopt if invalid.
  static std::optional<IpAddress> parse(std::string_view text);

  size_t size() const { return v4 ? 4 : 16; }
  uint32_t v4HostOrder() const;
  // True if the first `prefix_bits` bits equal those of `network` (same family).
  bool inPrefix(const IpAddress& network, unsigned prefix_bits) const;
  std::string toString() const;
  bool operator==(const IpAddress&) const = default;
};

struct IpAddressHash {
  size_t operator()(const IpAddress& address) const;
};

enum class ParseStatus {
  kOk,
  kMalformed,  // truncated, inconsistent lengths, bad header fields
};

// What parseFrame found. Offsets index into the parsed frame; `payload`
// points into it (valid while the frame is). Fields of layers that are absent
// are zero.
struct ParsedFrame {
  MacAddress dst_mac{};
  MacAddress src_mac{};
  uint16_t ether_type = 0;

  // Layer 3: set for IPv4 and IPv6 only.
  bool is_ip = false;
  IpAddress src_ip;
  IpAddress dst_ip;
  uint8_t protocol = 0;     // the upper-layer protocol (after IPv6 extension headers)
  uint8_t hop_limit = 0;    // IPv4 TTL or IPv6 hop limit
  bool is_fragment = false;  // any fragment (first or later): ports are not trustworthy
  size_t l3_offset = 0;
  size_t l4_offset = 0;     // start of the TCP/UDP/ICMP header
  size_t l3_end = 0;        // end of the IP packet (frames may carry Ethernet padding)

  // Layer 4: set when has_l4 (an unfragmented TCP, UDP, ICMP or ICMPv6 packet).
  bool has_l4 = false;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  uint8_t tcp_flags = 0;
  uint32_t tcp_seq = 0;
  uint32_t tcp_ack = 0;
  uint8_t icmp_type = 0;
  uint8_t icmp_code = 0;
  std::span<const uint8_t> payload;  // TCP/UDP payload, ICMP body after the 4-byte header

  bool isTcpSyn() const { return protocol == kProtoTcp && (tcp_flags & (kTcpSyn | kTcpAck | kTcpRst)) == kTcpSyn; }
};

// Parses an Ethernet frame. ARP and unknown EtherTypes are kOk with
// is_ip=false. IPv4: IHL, total length, fragments (offset or MF set marks
// is_fragment and skips L4). IPv6: hop-by-hop, routing and destination
// options headers are skipped (bounded), a fragment header marks is_fragment;
// any other next header is reported as the protocol without L4 fields.
ParseStatus parseFrame(std::span<const uint8_t> frame, ParsedFrame& out);

// RFC 1071 checksum helpers; `initial` carries a partial sum (pseudo-header).
uint32_t checksumPartial(std::span<const uint8_t> bytes, uint32_t initial = 0);
uint16_t checksumFinish(uint32_t sum);
// The TCP/UDP/ICMPv6 pseudo-header sum for `length` bytes of `protocol`.
uint32_t pseudoHeaderSum(const IpAddress& src, const IpAddress& dst, uint8_t protocol, uint32_t length);
// True if the IPv4 header checksum and the TCP/UDP/ICMP/ICMPv6 checksum of a
// parsed frame verify (a UDP/IPv4 checksum of zero means "none" and passes).
bool checksumsValid(std::span<const uint8_t> frame);

// The RST that refuses `segment` (a TCP segment the guest sent), from the
// peer it addressed back to the guest, per RFC 793: seq = SEG.ACK if the
// segment had ACK, else seq 0 and ACK = SEG.SEQ + SEG.LEN. Empty if
// `segment` is not TCP or is itself a RST.
std::string buildTcpReset(const ParsedFrame& segment);

// An ICMP "destination unreachable, administratively prohibited" (IPv4 type 3
// code 13, IPv6 type 1 code 1) from `router` (the gateway of the same family)
// to the guest, quoting as much of `original` as the minimum MTU allows.
// Empty for a non-IP frame or when `original` is itself an ICMP error.
std::string buildIcmpProhibited(std::span<const uint8_t> original, const ParsedFrame& parsed,
                                const IpAddress& router);

// Addresses and ports of a UDP datagram (the DNS reply to the guest).
struct UdpEndpoints {
  MacAddress src_mac{};
  MacAddress dst_mac{};
  IpAddress src_ip;
  IpAddress dst_ip;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
};

// The endpoints of a UDP reply to `request` (addresses, ports and MACs swapped).
UdpEndpoints replyEndpoints(const ParsedFrame& request);

// UDP datagram frames carrying `payload`. A datagram that does not fit in
// `mtu` (the IP packet size) is fragmented (IPv4 fragments, or an IPv6
// fragment header), so a large DNS answer still reaches a guest with a 1500
// byte MTU. `ip_id` is the IPv4 identification / IPv6 fragment id.
std::vector<std::string> buildUdpFrames(const UdpEndpoints& endpoints, std::span<const uint8_t> payload,
                                        size_t mtu = 1500, uint32_t ip_id = 0);

// A single TCP segment frame (the test suites and the benchmark build
// traffic with it).
struct TcpSegment {
  MacAddress src_mac{};
  MacAddress dst_mac{};
  IpAddress src_ip;
  IpAddress dst_ip;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t flags = 0;
  uint16_t window = 65535;
};
std::string buildTcpFrame(const TcpSegment& segment, std::span<const uint8_t> payload = {});

// An ICMP echo request (IPv4) or ICMPv6 echo request frame (tests, bench).
std::string buildEchoRequest(const MacAddress& src_mac, const MacAddress& dst_mac, const IpAddress& src_ip,
                             const IpAddress& dst_ip, uint16_t id, uint16_t sequence);

}  // namespace microvm::net
