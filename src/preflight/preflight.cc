#include "preflight/preflight.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/process.h"
#include "base/unique_fd.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

constexpr unsigned long long kMinFreeDisk = 2ull << 30;    // a base image plus some VMs
constexpr unsigned long long kMinFreeMemory = 512ull << 20;

PreflightCheck checkTool(const std::string& name, const std::string& tool, const std::string& hint) {
  PreflightCheck check{name, false, true, "", hint};
  auto found = findOnPath(tool);
  if (!found) {
    check.detail = tool + " not found on PATH";
    return check;
  }
  check.ok = true;
  check.detail = found->string();
  return check;
}

PreflightCheck checkFile(const std::string& name, const fs::path& path, const std::string& hint) {
  PreflightCheck check{name, ::access(path.c_str(), R_OK) == 0, true, path.string(), hint};
  if (!check.ok) check.detail = "no " + name + " at " + path.string();
  return check;
}

// The nearest existing ancestor, for statvfs and access on a dir not yet made.
fs::path existingAncestor(fs::path path) {
  std::error_code ec;
  while (!path.empty() && !fs::exists(path, ec) && path != path.parent_path()) path = path.parent_path();
  return path;
}

PreflightCheck checkDataDir(const fs::path& dir) {
  PreflightCheck check{"data_dir", false, true, dir.string(), "pick a writable directory with --data-dir or MICROVM_HOME"};
  fs::path probe_dir = existingAncestor(dir);
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    check.detail = dir.string() + " exists and is not a directory";
    return check;
  }
  if (::access(probe_dir.c_str(), W_OK | X_OK) != 0 || !fs::is_directory(probe_dir, ec)) {
    check.detail = dir.string() + " is not writable";
    return check;
  }
  check.ok = true;
  return check;
}

PreflightCheck checkDisk(const fs::path& dir) {
  PreflightCheck check{"disk", false, false, "", "free some space in the data dir's filesystem"};
  struct statvfs stats {};
  if (::statvfs(existingAncestor(dir).c_str(), &stats) != 0) {
    check.detail = "cannot stat the data dir's filesystem";
    return check;
  }
  unsigned long long free_bytes = static_cast<unsigned long long>(stats.f_bavail) * stats.f_frsize;
  check.detail = std::to_string(free_bytes >> 20) + " MiB free";
  check.ok = free_bytes >= kMinFreeDisk;
  return check;
}

PreflightCheck checkMemory() {
  PreflightCheck check{"memory", false, false, "", "free some memory, or give VMs less (-m)"};
  auto meminfo = readFile("/proc/meminfo");
  size_t at = meminfo ? meminfo->find("MemAvailable:") : std::string::npos;
  if (at == std::string::npos) {
    check.detail = "cannot read MemAvailable";
    return check;
  }
  unsigned long long kib = std::strtoull(meminfo->c_str() + at + 13, nullptr, 10);
  check.detail = std::to_string(kib >> 10) + " MiB available";
  check.ok = (kib << 10) >= kMinFreeMemory;
  return check;
}

PreflightCheck checkPort(int port) {
  PreflightCheck check{"port " + std::to_string(port), false, true, "",
                       "stop what listens there, or publish another host port"};
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // SAFETY: sockaddr_in is the sockaddr variant for AF_INET; bind reads sizeof(address) bytes.
  if (port < 1 || port > 65535 || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    check.detail = "127.0.0.1:" + std::to_string(port) + " is in use or not allowed";
    return check;
  }
  check.ok = true;
  check.detail = "127.0.0.1:" + std::to_string(port) + " is free";
  return check;
}

PreflightCheck checkAcceleration() {
  PreflightCheck check{"kvm", false, false, "", "without KVM, VMs run under TCG (software emulation), slower"};
  UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  check.ok = kvm.valid();
  check.detail = kvm.valid() ? "/dev/kvm opens (a test boot decides whether it is used)"
                             : Error::fromErrno("open /dev/kvm").message();
  return check;
}

}  // namespace

std::vector<PreflightCheck> runPreflightChecks(const PreflightInputs& inputs, bool detailed) {
  std::vector<PreflightCheck> checks;
  PreflightCheck qemu = checkTool("qemu", inputs.qemu, "install qemu-system-x86 or set MICROVM_QEMU");
  if (qemu.ok && detailed) {
    std::string output;
    if (runCommand({qemu.detail, "--version"}, &output)) qemu.detail += ": " + output.substr(0, output.find('\n'));
  }
  checks.push_back(qemu);
  checks.push_back(checkTool("qemu-img", "qemu-img", "install qemu-utils"));
  checks.push_back(checkTool("mkfs.ext4", "mkfs.ext4", "install e2fsprogs"));
  checks.push_back(checkFile("guest kernel", inputs.kernel, "build it with kernel/build.sh, or set MICROVM_KERNEL"));
  checks.push_back(checkFile("guest initramfs", inputs.initramfs, "build microvm, or set MICROVM_INITRAMFS"));
  checks.push_back(checkFile("runner binary", inputs.runner, "build microvm, or set MICROVM_RUNNER"));
  checks.push_back(checkAcceleration());
  if (!inputs.data_dir.empty()) {
    checks.push_back(checkDataDir(inputs.data_dir));
    checks.push_back(checkDisk(inputs.data_dir));
  }
  checks.push_back(checkMemory());
  for (int port : inputs.host_ports) checks.push_back(checkPort(port));
  return checks;
}

Result<void> runPreflight(const PreflightInputs& inputs) {
  for (const auto& check : runPreflightChecks(inputs, /*detailed=*/false)) {
    if (check.required && !check.ok) return Error(ErrorCode::kUnavailable, check.detail + " (" + check.hint + ")");
  }
  return success();
}

}  // namespace microvm
