// Detached VMs and their lifecycle, end to end: every test boots real VMs
// through the real CLI, and checks processes and files, not just messages.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "harness.h"

namespace microvm::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::seconds;

bool noProcessesFor(const std::string& id) { return processesMentioning(id).empty(); }

TEST(LifecycleTest, DetachedRunPsLogsPauseUnpauseStopRm) {
  std::string id = runDetached({"--name", "scenario"}, kCounter);
  auto ps = microvm({"ps"});
  EXPECT_NE(ps.out.find(id.substr(0, 12)), std::string::npos) << ps.out;
  EXPECT_NE(ps.out.find("scenario"), std::string::npos);
  ASSERT_TRUE(eventually([&] { return lastTick("scenario") >= 2; })) << microvm({"logs", "scenario"}).out;

  ASSERT_EQ(microvm({"pause", "scenario"}).exit_code, 0);
  EXPECT_EQ(inspect("scenario")["status"], "paused");
  int frozen = lastTick("scenario");
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(lastTick("scenario"), frozen) << "a paused guest must not make progress";

  ASSERT_EQ(microvm({"unpause", "scenario"}).exit_code, 0);
  EXPECT_EQ(inspect("scenario")["status"], "running");
  EXPECT_TRUE(eventually([&] { return lastTick("scenario") >= frozen + 3; }));

  auto stop = microvm({"stop", "scenario"});
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  EXPECT_EQ(stop.out, "scenario\n");
  auto state = inspect(id);
  EXPECT_EQ(state["status"], "exited");
  EXPECT_EQ(state["exit_code"], 128 + SIGTERM);
  EXPECT_EQ(microvm({"ps"}).out.find(id.substr(0, 12)), std::string::npos);
  EXPECT_NE(microvm({"ps", "-a"}).out.find("Exited (143)"), std::string::npos);

  EXPECT_EQ(microvm({"rm", id.substr(0, 8)}).exit_code, 0);  // a unique prefix is enough
  EXPECT_EQ(microvm({"inspect", id}).exit_code, 1);
  EXPECT_FALSE(std::filesystem::exists(home() / "vms" / id));
  EXPECT_TRUE(noProcessesFor(id));
}

TEST(LifecycleTest, StopIsHardAfterTheTimeoutForAWorkloadIgnoringSigterm) {
  std::string id = runDetached({}, {"/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"});
  ASSERT_TRUE(eventually([&] { return microvm({"logs", id}).out.find("ready") != std::string::npos; }));
  EXPECT_EQ(microvm({"stop", "-t", "1", id}).exit_code, 0);
  EXPECT_EQ(inspect(id)["exit_code"], 137);
  EXPECT_EQ(microvm({"rm", id}).exit_code, 0);
  EXPECT_TRUE(noProcessesFor(id));
}

TEST(LifecycleTest, KillDeliversTheSignalAndWaitPrintsTheCode) {
  std::string id = runDetached({}, {"/bin/sh", "-c", "trap 'echo got usr1; exit 9' USR1; echo ready; while :; do sleep 0.1; done"});
  ASSERT_TRUE(eventually([&] { return microvm({"logs", id}).out.find("ready") != std::string::npos; }));
  EXPECT_EQ(microvm({"kill", "-s", "USR1", id}).exit_code, 0);
  auto waited = microvm({"wait", id});
  EXPECT_EQ(waited.out, "9\n");
  EXPECT_NE(microvm({"logs", id}).out.find("got usr1"), std::string::npos);
  EXPECT_EQ(microvm({"rm", id}).exit_code, 0);
}

TEST(LifecycleTest, CreateStartAndRestartKeepTheDisk) {
  auto created = microvm({"create", "--name", "keeper", "--rootfs", rootfs().string(), "--", "/bin/sh", "-c",
                          "cat /marker 2>/dev/null; echo run >> /marker; exit 7"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_EQ(inspect("keeper")["status"], "created");
  EXPECT_NE(microvm({"ps", "-a"}).out.find("Created"), std::string::npos);

  EXPECT_EQ(microvm({"start", "keeper"}).exit_code, 0);
  EXPECT_EQ(microvm({"wait", "keeper"}).out, "7\n");
  auto second = microvm({"start", "-a", "keeper"});
  EXPECT_EQ(second.exit_code, 7);
  EXPECT_EQ(second.out, "run\n");  // the first run's write survived
  EXPECT_EQ(microvm({"rm", "keeper"}).exit_code, 0);
}

TEST(LifecycleTest, NamesAreUniqueAndReferencesResolve) {
  std::string id = runDetached({"--name", "unique-name"}, {"/bin/sleep", "600"});
  auto duplicate = microvm({"run", "-d", "--name", "unique-name", "--rootfs", rootfs().string(), "--", "true"});
  EXPECT_EQ(duplicate.exit_code, 125);
  EXPECT_NE(duplicate.err.find("already in use"), std::string::npos) << duplicate.err;
  EXPECT_EQ(microvm({"inspect", "no-such-vm"}).exit_code, 1);

  auto running_rm = microvm({"rm", "unique-name"});
  EXPECT_EQ(running_rm.exit_code, 1);
  EXPECT_NE(running_rm.err.find("is running"), std::string::npos) << running_rm.err;
  EXPECT_EQ(microvm({"rm", "-f", "unique-name"}).exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(home() / "vms" / id));
  EXPECT_TRUE(noProcessesFor(id));
}

TEST(LifecycleTest, LogsFollowEndsWithTheVmAndTimestampsPrefixRecords) {
  std::string id = runDetached({}, {"/bin/sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.3; done; echo oops >&2"});
  auto followed = microvm({"logs", "-f", id});
  EXPECT_EQ(followed.out, "line 1\nline 2\nline 3\n");
  EXPECT_EQ(followed.err, "oops\n");
  auto stamped = microvm({"logs", "-t", "--tail", "1", id});
  EXPECT_TRUE(stamped.err.size() > 30 && stamped.err[4] == '-' && stamped.err.find("Z oops") != std::string::npos)
      << stamped.err;
  EXPECT_NE(microvm({"logs", "--console", id}).out.find("microvm-init"), std::string::npos);
  EXPECT_EQ(microvm({"rm", id}).exit_code, 0);
}

TEST(LifecycleTest, KilledRunnerIsReportedAndCleanedUp) {
  std::string id = runDetached({}, kCounter);  // returns as soon as QEMU runs: the guest is still booting
  int runner = inspect(id)["runner_pid"];
  int qemu = inspect(id)["qemu_pid"];
  ASSERT_GT(runner, 0);
  ::kill(runner, SIGKILL);
  ASSERT_TRUE(eventually([&] { return ::kill(qemu, 0) != 0; }, seconds(10))) << "QEMU outlived its runner";
  auto state = inspect(id);
  EXPECT_EQ(state["status"], "exited");
  EXPECT_NE(state["error"].get<std::string>().find("died unexpectedly"), std::string::npos) << state.dump();
  EXPECT_EQ(microvm({"rm", id}).exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(home() / "vms" / id));
  EXPECT_TRUE(noProcessesFor(id));
}

TEST(LifecycleTest, KilledQemuIsReported) {
  std::string id = runDetached({}, kCounter);
  ASSERT_TRUE(eventually([&] { return lastTick(id) >= 1; }));
  ::kill(inspect(id)["qemu_pid"].get<int>(), SIGKILL);
  ASSERT_TRUE(eventually([&] { return inspect(id)["status"] == "exited"; }, seconds(10)));
  auto state = inspect(id);
  EXPECT_NE(state["error"].get<std::string>().find("QEMU killed by signal 9"), std::string::npos) << state.dump();
  EXPECT_EQ(microvm({"rm", id}).exit_code, 0);
  EXPECT_TRUE(noProcessesFor(id));
}

TEST(LifecycleTest, KilledCliLeavesAVmThatPsShowsAndRmCleans) {
  auto before = listDir(home() / "vms");
  Cli cli({"run", "--rootfs", rootfs().string(), "--", "/bin/sh", "-c", "echo ready; exec sleep 600"});
  ASSERT_TRUE(cli.waitForStdout("ready", seconds(60)));
  ::kill(cli.pid(), SIGKILL);
  cli.finish(seconds(1));  // only reaps it: the VM still holds its pipes
  auto after = listDir(home() / "vms");
  ASSERT_EQ(after.size(), before.size() + 1);
  std::string id;
  for (const auto& name : after) {
    if (std::find(before.begin(), before.end(), name) == before.end()) id = name;
  }
  EXPECT_EQ(inspect(id)["status"], "running");
  EXPECT_NE(microvm({"ps"}).out.find(id.substr(0, 12)), std::string::npos);
  EXPECT_EQ(microvm({"rm", "-f", id}).exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(home() / "vms" / id));
  EXPECT_TRUE(noProcessesFor(id));
}

TEST(LifecycleTest, EightVmsInParallelThenAllRemovedLeaveNothing) {
  auto before = listDir(home() / "vms");
  std::vector<std::unique_ptr<Cli>> starts;
  for (int i = 0; i < 8; ++i) {
    starts.push_back(std::make_unique<Cli>(std::vector<std::string>{
        "run", "-d", "--name", "par" + std::to_string(i), "--rootfs", rootfs().string(), "--", "/bin/sleep", "600"}));
  }
  std::vector<std::string> ids;
  for (auto& start : starts) {
    auto result = start->finish(seconds(180));
    EXPECT_EQ(result.exit_code, 0) << result.err;
    ids.push_back(result.out.substr(0, 64));
  }
  auto ps = microvm({"ps", "--format", "json"});
  auto listed = json::parse(ps.out);
  int running = 0;
  for (const auto& vm : listed) running += vm["name"].get<std::string>().rfind("par", 0) == 0 ? 1 : 0;
  EXPECT_EQ(running, 8) << ps.out;

  std::vector<std::string> rm = {"rm", "-f"};
  for (int i = 0; i < 8; ++i) rm.push_back("par" + std::to_string(i));
  auto removed = microvm(rm);
  EXPECT_EQ(removed.exit_code, 0) << removed.err;
  EXPECT_EQ(listDir(home() / "vms"), before);
  for (const auto& id : ids) EXPECT_TRUE(noProcessesFor(id)) << id;
  EXPECT_TRUE(listDir(home() / "run").empty());
}

TEST(LifecycleTest, ConcurrentCommandsOnOneVmKeepItsStateConsistent) {
  std::string id = runDetached({}, kCounter);
  ASSERT_TRUE(eventually([&] { return lastTick(id) >= 1; }));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&id, t] {
      for (int i = 0; i < 3; ++i) {
        microvm({t % 2 == 0 ? "pause" : "unpause", id});
        microvm({"inspect", id});
        microvm({"ps", "-a"});
      }
    });
  }
  for (auto& thread : threads) thread.join();
  // Whatever order they ran in, the record is whole and the VM obeys.
  auto state = inspect(id);
  ASSERT_TRUE(state.is_object());
  EXPECT_TRUE(state["status"] == "running" || state["status"] == "paused") << state.dump();
  microvm({"unpause", id});
  int now = lastTick(id);
  EXPECT_TRUE(eventually([&] { return lastTick(id) > now; }));
  EXPECT_EQ(microvm({"stop", id}).exit_code, 0);
  EXPECT_EQ(inspect(id)["exit_code"], 128 + SIGTERM);
  EXPECT_EQ(microvm({"rm", id}).exit_code, 0);
}

// The first counter value in the VM's log, or -1.
int firstTick(const std::string& ref) {
  auto logs = microvm({"logs", ref});
  size_t at = logs.out.find("tick ");
  return at == std::string::npos ? -1 : std::stoi(logs.out.substr(at + 5));
}

// The output of `exec VM argv...`, or "exit N: <stderr>".
std::string execOut(const std::string& vm, std::vector<std::string> argv) {
  std::vector<std::string> args = {"exec", vm};
  args.insert(args.end(), argv.begin(), argv.end());
  auto result = microvm(args);
  return result.exit_code == 0 ? result.out : "exit " + std::to_string(result.exit_code) + ": " + result.err;
}

TEST(LifecycleTest, SnapshotOfADefaultVmRestoredTwiceGivesTwoIndependentVmsWithAWorkingAgent) {
  // QEMU cannot save a vhost-user-vsock device: a VM with a --vsock port is
  // refused in one line that names the port, and keeps running.
  fs::path unused = fs::temp_directory_path() / ("mvm-snap-vsock-" + std::to_string(::getpid()) + ".sock");
  std::string with_vsock = runDetached({"--name", "snap-vsock", "--vsock", "5123:" + unused.string()}, kCounter);
  auto refused = microvm({"snapshot", "create", with_vsock, "never"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("5123"), std::string::npos) << refused.err;
  EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1) << refused.err;
  EXPECT_EQ(inspect(with_vsock)["status"], "running");
  EXPECT_EQ(microvm({"rm", "-f", with_vsock}).exit_code, 0);

  // A default VM: the agent is on.
  std::string source = runDetached({"--name", "snap-source"}, kCounter);
  ASSERT_TRUE(eventually([&] { return lastTick(source) >= 3; }));
  ASSERT_EQ(execOut(source, {"sh", "-c", "echo before > /root/marker"}), "");
  // The state is saved somewhere within `create` (which also seals it).
  int before_snapshot = lastTick(source);
  auto saved = microvm({"snapshot", "create", source, "counter-snap"});
  ASSERT_EQ(saved.exit_code, 0) << saved.err;
  int at_snapshot = lastTick(source);
  EXPECT_EQ(inspect(source)["status"], "running");  // the source carries on
  EXPECT_TRUE(eventually([&] { return lastTick(source) > at_snapshot + 2; }));
  EXPECT_EQ(execOut(source, {"echo", "source-still-served"}), "source-still-served\n");

  auto listed = json::parse(microvm({"snapshot", "ls", "--format", "json"}).out);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["name"], "counter-snap");
  EXPECT_EQ(listed[0]["source_id"], source);

  auto first = microvm({"run", "-d", "--snapshot", "counter-snap", "--name", "restored-1"});
  auto second = microvm({"snapshot", "restore", "counter-snap", "--name", "restored-2"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_EQ(second.exit_code, 0) << second.err;
  // The agent answers as soon as the restore returns: no waiting loop here.
  for (const char* copy : {"restored-1", "restored-2"}) {
    EXPECT_EQ(execOut(copy, {"cat", "/root/marker"}), "before\n") << copy;
    // cp both ways, checked by content.
    fs::path in = fs::temp_directory_path() / ("mvm-snap-in-" + std::string(copy));
    fs::path out = fs::temp_directory_path() / ("mvm-snap-out-" + std::string(copy));
    std::string content = std::string("copied into ") + copy + "\n";
    { std::ofstream(in) << content; }
    ASSERT_EQ(microvm({"cp", in.string(), std::string(copy) + ":/root/in"}).exit_code, 0) << copy;
    EXPECT_EQ(execOut(copy, {"cat", "/root/in"}), content) << copy;
    ASSERT_EQ(microvm({"cp", std::string(copy) + ":/root/in", out.string()}).exit_code, 0) << copy;
    std::ifstream back(out);
    std::string got((std::istreambuf_iterator<char>(back)), std::istreambuf_iterator<char>());
    EXPECT_EQ(got, content) << copy;
    fs::remove(in);
    fs::remove(out);
  }
  ASSERT_TRUE(eventually([&] { return lastTick("restored-1") >= 0 && lastTick("restored-2") >= 0; }));
  // Both resume the saved guest: their counters start where the snapshot was,
  // not at 0, and at the same value as each other.
  int resumed = firstTick("restored-1");
  EXPECT_EQ(firstTick("restored-2"), resumed);
  EXPECT_GE(resumed, before_snapshot);
  EXPECT_LE(resumed, at_snapshot + 1);
  // Independent: files and counters. Stopping one leaves the other.
  EXPECT_EQ(execOut("restored-1", {"sh", "-c", "echo one > /root/marker"}), "");
  EXPECT_EQ(execOut("restored-2", {"cat", "/root/marker"}), "before\n");
  EXPECT_TRUE(eventually([&] { return lastTick("restored-1") >= resumed + 3; }));
  EXPECT_EQ(microvm({"stop", "restored-1"}).exit_code, 0);
  int other = lastTick("restored-2");
  EXPECT_TRUE(eventually([&] { return lastTick("restored-2") >= other + 2; }));
  EXPECT_EQ(inspect("restored-2")["status"], "running");

  EXPECT_EQ(microvm({"rm", "-f", "restored-1", "restored-2", "snap-source"}).exit_code, 0);
  EXPECT_EQ(microvm({"snapshot", "rm", "counter-snap"}).exit_code, 0);
  EXPECT_TRUE(listDir(home() / "snapshots").empty());
  EXPECT_EQ(microvm({"run", "--snapshot", "counter-snap"}).exit_code, 125);
}

}  // namespace
}  // namespace microvm::e2e
