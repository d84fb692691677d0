#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string>

#include "base/eintr.h"
#include "guest/agent_operations.h"
#include "guest/spawn.h"
#include "guest/support.h"
#include "guest/terminal.h"

namespace microvm::guest {
namespace {

// After an exec'd process exits, its output pipes are read until they close,
// or until they stay quiet this long (a background child may hold them).
constexpr milliseconds kExecDrainIdle{250};
// Backpressure bounds: the agent stops reading a command's output while this
// much waits for the socket, and stops reading the socket while this much
// stdin waits for the command.
constexpr size_t kMaxPendingOutput = size_t{256} * 1024;
constexpr size_t kMaxPendingInput = size_t{1} << 20;

struct PipePair {
  UniqueFd read;
  UniqueFd write;
};

Result<PipePair> makePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return systemError("pipe");
  return PipePair{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// The spec the command is exec'd with: the workload's, with the request's
// command, added environment, working directory and user.
agent::WorkloadSpec execSpec(const agent::AgentRequest& request, const AgentOptions& options) {
  agent::WorkloadSpec spec = options.workload;
  spec.argv = request.argv;
  spec.env.insert(spec.env.end(), request.env.begin(), request.env.end());
  if (request.tty) addTerminalDefault(spec.env);
  if (!request.cwd.empty()) spec.workdir = request.cwd;
  if (!request.user.empty()) spec.user = request.user;
  return spec;
}

class ExecSession {
 public:
  ExecSession(FramedConnection& connection, const agent::AgentRequest& request, const AgentOptions& options)
      : connection_(connection), request_(request), options_(options) {}

  void run() {
    auto started = start();
    if (!started.ok()) {
      sendResult(connection_, failure(request_.id, started.error().message(), errno));
      return;
    }
    agent::AgentResult result;
    result.id = request_.id;
    result.pid = static_cast<uint32_t>(pid_);
    connection_.queue(agent::FrameType::kResult, agent::encodeResult(result));
    loop();
  }

 private:
  Result<void> start() {
    auto signals = blockChildSignals();
    if (!signals.ok()) return signals.error();
    child_signals_ = std::move(*signals);
    UniqueFd child_in, child_out, child_err;
    if (request_.tty) {
      auto terminal = openTerminal(request_.rows, request_.cols);
      if (!terminal.ok()) return terminal.error();
      terminal_ = std::move(terminal->master);
      child_in = std::move(terminal->slave);
    } else {
      auto in = makePipe();
      auto out = makePipe();
      auto err = makePipe();
      if (!in.ok()) return in.error();
      if (!out.ok()) return out.error();
      if (!err.ok()) return err.error();
      stdin_ = std::move(in->write);
      stdout_ = std::move(out->read);
      stderr_ = std::move(err->read);
      child_in = std::move(in->read);
      child_out = std::move(out->write);
      child_err = std::move(err->write);
    }
    agent::WorkloadSpec spec = execSpec(request_, options_);
    pid_ = spawnSharingMemory([&] { runChild(spec, child_in.get(), child_out.get(), child_err.get()); });
    if (pid_ < 0) return systemError("clone");
    for (int fd : {stdin_.get(), stdout_.get(), stderr_.get(), terminal_.get()}) {
      if (fd >= 0) {
        if (auto set = setNonBlocking(fd); !set.ok()) return set;
      }
    }
    return {};
  }

  [[noreturn]] void runChild(const agent::WorkloadSpec& spec, int in, int out, int err) {
    try {
      resetChildSignals();
      ::setsid();
      int console_fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
      if (request_.tty ? !becomeControllingTerminal(in)
                       : ::dup2(in, STDIN_FILENO) < 0 || ::dup2(out, STDOUT_FILENO) < 0 ||
                             ::dup2(err, STDERR_FILENO) < 0) {
        ::_exit(kCannotRunCode);
      }
      execConfined(spec, console_fd, options_.confine, options_.confinement.get());
    } catch (...) {
      ::_exit(kCannotRunCode);
    }
  }

  void loop() {
    enum { kSocket, kStdin, kStdout, kStderr, kTerminal, kSignals, kCount };
    for (;;) {
      bool room = connection_.pending() < kMaxPendingOutput;
      // A throttled reader is not a quiet pipe.
      if (!room) last_output_ = Clock::now();
      bool outputs_open = stdout_.valid() || stderr_.valid() || terminal_.valid();
      if (exit_code_ && (!outputs_open || Clock::now() - last_output_ >= kExecDrainIdle)) break;
      if (connection_.broken()) return abandon();
      pollfd watch[kCount] = {};
      short socket_events = connection_.pending() > 0 ? POLLOUT : 0;
      if (input_.size() < kMaxPendingInput) socket_events |= POLLIN;
      watch[kSocket] = {connection_.fd(), socket_events, 0};
      watch[kStdin] = {input_.empty() ? -1 : stdin_.get(), POLLOUT, 0};
      watch[kStdout] = {room ? stdout_.get() : -1, POLLIN, 0};
      watch[kStderr] = {room ? stderr_.get() : -1, POLLIN, 0};
      short terminal_events = room ? POLLIN : 0;
      if (!input_.empty()) terminal_events |= POLLOUT;
      watch[kTerminal] = {terminal_events != 0 ? terminal_.get() : -1, terminal_events, 0};
      watch[kSignals] = {child_signals_.get(), POLLIN, 0};
      int timeout = exit_code_ ? millisecondsUntil(last_output_ + kExecDrainIdle) : -1;
      int ready = retryOnEintr([&] { return ::poll(watch, kCount, timeout); });
      if (ready < 0) return abandon();

      if (watch[kSignals].revents != 0) reap();
      bool output_read = false;
      if (watch[kStdout].revents != 0) output_read |= forward(stdout_, agent::FrameType::kOutput);
      if (watch[kStderr].revents != 0) output_read |= forward(stderr_, agent::FrameType::kErrorOutput);
      if (watch[kTerminal].revents & (POLLIN | POLLHUP | POLLERR)) {
        output_read |= forward(terminal_, agent::FrameType::kOutput);
      }
      if (output_read) last_output_ = Clock::now();
      if (watch[kSocket].revents & POLLIN) {
        if (!connection_.readSome()) return abandon();
        handleClientFrames();
        if (connection_.corrupt()) return abandon();
      } else if (watch[kSocket].revents & (POLLHUP | POLLERR)) {
        return abandon();
      }
      if (!input_.empty() && (watch[kStdin].revents != 0 || (watch[kTerminal].revents & POLLOUT))) writeInput();
      if (connection_.pending() > 0) connection_.writeSome();
    }
    connection_.queue(agent::FrameType::kExited, agent::encodeU32(static_cast<uint32_t>(*exit_code_)));
    connection_.flush();
  }

  // Reads one chunk into a frame. False if nothing was read (closed included).
  bool forward(UniqueFd& fd, agent::FrameType type) {
    if (!fd.valid()) return false;
    char buffer[kChunk];
    ssize_t got = retryOnEintr([&] { return ::read(fd.get(), buffer, sizeof buffer); });
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    if (got <= 0) {
      // EIO is how a pty master reports that every slave fd is closed.
      fd.reset();
      if (&fd == &terminal_) stdin_closed_ = true;
      return false;
    }
    connection_.queue(type, std::string_view(buffer, static_cast<size_t>(got)));
    return true;
  }

  void handleClientFrames() {
    while (auto frame = connection_.nextFrame()) {
      switch (frame->type) {
        case agent::FrameType::kInput:
          if (frame->payload.empty()) {
            stdin_eof_ = true;
          } else if (!stdin_eof_ && !stdin_closed_) {
            input_ += frame->payload;
          }
          break;
        case agent::FrameType::kResize: {
          auto size = agent::decodeWindowSize(frame->payload);
          if (size && terminal_.valid()) setTerminalSize(terminal_.get(), size->rows, size->cols);
          break;
        }
        case agent::FrameType::kExecSignal: {
          auto sig = agent::decodeU32(frame->payload);
          // Once reaped, the pid may name another process.
          if (sig && *sig > 0 && *sig < static_cast<uint32_t>(NSIG) && !exit_code_) {
            ::kill(pid_, static_cast<int>(*sig));
          }
          break;
        }
        default: break;  // Unknown frames are ignored.
      }
    }
    if (stdin_eof_ && input_.empty()) closeInput();
  }

  void writeInput() {
    int fd = request_.tty ? terminal_.get() : stdin_.get();
    ssize_t written = retryOnEintr([&] { return ::write(fd, input_.data(), input_.size()); });
    if (written > 0) {
      input_.erase(0, static_cast<size_t>(written));
    } else if (written < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      // The command closed its stdin: what it did not read is dropped.
      input_.clear();
      stdin_closed_ = true;
      stdin_.reset();
    }
    if (stdin_eof_ && input_.empty()) closeInput();
  }

  // EOF for the command: the pipe closes; a terminal gets its EOF character.
  void closeInput() {
    if (stdin_closed_) return;
    stdin_closed_ = true;
    if (request_.tty) {
      if (terminal_.valid()) sendEndOfInput(terminal_.get());
    } else {
      stdin_.reset();
    }
  }

  void reap() {
    signalfd_siginfo info[8];
    while (::read(child_signals_.get(), info, sizeof info) > 0) {
    }
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) return;
      if (pid == pid_) {
        exit_code_ = exitCodeFromWaitStatus(status);
        last_output_ = Clock::now();
      }
    }
  }

  // The client is gone: nobody will read the output or send input, so the
  // command and its process group end now rather than linger.
  void abandon() {
    if (!exit_code_) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      int status = 0;
      (void)retryOnEintr([&] { return ::waitpid(pid_, &status, 0); });
    }
  }

  FramedConnection& connection_;
  const agent::AgentRequest& request_;
  const AgentOptions& options_;
  pid_t pid_ = -1;
  UniqueFd child_signals_;
  UniqueFd stdin_;
  UniqueFd stdout_;
  UniqueFd stderr_;
  UniqueFd terminal_;
  std::string input_;
  bool stdin_eof_ = false;
  bool stdin_closed_ = false;
  std::optional<int> exit_code_;
  Clock::time_point last_output_;
};

}  // namespace

void handleExec(FramedConnection& connection, const agent::AgentRequest& request, const AgentOptions& options) {
  ExecSession(connection, request, options).run();
}

}  // namespace microvm::guest
