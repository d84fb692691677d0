// The workload's stdin end to end: `run -i` and `attach` feed it, its EOF
// arrives, and a line-oriented JSON-RPC server (as MCP servers are) answers
// request by request through the VM boundary.
#include <gtest/gtest.h>

#include <string>

#include "harness.h"

namespace microvm::e2e {
namespace {

using std::chrono::seconds;

TEST(StdinTest, RunInteractiveFeedsStdinAndItsEofReachesTheWorkload) {
  Cli cli(runArgs({"-i"}, {"/bin/sh", "-c", "tr a-z A-Z; echo eof-seen"}), {}, /*pipe_stdin=*/true);
  ASSERT_TRUE(cli.writeStdin("hello\nworld\n"));
  cli.closeStdin();
  auto result = cli.finish();
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "HELLO\nWORLD\neof-seen\n");
}

TEST(StdinTest, OneMegabyteOfStdinArrivesIntact) {
  // Larger than every buffer on the way (the runner's, init's, the pipe's).
  std::string data;
  for (int i = 0; data.size() < (1u << 20); ++i) data += "line " + std::to_string(i) + "\n";
  Cli cli(runArgs({"-i"}, {"/bin/sh", "-c", "wc -c; md5sum"}), {}, true);
  ASSERT_TRUE(cli.writeStdin(data));
  cli.closeStdin();
  auto result = cli.finish();
  EXPECT_EQ(result.exit_code, 0) << result.err;
  // wc consumes everything; md5sum then sees an empty stdin.
  EXPECT_EQ(result.out, std::to_string(data.size()) + "\nd41d8cd98f00b204e9800998ecf8427e  -\n");
}

// A JSON-RPC 2.0 echo server over stdio, one request per line: it answers
// each request with its params as the result, before it reads the next one.
constexpr char kJsonRpcEcho[] =
    "while IFS= read -r line; do "
    "  id=${line#*\\\"id\\\":}; id=${id%%,*}; "
    "  params=${line#*\\\"params\\\":}; params=${params%\\}}; "
    "  printf '{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":%s}\\n' \"$id\" \"$params\"; "
    "done";

TEST(StdinTest, JsonRpcServerAnswersEachRequestThroughRunInteractive) {
  Cli cli(runArgs({"-i"}, {"/bin/sh", "-c", kJsonRpcEcho}), {}, true);
  for (int id = 1; id <= 3; ++id) {
    std::string text = "ping " + std::to_string(id);
    ASSERT_TRUE(cli.writeStdin(R"({"jsonrpc":"2.0","id":)" + std::to_string(id) +
                               R"(,"method":"echo","params":{"text":")" + text + "\"}}\n"));
    // The answer comes before the next request is sent: a real round trip.
    std::string expected =
        R"({"jsonrpc":"2.0","id":)" + std::to_string(id) + R"(,"result":{"text":")" + text + "\"}}\n";
    ASSERT_TRUE(cli.waitForStdout(expected, seconds(60))) << "no answer to request " << id;
  }
  cli.closeStdin();
  auto result = cli.finish();
  EXPECT_EQ(result.exit_code, 0) << result.err;
}

TEST(StdinTest, AttachRelaysOutputAndStdinAndReturnsTheExitCode) {
  std::string name = "attach-e2e";
  auto started = microvm({"run", "-d", "-i", "--name", name, "--rootfs", rootfs().string(), "--", "/bin/sh", "-c",
                          "while read l; do echo got:$l; echo err:$l >&2; done; echo bye; exit 7"});
  ASSERT_EQ(started.exit_code, 0) << started.err;
  {
    Cli attached({"attach", name}, {}, true);
    ASSERT_TRUE(attached.writeStdin("one\n"));
    ASSERT_TRUE(attached.waitForStdout("got:one\n", seconds(60)));
    ASSERT_TRUE(attached.writeStdin("two\n"));
    attached.closeStdin();
    auto result = attached.finish();
    EXPECT_EQ(result.exit_code, 7) << result.err;
    EXPECT_EQ(result.out, "got:one\ngot:two\nbye\n");
    EXPECT_EQ(result.err, "err:one\nerr:two\n");
  }
  auto waited = microvm({"wait", name});
  EXPECT_EQ(waited.out, "7\n");
  EXPECT_EQ(microvm({"rm", name}).exit_code, 0);
}

TEST(StdinTest, AttachToAVmWithoutDashIStreamsOutputUntilItEnds) {
  // As Docker: without -i there is no stdin to attach, only the output.
  std::string name = "attach-no-i";
  ASSERT_EQ(microvm({"run", "-d", "--name", name, "--rootfs", rootfs().string(), "--", "/bin/sh", "-c",
                     "trap 'echo stopping; exit 5' TERM; while :; do echo tick; sleep 1; done"})
                .exit_code,
            0);
  Cli attached({"attach", name}, {}, true);
  ASSERT_TRUE(attached.waitForStdout("tick\n", seconds(60)));
  EXPECT_EQ(microvm({"stop", name}).exit_code, 0);
  auto result = attached.finish(seconds(60));
  EXPECT_EQ(result.exit_code, 5) << result.err;
  EXPECT_NE(result.out.find("stopping\n"), std::string::npos) << result.out;
  EXPECT_EQ(microvm({"rm", name}).exit_code, 0);
}

}  // namespace
}  // namespace microvm::e2e
