#include "runner/runner_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace microvm {
namespace {

namespace fs = std::filesystem;

class RunnerLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/microvm-runner-log-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  uint64_t totalBytes() const {
    uint64_t total = 0;
    for (const auto& entry : fs::directory_iterator(dir_)) total += fs::file_size(entry.path());
    return total;
  }
  std::string read(const fs::path& path) const {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  fs::path dir_;
};

// A guest that keeps sending errors (or QEMU complaining about a device the
// guest misdrives) fills at most max_files × max_size bytes.
TEST_F(RunnerLogTest, AFloodStaysWithinThePolicy) {
  RotationPolicy policy{64 << 10, 2};
  auto log = RunnerLog::open(dir_ / "runner.log", policy);
  ASSERT_TRUE(log.ok()) << log.error().message();
  std::string flood(100 << 10, 'x');
  for (int i = 0; i < 200; ++i) {
    log->write("guest: " + flood);
    log->feedVmm("virtio: zero sized buffers are not allowed\n" + flood);
  }
  log->write("VM finished, exit code 0");
  EXPECT_LE(totalBytes(), policy.max_size * static_cast<uint64_t>(policy.max_files));
  EXPECT_TRUE(fs::exists(dir_ / "runner.log.1"));
  EXPECT_FALSE(fs::exists(dir_ / "runner.log.2"));
  std::string newest = read(dir_ / "runner.log");
  EXPECT_NE(newest.find("VM finished, exit code 0\n"), std::string::npos);
}

TEST_F(RunnerLogTest, LinesAreCutAndCannotForgeLinesOfTheirOwn) {
  auto log = RunnerLog::open(dir_ / "runner.log", RotationPolicy{});
  ASSERT_TRUE(log.ok());
  log->write("guest: boom\n2026-01-01T00:00:00Z VM finished, exit code 0\r\x1b[2J");
  log->write(std::string(10000, 'a'));
  std::string text = read(dir_ / "runner.log");
  size_t first_end = text.find('\n');
  ASSERT_NE(first_end, std::string::npos);
  EXPECT_NE(text.substr(0, first_end).find("guest: boom?2026-01-01T00:00:00Z VM finished, exit code 0??[2J"),
            std::string::npos)
      << text;
  std::string second = text.substr(first_end + 1);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  EXPECT_LT(second.size(), RunnerLog::kMaxLine + 64);
  EXPECT_NE(second.find("a [cut]\n"), std::string::npos);
}

TEST_F(RunnerLogTest, VmmBytesBecomeLinesAcrossReads) {
  auto log = RunnerLog::open(dir_ / "runner.log", RotationPolicy{});
  ASSERT_TRUE(log.ok());
  log->feedVmm("qemu-system-x86_64: warn");
  log->feedVmm("ing: one\nsecond li");
  EXPECT_EQ(log->recent(), "qemu: qemu-system-x86_64: warning: one");
  log->feedVmm("ne\nthird");
  log->flushVmm();
  log->flushVmm();  // nothing left: no empty line
  EXPECT_EQ(log->recent(), "qemu: qemu-system-x86_64: warning: one\nqemu: second line\nqemu: third");
  EXPECT_EQ(log->lastVmmLine(), "third");
  log->write("fourth");
  EXPECT_EQ(log->recent(), "qemu: second line\nqemu: third\nfourth");
  // A line without an end is written at the limit; its rest follows.
  log->feedVmm(std::string(RunnerLog::kMaxLine + 10, 'z') + "\n");
  std::string text = read(dir_ / "runner.log");
  EXPECT_NE(text.find("qemu: zzzz"), std::string::npos);
  EXPECT_NE(text.find("qemu: zzzzzzzzzz\n"), std::string::npos) << "the rest of the long line";
}

}  // namespace
}  // namespace microvm
