#include "base/fs.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "base/temp_dir.h"
#include "base/unique_fd.h"

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

TEST(TailLines, ReadsOnlyTheEndOfALongFile) {
  auto dir = TempDir::create("fs-test");
  ASSERT_TRUE(dir);
  auto path = dir->path() / "console.log";
  // 1 MiB without a newline, then two short lines: only the end is read.
  ASSERT_TRUE(writeFileAtomic(path, std::string(1 << 20, 'x') + "\nlast but one\nlast\n"));
  EXPECT_EQ(tailLines(path, 2), "last but one\nlast");
  std::string tail = tailLines(path, 3);
  EXPECT_LE(tail.size(), 65536u);
  EXPECT_EQ(tail.substr(tail.size() - 18), "\nlast but one\nlast");
}

std::vector<std::filesystem::path>* synced_directories = nullptr;

TEST(WriteFileAtomic, FsyncsTheDirectoryAfterTheRename) {
  auto dir = TempDir::create("fs-test");
  ASSERT_TRUE(dir);
  std::vector<std::filesystem::path> synced;
  synced_directories = &synced;
  setDirectorySyncObserverForTesting([](const std::filesystem::path& path) { synced_directories->push_back(path); });
  auto written = writeFileAtomic(dir->path() / "state.json", "{}\n");
  setDirectorySyncObserverForTesting(nullptr);
  ASSERT_TRUE(written) << written.error().message();
  EXPECT_EQ(synced, std::vector<std::filesystem::path>{dir->path()});
  // And the rename happened before: the directory holds the new file only.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir->path()), {}), 1);
}

TEST(SyncDirectory, FailsWithTheReasonOnAMissingDirectory) {
  auto synced = syncDirectory("/nonexistent-microvm-dir");
  ASSERT_FALSE(synced);
  EXPECT_NE(synced.error().message().find("/nonexistent-microvm-dir"), std::string::npos);
}

TEST(ReadUntrustedFile, RefusesLinksOtherFilesAndTooLongOnes) {
  auto dir = TempDir::create("fs-test");
  ASSERT_TRUE(dir);
  auto path = dir->path() / "state.json";
  ASSERT_TRUE(writeFileAtomic(path, "{\"a\": 1}"));
  EXPECT_EQ(*readUntrustedFile(path, 100), "{\"a\": 1}");
  EXPECT_FALSE(readUntrustedFile(path, 4));  // longer than allowed
  auto link = dir->path() / "link.json";
  ASSERT_EQ(::symlink(path.c_str(), link.c_str()), 0);
  EXPECT_FALSE(readUntrustedFile(link, 100));  // a symlink is not followed
  auto fifo = dir->path() / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_FALSE(readUntrustedFile(fifo, 100));  // neither blocks nor reads a fifo
}

}  // namespace
}  // namespace microvm

TEST(CopySparse, CopiesDataSkipsHolesAndZeroBlocksAndSizesTheCopy) {
  using microvm::copySparse;
  using microvm::UniqueFd;
  char pattern[] = "/tmp/microvm-sparse-XXXXXX";
  ASSERT_NE(::mkdtemp(pattern), nullptr);
  std::filesystem::path dir = pattern;
  UniqueFd from(::memfd_create("from", MFD_CLOEXEC));
  ASSERT_TRUE(from.valid());
  constexpr uint64_t kSize = 8 << 20;
  ASSERT_EQ(::ftruncate(from.get(), kSize), 0);
  std::string page(4096, 'x');
  std::string zeros(4096, '\0');
  ASSERT_EQ(::pwrite(from.get(), page.data(), page.size(), 4096), 4096);
  ASSERT_EQ(::pwrite(from.get(), zeros.data(), zeros.size(), 1 << 20), 4096);  // data, but zero
  ASSERT_EQ(::pwrite(from.get(), page.data(), 100, kSize - 100), 100);          // a partial last block
  UniqueFd to(::open((dir / "copy").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  auto written = copySparse(from.get(), to.get(), kSize);
  ASSERT_TRUE(written.ok()) << written.error().message();
  EXPECT_EQ(*written, 2 * 4096u);  // the two blocks with data; the zero one stays a hole
  struct stat st {};
  ASSERT_EQ(::fstat(to.get(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kSize);
  EXPECT_LE(st.st_blocks * 512, 64 * 1024);  // sparse
  std::string back(kSize, '?');
  ASSERT_EQ(::pread(to.get(), back.data(), kSize, 0), static_cast<ssize_t>(kSize));
  std::string expected(kSize, '\0');
  expected.replace(4096, 4096, page);
  expected.replace(kSize - 100, 100, page.substr(0, 100));
  EXPECT_TRUE(back == expected);
  // And back into a memfd of the same size, as a restore does.
  UniqueFd again(::memfd_create("again", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(again.get(), kSize), 0);
  ASSERT_TRUE(copySparse(to.get(), again.get(), kSize).ok());
  std::string round(kSize, '?');
  ASSERT_EQ(::pread(again.get(), round.data(), kSize, 0), static_cast<ssize_t>(kSize));
  EXPECT_TRUE(round == expected);
  std::filesystem::remove_all(dir);
}

namespace microvm {
namespace {

// A memfd as QEMU leaves it after loading a stream: every page written,
// most of them with zeros.
TEST(ReleaseZeroBlocks, PunchesTheZeroPagesAndKeepsTheData) {
  constexpr uint64_t kSize = 1 << 20;
  UniqueFd memfd(::memfd_create("release-test", MFD_CLOEXEC));
  ASSERT_TRUE(memfd.valid());
  ASSERT_EQ(::ftruncate(memfd.get(), kSize), 0);
  std::string zeros(kSize, '\0');
  ASSERT_EQ(::pwrite(memfd.get(), zeros.data(), zeros.size(), 0), static_cast<ssize_t>(kSize));
  ASSERT_EQ(::pwrite(memfd.get(), "data", 4, 4096 * 3 + 10), 4);
  ASSERT_EQ(::pwrite(memfd.get(), "tail", 4, kSize - 4), 4);
  struct stat before {};
  ASSERT_EQ(::fstat(memfd.get(), &before), 0);
  EXPECT_EQ(static_cast<uint64_t>(before.st_blocks) * 512, kSize);

  auto kept = releaseZeroBlocks(memfd.get(), kSize);
  ASSERT_TRUE(kept) << kept.error().message();
  EXPECT_EQ(*kept, 2 * 4096u);
  struct stat after {};
  ASSERT_EQ(::fstat(memfd.get(), &after), 0);
  EXPECT_EQ(static_cast<uint64_t>(after.st_blocks) * 512, 2 * 4096u);
  EXPECT_EQ(static_cast<uint64_t>(after.st_size), kSize);
  char read[4];
  ASSERT_EQ(::pread(memfd.get(), read, 4, 4096 * 3 + 10), 4);
  EXPECT_EQ(std::string(read, 4), "data");
  ASSERT_EQ(::pread(memfd.get(), read, 4, kSize - 4), 4);
  EXPECT_EQ(std::string(read, 4), "tail");
}

}  // namespace
}  // namespace microvm
