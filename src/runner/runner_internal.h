// The runner's one object, shared by the files that implement it: runner.cc
// (start, the event loop, the guest's frames, signals, stop and finish),
// runner_requests.cc (the control requests), runner_streams.cc (the control
// port, stdin, attached clients, workload.log and console.log) and
// runner_privileges.cc (QEMU's user, giving up root, confinement).
// Internal to the runner: runner.h is its interface.
#pragma once

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agent/framed_connection.h"
#include "agent/protocol.h"
#include "base/event_loop.h"
#include "base/rotating_file.h"
#include "base/unique_fd.h"
#include "hypervisor/backend.h"
#include "runner/control.h"
#include "runner/guest_network.h"
#include "runner/keeper.h"
#include "runner/pod_network.h"
#include "runner/runner_confinement.h"
#include "runner/runner_log.h"
#include "runner/template_memory.h"
#include "runner/vmm_user.h"
#include "state/vm_record.h"
#include "runner/agent_gateway.h"
#include "vsock/vsock_device.h"

namespace microvm {

// A client of `attach`: output goes to it as frames, its stdin comes back.
struct AttachedClient {
  agent::FramedConnection connection;  // frames not yet taken by the client wait in it
  bool stdin = false;
};

// The host directory of `share` as an idmapped mount (uid=/gid= volumes);
// root only (runner_privileges.cc).
Result<UniqueFd> idMappedShare(const VmSpec::Share& share);

class Runner {
 public:
  Runner(std::filesystem::path vm_dir, int in_fd, int out_fd, int err_fd, RunnerSeccomp seccomp,
         WorkloadSeccompCompiler compile_seccomp)
      : vm_dir_(std::move(vm_dir)), state_dir_(vm_dir_), in_fd_(in_fd), out_fd_(out_fd), err_fd_(err_fd),
        seccomp_(seccomp),
        compile_seccomp_(compile_seccomp) {}

  int run();

 private:
  // runner_requests_test.cc drives handleRequest on a Runner with a fake VMM.
  friend struct RunnerTestPeer;
  using Path = std::filesystem::path;

  // runner.cc
  Result<void> start();
  Result<UniqueFd> startNetwork();
  void recordNetCounters();
  Result<void> loop();
  void readControl();
  void handleFrame(const agent::Frame& frame);
  void handleSignal(int signal);
  void requestStop(int timeout_seconds, int signal = SIGTERM);
  void setStatus(VmStatus status);
  void compileWorkloadSeccomp();
  void sendSpec();
  // Resizes the workload's tty now, or sets the size its spec will carry.
  void resizeTty(agent::WindowSize size);
  void armTimer(int seconds);
  void onTimer();
  void log(const std::string& message);
  int finish();
  int finishSuspended();

  // runner_requests.cc
  void acceptRequest();
  Result<void> handleRequest(const RunnerRequest& request);
  Result<void> snapshot(const Path& dir);
  // runner_restore.cc
  // A restore's saved network state, read while root; loaded (parsed) by
  // loadNetworkState once the runner is confined, before the guest runs.
  Result<void> readNetworkState(const Path& file);
  Result<void> loadNetworkState();
  // Guest RAM as a memfd, to be filled from `saved_ram` (a sparse file) when
  // not empty, by loadGuestMemory.
  Result<void> createGuestMemory(const Path& saved_ram);
  Result<void> loadGuestMemory();
  Result<void> releaseStreamedZeros();
  void sendRefresh();
  // A refresh with the host's clock alone (hostname and RNG unchanged).
  void sendClock();
  void allowClockProbe();
  void answerClockProbe(std::string_view payload);
  // vmm_->resume(), and the guest's clock set again.
  Result<void> resumeGuest();
  Result<void> saveMachine(const SnapshotFiles& files);
  Result<void> saveNetworkState(int fd);
  // Boot templates (core/templates.h): opens the staging files while root.
  Result<void> openTemplateCapture();
  // At the guest's hello: saves the template, closes its files.
  void captureTemplate();
  Result<void> copyDisk(int to);
  Result<void> suspend();
  Result<void> commitSuspend();

  // runner_streams.cc
  void sendFrame(agent::FrameType type, std::string_view payload);
  void flushControl();
  // Bytes queued for the guest's control port.
  size_t controlBacklog() const;
  void watchStdinSources();
  void readStdin();
  void attach(UniqueFd client, const AttachRequest& request);
  void readAttached(int fd);
  void sendToAttached(AttachedClient& client, agent::FrameType type, std::string_view payload);
  void flushAttached(AttachedClient& client);
  void watchAttached(AttachedClient& client);
  void detach(int fd);
  void forwardOutput(int& fd, const char* stream, std::string_view bytes);
  void readConsole();
  void drainNetwork();
  Result<UniqueFd> openVmmStderr();
  void readVmmStderr();
  std::string withVmmsWords(std::string failure);
  void writeLog(RotatingFile& file, std::string_view bytes, bool stream);

  // runner_privileges.cc
  Result<void> chooseVmmUser(MachineConfig& config);
  Result<void> confine();
  Result<void> giveUpRoot();

  Path vm_dir_;
  // Where state.json and state.lock are reached: vm_dir_, or "." once the
  // runner has given up root (its id cannot search the data dir; it works
  // from inside the VM's directory).
  Path state_dir_;
  int in_fd_;
  bool in_fd_pollable_ = true;
  int out_fd_;
  int err_fd_;
  RunnerSeccomp seccomp_;
  WorkloadSeccompCompiler compile_seccomp_;
  std::string seccomp_program_;  // for the spec (compileWorkloadSeccomp)
  VmSpec spec_;
  // As root: does what the runner's own id may not (keeper.h). Declared
  // before everything that may ask it.
  std::optional<Keeper> keeper_;
  // Opened while root, read after: the console quoted when the VM fails, and
  // the disk a snapshot copies.
  UniqueFd console_read_;
  UniqueFd disk_read_;
  // Guest RAM (a memfd QEMU maps shared): saved and restored by the runner.
  // Invalid when QEMU maps a boot template's memory copy-on-write instead:
  // this VM's own pages are then only in QEMU, and a save puts them in the
  // migration stream (with an empty RAM file beside it).
  UniqueFd guest_ram_;
  // The saved RAM loadGuestMemory copies into guest_ram_, opened while root.
  UniqueFd saved_ram_;
  Path saved_ram_path_;
  std::optional<std::string> saved_network_;
  std::optional<TemplateMemory> template_memory_;
  // The saved state being restored carries the RAM (its RAM file is empty).
  bool incoming_has_ram_ = false;
  VmState state_;
  std::optional<RunnerLog> log_;  // runner.log
  UniqueFd vmm_stderr_;             // the read end of QEMU's stderr, a pipe
  std::optional<RotatingFile> workload_log_;
  std::optional<RotatingFile> console_log_;
  UniqueFd console_;  // the runner's end of the guest's serial console
  bool log_write_failed_ = false;
  // The control port's host end (a socketpair with QEMU's virtio-serial
  // chardev); frames for the guest the socket did not take yet wait in it.
  std::optional<agent::FramedConnection> control_;
  std::map<int, AttachedClient> attached_;
  UniqueFd signal_fd_;
  UniqueFd listener_;
  std::optional<EventLoop> loop_;
  std::unique_ptr<vsock::VsockDevice> vsock_;  // on loop_, so declared after it
  std::unique_ptr<AgentGateway> agent_gateway_;  // after vsock_: it hands clients over to it
  std::optional<EventLoop::TimerId> timer_;
  // After loop_: the network's handlers live in it and go first.
  std::unique_ptr<GuestNetwork> network_;
  std::unique_ptr<PodNetwork> pod_network_;  // --network tap: instead of network_
  std::map<std::string, uint64_t> netCounters() const;
  // Before vmm_: the id stays taken until QEMU is gone.
  std::optional<VmmUser> vmm_user_;
  std::unique_ptr<Vmm> vmm_;
  std::optional<int> exit_code_;
  std::optional<int> vmm_status_;
  bool stop_requested_ = false;
  bool hard_stopped_ = false;
  // `suspend` (runner_requests.cc): the state is saved and the VM held
  // paused for the caller's commit; committed, QEMU was ended on purpose and
  // finish() records the VM as suspended.
  bool suspend_saved_ = false;
  bool suspended_ = false;
  // Started to resume a suspended VM: the state it had, written back if the
  // resume fails before the guest runs again, so the VM stays suspended.
  std::optional<VmState> suspended_state_;
  bool restored_ = false;
  int clock_answers_owed_ = 0;  // kClockProbes still to answer: one per refresh sent
  bool spec_sent_ = false;  // the guest has its spec (or a saved one): resizes go to it
  std::optional<agent::WindowSize> tty_size_;  // the last ResizeRequest's
  // Restored from a boot template: init waits for its spec.
  bool from_template_ = false;
  // A boot template this boot saves at the guest's hello (memory.bin,
  // memory.ram; `disk` is the mark that both are whole). Closed before the
  // guest gets its spec: nothing of the workload's time may write them.
  std::optional<SnapshotFiles> template_capture_;
  std::string failure_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace microvm
