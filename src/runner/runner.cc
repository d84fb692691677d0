#include "runner/runner.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <map>
#include <optional>
#include <vector>
#include <string>

#include <sys/un.h>

#include "agent/protocol.h"
#include "runner/control.h"
#include "runner/guest_network.h"
#include "runner/keeper.h"
#include "runner/runner_confinement.h"
#include "runner/vmm_user.h"
#include "base/event_loop.h"
#include "base/fs.h"
#include "base/idmapped_mount.h"
#include "base/rotating_file.h"
#include "base/unique_fd.h"
#include "base/unix_socket.h"
#include "hypervisor/qemu/qemu_backend.h"
#include "net/network_config.h"
#include "state/layout.h"
#include "state/vm_record.h"
#include "vsock/vsock_device.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

constexpr int kExitVmFailed = 125;
constexpr int kExitHardStopped = 137;  // 128 + SIGKILL, as Docker reports a killed container
// How long the guest gets to power off after it reported the exit code.
constexpr int kPowerOffGraceSeconds = 5;
// Bytes queued for the guest's control port beyond which the runner stops
// reading stdin sources, so that a workload that does not read its stdin
// backs the writer up instead of the runner's memory.
constexpr size_t kControlBacklog = size_t{1} << 20;
// Output queued for an attached client that does not read; beyond this it is
// detached rather than allowed to hold up the VM or grow without bound.
constexpr size_t kAttachBacklog = size_t{16} << 20;
constexpr size_t kChunk = 65536;
// Output goes to workload.log in records of at most this much, as Docker
// splits long lines at 16 KiB: a record (JSON-escaped, at most 6 bytes a
// byte) stays far below any max-size worth having.
constexpr size_t kLogRecordBytes = 16384;

// The host directory with its owner shown as share.uid and its group as
// share.gid (and those ids stored as the owner and group on disk); every
// other id stays itself (swapIds).
Result<UniqueFd> idMappedShare(const VmSpec::Share& share) {
  auto context = "volume " + share.host + " with uid=/gid=";
  if (::geteuid() != 0) return Error(ErrorCode::kInvalidArgument, context + ": needs microvm to run as root");
  struct stat st {};
  if (::stat(share.host.c_str(), &st) != 0) return Error::fromErrno(context);
  auto tree = openIdMappedTree(share.host, swapIds(st.st_uid, share.uid.value_or(st.st_uid)),
                               swapIds(st.st_gid, share.gid.value_or(st.st_gid)), share.readonly);
  if (!tree) return std::move(tree).error().withContext(context);
  return tree;
}

// A client of `attach`: output goes to it as frames, its stdin comes back.
struct AttachedClient {
  UniqueFd fd;
  bool stdin = false;
  agent::FrameReader reader;
  std::string backlog;  // frames not yet taken by the client
};

class Runner {
 public:
  Runner(fs::path vm_dir, int in_fd, int out_fd, int err_fd, RunnerSeccomp seccomp)
      : vm_dir_(std::move(vm_dir)), state_dir_(vm_dir_), in_fd_(in_fd), out_fd_(out_fd), err_fd_(err_fd),
        seccomp_(seccomp) {}

  int run();

 private:
  Result<void> start();
  Result<void> loop();
  void readControl();
  void flushControl();
  void watchStdinSources();
  void readStdin();
  void attach(UniqueFd client, const AttachRequest& request);
  void readAttached(int fd);
  void sendToAttached(AttachedClient& client, agent::FrameType type, std::string_view payload);
  void flushAttached(AttachedClient& client);
  void watchAttached(AttachedClient& client);
  void detach(int fd);
  void handleFrame(const agent::Frame& frame);
  void handleSignal(int signal);
  void acceptRequest();
  Result<void> handleRequest(const RunnerRequest& request);
  void requestStop(int timeout_seconds, int signal = SIGTERM);
  void setStatus(VmStatus status);
  void sendSpec();
  Result<void> snapshot(const fs::path& dir);
  void sendFrame(agent::FrameType type, std::string_view payload);
  void forwardOutput(int& fd, const char* stream, std::string_view bytes);
  void readConsole();
  void writeLog(RotatingFile& file, std::string_view bytes, bool stream);
  void armTimer(int seconds);
  void onTimer();
  Result<UniqueFd> startNetwork();
  Result<void> chooseVmmUser(MachineConfig& config);
  Result<void> confine();
  Result<void> giveUpRoot();
  Result<void> copyDisk(int to);
  void recordNetCounters();
  void log(const std::string& message);
  int finish();

  fs::path vm_dir_;
  // Where state.json and state.lock are reached: vm_dir_, or "." once the
  // runner has given up root (its id cannot search the data dir; it works
  // from inside the VM's directory).
  fs::path state_dir_;
  int in_fd_;
  bool in_fd_pollable_ = true;
  int out_fd_;
  int err_fd_;
  RunnerSeccomp seccomp_;
  VmSpec spec_;
  // As root: does what the runner's own id may not (keeper.h). Declared
  // before everything that may ask it.
  std::optional<Keeper> keeper_;
  // Opened while root, read after: the logs quoted when the VM fails, and
  // the disk a snapshot copies.
  UniqueFd console_read_;
  UniqueFd runner_log_read_;
  UniqueFd disk_read_;
  VmState state_;
  UniqueFd log_fd_;
  std::optional<RotatingFile> workload_log_;
  std::optional<RotatingFile> console_log_;
  UniqueFd console_;  // the runner's end of the guest's serial console
  bool log_write_failed_ = false;
  UniqueFd control_;
  std::string control_backlog_;  // frames for the guest the socket did not take yet
  std::map<int, AttachedClient> attached_;
  UniqueFd signal_fd_;
  UniqueFd listener_;
  std::optional<EventLoop> loop_;
  std::unique_ptr<vsock::VsockDevice> vsock_;  // on loop_, so declared after it
  std::optional<EventLoop::TimerId> timer_;
  // After loop_: the network's handlers live in it and go first.
  std::unique_ptr<GuestNetwork> network_;
  // Before vmm_: the id stays taken until QEMU is gone.
  std::optional<VmmUser> vmm_user_;
  std::unique_ptr<Vmm> vmm_;
  agent::FrameReader reader_;
  std::optional<int> exit_code_;
  std::optional<int> vmm_status_;
  bool stop_requested_ = false;
  bool hard_stopped_ = false;
  std::string failure_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

void Runner::log(const std::string& message) {
  if (!log_fd_.valid()) return;
  (void)writeAll(log_fd_.get(), nowRfc3339() + " " + message + "\n");
}

// Frames to the guest never block the loop: what the socket does not take now
// waits for EPOLLOUT.
void Runner::sendFrame(agent::FrameType type, std::string_view payload) {
  if (!control_.valid()) return;
  agent::appendFrame(control_backlog_, type, payload);
  flushControl();
}

void Runner::flushControl() {
  while (!control_backlog_.empty()) {
    ssize_t sent = ::send(control_.get(), control_backlog_.data(), control_backlog_.size(), MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && errno == EAGAIN) break;
    if (sent <= 0) {
      log("control channel: " + Error::fromErrno("send").message());
      control_backlog_.clear();
      break;
    }
    control_backlog_.erase(0, static_cast<size_t>(sent));
  }
  if (loop_ && loop_->watching(control_.get())) {
    (void)loop_->modify(control_.get(), control_backlog_.empty() ? EPOLLIN : EPOLLIN | EPOLLOUT);
  }
  watchStdinSources();
}

// Stdin sources are read only while the guest keeps up (see kControlBacklog).
void Runner::watchStdinSources() {
  if (!loop_) return;
  bool room = control_backlog_.size() < kControlBacklog;
  if (in_fd_ >= 0 && in_fd_pollable_ && loop_->watching(in_fd_)) (void)loop_->modify(in_fd_, room ? uint32_t{EPOLLIN} : 0u);
  for (auto& entry : attached_) watchAttached(entry.second);
}

// Output waiting: EPOLLOUT. Input: always for a client without stdin (to see
// it leave), while the guest keeps up for one with stdin.
void Runner::watchAttached(AttachedClient& client) {
  uint32_t events = client.backlog.empty() ? 0u : uint32_t{EPOLLOUT};
  if (!client.stdin || control_backlog_.size() < kControlBacklog) events |= EPOLLIN;
  (void)loop_->modify(client.fd.get(), events);
}

void Runner::readStdin() {
  char buffer[kChunk];
  ssize_t got = ::read(in_fd_, buffer, sizeof buffer);
  if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (got > 0) {
    sendFrame(agent::FrameType::kStdin, std::string_view(buffer, static_cast<size_t>(got)));
  } else {
    loop_->remove(in_fd_);
    in_fd_ = -1;
    sendFrame(agent::FrameType::kStdinClose, {});
  }
  // A regular file cannot be polled: it is read on in turns with the loop's
  // other work, as long as the guest keeps up.
  if (in_fd_ >= 0 && !in_fd_pollable_ && control_backlog_.size() < kControlBacklog) {
    loop_->addTimer(std::chrono::milliseconds(0), [this] { readStdin(); });
  } else if (in_fd_ >= 0 && !in_fd_pollable_) {
    loop_->addTimer(std::chrono::milliseconds(5), [this] { readStdin(); });
  }
}

void Runner::attach(UniqueFd client, const AttachRequest& request) {
  if (request.stdin && !spec_.open_stdin) {
    std::string refusal = encodeReply(Error(ErrorCode::kInvalidArgument, "the VM was not created with -i (open stdin)"));
    ::send(client.get(), refusal.data(), refusal.size(), MSG_NOSIGNAL);
    return;
  }
  std::string reply = encodeReply(success());
  if (::send(client.get(), reply.data(), reply.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(reply.size())) return;
  timeval none{0, 0};
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  ::fcntl(client.get(), F_SETFL, O_NONBLOCK);
  int fd = client.get();
  if (!loop_->add(fd, EPOLLIN, [this, fd](uint32_t events) {
        if (events & EPOLLOUT) flushAttached(attached_.at(fd));
        if (attached_.contains(fd) && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) readAttached(fd);
      })) {
    return;
  }
  attached_.emplace(fd, AttachedClient{std::move(client), request.stdin, {}, {}});
  log(std::string("client attached") + (request.stdin ? " with stdin" : ""));
  watchStdinSources();
}

void Runner::readAttached(int fd) {
  auto& client = attached_.at(fd);
  char buffer[kChunk];
  ssize_t got = ::read(fd, buffer, sizeof buffer);
  if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (got <= 0) {
    // Like `docker run -i`: the attached stdin's end is the workload's.
    if (client.stdin) sendFrame(agent::FrameType::kStdinClose, {});
    detach(fd);
    return;
  }
  client.reader.feed({buffer, static_cast<size_t>(got)});
  while (auto frame = client.reader.next()) {
    if (!client.stdin) continue;
    if (frame->type == agent::FrameType::kStdin) sendFrame(agent::FrameType::kStdin, frame->payload);
    if (frame->type == agent::FrameType::kStdinClose) {
      sendFrame(agent::FrameType::kStdinClose, {});
      client.stdin = false;
    }
  }
  if (client.reader.failed()) {
    log("attached client sent a malformed frame; detaching it");
    detach(fd);
  }
}

void Runner::sendToAttached(AttachedClient& client, agent::FrameType type, std::string_view payload) {
  agent::appendFrame(client.backlog, type, payload);
  flushAttached(client);
}

void Runner::flushAttached(AttachedClient& client) {
  int fd = client.fd.get();
  while (!client.backlog.empty()) {
    ssize_t sent = ::send(fd, client.backlog.data(), client.backlog.size(), MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && errno == EAGAIN) break;
    if (sent <= 0) {
      detach(fd);
      return;
    }
    client.backlog.erase(0, static_cast<size_t>(sent));
  }
  if (client.backlog.size() > kAttachBacklog) {
    log("attached client does not keep up with the output; detaching it");
    detach(fd);
    return;
  }
  watchAttached(client);
}

void Runner::detach(int fd) {
  loop_->remove(fd);
  attached_.erase(fd);
}

void Runner::forwardOutput(int& fd, const char* stream, std::string_view bytes) {
  auto type = std::string_view(stream) == "stdout" ? agent::FrameType::kStdout : agent::FrameType::kStderr;
  // Detaching a client erases it: iterate over the fds, not the map.
  std::vector<int> clients;
  for (const auto& entry : attached_) clients.push_back(entry.first);
  for (int client : clients) {
    if (attached_.contains(client)) sendToAttached(attached_.at(client), type, bytes);
  }
  if (fd >= 0 && !writeAll(fd, bytes)) fd = -1;  // the reader went away; keep logging
  std::string time = nowRfc3339();
  while (!bytes.empty()) {
    size_t take = std::min(bytes.size(), kLogRecordBytes);
    // A cut inside a UTF-8 sequence would garble that character: back up
    // over its continuation bytes (10xxxxxx), at most three.
    for (size_t back = 0; take < bytes.size() && back < 3 && take > 1 &&
                          (static_cast<unsigned char>(bytes[take]) & 0xC0) == 0x80;
         ++back) {
      --take;
    }
    nlohmann::json record = {{"time", time}, {"stream", stream}, {"log", std::string(bytes.substr(0, take))}};
    writeLog(*workload_log_, record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
             /*stream=*/false);
    bytes.remove_prefix(take);
  }
}

// A log that cannot be written (a full disk) loses what does not fit, and
// says so once; the VM runs on.
void Runner::writeLog(RotatingFile& file, std::string_view bytes, bool stream) {
  auto written = stream ? file.writeStream(bytes) : file.write(bytes);
  if (!written && !log_write_failed_) {
    log(written.error().message() + "; output is being lost from the logs");
    log_write_failed_ = true;
  }
}

// QEMU writes the serial console into a socket rather than a file, so that
// console.log is the runner's to bound: QEMU cannot be trusted to, and a
// guest may print without end.
void Runner::readConsole() {
  char buffer[kChunk];
  for (int turn = 0; turn < 16; ++turn) {  // a bounded share of the loop
    ssize_t got = ::read(console_.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == EAGAIN) return;
    if (got <= 0) {
      if (loop_ && loop_->watching(console_.get())) loop_->remove(console_.get());
      console_.reset();
      return;
    }
    writeLog(*console_log_, std::string_view(buffer, static_cast<size_t>(got)), /*stream=*/true);
  }
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
  workload.open_stdin = spec_.open_stdin;
  for (size_t i = 0; i < spec_.shares.size(); ++i) {
    const auto& share = spec_.shares[i];
    workload.mounts.push_back({share.tag, share.guest, "9p", "", share.readonly});
  }
  for (const auto& [path, options] : spec_.tmpfs) workload.mounts.push_back({"tmpfs", path, "tmpfs", options, false});
  workload.sysctls = spec_.sysctls;
  workload.capabilities = spec_.capabilities;
  workload.no_new_privs = spec_.no_new_privs;
  workload.seccomp_default = spec_.seccomp_default;
  workload.seccomp_rules = spec_.seccomp_rules;
  describeGuestNetwork(spec_, workload);
  // The guest reads the spec once its port opens; the socket buffers it.
  sendFrame(agent::FrameType::kSpec, agent::encodeSpec(workload));
}

Result<void> Runner::start() {
  auto spec = loadSpec(vm_dir_);
  if (!spec) return std::move(spec).error();
  spec_ = std::move(*spec);
  // First, while the runner has nothing open it should not share.
  if (::geteuid() == 0) {
    auto keeper = Keeper::start(spec_, vm_dir_);
    if (!keeper) return std::move(keeper).error();
    keeper_.emplace(std::move(*keeper));
  }

  // O_NOFOLLOW: the VM's directory is writable by its runner's id, which
  // must not point root's writes elsewhere.
  log_fd_.reset(
      ::open((vm_dir_ / "runner.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!log_fd_.valid()) return Error::fromErrno("open " + (vm_dir_ / "runner.log").string());
  // workload.log goes on across starts; console.log starts afresh with each boot.
  RotationPolicy rotation{spec_.log_max_size, spec_.log_max_files};
  auto workload_log = RotatingFile::open(vm_dir_ / "workload.log", rotation);
  if (!workload_log) return std::move(workload_log).error();
  workload_log_.emplace(std::move(*workload_log));
  auto console_log = RotatingFile::open(vm_dir_ / "console.log", rotation, /*truncate=*/true);
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
  control_.reset(pair[0]);
  if (::fcntl(control_.get(), F_SETFL, O_NONBLOCK) != 0) return Error::fromErrno("fcntl O_NONBLOCK");
  UniqueFd guest_end(pair[1]);
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return Error::fromErrno("socketpair");
  console_.reset(pair[0]);
  if (::fcntl(console_.get(), F_SETFL, O_NONBLOCK) != 0) return Error::fromErrno("fcntl O_NONBLOCK");
  UniqueFd console_qemu_end(pair[1]);

  fs::path runtime_dir = spec_.runtime_dir;
  MICROVM_TRY(makeDirs(runtime_dir));
  fs::path qmp = runtime_dir / "qmp.sock";
  fs::path control_socket = runtime_dir / "runner.sock";
  MICROVM_TRY(checkSocketPath(qmp));
  MICROVM_TRY(checkSocketPath(control_socket));
  auto listener = listenUnix(control_socket, 16, SOCK_NONBLOCK);
  if (!listener) return std::move(listener).error();
  listener_ = std::move(*listener);

  // The vsock back-end listens before QEMU starts: QEMU connects to it while
  // it creates the device and fails if nothing is there.
  if (spec_.vsock) {
    vsock::VsockConfig vsock_config;
    vsock_config.vhost_socket = vhostVsockSocket(spec_);
    vsock_config.base = vsockSocket(spec_);
    for (const auto& port : spec_.vsock_ports) vsock_config.ports.push_back({port.port, port.path, port.listen});
    vsock_config.log = [this](const std::string& message) { log("vsock: " + message); };
    if (keeper_) {
      // Host sockets may be where the runner's own id cannot reach them.
      vsock_config.connect_host = [this](const fs::path& target) { return keeper_->connect(target); };
    }
    auto vsock = vsock::VsockDevice::create(*loop_, std::move(vsock_config));
    if (!vsock) return std::move(vsock).error().withContext("vsock");
    vsock_ = std::move(*vsock);
  }

  MachineConfig config;
  config.name = vm_dir_.string();
  config.accel = spec_.accel == "kvm" ? Acceleration::kKvm : Acceleration::kTcg;
  config.tsc_khz = spec_.tsc_khz;
  config.cpus = spec_.cpus;
  config.memory_mib = spec_.memory_mib;
  config.kernel = spec_.kernel;
  config.initramfs = spec_.initramfs;
  config.root_disk = spec_.root_disk;
  config.base_disk = spec_.base_disk;
  config.ephemeral_disk = spec_.remove_on_exit;
  config.console_fd = console_qemu_end.get();
  config.qmp_socket = qmp;
  config.control_fd = guest_end.get();
  config.stderr_fd = log_fd_.get();
  if (vsock_) {
    config.vhost_vsock_socket = vhostVsockSocket(spec_);
    config.while_waiting = {vsock_->controlFd(), [this] { vsock_->serviceControl(); }};
  }
  // The network exists, port forwards included, before the guest boots: a
  // busy host port fails the start here.
  UniqueFd net_qemu_end;
  if (spec_.network != "none") {
    auto qemu_end = startNetwork();
    if (!qemu_end) return std::move(qemu_end).error();
    net_qemu_end = std::move(*qemu_end);
    config.net_fd = net_qemu_end.get();
    config.net_mtu = net::kGuestMtu;
  }
  // Volumes with uid=/gid= are idmapped mounts that QEMU reaches by fd; our
  // copies close once QEMU holds its own, and the mounts go with QEMU.
  std::vector<UniqueFd> share_trees;
  for (size_t i = 0; i < spec_.shares.size(); ++i) {
    const auto& share = spec_.shares[i];
    MachineConfig::Share machine_share{share.host, share.tag, share.readonly, -1};
    if (share.uid || share.gid) {
      auto tree = idMappedShare(share);
      if (!tree) return std::move(tree).error();
      machine_share.fd = tree->get();
      share_trees.push_back(std::move(*tree));
    }
    config.shares.push_back(std::move(machine_share));
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
  if (::geteuid() == 0) MICROVM_TRY(chooseVmmUser(config));
  QemuBackend backend(spec_.qemu);
  auto vmm = backend.launch(config);
  if (!vmm) return std::move(vmm).error();
  vmm_ = std::move(*vmm);
  guest_end.reset();
  console_qemu_end.reset();
  net_qemu_end.reset();

  MICROVM_TRY(confine());

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

  MICROVM_TRY(loop_->add(console_.get(), EPOLLIN, [this](uint32_t) { readConsole(); }));
  MICROVM_TRY(loop_->add(control_.get(), EPOLLIN, [this](uint32_t events) {
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

// Run as root, QEMU gets a user of its own and keeps only the capabilities
// its shares need (vmm_user.h); everything it uses is handed over as fds.
Result<void> Runner::chooseVmmUser(MachineConfig& config) {
  auto user = VmmUser::allocate();
  if (!user) return std::move(user).error().withContext("pick a user for QEMU");
  vmm_user_.emplace(std::move(*user));
  SpawnOptions::Credentials credentials;
  credentials.uid = vmm_user_->uid();
  credentials.gid = vmm_user_->gid();
  if (config.accel == Acceleration::kKvm) {
    // /dev/kvm is usually root:kvm 0660: its group is the one QEMU may keep.
    struct stat st {};
    if (::stat("/dev/kvm", &st) == 0 && (st.st_mode & 0006) != 0006) credentials.groups.push_back(st.st_gid);
  }
  bool writable = false;
  for (const auto& share : config.shares) writable = writable || !share.readonly;
  credentials.capabilities = vmmCapabilities(!config.shares.empty(), writable);
  config.credentials = credentials;
  state_.qemu_uid = credentials.uid;
  state_.qemu_gid = credentials.gid;
  log("QEMU runs as uid/gid " + std::to_string(credentials.uid) + ", capabilities 0x" +
      [&] {
        char hex[17];
        std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(credentials.capabilities));
        return std::string(hex);
      }());
  return success();
}

// QEMU runs: from here on the runner parses guest input (libslirp, vsock,
// the control port) and needs root no more. As root it becomes the VM's
// runner id (giveUpRoot); as anyone, it installs its seccomp filter.
Result<void> Runner::confine() {
  if (keeper_) {
    if (auto given_up = giveUpRoot(); !given_up) return std::move(given_up).error().withContext("runner: give up root");
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Error::fromErrno("runner: set no_new_privs");
  if (seccomp_ == nullptr) return success();
  if (auto filtered = seccomp_(); !filtered) return std::move(filtered).error().withContext("runner: seccomp filter");
  return success();
}

// The VM's directory becomes root:<runner gid> 01770: the runner may create
// files in it (state.json's temp file) and replace its own (state.json), but
// sticky, not root's (spec.json, the disk, the logs, state.lock), which root
// reads and acts on later. Root opens nothing there that the runner can
// replace, and reads state.json bounded and without following links.
Result<void> Runner::giveUpRoot() {
  uid_t uid = vmm_user_->runnerUid();
  gid_t gid = vmm_user_->runnerGid();
  // QMP's socket is in the runtime dir, which stays root's: connect now.
  if (auto connected = vmm_->connectControl(); !connected && connected.error().code() != ErrorCode::kUnsupported) {
    return std::move(connected).error().withContext("QMP");
  }
  auto open_read = [&](const char* name, UniqueFd& fd) -> Result<void> {
    fd.reset(::open((vm_dir_ / name).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (!fd.valid()) return Error::fromErrno("open " + (vm_dir_ / name).string());
    return success();
  };
  MICROVM_TRY(open_read("console.log", console_read_));
  MICROVM_TRY(open_read("runner.log", runner_log_read_));
  disk_read_.reset(::open(spec_.root_disk.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!disk_read_.valid()) return Error::fromErrno("open " + spec_.root_disk);

  UniqueFd lock(::open((vm_dir_ / "state.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock.valid()) return Error::fromErrno("open " + (vm_dir_ / "state.lock").string());
  if (::fchown(lock.get(), 0, gid) != 0 || ::fchmod(lock.get(), 0660) != 0) {
    return Error::fromErrno("give " + (vm_dir_ / "state.lock").string() + " to the runner's group");
  }
  // state.json becomes the runner's, unless it is not a plain file of its
  // own (left by an earlier runner): then it goes, and the runner writes a
  // new one.
  fs::path state = vm_dir_ / "state.json";
  UniqueFd state_fd(::open(state.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  struct stat st {};
  if (state_fd.valid() && ::fstat(state_fd.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1) {
    if (::fchown(state_fd.get(), uid, gid) != 0) return Error::fromErrno("give " + state.string() + " to the runner");
  } else if (::unlink(state.c_str()) != 0 && errno != ENOENT) {
    return Error::fromErrno("remove " + state.string());
  }
  if (::chown(vm_dir_.c_str(), 0, gid) != 0 || ::chmod(vm_dir_.c_str(), 01770) != 0) {
    return Error::fromErrno("give " + vm_dir_.string() + " to the runner's group");
  }
  // The runner's id cannot search the data dir: it works from inside.
  if (::chdir(vm_dir_.c_str()) != 0) return Error::fromErrno("chdir " + vm_dir_.string());
  // The rotated logs become the runner's, so that it can rename them in the
  // sticky directory and start new ones; root reads them without following
  // links (RotatedLogReader), as it does state.json.
  for (const auto* rotating : {&workload_log_, &console_log_}) {
    if (!rotating->has_value()) continue;
    for (const auto& path : rotatedLogFiles((*rotating)->path())) {
      UniqueFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
      struct stat log_st {};
      if (!file.valid() || ::fstat(file.get(), &log_st) != 0 || !S_ISREG(log_st.st_mode) || log_st.st_nlink != 1) {
        continue;  // not a plain file of its own: rotation will replace it
      }
      if (::fchown(file.get(), uid, gid) != 0) return Error::fromErrno("give " + path.string() + " to the runner");
    }
  }
  state_dir_ = ".";
  // The runner's id cannot search the data dir: rotate by name from here.
  for (auto* rotating : {&workload_log_, &console_log_}) {
    if (rotating->has_value()) (*rotating)->renamePath((*rotating)->path().filename());
  }
  MICROVM_TRY(becomeRunnerUser(uid, gid, runnerCapabilities()));
  state_.runner_uid = uid;
  log("runner runs as uid/gid " + std::to_string(uid));
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
  auto plan = guestNetworkPlan(spec_);
  if (!plan) return std::move(plan).error();
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
    if (!network_ || exit_code_ || vmm_status_) return;
    auto counters = network_->counters();
    if (counters != state_.net_counters) {
      state_.net_counters = std::move(counters);
      if (state_.status != VmStatus::kCreated) setStatus(state_.status);
    }
    recordNetCounters();
  });
}

void Runner::handleFrame(const agent::Frame& frame) {
  using agent::FrameType;
  switch (frame.type) {
    case FrameType::kHello: {
      auto version = agent::decodeU32(frame.payload);
      log("guest init up, protocol version " + (version ? std::to_string(*version) : "?"));
      break;
    }
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
  if (auto* add = std::get_if<PortAddRequest>(&request)) {
    if (!network_) return Error(ErrorCode::kInvalidArgument, "the VM has no network (--network none)");
    auto mapping = network_->addPort(add->mapping);
    if (!mapping) return std::move(mapping).error();
    state_.ports = network_->ports();
    setStatus(state_.status);
    return success();
  }
  if (auto* timing = std::get_if<TimingRequest>(&request)) {
    state_.timings_ms[timing->name] = timing->ms;
    setStatus(state_.status);
    return success();
  }
  if (auto* remove = std::get_if<PortRemoveRequest>(&request)) {
    if (!network_) return Error(ErrorCode::kInvalidArgument, "the VM has no network (--network none)");
    MICROVM_TRY(network_->removePort(remove->mapping));
    state_.ports = network_->ports();
    setStatus(state_.status);
    return success();
  }
  if (std::holds_alternative<AttachRequest>(request)) {
    // Attaching keeps the connection, so acceptRequest takes it before here.
    return Error(ErrorCode::kInvalidArgument, "attach needs its own connection");
  }
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

// Copies the VM's disk, through the fd opened while root, to `to`.
Result<void> Runner::copyDisk(int to) {
  off_t offset = 0;
  for (;;) {
    char buffer[1 << 16];
    ssize_t got = ::pread(disk_read_.get(), buffer, sizeof buffer, offset);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return Error::fromErrno("read " + spec_.root_disk);
    if (got == 0) break;
    MICROVM_TRY(writeAll(to, std::string_view(buffer, static_cast<size_t>(got))));
    offset += got;
  }
  if (::fsync(to) != 0) return Error::fromErrno("fsync the snapshot's disk");
  return success();
}

Result<void> Runner::snapshot(const fs::path& dir) {
  bool was_running = state_.status == VmStatus::kRunning;
  // Run as root, the runner's id cannot reach the snapshot directory: its
  // keeper creates the files there.
  UniqueFd memory;
  UniqueFd disk;
  if (keeper_) {
    auto files = keeper_->snapshotFiles(dir);
    if (!files) return std::move(files).error();
    memory = std::move(files->first);
    disk = std::move(files->second);
  } else {
    memory.reset(::open((dir / "memory.bin").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!memory.valid()) return Error::fromErrno("create " + (dir / "memory.bin").string());
  }
  log("snapshot: saving to " + dir.string());
  auto saved = vmm_->saveState(memory.get());
  // The disk is consistent once the state is saved (QEMU flushed it); copy
  // it before the guest runs again.
  std::error_code ec;
  Result<void> copied = success();
  if (saved && disk.valid()) {
    copied = copyDisk(disk.get());
  } else if (saved) {
    fs::copy_file(spec_.root_disk, dir / "disk.qcow2", ec);
  }
  if (was_running) {
    if (auto resumed = vmm_->resume(); !resumed) log("snapshot: resume failed: " + resumed.error().message());
  } else {
    setStatus(VmStatus::kPaused);
  }
  if (!saved) return saved;
  if (!copied) return copied;
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
  if (request && std::holds_alternative<AttachRequest>(*request) && !exit_code_ && !vmm_status_) {
    attach(std::move(client), std::get<AttachRequest>(*request));
    return;
  }
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
    control_backlog_.clear();
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
  // What QEMU wrote to the console before it went, into console.log.
  for (int turn = 0; turn < 64 && console_.valid() && console_log_; ++turn) readConsole();
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
        console_read_.valid() ? tailLines(console_read_.get(), 5) : tailLines(vm_dir_ / "console.log", 5);
    std::string vmm_log =
        runner_log_read_.valid() ? tailLines(runner_log_read_.get(), 3) : tailLines(vm_dir_ / "runner.log", 3);
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
  for (auto& [fd, client] : attached_) {
    agent::appendFrame(client.backlog, agent::FrameType::kExit, agent::encodeU32(static_cast<uint32_t>(code)));
    ::fcntl(fd, F_SETFL, 0);
    timeval limit{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    (void)writeAll(fd, client.backlog);
  }
  attached_.clear();
  listener_.reset();
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
  if (network_) state_.net_counters = network_->counters();
  state_.ports.clear();  // nothing is forwarded once the VM is gone
  network_.reset();
  if (spec_.remove_on_exit) {
    log_fd_.reset();
    if (!keeper_) (void)removeTree(vm_dir_);
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

int runVm(const fs::path& vm_dir, int in_fd, int out_fd, int err_fd, RunnerSeccomp seccomp) {
  return Runner(vm_dir, in_fd, out_fd, err_fd, seccomp).run();
}

int runnerMain(int argc, char** argv, RunnerSeccomp seccomp) {
  bool with_stdin = argc == 3 && std::string_view(argv[2]) == "--stdin";
  if (argc != 2 && !with_stdin) {
    std::fprintf(stderr, "usage: microvm-runner VM_DIR [--stdin]\n(started by microvm; not meant to be run by hand)\n");
    return 2;
  }
  return runVm(argv[1], with_stdin ? STDIN_FILENO : -1, STDOUT_FILENO, STDERR_FILENO, seccomp);
}

}  // namespace microvm
