// Readiness probes end to end: `run -d --wait-tcp/--wait-http` returns only
// once the workload answers inside the guest, and fails clearly (stopping the
// VM) if it dies first or never answers.
#include <gtest/gtest.h>

#include <string>

#include "harness.h"

namespace microvm::e2e {
namespace {

std::vector<std::string> detached(const std::string& name, std::vector<std::string> flags,
                                  std::vector<std::string> command) {
  std::vector<std::string> args = {"run", "-d", "--name", name, "--rootfs", rootfs().string()};
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back("--");
  args.insert(args.end(), command.begin(), command.end());
  return args;
}

TEST(ReadinessTest, RunReturnsOnlyOnceTheHttpServerAnswers) {
  // The page is written two seconds in, just before the server starts: it
  // exists when run returns only if run waited for the server.
  auto started = microvm(detached("ready-http", {"--wait-http", "8080/index.html"},
                                  {"/bin/sh", "-c",
                                   "sleep 2; mkdir -p /www; echo ready > /www/index.html; "
                                   "exec httpd -f -p 8080 -h /www"}));
  ASSERT_EQ(started.exit_code, 0) << started.err;
  auto page = microvm({"exec", "ready-http", "cat", "/www/index.html"});
  EXPECT_EQ(page.exit_code, 0) << page.err;
  EXPECT_EQ(page.out, "ready\n");
  EXPECT_EQ(microvm({"rm", "-f", "ready-http"}).exit_code, 0);
}

TEST(ReadinessTest, TcpProbeWaitsForTheListener) {
  auto started = microvm(detached("ready-tcp", {"--wait-tcp", "7000"},
                                  {"/bin/sh", "-c", "sleep 2; touch /tmp/listening; exec httpd -f -p 7000"}));
  ASSERT_EQ(started.exit_code, 0) << started.err;
  EXPECT_EQ(microvm({"exec", "ready-tcp", "test", "-e", "/tmp/listening"}).exit_code, 0);
  EXPECT_EQ(microvm({"rm", "-f", "ready-tcp"}).exit_code, 0);
}

TEST(ReadinessTest, AWorkloadThatDiesFirstFailsTheRunWithItsExitCode) {
  auto started = microvm(detached("ready-dies", {"--wait-tcp", "7000"}, {"/bin/sh", "-c", "sleep 1; exit 3"}));
  EXPECT_EQ(started.exit_code, 125);
  EXPECT_NE(started.err.find("exited with code 3 before it was ready"), std::string::npos) << started.err;
  EXPECT_NE(started.err.find("guest console"), std::string::npos) << started.err;
  EXPECT_EQ(microvm({"rm", "-f", "ready-dies"}).exit_code, 0);
}

TEST(ReadinessTest, ATimeoutStopsTheVmAndSaysWhatWasAwaited) {
  auto started = microvm(detached("ready-never", {"--wait-http", "7000/health", "--wait-timeout", "3"},
                                  {"/bin/sleep", "600"}));
  EXPECT_EQ(started.exit_code, 125);
  EXPECT_NE(started.err.find("not ready within 3 s"), std::string::npos) << started.err;
  EXPECT_NE(started.err.find("HTTP GET :7000/health"), std::string::npos) << started.err;
  auto inspect = microvm({"inspect", "ready-never"});
  EXPECT_NE(inspect.out.find("\"exited\""), std::string::npos) << inspect.out;
  EXPECT_EQ(microvm({"rm", "ready-never"}).exit_code, 0);
}

TEST(ReadinessTest, BadProbeSpecsAreCliErrors) {
  EXPECT_EQ(microvm(detached("ready-bad", {"--wait-tcp", "80/x"}, {"/bin/true"})).exit_code, 125);
  EXPECT_EQ(microvm(detached("ready-bad", {"--wait-http", "70000"}, {"/bin/true"})).exit_code, 125);
  EXPECT_EQ(microvm({"create", "--wait-tcp", "80", "--rootfs", rootfs().string(), "--", "/bin/true"}).exit_code, 125);
}

}  // namespace
}  // namespace microvm::e2e
