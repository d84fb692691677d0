// Fuzzes the DNS message parsers: the query parser (guest input) and the
// answer parser (network input). Besides crashes it checks that an error
// reply built for a parsed query parses as an answer to the same question.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "net/dns.h"

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> message(data, size);
  (void)microvm::net::parseDnsAnswer(message);
  auto query = microvm::net::parseDnsQuery(message);
  if (!query) return 0;
  std::string reply = microvm::net::buildDnsErrorReply(message, *query, microvm::net::DnsRcode::kNxDomain);
  // SAFETY: viewing chars as bytes; uint8_t may alias any object.
  auto answer = microvm::net::parseDnsAnswer({reinterpret_cast<const uint8_t*>(reply.data()), reply.size()});
  if (!answer || !(answer->question == query->question) || answer->id != query->id ||
      answer->rcode != microvm::net::DnsRcode::kNxDomain || !answer->addresses.empty()) {
    (void)std::fprintf(stderr, "the error reply to a query does not parse back to its question\n");
    std::abort();
  }
  return 0;
}
