#include "runner/runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "agent/tlv.h"
#include "base/paths.h"
#include "base/fs.h"
#include "base/unix_socket.h"
#include "hypervisor/qemu/qemu_backend.h"
#include "runner/machine_config.h"
#include "runner/runner_internal.h"
#include "state/layout.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

int64_t hostRealtimeNs() {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

constexpr int kExitVmFailed = 125;
constexpr int kExitHardStopped = 137;  // 128 + SIGKILL, as Docker reports a killed container
// How long the guest gets to power off after it reported the exit code.
constexpr int kPowerOffGraceSeconds = 5;

}  // namespace

void Runner::log(const std::string& message) {
  if (log_) log_->write(message);
}

// One deadline at a time: the stop timeout, or the power-off grace period.
void Runner::armTimer(int seconds) {
  if (timer_) loop_->cancelTimer(*timer_);
  timer_ = loop_->addTimer(std::chrono::seconds(seconds), [this] {
    timer_.reset();
    onTimer();
  });
}

void Runner::onTimer() {
  if (!exit_code_) {
    log("stop timeout: stopping the VM");
    hard_stopped_ = true;
  } else {
    log("guest did not power off in time; stopping QEMU");
  }
  vmm_->process().kill(SIGKILL);
}

void Runner::sendSpec() {
  agent::WorkloadSpec workload = workloadSpecFor(spec_);
  if (workload.tty) {
    // The tty starts at the latest size known: a resize that came before
    // the spec, else the size of the terminal we read (which may have
    // changed since the VM was created), else the spec's, else 24x80.
    // SAFETY: TIOCGWINSZ fills one winsize, which lives on this frame.
    winsize size{};
    if (tty_size_) {
      workload.tty_rows = tty_size_->rows;
      workload.tty_cols = tty_size_->cols;
    } else if (in_fd_ >= 0 && ::ioctl(in_fd_, TIOCGWINSZ, &size) == 0 && size.ws_row != 0 && size.ws_col != 0) {
      workload.tty_rows = size.ws_row;
      workload.tty_cols = size.ws_col;
    }
    if (workload.tty_rows == 0 || workload.tty_cols == 0) {
      workload.tty_rows = 24;  // a terminal's classic size, rather than 0x0
      workload.tty_cols = 80;
    }
  }
  // The pod's link is known only once the runner found it (startNetwork).
  if (pod_network_) describePodNetwork(spec_, pod_network_->link(), workload);
  workload.seccomp_program = seccomp_program_;
  sendFrame(agent::FrameType::kSpec, agent::encodeSpec(workload));
  spec_sent_ = true;
}

// The spec's seccomp program, compiled while QEMU starts (about 10 ms of
// host time), not while a restored guest waits for its spec; init compiles
// the rules itself when there is none.
void Runner::compileWorkloadSeccomp() {
  if (!compile_seccomp_) return;
  agent::WorkloadSpec workload = workloadSpecFor(spec_);
  auto note = compile_seccomp_(workload);
  if (!note) log("seccomp: init compiles the filter itself: " + note.error().message());
  if (note && !note->empty()) log(*note);
  seccomp_program_ = std::move(workload.seccomp_program);
  if (!seccomp_program_.empty()) {
    log("seccomp: the workload's filter compiled for init (" +
        std::to_string(seccomp_program_.size() / agent::kSeccompInstructionBytes) + " instructions)");
  }
}

void Runner::resizeTty(agent::WindowSize size) {
  tty_size_ = size;
  if (spec_sent_) sendFrame(agent::FrameType::kTerminalSize, agent::encodeWindowSize(size));
}

// The guest resumes with the clock and RNG state of the moment it was saved
// (and every copy with the same): init gets the host's time and entropy as
// the first frame after the restore.
void Runner::sendRefresh() {
  agent::ControlRefresh refresh;
  refresh.realtime_ns = hostRealtimeNs();
  refresh.entropy.resize(64);
  if (::getrandom(refresh.entropy.data(), refresh.entropy.size(), 0) != static_cast<ssize_t>(refresh.entropy.size())) {
    refresh.entropy.clear();
    log("refresh: no host entropy (" + std::string(std::strerror(errno)) + "); the guest keeps its RNG state");
  }
  refresh.hostname = spec_.hostname;
  sendFrame(agent::FrameType::kRefresh, agent::encodeRefresh(refresh));
  allowClockProbe();
}

// A guest's clock stands still while QEMU has it stopped (a pause, or the
// moment a snapshot, fork or template save takes): once it runs again, init
// sets it from the host's, as after a restore (a refresh with the clock
// alone, so its hostname and RNG are left as they are).
Result<void> Runner::resumeGuest() {
  MICROVM_TRY(vmm_->resume());
  sendClock();
  return success();
}

void Runner::sendClock() {
  agent::ControlRefresh refresh;
  refresh.realtime_ns = hostRealtimeNs();
  sendFrame(agent::FrameType::kRefresh, agent::encodeRefresh(refresh));
  allowClockProbe();
}

// Init asks for the time again after each refresh (agent::ControlClock):
// one answer per refresh sent, never more than a few owed, so that a guest
// cannot make the runner write for it.
void Runner::allowClockProbe() {
  constexpr int kMaxOwedClockAnswers = 4;
  clock_answers_owed_ = std::min(clock_answers_owed_ + 1, kMaxOwedClockAnswers);
}

void Runner::answerClockProbe(std::string_view payload) {
  if (payload.size() != 8 || clock_answers_owed_ == 0) return;
  --clock_answers_owed_;
  agent::ControlClock clock{hostRealtimeNs(), agent::getLe64(payload.data())};
  sendFrame(agent::FrameType::kClock, agent::encodeClock(clock));
}

Result<void> Runner::start() {
  auto spec = loadSpec(vm_dir_);
  if (!spec) return std::move(spec).error();
  spec_ = std::move(*spec);
  if (auto previous = loadState(vm_dir_); previous && previous->status == VmStatus::kSuspended) {
    suspended_state_ = std::move(*previous);
  }
  // First, while the runner has nothing open it should not share.
  if (::geteuid() == 0) {
    auto keeper = Keeper::start(spec_, vm_dir_);
    if (!keeper) return std::move(keeper).error();
    keeper_.emplace(std::move(*keeper));
  }

  // Every log is bounded by the VM's policy (runner_log.h). workload.log
  // and runner.log go on across starts; console.log starts afresh with each
  // boot. O_NOFOLLOW: the VM's directory is writable by its runner's id,
  // which must not point root's writes elsewhere.
  RotationPolicy rotation{spec_.log_max_size, spec_.log_max_files};
  auto runner_log = RunnerLog::open(VmPaths(vm_dir_).runnerLog(), rotation);
  if (!runner_log) return std::move(runner_log).error();
  log_.emplace(std::move(*runner_log));
  auto workload_log = RotatingFile::open(VmPaths(vm_dir_).workloadLog(), rotation);
  if (!workload_log) return std::move(workload_log).error();
  workload_log_.emplace(std::move(*workload_log));
  auto console_log = RotatingFile::open(VmPaths(vm_dir_).consoleLog(), rotation, /*truncate=*/true);
  if (!console_log) return std::move(console_log).error();
  console_log_.emplace(std::move(*console_log));

  // Signals arrive through the signalfd only; SIGPIPE never kills us. The
  // forwarded ones are Docker's sig-proxy set (handleSignal).
  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD}) sigaddset(&signals, sig);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  signal_fd_.reset(::signalfd(-1, &signals, SFD_CLOEXEC));
  if (!signal_fd_.valid()) return Error::fromErrno("signalfd");
  auto loop = EventLoop::create();
  if (!loop) return std::move(loop).error();
  loop_.emplace(std::move(*loop));

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return Error::fromErrno("socketpair");
  UniqueFd control(pair[0]);
  if (::fcntl(control.get(), F_SETFL, O_NONBLOCK) != 0) return Error::fromErrno("fcntl O_NONBLOCK");
  // A read round is bounded, so that a guest sending as fast as it is read
  // cannot starve the loop's other work.
  control_.emplace(std::move(control), agent::FramedConnection::Options{.max_read_round = 65536});
  UniqueFd guest_end(pair[1]);
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return Error::fromErrno("socketpair");
  console_.reset(pair[0]);
  if (::fcntl(console_.get(), F_SETFL, O_NONBLOCK) != 0) return Error::fromErrno("fcntl O_NONBLOCK");
  UniqueFd console_qemu_end(pair[1]);

  fs::path runtime_dir = spec_.runtime_dir;
  MICROVM_TRY(makeDirs(runtime_dir));
  fs::path qmp = VmSockets(spec_.runtime_dir).qmp();
  fs::path control_socket = VmSockets(runtime_dir).runner();
  MICROVM_TRY(checkSocketPath(qmp));
  MICROVM_TRY(checkSocketPath(control_socket));
  auto listener = listenUnix(control_socket, 16, SOCK_NONBLOCK);
  if (!listener) return std::move(listener).error();
  listener_ = std::move(*listener);

  // The vsock back-end listens before QEMU starts: QEMU connects to it while
  // it creates the device and fails if nothing is there.
  if (hasVsockDevice(spec_)) {
    vsock::VsockConfig vsock_config = vsockConfigFor(spec_);
    vsock_config.log = [this](const std::string& message) { log("vsock: " + message); };
    if (keeper_) {
      // Host sockets may be where the runner's own id cannot reach them.
      vsock_config.connect_host = [this](const fs::path& target) { return keeper_->connect(target); };
    }
    auto vsock = vsock::VsockDevice::create(*loop_, std::move(vsock_config));
    if (!vsock) return std::move(vsock).error().withContext("vsock");
    vsock_ = std::move(*vsock);
  }

  // The agent's port: its gateway takes CONNECT clients on vsock.sock from
  // now on, and they wait there until the guest agent answers.
  UniqueFd agent_qemu_end;
  if (spec_.vsock) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return Error::fromErrno("socketpair");
    UniqueFd agent_end(pair[0]);
    agent_qemu_end.reset(pair[1]);
    if (::fcntl(agent_end.get(), F_SETFL, O_NONBLOCK) != 0) return Error::fromErrno("fcntl O_NONBLOCK");
    AgentGateway::Config gateway_config;
    gateway_config.socket = VmSockets(runtime_dir).vsock();
    gateway_config.serial_fd = std::move(agent_end);
    gateway_config.log = [this](const std::string& message) { log("agent: " + message); };
    if (vsock_) {
      gateway_config.other_port = [this](UniqueFd client, uint32_t port) {
        vsock_->connectClient(std::move(client), port);
      };
    }
    auto gateway = AgentGateway::create(*loop_, std::move(gateway_config));
    if (!gateway) return std::move(gateway).error();
    agent_gateway_ = std::move(*gateway);
  }

  MachineFds fds;
  fds.console = console_qemu_end.get();
  fds.control = guest_end.get();
  fds.agent = agent_qemu_end.get();
  auto diagnostics_qemu_end = openVmmStderr();
  if (!diagnostics_qemu_end) return std::move(diagnostics_qemu_end).error();
  fds.diagnostics = diagnostics_qemu_end->get();
  // The network exists, port forwards included, before the guest boots: a
  // busy host port fails the start here.
  UniqueFd net_qemu_end;
  if (spec_.network != "none") {
    auto qemu_end = startNetwork();
    if (!qemu_end) return std::move(qemu_end).error();
    net_qemu_end = std::move(*qemu_end);
    fds.net = net_qemu_end.get();
  }
  // Volumes with uid=/gid= are idmapped mounts that QEMU reaches by fd; our
  // copies close once QEMU holds its own, and the mounts go with QEMU.
  std::vector<UniqueFd> share_trees;
  for (const auto& share : spec_.shares) {
    int fd = -1;
    if (share.uid || share.gid) {
      auto tree = idMappedShare(share);
      if (!tree) return std::move(tree).error();
      fd = tree->get();
      share_trees.push_back(std::move(*tree));
    }
    fds.shares.push_back(fd);
  }
  // A VM made from a snapshot resumes it on its first start only; started
  // again after it exits, it boots afresh from its disk. A suspended VM
  // resumes its own saved state (suspended_state_, read in start()).
  bool first_start = !fs::exists(VmPaths(vm_dir_).state());
  bool restoring = suspended_state_ || (!spec_.restore_from.empty() && first_start);
  fs::path saved_state = suspended_state_ ? VmPaths(vm_dir_).savedMemory() : fs::path(spec_.restore_from);
  UniqueFd incoming;
  if (restoring) {
    incoming.reset(::open(saved_state.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!incoming.valid()) return Error::fromErrno("open saved state " + saved_state.string());
  } else if (first_start && !spec_.template_dir.empty()) {
    // A template removed since the VM was made: it boots instead.
    saved_state = TemplatePaths::memory(spec_.template_dir);
    incoming.reset(::open(saved_state.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    from_template_ = incoming.valid();
    if (!from_template_) log("template " + spec_.template_dir + " is gone (" + std::strerror(errno) + "); booting");
  } else if (first_start && !spec_.template_capture.empty()) {
    if (auto opened = openTemplateCapture(); !opened) log("not saving a template: " + opened.error().message());
  }
  if (incoming.valid()) fds.incoming = incoming.get();
  if (restoring) MICROVM_TRY(readNetworkState(saved_state.parent_path() / SnapshotPaths::network({}).filename()));
  // memory.ram beside memory.bin, in a snapshot as in a suspended VM's
  // saved/ and in a template.
  MICROVM_TRY(createGuestMemory(incoming.valid() ? saved_state.parent_path() / SnapshotPaths::ram({}).filename()
                                                 : fs::path()));
  fds.memory = template_memory_ ? template_memory_->fd() : guest_ram_.valid() ? guest_ram_.get() : -1;
  MachineConfig config = machineConfigFor(spec_, vm_dir_, fds);
  config.memory_private = template_memory_.has_value();
  config.incoming_has_ram = incoming_has_ram_;
  if (vsock_) config.while_waiting = {vsock_->controlFd(), [this] { vsock_->serviceControl(); }};
  if (::geteuid() == 0) MICROVM_TRY(chooseVmmUser(config));
  QemuBackend backend(spec_.qemu);
  auto vmm = backend.launch(config);
  if (!vmm) {
    readVmmStderr();  // why QEMU did not start, if it said
    return std::move(vmm).error();
  }
  vmm_ = std::move(*vmm);
  guest_end.reset();
  agent_qemu_end.reset();
  console_qemu_end.reset();
  net_qemu_end.reset();
  diagnostics_qemu_end->reset();
  MICROVM_TRY(loop_->add(vmm_stderr_.get(), EPOLLIN, [this](uint32_t) { readVmmStderr(); }));
  // While QEMU starts, which does not touch guest RAM before the state loads.
  MICROVM_TRY(loadGuestMemory());
  if (!restoring) compileWorkloadSeccomp();  // a restored guest has had its spec

  MICROVM_TRY(confine());

  pid_t qemu_pid = vmm_->process().pid();
  state_.runner_pid = ::getpid();
  if (auto start_time = processStartTime(::getpid()); start_time) state_.runner_start_time = *start_time;
  state_.qemu_pid = qemu_pid;
  if (auto start_time = processStartTime(qemu_pid); start_time) state_.qemu_start_time = *start_time;
  state_.started_at = nowRfc3339();
  log("started QEMU pid " + std::to_string(qemu_pid) + " (" + spec_.accel + ")");

  if (from_template_) {
    // Init waits for its spec, as at a cold boot's hello: the clock and
    // entropy first, then this VM's spec.
    MICROVM_TRY(vmm_->finishRestore());
    sendRefresh();
    log("restored template " + spec_.template_dir);
    setStatus(VmStatus::kRunning);
    sendSpec();
  } else if (restoring) {
    // The guest's init is mid-conversation already: no spec, just resume.
    // Running is recorded once the state is loaded: a resume that fails
    // before that leaves the VM suspended (finish()).
    MICROVM_TRY(loadNetworkState());
    std::function<Result<void>()> loaded;
    if (incoming_has_ram_) loaded = [this] { return releaseStreamedZeros(); };
    MICROVM_TRY(vmm_->finishRestore(loaded));
    sendRefresh();
    restored_ = true;
    state_.timings_ms["restore"] =
        std::round(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_).count());
    spec_sent_ = true;  // the saved guest has had its spec
    log("restored from " + saved_state.string());
    setStatus(VmStatus::kRunning);
  } else {
    // The spec waits for the guest's hello (handleFrame), which comes with
    // a clock to set: the guest booted with the RTC's whole seconds.
    setStatus(VmStatus::kRunning);
  }

  MICROVM_TRY(loop_->add(console_.get(), EPOLLIN, [this](uint32_t) { readConsole(); }));
  MICROVM_TRY(loop_->add(control_->fd(), EPOLLIN, [this](uint32_t events) {
    if (events & EPOLLOUT) flushControl();
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readControl();
  }));
  flushControl();
  if (in_fd_ >= 0 && spec_.open_stdin && !restoring) {
    ::fcntl(in_fd_, F_SETFL, ::fcntl(in_fd_, F_GETFL) | O_NONBLOCK);
    auto watched = loop_->add(in_fd_, EPOLLIN, [this](uint32_t) { readStdin(); });
    if (!watched && watched.error().sysErrno() == EPERM) {
      in_fd_pollable_ = false;  // a regular file
      loop_->addTimer(std::chrono::milliseconds(0), [this] { readStdin(); });
    } else if (!watched) {
      return std::move(watched).error();
    }
  }
  MICROVM_TRY(loop_->add(listener_.get(), EPOLLIN, [this](uint32_t) { acceptRequest(); }));
  MICROVM_TRY(loop_->add(signal_fd_.get(), EPOLLIN, [this](uint32_t) {
    signalfd_siginfo info{};
    if (::read(signal_fd_.get(), &info, sizeof info) == sizeof info) handleSignal(static_cast<int>(info.ssi_signo));
  }));
  return success();
}

// The guest's user network on the loop; returns QEMU's end of the frame stream.
Result<UniqueFd> Runner::startNetwork() {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return Error::fromErrno("socketpair");
  UniqueFd runner_end(pair[0]);
  UniqueFd qemu_end(pair[1]);
  // Room for bursts of full-size frames both ways; the default of about
  // 200 KiB makes the sender wait on the receiver every few dozen frames.
  int buffer = 4 << 20;
  for (int fd : {runner_end.get(), qemu_end.get()}) {
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  }
  if (net::tapNamespace(spec_.network)) {
    auto pod = PodNetwork::create(*loop_, std::move(runner_end), spec_.network, [this](const std::string& line) {
      log(line);
    });
    if (!pod) return std::move(pod).error();
    pod_network_ = std::move(*pod);
    recordNetCounters();
    return qemu_end;
  }
  auto plan = guestNetworkPlan(spec_);
  if (!plan) return std::move(plan).error();
  if (suspended_state_) {
    // A resumed VM forwards what it forwarded when suspended: the host
    // ports picked then and those `port add` added.
    plan->ports.clear();
    for (const auto& text : suspended_state_->ports) {
      auto mapping = net::parsePortMapping(text);
      if (!mapping) return std::move(mapping).error().withContext("port recorded at suspend");
      plan->ports.push_back(*mapping);
    }
  }
  auto network = GuestNetwork::create(*loop_, std::move(runner_end), *plan, [this](const std::string& line) { log(line); });
  if (!network) return std::move(network).error();
  network_ = std::move(*network);
  state_.ports = network_->ports();
  recordNetCounters();
  return qemu_end;
}

// The counters go to state.json about once a second, only when they moved,
// so `inspect` shows them without asking the runner.
void Runner::recordNetCounters() {
  loop_->addTimer(std::chrono::seconds(1), [this] {
    if ((!network_ && !pod_network_) || exit_code_ || vmm_status_) return;
    auto counters = netCounters();
    if (counters != state_.net_counters) {
      state_.net_counters = std::move(counters);
      if (state_.status != VmStatus::kCreated) setStatus(state_.status);
    }
    recordNetCounters();
  });
}

std::map<std::string, uint64_t> Runner::netCounters() const {
  if (pod_network_) return pod_network_->counters();
  return network_ ? network_->counters() : std::map<std::string, uint64_t>();
}

void Runner::handleFrame(const agent::Frame& frame) {
  using agent::FrameType;
  switch (frame.type) {
    case FrameType::kHello: {
      auto version = agent::decodeU32(frame.payload);
      log("guest init up, protocol version " + (version ? std::to_string(*version) : "?"));
      if (spec_sent_) break;  // a guest has one hello, and a restored one had it before its save
      // The clock, then the spec: init sets the clock before it starts
      // anything. A template's capture resumes the guest with it.
      if (template_capture_) {
        captureTemplate();
      } else {
        sendClock();
      }
      sendSpec();
      break;
    }
    case FrameType::kClockProbe: answerClockProbe(frame.payload); break;
    case FrameType::kStarted:
      state_.timings_ms["boot"] =
          std::round(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_).count());
      setStatus(state_.status);
      log("workload started");
      break;
    case FrameType::kStdout: forwardOutput(out_fd_, "stdout", frame.payload); break;
    case FrameType::kStderr: forwardOutput(err_fd_, "stderr", frame.payload); break;
    case FrameType::kError:
      log("guest: " + frame.payload);
      failure_ = frame.payload.substr(0, 4096);
      if (err_fd_ >= 0) (void)writeAll(err_fd_, "microvm: " + failure_ + "\n");
      break;
    case FrameType::kExit: {
      auto code = agent::decodeU32(frame.payload);
      if (!code || exit_code_) break;  // a malformed or repeated exit is ignored
      exit_code_ = static_cast<int>(*code & 0xff);
      log("workload exited with code " + std::to_string(*exit_code_));
      sendFrame(FrameType::kExitAck, {});
      if (spec_.remove_on_exit && spec_.shares.empty()) {
        // Nothing of a --rm VM outlives it: its disk goes, and no volume
        // can hold writes the guest's power-off would flush. QEMU ends
        // now rather than after the guest's sync and reset.
        log("ending QEMU: the VM is removed on exit");
        vmm_->process().kill(SIGKILL);
        break;
      }
      armTimer(kPowerOffGraceSeconds);
      break;
    }
    default: break;  // unknown or host-bound types from the guest are ignored
  }
}

void Runner::setStatus(VmStatus status) {
  state_.status = status;
  auto lock = StateLock::acquire(state_dir_);
  if (!lock) {
    log("state: " + lock.error().message());
    return;
  }
  if (auto saved = saveState(state_dir_, state_); !saved) log("state: " + saved.error().message());
}

void Runner::handleSignal(int signal) {
  if (signal == SIGCHLD) {
    auto status = vmm_->process().tryWait();
    if (status && status->has_value()) vmm_status_ = **status;
    return;
  }
  log("signal " + std::to_string(signal));
  // Each signal reaches the workload as itself, as with Docker's sig-proxy:
  // a shell's `trap ... INT` runs on Ctrl-C. Those whose default is to end
  // a program also start a stop, so that a workload that ignores them is
  // still stopped hard after the stop timeout (or on a second one).
  if (signal == SIGUSR1 || signal == SIGUSR2) {
    if (exit_code_) return;
    log("forwarding signal " + std::to_string(signal) + " to the workload");
    sendFrame(agent::FrameType::kSignal, agent::encodeU32(static_cast<uint32_t>(signal)));
    return;
  }
  requestStop(spec_.stop_timeout_seconds, signal);
}

// The one path to a stop: forward `signal` (SIGTERM for `stop`) and arm the
// hard-stop timer; asked again while stopping, stop hard at once.
void Runner::requestStop(int timeout_seconds, int signal) {
  if (exit_code_) return;  // already finishing
  if (stop_requested_ || timeout_seconds == 0) {
    log("stopping the VM now");
    hard_stopped_ = true;
    vmm_->process().kill(SIGKILL);
    return;
  }
  stop_requested_ = true;
  if (state_.status == VmStatus::kPaused) {
    // A frozen guest cannot act on SIGTERM; thaw it first.
    if (auto resumed = vmm_->resume(); resumed) setStatus(VmStatus::kRunning);
  }
  log("forwarding signal " + std::to_string(signal) + " to the workload, hard stop in " +
      std::to_string(timeout_seconds) + " s");
  sendFrame(agent::FrameType::kSignal, agent::encodeU32(static_cast<uint32_t>(signal)));
  armTimer(timeout_seconds);
}

void Runner::readControl() {
  bool open = control_->readSome();
  while (auto frame = control_->nextFrame()) handleFrame(*frame);
  if (control_->corrupt()) {
    failure_ = "the guest sent a malformed control frame; stopping the VM";
    log(failure_ + " (" + control_->corruption() + ")");
    loop_->remove(control_->fd());
    vmm_->process().kill(SIGKILL);
  } else if (!open && loop_->watching(control_->fd())) {
    loop_->remove(control_->fd());  // QEMU closed its end; what was queued is dropped
  }
}

Result<void> Runner::loop() {
  while (!vmm_status_) MICROVM_TRY(loop_->runOnce());
  return success();
}

int Runner::finish() {
  // What QEMU wrote to the console before it went, into console.log.
  for (int turn = 0; turn < 64 && console_.valid() && console_log_; ++turn) readConsole();
  if (suspended_ || (suspended_state_ && !restored_)) return finishSuspended();
  int code = kExitVmFailed;
  if (exit_code_) {
    code = *exit_code_;
  } else if (hard_stopped_) {
    code = kExitHardStopped;
  } else {
    std::string why = failure_.empty() ? "the VM stopped before the workload reported an exit code" : failure_;
    if (vmm_status_) why += " (QEMU " + describeWaitStatus(*vmm_status_) + ")";
    state_.error = why;
    std::string console =
        console_read_.valid() ? tailLines(console_read_.get(), 5) : tailLines(VmPaths(vm_dir_).consoleLog(), 5);
    readVmmStderr();
    std::string vmm_log = log_ ? log_->recent() : std::string();
    if (err_fd_ >= 0 && failure_.empty()) {
      std::string message = "microvm: " + why + "\n";
      if (!vmm_log.empty()) message += "runner log:\n" + vmm_log + "\n";
      if (!console.empty()) message += "guest console:\n" + console + "\n";
      (void)writeAll(err_fd_, message);
    }
  }
  log("VM finished, exit code " + std::to_string(code));
  // Attached clients learn the code; a client that is not reading is not
  // waited for long.
  for (auto& entry : attached_) {
    (void)entry.second.connection.send(agent::FrameType::kExit, agent::encodeU32(static_cast<uint32_t>(code)));
  }
  attached_.clear();
  listener_.reset();
  agent_gateway_.reset();
  vsock_.reset();
  // The runtime dir (and for --rm the VM's directory) are root's: once the
  // runner has given up root its keeper removes them.
  if (keeper_) {
    if (auto finished = keeper_->finish(); !finished) log(finished.error().message());
  } else if (!spec_.runtime_dir.empty()) {
    (void)removeTree(spec_.runtime_dir);
  }
  state_.exit_code = code;
  state_.finished_at = nowRfc3339();
  if (network_ || pod_network_) state_.net_counters = netCounters();
  state_.ports.clear();  // nothing is forwarded once the VM is gone
  drainNetwork();
  network_.reset();
  pod_network_.reset();
  if (spec_.remove_on_exit) {
    log_.reset();
    if (!keeper_) (void)removeTree(vm_dir_);
  } else {
    setStatus(VmStatus::kExited);
  }
  return code;
}

// The runner ends with the VM suspended: committed by `suspend`, or a
// resume that failed before the guest ran (the saved state is untouched).
int Runner::finishSuspended() {
  bool resume_failed = !suspended_;
  if (resume_failed) {
    std::string why = failure_.empty() ? "QEMU did not load the saved state" : failure_;
    if (vmm_status_) why += " (QEMU " + describeWaitStatus(*vmm_status_) + ")";
    log("resume failed, the VM stays suspended: " + why);
    // The state it had, pids and all (none of them runs), with the reason.
    state_ = *suspended_state_;
    state_.error = "resume failed: " + why;
  } else {
    log("VM suspended");
    state_.error.clear();
    if (network_ || pod_network_) state_.net_counters = netCounters();
    // state_.ports stay: a resume forwards the same host ports again.
  }
  attached_.clear();  // attached clients see their connection end
  listener_.reset();
  vsock_.reset();
  network_.reset();
  pod_network_.reset();
  if (keeper_) {
    if (auto finished = keeper_->finish(); !finished) log(finished.error().message());
  } else if (!spec_.runtime_dir.empty()) {
    (void)removeTree(spec_.runtime_dir);
  }
  setStatus(VmStatus::kSuspended);
  if (err_fd_ >= 0) {
    (void)writeAll(err_fd_, resume_failed ? "microvm: " + state_.error + "\n"
                                          : "microvm: VM " + spec_.name + " suspended\n");
  }
  return resume_failed ? kExitVmFailed : 0;
}

int Runner::run() {
  auto started = start();
  if (started) {
    if (auto looped = loop(); !looped) failure_ = looped.error().message();
  } else {
    failure_ = withVmmsWords(started.error().message());
    log("start failed: " + failure_);
    if (err_fd_ >= 0) (void)writeAll(err_fd_, "microvm: " + failure_ + "\n");
    vmm_.reset();  // kills and reaps QEMU if it started
  }
  return finish();
}

int runVm(const fs::path& vm_dir, int in_fd, int out_fd, int err_fd, RunnerSeccomp seccomp,
          WorkloadSeccompCompiler compile_seccomp) {
  return Runner(vm_dir, in_fd, out_fd, err_fd, seccomp, compile_seccomp).run();
}

int runnerMain(int argc, char** argv, RunnerSeccomp seccomp, WorkloadSeccompCompiler compile_seccomp) {
  if (argc == 4 && std::string_view(argv[1]) == kTemplateMemoryFlag) {
    return serveTemplateMemory(argv[2], std::strtoull(argv[3], nullptr, 10), kTemplateMemoryRamFd,
                               kTemplateMemoryReportFd);
  }
  bool with_stdin = argc == 3 && std::string_view(argv[2]) == "--stdin";
  if (argc != 2 && !with_stdin) {
    std::fprintf(stderr, "usage: microvm-runner VM_DIR [--stdin]\n(started by microvm; not meant to be run by hand)\n");
    return 2;
  }
  return runVm(argv[1], with_stdin ? STDIN_FILENO : -1, STDOUT_FILENO, STDERR_FILENO, seccomp, compile_seccomp);
}

}  // namespace microvm
