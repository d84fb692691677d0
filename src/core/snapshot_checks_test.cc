// The snapshot refusals and the seal, on real files: a memory file, a kernel
// and an initramfs in a temporary directory, and a stand-in QEMU (a script
// that prints a version line).
#include "core/snapshot_checks.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "base/fs.h"
#include "base/temp_dir.h"
#include "runner/machine_config.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;

void writeBytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::string randomBytes(size_t size) {
  std::mt19937_64 generator(42);
  std::string bytes(size, '\0');
  for (auto& byte : bytes) byte = static_cast<char>(generator());
  return bytes;
}

void expectOneLine(const Error& error) {
  EXPECT_EQ(error.message().find('\n'), std::string::npos) << error.message();
}

VmSpec noVsockSpec() {
  VmSpec spec;
  spec.name = "web";
  spec.vsock = false;
  spec.runtime_dir = "/run/microvm/vm";
  return spec;
}

TEST(CheckCanSnapshotTest, AVmWithoutVsockPortsOrVolumesCanBeSaved) {
  VmSpec spec = noVsockSpec();
  spec.tmpfs.push_back({"/tmp", "size=16m"});
  EXPECT_TRUE(checkCanSnapshot(spec).ok());
}

TEST(CheckCanSnapshotTest, AReadOnlyVolumeIsRefusedTooSinceQemuCannotSaveAMounted9pExport) {
  VmSpec spec = noVsockSpec();
  spec.shares.push_back({"/srv/static", "/static", /*readonly=*/true, std::nullopt, std::nullopt, "vol0"});
  auto refused = checkCanSnapshot(spec);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(),
            "VM web has a volume at /static (-v /srv/static:/static:ro), and QEMU cannot save a mounted 9p "
            "volume; snapshots need a VM without volumes");
}

TEST(CheckCanSnapshotTest, AUserVsockPortIsRefusedInOneLineNamingIt) {
  VmSpec spec = noVsockSpec();
  spec.vsock = true;
  spec.vsock_ports.push_back({5000, "/tmp/web.sock", false});
  auto refused = checkCanSnapshot(spec);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(),
            "VM web has vsock port 5000 (--vsock 5000:/tmp/web.sock), and QEMU cannot save a vhost-user-vsock "
            "device; snapshots need a VM without --vsock ports");
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnsupported);
}

TEST(CheckCanSnapshotTest, AWritableVolumeIsRefusedInOneLineNamingItsGuestPath) {
  VmSpec spec = noVsockSpec();
  spec.shares.push_back({"/srv/static", "/static", true, std::nullopt, std::nullopt, "vol0"});
  spec.shares.push_back({"/home/me/data", "/data", false, std::nullopt, std::nullopt, "vol1"});
  auto refused = checkCanSnapshot(spec);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("writable volume at /data (-v /home/me/data:/data)"), std::string::npos)
      << refused.error().message();
  expectOneLine(refused.error());
}

TEST(CheckCanSnapshotTest, TheAgentBlocksSnapshotsOnlyWhileItNeedsTheVsockDevice) {
  VmSpec spec = noVsockSpec();
  spec.vsock = true;  // the agent, no user ports
  auto result = checkCanSnapshot(spec);
  if (machineConfigFor(spec, {}, MachineFds{}).vhost_vsock_socket.empty()) {
    EXPECT_TRUE(result.ok()) << result.error().message();
  } else {
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.error().message().find("--no-vsock"), std::string::npos);
    expectOneLine(result.error());
  }
}

class SealTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::create("microvm-seal-test");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(std::move(*dir));
    memory_ = root() / "memory.bin";
    seal_ = root() / "seal.json";
    writeBytes(memory_, randomBytes(3 << 20));
    spec_ = noVsockSpec();
    spec_.kernel = (root() / "vmlinux").string();
    spec_.initramfs = (root() / "initramfs.cpio").string();
    spec_.qemu = (root() / "qemu-system-x86_64").string();
    spec_.memory_mib = 256;
    writeBytes(spec_.kernel, "kernel image");
    writeBytes(spec_.initramfs, "initramfs archive");
    setQemuVersion("QEMU emulator version 7.2.0 (test)");
  }

  fs::path root() const { return dir_->path(); }

  void setQemuVersion(const std::string& line) {
    writeBytes(spec_.qemu, "#!/bin/sh\necho '" + line + "'\necho 'Copyright (c) 2003-2022'\n");
    ::chmod(spec_.qemu.c_str(), 0755);
  }

  Result<void> check() const { return checkSeal(memory_, spec_, seal_); }

  std::string refusal() const {
    auto result = check();
    if (result.ok()) return "(accepted)";
    expectOneLine(result.error());
    return result.error().message();
  }

  std::optional<TempDir> dir_;
  fs::path memory_;
  fs::path seal_;
  VmSpec spec_;
};

TEST_F(SealTest, AWholeSnapshotOnTheSameHostPasses) {
  ASSERT_TRUE(writeSeal(memory_, spec_, seal_).ok());
  auto seal = parseSeal(*readFile(seal_));
  ASSERT_TRUE(seal.ok()) << seal.error().message();
  EXPECT_EQ(seal->memory_size, uint64_t{3} << 20);
  EXPECT_EQ(seal->memory_xxh64.size(), 16u);
  EXPECT_EQ(seal->qemu_version, "QEMU emulator version 7.2.0 (test)");
  EXPECT_EQ(seal->machine, machineSignature(spec_));
  EXPECT_NE(seal->machine.find("virtio-rng-device"), std::string::npos) << seal->machine;
  auto checked = check();
  EXPECT_TRUE(checked.ok()) << checked.error().message();
}

TEST_F(SealTest, AMissingOrMalformedSealIsRefusedWithTheReason) {
  EXPECT_NE(refusal().find("has no seal"), std::string::npos) << refusal();
  for (const char* text : {"", "{", "[1]", "{\"version\": 1}", "{\"version\": \"1\"}",
                           "{\"version\": 1, \"memory\": {\"size\": -5, \"xxh64\": \"0\"}}",
                           "{\"version\": 1, \"memory\": {\"size\": 5, \"xxh64\": 5}}"}) {
    writeBytes(seal_, text);
    EXPECT_NE(refusal().find("malformed seal"), std::string::npos) << text << ": " << refusal();
  }
  writeBytes(seal_, "{\"version\": 7}");
  EXPECT_NE(refusal().find("seal version 7"), std::string::npos) << refusal();
}

TEST_F(SealTest, ATruncatedMemoryFileIsRefused) {
  ASSERT_TRUE(writeSeal(memory_, spec_, seal_).ok());
  ASSERT_EQ(::truncate(memory_.c_str(), 1 << 20), 0);
  EXPECT_NE(refusal().find("is truncated: its memory file"), std::string::npos) << refusal();
  EXPECT_NE(refusal().find("has 1048576 bytes, 3145728 were saved"), std::string::npos) << refusal();
}

TEST_F(SealTest, ACorruptedMemoryFileIsRefusedEvenAfterAPassedCheck) {
  ASSERT_TRUE(writeSeal(memory_, spec_, seal_).ok());
  // Old enough files, so that the passed check is recorded and trusted.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(check().ok());
  ASSERT_TRUE(fs::exists(root() / "seal.checked.json"));
  {
    std::fstream file(memory_, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(3 << 19);
    file.write("\x01\x02\x03\x04", 4);
  }
  EXPECT_NE(refusal().find("is corrupted"), std::string::npos) << refusal();
}

TEST_F(SealTest, AnotherKernelInitramfsMachineOrQemuIsRefusedWithTheReason) {
  ASSERT_TRUE(writeSeal(memory_, spec_, seal_).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(check().ok());  // recorded: a change must still be seen

  writeBytes(spec_.kernel, "another kernel");
  EXPECT_NE(refusal().find("was saved with another kernel than " + spec_.kernel), std::string::npos) << refusal();
  writeBytes(spec_.kernel, "kernel image");

  writeBytes(spec_.initramfs, "another initramfs");
  EXPECT_NE(refusal().find("another initramfs"), std::string::npos) << refusal();
  writeBytes(spec_.initramfs, "initramfs archive");

  setQemuVersion("QEMU emulator version 8.0.0 (test)");
  EXPECT_NE(refusal().find("was saved by QEMU emulator version 7.2.0 (test), but"), std::string::npos) << refusal();
  setQemuVersion("QEMU emulator version 7.2.0 (test)");
  EXPECT_TRUE(check().ok());

  VmSpec bigger = spec_;
  bigger.memory_mib = 512;
  auto refused = checkSeal(memory_, bigger, seal_);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("another machine type or device set"), std::string::npos)
      << refused.error().message();
}

TEST_F(SealTest, AnEditedSealIsCheckedInFullAgain) {
  ASSERT_TRUE(writeSeal(memory_, spec_, seal_).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(check().ok());
  auto seal = parseSeal(*readFile(seal_));
  ASSERT_TRUE(seal.ok());
  seal->kernel_sha256 = std::string(64, '0');
  writeBytes(seal_, encodeSeal(*seal));
  EXPECT_NE(refusal().find("another kernel"), std::string::npos) << refusal();
  EXPECT_NE(refusal().find("sha256 000000000000"), std::string::npos) << refusal();
}

TEST(SealParseTest, RoundTripsAndRefusesWrongTypes) {
  Seal seal{123, 1 << 20, "0123456789abcdef", "aa", "bb", "-M microvm", "QEMU emulator version 7.2.0"};
  auto parsed = parseSeal(encodeSeal(seal));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  EXPECT_EQ(*parsed, seal);
  EXPECT_FALSE(parseSeal(std::string(100 * 1024, ' ')).ok());
  EXPECT_FALSE(parseSeal("{\"version\": 1, \"memory\": {\"size\": 1.5, \"xxh64\": \"x\"}}").ok());
}

}  // namespace
}  // namespace microvm
