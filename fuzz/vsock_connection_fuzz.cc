// Fuzzes established vsock connections as a hostile guest and a busy host
// drive them. Each input starts from the muxer with two connections up to
// real host unix sockets: one the guest opened (REQUEST to port 5000, a
// listening socket here), one the host opened ("CONNECT 200" on the base
// socket, answered by the guest). The input is then a script of guest
// packets (RW, CREDIT_UPDATE, CREDIT_REQUEST, SHUTDOWN, RST, stray
// REQUEST/RESPONSE, raw headers), host writes, reads, half-closes and
// closes, loop turns, and the guest taking RX packets.
//
// Besides crashes and sanitizer reports it checks what the muxer promises:
// - the guest never has more bytes in flight than the credit it advertised
//   last (buf_alloc, fwd_cnt);
// - what the guest receives on a connection is what the host wrote, in
//   order, and what the host reads is what the guest sent;
// - the muxer holds no more than its bound (see vsock_muxer.h).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "base/temp_dir.h"
#include "base/unix_socket.h"
#include "fuzz/fuzz_input.h"
#include "vsock/vsock_muxer.h"

namespace {

using namespace microvm::vsock;
using microvm::UniqueFd;

constexpr uint64_t kGuestCid = 3;
constexpr uint32_t kBufAlloc = 16 * 1024;  // small, so that guests can overrun it
constexpr size_t kMaxControl = 64;
constexpr uint32_t kServerPort = 5000;

[[noreturn]] void fail(const char* what) {
  (void)std::fprintf(stderr, "vsock_connection_fuzz: %s\n", what);
  std::abort();
}

// Byte i of a stream: the content checks compare positions, not just sizes.
char streamByte(uint64_t i, uint8_t salt) { return static_cast<char>((i * 131u) ^ (i >> 9) ^ salt); }

using microvm::fuzz::Input;

// One connection as the guest and the host test code see it.
struct Stream {
  uint32_t host_port = 0;
  uint32_t guest_port = 0;
  UniqueFd host;  // the host's end (nonblocking)
  bool tracked = true;    // false once stray packets made the muxer's state unknowable
  // guest side
  uint32_t buf_alloc = 64 * 1024;  // what the guest advertises
  uint32_t fwd_cnt = 0;            // what it says it consumed
  uint32_t sent_buf_alloc = 0;     // the last values the muxer saw
  uint32_t sent_fwd_cnt = 0;
  uint32_t rx_cnt = 0;             // RW bytes received
  uint64_t guest_sent = 0;         // RW bytes the guest sent (stream positions)
  // host side
  uint64_t host_written = 0;
  uint64_t host_read = 0;
  bool host_closed = false;
};

struct Fixture {
  std::optional<microvm::TempDir> dir;
  UniqueFd server;  // guest connections to port 5000 land here
  Fixture() {
    auto made = microvm::TempDir::create("vsock-connection-fuzz");
    if (!made) fail("temp dir");
    dir.emplace(std::move(*made));
    auto listener = microvm::listenUnix(dir->path() / ("v.sock_" + std::to_string(kServerPort)), 64, SOCK_NONBLOCK);
    if (!listener) fail("listen");
    server = std::move(*listener);
  }
};

class Session {
 public:
  Session(Fixture& fixture, microvm::EventLoop& loop) : fixture_(fixture), loop_(loop) {}

  bool start() {
    MuxerConfig config;
    config.guest_cid = kGuestCid;
    config.base = fixture_.dir->path() / "v.sock";
    config.buf_alloc = kBufAlloc;
    config.max_control = kMaxControl;
    auto muxer = VsockMuxer::create(loop_, config, [] {});
    if (!muxer) fail("muxer");
    muxer_ = std::move(*muxer);

    // The guest connects to port 5000.
    streams_[0].host_port = kServerPort;
    streams_[0].guest_port = 100;
    send(streams_[0], Op::kRequest, {});
    PacketHeader header;
    std::string payload;
    if (!muxer_->takeRx(4096, header, payload) || header.op != static_cast<uint16_t>(Op::kResponse)) return false;
    streams_[0].host.reset(::accept4(fixture_.server.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!streams_[0].host.valid()) return false;

    // The host connects to the guest's port 200.
    auto client = microvm::connectUnix(config.base, SOCK_NONBLOCK);
    if (!client) return false;
    streams_[1].host = std::move(*client);
    streams_[1].guest_port = 200;
    if (::write(streams_[1].host.get(), "CONNECT 200\n", 12) != 12) return false;
    for (int i = 0; i < 8 && !muxer_->hasRx(); ++i) (void)loop_.runOnce(std::chrono::milliseconds(0));
    if (!muxer_->takeRx(4096, header, payload) || header.op != static_cast<uint16_t>(Op::kRequest)) return false;
    streams_[1].host_port = header.src_port;
    send(streams_[1], Op::kResponse, {});
    std::string ok = "OK " + std::to_string(header.src_port) + "\n";
    std::string line(ok.size(), '\0');
    if (::read(streams_[1].host.get(), line.data(), line.size()) != static_cast<ssize_t>(ok.size()) || line != ok) {
      fail("no OK line for an accepted CONNECT");
    }
    return true;
  }

  void run(Input& input) {
    for (int step = 0; step < 4096 && !input.empty(); ++step) {
      uint8_t op = input.byte();
      Stream& stream = streams_[op >> 7];
      switch (op & 0x0f) {
        case 0: guestWrite(stream, input.u16()); break;
        case 1: {
          // Mostly honest: everything received was consumed.
          uint8_t mode = input.byte();
          stream.fwd_cnt = mode < 200 ? stream.rx_cnt : input.u32();
          send(stream, Op::kCreditUpdate, {});
          break;
        }
        case 2: send(stream, Op::kCreditRequest, {}); break;
        case 3: send(stream, Op::kShutdown, {}, input.byte() & 3); break;
        case 4:
          send(stream, Op::kRst, {});
          stream.tracked = false;
          break;
        case 5:
          // A second REQUEST, or a RESPONSE to nothing asked.
          stream.tracked = false;
          send(stream, (input.byte() & 1) != 0 ? Op::kRequest : Op::kResponse, {});
          break;
        case 6: hostWrite(stream, input.u16()); break;
        case 7: hostRead(stream, input.u16()); break;
        case 8:
          if ((input.byte() & 1) != 0) {
            ::shutdown(stream.host.get(), SHUT_WR);
          } else {
            stream.host.reset();
            stream.host_closed = true;
          }
          break;
        case 9:
          for (int i = input.byte() % 4; i >= 0; --i) (void)loop_.runOnce(std::chrono::milliseconds(0));
          break;
        case 10: {
          int count = input.byte() % 64;
          uint32_t room = input.u16();
          takeRx(count, room);
          break;
        }
        case 11: stream.buf_alloc = input.u32(); break;
        case 12: rawPacket(input); break;
        default: (void)loop_.runOnce(std::chrono::milliseconds(0)); break;
      }
      checkBound();
    }
    // Whatever is left: the loop and RX once more, still checked.
    for (int i = 0; i < 4; ++i) (void)loop_.runOnce(std::chrono::milliseconds(0));
    takeRx(1024, kMaxPayload);
    checkBound();
  }

 private:
  void send(Stream& stream, Op op, std::string_view payload, uint32_t flags = 0) {
    PacketHeader header;
    header.src_cid = kGuestCid;
    header.dst_cid = kHostCid;
    header.src_port = stream.guest_port;
    header.dst_port = stream.host_port;
    header.op = static_cast<uint16_t>(op);
    header.len = static_cast<uint32_t>(payload.size());
    header.flags = flags;
    header.buf_alloc = stream.buf_alloc;
    header.fwd_cnt = stream.fwd_cnt;
    stream.sent_buf_alloc = stream.buf_alloc;
    stream.sent_fwd_cnt = stream.fwd_cnt;
    muxer_->onGuestPacket(header, payload);
  }

  void guestWrite(Stream& stream, uint16_t length) {
    std::string payload(length, '\0');
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = streamByte(stream.guest_sent + i, 0x5a);
    send(stream, Op::kRw, payload);
    stream.guest_sent += payload.size();
  }

  void hostWrite(Stream& stream, uint16_t length) {
    if (!stream.host.valid()) return;
    std::string data(length, '\0');
    for (size_t i = 0; i < data.size(); ++i) data[i] = streamByte(stream.host_written + i, 0xa5);
    ssize_t wrote = ::send(stream.host.get(), data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (wrote > 0) stream.host_written += static_cast<uint64_t>(wrote);
  }

  void hostRead(Stream& stream, uint16_t length) {
    if (!stream.host.valid() || length == 0) return;
    std::string data(length, '\0');
    ssize_t got = ::recv(stream.host.get(), data.data(), data.size(), MSG_DONTWAIT);
    for (ssize_t i = 0; i < got; ++i) {
      // The host reads exactly the guest's stream (RW packets the muxer
      // refused end the connection, so nothing after them arrives).
      if (data[static_cast<size_t>(i)] != streamByte(stream.host_read + static_cast<uint64_t>(i), 0x5a)) {
        fail("the host read bytes the guest did not send in that order");
      }
    }
    if (got > 0) stream.host_read += static_cast<uint64_t>(got);
    if (stream.host_read > stream.guest_sent) fail("the host read more than the guest sent");
  }

  void takeRx(int count, uint32_t room) {
    PacketHeader header;
    std::string payload;
    for (int i = 0; i < count && muxer_->takeRx(room, header, payload); ++i) {
      if (header.src_cid != kHostCid || header.dst_cid != kGuestCid) fail("RX packet with wrong CIDs");
      if (payload.size() > room) fail("RX payload larger than the buffer offered");
      for (Stream& stream : streams_) {
        if (header.src_port != stream.host_port || header.dst_port != stream.guest_port) continue;
        if (header.op == static_cast<uint16_t>(Op::kRst)) stream.tracked = false;
        if (header.op != static_cast<uint16_t>(Op::kRw)) continue;
        if (!stream.tracked) continue;
        if (header.len != payload.size()) fail("RX header length differs from its payload");
        for (size_t j = 0; j < payload.size(); ++j) {
          if (payload[j] != streamByte(stream.rx_cnt + j, 0xa5)) fail("the guest got bytes the host did not write");
        }
        stream.rx_cnt += static_cast<uint32_t>(payload.size());
        if (stream.rx_cnt > stream.host_written) fail("the guest got more than the host wrote");
        // The muxer may only have sent what the credit the guest advertised
        // last allowed.
        if (stream.rx_cnt - stream.sent_fwd_cnt > stream.sent_buf_alloc) fail("the muxer overran the guest's credit");
      }
    }
  }

  // A header with fields from the input, on a tracked connection's ports or not.
  void rawPacket(Input& input) {
    PacketHeader header;
    header.src_cid = (input.byte() & 1) != 0 ? kGuestCid : input.u32();
    header.dst_cid = kHostCid;
    Stream& stream = streams_[input.byte() & 1];
    header.src_port = stream.guest_port;
    header.dst_port = (input.byte() & 1) != 0 ? stream.host_port : input.u32();
    header.type = (input.byte() & 1) != 0 ? kTypeStream : input.u16();
    header.op = input.u16();
    header.flags = input.u32();
    header.buf_alloc = input.u32();
    header.fwd_cnt = input.u32();
    std::string payload(input.byte(), 'r');
    header.len = (input.byte() & 1) != 0 ? static_cast<uint32_t>(payload.size()) : input.u32();
    stream.tracked = false;
    muxer_->onGuestPacket(header, payload);
  }

  // Raw packets may open more connections than the two set up.
  void checkBound() {
    size_t bound = muxer_->connectionCount() * (kBufAlloc + kMaxStagedForGuest) + kMaxControl * sizeof(PacketHeader) + 64;
    if (muxer_->bufferedBytes() > bound) fail("the muxer holds more than its bound");
  }

  Fixture& fixture_;
  microvm::EventLoop& loop_;
  std::unique_ptr<VsockMuxer> muxer_;
  Stream streams_[2];
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {  // NOLINT(readability-identifier-naming)
  static Fixture fixture;
  auto loop = microvm::EventLoop::create();
  if (!loop) fail("event loop");
  {
    Session session(fixture, *loop);
    if (!session.start()) fail("could not establish the connections");
    Input input(data, size);
    session.run(input);
  }
  // Connections the guest re-requested wait in the backlog: drop them.
  while (UniqueFd(::accept4(fixture.server.get(), nullptr, nullptr, SOCK_CLOEXEC)).valid()) {
  }
  return 0;
}
