#include "vsock/vsock_muxer.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include "base/unix_socket.h"

namespace microvm::vsock {

namespace fs = std::filesystem;

namespace {

// Bytes read from a host socket at once.
constexpr size_t kReadChunk = 64 * 1024;

}  // namespace

std::optional<uint32_t> parseConnectLine(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  constexpr std::string_view kVerb = "CONNECT ";
  if (line.substr(0, kVerb.size()) != kVerb) return std::nullopt;
  line.remove_prefix(kVerb.size());
  uint32_t port = 0;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), port);
  if (ec != std::errc() || end != line.data() + line.size() || line.empty()) return std::nullopt;
  return port;
}

Result<std::unique_ptr<VsockMuxer>> VsockMuxer::create(EventLoop& loop, MuxerConfig config,
                                                        std::function<void()> rx_ready) {
  std::unique_ptr<VsockMuxer> muxer(new VsockMuxer(loop, std::move(config), std::move(rx_ready)));
  VsockMuxer* self = muxer.get();
  if (!self->config_.base.empty() && self->config_.serve_base) {
    auto fd = self->listen(self->config_.base);
    if (!fd) return std::move(fd).error();
    int listener = *fd;
    MICROVM_TRY(loop.add(listener, EPOLLIN, [self, listener](uint32_t) { self->acceptConnectClient(listener); }));
  }
  for (const PortMapping& mapping : self->config_.ports) {
    if (!mapping.listen) continue;
    auto fd = self->listen(mapping.path);
    if (!fd) return std::move(fd).error();
    int listener = *fd;
    uint32_t port = mapping.port;
    MICROVM_TRY(loop.add(listener, EPOLLIN, [self, port, listener](uint32_t) { self->acceptListenClient(port, listener); }));
  }
  return muxer;
}

VsockMuxer::~VsockMuxer() {
  reset();
  for (const UniqueFd& listener : listeners_) loop_.remove(listener.get());
  // Sockets outside the VM's runtime directory would outlive it.
  for (const PortMapping& mapping : config_.ports) {
    if (mapping.listen) ::unlink(mapping.path.c_str());
  }
}

Result<int> VsockMuxer::listen(const fs::path& path) {
  auto fd = listenUnix(path, 64, SOCK_NONBLOCK);
  if (!fd) return std::move(fd).error().withContext("vsock");
  listeners_.push_back(std::move(*fd));
  return listeners_.back().get();
}

void VsockMuxer::notify() {
  // Every entry point from the loop ends here, done with its connections.
  resetIfOverflowed();
  if (hasRx() && rx_ready_) rx_ready_();
}

void VsockMuxer::resetIfOverflowed() {
  if (!overflowed_) return;
  overflowed_ = false;
  ++stats_.control_overflows;
  reset();
}

size_t VsockMuxer::bufferedBytes() const {
  size_t total = control_.size() * sizeof(PacketHeader);
  for (const auto& [key, connection] : connections_) total += connection.to_host.size() + connection.to_guest.size();
  for (const auto& [id, client] : line_clients_) total += client.line.size();
  return total;
}

fs::path VsockMuxer::targetFor(uint32_t port) const {
  for (const PortMapping& mapping : config_.ports) {
    if (mapping.port == port && !mapping.listen) return mapping.path;
  }
  if (config_.base.empty()) return {};
  return fs::path(config_.base.string() + "_" + std::to_string(port));
}

uint32_t VsockMuxer::allocateHostPort(uint32_t guest_port) {
  // Ports from 2^30 up, as Firecracker does, away from well-known ones; a
  // port still in use with this guest port is skipped.
  for (;;) {
    uint32_t port = next_host_port_++;
    if (next_host_port_ == 0) next_host_port_ = 1u << 30;
    if (!connections_.contains(Key{port, guest_port})) return port;
  }
}

uint32_t VsockMuxer::peerCredit(const Connection& connection) const {
  uint32_t in_flight = connection.tx_cnt - connection.peer_fwd_cnt;
  if (in_flight >= connection.peer_buf_alloc) return 0;
  return connection.peer_buf_alloc - in_flight;
}

void VsockMuxer::queueControl(const Key& key, Op op, uint32_t flags) {
  // An RST for no connection (an answer to a stray packet, a refused or an
  // ended connection) goes first when the guest does not take its packets,
  // so that live connections keep room; losing one costs the guest a
  // connect timeout at worst.
  if (op == Op::kRst && !connections_.contains(key) && control_.size() >= config_.max_control / 2) {
    ++stats_.control_dropped;
    return;
  }
  if (control_.size() >= config_.max_control) {
    // The guest keeps sending but takes nothing: resetting its connections
    // is the only way to stop growing (resetIfOverflowed, once the caller is
    // done with them).
    overflowed_ = true;
    return;
  }
  PacketHeader header;
  header.src_cid = kHostCid;
  header.dst_cid = config_.guest_cid;
  header.src_port = key.host_port;
  header.dst_port = key.guest_port;
  header.op = static_cast<uint16_t>(op);
  header.flags = flags;
  if (op == Op::kRst) ++stats_.resets_sent;
  control_.push_back(header);
}

void VsockMuxer::queueData(Connection& connection) {
  if (connection.data_queued || connection.to_guest.empty() || peerCredit(connection) == 0) return;
  connection.data_queued = true;
  data_ready_.push_back(connection.key);
}

bool VsockMuxer::hasRx() const {
  if (!control_.empty()) return true;
  for (const Key& key : data_ready_) {
    auto it = connections_.find(key);
    if (it != connections_.end() && !it->second.to_guest.empty() && peerCredit(it->second) > 0) return true;
  }
  return false;
}

bool VsockMuxer::takeRx(uint32_t max_payload, PacketHeader& header, std::string& payload) {
  payload.clear();
  if (!control_.empty()) {
    header = control_.front();
    control_.pop_front();
    header.buf_alloc = config_.buf_alloc;
    auto it = connections_.find(Key{header.src_port, header.dst_port});
    if (it != connections_.end()) {
      header.fwd_cnt = it->second.fwd_cnt;
      it->second.reported_fwd_cnt = it->second.fwd_cnt;
      if (header.op == static_cast<uint16_t>(Op::kCreditUpdate)) it->second.credit_update_queued = false;
    }
    return true;
  }
  while (!data_ready_.empty() && max_payload > 0) {
    Key key = data_ready_.front();
    data_ready_.pop_front();
    auto it = connections_.find(key);
    if (it == connections_.end()) continue;
    Connection& connection = it->second;
    connection.data_queued = false;
    uint32_t credit = peerCredit(connection);
    if (connection.to_guest.empty() || credit == 0) continue;
    size_t n = std::min<size_t>({connection.to_guest.size(), credit, max_payload});
    payload.assign(connection.to_guest, 0, n);
    connection.to_guest.erase(0, n);
    connection.tx_cnt += static_cast<uint32_t>(n);
    header = PacketHeader{};
    header.src_cid = kHostCid;
    header.dst_cid = config_.guest_cid;
    header.src_port = key.host_port;
    header.dst_port = key.guest_port;
    header.op = static_cast<uint16_t>(Op::kRw);
    header.len = static_cast<uint32_t>(n);
    header.buf_alloc = config_.buf_alloc;
    header.fwd_cnt = connection.fwd_cnt;
    connection.reported_fwd_cnt = connection.fwd_cnt;
    queueData(connection);  // round-robin: back of the line if more is left
    if (connection.to_guest.empty() && connection.host_eof && !connection.shutdown_sent) {
      connection.shutdown_sent = true;
      queueControl(key, Op::kShutdown, kShutdownSend);
    }
    updateInterest(connection);
    resetIfOverflowed();
    return true;
  }
  return false;
}

void VsockMuxer::reset() {
  for (auto& [key, connection] : connections_) {
    if (connection.registered) loop_.remove(connection.fd.get());
    if (connection.timer != 0) loop_.cancelTimer(connection.timer);
  }
  connections_.clear();
  for (auto& [id, client] : line_clients_) {
    loop_.remove(client.fd.get());
    loop_.cancelTimer(client.timer);
  }
  line_clients_.clear();
  control_.clear();
  data_ready_.clear();
  overflowed_ = false;
}

void VsockMuxer::destroy(Key key, bool reset_guest) {
  auto it = connections_.find(key);
  if (it == connections_.end()) return;
  if (it->second.registered) loop_.remove(it->second.fd.get());
  if (it->second.timer != 0) loop_.cancelTimer(it->second.timer);
  connections_.erase(it);
  if (reset_guest) queueControl(key, Op::kRst);
}

// --- host side -----------------------------------------------------------

void VsockMuxer::acceptConnectClient(int listener) {
  for (int i = 0; i < 16; ++i) {
    UniqueFd fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd.valid()) return;
    if (connections_.size() + line_clients_.size() >= config_.max_connections) continue;  // closed: refused
    uint64_t id = next_line_client_++;
    int raw = fd.get();
    LineClient& client = line_clients_[id];
    client.fd = std::move(fd);
    client.timer = loop_.addTimer(config_.connect_timeout, [this, id] {
      auto it = line_clients_.find(id);
      if (it == line_clients_.end()) return;
      loop_.remove(it->second.fd.get());
      line_clients_.erase(it);
    });
    if (!loop_.add(raw, EPOLLIN, [this, id](uint32_t) { readConnectLine(id); })) {
      loop_.cancelTimer(client.timer);
      line_clients_.erase(id);
    }
  }
}

void VsockMuxer::readConnectLine(uint64_t id) {
  auto it = line_clients_.find(id);
  if (it == line_clients_.end()) return;
  LineClient& client = it->second;
  auto drop = [&] {
    loop_.remove(client.fd.get());
    loop_.cancelTimer(client.timer);
    line_clients_.erase(it);
  };
  // Byte by byte: whatever follows the line is the stream's first data and
  // must stay in the socket until the guest has accepted.
  for (;;) {
    char c;
    ssize_t got = ::read(client.fd.get(), &c, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == EAGAIN) return;
    if (got <= 0) return drop();
    if (c != '\n') {
      client.line.push_back(c);
      if (client.line.size() > kMaxConnectLine) return drop();
      continue;
    }
    auto port = parseConnectLine(client.line);
    if (!port) return drop();
    UniqueFd fd = std::move(client.fd);
    loop_.remove(fd.get());
    loop_.cancelTimer(client.timer);
    line_clients_.erase(it);
    connectToGuest(std::move(fd), *port, /*send_ok_line=*/true);
    notify();
    return;
  }
}

void VsockMuxer::connectClient(UniqueFd fd, uint32_t guest_port) {
  if (connections_.size() + line_clients_.size() >= config_.max_connections) return;  // closed: refused
  connectToGuest(std::move(fd), guest_port, /*send_ok_line=*/true);
  notify();
}

void VsockMuxer::acceptListenClient(uint32_t guest_port, int listener) {
  for (int i = 0; i < 16; ++i) {
    UniqueFd fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd.valid()) break;
    if (connections_.size() + line_clients_.size() >= config_.max_connections) continue;
    connectToGuest(std::move(fd), guest_port, /*send_ok_line=*/false);
  }
  notify();
}

void VsockMuxer::connectToGuest(UniqueFd fd, uint32_t guest_port, bool send_ok_line) {
  Key key{allocateHostPort(guest_port), guest_port};
  Connection& connection = connections_[key];
  connection.key = key;
  connection.fd = std::move(fd);
  connection.send_ok_line = send_ok_line;
  connection.state = State::kConnectingGuest;
  connection.timer = loop_.addTimer(config_.connect_timeout, [this, key] {
    auto it = connections_.find(key);
    if (it == connections_.end() || it->second.state != State::kConnectingGuest) return;
    it->second.timer = 0;
    destroy(key, /*reset_guest=*/true);
    notify();
  });
  Key handler_key = key;
  if (loop_.add(connection.fd.get(), 0, [this, handler_key](uint32_t events) { onHostEvents(handler_key, events); })) {
    connection.registered = true;
  }
  ++stats_.connections_opened;
  queueControl(key, Op::kRequest);
}

void VsockMuxer::onHostEvents(Key key, uint32_t events) {
  auto it = connections_.find(key);
  if (it == connections_.end()) return;
  Connection& connection = it->second;
  if ((events & (EPOLLHUP | EPOLLERR)) != 0) connection.hangup = true;
  if ((events & EPOLLOUT) != 0 || ((events & (EPOLLHUP | EPOLLERR)) != 0 && !connection.to_host.empty())) {
    flushToHost(connection);
    if (!connections_.contains(key)) return notify();
  }
  if ((connection.interest & EPOLLIN) != 0 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) {
    readHost(connection);
    if (!connections_.contains(key)) return notify();
  }
  maybeFinish(connection);
  if (connections_.contains(key)) updateInterest(connection);
  notify();
}

void VsockMuxer::readHost(Connection& connection) {
  // The guest's credit says how much it can take, not how much the runner
  // should hold for it.
  size_t room = std::min<size_t>(peerCredit(connection), kMaxStagedForGuest);
  if (connection.to_guest.size() >= room) return;
  size_t want = std::min<size_t>(kReadChunk, room - connection.to_guest.size());
  size_t old_size = connection.to_guest.size();
  connection.to_guest.resize(old_size + want);
  ssize_t got;
  do {
    got = ::read(connection.fd.get(), connection.to_guest.data() + old_size, want);
  } while (got < 0 && errno == EINTR);
  connection.to_guest.resize(old_size + (got > 0 ? static_cast<size_t>(got) : 0));
  if (got < 0) {
    if (errno == EAGAIN) return;
    destroy(connection.key, /*reset_guest=*/true);
    return;
  }
  if (got == 0) {
    connection.host_eof = true;
    if (connection.to_guest.empty() && !connection.shutdown_sent) {
      connection.shutdown_sent = true;
      queueControl(connection.key, Op::kShutdown, kShutdownSend);
    }
    return;
  }
  queueData(connection);
}

void VsockMuxer::flushToHost(Connection& connection) {
  while (!connection.to_host.empty()) {
    ssize_t wrote = ::send(connection.fd.get(), connection.to_host.data(), connection.to_host.size(), MSG_NOSIGNAL);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote < 0 && errno == EAGAIN) break;
    if (wrote <= 0) {
      // The host side is gone (EPIPE, ECONNRESET): the guest's stream ends.
      destroy(connection.key, /*reset_guest=*/true);
      return;
    }
    connection.to_host.erase(0, static_cast<size_t>(wrote));
    connection.fwd_cnt += static_cast<uint32_t>(wrote);
  }
  // Tell the guest about freed space before it runs dry: once a quarter of
  // the buffer has been forwarded unreported.
  if (!connection.credit_update_queued && connection.fwd_cnt - connection.reported_fwd_cnt >= config_.buf_alloc / 4) {
    connection.credit_update_queued = true;
    queueControl(connection.key, Op::kCreditUpdate);
  }
  if (connection.to_host.empty() && connection.guest_send_done && !connection.host_write_shut) {
    connection.host_write_shut = true;
    ::shutdown(connection.fd.get(), SHUT_WR);
  }
}

void VsockMuxer::updateInterest(Connection& connection) {
  uint32_t interest = 0;
  if (connection.state == State::kEstablished) {
    if (!connection.host_eof && !connection.guest_rcv_done &&
        connection.to_guest.size() < std::min<size_t>(peerCredit(connection), kMaxStagedForGuest)) {
      interest |= EPOLLIN;
    }
    if (!connection.to_host.empty()) interest |= EPOLLOUT;
  }
  // A hung-up socket reports HUP whatever it is asked for: with nothing to
  // do, take it out of the loop instead of spinning on it.
  bool want_registered = !connection.hangup || interest != 0;
  if (want_registered && !connection.registered) {
    Key key = connection.key;
    if (loop_.add(connection.fd.get(), interest, [this, key](uint32_t events) { onHostEvents(key, events); })) {
      connection.registered = true;
      connection.interest = interest;
    }
    return;
  }
  if (!want_registered && connection.registered) {
    loop_.remove(connection.fd.get());
    connection.registered = false;
    return;
  }
  if (connection.registered && interest != connection.interest) {
    if (loop_.modify(connection.fd.get(), interest)) connection.interest = interest;
  }
}

// Both directions are over once the guest will send nothing more (and all
// it sent reached the host) and the host's end of stream reached the guest;
// or the guest will neither send nor receive. The guest learns with an RST,
// which is also how Linux acknowledges a close.
void VsockMuxer::maybeFinish(Connection& connection) {
  if (connection.state != State::kEstablished) return;
  bool guest_done = connection.guest_send_done && connection.to_host.empty();
  bool host_done = connection.shutdown_sent || connection.guest_rcv_done;
  if (guest_done && host_done) destroy(connection.key, /*reset_guest=*/true);
}

// --- guest side ----------------------------------------------------------

void VsockMuxer::onGuestPacket(const PacketHeader& header, std::string_view payload) {
  handleGuestPacket(header, payload);
  resetIfOverflowed();
}

void VsockMuxer::handleGuestPacket(const PacketHeader& header, std::string_view payload) {
  if (header.src_cid != config_.guest_cid || header.dst_cid != kHostCid || header.len != payload.size() ||
      header.len > kMaxPayload) {
    ++stats_.malformed_packets;
    return;
  }
  Key key{header.dst_port, header.src_port};
  Op op = static_cast<Op>(header.op);
  if (header.type != kTypeStream || op < Op::kRequest || op > Op::kCreditRequest) {
    // virtio: an unsupported type or op is answered with a reset.
    ++stats_.malformed_packets;
    if (op != Op::kRst) queueControl(key, Op::kRst);
    destroy(key, false);
    return;
  }
  if (op == Op::kRequest) return guestRequest(header);
  auto it = connections_.find(key);
  if (it == connections_.end()) {
    ++stats_.unknown_connection;
    if (op != Op::kRst) queueControl(key, Op::kRst);
    return;
  }
  Connection& connection = it->second;
  connection.peer_buf_alloc = header.buf_alloc;
  connection.peer_fwd_cnt = header.fwd_cnt;
  switch (op) {
    case Op::kResponse: {
      if (connection.state != State::kConnectingGuest) {
        ++stats_.malformed_packets;
        return destroy(key, true);
      }
      connection.state = State::kEstablished;
      if (connection.timer != 0) loop_.cancelTimer(connection.timer);
      connection.timer = 0;
      if (connection.send_ok_line) {
        // A fresh socket takes a line this short at once; if not, the client
        // is not reading and is dropped.
        std::string line = "OK " + std::to_string(key.host_port) + "\n";
        if (::send(connection.fd.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
          return destroy(key, true);
        }
      }
      break;
    }
    case Op::kRst: return destroy(key, false);
    case Op::kShutdown: guestShutdown(connection, header.flags); break;
    case Op::kRw:
      if (connection.state != State::kEstablished || connection.guest_send_done) {
        ++stats_.malformed_packets;
        return destroy(key, true);
      }
      guestData(connection, payload);
      if (!connections_.contains(key)) return;
      break;
    case Op::kCreditUpdate: break;
    case Op::kCreditRequest:
      if (!connection.credit_update_queued) {
        connection.credit_update_queued = true;
        queueControl(key, Op::kCreditUpdate);
      }
      break;
    default: break;
  }
  queueData(connection);
  maybeFinish(connection);
  if (connections_.contains(key)) updateInterest(connection);
}

void VsockMuxer::guestRequest(const PacketHeader& header) {
  Key key{header.dst_port, header.src_port};
  if (connections_.contains(key)) {
    // A second REQUEST for a live connection: the guest is confused; both go.
    ++stats_.malformed_packets;
    return destroy(key, true);
  }
  fs::path target = targetFor(key.host_port);
  if (target.empty() || connections_.size() >= config_.max_connections) return queueControl(key, Op::kRst);
  // A unix stream connect completes at once or fails (EAGAIN: the server's
  // backlog is full, which refuses like a missing server).
  auto fd = config_.connect_host ? config_.connect_host(target) : connectUnix(target, SOCK_NONBLOCK);
  if (!fd) return queueControl(key, Op::kRst);
  Connection& connection = connections_[key];
  connection.key = key;
  connection.fd = std::move(*fd);
  connection.state = State::kEstablished;
  connection.peer_buf_alloc = header.buf_alloc;
  connection.peer_fwd_cnt = header.fwd_cnt;
  ++stats_.connections_opened;
  queueControl(key, Op::kResponse);
  updateInterest(connection);
}

void VsockMuxer::guestData(Connection& connection, std::string_view payload) {
  if (payload.empty()) return;
  // The guest may have at most buf_alloc bytes in flight: what we hold plus
  // what we forwarded but have not reported yet.
  uint64_t in_flight = connection.to_host.size() + (connection.fwd_cnt - connection.reported_fwd_cnt);
  if (in_flight + payload.size() > config_.buf_alloc) {
    ++stats_.credit_violations;
    return destroy(connection.key, true);
  }
  connection.to_host.append(payload);
  flushToHost(connection);
}

void VsockMuxer::guestShutdown(Connection& connection, uint32_t flags) {
  if ((flags & kShutdownRcv) != 0 && !connection.guest_rcv_done) {
    connection.guest_rcv_done = true;
    // Nothing more will be delivered; what is staged is dropped.
    connection.to_guest.clear();
    ::shutdown(connection.fd.get(), SHUT_RD);
  }
  if ((flags & kShutdownSend) != 0 && !connection.guest_send_done) {
    connection.guest_send_done = true;
    flushToHost(connection);
  }
}

}  // namespace microvm::vsock
