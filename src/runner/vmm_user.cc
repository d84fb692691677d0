#include "runner/vmm_user.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/file.h>

#include "base/fs.h"

namespace microvm {

Result<VmmUser> VmmUser::allocate(const std::filesystem::path& lock_dir) {
  MICROVM_TRY(makeDirs(lock_dir, 0700));
  for (uint32_t slot = 0; slot < kVmmIdCount; ++slot) {
    uint32_t id = kVmmIdBase + slot;
    auto path = lock_dir / std::to_string(id);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) return Error::fromErrno("open " + path.string());
    int locked;
    do {
      locked = ::flock(fd.get(), LOCK_EX | LOCK_NB);
    } while (locked != 0 && errno == EINTR);
    if (locked == 0) return VmmUser(id, std::move(fd));
    if (errno != EWOULDBLOCK) return Error::fromErrno("lock " + path.string());
  }
  return Error(ErrorCode::kUnavailable, "every VMM user id in " + lock_dir.string() + " is taken (" +
                                            std::to_string(kVmmIdCount) + " VMs are running)");
}

uint64_t vmmCapabilities(bool any_share, bool any_writable_share) {
  auto bit = [](int cap) { return uint64_t{1} << cap; };
  if (any_writable_share) return bit(CAP_CHOWN) | bit(CAP_DAC_OVERRIDE) | bit(CAP_FOWNER) | bit(CAP_FSETID);
  if (any_share) return bit(CAP_DAC_READ_SEARCH);
  return 0;
}

}  // namespace microvm
