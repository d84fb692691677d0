#include "base/xxh64.h"

#include <gtest/gtest.h>

#include <string>

namespace microvm {
namespace {

TEST(Xxh64Test, MatchesTheReferenceImplementation) {
  // Values from xxHash's reference implementation (xxhsum -H1).
  EXPECT_EQ(xxh64(""), 0xef46db3751d8e999ULL);
  EXPECT_EQ(xxh64("a"), 0xd24ec4f1a98c6e5bULL);
  EXPECT_EQ(xxh64("abc"), 0x44bc2cf5ad770999ULL);
}

TEST(Xxh64Test, StreamingInAnyPiecesGivesTheWholeDigest) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 131 + 7));
  uint64_t whole = xxh64(data, 5);
  for (size_t step : {1u, 3u, 31u, 32u, 33u, 64u, 999u}) {
    Xxh64 hasher(5);
    for (size_t offset = 0; offset < data.size(); offset += step)
      hasher.update(std::string_view(data).substr(offset, step));
    EXPECT_EQ(hasher.finish(), whole) << step;
  }
  EXPECT_NE(xxh64(data, 6), whole);
  data[500] ^= 1;
  EXPECT_NE(xxh64(data, 5), whole);
}

}  // namespace
}  // namespace microvm
