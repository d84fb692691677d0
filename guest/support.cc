#include "guest/support.h"

#include <sys/signalfd.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>

#include "base/eintr.h"
#include "base/unique_fd.h"

namespace microvm::guest {

std::string describeErrno(int error_number) {
  std::string text = std::strerror(error_number);
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

Error systemError(std::string_view what) {
  int saved = errno;
  return Error::fromErrno(std::string(what), saved);
}

void writeFully(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t written = retryOnEintr([&] { return ::write(fd, bytes.data(), bytes.size()); });
    if (written <= 0) return;  // Nowhere left to report it.
    bytes.remove_prefix(static_cast<size_t>(written));
  }
}

void logTo(int console_fd, std::string_view message) {
  std::string line = "microvm-init: ";
  line += message;
  line += '\n';
  writeFully(console_fd, line);
}

void log(std::string_view message) {
  logTo(STDERR_FILENO, message);
}

void sleepFor(milliseconds duration) {
  timespec left{static_cast<time_t>(duration.count() / 1000), static_cast<long>(duration.count() % 1000) * 1'000'000};
  while (::nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
}

int millisecondsUntil(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1'000'000));
}

long long millisecondsSince(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
}

Result<std::string> readFileIfExists(const std::string& path) {
  UniqueFd fd(retryOnEintr([&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC); }));
  if (!fd.valid()) {
    if (errno == ENOENT) return std::string();
    return systemError("open " + path);
  }
  std::string content;
  char buffer[4096];
  for (;;) {
    ssize_t got = retryOnEintr([&] { return ::read(fd.get(), buffer, sizeof buffer); });
    if (got < 0) return systemError("read " + path);
    if (got == 0) return content;
    content.append(buffer, static_cast<size_t>(got));
  }
}

Result<void> makeDirectory(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) == 0 || errno == EEXIST) return {};
  return systemError("mkdir " + path);
}

Result<void> makeDirectories(const std::string& path, mode_t mode) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    if (auto made = makeDirectory(path.substr(0, slash), mode); !made.ok()) return made;
  }
  return makeDirectory(path, mode);
}

CopyResult copyToEnd(int from, int to) {
  char buffer[65536];
  for (;;) {
    ssize_t got = retryOnEintr([&] { return ::read(from, buffer, sizeof buffer); });
    if (got < 0) return CopyResult::kReadFailed;
    if (got == 0) return CopyResult::kDone;
    for (ssize_t done = 0; done < got;) {
      ssize_t wrote = retryOnEintr([&] { return ::write(to, buffer + done, static_cast<size_t>(got - done)); });
      if (wrote <= 0) {
        if (wrote == 0) errno = EIO;
        return CopyResult::kWriteFailed;
      }
      done += wrote;
    }
  }
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  for (;;) {
    size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

std::string joined(const std::vector<std::string>& strings, std::string_view separator) {
  std::string result;
  for (const std::string& string : strings) {
    if (!result.empty()) result += separator;
    result += string;
  }
  return result;
}

std::optional<uint32_t> parseId(std::string_view text) {
  uint32_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value > 0x7fffffffu) {
    return std::nullopt;
  }
  return value;
}

Result<UniqueFd> blockChildSignals() {
  sigset_t child;
  sigemptyset(&child);
  sigaddset(&child, SIGCHLD);
  if (::sigprocmask(SIG_BLOCK, &child, nullptr) != 0) return systemError("sigprocmask");
  UniqueFd fd(::signalfd(-1, &child, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd.valid()) return systemError("signalfd");
  return fd;
}

}  // namespace microvm::guest
