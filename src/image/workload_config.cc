#include "image/workload_config.h"

#include <algorithm>

namespace microvm {

namespace {

std::string keyOf(const std::string& entry) { return entry.substr(0, entry.find('=')); }

}  // namespace

std::vector<std::string> mergeEnv(const std::vector<std::string>& base, const std::vector<std::string>& overrides) {
  std::vector<std::string> env = base;
  for (const auto& entry : overrides) {
    auto same_key = [&](const std::string& existing) { return keyOf(existing) == keyOf(entry); };
    auto found = std::find_if(env.begin(), env.end(), same_key);
    if (found != env.end()) {
      *found = entry;
    } else {
      env.push_back(entry);
    }
  }
  return env;
}

Result<MergedWorkload> mergeImageDefaults(const ImageDefaults& image, const WorkloadOverrides& overrides) {
  MergedWorkload workload;
  std::vector<std::string> entrypoint = image.entrypoint;
  std::vector<std::string> cmd = overrides.args.empty() ? image.cmd : overrides.args;
  if (overrides.entrypoint) {
    entrypoint.clear();
    if (!overrides.entrypoint->empty()) entrypoint.push_back(*overrides.entrypoint);
    cmd = overrides.args;  // Docker drops the image's Cmd with a new entrypoint
  }
  workload.argv = entrypoint;
  workload.argv.insert(workload.argv.end(), cmd.begin(), cmd.end());
  if (workload.argv.empty()) {
    return Error(ErrorCode::kInvalidArgument, "no command specified: the image has no Entrypoint or Cmd, give one");
  }
  workload.env = mergeEnv(image.env, overrides.env);
  workload.workdir = !overrides.workdir.empty() ? overrides.workdir
                                                : (!image.working_dir.empty() ? image.working_dir : "/");
  workload.user = !overrides.user.empty() ? overrides.user : image.user;
  return workload;
}

}  // namespace microvm
