// Unit tests of the exec semantics: environment, failed execs, wait statuses.
#include "guest/spawn.h"

#include <gtest/gtest.h>

namespace microvm::guest {
namespace {

TEST(WorkloadEnvironment, AddsDockerDefaultsWhenAbsent) {
  auto env = workloadEnvironment({"FOO=bar"}, "box", "/root");
  EXPECT_EQ(env,
            (std::vector<std::string>{"FOO=bar", std::string("PATH=") + kDefaultPath, "HOSTNAME=box", "HOME=/root"}));
}

TEST(WorkloadEnvironment, KeepsGivenValuesAndLastRepeat) {
  auto env = workloadEnvironment({"PATH=/x", "HOME=/h", "A=1", "HOSTNAME=given", "A=2"}, "", "/root");
  EXPECT_EQ(env, (std::vector<std::string>{"PATH=/x", "HOME=/h", "A=2", "HOSTNAME=given"}));
}

TEST(DescribeExecFailure, MatchesDockerCodes) {
  auto missing = describeExecFailure("nope", ENOENT);
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_EQ(missing.message, "exec \"nope\": executable file not found in $PATH");

  auto missing_path = describeExecFailure("/bin/nope", ENOENT);
  EXPECT_EQ(missing_path.exit_code, 127);
  EXPECT_EQ(missing_path.message, "exec \"/bin/nope\": no such file or directory");

  auto denied = describeExecFailure("/etc/passwd", EACCES);
  EXPECT_EQ(denied.exit_code, 126);
  EXPECT_EQ(denied.message, "exec \"/etc/passwd\": permission denied");
}

TEST(ExitCodeFromWaitStatus, ExitStatusOr128PlusSignal) {
  EXPECT_EQ(exitCodeFromWaitStatus(3 << 8), 3);  // W_EXITCODE(3, 0)
  EXPECT_EQ(exitCodeFromWaitStatus(15), 143);    // killed by SIGTERM
}

}  // namespace
}  // namespace microvm::guest
