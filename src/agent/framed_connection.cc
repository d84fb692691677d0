#include "agent/framed_connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "base/eintr.h"

namespace microvm::agent {
namespace {

// One read's buffer, and the consumed prefix of the backlog that is worth
// erasing.
constexpr size_t kChunk = size_t{64} * 1024;

bool wouldBlock(int error_number) {
  return error_number == EAGAIN || error_number == EWOULDBLOCK;
}

int millisecondsUntil(std::chrono::steady_clock::time_point deadline) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1'000'000));
}

}  // namespace

FramedConnection::FramedConnection(UniqueFd fd) : FramedConnection(std::move(fd), Options{}) {}

FramedConnection::FramedConnection(UniqueFd fd, Options options) : fd_(std::move(fd)), options_(options) {
  struct stat info {};
  socket_ = ::fstat(fd_.get(), &info) == 0 && S_ISSOCK(info.st_mode);
}

ssize_t FramedConnection::writeOnce(const char* data, size_t size) {
  return retryOnEintr([&] {
    return socket_ ? ::send(fd_.get(), data, size, MSG_NOSIGNAL | MSG_DONTWAIT) : ::write(fd_.get(), data, size);
  });
}

ssize_t FramedConnection::readOnce(char* buffer, size_t size) {
  return retryOnEintr(
      [&] { return socket_ ? ::recv(fd_.get(), buffer, size, MSG_DONTWAIT) : ::read(fd_.get(), buffer, size); });
}

void FramedConnection::breakWith(int error_number) {
  broken_ = true;
  broken_errno_ = error_number;
  out_.clear();  // nobody will take it now
  out_offset_ = 0;
  // Restore errno for callers that report the failed call.
  errno = error_number;
}

bool FramedConnection::writeSome() {
  while (pending() > 0 && !broken_) {
    ssize_t sent = writeOnce(out_.data() + out_offset_, pending());
    if (sent > 0) {
      out_offset_ += static_cast<size_t>(sent);
    } else if (sent < 0 && wouldBlock(errno)) {
      break;
    } else {
      breakWith(sent < 0 ? errno : 0);
    }
  }
  if (out_offset_ == out_.size()) {
    out_.clear();
    out_offset_ = 0;
  } else if (out_offset_ > kChunk) {
    out_.erase(0, out_offset_);
    out_offset_ = 0;
  }
  return !broken_;
}

bool FramedConnection::flush() {
  while (pending() > 0 && !broken_) {
    if (!writeSome()) return false;
    if (pending() == 0) break;
    pollfd watch{fd_.get(), POLLOUT, 0};
    int timeout = static_cast<int>(options_.write_idle_timeout.count());
    int ready = retryOnEintr([&] { return ::poll(&watch, 1, timeout); });
    if (ready < 0) {
      breakWith(errno);
    } else if (ready == 0 || (watch.revents & POLLOUT) == 0) {
      breakWith(ready == 0 ? ETIMEDOUT : EPIPE);
    }
  }
  return !broken_;
}

bool FramedConnection::readSome() {
  char buffer[kChunk];
  for (size_t total = 0; total < options_.max_read_round && !broken_;) {
    ssize_t got = readOnce(buffer, sizeof buffer);
    if (got > 0) {
      reader_.feed(std::string_view(buffer, static_cast<size_t>(got)));
      // A short read took all there was.
      if (static_cast<size_t>(got) < sizeof buffer) return true;
      total += static_cast<size_t>(got);
      continue;
    }
    if (got < 0 && wouldBlock(errno)) return true;
    breakWith(got < 0 ? errno : 0);
  }
  return !broken_;
}

std::optional<Frame> FramedConnection::receive(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto frame = reader_.next()) return frame;
    if (reader_.failed() || broken_) return std::nullopt;
    pollfd watch{fd_.get(), POLLIN, 0};
    int ready = retryOnEintr([&] { return ::poll(&watch, 1, millisecondsUntil(deadline)); });
    if (ready <= 0) return std::nullopt;
    // On EOF the frames that came before it are still delivered above.
    readSome();
  }
}

}  // namespace microvm::agent
