#include "image/root_disk.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "base/fs.h"
#include "base/paths.h"
#include "base/hash.h"
#include "base/process.h"
#include "base/scope_guard.h"
#include "base/unique_fd.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

// Free space the workload gets on top of the image's own content. The base
// file is sparse, so unused space costs nothing on the host.
constexpr unsigned long long kHeadroomBytes = 1ull << 30;

Result<void> hashFile(Sha256& hasher, const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return Error::fromErrno("open " + path.string());
  std::vector<char> buffer(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::fromErrno("read " + path.string());
    if (n == 0) return success();
    hasher.update({buffer.data(), static_cast<size_t>(n)});
  }
}

// Walks one directory; with no hasher it only counts.
Result<void> digestDirectory(const fs::path& root, const fs::path& relative, Sha256* hasher, TreeDigest& digest) {
  fs::path dir = root / relative;
  std::error_code ec;
  std::vector<fs::path> names;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    names.push_back(it->path().filename());
  }
  if (ec) return Error(ErrorCode::kIo, "read directory " + dir.string() + ": " + ec.message(), ec.value());
  std::sort(names.begin(), names.end());

  for (const auto& name : names) {
    fs::path rel = relative / name;
    fs::path full = root / rel;
    struct stat st {};
    if (::lstat(full.c_str(), &st) != 0) return Error::fromErrno("stat " + full.string());
    ++digest.entries;
    // A record per entry; NUL separators keep "a/b" + "c" distinct from "a" + "b/c".
    if (S_ISREG(st.st_mode)) digest.bytes += static_cast<unsigned long long>(st.st_size);
    if (hasher) {
      std::string record = rel.string() + '\0' + std::to_string(st.st_mode) + ':' + std::to_string(st.st_uid) +
                           ':' + std::to_string(st.st_gid) + ':' + std::to_string(st.st_rdev) + '\0';
      hasher->update(record);
      if (S_ISREG(st.st_mode)) {
        hasher->update(std::to_string(st.st_size) + '\0');
        MICROVM_TRY(hashFile(*hasher, full));
      } else if (S_ISLNK(st.st_mode)) {
        hasher->update(fs::read_symlink(full, ec).string() + '\0');
      }
    }
    if (S_ISDIR(st.st_mode)) {
      MICROVM_TRY(digestDirectory(root, rel, hasher, digest));
    }
  }
  return success();
}

}  // namespace

Result<TreeDigest> digestTree(const fs::path& root) {
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0) return Error::fromErrno("rootfs " + root.string());
  if (!S_ISDIR(st.st_mode)) return Error(ErrorCode::kInvalidArgument, "rootfs " + root.string() + ": not a directory");
  Sha256 hasher;
  TreeDigest digest;
  hasher.update("microvm-tree-v1\0" + std::to_string(st.st_mode) + ':' + std::to_string(st.st_uid) + ':' +
                std::to_string(st.st_gid) + '\0');
  MICROVM_TRY(digestDirectory(root, "", &hasher, digest));
  digest.hex = hasher.finishHex();
  return digest;
}

Result<TreeDigest> measureTree(const fs::path& root) {
  TreeDigest digest;
  MICROVM_TRY(digestDirectory(root, "", nullptr, digest));
  return digest;
}

Result<fs::path> ensureBaseDisk(const fs::path& cache_dir, const fs::path& rootfs) {
  auto digest = digestTree(rootfs);
  if (!digest) return std::move(digest).error();
  fs::path entry = cache_dir / ("dir-" + digest->hex.substr(0, 32));
  fs::path base = ImagePaths::baseDisk(entry);
  if (fs::exists(base)) return base;

  MICROVM_TRY(makeDirs(entry));
  UniqueFd lock(::open((entry / "build.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock.valid()) return Error::fromErrno("open " + (entry / "build.lock").string());
  while (::flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return Error::fromErrno("lock " + entry.string());
  }
  if (fs::exists(base)) return base;  // another process built it while we waited

  MICROVM_TRY(buildExt4Image(rootfs, *digest, base));
  return base;
}

Result<void> buildExt4Image(const fs::path& tree, const TreeDigest& digest, const fs::path& destination) {
  // ext4 needs room for metadata beyond the file bytes; small files round up
  // to 4 KiB blocks, hence the per-entry term.
  unsigned long long needed = digest.bytes + digest.entries * 4096 + kHeadroomBytes;
  unsigned long long size_mib = needed / (1 << 20) + 64;
  fs::path temp = destination.string() + ".tmp." + std::to_string(::getpid());
  // Inode tables and journal are zeroed here, once per base: left lazy, every
  // VM's kernel would zero them again in the background on each boot.
  ScopeGuard remove_temp([&] { ::unlink(temp.c_str()); });
  MICROVM_TRY(runCommand({"mkfs.ext4", "-q", "-F", "-t", "ext4", "-L", "microvm-root", "-E",
                          "lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0", "-d", tree.string(),
                          temp.string(), std::to_string(size_mib) + "M"}));
  if (::chmod(temp.c_str(), 0444) != 0) return Error::fromErrno("chmod " + temp.string());
  if (::rename(temp.c_str(), destination.c_str()) != 0) return Error::fromErrno("rename " + temp.string());
  remove_temp.dismiss();
  return success();
}

Result<void> createOverlay(const fs::path& base, const fs::path& overlay) {
  auto created = runCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base.string(),
                             overlay.string()});
  if (!created) return std::move(created).error().withContext("create disk overlay");
  return success();
}

}  // namespace microvm
