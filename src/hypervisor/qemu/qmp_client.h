// QmpClient: a minimal synchronous client for QEMU's machine protocol (QMP)
// on a unix socket: JSON objects, one per line; asynchronous events are
// skipped while a command waits for its return.
//
//   auto qmp = QmpClient::connect(runtime_dir / "qmp.sock", std::chrono::seconds(5));
//   MICROVM_TRY(qmp->execute("stop"));
#pragma once

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "base/unique_fd.h"
#include "hypervisor/backend.h"
#include "microvm/result.h"

namespace microvm {

class QmpClient {
 public:
  // Connects (waiting up to `timeout` for QEMU to create the socket), reads
  // the greeting and leaves negotiation mode.
  // While it waits it keeps serving `while_waiting` (see MachineConfig): QEMU
  // may be blocked on a vhost-user back-end that only we can answer.
  static Result<QmpClient> connect(const std::filesystem::path& socket, std::chrono::milliseconds timeout,
                                   MachineConfig::WaitService while_waiting = {});

  // A client on a socket that is already connected (tests, the fuzz target):
  // reads the greeting and leaves negotiation mode, as connect does.
  static Result<QmpClient> adopt(UniqueFd fd, std::chrono::milliseconds timeout);

  // Runs `command` and returns its "return" value, or the QMP error as an Error.
  Result<nlohmann::json> execute(const std::string& command, const nlohmann::json& arguments = nullptr,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Like execute, passing `fd` along with the command (SCM_RIGHTS), as
  // `getfd` needs.
  Result<nlohmann::json> executeWithFd(const std::string& command, const nlohmann::json& arguments, int fd);

 private:
  QmpClient(UniqueFd fd, MachineConfig::WaitService while_waiting)
      : fd_(std::move(fd)), while_waiting_(std::move(while_waiting)) {}
  Result<void> send(const nlohmann::json& message, int fd = -1);
  Result<nlohmann::json> receive(std::chrono::steady_clock::time_point deadline);
  Result<nlohmann::json> awaitReturn(const std::string& command, std::chrono::steady_clock::time_point deadline);
  Result<void> negotiate(std::chrono::steady_clock::time_point deadline);

  UniqueFd fd_;
  MachineConfig::WaitService while_waiting_;
  std::string buffer_;
};

// What QEMU answers is untrusted (QEMU parses guest input and may be
// compromised): these read a reply of any shape without throwing.

// The string member `key` of `reply`, or "" if reply is not an object or the
// member is missing or not a string.
std::string qmpString(const nlohmann::json& reply, const char* key);

// The verdict on a query-migrate reply while a snapshot is saved: success
// once "completed", an error once "failed" or "cancelled", nullopt (ask
// again) otherwise.
std::optional<Result<void>> qmpMigrationOutcome(const nlohmann::json& reply);

// The verdict on a query-status reply while a snapshot is restored: nullopt
// while "inmigrate" or "prelaunch", success once "paused" or "running", an
// error for anything else.
std::optional<Result<void>> qmpRestoreOutcome(const nlohmann::json& reply);

}  // namespace microvm
