// Result<T>: the one error type for recoverable failures in microvm.
//
// Anything the environment or the user can cause (a missing file, a bad image,
// a full disk, garbage from the guest) comes back as an Error, never as an
// exception or an assert. Messages say what failed, on what, and why:
//   open /var/lib/microvm/vms/ab12/state.json: permission denied
//
// Usage:
//   Result<std::string> readConfig(const std::filesystem::path& path);
//   auto config = readConfig(path);
//   if (!config) return config.error();     // propagate
//   use(*config);
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace microvm {

enum class ErrorCode {
  kInvalidArgument,  // the caller's input is wrong
  kNotFound,         // a named thing does not exist
  kAlreadyExists,
  kUnavailable,      // a host facility (QEMU, KVM, kernel) is missing
  kUnsupported,      // the operation is not offered by this backend/build
  kIo,               // a system call failed; errno says why
  kProtocol,         // the guest or a peer sent something malformed
  kTimeout,
  kInternal,
};

class [[nodiscard]] Error {
 public:
  Error(ErrorCode code, std::string message, int sys_errno = 0)
      : code_(code), message_(std::move(message)), errno_(sys_errno) {}

  // An Error for a failed system call: "<what>: <strerror(errno)>".
  static Error fromErrno(std::string what, int sys_errno = errno);

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  int sysErrno() const { return errno_; }

  // Prefixes the message with context: "build root disk: <message>".
  Error withContext(const std::string& context) const& {
    return Error(code_, context + ": " + message_, errno_);
  }

 private:
  ErrorCode code_;
  std::string message_;
  int errno_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Error error) : value_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(value_); }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<T>(value_); }
  const T& value() const& { return std::get<T>(value_); }
  T&& value() && { return std::get<T>(std::move(value_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<Error>(value_); }
  Error&& error() && { return std::get<Error>(std::move(value_)); }

 private:
  std::variant<T, Error> value_;
};

// Result<void>: success carries nothing.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const& { return error_; }
  Error&& error() && { return std::move(error_); }

 private:
  Error error_{ErrorCode::kInternal, ""};
  bool failed_ = false;
};

inline Result<void> success() { return {}; }

}  // namespace microvm

// Propagates the error of a Result expression; otherwise continues.
#define MICROVM_TRY(expr)                                  \
  do {                                                     \
    auto microvm_try_result_ = (expr);                     \
    if (!microvm_try_result_) return std::move(microvm_try_result_).error(); \
  } while (0)
