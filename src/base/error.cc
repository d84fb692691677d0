#include <cctype>
#include <cstring>

#include "microvm/result.h"

namespace microvm {

Error Error::fromErrno(std::string what, int sys_errno) {
  ErrorCode code = ErrorCode::kIo;
  if (sys_errno == ENOENT) code = ErrorCode::kNotFound;
  if (sys_errno == EEXIST) code = ErrorCode::kAlreadyExists;
  if (sys_errno == EINVAL) code = ErrorCode::kInvalidArgument;
  std::string reason = std::strerror(sys_errno);
  // "No such file or directory" reads as "open x: no such file or directory".
  if (!reason.empty()) reason[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(reason[0])));
  return Error(code, std::move(what) + ": " + reason, sys_errno);
}

}  // namespace microvm
