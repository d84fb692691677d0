// Filesystem helpers with Result errors: atomic writes, whole-file reads,
// recursive removal. Every write that other processes may read is atomic:
// temp file in the same directory, fsync, rename.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "microvm/result.h"

namespace microvm {

Result<std::string> readFile(const std::filesystem::path& path);
// Reads a file that a less trusted process may have written (state.json,
// which the runner writes under its own uid): a symlink or anything but a
// regular file is refused, and so is a file longer than `max_bytes`.
Result<std::string> readUntrustedFile(const std::filesystem::path& path, size_t max_bytes);
// The last `lines` lines of a text file, without the final newline; "" if it
// cannot be read. For error messages that quote a log; only the file's last
// 64 KiB are read, however long it is (a guest writes the console log).
std::string tailLines(const std::filesystem::path& path, size_t lines);
std::string tailLines(int fd, size_t lines);

// Writes `contents` to `path` atomically with the given mode: a temp file in
// the same directory, fsync, rename, then an fsync of the directory so that
// the rename itself survives a crash.
Result<void> writeFileAtomic(const std::filesystem::path& path, std::string_view contents,
                             mode_t mode = 0600);

// fsync of a directory: makes the entries renamed or created in it durable.
Result<void> syncDirectory(const std::filesystem::path& dir);
// Tests only: called with each directory syncDirectory has synced.
void setDirectorySyncObserverForTesting(void (*observer)(const std::filesystem::path& dir));

// mkdir -p with the given mode for directories it creates.
Result<void> makeDirs(const std::filesystem::path& path, mode_t mode = 0700);

// rm -rf; a missing path is not an error.
Result<void> removeTree(const std::filesystem::path& path);

// Writes all of `data` to fd, retrying short writes and EINTR.
Result<void> writeAll(int fd, std::string_view data);

// Directory of the running executable (/proc/self/exe's parent).
// Calls `visit` with each 4 KiB block of the first `size` bytes of `fd` that
// is not all zero, in order, reading only the file's data (SEEK_DATA and
// SEEK_HOLE), so that it costs what the file holds, not its apparent size.
// Stops at the first error `visit` returns.
Result<void> forEachNonZeroBlock(int fd, uint64_t size,
                                 const std::function<Result<void>(uint64_t offset, std::string_view block)>& visit);

// Copies the first `size` bytes of `from` to the same offsets of `to`,
// reading only `from`'s data (SEEK_DATA/SEEK_HOLE) and writing only the 4 KiB
// blocks that are not all zero, so that `to` stays as sparse as it can; `to`
// ends `size` bytes long. For guest RAM: a memfd saved to a file and back.
// Returns the bytes written.
Result<uint64_t> copySparse(int from, int to, uint64_t size);

// Frees the 4 KiB blocks of the first `size` bytes of `fd` (a memfd, say)
// that are all zero, by punching holes there: they read back as zeros, and
// take no memory. Returns the bytes that hold data afterwards.
Result<uint64_t> releaseZeroBlocks(int fd, uint64_t size);

Result<std::filesystem::path> executableDir();

// Directory of the module (shared library or executable) holding `address`:
// where libmicrovm.so is, when the code runs from it.
Result<std::filesystem::path> moduleDir(const void* address);

// Finds `name` on $PATH (or returns it unchanged if it contains a '/').
Result<std::filesystem::path> findOnPath(const std::string& name);

}  // namespace microvm
