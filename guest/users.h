// Who a confined process runs as: a Docker user spec resolved against the
// root's /etc/passwd and /etc/group, the way runc resolves it. Pure: the
// caller reads the files, so that the rules are unit-tested on the host.
//
//   auto user = resolveUser("app:staff", passwd_text, group_text);
//   if (!user.ok()) fail(user.error().message());   // Docker's wording
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "microvm/result.h"

namespace microvm::guest {

// Who the workload runs as.
struct ExecUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> supplementary_groups;
  std::string home = "/";
};

// Resolves a Docker user spec ("", "uid", "uid:gid", "name", "name:group", or
// mixes) against the text of the root's /etc/passwd and /etc/group (pass ""
// for a missing file), with runc's rules:
//   - empty means uid 0;
//   - a numeric uid need not exist in passwd (then gid 0 and HOME "/");
//   - without an explicit group, the gid is the passwd entry's, and the
//     supplementary groups are the groups that list the user as a member;
//   - with one, that group (by name or number) is the only group.
// An unknown name fails with Docker's wording:
//   "unable to find user NAME: no matching entries in passwd file".
Result<ExecUser> resolveUser(std::string_view user, std::string_view passwd, std::string_view group);

}  // namespace microvm::guest
