// OCI hooks (config.json's `hooks`), run on the host as the runtime-spec
// says: prestart and createRuntime at `create` (a failure fails it),
// poststart once `start` has the workload running and poststop at `delete`
// (failures there are logged). createContainer and startContainer would run
// inside the container's namespaces, which a VM does not have: create refuses
// them unless org.microvm.ignore lists them. Each hook gets the container's
// state JSON on stdin, only its own env, and is killed after its timeout.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "microvm/result.h"

namespace microvm::oci {

struct Hook {
  std::string path;
  std::vector<std::string> args;  // args[0] is argv[0]; empty: {path}
  std::vector<std::string> env;
  int timeout_seconds = 0;        // 0: the runtime's bound (5 minutes)
};

// Hook lists by stage ("prestart", "createRuntime", "poststart", "poststop").
using Hooks = std::map<std::string, std::vector<Hook>>;

// Parses a `hooks` object (already bounded by the caller's parser) into
// stages; `refused` gets the stages a VM cannot run that are not empty.
Result<Hooks> parseHooks(const std::string& hooks_json, std::vector<std::string>& refused);
std::string hooksJson(const Hooks& hooks);

// Runs each hook of `stage` in order with `state_json` on stdin; the first
// failure (non-zero exit, signal, timeout) is returned.
Result<void> runHooks(const Hooks& hooks, const std::string& stage, const std::string& state_json);

}  // namespace microvm::oci
