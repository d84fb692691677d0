// Bad input gives one clear line, exit code 125, and leaves nothing behind.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "harness.h"

namespace microvm::e2e {
namespace {

void expectCleanFailure(const Outcome& result, const std::string& needle) {
  EXPECT_EQ(result.exit_code, 125);
  EXPECT_TRUE(result.out.empty()) << result.out;
  // One error line, optionally followed by Docker's "See 'microvm run --help'." hint.
  std::string first_line = result.err.substr(0, result.err.find('\n'));
  EXPECT_EQ(first_line.rfind("microvm: ", 0), 0u) << result.err;
  EXPECT_NE(first_line.find(needle), std::string::npos) << result.err;
  std::string rest = result.err.substr(first_line.size() + 1);
  EXPECT_TRUE(rest.empty() || rest.rfind("See 'microvm", 0) == 0) << result.err;
  EXPECT_TRUE(listDir(home() / "vms").empty());
}

TEST(ErrorsTest, MissingRootfs) {
  expectCleanFailure(microvm({"run", "--rm", "--rootfs", "/nonexistent/rootfs", "--", "true"}),
                     "rootfs /nonexistent/rootfs: no such directory");
}

TEST(ErrorsTest, BadMemoryValue) {
  expectCleanFailure(microvm({"run", "--rm", "-m", "lots", "--rootfs", rootfs().string(), "--", "true"}),
                     "invalid memory size \"lots\"");
}

TEST(ErrorsTest, NoQemu) {
  expectCleanFailure(microvm({"run", "--rm", "--rootfs", rootfs().string(), "--", "true"},
                             {"MICROVM_QEMU=qemu-system-nonexistent"}),
                     "qemu-system-nonexistent not found on PATH");
}

TEST(ErrorsTest, NoKernel) {
  expectCleanFailure(microvm({"run", "--rm", "--rootfs", rootfs().string(), "--", "true"},
                             {"MICROVM_KERNEL=/nonexistent/vmlinux"}),
                     "no guest kernel at /nonexistent/vmlinux");
}

TEST(ErrorsTest, NoCommand) {
  expectCleanFailure(microvm({"run", "--rm", "--rootfs", rootfs().string()}), "no command given");
}

TEST(ErrorsTest, UnknownFlag) {
  expectCleanFailure(microvm({"run", "--bogus", "--rootfs", rootfs().string(), "--", "true"}), "--bogus");
}

TEST(InfoTest, JsonHasTheDocumentedKeys) {
  auto result = microvm({"info", "--format", "json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto info = nlohmann::json::parse(result.out);
  for (const char* key : {"qemu", "kernel", "initramfs", "accel", "data_dir"}) {
    EXPECT_TRUE(info.contains(key)) << key;
  }
  EXPECT_TRUE(info["accel"] == "kvm" || info["accel"] == "tcg") << info["accel"];
  EXPECT_EQ(info["data_dir"], home().string());
}

TEST(InfoTest, VersionAndHelp) {
  auto version = microvm({"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out.rfind("microvm version ", 0), 0u) << version.out;
  auto help = microvm({"run", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--rootfs"), std::string::npos);
}

}  // namespace
}  // namespace microvm::e2e
