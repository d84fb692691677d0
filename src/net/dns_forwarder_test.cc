#include "net/dns_forwarder.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "net/net_test_util.h"

namespace microvm::net {
namespace {

using std::chrono::milliseconds;
using testing::bytes;
using testing::dnsQuery;
using testing::dnsResponse;
using testing::ip;
using testing::rdataA;
using testing::udpFrame;

const IpAddress kGuest = ip("10.0.2.15");
const IpAddress kDns = ip("10.0.2.3");

// A UDP socket on 127.0.0.1 with an ephemeral port.
UniqueFd boundUdp(uint16_t& port) {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // SAFETY: sockaddr_in is a sockaddr.
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  socklen_t length = sizeof(address);
  // SAFETY: as above.
  EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  port = ntohs(address.sin_port);
  return fd;
}

// A tiny DNS server on 127.0.0.1 driven by the same event loop: answers every
// query through `respond` (which may also send junk first).
class TestResponder {
 public:
  using Respond = std::function<void(int fd, const sockaddr_in& from, const std::string& query)>;
  TestResponder(EventLoop& loop, Respond respond) : loop_(loop), respond_(std::move(respond)) {
    fd_ = boundUdp(port_);
    EXPECT_TRUE(loop_.add(fd_.get(), EPOLLIN, [this](uint32_t) { onReadable(); }));
  }
  ~TestResponder() { loop_.remove(fd_.get()); }
  uint16_t port() const { return port_; }
  int queries() const { return queries_; }
  DnsUpstream upstream() const { return {ip("127.0.0.1"), port_}; }

  static void sendTo(int fd, const sockaddr_in& to, const std::string& message) {
    // SAFETY: sockaddr_in is a sockaddr.
    EXPECT_GE(::sendto(fd, message.data(), message.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof(to)), 0);
  }

 private:
  void onReadable() {
    char buffer[4096];
    sockaddr_in from{};
    socklen_t length = sizeof(from);
    // SAFETY: sockaddr_in is a sockaddr.
    ssize_t got = ::recvfrom(fd_.get(), buffer, sizeof(buffer), 0, reinterpret_cast<sockaddr*>(&from), &length);
    if (got <= 0) return;
    ++queries_;
    respond_(fd_.get(), from, std::string(buffer, static_cast<size_t>(got)));
  }

  EventLoop& loop_;
  Respond respond_;
  UniqueFd fd_;
  uint16_t port_ = 0;
  int queries_ = 0;
};

// The answer to `query`: its id and question, with one A record.
std::string answerFor(const std::string& query, const char* address, uint32_t ttl = 300) {
  auto parsed = parseDnsQuery(bytes(query));
  EXPECT_TRUE(parsed);
  return dnsResponse(parsed->id, parsed->question.name, parsed->question.type,
                     {{parsed->question.name, kDnsTypeA, ttl, rdataA(address)}});
}

class ForwarderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loop = EventLoop::create();
    ASSERT_TRUE(loop);
    loop_.emplace(std::move(*loop));
  }
  void makeForwarder(std::vector<std::string> allow, DnsForwarderOptions options, bool deny_all = true) {
    auto policy = makeEgressPolicy(allow, {}, deny_all);
    ASSERT_TRUE(policy);
    filter_.emplace(GuestAddresses{}, *policy);
    auto forwarder = DnsForwarder::create(*loop_, *filter_, std::move(options),
                                          [this](std::string frame) { frames_.push_back(std::move(frame)); });
    ASSERT_TRUE(forwarder) << forwarder.error().message();
    forwarder_ = std::move(*forwarder);
  }
  Verdict sendQuery(const std::string& query, const IpAddress& from = kGuest, const IpAddress& to = kDns) {
    std::vector<std::string> replies;
    Verdict verdict = filter_->onGuestFrame(bytes(udpFrame(from, 40053, to, 53, bytes(query))), replies);
    EXPECT_TRUE(replies.empty());
    return verdict;
  }
  // Runs the loop until `count` frames reached the guest (at most ~5 s).
  void runUntilFrames(size_t count) {
    for (int i = 0; i < 100 && frames_.size() < count; ++i) ASSERT_TRUE(loop_->runOnce(milliseconds(50)));
  }
  DnsAnswer answerIn(size_t index) {
    ParsedFrame parsed;
    EXPECT_EQ(parseFrame(bytes(frames_.at(index)), parsed), ParseStatus::kOk);
    EXPECT_TRUE(testing::independentChecksumsOk(frames_.at(index)));
    EXPECT_EQ(parsed.src_port, 53);
    EXPECT_EQ(parsed.dst_port, 40053);
    EXPECT_EQ(parsed.src_ip, parsed.dst_ip.v4 ? kDns : ip("fd00::3"));
    auto answer = parseDnsAnswer(parsed.payload);
    EXPECT_TRUE(answer);
    return answer ? *answer : DnsAnswer{};
  }

  std::optional<EventLoop> loop_;
  std::optional<EgressFilter> filter_;
  std::unique_ptr<DnsForwarder> forwarder_;
  std::vector<std::string> frames_;
};

TEST_F(ForwarderTest, ForwardsAllowedNamesAndLearnsAnswers) {
  std::vector<uint16_t> ids_seen;
  TestResponder responder(*loop_, [&](int fd, const sockaddr_in& from, const std::string& query) {
    ids_seen.push_back(static_cast<uint16_t>((static_cast<uint8_t>(query[0]) << 8) | static_cast<uint8_t>(query[1])));
    std::string good = answerFor(query, "93.184.216.34");
    // Junk first: a reply with another id, and one for another question.
    std::string wrong_id = good;
    wrong_id[0] = static_cast<char>(wrong_id[0] ^ 0x55);
    TestResponder::sendTo(fd, from, wrong_id);
    auto parsed = parseDnsQuery(bytes(query));
    TestResponder::sendTo(fd, from,
                          dnsResponse(parsed->id, "other.example.com", kDnsTypeA,
                                      {{"other.example.com", kDnsTypeA, 300, rdataA("6.6.6.6")}}));
    TestResponder::sendTo(fd, from, good);
  });
  makeForwarder({"*.example.com:443/tcp"}, {.upstreams = {responder.upstream()}});
  EXPECT_EQ(sendQuery(dnsQuery(0x1111, "WWW.example.com")), Verdict::kConsumed);
  EXPECT_EQ(forwarder_->pending(), 1u);
  runUntilFrames(1);
  ASSERT_EQ(frames_.size(), 1u);
  DnsAnswer answer = answerIn(0);
  EXPECT_EQ(answer.id, 0x1111);  // the guest's id, not the upstream one
  ASSERT_EQ(answer.addresses.size(), 1u);
  EXPECT_EQ(answer.addresses[0].address, ip("93.184.216.34"));
  ASSERT_EQ(ids_seen.size(), 1u);
  EXPECT_EQ(forwarder_->pending(), 0u);
  EXPECT_EQ(forwarder_->stats().ignored, 2u);
  EXPECT_EQ(forwarder_->stats().answered, 1u);
  // The filter learned the address with the rule's port.
  EXPECT_TRUE(filter_->allowsDestination(ip("93.184.216.34"), kProtoTcp, 443));
  EXPECT_FALSE(filter_->allowsDestination(ip("93.184.216.34"), kProtoTcp, 80));
  EXPECT_FALSE(filter_->allowsDestination(ip("6.6.6.6"), kProtoTcp, 443));
}

TEST_F(ForwarderTest, DeniedNamesGetNxDomainWithoutAskingUpstream) {
  TestResponder responder(*loop_, [](int fd, const sockaddr_in& from, const std::string& query) {
    TestResponder::sendTo(fd, from, answerFor(query, "1.2.3.4"));
  });
  makeForwarder({"example.com"}, {.upstreams = {responder.upstream()}});
  EXPECT_EQ(sendQuery(dnsQuery(7, "evil.net")), Verdict::kConsumed);
  ASSERT_EQ(frames_.size(), 1u);  // at once
  DnsAnswer answer = answerIn(0);
  EXPECT_EQ(answer.rcode, DnsRcode::kNxDomain);
  EXPECT_EQ(answer.id, 7);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(loop_->runOnce(milliseconds(20)));
  EXPECT_EQ(responder.queries(), 0);
  EXPECT_EQ(forwarder_->stats().denied, 1u);
  EXPECT_EQ(filter_->stats().dns_denied, 1u);
}

TEST_F(ForwarderTest, NoPolicyForwardsEverythingOverIpv6GuestAddress) {
  TestResponder responder(*loop_, [](int fd, const sockaddr_in& from, const std::string& query) {
    TestResponder::sendTo(fd, from, answerFor(query, "1.2.3.4"));
  });
  makeForwarder({}, {.upstreams = {responder.upstream()}}, false);
  EXPECT_EQ(sendQuery(dnsQuery(9, "anything.test"), ip("fd00::15"), ip("fd00::3")), Verdict::kConsumed);
  runUntilFrames(1);
  ASSERT_EQ(frames_.size(), 1u);
  ParsedFrame parsed;
  ASSERT_EQ(parseFrame(bytes(frames_[0]), parsed), ParseStatus::kOk);
  EXPECT_EQ(parsed.src_ip, ip("fd00::3"));
  EXPECT_EQ(parsed.dst_ip, ip("fd00::15"));
  EXPECT_TRUE(testing::independentChecksumsOk(frames_[0]));
  EXPECT_EQ(answerIn(0).addresses.at(0).address, ip("1.2.3.4"));
}

TEST_F(ForwarderTest, TimeoutTriesTheNextUpstreamThenServfail) {
  uint16_t silent_port = 0;
  UniqueFd silent = boundUdp(silent_port);  // receives, never answers
  TestResponder responder(*loop_, [](int fd, const sockaddr_in& from, const std::string& query) {
    TestResponder::sendTo(fd, from, answerFor(query, "1.2.3.4"));
  });
  makeForwarder({"example.com"}, {.upstreams = {{ip("127.0.0.1"), silent_port}, responder.upstream()},
                                  .timeout = milliseconds(150)});
  EXPECT_EQ(sendQuery(dnsQuery(1, "example.com")), Verdict::kConsumed);
  runUntilFrames(1);
  ASSERT_EQ(frames_.size(), 1u);
  EXPECT_EQ(answerIn(0).rcode, DnsRcode::kNoError);
  EXPECT_EQ(forwarder_->stats().timeouts, 1u);
  EXPECT_EQ(responder.queries(), 1);

  // Only the silent one: SERVFAIL after its timeout.
  frames_.clear();
  forwarder_.reset();
  makeForwarder({"example.com"}, {.upstreams = {{ip("127.0.0.1"), silent_port}}, .timeout = milliseconds(100)});
  EXPECT_EQ(sendQuery(dnsQuery(2, "example.com")), Verdict::kConsumed);
  runUntilFrames(1);
  ASSERT_EQ(frames_.size(), 1u);
  DnsAnswer answer = answerIn(0);
  EXPECT_EQ(answer.rcode, DnsRcode::kServFail);
  EXPECT_EQ(answer.id, 2);
  EXPECT_EQ(forwarder_->pending(), 0u);
}

TEST_F(ForwarderTest, RefusedUpstreamIsSkippedAtOnce) {
  uint16_t closed_port = 0;
  { UniqueFd closed = boundUdp(closed_port); }  // bound, then closed: ICMP port unreachable
  TestResponder responder(*loop_, [](int fd, const sockaddr_in& from, const std::string& query) {
    TestResponder::sendTo(fd, from, answerFor(query, "1.2.3.4"));
  });
  makeForwarder({"example.com"}, {.upstreams = {{ip("127.0.0.1"), closed_port}, responder.upstream()},
                                  .timeout = milliseconds(5000)});
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(sendQuery(dnsQuery(3, "example.com")), Verdict::kConsumed);
  runUntilFrames(1);
  ASSERT_EQ(frames_.size(), 1u);
  EXPECT_EQ(answerIn(0).rcode, DnsRcode::kNoError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));  // not the timeout
  EXPECT_EQ(forwarder_->stats().timeouts, 0u);
}

TEST_F(ForwarderTest, PendingTableIsBoundedAndUnsolicitedRepliesIgnored) {
  uint16_t silent_port = 0;
  UniqueFd silent = boundUdp(silent_port);
  makeForwarder({"example.com"}, {.upstreams = {{ip("127.0.0.1"), silent_port}}, .timeout = milliseconds(3000),
                                  .max_pending = 1});
  EXPECT_EQ(sendQuery(dnsQuery(1, "example.com")), Verdict::kConsumed);
  EXPECT_EQ(sendQuery(dnsQuery(2, "example.com")), Verdict::kConsumed);
  ASSERT_EQ(frames_.size(), 1u);
  EXPECT_EQ(answerIn(0).rcode, DnsRcode::kServFail);
  EXPECT_EQ(answerIn(0).id, 2);

  // A correct-looking answer from another socket (a spoofer that learned the
  // forwarder's port) never reaches it: the socket is connected.
  char buffer[512];
  sockaddr_in forwarder_address{};
  socklen_t length = sizeof(forwarder_address);
  // SAFETY: sockaddr_in is a sockaddr.
  ssize_t got = ::recvfrom(silent.get(), buffer, sizeof(buffer), 0, reinterpret_cast<sockaddr*>(&forwarder_address),
                           &length);
  ASSERT_GT(got, 0);
  std::string upstream_query(buffer, static_cast<size_t>(got));
  uint16_t spoofer_port = 0;
  UniqueFd spoofer = boundUdp(spoofer_port);
  TestResponder::sendTo(spoofer.get(), forwarder_address, answerFor(upstream_query, "6.6.6.6"));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(loop_->runOnce(milliseconds(25)));
  EXPECT_EQ(frames_.size(), 1u);
  EXPECT_FALSE(filter_->allowsDestination(ip("6.6.6.6"), kProtoTcp, 443));
  // The real upstream's answer is taken.
  TestResponder::sendTo(silent.get(), forwarder_address, answerFor(upstream_query, "93.184.216.34"));
  runUntilFrames(2);
  ASSERT_EQ(frames_.size(), 2u);
  EXPECT_EQ(answerIn(1).id, 1);
  EXPECT_TRUE(filter_->allowsDestination(ip("93.184.216.34"), kProtoTcp, 443));
}

TEST_F(ForwarderTest, LargeAnswersAreFragmentedForTheGuest) {
  TestResponder responder(*loop_, [](int fd, const sockaddr_in& from, const std::string& query) {
    auto parsed = parseDnsQuery(bytes(query));
    std::vector<testing::TestRecord> records;
    for (int i = 0; i < 150; ++i) {
      records.push_back({parsed->question.name, kDnsTypeA, 300, rdataA(("93.184.1." + std::to_string(i)).c_str())});
    }
    TestResponder::sendTo(fd, from, dnsResponse(parsed->id, parsed->question.name, kDnsTypeA, records));
  });
  makeForwarder({}, {.upstreams = {responder.upstream()}}, false);
  EXPECT_EQ(sendQuery(dnsQuery(5, "big.example")), Verdict::kConsumed);
  runUntilFrames(2);
  ASSERT_GE(frames_.size(), 2u);
  for (const auto& frame : frames_) {
    EXPECT_LE(frame.size(), 1514u);
    ParsedFrame parsed;
    ASSERT_EQ(parseFrame(bytes(frame), parsed), ParseStatus::kOk);
    EXPECT_TRUE(parsed.is_fragment);
  }
}

TEST(DnsUpstreams, ParsesFlagsAndResolvConf) {
  auto upstream = parseDnsUpstream("1.1.1.1");
  ASSERT_TRUE(upstream);
  EXPECT_EQ(upstream->port, 53);
  upstream = parseDnsUpstream("[2001:db8::1]:5353");
  ASSERT_TRUE(upstream);
  EXPECT_EQ(upstream->address, ip("2001:db8::1"));
  EXPECT_EQ(upstream->port, 5353);
  EXPECT_EQ(upstream->toString(), "[2001:db8::1]:5353");
  EXPECT_EQ(parseDnsUpstream("2001:db8::1")->port, 53);
  EXPECT_EQ(parseDnsUpstream("127.0.0.1:5300")->toString(), "127.0.0.1:5300");
  for (const char* bad : {"", "dns.google", "1.1.1.1:0", "1.1.1.1:", "[::1", "[::1]x", "1.1.1.1:99999"}) {
    EXPECT_FALSE(parseDnsUpstream(bad)) << bad;
  }

  auto upstreams = upstreamsFromResolvConf(
      "# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver\t2001:db8::53 # v6\n"
      "nameserver fe80::1%eth0\nnameservers 9.9.9.9\noptions edns0\n");
  ASSERT_EQ(upstreams.size(), 2u);
  EXPECT_EQ(upstreams[0].toString(), "127.0.0.53:53");
  EXPECT_EQ(upstreams[1].address, ip("2001:db8::53"));
  EXPECT_EQ(upstreamsFromResolvConf("").at(0).toString(), "127.0.0.1:53");
  EXPECT_EQ(hostDnsUpstreams("/nonexistent/resolv.conf").at(0).toString(), "127.0.0.1:53");
}

}  // namespace
}  // namespace microvm::net
