#include "base/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <system_error>

#include "base/unique_fd.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

// Reads `fd` (opened on `path`, named in errors) to its end; more than
// `max_bytes` is an error.
Result<std::string> readToEnd(int fd, const fs::path& path, size_t max_bytes) {
  std::string contents;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::fromErrno("read " + path.string());
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
    if (contents.size() > max_bytes) {
      return Error(ErrorCode::kProtocol, path.string() + " is longer than " + std::to_string(max_bytes) + " bytes");
    }
  }
  return contents;
}

}  // namespace

Result<std::string> readFile(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::fromErrno("open " + path.string());
  return readToEnd(fd.get(), path, SIZE_MAX);
}

Result<std::string> readUntrustedFile(const fs::path& path, size_t max_bytes) {
  // O_NONBLOCK: a fifo put in the file's place must not hang the reader.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd.valid()) return Error::fromErrno("open " + path.string());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::fromErrno("stat " + path.string());
  if (!S_ISREG(st.st_mode)) return Error(ErrorCode::kProtocol, path.string() + " is not a regular file");
  return readToEnd(fd.get(), path, max_bytes);
}

namespace {
void (*directory_sync_observer)(const fs::path&) = nullptr;
}  // namespace

void setDirectorySyncObserverForTesting(void (*observer)(const fs::path& dir)) { directory_sync_observer = observer; }

Result<void> syncDirectory(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Error::fromErrno("open directory " + dir.string());
  if (::fsync(fd.get()) != 0) return Error::fromErrno("fsync directory " + dir.string());
  if (directory_sync_observer != nullptr) directory_sync_observer(dir);
  return success();
}

Result<void> writeAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::fromErrno("write");
    data.remove_prefix(static_cast<size_t>(n));
  }
  return success();
}

Result<void> writeFileAtomic(const fs::path& path, std::string_view contents, mode_t mode) {
  std::string temp = path.string() + ".tmp.XXXXXX";
  UniqueFd fd(::mkostemp(temp.data(), O_CLOEXEC));
  if (!fd.valid()) return Error::fromErrno("create " + temp);
  auto fail = [&](const std::string& what) {
    Error error = Error::fromErrno(what + " " + temp);
    ::unlink(temp.c_str());
    return error;
  };
  if (::fchmod(fd.get(), mode) != 0) return fail("chmod");
  if (auto written = writeAll(fd.get(), contents); !written) return fail("write");
  if (::fsync(fd.get()) != 0) return fail("fsync");
  if (::rename(temp.c_str(), path.c_str()) != 0) return fail("rename to " + path.string() + " from");
  // The new name is durable only once the directory is: without this a
  // crash may bring the old file back, or lose a new one.
  fs::path dir = path.parent_path();
  return syncDirectory(dir.empty() ? fs::path(".") : dir);
}

Result<void> makeDirs(const fs::path& path, mode_t mode) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return success();
  if (path.has_parent_path() && path.parent_path() != path) {
    MICROVM_TRY(makeDirs(path.parent_path(), mode));
  }
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return Error::fromErrno("mkdir " + path.string());
  }
  return success();
}

Result<void> removeTree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return Error(ErrorCode::kIo, "remove " + path.string() + ": " + ec.message(), ec.value());
  return success();
}

Result<fs::path> executableDir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return Error(ErrorCode::kIo, "read /proc/self/exe: " + ec.message(), ec.value());
  return exe.parent_path();
}

Result<fs::path> moduleDir(const void* address) {
  Dl_info info{};
  if (::dladdr(address, &info) != 0 && info.dli_fname != nullptr && info.dli_fname[0] != '\0') {
    // The main program may be named as it was started (maybe relatively):
    // only a shared library's name is used; the program is /proc/self/exe.
    std::error_code ec;
    fs::path module = fs::canonical(info.dli_fname, ec);
    fs::path exe = fs::canonical("/proc/self/exe", ec);
    if (!ec && !module.empty() && module != exe) return module.parent_path();
  }
  return executableDir();
}

Result<fs::path> findOnPath(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) == 0) return fs::path(name);
    return Error(ErrorCode::kNotFound, name + ": not an executable file");
  }
  const char* path_env = std::getenv("PATH");
  std::string_view dirs = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  while (!dirs.empty()) {
    size_t colon = dirs.find(':');
    std::string_view dir = dirs.substr(0, colon);
    fs::path candidate = fs::path(dir.empty() ? "." : std::string(dir)) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) break;
    dirs.remove_prefix(colon + 1);
  }
  return Error(ErrorCode::kNotFound, name + " not found on PATH");
}

std::string tailLines(const std::filesystem::path& path, size_t lines) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) return "";
  return tailLines(fd.get(), lines);
}

std::string tailLines(int fd, size_t lines) {
  constexpr off_t kTail = 65536;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return "";
  std::string text(static_cast<size_t>(std::min<off_t>(st.st_size, kTail)), '\0');
  off_t start_offset = st.st_size - static_cast<off_t>(text.size());
  size_t have = 0;
  while (have < text.size()) {
    ssize_t n = ::pread(fd, text.data() + have, text.size() - have, start_offset + static_cast<off_t>(have));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    have += static_cast<size_t>(n);
  }
  text.resize(have);
  std::string_view s = text;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  // `start` walks back from newline to newline, `lines` times at most.
  size_t start = s.size();
  for (size_t i = 0; i < lines; ++i) {
    size_t newline = start == 0 ? std::string_view::npos : s.rfind('\n', start - 1);
    if (newline == std::string_view::npos) {
      start = 0;
      break;
    }
    start = newline;
  }
  if (start < s.size() && s[start] == '\n') ++start;
  return std::string(s.substr(start));
}

Result<uint64_t> releaseZeroBlocks(int fd, uint64_t size) {
  uint64_t kept = 0;
  uint64_t zero_from = 0;  // the zeros since the last block with data
  auto punch = [fd](uint64_t from, uint64_t to) -> Result<void> {
    if (to <= from) return success();
    if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(from),
                    static_cast<off_t>(to - from)) != 0) {
      return Error::fromErrno("punch a hole");
    }
    return success();
  };
  auto scanned = forEachNonZeroBlock(fd, size, [&](uint64_t offset, std::string_view block) -> Result<void> {
    MICROVM_TRY(punch(zero_from, offset));
    zero_from = offset + block.size();
    kept += block.size();
    return success();
  });
  if (!scanned) return std::move(scanned).error();
  MICROVM_TRY(punch(zero_from, size));
  return kept;
}

}  // namespace microvm

namespace microvm {

Result<void> forEachNonZeroBlock(int fd, uint64_t size,
                                 const std::function<Result<void>(uint64_t offset, std::string_view block)>& visit) {
  constexpr size_t kBlock = 4096;
  constexpr size_t kChunk = size_t{1} << 20;
  static const char zeros[kBlock] = {};
  std::string buffer(kChunk, '\0');
  off_t offset = 0;
  while (static_cast<uint64_t>(offset) < size) {
    off_t data = ::lseek(fd, offset, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only a hole is left
    if (data < 0) return Error::fromErrno("seek to data");
    if (static_cast<uint64_t>(data) >= size) break;
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return Error::fromErrno("seek to a hole");
    uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size);
    for (uint64_t at = static_cast<uint64_t>(data); at < end;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, end - at));
      ssize_t got = ::pread(fd, buffer.data(), want, static_cast<off_t>(at));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return Error::fromErrno("read");
      if (got == 0) break;  // the file ends before `size`
      for (size_t block = 0; block < static_cast<size_t>(got); block += kBlock) {
        size_t length = std::min(kBlock, static_cast<size_t>(got) - block);
        if (std::memcmp(buffer.data() + block, zeros, length) == 0) continue;
        MICROVM_TRY(visit(at + block, std::string_view(buffer.data() + block, length)));
      }
      at += static_cast<uint64_t>(got);
    }
    offset = static_cast<off_t>(end);
  }
  return success();
}

Result<uint64_t> copySparse(int from, int to, uint64_t size) {
  uint64_t written = 0;
  MICROVM_TRY(forEachNonZeroBlock(from, size, [&](uint64_t offset, std::string_view block) -> Result<void> {
    for (size_t done = 0; done < block.size();) {
      ssize_t put = ::pwrite(to, block.data() + done, block.size() - done, static_cast<off_t>(offset + done));
      if (put < 0 && errno == EINTR) continue;
      if (put <= 0) return Error::fromErrno("write");
      done += static_cast<size_t>(put);
    }
    written += block.size();
    return success();
  }));
  struct stat st {};
  if (::fstat(to, &st) != 0) return Error::fromErrno("stat the copy");
  if (static_cast<uint64_t>(st.st_size) != size && ::ftruncate(to, static_cast<off_t>(size)) != 0) {
    return Error::fromErrno("size the copy");
  }
  return written;
}

}  // namespace microvm
