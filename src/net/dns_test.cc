#include "net/dns.h"

#include <gtest/gtest.h>

#include "net/net_test_util.h"

namespace microvm::net {
namespace {

using testing::bytes;
using testing::dnsQuery;
using testing::dnsResponse;
using testing::ip;
using testing::rdataA;

std::string header(uint16_t id, uint16_t flags, uint16_t qd, uint16_t an = 0) {
  return {static_cast<char>(id >> 8), static_cast<char>(id), static_cast<char>(flags >> 8), static_cast<char>(flags),
          static_cast<char>(qd >> 8), static_cast<char>(qd),  static_cast<char>(an >> 8),    static_cast<char>(an),
          0,                          0,                      0,                             0};
}

TEST(DnsQuery, ParsesQuestionLowerCased) {
  std::string message = dnsQuery(0xbeef, "WwW.Example.COM", kDnsTypeAaaa);
  auto query = parseDnsQuery(bytes(message));
  ASSERT_TRUE(query) << query.error().message();
  EXPECT_EQ(query->id, 0xbeef);
  EXPECT_EQ(query->question.name, "www.example.com");
  EXPECT_EQ(query->question.type, kDnsTypeAaaa);
  EXPECT_EQ(query->question.klass, kDnsClassIn);
  EXPECT_EQ(query->question_end, message.size());
  // EDNS: an OPT record after the question is fine.
  message[11] = 1;
  message += std::string{0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_TRUE(parseDnsQuery(bytes(message)));
}

TEST(DnsQuery, RejectsMalformed) {
  auto error_of = [](const std::string& message) {
    auto query = parseDnsQuery(bytes(message));
    return query ? std::string("parsed") : query.error().message();
  };
  std::string good = dnsQuery(1, "example.com");
  for (size_t length = 0; length < good.size(); ++length) {
    EXPECT_NE(error_of(good.substr(0, length)), "parsed") << length;
  }
  EXPECT_NE(error_of(header(1, 0x8000, 1) + encodeDnsName("a.com") + std::string{0, 1, 0, 1}).find("response"),
            std::string::npos);
  EXPECT_NE(error_of(header(1, 0x2800, 1) + encodeDnsName("a.com") + std::string{0, 1, 0, 1}).find("opcode"),
            std::string::npos);
  EXPECT_NE(error_of(header(1, 0x0100, 2) + encodeDnsName("a.com") + std::string{0, 1, 0, 1}).find("one question"),
            std::string::npos);
  // A length byte of 64 is no label: its top bits (01) mark an extended label type.
  std::string long_label = header(1, 0x0100, 1) + std::string(1, 64) + std::string(64, 'a') + std::string{0, 0, 1, 0, 1};
  EXPECT_NE(error_of(long_label).find("label type"), std::string::npos);
  // A name of more than 255 bytes.
  std::string long_name = header(1, 0x0100, 1);
  for (int i = 0; i < 5; ++i) long_name += std::string(1, 60) + std::string(60, 'a');
  long_name += std::string{0, 0, 1, 0, 1};
  EXPECT_NE(error_of(long_name).find("255"), std::string::npos);
  // A dot inside a label would read as two labels in name matching.
  std::string dotted = header(1, 0x0100, 1) + std::string(1, 11) + "evil.allowe" + std::string{3} + "com" +
                       std::string{0, 0, 1, 0, 1};
  EXPECT_NE(error_of(dotted).find("dot"), std::string::npos);
  // Compression pointers: to itself, forwards, and a two-pointer loop.
  auto answer_error = [](const std::string& message) {
    auto answer = parseDnsAnswer(bytes(message));
    return answer ? std::string("parsed") : answer.error().message();
  };
  std::string self = header(1, 0x8100, 1) + std::string{static_cast<char>(0xc0), 12, 0, 1, 0, 1};
  EXPECT_NE(answer_error(self).find("backwards"), std::string::npos);
  std::string forward = header(1, 0x8100, 1) + std::string{static_cast<char>(0xc0), 20, 0, 1, 0, 1, 0, 0};
  EXPECT_NE(answer_error(forward).find("backwards"), std::string::npos);
  std::string loop = header(1, 0x8100, 1) + std::string{1, 'y', static_cast<char>(0xc0), 12, 0, 1, 0, 1};
  EXPECT_NE(answer_error(loop).find("backwards"), std::string::npos);
  std::string extended = header(1, 0x0100, 1) + std::string{0x40, 0, 0, 1, 0, 1};
  EXPECT_NE(error_of(extended).find("label type"), std::string::npos);
}

TEST(DnsQuery, RefusesPointersInTheQuestion) {
  // Nothing precedes a query's question but the header. A pointer into it
  // ("www" + pointer to bytes 01 'a' 00 planted in NSCOUNT/ARCOUNT) would
  // change meaning once the reply rewrites those counts: refused.
  std::string message = header(7, 0x0100, 1);
  message[8] = 1;
  message[9] = 'a';
  message[10] = 0;
  message += std::string{3, 'w', 'w', 'w', static_cast<char>(0xc0), 8, 0, 1, 0, 1};
  auto query = parseDnsQuery(bytes(message));
  ASSERT_FALSE(query);
  EXPECT_NE(query.error().message().find("pointer"), std::string::npos);
  // The answer parser follows the same pointer.
  message[2] = static_cast<char>(0x81);
  auto answer = parseDnsAnswer(bytes(message));
  ASSERT_TRUE(answer) << answer.error().message();
  EXPECT_EQ(answer->question.name, "www.a");
}

TEST(DnsErrorReply, NxDomainKeepsIdRdAndQuestion) {
  std::string message = dnsQuery(0x1234, "Blocked.Example");
  auto query = parseDnsQuery(bytes(message));
  ASSERT_TRUE(query);
  std::string reply = buildDnsErrorReply(bytes(message), *query, DnsRcode::kNxDomain);
  ASSERT_EQ(reply.size(), message.size());
  EXPECT_EQ(reply.substr(0, 2), message.substr(0, 2));
  EXPECT_EQ(static_cast<uint8_t>(reply[2]), 0x81);  // QR, RD
  EXPECT_EQ(static_cast<uint8_t>(reply[3]), 0x83);  // RA, NXDOMAIN
  EXPECT_EQ(reply.substr(4, 8), std::string({0, 1, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(reply.substr(12), message.substr(12));  // the question as sent, case included
  auto answer = parseDnsAnswer(bytes(reply));
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->rcode, DnsRcode::kNxDomain);
  EXPECT_EQ(answer->question.name, "blocked.example");
  EXPECT_TRUE(answer->addresses.empty());

  std::string refused = buildDnsErrorReply(bytes(message), *query, DnsRcode::kRefused);
  EXPECT_EQ(static_cast<uint8_t>(refused[3]) & 0xf, 5);
}

TEST(DnsAnswer, FollowsCnameChainAndIgnoresOtherNames) {
  std::string message =
      dnsResponse(9, "www.example.com", kDnsTypeA,
                  {{"www.example.com", kDnsTypeCname, 60, encodeDnsName("edge.cdn.net")},
                   {"edge.cdn.net", kDnsTypeCname, 60, encodeDnsName("a1.cdn.net")},
                   {"a1.cdn.net", kDnsTypeA, 20, rdataA("93.184.216.34")},
                   {"a1.cdn.net", kDnsTypeA, 3600, rdataA("93.184.216.35")},
                   {"unrelated.org", kDnsTypeA, 60, rdataA("6.6.6.6")}},
                  0, {{"www.example.com", kDnsTypeA, 60, rdataA("7.7.7.7")}});
  auto answer = parseDnsAnswer(bytes(message));
  ASSERT_TRUE(answer) << answer.error().message();
  EXPECT_EQ(answer->id, 9);
  EXPECT_EQ(answer->question.name, "www.example.com");
  EXPECT_EQ(answer->cname_chain, (std::vector<std::string>{"edge.cdn.net", "a1.cdn.net"}));
  ASSERT_EQ(answer->addresses.size(), 2u);  // not the unrelated or the additional record
  EXPECT_EQ(answer->addresses[0].address, ip("93.184.216.34"));
  EXPECT_EQ(answer->addresses[0].ttl, 20u);
  EXPECT_EQ(answer->addresses[1].ttl, 3600u);
}

TEST(DnsAnswer, AaaaCompressedNamesAndLoops) {
  // A hand-compressed answer: the record's owner is a pointer to the question name.
  std::string message = header(5, 0x8180, 1, 1) + encodeDnsName("v6.example.com") + std::string{0, 28, 0, 1};
  message += std::string{static_cast<char>(0xc0), 12, 0, 28, 0, 1, 0, 0, 0, 100, 0, 16};
  IpAddress v6 = ip("2001:db8::42");
  message.append(reinterpret_cast<const char*>(v6.bytes.data()), 16);  // SAFETY: bytes as chars
  auto answer = parseDnsAnswer(bytes(message));
  ASSERT_TRUE(answer) << answer.error().message();
  ASSERT_EQ(answer->addresses.size(), 1u);
  EXPECT_EQ(answer->addresses[0].address, v6);
  EXPECT_EQ(answer->addresses[0].ttl, 100u);

  // A CNAME loop ends the chain instead of looping.
  std::string loop = dnsResponse(1, "a.com", kDnsTypeA,
                                 {{"a.com", kDnsTypeCname, 60, encodeDnsName("b.com")},
                                  {"b.com", kDnsTypeCname, 60, encodeDnsName("a.com")}});
  auto looped = parseDnsAnswer(bytes(loop));
  ASSERT_TRUE(looped);
  EXPECT_EQ(looped->cname_chain.size(), 1u);
  EXPECT_TRUE(looped->addresses.empty());

  // An A record with the wrong length is not an address.
  std::string odd = dnsResponse(1, "a.com", kDnsTypeA, {{"a.com", kDnsTypeA, 60, "abc"}});
  auto parsed_odd = parseDnsAnswer(bytes(odd));
  ASSERT_TRUE(parsed_odd);
  EXPECT_TRUE(parsed_odd->addresses.empty());
}

TEST(DnsAnswer, RejectsMalformed) {
  std::string good = dnsResponse(1, "a.com", kDnsTypeA, {{"a.com", kDnsTypeA, 60, rdataA("1.2.3.4")}});
  ASSERT_TRUE(parseDnsAnswer(bytes(good)));
  for (size_t length = 0; length < good.size(); ++length) {
    EXPECT_FALSE(parseDnsAnswer(bytes(good.substr(0, length)))) << length;
  }
  std::string query = dnsQuery(1, "a.com");
  EXPECT_FALSE(parseDnsAnswer(bytes(query)));  // not a response
  std::string truncated_flag = good;
  truncated_flag[2] = static_cast<char>(truncated_flag[2] | 0x02);
  auto answer = parseDnsAnswer(bytes(truncated_flag));
  ASSERT_TRUE(answer);
  EXPECT_TRUE(answer->truncated);
}

TEST(DnsName, Encode) {
  EXPECT_EQ(encodeDnsName("a.bc"), std::string("\1a\2bc\0", 6));
  EXPECT_EQ(encodeDnsName("a.bc."), std::string("\1a\2bc\0", 6));
  EXPECT_EQ(encodeDnsName(""), std::string(1, '\0'));
  EXPECT_EQ(encodeDnsName("a..b"), "");
  EXPECT_EQ(encodeDnsName(std::string(64, 'a')), "");
}

}  // namespace
}  // namespace microvm::net
