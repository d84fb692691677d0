#include "runner/runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include <sys/un.h>

#include "agent/protocol.h"
#include "runner/control.h"
#include "base/event_loop.h"
#include "base/fs.h"
#include "base/unique_fd.h"
#include "hypervisor/qemu/qemu_backend.h"
#include "state/layout.h"
#include "state/vm_record.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

constexpr int kExitVmFailed = 125;
constexpr int kExitHardStopped = 137;  // 128 + SIGKILL, as Docker reports a killed container
// How long the guest gets to power off after it reported the exit code.
constexpr int kPowerOffGraceSeconds = 5;

// The last `lines` lines of a text file, for error messages.
std::string tailOf(const fs::path& path, size_t lines) {
  auto text = readFile(path);
  if (!text) return "";
  std::string_view s = *text;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  size_t start = 0;
  size_t end = s.size();
  for (size_t i = 0; i < lines && end > 0; ++i) {
    size_t newline = s.rfind('\n', end - 1);
    if (newline == std::string_view::npos) {
      start = 0;
      break;
    }
    start = newline + 1;
    end = newline;
  }
  return std::string(s.substr(start));
}

// A listening unix socket at `path` (replacing a stale one), owner-only.
Result<UniqueFd> listenOn(const fs::path& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Error::fromErrno("socket");
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  ::unlink(path.c_str());
  // SAFETY: sockaddr_un is the sockaddr variant for AF_UNIX; bind reads sizeof(address) bytes.
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    return Error::fromErrno("bind " + path.string());
  }
  ::chmod(path.c_str(), 0600);
  if (::listen(fd.get(), 16) != 0) return Error::fromErrno("listen " + path.string());
  return fd;
}

class Runner {
 public:
  Runner(fs::path vm_dir, int out_fd, int err_fd)
      : vm_dir_(std::move(vm_dir)), out_fd_(out_fd), err_fd_(err_fd) {}

  int run();

 private:
  Result<void> start();
  Result<void> loop();
  void readControl();
  void handleFrame(const agent::Frame& frame);
  void handleSignal(int signal);
  void acceptRequest();
  Result<void> handleRequest(const RunnerRequest& request);
  void requestStop(int timeout_seconds);
  void setStatus(VmStatus status);
  void sendSpec();
  Result<void> snapshot(const fs::path& dir);
  void sendFrame(agent::FrameType type, std::string_view payload);
  void forwardOutput(int& fd, const char* stream, std::string_view bytes);
  void armTimer(int seconds);
  void onTimer();
  void log(const std::string& message);
  int finish();

  fs::path vm_dir_;
  int out_fd_;
  int err_fd_;
  VmSpec spec_;
  VmState state_;
  UniqueFd log_fd_;
  UniqueFd workload_log_fd_;
  UniqueFd control_;
  UniqueFd signal_fd_;
  UniqueFd listener_;
  std::optional<EventLoop> loop_;
  std::optional<EventLoop::TimerId> timer_;
  std::unique_ptr<Vmm> vmm_;
  agent::FrameReader reader_;
  std::optional<int> exit_code_;
  std::optional<int> vmm_status_;
  bool stop_requested_ = false;
  bool hard_stopped_ = false;
  std::string failure_;
};

void Runner::log(const std::string& message) {
  if (!log_fd_.valid()) return;
  (void)writeAll(log_fd_.get(), nowRfc3339() + " " + message + "\n");
}

void Runner::sendFrame(agent::FrameType type, std::string_view payload) {
  std::string wire;
  agent::appendFrame(wire, type, payload);
  if (auto sent = writeAll(control_.get(), wire); !sent) log("control channel: " + sent.error().message());
}

void Runner::forwardOutput(int& fd, const char* stream, std::string_view bytes) {
  if (fd >= 0 && !writeAll(fd, bytes)) fd = -1;  // the reader went away; keep logging
  nlohmann::json record = {{"time", nowRfc3339()}, {"stream", stream}, {"log", std::string(bytes)}};
  (void)writeAll(workload_log_fd_.get(),
                 record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
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
  agent::WorkloadSpec workload;
  workload.argv = spec_.argv;
  workload.env = spec_.env;
  workload.workdir = spec_.workdir;
  workload.user = spec_.user;
  workload.hostname = spec_.hostname;
  for (size_t i = 0; i < spec_.shares.size(); ++i) {
    const auto& share = spec_.shares[i];
    workload.mounts.push_back({"vol" + std::to_string(i), share.guest, "9p", "", share.readonly});
  }
  for (const auto& [path, options] : spec_.tmpfs) workload.mounts.push_back({"tmpfs", path, "tmpfs", options, false});
  workload.sysctls = spec_.sysctls;
  workload.capabilities = spec_.capabilities;
  workload.no_new_privs = spec_.no_new_privs;
  workload.seccomp_default = spec_.seccomp_default;
  workload.seccomp_rules = spec_.seccomp_rules;
  // The guest reads the spec once its port opens; the socket buffers it.
  sendFrame(agent::FrameType::kSpec, agent::encodeSpec(workload));
}

Result<void> Runner::start() {
  auto spec = loadSpec(vm_dir_);
  if (!spec) return std::move(spec).error();
  spec_ = std::move(*spec);

  log_fd_.reset(::open((vm_dir_ / "runner.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  workload_log_fd_.reset(
      ::open((vm_dir_ / "workload.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log_fd_.valid() || !workload_log_fd_.valid()) return Error::fromErrno("open logs in " + vm_dir_.string());

  // Signals arrive through the signalfd only; SIGPIPE never kills us.
  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&signals, sig);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  signal_fd_.reset(::signalfd(-1, &signals, SFD_CLOEXEC));
  if (!signal_fd_.valid()) return Error::fromErrno("signalfd");
  auto loop = EventLoop::create();
  if (!loop) return std::move(loop).error();
  loop_.emplace(std::move(*loop));

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return Error::fromErrno("socketpair");
  control_.reset(pair[0]);
  UniqueFd guest_end(pair[1]);

  fs::path runtime_dir = spec_.runtime_dir;
  MICROVM_TRY(makeDirs(runtime_dir));
  fs::path qmp = runtime_dir / "qmp.sock";
  fs::path control_socket = runtime_dir / "runner.sock";
  MICROVM_TRY(checkSocketPath(qmp));
  MICROVM_TRY(checkSocketPath(control_socket));
  auto listener = listenOn(control_socket);
  if (!listener) return std::move(listener).error();
  listener_ = std::move(*listener);

  MachineConfig config;
  config.accel = spec_.accel == "kvm" ? Acceleration::kKvm : Acceleration::kTcg;
  config.tsc_khz = spec_.tsc_khz;
  config.cpus = spec_.cpus;
  config.memory_mib = spec_.memory_mib;
  config.kernel = spec_.kernel;
  config.initramfs = spec_.initramfs;
  config.root_disk = spec_.root_disk;
  config.console_log = vm_dir_ / "console.log";
  config.qmp_socket = qmp;
  config.control_fd = guest_end.get();
  config.stderr_fd = log_fd_.get();
  for (size_t i = 0; i < spec_.shares.size(); ++i) {
    config.shares.push_back({spec_.shares[i].host, "vol" + std::to_string(i), spec_.shares[i].readonly});
  }
  // A VM made from a snapshot resumes it on its first start only; started
  // again after it exits, it boots afresh from its disk.
  bool restoring = !spec_.restore_from.empty() && !fs::exists(vm_dir_ / "state.json");
  UniqueFd incoming;
  if (restoring) {
    incoming.reset(::open(spec_.restore_from.c_str(), O_RDONLY | O_CLOEXEC));
    if (!incoming.valid()) return Error::fromErrno("open snapshot state " + spec_.restore_from);
    config.incoming_fd = incoming.get();
  }
  QemuBackend backend(spec_.qemu);
  auto vmm = backend.launch(config);
  if (!vmm) return std::move(vmm).error();
  vmm_ = std::move(*vmm);
  guest_end.reset();

  pid_t qemu_pid = vmm_->process().pid();
  state_.runner_pid = ::getpid();
  if (auto start_time = processStartTime(::getpid()); start_time) state_.runner_start_time = *start_time;
  state_.qemu_pid = qemu_pid;
  if (auto start_time = processStartTime(qemu_pid); start_time) state_.qemu_start_time = *start_time;
  state_.started_at = nowRfc3339();
  setStatus(VmStatus::kRunning);
  log("started QEMU pid " + std::to_string(qemu_pid) + " (" + spec_.accel + ")");

  if (restoring) {
    // The guest's init is mid-conversation already: no spec, just resume.
    MICROVM_TRY(vmm_->finishRestore());
    log("restored from " + spec_.restore_from);
  } else {
    sendSpec();
  }

  MICROVM_TRY(loop_->add(control_.get(), EPOLLIN, [this](uint32_t) { readControl(); }));
  MICROVM_TRY(loop_->add(listener_.get(), EPOLLIN, [this](uint32_t) { acceptRequest(); }));
  MICROVM_TRY(loop_->add(signal_fd_.get(), EPOLLIN, [this](uint32_t) {
    signalfd_siginfo info{};
    if (::read(signal_fd_.get(), &info, sizeof info) == sizeof info) handleSignal(static_cast<int>(info.ssi_signo));
  }));
  return success();
}

void Runner::handleFrame(const agent::Frame& frame) {
  using agent::FrameType;
  switch (frame.type) {
    case FrameType::kHello: {
      auto version = agent::decodeU32(frame.payload);
      log("guest init up, protocol version " + (version ? std::to_string(*version) : "?"));
      break;
    }
    case FrameType::kStarted: log("workload started"); break;
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
      armTimer(kPowerOffGraceSeconds);
      break;
    }
    default: break;  // unknown or host-bound types from the guest are ignored
  }
}

void Runner::setStatus(VmStatus status) {
  state_.status = status;
  auto lock = StateLock::acquire(vm_dir_);
  if (!lock) {
    log("state: " + lock.error().message());
    return;
  }
  if (auto saved = saveState(vm_dir_, state_); !saved) log("state: " + saved.error().message());
}

void Runner::handleSignal(int signal) {
  if (signal == SIGCHLD) {
    auto status = vmm_->process().tryWait();
    if (status && status->has_value()) vmm_status_ = **status;
    return;
  }
  log("signal " + std::to_string(signal));
  requestStop(spec_.stop_timeout_seconds);
}

// The one path to a stop: forward SIGTERM and arm the hard-stop timer; asked
// again while stopping, stop hard at once.
void Runner::requestStop(int timeout_seconds) {
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
  log("forwarding SIGTERM to the workload, hard stop in " + std::to_string(timeout_seconds) + " s");
  sendFrame(agent::FrameType::kSignal, agent::encodeU32(SIGTERM));
  armTimer(timeout_seconds);
}

Result<void> Runner::handleRequest(const RunnerRequest& request) {
  if (exit_code_ || vmm_status_) return Error(ErrorCode::kInvalidArgument, "the VM is exiting");
  if (auto* stop = std::get_if<StopRequest>(&request)) {
    requestStop(stop->timeout_seconds);
    return success();
  }
  if (auto* kill = std::get_if<KillRequest>(&request)) {
    if (state_.status == VmStatus::kPaused) {
      return Error(ErrorCode::kInvalidArgument, "the VM is paused; unpause it before killing its workload");
    }
    log("forwarding signal " + std::to_string(kill->signal) + " to the workload");
    sendFrame(agent::FrameType::kSignal, agent::encodeU32(static_cast<uint32_t>(kill->signal)));
    return success();
  }
  if (auto* snapshot_request = std::get_if<SnapshotRequest>(&request)) return snapshot(snapshot_request->dir);
  if (std::holds_alternative<PauseRequest>(request)) {
    if (state_.status == VmStatus::kPaused) return Error(ErrorCode::kInvalidArgument, "the VM is already paused");
    MICROVM_TRY(vmm_->pause());
    setStatus(VmStatus::kPaused);
    log("paused");
    return success();
  }
  if (state_.status != VmStatus::kPaused) return Error(ErrorCode::kInvalidArgument, "the VM is not paused");
  MICROVM_TRY(vmm_->resume());
  setStatus(VmStatus::kRunning);
  log("resumed");
  return success();
}

Result<void> Runner::snapshot(const fs::path& dir) {
  bool was_running = state_.status == VmStatus::kRunning;
  UniqueFd memory(::open((dir / "memory.bin").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!memory.valid()) return Error::fromErrno("create " + (dir / "memory.bin").string());
  log("snapshot: saving to " + dir.string());
  auto saved = vmm_->saveState(memory.get());
  // The disk is consistent once the state is saved (QEMU flushed it); copy
  // it before the guest runs again.
  std::error_code ec;
  if (saved) fs::copy_file(spec_.root_disk, dir / "disk.qcow2", ec);
  if (was_running) {
    if (auto resumed = vmm_->resume(); !resumed) log("snapshot: resume failed: " + resumed.error().message());
  } else {
    setStatus(VmStatus::kPaused);
  }
  if (!saved) return saved;
  if (ec) return Error(ErrorCode::kIo, "copy disk to " + dir.string() + ": " + ec.message(), ec.value());
  log("snapshot: done");
  return success();
}

void Runner::acceptRequest() {
  UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!client.valid()) return;
  // One short line per connection; a client that dawdles is dropped rather
  // than allowed to stall the loop that also carries the guest's output.
  timeval limit{1, 0};
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  std::string line;
  char chunk[1024];
  while (line.find('\n') == std::string::npos && line.size() < 65536) {
    ssize_t got = ::read(client.get(), chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return;
    line.append(chunk, static_cast<size_t>(got));
  }
  auto request = decodeRequest(line.substr(0, line.find('\n')));
  Result<void> outcome = request ? handleRequest(*request) : Result<void>(request.error());
  if (!outcome) log("request refused: " + outcome.error().message());
  std::string reply = encodeReply(outcome);
  ::send(client.get(), reply.data(), reply.size(), MSG_NOSIGNAL);
}

void Runner::readControl() {
  char buffer[65536];
  ssize_t got = ::read(control_.get(), buffer, sizeof buffer);
  if (got < 0 && errno == EINTR) return;
  if (got <= 0) {
    loop_->remove(control_.get());  // QEMU closed its end
    return;
  }
  reader_.feed({buffer, static_cast<size_t>(got)});
  while (auto frame = reader_.next()) handleFrame(*frame);
  if (reader_.failed()) {
    failure_ = "the guest sent a malformed control frame; stopping the VM";
    log(failure_);
    loop_->remove(control_.get());
    vmm_->process().kill(SIGKILL);
  }
}

Result<void> Runner::loop() {
  while (!vmm_status_) MICROVM_TRY(loop_->runOnce());
  return success();
}

int Runner::finish() {
  int code = kExitVmFailed;
  if (exit_code_) {
    code = *exit_code_;
  } else if (hard_stopped_) {
    code = kExitHardStopped;
  } else {
    std::string why = failure_.empty() ? "the VM stopped before the workload reported an exit code" : failure_;
    if (vmm_status_) why += " (QEMU " + describeWaitStatus(*vmm_status_) + ")";
    state_.error = why;
    std::string console = tailOf(vm_dir_ / "console.log", 5);
    std::string vmm_log = tailOf(vm_dir_ / "runner.log", 3);
    if (err_fd_ >= 0 && failure_.empty()) {
      std::string message = "microvm: " + why + "\n";
      if (!vmm_log.empty()) message += "runner log:\n" + vmm_log + "\n";
      if (!console.empty()) message += "guest console:\n" + console + "\n";
      (void)writeAll(err_fd_, message);
    }
  }
  log("VM finished, exit code " + std::to_string(code));
  listener_.reset();
  if (!spec_.runtime_dir.empty()) (void)removeTree(spec_.runtime_dir);
  state_.exit_code = code;
  state_.finished_at = nowRfc3339();
  if (spec_.remove_on_exit) {
    log_fd_.reset();
    (void)removeTree(vm_dir_);
  } else {
    setStatus(VmStatus::kExited);
  }
  return code;
}

int Runner::run() {
  auto started = start();
  if (started) {
    if (auto looped = loop(); !looped) failure_ = looped.error().message();
  } else {
    failure_ = started.error().message();
    log("start failed: " + failure_);
    if (err_fd_ >= 0) (void)writeAll(err_fd_, "microvm: " + failure_ + "\n");
    vmm_.reset();  // kills and reaps QEMU if it started
  }
  return finish();
}

}  // namespace

int runVm(const fs::path& vm_dir, int out_fd, int err_fd) { return Runner(vm_dir, out_fd, err_fd).run(); }

int runnerMain(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: microvm-runner VM_DIR\n(started by microvm; not meant to be run by hand)\n");
    return 2;
  }
  return runVm(argv[1], STDOUT_FILENO, STDERR_FILENO);
}

}  // namespace microvm
