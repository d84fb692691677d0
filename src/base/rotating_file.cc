#include "base/rotating_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "base/fs.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

// A rotation renames one file at a time, newest last; a reader listing the
// files meanwhile may find one index missing, never two.
constexpr int kMaxRotatedIndex = 1000;

struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const FileId&) const = default;
};

}  // namespace

fs::path rotatedPath(const fs::path& path, int index) {
  if (index == 0) return path;
  fs::path rotated = path;
  rotated += "." + std::to_string(index);
  return rotated;
}

std::vector<fs::path> rotatedLogFiles(const fs::path& path) {
  int last = 0;
  for (int i = 1; i <= kMaxRotatedIndex && i <= last + 2; ++i) {
    if (::access(rotatedPath(path, i).c_str(), F_OK) == 0) last = i;
  }
  std::vector<fs::path> files;
  for (int i = last; i >= 1; --i) {
    if (::access(rotatedPath(path, i).c_str(), F_OK) == 0) files.push_back(rotatedPath(path, i));
  }
  if (::access(path.c_str(), F_OK) == 0) files.push_back(path);
  return files;
}

Result<RotatingFile> RotatingFile::open(fs::path path, RotationPolicy policy, bool truncate) {
  if (policy.max_size == 0 || policy.max_files < 1) {
    return Error(ErrorCode::kInvalidArgument, "log " + path.string() + ": max size and max files must be positive");
  }
  RotatingFile file(std::move(path), policy);
  if (truncate) {
    for (const auto& old : rotatedLogFiles(file.path_)) {
      if (old != file.path_ && ::unlink(old.c_str()) != 0 && errno != ENOENT) {
        return Error::fromErrno("remove " + old.string());
      }
    }
  }
  MICROVM_TRY(file.openCurrent(truncate));
  return file;
}

Result<void> RotatingFile::openCurrent(bool truncate) {
  fd_.reset(::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | (truncate ? O_TRUNC : 0), 0600));
  if (!fd_.valid()) return Error::fromErrno("open " + path_.string());
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return Error::fromErrno("stat " + path_.string());
  size_ = static_cast<uint64_t>(st.st_size);
  return success();
}

Result<void> RotatingFile::rotate() {
  fd_.reset();
  if (policy_.max_files == 1) {
    // A new file rather than a truncated one: a reader holding the old one
    // sees the name move on, as with any rotation.
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT) return Error::fromErrno("remove " + path_.string());
  } else {
    // Oldest first: PATH.(N-2) replaces PATH.(N-1), ..., PATH becomes PATH.1.
    for (int i = policy_.max_files - 1; i >= 1; --i) {
      fs::path from = rotatedPath(path_, i - 1);
      fs::path to = rotatedPath(path_, i);
      if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
        return Error::fromErrno("rotate " + from.string() + " to " + to.string());
      }
    }
  }
  return openCurrent(/*truncate=*/true);
}

Result<void> RotatingFile::append(std::string_view bytes) {
  if (!fd_.valid()) MICROVM_TRY(openCurrent(/*truncate=*/false));  // a failed rotation left none open
  auto written = writeAll(fd_.get(), bytes);
  if (!written) {
    // What part went is unknown: the file says.
    struct stat st {};
    if (::fstat(fd_.get(), &st) == 0) size_ = static_cast<uint64_t>(st.st_size);
    return std::move(written).error().withContext("write " + path_.string());
  }
  size_ += bytes.size();
  return success();
}

Result<void> RotatingFile::write(std::string_view record) {
  if (size_ > 0 && size_ + record.size() > policy_.max_size) MICROVM_TRY(rotate());
  return append(record);
}

Result<void> RotatingFile::writeStream(std::string_view bytes) {
  while (!bytes.empty()) {
    if (size_ >= policy_.max_size) MICROVM_TRY(rotate());
    size_t room = static_cast<size_t>(std::min<uint64_t>(policy_.max_size - size_, bytes.size()));
    MICROVM_TRY(append(bytes.substr(0, room)));
    bytes.remove_prefix(room);
  }
  return success();
}

std::vector<RotatedLogReader::OpenFile> RotatedLogReader::openAll() {
  auto identify = [](int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return FileId{};
    return FileId{st.st_dev, st.st_ino};
  };
  std::vector<OpenFile> files;
  // A rotation while the names are listed could give a wrong order or a
  // gap: the listing counts once the names show the files just opened.
  for (int attempt = 0; attempt < 5; ++attempt) {
    files.clear();
    std::vector<FileId> opened;
    for (const auto& path : rotatedLogFiles(path_)) {
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
      if (!fd.valid()) continue;
      FileId id = identify(fd.get());
      opened.push_back(id);
      files.push_back({std::move(fd), id.dev, id.ino});
    }
    std::vector<FileId> listed;
    for (const auto& path : rotatedLogFiles(path_)) {
      struct stat st {};
      if (::stat(path.c_str(), &st) == 0) listed.push_back({st.st_dev, st.st_ino});
    }
    if (listed == opened) break;
  }
  return files;
}

std::vector<RotatedLogReader::OpenFile> RotatedLogReader::reposition() {
  positioned_ = true;
  rotated_ = false;
  next_.clear();
  current_ = {};
  return openAll();
}

void RotatedLogReader::seekToStart() {
  auto files = reposition();
  if (files.empty()) return;
  current_ = std::move(files.front());
  for (size_t i = 1; i < files.size(); ++i) next_.push_back(std::move(files[i]));
}

void RotatedLogReader::seekToLastLines(long lines) {
  if (lines < 0) return seekToStart();
  auto files = reposition();
  if (files.empty()) return;
  // The start of the last `lines` complete lines is just after the
  // (lines+1)-th newline from the end (a final partial line has none).
  size_t start_file = 0;
  off_t start_offset = 0;
  long newlines = 0;
  bool found = false;
  char buffer[65536];
  for (size_t f = files.size(); f-- > 0 && !found;) {
    struct stat st {};
    if (::fstat(files[f].fd.get(), &st) != 0) continue;
    for (off_t pos = st.st_size; pos > 0 && !found;) {
      auto want = static_cast<size_t>(std::min<off_t>(pos, static_cast<off_t>(sizeof buffer)));
      pos -= static_cast<off_t>(want);
      ssize_t got = 0;
      do {
        got = ::pread(files[f].fd.get(), buffer, want, pos);
      } while (got < 0 && errno == EINTR);
      if (got <= 0) break;  // shrunk under us: treat what is left as read
      for (size_t i = static_cast<size_t>(got); i-- > 0;) {
        if (buffer[i] == '\n' && ++newlines == lines + 1) {
          found = true;
          start_file = f;
          start_offset = pos + static_cast<off_t>(i) + 1;
          break;
        }
      }
    }
  }
  if (::lseek(files[start_file].fd.get(), start_offset, SEEK_SET) < 0) start_offset = 0;
  current_ = std::move(files[start_file]);
  for (size_t i = start_file + 1; i < files.size(); ++i) next_.push_back(std::move(files[i]));
}

std::string RotatedLogReader::read(size_t max) {
  if (!positioned_) seekToStart();
  std::string data(std::max<size_t>(max, 1), '\0');
  // Each turn either returns or moves to a later file; the bound only
  // guards against a log rotating faster than it can be read.
  for (int turn = 0; turn < 2 * kMaxRotatedIndex; ++turn) {
    if (current_.fd.valid()) {
      ssize_t got = 0;
      do {
        got = ::read(current_.fd.get(), data.data(), data.size());
      } while (got < 0 && errno == EINTR);
      if (got > 0) {
        data.resize(static_cast<size_t>(got));
        return data;
      }
    }
    if (!advance()) return {};
  }
  return {};
}

bool RotatedLogReader::advance() {
  if (!next_.empty()) {
    current_ = std::move(next_.front());
    next_.pop_front();
    return true;
  }
  if (!rotated_) {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) return false;  // no log (yet)
    if (current_.fd.valid() && st.st_dev == current_.dev && st.st_ino == current_.ino) return false;
    rotated_ = true;
    // What was written to our file before it was rotated is read first.
    if (current_.fd.valid()) return true;
  }
  rotated_ = false;
  auto files = openAll();
  size_t from = 0;  // our file gone (or none yet): everything there is follows it
  for (size_t i = 0; i < files.size(); ++i) {
    if (current_.fd.valid() && files[i].dev == current_.dev && files[i].ino == current_.ino) from = i + 1;
  }
  if (from >= files.size()) return false;
  current_ = std::move(files[from]);
  for (size_t i = from + 1; i < files.size(); ++i) next_.push_back(std::move(files[i]));
  return true;
}

}  // namespace microvm
