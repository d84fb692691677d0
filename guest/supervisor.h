// The supervisor: PID 1's event loop while the workload lives. It forwards
// the workload's output to the host and the host's stdin, signals and tty
// resizes to the workload, reaps every child (orphans reparent to PID 1), and tells the
// agent about the agent's own exits. Once the workload is gone it reports
// its exit to the agent, delivers the output it wrote, and ends the rest of
// the VM's processes, as a container ends with its main process.
//
//   int code = Supervisor(port, std::move(workload), std::move(child_signals), agent).run();
//   // then report `code` to the host and power off
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "agent/protocol.h"
#include "base/unique_fd.h"
#include "guest/agent_process.h"
#include "guest/control_port.h"
#include "guest/workload.h"

namespace microvm::guest {

class Supervisor {
 public:
  // `child_signals`: the signalfd of blockChildSignals().
  Supervisor(ControlPort& port, Workload workload, UniqueFd child_signals, AgentProcess& agent);

  // Returns the workload's exit code once its output has been forwarded.
  int run();

 private:
  struct Output {
    UniqueFd fd;
    agent::FrameType type;
  };
  struct Input {
    UniqueFd fd;
    std::string pending;  // received from the host, not yet taken by the workload
    bool close_requested = false;
  };

  // The phases of run().
  void superviseUntilExit();
  void forwardFinalOutput();
  void endLeftoverProcesses();

  // One round of the event loop, waiting up to `timeout` ms (-1: no bound).
  void pollOnce(int timeout);
  void receiveFromHost(short revents);
  void handleControlFrames();
  void forwardSignal(std::string_view payload);
  void resizeTerminal(std::string_view payload);
  // After a refresh (a restore, an unpause): the host's clock again, to the
  // round trip (agent::ControlClock); answers to other probes are ignored.
  void probeHostClock();
  void applyHostClock(std::string_view payload);
  void flushStdin();
  bool forwardChunk(Output& output);
  void drain(Output& output);
  void handleChildSignals();
  void reapChildren();

  ControlPort& port_;
  AgentProcess& agent_;
  pid_t workload_pid_;
  Input stdin_;
  Output stdout_;
  Output stderr_;
  bool tty_;  // stdout_ is a pty's master (guest/workload.h)
  UniqueFd child_signals_;
  std::optional<int> exit_code_;
  uint64_t clock_probe_sent_ = 0;  // monotonicNs() of the probe awaiting its kClock; 0: none
  bool children_left_ = true;
};

}  // namespace microvm::guest
