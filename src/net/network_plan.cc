#include "net/network_plan.h"

#include <algorithm>

namespace microvm::net {
namespace {

bool sameRule(const EgressRule& a, const EgressRule& b) {
  return a.kind == b.kind && a.host == b.host && a.network == b.network && a.prefix_bits == b.prefix_bits &&
         a.port == b.port && a.protocol == b.protocol && a.text == b.text;
}

bool sameRules(const std::vector<EgressRule>& a, const std::vector<EgressRule>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), sameRule);
}

bool sameUpstream(const DnsUpstream& a, const DnsUpstream& b) { return a.address == b.address && a.port == b.port; }

}  // namespace

bool NetworkPlan::operator==(const NetworkPlan& other) const {
  return ports == other.ports && std::equal(dns.begin(), dns.end(), other.dns.begin(), other.dns.end(), sameUpstream) &&
         egress.active == other.egress.active && sameRules(egress.rules, other.egress.rules) &&
         sameRules(egress.deny_rules, other.egress.deny_rules) && egress.default_allow == other.egress.default_allow &&
         egress_log == other.egress_log;
}

}  // namespace microvm::net
