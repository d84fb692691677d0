// TempDir: a fresh directory under /tmp (or $TMPDIR) removed with everything
// in it when the owner goes away.
//
//   auto dir = TempDir::create("microvm-build");
//   if (!dir) return dir.error();
//   use(dir->path() / "file");
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>

#include "base/fs.h"
#include "microvm/result.h"

namespace microvm {

class TempDir {
 public:
  static Result<TempDir> create(const std::string& prefix) {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/" + prefix + ".XXXXXX";
    if (!::mkdtemp(pattern.data())) return Error::fromErrno("create temporary directory " + pattern);
    return TempDir(pattern);
  }
  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  TempDir& operator=(TempDir&& other) noexcept {
    std::swap(path_, other.path_);
    return *this;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    if (!path_.empty()) (void)removeTree(path_);
  }

  const std::filesystem::path& path() const { return path_; }

 private:
  explicit TempDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

}  // namespace microvm
