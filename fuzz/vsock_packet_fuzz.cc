// Fuzzes the vsock device's TX path the way a hostile guest can drive it:
// the input is 64 KiB of guest memory holding the TX and RX rings'
// descriptor tables, avail rings and the packets they point at. The device
// pops every chain, parses packets into the muxer, and answers over RX.
// Besides crashes and sanitizer reports it checks the device's promise: the
// used rings only ever name descriptor heads inside the ring.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>

#include "vsock/fake_guest_memory.h"
#include "vsock/vsock_device.h"

namespace {

using namespace microvm::vsock;

constexpr uint16_t kRingSize = 16;
constexpr uint64_t kMemorySize = 64 * 1024;

// One loop and muxer per process: with no base socket and no mappings every
// REQUEST is refused, so no socket is made per input.
struct Fixture {
  std::optional<microvm::EventLoop> loop;
  std::unique_ptr<VsockMuxer> muxer;
  Fixture() {
    auto created = microvm::EventLoop::create();
    if (!created) std::abort();
    loop.emplace(std::move(*created));
    auto made = VsockMuxer::create(*loop, MuxerConfig{}, [] {});
    if (!made) std::abort();
    muxer = std::move(*made);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {  // NOLINT(readability-identifier-naming)
  static Fixture fixture;
  fixture.muxer->reset();
  // Guest memory: the input, then a region after a hole so that chains can
  // point into the hole and across the end.
  FakeGuestMemory memory({{0, kMemorySize}, {0x20000, 0x1000}});
  std::memcpy(memory.translate(0, kMemorySize), data, std::min<size_t>(size, kMemorySize));
  FakeRing tx(memory, kRingSize, 0x0000, 0x0100, 0x0200);
  FakeRing rx(memory, kRingSize, 0x0400, 0x0500, 0x0600);
  Virtqueue tx_queue, rx_queue;
  tx_queue.configure(tx.layout(), &memory);
  rx_queue.configure(rx.layout(), &memory);

  // The used rings start wherever the input put them; check only what the
  // device appends.
  uint16_t tx_start = tx.usedIndex();
  uint16_t rx_start = rx.usedIndex();
  // The guest may point a device-writable buffer at its own used rings; then
  // what is read back there is packet data, not what the device pushed. Such
  // inputs (and indirect tables, which could do the same) skip the check.
  auto overlapsUsedRings = [&] {
    for (uint64_t table : {uint64_t{0x0000}, uint64_t{0x0400}}) {
      for (uint16_t i = 0; i < kRingSize; ++i) {
        uint64_t addr;
        uint32_t len;
        uint16_t flags;
        const auto* desc = static_cast<const uint8_t*>(memory.translate(table + 16u * i, 16));
        std::memcpy(&addr, desc, sizeof addr);
        std::memcpy(&len, desc + 8, sizeof len);
        std::memcpy(&flags, desc + 12, sizeof flags);
        if (flags & 4) return true;  // VIRTQ_DESC_F_INDIRECT
        if (!(flags & 2)) continue;  // VIRTQ_DESC_F_WRITE
        for (uint64_t used : {uint64_t{0x0200}, uint64_t{0x0600}}) {
          if (addr < used + 4 + 8u * kRingSize + 2 && used < addr + len) return true;
        }
      }
    }
    return false;
  };
  bool skip_check = overlapsUsedRings();  // as the input set them, and as they end
  uint64_t malformed = 0;
  for (int round = 0; round < 4; ++round) processTx(tx_queue, *fixture.muxer, malformed);
  processRx(rx_queue, memory, *fixture.muxer);

  if (skip_check || overlapsUsedRings()) return 0;
  for (auto [ring, start] : {std::pair{&tx, tx_start}, std::pair{&rx, rx_start}}) {
    uint16_t appended = static_cast<uint16_t>(ring->usedIndex() - start);
    for (uint16_t i = 0; i < appended && i < kRingSize; ++i) {
      uint32_t id = ring->used(static_cast<uint16_t>(start + i)).first;
      if (id >= kRingSize) {
        (void)std::fprintf(stderr, "used ring names descriptor %u\n", id);
        std::abort();
      }
    }
  }
  return 0;
}
