// DNS messages (RFC 1035) as far as the egress filter needs them: the
// question of a guest's query, the A/AAAA addresses an answer gives for that
// question (following CNAME chains inside the message), and synthesized
// error replies (NXDOMAIN, REFUSED, SERVFAIL).
//
// Queries come from the guest and answers from the network: every read is
// bounds-checked, compression pointers may only point backwards (no loops),
// names are limited to 255 bytes and labels to 63.
//
//   auto query = net::parseDnsQuery(udp_payload);
//   if (!query) drop();
//   if (!allowed(query->question.name))
//     reply(net::buildDnsErrorReply(udp_payload, *query, net::DnsRcode::kNxDomain));
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "microvm/result.h"
#include "net/packet.h"

namespace microvm::net {

inline constexpr uint16_t kDnsTypeA = 1;
inline constexpr uint16_t kDnsTypeCname = 5;
inline constexpr uint16_t kDnsTypeAaaa = 28;
inline constexpr uint16_t kDnsClassIn = 1;
inline constexpr size_t kDnsHeaderBytes = 12;

enum class DnsRcode : uint8_t {
  kNoError = 0,
  kFormErr = 1,
  kServFail = 2,
  kNxDomain = 3,
  kRefused = 5,
};

struct DnsQuestion {
  std::string name;  // lower case, no trailing dot; "" is the root
  uint16_t type = 0;
  uint16_t klass = 0;
  bool operator==(const DnsQuestion&) const = default;
};

struct DnsQuery {
  uint16_t id = 0;
  uint16_t flags = 0;
  DnsQuestion question;
  size_t question_end = 0;  // offset just past the question section
};

// A standard query (QR=0, opcode QUERY) with exactly one question, not
// compressed (nothing precedes it to point to but the header). Names may
// hold letters, digits and printable punctuation except '.', which would make
// one label read as two in the policy's name matching.
Result<DnsQuery> parseDnsQuery(std::span<const uint8_t> message);

struct DnsAddressRecord {
  IpAddress address;
  uint32_t ttl = 0;
};

struct DnsAnswer {
  uint16_t id = 0;
  DnsRcode rcode = DnsRcode::kNoError;
  bool truncated = false;
  DnsQuestion question;
  // The A/AAAA records of the question's name, or of the names its CNAME
  // chain (at most 8 links, all inside this message) leads to. Records for
  // unrelated names in the message are ignored.
  std::vector<DnsAddressRecord> addresses;
  std::vector<std::string> cname_chain;  // names followed, in order
};

// A response (QR=1) with exactly one question; unknown record types are
// skipped, records of other classes ignored.
Result<DnsAnswer> parseDnsAnswer(std::span<const uint8_t> message);

// A reply to `query` (the raw message parsed as `parsed`) with `rcode` and no
// records: the header with QR, RA and the query's RD, and the question.
std::string buildDnsErrorReply(std::span<const uint8_t> query, const DnsQuery& parsed, DnsRcode rcode);

// Encodes `name` as a sequence of labels (tests and corpora build messages
// with it). Returns an empty string if a label is empty or over 63 bytes.
std::string encodeDnsName(std::string_view name);

}  // namespace microvm::net
