#include "base/idmapped_mount.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "base/fs.h"
#include "base/process.h"

namespace microvm {

namespace {

// Ids run from 0 to 4294967294; 4294967295 is (uid_t)-1, never an id.
constexpr uint64_t kIdEnd = 4294967295ull;

std::string mapText(const std::vector<IdMapping>& map) {
  std::string text;
  for (const auto& line : map) {
    text += std::to_string(line.on_disk) + " " + std::to_string(line.shown) + " " + std::to_string(line.count) + "\n";
  }
  return text;
}

// A user namespace with these maps, held by an fd. A child enters a new
// namespace and waits; we write its maps (root may write any map), take a
// reference to the namespace and let the child go.
Result<UniqueFd> userNamespace(const std::vector<IdMapping>& uids, const std::vector<IdMapping>& gids) {
  int ready[2];
  int hold[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return Error::fromErrno("pipe");
  UniqueFd ready_read(ready[0]);
  UniqueFd ready_write(ready[1]);
  if (::pipe2(hold, O_CLOEXEC) != 0) return Error::fromErrno("pipe");
  UniqueFd hold_read(hold[0]);
  UniqueFd hold_write(hold[1]);
  pid_t pid = ::fork();
  if (pid < 0) return Error::fromErrno("fork");
  if (pid == 0) {
    hold_write.reset();  // else our own copy would keep the pipe from ever ending
    ready_read.reset();
    char status = ::unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
    (void)!::write(ready_write.get(), &status, 1);
    char ignored;
    (void)!::read(hold_read.get(), &ignored, 1);  // returns at EOF: the parent is done
    ::_exit(0);
  }
  Process child(pid);  // killed and reaped on any early return
  ready_write.reset();
  hold_read.reset();
  char status = 'n';
  ssize_t got;
  do {
    got = ::read(ready_read.get(), &status, 1);
  } while (got < 0 && errno == EINTR);
  if (got != 1 || status != 'y') return Error(ErrorCode::kUnavailable, "cannot create a user namespace");
  std::string proc = "/proc/" + std::to_string(pid);
  for (const auto& [file, map] : {std::pair{"/uid_map", &uids}, std::pair{"/gid_map", &gids}}) {
    UniqueFd fd(::open((proc + file).c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) return Error::fromErrno("open " + proc + file);
    // A map is taken only whole, in one write.
    std::string text = mapText(*map);
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      return Error::fromErrno("write " + proc + file);
    }
  }
  UniqueFd ns(::open((proc + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.valid()) return Error::fromErrno("open " + proc + "/ns/user");
  hold_write.reset();
  (void)child.wait();
  return ns;
}

}  // namespace

std::vector<IdMapping> swapIds(uint32_t on_disk, uint32_t shown) {
  if (on_disk == shown) return {{0, 0, static_cast<uint32_t>(kIdEnd)}};
  uint64_t low = std::min(on_disk, shown);
  uint64_t high = std::max(on_disk, shown);
  std::vector<IdMapping> map;
  auto same = [&map](uint64_t from, uint64_t end) {
    if (end > from) map.push_back({static_cast<uint32_t>(from), static_cast<uint32_t>(from), static_cast<uint32_t>(end - from)});
  };
  same(0, low);
  map.push_back({on_disk, shown, 1});
  map.push_back({shown, on_disk, 1});
  same(low + 1, high);
  same(high + 1, kIdEnd);
  return map;
}

Result<UniqueFd> openIdMappedTree(const std::filesystem::path& dir, const std::vector<IdMapping>& uids,
                                  const std::vector<IdMapping>& gids, bool readonly) {
  auto ns = userNamespace(uids, gids);
  if (!ns) return std::move(ns).error();
  UniqueFd tree(static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, dir.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)));
  if (!tree.valid()) return Error::fromErrno("clone the mount of " + dir.string());
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_IDMAP | (readonly ? MOUNT_ATTR_RDONLY : 0);
  attr.userns_fd = static_cast<uint64_t>(ns->get());
  if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
    if (errno == EINVAL) {
      return Error(ErrorCode::kUnsupported,
                   "the filesystem of " + dir.string() + " does not support idmapped mounts", errno);
    }
    return Error::fromErrno("idmap the mount of " + dir.string());
  }
  return tree;
}

}  // namespace microvm
