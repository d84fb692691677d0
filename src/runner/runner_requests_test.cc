// The runner's request dispatch, on a Runner that never started: a fake VMM,
// no guest (frames to it go nowhere), state.json in a temporary directory.
#include <sys/mman.h>
#include <gtest/gtest.h>

#include <fstream>

#include "base/fs.h"
#include "runner/runner_internal.h"

namespace microvm {

struct RunnerTestPeer {
  static Result<void> request(Runner& runner, std::string_view line) {
    auto request = decodeRequest(line);
    if (!request) return std::move(request).error();
    return runner.handleRequest(*request);
  }
  static VmState& state(Runner& runner) { return runner.state_; }
  static VmSpec& spec(Runner& runner) { return runner.spec_; }
  static void setVmm(Runner& runner, std::unique_ptr<Vmm> vmm) { runner.vmm_ = std::move(vmm); }
  static Result<void> startLoop(Runner& runner) {
    auto loop = EventLoop::create();
    if (!loop) return std::move(loop).error();
    runner.loop_.emplace(std::move(*loop));
    return success();
  }
  static void exited(Runner& runner, int code) { runner.exit_code_ = code; }
  static bool stopRequested(Runner& runner) { return runner.stop_requested_; }
  static bool suspended(Runner& runner) { return runner.suspended_; }
  static void setGuestRam(Runner& runner, UniqueFd ram) { runner.guest_ram_ = std::move(ram); }
};

namespace {

namespace fs = std::filesystem;

// Counts what the runner asks of it; a pid-less process that kill() leaves be.
class FakeVmm : public Vmm {
 public:
  Process& process() override { return process_; }
  Result<void> pause() override {
    ++pauses;
    return success();
  }
  Result<void> resume() override {
    ++resumes;
    return success();
  }
  Result<void> saveState(int fd) override {
    ++saves;
    if (fail_save) return Error(ErrorCode::kIo, "no space left on device");
    return writeAll(fd, "state");
  }
  bool fail_save = false;
  int pauses = 0;
  int resumes = 0;
  int saves = 0;

 private:
  Process process_;
};

class RunnerRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/runner-request-test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    runner_.emplace(dir_, -1, -1, -1, nullptr, nullptr);
    auto vmm = std::make_unique<FakeVmm>();
    vmm_ = vmm.get();
    RunnerTestPeer::setVmm(*runner_, std::move(vmm));
    RunnerTestPeer::state(*runner_).status = VmStatus::kRunning;
    RunnerTestPeer::state(*runner_).timings_ms["boot"] = 900;  // the workload runs
    // 1 MiB of guest RAM with one page in use, which saves must copy.
    RunnerTestPeer::spec(*runner_).memory_mib = 1;
    UniqueFd ram(::memfd_create("ram", MFD_CLOEXEC));
    ASSERT_EQ(::ftruncate(ram.get(), 1 << 20), 0);
    ASSERT_EQ(::pwrite(ram.get(), "guest page", 10, 8192), 10);
    RunnerTestPeer::setGuestRam(*runner_, std::move(ram));
  }
  void TearDown() override {
    runner_.reset();
    (void)removeTree(dir_);
  }
  Result<void> request(std::string_view line) { return RunnerTestPeer::request(*runner_, line); }
  VmStatus saved() {
    auto state = loadState(dir_);
    return state ? state->status : VmStatus::kCreated;
  }

  fs::path dir_;
  std::optional<Runner> runner_;
  FakeVmm* vmm_ = nullptr;
};

TEST_F(RunnerRequestTest, PauseAndResumeEachDoOnlyTheirOwnThing) {
  // Resuming a running VM is refused, not done: nothing resumes by default.
  EXPECT_FALSE(request(R"({"op":"resume"})"));
  EXPECT_EQ(vmm_->resumes, 0);
  ASSERT_TRUE(request(R"({"op":"pause"})"));
  EXPECT_EQ(vmm_->pauses, 1);
  EXPECT_EQ(saved(), VmStatus::kPaused);
  EXPECT_FALSE(request(R"({"op":"pause"})"));
  EXPECT_EQ(vmm_->pauses, 1);
  EXPECT_FALSE(request(R"({"op":"kill","signal":15})"));  // a frozen guest cannot act on it
  ASSERT_TRUE(request(R"({"op":"resume"})"));
  EXPECT_EQ(vmm_->resumes, 1);
  EXPECT_EQ(saved(), VmStatus::kRunning);
  EXPECT_TRUE(request(R"({"op":"kill","signal":15})"));
  EXPECT_EQ(vmm_->pauses + vmm_->resumes + vmm_->saves, 2);
}

TEST_F(RunnerRequestTest, TimingsAreRecordedAndPortsNeedANetwork) {
  ASSERT_TRUE(request(R"({"op":"timing","name":"ready","ms":12.5})"));
  auto state = loadState(dir_);
  ASSERT_TRUE(state);
  EXPECT_EQ(state->timings_ms.at("ready"), 12.5);
  auto added = request(R"({"op":"port_add","mapping":"127.0.0.1:8080:80/tcp"})");
  ASSERT_FALSE(added);
  EXPECT_NE(added.error().message().find("no network"), std::string::npos);
  EXPECT_FALSE(request(R"({"op":"port_rm","mapping":"127.0.0.1:8080:80/tcp"})"));
}

TEST_F(RunnerRequestTest, AttachNeedsItsOwnConnection) {
  auto attached = request(R"({"op":"attach","stdin":false})");
  ASSERT_FALSE(attached);
  EXPECT_NE(attached.error().message().find("own connection"), std::string::npos);
}

TEST_F(RunnerRequestTest, StopThawsAPausedVmAndArmsTheHardStop) {
  ASSERT_TRUE(RunnerTestPeer::startLoop(*runner_));
  ASSERT_TRUE(request(R"({"op":"pause"})"));
  ASSERT_TRUE(request(R"({"op":"stop","timeout":10})"));
  EXPECT_TRUE(RunnerTestPeer::stopRequested(*runner_));
  EXPECT_EQ(vmm_->resumes, 1);
  EXPECT_EQ(saved(), VmStatus::kRunning);
}

// Init still waits for its spec: saved now, no copy could ever be resumed.
TEST_F(RunnerRequestTest, AVmWhoseWorkloadHasNotStartedIsNotSaved) {
  RunnerTestPeer::state(*runner_).timings_ms.clear();
  fs::path snapshot = dir_ / "early";
  ASSERT_TRUE(makeDirs(snapshot));
  auto refused = request(R"({"op":"snapshot","dir":")" + snapshot.string() + R"("})");
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("still starting"), std::string::npos) << refused.error().message();
  EXPECT_EQ(vmm_->saves, 0);
  EXPECT_FALSE(request(R"({"op":"suspend"})"));
  EXPECT_EQ(vmm_->saves, 0);
}

TEST_F(RunnerRequestTest, SnapshotSavesStateAndDiskAndTheVmRunsOn) {
  fs::path disk = dir_ / "disk.qcow2";
  std::ofstream(disk) << "disk bytes";
  RunnerTestPeer::spec(*runner_).root_disk = disk.string();
  fs::path snapshot = dir_ / "snap";
  fs::create_directory(snapshot);
  ASSERT_TRUE(request(R"({"op":"snapshot","dir":")" + snapshot.string() + R"("})"));
  EXPECT_EQ(vmm_->saves, 1);
  EXPECT_EQ(vmm_->resumes, 1);  // it was running
  auto memory = readFile(snapshot / "memory.bin");
  ASSERT_TRUE(memory);
  EXPECT_EQ(*memory, "state");
  auto copied = readFile(snapshot / "disk.qcow2");
  ASSERT_TRUE(copied);
  EXPECT_EQ(*copied, "disk bytes");
  // Guest RAM beside it, the VM's size, with the page in use.
  auto ram = readFile(snapshot / "memory.ram");
  ASSERT_TRUE(ram);
  ASSERT_EQ(ram->size(), 1u << 20);
  EXPECT_EQ(ram->substr(8192, 10), "guest page");
}

TEST_F(RunnerRequestTest, SuspendSavesIntoTheSavingDirHoldsTheVmAndEndsItOnlyOnCommit) {
  EXPECT_FALSE(request(R"({"op":"suspend_commit"})"));  // nothing saved yet
  EXPECT_FALSE(RunnerTestPeer::suspended(*runner_));
  fs::create_directory(dir_ / ".saving");
  ASSERT_TRUE(request(R"({"op":"suspend"})"));
  EXPECT_EQ(vmm_->saves, 1);
  EXPECT_EQ(vmm_->resumes, 0);  // held for the commit
  EXPECT_EQ(saved(), VmStatus::kPaused);
  auto memory = readFile(dir_ / ".saving" / "memory.bin");
  ASSERT_TRUE(memory);
  EXPECT_EQ(*memory, "state");
  ASSERT_TRUE(request(R"({"op":"suspend_commit"})"));
  EXPECT_TRUE(RunnerTestPeer::suspended(*runner_));
}

TEST_F(RunnerRequestTest, AFailedOrAbandonedSuspendLetsTheVmCarryOn) {
  fs::create_directory(dir_ / ".saving");
  vmm_->fail_save = true;
  auto failed = request(R"({"op":"suspend"})");
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message().find("no space"), std::string::npos);
  EXPECT_EQ(vmm_->resumes, 1);  // it was running, and runs on
  EXPECT_FALSE(request(R"({"op":"suspend_commit"})"));
  // Saved, then the caller gives up (it could not seal): an unpause, and a
  // late commit is refused.
  vmm_->fail_save = false;
  (void)removeTree(dir_ / ".saving");
  fs::create_directory(dir_ / ".saving");
  ASSERT_TRUE(request(R"({"op":"suspend"})"));
  ASSERT_TRUE(request(R"({"op":"resume"})"));
  EXPECT_EQ(saved(), VmStatus::kRunning);
  EXPECT_FALSE(request(R"({"op":"suspend_commit"})"));
  EXPECT_FALSE(RunnerTestPeer::suspended(*runner_));
  // A --rm VM is not suspended.
  RunnerTestPeer::spec(*runner_).remove_on_exit = true;
  EXPECT_FALSE(request(R"({"op":"suspend"})"));
}

TEST_F(RunnerRequestTest, EverythingIsRefusedOnceTheWorkloadExited) {
  RunnerTestPeer::exited(*runner_, 0);
  for (const char* line : {R"({"op":"pause"})", R"({"op":"resume"})", R"({"op":"kill","signal":9})",
                           R"({"op":"timing","name":"ready","ms":1})"}) {
    auto refused = request(line);
    ASSERT_FALSE(refused) << line;
    EXPECT_NE(refused.error().message().find("exiting"), std::string::npos);
  }
  EXPECT_EQ(vmm_->pauses + vmm_->resumes, 0);
}

}  // namespace
}  // namespace microvm
