// `microvm exec` and `microvm cp` end to end: one real VM (booted once for the
// suite) whose guest agent is reached over vsock through the real CLI.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include "harness.h"

namespace microvm::e2e {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

constexpr char kVm[] = "exec-e2e";

std::string readAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  return text;
}

// `microvm` with MICROVM_HOME set, for shell pipelines.
// Bounded: a pipeline that hangs is killed after 10 minutes.
std::string microvmCommand() {
  return "MICROVM_HOME='" + home().string() + "' timeout --foreground 600 '" + (binDir() / "microvm").string() + "'";
}

class ExecTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    (void)microvm({"rm", "-f", kVm});
    auto started = microvm({"run", "-d", "--name", kVm, "-m", "768", "--rootfs", rootfs().string(), "--", "/bin/sh",
                            "-c", "echo booted; exec sleep 3600"});
    ASSERT_EQ(started.exit_code, 0) << started.err;
    // The agent listens from before the workload starts; the VM may still be
    // booting when `run -d` returns.
    auto deadline = std::chrono::steady_clock::now() + seconds(90);
    while (std::chrono::steady_clock::now() < deadline) {
      if (microvm({"exec", "--ping", kVm}).exit_code == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    FAIL() << "the agent of " << kVm << " never answered";
  }

  static void TearDownTestSuite() { (void)microvm({"rm", "-f", kVm}); }

  void SetUp() override {
    char pattern[] = "/tmp/microvm-exec-e2e-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  static Outcome exec(std::vector<std::string> args) {
    args.insert(args.begin(), "exec");
    return microvm(args);
  }

  fs::path dir_;
};

TEST_F(ExecTest, ExitCodesFollowDockersConventions) {
  auto result = exec({kVm, "/bin/sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(result.exit_code, 3) << result.err;
  EXPECT_EQ(result.out, "out\n");
  EXPECT_EQ(result.err, "err\n");
  EXPECT_EQ(exec({kVm, "true"}).exit_code, 0);

  auto missing = exec({kVm, "no-such-command"});
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_NE(missing.err.find("not found"), std::string::npos) << missing.err;
  EXPECT_EQ(exec({kVm, "/etc/passwd"}).exit_code, 126);
  EXPECT_EQ(exec({kVm, "/bin/sh", "-c", "kill -KILL $$"}).exit_code, 137);

  auto no_vm = exec({"no-such-vm", "true"});
  EXPECT_EQ(no_vm.exit_code, 125);
}

TEST_F(ExecTest, RunsWithTheWorkloadsEnvironmentAndTheGivenOptions) {
  auto result = exec({"-e", "EXTRA=x y", "-w", "/srv/here", "-u", "app", kVm, "/bin/sh", "-c",
                      "echo \"$EXTRA\"; pwd; id -un; echo $HOME; hostname"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out.rfind("x y\n/srv/here\napp\n/home/app\n", 0), 0u) << result.out;
  // The workload's confinement: the default capability set has no SYS_ADMIN.
  auto mount = exec({kVm, "/bin/sh", "-c", "mount -t tmpfs none /mnt 2>/dev/null; echo $?"});
  EXPECT_NE(trimmed(mount.out), "0") << mount.out;
  // And its seccomp filter (compiled once by init, installed by each exec).
  auto filtered = exec({kVm, "/bin/sh", "-c", "grep '^Seccomp:' /proc/self/status; unshare -U true 2>/dev/null; echo $?"});
  EXPECT_EQ(filtered.out, "Seccomp:\t2\n1\n") << filtered.err;
}

TEST_F(ExecTest, SigtermToTheCliEndsTheCommandWith143) {
  Cli cli({"exec", kVm, "/bin/sh", "-c", "echo ready; exec sleep 600"});
  ASSERT_TRUE(cli.waitForStdout("ready", seconds(60)));
  ::kill(cli.pid(), SIGTERM);
  auto result = cli.finish(seconds(60));
  EXPECT_EQ(result.exit_code, 143) << result.err;
  // The VM's workload is untouched.
  EXPECT_EQ(exec({kVm, "true"}).exit_code, 0);
}

TEST_F(ExecTest, StdinIsForwardedWithIAndEndsWithEof) {
  fs::path input = dir_ / "input";
  {
    std::ofstream out(input, std::ios::binary);
    std::mt19937 random(7);
    for (int i = 0; i < (1 << 20); ++i) out.put(static_cast<char>(random()));
  }
  fs::path output = dir_ / "output";
  int status = shell(microvmCommand() + " exec -i " + kVm + " cat < '" + input.string() + "' > '" + output.string() +
                     "'");
  EXPECT_EQ(status, 0);
  EXPECT_TRUE(readAll(input) == readAll(output)) << fs::file_size(output) << " bytes came back";
  // Without -i the command reads EOF at once.
  auto result = exec({kVm, "/bin/sh", "-c", "cat; echo eof"});
  EXPECT_EQ(result.out, "eof\n");
}

TEST_F(ExecTest, TwoHundredMegabytesOfOutputArriveIntact) {
  // The guest hashes what it writes (through a fifo); the host hashes what arrives.
  fs::path host_sum = dir_ / "host.sum";
  fs::path guest_sum = dir_ / "guest.sum";
  std::string script =
      "rm -f /tmp/f; mkfifo /tmp/f; sha256sum < /tmp/f > /tmp/sum & "
      "head -c 209715200 /dev/urandom | tee /tmp/f; wait; cat /tmp/sum >&2";
  int status = shell(microvmCommand() + " exec " + kVm + " sh -c '" + script + "' 2> '" + guest_sum.string() +
                     "' | sha256sum > '" + host_sum.string() + "'");
  EXPECT_EQ(status, 0);
  std::string host = readAll(host_sum).substr(0, 64);
  std::string guest = readAll(guest_sum).substr(0, 64);
  EXPECT_EQ(host.size(), 64u);
  EXPECT_EQ(host, guest);
}

TEST_F(ExecTest, ThirtyTwoConcurrentExecs) {
  std::vector<std::unique_ptr<Cli>> clis;
  for (int i = 0; i < 32; ++i) {
    clis.push_back(std::make_unique<Cli>(std::vector<std::string>{
        "exec", kVm, "/bin/sh", "-c", "sleep 1; echo session $0; exit $(($0 % 7))", std::to_string(i)}));
  }
  for (int i = 0; i < 32; ++i) {
    auto result = clis[static_cast<size_t>(i)]->finish(seconds(180));
    EXPECT_EQ(result.exit_code, i % 7) << i << ": " << result.err;
    EXPECT_EQ(result.out, "session " + std::to_string(i) + "\n");
  }
}

TEST_F(ExecTest, InteractiveShellOnATty) {
  PtyCli cli({"exec", "-it", kVm, "sh"}, winsize{30, 100, 0, 0});
  // The prompt of an interactive busybox sh ends in "# " for root.
  ASSERT_TRUE(cli.waitFor("# ", seconds(60))) << cli.output();
  cli.type("tty; stty size\r");
  ASSERT_TRUE(cli.waitFor("30 100", seconds(30))) << cli.output();
  EXPECT_NE(cli.output().find("/dev/pts/"), std::string::npos) << cli.output();
  cli.resize(winsize{40, 120, 0, 0});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  cli.type("stty size\r");
  ASSERT_TRUE(cli.waitFor("40 120", seconds(30))) << cli.output();
  cli.type("echo h\"\"i; exit 3\r");
  ASSERT_TRUE(cli.waitFor("hi\r\n", seconds(30))) << cli.output();
  EXPECT_EQ(cli.wait(seconds(30)), 3) << cli.output();
}

TEST_F(ExecTest, TtyThroughScript) {
  // script(1) gives the CLI a terminal the way an interactive login does.
  fs::path log = dir_ / "typescript";
  int status = shell("script -qfec \"" + microvmCommand() + " exec -t " + kVm +
                     " sh -c 'test -t 1 && echo on-a-tty; exit 5'\" '" + log.string() + "' > /dev/null");
  EXPECT_EQ(status, 5);
  EXPECT_NE(readAll(log).find("on-a-tty"), std::string::npos) << readAll(log);
}

// sha256 and mode of every file under `root`, by relative path.
std::map<std::string, std::string> treeSummary(const fs::path& root) {
  std::map<std::string, std::string> summary;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    struct stat st {};
    ::lstat(entry.path().c_str(), &st);
    std::string what = std::to_string(st.st_mode & 07777) + " ";
    if (S_ISLNK(st.st_mode)) {
      what += "-> " + fs::read_symlink(entry.path()).string();
    } else if (S_ISREG(st.st_mode)) {
      what += readAll(entry.path());
    } else {
      what += "dir";
    }
    summary[fs::relative(entry.path(), root).string()] = what;
  }
  return summary;
}

TEST_F(ExecTest, CopyAFileInAndOut) {
  fs::path source = dir_ / "data.bin";
  {
    std::ofstream out(source, std::ios::binary);
    std::mt19937 random(11);
    for (int i = 0; i < (3 << 20); ++i) out.put(static_cast<char>(random()));
  }
  fs::permissions(source, fs::perms(0640));
  ASSERT_EQ(microvm({"cp", source.string(), std::string(kVm) + ":/tmp/"}).exit_code, 0);
  auto guest = exec({kVm, "/bin/sh", "-c", "sha256sum /tmp/data.bin; stat -c %a /tmp/data.bin"});
  fs::path host_sum = dir_ / "sum";
  ASSERT_EQ(shell("sha256sum < '" + source.string() + "' > '" + host_sum.string() + "'"), 0);
  EXPECT_EQ(guest.out.substr(0, 64), readAll(host_sum).substr(0, 64));
  EXPECT_NE(guest.out.find("\n640\n"), std::string::npos) << guest.out;

  fs::path back = dir_ / "back.bin";
  auto copied = microvm({"cp", std::string(kVm) + ":/tmp/data.bin", back.string()});
  ASSERT_EQ(copied.exit_code, 0) << copied.err;
  EXPECT_TRUE(readAll(back) == readAll(source));
  EXPECT_EQ(fs::status(back).permissions(), fs::perms(0640));
  // Modification times travel in whole seconds.
  struct stat back_stat {}, source_stat {};
  ASSERT_EQ(::stat(back.c_str(), &back_stat), 0);
  ASSERT_EQ(::stat(source.c_str(), &source_stat), 0);
  EXPECT_EQ(back_stat.st_mtim.tv_sec, source_stat.st_mtim.tv_sec);

  auto missing = microvm({"cp", std::string(kVm) + ":/no/such/file", back.string()});
  EXPECT_EQ(missing.exit_code, 125);
}

TEST_F(ExecTest, CopyADirectoryTreeInAndOut) {
  fs::path tree = dir_ / "tree";
  fs::create_directories(tree / "sub" / "deeper");
  std::ofstream(tree / "a.txt") << "alpha\n";
  std::ofstream(tree / "sub" / "run.sh") << "#!/bin/sh\necho ran\n";
  std::ofstream(tree / "sub" / "deeper" / "empty");
  fs::permissions(tree / "sub" / "run.sh", fs::perms(0755));
  fs::permissions(tree / "a.txt", fs::perms(0600));
  fs::permissions(tree / "sub" / "deeper", fs::perms(0750));
  fs::create_symlink("../a.txt", tree / "sub" / "link");

  ASSERT_EQ(microvm({"cp", tree.string(), std::string(kVm) + ":/tmp/"}).exit_code, 0);
  auto ran = exec({kVm, "/tmp/tree/sub/run.sh"});
  EXPECT_EQ(ran.out, "ran\n") << ran.err;
  EXPECT_EQ(exec({kVm, "cat", "/tmp/tree/sub/link"}).out, "alpha\n");

  fs::create_directories(dir_ / "back");
  auto copied = microvm({"cp", std::string(kVm) + ":/tmp/tree", (dir_ / "back").string()});
  ASSERT_EQ(copied.exit_code, 0) << copied.err;
  EXPECT_EQ(treeSummary(dir_ / "back" / "tree"), treeSummary(tree));

  // "DIR/." copies the contents into an existing directory.
  ASSERT_EQ(exec({kVm, "mkdir", "-p", "/tmp/contents"}).exit_code, 0);
  ASSERT_EQ(microvm({"cp", (tree / "sub").string() + "/.", std::string(kVm) + ":/tmp/contents"}).exit_code, 0);
  EXPECT_EQ(exec({kVm, "readlink", "/tmp/contents/link"}).out, "../a.txt\n");
  EXPECT_EQ(exec({kVm, "ls", "/tmp/contents"}).out, "deeper\nlink\nrun.sh\n");
}

// What a guest writes must not become a privilege on the host: a setuid-root
// binary arrives without its setuid bit, a world-writable directory without
// its write bits for others, an existing host directory keeps its mode, and
// a symlink to / (then a directory of that name, in a second copy into the
// same place) never leads the copy out of DEST.
TEST_F(ExecTest, CopyOutPlantsNoSetuidOrWritableFilesAndStaysInDest) {
  mode_t saved_umask = ::umask(022);
  std::string marker = "microvm-e2e-escape-" + std::to_string(::getpid());
  auto made = exec({kVm, "/bin/sh", "-c",
                    "set -e; rm -rf /tmp/hostile; mkdir -p /tmp/hostile/open; "
                    "cp /bin/busybox /tmp/hostile/suid; chmod 4755 /tmp/hostile/suid; "
                    "chmod 0777 /tmp/hostile/open; echo shared > /tmp/hostile/open/file; "
                    "chmod 6666 /tmp/hostile/open/file; ln -s / /tmp/hostile/a; "
                    "stat -c '%a %u' /tmp/hostile/suid /tmp/hostile/open /tmp/hostile/open/file; "
                    "sha256sum /bin/busybox"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  // The guest really has them: setuid root, world-writable.
  ASSERT_EQ(made.out.substr(0, 20), "4755 0\n777 0\n6666 0\n") << made.out;
  std::string guest_sum = made.out.substr(made.out.rfind('\n', made.out.size() - 2) + 1, 64);

  fs::path dest = dir_ / "dest";
  fs::create_directories(dest / "hostile");
  ASSERT_EQ(::chmod((dest / "hostile").c_str(), 0700), 0);
  auto copied = microvm({"cp", std::string(kVm) + ":/tmp/hostile", dest.string()});
  ASSERT_EQ(copied.exit_code, 0) << copied.err;

  auto mode_of = [](const fs::path& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  };
  fs::path hostile = dest / "hostile";
  EXPECT_EQ(mode_of(hostile), 0700u);  // existed: kept
  EXPECT_EQ(mode_of(hostile / "suid"), 0755u);
  EXPECT_EQ(mode_of(hostile / "open"), 0755u);
  EXPECT_EQ(mode_of(hostile / "open" / "file"), 0644u);
  EXPECT_EQ(readAll(hostile / "open" / "file"), "shared\n");
  fs::path host_sum = dir_ / "sum";
  ASSERT_EQ(shell("sha256sum < '" + (hostile / "suid").string() + "' > '" + host_sum.string() + "'"), 0);
  EXPECT_EQ(readAll(host_sum).substr(0, 64), guest_sum);
  for (const auto& entry : fs::recursive_directory_iterator(hostile)) {
    struct stat st {};
    ASSERT_EQ(::lstat(entry.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, ::getuid()) << entry.path();
  }
  EXPECT_EQ(fs::read_symlink(hostile / "a"), "/");

  // The guest turns `a` into a directory holding a file and the same tree is
  // copied into the same DEST: the host's `a` is still the symlink to /.
  made = exec({kVm, "/bin/sh", "-c",
               "set -e; rm /tmp/hostile/a; mkdir /tmp/hostile/a; echo escaped > /tmp/hostile/a/" + marker});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  copied = microvm({"cp", std::string(kVm) + ":/tmp/hostile", dest.string()});
  EXPECT_NE(copied.exit_code, 0);
  EXPECT_NE(copied.err.find("exists and is not a directory"), std::string::npos) << copied.err;
  EXPECT_FALSE(fs::exists(fs::path("/") / marker));
  EXPECT_EQ(fs::read_symlink(hostile / "a"), "/");
  ::unlink((fs::path("/") / marker).c_str());
  ::umask(saved_umask);
}

}  // namespace
}  // namespace microvm::e2e
