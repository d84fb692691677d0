// Small helpers shared by the guest's code (init and its agent): console
// diagnostics, errors from errno, whole-file reads, directories, copies
// between fds, text splitting and steady-clock deadlines.
//
//   auto passwd = readFileIfExists("/etc/passwd");   // "" if missing
//   if (!passwd.ok()) log(passwd.error().message());
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm::guest {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Devices (the control port, the root disk) can appear a little after PID 1
// starts; they are polled for at this interval, up to kDeviceTimeout.
inline constexpr milliseconds kPollInterval{5};
inline constexpr milliseconds kDeviceTimeout{10'000};

// strerror() in the lower case of microvm's messages.
std::string describeErrno(int error_number);

// "WHAT: <errno text>", for the errno of the call that just failed.
Error systemError(std::string_view what);

// SIGCHLD is blocked from before the first fork, so that no exit is missed,
// and read through the returned signalfd, so that an event loop needs no
// handler (init's and the agent's). Blocking also matters because PID 1
// discards unblocked default signals.
Result<UniqueFd> blockChildSignals();

// Writes all of `bytes`, giving up silently on an error: used where there is
// nowhere left to report one.
void writeFully(int fd, std::string_view bytes);

// A diagnostic line "microvm-init: MESSAGE" on `console_fd`, a copy of init's
// stderr (console.log on the host), which never carries the workload's output.
void logTo(int console_fd, std::string_view message);
// The same on stderr.
void log(std::string_view message);

void sleepFor(milliseconds duration);
// For poll(): 0 once passed, never negative.
int millisecondsUntil(Clock::time_point deadline);
long long millisecondsSince(Clock::time_point start);

// The whole file, or "" if it does not exist (a root without /etc/group).
Result<std::string> readFileIfExists(const std::string& path);

// mkdir, content with an existing path.
Result<void> makeDirectory(const std::string& path, mode_t mode);
// mkdir -p.
Result<void> makeDirectories(const std::string& path, mode_t mode);

enum class CopyResult { kDone, kReadFailed, kWriteFailed };
// Copies what `from` reads, to its end, into `to`; errno says why on failure.
CopyResult copyToEnd(int from, int to);

// Text.
std::string_view trim(std::string_view text);
// Every field, empty ones included: split("a::b", ':') is {"a", "", "b"}.
std::vector<std::string_view> split(std::string_view text, char separator);
std::string joined(const std::vector<std::string>& strings, std::string_view separator);
// A uid or gid as runc accepts it: decimal, 0 to 2^31-1.
std::optional<uint32_t> parseId(std::string_view text);

}  // namespace microvm::guest
