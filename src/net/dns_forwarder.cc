#include "net/dns_forwarder.h"

#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "base/eintr.h"
#include "base/fs.h"

namespace microvm::net {
namespace {

// Big enough for any UDP DNS message (EDNS allows up to 65535 bytes).
constexpr size_t kMaxMessageBytes = 65535;
// Replies drained per wakeup: a flood of junk on one socket cannot starve the loop.
constexpr int kMaxReadsPerWakeup = 8;

std::span<const uint8_t> bytesOf(const std::string& text) {
  // SAFETY: viewing chars as bytes; uint8_t may alias any object.
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

void setId(std::string& message, uint16_t id) {
  message[0] = static_cast<char>(id >> 8);
  message[1] = static_cast<char>(id & 0xff);
}

socklen_t toSockaddr(const DnsUpstream& upstream, sockaddr_storage& storage) {
  std::memset(&storage, 0, sizeof(storage));
  if (upstream.address.v4) {
    // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
    auto* in = reinterpret_cast<sockaddr_in*>(&storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(upstream.port);
    std::memcpy(&in->sin_addr, upstream.address.bytes.data(), 4);
    return sizeof(sockaddr_in);
  }
  // SAFETY: as above.
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(upstream.port);
  std::memcpy(&in6->sin6_addr, upstream.address.bytes.data(), 16);
  return sizeof(sockaddr_in6);
}

}  // namespace

std::string DnsUpstream::toString() const {
  if (address.v4) return address.toString() + ":" + std::to_string(port);
  return "[" + address.toString() + "]:" + std::to_string(port);
}

Result<DnsUpstream> parseDnsUpstream(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument, "dns upstream " + std::string(text) + ": " + why);
  };
  DnsUpstream upstream;
  std::string_view host = text;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return bad("missing ']'");
    host = text.substr(1, close - 1);
    std::string_view after = text.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("expected ':PORT' after ']'");
      port = after.substr(1);
      if (port.empty()) return bad("empty port");
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    size_t colon = text.find(':');
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (port.empty()) return bad("empty port");
  }
  auto address = IpAddress::parse(host);
  if (!address) return bad("expected IP[:PORT] (an IPv6 address with a port in brackets)");
  upstream.address = *address;
  if (!port.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return bad("port must be a number from 1 to 65535");
    }
    upstream.port = static_cast<uint16_t>(value);
  }
  return upstream;
}

std::vector<DnsUpstream> upstreamsFromResolvConf(std::string_view contents) {
  std::vector<DnsUpstream> upstreams;
  while (!contents.empty()) {
    size_t newline = contents.find('\n');
    std::string_view line = contents.substr(0, newline);
    contents.remove_prefix(newline == std::string_view::npos ? contents.size() : newline + 1);
    constexpr std::string_view kKeyword = "nameserver";
    if (!line.starts_with(kKeyword)) continue;
    line.remove_prefix(kKeyword.size());
    size_t start = line.find_first_not_of(" \t");
    if (start == 0 || start == std::string_view::npos) continue;  // "nameserverX" or no value
    line.remove_prefix(start);
    line = line.substr(0, line.find_first_of(" \t\r#;"));
    // A link-local server with a zone ("fe80::1%eth0") cannot be reached
    // without one; skip it rather than guess.
    if (auto address = IpAddress::parse(line)) upstreams.push_back({*address, 53});
  }
  if (upstreams.empty()) upstreams.push_back({IpAddress::fromV4(0x7f000001), 53});
  return upstreams;
}

bool relayUpstreamReply(std::span<const uint8_t> message, const DnsQuery& query, uint16_t upstream_id,
                        const UdpEndpoints& reply_to, uint32_t ip_id, EgressFilter& filter,
                        const std::function<void(std::string frame)>& to_guest) {
  auto answer = parseDnsAnswer(message);
  if (!answer || answer->id != upstream_id || !(answer->question == query.question)) return false;
  filter.learnDnsAnswer(*answer);
  std::string relayed(message.begin(), message.end());
  setId(relayed, query.id);
  for (auto& frame : buildUdpFrames(reply_to, bytesOf(relayed), filter.addresses().mtu, ip_id)) {
    to_guest(std::move(frame));
  }
  return true;
}

std::vector<DnsUpstream> hostDnsUpstreams(const std::string& path) {
  auto contents = readFile(path);
  return upstreamsFromResolvConf(contents ? std::string_view(*contents) : std::string_view());
}

Result<std::unique_ptr<DnsForwarder>> DnsForwarder::create(EventLoop& loop, EgressFilter& filter,
                                                           DnsForwarderOptions options, EmitFrame to_guest) {
  if (options.upstreams.empty()) options.upstreams.push_back({IpAddress::fromV4(0x7f000001), 53});
  if (options.max_pending == 0) return Error(ErrorCode::kInvalidArgument, "dns forwarder: max_pending must be > 0");
  if (!to_guest) return Error(ErrorCode::kInvalidArgument, "dns forwarder: no way to reach the guest");
  std::unique_ptr<DnsForwarder> forwarder(new DnsForwarder(loop, filter, std::move(options), std::move(to_guest)));
  DnsForwarder* self = forwarder.get();
  filter.setDnsHandler([self](const ParsedFrame& parsed, std::span<const uint8_t> frame) {
    self->handleQuery(parsed, frame);
  });
  return forwarder;
}

DnsForwarder::DnsForwarder(EventLoop& loop, EgressFilter& filter, DnsForwarderOptions options, EmitFrame to_guest)
    : loop_(loop), filter_(filter), options_(std::move(options)), to_guest_(std::move(to_guest)) {}

DnsForwarder::~DnsForwarder() {
  filter_.setDnsHandler(nullptr);
  for (auto& [key, pending] : pending_) {
    if (pending->socket.valid()) loop_.remove(pending->socket.get());
    if (pending->timer != 0) loop_.cancelTimer(pending->timer);
  }
}

uint16_t DnsForwarder::randomId() {
  uint16_t id = 0;
  // getrandom(2) of 2 bytes never blocks once the pool is initialized and
  // is not interrupted for requests this small.
  if (::getrandom(&id, sizeof(id), 0) != sizeof(id)) id = static_cast<uint16_t>(next_key_ * 0x9e37u);
  return id;
}

void DnsForwarder::reply(const UdpEndpoints& to, std::span<const uint8_t> message) {
  for (auto& frame : buildUdpFrames(to, message, filter_.addresses().mtu, next_ip_id_++)) to_guest_(std::move(frame));
}

void DnsForwarder::handleQuery(const ParsedFrame& parsed, std::span<const uint8_t> frame) {
  (void)frame;
  ++stats_.queries;
  auto query = parseDnsQuery(parsed.payload);
  if (!query) {
    ++stats_.malformed;
    return;
  }
  UdpEndpoints reply_to = replyEndpoints(parsed);
  if (!filter_.allowsDnsName(query->question.name)) {
    ++stats_.denied;
    reply(reply_to, bytesOf(buildDnsErrorReply(parsed.payload, *query, DnsRcode::kNxDomain)));
    return;
  }
  if (pending_.size() >= options_.max_pending) {
    ++stats_.servfail;
    reply(reply_to, bytesOf(buildDnsErrorReply(parsed.payload, *query, DnsRcode::kServFail)));
    return;
  }
  auto pending = std::make_unique<Pending>();
  pending->reply_to = reply_to;
  pending->query.assign(parsed.payload.begin(), parsed.payload.end());
  pending->parsed = std::move(*query);
  uint64_t key = next_key_++;
  Pending& entry = *pending;
  pending_.emplace(key, std::move(pending));
  if (!sendAttempt(key, entry)) {
    ++stats_.servfail;
    reply(entry.reply_to, bytesOf(buildDnsErrorReply(bytesOf(entry.query), entry.parsed, DnsRcode::kServFail)));
    finish(key);
  }
}

bool DnsForwarder::sendAttempt(uint64_t key, Pending& pending) {
  if (pending.socket.valid()) {
    loop_.remove(pending.socket.get());
    pending.socket.reset();
  }
  if (pending.timer != 0) {
    loop_.cancelTimer(pending.timer);
    pending.timer = 0;
  }
  for (; pending.upstream_index < options_.upstreams.size(); ++pending.upstream_index) {
    const DnsUpstream& upstream = options_.upstreams[pending.upstream_index];
    UniqueFd socket(::socket(upstream.address.v4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!socket.valid()) continue;
    sockaddr_storage address;
    socklen_t length = toSockaddr(upstream, address);
    // connect(2) gives a fresh random source port and makes the kernel drop
    // datagrams from anyone but this upstream.
    // SAFETY: sockaddr_storage holds the sockaddr_in/in6 toSockaddr wrote.
    if (retryOnEintr([&] { return ::connect(socket.get(), reinterpret_cast<sockaddr*>(&address), length); }) != 0) {
      continue;
    }
    pending.upstream_id = randomId();
    std::string message = pending.query;
    setId(message, pending.upstream_id);
    if (retryOnEintr([&] { return ::send(socket.get(), message.data(), message.size(), 0); }) < 0) continue;
    if (!loop_.add(socket.get(), EPOLLIN, [this, key](uint32_t) { onReadable(key); })) continue;
    pending.socket = std::move(socket);
    pending.timer = loop_.addTimer(options_.timeout, [this, key] { onTimeout(key); });
    ++stats_.forwarded;
    return true;
  }
  return false;
}

void DnsForwarder::onReadable(uint64_t key) {
  auto it = pending_.find(key);
  if (it == pending_.end()) return;
  Pending& pending = *it->second;
  if (recv_buffer_.size() < kMaxMessageBytes) recv_buffer_.resize(kMaxMessageBytes);
  std::string& buffer = recv_buffer_;
  for (int i = 0; i < kMaxReadsPerWakeup; ++i) {
    ssize_t got = retryOnEintr([&] { return ::recv(pending.socket.get(), buffer.data(), buffer.size(), 0); });
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // ECONNREFUSED and friends: this upstream is not there; try the next now.
      ++pending.upstream_index;
      if (!sendAttempt(key, pending)) {
        ++stats_.servfail;
        reply(pending.reply_to,
              bytesOf(buildDnsErrorReply(bytesOf(pending.query), pending.parsed, DnsRcode::kServFail)));
        finish(key);
      }
      return;
    }
    // SAFETY: viewing the received chars as bytes; uint8_t may alias them.
    std::span<const uint8_t> message(reinterpret_cast<const uint8_t*>(buffer.data()), static_cast<size_t>(got));
    if (!relayUpstreamReply(message, pending.parsed, pending.upstream_id, pending.reply_to, next_ip_id_, filter_,
                            to_guest_)) {
      ++stats_.ignored;
      continue;
    }
    ++next_ip_id_;
    ++stats_.answered;
    finish(key);
    return;
  }
}

void DnsForwarder::onTimeout(uint64_t key) {
  auto it = pending_.find(key);
  if (it == pending_.end()) return;
  Pending& pending = *it->second;
  pending.timer = 0;  // it has fired
  ++stats_.timeouts;
  ++pending.upstream_index;
  if (sendAttempt(key, pending)) return;
  ++stats_.servfail;
  reply(pending.reply_to, bytesOf(buildDnsErrorReply(bytesOf(pending.query), pending.parsed, DnsRcode::kServFail)));
  finish(key);
}

void DnsForwarder::finish(uint64_t key) {
  auto it = pending_.find(key);
  if (it == pending_.end()) return;
  if (it->second->socket.valid()) loop_.remove(it->second->socket.get());
  if (it->second->timer != 0) loop_.cancelTimer(it->second->timer);
  pending_.erase(it);
}

}  // namespace microvm::net
