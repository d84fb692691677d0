// Volumes and the workload's confinement, end to end in real VMs.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "harness.h"

namespace microvm::e2e {
namespace {

namespace fs = std::filesystem;

class Volumes : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = home().parent_path() / ("volume-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "existing") << "original\n";
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string contents(const fs::path& path) {
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
  }
  fs::path dir_;
  static inline int counter_ = 0;
};

TEST_F(Volumes, ReadOnlyIsEnforcedAndTheHostIsUntouched) {
  auto result = microvm(runArgs({"-v", dir_.string() + ":/data:ro"},
                                {"/bin/sh", "-c", "cat /data/existing; echo x > /data/f; echo y >> /data/existing"}));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_EQ(result.out, "original\n");
  EXPECT_NE(result.err.find("Read-only file system"), std::string::npos) << result.err;
  EXPECT_FALSE(fs::exists(dir_ / "f"));
  EXPECT_EQ(contents(dir_ / "existing"), "original\n");
}

TEST_F(Volumes, ReadWriteWritesReachTheHostWithTheGuestOwner) {
  // Host permissions apply to the guest's credentials: let uid 1000 in.
  fs::permissions(dir_, fs::perms::all | fs::perms::sticky_bit);
  auto result = microvm(runArgs({"-v", dir_.string() + ":/data", "-u", "1000:1000"},
                                {"/bin/sh", "-c", "echo from-guest > /data/new"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(contents(dir_ / "new"), "from-guest\n");
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "new").c_str(), &st), 0);
  if (::geteuid() == 0) {
    EXPECT_EQ(st.st_uid, 1000u);
    EXPECT_EQ(st.st_gid, 1000u);
  }
}

TEST_F(Volumes, MissingHostDirectoryStopsTheRunBeforeBoot) {
  auto result = microvm(runArgs({"-v", (dir_ / "nope").string() + ":/data"}, {"/bin/true"}));
  EXPECT_EQ(result.exit_code, 125);
  EXPECT_NE(result.err.find("no such directory"), std::string::npos) << result.err;
}

TEST(Confinement, DefaultsMatchDockerAndHardenTheKernel) {
  auto result = microvm(runArgs(
      {}, {"/bin/sh", "-c",
           "grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status; "
           "cat /proc/sys/kernel/kptr_restrict /proc/sys/kernel/dmesg_restrict /proc/sys/kernel/unprivileged_bpf_disabled "
           "/proc/sys/kernel/perf_event_paranoid /proc/sys/kernel/sysrq; unshare -U true; echo unshare=$?; keyctl-probe || true"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("CapBnd:\t00000000a80425fb"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("CapEff:\t00000000a80425fb"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("NoNewPrivs:\t1"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("Seccomp:\t2"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("2\n1\n1\n3\n0\n"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("unshare=1"), std::string::npos) << result.out;
  EXPECT_NE(result.err.find("Operation not permitted"), std::string::npos) << result.err;
  EXPECT_NE(result.out.find("keyctl: Operation not permitted"), std::string::npos) << result.out;
}

TEST(Confinement, CapDropAndUnconfinedChangeWhatTheWorkloadGets) {
  auto result = microvm(runArgs({"--cap-drop", "NET_RAW", "--security-opt", "seccomp=unconfined"},
                                {"/bin/sh", "-c", "grep -E '^(CapBnd|Seccomp):' /proc/self/status; unshare -U true; echo unshare=$?; keyctl-probe || true"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("CapBnd:\t00000000a80405fb"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("Seccomp:\t0"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("unshare=0"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("keyctl: ok"), std::string::npos) << result.out;
}

TEST(Confinement, PrivilegedHasEveryCapability) {
  auto result = microvm(runArgs({"--privileged"}, {"/bin/sh", "-c", "grep -E '^(CapBnd|NoNewPrivs):' /proc/self/status"}));
  EXPECT_EQ(result.out, "CapBnd:\t000001ffffffffff\nNoNewPrivs:\t0\n") << result.err;
}

TEST(Confinement, EnvReachesGrandchildrenAndTmpfsOptionsApply) {
  auto result = microvm(runArgs({"-e", "DEEP=value", "--tmpfs", "/scratch:size=8m", "--tmp-size", "16m"},
                                {"/bin/sh", "-c",
                                 "sh -c 'sh -c \"echo $DEEP\"'; grep -E ' /(scratch|tmp) ' /proc/mounts | cut -d' ' -f2,4"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("value\n"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("/scratch rw,nosuid,nodev,relatime,size=8192k"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("/tmp rw,nosuid,nodev,relatime,size=16384k"), std::string::npos) << result.out;
}

}  // namespace
}  // namespace microvm::e2e
