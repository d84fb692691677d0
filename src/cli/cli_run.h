// The flags of `microvm run` and `create` that describe a VM, and their
// translation into RunOptions (the library's microvm/options.h parses the
// values), testable without booting anything:
//
//   CLI::App app;
//   RunFlags flags;
//   addRunFlags(app, flags);
//   app.parse("-v /srv:/data -m 1g", /*program_name_included=*/false);
//   auto options = toRunOptions(flags, {"busybox", "true"});  // image busybox, command true
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "cli_common.h"
#include "microvm/runtime.h"

namespace microvm::cli {

struct RunFlags {
  bool remove = false;
  bool detach = false;
  bool interactive = false;
  bool tty = false;
  std::vector<std::string> wait_tcp;
  std::vector<std::string> wait_http;
  int wait_timeout = 60;
  int cpus = 1;
  std::string memory = "512";
  std::vector<std::string> env;
  std::string workdir;
  std::string user;
  std::string hostname;
  std::string name;
  std::string rootfs;
  std::string snapshot;
  std::string entrypoint;
  bool has_entrypoint = false;
  std::string platform = "linux/amd64";
  std::vector<std::string> env_files;
  std::vector<std::string> volumes;
  std::vector<std::string> vsock;
  bool no_vsock = false;
  bool no_template = false;
  bool share_memory = false;
  std::vector<std::string> ulimits;
  std::vector<std::string> tmpfs;
  std::string tmp_size;
  std::vector<std::string> cap_add;
  std::vector<std::string> cap_drop;
  bool privileged = false;
  std::vector<std::string> security_opts;
  int stop_timeout = 10;
  std::vector<std::string> log_opts;
  std::string network = "user";
  std::vector<std::string> publish;
  std::vector<std::string> dns;
  std::vector<std::string> add_hosts;
  std::vector<std::string> egress_allow;
  std::vector<std::string> egress_allow_cidr;
  std::vector<std::string> egress_deny;
  bool egress_deny_all = false;
  bool egress_log = false;
};

// The VM-describing flags that run and create share.
void addRunFlags(CLI::App& command, RunFlags& flags);

// The flags and the words after them (IMAGE [COMMAND...], or the command
// alone with --rootfs or --snapshot) as RunOptions. Reads --env-file files
// and, for `-e KEY`, our environment; the fds stay the defaults.
Result<RunOptions> toRunOptions(const RunFlags& flags, std::vector<std::string> command);

// `run -d` of `flags` with no command: how `snapshot restore` starts its VM.
int runDetached(const GlobalFlags& global, RunFlags flags);

}  // namespace microvm::cli
