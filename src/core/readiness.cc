// Readiness: `run -d --wait-tcp/--wait-http` returns once the workload
// answers inside the guest (probed through the guest agent, so it works with
// any network mode), or fails with what the VM printed last.
#include <algorithm>
#include <chrono>
#include <thread>

#include "base/paths.h"
#include "base/fs.h"
#include "microvm/runtime.h"

namespace microvm {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kFirstBackoff{50};
constexpr milliseconds kMaxBackoff{2000};
constexpr milliseconds kProbeTimeout{1000};

Error notReady(const VmInfo& vm, const std::string& why) {
  std::string message = "VM " + vm.name + " " + why;
  std::string console = tailLines(VmPaths(vm.dir).consoleLog(), 10);
  if (!console.empty()) message += "\nguest console (last lines):\n" + console;
  return Error(ErrorCode::kTimeout, message);
}

std::string describe(const ReadinessProbe& probe) {
  return probe.http ? "HTTP GET :" + std::to_string(probe.port) + probe.path : "TCP :" + std::to_string(probe.port);
}

}  // namespace

Result<ReadinessProbe> parseReadinessProbe(const std::string& text, bool http) {
  std::string port_text = text;
  std::string path = "/";
  if (size_t slash = text.find('/'); slash != std::string::npos) {
    if (!http) return Error(ErrorCode::kInvalidArgument, "--wait-tcp takes a port, not \"" + text + "\"");
    port_text = text.substr(0, slash);
    path = text.substr(slash);
  }
  int port = 0;
  bool digits = !port_text.empty() && port_text.size() <= 5 &&
                std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) port = std::stoi(port_text);
  if (port < 1 || port > 65535) {
    return Error(ErrorCode::kInvalidArgument, "invalid readiness port \"" + text + "\" (want 1-65535" +
                                                  (http ? "[/PATH])" : ")"));
  }
  return ReadinessProbe{http, port, path};
}

Result<void> Runtime::waitReady(const std::string& reference, const std::vector<ReadinessProbe>& probes,
                                std::chrono::seconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (const auto& probe : probes) {
    std::string last_error = "no answer yet";
    for (auto backoff = kFirstBackoff;; backoff = std::min(backoff * 2, kMaxBackoff)) {
      auto vm = inspect(reference);
      if (!vm) return std::move(vm).error();
      if (vm->status != "running") {
        std::string how = vm->has_exit_code ? "exited with code " + std::to_string(vm->exit_code) : "is " + vm->status;
        if (!vm->error.empty()) how += " (" + vm->error + ")";
        return notReady(*vm, how + " before it was ready (" + describe(probe) + ")");
      }
      if (probe.http) {
        auto status = probeHttp(reference, probe.port, probe.path, static_cast<int>(kProbeTimeout.count()));
        if (status && *status >= 200 && *status < 400) break;
        last_error = status ? "HTTP status " + std::to_string(*status) : status.error().message();
      } else {
        auto connected = probeTcp(reference, probe.port, static_cast<int>(kProbeTimeout.count()));
        if (connected) break;
        last_error = connected.error().message();
      }
      auto now = Clock::now();
      if (now >= deadline) {
        return notReady(*vm, "was not ready within " + std::to_string(timeout.count()) + " s (" + describe(probe) +
                                 ": " + last_error + ")");
      }
      std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
    }
  }
  return success();
}

}  // namespace microvm
