// Volumes and the workload's confinement, end to end in real VMs.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
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

// "Key" -> "value" from /proc/PID/status.
std::map<std::string, std::string> processStatus(int pid) {
  std::map<std::string, std::string> fields;
  std::ifstream file("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(file, line);) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    size_t value = line.find_first_not_of(" \t", colon + 1);
    fields[line.substr(0, colon)] = value == std::string::npos ? "" : line.substr(value);
  }
  return fields;
}

TEST_F(Volumes, AsRootEachQemuRunsAsItsOwnUnprivilegedUserWithOnlyWhatItsSharesNeed) {
  if (::geteuid() != 0) GTEST_SKIP() << "QEMU changes user only when microvm runs as root";
  // No volume: no capability at all; read-only volumes: reading past file
  // modes; a writable volume: creating files for the guest's owners.
  struct Case {
    std::vector<std::string> flags;
    std::string capabilities;
  };
  std::vector<Case> cases = {{{}, "0000000000000000"},
                             {{"-v", dir_.string() + ":/data:ro"}, "0000000000000004"},
                             {{"-v", dir_.string() + ":/data"}, "000000000000001b"}};
  std::vector<std::string> ids;
  std::set<int> uids;
  for (const auto& c : cases) {
    std::string id = runDetached(c.flags, {"/bin/sh", "-c", "echo up; sleep 60"});
    ids.push_back(id);
    // The VM works as that user: the guest booted and its output came back.
    bool up = false;
    for (int i = 0; i < 600 && !up; ++i) {
      up = microvm({"logs", id}).out.find("up") != std::string::npos;
      if (!up) ::usleep(100000);
    }
    EXPECT_TRUE(up) << id;
    auto vm = inspect(id);
    int pid = vm["qemu_pid"].get<int>();
    ASSERT_GT(pid, 0) << vm.dump();
    ASSERT_TRUE(vm["qemu_user"].is_object()) << vm.dump();
    int uid = vm["qemu_user"]["uid"].get<int>();
    int gid = vm["qemu_user"]["gid"].get<int>();
    EXPECT_GE(uid, 2000000000);
    uids.insert(uid);
    auto status = processStatus(pid);
    std::string u = std::to_string(uid);
    std::string g = std::to_string(gid);
    EXPECT_EQ(status["Uid"], u + "\t" + u + "\t" + u + "\t" + u);
    EXPECT_EQ(status["Gid"], g + "\t" + g + "\t" + g + "\t" + g);
    EXPECT_EQ(status["Groups"], "");
    EXPECT_EQ(status["CapEff"], c.capabilities);
    EXPECT_EQ(status["CapPrm"], c.capabilities);
    EXPECT_EQ(status["CapBnd"], c.capabilities);
    EXPECT_EQ(status["NoNewPrivs"], "1");
    EXPECT_EQ(status["Seccomp"], "2");  // QEMU's own -sandbox
    // The runner gave up root (RunnerTest below) and kept only CAP_KILL (to
    // stop that QEMU) and CAP_NET_BIND_SERVICE (for `port add`).
    auto runner = processStatus(vm["runner_pid"].get<int>());
    EXPECT_EQ(runner["CapEff"], "0000000000000420");
    EXPECT_EQ(runner["CapPrm"], "0000000000000420");
    EXPECT_EQ(runner["CapBnd"], "0000000000000420");
    EXPECT_EQ(runner["NoNewPrivs"], "1");
  }
  EXPECT_EQ(uids.size(), cases.size()) << "two running VMs share a QEMU user";
  for (const auto& id : ids) EXPECT_EQ(microvm({"rm", "-f", id}).exit_code, 0);
}

// One HTTP/1.0 GET to 127.0.0.1:port; the whole response, "" on failure.
std::string httpGet(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval limit{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  // SAFETY: sockaddr_in is the sockaddr of AF_INET.
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return "";
  }
  std::string request = "GET / HTTP/1.0\r\n\r\n";
  (void)!::write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  for (ssize_t got; (got = ::read(fd, buffer, sizeof buffer)) > 0;) response.append(buffer, static_cast<size_t>(got));
  ::close(fd);
  return response;
}

// A port below 1024 that nothing on 127.0.0.1 uses now; 0 if none is found.
int freeLowPort() {
  for (int port = 700; port < 1000; ++port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // SAFETY: sockaddr_in is the sockaddr of AF_INET.
    bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    ::close(fd);
    if (free) return port;
  }
  return 0;
}

TEST(RunnerTest, AsRootTheRunnerGivesUpRootForItsOwnIdWithSeccompAndTheVmStillWorks) {
  if (::geteuid() != 0) GTEST_SKIP() << "the runner changes user only when microvm runs as root";
  int host_port = freePort();
  std::string id = runDetached({"--rm", "-p", std::to_string(host_port) + ":8080"},
                               {"/bin/sh", "-c", "mkdir -p /www && echo runner-token > /www/index.html && exec httpd -f -p 8080 -h /www"});
  ASSERT_FALSE(id.empty());
  bool served = false;
  for (int i = 0; i < 900 && !served; ++i) {
    served = httpGet(host_port).find("runner-token") != std::string::npos;
    if (!served) ::usleep(100000);
  }
  EXPECT_TRUE(served) << "the published port does not reach the guest";

  auto vm = inspect(id);
  ASSERT_TRUE(vm["runner_user"].is_object()) << vm.dump();
  ASSERT_TRUE(vm["qemu_user"].is_object()) << vm.dump();
  int uid = vm["runner_user"]["uid"].get<int>();
  int qemu_uid = vm["qemu_user"]["uid"].get<int>();
  // Its own id, from the same slot as QEMU's, and never QEMU's.
  EXPECT_EQ(uid, qemu_uid + 65536);
  auto status = processStatus(vm["runner_pid"].get<int>());
  std::string u = std::to_string(uid);
  EXPECT_EQ(status["Uid"], u + "\t" + u + "\t" + u + "\t" + u);
  EXPECT_EQ(status["Gid"], u + "\t" + u + "\t" + u + "\t" + u);
  EXPECT_EQ(status["Groups"], "");
  EXPECT_EQ(status["CapEff"], "0000000000000420");  // CAP_KILL, CAP_NET_BIND_SERVICE
  EXPECT_EQ(status["CapPrm"], "0000000000000420");
  EXPECT_EQ(status["CapBnd"], "0000000000000420");
  EXPECT_EQ(status["CapInh"], "0000000000000000");
  EXPECT_EQ(status["CapAmb"], "0000000000000000");
  EXPECT_EQ(status["NoNewPrivs"], "1");
  EXPECT_EQ(status["Seccomp"], "2");

  // It writes its state as itself; root's files stay root's.
  fs::path vm_dir = home() / "vms" / vm["id"].get<std::string>();
  struct stat st {};
  ASSERT_EQ(::stat((vm_dir / "state.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, static_cast<uid_t>(uid));
  ASSERT_EQ(::stat((vm_dir / "spec.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  ASSERT_EQ(::stat(vm_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 01770u);

  // exec (the agent over vsock), and `port add` of a port below 1024.
  auto exec = microvm({"exec", id, "cat", "/www/index.html"});
  EXPECT_EQ(exec.exit_code, 0) << exec.err;
  EXPECT_EQ(exec.out, "runner-token\n");
  int low_port = freeLowPort();
  ASSERT_NE(low_port, 0);
  auto added = microvm({"port", id, "add", "127.0.0.1:" + std::to_string(low_port) + ":8080"});
  EXPECT_EQ(added.exit_code, 0) << added.err;
  EXPECT_NE(httpGet(low_port).find("runner-token"), std::string::npos) << "port add of " << low_port;
  EXPECT_EQ(inspect(id)["network"]["ports"].size(), 2u) << inspect(id).dump();

  // stop, and --rm: its directory and runtime directory are gone.
  auto stopped = microvm({"stop", id});
  EXPECT_EQ(stopped.exit_code, 0) << stopped.err;
  fs::path runtime_dir = home() / "run" / vm["id"].get<std::string>().substr(0, 12);
  bool gone = false;
  for (int i = 0; i < 300 && !gone; ++i) {
    gone = !fs::exists(vm_dir) && !fs::exists(runtime_dir);
    if (!gone) ::usleep(100000);
  }
  EXPECT_TRUE(gone) << vm_dir << " or " << runtime_dir << " is still there";
  EXPECT_EQ(microvm({"ps", "-a", "-q"}).out.find(id.substr(0, 12)), std::string::npos);
}

TEST_F(Volumes, UidAndGidOptionsShowTheHostOwnerAsChosenAndWritesKeepTheHostOwner) {
  if (::geteuid() != 0) GTEST_SKIP() << "idmapped volumes need root";
  // The directory and its file belong to root on the host.
  ASSERT_EQ(::chown(dir_.c_str(), 0, 0), 0);
  ASSERT_EQ(::chown((dir_ / "existing").c_str(), 0, 0), 0);
  ::chmod(dir_.c_str(), 0755);
  ::chmod((dir_ / "existing").c_str(), 0644);
  auto result = microvm(runArgs({"-v", dir_.string() + ":/data:uid=1000,gid=1001", "-u", "1000:1001"},
                                {"/bin/sh", "-c",
                                 "stat -c %u:%g /data /data/existing; echo more >> /data/existing; "
                                 "echo new > /data/new; stat -c %u:%g /data/new"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "1000:1001\n1000:1001\n1000:1001\n") << result.err;
  EXPECT_EQ(contents(dir_ / "existing"), "original\nmore\n");
  EXPECT_EQ(contents(dir_ / "new"), "new\n");
  for (const char* name : {"existing", "new"}) {
    struct stat st {};
    ASSERT_EQ(::stat((dir_ / name).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u) << name;
    EXPECT_EQ(st.st_gid, 0u) << name;
  }

  // Read-only still holds on the host, and the owner shows as chosen.
  auto readonly = microvm(runArgs({"-v", dir_.string() + ":/data:ro,uid=1000"},
                                  {"/bin/sh", "-c", "stat -c %u:%g /data/existing; echo x > /data/f"}));
  EXPECT_NE(readonly.exit_code, 0);
  EXPECT_EQ(readonly.out, "1000:0\n");
  EXPECT_NE(readonly.err.find("Read-only file system"), std::string::npos) << readonly.err;
  EXPECT_FALSE(fs::exists(dir_ / "f"));
}

TEST_F(Volumes, UidOptionErrorsComeBeforeBoot) {
  auto malformed = microvm(runArgs({"-v", dir_.string() + ":/data:uid=alice"}, {"/bin/true"}));
  EXPECT_NE(malformed.exit_code, 0);
  EXPECT_NE(malformed.err.find("uid=N"), std::string::npos) << malformed.err;
  if (::geteuid() != 0) {
    auto refused = microvm(runArgs({"-v", dir_.string() + ":/data:uid=1000"}, {"/bin/true"}));
    EXPECT_EQ(refused.exit_code, 125);
    EXPECT_NE(refused.err.find("needs microvm to run as root"), std::string::npos) << refused.err;
    return;
  }
  // procfs cannot be idmapped: the run stops before the guest boots.
  auto unsupported = microvm(runArgs({"-v", "/proc/sys:/data:uid=1000"}, {"/bin/echo", "booted"}));
  EXPECT_EQ(unsupported.exit_code, 125);
  EXPECT_EQ(unsupported.out, "");
  EXPECT_NE(unsupported.err.find("does not support idmapped mounts"), std::string::npos) << unsupported.err;
}

TEST(VmmUser, AKernelOnlyRootMayReadStillBoots) {
  if (::geteuid() != 0) GTEST_SKIP() << "QEMU changes user only when microvm runs as root";
  // QEMU's user could not open this file: it is handed over as a sealed copy.
  fs::path kernel = home().parent_path() / "vmlinux-0600";
  fs::copy_file(binDir() / ".." / "share" / "microvm" / "vmlinux", kernel, fs::copy_options::overwrite_existing);
  ::chmod(kernel.c_str(), 0600);
  auto result = microvm(runArgs({}, {"/bin/echo", "booted"}), {"MICROVM_KERNEL=" + kernel.string()});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "booted\n");
  fs::remove(kernel);
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

TEST(Confinement, ADockerSeccompProfileIsCompiledOnTheHostAndEnforcedInTheGuest) {
  // The runner compiles the profile and sends init the program; a syscall
  // libseccomp does not know is skipped, and said so in runner.log.
  fs::path profile = home().parent_path() / "seccomp-no-mkdir.json";
  {
    std::ofstream out(profile);
    out << R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
               {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
               {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_ERRNO"}]})";
  }
  auto result = microvm({"run", "--name", "seccomp-host-compiled", "--security-opt", "seccomp=" + profile.string(),
                         "--rootfs", rootfs().string(), "--", "/bin/sh", "-c",
                         "grep '^Seccomp:' /proc/self/status; mkdir /tmp/d; echo mkdir=$?; touch /tmp/f; echo touch=$?"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "Seccomp:\t2\nmkdir=1\ntouch=0\n");
  EXPECT_NE(result.err.find("Permission denied"), std::string::npos) << result.err;
  auto inspected = microvm({"inspect", "seccomp-host-compiled"});
  ASSERT_EQ(inspected.exit_code, 0) << inspected.err;
  fs::path dir = nlohmann::json::parse(inspected.out)[0]["dir"].get<std::string>();
  std::ifstream log_file(dir / "runner.log");
  std::string log((std::istreambuf_iterator<char>(log_file)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("seccomp: the workload's filter compiled for init ("), std::string::npos) << log;
  EXPECT_NE(log.find("skipping syscalls unknown to libseccomp"), std::string::npos) << log;
  EXPECT_NE(log.find("no_such_syscall_anywhere"), std::string::npos) << log;
  EXPECT_EQ(microvm({"rm", "seccomp-host-compiled"}).exit_code, 0);
  fs::remove(profile);
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
