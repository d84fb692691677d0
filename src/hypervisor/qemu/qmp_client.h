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

  UniqueFd fd_;
  MachineConfig::WaitService while_waiting_;
  std::string buffer_;
};

}  // namespace microvm
