#include "runner/runner_confinement.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "base/process.h"

namespace microvm {

uint64_t runnerCapabilities() { return (uint64_t{1} << CAP_KILL) | (uint64_t{1} << CAP_NET_BIND_SERVICE); }

Result<void> becomeRunnerUser(uid_t uid, gid_t gid, uint64_t keep) {
  // The bounding set first, while CAP_SETPCAP is still ours; the uid last.
  MICROVM_TRY(dropBoundingCapabilities(keep));
  if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return Error::fromErrno("set keepcaps");
  if (::setgroups(0, nullptr) != 0) return Error::fromErrno("setgroups");
  if (::setresgid(gid, gid, gid) != 0) return Error::fromErrno("setresgid " + std::to_string(gid));
  if (::setresuid(uid, uid, uid) != 0) return Error::fromErrno("setresuid " + std::to_string(uid));
  // The uid change cleared the effective set; keepcaps kept the permitted
  // one, of which only `keep` stays.
  MICROVM_TRY(setCapabilities(keep));
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return Error::fromErrno("clear ambient capabilities");
  if (::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) return Error::fromErrno("clear keepcaps");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Error::fromErrno("set no_new_privs");
  return success();
}

}  // namespace microvm
