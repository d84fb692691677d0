// Init's handle on the guest agent (guest/agent.h): it forks the agent before
// the workload, restarts it after a crash, and hands it the workload's exit
// code for kWait.
//
//   AgentProcess agent(spec, port.fd(), confinement);
//   agent.start();
//   ...for every reaped pid that is not the workload's: agent.childExited(pid, status);
//   agent.publishExit(code);
//   agent.letWaitersAnswer();
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>

#include "agent/protocol.h"
#include "guest/agent.h"
#include "guest/confinement.h"

namespace microvm::guest {

class AgentProcess {
 public:
  // `control_fd` is closed in the agent: the control port is init's alone.
  AgentProcess(const agent::WorkloadSpec& spec, int control_fd, std::shared_ptr<const PreparedConfinement> confinement);

  // A failure here costs exec and cp, not the workload: it is logged.
  void start();

  // Every reaped pid other than the workload's passes through here.
  void childExited(pid_t pid, int status);

  void publishExit(int code);

  // kWait connections answer between the workload's exit and the end of
  // every process; they get a moment to do so.
  void letWaitersAnswer();

 private:
  AgentOptions options_;
  std::optional<WorkloadExitChannel> channel_;
  int control_fd_;
  pid_t pid_ = -1;
  int restarts_ = 0;
};

}  // namespace microvm::guest
