#include "vsock/vsock_muxer.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "base/temp_dir.h"

namespace microvm::vsock {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

constexpr uint64_t kGuestCid = 3;

struct Received {
  PacketHeader header;
  std::string payload;
};

UniqueFd listenAt(const fs::path& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strcpy(address.sun_path, path.c_str());
  // SAFETY: sockaddr_un is the sockaddr variant for AF_UNIX.
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(::listen(fd.get(), 8), 0);
  return fd;
}

UniqueFd connectTo(const fs::path& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strcpy(address.sun_path, path.c_str());
  // SAFETY: sockaddr_un is the sockaddr variant for AF_UNIX.
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  return fd;
}

// Reads what is there within `wait` (empty on EOF or nothing).
std::string readSome(int fd, milliseconds wait = milliseconds(500)) {
  timeval limit{0, static_cast<suseconds_t>(wait.count() * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  char buffer[65536];
  ssize_t got = ::read(fd, buffer, sizeof buffer);
  return got > 0 ? std::string(buffer, static_cast<size_t>(got)) : std::string();
}

// Plays the guest: sends packets to the muxer and collects its answers.
class MuxerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::create("vsock-muxer");
    ASSERT_TRUE(dir);
    dir_.emplace(std::move(*dir));
    auto loop = EventLoop::create();
    ASSERT_TRUE(loop);
    loop_.emplace(std::move(*loop));
  }

  void start(std::vector<PortMapping> ports = {}, uint32_t buf_alloc = 64 * 1024, size_t max_control = 8192) {
    MuxerConfig config;
    config.guest_cid = kGuestCid;
    config.base = dir_->path() / "v.sock";
    config.ports = std::move(ports);
    config.buf_alloc = buf_alloc;
    config.connect_timeout = milliseconds(300);
    config.max_control = max_control;
    auto muxer = VsockMuxer::create(*loop_, config, [] {});
    ASSERT_TRUE(muxer) << muxer.error().message();
    muxer_ = std::move(*muxer);
  }

  void send(Op op, uint32_t host_port, uint32_t guest_port, std::string_view payload = {}, uint32_t flags = 0) {
    PacketHeader header;
    header.src_cid = kGuestCid;
    header.dst_cid = kHostCid;
    header.src_port = guest_port;
    header.dst_port = host_port;
    header.op = static_cast<uint16_t>(op);
    header.len = static_cast<uint32_t>(payload.size());
    header.flags = flags;
    header.buf_alloc = guest_buf_alloc_;
    header.fwd_cnt = guest_fwd_cnt_;
    muxer_->onGuestPacket(header, payload);
  }

  // Runs the loop for a while and takes everything meant for the guest.
  std::vector<Received> pump(milliseconds wait = milliseconds(50)) {
    for (int i = 0; i < 5; ++i) (void)loop_->runOnce(milliseconds(wait.count() / 5));
    std::vector<Received> out;
    Received packet;
    while (muxer_->takeRx(4096, packet.header, packet.payload)) out.push_back(packet);
    return out;
  }

  static size_t count(const std::vector<Received>& packets, Op op) {
    size_t n = 0;
    for (const auto& packet : packets) n += packet.header.op == static_cast<uint16_t>(op);
    return n;
  }

  std::optional<TempDir> dir_;
  std::optional<EventLoop> loop_;
  std::unique_ptr<VsockMuxer> muxer_;
  uint32_t guest_buf_alloc_ = 64 * 1024;
  uint32_t guest_fwd_cnt_ = 0;
};

TEST_F(MuxerTest, GuestConnectsToMappedPortAndBaseUnderscorePort) {
  fs::path mapped = dir_->path() / "mapped.sock";
  start({{5000, mapped, false}});
  UniqueFd mapped_server = listenAt(mapped);
  UniqueFd base_server = listenAt(dir_->path() / "v.sock_5001");

  send(Op::kRequest, 5000, 1111);
  send(Op::kRequest, 5001, 2222);
  auto packets = pump();
  ASSERT_EQ(count(packets, Op::kResponse), 2u);
  EXPECT_EQ(packets[0].header.dst_port, 1111u);
  EXPECT_EQ(packets[0].header.src_port, 5000u);
  EXPECT_EQ(packets[0].header.dst_cid, kGuestCid);

  UniqueFd a(::accept(mapped_server.get(), nullptr, nullptr));
  UniqueFd b(::accept(base_server.get(), nullptr, nullptr));
  send(Op::kRw, 5000, 1111, "to mapped");
  send(Op::kRw, 5001, 2222, "to base");
  EXPECT_EQ(readSome(a.get()), "to mapped");
  EXPECT_EQ(readSome(b.get()), "to base");

  ASSERT_EQ(::write(a.get(), "back", 4), 4);
  packets = pump();
  ASSERT_EQ(count(packets, Op::kRw), 1u);
  EXPECT_EQ(packets[0].payload, "back");
  EXPECT_EQ(packets[0].header.dst_port, 1111u);
}

TEST_F(MuxerTest, ConnectToMissingServerIsReset) {
  start();
  send(Op::kRequest, 6000, 1234);
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, static_cast<uint16_t>(Op::kRst));
  EXPECT_EQ(muxer_->connectionCount(), 0u);
  // Data for a connection that does not exist is answered with RST, RST is not.
  send(Op::kRw, 6000, 1234, "x");
  send(Op::kRst, 6000, 1234);
  packets = pump();
  EXPECT_EQ(packets.size(), 1u);
  EXPECT_EQ(muxer_->stats().unknown_connection, 2u);
}

TEST_F(MuxerTest, NeverExceedsGuestCreditAndResumesOnCreditUpdate) {
  start();
  UniqueFd server = listenAt(dir_->path() / "v.sock_7000");
  guest_buf_alloc_ = 10000;
  send(Op::kRequest, 7000, 50);
  pump();
  UniqueFd host(::accept(server.get(), nullptr, nullptr));
  std::string big(100000, 'z');
  ASSERT_EQ(::send(host.get(), big.data(), big.size(), MSG_DONTWAIT), static_cast<ssize_t>(big.size()));

  size_t received = 0;
  for (int i = 0; i < 5; ++i) {
    for (const auto& packet : pump()) received += packet.payload.size();
  }
  EXPECT_EQ(received, 10000u) << "the guest's whole credit and not one byte more";

  // The guest consumed 6000 bytes: exactly that much more may come.
  guest_fwd_cnt_ = 6000;
  send(Op::kCreditUpdate, 7000, 50);
  for (int i = 0; i < 5; ++i) {
    for (const auto& packet : pump()) received += packet.payload.size();
  }
  EXPECT_EQ(received, 16000u);

  // And everything arrives as credit keeps coming back.
  for (int round = 0; round < 100 && received < big.size(); ++round) {
    guest_fwd_cnt_ = static_cast<uint32_t>(received);
    send(Op::kCreditUpdate, 7000, 50);
    for (const auto& packet : pump(milliseconds(10))) received += packet.payload.size();
  }
  EXPECT_EQ(received, big.size());
}

TEST_F(MuxerTest, GuestOverrunningOurCreditIsReset) {
  start({}, /*buf_alloc=*/8192);
  UniqueFd server = listenAt(dir_->path() / "v.sock_7001");
  send(Op::kRequest, 7001, 51);
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.buf_alloc, 8192u);
  // Until the guest hears of freed space (no packet reaches it here), it
  // may have 8 KiB in flight and not one byte more.
  std::string chunk(4096, 'q');
  send(Op::kRw, 7001, 51, chunk);
  send(Op::kRw, 7001, 51, chunk);
  EXPECT_EQ(muxer_->stats().credit_violations, 0u);
  for (int i = 0; i < 200 && muxer_->stats().credit_violations == 0; ++i) send(Op::kRw, 7001, 51, chunk);
  EXPECT_EQ(muxer_->stats().credit_violations, 1u);
  EXPECT_EQ(muxer_->connectionCount(), 0u);
  packets = pump();
  EXPECT_GE(count(packets, Op::kRst), 1u);
}

TEST_F(MuxerTest, HalfCloseBothWaysThenReset) {
  start();
  UniqueFd server = listenAt(dir_->path() / "v.sock_7002");
  send(Op::kRequest, 7002, 52);
  pump();
  UniqueFd host(::accept(server.get(), nullptr, nullptr));

  // Host stops writing: the guest hears SHUTDOWN(SEND) but may still talk.
  ASSERT_EQ(::write(host.get(), "last words", 10), 10);
  ASSERT_EQ(::shutdown(host.get(), SHUT_WR), 0);
  auto packets = pump();
  ASSERT_EQ(packets.size(), 2u);
  EXPECT_EQ(packets[0].payload, "last words");
  EXPECT_EQ(packets[1].header.op, static_cast<uint16_t>(Op::kShutdown));
  EXPECT_EQ(packets[1].header.flags, kShutdownSend);
  send(Op::kRw, 7002, 52, "answer");
  EXPECT_EQ(readSome(host.get()), "answer");

  // Guest stops writing too: the host reads EOF, and the connection ends
  // with an RST to the guest.
  send(Op::kShutdown, 7002, 52, {}, kShutdownSend);
  EXPECT_EQ(readSome(host.get()), "");
  packets = pump();
  EXPECT_EQ(count(packets, Op::kRst), 1u);
  EXPECT_EQ(muxer_->connectionCount(), 0u);
}

TEST_F(MuxerTest, GuestCloseAndResetCloseTheHostSocket) {
  start();
  UniqueFd server = listenAt(dir_->path() / "v.sock_7003");
  send(Op::kRequest, 7003, 53);
  send(Op::kRequest, 7003, 54);
  pump();
  UniqueFd first(::accept(server.get(), nullptr, nullptr));
  UniqueFd second(::accept(server.get(), nullptr, nullptr));

  send(Op::kRw, 7003, 53, "bye");
  send(Op::kShutdown, 7003, 53, {}, kShutdownSend | kShutdownRcv);  // close()
  EXPECT_EQ(readSome(first.get()), "bye");
  EXPECT_EQ(readSome(first.get()), "");  // EOF
  auto packets = pump();
  EXPECT_EQ(count(packets, Op::kRst), 1u) << "Linux waits for an RST to finish close()";

  send(Op::kRst, 7003, 54);
  EXPECT_EQ(readSome(second.get()), "");
  EXPECT_EQ(muxer_->connectionCount(), 0u);
}

TEST_F(MuxerTest, HostConnectLineGetsOkOnceGuestAccepts) {
  start();
  UniqueFd client = connectTo(dir_->path() / "v.sock");
  ASSERT_EQ(::write(client.get(), "CONNECT 1024\n", 13), 13);
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, static_cast<uint16_t>(Op::kRequest));
  EXPECT_EQ(packets[0].header.dst_port, 1024u);
  uint32_t host_port = packets[0].header.src_port;

  send(Op::kResponse, host_port, 1024);
  EXPECT_EQ(readSome(client.get()), "OK " + std::to_string(host_port) + "\n");
  ASSERT_EQ(::write(client.get(), "ping", 4), 4);
  packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].payload, "ping");
  send(Op::kRw, host_port, 1024, "pong");
  EXPECT_EQ(readSome(client.get()), "pong");
}

TEST_F(MuxerTest, HostConnectRefusedMalformedOrUnansweredIsClosed) {
  start();
  UniqueFd refused = connectTo(dir_->path() / "v.sock");
  ASSERT_EQ(::write(refused.get(), "CONNECT 9\n", 10), 10);
  UniqueFd garbage = connectTo(dir_->path() / "v.sock");
  ASSERT_EQ(::write(garbage.get(), "HELLO 9\n", 8), 8);
  UniqueFd ignored = connectTo(dir_->path() / "v.sock");
  ASSERT_EQ(::write(ignored.get(), "CONNECT 10\n", 11), 11);
  auto packets = pump();
  ASSERT_EQ(count(packets, Op::kRequest), 2u);
  for (const auto& packet : packets) {
    if (packet.header.dst_port == 9) send(Op::kRst, packet.header.src_port, 9);
  }
  EXPECT_EQ(readSome(refused.get()), "");
  EXPECT_EQ(readSome(garbage.get()), "");
  // The unanswered one times out (300 ms here) and the guest gets an RST.
  packets = pump(milliseconds(500));
  EXPECT_EQ(count(packets, Op::kRst), 1u);
  EXPECT_EQ(readSome(ignored.get()), "");
  EXPECT_EQ(muxer_->connectionCount(), 0u);
}

TEST_F(MuxerTest, ListenMappingForwardsWithoutHandshake) {
  fs::path listen_path = dir_->path() / "listen.sock";
  start({{8000, listen_path, true}});
  UniqueFd client = connectTo(listen_path);
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, static_cast<uint16_t>(Op::kRequest));
  EXPECT_EQ(packets[0].header.dst_port, 8000u);
  send(Op::kResponse, packets[0].header.src_port, 8000);
  send(Op::kRw, packets[0].header.src_port, 8000, "direct");
  EXPECT_EQ(readSome(client.get()), "direct");
}

TEST_F(MuxerTest, MalformedPacketsAreCountedNotFatal) {
  start();
  PacketHeader header;
  header.src_cid = 99;  // not the guest
  header.dst_cid = kHostCid;
  header.op = static_cast<uint16_t>(Op::kRequest);
  muxer_->onGuestPacket(header, {});
  header.src_cid = kGuestCid;
  header.len = 5;  // does not match the payload
  muxer_->onGuestPacket(header, "abc");
  header.len = 0;
  header.op = 77;  // unknown op: answered with RST
  muxer_->onGuestPacket(header, {});
  header.op = static_cast<uint16_t>(Op::kRequest);
  header.type = 2;  // SEQPACKET, not offered
  muxer_->onGuestPacket(header, {});
  EXPECT_EQ(muxer_->stats().malformed_packets, 4u);
  auto packets = pump();
  EXPECT_EQ(count(packets, Op::kRst), 2u);
}

// A guest may advertise 4 GiB of buffer and then take nothing: the runner
// must not read the host side into memory on its behalf.
TEST_F(MuxerTest, HostDataForAGuestThatTakesNothingStaysInTheHostSocket) {
  start();
  UniqueFd server = listenAt(dir_->path() / "v.sock_7004");
  guest_buf_alloc_ = 0xffffffff;
  send(Op::kRequest, 7004, 60);
  ASSERT_EQ(count(pump(), Op::kResponse), 1u);
  UniqueFd host(::accept4(server.get(), nullptr, nullptr, SOCK_NONBLOCK));
  ASSERT_TRUE(host.valid());

  // The host writes as fast as it can for up to 64 MiB; the muxer runs but
  // the guest takes no packet.
  std::string chunk(64 * 1024, '\0');
  for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>(i * 7);
  size_t written = 0;
  int stalled = 0;  // turns in a row in which the socket took nothing
  for (int i = 0; i < 4000 && stalled < 50 && written < (64u << 20); ++i) {
    ssize_t n = ::send(host.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
    stalled = n > 0 ? 0 : stalled + 1;
    if (n > 0) written += static_cast<size_t>(n);
    (void)loop_->runOnce(milliseconds(0));
  }
  EXPECT_LE(muxer_->bufferedBytes(), kMaxStagedForGuest);
  // What is not staged waits in the socket buffers (a few hundred KiB).
  EXPECT_LT(written, 4u << 20) << "the muxer read the host socket into memory";

  // Nothing is lost: once the guest takes packets, everything arrives in order.
  std::string received;
  for (int round = 0; round < 2000 && received.size() < written; ++round) {
    for (const auto& packet : pump(milliseconds(1))) received += packet.payload;
  }
  ASSERT_EQ(received.size(), written);
  for (size_t i = 0; i < received.size(); ++i) {
    ASSERT_EQ(received[i], chunk[i % chunk.size()]) << "at byte " << i;
  }
}

// Every packet for no connection is answered with an RST; a guest that
// sends them without taking the answers gets only half the queue's worth.
TEST_F(MuxerTest, RstsForAGuestThatTakesNothingAreBounded) {
  start({}, 64 * 1024, /*max_control=*/64);
  for (uint32_t i = 0; i < 10000; ++i) send(Op::kRw, 7100, i, "x");
  EXPECT_EQ(muxer_->stats().unknown_connection, 10000u);
  EXPECT_EQ(muxer_->stats().control_dropped, 10000u - 32u);
  EXPECT_LE(muxer_->bufferedBytes(), 64 * sizeof(PacketHeader));
  EXPECT_EQ(pump().size(), 32u);
  // With the queue drained, answers flow again.
  send(Op::kRw, 7100, 1, "x");
  EXPECT_EQ(count(pump(), Op::kRst), 1u);
}

// Connections that come and go (REQUEST, then RST) each leave a RESPONSE
// behind: a guest that never takes them fills the queue, and then loses
// every connection, while the runner carries on.
TEST_F(MuxerTest, ControlQueueOverflowClosesTheGuestsConnectionsAndTheMuxerCarriesOn) {
  start({}, 64 * 1024, /*max_control=*/64);
  UniqueFd server = listenAt(dir_->path() / "v.sock_7005");
  send(Op::kRequest, 7005, 1);
  ASSERT_EQ(count(pump(), Op::kResponse), 1u);
  UniqueFd established(::accept(server.get(), nullptr, nullptr));
  ASSERT_TRUE(established.valid());

  ASSERT_EQ(::fcntl(server.get(), F_SETFL, O_NONBLOCK), 0);
  for (uint32_t port = 2; port < 2000 && muxer_->stats().control_overflows == 0; ++port) {
    send(Op::kRequest, 7005, port);
    send(Op::kRst, 7005, port);
    while (UniqueFd(::accept(server.get(), nullptr, nullptr)).valid()) {
    }
  }
  EXPECT_EQ(muxer_->stats().control_overflows, 1u);
  EXPECT_EQ(muxer_->connectionCount(), 0u);
  EXPECT_LE(muxer_->bufferedBytes(), 64 * sizeof(PacketHeader));
  EXPECT_EQ(readSome(established.get()), "") << "the host side sees the connection end";

  // The guest that takes its packets again can connect again.
  send(Op::kRequest, 7005, 5000);
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, static_cast<uint16_t>(Op::kResponse));
  EXPECT_EQ(packets[0].header.dst_port, 5000u);
}

}  // namespace
}  // namespace microvm::vsock
