// `microvm run`, `create` and `start`.
#include "cli_run.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <thread>
#include <utility>

#include "cli_commands.h"
#include "cli_terminal.h"
#include "microvm/options.h"

namespace microvm::cli {

namespace {

// Docker's sig-proxy set is blocked before the VM exists, so none is lost,
// and a helper thread forwards each one, as itself, to the runner (which
// also starts a stop for the terminating ones). Ctrl-C on our terminal
// reaches only us: the runner has a session of its own. With a tty, SIGWINCH
// is blocked too: it resizes the guest's tty.
sigset_t blockStopSignals(bool tty) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&stop_signals, sig);
  if (tty) sigaddset(&stop_signals, SIGWINCH);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  return stop_signals;
}

// `terminal_fd`: the host terminal whose SIGWINCH resizes the VM's tty (-1: none).
int forwardSignalsAndWait(VmHandle& vm, sigset_t stop_signals, int terminal_fd = -1) {
  std::thread([stop_signals, &vm, terminal_fd] {
    for (;;) {
      int sig = 0;
      if (sigwait(&stop_signals, &sig) != 0) continue;
      if (sig != SIGWINCH) {
        vm.signal(sig);
      } else if (auto size = terminalSize(terminal_fd)) {
        (void)vm.resize(size->first, size->second);
      }
    }
  }).detach();
  auto code = vm.wait();
  if (!code) return fail(code.error());
  return *code;
}

int cmdRun(const GlobalFlags& global, const RunFlags& flags, std::vector<std::string> command) {
  if (!flags.snapshot.empty() && (!command.empty() || !flags.rootfs.empty())) {
    return fail("--snapshot resumes a saved VM: it takes no --rootfs and no command");
  }
  auto options = toRunOptions(flags, std::move(command));
  if (!options) return fail(options.error());
  // As Docker: what a pipe or file sends a terminal races with the shell's
  // own setup of it (busybox sh flushes it), so -it wants a terminal.
  if (flags.tty && flags.interactive && !flags.detach && !::isatty(STDIN_FILENO)) {
    return fail("the input device is not a TTY: use -i without -t to pipe input to the workload");
  }
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  if (flags.detach) {
    options->stdout_fd = -1;
    options->stderr_fd = -1;
  } else if (flags.interactive) {
    options->stdin_fd = STDIN_FILENO;
  }
  bool tty = options->tty && !flags.detach;
  // Block stop signals before the VM exists, so none is lost.
  sigset_t stop_signals = blockStopSignals(tty);
  // Raw from the start: what is typed during the boot reaches the guest's
  // tty as typed, and is not echoed twice.
  std::optional<RawTerminal> raw;
  if (tty && flags.interactive && ::isatty(STDIN_FILENO)) raw.emplace(STDIN_FILENO);
  auto vm = flags.snapshot.empty() ? runtime->run(*options) : runtime->restore(flags.snapshot, *options);
  if (!vm) {
    raw.reset();
    return fail(vm.error());
  }
  if (flags.detach) {
    std::cout << vm->id() << "\n";
    return 0;
  }
  int code = forwardSignalsAndWait(*vm, stop_signals, tty ? options->terminal_fd : -1);
  raw.reset();
  return code;
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
    auto info = runtime->inspect(refs[0]);
    if (!info) return fail(info.error());
    int terminal_fd = info->tty ? hostTerminalFd() : -1;
    sigset_t stop_signals = blockStopSignals(info->tty);
    std::optional<RawTerminal> raw;
    if (info->tty && interactive && ::isatty(STDIN_FILENO)) raw.emplace(STDIN_FILENO);
    auto vm = runtime->start(refs[0], STDOUT_FILENO, STDERR_FILENO, interactive ? STDIN_FILENO : -1);
    if (!vm) {
      raw.reset();
      return fail(vm.error());
    }
    if (auto size = terminalSize(terminal_fd)) (void)vm->resize(size->first, size->second);
    int code = forwardSignalsAndWait(*vm, stop_signals, terminal_fd);
    raw.reset();
    return code;
  }
  return forEachVm(refs, [&](const std::string& ref) -> Result<void> {
    auto vm = runtime->start(ref);
    if (!vm) return std::move(vm).error();
    return success();
  });
}

}  // namespace

Result<RunOptions> toRunOptions(const RunFlags& flags, std::vector<std::string> command) {
  auto memory = parseMemoryMib(flags.memory);
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
  options.tty = flags.tty;
  if (flags.tty) {
    passTerm(options.env);
    options.terminal_fd = hostTerminalFd();
  }
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
  for (const auto& text : flags.log_opts) MICROVM_TRY(applyLogOpt(text, options));
  for (const auto& text : flags.volumes) {
    auto volume = parseVolume(text);
    if (!volume) return std::move(volume).error();
    options.volumes.push_back(std::move(*volume));
  }
  options.vsock = !flags.no_vsock;
  options.boot_template = !flags.no_template;
  options.share_template_memory = flags.share_memory;
  options.ulimits = flags.ulimits;
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
  for (const auto& text : flags.security_opts) MICROVM_TRY(applySecurityOpt(text, options));
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

void addRunFlags(CLI::App& command, RunFlags& flags) {
  command.add_option("--rootfs", flags.rootfs, "Host directory to use as the root filesystem");
  command.add_flag("--rm", flags.remove, "Remove the VM and all its files when it exits");
  command.add_flag("-i,--interactive", flags.interactive, "Keep the workload's stdin open and feed it ours");
  command.add_flag("-t,--tty", flags.tty,
                   "Run the workload on a pseudo-terminal in the guest (stdout and stderr merge); with -i, "
                   "our terminal is in raw mode until it exits");
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
  command.add_flag("--no-template", flags.no_template,
                   "Boot the kernel even if a boot template of this machine exists (and make none)");
  command.add_flag("--share-memory", flags.share_memory,
                   "Restored from a boot template, share its memory copy-on-write with the other VMs that do "
                   "(snapshots and forks of the VM are then slower)");
  command.add_flag("--no-vsock", flags.no_vsock,
                   "No agent and no vsock: no exec, cp, readiness probes or --vsock ports");
  command.add_option("--tmpfs", flags.tmpfs, "Mount a tmpfs: PATH[:OPTIONS], e.g. /scratch:size=64m");
  command.add_option("--ulimit", flags.ulimits,
                     "A resource limit of the workload and of every exec: NAME=SOFT[:HARD], e.g. nofile=1024:2048");
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
  command.add_option("--network", flags.network, "Network: user (default; NAT, ports, DNS), none (only lo), or tap[:NETNS] (the guest takes the address of the network namespace's interface)");
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


CLI::App* addRunCommand(CLI::App& app, GlobalFlags& global, const std::vector<std::string>& command,
                        Commands& commands) {
  auto flags = std::make_shared<RunFlags>();
  auto* run_cmd = app.add_subcommand("run", "Run a command in a new microVM");
  run_cmd->footer("Usage: microvm run [OPTIONS] IMAGE [COMMAND] [ARG...]\n"
                  "       microvm run [OPTIONS] --rootfs DIR [--] COMMAND [ARG...]");
  addRunFlags(*run_cmd, *flags);
  addPullFlags(*run_cmd, global);
  run_cmd->add_flag("-d,--detach", flags->detach, "Run in the background and print the VM id");
  run_cmd->add_option("--snapshot", flags->snapshot, "Start from a snapshot instead: resume the saved VM");
  commands.add(run_cmd, [&global, &command, flags] { return cmdRun(global, *flags, command); });
  return run_cmd;
}

CLI::App* addCreateCommand(CLI::App& app, GlobalFlags& global, const std::vector<std::string>& command,
                           Commands& commands) {
  auto flags = std::make_shared<RunFlags>();
  auto* create_cmd = app.add_subcommand("create", "Create a VM without starting it");
  create_cmd->footer("Usage: microvm create [OPTIONS] IMAGE [COMMAND] [ARG...]\n"
                     "       microvm create [OPTIONS] --rootfs DIR [--] COMMAND [ARG...]");
  addRunFlags(*create_cmd, *flags);
  addPullFlags(*create_cmd, global);
  commands.add(create_cmd, [&global, &command, flags] { return cmdCreate(global, *flags, command); });
  return create_cmd;
}

void addStartCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct StartFlags {
    std::vector<std::string> refs;
    bool attach = false;
    bool interactive = false;
  };
  auto flags = std::make_shared<StartFlags>();
  auto* start_cmd = app.add_subcommand("start", "Start one or more created or stopped VMs");
  start_cmd->add_option("vm", flags->refs, "VM id, id prefix or name")->required();
  start_cmd->add_flag("-a,--attach", flags->attach, "Attach to its output and return its exit code");
  start_cmd->add_flag("-i,--interactive", flags->interactive,
                      "With -a: feed our stdin to the workload (VM made with -i)");
  commands.add(start_cmd,
               [&global, flags] { return cmdStart(global, flags->refs, flags->attach, flags->interactive); });
}

int runDetached(const GlobalFlags& global, RunFlags flags) {
  flags.detach = true;
  return cmdRun(global, flags, {});
}

}  // namespace microvm::cli
