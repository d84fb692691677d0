// Test helpers for the net unit tests: guest frames built from packet.h's
// builders, and a checksum verifier written independently of packet.cc so
// that the builders' checksums are checked against a second implementation.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "net/dns.h"
#include "net/packet.h"

namespace microvm::net::testing {

inline const MacAddress kGuestMac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
inline const MacAddress kGatewayMac{0x52, 0x55, 0x0a, 0x00, 0x02, 0x02};

inline IpAddress ip(const char* text) { return *IpAddress::parse(text); }

inline std::span<const uint8_t> bytes(const std::string& s) {
  // SAFETY: viewing chars as bytes; uint8_t may alias any object.
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Sum of big-endian 16-bit words, folded: 0xffff over data that includes a
// correct checksum.
inline uint16_t foldedSum(const std::vector<uint8_t>& data) {
  uint32_t sum = 0;
  for (size_t i = 0; i < data.size(); i += 2) {
    uint32_t word = static_cast<uint32_t>(data[i]) << 8;
    if (i + 1 < data.size()) word |= data[i + 1];
    sum += word;
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

// Verifies an unfragmented IPv4/IPv6 frame's IP header checksum and its
// TCP/UDP/ICMP/ICMPv6 checksum from the raw bytes.
inline bool independentChecksumsOk(const std::string& frame) {
  std::vector<uint8_t> f(frame.begin(), frame.end());
  if (f.size() < 14) return false;
  uint16_t type = static_cast<uint16_t>((f[12] << 8) | f[13]);
  std::vector<uint8_t> pseudo;
  size_t l4 = 0, end = 0;
  uint8_t protocol = 0;
  if (type == 0x0800) {
    size_t ihl = (f[14] & 0xf) * 4u;
    if (foldedSum({f.begin() + 14, f.begin() + 14 + static_cast<long>(ihl)}) != 0xffff) return false;
    size_t total = (f[16] << 8) | f[17];
    protocol = f[23];
    l4 = 14 + ihl;
    end = 14 + total;
    pseudo.insert(pseudo.end(), f.begin() + 26, f.begin() + 34);
    pseudo.push_back(0);
    pseudo.push_back(protocol);
  } else if (type == 0x86dd) {
    size_t payload = (f[18] << 8) | f[19];
    protocol = f[20];
    l4 = 54;
    end = 54 + payload;
    pseudo.insert(pseudo.end(), f.begin() + 22, f.begin() + 54);
    pseudo.push_back(0);
    pseudo.push_back(0);
  } else {
    return false;
  }
  size_t length = end - l4;
  if (type == 0x86dd) {
    pseudo.push_back(static_cast<uint8_t>(length >> 8));
    pseudo.push_back(static_cast<uint8_t>(length));
    pseudo.push_back(0);
    pseudo.push_back(0);
    pseudo.push_back(0);
    pseudo.push_back(protocol);
  } else {
    pseudo.push_back(static_cast<uint8_t>(length >> 8));
    pseudo.push_back(static_cast<uint8_t>(length));
  }
  std::vector<uint8_t> data;
  if (protocol != kProtoIcmp) data = pseudo;
  data.insert(data.end(), f.begin() + static_cast<long>(l4), f.begin() + static_cast<long>(end));
  return foldedSum(data) == 0xffff;
}

inline std::string tcpFrame(const IpAddress& src, uint16_t sport, const IpAddress& dst, uint16_t dport, uint8_t flags,
                            uint32_t seq = 1000, uint32_t ack = 0, std::string_view payload = {}) {
  TcpSegment segment;
  segment.src_mac = kGuestMac;
  segment.dst_mac = kGatewayMac;
  segment.src_ip = src;
  segment.dst_ip = dst;
  segment.src_port = sport;
  segment.dst_port = dport;
  segment.seq = seq;
  segment.ack = ack;
  segment.flags = flags;
  // SAFETY: viewing chars as bytes; uint8_t may alias any object.
  return buildTcpFrame(segment, {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()});
}

// The same segment as the stack would deliver it to the guest.
inline std::string hostTcpFrame(const IpAddress& src, uint16_t sport, const IpAddress& dst, uint16_t dport,
                                uint8_t flags) {
  TcpSegment segment;
  segment.src_mac = kGatewayMac;
  segment.dst_mac = kGuestMac;
  segment.src_ip = src;
  segment.dst_ip = dst;
  segment.src_port = sport;
  segment.dst_port = dport;
  segment.seq = 5000;
  segment.flags = flags;
  return buildTcpFrame(segment);
}

inline std::string udpFrame(const IpAddress& src, uint16_t sport, const IpAddress& dst, uint16_t dport,
                            std::span<const uint8_t> payload, bool from_host = false) {
  UdpEndpoints endpoints;
  endpoints.src_mac = from_host ? kGatewayMac : kGuestMac;
  endpoints.dst_mac = from_host ? kGuestMac : kGatewayMac;
  endpoints.src_ip = src;
  endpoints.dst_ip = dst;
  endpoints.src_port = sport;
  endpoints.dst_port = dport;
  return buildUdpFrames(endpoints, payload, 65535).at(0);
}

// A DNS query message for `name`.
inline std::string dnsQuery(uint16_t id, std::string_view name, uint16_t type = kDnsTypeA) {
  std::string message = {static_cast<char>(id >> 8), static_cast<char>(id & 0xff), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
  message += encodeDnsName(name);
  message += {static_cast<char>(type >> 8), static_cast<char>(type & 0xff), 0, 1};
  return message;
}

struct TestRecord {
  std::string name;
  uint16_t type;
  uint32_t ttl;
  std::string rdata;  // raw bytes
};

inline std::string rdataA(const char* address) {
  IpAddress a = ip(address);
  return std::string(reinterpret_cast<const char*>(a.bytes.data()), a.size());  // SAFETY: bytes as chars
}

// A response to `question` with the given answer records (no compression).
inline std::string dnsResponse(uint16_t id, std::string_view question, uint16_t qtype,
                               const std::vector<TestRecord>& answers, uint8_t rcode = 0,
                               const std::vector<TestRecord>& additional = {}) {
  std::string message = {static_cast<char>(id >> 8), static_cast<char>(id & 0xff), static_cast<char>(0x81),
                         static_cast<char>(0x80 | rcode), 0, 1, 0, static_cast<char>(answers.size()), 0, 0, 0,
                         static_cast<char>(additional.size())};
  message += encodeDnsName(question);
  message += {static_cast<char>(qtype >> 8), static_cast<char>(qtype & 0xff), 0, 1};
  for (const auto* section : {&answers, &additional}) {
    for (const TestRecord& record : *section) {
      message += encodeDnsName(record.name);
      message += {static_cast<char>(record.type >> 8), static_cast<char>(record.type & 0xff), 0, 1};
      message += {static_cast<char>(record.ttl >> 24), static_cast<char>(record.ttl >> 16),
                  static_cast<char>(record.ttl >> 8), static_cast<char>(record.ttl)};
      message += {static_cast<char>(record.rdata.size() >> 8), static_cast<char>(record.rdata.size() & 0xff)};
      message += record.rdata;
    }
  }
  return message;
}

}  // namespace microvm::net::testing
