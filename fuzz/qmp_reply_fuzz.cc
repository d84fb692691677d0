// Fuzzes the QMP client with what QEMU (possibly compromised: it parses guest
// input) sends back: the input is the whole byte stream from QEMU's side of
// the socket (greeting, replies, events, errors, garbage), and the client
// runs the exchanges the runner has with it: negotiation, stop/cont, a
// snapshot's getfd + migrate + query-migrate, a restore's query-status.
// Every reply must end in a value or an Error, never a crash or an exception.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "base/unique_fd.h"
#include "hypervisor/qemu/qmp_client.h"

namespace {

using microvm::QmpClient;

// Never waited for in full: the input is all buffered before the client
// reads, and the end of the stream ends every wait.
constexpr std::chrono::seconds kWait{1};

void exercise(QmpClient& client) {
  (void)client.execute("stop", nullptr, kWait);
  (void)client.execute("cont", nullptr, kWait);
  for (int i = 0; i < 4; ++i) {
    auto migration = client.execute("query-migrate", nullptr, kWait);
    if (!migration) break;
    if (auto outcome = microvm::qmpMigrationOutcome(*migration); outcome) (void)outcome->ok();
  }
  for (int i = 0; i < 4; ++i) {
    auto status = client.execute("query-status", nullptr, kWait);
    if (!status) break;
    if (auto outcome = microvm::qmpRestoreOutcome(*status); outcome) (void)outcome->ok();
    (void)microvm::qmpString(*status, "status");
  }
}

}  // namespace

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // QEMU's end writes the input and shuts its side for writing: the client
  // reads it all, then end of stream (its own commands still go through).
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return 0;
  microvm::UniqueFd client_end(pair[0]);
  microvm::UniqueFd qemu_end(pair[1]);
  int buffer = 8 << 20;
  ::setsockopt(qemu_end.get(), SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  ::setsockopt(client_end.get(), SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  ::setsockopt(qemu_end.get(), SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  size_t written = 0;
  while (written < size) {
    ssize_t sent = ::send(qemu_end.get(), data + written, size - written, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent <= 0) break;  // more than the socket holds: the rest is dropped
    written += static_cast<size_t>(sent);
  }
  ::shutdown(qemu_end.get(), SHUT_WR);
  auto client = QmpClient::adopt(std::move(client_end), kWait);
  if (client) exercise(*client);
  return 0;
}
