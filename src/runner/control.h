// The runner's control surface: the whole set of requests a running VM
// accepts from outside (the CLI, the library, later the daemon), as one
// variant handled in one place (Runner::handleRequest).
//
// Wire form, on the unix socket <runtime dir>/<short id>/runner.sock: one
// JSON object per connection, one line each way.
//   -> {"op":"stop","timeout":10}      <- {"ok":true}
//   -> {"op":"pause"}                  <- {"ok":false,"error":"..."}
//   -> {"op":"suspend"}  then  {"op":"suspend_commit"}
//   -> {"op":"port_add","mapping":"127.0.0.1:8080:80/tcp"}
//
//   MICROVM_TRY(sendRunnerRequest(socket, StopRequest{10}));
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <variant>

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm {

// Forward SIGTERM to the workload; stop the VM hard after `timeout_seconds`.
struct StopRequest {
  int timeout_seconds = 10;
};
// Deliver `signal` to the workload.
struct KillRequest {
  int signal = 9;
};
struct PauseRequest {};
struct ResumeRequest {};
// Save memory, device state and the disk overlay into `dir` (which exists
// and is empty); the VM then carries on in the state it was in.
struct SnapshotRequest {
  std::string dir;
};
// Suspending takes two steps, so that a VM is never marked suspended with a
// half saved state, nor lost when saving fails:
//   SuspendRequest: save memory and device state (not the disk, which stays
//     in place) into the VM directory's saving dir (base/paths.h VmPaths),
//     which the caller made empty; the VM is then held paused. On failure a
//     running VM carries on.
//   SuspendCommitRequest: the caller sealed the file and renamed the dir into
//     place; end QEMU and the runner, leaving the VM suspended.
// A held VM that is not committed carries on with ResumeRequest.
struct SuspendRequest {};
struct SuspendCommitRequest {};
// Keep the connection: after the reply it carries agent frames both ways.
// The runner sends kStdout/kStderr (output from now on) and finally kExit;
// the client may send kStdin/kStdinClose when `stdin` is set and the VM was
// created with an open stdin.
struct AttachRequest {
  bool stdin = false;
};

// Forward a host port to the guest from now on; `mapping` is a port mapping
// in its canonical form (net/network_config.h). Host port 0 picks a free one.
// The runner records the mappings in effect in state.json.
struct PortAddRequest {
  std::string mapping;
};
// Stop forwarding the host socket `mapping` names (its guest port is ignored).
struct PortRemoveRequest {
  std::string mapping;
};

// Resize the workload's tty (a VM made with RunOptions::tty); before the
// guest has its spec, the size it starts with.
struct ResizeRequest {
  uint16_t rows = 0;
  uint16_t cols = 0;
};

// Record a step's duration (`ready`, measured by the caller) in state.json,
// which only the runner writes while it runs.
struct TimingRequest {
  std::string name;  // [a-z_], at most 32 characters
  double ms = 0;
};

using RunnerRequest =
    std::variant<StopRequest, KillRequest, PauseRequest, ResumeRequest, SnapshotRequest, SuspendRequest,
                 SuspendCommitRequest, AttachRequest, PortAddRequest, PortRemoveRequest, TimingRequest,
                 ResizeRequest>;

std::string encodeRequest(const RunnerRequest& request);
// Bad JSON, an unknown op or out-of-range values are errors, never crashes.
Result<RunnerRequest> decodeRequest(std::string_view line);

std::string encodeReply(const Result<void>& outcome);
Result<void> decodeReply(std::string_view line);

// Connects to a runner, sends one request and returns its reply.
Result<void> sendRunnerRequest(const std::filesystem::path& socket, const RunnerRequest& request);
// As sendRunnerRequest, but returns the connection once the runner accepted
// (for AttachRequest); no byte after the reply line has been read from it.
Result<UniqueFd> openRunnerStream(const std::filesystem::path& socket, const RunnerRequest& request);

}  // namespace microvm
