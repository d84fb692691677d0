#include "guest/agent_process.h"

#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "guest/spawn.h"
#include "guest/support.h"

namespace microvm::guest {
namespace {

constexpr int kMaxAgentRestarts = 3;
constexpr milliseconds kWaitersTimeout{1'000};

}  // namespace

AgentProcess::AgentProcess(const agent::WorkloadSpec& spec, int control_fd,
                           std::shared_ptr<const PreparedConfinement> confinement)
    : control_fd_(control_fd) {
  options_.workload = spec;
  options_.confine = true;
  options_.confinement = std::move(confinement);
}

void AgentProcess::start() {
  if (!channel_) {
    auto channel = WorkloadExitChannel::create();
    if (!channel.ok()) log("agent: " + channel.error().message());
    if (channel.ok()) channel_.emplace(std::move(*channel));
    options_.exit_channel = channel_ ? &*channel_ : nullptr;
  }
  pid_ = ::fork();
  if (pid_ < 0) {
    log(systemError("fork the agent").message());
    return;
  }
  if (pid_ == 0) {
    // The control port is init's alone.
    ::close(control_fd_);
    runAgentProcess(options_);
  }
}

void AgentProcess::childExited(pid_t pid, int status) {
  if (pid != pid_) return;
  pid_ = -1;
  if (WIFEXITED(status) && WEXITSTATUS(status) == kAgentNoTransport) return;  // It said why.
  log("agent exited (" + std::to_string(exitCodeFromWaitStatus(status)) + ")");
  if (restarts_ < kMaxAgentRestarts) {
    ++restarts_;
    start();
  }
}

void AgentProcess::publishExit(int code) {
  if (channel_) channel_->publish(code);
}

void AgentProcess::letWaitersAnswer() {
  if (!channel_) return;
  auto deadline = Clock::now() + kWaitersTimeout;
  while (channel_->waiters() > 0 && Clock::now() < deadline) sleepFor(kPollInterval);
}

}  // namespace microvm::guest
