// The runtime's commands over microvm::Runtime (commands.h). A container is
// a VM created at `create` (root disk prepared, nothing booted) and booted
// at `start` by its supervisor: the process `create` forks and whose pid the
// engine gets. It waits on the start fifo, boots the VM with the stdio the
// engine gave `create`, forwards the signals it receives to the workload, and
// exits with the workload's exit code.
#include "oci/commands.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "microvm/runtime.h"
#include "oci/bundle_spec.h"
#include "oci/container.h"
#include "oci/hooks.h"

namespace microvm::oci {
namespace fs = std::filesystem;
using json = nlohmann::json;

void appendLog(const GlobalOptions& global, const std::string& level, const std::string& message) {
  if (global.log.empty()) return;
  std::ofstream out(global.log, std::ios::app);
  if (global.log_json) {
    out << json({{"level", level}, {"msg", message}, {"time", nowRfc3339()}}).dump() << "\n";
  } else {
    out << "time=\"" << nowRfc3339() << "\" level=" << level << " msg=" << json(message).dump() << "\n";
  }
}

namespace {

int fail(const GlobalOptions& global, const std::string& message) {
  std::cerr << "microvm-runtime: " << message << std::endl;
  appendLog(global, "error", message);
  return 1;
}

int fail(const GlobalOptions& global, const Error& error) { return fail(global, error.message()); }

Result<Runtime> openRuntime(const GlobalOptions& global, const ContainerDir& dir) {
  RuntimeOptions options;
  options.data_dir = dir.dataDir();
  // Caches shared by the root's containers: a root disk is built once per
  // distinct rootfs content, and the first container of a machine saves the
  // boot template that the next ones restore.
  options.image_dir = dir.sharedCacheDir() / "images";
  options.template_dir = dir.sharedCacheDir() / "templates";
  options.log_level = LogLevel::kWarn;
  // Never stderr: in the supervisor it is the workload's.
  GlobalOptions copy = global;
  options.log_sink = [copy](const LogRecord& record) {
    appendLog(copy, toString(record.level), formatLogRecord(record, LogFormat::kText));
  };
  return Runtime::open(options);
}

bool isDevNull(int fd) {
  struct stat st {}, null {};
  return ::fstat(fd, &st) == 0 && ::stat("/dev/null", &null) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == null.st_rdev;
}

Result<void> writePidFile(const fs::path& path, pid_t pid) {
  if (path.empty()) return success();
  return writeFileAtomic(path, std::to_string(pid));
}

// The signals a supervisor forwards: every catchable one but those that
// report its own faults and SIGCHLD (its runner child's end).
sigset_t forwardedSignals() {
  sigset_t set;
  sigfillset(&set);
  for (int sig : {SIGCHLD, SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS, SIGPIPE,
                  SIGTTIN, SIGTTOU, SIGTSTP}) {
    sigdelset(&set, sig);
  }
  return set;
}

void closeFdsFrom(int lowest) {
  for (int fd = lowest; fd < 1024; ++fd) ::close(fd);
}

// The supervisor: see the file comment. Never returns.
// `tty`: stdin is the pty of process.terminal, whose SIGWINCH resizes the
// guest's tty rather than being forwarded.
[[noreturn]] void supervise(const GlobalOptions& global, const ContainerDir& dir, const std::string& vm_id,
                            bool interactive, bool tty, const std::string& netns) {
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t set = forwardedSignals();
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  int signals = ::signalfd(-1, &set, SFD_CLOEXEC);
  auto startFailed = [&](const std::string& message) {
    (void)writeFileAtomic(dir.startError(), message);
    ::_exit(125);
  };
  int fifo = ::open(dir.startFifo().c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (signals < 0 || fifo < 0) startFailed("supervisor: cannot wait for start");
  while (true) {
    struct pollfd fds[2] = {{fifo, POLLIN, 0}, {signals, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents & POLLIN) {
      struct signalfd_siginfo info {};
      if (::read(signals, &info, sizeof info) == sizeof info) {
        int sig = static_cast<int>(info.ssi_signo);
        if (sig != SIGWINCH && sig != SIGCONT && sig != SIGURG) ::_exit(128 + sig);  // killed before start
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP)) {
      char byte = 0;
      ssize_t n = ::read(fifo, &byte, 1);
      if (n == 1) break;
      // A writer came and went without a byte: wait for the next one.
      ::close(fifo);
      fifo = ::open(dir.startFifo().c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
      if (fifo < 0) startFailed("supervisor: cannot reopen the start fifo");
    }
  }
  ::close(fifo);
  if (!netns.empty()) {
    // The runner (and so its NAT and published ports) lives in the engine's
    // network namespace: the VM's traffic leaves from the pod's interface.
    int ns = ::open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) startFailed(Error::fromErrno("join network namespace " + netns).message());
    ::close(ns);
  }
  auto runtime = openRuntime(global, dir);
  if (!runtime) startFailed(runtime.error().message());
  auto vm = runtime->start(vm_id, STDOUT_FILENO, STDERR_FILENO, interactive ? STDIN_FILENO : -1);
  if (!vm) startFailed(vm.error().message());
  (void)writeFileAtomic(dir.startedMark(), "");
  auto resize = [&] {
    winsize size{};
    // SAFETY: TIOCGWINSZ fills one winsize, which lives on this frame.
    if (::ioctl(STDIN_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_row != 0 && size.ws_col != 0) {
      (void)vm->resize(size.ws_row, size.ws_col);
    }
  };
  if (tty) resize();  // a resize before the VM existed was not relayed
  int done[2];
  if (::pipe2(done, O_CLOEXEC) != 0) ::_exit(125);
  std::thread waiter([&] {
    auto code = vm->wait();
    int value = code ? *code : 125;
    if (!code) appendLog(global, "error", "wait: " + code.error().message());
    (void)!::write(done[1], &value, sizeof value);
  });
  while (true) {
    struct pollfd fds[2] = {{done[0], POLLIN, 0}, {signals, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[0].revents & POLLIN) {
      int code = 125;
      (void)!::read(done[0], &code, sizeof code);
      waiter.join();
      ::_exit(code);
    }
    if (fds[1].revents & POLLIN) {
      struct signalfd_siginfo info {};
      if (::read(signals, &info, sizeof info) == sizeof info) {
        if (tty && info.ssi_signo == SIGWINCH) {
          resize();
        } else {
          vm->signal(static_cast<int>(info.ssi_signo));
        }
      }
    }
  }
}

bool throughSymlink(const fs::path& rootfs, const std::string& guest_path) {
  fs::path path = rootfs;
  std::error_code error;
  for (const auto& part : fs::path(guest_path).relative_path()) {
    path /= part;
    if (fs::is_symlink(fs::symlink_status(path, error))) return true;
  }
  return false;
}

Result<Hooks> loadHooks(const ContainerDir& dir) {
  auto text = readFileBounded(dir.dir() / "hooks.json", kMaxConfigBytes);
  if (!text) return Hooks{};  // a record from before hooks were saved
  std::vector<std::string> refused;
  return parseHooks(*text, refused);
}

Result<std::string> readConfig(const fs::path& bundle) {
  fs::path config = bundle / "config.json";
  std::error_code error;
  if (!fs::is_regular_file(config, error)) {
    return Error(ErrorCode::kNotFound, "bundle " + bundle.string() + ": no config.json");
  }
  return readFileBounded(config, kMaxConfigBytes);
}

int cmdCreate(const GlobalOptions& global, const Command& command) {
  ContainerDir dir(global.root, command.id);
  std::error_code error;
  if (fs::exists(dir.dir(), error)) return fail(global, "container \"" + command.id + "\" already exists");
  fs::path bundle = fs::absolute(command.bundle, error);
  auto text = readConfig(bundle);
  if (!text) return fail(global, text.error());
  auto plan = planBundle(*text, bundle);
  if (!plan) return fail(global, plan.error());
  for (const auto& field : plan->ignored) appendLog(global, "info", "config.json: " + field + " not applied");
  if (plan->terminal && command.console_socket.empty()) {
    return fail(global, "config.json: process.terminal is true but no --console-socket was given");
  }

  fs::create_directories(global.root, error);
  if (!fs::create_directory(dir.dir(), error)) {
    return fail(global, "create " + dir.dir().string() + ": " + (error ? error.message() : "exists"));
  }
  ::chmod(dir.dir().c_str(), 0711);
  bool keep = false;
  struct Cleanup {
    const ContainerDir& dir;
    bool& keep;
    ~Cleanup() {
      std::error_code ignored;
      if (keep) return;
      fs::remove_all(dir.dir(), ignored);
      fs::remove_all(dir.dataDir(), ignored);
    }
  } cleanup{dir, keep};

  RunOptions options = plan->options;
  if (plan->pick_network) {
    // The engine's namespace with a configured interface (CNI's veth): the
    // guest takes its address (the runner is in that namespace at start).
    auto link = namespaceLink(plan->netns_path);
    if (!link) {
      appendLog(global, "info", "network namespace " + plan->netns_path + ": " + link.error().message() +
                                    "; the runner's NAT serves the VM");
    } else if (!link->empty()) {
      options.network = "tap";
      appendLog(global, "info", "network: the guest takes over " + *link);
    }
  }
  options.interactive = plan->terminal || !isDevNull(STDIN_FILENO);
  // The workload runs on a tty in the guest; the runner reads the host pty's
  // size when it sends the spec, and the supervisor relays each resize.
  options.tty = plan->terminal;
  options.stop_timeout_seconds = 10;
  if (!plan->seccomp_profile.empty()) {
    fs::path profile = dir.dir() / "seccomp.json";
    auto written = writeFileAtomic(profile, plan->seccomp_profile);
    if (!written) return fail(global, written.error());
    options.seccomp = profile.string();
  }
  for (const auto& file : plan->files) {
    // The guest's init refuses to write through a symlink (and the VM would
    // not boot): an image whose /etc/resolv.conf is a link keeps its own.
    if (throughSymlink(options.rootfs, file.guest)) {
      appendLog(global, "info", "bind of " + file.guest + " not copied: a symlink in the image");
      continue;
    }
    options.rootfs_hooks.push_back([file](RootfsEditor& rootfs) { return rootfs.copyFile(file.host, file.guest); });
  }
  auto runtime = openRuntime(global, dir);
  if (!runtime) return fail(global, runtime.error());
  auto vm_id = runtime->create(options);
  if (!vm_id) return fail(global, vm_id.error());
  if (::mkfifo(dir.startFifo().c_str(), 0600) != 0) return fail(global, Error::fromErrno("mkfifo"));

  Pty pty;
  if (plan->terminal) {
    auto opened = openPty();
    if (!opened) return fail(global, opened.error());
    pty = *opened;
    if (plan->console_rows != 0 && plan->console_cols != 0) {
      winsize size{plan->console_rows, plan->console_cols, 0, 0};
      // SAFETY: TIOCSWINSZ reads one winsize, which lives on this frame.
      ::ioctl(pty.master, TIOCSWINSZ, &size);
    }
    auto sent = sendConsole(command.console_socket, pty.master);
    ::close(pty.master);
    if (!sent) {
      ::close(pty.slave);
      return fail(global, sent.error());
    }
  }

  ContainerState state;
  state.id = command.id;
  state.bundle = bundle.string();
  state.vm_id = *vm_id;
  state.oci_version = plan->oci_version;
  state.created = nowRfc3339();
  state.annotations = plan->annotations;
  state.netns = plan->netns_path;
  std::cout.flush();
  std::cerr.flush();
  pid_t pid = ::fork();
  if (pid < 0) return fail(global, Error::fromErrno("fork"));
  if (pid == 0) {
    ::setsid();
    if (plan->terminal) {
      // The supervisor's controlling terminal: it gets the SIGWINCH of the
      // engine's resizes. Raw: the guest's tty does the line discipline.
      ::ioctl(pty.slave, TIOCSCTTY, 0);
      struct termios raw {};
      if (::tcgetattr(pty.slave, &raw) == 0) {
        ::cfmakeraw(&raw);
        ::tcsetattr(pty.slave, TCSANOW, &raw);
      }
      for (int fd = 0; fd < 3; ++fd) ::dup2(pty.slave, fd);
    }
    closeFdsFrom(3);
    supervise(global, dir, *vm_id, options.interactive, plan->terminal, plan->netns_path);
  }
  if (pty.slave >= 0) ::close(pty.slave);
  state.pid = pid;
  state.pid_start = processStartTime(pid);
  auto saved = dir.save(state);
  if (!saved) {
    ::kill(pid, SIGKILL);
    return fail(global, saved.error());
  }
  auto hooks_saved = writeFileAtomic(dir.dir() / "hooks.json", hooksJson(plan->hooks));
  for (const char* stage : {"prestart", "createRuntime"}) {
    if (!hooks_saved) break;
    hooks_saved = runHooks(plan->hooks, stage, stateJson(state, "creating"));
  }
  if (!hooks_saved) {
    ::kill(pid, SIGKILL);
    return fail(global, hooks_saved.error());
  }
  auto pid_written = writePidFile(command.pid_file, pid);
  if (!pid_written) {
    ::kill(pid, SIGKILL);
    return fail(global, pid_written.error());
  }
  keep = true;
  return 0;
}

Result<ContainerState> loadContainer(const GlobalOptions& global, const std::string& id) {
  MICROVM_TRY(checkContainerId(id));
  return ContainerDir(global.root, id).load();
}

int cmdStart(const GlobalOptions& global, const Command& command) {
  auto state = loadContainer(global, command.id);
  if (!state) return fail(global, state.error());
  ContainerDir dir(global.root, command.id);
  std::string status = dir.status(*state);
  if (status != "created") return fail(global, "cannot start a container that is " + status);
  int fifo = ::open(dir.startFifo().c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fifo < 0) return fail(global, Error::fromErrno("open the start fifo"));
  char byte = '1';
  ssize_t n = ::write(fifo, &byte, 1);
  ::close(fifo);
  if (n != 1) return fail(global, Error::fromErrno("start the container"));
  // Returns once the workload runs, as runc does (a boot under TCG takes seconds).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  std::error_code error;
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(dir.startedMark(), error)) {
      auto hooks = loadHooks(dir);
      auto ran = hooks ? runHooks(*hooks, "poststart", stateJson(*state, "running")) : Result<void>(hooks.error());
      if (!ran) appendLog(global, "warning", ran.error().message());
      return 0;
    }
    if (fs::exists(dir.startError(), error) || !processAlive(state->pid, state->pid_start)) {
      auto message = readFileBounded(dir.startError(), 64 << 10);
      if (message) return fail(global, "start: " + *message);
      if (fs::exists(dir.startedMark(), error)) return 0;  // ran and ended already
      return fail(global, "start: the container's supervisor ended");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fail(global, "start: the VM did not start within 5 minutes");
}

int cmdState(const GlobalOptions& global, const Command& command) {
  auto state = loadContainer(global, command.id);
  if (!state) return fail(global, state.error());
  std::cout << stateJson(*state, ContainerDir(global.root, command.id).status(*state)) << std::endl;
  return 0;
}

bool waitForExit(const ContainerState& state, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (processAlive(state.pid, state.pid_start)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

int cmdKill(const GlobalOptions& global, const Command& command) {
  auto state = loadContainer(global, command.id);
  if (!state) return fail(global, state.error());
  auto sig = parseSignal(command.args.empty() ? "SIGTERM" : command.args[0]);
  if (!sig) return fail(global, sig.error());
  ContainerDir dir(global.root, command.id);
  std::string status = dir.status(*state);
  if (status == "stopped") return fail(global, "container not running");
  if (status == "created") {
    if (::kill(state->pid, *sig) != 0) return fail(global, Error::fromErrno("kill"));
    return 0;
  }
  auto runtime = openRuntime(global, dir);
  if (!runtime) return fail(global, runtime.error());
  Result<void> sent = *sig == SIGKILL ? runtime->stop(state->vm_id, 0) : runtime->kill(state->vm_id, *sig);
  if (!sent) {
    if (!processAlive(state->pid, state->pid_start)) return fail(global, "container not running");
    return fail(global, sent.error());
  }
  return 0;
}

int cmdDelete(const GlobalOptions& global, const Command& command) {
  auto state = loadContainer(global, command.id);
  ContainerDir dir(global.root, command.id);
  std::error_code error;
  if (!state) {
    if (command.force && checkContainerId(command.id)) {
      fs::remove_all(dir.dir(), error);  // a half-made record
      fs::remove_all(dir.dataDir(), error);
      return 0;
    }
    return fail(global, state.error());
  }
  std::string status = dir.status(*state);
  if (status == "running" && !command.force) {
    return fail(global, "cannot delete container \"" + command.id + "\" that is not stopped: running");
  }
  auto runtime = openRuntime(global, dir);
  if (status == "running" && runtime) (void)runtime->stop(state->vm_id, 0);
  if (processAlive(state->pid, state->pid_start)) {
    if (status == "created") ::kill(state->pid, SIGKILL);
    if (!waitForExit(*state, std::chrono::seconds(10))) ::kill(state->pid, SIGKILL);
    waitForExit(*state, std::chrono::seconds(5));
  }
  if (runtime) (void)runtime->remove(state->vm_id, true);
  auto hooks = loadHooks(dir);
  auto ran = hooks ? runHooks(*hooks, "poststop", stateJson(*state, "stopped")) : Result<void>(hooks.error());
  if (!ran) appendLog(global, "warning", ran.error().message());
  fs::remove_all(dir.dataDir(), error);
  fs::remove(dir.dataDir().parent_path(), error);  // .vm, once empty
  fs::remove_all(dir.dir(), error);
  if (error) return fail(global, "remove " + dir.dir().string() + ": " + error.message());
  return 0;
}

int cmdPauseResume(const GlobalOptions& global, const Command& command) {
  auto state = loadContainer(global, command.id);
  if (!state) return fail(global, state.error());
  ContainerDir dir(global.root, command.id);
  if (dir.status(*state) != "running") return fail(global, "container not running");
  auto runtime = openRuntime(global, dir);
  if (!runtime) return fail(global, runtime.error());
  auto done = command.name == "pause" ? runtime->pause(state->vm_id) : runtime->unpause(state->vm_id);
  if (!done) return fail(global, done.error());
  return 0;
}

int cmdList(const GlobalOptions& global, const Command& command) {
  json all = json::array();
  std::string table = "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n";
  for (const auto& id : listContainers(global.root)) {
    ContainerDir dir(global.root, id);
    auto state = dir.load();
    if (!state) continue;
    std::string status = dir.status(*state);
    int pid = status == "stopped" ? 0 : state->pid;
    if (command.quiet) {
      std::cout << id << "\n";
      continue;
    }
    all.push_back({{"ociVersion", state->oci_version}, {"id", id}, {"pid", pid}, {"status", status},
                   {"bundle", state->bundle}, {"created", state->created}, {"owner", "root"}});
    table += id + "\t" + std::to_string(pid) + "\t" + status + "\t" + state->bundle + "\t" + state->created + "\troot\n";
  }
  if (command.quiet) return 0;
  std::cout << (command.format == "json" ? all.dump() + "\n" : table);
  return 0;
}

int cmdPs(const GlobalOptions& global, const Command& command) {
  auto state = loadContainer(global, command.id);
  if (!state) return fail(global, state.error());
  ContainerDir dir(global.root, command.id);
  bool alive = dir.status(*state) != "stopped";
  if (command.format == "json") {
    std::cout << (alive ? json::array({state->pid}) : json::array()).dump() << std::endl;
  } else {
    std::cout << "PID\tCMD\n";
    if (alive) std::cout << state->pid << "\tmicrovm-runtime supervisor of VM " << state->vm_id << "\n";
  }
  return 0;
}

// exec's process in the VM; runs in the process whose pid the engine gets.
int runExec(const GlobalOptions& global, const ContainerDir& dir, const std::string& vm_id, ExecOptions options,
            int pty_slave) {
  if (pty_slave >= 0) {
    ::setsid();
    ::ioctl(pty_slave, TIOCSCTTY, 0);
    struct termios raw {};
    if (::tcgetattr(pty_slave, &raw) == 0) {
      ::cfmakeraw(&raw);  // the guest's tty does the line discipline
      ::tcsetattr(pty_slave, TCSANOW, &raw);
    }
    for (int fd = 0; fd < 3; ++fd) ::dup2(pty_slave, fd);
    if (pty_slave > 2) ::close(pty_slave);
    options.terminal_fd = STDIN_FILENO;
  }
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH}) sigaddset(&set, sig);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  options.signal_fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  options.stdin_fd = isDevNull(STDIN_FILENO) ? -1 : STDIN_FILENO;
  options.stdout_fd = STDOUT_FILENO;
  options.stderr_fd = STDERR_FILENO;
  auto runtime = openRuntime(global, dir);
  if (!runtime) return fail(global, runtime.error()), 126;
  auto code = runtime->exec(vm_id, options);
  if (!code) return fail(global, code.error()), 126;
  return *code;
}

int cmdExec(const GlobalOptions& global, const Command& command) {
  auto state = loadContainer(global, command.id);
  if (!state) return fail(global, state.error());
  ContainerDir dir(global.root, command.id);
  if (dir.status(*state) != "running") return fail(global, "cannot exec in a container that is not running");
  ExecOptions options;
  bool tty = command.tty;
  if (!command.process_file.empty()) {
    auto text = readFileBounded(command.process_file, kMaxConfigBytes);
    if (!text) return fail(global, text.error());
    auto process = planProcess(*text);
    if (!process) return fail(global, process.error());
    options.command = process->args;
    options.env = process->env;
    options.workdir = process->cwd;
    options.user = process->user;
    tty = tty || process->terminal;
  } else {
    options.command = command.args;
  }
  if (options.command.empty()) return fail(global, "exec: no command given");
  for (const auto& entry : command.env) options.env.push_back(entry);
  if (!command.cwd.empty()) options.workdir = command.cwd;
  if (!command.user.empty()) options.user = command.user;
  options.tty = tty;
  int pty_slave = -1;
  if (tty) {
    if (command.console_socket.empty()) return fail(global, "exec --tty needs --console-socket");
    auto pty = openPty();
    if (!pty) return fail(global, pty.error());
    auto sent = sendConsole(command.console_socket, pty->master);
    ::close(pty->master);
    if (!sent) return fail(global, sent.error());
    pty_slave = pty->slave;
  }
  if (!command.detach) {
    auto written = writePidFile(command.pid_file, ::getpid());
    if (!written) return fail(global, written.error());
    return runExec(global, dir, state->vm_id, options, pty_slave);
  }
  std::cout.flush();
  pid_t pid = ::fork();
  if (pid < 0) return fail(global, Error::fromErrno("fork"));
  if (pid == 0) ::_exit(runExec(global, dir, state->vm_id, options, pty_slave));
  if (pty_slave >= 0) ::close(pty_slave);
  auto written = writePidFile(command.pid_file, pid);
  if (!written) return fail(global, written.error());
  return 0;
}

}  // namespace

int runCommand(const GlobalOptions& global, const Command& command) {
  const std::string& name = command.name;
  if (name == "features") {
    std::cout << featuresJson() << std::endl;
    return 0;
  }
  if (name == "list") return cmdList(global, command);
  if (command.id.empty()) return fail(global, name + ": a container id is needed");
  if (auto valid = checkContainerId(command.id); !valid) return fail(global, valid.error());
  if (name == "create") return cmdCreate(global, command);
  if (name == "start") return cmdStart(global, command);
  if (name == "state") return cmdState(global, command);
  if (name == "kill") return cmdKill(global, command);
  if (name == "delete") return cmdDelete(global, command);
  if (name == "exec") return cmdExec(global, command);
  if (name == "ps") return cmdPs(global, command);
  if (name == "pause" || name == "resume") return cmdPauseResume(global, command);
  return fail(global, "unknown command \"" + name + "\"");
}

}  // namespace microvm::oci
