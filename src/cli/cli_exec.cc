// `microvm exec`, `cp` and `attach`: into a running VM.
#include <signal.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>

#include "cli_commands.h"
#include "cli_terminal.h"

namespace microvm::cli {

namespace {

struct ExecFlags {
  bool interactive = false;
  bool tty = false;
  bool ping = false;
  std::vector<std::string> env;
  std::string workdir;
  std::string user;
};

// `words` is VM followed by the command.
int cmdExec(const GlobalFlags& global, const ExecFlags& flags, const std::vector<std::string>& words) {
  if (words.empty()) return fail("exec: give a VM and a command (microvm exec [OPTIONS] VM COMMAND [ARG...])");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  if (flags.ping) {
    auto pong = runtime->ping(words[0]);
    if (!pong) return fail(pong.error());
    return 0;
  }
  ExecOptions options;
  options.command.assign(words.begin() + 1, words.end());
  if (options.command.empty()) return fail("exec: no command given");
  options.env = expandEnv(flags.env);
  if (flags.tty) passTerm(options.env);
  options.workdir = flags.workdir;
  options.user = flags.user;
  options.tty = flags.tty;
  options.stdin_fd = flags.interactive ? STDIN_FILENO : -1;
  if (flags.tty) options.terminal_fd = hostTerminalFd();

  // Signals to the CLI go to the command (SIGWINCH: a resize), as Docker's
  // sig-proxy does. Blocked for the whole process, read through a signalfd.
  sigset_t forwarded;
  sigemptyset(&forwarded);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&forwarded, sig);
  if (flags.tty) sigaddset(&forwarded, SIGWINCH);
  pthread_sigmask(SIG_BLOCK, &forwarded, nullptr);
  int signal_fd = ::signalfd(-1, &forwarded, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd < 0) return fail(std::string("signalfd: ") + std::strerror(errno));
  options.signal_fd = signal_fd;

  std::optional<RawTerminal> raw;
  if (flags.tty && flags.interactive && ::isatty(STDIN_FILENO)) raw.emplace(STDIN_FILENO);
  auto code = runtime->exec(words[0], options);
  raw.reset();
  ::close(signal_fd);
  if (!code) return fail(code.error());
  return *code;
}

// Docker's rule: "NAME:PATH" names a path in a VM unless it looks like a
// host path (starts with '/' or '.'); "./a:b" is a host file with a colon.
struct CopyEndpoint {
  std::string vm;  // empty: the host
  std::string path;
};

CopyEndpoint parseCopyEndpoint(const std::string& text) {
  size_t colon = text.find(':');
  if (colon == std::string::npos || colon == 0 || text[0] == '/' || text[0] == '.') return {"", text};
  return {text.substr(0, colon), text.substr(colon + 1)};
}

int cmdCopy(const GlobalFlags& global, const std::string& source_text, const std::string& destination_text) {
  CopyEndpoint source = parseCopyEndpoint(source_text);
  CopyEndpoint destination = parseCopyEndpoint(destination_text);
  if (source.vm.empty() == destination.vm.empty()) {
    return fail(source.vm.empty() ? "cp: one of SRC and DEST must be VM:PATH"
                                  : "cp: copying between two VMs is not supported; copy through the host");
  }
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto copied = source.vm.empty() ? runtime->copyTo(destination.vm, source.path, destination.path.empty() ? "/" : destination.path)
                                  : runtime->copyFrom(source.vm, source.path.empty() ? "/" : source.path, destination.path);
  if (!copied) return fail(copied.error());
  return 0;
}

// Output relayed until the workload exits; our stdin's EOF closes its stdin.
// A VM made with -t gets our terminal in raw mode and its size, now and on
// every SIGWINCH.
int cmdAttach(const GlobalFlags& global, const std::string& ref, bool with_stdin) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto info = runtime->inspect(ref);
  if (!info) return fail(info.error());
  int terminal_fd = info->tty ? hostTerminalFd() : -1;
  std::optional<RawTerminal> raw;
  if (terminal_fd >= 0) {
    sigset_t winch;
    sigemptyset(&winch);
    sigaddset(&winch, SIGWINCH);
    pthread_sigmask(SIG_BLOCK, &winch, nullptr);
    // Its own runtime: the attach below holds ours.
    std::thread([global, id = info->id, terminal_fd, winch] {
      auto resizer = openRuntime(global);
      if (!resizer) return;
      for (;;) {
        if (auto size = terminalSize(terminal_fd)) (void)resizer->resize(id, size->first, size->second);
        int sig = 0;
        while (sigwait(&winch, &sig) != 0) {
        }
      }
    }).detach();
    if (with_stdin && info->interactive && ::isatty(STDIN_FILENO)) raw.emplace(STDIN_FILENO);
  }
  auto code = runtime->attach(ref, with_stdin ? STDIN_FILENO : -1, STDOUT_FILENO, STDERR_FILENO);
  raw.reset();
  if (!code) return fail(code.error());
  return *code;
}

}  // namespace

CLI::App* addExecCommand(CLI::App& app, GlobalFlags& global, const std::vector<std::string>& words,
                         Commands& commands) {
  auto flags = std::make_shared<ExecFlags>();
  auto* exec_cmd = app.add_subcommand("exec", "Run a command in a running VM");
  exec_cmd->footer("Usage: microvm exec [OPTIONS] VM COMMAND [ARG...]\n"
                   "The exit status is the command's; 125 when microvm itself fails, 126 when the\n"
                   "command cannot be run, 127 when it is not found.");
  exec_cmd->add_flag("-i,--interactive", flags->interactive, "Forward stdin to the command (else it reads EOF)");
  exec_cmd->add_flag("-t,--tty", flags->tty, "Run the command on a pseudo-terminal");
  exec_cmd->add_option("-e,--env", flags->env, "Set an environment variable (KEY=VALUE, or KEY to pass ours)");
  exec_cmd->add_option("-w,--workdir", flags->workdir, "Working directory in the guest");
  exec_cmd->add_option("-u,--user", flags->user, "User (name|uid[:group|gid])");
  // The agent's round trip alone, for bench/exec.sh: the floor of exec.
  exec_cmd->add_flag("--ping", flags->ping, "Only check that the VM's agent answers")->group("");
  commands.add(exec_cmd, [&global, &words, flags] { return cmdExec(global, *flags, words); });
  return exec_cmd;
}

void addCpCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  auto paths = std::make_shared<std::vector<std::string>>();
  auto* cp_cmd = app.add_subcommand("cp", "Copy files or directories between the host and a running VM");
  cp_cmd->footer("Usage: microvm cp [OPTIONS] VM:SRC_PATH DEST_PATH\n"
                 "       microvm cp [OPTIONS] SRC_PATH VM:DEST_PATH");
  cp_cmd->add_option("paths", *paths, "SRC DEST")->required()->expected(2);
  commands.add(cp_cmd, [&global, paths] { return cmdCopy(global, (*paths)[0], (*paths)[1]); });
}

void addAttachCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct AttachFlags {
    std::string ref;
    bool no_stdin = false;
  };
  auto flags = std::make_shared<AttachFlags>();
  auto* attach_cmd = app.add_subcommand("attach", "Connect to a running VM's workload: its output, and our stdin if it was made with -i");
  attach_cmd->add_option("vm", flags->ref, "VM id, id prefix or name")->required();
  attach_cmd->add_flag("--no-stdin", flags->no_stdin, "Do not attach stdin");
  commands.add(attach_cmd, [&global, flags] { return cmdAttach(global, flags->ref, !flags->no_stdin); });
}

}  // namespace microvm::cli
