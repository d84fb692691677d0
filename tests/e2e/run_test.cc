// `microvm run` end to end: every test boots a real VM (TCG on machines
// without a working KVM) from a busybox rootfs and checks what came out.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "harness.h"

namespace microvm::e2e {
namespace {

using std::chrono::seconds;

TEST(RunTest, StreamsStdoutAndStderrApartAndReturnsTheExitCode) {
  auto result = microvm(runArgs({}, {"/bin/sh", "-c", "echo ok; echo err >&2; exit 3"}));
  EXPECT_EQ(result.exit_code, 3) << result.err;
  EXPECT_EQ(result.out, "ok\n");
  EXPECT_EQ(result.err, "err\n");
}

TEST(RunTest, SuccessIsZeroAndStdinIsEmpty) {
  auto result = microvm(runArgs({}, {"/bin/sh", "-c", "cat; echo done"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "done\n");
}

TEST(RunTest, MissingCommandIs127) {
  auto result = microvm(runArgs({}, {"no-such-command"}));
  EXPECT_EQ(result.exit_code, 127);
  EXPECT_NE(result.err.find("no-such-command"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("not found"), std::string::npos) << result.err;
}

TEST(RunTest, NonExecutableCommandIs126) {
  auto result = microvm(runArgs({}, {"/etc/not-executable"}));
  EXPECT_EQ(result.exit_code, 126);
  EXPECT_NE(result.err.find("permission denied"), std::string::npos) << result.err;
}

TEST(RunTest, EnvWorkdirAndUserAreApplied) {
  auto result = microvm(runArgs({"-e", "GREETING=hello world", "-w", "/srv/work", "-u", "1000:50"},
                                {"/bin/sh", "-c", "echo \"$GREETING\"; pwd; id -u; id -g; echo $PATH"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "hello world\n/srv/work\n1000\n50\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
}

TEST(RunTest, UlimitsApplyToTheWorkloadAndEveryExecAndBadOnesAreRefusedBeforeBoot) {
  std::string id = runDetached({"-u", "1000:50", "--ulimit", "nofile=256:8192", "--ulimit", "RLIMIT_CORE=unlimited"},
                               {"/bin/sh", "-c", "{ ulimit -n; ulimit -Hn; ulimit -c; } > /tmp/limits; exec sleep 600"});
  Outcome workload;
  EXPECT_TRUE(eventually([&] {
    workload = microvm({"exec", id, "cat", "/tmp/limits"});
    return workload.out.size() >= 14;  // the workload wrote all three lines
  }, std::chrono::seconds(30)));
  EXPECT_EQ(workload.out, "256\n8192\nunlimited\n") << workload.err;
  auto exec = microvm({"exec", id, "/bin/sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c"});
  EXPECT_EQ(exec.out, "256\n8192\nunlimited\n") << exec.err;
  EXPECT_EQ(microvm({"rm", "-f", id}).exit_code, 0);
  auto bad = microvm(runArgs({"--ulimit", "nofile=4096:1024"}, {"/bin/true"}));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("soft limit is above the hard one"), std::string::npos) << bad.err;
}

TEST(RunTest, UserNamesResolveThroughTheImagePasswd) {
  auto result = microvm(runArgs({"-u", "app"}, {"/bin/sh", "-c", "id -un; id -G; echo $HOME"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "app\n1000 50\n/home/app\n");
}

TEST(RunTest, HostnameDefaultsToTheShortIdAndCanBeSet) {
  auto result = microvm(runArgs({"--hostname", "box"}, {"/bin/sh", "-c", "hostname; echo $HOSTNAME"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "box\nbox\n");
}

TEST(RunTest, SigtermReachesTheWorkload) {
  Cli cli(runArgs({}, {"/bin/sh", "-c", "echo ready; exec sleep 600"}));
  ASSERT_TRUE(cli.waitForStdout("ready", seconds(60)));
  ::kill(cli.pid(), SIGTERM);
  auto result = cli.finish(seconds(60));
  EXPECT_EQ(result.exit_code, 128 + SIGTERM) << result.err;
}

TEST(RunTest, WorkloadIgnoringSigtermIsStoppedAfterTheTimeout) {
  Cli cli(runArgs({"--stop-timeout", "2"}, {"/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"}));
  ASSERT_TRUE(cli.waitForStdout("ready", seconds(60)));
  ::kill(cli.pid(), SIGTERM);
  auto result = cli.finish(seconds(60));
  EXPECT_EQ(result.exit_code, 137) << result.err;
}

TEST(RunTest, RmLeavesNoFilesOrProcessesBehind) {
  auto before = listDir(home() / "vms");
  auto result = microvm(runArgs({}, {"/bin/true"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(listDir(home() / "vms"), before);
  EXPECT_TRUE(listDir(home() / "run").empty());
  EXPECT_TRUE(processesMentioning(home().string() + "/vms").empty());
}

TEST(RunTest, WithoutRmTheVmRecordStaysWithItsExitCode) {
  auto before = listDir(home() / "vms");
  auto result = microvm({"run", "--rootfs", rootfs().string(), "--", "/bin/sh", "-c", "echo kept; exit 7"});
  EXPECT_EQ(result.exit_code, 7);
  auto after = listDir(home() / "vms");
  ASSERT_EQ(after.size(), before.size() + 1);
  std::string id;
  for (const auto& name : after) {
    if (std::find(before.begin(), before.end(), name) == before.end()) id = name;
  }
  std::ifstream state_file(home() / "vms" / id / "state.json");
  auto state = nlohmann::json::parse(state_file);
  EXPECT_EQ(state["status"], "exited");
  EXPECT_EQ(state["exit_code"], 7);
  std::ifstream log_file(home() / "vms" / id / "workload.log");
  std::string line;
  std::getline(log_file, line);
  EXPECT_EQ(nlohmann::json::parse(line)["log"], "kept\n");
  std::filesystem::remove_all(home() / "vms" / id);
}

TEST(RunTest, JsonLogsAndStepTimingsInInspect) {
  auto result = microvm({"--log-level", "info", "--log-format", "json", "run", "--name", "timed", "--rootfs",
                         rootfs().string(), "--", "echo", "timed-ok"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "timed-ok\n");
  // Every stderr line is one JSON record; "created" names the VM.
  bool created = false;
  std::istringstream lines(result.err);
  for (std::string line; std::getline(lines, line);) {
    auto record = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(record.is_discarded()) << line;
    EXPECT_TRUE(record.contains("time") && record.contains("level")) << line;
    if (record.value("msg", "") == "created") created = record.value("name", "") == "timed";
  }
  EXPECT_TRUE(created) << result.err;
  auto inspected = microvm({"inspect", "timed"});
  ASSERT_EQ(inspected.exit_code, 0) << inspected.err;
  auto timings = nlohmann::json::parse(inspected.out)[0]["timings_ms"];
  for (const char* step : {"preflight", "pull", "prepare", "boot"}) {
    EXPECT_TRUE(timings.contains(step) && timings[step].get<double>() > 0) << step << ": " << timings.dump();
  }
  EXPECT_EQ(microvm({"rm", "timed"}).exit_code, 0);
}

TEST(RunTest, TwoVmsAtOnceDoNotDisturbEachOther) {
  Cli first(runArgs({"-e", "WHO=first"}, {"/bin/sh", "-c", "for i in 1 2 3; do echo $WHO $i; sleep 0.2; done; exit 5"}));
  Cli second(runArgs({"-e", "WHO=second"}, {"/bin/sh", "-c", "for i in 1 2 3; do echo $WHO $i; sleep 0.2; done; exit 6"}));
  auto a = first.finish();
  auto b = second.finish();
  EXPECT_EQ(a.exit_code, 5) << a.err;
  EXPECT_EQ(b.exit_code, 6) << b.err;
  EXPECT_EQ(a.out, "first 1\nfirst 2\nfirst 3\n");
  EXPECT_EQ(b.out, "second 1\nsecond 2\nsecond 3\n");
}

TEST(RunTest, LargeOutputArrivesIntact) {
  // 4 MiB through the control channel, checked by content.
  auto result = microvm(runArgs({}, {"/bin/sh", "-c", "head -c 4194304 /dev/zero | tr '\\0' x"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out.size(), 4194304u);
  EXPECT_EQ(result.out.find_first_not_of('x'), std::string::npos);
}

}  // namespace
}  // namespace microvm::e2e
