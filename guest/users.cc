#include "guest/users.h"

#include <algorithm>
#include <cstdint>
#include <optional>

#include "guest/support.h"

namespace microvm::guest {
namespace {

// The non-empty, non-comment lines of an /etc/passwd-style file, split at ':'.
std::vector<std::vector<std::string_view>> databaseRecords(std::string_view text) {
  std::vector<std::vector<std::string_view>> records;
  for (std::string_view line : split(text, '\n')) {
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    records.push_back(split(line, ':'));
  }
  return records;
}

struct PasswdEntry {
  std::string_view name;
  uint32_t uid;
  uint32_t gid;
  std::string_view home;
};

// name:password:uid:gid:gecos:home:shell; lines with bad ids are skipped.
std::vector<PasswdEntry> parsePasswd(std::string_view text) {
  std::vector<PasswdEntry> entries;
  for (const auto& fields : databaseRecords(text)) {
    if (fields.size() < 4) continue;
    auto uid = parseId(fields[2]);
    auto gid = parseId(fields[3]);
    if (!uid || !gid) continue;
    entries.push_back({fields[0], *uid, *gid, fields.size() > 5 ? fields[5] : std::string_view()});
  }
  return entries;
}

struct GroupEntry {
  std::string_view name;
  uint32_t gid;
  std::vector<std::string_view> members;
};

// name:password:gid:member,member; lines with a bad gid are skipped.
std::vector<GroupEntry> parseGroup(std::string_view text) {
  std::vector<GroupEntry> entries;
  for (const auto& fields : databaseRecords(text)) {
    if (fields.size() < 3) continue;
    auto gid = parseId(fields[2]);
    if (!gid) continue;
    GroupEntry entry{fields[0], *gid, {}};
    if (fields.size() > 3 && !fields[3].empty()) {
      for (std::string_view member : split(fields[3], ',')) entry.members.push_back(trim(member));
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

}  // namespace

Result<ExecUser> resolveUser(std::string_view user, std::string_view passwd, std::string_view group) {
  std::string_view user_arg = user;
  std::string_view group_arg;
  if (size_t colon = user.find(':'); colon != std::string_view::npos) {
    user_arg = user.substr(0, colon);
    group_arg = user.substr(colon + 1);
  }
  if (user_arg.empty()) user_arg = "0";  // Docker: no user means root.

  ExecUser result;
  std::string_view matched_name;
  std::optional<uint32_t> uid = parseId(user_arg);
  std::vector<PasswdEntry> users = parsePasswd(passwd);
  auto entry = std::find_if(users.begin(), users.end(), [&](const PasswdEntry& candidate) {
    return uid ? candidate.uid == *uid : candidate.name == user_arg;
  });
  if (entry != users.end()) {
    result.uid = entry->uid;
    result.gid = entry->gid;
    if (!entry->home.empty()) result.home = std::string(entry->home);
    matched_name = entry->name;
  } else if (uid) {
    result.uid = *uid;
  } else {
    return Error(ErrorCode::kNotFound,
                 "unable to find user " + std::string(user_arg) + ": no matching entries in passwd file");
  }

  std::vector<GroupEntry> groups = parseGroup(group);
  if (!group_arg.empty()) {
    std::optional<uint32_t> gid = parseId(group_arg);
    auto found = std::find_if(groups.begin(), groups.end(), [&](const GroupEntry& candidate) {
      return candidate.name == group_arg || (gid && candidate.gid == *gid);
    });
    if (found != groups.end()) {
      result.gid = found->gid;
    } else if (gid) {
      result.gid = *gid;
    } else {
      return Error(ErrorCode::kNotFound,
                   "unable to find group " + std::string(group_arg) + ": no matching entries in group file");
    }
  } else if (!matched_name.empty()) {
    for (const GroupEntry& candidate : groups) {
      if (std::find(candidate.members.begin(), candidate.members.end(), matched_name) != candidate.members.end()) {
        result.supplementary_groups.push_back(candidate.gid);
      }
    }
  }
  return result;
}

}  // namespace microvm::guest
