#include "guest/supervisor.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "base/eintr.h"
#include "guest/agent.h"
#include "guest/spawn.h"
#include "guest/support.h"
#include "guest/terminal.h"

namespace microvm::guest {
namespace {

// After the workload exits: how long its leftover processes get to die and
// close their output pipes.
constexpr milliseconds kOutputDrainTimeout{500};

constexpr size_t kOutputChunk = size_t{64} * 1024;
static_assert(kOutputChunk <= agent::kMaxPayload);
// Bounds the pre-kill drain of one pipe so a chatty orphan cannot hold init.
constexpr size_t kDrainBudget = 1 << 20;
// Stdin bytes init holds for a workload that is not reading; beyond this, init
// stops reading the control port, so that the host's writes back up instead.
constexpr size_t kStdinBacklog = size_t{256} * 1024;

}  // namespace

Supervisor::Supervisor(ControlPort& port, Workload workload, UniqueFd child_signals, AgentProcess& agent)
    : port_(port),
      agent_(agent),
      workload_pid_(workload.pid),
      stdin_{std::move(workload.stdin_write), {}, false},
      stdout_{std::move(workload.stdout_read), agent::FrameType::kStdout},
      stderr_{std::move(workload.stderr_read), agent::FrameType::kStderr},
      tty_(workload.tty),
      child_signals_(std::move(child_signals)) {}

int Supervisor::run() {
  superviseUntilExit();
  agent_.publishExit(*exit_code_);
  forwardFinalOutput();
  agent_.letWaitersAnswer();
  endLeftoverProcesses();
  return *exit_code_;
}

void Supervisor::superviseUntilExit() {
  // Frames that arrived with the spec (stdin, an early signal) are already
  // in the reader, and no POLLIN will announce them.
  handleControlFrames();
  while (!exit_code_) pollOnce(-1);
}

// What the workload wrote before it exited is delivered in full.
void Supervisor::forwardFinalOutput() {
  drain(stdout_);
  drain(stderr_);
}

// Whatever the workload left behind is killed, and what those processes wrote
// before dying is forwarded until the pipes close, for a bounded time.
void Supervisor::endLeftoverProcesses() {
  ::kill(-1, SIGKILL);
  auto deadline = Clock::now() + kOutputDrainTimeout;
  while ((stdout_.fd.valid() || stderr_.fd.valid() || children_left_) && Clock::now() < deadline) {
    pollOnce(millisecondsUntil(deadline));
  }
  if (stdout_.fd.valid() || stderr_.fd.valid()) {
    log("output pipes still open after the workload's processes were killed");
  }
}

void Supervisor::pollOnce(int timeout) {
  enum { kControl, kStdin, kStdout, kStderr, kChildSignals, kWatchCount };
  pollfd watch[kWatchCount] = {};
  // A negative fd makes poll() skip the entry.
  bool take_control = port_.connected() && !port_.corrupt() && stdin_.pending.size() < kStdinBacklog;
  watch[kControl] = {take_control ? port_.fd() : -1, POLLIN, 0};
  watch[kStdin] = {stdin_.pending.empty() ? -1 : stdin_.fd.get(), POLLOUT, 0};
  watch[kStdout] = {stdout_.fd.get(), POLLIN, 0};
  watch[kStderr] = {stderr_.fd.get(), POLLIN, 0};
  watch[kChildSignals] = {child_signals_.get(), POLLIN, 0};
  if (::poll(watch, kWatchCount, timeout) < 0) {
    if (errno != EINTR) log(systemError("poll").message());
    return;
  }
  receiveFromHost(watch[kControl].revents);
  if (watch[kStdin].revents) flushStdin();
  if (watch[kStdout].revents) forwardChunk(stdout_);
  if (watch[kStderr].revents) forwardChunk(stderr_);
  if (watch[kChildSignals].revents) handleChildSignals();
}

void Supervisor::receiveFromHost(short revents) {
  if (revents & POLLIN) {
    port_.receive();
    handleControlFrames();
  } else if (revents & (POLLHUP | POLLERR | POLLNVAL)) {
    port_.hostGone();
  }
}

void Supervisor::handleControlFrames() {
  while (auto frame = port_.nextFrame()) {
    // Other types are ignored, for forward compatibility.
    if (frame->type == agent::FrameType::kSignal) forwardSignal(frame->payload);
    if (frame->type == agent::FrameType::kStdin && stdin_.fd.valid()) stdin_.pending += frame->payload;
    if (frame->type == agent::FrameType::kStdinClose) stdin_.close_requested = true;
    if (frame->type == agent::FrameType::kRefresh) {
      applyControlRefresh(frame->payload);
      probeHostClock();
    }
    if (frame->type == agent::FrameType::kClock) applyHostClock(frame->payload);
    if (frame->type == agent::FrameType::kTerminalSize) resizeTerminal(frame->payload);
  }
  flushStdin();
  if (port_.corrupt()) log("control port: corrupt frame stream from the host (" + port_.corruption() + "); ignoring further input");
}

void Supervisor::probeHostClock() {
  auto sent = sendClockProbe(port_);
  if (!sent.ok()) {
    log("clock: " + sent.error().message());
    return;
  }
  clock_probe_sent_ = *sent;
}

void Supervisor::applyHostClock(std::string_view payload) {
  auto answer = agent::decodeClock(payload);
  if (!answer || clock_probe_sent_ == 0 || answer->echo_ns != clock_probe_sent_) return;
  clock_probe_sent_ = 0;
  setClockFromHost(agent::clockFromAnswer(*answer, monotonicNs()));
}

// The master is stdout_'s fd; without a tty the frame means nothing.
void Supervisor::resizeTerminal(std::string_view payload) {
  auto size = agent::decodeWindowSize(payload);
  if (!size) {
    log("ignoring a malformed kTerminalSize frame");
    return;
  }
  if (tty_ && stdout_.fd.valid()) setTerminalSize(stdout_.fd.get(), size->rows, size->cols);
}

// The workload is a session leader; like Docker, only it gets the signal.
void Supervisor::forwardSignal(std::string_view payload) {
  auto sig = agent::decodeU32(payload);
  if (!sig || *sig == 0 || *sig >= static_cast<uint32_t>(NSIG)) {
    log("ignoring a malformed kSignal frame");
    return;
  }
  if (exit_code_) return;  // Already reaped: the pid may belong to another process now.
  if (::kill(workload_pid_, static_cast<int>(*sig)) != 0) {
    log(systemError("kill " + std::to_string(workload_pid_) + " " + std::to_string(*sig)).message());
  }
}

// Hands the workload what it will take now; the rest waits for POLLOUT. A
// workload that closed its stdin makes the rest moot (EPIPE: PID 1 ignores
// SIGPIPE).
void Supervisor::flushStdin() {
  while (stdin_.fd.valid() && !stdin_.pending.empty()) {
    ssize_t written =
        retryOnEintr([&] { return ::write(stdin_.fd.get(), stdin_.pending.data(), stdin_.pending.size()); });
    if (written < 0 && errno == EAGAIN) return;
    if (written <= 0) {
      stdin_.fd.reset();
      break;
    }
    stdin_.pending.erase(0, static_cast<size_t>(written));
  }
  if (!stdin_.fd.valid()) stdin_.pending.clear();
  if (stdin_.close_requested && stdin_.pending.empty() && stdin_.fd.valid()) {
    // Closing one fd of a pty's master ends nothing: a terminal's reader
    // sees its EOF character instead.
    if (tty_) sendEndOfInput(stdin_.fd.get());
    stdin_.fd.reset();
  }
}

// Reads one chunk from the pipe and forwards it. Returns false when nothing
// was read (empty for now, closed, or failed).
bool Supervisor::forwardChunk(Output& output) {
  if (!output.fd.valid()) return false;
  char buffer[kOutputChunk];
  ssize_t got = retryOnEintr([&] { return ::read(output.fd.get(), buffer, sizeof buffer); });
  if (got < 0 && errno == EAGAIN) return false;
  if (got <= 0) {
    // EIO is how a pty's master says that every slave fd is closed.
    if (got < 0 && !(tty_ && errno == EIO)) log(systemError("read workload output").message());
    output.fd.reset();
    return false;
  }
  // With the host gone the output has nowhere to go, but it is still read
  // so that the workload does not block on a full pipe.
  if (port_.connected()) {
    auto sent = port_.send(output.type, std::string_view(buffer, static_cast<size_t>(got)));
    if (!sent.ok()) log(sent.error().message());
  }
  return true;
}

void Supervisor::drain(Output& output) {
  for (size_t drained = 0; drained < kDrainBudget && forwardChunk(output); drained += kOutputChunk) {
  }
}

void Supervisor::handleChildSignals() {
  signalfd_siginfo info[8];
  while (::read(child_signals_.get(), info, sizeof info) > 0) {
  }
  reapChildren();
}

void Supervisor::reapChildren() {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      if (pid == workload_pid_) {
        exit_code_ = exitCodeFromWaitStatus(status);
      } else if (!exit_code_) {
        agent_.childExited(pid, status);
      }
      continue;
    }
    if (pid < 0 && errno == EINTR) continue;
    children_left_ = pid == 0;
    return;
  }
}

}  // namespace microvm::guest
