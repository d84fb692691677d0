#include "base/process.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

namespace microvm {
namespace {

TEST(ProcessTest, RunCommandReportsStatusAndStderr) {
  EXPECT_TRUE(runCommand({"true"}));
  auto failed = runCommand({"sh", "-c", "echo broken >&2; exit 4"});
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().message(), "sh exited with status 4: broken");
}

TEST(ProcessTest, RunCommandCapturesStdout) {
  std::string output;
  ASSERT_TRUE(runCommand({"sh", "-c", "echo out; echo err >&2"}, &output));
  EXPECT_EQ(output, "out\n");
}

TEST(ProcessTest, MissingProgramIsAnErrorFromSpawn) {
  SpawnOptions options;
  options.argv = {"/nonexistent/program"};
  auto child = spawn(options);
  ASSERT_FALSE(child);
  EXPECT_EQ(child.error().code(), ErrorCode::kNotFound);
}

TEST(ProcessTest, FdMappingCanSwapDescriptors) {
  int out[2];
  int err[2];
  ASSERT_EQ(::pipe(out), 0);
  ASSERT_EQ(::pipe(err), 0);
  SpawnOptions options;
  options.argv = {"sh", "-c", "echo to-out; echo to-err >&2"};
  // Deliberately crossed: child's stdout is the err pipe and vice versa.
  options.fds = {{1, err[1]}, {2, out[1]}};
  auto child = spawn(options);
  ASSERT_TRUE(child);
  ::close(out[1]);
  ::close(err[1]);
  ASSERT_TRUE(child->wait());
  char buffer[64] = {};
  ASSERT_GT(::read(out[0], buffer, sizeof buffer - 1), 0);
  EXPECT_STREQ(buffer, "to-err\n");
  ::close(out[0]);
  ::close(err[0]);
}

TEST(ProcessTest, DroppedProcessIsKilledAndReaped) {
  SpawnOptions options;
  options.argv = {"sleep", "600"};
  pid_t pid;
  {
    auto child = spawn(options);
    ASSERT_TRUE(child);
    pid = child->pid();
  }
  EXPECT_EQ(::kill(pid, 0), -1);  // gone, and not a zombie of ours
}

TEST(ProcessTest, WaitForTimesOutThenSucceeds) {
  SpawnOptions options;
  options.argv = {"sleep", "0.2"};
  auto child = spawn(options);
  ASSERT_TRUE(child);
  auto early = child->waitFor(std::chrono::milliseconds(10));
  ASSERT_TRUE(early);
  EXPECT_FALSE(early->has_value());
  auto late = child->waitFor(std::chrono::seconds(10));
  ASSERT_TRUE(late);
  ASSERT_TRUE(late->has_value());
  EXPECT_TRUE(WIFEXITED(**late));
}

TEST(ProcessTest, StartTimeOfSelfIsKnown) {
  auto start = processStartTime(::getpid());
  ASSERT_TRUE(start);
  EXPECT_GT(*start, 0u);
  EXPECT_FALSE(processStartTime(999999999));
}

}  // namespace
}  // namespace microvm
