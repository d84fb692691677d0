// Log files bounded as Docker's json-file driver bounds them (--log-opt
// max-size, max-file). PATH is written until the next write would take it
// past max_size bytes; then PATH.(N-2) becomes PATH.(N-1), ..., PATH becomes
// PATH.1 (the oldest file goes) and a fresh PATH starts. At most max_files
// files exist, so a log never takes more than max_files × max_size bytes
// (with write(), a single record larger than max_size gets a file of its
// own; writeStream() splits bytes at the limit).
//
//   auto log = RotatingFile::open(dir / "workload.log", {20 << 20, 5});
//   (void)log->write(record);            // a whole line, never split
//
// RotatedLogReader reads such a log in order, oldest file first, a chunk at a
// time (never a whole file in memory), and follows it across rotations:
//
//   RotatedLogReader reader(dir / "workload.log");
//   reader.seekToLastLines(10);
//   for (auto chunk = reader.read(); !chunk.empty(); chunk = reader.read()) emit(chunk);
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm {

struct RotationPolicy {
  uint64_t max_size = uint64_t{20} << 20;  // bytes per file
  int max_files = 5;                       // PATH and up to max_files-1 rotated files
};

class RotatingFile {
 public:
  // Appends to PATH (what it holds counts towards max_size); with
  // `truncate`, starts it empty and removes the rotated files.
  static Result<RotatingFile> open(std::filesystem::path path, RotationPolicy policy, bool truncate = false);

  // Writes `record` whole into one file, rotating first if it would not fit.
  Result<void> write(std::string_view record);
  // Writes a byte stream, rotating wherever a file reaches max_size.
  Result<void> writeStream(std::string_view bytes);

  const std::filesystem::path& path() const { return path_; }
  // The name to rotate under from now on, for the same file: e.g. a
  // relative one once the writer works from inside its directory and may
  // no longer reach it by the absolute path.
  void renamePath(std::filesystem::path path) { path_ = std::move(path); }

 private:
  RotatingFile(std::filesystem::path path, RotationPolicy policy) : path_(std::move(path)), policy_(policy) {}
  Result<void> openCurrent(bool truncate);
  Result<void> rotate();
  Result<void> append(std::string_view bytes);

  std::filesystem::path path_;
  RotationPolicy policy_;
  UniqueFd fd_;
  uint64_t size_ = 0;
};

// PATH.N for N >= 1; PATH itself for 0.
std::filesystem::path rotatedPath(const std::filesystem::path& path, int index);

// The files of a rotated log that exist, oldest first (PATH.K, ..., PATH.1,
// PATH), looking no further than PATH.1000.
std::vector<std::filesystem::path> rotatedLogFiles(const std::filesystem::path& path);

class RotatedLogReader {
 public:
  explicit RotatedLogReader(std::filesystem::path path) : path_(std::move(path)) {}

  // Positions the reader at the first byte of the log.
  void seekToStart();
  // Positions it at the start of the last `lines` complete lines (a final
  // line without its newline is read after them); negative: the first byte.
  // Reads backwards from the end, a block at a time.
  void seekToLastLines(long lines);

  // Up to `max` bytes from where the reader is; empty when it is at the end
  // of the newest file. Once there, a rotation of that file is noticed and
  // reading goes on in the files that came after it.
  std::string read(size_t max = 65536);

 private:
  struct OpenFile {
    UniqueFd fd;
    dev_t dev = 0;
    ino_t ino = 0;
  };
  // The log's files, oldest first, opened (and so pinned) at one moment.
  std::vector<OpenFile> openAll();
  // Forgets the current position and files; the files as they are now.
  std::vector<OpenFile> reposition();
  // After the current file: whatever came after it, once it was rotated.
  bool advance();

  std::filesystem::path path_;
  bool positioned_ = false;
  bool rotated_ = false;  // current_ was seen rotated; it is read to its end once more
  OpenFile current_;
  std::deque<OpenFile> next_;  // opened files that follow current_, in order
};

}  // namespace microvm
