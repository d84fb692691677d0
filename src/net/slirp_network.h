// SlirpNetwork: the guest's user-mode network, hosted by the runner.
//
// QEMU's virtio-net device is connected with `-netdev stream` to one end of
// a socketpair; the other end is given here. Each Ethernet frame on that
// stream is a 4-byte big-endian length followed by the frame. Frames from
// the guest pass the guest-frame hook (the egress filter) and then enter
// libslirp, which NATs them onto host sockets; frames libslirp makes for the
// guest pass the host-frame hook on their way back to QEMU.
//
// libslirp's poll-style API runs on the runner's EventLoop: before each wait
// the stack's sockets are synced into an epoll set of their own (one fd in
// the loop), and after it the ready ones are handed to slirp_pollfds_poll.
// Nothing blocks and there are no threads.
//
//   auto network = SlirpNetwork::create(loop, std::move(runner_end), {});
//   (*network)->setGuestFrameHook([&](auto frame, auto& to_guest) {
//     return filter.onGuestFrame(frame, to_guest) == net::Verdict::kPass;
//   });
//   MICROVM_TRY((*network)->addPortForward(*net::parsePortMapping("8080:80")));
//   while (running) loop.runOnce();
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "microvm/result.h"
#include "net/network_config.h"
#include "net/slirp_state.h"

struct Slirp;

namespace microvm::net {

// The framing of QEMU's `-netdev stream`, as the runner reads it: each
// Ethernet frame is a 4-byte big-endian length and then the frame. Bytes go
// in as they are read, whole frames come out; a length beyond any Ethernet
// frame makes the stream corrupt, for good. What QEMU writes here is what
// the guest's driver made: every length is untrusted.
//
//   std::span<uint8_t> space = reader.prepare(256 * 1024);
//   reader.commit(read(fd, space.data(), space.size()));   // bytes actually read
//   while (auto frame = reader.next()) handle(*frame);      // valid until the next prepare()
//   if (reader.corrupt()) close(fd);
class StreamFrameReader {
 public:
  // A 64 KiB IP packet plus its Ethernet header.
  static constexpr size_t kMaxFrame = 65536 + 14;

  // Room for up to `bytes` more bytes at the end of the buffer.
  std::span<uint8_t> prepare(size_t bytes);
  // `bytes` (at most what prepare() offered) of that room now hold data.
  void commit(size_t bytes);
  // The next whole frame, if one is buffered and the stream is not corrupt.
  std::optional<std::span<const uint8_t>> next();
  bool corrupt() const { return corrupt_; }
  size_t buffered() const { return buffer_.size() - offset_; }  // bytes not yet handed out
  void reset();

 private:
  std::string buffer_;
  size_t offset_ = 0;    // start of the first frame not handed out
  size_t prepared_ = 0;  // room offered by the last prepare(), not yet committed
  bool corrupt_ = false;
};

// Appends `frame` to `out` in the stream's framing.
void appendStreamFrame(std::string& out, std::span<const uint8_t> frame);

// Frames for QEMU, queued in the stream's framing and written as the
// non-blocking socket takes them (both network back-ends' guest side).
//   writer.append(frame);
//   if (writer.flush(fd) == StreamFrameWriter::kFailed) close(fd);
//   epoll: EPOLLOUT while writer.queued() != 0
class StreamFrameWriter {
 public:
  enum Flushed { kAll, kWouldBlock, kFailed };

  explicit StreamFrameWriter(size_t compact_after) : compact_after_(compact_after) {}
  void append(std::span<const uint8_t> frame) { appendStreamFrame(out_, frame); }
  size_t queued() const { return out_.size() - offset_; }
  // Writes what `fd` takes now.
  Flushed flush(int fd);
  void clear();

 private:
  std::string out_;
  size_t offset_ = 0;     // written already
  size_t compact_after_;  // written bytes kept before the buffer is compacted
};

struct SlirpNetworkOptions {
  bool ipv6 = true;
  // The gateway address reaches the host's 127.0.0.1 (as QEMU's user
  // networking does). Off when an egress policy does not allow loopback.
  bool host_loopback = true;
  // libslirp's own DNS relay at the DNS address. Off when the runner's DNS
  // forwarder answers there instead (it must be, for the egress policy).
  bool builtin_dns = false;
  // Frames queued for QEMU beyond this are dropped (TCP retransmits them);
  // it bounds memory while the guest does not drain its receive queue.
  size_t max_queued_bytes = 8u << 20;
  // The link's MTU (and MRU): libslirp sizes its TCP MSS from it.
  int mtu = 1500;
};

struct SlirpNetworkStats {
  uint64_t frames_from_guest = 0;
  uint64_t bytes_from_guest = 0;
  uint64_t frames_to_guest = 0;
  uint64_t bytes_to_guest = 0;
  uint64_t frames_filtered = 0;    // guest frames the hook kept from the stack
  uint64_t frames_oversized = 0;   // stream lengths beyond any Ethernet frame: the stream is dropped
  uint64_t frames_queue_full = 0;  // frames for the guest dropped because QEMU was not reading
  uint64_t stream_write_waits = 0;  // writes to QEMU that found its socket full (the rest waits for EPOLLOUT)
};

// The total of the RecvQ column of the TCP rows of libslirp's
// slirp_connection_info() text ("  TCP[STATE]  FD  SRC PORT  DST PORT RECVQ
// SENDQ"): what each connection received from the guest (its so_rcv) and
// has yet to write to its host socket. Rows it cannot read count as nothing.
uint64_t tcpBytesForHost(std::string_view connection_info);

class SlirpNetwork {
 public:
  // Decides whether a guest frame may enter the stack; frames appended to
  // `to_guest` are sent to the guest afterwards (refusals, DNS answers).
  using GuestFrameHook = std::function<bool(std::span<const uint8_t> frame, std::vector<std::string>& to_guest)>;
  // Sees every frame the stack sends to the guest.
  using HostFrameHook = std::function<void(std::span<const uint8_t> frame)>;

  // `stream` is the runner's end of QEMU's `-netdev stream` socket.
  static Result<std::unique_ptr<SlirpNetwork>> create(EventLoop& loop, UniqueFd stream, SlirpNetworkOptions options);
  ~SlirpNetwork();
  SlirpNetwork(const SlirpNetwork&) = delete;
  SlirpNetwork& operator=(const SlirpNetwork&) = delete;

  void setGuestFrameHook(GuestFrameHook hook) { guest_hook_ = std::move(hook); }
  void setHostFrameHook(HostFrameHook hook) { host_hook_ = std::move(hook); }

  // Queues a frame for the guest (e.g. a DNS reply made outside the stack).
  void sendToGuest(std::string_view frame);

  // Host socket -> guest port. A mapping with host_port 0 must be resolved
  // by the caller first. Works before and while the guest runs.
  Result<void> addPortForward(const PortMapping& mapping);
  Result<void> removePortForward(const PortMapping& mapping);

  // libslirp's own state, for a snapshot (net/slirp_state.h), and loaded
  // into a new stack before its guest runs.
  SlirpState saveState();
  Result<void> loadState(const SlirpState& state);

  // Bytes the guest's TCP connections sent that the stack holds and has not
  // yet written to their host sockets (a peer that reads slower than the
  // guest sent): what closing the stack now would lose.
  uint64_t bytesForHost() const;

  const SlirpNetworkStats& stats() const { return stats_; }
  // False once QEMU closed its end (or sent a corrupt stream).
  bool connected() const { return stream_.valid(); }

 private:
  struct Timer;
  SlirpNetwork(EventLoop& loop, UniqueFd stream, SlirpNetworkOptions options);

  Result<void> start();
  std::chrono::milliseconds beforeWait();
  void onStreamEvents(uint32_t events);
  void readStream();
  void handleGuestFrame(std::span<const uint8_t> frame);
  void queueForGuest(std::span<const uint8_t> frame);
  void flush();
  void closeStream(const char* why);
  void syncPollSet();

  // libslirp calls back into the private members through this (opaque = this).
  friend struct SlirpCallbacks;

  EventLoop& loop_;
  UniqueFd stream_;
  SlirpNetworkOptions options_;
  ::Slirp* slirp_ = nullptr;
  EventLoop::HookId hook_ = 0;
  bool hooked_ = false;
  GuestFrameHook guest_hook_;
  HostFrameHook host_hook_;
  SlirpNetworkStats stats_;

  StreamFrameReader in_;  // bytes read from QEMU, not yet whole frames
  StreamFrameWriter out_;  // frames for QEMU, not yet written
  bool want_write_ = false;
  std::vector<std::string> replies_;  // scratch for the guest hook

  // The stack's sockets: what slirp_pollfds_fill asked for this round, and
  // what the private epoll set currently watches.
  struct PollEntry {
    int fd;
    short events;
    short revents;
  };
  std::vector<PollEntry> poll_set_;
  bool poll_set_filled_ = false;
  std::unordered_map<int, uint32_t> watched_;
  UniqueFd slirp_epoll_;
};

}  // namespace microvm::net
