// Bad input gives one clear line, exit code 125, and leaves nothing behind.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "harness.h"

namespace microvm::e2e {
namespace {

namespace fs = std::filesystem;

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

TEST(ErrorsTest, QemuThatExitsAtStartIsQuoted) {
  // A QEMU that answers --version but refuses the VM's command line: the
  // error carries what it said (through runner.log's stderr pipe).
  // QEMU runs as a user of its own: the script must be reachable by anyone.
  fs::path dir = fs::temp_directory_path() / ("microvm-fake-qemu-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                           fs::perms::others_read | fs::perms::others_exec);
  fs::path fake = dir / "qemu-system-x86_64";
  {
    std::ofstream script(fake);
    script << "#!/bin/sh\n"
              "for a in \"$@\"; do case \"$a\" in -version|--version) exec qemu-system-x86_64 \"$@\";; esac; done\n"
              "echo \"fake-qemu: -device virtio-blk-device: no such bus\" >&2\nexit 1\n";
  }
  fs::permissions(fake, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                            fs::perms::others_read | fs::perms::others_exec);
  expectCleanFailure(microvm({"run", "--rm", "--rootfs", rootfs().string(), "--", "true"},
                             {"MICROVM_QEMU=" + fake.string()}),
                     "(QEMU: fake-qemu: -device virtio-blk-device: no such bus)");
  fs::remove_all(dir);
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

namespace microvm::e2e {
namespace {

nlohmann::json doctorJson(const std::vector<std::string>& extra_args, const std::vector<std::string>& env,
                          int* exit_code) {
  std::vector<std::string> args = extra_args;
  args.insert(args.end(), {"doctor", "--format", "json"});
  auto result = microvm(args, env);
  *exit_code = result.exit_code;
  return nlohmann::json::parse(result.out, nullptr, false);
}

const nlohmann::json* findCheck(const nlohmann::json& report, const std::string& name) {
  for (const auto& check : report["checks"]) {
    if (check["name"] == name) return &check;
  }
  return nullptr;
}

TEST(DoctorTest, HealthyHostPasses) {
  int code = -1;
  auto report = doctorJson({}, {}, &code);
  EXPECT_EQ(code, 0) << report.dump(2);
  EXPECT_EQ(report["ok"], true);
  ASSERT_NE(findCheck(report, "acceleration"), nullptr) << report.dump(2);
}

TEST(DoctorTest, ReportsEachFailureItIsShown) {
  // A busy port: we hold it open while doctor looks.
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  // SAFETY: sockaddr_in is the sockaddr variant for AF_INET.
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
  std::string port = std::to_string(ntohs(address.sin_port));

  int code = -1;
  auto report = doctorJson({"--data-dir", "/etc/hostname/data"}, {"MICROVM_QEMU=qemu-system-nonexistent"}, &code);
  auto with_port = microvm({"doctor", "--format", "json", "-p", port});
  ::close(listener);

  EXPECT_EQ(report["ok"], false);
  ASSERT_NE(findCheck(report, "qemu"), nullptr);
  EXPECT_EQ((*findCheck(report, "qemu"))["ok"], false);
  EXPECT_NE((*findCheck(report, "qemu"))["hint"].get<std::string>().find("qemu-system-x86"), std::string::npos);
  ASSERT_NE(findCheck(report, "data_dir"), nullptr);
  EXPECT_EQ((*findCheck(report, "data_dir"))["ok"], false);

  EXPECT_EQ(with_port.exit_code, 1);
  auto port_report = nlohmann::json::parse(with_port.out);
  ASSERT_NE(findCheck(port_report, "port " + port), nullptr) << with_port.out;
  EXPECT_EQ((*findCheck(port_report, "port " + port))["ok"], false);
}

}  // namespace
}  // namespace microvm::e2e
