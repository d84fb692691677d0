#include "core/runner_watch.h"

#include <gtest/gtest.h>

#include <thread>

#include "base/process.h"
#include "base/temp_dir.h"

namespace microvm {
namespace {

using namespace std::chrono_literals;

struct Watched {
  std::optional<TempDir> dir;
  std::optional<RunnerWatch> watch;
  Process child;

  explicit Watched(const std::string& script) {
    auto temp = TempDir::create("microvm-watch-test");
    EXPECT_TRUE(temp);
    dir.emplace(std::move(*temp));
    watch.emplace(dir->path());
    SpawnOptions options;
    options.argv = {"/bin/sh", "-c", script};
    auto spawned = spawn(options);
    EXPECT_TRUE(spawned);
    child = std::move(*spawned);
    watch->watchProcess(child.pid());
  }
};

bool running(const VmState& state) { return state.status == VmStatus::kRunning; }

TEST(RunnerWatch, AnExitedRunnerIsSeenAtOnceAndLeftToReap) {
  Watched watched("exit 3");
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(watched.watch->wait(running, 10s), RunnerWatch::kExited);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  auto status = watched.child.wait();
  ASSERT_TRUE(status);
  EXPECT_EQ(describeWaitStatus(*status), "exited with status 3");
}

TEST(RunnerWatch, AStateWrittenByTheRunnerWakesTheWait) {
  Watched watched("sleep 30");
  std::thread writer([&] {
    std::this_thread::sleep_for(100ms);
    VmState state;
    state.runner_pid = 12345;  // another runner's record does not count
    state.status = VmStatus::kRunning;
    (void)saveState(watched.dir->path(), state);
    std::this_thread::sleep_for(100ms);
    state.runner_pid = watched.child.pid();
    state.status = VmStatus::kCreated;  // not what the caller waits for
    (void)saveState(watched.dir->path(), state);
    std::this_thread::sleep_for(100ms);
    state.status = VmStatus::kRunning;
    (void)saveState(watched.dir->path(), state);
  });
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(watched.watch->wait(running, 10s), RunnerWatch::kStarted);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 250ms);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  writer.join();
}

TEST(RunnerWatch, NothingHappeningTimesOut) {
  Watched watched("sleep 30");
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(watched.watch->wait(running, 200ms), RunnerWatch::kTimedOut);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms);
}

}  // namespace
}  // namespace microvm
