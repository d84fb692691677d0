#include "image/layer_extractor.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <array>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/eintr.h"
#include "base/unique_fd.h"
#include "image/quote_untrusted.h"

namespace microvm {

namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kWhiteoutMetaPrefix = ".wh..wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
// Directory trees deeper than this are not removed: no real image comes
// close, and each level holds a descriptor.
constexpr int kMaxRemoveDepth = 256;
// openat2 answers EAGAIN when a rename raced the lookup; nothing else writes
// into the rootfs, so a few retries are plenty.
constexpr int kMaxResolveAttempts = 8;

Error layerError(const std::string& why, int sys_errno = 0) {
  return Error(ErrorCode::kProtocol, why, sys_errno);
}

struct ArchiveReaderDeleter {
  void operator()(archive* reader) const { archive_read_free(reader); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveReaderDeleter>;

Error archiveError(archive* reader, const std::string& what) {
  const char* message = archive_error_string(reader);
  return layerError(what + ": " + (message ? message : "unknown libarchive error"), archive_errno(reader));
}

// The lexical normal form of a tar name: relative, no "." or empty
// components; "" is the root itself. A ".." is refused outright: a layer
// generator never writes one, and resolving it lexically would disagree with
// the kernel whenever a symlink precedes it.
Result<std::string> normalizeName(std::string_view raw) {
  if (raw.empty()) return layerError("empty name");
  std::string out;
  int depth = 0;
  bool climbs = false;
  size_t start = 0;
  for (;;) {
    size_t slash = raw.find('/', start);
    std::string_view part = raw.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part == "..") {
      if (--depth < 0) return layerError("path escapes the root filesystem");
      climbs = true;
    } else if (!part.empty() && part != ".") {
      ++depth;
      if (!out.empty()) out += '/';
      out += part;
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (climbs) return layerError("path has a \"..\" component");
  return out;
}

std::string joinPath(const std::string& parent, const std::string& name) {
  return parent.empty() ? name : parent + "/" + name;
}

// "a/b/c" -> {"a/b", "c"}; "c" -> {"", "c"}.
std::pair<std::string, std::string> splitPath(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

// The names in a directory, without "." and "..". `dir_fd` may be O_PATH: the
// listing uses its own descriptor, so no offset is shared.
Result<std::vector<std::string>> listDirectory(int dir_fd, const std::string& path) {
  UniqueFd fd(retryOnEintr([&] { return ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
  if (!fd.valid()) return Error::fromErrno("open directory " + quoteUntrusted(path));
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(fd.get()), ::closedir);
  if (!dir) return Error::fromErrno("open directory " + quoteUntrusted(path));
  fd.release();  // closedir() owns it now
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    dirent* item = ::readdir(dir.get());
    if (!item) break;
    std::string_view name = item->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  if (errno != 0) return Error::fromErrno("read directory " + quoteUntrusted(path));
  return names;
}

// rm -rf of `name` in `parent_fd`, by descriptors only: nothing is looked up
// by path and no symlink is followed, so it cannot reach outside the tree.
Result<void> removeEntryAt(int parent_fd, const std::string& name, const std::string& path, int depth) {
  if (::unlinkat(parent_fd, name.c_str(), 0) == 0 || errno == ENOENT) return success();
  if (errno != EISDIR) return Error::fromErrno("remove " + quoteUntrusted(path));
  if (depth > kMaxRemoveDepth) {
    return layerError("cannot remove " + quoteUntrusted(path) + ": directory tree is too deep");
  }
  UniqueFd dir(
      retryOnEintr([&] { return ::openat(parent_fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC); }));
  if (!dir.valid()) return Error::fromErrno("open " + quoteUntrusted(path));
  auto children = listDirectory(dir.get(), path);
  if (!children) return children.error();
  for (const auto& child : *children) {
    MICROVM_TRY(removeEntryAt(dir.get(), child, joinPath(path, child), depth + 1));
  }
  if (::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) != 0) return Error::fromErrno("remove " + quoteUntrusted(path));
  return success();
}

Result<void> pwriteAll(int fd, const char* data, size_t size, off_t offset) {
  while (size > 0) {
    ssize_t written = retryOnEintr([&] { return ::pwrite(fd, data, size, offset); });
    if (written < 0) return Error::fromErrno("write");
    data += written;
    size -= static_cast<size_t>(written);
    offset += written;
  }
  return success();
}

timespec clampedTime(time_t seconds, long nanoseconds) {
  // Hostile pax headers can carry any fraction; utimensat takes only 0..1e9-1.
  if (nanoseconds < 0 || nanoseconds > 999'999'999) nanoseconds = 0;
  return timespec{seconds, nanoseconds};
}

// {atime, mtime} as utimensat wants them; an unset time is left alone.
std::array<timespec, 2> entryTimes(archive_entry* entry) {
  timespec omit{0, UTIME_OMIT};
  timespec mtime = archive_entry_mtime_is_set(entry)
                       ? clampedTime(archive_entry_mtime(entry), archive_entry_mtime_nsec(entry))
                       : omit;
  timespec atime = archive_entry_atime_is_set(entry)
                       ? clampedTime(archive_entry_atime(entry), archive_entry_atime_nsec(entry))
                       : mtime;
  return {atime, mtime};
}

// The entry's names as stored: libarchive falls back to the raw bytes when a
// name does not convert to the locale, and that is what the filesystem wants.
const char* entryName(archive_entry* entry) {
  const char* name = archive_entry_pathname(entry);
  return name ? name : archive_entry_pathname_utf8(entry);
}

class LayerApplier {
 public:
  LayerApplier(UniqueFd root, const ExtractLimits& limits)
      : root_(std::move(root)), limits_(limits), privileged_(::geteuid() == 0) {}

  Result<ExtractStats> run(archive* reader);

 private:
  struct DeferredDirectory {
    std::string path;
    mode_t mode;
    std::array<timespec, 2> times;
  };

  Result<void> applyEntry(archive* reader, archive_entry* entry);
  Result<void> applyWhiteout(const std::string& parent, const std::string& name);
  Result<void> makeOpaque(const std::string& dir);
  Result<void> removeLower(int parent_fd, const std::string& name, const std::string& path, int depth);
  Result<void> createEntry(archive* reader, archive_entry* entry, const std::string& path);
  Result<void> createHardlink(archive_entry* entry, int parent_fd, const std::string& name, const std::string& path);
  Result<void> createDirectory(archive_entry* entry, int parent_fd, const std::string& name, const std::string& path);
  Result<void> writeRegularFile(archive* reader, archive_entry* entry, int parent_fd, const std::string& name);
  Result<void> createSymlink(archive_entry* entry, int parent_fd, const std::string& name);
  Result<void> createNode(archive_entry* entry, int parent_fd, const std::string& name);
  Result<void> applyRootDirectory(archive_entry* entry);

  Result<void> setOwner(int fd, archive_entry* entry);
  Result<void> setOwnerAt(int parent_fd, const std::string& name, archive_entry* entry);
  void setXattrs(int fd, archive_entry* entry);
  bool xattrAllowed(std::string_view name) const;
  void deferDirectory(const std::string& path, archive_entry* entry);
  Result<void> finishDirectories();

  Result<UniqueFd> openBeneath(const std::string& path, uint64_t flags);
  Result<UniqueFd> openParent(const std::string& parent, bool create);
  Result<bool> removeExisting(int parent_fd, const std::string& name, const std::string& path, bool keep_directory);
  Result<void> checkLength(const char* what, std::string_view text) const;
  void markCreated(std::string path);

  UniqueFd root_;
  ExtractLimits limits_;
  bool privileged_;
  ExtractStats stats_;
  // Paths this layer created, with their ancestors: whiteouts only delete
  // what the lower layers left, never this layer's own entries.
  std::unordered_set<std::string> created_;
  // Directory modes and times are set last: creating children changes a
  // directory's mtime, and a read-only mode would stop the children.
  std::vector<DeferredDirectory> directories_;
  std::unordered_map<std::string, size_t> directory_index_;
};

Result<ExtractStats> LayerApplier::run(archive* reader) {
  for (;;) {
    archive_entry* entry = nullptr;
    int status = archive_read_next_header(reader, &entry);
    if (status == ARCHIVE_EOF) break;
    if (status != ARCHIVE_OK && status != ARCHIVE_WARN) {
      return archiveError(reader, "read entry " + std::to_string(stats_.entries + 1));
    }
    ++stats_.entries;
    if (limits_.entries_used > limits_.max_entries || stats_.entries > limits_.max_entries - limits_.entries_used) {
      return layerError("more than " + std::to_string(limits_.max_entries) + " entries" +
                        (limits_.entries_used ? " in all layers" : ""));
    }
    const char* name = entryName(entry);
    auto applied = applyEntry(reader, entry);
    if (!applied) return applied.error().withContext("entry " + quoteUntrusted(name ? name : ""));
  }
  MICROVM_TRY(finishDirectories());
  return stats_;
}

Result<void> LayerApplier::applyEntry(archive* reader, archive_entry* entry) {
  const char* raw = entryName(entry);
  if (!raw) return layerError("entry has no name");
  MICROVM_TRY(checkLength("name", raw));
  auto path = normalizeName(raw);
  if (!path) return path.error();
  auto [parent, name] = splitPath(*path);
  if (std::string_view(name).starts_with(kWhiteoutPrefix)) return applyWhiteout(parent, name);
  if (path->empty()) {
    if (archive_entry_hardlink(entry) || archive_entry_filetype(entry) != AE_IFDIR) {
      return layerError("refusing to replace the root directory");
    }
    return applyRootDirectory(entry);
  }
  MICROVM_TRY(createEntry(reader, entry, *path));
  markCreated(*path);
  return success();
}

Result<void> LayerApplier::checkLength(const char* what, std::string_view text) const {
  if (text.size() <= limits_.max_path_length) return success();
  return layerError(std::string(what) + " is longer than " + std::to_string(limits_.max_path_length) + " bytes");
}

Result<void> LayerApplier::createEntry(archive* reader, archive_entry* entry, const std::string& path) {
  auto [parent, name] = splitPath(path);
  auto parent_fd = openParent(parent, /*create=*/true);
  if (!parent_fd) return parent_fd.error();
  int dir = parent_fd->get();
  if (archive_entry_hardlink(entry)) return createHardlink(entry, dir, name, path);
  mode_t type = archive_entry_filetype(entry);
  if (type == AE_IFDIR) return createDirectory(entry, dir, name, path);
  if (type == AE_IFSOCK) {
    // A socket in a tar is a leftover of the build; it cannot be recreated.
    ++stats_.skipped;
    return success();
  }
  auto existing = removeExisting(dir, name, path, /*keep_directory=*/false);
  if (!existing) return existing.error();
  switch (type) {
    case AE_IFREG: return writeRegularFile(reader, entry, dir, name);
    case AE_IFLNK: return createSymlink(entry, dir, name);
    case AE_IFIFO:
    case AE_IFCHR:
    case AE_IFBLK: return createNode(entry, dir, name);
    default: return layerError("unsupported entry type " + std::to_string(type));
  }
}

// The O_PATH descriptor of a parent directory, resolved beneath the root.
// With `create`, missing directories are made (0755), as docker does for
// tars that leave out a parent.
Result<UniqueFd> LayerApplier::openParent(const std::string& parent, bool create) {
  constexpr uint64_t kFlags = O_PATH | O_DIRECTORY;
  auto fd = openBeneath(parent, kFlags);
  if (fd || !create || fd.error().sysErrno() != ENOENT) return fd;
  UniqueFd current;
  std::string prefix;
  size_t start = 0;
  for (;;) {
    size_t slash = parent.find('/', start);
    std::string component = parent.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    std::string next = joinPath(prefix, component);
    auto opened = openBeneath(next, kFlags);
    if (!opened && opened.error().sysErrno() == ENOENT) {
      int base = current.valid() ? current.get() : root_.get();
      if (::mkdirat(base, component.c_str(), 0755) == 0) {
        // Not left to the umask: the same layer must give the same tree.
        (void)::fchmodat(base, component.c_str(), 0755, 0);
      } else if (errno != EEXIST) {
        return Error::fromErrno("create directory " + quoteUntrusted(next));
      }
      opened = openBeneath(next, kFlags);
    }
    if (!opened) return opened.error();
    current = std::move(*opened);
    if (slash == std::string::npos) return current;
    prefix = next;
    start = slash + 1;
  }
}

Result<UniqueFd> LayerApplier::openBeneath(const std::string& path, uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  // BENEATH: no step of the lookup may leave the root, through ".." or a
  // symlink (absolute symlinks always fail). NO_MAGICLINKS: no /proc-style
  // jumps. The kernel enforces both, race-free.
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  const char* name = path.empty() ? "." : path.c_str();
  for (int attempt = 0;; ++attempt) {
    long fd = ::syscall(SYS_openat2, root_.get(), name, &how, sizeof how);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    if (errno == EINTR || (errno == EAGAIN && attempt < kMaxResolveAttempts)) continue;
    int err = errno;
    switch (err) {
      case EXDEV: return layerError(quoteUntrusted(path) + " leads outside the root filesystem through a symlink", err);
      case ELOOP:
        return layerError(
            quoteUntrusted(path) + ": a symlink where a directory is needed, or too many levels of symlinks", err);
      case ENOTDIR: return layerError(quoteUntrusted(path) + " is not a directory", err);
      case ENOSYS: return Error(ErrorCode::kUnavailable, "openat2 is not available: Linux 5.6 or later is needed", err);
      default: return Error::fromErrno("open " + quoteUntrusted(path), err);
    }
  }
}

// Clears what is at `name` so a new entry can take its place, except that an
// existing directory is kept when `keep_directory` (a directory entry over a
// directory only updates its metadata). Returns whether a directory was kept.
Result<bool> LayerApplier::removeExisting(int parent_fd, const std::string& name, const std::string& path,
                                          bool keep_directory) {
  struct stat st {};
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return false;
    return Error::fromErrno("stat " + quoteUntrusted(path));
  }
  if (keep_directory && S_ISDIR(st.st_mode)) return true;
  MICROVM_TRY(removeEntryAt(parent_fd, name, path, 0));
  return false;
}

Result<void> LayerApplier::applyWhiteout(const std::string& parent, const std::string& name) {
  if (name == kOpaqueMarker) {
    ++stats_.whiteouts;
    return makeOpaque(parent);
  }
  if (std::string_view(name).starts_with(kWhiteoutMetaPrefix)) {
    // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content, per OCI.
    ++stats_.skipped;
    return success();
  }
  std::string target = name.substr(kWhiteoutPrefix.size());
  if (target.empty() || target == "." || target == "..") return layerError("invalid whiteout name");
  ++stats_.whiteouts;
  auto parent_fd = openParent(parent, /*create=*/false);
  if (!parent_fd) {
    // Nothing below a missing directory (or a file) can need deleting.
    int err = parent_fd.error().sysErrno();
    return err == ENOENT || err == ENOTDIR ? success() : Result<void>(parent_fd.error());
  }
  return removeLower(parent_fd->get(), target, joinPath(parent, target), 0);
}

Result<void> LayerApplier::makeOpaque(const std::string& dir) {
  auto dir_fd = openParent(dir, /*create=*/true);
  if (!dir_fd) return dir_fd.error();
  auto children = listDirectory(dir_fd->get(), dir);
  if (!children) return children.error();
  for (const auto& child : *children) {
    MICROVM_TRY(removeLower(dir_fd->get(), child, joinPath(dir, child), 0));
  }
  return success();
}

// Deletes `path` as the lower layers left it: all of it if this layer did not
// create it; otherwise, for a directory, the lower parts of its contents.
Result<void> LayerApplier::removeLower(int parent_fd, const std::string& name, const std::string& path, int depth) {
  if (!created_.contains(path)) return removeEntryAt(parent_fd, name, path, depth);
  struct stat st {};
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) return success();
  if (depth > kMaxRemoveDepth) {
    return layerError("cannot apply whiteout under " + quoteUntrusted(path) + ": tree is too deep");
  }
  UniqueFd dir(
      retryOnEintr([&] { return ::openat(parent_fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC); }));
  if (!dir.valid()) return Error::fromErrno("open " + quoteUntrusted(path));
  auto children = listDirectory(dir.get(), path);
  if (!children) return children.error();
  for (const auto& child : *children) {
    MICROVM_TRY(removeLower(dir.get(), child, joinPath(path, child), depth + 1));
  }
  return success();
}

// Hard links are made between names inside the root: the target's directory
// is resolved beneath the root like any parent, and linkat() without
// AT_SYMLINK_FOLLOW links a symlink itself, never the file it names.
Result<void> LayerApplier::createHardlink(archive_entry* entry, int parent_fd, const std::string& name,
                                          const std::string& path) {
  const char* raw_target = archive_entry_hardlink(entry);
  MICROVM_TRY(checkLength("hard link target", raw_target));
  auto target = normalizeName(raw_target);
  if (!target) return target.error().withContext("hard link target " + quoteUntrusted(raw_target));
  if (target->empty()) return layerError("hard link to the root directory");
  if (*target == path) return layerError("hard link to itself");
  auto [target_parent, target_name] = splitPath(*target);
  auto target_dir = openParent(target_parent, /*create=*/false);
  if (!target_dir) return target_dir.error().withContext("hard link target " + quoteUntrusted(*target));
  struct stat st {};
  if (::fstatat(target_dir->get(), target_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    int err = errno;
    return layerError("hard link target " + quoteUntrusted(*target) + " does not exist", err);
  }
  if (S_ISDIR(st.st_mode)) return layerError("hard link target " + quoteUntrusted(*target) + " is a directory");
  auto existing = removeExisting(parent_fd, name, path, /*keep_directory=*/false);
  if (!existing) return existing.error();
  if (::linkat(target_dir->get(), target_name.c_str(), parent_fd, name.c_str(), 0) != 0) {
    return Error::fromErrno("link to " + quoteUntrusted(*target));
  }
  return success();
}

Result<void> LayerApplier::createDirectory(archive_entry* entry, int parent_fd, const std::string& name,
                                           const std::string& path) {
  auto kept = removeExisting(parent_fd, name, path, /*keep_directory=*/true);
  if (!kept) return kept.error();
  // 0700 until finishDirectories() sets the real mode.
  if (!*kept && ::mkdirat(parent_fd, name.c_str(), 0700) != 0) return Error::fromErrno("mkdir");
  UniqueFd dir(
      retryOnEintr([&] { return ::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC); }));
  if (!dir.valid()) return Error::fromErrno("open directory");
  MICROVM_TRY(setOwner(dir.get(), entry));
  setXattrs(dir.get(), entry);
  deferDirectory(path, entry);
  return success();
}

Result<void> LayerApplier::applyRootDirectory(archive_entry* entry) {
  auto root = openBeneath("", O_RDONLY | O_DIRECTORY);
  if (!root) return root.error();
  MICROVM_TRY(setOwner(root->get(), entry));
  setXattrs(root->get(), entry);
  deferDirectory("", entry);
  return success();
}

Result<void> LayerApplier::writeRegularFile(archive* reader, archive_entry* entry, int parent_fd,
                                            const std::string& name) {
  int64_t size = archive_entry_size(entry);
  if (size < 0) return layerError("negative file size");
  uint64_t file_size = static_cast<uint64_t>(size);
  uint64_t used = limits_.bytes_used + stats_.bytes;
  if (used > limits_.max_bytes || file_size > limits_.max_bytes - used) {
    return layerError((limits_.bytes_used ? "image content (all layers) exceeds the limit of " : "layer content exceeds the limit of ") +
                      std::to_string(limits_.max_bytes) + " bytes");
  }
  stats_.bytes += file_size;
  // O_EXCL|O_NOFOLLOW: removeExisting() cleared the name, so this creates a
  // new file and can never open one a symlink points at.
  UniqueFd file(retryOnEintr(
      [&] { return ::openat(parent_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600); }));
  if (!file.valid()) return Error::fromErrno("create file");
  for (;;) {
    const void* block = nullptr;
    size_t length = 0;
    la_int64_t offset = 0;
    int status = archive_read_data_block(reader, &block, &length, &offset);
    if (status == ARCHIVE_EOF) break;
    if (status != ARCHIVE_OK && status != ARCHIVE_WARN) return archiveError(reader, "read file data");
    // Sparse entries hand out blocks at offsets; none may lie past the size.
    if (offset < 0 || length > file_size || static_cast<uint64_t>(offset) > file_size - length) {
      return layerError("file data lies beyond the declared size");
    }
    MICROVM_TRY(pwriteAll(file.get(), static_cast<const char*>(block), length, offset));
  }
  // Sets the length when the file ends in a sparse hole.
  if (retryOnEintr([&] { return ::ftruncate(file.get(), size); }) != 0) return Error::fromErrno("truncate");
  // Order matters: chown clears set-uid bits and file capabilities, so the
  // mode and the xattrs come after it.
  MICROVM_TRY(setOwner(file.get(), entry));
  if (::fchmod(file.get(), archive_entry_perm(entry) & 07777) != 0) return Error::fromErrno("chmod");
  setXattrs(file.get(), entry);
  auto times = entryTimes(entry);
  (void)::futimens(file.get(), times.data());  // best effort: odd times are not worth failing an image
  return success();
}

Result<void> LayerApplier::createSymlink(archive_entry* entry, int parent_fd, const std::string& name) {
  const char* target = archive_entry_symlink(entry);
  if (!target || !*target) return layerError("symlink has no target");
  MICROVM_TRY(checkLength("symlink target", target));
  // The target is stored as written: it is only data here, since nothing in
  // the extraction ever follows a symlink out of the root.
  if (::symlinkat(target, parent_fd, name.c_str()) != 0) return Error::fromErrno("create symlink");
  MICROVM_TRY(setOwnerAt(parent_fd, name, entry));
  auto times = entryTimes(entry);
  (void)::utimensat(parent_fd, name.c_str(), times.data(), AT_SYMLINK_NOFOLLOW);  // best effort
  return success();
}

Result<void> LayerApplier::createNode(archive_entry* entry, int parent_fd, const std::string& name) {
  mode_t type = archive_entry_filetype(entry);
  bool device = type == AE_IFCHR || type == AE_IFBLK;
  if (device && !privileged_) {
    ++stats_.skipped;
    return success();
  }
  dev_t rdev = device ? archive_entry_rdev(entry) : 0;
  if (::mknodat(parent_fd, name.c_str(), type | 0600, rdev) != 0) {
    // Root without CAP_MKNOD (a user namespace): devices are skipped as for
    // an unprivileged caller.
    if (device && errno == EPERM) {
      ++stats_.skipped;
      return success();
    }
    return Error::fromErrno(device ? "create device node" : "create fifo");
  }
  MICROVM_TRY(setOwnerAt(parent_fd, name, entry));
  // fchmodat follows a final symlink, but `name` is the node made just above
  // and nothing else writes into the rootfs.
  if (::fchmodat(parent_fd, name.c_str(), archive_entry_perm(entry) & 07777, 0) != 0) return Error::fromErrno("chmod");
  auto times = entryTimes(entry);
  (void)::utimensat(parent_fd, name.c_str(), times.data(), AT_SYMLINK_NOFOLLOW);  // best effort
  return success();
}

Result<void> LayerApplier::setOwner(int fd, archive_entry* entry) {
  if (!privileged_) return success();
  auto uid = static_cast<uid_t>(archive_entry_uid(entry));
  auto gid = static_cast<gid_t>(archive_entry_gid(entry));
  if (::fchown(fd, uid, gid) != 0) {
    return Error::fromErrno("chown to " + std::to_string(uid) + ":" + std::to_string(gid));
  }
  return success();
}

Result<void> LayerApplier::setOwnerAt(int parent_fd, const std::string& name, archive_entry* entry) {
  if (!privileged_) return success();
  auto uid = static_cast<uid_t>(archive_entry_uid(entry));
  auto gid = static_cast<gid_t>(archive_entry_gid(entry));
  if (::fchownat(parent_fd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
    return Error::fromErrno("chown to " + std::to_string(uid) + ":" + std::to_string(gid));
  }
  return success();
}

bool LayerApplier::xattrAllowed(std::string_view name) const {
  if (name.starts_with("user.")) return true;
  // Only root may set these, and only root's extraction should carry them.
  return privileged_ && (name == "security.capability" || name.starts_with("trusted."));
}

void LayerApplier::setXattrs(int fd, archive_entry* entry) {
  archive_entry_xattr_reset(entry);
  const char* name = nullptr;
  const void* value = nullptr;
  size_t size = 0;
  while (archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK) {
    if (!name || !xattrAllowed(name)) continue;
    // Best effort: tmpfs and some filesystems refuse user.* xattrs, and an
    // image should not fail to run for the lack of one.
    (void)::fsetxattr(fd, name, value, size, 0);
  }
}

void LayerApplier::deferDirectory(const std::string& path, archive_entry* entry) {
  mode_t mode = archive_entry_perm(entry) & 07777;
  // Unprivileged, an unwritable directory would stop later layers from
  // adding to it or deleting from it: keep it open to its owner, the caller.
  if (!privileged_) mode |= 0700;
  DeferredDirectory record{path, mode, entryTimes(entry)};
  auto [it, inserted] = directory_index_.emplace(path, directories_.size());
  if (inserted) {
    directories_.push_back(std::move(record));
  } else {
    directories_[it->second] = std::move(record);
  }
}

Result<void> LayerApplier::finishDirectories() {
  for (const auto& dir : directories_) {
    auto fd = openBeneath(dir.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!fd) {
      // A later entry of this layer removed or replaced it.
      int err = fd.error().sysErrno();
      if (err == ENOENT || err == ENOTDIR || err == ELOOP || err == EXDEV) continue;
      return fd.error().withContext("directory " + quoteUntrusted(dir.path));
    }
    if (::fchmod(fd->get(), dir.mode) != 0) return Error::fromErrno("chmod directory " + quoteUntrusted(dir.path));
    (void)::futimens(fd->get(), dir.times.data());  // best effort
  }
  return success();
}

void LayerApplier::markCreated(std::string path) {
  while (!path.empty() && created_.insert(path).second) {
    size_t slash = path.rfind('/');
    path.resize(slash == std::string::npos ? 0 : slash);
  }
}

Result<ArchiveReader> newTarReader() {
  ArchiveReader reader(archive_read_new());
  if (!reader) return Error(ErrorCode::kInternal, "libarchive: out of memory");
  // Only what OCI layers use: tar, plain or gzip or zstd. "empty" lets a
  // zero-byte blob read as an empty layer.
  if (archive_read_support_filter_gzip(reader.get()) != ARCHIVE_OK ||
      archive_read_support_filter_zstd(reader.get()) != ARCHIVE_OK ||
      archive_read_support_format_tar(reader.get()) != ARCHIVE_OK ||
      archive_read_support_format_empty(reader.get()) != ARCHIVE_OK) {
    return Error(ErrorCode::kUnavailable, "libarchive lacks built-in gzip, zstd or tar support");
  }
  return reader;
}

Result<ExtractStats> applyFromReader(archive* reader, const std::filesystem::path& rootfs,
                                     const ExtractLimits& limits) {
  UniqueFd root(retryOnEintr([&] { return ::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC); }));
  if (!root.valid()) return Error::fromErrno("open rootfs " + rootfs.string());
  LayerApplier applier(std::move(root), limits);
  return applier.run(reader);
}

}  // namespace

Result<ExtractStats> applyLayerFromFd(int fd, const std::filesystem::path& rootfs, const ExtractLimits& limits) {
  auto reader = newTarReader();
  if (!reader) return reader.error();
  if (archive_read_open_fd(reader->get(), fd, 1 << 16) != ARCHIVE_OK) return archiveError(reader->get(), "open layer");
  return applyFromReader(reader->get(), rootfs, limits);
}

Result<ExtractStats> applyLayer(const std::filesystem::path& layer_file, const std::filesystem::path& rootfs,
                                const ExtractLimits& limits) {
  UniqueFd fd(retryOnEintr([&] { return ::open(layer_file.c_str(), O_RDONLY | O_CLOEXEC); }));
  if (!fd.valid()) return Error::fromErrno("open layer " + layer_file.string());
  return applyLayerFromFd(fd.get(), rootfs, limits);
}

Result<ExtractStats> applyLayerFromMemory(std::string_view layer, const std::filesystem::path& rootfs,
                                          const ExtractLimits& limits) {
  auto reader = newTarReader();
  if (!reader) return reader.error();
  // libarchive reads the buffer without writing to it; the API takes void*.
  void* data = const_cast<char*>(layer.data());
  if (archive_read_open_memory(reader->get(), data, layer.size()) != ARCHIVE_OK) {
    return archiveError(reader->get(), "open layer");
  }
  return applyFromReader(reader->get(), rootfs, limits);
}

}  // namespace microvm
