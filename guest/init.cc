#include "guest/init.h"

#include <signal.h>
#include <sys/reboot.h>
#include <unistd.h>

#include <exception>
#include <memory>
#include <optional>
#include <string>

#include "agent/protocol.h"
#include "guest/agent.h"
#include "guest/agent_process.h"
#include "guest/boot.h"
#include "guest/confinement.h"
#include "guest/control_port.h"
#include "guest/network.h"
#include "guest/supervisor.h"
#include "guest/support.h"
#include "guest/workload.h"

namespace microvm::guest {
namespace {

// How long the host gets to acknowledge kExit.
constexpr milliseconds kExitAckTimeout{3'000};

// How long init waits for the host's answer to its clock probe before the
// workload starts; the host answers at once, so only a host that does not
// know the probe makes it wait this long.
constexpr milliseconds kClockAnswerTimeout{250};

// How long a finished workload's TCP connections get to send what it left
// in their queues (the host also gives its network stack a bounded time).
constexpr milliseconds kTcpDrainTimeout{1'000};

// Docker's code for "the runtime failed before the workload could run".
constexpr int kInitFailureCode = 125;

[[noreturn]] void powerOff() {
  ::sync();
  // With reboot=t a reset triple-faults the CPU, and with -no-reboot that
  // ends QEMU: there is no ACPI in a microvm guest to power off through.
  ::reboot(RB_AUTOBOOT);
  log(systemError("reboot").message());
  // PID 1 must not exit: the kernel would panic.
  for (;;) ::pause();
}

class Init {
 public:
  [[noreturn]] void run() {
    if (auto early = setUpEarlyUserspace(); !early.ok()) fail(early.error());
    // What needs no spec is done before the hello, where a boot template is
    // saved: a VM restored from it starts past this.
    if (auto lo = bringLoopbackUp(); !lo.ok()) fail(lo.error());
    bool premounted = premountRoot();
    auto port_fd = openControlPort();
    if (!port_fd.ok()) fail(port_fd.error());
    port_.emplace(std::move(*port_fd));
    if (auto hello = port_->send(agent::FrameType::kHello, agent::encodeU32(agent::kProtocolVersion)); !hello.ok()) {
      fail(hello.error());
    }
    bool refreshed = false;  // the clock is as late as the refresh was read (agent::ControlClock)
    auto spec = receiveSpec(*port_, [&](std::string_view refresh) {
      applyControlRefresh(refresh);
      refreshed = true;
    });
    if (!spec.ok()) fail(spec.error());
    if (auto entered = enterRoot(*spec, premounted); !entered.ok()) fail(entered.error());
    if (auto volumes = mountVolumes(*spec); !volumes.ok()) fail(volumes.error());
    if (auto network = configureNetwork(*spec); !network.ok()) fail(network.error());
    if (auto sysctls = writeSysctls(*spec); !sysctls.ok()) fail(sysctls.error());
    configureSystem(*spec);
    if (refreshed) {
      if (auto time = askHostClock(*port_, kClockAnswerTimeout); time.ok()) {
        setClockFromHost(*time);
      } else {
        log("clock: " + time.error().message() + "; keeping the refresh's");
      }
    }

    auto child_signals = blockChildSignals();
    if (!child_signals.ok()) fail(child_signals.error());
    // The seccomp filter and the rest of the confinement are compiled once,
    // here: the workload and the agent (for every exec) only install them.
    // Should that fail, each compiles its own and reports the error.
    std::shared_ptr<const PreparedConfinement> confinement;
    if (auto prepared = prepareConfinement(*spec, STDERR_FILENO); prepared.ok()) {
      confinement = std::make_shared<const PreparedConfinement>(std::move(*prepared));
    }
    // Before the workload, so that the agent holds none of its pipes, and so
    // that a workload's readiness can be probed from its first moment.
    AgentProcess agent(*spec, port_->fd(), confinement);
    agent.start();
    auto workload = startWorkload(*spec, confinement.get());
    if (!workload.ok()) fail(workload.error());
    pid_t pid = workload->pid;
    if (auto started = port_->send(agent::FrameType::kStarted, agent::encodeU32(static_cast<uint32_t>(pid)));
        !started.ok()) {
      fail(started.error());
    }
    int code = Supervisor(*port_, std::move(*workload), std::move(*child_signals), agent).run();
    log("workload exited with code " + std::to_string(code));
    // Before the exit is reported: the host may end the VM at once then.
    bool networked = !spec->net_address4.empty() || !spec->net_address6.empty();
    if (networked) waitForTcpToDrain(kTcpDrainTimeout);
    reportExitAndPowerOff(code);
  }

  // Logs `error`, tells the host if it can, and powers off. Processes still
  // running (a workload, if one started) die with the VM.
  [[noreturn]] void fail(const Error& error) {
    log(error.message());
    if (port_ && port_->connected()) {
      if (auto sent = port_->send(agent::FrameType::kError, error.message()); !sent.ok()) log(sent.error().message());
    }
    ::kill(-1, SIGKILL);
    reportExitAndPowerOff(kInitFailureCode);
  }

 private:
  // The host acknowledges kExit so that the code is not lost in a virtqueue
  // when the VM resets; a silent host only delays the power off.
  [[noreturn]] void reportExitAndPowerOff(int code) {
    if (port_ && port_->connected()) {
      auto sent = port_->send(agent::FrameType::kExit, agent::encodeU32(static_cast<uint32_t>(code)));
      if (!sent.ok()) {
        log(sent.error().message());
      } else if (auto ack = port_->waitFor(agent::FrameType::kExitAck, Clock::now() + kExitAckTimeout); !ack.ok()) {
        log(ack.error().message());
      }
    }
    powerOff();
  }

  std::optional<ControlPort> port_;
};

}  // namespace

void runInit() {
  if (::getpid() != 1) {
    log("refusing to run: microvm-init must be PID 1 of a microvm guest");
    ::_exit(2);
  }
  Init init;
  try {
    init.run();
  } catch (const std::exception& exception) {
    init.fail(Error(ErrorCode::kInternal, std::string("unexpected exception: ") + exception.what()));
  } catch (...) {
    init.fail(Error(ErrorCode::kInternal, "unexpected exception"));
  }
}

}  // namespace microvm::guest
