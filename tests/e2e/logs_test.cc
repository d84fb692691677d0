// A VM's logs are bounded (--log-opt max-size, max-file, as Docker's
// json-file) however much the guest prints, and `logs` reads them across
// their rotated files, following them with -f.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

namespace microvm::e2e {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

fs::path vmDir(const std::string& name) {
  auto inspected = microvm({"inspect", name});
  if (inspected.exit_code != 0) return {};
  return nlohmann::json::parse(inspected.out)[0]["dir"].get<std::string>();
}

// The files of a rotated log: LOG, LOG.1, ... as they are on disk.
std::vector<fs::path> logFiles(const fs::path& dir, const std::string& log) {
  std::vector<fs::path> files;
  for (const auto& name : listDir(dir)) {
    if (name == log || name.rfind(log + ".", 0) == 0) files.push_back(dir / name);
  }
  return files;
}

std::string readAll(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) out.push_back(line);
  return out;
}

// Every line from the second on is "line N" for consecutive N ending at
// `last` (the first may be the end of a line rotated away).
void expectConsecutiveTail(const std::string& text, int last, size_t at_least) {
  auto got = lines(text);
  ASSERT_GE(got.size(), at_least + 1) << text.substr(0, 200);
  for (size_t i = 1; i < got.size(); ++i) {
    int expected = last - static_cast<int>(got.size() - 1 - i);
    ASSERT_EQ(got[i], "line " + std::to_string(expected)) << "line " << i << " of " << got.size();
  }
}

TEST(LogsTest, WorkloadLogIsBoundedAndLogsShowsItsTail) {
  // About 1.1 MB of output against 3 files of 64 KiB.
  auto result = microvm({"run", "--name", "logs-bounded", "--log-opt", "max-size=64k", "--log-opt", "max-file=3",
                         "--rootfs", rootfs().string(), "--", "/bin/sh", "-c",
                         "seq 1 100000 | sed 's/^/line /'"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  ASSERT_EQ(lines(result.out).size(), 100000u);  // the terminal gets everything
  fs::path dir = vmDir("logs-bounded");
  ASSERT_FALSE(dir.empty());
  auto files = logFiles(dir, "workload.log");
  EXPECT_EQ(files.size(), 3u);
  for (const auto& file : files) EXPECT_LE(fs::file_size(file), 64u * 1024) << file;
  // The older files were rotated because the next record (at most 16 KiB
  // of output) did not fit: they are nearly full.
  for (const char* rotated : {"workload.log.1", "workload.log.2"}) {
    ASSERT_TRUE(fs::exists(dir / rotated));
    EXPECT_GT(fs::file_size(dir / rotated), (64u - 17) * 1024) << rotated;
  }
  EXPECT_FALSE(fs::exists(dir / "workload.log.3"));

  // --tail counts records (output chunks of at most 16 KiB): the last one.
  auto tail = microvm({"logs", "--tail", "1", "logs-bounded"});
  EXPECT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_LE(tail.out.size(), 16384u);
  expectConsecutiveTail(tail.out, 100000, 2);
  // All that is kept, oldest file first, without a gap.
  auto all = microvm({"logs", "logs-bounded"});
  EXPECT_EQ(all.exit_code, 0) << all.err;
  expectConsecutiveTail(all.out, 100000, 10000);
  EXPECT_EQ(microvm({"rm", "logs-bounded"}).exit_code, 0);
}

TEST(LogsTest, ConsoleLogIsBoundedToo) {
  // The guest writes 200 KB to its console; console.log keeps 2 × 16 KiB.
  auto result = microvm({"run", "--name", "logs-console", "--log-opt", "max-size=16k,max-file=2", "--rootfs",
                         rootfs().string(), "--", "/bin/sh", "-c",
                         "seq 1 20000 | sed 's/^/line /' > /dev/console"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  fs::path dir = vmDir("logs-console");
  ASSERT_FALSE(dir.empty());
  auto files = logFiles(dir, "console.log");
  EXPECT_EQ(files.size(), 2u);
  for (const auto& file : files) EXPECT_LE(fs::file_size(file), 16u * 1024) << file;
  auto console = microvm({"logs", "--console", "logs-console"});
  EXPECT_EQ(console.exit_code, 0) << console.err;
  // The serial line ends lines with \r\n; the last of ours is there.
  EXPECT_NE(console.out.find("line 20000\r\n"), std::string::npos) << console.out.substr(console.out.size() - 300);
  EXPECT_LE(console.out.size(), 2u * 16 * 1024);
  EXPECT_EQ(microvm({"rm", "logs-console"}).exit_code, 0);
}

TEST(LogsTest, RunnerLogIsBoundedWhateverTheGuestMakesItSay) {
  // Each packet the policy refuses is a line of runner.log with --egress-log:
  // 400 of them (about 36 KB) against 2 × 8 KiB.
  auto result = microvm({"run", "--name", "logs-runner", "--egress-deny-all", "--egress-log", "--log-opt",
                         "max-size=8k,max-file=2", "--rootfs", rootfs().string(), "--", "/bin/sh", "-c",
                         "ping -c 400 -i 0.01 -W 1 192.0.2.1 >/dev/null 2>&1; echo pinged"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "pinged\n");
  fs::path dir = vmDir("logs-runner");
  ASSERT_FALSE(dir.empty());
  auto files = logFiles(dir, "runner.log");
  EXPECT_EQ(files.size(), 2u);
  for (const auto& file : files) EXPECT_LE(fs::file_size(file), 8u * 1024) << file;
  // It did rotate: the older file is full of refusals, and the newest ends
  // with the runner's own last line.
  std::string older = readAll(dir / "runner.log.1");
  EXPECT_GE(lines(older).size(), 50u) << older;
  EXPECT_NE(older.find("egress: deny icmp 10.0.2.15:0 -> 192.0.2.1:0"), std::string::npos) << older;
  EXPECT_NE(readAll(dir / "runner.log").find("VM finished, exit code 0"), std::string::npos);
  EXPECT_EQ(microvm({"rm", "logs-runner"}).exit_code, 0);
}

TEST(LogsTest, FollowGoesOnAcrossRotations) {
  // 4 KiB × 2 files, and 2000 lines of 10 bytes written over a few seconds:
  // the follower has to cross several rotations to see them all.
  auto started = microvm({"run", "-d", "--name", "logs-follow", "--log-opt", "max-size=4k,max-file=2", "--rootfs",
                          rootfs().string(), "--", "/bin/sh", "-c",
                          "sleep 2; i=1; while [ $i -le 2000 ]; do echo line $i; "
                          "[ $((i % 100)) -eq 0 ] && sleep 0.2; i=$((i+1)); done"});
  ASSERT_EQ(started.exit_code, 0) << started.err;
  Cli follower({"logs", "-f", "logs-follow"});
  auto followed = follower.finish(seconds(180));
  EXPECT_EQ(followed.exit_code, 0) << followed.err;
  // From its start (or what was still kept when it began) to the end, no gap.
  expectConsecutiveTail(followed.out, 2000, 1500);
  EXPECT_LE(fs::file_size(vmDir("logs-follow") / "workload.log"), 4096u);
  EXPECT_EQ(microvm({"rm", "-f", "logs-follow"}).exit_code, 0);
}

}  // namespace
}  // namespace microvm::e2e
