#include "net/slirp_network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <glib.h>
#include <libslirp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <climits>
#include <algorithm>
#include <cstring>
#include <iterator>
#include <sstream>

namespace microvm::net {

namespace {

constexpr size_t kReadChunk = 256 * 1024;
// Queued output beyond this is written at once rather than at the end of the round.
constexpr size_t kFlushThreshold = 256 * 1024;

in_addr ipv4(const char* text) {
  in_addr address{};
  ::inet_pton(AF_INET, text, &address);
  return address;
}

in6_addr ipv6(const char* text) {
  in6_addr address{};
  ::inet_pton(AF_INET6, text, &address);
  return address;
}

short toPollEvents(int slirp_events) {
  short events = 0;
  if (slirp_events & SLIRP_POLL_IN) events |= POLLIN;
  if (slirp_events & SLIRP_POLL_OUT) events |= POLLOUT;
  if (slirp_events & SLIRP_POLL_PRI) events |= POLLPRI;
  if (slirp_events & SLIRP_POLL_ERR) events |= POLLERR;
  if (slirp_events & SLIRP_POLL_HUP) events |= POLLHUP;
  return events;
}

uint32_t toEpollEvents(short poll_events) {
  uint32_t events = 0;
  if (poll_events & POLLIN) events |= EPOLLIN;
  if (poll_events & POLLOUT) events |= EPOLLOUT;
  if (poll_events & POLLPRI) events |= EPOLLPRI;
  return events;
}

// The host and guest socket addresses of a port forward. An IPv6 host
// address forwards to the guest's IPv6 address: libslirp keeps one address
// family per forwarded connection.
struct ForwardAddresses {
  sockaddr_storage host{};
  socklen_t host_length = 0;
  sockaddr_storage guest{};
  socklen_t guest_length = 0;
  int flags = 0;
};

Result<ForwardAddresses> forwardAddresses(const PortMapping& mapping) {
  ForwardAddresses out;
  if (mapping.transport == Transport::kUdp) out.flags |= SLIRP_HOSTFWD_UDP;
  if (mapping.ipv6()) {
    sockaddr_in6 host{};
    host.sin6_family = AF_INET6;
    host.sin6_port = htons(mapping.host_port);
    if (::inet_pton(AF_INET6, mapping.host_ip.c_str(), &host.sin6_addr) != 1) {
      return Error(ErrorCode::kInvalidArgument, "bad host address " + mapping.host_ip);
    }
    sockaddr_in6 guest{};
    guest.sin6_family = AF_INET6;
    guest.sin6_port = htons(mapping.guest_port);
    guest.sin6_addr = ipv6(kGuestAddress6);
    std::memcpy(&out.host, &host, sizeof host);
    std::memcpy(&out.guest, &guest, sizeof guest);
    out.host_length = out.guest_length = sizeof host;
    out.flags |= SLIRP_HOSTFWD_V6ONLY;
  } else {
    sockaddr_in host{};
    host.sin_family = AF_INET;
    host.sin_port = htons(mapping.host_port);
    if (::inet_pton(AF_INET, mapping.host_ip.c_str(), &host.sin_addr) != 1) {
      return Error(ErrorCode::kInvalidArgument, "bad host address " + mapping.host_ip);
    }
    sockaddr_in guest{};
    guest.sin_family = AF_INET;
    guest.sin_port = htons(mapping.guest_port);
    guest.sin_addr = ipv4(kGuestAddress4);
    std::memcpy(&out.host, &host, sizeof host);
    std::memcpy(&out.guest, &guest, sizeof guest);
    out.host_length = out.guest_length = sizeof host;
  }
  return out;
}

}  // namespace

std::span<uint8_t> StreamFrameReader::prepare(size_t bytes) {
  // Drop what was handed out: at once when nothing is left (the common
  // case, no copy), else once it outweighs the room asked for, so that the
  // copies cost O(1) per byte read.
  if (offset_ == buffer_.size() || offset_ > bytes) {
    buffer_.erase(0, offset_);
    offset_ = 0;
  }
  size_t old_size = buffer_.size();
  buffer_.resize(old_size + bytes);
  prepared_ = bytes;
  // SAFETY: viewing the string's new bytes as uint8_t, which may alias them.
  return {reinterpret_cast<uint8_t*>(buffer_.data() + old_size), bytes};
}

void StreamFrameReader::commit(size_t bytes) {
  bytes = std::min(bytes, prepared_);
  buffer_.resize(buffer_.size() - prepared_ + bytes);
  prepared_ = 0;
}

std::optional<std::span<const uint8_t>> StreamFrameReader::next() {
  if (corrupt_ || buffered() < 4) return std::nullopt;
  // SAFETY: viewing the buffered chars as bytes; offset_ + 4 <= size checked above.
  const auto* header = reinterpret_cast<const uint8_t*>(buffer_.data() + offset_);
  size_t length = size_t{header[0]} << 24 | size_t{header[1]} << 16 | size_t{header[2]} << 8 | header[3];
  if (length > kMaxFrame) {
    corrupt_ = true;
    return std::nullopt;
  }
  if (buffered() - 4 < length) return std::nullopt;
  offset_ += 4 + length;
  return std::span<const uint8_t>(header + 4, length);
}

void StreamFrameReader::reset() {
  buffer_.clear();
  offset_ = 0;
  prepared_ = 0;
  corrupt_ = false;
}

void appendStreamFrame(std::string& out, std::span<const uint8_t> frame) {
  uint32_t length = static_cast<uint32_t>(frame.size());
  char header[4] = {static_cast<char>(length >> 24), static_cast<char>(length >> 16), static_cast<char>(length >> 8),
                    static_cast<char>(length)};
  out.append(header, 4);
  // SAFETY: bytes viewed as chars to append them.
  out.append(reinterpret_cast<const char*>(frame.data()), frame.size());
}

StreamFrameWriter::Flushed StreamFrameWriter::flush(int fd) {
  Flushed outcome = kAll;
  while (offset_ < out_.size()) {
    ssize_t wrote = ::send(fd, out_.data() + offset_, out_.size() - offset_, MSG_NOSIGNAL);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote < 0) {
      outcome = errno == EAGAIN || errno == EWOULDBLOCK ? kWouldBlock : kFailed;
      break;
    }
    offset_ += static_cast<size_t>(wrote);
  }
  if (offset_ == out_.size()) {
    clear();
  } else if (offset_ > compact_after_) {
    out_.erase(0, offset_);
    offset_ = 0;
  }
  return outcome;
}

void StreamFrameWriter::clear() {
  out_.clear();
  offset_ = 0;
}

// A libslirp timer, run as a one-shot EventLoop timer.
struct SlirpNetwork::Timer {
  SlirpNetwork* owner = nullptr;
  SlirpTimerCb callback = nullptr;  // timer_new style; else slirp_handle_timer(id)
  SlirpTimerId id = SLIRP_TIMER_RA;
  void* callback_opaque = nullptr;
  EventLoop::TimerId loop_timer = 0;
  bool armed = false;
};

struct SlirpCallbacks {
  static SlirpNetwork& self(void* opaque) { return *static_cast<SlirpNetwork*>(opaque); }

  static ssize_t sendPacket(const void* buf, size_t len, void* opaque) {
    // SAFETY: libslirp hands over `len` readable bytes of one Ethernet frame.
    std::span<const uint8_t> frame(static_cast<const uint8_t*>(buf), len);
    auto& network = self(opaque);
    if (network.host_hook_) network.host_hook_(frame);
    network.queueForGuest(frame);
    return static_cast<ssize_t>(len);
  }

  static void guestError(const char*, void*) {}  // counted as dropped frames by the filter already

  static int64_t clockNs(void*) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(EventLoop::Clock::now().time_since_epoch()).count();
  }

  static void* timerNew(SlirpTimerCb callback, void* callback_opaque, void* opaque) {
    return new SlirpNetwork::Timer{&self(opaque), callback, SLIRP_TIMER_RA, callback_opaque, 0, false};
  }

  static void* timerNewOpaque(SlirpTimerId id, void* callback_opaque, void* opaque) {
    return new SlirpNetwork::Timer{&self(opaque), nullptr, id, callback_opaque, 0, false};
  }

  static void timerFree(void* timer_pointer, void*) {
    auto* timer = static_cast<SlirpNetwork::Timer*>(timer_pointer);
    if (timer->armed) timer->owner->loop_.cancelTimer(timer->loop_timer);
    delete timer;
  }

  static void timerMod(void* timer_pointer, int64_t expire_ms, void*) {
    auto* timer = static_cast<SlirpNetwork::Timer*>(timer_pointer);
    EventLoop& loop = timer->owner->loop_;
    if (timer->armed) loop.cancelTimer(timer->loop_timer);
    auto deadline = EventLoop::Clock::time_point(std::chrono::milliseconds(expire_ms));
    timer->armed = true;
    timer->loop_timer = loop.addTimerAt(deadline, [timer] {
      timer->armed = false;
      if (timer->callback) {
        timer->callback(timer->callback_opaque);
      } else {
        slirp_handle_timer(timer->owner->slirp_, timer->id, timer->callback_opaque);
      }
    });
  }

  static void registerPollFd(int, void*) {}

  // libslirp is about to close `fd`: forget it, so that a new socket that
  // gets the same number is watched afresh.
  static void unregisterPollFd(int fd, void* opaque) {
    auto& network = self(opaque);
    if (network.watched_.erase(fd) > 0) ::epoll_ctl(network.slirp_epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  }

  static void notify(void*) {}  // every loop round polls the stack anyway

  static int addPoll(int fd, int events, void* opaque) {
    auto& poll_set = self(opaque).poll_set_;
    poll_set.push_back({fd, toPollEvents(events), 0});
    return static_cast<int>(poll_set.size() - 1);
  }

  static int getRevents(int index, void* opaque) {
    auto& poll_set = self(opaque).poll_set_;
    if (index < 0 || static_cast<size_t>(index) >= poll_set.size()) return 0;
    short revents = poll_set[static_cast<size_t>(index)].revents;
    int events = 0;
    if (revents & POLLIN) events |= SLIRP_POLL_IN;
    if (revents & POLLOUT) events |= SLIRP_POLL_OUT;
    if (revents & POLLPRI) events |= SLIRP_POLL_PRI;
    if (revents & (POLLERR | POLLNVAL)) events |= SLIRP_POLL_ERR;
    if (revents & POLLHUP) events |= SLIRP_POLL_HUP;
    return events;
  }

  static const SlirpCb kTable;
};

// libslirp keeps a pointer to the table: it must outlive every stack.
const SlirpCb SlirpCallbacks::kTable = {
    .send_packet = SlirpCallbacks::sendPacket,
    .guest_error = SlirpCallbacks::guestError,
    .clock_get_ns = SlirpCallbacks::clockNs,
    .timer_new = SlirpCallbacks::timerNew,
    .timer_free = SlirpCallbacks::timerFree,
    .timer_mod = SlirpCallbacks::timerMod,
    .register_poll_fd = SlirpCallbacks::registerPollFd,
    .unregister_poll_fd = SlirpCallbacks::unregisterPollFd,
    .notify = SlirpCallbacks::notify,
    .init_completed = nullptr,
    .timer_new_opaque = SlirpCallbacks::timerNewOpaque,
};

SlirpNetwork::SlirpNetwork(EventLoop& loop, UniqueFd stream, SlirpNetworkOptions options)
    : loop_(loop), stream_(std::move(stream)), options_(options), out_(kFlushThreshold) {}

Result<std::unique_ptr<SlirpNetwork>> SlirpNetwork::create(EventLoop& loop, UniqueFd stream,
                                                           SlirpNetworkOptions options) {
  std::unique_ptr<SlirpNetwork> network(new SlirpNetwork(loop, std::move(stream), options));
  MICROVM_TRY(network->start());
  return network;
}

Result<void> SlirpNetwork::start() {
  int flags = ::fcntl(stream_.get(), F_GETFL);
  if (flags < 0 || ::fcntl(stream_.get(), F_SETFL, flags | O_NONBLOCK) != 0) return Error::fromErrno("fcntl network stream");
  slirp_epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!slirp_epoll_.valid()) return Error::fromErrno("epoll_create1");

  SlirpConfig config{};
  config.version = 4;
  // The egress policy is ours (the filter); slirp's `restricted` mode would
  // also cut off port forwards' replies and DNS, so it stays off.
  config.restricted = 0;
  config.in_enabled = true;
  config.vnetwork = ipv4(kNetwork4);
  config.vnetmask = ipv4("255.255.255.0");
  config.vhost = ipv4(kGateway4);
  config.in6_enabled = options_.ipv6;
  config.vprefix_addr6 = ipv6(kPrefix6);
  config.vprefix_len = kPrefixLength6;
  config.vhost6 = ipv6(kGateway6);
  config.vdhcp_start = ipv4(kGuestAddress4);
  config.vnameserver = ipv4(kNameserver4);
  config.vnameserver6 = ipv6(kNameserver6);
  config.disable_host_loopback = !options_.host_loopback;
  config.enable_emu = false;
  config.disable_dns = !options_.builtin_dns;
  config.disable_dhcp = true;  // init configures the address statically
  config.if_mtu = static_cast<size_t>(options_.mtu);
  config.if_mru = static_cast<size_t>(options_.mtu);
  slirp_ = slirp_new(&config, &SlirpCallbacks::kTable, this);
  if (!slirp_) return Error(ErrorCode::kInternal, "libslirp refused the network configuration");

  MICROVM_TRY(loop_.add(stream_.get(), EPOLLIN, [this](uint32_t events) { onStreamEvents(events); }));
  // The stack's own sockets wake the loop through their epoll set; the work
  // happens in beforeWait, which runs every round.
  MICROVM_TRY(loop_.add(slirp_epoll_.get(), EPOLLIN, [](uint32_t) {}));
  hook_ = loop_.addBeforeWait([this] { return beforeWait(); });
  hooked_ = true;
  return success();
}

SlirpState SlirpNetwork::saveState() {
  SlirpState state;
  state.version = slirp_state_version();
  auto append = [](const void* buf, size_t len, void* opaque) -> ssize_t {
    static_cast<std::string*>(opaque)->append(static_cast<const char*>(buf), len);
    return static_cast<ssize_t>(len);
  };
  slirp_state_save(slirp_, append, &state.bytes);
  return state;
}

Result<void> SlirpNetwork::loadState(const SlirpState& state) {
  // libslirp does not check that its reads were whole: a short one is ours to see.
  struct Reader {
    std::string_view rest;
    bool short_read = false;
  } reader{state.bytes};
  auto read = [](void* buf, size_t len, void* opaque) -> ssize_t {
    auto& from = *static_cast<Reader*>(opaque);
    size_t n = std::min(len, from.rest.size());
    std::memcpy(buf, from.rest.data(), n);
    from.rest.remove_prefix(n);
    if (n < len) from.short_read = true;
    return static_cast<ssize_t>(n);
  };
  if (state.version > slirp_state_version()) {
    return Error(ErrorCode::kInvalidArgument, "network state: saved by a newer libslirp (state version " +
                                                  std::to_string(state.version) + ")");
  }
  if (slirp_state_load(slirp_, state.version, read, &reader) < 0 || reader.short_read) {
    return Error(ErrorCode::kProtocol, "network state: libslirp could not load it");
  }
  return success();
}

SlirpNetwork::~SlirpNetwork() {
  if (hooked_) loop_.removeBeforeWait(hook_);
  if (stream_.valid()) loop_.remove(stream_.get());
  if (slirp_epoll_.valid()) loop_.remove(slirp_epoll_.get());
  if (slirp_) slirp_cleanup(slirp_);  // frees its timers through timerFree
}

uint64_t tcpBytesForHost(std::string_view connection_info) {
  uint64_t total = 0;
  std::istringstream rows{std::string(connection_info)};
  for (std::string row; std::getline(rows, row);) {
    std::istringstream columns(row);
    std::vector<std::string> fields{std::istream_iterator<std::string>(columns), std::istream_iterator<std::string>()};
    if (fields.size() < 3 || fields.front().rfind("TCP[", 0) != 0) continue;
    // RecvQ, then SendQ: libslirp names them from its own TCP's side.
    const std::string& received = fields[fields.size() - 2];
    uint64_t bytes = 0;
    auto [stop, error] = std::from_chars(received.data(), received.data() + received.size(), bytes);
    if (error == std::errc() && stop == received.data() + received.size()) total += bytes;
  }
  return total;
}

uint64_t SlirpNetwork::bytesForHost() const {
  char* info = slirp_connection_info(slirp_);
  if (info == nullptr) return 0;
  uint64_t bytes = tcpBytesForHost(info);
  // libslirp allocates it with glib (g_string_free(..., FALSE)).
  g_free(info);
  return bytes;
}

std::chrono::milliseconds SlirpNetwork::beforeWait() {
  if (poll_set_filled_) {
    // What became ready while the loop waited (or during this round).
    // SAFETY: PollEntry has pollfd's layout (int fd, short events, short revents).
    static_assert(sizeof(PollEntry) == sizeof(pollfd));
    int ready = ::poll(reinterpret_cast<pollfd*>(poll_set_.data()), poll_set_.size(), 0);
    if (ready < 0) {
      for (auto& entry : poll_set_) entry.revents = 0;
    }
    slirp_pollfds_poll(slirp_, ready < 0 ? 1 : 0, SlirpCallbacks::getRevents, this);
  }
  flush();
  poll_set_.clear();
  uint32_t timeout = UINT32_MAX;
  slirp_pollfds_fill(slirp_, &timeout, SlirpCallbacks::addPoll, this);
  poll_set_filled_ = true;
  syncPollSet();
  if (timeout == UINT32_MAX) return std::chrono::milliseconds(-1);
  // libslirp's fast timer (delayed ACKs, 2 ms) compares whole milliseconds:
  // a 2 ms sleep can land just short of it and cost a second round, so the
  // ACK that clocks a guest's upload would go out after up to 4 ms. Waking
  // every millisecond while it is pending sends it on time.
  if (timeout <= 2) return std::chrono::milliseconds(std::min<uint32_t>(timeout, 1));
  return std::chrono::milliseconds(timeout);
}

// Makes the private epoll set watch exactly what the stack asked for.
void SlirpNetwork::syncPollSet() {
  std::unordered_map<int, uint32_t> wanted;
  wanted.reserve(poll_set_.size());
  for (const auto& entry : poll_set_) wanted[entry.fd] |= toEpollEvents(entry.events);
  int epoll = slirp_epoll_.get();
  for (auto it = watched_.begin(); it != watched_.end();) {
    if (!wanted.contains(it->first)) {
      ::epoll_ctl(epoll, EPOLL_CTL_DEL, it->first, nullptr);  // ENOENT: the kernel dropped it on close
      it = watched_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [fd, events] : wanted) {
    auto known = watched_.find(fd);
    if (known != watched_.end() && known->second == events) continue;
    epoll_event event{};
    event.events = events;
    event.data.fd = fd;
    int op = known == watched_.end() ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (::epoll_ctl(epoll, op, fd, &event) != 0) {
      // The set and our record disagree (an fd closed and reused): retry the other way.
      if (errno == ENOENT) ::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
      if (errno == EEXIST) ::epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &event);
    }
    watched_[fd] = events;
  }
}

void SlirpNetwork::onStreamEvents(uint32_t events) {
  if (events & EPOLLOUT) flush();
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readStream();
}

void SlirpNetwork::readStream() {
  // Bounded per event, so that a busy guest does not starve the rest of the loop.
  for (int round = 0; round < 4 && stream_.valid(); ++round) {
    std::span<uint8_t> space = in_.prepare(kReadChunk);
    ssize_t got = ::read(stream_.get(), space.data(), space.size());
    in_.commit(static_cast<size_t>(got > 0 ? got : 0));
    if (got == 0) {
      closeStream("QEMU closed the network stream");
      return;
    }
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) closeStream("network stream read failed");
      return;
    }
    // A frame's handling may close the stream (a failed write to QEMU):
    // then the rest is not read.
    while (stream_.valid()) {
      auto frame = in_.next();
      if (!frame) break;
      handleGuestFrame(*frame);
    }
    if (in_.corrupt()) {
      ++stats_.frames_oversized;
      closeStream("the guest's network stream is corrupt");
      return;
    }
    if (static_cast<size_t>(got) < kReadChunk) return;  // drained
  }
}

void SlirpNetwork::handleGuestFrame(std::span<const uint8_t> frame) {
  ++stats_.frames_from_guest;
  stats_.bytes_from_guest += frame.size();
  if (frame.empty()) return;
  bool pass = true;
  if (guest_hook_) {
    replies_.clear();
    pass = guest_hook_(frame, replies_);
    for (const auto& reply : replies_) sendToGuest(reply);
    // Sending may have closed the stream, and with it the buffer `frame` is in.
    if (!stream_.valid()) return;
  }
  if (!pass) {
    ++stats_.frames_filtered;
    return;
  }
  slirp_input(slirp_, frame.data(), static_cast<int>(frame.size()));
}

void SlirpNetwork::sendToGuest(std::string_view frame) {
  // SAFETY: reinterpreting chars as bytes of the same object.
  queueForGuest({reinterpret_cast<const uint8_t*>(frame.data()), frame.size()});
}

void SlirpNetwork::queueForGuest(std::span<const uint8_t> frame) {
  if (!stream_.valid()) return;
  if (out_.queued() + frame.size() > options_.max_queued_bytes) {
    ++stats_.frames_queue_full;
    return;
  }
  ++stats_.frames_to_guest;
  stats_.bytes_to_guest += frame.size();
  out_.append(frame);
  if (out_.queued() >= kFlushThreshold) flush();
}

void SlirpNetwork::flush() {
  if (!stream_.valid()) return;
  switch (out_.flush(stream_.get())) {
    case StreamFrameWriter::kAll: break;
    case StreamFrameWriter::kWouldBlock: ++stats_.stream_write_waits; break;
    case StreamFrameWriter::kFailed: closeStream("network stream write failed"); return;
  }
  bool want_write = out_.queued() != 0;
  if (want_write != want_write_) {
    want_write_ = want_write;
    (void)loop_.modify(stream_.get(), want_write ? EPOLLIN | EPOLLOUT : EPOLLIN);
  }
}

void SlirpNetwork::closeStream(const char*) {
  if (!stream_.valid()) return;
  loop_.remove(stream_.get());
  stream_.reset();
  out_.clear();
  in_.reset();
}

Result<void> SlirpNetwork::addPortForward(const PortMapping& mapping) {
  if (mapping.host_port == 0) return Error(ErrorCode::kInvalidArgument, "port forward without a host port");
  auto addresses = forwardAddresses(mapping);
  if (!addresses) return std::move(addresses).error();
  errno = 0;
  // SAFETY: the storages hold sockaddr_in or sockaddr_in6 of the recorded lengths.
  int added = slirp_add_hostxfwd(slirp_, reinterpret_cast<const sockaddr*>(&addresses->host), addresses->host_length,
                                 reinterpret_cast<const sockaddr*>(&addresses->guest), addresses->guest_length,
                                 addresses->flags);
  if (added != 0) {
    int error = errno;
    std::string where = "host port " + std::to_string(mapping.host_port) + "/" +
                        (mapping.transport == Transport::kUdp ? "udp" : "tcp") + " on " + mapping.host_ip;
    if (error == EADDRINUSE) return Error(ErrorCode::kInvalidArgument, where + " is already in use", error);
    return Error(ErrorCode::kIo, "forward " + where + ": " + (error ? std::strerror(error) : "refused"), error);
  }
  return success();
}

Result<void> SlirpNetwork::removePortForward(const PortMapping& mapping) {
  auto addresses = forwardAddresses(mapping);
  if (!addresses) return std::move(addresses).error();
  // SAFETY: as in addPortForward.
  if (slirp_remove_hostxfwd(slirp_, reinterpret_cast<const sockaddr*>(&addresses->host), addresses->host_length,
                            addresses->flags) != 0) {
    return Error(ErrorCode::kNotFound, "no forward of " + describePortMapping(mapping));
  }
  return success();
}

}  // namespace microvm::net
