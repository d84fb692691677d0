// VsockMuxer: the connection layer of the vsock device. It turns the guest's
// virtio-vsock stream packets into host unix-socket connections and back,
// in the "hybrid vsock" scheme of Firecracker and libkrun:
//
//   guest connect(CID 2, port P)  → the host unix socket configured for P, or
//                                   "<base>_P"
//   host connect("<base>") + "CONNECT P\n"
//                                 → the guest's port P; "OK <host port>\n"
//                                   once the guest accepts, else closed
//   host connect(listen path for P) → the guest's port P, no handshake line
//
// Flow control is virtio's credit scheme in both directions: the muxer never
// sends the guest more than its advertised buffer allows (and stops reading a
// host socket until the guest's credit returns), and it resets a guest that
// overruns the credit the muxer advertised. Shutdown flags map to
// shutdown(2) and back; RST closes at once.
//
// Memory is bounded whatever the guest does: a connection holds at most the
// credit the muxer advertised (guest → host) plus kMaxStagedForGuest (host →
// guest; the rest waits in the host socket, however much buffer the guest
// advertises), and at most max_control header-only packets wait for the
// guest. A guest that stops taking RX packets while it keeps sending first
// loses the RSTs that answer packets for no connection (past half the
// queue), then, at max_control, all its connections: they are closed on the
// host side and the guest hears of them as unknown (stats.control_overflows).
//
// Packets are device-agnostic: the device feeds what the guest sent with
// onGuestPacket and pulls what the guest should receive with takeRx whenever
// it has an RX buffer. Everything runs on the owner's EventLoop.
//
//   auto muxer = VsockMuxer::create(loop, config, [&] { device.fillRx(); });
//   muxer->onGuestPacket(header, payload);
//   while (muxer->hasRx() && rx.pop(chain)) muxer->takeRx(room, header, payload);
#pragma once

#include <chrono>
#include <compare>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "microvm/result.h"
#include "vsock/packet.h"

namespace microvm::vsock {

// "CONNECT <port>" (the newline stripped); nullopt if malformed.
std::optional<uint32_t> parseConnectLine(std::string_view line);
inline constexpr size_t kMaxConnectLine = 64;

struct PortMapping {
  uint32_t port = 0;
  std::filesystem::path path;
  bool listen = false;  // host connections at `path` go to the guest's port
};

struct MuxerConfig {
  uint64_t guest_cid = 3;
  // "<base>" takes CONNECT clients; "<base>_P" is where guest port P goes by
  // default. Empty: neither.
  std::filesystem::path base;
  // False: someone else (the runner's agent gateway) listens on `base`, reads
  // the CONNECT lines and hands clients over with connectClient().
  bool serve_base = true;
  std::vector<PortMapping> ports;
  // The receive buffer advertised to the guest for each connection.
  uint32_t buf_alloc = 256 * 1024;
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(5);
  size_t max_connections = 1024;
  // Header-only packets waiting for the guest (about 50 bytes each). Each
  // connection has a few at most, so only a guest that does not take what
  // it is sent fills the queue.
  size_t max_control = 8192;
  // Opens a non-blocking connection to a host socket for a guest; empty:
  // connectUnix. The runner, once it has given up root, asks its keeper.
  std::function<Result<UniqueFd>(const std::filesystem::path&)> connect_host;
};

// Bytes read from a host socket for the guest and not yet taken, per
// connection, whatever credit the guest advertises (up to 4 GiB).
constexpr size_t kMaxStagedForGuest = 128 * 1024;

// Guest input that was refused, by kind. Nothing here stops the device.
struct MuxerStats {
  uint64_t malformed_packets = 0;   // wrong CIDs, type, op or length
  uint64_t credit_violations = 0;   // the guest sent more than we advertised
  uint64_t unknown_connection = 0;  // packets for no connection (answered with RST)
  uint64_t resets_sent = 0;
  uint64_t connections_opened = 0;
  uint64_t control_dropped = 0;     // RSTs for no connection not sent: the queue was half full
  uint64_t control_overflows = 0;   // the queue filled up: every connection was closed
};

class VsockMuxer {
 public:
  // Listens on the base socket and every listen mapping; `rx_ready` is called
  // (from the loop) when packets for the guest are waiting.
  static Result<std::unique_ptr<VsockMuxer>> create(EventLoop& loop, MuxerConfig config,
                                                    std::function<void()> rx_ready);
  ~VsockMuxer();
  VsockMuxer(const VsockMuxer&) = delete;
  VsockMuxer& operator=(const VsockMuxer&) = delete;

  // One packet from the guest (its header's len already matched to
  // `payload`). Never fails: bad packets are counted and dropped or reset.
  void onGuestPacket(const PacketHeader& header, std::string_view payload);

  // A host client of the base socket whose "CONNECT <guest_port>" line was
  // read elsewhere (serve_base false): connects it as if read here, "OK"
  // line included.
  void connectClient(UniqueFd fd, uint32_t guest_port);

  bool hasRx() const;
  // The next packet for the guest, with at most `max_payload` payload bytes.
  // False if none is waiting.
  bool takeRx(uint32_t max_payload, PacketHeader& header, std::string& payload);

  // Drops every connection without telling the guest (its transport was
  // reset, or the device went away).
  void reset();

  size_t connectionCount() const { return connections_.size(); }
  // What the muxer holds for both directions: buffered bytes plus queued
  // control packets, for tests and the bound above.
  size_t bufferedBytes() const;
  const MuxerStats& stats() const { return stats_; }

 private:
  struct Key {
    uint32_t host_port;
    uint32_t guest_port;
    auto operator<=>(const Key&) const = default;
  };
  enum class State { kConnectingGuest, kEstablished };
  struct Connection {
    Key key{};
    State state = State::kConnectingGuest;
    UniqueFd fd;
    bool send_ok_line = false;
    EventLoop::TimerId timer = 0;
    uint32_t interest = 0;
    bool registered = false;
    bool hangup = false;  // epoll reported HUP/ERR: unregister when idle
    // guest → host
    std::string to_host;
    uint32_t fwd_cnt = 0;
    uint32_t reported_fwd_cnt = 0;
    bool credit_update_queued = false;
    bool guest_send_done = false;
    bool guest_rcv_done = false;
    bool host_write_shut = false;
    // host → guest
    std::string to_guest;
    uint32_t tx_cnt = 0;
    uint32_t peer_buf_alloc = 0;
    uint32_t peer_fwd_cnt = 0;
    bool host_eof = false;
    bool shutdown_sent = false;
    bool data_queued = false;
  };
  struct LineClient {
    UniqueFd fd;
    std::string line;
    EventLoop::TimerId timer = 0;
  };

  VsockMuxer(EventLoop& loop, MuxerConfig config, std::function<void()> rx_ready)
      : loop_(loop), config_(std::move(config)), rx_ready_(std::move(rx_ready)) {}

  // A listening socket at `path` (a stale one is replaced), owner-only.
  Result<int> listen(const std::filesystem::path& path);
  void acceptConnectClient(int listener);
  void acceptListenClient(uint32_t guest_port, int listener);
  void readConnectLine(uint64_t id);
  void connectToGuest(UniqueFd fd, uint32_t guest_port, bool send_ok_line);
  void handleGuestPacket(const PacketHeader& header, std::string_view payload);
  void guestRequest(const PacketHeader& header);
  void guestData(Connection& connection, std::string_view payload);
  void guestShutdown(Connection& connection, uint32_t flags);
  void onHostEvents(Key key, uint32_t events);
  void readHost(Connection& connection);
  void flushToHost(Connection& connection);
  void updateInterest(Connection& connection);
  void queueData(Connection& connection);
  void queueControl(const Key& key, Op op, uint32_t flags = 0);
  // After a public entry point: the reset queueControl asked for, if any.
  void resetIfOverflowed();
  void maybeFinish(Connection& connection);
  // `key` by value: callers pass connection.key, which erasing frees.
  void destroy(Key key, bool reset_guest);
  uint32_t peerCredit(const Connection& connection) const;
  std::filesystem::path targetFor(uint32_t port) const;
  uint32_t allocateHostPort(uint32_t guest_port);
  void notify();

  EventLoop& loop_;
  MuxerConfig config_;
  std::function<void()> rx_ready_;
  std::vector<UniqueFd> listeners_;
  std::map<Key, Connection> connections_;
  std::map<uint64_t, LineClient> line_clients_;
  uint64_t next_line_client_ = 1;
  // Header-only packets for the guest, in order; credit fields are filled in
  // when taken.
  std::deque<PacketHeader> control_;
  // The control queue overflowed: every connection is dropped once the
  // current entry point is done with them.
  bool overflowed_ = false;
  // Connections with bytes for the guest, served round-robin.
  std::deque<Key> data_ready_;
  uint32_t next_host_port_ = 1u << 30;
  MuxerStats stats_;
};

}  // namespace microvm::vsock
