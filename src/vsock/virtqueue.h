// Virtqueue: the device side of a virtio split ring (virtio 1.2, 2.7) over
// guest memory that the guest may change at any time.
//
// Everything read from the ring is untrusted: descriptor indices, addresses,
// lengths and flags are checked before use, chains are bounded by the ring
// size (so loops end), and every buffer must lie inside one mapped region of
// guest memory. A malformed chain is handed back to the guest as used with 0
// bytes written and counted; it never reaches the device logic.
//
//   Virtqueue queue;
//   queue.configure(layout, &memory);
//   DescriptorChain chain;
//   while (queue.pop(chain) != PopResult::kEmpty) { ...; queue.pushUsed(chain.head, written); }
//   if (queue.shouldNotify()) signal(call_fd);
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace microvm::vsock {

// Guest-physical memory as the device sees it.
class GuestMemory {
 public:
  virtual ~GuestMemory() = default;
  // The host address of guest-physical [gpa, gpa + len), or nullptr unless
  // the whole range lies inside one mapped region.
  virtual uint8_t* translate(uint64_t gpa, uint64_t len) = 0;
  // The device wrote [gpa, gpa + len): recorded while QEMU migrates the VM.
  virtual void markDirty(uint64_t gpa, uint64_t len) {
    (void)gpa;
    (void)len;
  }
};

struct Buffer {
  uint64_t gpa = 0;
  uint32_t len = 0;
  uint8_t* host = nullptr;  // translated and bounds-checked at pop time
};

// One popped chain: device-readable buffers, then device-writable ones.
struct DescriptorChain {
  uint16_t head = 0;
  std::vector<Buffer> readable;
  std::vector<Buffer> writable;
  uint64_t readable_bytes = 0;
  uint64_t writable_bytes = 0;
};

// Copies up to `len` bytes starting `offset` bytes into the chain's readable
// buffers; returns how many were copied.
size_t readFromChain(const DescriptorChain& chain, size_t offset, void* out, size_t len);
// Copies up to `len` bytes into the chain's writable buffers from `offset`,
// marking them dirty; returns how many were copied.
size_t writeToChain(const DescriptorChain& chain, size_t offset, const void* data, size_t len,
                    GuestMemory& memory);

enum class PopResult { kChain, kEmpty, kMalformed };

class Virtqueue {
 public:
  // Sums of descriptor lengths above this are malformed (and would never fit
  // a packet anyway).
  static constexpr uint64_t kMaxChainBytes = 1 << 20;
  static constexpr uint16_t kMaxSize = 32768;

  // Host addresses of the three ring parts, checked by the caller to span
  // the sizes the ring needs (see bytesFor*).
  struct Layout {
    uint16_t size = 0;
    uint8_t* desc = nullptr;
    uint8_t* avail = nullptr;
    uint8_t* used = nullptr;
    uint64_t used_gpa = 0;    // for dirty logging of the used ring
    bool log_used = false;    // VHOST_VRING_F_LOG: the used ring is logged
  };
  static uint64_t bytesForDesc(uint16_t size) { return 16ull * size; }
  static uint64_t bytesForAvail(uint16_t size) { return 6ull + 2ull * size; }
  static uint64_t bytesForUsed(uint16_t size) { return 6ull + 8ull * size; }

  // `memory` must outlive the queue or the next configure/reset.
  void configure(const Layout& layout, GuestMemory* memory);
  void reset() { *this = Virtqueue(); }
  bool configured() const { return memory_ != nullptr; }

  // Takes the next available chain. kMalformed: a bad chain was consumed
  // (and returned to the guest with 0 bytes when its head was valid).
  PopResult pop(DescriptorChain& chain);
  bool hasAvailable() const;
  void pushUsed(uint16_t head, uint32_t written);
  // The driver asked for no interrupt (VRING_AVAIL_F_NO_INTERRUPT)?
  bool shouldNotify() const;

  uint16_t nextAvail() const { return next_avail_; }
  void setNextAvail(uint16_t index) { next_avail_ = index; }
  uint64_t malformed() const { return malformed_; }
  // The avail index ran more than a ring ahead: the guest's ring is broken
  // and the queue stops until it is configured again.
  bool broken() const { return broken_; }

 private:
  uint16_t availIndex() const;
  void markMalformed(uint16_t head, bool head_valid);

  Layout layout_;
  GuestMemory* memory_ = nullptr;
  uint16_t next_avail_ = 0;
  uint16_t used_index_ = 0;
  uint64_t malformed_ = 0;
  bool broken_ = false;
};

}  // namespace microvm::vsock
