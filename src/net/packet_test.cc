#include "net/packet.h"

#include <gtest/gtest.h>

#include <map>

#include "net/net_test_util.h"

namespace microvm::net {
namespace {

using testing::bytes;
using testing::independentChecksumsOk;
using testing::ip;
using testing::tcpFrame;

ParsedFrame parseOk(const std::string& frame) {
  ParsedFrame parsed;
  EXPECT_EQ(parseFrame(bytes(frame), parsed), ParseStatus::kOk);
  return parsed;
}

ParseStatus parseStatus(const std::string& frame) {
  ParsedFrame parsed;
  return parseFrame(bytes(frame), parsed);
}

TEST(IpAddress, ParsesPrintsAndKeepsFamiliesApart) {
  EXPECT_EQ(ip("10.0.2.15").toString(), "10.0.2.15");
  EXPECT_EQ(ip("10.0.2.15").v4HostOrder(), 0x0a00020fu);
  EXPECT_EQ(ip("FD00::3").toString(), "fd00::3");
  EXPECT_FALSE(IpAddress::parse("10.0.2"));
  EXPECT_FALSE(IpAddress::parse("1.2.3.4.5"));
  EXPECT_FALSE(IpAddress::parse("[::1]"));
  EXPECT_FALSE(IpAddress::parse(""));
  EXPECT_FALSE(IpAddress::parse(std::string(100, '1')));
  // ::ffff:1.2.3.4 is an IPv6 address, never the IPv4 address 1.2.3.4.
  EXPECT_FALSE(ip("::ffff:1.2.3.4") == ip("1.2.3.4"));
  EXPECT_FALSE(ip("::ffff:1.2.3.4").inPrefix(ip("1.2.3.0"), 24));
  EXPECT_NE(IpAddressHash{}(ip("1.2.3.4")), IpAddressHash{}(ip("1.2.3.5")));
}

TEST(IpAddress, PrefixMatching) {
  EXPECT_TRUE(ip("172.31.255.1").inPrefix(ip("172.16.0.0"), 12));
  EXPECT_FALSE(ip("172.32.0.1").inPrefix(ip("172.16.0.0"), 12));
  EXPECT_TRUE(ip("1.2.3.4").inPrefix(ip("0.0.0.0"), 0));
  EXPECT_TRUE(ip("fd00:ec2::254").inPrefix(ip("fc00::"), 7));
  EXPECT_FALSE(ip("fe00::1").inPrefix(ip("fc00::"), 7));
  EXPECT_TRUE(ip("2001:db8::1").inPrefix(ip("2001:db8::1"), 128));
  EXPECT_FALSE(ip("2001:db8::2").inPrefix(ip("2001:db8::1"), 128));
}

TEST(Checksum, KnownIpv4HeaderVector) {
  // The textbook example header (RFC 1071 style): checksum 0xb861.
  std::vector<uint8_t> header = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                                 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
  EXPECT_EQ(checksumFinish(checksumPartial(header)), 0xb861);
  header[10] = 0xb8;
  header[11] = 0x61;
  EXPECT_EQ(checksumFinish(checksumPartial(header)), 0);
}

TEST(ParseFrame, Ipv4TcpFields) {
  std::string frame = tcpFrame(ip("10.0.2.15"), 40000, ip("93.184.216.34"), 443, kTcpSyn, 12345, 0, "hello");
  ASSERT_TRUE(independentChecksumsOk(frame));
  ParsedFrame parsed = parseOk(frame);
  EXPECT_TRUE(parsed.is_ip);
  EXPECT_EQ(parsed.ether_type, kEtherTypeIpv4);
  EXPECT_EQ(parsed.src_mac, testing::kGuestMac);
  EXPECT_EQ(parsed.dst_mac, testing::kGatewayMac);
  EXPECT_EQ(parsed.src_ip, ip("10.0.2.15"));
  EXPECT_EQ(parsed.dst_ip, ip("93.184.216.34"));
  EXPECT_EQ(parsed.protocol, kProtoTcp);
  EXPECT_TRUE(parsed.has_l4);
  EXPECT_FALSE(parsed.is_fragment);
  EXPECT_EQ(parsed.src_port, 40000);
  EXPECT_EQ(parsed.dst_port, 443);
  EXPECT_EQ(parsed.tcp_seq, 12345u);
  EXPECT_TRUE(parsed.isTcpSyn());
  EXPECT_EQ(std::string(parsed.payload.begin(), parsed.payload.end()), "hello");
  EXPECT_TRUE(checksumsValid(bytes(frame)));
  frame[frame.size() - 1] ^= 1;  // corrupt the payload
  EXPECT_FALSE(checksumsValid(bytes(frame)));
}

TEST(ParseFrame, EthernetPaddingIsNotPayload) {
  std::string frame = tcpFrame(ip("10.0.2.15"), 1, ip("1.1.1.1"), 2, kTcpAck);
  ASSERT_EQ(frame.size(), 54u);
  frame.append(6, '\0');  // padded to the 60-byte Ethernet minimum
  ParsedFrame parsed = parseOk(frame);
  EXPECT_EQ(parsed.l3_end, 54u);
  EXPECT_TRUE(parsed.payload.empty());
  EXPECT_TRUE(checksumsValid(bytes(frame)));
}

TEST(ParseFrame, Ipv6UdpAndExtensionHeaders) {
  std::string payload = "abc";
  std::string frame = testing::udpFrame(ip("fd00::15"), 5000, ip("2001:db8::1"), 53, bytes(payload));
  ASSERT_TRUE(independentChecksumsOk(frame));
  ParsedFrame parsed = parseOk(frame);
  EXPECT_FALSE(parsed.src_ip.v4);
  EXPECT_EQ(parsed.protocol, kProtoUdp);
  EXPECT_EQ(parsed.dst_port, 53);
  EXPECT_EQ(std::string(parsed.payload.begin(), parsed.payload.end()), "abc");

  // Insert a hop-by-hop (8 bytes) and a destination options header (16 bytes).
  std::string with_ext = frame.substr(0, 54);
  with_ext[20] = 0;  // next header: hop-by-hop
  with_ext += std::string{60, 0, 1, 4, 0, 0, 0, 0};                 // -> destination options
  with_ext += std::string{17, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};  // -> UDP
  with_ext += frame.substr(54);
  size_t payload_length = with_ext.size() - 54;
  with_ext[18] = static_cast<char>(payload_length >> 8);
  with_ext[19] = static_cast<char>(payload_length);
  parsed = parseOk(with_ext);
  EXPECT_EQ(parsed.protocol, kProtoUdp);
  EXPECT_TRUE(parsed.has_l4);
  EXPECT_EQ(parsed.l4_offset, 54u + 24);
  EXPECT_EQ(parsed.dst_port, 53);

  // An extension header running past the packet is malformed.
  std::string bad = with_ext;
  bad[55] = 100;  // hop-by-hop length: 808 bytes
  EXPECT_EQ(parseStatus(bad), ParseStatus::kMalformed);

  // A chain of more extension headers than any real packet uses.
  std::string chain = frame.substr(0, 54);
  chain[20] = 60;
  for (int i = 0; i < 12; ++i) chain += std::string{60, 0, 0, 0, 0, 0, 0, 0};
  chain += frame.substr(54);
  payload_length = chain.size() - 54;
  chain[18] = static_cast<char>(payload_length >> 8);
  chain[19] = static_cast<char>(payload_length);
  EXPECT_EQ(parseStatus(chain), ParseStatus::kMalformed);
}

TEST(ParseFrame, FragmentsHaveNoPorts) {
  std::string frame = tcpFrame(ip("10.0.2.15"), 1, ip("1.1.1.1"), 2, kTcpSyn);
  frame[20] = 0x20;  // MF
  ParsedFrame parsed = parseOk(frame);
  EXPECT_TRUE(parsed.is_fragment);
  EXPECT_FALSE(parsed.has_l4);
  EXPECT_EQ(parsed.dst_port, 0);
  frame[20] = 0x00;
  frame[21] = 0x10;  // offset 16 * 8
  EXPECT_TRUE(parseOk(frame).is_fragment);
  frame[20] = 0x40;  // DF only: not a fragment
  frame[21] = 0x00;
  EXPECT_FALSE(parseOk(frame).is_fragment);

  std::vector<uint8_t> big(3000, 'x');
  UdpEndpoints endpoints{testing::kGuestMac, testing::kGatewayMac, ip("fd00::15"), ip("2001:db8::1"), 1, 2};
  auto fragments = buildUdpFrames(endpoints, big, 1500, 7);
  ASSERT_GT(fragments.size(), 1u);
  parsed = parseOk(fragments[0]);
  EXPECT_TRUE(parsed.is_fragment);
  EXPECT_EQ(parsed.protocol, kProtoUdp);
  EXPECT_FALSE(parsed.has_l4);
}

TEST(ParseFrame, MalformedHeaders) {
  std::string good = tcpFrame(ip("10.0.2.15"), 1, ip("1.1.1.1"), 2, kTcpSyn);
  // Every truncation of a valid frame is either rejected or parsed within bounds.
  for (size_t length = 0; length < good.size(); ++length) {
    EXPECT_EQ(parseStatus(good.substr(0, length)), ParseStatus::kMalformed) << length;
  }
  std::string bad = good;
  bad[14] = 0x44;  // IHL 4
  EXPECT_EQ(parseStatus(bad), ParseStatus::kMalformed);
  bad = good;
  bad[14] = 0x55;  // version 5
  EXPECT_EQ(parseStatus(bad), ParseStatus::kMalformed);
  bad = good;
  bad[17] = static_cast<char>(bad[17] + 1);  // total length past the frame
  EXPECT_EQ(parseStatus(bad), ParseStatus::kMalformed);
  bad = good;
  bad[14 + 20 + 12] = static_cast<char>(0xf0);  // TCP data offset 60 > segment
  EXPECT_EQ(parseStatus(bad), ParseStatus::kMalformed);

  std::string payload = "x";
  std::string udp = testing::udpFrame(ip("10.0.2.15"), 1, ip("1.1.1.1"), 2, bytes(payload));
  bad = udp;
  bad[14 + 20 + 5] = 4;  // UDP length 4 < 8
  EXPECT_EQ(parseStatus(bad), ParseStatus::kMalformed);
  bad = udp;
  bad[14 + 20 + 5] = 100;  // UDP length past the packet
  EXPECT_EQ(parseStatus(bad), ParseStatus::kMalformed);

  std::string v6 = testing::udpFrame(ip("fd00::15"), 1, ip("2001:db8::1"), 2, bytes(payload));
  bad = v6;
  bad[18] = 0;
  bad[19] = 0;  // payload length 0 (a jumbogram)
  EXPECT_EQ(parseStatus(bad), ParseStatus::kMalformed);

  std::string arp(14 + 20, '\0');
  arp[12] = 0x08;
  arp[13] = 0x06;
  EXPECT_EQ(parseStatus(arp), ParseStatus::kMalformed);  // shorter than an ARP packet
  arp.resize(14 + 28);
  EXPECT_EQ(parseStatus(arp), ParseStatus::kOk);
  EXPECT_FALSE(parseOk(arp).is_ip);
}

TEST(BuildTcpReset, AnswersASyn) {
  std::string syn = tcpFrame(ip("10.0.2.15"), 40000, ip("93.184.216.34"), 443, kTcpSyn, 0xfffffffe);
  std::string rst = buildTcpReset(parseOk(syn));
  ASSERT_FALSE(rst.empty());
  EXPECT_TRUE(independentChecksumsOk(rst));
  ParsedFrame parsed = parseOk(rst);
  EXPECT_EQ(parsed.src_mac, testing::kGatewayMac);
  EXPECT_EQ(parsed.dst_mac, testing::kGuestMac);
  EXPECT_EQ(parsed.src_ip, ip("93.184.216.34"));
  EXPECT_EQ(parsed.dst_ip, ip("10.0.2.15"));
  EXPECT_EQ(parsed.src_port, 443);
  EXPECT_EQ(parsed.dst_port, 40000);
  EXPECT_EQ(parsed.tcp_flags, kTcpRst | kTcpAck);
  EXPECT_EQ(parsed.tcp_seq, 0u);
  EXPECT_EQ(parsed.tcp_ack, 0xffffffffu);  // SEG.SEQ + 1 for the SYN
}

TEST(BuildTcpReset, AnswersDataWithItsAck) {
  std::string data = tcpFrame(ip("fd00::15"), 40000, ip("2001:db8::1"), 80, kTcpAck | kTcpPsh, 100, 777, "GET /");
  std::string rst = buildTcpReset(parseOk(data));
  ASSERT_FALSE(rst.empty());
  EXPECT_TRUE(independentChecksumsOk(rst));
  ParsedFrame parsed = parseOk(rst);
  EXPECT_EQ(parsed.tcp_flags, kTcpRst);
  EXPECT_EQ(parsed.tcp_seq, 777u);
  EXPECT_EQ(parsed.src_ip, ip("2001:db8::1"));

  std::string fin = tcpFrame(ip("10.0.2.15"), 1, ip("1.1.1.1"), 2, kTcpFin, 10, 0, "ab");
  EXPECT_EQ(parseOk(buildTcpReset(parseOk(fin))).tcp_ack, 13u);  // 2 bytes + FIN

  std::string reset = tcpFrame(ip("10.0.2.15"), 1, ip("1.1.1.1"), 2, kTcpRst);
  EXPECT_TRUE(buildTcpReset(parseOk(reset)).empty());  // never answer a RST
}

TEST(BuildIcmpProhibited, Ipv4QuotesTheDatagram) {
  std::string payload(1000, 'q');
  std::string udp = testing::udpFrame(ip("10.0.2.15"), 5353, ip("8.8.8.8"), 443, bytes(payload));
  ParsedFrame original = parseOk(udp);
  std::string icmp = buildIcmpProhibited(bytes(udp), original, ip("10.0.2.2"));
  ASSERT_FALSE(icmp.empty());
  EXPECT_TRUE(independentChecksumsOk(icmp));
  ParsedFrame parsed = parseOk(icmp);
  EXPECT_EQ(parsed.protocol, kProtoIcmp);
  EXPECT_EQ(parsed.icmp_type, 3);
  EXPECT_EQ(parsed.icmp_code, 13);
  EXPECT_EQ(parsed.src_ip, ip("10.0.2.2"));
  EXPECT_EQ(parsed.dst_ip, ip("10.0.2.15"));
  EXPECT_LE(icmp.size() - 14, 576u);
  // The quote starts with the original IP header (4 unused bytes first).
  EXPECT_EQ(icmp.substr(14 + 20 + 8, 28), udp.substr(14, 28));

  // An ICMP error is never answered with another.
  EXPECT_TRUE(buildIcmpProhibited(bytes(icmp), parsed, ip("10.0.2.2")).empty());
}

TEST(BuildIcmpProhibited, Ipv6) {
  std::string payload = "data";
  std::string udp = testing::udpFrame(ip("fd00::15"), 5353, ip("2001:db8::1"), 443, bytes(payload));
  std::string icmp = buildIcmpProhibited(bytes(udp), parseOk(udp), ip("fd00::2"));
  ASSERT_FALSE(icmp.empty());
  EXPECT_TRUE(independentChecksumsOk(icmp));
  EXPECT_TRUE(checksumsValid(bytes(icmp)));
  ParsedFrame parsed = parseOk(icmp);
  EXPECT_EQ(parsed.protocol, kProtoIcmpv6);
  EXPECT_EQ(parsed.icmp_type, 1);
  EXPECT_EQ(parsed.icmp_code, 1);
  EXPECT_EQ(icmp.substr(14 + 40 + 8), udp.substr(14));
  EXPECT_TRUE(buildIcmpProhibited(bytes(icmp), parsed, ip("fd00::2")).empty());
}

// Reassembles IPv4 or IPv6 fragments of one datagram (test-side, from raw bytes).
std::string reassemble(const std::vector<std::string>& fragments, bool v4) {
  std::map<size_t, std::string> parts;
  for (const auto& f : fragments) {
    if (v4) {
      size_t offset = ((static_cast<uint8_t>(f[20]) & 0x1f) << 8 | static_cast<uint8_t>(f[21])) * 8u;
      size_t total = (static_cast<uint8_t>(f[16]) << 8) | static_cast<uint8_t>(f[17]);
      parts[offset] = f.substr(34, total - 20);
    } else {
      EXPECT_EQ(f[20], 44);
      size_t offset = ((static_cast<uint8_t>(f[56]) << 8) | static_cast<uint8_t>(f[57])) & ~7u;
      size_t payload = (static_cast<uint8_t>(f[18]) << 8) | static_cast<uint8_t>(f[19]);
      parts[offset] = f.substr(62, payload - 8);
    }
  }
  std::string whole;
  for (const auto& [offset, data] : parts) {
    EXPECT_EQ(offset, whole.size());
    whole += data;
  }
  return whole;
}

TEST(BuildUdpFrames, FragmentsLargeDatagrams) {
  std::vector<uint8_t> payload(4000);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7);
  for (bool v4 : {true, false}) {
    UdpEndpoints endpoints{testing::kGatewayMac, testing::kGuestMac, v4 ? ip("10.0.2.3") : ip("fd00::3"),
                           v4 ? ip("10.0.2.15") : ip("fd00::15"), 53, 40000};
    auto frames = buildUdpFrames(endpoints, payload, 1500, 42);
    ASSERT_EQ(frames.size(), 3u) << v4;
    for (const auto& frame : frames) {
      EXPECT_LE(frame.size(), 1514u);
      ParsedFrame parsed = parseOk(frame);
      EXPECT_TRUE(parsed.is_fragment);
      if (v4) {
        EXPECT_EQ(checksumFinish(checksumPartial(bytes(frame).subspan(14, 20))), 0);
      }
    }
    std::string datagram = reassemble(frames, v4);
    ASSERT_EQ(datagram.size(), 8 + payload.size());
    EXPECT_EQ(datagram.substr(8), std::string(payload.begin(), payload.end()));
    // The UDP checksum over the reassembled datagram verifies.
    uint32_t sum = pseudoHeaderSum(endpoints.src_ip, endpoints.dst_ip, kProtoUdp,
                                   static_cast<uint32_t>(datagram.size()));
    EXPECT_EQ(checksumFinish(checksumPartial(bytes(datagram), sum)), 0) << v4;
  }
  UdpEndpoints small{testing::kGatewayMac, testing::kGuestMac, ip("10.0.2.3"), ip("10.0.2.15"), 53, 40000};
  std::vector<uint8_t> short_payload(100, 1);
  auto frames = buildUdpFrames(small, short_payload);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_TRUE(independentChecksumsOk(frames[0]));
  EXPECT_TRUE(buildUdpFrames(small, std::vector<uint8_t>(70000)).empty());
}

TEST(BuildEchoRequest, ChecksumsVerify) {
  std::string v4 = buildEchoRequest(testing::kGuestMac, testing::kGatewayMac, ip("10.0.2.15"), ip("1.1.1.1"), 7, 1);
  std::string v6 = buildEchoRequest(testing::kGuestMac, testing::kGatewayMac, ip("fd00::15"), ip("2001:db8::1"), 7, 1);
  EXPECT_TRUE(independentChecksumsOk(v4));
  EXPECT_TRUE(independentChecksumsOk(v6));
  EXPECT_EQ(parseOk(v4).icmp_type, 8);
  EXPECT_EQ(parseOk(v6).icmp_type, 128);
}

}  // namespace
}  // namespace microvm::net
