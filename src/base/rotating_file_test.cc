#include "base/rotating_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "base/fs.h"
#include "base/temp_dir.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;

std::string record(int i) { return "record " + std::to_string(i) + " " + std::string(20, 'x') + "\n"; }

std::string readWhole(RotatedLogReader& reader, size_t chunk = 7) {
  std::string all;
  for (auto piece = reader.read(chunk); !piece.empty(); piece = reader.read(chunk)) all += piece;
  return all;
}

std::string expected(int from, int to) {
  std::string text;
  for (int i = from; i < to; ++i) text += record(i);
  return text;
}

TEST(RotatingFileTest, KeepsAtMostMaxFilesOfAtMostMaxSizeAndTheNewestRecords) {
  auto made = TempDir::create("rotating-file-test");
  ASSERT_TRUE(made);
  TempDir& dir = *made;
  fs::path path = dir.path() / "workload.log";
  const uint64_t kMax = 100;
  auto log = RotatingFile::open(path, {kMax, 3});
  ASSERT_TRUE(log) << log.error().message();
  const int kRecords = 200;  // 31 bytes each: 3 per file
  for (int i = 0; i < kRecords; ++i) ASSERT_TRUE(log->write(record(i)));

  auto files = rotatedLogFiles(path);
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0].string(), (dir.path() / "workload.log.2").string());
  EXPECT_EQ(files[1].string(), (dir.path() / "workload.log.1").string());
  EXPECT_EQ(files[2].string(), path.string());
  EXPECT_FALSE(fs::exists(dir.path() / "workload.log.3"));
  std::string joined;
  for (const auto& file : files) {
    EXPECT_LE(fs::file_size(file), kMax) << file.string();
    joined += *readFile(file);
  }
  // The files hold the newest records, whole, in order, with no gap: the
  // oldest file full (3 records), then 3, then whatever the last one has.
  size_t newest = kRecords % 3 == 0 ? 3 : kRecords % 3;
  EXPECT_EQ(joined, expected(kRecords - 6 - static_cast<int>(newest), kRecords));
}

TEST(RotatingFileTest, OneFileStartsAfreshAndAppendingCountsWhatIsThere) {
  auto made = TempDir::create("rotating-file-test");
  ASSERT_TRUE(made);
  TempDir& dir = *made;
  fs::path path = dir.path() / "one.log";
  {
    auto log = RotatingFile::open(path, {100, 1});
    ASSERT_TRUE(log);
    ASSERT_TRUE(log->write(record(0)));
    ASSERT_TRUE(log->write(record(1)));
  }
  // Reopened (a restarted VM): the 60 bytes there count; the next record
  // fits, the one after rotates.
  auto log = RotatingFile::open(path, {100, 1});
  ASSERT_TRUE(log);
  ASSERT_TRUE(log->write(record(2)));
  EXPECT_EQ(*readFile(path), expected(0, 3));
  ASSERT_TRUE(log->write(record(3)));
  EXPECT_EQ(*readFile(path), record(3));
  EXPECT_EQ(rotatedLogFiles(path).size(), 1u);
}

TEST(RotatingFileTest, StreamsAreSplitAtTheLimitAndTruncateRemovesOldFiles) {
  auto made = TempDir::create("rotating-file-test");
  ASSERT_TRUE(made);
  TempDir& dir = *made;
  fs::path path = dir.path() / "console.log";
  std::string stream;
  for (int i = 0; i < 1000; ++i) stream += static_cast<char>('a' + i % 26);
  {
    auto log = RotatingFile::open(path, {64, 4});
    ASSERT_TRUE(log);
    ASSERT_TRUE(log->writeStream(stream.substr(0, 500)));  // one write larger than a file
    ASSERT_TRUE(log->writeStream(stream.substr(500)));
    auto files = rotatedLogFiles(path);
    ASSERT_EQ(files.size(), 4u);
    std::string joined;
    for (const auto& file : files) {
      EXPECT_LE(fs::file_size(file), 64u);
      joined += *readFile(file);
    }
    // 1000 = 15 full files and 40 bytes: the last 3 full ones and the 40.
    EXPECT_EQ(joined, stream.substr(1000 - 3 * 64 - 40));
  }
  auto fresh = RotatingFile::open(path, {64, 4}, /*truncate=*/true);
  ASSERT_TRUE(fresh);
  auto left = rotatedLogFiles(path);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].string(), path.string());
  EXPECT_EQ(fs::file_size(path), 0u);
}

TEST(RotatingFileTest, RefusesAPolicyWithoutRoom) {
  auto made = TempDir::create("rotating-file-test");
  ASSERT_TRUE(made);
  TempDir& dir = *made;
  EXPECT_FALSE(RotatingFile::open(dir.path() / "a.log", {0, 3}));
  EXPECT_FALSE(RotatingFile::open(dir.path() / "a.log", {100, 0}));
}

TEST(RotatedLogReaderTest, ReadsAcrossFilesOldestFirst) {
  auto made = TempDir::create("rotating-file-test");
  ASSERT_TRUE(made);
  TempDir& dir = *made;
  fs::path path = dir.path() / "workload.log";
  auto log = RotatingFile::open(path, {100, 5});
  ASSERT_TRUE(log);
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(log->write(record(i)));
  RotatedLogReader reader(path);
  reader.seekToStart();
  EXPECT_EQ(readWhole(reader), expected(0, 12));
}

TEST(RotatedLogReaderTest, TailFindsTheLastLinesAcrossFiles) {
  auto made = TempDir::create("rotating-file-test");
  ASSERT_TRUE(made);
  TempDir& dir = *made;
  fs::path path = dir.path() / "workload.log";
  auto log = RotatingFile::open(path, {100, 5});
  ASSERT_TRUE(log);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(log->write(record(i)));  // files of 3, 3, 3, 1
  for (long lines : {0L, 1L, 2L, 4L, 7L, 10L, 50L}) {
    RotatedLogReader reader(path);
    reader.seekToLastLines(lines);
    EXPECT_EQ(readWhole(reader), expected(10 - static_cast<int>(std::min(lines, 10L)), 10)) << lines;
  }
  // A final line without its newline is not counted, and comes after.
  ASSERT_TRUE(log->write("partial"));
  RotatedLogReader reader(path);
  reader.seekToLastLines(2);
  EXPECT_EQ(readWhole(reader), expected(8, 10) + "partial");
  // No log at all: nothing, and no error.
  RotatedLogReader none(dir.path() / "missing.log");
  none.seekToLastLines(3);
  EXPECT_EQ(none.read(), "");
}

TEST(RotatedLogReaderTest, TailLargerThanOneReadBlock) {
  auto made = TempDir::create("rotating-file-test");
  ASSERT_TRUE(made);
  TempDir& dir = *made;
  fs::path path = dir.path() / "big.log";
  auto log = RotatingFile::open(path, {uint64_t{1} << 20, 2});
  ASSERT_TRUE(log);
  std::string line = std::string(999, 'y') + "\n";
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(log->write(line));  // 300 KB: several 64 KiB blocks
  RotatedLogReader reader(path);
  reader.seekToLastLines(150);
  std::string all = readWhole(reader, 65536);
  EXPECT_EQ(all.size(), 150u * 1000);
}

TEST(RotatedLogReaderTest, FollowsAcrossRotations) {
  auto made = TempDir::create("rotating-file-test");
  ASSERT_TRUE(made);
  TempDir& dir = *made;
  fs::path path = dir.path() / "workload.log";
  auto log = RotatingFile::open(path, {100, 3});
  ASSERT_TRUE(log);
  RotatedLogReader reader(path);
  reader.seekToLastLines(0);
  EXPECT_EQ(reader.read(), "");
  std::string seen;
  int written = 0;
  // Read between writes, sometimes after one rotation, sometimes after two.
  for (int round = 0; round < 20; ++round) {
    int count = round % 2 == 0 ? 2 : 5;
    for (int i = 0; i < count; ++i) ASSERT_TRUE(log->write(record(written++)));
    seen += readWhole(reader);
  }
  EXPECT_EQ(seen, expected(0, written));
}

TEST(RotatedLogReaderTest, FollowsASingleFileThatStartsAfresh) {
  auto made = TempDir::create("rotating-file-test");
  ASSERT_TRUE(made);
  TempDir& dir = *made;
  fs::path path = dir.path() / "one.log";
  RotatedLogReader reader(path);
  reader.seekToLastLines(5);  // before the log exists
  auto log = RotatingFile::open(path, {100, 1});
  ASSERT_TRUE(log);
  std::string seen;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(log->write(record(i)));
    seen += readWhole(reader);
  }
  EXPECT_EQ(seen, expected(0, 10));
}

// The last `lines` complete lines of `text` and what follows them, the slow way.
std::string referenceTail(const std::string& text, long lines) {
  size_t end = text.rfind('\n');
  if (end == std::string::npos) return text;
  size_t start = end + 1;
  for (long i = 0; i < lines; ++i) {
    if (start == 0) break;
    size_t previous = start >= 2 ? text.rfind('\n', start - 2) : std::string::npos;
    start = previous == std::string::npos ? 0 : previous + 1;
  }
  return text.substr(start);
}

TEST(RotatedLogReaderTest, RandomLogsReadBackAsTheirFilesHoldThem) {
  std::mt19937 random(20261206);
  for (int round = 0; round < 80; ++round) {
    auto made = TempDir::create("rotating-file-test");
    ASSERT_TRUE(made);
    fs::path path = made->path() / "x.log";
    RotationPolicy policy{1 + random() % 120, 1 + static_cast<int>(random() % 4)};
    auto log = RotatingFile::open(path, policy);
    ASSERT_TRUE(log);
    size_t largest = 0;
    int writes = static_cast<int>(random() % 60);
    for (int i = 0; i < writes; ++i) {
      std::string bytes(random() % 50, 'a');
      for (auto& c : bytes) c = "ab\n"[random() % 3];
      largest = std::max(largest, bytes.size());
      ASSERT_TRUE(random() % 2 ? log->write(bytes) : log->writeStream(bytes));
    }
    std::string kept;
    auto files = rotatedLogFiles(path);
    ASSERT_LE(files.size(), static_cast<size_t>(policy.max_files));
    for (const auto& file : files) {
      EXPECT_LE(fs::file_size(file), std::max<uint64_t>(policy.max_size, largest));
      kept += *readFile(file);
    }
    RotatedLogReader whole(path);
    whole.seekToStart();
    EXPECT_EQ(readWhole(whole, 1 + random() % 20), kept) << round;
    long lines = static_cast<long>(random() % 12);
    RotatedLogReader tail(path);
    tail.seekToLastLines(lines);
    EXPECT_EQ(readWhole(tail), referenceTail(kept, lines)) << round << " tail " << lines;
  }
}

}  // namespace
}  // namespace microvm
