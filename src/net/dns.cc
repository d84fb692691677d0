#include "net/dns.h"

#include <algorithm>

namespace microvm::net {
namespace {

constexpr size_t kMaxNameWireBytes = 255;
constexpr size_t kMaxLabelBytes = 63;
constexpr int kMaxCnameLinks = 8;
constexpr size_t kMaxAddresses = 64;
constexpr uint16_t kFlagResponse = 0x8000;
constexpr uint16_t kFlagTruncated = 0x0200;
constexpr uint16_t kFlagRecursionDesired = 0x0100;
constexpr uint16_t kFlagRecursionAvailable = 0x0080;

uint16_t load16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t load32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | p[3];
}

Error malformed(const char* what) { return Error(ErrorCode::kProtocol, std::string("dns message: ") + what); }

// A name byte the policy can match on: printable ASCII except '.', which
// would make one label read as two.
bool plainNameByte(uint8_t c) { return c > 0x20 && c < 0x7f && c != '.'; }

// Reads the (possibly compressed) name at `offset`. On success `end` is the
// offset just past the name where it starts (not where pointers led). In
// lenient mode a name with other bytes is accepted but made unequal to any
// plain name (a trailing '\0'), so that an odd record elsewhere in an answer
// does not spoil the message.
const char* readName(std::span<const uint8_t> message, size_t offset, bool lenient, std::string& name, size_t& end,
                     bool allow_pointers = true) {
  name.clear();
  size_t position = offset;
  size_t limit = offset;
  bool jumped = false;
  bool odd = false;
  size_t wire = 1;  // the root label
  for (int hops = 0;;) {
    if (position >= message.size()) return "name runs past the end";
    uint8_t length = message[position];
    if ((length & 0xc0) == 0xc0) {
      if (!allow_pointers) return "compression pointer in a query's question";
      if (position + 1 >= message.size()) return "name pointer runs past the end";
      size_t target = (static_cast<size_t>(length & 0x3f) << 8) | message[position + 1];
      // Only backwards, and each jump before where the previous one landed
      // (the first before the name's start): the targets strictly decrease,
      // so there is no loop.
      if (target >= limit) return "name pointer does not point backwards";
      limit = target;
      if (++hops > 64) return "too many name pointers";
      if (!jumped) end = position + 2;
      jumped = true;
      position = target;
      continue;
    }
    if ((length & 0xc0) != 0) return "unknown label type";
    if (length == 0) {
      if (!jumped) end = position + 1;
      break;
    }
    if (length > kMaxLabelBytes) return "label longer than 63 bytes";
    if (position + 1 + length > message.size()) return "label runs past the end";
    wire += length + 1;
    if (wire > kMaxNameWireBytes) return "name longer than 255 bytes";
    if (!name.empty()) name.push_back('.');
    for (size_t i = 0; i < length; ++i) {
      uint8_t c = message[position + 1 + i];
      if (!plainNameByte(c)) {
        if (!lenient) return "name has a byte that is not printable ASCII, or a dot inside a label";
        odd = true;
        c = '?';
      }
      if (c >= 'A' && c <= 'Z') c = static_cast<uint8_t>(c - 'A' + 'a');
      name.push_back(static_cast<char>(c));
    }
    position += 1 + length;
  }
  if (odd) name.push_back('\0');
  return nullptr;
}

struct Record {
  std::string name;
  uint16_t type = 0;
  uint16_t klass = 0;
  uint32_t ttl = 0;
  size_t rdata = 0;
  size_t rdata_length = 0;
};

}  // namespace

Result<DnsQuery> parseDnsQuery(std::span<const uint8_t> message) {
  if (message.size() < kDnsHeaderBytes) return malformed("shorter than a header");
  DnsQuery query;
  query.id = load16(message.data());
  query.flags = load16(message.data() + 2);
  if (query.flags & kFlagResponse) return malformed("a response, not a query");
  if (((query.flags >> 11) & 0xf) != 0) return malformed("opcode is not QUERY");
  if (load16(message.data() + 4) != 1) return malformed("not exactly one question");
  size_t end = 0;
  // A query's question is the first name in the message: nothing earlier is
  // a name to point to (only the header, which the reply rewrites), so a
  // pointer here is refused rather than followed.
  if (const char* why = readName(message, kDnsHeaderBytes, false, query.question.name, end, false)) {
    return malformed(why);
  }
  if (end + 4 > message.size()) return malformed("question runs past the end");
  query.question.type = load16(message.data() + end);
  query.question.klass = load16(message.data() + end + 2);
  query.question_end = end + 4;
  return query;
}

Result<DnsAnswer> parseDnsAnswer(std::span<const uint8_t> message) {
  if (message.size() < kDnsHeaderBytes) return malformed("shorter than a header");
  DnsAnswer answer;
  answer.id = load16(message.data());
  uint16_t flags = load16(message.data() + 2);
  if (!(flags & kFlagResponse)) return malformed("a query, not a response");
  answer.rcode = static_cast<DnsRcode>(flags & 0xf);
  answer.truncated = (flags & kFlagTruncated) != 0;
  if (load16(message.data() + 4) != 1) return malformed("not exactly one question");
  size_t answers = load16(message.data() + 6);
  size_t end = 0;
  if (const char* why = readName(message, kDnsHeaderBytes, true, answer.question.name, end)) return malformed(why);
  if (end + 4 > message.size()) return malformed("question runs past the end");
  answer.question.type = load16(message.data() + end);
  answer.question.klass = load16(message.data() + end + 2);
  size_t position = end + 4;

  // Only the answer section matters; authority and additional records are
  // never trusted for addresses (they are where cache poisoning hides).
  std::vector<Record> records;
  records.reserve(std::min<size_t>(answers, 64));
  for (size_t i = 0; i < answers; ++i) {
    Record record;
    if (const char* why = readName(message, position, true, record.name, end)) return malformed(why);
    if (end + 10 > message.size()) return malformed("record runs past the end");
    const uint8_t* p = message.data() + end;
    record.type = load16(p);
    record.klass = load16(p + 2);
    record.ttl = load32(p + 4);
    record.rdata_length = load16(p + 8);
    record.rdata = end + 10;
    if (record.rdata + record.rdata_length > message.size()) return malformed("record data runs past the end");
    position = record.rdata + record.rdata_length;
    if (record.klass == kDnsClassIn) records.push_back(std::move(record));
  }

  // Follow the CNAME chain from the question's name.
  std::vector<std::string> owners{answer.question.name};
  for (int link = 0; link < kMaxCnameLinks; ++link) {
    const std::string& current = owners.back();
    auto cname = std::find_if(records.begin(), records.end(), [&](const Record& r) {
      return r.type == kDnsTypeCname && r.name == current;
    });
    if (cname == records.end()) break;
    std::string target;
    size_t target_end = 0;
    // The target must lie inside the record's data, though pointers may lead out of it.
    if (readName(message.first(cname->rdata + cname->rdata_length), cname->rdata, true, target, target_end) !=
        nullptr) {
      return malformed("CNAME target does not parse");
    }
    if (std::find(owners.begin(), owners.end(), target) != owners.end()) break;  // a loop
    owners.push_back(target);
    answer.cname_chain.push_back(std::move(target));
  }
  for (const Record& record : records) {
    if (answer.addresses.size() >= kMaxAddresses) break;
    if (std::find(owners.begin(), owners.end(), record.name) == owners.end()) continue;
    const uint8_t* data = message.data() + record.rdata;
    if (record.type == kDnsTypeA && record.rdata_length == 4) {
      answer.addresses.push_back({IpAddress::fromV4Bytes(data), record.ttl});
    } else if (record.type == kDnsTypeAaaa && record.rdata_length == 16) {
      answer.addresses.push_back({IpAddress::fromV6Bytes(data), record.ttl});
    }
  }
  return answer;
}

std::string buildDnsErrorReply(std::span<const uint8_t> query, const DnsQuery& parsed, DnsRcode rcode) {
  // The question is copied as sent: its case (0x20 randomization) and any
  // pointer in it keep their meaning at the same offsets.
  std::string reply(query.begin(), query.begin() + static_cast<std::ptrdiff_t>(parsed.question_end));
  auto flags = static_cast<uint16_t>(kFlagResponse | (parsed.flags & kFlagRecursionDesired) | kFlagRecursionAvailable |
                                     static_cast<uint16_t>(rcode));
  reply[2] = static_cast<char>(flags >> 8);
  reply[3] = static_cast<char>(flags & 0xff);
  for (size_t i = 6; i < kDnsHeaderBytes; ++i) reply[i] = '\0';  // no answer, authority or additional records
  return reply;
}

std::string encodeDnsName(std::string_view name) {
  std::string wire;
  while (!name.empty()) {
    size_t dot = name.find('.');
    std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > kMaxLabelBytes) return {};
    wire.push_back(static_cast<char>(label.size()));
    wire.append(label);
    if (dot == std::string_view::npos) break;
    name.remove_prefix(dot + 1);
    if (name.empty()) break;  // a trailing dot
  }
  wire.push_back('\0');
  return wire.size() > kMaxNameWireBytes ? std::string() : wire;
}

}  // namespace microvm::net
