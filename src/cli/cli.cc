#include "cli/cli.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstring>
#include <optional>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string_view>
#include <thread>
#include <utility>

#include "microvm/runtime.h"
#include "microvm/version.h"

namespace microvm::cli {

namespace {

constexpr int kExitCliError = 125;  // Docker's code for "the runtime itself failed"

int fail(const std::string& message) {
  std::fprintf(stderr, "microvm: %s\n", message.c_str());
  return kExitCliError;
}

int fail(const Error& error) { return fail(error.message()); }

// "512" (MiB), "512m", "2g", "1048576k", "536870912b" -> MiB.
Result<int> parseMemory(const std::string& text) {
  auto invalid = Error(ErrorCode::kInvalidArgument,
                       "invalid memory size \"" + text + "\" (want MiB, or a number with b, k, m or g)");
  if (text.empty()) return invalid;
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 15 || text.size() - digits > 1) return invalid;
  unsigned long long value = std::stoull(text.substr(0, digits));
  char unit = digits < text.size() ? static_cast<char>(std::tolower(text[digits])) : 'm';
  unsigned long long bytes = 0;
  switch (unit) {
    case 'b': bytes = value; break;
    case 'k': bytes = value << 10; break;
    case 'm': bytes = value << 20; break;
    case 'g': bytes = value << 30; break;
    default: return invalid;
  }
  if (bytes % (1 << 20) != 0) return Error(ErrorCode::kInvalidArgument, "memory size \"" + text + "\" is not a whole number of MiB");
  return static_cast<int>(std::min<unsigned long long>(bytes >> 20, 1u << 30));
}

// `-e KEY` takes KEY's value from our environment, as Docker does; unset keys are dropped.
std::vector<std::string> expandEnv(const std::vector<std::string>& entries) {
  std::vector<std::string> env;
  for (const auto& entry : entries) {
    if (entry.find('=') != std::string::npos) {
      env.push_back(entry);
    } else if (const char* value = std::getenv(entry.c_str())) {
      env.push_back(entry + "=" + value);
    }
  }
  return env;
}

// Docker prints each reference it acted on, and an error line for each it
// could not; the exit status is 1 if any failed.
template <typename Action>
int forEachVm(const std::vector<std::string>& refs, Action action) {
  int code = 0;
  for (const auto& ref : refs) {
    if (auto done = action(ref); !done) {
      std::fprintf(stderr, "microvm: %s\n", done.error().message().c_str());
      code = 1;
    } else {
      std::cout << ref << "\n";
    }
  }
  return code;
}

// "TERM", "SIGTERM" or "15".
Result<int> parseSignal(const std::string& text) {
  static const std::pair<const char*, int> kNames[] = {
      {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL}, {"USR1", SIGUSR1},
      {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"WINCH", SIGWINCH}};
  std::string name = text;
  for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  for (const auto& [known, number] : kNames) {
    if (name == known) return number;
  }
  if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos && name.size() < 3) {
    int number = std::stoi(name);
    if (number >= 1 && number < NSIG) return number;
  }
  return Error(ErrorCode::kInvalidArgument, "invalid signal \"" + text + "\"");
}

// RFC 3339 UTC ("2026-11-22T05:28:05.123Z") to seconds since the epoch.
time_t parseTime(const std::string& text) {
  tm parts{};
  if (!strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &parts)) return 0;
  return timegm(&parts);
}

// "5 seconds ago", "3 minutes ago", as Docker shows durations.
std::string duration(time_t seconds) {
  if (seconds < 1) return "Less than a second";
  auto plural = [](long long n, const char* unit) {
    return std::to_string(n) + " " + unit + (n == 1 ? "" : "s");
  };
  if (seconds < 60) return plural(seconds, "second");
  if (seconds < 3600) return plural(seconds / 60, "minute");
  if (seconds < 86400) return plural(seconds / 3600, "hour");
  return plural(seconds / 86400, "day");
}

std::string ago(const std::string& when) {
  time_t then = parseTime(when);
  return then == 0 ? "" : duration(::time(nullptr) - then) + " ago";
}

std::string describeStatus(const VmInfo& vm) {
  if (vm.status == "running") return "Up " + duration(::time(nullptr) - parseTime(vm.started_at));
  if (vm.status == "paused") return "Up " + duration(::time(nullptr) - parseTime(vm.started_at)) + " (Paused)";
  if (vm.status == "exited") {
    std::string code = vm.has_exit_code ? std::to_string(vm.exit_code) : "?";
    return "Exited (" + code + ") " + ago(vm.finished_at);
  }
  return "Created";
}

std::string shortCommand(const std::vector<std::string>& argv) {
  std::string text;
  for (const auto& arg : argv) text += (text.empty() ? "" : " ") + arg;
  if (text.size() > 20) text = text.substr(0, 19) + "…";
  return "\"" + text + "\"";
}

// Docker's PORTS column: "127.0.0.1:8080->80/tcp, ..." from `port` lines.
std::string psPorts(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) {
    size_t arrow = line.find(" -> ");
    if (arrow == std::string::npos) continue;
    text += (text.empty() ? "" : ", ") + line.substr(arrow + 4) + "->" + line.substr(0, arrow);
  }
  return text;
}

nlohmann::json toJson(const VmInfo& vm) { return nlohmann::json::parse(inspectJson(vm)); }

struct GlobalFlags {
  std::string data_dir;
  std::string accel;
  std::vector<std::string> insecure_registries;
  std::string log_level = "warn";
  std::string log_format = "text";
  int pull_timeout = 3600;  // seconds; set by pull, run and create
  int pull_stall_timeout = 60;
};

Result<Runtime> openRuntime(const GlobalFlags& flags) {
  RuntimeOptions options;
  if (!parseLogLevel(flags.log_level, options.log_level)) {
    return Error(ErrorCode::kInvalidArgument, "unknown log level \"" + flags.log_level + "\" (debug, info, warn, error, off)");
  }
  options.log_format = flags.log_format == "json" ? LogFormat::kJson : LogFormat::kText;
  options.data_dir = flags.data_dir;
  options.accel = flags.accel;
  options.insecure_registries = flags.insecure_registries;
  options.progress = ::isatty(STDERR_FILENO) != 0;  // progress on a terminal, quiet otherwise
  options.pull_timeout = std::chrono::seconds(flags.pull_timeout);
  options.pull_stall_timeout = std::chrono::seconds(flags.pull_stall_timeout);
  return Runtime::open(options);
}

struct RunFlags {
  bool remove = false;
  bool detach = false;
  bool interactive = false;
  std::vector<std::string> wait_tcp;
  std::vector<std::string> wait_http;
  int wait_timeout = 60;
  int cpus = 1;
  std::string memory = "512";
  std::vector<std::string> env;
  std::string workdir;
  std::string user;
  std::string hostname;
  std::string name;
  std::string rootfs;
  std::string snapshot;
  std::string entrypoint;
  bool has_entrypoint = false;
  std::string platform = "linux/amd64";
  std::vector<std::string> env_files;
  std::vector<std::string> volumes;
  std::vector<std::string> vsock;
  bool no_vsock = false;
  std::vector<std::string> tmpfs;
  std::string tmp_size;
  std::vector<std::string> cap_add;
  std::vector<std::string> cap_drop;
  bool privileged = false;
  std::vector<std::string> security_opts;
  int stop_timeout = 10;
  std::vector<std::string> log_opts;
  std::string network = "user";
  std::vector<std::string> publish;
  std::vector<std::string> dns;
  std::vector<std::string> add_hosts;
  std::vector<std::string> egress_allow;
  std::vector<std::string> egress_allow_cidr;
  std::vector<std::string> egress_deny;
  bool egress_deny_all = false;
  bool egress_log = false;
};

// -v HOST:GUEST[:OPTIONS], OPTIONS a comma-separated list of ro, rw, uid=N
// and gid=N (as Docker's and podman's volume options are).
Result<Volume> parseVolume(const std::string& text) {
  auto invalid = Error(ErrorCode::kInvalidArgument,
                       "invalid volume \"" + text + "\" (want HOST:GUEST[:OPTIONS], OPTIONS from ro, rw, uid=N, gid=N)");
  size_t first = text.find(':');
  if (first == std::string::npos || first == 0) return invalid;
  Volume volume;
  volume.host = text.substr(0, first);
  std::string rest = text.substr(first + 1);
  size_t second = rest.find(':');
  volume.guest = rest.substr(0, second);
  if (second != std::string::npos) {
    std::string options = rest.substr(second + 1);
    bool mode_given = false;
    for (size_t start = 0; start <= options.size();) {
      size_t comma = options.find(',', start);
      std::string option = options.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      start = comma == std::string::npos ? options.size() + 1 : comma + 1;
      if (option == "ro" || option == "rw") {
        if (mode_given) return invalid;
        mode_given = true;
        volume.readonly = option == "ro";
      } else if (option.rfind("uid=", 0) == 0 || option.rfind("gid=", 0) == 0) {
        std::string digits = option.substr(4);
        if (digits.empty() || digits.size() > 10 || digits.find_first_not_of("0123456789") != std::string::npos) {
          return invalid;
        }
        unsigned long long id = std::stoull(digits);
        if (id >= 4294967295ull) return invalid;
        auto& field = option[0] == 'u' ? volume.uid : volume.gid;
        if (field) return invalid;
        field = static_cast<uint32_t>(id);
      } else {
        return invalid;
      }
    }
  }
  if (volume.guest.empty()) return invalid;
  return volume;
}

// --vsock PORT:HOST_SOCKET[:listen]
Result<VsockPort> parseVsockPort(const std::string& text) {
  auto invalid = Error(ErrorCode::kInvalidArgument,
                       "invalid vsock mapping \"" + text + "\" (want PORT:HOST_SOCKET_PATH[:listen])");
  size_t colon = text.find(':');
  if (colon == std::string::npos || colon == 0) return invalid;
  std::string port_text = text.substr(0, colon);
  if (port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 10) return invalid;
  unsigned long long port = std::stoull(port_text);
  if (port > UINT32_MAX) return invalid;
  VsockPort mapping;
  mapping.port = static_cast<uint32_t>(port);
  std::string path = text.substr(colon + 1);
  constexpr std::string_view kListen = ":listen";
  if (path.size() > kListen.size() && path.compare(path.size() - kListen.size(), kListen.size(), kListen) == 0) {
    mapping.listen = true;
    path.resize(path.size() - kListen.size());
  }
  if (path.empty()) return invalid;
  mapping.host_socket = path;
  return mapping;
}

// --security-opt seccomp=unconfined|PATH, no-new-privileges[=true|false],
// sysctl-hardening=true|false.
Result<void> applySecurityOpts(const std::vector<std::string>& opts, RunOptions& options) {
  for (const auto& opt : opts) {
    size_t equals = opt.find('=');
    std::string key = opt.substr(0, equals);
    std::string value = equals == std::string::npos ? "true" : opt.substr(equals + 1);
    if (key == "seccomp") {
      options.seccomp = value;
    } else if (key == "no-new-privileges" && (value == "true" || value == "false")) {
      options.no_new_privs = value == "true";
    } else if (key == "sysctl-hardening" && (value == "true" || value == "false")) {
      options.sysctl_hardening = value == "true";
    } else {
      return Error(ErrorCode::kInvalidArgument, "unknown --security-opt \"" + opt + "\"");
    }
  }
  return success();
}

// Docker's json-file --log-opt: max-size=SIZE (bytes, or with k, m, g:
// 1024-based, as Docker's) and max-file=N; one KEY=VALUE per flag, or
// several separated by commas.
Result<void> applyLogOpts(const std::vector<std::string>& opts, RunOptions& options) {
  for (const auto& text : opts) {
    for (size_t start = 0; start <= text.size();) {
      size_t comma = text.find(',', start);
      std::string opt = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      start = comma == std::string::npos ? text.size() + 1 : comma + 1;
      size_t equals = opt.find('=');
      std::string key = opt.substr(0, equals);
      std::string value = equals == std::string::npos ? "" : opt.substr(equals + 1);
      size_t digits = 0;
      while (digits < value.size() && std::isdigit(static_cast<unsigned char>(value[digits]))) ++digits;
      if (key == "max-size") {
        char unit = digits < value.size() ? static_cast<char>(std::tolower(value[digits])) : 'b';
        int shift = unit == 'b' ? 0 : unit == 'k' ? 10 : unit == 'm' ? 20 : unit == 'g' ? 30 : -1;
        if (digits == 0 || digits > 10 || value.size() - digits > 1 || shift < 0) {
          return Error(ErrorCode::kInvalidArgument,
                       "invalid --log-opt max-size \"" + value + "\" (want bytes, or a number with k, m or g)");
        }
        options.log_max_size = std::stoull(value.substr(0, digits)) << shift;
      } else if (key == "max-file") {
        if (digits == 0 || digits != value.size() || digits > 6) {
          return Error(ErrorCode::kInvalidArgument, "invalid --log-opt max-file \"" + value + "\" (want a number)");
        }
        options.log_max_files = std::stoi(value);
      } else {
        return Error(ErrorCode::kInvalidArgument, "unknown --log-opt \"" + opt + "\" (want max-size=SIZE or max-file=N)");
      }
    }
  }
  return success();
}

// Docker's --env-file: KEY=VALUE lines, KEY alone takes our value, '#' comments.
Result<std::vector<std::string>> readEnvFiles(const std::vector<std::string>& paths) {
  std::vector<std::string> env;
  for (const auto& path : paths) {
    std::ifstream file(path);
    if (!file) return Error(ErrorCode::kNotFound, "env file " + path + ": cannot be read");
    std::string line;
    while (std::getline(file, line)) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      size_t start = line.find_first_not_of(' ');
      if (start == std::string::npos || line[start] == '#') continue;
      env.push_back(line.substr(start));
    }
  }
  return env;
}

Result<RunOptions> toRunOptions(const RunFlags& flags, std::vector<std::string> command) {
  auto memory = parseMemory(flags.memory);
  if (!memory) return std::move(memory).error();
  auto file_env = readEnvFiles(flags.env_files);
  if (!file_env) return std::move(file_env).error();
  RunOptions options;
  options.rootfs = flags.rootfs;
  // Without --rootfs the first word is the image, as in `docker run IMAGE CMD`.
  if (flags.rootfs.empty() && flags.snapshot.empty() && !command.empty()) {
    options.image = command.front();
    command.erase(command.begin());
  }
  options.command = std::move(command);
  options.has_entrypoint = flags.has_entrypoint;
  options.entrypoint = flags.entrypoint;
  options.platform = flags.platform;
  // -e wins over --env-file, as in Docker.
  options.env = expandEnv(*file_env);
  for (auto& entry : expandEnv(flags.env)) options.env.push_back(std::move(entry));
  options.workdir = flags.workdir;
  options.user = flags.user;
  options.hostname = flags.hostname;
  options.name = flags.name;
  options.cpus = flags.cpus;
  options.memory_mib = *memory;
  options.remove = flags.remove;
  options.interactive = flags.interactive;
  for (const auto& text : flags.wait_tcp) {
    auto probe = parseReadinessProbe(text, /*http=*/false);
    if (!probe) return std::move(probe).error();
    options.wait_for.push_back(*probe);
  }
  for (const auto& text : flags.wait_http) {
    auto probe = parseReadinessProbe(text, /*http=*/true);
    if (!probe) return std::move(probe).error();
    options.wait_for.push_back(*probe);
  }
  options.ready_timeout = std::chrono::seconds(flags.wait_timeout);
  options.stop_timeout_seconds = flags.stop_timeout;
  MICROVM_TRY(applyLogOpts(flags.log_opts, options));
  for (const auto& text : flags.volumes) {
    auto volume = parseVolume(text);
    if (!volume) return std::move(volume).error();
    options.volumes.push_back(std::move(*volume));
  }
  options.vsock = !flags.no_vsock;
  for (const auto& text : flags.vsock) {
    auto mapping = parseVsockPort(text);
    if (!mapping) return std::move(mapping).error();
    options.vsock_ports.push_back(std::move(*mapping));
  }
  options.tmpfs = flags.tmpfs;
  options.tmp_size = flags.tmp_size;
  options.cap_add = flags.cap_add;
  options.cap_drop = flags.cap_drop;
  options.privileged = flags.privileged;
  MICROVM_TRY(applySecurityOpts(flags.security_opts, options));
  // Docker's names for the default network mean ours.
  options.network = flags.network == "bridge" || flags.network == "default" ? "user" : flags.network;
  options.publish = flags.publish;
  options.dns = flags.dns;
  options.add_hosts = flags.add_hosts;
  options.egress_allow = flags.egress_allow;
  options.egress_allow_cidr = flags.egress_allow_cidr;
  options.egress_deny = flags.egress_deny;
  options.egress_deny_all = flags.egress_deny_all;
  options.egress_log = flags.egress_log;
  return options;
}

// Docker's sig-proxy set is blocked before the VM exists, so none is lost,
// and a helper thread forwards each one, as itself, to the runner (which
// also starts a stop for the terminating ones). Ctrl-C on our terminal
// reaches only us: the runner has a session of its own.
sigset_t blockStopSignals() {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&stop_signals, sig);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  return stop_signals;
}

int forwardSignalsAndWait(VmHandle& vm, sigset_t stop_signals) {
  std::thread([stop_signals, &vm] {
    for (;;) {
      int sig = 0;
      if (sigwait(&stop_signals, &sig) == 0) vm.signal(sig);
    }
  }).detach();
  auto code = vm.wait();
  if (!code) return fail(code.error());
  return *code;
}

struct ExecFlags {
  bool interactive = false;
  bool tty = false;
  bool ping = false;
  std::vector<std::string> env;
  std::string workdir;
  std::string user;
};

// The host terminal in raw mode for `exec -t`: keystrokes (^C included) go to
// the guest's tty untouched. Restored on every return path by the destructor;
// signals cannot bypass it, since exec receives them through a signalfd.
class RawTerminal {
 public:
  explicit RawTerminal(int fd) {
    if (::tcgetattr(fd, &saved_) != 0) return;
    termios raw = saved_;
    ::cfmakeraw(&raw);
    if (::tcsetattr(fd, TCSANOW, &raw) == 0) fd_ = fd;
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;
  ~RawTerminal() {
    if (fd_ >= 0) ::tcsetattr(fd_, TCSANOW, &saved_);
  }

 private:
  int fd_ = -1;
  termios saved_{};
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
  if (flags.tty) {
    const char* term = std::getenv("TERM");
    bool has_term = std::any_of(options.env.begin(), options.env.end(),
                                [](const std::string& var) { return var.rfind("TERM=", 0) == 0; });
    if (term && *term && !has_term) options.env.push_back(std::string("TERM=") + term);
  }
  options.workdir = flags.workdir;
  options.user = flags.user;
  options.tty = flags.tty;
  options.stdin_fd = flags.interactive ? STDIN_FILENO : -1;
  if (flags.tty) options.terminal_fd = ::isatty(STDIN_FILENO) ? STDIN_FILENO : ::isatty(STDOUT_FILENO) ? STDOUT_FILENO : -1;

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

int cmdRun(const GlobalFlags& global, const RunFlags& flags, std::vector<std::string> command) {
  if (!flags.snapshot.empty() && (!command.empty() || !flags.rootfs.empty())) {
    return fail("--snapshot resumes a saved VM: it takes no --rootfs and no command");
  }
  auto options = toRunOptions(flags, std::move(command));
  if (!options) return fail(options.error());
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  if (flags.detach) {
    options->stdout_fd = -1;
    options->stderr_fd = -1;
  } else if (flags.interactive) {
    options->stdin_fd = STDIN_FILENO;
  }
  // Block stop signals before the VM exists, so none is lost.
  sigset_t stop_signals = blockStopSignals();
  auto vm = flags.snapshot.empty() ? runtime->run(*options) : runtime->restore(flags.snapshot, *options);
  if (!vm) return fail(vm.error());
  if (flags.detach) {
    std::cout << vm->id() << "\n";
    return 0;
  }
  return forwardSignalsAndWait(*vm, stop_signals);
}

int cmdImages(const GlobalFlags& global, const std::string& format, bool quiet) {
  if (format != "table" && format != "json") return fail("unknown format \"" + format + "\" (want table or json)");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto images = runtime->images();
  if (!images) return fail(images.error());
  if (quiet) {
    for (const auto& image : *images) std::cout << image.reference << "\n";
    return 0;
  }
  if (format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& image : *images) {
      list.push_back({{"reference", image.reference},
                      {"digest", image.digest},
                      {"size", image.size},
                      {"pulled_at", image.pulled_at},
                      {"entrypoint", image.entrypoint},
                      {"cmd", image.cmd},
                      {"env", image.env},
                      {"working_dir", image.working_dir},
                      {"user", image.user},
                      {"exposed_ports", image.exposed_ports}});
    }
    std::cout << list.dump(2) << "\n";
    return 0;
  }
  std::printf("%-50s   %-19s   %-16s   %s\n", "REFERENCE", "DIGEST", "PULLED", "SIZE");
  for (const auto& image : *images) {
    std::printf("%-50s   %-19s   %-16s   %.1f MB\n", image.reference.c_str(), image.digest.substr(0, 19).c_str(),
                ago(image.pulled_at).c_str(), static_cast<double>(image.size) / 1e6);
  }
  return 0;
}

int cmdLogin(const GlobalFlags& global, const std::string& registry, const std::string& username, bool from_stdin) {
  std::string password;
  if (from_stdin) {
    std::getline(std::cin, password);
  } else if (const char* env = std::getenv("MICROVM_PASSWORD")) {
    password = env;
  } else {
    return fail("give the password with --password-stdin or $MICROVM_PASSWORD");
  }
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  if (auto saved = runtime->login(registry, username, password); !saved) return fail(saved.error());
  std::cout << "Login Succeeded\n";
  return 0;
}

int cmdDoctor(const GlobalFlags& global, const std::string& format, const std::vector<int>& ports) {
  if (format != "text" && format != "json") return fail("unknown format \"" + format + "\" (want text or json)");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto checks = runtime->doctor(ports);
  bool healthy = true;
  nlohmann::json list = nlohmann::json::array();
  for (const auto& check : checks) {
    healthy = healthy && (check.ok || !check.required);
    if (format == "json") {
      list.push_back({{"name", check.name},
                      {"ok", check.ok},
                      {"required", check.required},
                      {"detail", check.detail},
                      {"hint", check.ok ? "" : check.hint}});
    } else {
      const char* mark = check.ok ? "ok  " : (check.required ? "FAIL" : "warn");
      std::printf("%s  %-16s %s%s\n", mark, check.name.c_str(), check.detail.c_str(),
                  check.ok ? "" : (" -> " + check.hint).c_str());
    }
  }
  if (format == "json") std::cout << nlohmann::json{{"ok", healthy}, {"checks", list}}.dump(2) << "\n";
  return healthy ? 0 : 1;
}

int cmdSnapshotList(const GlobalFlags& global, const std::string& format) {
  if (format != "table" && format != "json") return fail("unknown format \"" + format + "\" (want table or json)");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto snapshots = runtime->listSnapshots();
  if (!snapshots) return fail(snapshots.error());
  if (format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& snapshot : *snapshots) {
      list.push_back({{"name", snapshot.name},
                      {"created_at", snapshot.created_at},
                      {"source_id", snapshot.source_id},
                      {"source_name", snapshot.source_name},
                      {"bytes", snapshot.bytes}});
    }
    std::cout << list.dump(2) << "\n";
    return 0;
  }
  std::printf("%-24s   %-20s   %-16s   %s\n", "NAME", "VM", "CREATED", "SIZE");
  for (const auto& snapshot : *snapshots) {
    std::printf("%-24s   %-20s   %-16s   %.1f MB\n", snapshot.name.c_str(), snapshot.source_name.c_str(),
                ago(snapshot.created_at).c_str(), static_cast<double>(snapshot.bytes) / 1e6);
  }
  return 0;
}

int cmdCreate(const GlobalFlags& global, const RunFlags& flags, std::vector<std::string> command) {
  auto options = toRunOptions(flags, std::move(command));
  if (!options) return fail(options.error());
  if (!options->wait_for.empty()) return fail("--wait-tcp and --wait-http belong to run: create does not start the VM");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto id = runtime->create(*options);
  if (!id) return fail(id.error());
  std::cout << *id << "\n";
  return 0;
}

int cmdStart(const GlobalFlags& global, const std::vector<std::string>& refs, bool attach, bool interactive) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  if (interactive && !attach) return fail("start --interactive needs --attach");
  if (attach) {
    if (refs.size() != 1) return fail("start --attach takes exactly one VM");
    sigset_t stop_signals = blockStopSignals();
    auto vm = runtime->start(refs[0], STDOUT_FILENO, STDERR_FILENO, interactive ? STDIN_FILENO : -1);
    if (!vm) return fail(vm.error());
    return forwardSignalsAndWait(*vm, stop_signals);
  }
  return forEachVm(refs, [&](const std::string& ref) -> Result<void> {
    auto vm = runtime->start(ref);
    if (!vm) return std::move(vm).error();
    return success();
  });
}

// Output relayed until the workload exits; our stdin's EOF closes its stdin.
int cmdAttach(const GlobalFlags& global, const std::string& ref, bool with_stdin) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto code = runtime->attach(ref, with_stdin ? STDIN_FILENO : -1, STDOUT_FILENO, STDERR_FILENO);
  if (!code) return fail(code.error());
  return *code;
}

int cmdPs(const GlobalFlags& global, bool all, const std::string& format, bool quiet) {
  if (format != "table" && format != "json") return fail("unknown format \"" + format + "\" (want table or json)");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto vms = runtime->list(all);
  if (!vms) return fail(vms.error());
  if (quiet) {
    for (const auto& vm : *vms) std::cout << vm.id.substr(0, 12) << "\n";
    return 0;
  }
  if (format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& vm : *vms) list.push_back(toJson(vm));
    std::cout << list.dump(2) << "\n";
    return 0;
  }
  std::printf("%-12s   %-20s   %-22s   %-16s   %-24s   %s\n", "VM ID", "NAME", "COMMAND", "CREATED", "STATUS",
              "PORTS");
  for (const auto& vm : *vms) {
    std::printf("%-12s   %-20s   %-22s   %-16s   %-24s   %s\n", vm.id.substr(0, 12).c_str(), vm.name.c_str(),
                shortCommand(vm.command).c_str(), ago(vm.created_at).c_str(), describeStatus(vm).c_str(),
                psPorts(vm.ports).c_str());
  }
  return 0;
}

int cmdInspect(const GlobalFlags& global, const std::vector<std::string>& refs) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  nlohmann::json list = nlohmann::json::array();
  int code = 0;
  for (const auto& ref : refs) {
    auto vm = runtime->inspect(ref);
    if (!vm) {
      std::fprintf(stderr, "microvm: %s\n", vm.error().message().c_str());
      code = 1;
      continue;
    }
    list.push_back(toJson(*vm));
  }
  std::cout << list.dump(2) << "\n";
  return code;
}

int cmdLogs(const GlobalFlags& global, const std::string& ref, const LogOptions& options) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto shown = runtime->logs(ref, options, STDOUT_FILENO, STDERR_FILENO);
  if (!shown) return fail(shown.error());
  return 0;
}

int cmdWait(const GlobalFlags& global, const std::vector<std::string>& refs) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  int code = 0;
  for (const auto& ref : refs) {
    auto exit_code = runtime->wait(ref);
    if (!exit_code) {
      std::fprintf(stderr, "microvm: %s\n", exit_code.error().message().c_str());
      code = 1;
      continue;
    }
    std::cout << *exit_code << std::endl;
  }
  return code;
}

// microvm port VM [GUESTPORT[/proto]] | VM add SPEC... | VM rm SPEC...
int cmdPort(const GlobalFlags& global, const std::vector<std::string>& args) {
  if (args.empty()) return fail("port: name a VM");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  const std::string& vm = args[0];
  if (args.size() >= 2 && (args[1] == "add" || args[1] == "rm")) {
    if (args.size() < 3) return fail("port " + args[1] + ": give a port mapping");
    int code = 0;
    for (size_t i = 2; i < args.size(); ++i) {
      if (args[1] == "add") {
        auto added = runtime->addPort(vm, args[i]);
        if (!added) {
          std::fprintf(stderr, "microvm: %s\n", added.error().message().c_str());
          code = 1;
        } else {
          std::cout << *added << "\n";
        }
      } else if (auto removed = runtime->removePort(vm, args[i]); !removed) {
        std::fprintf(stderr, "microvm: %s\n", removed.error().message().c_str());
        code = 1;
      }
    }
    return code;
  }
  if (args.size() > 2) return fail("port: want VM [GUESTPORT[/PROTO]], VM add SPEC or VM rm SPEC");
  auto lines = runtime->ports(vm);
  if (!lines) return fail(lines.error());
  std::string filter;
  if (args.size() == 2) filter = args[1].find('/') == std::string::npos ? args[1] + "/tcp" : args[1];
  bool any = false;
  for (const auto& line : *lines) {
    if (!filter.empty()) {
      if (line.rfind(filter + " -> ", 0) != 0) continue;
      std::cout << line.substr(filter.size() + 4) << "\n";  // as Docker: only the host side
    } else {
      std::cout << line << "\n";
    }
    any = true;
  }
  if (!filter.empty() && !any) return fail("no public port '" + filter + "' published for " + vm);
  return 0;
}

int cmdPrune(const GlobalFlags& global) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto removed = runtime->prune();
  if (!removed) return fail(removed.error());
  for (const auto& id : *removed) std::cout << id << "\n";
  return 0;
}

int cmdInfo(const GlobalFlags& global, const std::string& format) {
  if (format != "text" && format != "json") return fail("unknown format \"" + format + "\" (want text or json)");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto info = runtime->info();
  if (!info) return fail(info.error());
  if (format == "json") {
    nlohmann::json j = {{"version", kVersion},
                        {"qemu", info->qemu},
                        {"qemu_version", info->qemu_version},
                        {"kernel", info->kernel.string()},
                        {"initramfs", info->initramfs.string()},
                        {"accel", info->accel},
                        {"accel_reason", info->accel_reason},
                        {"data_dir", info->data_dir.string()}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "Version:       " << kVersion << "\n"
              << "QEMU:          " << info->qemu << "\n"
              << "QEMU version:  " << info->qemu_version << "\n"
              << "Kernel:        " << info->kernel.string() << "\n"
              << "Initramfs:     " << info->initramfs.string() << "\n"
              << "Acceleration:  " << info->accel << " (" << info->accel_reason << ")\n"
              << "Data dir:      " << info->data_dir.string() << "\n";
  }
  return 0;
}

// True if `word` names an option of `app` that takes a value in the next word.
bool takesSeparateValue(const CLI::App& app, const std::string& word) {
  if (word.size() < 2 || word[0] != '-' || word.find('=') != std::string::npos) return false;
  const CLI::Option* option = app.get_option_no_throw(word);
  return option != nullptr && option->get_items_expected_min() > 0;
}

// Docker's rule for `run [OPTIONS] [--] COMMAND [ARG...]`: the first word
// that is not an option (or follows "--") starts the workload's command.
// Moves that tail into `command` and returns how many words remain to parse.
int splitWorkloadCommand(const CLI::App& app, std::initializer_list<const CLI::App*> commands, int argc,
                         char** argv, std::vector<std::string>& command) {
  int i = 1;
  while (i < argc && argv[i][0] == '-') i += takesSeparateValue(app, argv[i]) ? 2 : 1;
  if (i >= argc) return argc;
  const CLI::App* found = nullptr;
  for (const auto* candidate : commands) {
    if (candidate->get_name() == argv[i]) found = candidate;
  }
  if (!found) return argc;
  const CLI::App& run = *found;
  for (++i; i < argc; ++i) {
    std::string word = argv[i];
    if (word == "--") {
      command.assign(argv + i + 1, argv + argc);
      return i;
    }
    if (word.size() < 2 || word[0] != '-') {
      command.assign(argv + i, argv + argc);
      return i;
    }
    if (takesSeparateValue(run, word)) ++i;
  }
  return argc;
}

void addRunFlags(CLI::App& command, RunFlags& flags) {
  command.add_option("--rootfs", flags.rootfs, "Host directory to use as the root filesystem");
  command.add_flag("--rm", flags.remove, "Remove the VM and all its files when it exits");
  command.add_flag("-i,--interactive", flags.interactive, "Keep the workload's stdin open and feed it ours");
  command.add_option("--wait-tcp", flags.wait_tcp,
                     "Return only once PORT accepts TCP connections inside the VM (repeatable)");
  command.add_option("--wait-http", flags.wait_http,
                     "Return only once GET PORT[/PATH] inside the VM answers 2xx/3xx (repeatable)");
  command.add_option("--wait-timeout", flags.wait_timeout, "Seconds to wait for readiness before stopping the VM")
      ->check(CLI::PositiveNumber);
  command.add_option("--cpus", flags.cpus, "Number of vCPUs")->check(CLI::Range(1, 64));
  command.add_option("-m,--memory", flags.memory, "Memory: MiB, or with a unit (512m, 2g)");
  command.add_option("-e,--env", flags.env, "Set an environment variable (KEY=VALUE, or KEY to pass ours)");
  command.add_option("--env-file", flags.env_files, "Read environment variables from a file (KEY=VALUE lines)");
  command.add_option("--entrypoint", flags.entrypoint, "Replace the image's entrypoint (\"\" clears it)")
      ->each([&flags](const std::string&) { flags.has_entrypoint = true; });
  command.add_option("--platform", flags.platform, "Image platform to pull (default linux/amd64)");
  command.add_option("-v,--volume", flags.volumes, "Share a host directory: HOST:GUEST[:OPTIONS], OPTIONS from ro (enforced on the host), rw, uid=N, gid=N "
                 "(show the directory's owner/group as N in the guest; root only)");
  command.add_option("--vsock", flags.vsock,
                     "Wire guest vsock port PORT to a host unix socket: PORT:HOST_SOCKET_PATH (the guest "
                     "connects to it), or PORT:HOST_SOCKET_PATH:listen (host clients connect there)");
  command.add_flag("--no-vsock", flags.no_vsock,
                   "No vsock device (needed to take snapshots: QEMU cannot save a vhost-user-vsock device)");
  command.add_option("--tmpfs", flags.tmpfs, "Mount a tmpfs: PATH[:OPTIONS], e.g. /scratch:size=64m");
  command.add_option("--tmp-size", flags.tmp_size, "Size of the guest's /tmp tmpfs, e.g. 256m");
  command.add_option("--cap-add", flags.cap_add, "Add a capability (NET_ADMIN, ..., or ALL)");
  command.add_option("--cap-drop", flags.cap_drop, "Drop a capability (NET_RAW, ..., or ALL)");
  command.add_flag("--privileged", flags.privileged, "All capabilities, no seccomp filter, no no_new_privs");
  command.add_option("--security-opt", flags.security_opts,
                     "seccomp=unconfined|PROFILE.json, no-new-privileges=true|false, sysctl-hardening=true|false");
  command.add_option("-w,--workdir", flags.workdir, "Working directory inside the VM");
  command.add_option("-u,--user", flags.user, "User inside the VM: UID[:GID] or NAME[:GROUP]");
  // -h is Docker's --hostname here, so help is --help only.
  command.set_help_flag("--help", "Print this help message and exit");
  command.add_option("-h,--hostname", flags.hostname, "Hostname inside the VM (default: the short VM id)");
  command.add_option("--network", flags.network, "Network: user (default; NAT, ports, DNS) or none (only lo)");
  command.add_option("-p,--publish", flags.publish,
                     "Forward a host port: [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp], or GUESTPORT for a free host port "
                     "(host IP default 127.0.0.1; IPv6 as [::1]:8080:80)");
  command.add_option("--dns", flags.dns, "DNS upstream the guest's resolver uses: IP[:PORT] (default: the host's)");
  command.add_option("--add-host", flags.add_hosts, "Add a line to the guest's /etc/hosts: NAME:IP (IP may be host-gateway)");
  command.add_option("--egress-allow", flags.egress_allow,
                     "Allow outbound traffic to HOST[:PORT][/tcp|/udp] (*.example.com: its subdomains); "
                     "any egress flag denies everything else");
  command.add_option("--egress-allow-cidr", flags.egress_allow_cidr, "Allow outbound traffic to CIDR[:PORT][/tcp|/udp]");
  command.add_option("--egress-deny", flags.egress_deny,
                     "Refuse outbound traffic to HOST|CIDR[:PORT][/tcp|/udp], even if allowed; alone, all else is "
                     "allowed");
  command.add_flag("--egress-deny-all", flags.egress_deny_all, "Deny all outbound traffic (port forwards still work)");
  command.add_flag("--egress-log", flags.egress_log, "Log every egress decision to the VM's runner.log");
  command.add_option("--name", flags.name, "Name of the VM (unique)");
  command.add_option("--stop-timeout", flags.stop_timeout,
                     "Seconds between forwarding SIGTERM and stopping the VM hard")
      ->check(CLI::NonNegativeNumber);
  command.add_option("--log-opt", flags.log_opts,
                     "Log rotation, as Docker's json-file: max-size=SIZE (default 20m), max-file=N (default 5)");
}

// The flags of every command that may pull an image.
void addPullFlags(CLI::App& command, GlobalFlags& flags) {
  command.add_option("--pull-timeout", flags.pull_timeout,
                     "Seconds a pull from a registry may take in all, retries included (default 3600)")
      ->check(CLI::Range(1, 7 * 24 * 3600));
  command.add_option("--pull-stall-timeout", flags.pull_stall_timeout,
                     "Seconds without a byte from the registry before a request is dropped and retried (default 60)")
      ->check(CLI::Range(1, 24 * 3600));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"microvm: run OCI container images as hardware-isolated microVMs", "microvm"};
  app.require_subcommand(1);
  app.set_version_flag("-v,--version", std::string("microvm version ") + kVersion);
  GlobalFlags global;
  app.add_option("--data-dir", global.data_dir, "Where VMs and images live (default: $MICROVM_HOME, "
                                                  "$XDG_DATA_HOME/microvm, or /var/lib/microvm for root)");
  app.add_option("--accel", global.accel, "Acceleration: auto (default), kvm or tcg")
      ->check(CLI::IsMember({"auto", "kvm", "tcg"}));
  app.add_option("--insecure-registry", global.insecure_registries, "Registry to reach over plain http (repeatable)");
  app.add_option("--log-level", global.log_level, "Log the runtime's steps on stderr: debug, info, warn (default), "
                                                  "error or off")
      ->check(CLI::IsMember({"debug", "info", "warn", "warning", "error", "off"}));
  app.add_option("--log-format", global.log_format, "Log lines as text (default) or json (one object per line)")
      ->check(CLI::IsMember({"text", "json"}));

  RunFlags run;
  std::vector<std::string> command;
  auto* run_cmd = app.add_subcommand("run", "Run a command in a new microVM");
  run_cmd->footer("Usage: microvm run [OPTIONS] IMAGE [COMMAND] [ARG...]\n"
                  "       microvm run [OPTIONS] --rootfs DIR [--] COMMAND [ARG...]");
  addRunFlags(*run_cmd, run);
  addPullFlags(*run_cmd, global);
  run_cmd->add_flag("-d,--detach", run.detach, "Run in the background and print the VM id");
  run_cmd->add_option("--snapshot", run.snapshot, "Start from a snapshot instead: resume the saved VM");

  ExecFlags exec_flags;
  auto* exec_cmd = app.add_subcommand("exec", "Run a command in a running VM");
  exec_cmd->footer("Usage: microvm exec [OPTIONS] VM COMMAND [ARG...]\n"
                   "The exit status is the command's; 125 when microvm itself fails, 126 when the\n"
                   "command cannot be run, 127 when it is not found.");
  exec_cmd->add_flag("-i,--interactive", exec_flags.interactive, "Forward stdin to the command (else it reads EOF)");
  exec_cmd->add_flag("-t,--tty", exec_flags.tty, "Run the command on a pseudo-terminal");
  exec_cmd->add_option("-e,--env", exec_flags.env, "Set an environment variable (KEY=VALUE, or KEY to pass ours)");
  exec_cmd->add_option("-w,--workdir", exec_flags.workdir, "Working directory in the guest");
  exec_cmd->add_option("-u,--user", exec_flags.user, "User (name|uid[:group|gid])");
  // The agent's round trip alone, for bench/exec.sh: the floor of exec.
  exec_cmd->add_flag("--ping", exec_flags.ping, "Only check that the VM's agent answers")->group("");

  std::vector<std::string> copy_paths;
  auto* cp_cmd = app.add_subcommand("cp", "Copy files or directories between the host and a running VM");
  cp_cmd->footer("Usage: microvm cp [OPTIONS] VM:SRC_PATH DEST_PATH\n"
                 "       microvm cp [OPTIONS] SRC_PATH VM:DEST_PATH");
  cp_cmd->add_option("paths", copy_paths, "SRC DEST")->required()->expected(2);

  auto* create_cmd = app.add_subcommand("create", "Create a VM without starting it");
  create_cmd->footer("Usage: microvm create [OPTIONS] IMAGE [COMMAND] [ARG...]\n"
                     "       microvm create [OPTIONS] --rootfs DIR [--] COMMAND [ARG...]");
  addRunFlags(*create_cmd, run);
  addPullFlags(*create_cmd, global);

  std::vector<std::string> refs;
  bool attach = false;
  auto* start_cmd = app.add_subcommand("start", "Start one or more created or stopped VMs");
  start_cmd->add_option("vm", refs, "VM id, id prefix or name")->required();
  start_cmd->add_flag("-a,--attach", attach, "Attach to its output and return its exit code");
  bool start_interactive = false;
  start_cmd->add_flag("-i,--interactive", start_interactive, "With -a: feed our stdin to the workload (VM made with -i)");

  bool attach_no_stdin = false;
  std::string attach_ref;
  auto* attach_cmd = app.add_subcommand("attach", "Connect to a running VM's workload: its output, and our stdin if it was made with -i");
  attach_cmd->add_option("vm", attach_ref, "VM id, id prefix or name")->required();
  attach_cmd->add_flag("--no-stdin", attach_no_stdin, "Do not attach stdin");

  int timeout = 10;
  auto* restart_cmd = app.add_subcommand("restart", "Stop, then start one or more VMs");
  restart_cmd->add_option("vm", refs, "VM id, id prefix or name")->required();
  restart_cmd->add_option("-t,--time", timeout, "Seconds to wait for the workload before stopping it hard");

  bool all = false;
  bool quiet = false;
  std::string format;
  auto* ps_cmd = app.add_subcommand("ps", "List VMs");
  ps_cmd->add_flag("-a,--all", all, "Show all VMs (default: only running ones)");
  ps_cmd->add_flag("-q,--quiet", quiet, "Only show short ids");
  ps_cmd->add_option("--format", format, "table (default) or json")->default_str("table");

  auto* inspect_cmd = app.add_subcommand("inspect", "Show the full record of one or more VMs, as JSON");
  inspect_cmd->add_option("vm", refs, "VM id, id prefix or name")->required();

  LogOptions log_options;
  std::string log_ref;
  auto* logs_cmd = app.add_subcommand("logs", "Show a VM's workload output");
  logs_cmd->add_option("vm", log_ref, "VM id, id prefix or name")->required();
  logs_cmd->add_flag("-f,--follow", log_options.follow, "Follow the output until the VM exits");
  logs_cmd->add_option("-n,--tail", log_options.tail, "Only the last N records");
  logs_cmd->add_flag("-t,--timestamps", log_options.timestamps, "Prefix each record with its time");
  logs_cmd->add_flag("--console", log_options.console, "Show the guest kernel console instead");

  auto* stop_cmd = app.add_subcommand("stop", "Stop one or more VMs (SIGTERM, then a hard stop)");
  stop_cmd->add_option("vm", refs, "VM id, id prefix or name")->required();
  stop_cmd->add_option("-t,--time", timeout, "Seconds to wait before stopping hard")->check(CLI::NonNegativeNumber);

  std::string signal_name = "KILL";
  auto* kill_cmd = app.add_subcommand("kill", "Send a signal to the workload of one or more VMs");
  kill_cmd->add_option("vm", refs, "VM id, id prefix or name")->required();
  kill_cmd->add_option("-s,--signal", signal_name, "Signal name or number (default KILL)");

  bool force = false;
  auto* rm_cmd = app.add_subcommand("rm", "Remove one or more VMs and all their files");
  rm_cmd->add_option("vm", refs, "VM id, id prefix or name")->required();
  rm_cmd->add_flag("-f,--force", force, "Stop a running VM hard first");

  auto* wait_cmd = app.add_subcommand("wait", "Wait for VMs to exit and print their exit codes");
  wait_cmd->add_option("vm", refs, "VM id, id prefix or name")->required();
  auto* pause_cmd = app.add_subcommand("pause", "Freeze the vCPUs of one or more VMs");
  pause_cmd->add_option("vm", refs, "VM id, id prefix or name")->required();
  auto* unpause_cmd = app.add_subcommand("unpause", "Resume paused VMs");
  unpause_cmd->add_option("vm", refs, "VM id, id prefix or name")->required();
  auto* prune_cmd = app.add_subcommand("prune", "Remove every VM that is not running");
  std::vector<std::string> port_args;
  auto* port_cmd = app.add_subcommand("port", "List a VM's port forwards, or change them: port VM add|rm SPEC");
  port_cmd->add_option("args", port_args, "VM [GUESTPORT[/PROTO]] | VM add SPEC... | VM rm SPEC...")->required();

  auto* snapshot_cmd = app.add_subcommand("snapshot", "Save running VMs and start new ones from them");
  snapshot_cmd->require_subcommand(1);
  std::string snapshot_vm;
  std::vector<std::string> snapshot_names;
  auto* snapshot_create = snapshot_cmd->add_subcommand("create", "Save a VM's memory, devices and disk");
  snapshot_create->add_option("vm", snapshot_vm, "VM id, id prefix or name")->required();
  snapshot_create->add_option("name", snapshot_names, "Snapshot name")->required()->expected(1);
  auto* snapshot_ls = snapshot_cmd->add_subcommand("ls", "List snapshots");
  snapshot_ls->add_option("--format", format, "table (default) or json");
  auto* snapshot_rm = snapshot_cmd->add_subcommand("rm", "Remove snapshots");
  snapshot_rm->add_option("name", snapshot_names, "Snapshot name")->required();
  auto* snapshot_restore = snapshot_cmd->add_subcommand("restore", "Start a new VM from a snapshot (detached)");
  snapshot_restore->add_option("name", run.snapshot, "Snapshot name")->required();
  snapshot_restore->add_option("--name", run.name, "Name of the new VM");

  std::vector<std::string> image_refs;
  std::string platform = "linux/amd64";
  auto* pull_cmd = app.add_subcommand("pull", "Pull images from a registry or an OCI layout (oci:PATH[:TAG])");
  pull_cmd->add_option("image", image_refs, "Image reference")->required();
  pull_cmd->add_option("--platform", platform, "Platform (default linux/amd64)");
  addPullFlags(*pull_cmd, global);
  auto* images_cmd = app.add_subcommand("images", "List pulled images");
  images_cmd->add_option("--format", format, "table (default) or json");
  images_cmd->add_flag("-q,--quiet", quiet, "Only show references");
  auto* rmi_cmd = app.add_subcommand("rmi", "Remove images");
  rmi_cmd->add_option("image", image_refs, "Image reference")->required();
  rmi_cmd->add_flag("-f,--force", force, "Remove even if a VM uses it");
  auto* image_cmd = app.add_subcommand("image", "Manage images");
  image_cmd->require_subcommand(1);
  auto* image_prune = image_cmd->add_subcommand("prune", "Remove image data no tag refers to");
  std::string registry;
  std::string username;
  bool password_stdin = false;
  auto* login_cmd = app.add_subcommand("login", "Store credentials for a registry");
  login_cmd->add_option("registry", registry, "Registry host[:port]")->required();
  login_cmd->add_option("-u,--username", username, "User name")->required();
  login_cmd->add_flag("--password-stdin", password_stdin, "Read the password from stdin (else: $MICROVM_PASSWORD)");

  std::vector<int> doctor_ports;
  auto* doctor_cmd = app.add_subcommand("doctor", "Check that this host can run VMs, with a fix for each problem");
  doctor_cmd->add_option("--format", format, "text (default) or json");
  doctor_cmd->add_option("-p,--port", doctor_ports, "Also check that this host port is free (repeatable)");

  auto* info_cmd = app.add_subcommand("info", "Show the QEMU, kernel, acceleration and data dir in use");
  info_cmd->add_option("-f,--format", format, "Output format: text or json")->default_str("text");

  // Everything from COMMAND on belongs to the workload, options included, so
  // only the words before it go to the parser.
  int parsed_argc = splitWorkloadCommand(app, {run_cmd, create_cmd, exec_cmd}, argc, argv, command);
  try {
    app.parse(parsed_argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string sub;
    for (const auto* candidate : app.get_subcommands()) sub = candidate->get_name() + " ";
    std::fprintf(stderr, "microvm: %s\nSee 'microvm %s--help'.\n", e.what(), sub.c_str());
    return kExitCliError;
  }

  if (run_cmd->parsed()) return cmdRun(global, run, command);
  if (create_cmd->parsed()) return cmdCreate(global, run, command);
  if (exec_cmd->parsed()) return cmdExec(global, exec_flags, command);
  if (cp_cmd->parsed()) return cmdCopy(global, copy_paths[0], copy_paths[1]);
  if (start_cmd->parsed()) return cmdStart(global, refs, attach, start_interactive);
  if (attach_cmd->parsed()) return cmdAttach(global, attach_ref, !attach_no_stdin);
  if (ps_cmd->parsed()) return cmdPs(global, all, format.empty() ? "table" : format, quiet);
  if (inspect_cmd->parsed()) return cmdInspect(global, refs);
  if (logs_cmd->parsed()) return cmdLogs(global, log_ref, log_options);
  if (wait_cmd->parsed()) return cmdWait(global, refs);
  if (prune_cmd->parsed()) return cmdPrune(global);
  if (port_cmd->parsed()) return cmdPort(global, port_args);
  if (info_cmd->parsed()) return cmdInfo(global, format.empty() ? "text" : format);
  if (snapshot_ls->parsed()) return cmdSnapshotList(global, format.empty() ? "table" : format);
  if (doctor_cmd->parsed()) return cmdDoctor(global, format.empty() ? "text" : format, doctor_ports);
  if (images_cmd->parsed()) return cmdImages(global, format.empty() ? "table" : format, quiet);
  if (login_cmd->parsed()) return cmdLogin(global, registry, username, password_stdin);
  if (snapshot_restore->parsed()) {
    run.detach = true;
    return cmdRun(global, run, {});
  }

  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  if (restart_cmd->parsed()) {
    return forEachVm(refs, [&](const std::string& ref) -> Result<void> {
      MICROVM_TRY(runtime->stop(ref, timeout));
      auto vm = runtime->start(ref);
      if (!vm) return std::move(vm).error();
      return success();
    });
  }
  if (stop_cmd->parsed()) return forEachVm(refs, [&](const std::string& ref) { return runtime->stop(ref, timeout); });
  if (kill_cmd->parsed()) {
    auto signal = parseSignal(signal_name);
    if (!signal) return fail(signal.error());
    return forEachVm(refs, [&](const std::string& ref) { return runtime->kill(ref, *signal); });
  }
  if (rm_cmd->parsed()) return forEachVm(refs, [&](const std::string& ref) { return runtime->remove(ref, force); });
  if (pause_cmd->parsed()) return forEachVm(refs, [&](const std::string& ref) { return runtime->pause(ref); });
  if (unpause_cmd->parsed()) return forEachVm(refs, [&](const std::string& ref) { return runtime->resume(ref); });
  if (pull_cmd->parsed()) {
    return forEachVm(image_refs, [&](const std::string& ref) -> Result<void> {
      auto image = runtime->pull(ref, platform);
      if (!image) return std::move(image).error();
      return success();
    });
  }
  if (rmi_cmd->parsed()) {
    return forEachVm(image_refs, [&](const std::string& ref) { return runtime->removeImage(ref, force); });
  }
  if (image_prune->parsed()) {
    auto freed = runtime->pruneImages();
    if (!freed) return fail(freed.error());
    std::printf("Total reclaimed space: %.1f MB\n", static_cast<double>(*freed) / 1e6);
    return 0;
  }
  if (snapshot_create->parsed()) {
    return forEachVm(snapshot_names, [&](const std::string& name) { return runtime->snapshot(snapshot_vm, name); });
  }
  if (snapshot_rm->parsed()) {
    return forEachVm(snapshot_names, [&](const std::string& name) { return runtime->removeSnapshot(name); });
  }
  return 0;
}

}  // namespace microvm::cli
