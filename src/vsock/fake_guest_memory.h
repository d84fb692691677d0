// FakeGuestMemory and FakeRing: guest memory in host vectors and a driver's
// view of one split ring over it, for the virtqueue and device tests and the
// vsock fuzzer. Not used by the runner.
//
//   FakeGuestMemory memory({{0, 1 << 20}});
//   FakeRing ring(memory, 8, /*desc=*/0x1000, /*avail=*/0x2000, /*used=*/0x3000);
//   ring.setDesc(0, 0x4000, 44, 0, 0);
//   ring.publish(0);
//   Virtqueue queue; queue.configure(ring.layout(), &memory);
#pragma once

#include <cstring>
#include <utility>
#include <vector>

#include "vsock/virtqueue.h"

namespace microvm::vsock {

class FakeGuestMemory : public GuestMemory {
 public:
  struct Region {
    uint64_t gpa;
    std::vector<uint8_t> bytes;
  };
  // Each pair is (guest-physical start, size).
  explicit FakeGuestMemory(std::vector<std::pair<uint64_t, uint64_t>> layout) {
    for (auto [gpa, size] : layout) regions_.push_back({gpa, std::vector<uint8_t>(size)});
  }
  uint8_t* translate(uint64_t gpa, uint64_t len) override {
    for (Region& region : regions_) {
      if (gpa >= region.gpa && gpa - region.gpa < region.bytes.size() &&
          len <= region.bytes.size() - (gpa - region.gpa)) {
        return region.bytes.data() + (gpa - region.gpa);
      }
    }
    return nullptr;
  }
  void markDirty(uint64_t gpa, uint64_t len) override { dirty.emplace_back(gpa, len); }
  void write(uint64_t gpa, const void* data, size_t len) { std::memcpy(translate(gpa, len), data, len); }
  void read(uint64_t gpa, void* data, size_t len) { std::memcpy(data, translate(gpa, len), len); }

  std::vector<std::pair<uint64_t, uint64_t>> dirty;

 private:
  std::vector<Region> regions_;
};

// The driver's side of a split ring in a FakeGuestMemory.
class FakeRing {
 public:
  FakeRing(FakeGuestMemory& memory, uint16_t size, uint64_t desc, uint64_t avail, uint64_t used)
      : memory_(memory), size_(size), desc_(desc), avail_(avail), used_(used) {}

  void setDesc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    uint8_t raw[16];
    std::memcpy(raw, &addr, 8);
    std::memcpy(raw + 8, &len, 4);
    std::memcpy(raw + 12, &flags, 2);
    std::memcpy(raw + 14, &next, 2);
    memory_.write(desc_ + 16ull * index, raw, sizeof raw);
  }
  // Offers the chain starting at `head` to the device.
  void publish(uint16_t head) {
    memory_.write(avail_ + 4 + 2ull * (avail_index_ % size_), &head, 2);
    ++avail_index_;
    memory_.write(avail_ + 2, &avail_index_, 2);
  }
  void setAvailIndex(uint16_t index) {
    avail_index_ = index;
    memory_.write(avail_ + 2, &avail_index_, 2);
  }
  void setAvailFlags(uint16_t flags) { memory_.write(avail_, &flags, 2); }
  uint16_t usedIndex() {
    uint16_t index;
    memory_.read(used_ + 2, &index, 2);
    return index;
  }
  // The used element at slot `index` (mod size): (id, len).
  std::pair<uint32_t, uint32_t> used(uint16_t index) {
    uint32_t element[2];
    memory_.read(used_ + 4 + 8ull * (index % size_), element, 8);
    return {element[0], element[1]};
  }
  Virtqueue::Layout layout() {
    Virtqueue::Layout layout;
    layout.size = size_;
    layout.desc = memory_.translate(desc_, Virtqueue::bytesForDesc(size_));
    layout.avail = memory_.translate(avail_, Virtqueue::bytesForAvail(size_));
    layout.used = memory_.translate(used_, Virtqueue::bytesForUsed(size_));
    layout.used_gpa = used_;
    return layout;
  }

 private:
  FakeGuestMemory& memory_;
  uint16_t size_;
  uint64_t desc_, avail_, used_;
  uint16_t avail_index_ = 0;
};

}  // namespace microvm::vsock
