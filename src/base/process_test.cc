#include "base/process.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fs.h"

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

// The child's own view of its credentials, from /proc/self/status.
std::string statusOfChild(const SpawnOptions::Credentials& credentials) {
  char path[] = "/tmp/microvm-credentials.XXXXXX";
  int fd = ::mkstemp(path);
  ::unlink(path);
  SpawnOptions options;
  options.argv = {"grep", "-E", "^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):", "/proc/self/status"};
  options.fds = {{1, fd}};
  options.credentials = credentials;
  auto child = spawn(options);
  if (!child || !child->wait()) return "spawn failed";
  std::string text(4096, '\0');
  ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  ::close(fd);
  text.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return text;
}

TEST(ProcessTest, CredentialsDropEverythingButTheKeptCapabilities) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  SpawnOptions::Credentials nobody{65534, 65534, {}, 0};
  EXPECT_EQ(statusOfChild(nobody),
            "Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nGroups:\t \n"
            "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
            "CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n");
  uint64_t keep = (uint64_t{1} << CAP_CHOWN) | (uint64_t{1} << CAP_DAC_OVERRIDE);
  SpawnOptions::Credentials chowner{65534, 65533, {65532}, keep};
  EXPECT_EQ(statusOfChild(chowner),
            "Uid:\t65534\t65534\t65534\t65534\nGid:\t65533\t65533\t65533\t65533\nGroups:\t65532 \n"
            "CapInh:\t0000000000000003\nCapPrm:\t0000000000000003\nCapEff:\t0000000000000003\n"
            "CapBnd:\t0000000000000003\nCapAmb:\t0000000000000003\nNoNewPrivs:\t1\n");
}

TEST(ProcessTest, CredentialsThatCannotBeTakenFailTheSpawn) {
  if (::geteuid() == 0) GTEST_SKIP() << "root may take any credentials";
  SpawnOptions options;
  options.argv = {"true"};
  options.credentials = SpawnOptions::Credentials{0, 0, {}, 0};
  auto child = spawn(options);
  ASSERT_FALSE(child);
  EXPECT_NE(child.error().message().find("true"), std::string::npos) << child.error().message();
}

TEST(ProcessTest, StartTimeOfSelfIsKnown) {
  auto start = processStartTime(::getpid());
  ASSERT_TRUE(start);
  EXPECT_GT(*start, 0u);
  EXPECT_FALSE(processStartTime(999999999));
}

}  // namespace
}  // namespace microvm
