// Snapshots end to end, on real VMs through the real CLI: what a snapshot
// refuses to hold (user vsock ports, writable volumes), what a restore
// refuses to resume (a truncated, corrupted or mismatched snapshot), and
// what is fresh in a restored copy (its clock, its RNG, the virtio-rng).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "harness.h"

namespace microvm::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::seconds;

std::string status(const std::string& ref) {
  auto result = microvm({"inspect", ref});
  auto list = json::parse(result.out, nullptr, false);
  return list.is_array() && !list.empty() ? list[0].value("status", "") : "";
}

// The error output is one line (a trailing newline aside).
void expectOneLine(const Outcome& outcome) {
  std::string text = outcome.err;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.find('\n'), std::string::npos) << outcome.err;
}

fs::path snapshotDir(const std::string& name) {
  return home() / "snapshots" / name;
}

std::string readAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void writeAll(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

TEST(SnapshotTest, EveryVmHasAVirtioRngTheGuestKernelUses) {
  auto result = microvm(runArgs({"--no-vsock"}, {"cat", "/sys/devices/virtual/misc/hw_random/rng_current"}));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("virtio_rng"), std::string::npos) << result.out;
}

TEST(SnapshotTest, AWritableVolumeIsRefusedInOneLineAndTheVmKeepsRunning) {
  fs::path volume = home() / "snapshot-volume";
  fs::create_directories(volume);
  std::string id = runDetached({"--no-vsock", "-v", volume.string() + ":/data"}, kCounter);
  ASSERT_TRUE(eventually([&] { return lastTick(id) >= 1; }));
  auto refused = microvm({"snapshot", "create", id, "never-volume"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("writable volume at /data"), std::string::npos) << refused.err;
  expectOneLine(refused);
  EXPECT_FALSE(fs::exists(snapshotDir("never-volume")));
  int now = lastTick(id);
  EXPECT_TRUE(eventually([&] { return lastTick(id) > now; }));
  EXPECT_EQ(status(id), "running");
  EXPECT_EQ(microvm({"rm", "-f", id}).exit_code, 0);
}

TEST(SnapshotTest, AReadOnlyVolumeIsRefusedInOneLineBeforeQemuIsAsked) {
  fs::path volume = home() / "snapshot-volume-ro";
  fs::create_directories(volume);
  std::string id = runDetached({"--no-vsock", "-v", volume.string() + ":/static:ro"}, kCounter);
  ASSERT_TRUE(eventually([&] { return lastTick(id) >= 1; }));
  auto refused = microvm({"snapshot", "create", id, "never-volume-ro"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("has a volume at /static"), std::string::npos) << refused.err;
  expectOneLine(refused);
  EXPECT_FALSE(fs::exists(snapshotDir("never-volume-ro")));
  EXPECT_EQ(status(id), "running");
  EXPECT_EQ(microvm({"rm", "-f", id}).exit_code, 0);
}

TEST(SnapshotTest, AUserVsockPortIsRefusedNamingThePortAndTheVmKeepsRunning) {
  fs::path socket = home() / "snapshot-vsock-5000.sock";
  std::string id = runDetached({"--vsock", "5000:" + socket.string()}, kCounter);
  ASSERT_TRUE(eventually([&] { return lastTick(id) >= 1; }));
  auto refused = microvm({"snapshot", "create", id, "never-vsock"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("vsock port 5000 (--vsock 5000:" + socket.string() + ")"), std::string::npos)
      << refused.err;
  expectOneLine(refused);
  EXPECT_FALSE(fs::exists(snapshotDir("never-vsock")));
  int now = lastTick(id);
  EXPECT_TRUE(eventually([&] { return lastTick(id) > now; }));
  EXPECT_EQ(status(id), "running");
  EXPECT_EQ(microvm({"rm", "-f", id}).exit_code, 0);
}

// One snapshot, damaged and mismatched in turn; each restore is refused with
// the reason, and none leaves a VM behind.
// Booted cold, so that its RAM is the runner's to save (memory.ram); a VM
// on a template's memory saves it in memory.bin, whose damage is checked too.
TEST(SnapshotTest, TruncatedCorruptedOrMismatchedSnapshotsAreRefusedOnRestore) {
  std::string source = runDetached({"--no-vsock", "--no-template", "--name", "seal-source"}, kCounter);
  ASSERT_TRUE(eventually([&] { return lastTick(source) >= 2; }));
  auto saved = microvm({"snapshot", "create", source, "sealed"});
  ASSERT_EQ(saved.exit_code, 0) << saved.err;
  EXPECT_EQ(microvm({"rm", "-f", source}).exit_code, 0);
  fs::path memory = snapshotDir("sealed") / "memory.bin";
  fs::path seal = snapshotDir("sealed") / "seal.json";
  ASSERT_TRUE(fs::exists(seal));
  const std::string original_memory = readAll(memory);
  const std::string original_seal = readAll(seal);
  // memory.bin holds the devices; guest RAM is memory.ram beside it, sparse.
  ASSERT_GT(original_memory.size(), 4096u);
  fs::path ram = snapshotDir("sealed") / "memory.ram";
  ASSERT_TRUE(fs::exists(ram));

  auto refusedRestore = [&](const std::string& expected) {
    auto refused = microvm({"snapshot", "restore", "sealed", "--name", "never-restored"});
    EXPECT_NE(refused.exit_code, 0);
    EXPECT_NE(refused.err.find(expected), std::string::npos) << refused.err;
    expectOneLine(refused);
    EXPECT_NE(microvm({"inspect", "never-restored"}).exit_code, 0);  // no VM left behind
  };

  // Corrupted: bytes flipped in the middle, the size unchanged.
  {
    std::string corrupted = original_memory;
    for (size_t i = 0; i < 16; ++i) corrupted[corrupted.size() / 2 + i] ^= 0x5a;
    writeAll(memory, corrupted);
  }
  refusedRestore("is corrupted");
  // Truncated.
  writeAll(memory, original_memory.substr(0, original_memory.size() / 2));
  refusedRestore("is truncated");
  writeAll(memory, original_memory);

  // The RAM file: a byte of a page in use flipped, then cut short.
  {
    int fd = ::open(ram.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    off_t data = ::lseek(fd, 0, SEEK_DATA);
    ASSERT_GE(data, 0);
    char byte = 0;
    ASSERT_EQ(::pread(fd, &byte, 1, data + 100), 1);
    byte = static_cast<char>(byte ^ 0x5a);
    ASSERT_EQ(::pwrite(fd, &byte, 1, data + 100), 1);
    ::close(fd);
    refusedRestore("is corrupted");
    fd = ::open(ram.c_str(), O_RDWR | O_CLOEXEC);
    byte = static_cast<char>(byte ^ 0x5a);
    ASSERT_EQ(::pwrite(fd, &byte, 1, data + 100), 1);
    off_t size = ::lseek(fd, 0, SEEK_END);
    std::string last(4096, '\0');
    ASSERT_EQ(::pread(fd, last.data(), last.size(), size - 4096), 4096);
    ASSERT_EQ(::ftruncate(fd, size - 4096), 0);
    ::close(fd);
    refusedRestore("is truncated");
    fd = ::open(ram.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_EQ(::pwrite(fd, last.data(), last.size(), size - 4096), 4096);  // whole again
    ::close(fd);
  }

  // The network stack's state (libslirp's, restored into the copy's stack)
  // carries its own checksum: cut short, it is refused before any VM exists.
  fs::path network = snapshotDir("sealed") / "network.state";
  const std::string original_network = readAll(network);
  ASSERT_FALSE(original_network.empty());
  writeAll(network, original_network.substr(0, original_network.size() - 1));
  refusedRestore("network.state is corrupted or truncated");
  writeAll(network, original_network);

  // A seal that names another kernel, then another QEMU.
  auto edited = json::parse(original_seal);
  edited["kernel"]["sha256"] = std::string(64, '0');
  writeAll(seal, edited.dump());
  refusedRestore("was saved with another kernel");
  edited = json::parse(original_seal);
  edited["qemu"]["version"] = "QEMU emulator version 6.0.0";
  writeAll(seal, edited.dump());
  refusedRestore("was saved by QEMU emulator version 6.0.0, but");
  // A seal that is not one, and none at all.
  writeAll(seal, "{\"version\": 1, \"memory\": [");
  refusedRestore("malformed seal");
  fs::remove(seal);
  refusedRestore("has no seal");

  // Put back whole, it restores.
  writeAll(seal, original_seal);
  auto restored = microvm({"snapshot", "restore", "sealed", "--name", "seal-restored"});
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_TRUE(eventually([&] { return lastTick("seal-restored") >= 0; }));
  std::string id = inspect("seal-restored").value("id", "");
  EXPECT_NE(readAll(home() / "vms" / id / "runner.log").find("network: restored the stack's saved state"),
            std::string::npos);
  EXPECT_EQ(microvm({"rm", "-f", "seal-restored"}).exit_code, 0);
  EXPECT_EQ(microvm({"snapshot", "rm", "sealed"}).exit_code, 0);
}

int64_t hostSeconds() {
  return static_cast<int64_t>(::time(nullptr));
}

// The guest's wall clock, in whole seconds, is within 1 s of the host's.
void expectHostsClock(const std::string& vm) {
  int64_t before = hostSeconds();
  auto date = microvm({"exec", vm, "date", "+%s"});
  int64_t after = hostSeconds();
  ASSERT_EQ(date.exit_code, 0) << date.err;
  int64_t guest = std::stoll(date.out);
  EXPECT_GE(guest, before - 1) << date.out;
  EXPECT_LE(guest, after + 1) << date.out;
}

// What must be fresh in each restored copy of a default (agent-on) VM.
TEST(SnapshotTest, EachRestoredCopyHasTheHostsClockAndItsOwnRandomBytes) {
  std::string source = runDetached({"--name", "fresh-source"}, kCounter);
  ASSERT_TRUE(eventually([&] { return lastTick(source) >= 2; }));
  auto saved = microvm({"snapshot", "create", source, "fresh"});
  ASSERT_EQ(saved.exit_code, 0) << saved.err;
  EXPECT_EQ(microvm({"rm", "-f", source}).exit_code, 0);
  // The saved guest's clock stops at the save; the copies run later.
  std::this_thread::sleep_for(seconds(3));

  std::vector<std::string> bytes;
  for (const std::string name : {"fresh-1", "fresh-2"}) {
    auto restored = microvm({"snapshot", "restore", "fresh", "--name", name});
    ASSERT_EQ(restored.exit_code, 0) << restored.err;
    expectHostsClock(name);
    auto random = microvm({"exec", name, "/bin/sh", "-c", "head -c 32 /dev/urandom | od -An -tx1"});
    ASSERT_EQ(random.exit_code, 0) << random.err;
    EXPECT_GE(random.out.size(), 64u) << random.out;
    bytes.push_back(random.out);
  }
  EXPECT_NE(bytes[0], bytes[1]);
  EXPECT_EQ(microvm({"rm", "-f", "fresh-1", "fresh-2"}).exit_code, 0);
  EXPECT_EQ(microvm({"snapshot", "rm", "fresh"}).exit_code, 0);
}

// A guest's clock stands still while QEMU has it stopped; when it runs on
// (after a pause, a snapshot, a fork or a template save) it is set again.
TEST(SnapshotTest, AGuestsClockIsSetAgainWhenItRunsOnAfterAPause) {
  std::string vm = runDetached({"--name", "clock-pause"}, kCounter);
  ASSERT_TRUE(eventually([&] { return lastTick(vm) >= 1; }));
  ASSERT_EQ(microvm({"pause", vm}).exit_code, 0);
  std::this_thread::sleep_for(seconds(5));  // the guest's clock would be 5 s behind
  ASSERT_EQ(microvm({"unpause", vm}).exit_code, 0);
  expectHostsClock(vm);
  EXPECT_EQ(microvm({"rm", "-f", vm}).exit_code, 0);
}


// A connection the saved guest had open to the outside (through the user
// network, to a host server) cannot survive a restore: the copy's new network
// stack does not know it. The copy's end must fail, not hang.
TEST(SnapshotTest, AnOutsideConnectionOfTheSavedGuestEndsInTheCopyInsteadOfHanging) {
  int port = freePort();
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // SAFETY: sockaddr_in is AF_INET's sockaddr.
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  // The guest streams a line a second to the host (10.0.2.2 is the host's
  // loopback), and says when the connection ends.
  std::string script = "i=0; (while :; do echo line $i; i=$((i+1)); sleep 1; done) | nc 10.0.2.2 " +
                       std::to_string(port) + "; echo connection-ended; exec sleep 100000";
  std::string source = runDetached({"--name", "outside-source"}, {"/bin/sh", "-c", script});
  pollfd watch{listener, POLLIN, 0};
  ASSERT_EQ(::poll(&watch, 1, 60'000), 1) << "the guest never connected";
  int connection = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(connection, 0);
  char buffer[64];
  ASSERT_GT(::read(connection, buffer, sizeof buffer), 0);  // it flows
  ASSERT_EQ(microvm({"snapshot", "create", source, "outside"}).exit_code, 0);
  EXPECT_EQ(microvm({"rm", "-f", source}).exit_code, 0);
  ::close(connection);
  ::close(listener);

  ASSERT_EQ(microvm({"snapshot", "restore", "outside", "--name", "outside-copy"}).exit_code, 0);
  EXPECT_TRUE(eventually([] { return microvm({"logs", "outside-copy"}).out.find("connection-ended") != std::string::npos; },
                         seconds(60)))
      << microvm({"logs", "outside-copy"}).out;
  EXPECT_EQ(microvm({"rm", "-f", "outside-copy"}).exit_code, 0);
  EXPECT_EQ(microvm({"snapshot", "rm", "outside"}).exit_code, 0);
}

}  // namespace
}  // namespace microvm::e2e
