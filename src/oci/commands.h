// microvm-runtime's commands, as runc's command line names them. main()
// parses argv into a Command and calls run(); everything below drives VMs
// through microvm::Runtime only.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace microvm::oci {

struct GlobalOptions {
  std::filesystem::path root;   // --root; default /run/microvm-runtime (root) or $XDG_RUNTIME_DIR/microvm-runtime
  std::filesystem::path log;    // --log: errors (and the VM library's warnings) also go here
  bool log_json = false;        // --log-format json
};

struct Command {
  std::string name;                     // create, start, state, kill, delete, exec, ps, list, features, pause, resume
  std::string id;
  std::filesystem::path bundle = ".";
  std::filesystem::path pid_file;
  std::filesystem::path console_socket;
  std::filesystem::path process_file;   // exec --process
  std::vector<std::string> args;        // exec ARGS, kill SIGNAL
  std::vector<std::string> env;         // exec --env
  std::string cwd;                      // exec --cwd
  std::string user;                     // exec --user
  std::string format = "table";         // list/ps --format
  bool force = false;                   // delete --force
  bool all = false;                     // kill --all
  bool tty = false;                     // exec --tty
  bool detach = false;                  // exec --detach
  bool quiet = false;                   // list --quiet
};

// Parses argv (runc's syntax; flags as --name VALUE, --name=VALUE, or
// -name) and runs the command. Returns the process's exit code.
int runtimeMain(int argc, char** argv);

int runCommand(const GlobalOptions& global, const Command& command);

// One line in --log, in --log-format (engines parse runc's JSON lines).
void appendLog(const GlobalOptions& global, const std::string& level, const std::string& message);

}  // namespace microvm::oci
