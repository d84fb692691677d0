#include "vsock/virtqueue.h"

#include <gtest/gtest.h>

#include "vsock/fake_guest_memory.h"

namespace microvm::vsock {
namespace {

constexpr uint16_t kNext = 1;
constexpr uint16_t kWrite = 2;
constexpr uint16_t kIndirect = 4;

// Two regions with a hole between them, as QEMU's microvm has.
class VirtqueueTest : public ::testing::Test {
 protected:
  VirtqueueTest() : memory_({{0, 0x10000}, {0x20000, 0x40000}}), ring_(memory_, 8, 0x1000, 0x2000, 0x3000) {
    queue_.configure(ring_.layout(), &memory_);
  }
  FakeGuestMemory memory_;
  FakeRing ring_;
  Virtqueue queue_;
};

TEST_F(VirtqueueTest, PopsReadableThenWritableBuffers) {
  ring_.setDesc(0, 0x4000, 44, kNext, 3);
  ring_.setDesc(3, 0x20000, 100, kNext | kWrite, 5);
  ring_.setDesc(5, 0x21000, 50, kWrite, 0);
  ring_.publish(0);
  const char text[] = "header bytes";
  memory_.write(0x4000, text, sizeof text);

  DescriptorChain chain;
  ASSERT_EQ(queue_.pop(chain), PopResult::kChain);
  EXPECT_EQ(chain.head, 0);
  ASSERT_EQ(chain.readable.size(), 1u);
  ASSERT_EQ(chain.writable.size(), 2u);
  EXPECT_EQ(chain.readable_bytes, 44u);
  EXPECT_EQ(chain.writable_bytes, 150u);
  char copy[sizeof text];
  EXPECT_EQ(readFromChain(chain, 0, copy, sizeof copy), sizeof copy);
  EXPECT_STREQ(copy, text);

  // A write spanning both writable buffers lands in both, and is logged.
  std::string data(120, 'x');
  EXPECT_EQ(writeToChain(chain, 0, data.data(), data.size(), memory_), 120u);
  EXPECT_EQ(memory_.translate(0x21000, 1)[19], 'x');
  EXPECT_EQ(memory_.translate(0x21000, 1)[20], 0);
  ASSERT_EQ(memory_.dirty.size(), 2u);
  EXPECT_EQ(memory_.dirty[1], (std::pair<uint64_t, uint64_t>{0x21000, 20}));
  // More than the chain holds is cut at its end.
  EXPECT_EQ(writeToChain(chain, 140, data.data(), data.size(), memory_), 10u);

  queue_.pushUsed(chain.head, 120);
  EXPECT_EQ(ring_.usedIndex(), 1);
  EXPECT_EQ(ring_.used(0), (std::pair<uint32_t, uint32_t>{0, 120}));
  EXPECT_EQ(queue_.pop(chain), PopResult::kEmpty);
}

TEST_F(VirtqueueTest, AddressOutsideMemoryIsMalformedAndReturned) {
  ring_.setDesc(1, 0x18000, 16, 0, 0);  // in the hole
  // (0x10000..0x20000 is not guest memory)
  ring_.publish(1);
  ring_.setDesc(2, 0xff00, 0x200, 0, 0);  // runs off the end of region one
  ring_.publish(2);
  ring_.setDesc(4, ~0ull - 8, 64, 0, 0);  // wraps around
  ring_.publish(4);
  DescriptorChain chain;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(queue_.pop(chain), PopResult::kMalformed);
  EXPECT_EQ(queue_.malformed(), 3u);
  // The guest gets its descriptors back, with nothing written.
  ASSERT_EQ(ring_.usedIndex(), 3);
  EXPECT_EQ(ring_.used(0), (std::pair<uint32_t, uint32_t>{1, 0}));
  EXPECT_EQ(ring_.used(2), (std::pair<uint32_t, uint32_t>{4, 0}));
}

TEST_F(VirtqueueTest, LoopingChainEnds) {
  ring_.setDesc(0, 0x4000, 8, kNext, 1);
  ring_.setDesc(1, 0x4000, 8, kNext, 0);
  ring_.publish(0);
  ring_.setDesc(2, 0x4000, 8, kNext, 2);  // a descriptor pointing at itself
  ring_.publish(2);
  DescriptorChain chain;
  EXPECT_EQ(queue_.pop(chain), PopResult::kMalformed);
  EXPECT_EQ(queue_.pop(chain), PopResult::kMalformed);
  EXPECT_EQ(queue_.malformed(), 2u);
}

TEST_F(VirtqueueTest, BadIndicesDirectionAndIndirectAreMalformed) {
  ring_.setDesc(0, 0x4000, 8, kNext, 8);  // next beyond the ring
  ring_.publish(0);
  ring_.setDesc(1, 0x4000, 8, kWrite | kNext, 2);  // writable before readable
  ring_.setDesc(2, 0x5000, 8, 0, 0);
  ring_.publish(1);
  ring_.setDesc(3, 0x4000, 32, kIndirect, 0);
  ring_.publish(3);
  ring_.publish(9);  // a head beyond the ring: consumed, never returned
  DescriptorChain chain;
  for (int i = 0; i < 4; ++i) EXPECT_EQ(queue_.pop(chain), PopResult::kMalformed) << i;
  EXPECT_EQ(ring_.usedIndex(), 3);
  EXPECT_EQ(queue_.pop(chain), PopResult::kEmpty);
}

TEST_F(VirtqueueTest, TooLongChainIsMalformed) {
  // 8 × 256 KiB of the same buffer: more than any packet, refused.
  for (uint16_t i = 0; i < 8; ++i) {
    ring_.setDesc(i, 0x20000, 0x40000, i < 7 ? kNext : 0, static_cast<uint16_t>(i + 1));
  }
  ring_.publish(0);
  DescriptorChain chain;
  EXPECT_EQ(queue_.pop(chain), PopResult::kMalformed);
}

TEST_F(VirtqueueTest, AvailIndexRunningAheadBreaksTheQueue) {
  ring_.setAvailIndex(100);  // more than the ring holds
  DescriptorChain chain;
  EXPECT_EQ(queue_.pop(chain), PopResult::kEmpty);
  EXPECT_TRUE(queue_.broken());
  EXPECT_FALSE(queue_.hasAvailable());
}

TEST_F(VirtqueueTest, HonoursNoInterrupt) {
  EXPECT_TRUE(queue_.shouldNotify());
  ring_.setAvailFlags(1);
  EXPECT_FALSE(queue_.shouldNotify());
}

TEST_F(VirtqueueTest, RestartsFromSavedIndices) {
  ring_.setDesc(0, 0x4000, 8, 0, 0);
  ring_.publish(0);
  ring_.publish(0);
  DescriptorChain chain;
  ASSERT_EQ(queue_.pop(chain), PopResult::kChain);
  queue_.pushUsed(chain.head, 0);
  // As after GET_VRING_BASE / SET_VRING_BASE: a new queue picks up both.
  Virtqueue again;
  again.configure(ring_.layout(), &memory_);
  again.setNextAvail(queue_.nextAvail());
  ASSERT_EQ(again.pop(chain), PopResult::kChain);
  again.pushUsed(chain.head, 0);
  EXPECT_EQ(ring_.usedIndex(), 2);
  EXPECT_EQ(again.pop(chain), PopResult::kEmpty);
}

}  // namespace
}  // namespace microvm::vsock
