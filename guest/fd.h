// Small OS helpers shared by the guest's programs (init and its agent): an
// owning file descriptor, EINTR retries and a copy between fds. The guest links no host code, so
// these mirror src/base/unique_fd.h and src/base/eintr.h.
//
//   UniqueFd fd(retryOnEintr([&] { return ::open(path, O_RDONLY | O_CLOEXEC); }));
#pragma once

#include <unistd.h>

#include <cerrno>
#include <utility>

namespace microvm::guest {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  // close() is not retried: on Linux the fd is gone even when it fails.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Calls `call` until it does not fail with EINTR; returns its last result.
template <typename Call>
auto retryOnEintr(Call call) {
  decltype(call()) result;
  do {
    result = call();
  } while (result == -1 && errno == EINTR);
  return result;
}

enum class CopyResult { kDone, kReadFailed, kWriteFailed };

// Copies what `from` reads, to its end, into `to`; errno says why on failure.
inline CopyResult copyToEnd(int from, int to) {
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

}  // namespace microvm::guest
