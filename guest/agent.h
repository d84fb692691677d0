// The guest agent: serves the agent protocol (src/agent/protocol.h) on vsock
// port kAgentPort, so that the host can run commands in a running VM (exec,
// with or without a TTY), move files in and out, probe the workload's ports
// and wait for its exit code.
//
// Init forks it once the root disk, the runtime mounts, the volumes and the
// sysctls are in place, before the workload starts:
//   WorkloadExitChannel channel = *WorkloadExitChannel::create();
//   AgentOptions options{spec, /*confine=*/true, &channel};
//   pid_t pid = fork();
//   if (pid == 0) runAgentProcess(options);      // never returns
//   ...
//   channel.publish(workload_exit_code);           // kWait answers now
//
// Process model: one listening process; every connection is served by a
// forked process of its own (an exec session needs a process to wait in
// anyway), so a slow or hostile connection holds only itself. Commands run
// with the workload's confinement (capability bounding set, no_new_privs,
// seccomp, user resolution: guest/confinement.h and guest/spawn.h, which
// init uses for the workload too), in their own session. They are not the workload: init tells the workload apart by
// pid alone, and ends every process when the workload exits.
//
// The operations themselves are in guest/agent_exec.cc, guest/agent_files.cc
// and guest/agent_probes.cc (guest/agent_operations.h); this file's half is
// the server, the dispatch and the workload's exit code.
//
// The server loop runs on the host too, over a unix listening socket, so that
// the unit tests (guest/agent_test.cc) exercise the same code without a VM:
//   serveAgent(listen_fd, options);
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "agent/protocol.h"
#include "base/unique_fd.h"
#include "guest/confinement.h"
#include "microvm/result.h"

namespace microvm::guest {

// How init tells the agent the workload's exit code: a shared anonymous
// mapping holds the code, and a pipe whose write end init alone keeps reaches
// EOF in every agent process at once when init publishes it.
class WorkloadExitChannel {
 public:
  static Result<WorkloadExitChannel> create();
  WorkloadExitChannel(WorkloadExitChannel&& other) noexcept;
  WorkloadExitChannel& operator=(WorkloadExitChannel&&) = delete;
  WorkloadExitChannel(const WorkloadExitChannel&) = delete;
  WorkloadExitChannel& operator=(const WorkloadExitChannel&) = delete;
  ~WorkloadExitChannel();

  // Init: records the code and wakes every waiter.
  void publish(int exit_code);
  // Agent processes: drop the write end inherited through fork, so that only
  // init's copy keeps the pipe open.
  void closeWriteEnd() { write_end_.reset(); }

  // Readable (EOF) once published.
  int readFd() const { return read_end_.get(); }
  std::optional<int> exitCode() const;
  // kWait connections currently blocked on the code; init gives them a moment
  // to answer before it ends every process.
  int waiters() const;
  void addWaiter(int delta);

 private:
  struct Shared {
    std::atomic<int32_t> exit_code{-1};
    std::atomic<int32_t> waiters{0};
  };
  static_assert(std::atomic<int32_t>::is_always_lock_free, "shared between processes");

  WorkloadExitChannel(Shared* shared, UniqueFd read_end, UniqueFd write_end)
      : shared_(shared), read_end_(std::move(read_end)), write_end_(std::move(write_end)) {}

  Shared* shared_ = nullptr;
  UniqueFd read_end_;
  UniqueFd write_end_;
};

// What kRefresh (after a restore or resume) does to the guest: set its wall
// clock, and mix host entropy into its RNG and reseed it. A seam, so that the
// agent's unit tests, which serve on the host, never set the host's clock.
struct RefreshEffects {
  std::function<Result<void>(int64_t realtime_ns)> set_clock;
  std::function<Result<void>(std::string_view entropy)> add_entropy;
};
// The real ones: clock_settime(CLOCK_REALTIME), and on /dev/urandom the
// ioctls RNDADDENTROPY (credited) then RNDRESEEDCRNG, so that every later
// read of /dev/urandom or getrandom() comes from the new seed.
RefreshEffects systemRefreshEffects();
// A kRefresh control frame (agent::decodeRefresh) from a runner that
// restored saved state, applied with systemRefreshEffects() at once, before
// the workload or any exec reads the time. A malformed one is logged.
void applyControlRefresh(std::string_view payload);
// Sets the wall clock to `realtime_ns` (agent::clockFromAnswer's), logging
// a failure.
void setClockFromHost(int64_t realtime_ns);

struct AgentOptions {
  // The workload's spec: exec's defaults (env, working directory, user,
  // hostname) and its confinement.
  agent::WorkloadSpec workload;
  // Apply the confinement to exec'd commands. Only the host unit tests, which
  // are not root in a VM, turn it off.
  bool confine = true;
  // The workload's confinement, prepared once by init (else by
  // runAgentProcess); without it each exec'd command prepares its own.
  std::shared_ptr<const PreparedConfinement> confinement;
  // Where kWait learns the exit code; nullptr: kWait answers kUnsupported.
  WorkloadExitChannel* exit_channel = nullptr;
  // kRefresh's effects; unset: kRefresh answers kUnsupported.
  // runAgentProcess (in the guest) uses systemRefreshEffects().
  RefreshEffects refresh;
};

// Serves connections accepted on `listen_fd` (a listening stream socket)
// until accept fails for good; each in a forked process, reaped here.
// Returns the error that stopped it.
Error serveAgent(int listen_fd, const AgentOptions& options);

// Whether the agent serves a peer (getpeername of an accepted connection).
// Over vsock only the host, CID 2, is served: a process in the guest that
// reached the agent (through vsock loopback, CID 1, or the VM's own CID)
// would get exec and file writes as root, whatever its own user,
// capabilities and seccomp filter. A unix peer is the host unit tests'; in
// the guest the agent listens on vsock alone. Anything else is refused.
bool agentPeerAllowed(const sockaddr* peer, socklen_t length);

// Serves one accepted connection in the calling process (the agent's
// per-connection child); returns when the operation is done.
void serveAgentConnection(UniqueFd connection, const AgentOptions& options);

// Serves the streams the host opens over the microvm.agent virtio-serial
// port `port_fd` (agent/stream_mux.h, guest/agent_mux.cc), each in a forked
// process, until the port fails; returns why it stopped.
Error serveAgentOverMux(int port_fd, const AgentOptions& options);

// The agent's process in the guest: serves over the microvm.agent port, or
// on vsock port kAgentPort where the host offers no such port. Exits 0 if
// the VM has neither (nothing to serve), 1 if the server stops on an error;
// init restarts it only after a crash.
[[noreturn]] void runAgentProcess(const AgentOptions& options);

// Exit code of runAgentProcess when vsock is not available.
inline constexpr int kAgentNoTransport = 0;

}  // namespace microvm::guest
