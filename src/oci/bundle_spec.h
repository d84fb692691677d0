// An OCI bundle's config.json turned into what microvm::Runtime runs: the
// runtime-spec fields a VM can honour become RunOptions, the ones it cannot
// are refused by name (unless the annotation org.microvm.ignore lists them,
// or "*"), and a few that only tune host kernel features the VM boundary
// already covers are accepted and not applied (listed in `features`).
//
//   auto plan = planBundle(config_json_text, "/path/to/bundle");
//   if (!plan) { report(plan.error()); }   // names the field and why
//   runtime.create(plan->options);
//
// config.json is untrusted input (fuzz/oci_spec_fuzz.cc): its size, nesting
// and list lengths are bounded, and every field is type-checked.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "microvm/result.h"
#include "microvm/runtime.h"
#include "oci/hooks.h"

namespace microvm::oci {

inline constexpr size_t kMaxConfigBytes = size_t{4} << 20;
inline constexpr const char* kIgnoreAnnotation = "org.microvm.ignore";
inline constexpr const char* kCpusAnnotation = "org.microvm.cpus";
inline constexpr const char* kMemoryAnnotation = "org.microvm.memory-mib";
inline constexpr const char* kNetworkAnnotation = "org.microvm.network";
inline constexpr const char* kPublishAnnotation = "org.microvm.publish";

// A bind mount of a single file (/etc/hosts, /etc/resolv.conf...): 9p shares
// directories, so the file is copied into the VM's disk at create.
struct FileCopy {
  std::filesystem::path host;
  std::string guest;
};

struct BundlePlan {
  RunOptions options;             // rootfs, command, env, user, volumes...
  std::vector<FileCopy> files;
  std::string seccomp_profile;    // the spec's linux.seccomp as JSON ("" none)
  bool terminal = false;          // process.terminal
  uint16_t console_rows = 0;      // process.consoleSize (0: not given)
  uint16_t console_cols = 0;
  // linux.namespaces' network path: the VM's runner (its NAT and published
  // ports) runs in that namespace, so the VM's traffic leaves from it.
  std::string netns_path;
  // No network annotation and the engine's namespace: create takes "tap"
  // (the guest owns the pod's address) when that namespace has a configured
  // interface, and stays "user" (the runner's NAT there) when it has only lo.
  bool pick_network = false;
  Hooks hooks;                    // run on the host (hooks.h)
  std::string oci_version;
  std::map<std::string, std::string> annotations;
  std::vector<std::string> ignored;  // fields accepted but not applied, for the log
};

// `bundle` resolves a relative root.path and relative bind sources.
Result<BundlePlan> planBundle(const std::string& config_json, const std::filesystem::path& bundle);

// A process.json (runc exec --process) or the fields of config.json's process.
struct ProcessPlan {
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string cwd;
  std::string user;  // "uid:gid" ("" not given)
  bool terminal = false;
};
Result<ProcessPlan> planProcess(const std::string& process_json);

// The `features` JSON (runtime-spec features.md): what this runtime honours.
std::string featuresJson();

}  // namespace microvm::oci
