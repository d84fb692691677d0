#include "base/fs.h"

#include <gtest/gtest.h>

#include "base/temp_dir.h"

namespace microvm {
namespace {

TEST(TailLines, KeepsTheLastLinesWithoutTheFinalNewline) {
  auto dir = TempDir::create("fs-test");
  ASSERT_TRUE(dir);
  auto path = dir->path() / "log";
  ASSERT_TRUE(writeFileAtomic(path, "a\nb\nc\n"));
  EXPECT_EQ(tailLines(path, 1), "c");
  EXPECT_EQ(tailLines(path, 2), "b\nc");
  EXPECT_EQ(tailLines(path, 3), "a\nb\nc");
  EXPECT_EQ(tailLines(path, 10), "a\nb\nc");
  EXPECT_EQ(tailLines(path, 0), "");
  EXPECT_EQ(tailLines(dir->path() / "missing", 3), "");
}

}  // namespace
}  // namespace microvm
