#include "hypervisor/accel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/unique_fd.h"

namespace microvm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr auto kProbeTimeout = std::chrono::seconds(5);

std::string bootId() {
  auto text = readFile("/proc/sys/kernel/random/boot_id");
  if (!text) return "";
  std::string id = *text;
  while (!id.empty() && id.back() == '\n') id.pop_back();
  return id;
}

// Boots the probe guest under KVM. Success: QEMU exits 0 (the guest reset).
Result<void> probeKvm(const AccelProbe& probe) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) return Error::fromErrno("pipe");
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);

  MachineConfig config;
  config.accel = Acceleration::kKvm;
  config.memory_mib = 128;
  config.kernel = probe.kernel;
  config.initramfs = probe.probe_initramfs;
  config.stderr_fd = write_end.get();
  auto launched = probe.backend->launch(config);
  if (!launched) return std::move(launched).error();
  Process& vmm = (*launched)->process();
  write_end.reset();

  std::string diagnostics;
  auto deadline = std::chrono::steady_clock::now() + kProbeTimeout;
  for (;;) {
    auto status = vmm.tryWait();
    if (!status) return std::move(status).error();
    if (status->has_value()) {
      if (WIFEXITED(**status) && WEXITSTATUS(**status) == 0) return success();
      return Error(ErrorCode::kUnavailable, "KVM test boot failed: QEMU " + describeWaitStatus(**status));
    }
    // A broken nested KVM stops the VM and says so on stderr; QEMU itself
    // would wait forever, so notice the message instead of the timeout.
    if (diagnostics.find("KVM internal error") != std::string::npos) {
      std::string line = diagnostics.substr(0, diagnostics.find('\n'));
      return Error(ErrorCode::kUnavailable, "KVM test boot failed: " + line);
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return Error(ErrorCode::kTimeout, "KVM test boot did not finish in 5 s");
    pollfd pfd{read_end.get(), POLLIN, 0};
    ::poll(&pfd, 1, 20);
    char buffer[1024];
    ssize_t n = ::read(read_end.get(), buffer, sizeof buffer);
    if (n > 0 && diagnostics.size() < 65536) diagnostics.append(buffer, static_cast<size_t>(n));
  }
}

}  // namespace

Result<AccelRequest> parseAccelRequest(const std::string& text) {
  if (text.empty() || text == "auto") return AccelRequest::kAuto;
  if (text == "kvm") return AccelRequest::kKvm;
  if (text == "tcg") return AccelRequest::kTcg;
  return Error(ErrorCode::kInvalidArgument, "unknown acceleration \"" + text + "\" (want auto, kvm or tcg)");
}

Result<AccelChoice> chooseAcceleration(AccelRequest request, const AccelProbe& probe) {
  if (request == AccelRequest::kTcg) return AccelChoice{Acceleration::kTcg, "TCG requested"};

  UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm.valid()) {
    Error error = Error::fromErrno("open /dev/kvm");
    if (request == AccelRequest::kKvm) return error;
    return AccelChoice{Acceleration::kTcg, error.message() + "; using TCG (software emulation)"};
  }
  if (request == AccelRequest::kKvm) return AccelChoice{Acceleration::kKvm, "KVM requested"};

  std::string boot_id = bootId();
  if (auto cached = readFile(probe.cache_file); cached) {
    json j = json::parse(*cached, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.value("boot_id", "") == boot_id && j.value("qemu", "") == probe.qemu &&
        j.value("kernel", "") == probe.kernel.string()) {
      bool kvm_works = j.value("kvm", false);
      return AccelChoice{kvm_works ? Acceleration::kKvm : Acceleration::kTcg, j.value("reason", "")};
    }
  }

  AccelChoice choice;
  if (!fs::exists(probe.probe_initramfs)) {
    choice = {Acceleration::kTcg, "KVM not tested (no probe initramfs at " + probe.probe_initramfs.string() +
                                      "); using TCG (software emulation)"};
  } else if (auto probed = probeKvm(probe); probed) {
    choice = {Acceleration::kKvm, "KVM test boot succeeded"};
  } else {
    choice = {Acceleration::kTcg, probed.error().message() + "; using TCG (software emulation)"};
  }
  json record = {{"boot_id", boot_id},
                 {"qemu", probe.qemu},
                 {"kernel", probe.kernel.string()},
                 {"kvm", choice.accel == Acceleration::kKvm},
                 {"reason", choice.reason}};
  // Caching is an optimization: a failure to save only costs the next probe.
  if (makeDirs(probe.cache_file.parent_path())) {
    (void)writeFileAtomic(probe.cache_file, record.dump() + "\n", 0644);
  }
  return choice;
}

unsigned hostTscKhz() {
  auto cpuinfo = readFile("/proc/cpuinfo");
  if (!cpuinfo) return 0;
  size_t at = cpuinfo->find("cpu MHz");
  if (at == std::string::npos) return 0;
  size_t colon = cpuinfo->find(':', at);
  if (colon == std::string::npos) return 0;
  double mhz = std::strtod(cpuinfo->c_str() + colon + 1, nullptr);
  return mhz > 0 ? static_cast<unsigned>(std::lround(mhz * 1000)) : 0;
}

}  // namespace microvm
