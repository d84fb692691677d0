// DnsForwarder: the guest's DNS server. It takes the UDP queries the guest
// sends to the DNS address, answers names the egress policy does not allow
// with NXDOMAIN, forwards the others over host UDP sockets to the upstream
// resolvers, lets the filter learn the answers' addresses, and hands the
// reply frames back for the guest.
//
// Each forwarded query gets its own connected socket (a random source port
// from the kernel) and a random id; only a reply from that upstream with that
// id and the same question is accepted, anything else is ignored. A query
// that times out goes to the next upstream; when all are tried the guest gets
// SERVFAIL. At most max_pending queries are in flight; beyond that the guest
// gets SERVFAIL at once.
//
//   auto upstreams = net::hostDnsUpstreams();   // from /etc/resolv.conf
//   auto forwarder = net::DnsForwarder::create(loop, filter, {.upstreams = *upstreams},
//                                              [&](std::string frame) { sendToGuest(frame); });
//   // From now on filter.onGuestFrame() hands DNS queries to the forwarder
//   // (kConsumed); keep the forwarder alive as long as the filter.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "microvm/result.h"
#include "net/dns.h"
#include "net/egress_policy.h"
#include "net/packet.h"

namespace microvm::net {

struct DnsUpstream {
  IpAddress address;
  uint16_t port = 53;
  std::string toString() const;
  bool operator==(const DnsUpstream&) const = default;
};

// "IP[:PORT]": "1.1.1.1", "1.1.1.1:5353", "2001:db8::1", "[2001:db8::1]:53".
Result<DnsUpstream> parseDnsUpstream(std::string_view text);
// The nameserver lines of a resolv.conf; 127.0.0.1 if there are none.
std::vector<DnsUpstream> upstreamsFromResolvConf(std::string_view contents);
// upstreamsFromResolvConf of `path`; 127.0.0.1 if it cannot be read.
std::vector<DnsUpstream> hostDnsUpstreams(const std::string& path = "/etc/resolv.conf");

// What the forwarder does with one datagram from the upstream that `query`
// (the guest's, as parsed) went to with the id `upstream_id`. A datagram
// that is not the answer to it (another id or question, or one that does not
// parse) is ignored: false. Otherwise `filter` learns the answer's addresses
// and the message, with the guest's id back in it, goes to `to_guest` as UDP
// frames along `reply_to`, fragmented past the guest's MTU.
bool relayUpstreamReply(std::span<const uint8_t> message, const DnsQuery& query, uint16_t upstream_id,
                        const UdpEndpoints& reply_to, uint32_t ip_id, EgressFilter& filter,
                        const std::function<void(std::string frame)>& to_guest);

struct DnsForwarderOptions {
  std::vector<DnsUpstream> upstreams;  // tried in order; empty means 127.0.0.1:53
  std::chrono::milliseconds timeout{2000};  // per attempt
  size_t max_pending = 256;
};

struct DnsForwarderStats {
  uint64_t queries = 0;
  uint64_t malformed = 0;   // guest queries that did not parse (dropped)
  uint64_t denied = 0;      // answered NXDOMAIN by policy
  uint64_t forwarded = 0;   // attempts sent upstream (retries included)
  uint64_t answered = 0;    // upstream replies relayed to the guest
  uint64_t ignored = 0;     // replies with a wrong id or question, or that did not parse
  uint64_t timeouts = 0;    // attempts that timed out
  uint64_t servfail = 0;    // SERVFAIL sent (all upstreams failed, or the table was full)
};

class DnsForwarder {
 public:
  using EmitFrame = std::function<void(std::string frame)>;

  // Installs itself as `filter`'s DNS handler; the destructor removes it.
  static Result<std::unique_ptr<DnsForwarder>> create(EventLoop& loop, EgressFilter& filter,
                                                      DnsForwarderOptions options, EmitFrame to_guest);
  ~DnsForwarder();
  DnsForwarder(const DnsForwarder&) = delete;
  DnsForwarder& operator=(const DnsForwarder&) = delete;

  // A guest frame with a UDP datagram to a DNS address, port 53 (the filter
  // calls this). Never blocks.
  void handleQuery(const ParsedFrame& parsed, std::span<const uint8_t> frame);

  size_t pending() const { return pending_.size(); }
  const DnsForwarderStats& stats() const { return stats_; }

 private:
  struct Pending {
    UdpEndpoints reply_to;  // from the DNS address back to the guest
    std::string query;      // the guest's message, id rewritten per attempt
    DnsQuery parsed;
    uint16_t upstream_id = 0;
    size_t upstream_index = 0;
    UniqueFd socket;
    EventLoop::TimerId timer = 0;
  };

  DnsForwarder(EventLoop& loop, EgressFilter& filter, DnsForwarderOptions options, EmitFrame to_guest);
  bool sendAttempt(uint64_t key, Pending& pending);
  void onReadable(uint64_t key);
  void onTimeout(uint64_t key);
  void reply(const UdpEndpoints& to, std::span<const uint8_t> message);
  void finish(uint64_t key);
  uint16_t randomId();

  EventLoop& loop_;
  EgressFilter& filter_;
  DnsForwarderOptions options_;
  EmitFrame to_guest_;
  DnsForwarderStats stats_;
  std::string recv_buffer_;
  uint64_t next_key_ = 1;
  uint32_t next_ip_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Pending>> pending_;
};

}  // namespace microvm::net
