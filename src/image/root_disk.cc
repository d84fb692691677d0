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

// Hashes the file's bytes, read through `buffer` (one for the whole tree: a
// buffer per file cost a mapping and its page faults per file). 64 KiB: a
// 1 MiB one cost its zeroing and 256 page faults on every run, about 4.5 ms
// of the busybox rootfs's 11.6, and read no faster.
Result<void> hashFile(Sha256& hasher, const fs::path& path, std::vector<char>& buffer) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return Error::fromErrno("open " + path.string());
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::fromErrno("read " + path.string());
    if (n == 0) return success();
    hasher.update({buffer.data(), static_cast<size_t>(n)});
  }
}

// Walks one directory; with no hasher it only counts.
Result<void> digestDirectory(const fs::path& root, const fs::path& relative, Sha256* hasher, TreeDigest& digest,
                             std::vector<char>& buffer) {
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
        MICROVM_TRY(hashFile(*hasher, full, buffer));
      } else if (S_ISLNK(st.st_mode)) {
        hasher->update(fs::read_symlink(full, ec).string() + '\0');
      }
    }
    if (S_ISDIR(st.st_mode)) {
      MICROVM_TRY(digestDirectory(root, rel, hasher, digest, buffer));
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
  std::vector<char> buffer(64 << 10);
  MICROVM_TRY(digestDirectory(root, "", &hasher, digest, buffer));
  digest.hex = hasher.finishHex();
  return digest;
}

Result<TreeDigest> measureTree(const fs::path& root) {
  TreeDigest digest;
  std::vector<char> no_buffer;
  MICROVM_TRY(digestDirectory(root, "", nullptr, digest, no_buffer));
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

// What `qemu-img create -f qcow2 -F raw -b BASE OVERLAY` writes, without
// spawning it (a process start per VM): a qcow2 v3 image the size of BASE
// with no cluster of its own yet. 64 KiB clusters, laid out as qemu-img does:
// the header, its extensions and the backing file's name in cluster 0, the
// refcount table in cluster 1, its one refcount block (16-bit counts, the
// four metadata clusters at 1) in cluster 2, and the L1 table (all entries
// empty) in cluster 3.
std::string qcow2OverlayHeader(const std::string& base, uint64_t size) {
  constexpr uint64_t kClusterBits = 16;
  constexpr uint64_t kCluster = uint64_t{1} << kClusterBits;
  constexpr uint64_t kL2Entries = kCluster / 8;
  uint64_t l1_size = (size + kCluster * kL2Entries - 1) / (kCluster * kL2Entries);
  std::string out;
  auto be = [&out](uint64_t value, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) out += static_cast<char>((value >> (8 * i)) & 0xff);
  };
  constexpr uint64_t kHeaderLength = 104;
  constexpr uint64_t kExtensions = 8 + 8 + 8;  // the backing format ("raw", padded to 8), then the end
  be(0x514649fb, 4);                            // "QFI\xfb"
  be(3, 4);                                     // version
  be(kHeaderLength + kExtensions, 8);           // backing file name offset
  be(base.size(), 4);                           // and length
  be(kClusterBits, 4);
  be(size, 8);                                  // virtual size
  be(0, 4);                                     // no encryption
  be(l1_size, 4);
  be(3 * kCluster, 8);                          // L1 table
  be(1 * kCluster, 8);                          // refcount table
  be(1, 4);                                     // of one cluster
  be(0, 4);                                     // no snapshots
  be(0, 8);
  be(0, 8);                                     // incompatible features
  be(0, 8);                                     // compatible features
  be(0, 8);                                     // autoclear features
  be(4, 4);                                     // refcount order: 16-bit
  be(kHeaderLength, 4);
  be(0xe2792aca, 4);                            // backing file format
  be(3, 4);
  out += std::string("raw\0\0\0\0\0", 8);
  be(0, 8);                                     // end of extensions
  out += base;
  out.resize(kCluster, '\0');
  be(2 * kCluster, 8);                          // refcount table: its block
  out.resize(2 * kCluster, '\0');
  for (int cluster = 0; cluster < 4; ++cluster) be(1, 2);
  out.resize(3 * kCluster, '\0');
  out.resize(3 * kCluster + l1_size * 8, '\0');
  return out;
}

Result<void> createOverlay(const fs::path& base, const fs::path& overlay) {
  std::error_code ec;
  uint64_t size = fs::file_size(base, ec);
  if (ec) return Error(ErrorCode::kIo, "create disk overlay: size of " + base.string() + ": " + ec.message(), ec.value());
  // qcow2 caps the backing file's name at 1023 bytes.
  if (base.string().size() > 1023 || base.string().find('\0') != std::string::npos) {
    return Error(ErrorCode::kInvalidArgument, "create disk overlay: base path too long: " + base.string());
  }
  UniqueFd fd(::open(overlay.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd.valid()) return Error::fromErrno("create disk overlay " + overlay.string());
  if (auto written = writeAll(fd.get(), qcow2OverlayHeader(base.string(), size)); !written) {
    (void)::unlink(overlay.c_str());
    return std::move(written).error().withContext("create disk overlay");
  }
  return success();
}

}  // namespace microvm
