// The text forms of RunOptions' fields, as `microvm run` takes them on its
// command line: every front end (the CLI, a daemon's requests) parses them
// here, with the same rules and the same error messages.
//
//   microvm::RunOptions options;
//   auto volume = microvm::parseVolume("/srv/data:/data:ro");
//   if (!volume) { report(volume.error()); return; }
//   options.volumes.push_back(*volume);
//   auto memory = microvm::parseMemoryMib("2g");           // 2048
//   MICROVM_TRY(microvm::applyLogOpt("max-size=10m,max-file=3", options));
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "microvm/result.h"
#include "microvm/runtime.h"

namespace microvm {

// -v HOST:GUEST[:OPTIONS], OPTIONS a comma-separated list of ro, rw, uid=N
// and gid=N (as Docker's and podman's volume options are).
Result<Volume> parseVolume(std::string_view text);

// --vsock PORT:HOST_SOCKET_PATH[:listen].
Result<VsockPort> parseVsockPort(std::string_view text);

// -m: "512" (MiB), "512m", "2g", "1048576k", "536870912b" -> MiB (at most
// 2^30); a size that is not a whole number of MiB is refused.
Result<int> parseMemoryMib(std::string_view text);

// One --security-opt: seccomp=unconfined|PATH, no-new-privileges[=true|false]
// or sysctl-hardening=true|false, applied to `options`.
Result<void> applySecurityOpt(std::string_view text, RunOptions& options);

// One --log-opt, Docker's json-file options: max-size=SIZE (bytes, or with
// k, m, g: 1024-based, as Docker's) and max-file=N, one KEY=VALUE or several
// separated by commas, applied to `options` (RunOptions::log_max_size and
// log_max_files; their bounds are checked when the VM is made).
Result<void> applyLogOpt(std::string_view text, RunOptions& options);

// Docker's --env-file format: KEY=VALUE lines, KEY alone (the caller decides
// where its value comes from), blank lines and '#' comments skipped; leading
// spaces and trailing spaces and CRs of each line are dropped.
std::vector<std::string> parseEnvFile(std::string_view content);
// The entries of each file in turn; a file that cannot be opened fails.
Result<std::vector<std::string>> readEnvFiles(const std::vector<std::string>& paths);

// A signal as `kill --signal` takes it: "TERM", "SIGTERM", "term" or "15".
Result<int> parseSignal(std::string_view text);

}  // namespace microvm
