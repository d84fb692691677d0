// A fuzz input consumed from the front as little-endian fields; zeros once
// it runs out, so every input drives a whole, deterministic run.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

namespace microvm::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return at_ >= size_; }
  uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
  uint16_t u16() { return static_cast<uint16_t>(byte() | byte() << 8); }
  uint32_t u32() { return u16() | static_cast<uint32_t>(u16()) << 16; }
  // Up to `count` bytes: fewer when the input ends first.
  std::string bytes(size_t count) {
    count = std::min(count, size_ - std::min(at_, size_));
    // SAFETY: reading bytes as chars; char may alias any object.
    std::string out(reinterpret_cast<const char*>(data_ + at_), count);
    at_ += count;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

}  // namespace microvm::fuzz
