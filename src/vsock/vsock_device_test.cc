// The device's TX and RX halves over fake guest memory: packets travel
// through real descriptor chains to the muxer and back.
#include "vsock/vsock_device.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "base/temp_dir.h"
#include "vsock/fake_guest_memory.h"

namespace microvm::vsock {
namespace {

constexpr uint16_t kNext = 1;
constexpr uint16_t kWrite = 2;

TEST(VsockDataPath, RequestOverTxIsAnsweredOverRx) {
  auto dir = TempDir::create("vsock-device");
  ASSERT_TRUE(dir);
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  MuxerConfig config;
  config.base = dir->path() / "v.sock";
  auto muxer = VsockMuxer::create(*loop, config, [] {});
  ASSERT_TRUE(muxer);

  UniqueFd server(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strcpy(address.sun_path, (dir->path() / "v.sock_4000").c_str());
  // SAFETY: sockaddr_un is the sockaddr variant for AF_UNIX.
  ASSERT_EQ(::bind(server.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(server.get(), 4), 0);

  FakeGuestMemory memory({{0, 0x20000}});
  FakeRing tx(memory, 16, 0x1000, 0x2000, 0x3000);
  FakeRing rx(memory, 16, 0x4000, 0x5000, 0x6000);
  Virtqueue tx_queue, rx_queue;
  tx_queue.configure(tx.layout(), &memory);
  rx_queue.configure(rx.layout(), &memory);

  // REQUEST, then RW with its payload split over two more descriptors.
  PacketHeader header;
  header.src_cid = 3;
  header.dst_cid = kHostCid;
  header.src_port = 777;
  header.dst_port = 4000;
  header.op = static_cast<uint16_t>(Op::kRequest);
  header.buf_alloc = 65536;
  uint8_t raw[kHeaderSize];
  encodeHeader(header, raw);
  memory.write(0x8000, raw, sizeof raw);
  tx.setDesc(0, 0x8000, kHeaderSize, 0, 0);
  tx.publish(0);
  header.op = static_cast<uint16_t>(Op::kRw);
  header.len = 11;
  encodeHeader(header, raw);
  memory.write(0x9000, raw, sizeof raw);
  memory.write(0x9100, "hello", 5);
  memory.write(0x9200, " world", 6);
  tx.setDesc(1, 0x9000, kHeaderSize, kNext, 2);
  tx.setDesc(2, 0x9100, 5, kNext, 3);
  tx.setDesc(3, 0x9200, 6, 0, 0);
  tx.publish(1);
  // A packet whose length claims more than its chain holds is dropped.
  header.len = 1000;
  encodeHeader(header, raw);
  memory.write(0xa000, raw, sizeof raw);
  tx.setDesc(4, 0xa000, kHeaderSize + 10, 0, 0);
  tx.publish(4);

  uint64_t malformed = 0;
  EXPECT_EQ(processTx(tx_queue, **muxer, malformed), 3u);
  EXPECT_EQ(malformed, 1u);
  EXPECT_EQ(tx.usedIndex(), 3);

  UniqueFd host(::accept(server.get(), nullptr, nullptr));
  char got[32] = {};
  EXPECT_EQ(::read(host.get(), got, sizeof got), 11);
  EXPECT_STREQ(got, "hello world");

  // The RESPONSE lands in the guest's RX buffer (header and payload in
  // separate descriptors, as Linux offers them).
  rx.setDesc(0, 0xc000, kHeaderSize, kNext | kWrite, 1);
  rx.setDesc(1, 0xd000, 4096, kWrite, 0);
  rx.publish(0);
  EXPECT_EQ(processRx(rx_queue, memory, **muxer), 1u);
  ASSERT_EQ(rx.usedIndex(), 1);
  EXPECT_EQ(rx.used(0).second, kHeaderSize);
  memory.read(0xc000, raw, sizeof raw);
  PacketHeader answer;
  ASSERT_TRUE(decodeHeader({reinterpret_cast<char*>(raw), kHeaderSize}, answer));
  EXPECT_EQ(answer.op, static_cast<uint16_t>(Op::kResponse));
  EXPECT_EQ(answer.dst_port, 777u);
  EXPECT_EQ(answer.dst_cid, 3u);
  EXPECT_FALSE(memory.dirty.empty()) << "writes to guest memory are reported for migration";

  // Host data comes back as RW once the loop has read it.
  ASSERT_EQ(::write(host.get(), "reply", 5), 5);
  for (int i = 0; i < 5 && !(*muxer)->hasRx(); ++i) (void)loop->runOnce(std::chrono::milliseconds(20));
  rx.setDesc(2, 0xe000, 4096, kWrite, 0);
  rx.publish(2);
  EXPECT_EQ(processRx(rx_queue, memory, **muxer), 1u);
  EXPECT_EQ(rx.used(1).second, kHeaderSize + 5);
  char payload[6] = {};
  memory.read(0xe000 + kHeaderSize, payload, 5);
  EXPECT_STREQ(payload, "reply");
}

// A guest that floods TX and never offers an RX buffer: every packet is for
// no connection and wants an RST back. The runner's memory stays bounded
// however long it goes on, and the device keeps serving.
TEST(VsockDataPath, TxFloodWithoutRxBuffersStaysBounded) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  MuxerConfig config;
  auto muxer = VsockMuxer::create(*loop, config, [] {});
  ASSERT_TRUE(muxer);

  constexpr uint16_t kRing = 256;
  FakeGuestMemory memory({{0, 0x20000}});
  FakeRing tx(memory, kRing, 0x1000, 0x3000, 0x4000);
  FakeRing rx(memory, 16, 0x6000, 0x7000, 0x8000);
  Virtqueue tx_queue, rx_queue;
  tx_queue.configure(tx.layout(), &memory);
  rx_queue.configure(rx.layout(), &memory);
  for (uint16_t i = 0; i < kRing; ++i) tx.setDesc(i, 0x10000 + 64ull * i, kHeaderSize, 0, 0);

  uint64_t malformed = 0;
  uint32_t port = 0;
  for (int round = 0; round < 400; ++round) {
    for (uint16_t i = 0; i < kRing; ++i) {
      PacketHeader header;
      header.src_cid = 3;
      header.dst_cid = kHostCid;
      header.src_port = ++port;
      header.dst_port = 9999;
      header.op = static_cast<uint16_t>(Op::kCreditRequest);
      uint8_t raw[kHeaderSize];
      encodeHeader(header, raw);
      memory.write(0x10000 + 64ull * i, raw, sizeof raw);
      tx.publish(i);
    }
    ASSERT_EQ(processTx(tx_queue, **muxer, malformed), kRing);
    EXPECT_EQ(processRx(rx_queue, memory, **muxer), 0u) << "no RX buffer was offered";
  }
  EXPECT_EQ(malformed, 0u);
  EXPECT_EQ((*muxer)->stats().unknown_connection, 400u * kRing);
  EXPECT_LE((*muxer)->bufferedBytes(), config.max_control / 2 * sizeof(PacketHeader));
  EXPECT_GT((*muxer)->stats().control_dropped, 0u);

  // The guest offers RX buffers at last: the answers that were kept arrive.
  size_t answers = 0;
  for (int round = 0; round < 1000 && (*muxer)->hasRx(); ++round) {
    for (uint16_t i = 0; i < 16; ++i) {
      rx.setDesc(i, 0x9000 + 0x100ull * i, kHeaderSize, kWrite, 0);
      rx.publish(i);
    }
    answers += processRx(rx_queue, memory, **muxer);
  }
  EXPECT_EQ(answers, config.max_control / 2);
}

}  // namespace
}  // namespace microvm::vsock
