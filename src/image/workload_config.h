// How an image's config and `run` options combine into what runs, with
// exactly Docker's rules:
//   --entrypoint E  replaces the image's Entrypoint and drops its Cmd;
//                   "" clears the Entrypoint;
//   trailing args   replace the image's Cmd;
//   -e KEY=VALUE    overrides the image's Env entry for KEY, or adds one;
//   -w / -u         replace WorkingDir / User.
//
//   ImageDefaults image{.entrypoint = {"/bin/sh", "-c"}, .cmd = {"echo hi"}};
//   auto workload = mergeImageDefaults(image, {.args = {"echo bye"}});
//   // workload->argv == {"/bin/sh", "-c", "echo bye"}
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "microvm/result.h"

namespace microvm {

struct ImageDefaults {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "KEY=VALUE"
  std::string working_dir;
  std::string user;
};

struct WorkloadOverrides {
  std::optional<std::string> entrypoint;
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string workdir;  // empty: the image's
  std::string user;     // empty: the image's
};

struct MergedWorkload {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string workdir;
  std::string user;
};

Result<MergedWorkload> mergeImageDefaults(const ImageDefaults& image, const WorkloadOverrides& overrides);

// Environment entries of `base` with `overrides` applied by key, in order.
std::vector<std::string> mergeEnv(const std::vector<std::string>& base, const std::vector<std::string>& overrides);

}  // namespace microvm
