#include "vsock/virtqueue.h"

#include <endian.h>

#include <atomic>
#include <cstring>

namespace microvm::vsock {

namespace {

constexpr uint16_t kDescNext = 1;
constexpr uint16_t kDescWrite = 2;
constexpr uint16_t kDescIndirect = 4;
constexpr uint16_t kAvailNoInterrupt = 1;

// Ring fields are read with memcpy: the guest chose the addresses, so they
// need not be aligned, and it may write them at any moment.
uint16_t load16(const uint8_t* p) {
  uint16_t value;
  std::memcpy(&value, p, sizeof value);
  return le16toh(value);
}

void store16(uint8_t* p, uint16_t value) {
  value = htole16(value);
  std::memcpy(p, &value, sizeof value);
}

void store32(uint8_t* p, uint32_t value) {
  value = htole32(value);
  std::memcpy(p, &value, sizeof value);
}

}  // namespace

size_t readFromChain(const DescriptorChain& chain, size_t offset, void* out, size_t len) {
  auto* dst = static_cast<uint8_t*>(out);
  size_t copied = 0;
  for (const Buffer& buffer : chain.readable) {
    if (copied == len) break;
    if (offset >= buffer.len) {
      offset -= buffer.len;
      continue;
    }
    size_t n = std::min<size_t>(buffer.len - offset, len - copied);
    std::memcpy(dst + copied, buffer.host + offset, n);
    copied += n;
    offset = 0;
  }
  return copied;
}

size_t writeToChain(const DescriptorChain& chain, size_t offset, const void* data, size_t len,
                    GuestMemory& memory) {
  const auto* src = static_cast<const uint8_t*>(data);
  size_t copied = 0;
  for (const Buffer& buffer : chain.writable) {
    if (copied == len) break;
    if (offset >= buffer.len) {
      offset -= buffer.len;
      continue;
    }
    size_t n = std::min<size_t>(buffer.len - offset, len - copied);
    std::memcpy(buffer.host + offset, src + copied, n);
    memory.markDirty(buffer.gpa + offset, n);
    copied += n;
    offset = 0;
  }
  return copied;
}

void Virtqueue::configure(const Layout& layout, GuestMemory* memory) {
  layout_ = layout;
  memory_ = layout.size == 0 || layout.size > kMaxSize ? nullptr : memory;
  broken_ = false;
  // The used index lives in guest memory: after a restore it continues from
  // where the saved guest left it.
  if (memory_ != nullptr) used_index_ = load16(layout_.used + 2);
}

uint16_t Virtqueue::availIndex() const {
  uint16_t index = load16(layout_.avail + 2);
  // Descriptors written before the index was published must be seen.
  std::atomic_thread_fence(std::memory_order_acquire);
  return index;
}

bool Virtqueue::hasAvailable() const {
  if (!configured() || broken_) return false;
  return availIndex() != next_avail_;
}

void Virtqueue::markMalformed(uint16_t head, bool head_valid) {
  ++malformed_;
  if (head_valid) pushUsed(head, 0);
}

PopResult Virtqueue::pop(DescriptorChain& chain) {
  if (!configured() || broken_) return PopResult::kEmpty;
  uint16_t avail = availIndex();
  if (avail == next_avail_) return PopResult::kEmpty;
  if (static_cast<uint16_t>(avail - next_avail_) > layout_.size) {
    ++malformed_;
    broken_ = true;
    return PopResult::kEmpty;
  }
  uint16_t size = layout_.size;
  uint16_t head = load16(layout_.avail + 4 + 2u * (next_avail_ % size));
  ++next_avail_;
  chain.head = head;
  chain.readable.clear();
  chain.writable.clear();
  chain.readable_bytes = 0;
  chain.writable_bytes = 0;
  if (head >= size) {
    markMalformed(head, false);
    return PopResult::kMalformed;
  }

  uint16_t index = head;
  // A chain visits each descriptor at most once; more links mean a loop.
  for (uint32_t visited = 0;; ++visited) {
    if (visited >= size) {
      markMalformed(head, true);
      return PopResult::kMalformed;
    }
    uint8_t raw[16];
    std::memcpy(raw, layout_.desc + 16u * index, sizeof raw);
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
    std::memcpy(&addr, raw, 8);
    std::memcpy(&len, raw + 8, 4);
    std::memcpy(&flags, raw + 12, 2);
    std::memcpy(&next, raw + 14, 2);
    addr = le64toh(addr);
    len = le32toh(len);
    flags = le16toh(flags);
    next = le16toh(next);

    // Indirect descriptors are not offered; a writable buffer before a
    // readable one breaks the chain's required order.
    if ((flags & kDescIndirect) != 0 || ((flags & kDescWrite) == 0 && !chain.writable.empty())) {
      markMalformed(head, true);
      return PopResult::kMalformed;
    }
    uint64_t& total = (flags & kDescWrite) != 0 ? chain.writable_bytes : chain.readable_bytes;
    if (chain.readable_bytes + chain.writable_bytes + len > kMaxChainBytes) {
      markMalformed(head, true);
      return PopResult::kMalformed;
    }
    Buffer buffer{addr, len, nullptr};
    if (len > 0) {
      buffer.host = memory_->translate(addr, len);
      if (buffer.host == nullptr) {
        markMalformed(head, true);
        return PopResult::kMalformed;
      }
      ((flags & kDescWrite) != 0 ? chain.writable : chain.readable).push_back(buffer);
      total += len;
    }
    if ((flags & kDescNext) == 0) break;
    if (next >= size) {
      markMalformed(head, true);
      return PopResult::kMalformed;
    }
    index = next;
  }
  return PopResult::kChain;
}

void Virtqueue::pushUsed(uint16_t head, uint32_t written) {
  if (!configured()) return;
  uint16_t slot = used_index_ % layout_.size;
  uint8_t* element = layout_.used + 4 + 8u * slot;
  store32(element, head);
  store32(element + 4, written);
  ++used_index_;
  // The element must be visible before the index that publishes it.
  std::atomic_thread_fence(std::memory_order_release);
  store16(layout_.used + 2, used_index_);
  if (layout_.log_used) {
    memory_->markDirty(layout_.used_gpa + 4 + 8u * slot, 8);
    memory_->markDirty(layout_.used_gpa + 2, 2);
  }
}

bool Virtqueue::shouldNotify() const {
  if (!configured()) return false;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return (load16(layout_.avail) & kAvailNoInterrupt) == 0;
}

}  // namespace microvm::vsock
