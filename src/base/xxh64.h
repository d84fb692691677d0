// XXH64, the 64-bit xxHash (Yann Collet's specification), streamed: a fast
// non-cryptographic checksum for large files whose integrity (not
// authenticity) matters, such as a snapshot's saved memory, where SHA-256
// would cost several times a restore's budget. Its results match the
// reference implementation's (XXH64("abc", 0) == 0x44bc2cf5ad770999).
//
//   Xxh64 hasher;
//   hasher.update(chunk);          // any number of times, any sizes
//   uint64_t digest = hasher.finish();
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace microvm {

class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0);
  void update(std::string_view bytes);
  // The digest of everything given so far (the state is left as it is).
  uint64_t finish() const;

 private:
  uint64_t lanes_[4];
  uint64_t seed_;
  uint64_t total_ = 0;
  unsigned char buffer_[32];
  size_t buffered_ = 0;
};

uint64_t xxh64(std::string_view bytes, uint64_t seed = 0);

}  // namespace microvm
