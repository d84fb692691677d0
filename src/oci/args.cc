// runc's command line (commands.h): global flags, then a command, its flags
// and operands. Flags runc has that mean nothing for a VM (--no-pivot,
// --no-new-keyring, --preserve-fds...) are accepted and ignored, as engines
// pass them.
#include <unistd.h>

#include <iostream>
#include <set>

#include "microvm/version.h"
#include "oci/commands.h"

namespace microvm::oci {
namespace {

const char kUsage[] =
    "usage: microvm-runtime [--root DIR] [--log FILE] [--log-format text|json] COMMAND [OPTIONS] ID\n"
    "commands: create --bundle DIR [--pid-file F] [--console-socket S] ID | start ID | state ID |\n"
    "          kill [--all] ID [SIGNAL] | delete [--force] ID | exec [--process F | ARGS] [--tty] [--detach]\n"
    "          [--pid-file F] [--console-socket S] ID | ps [--format json] ID | list [--format json] [-q] |\n"
    "          pause ID | resume ID | features | --version\n"
    "Runs each container as a microVM (docs/KUBERNETES.md).\n";

// Flags taking a value, per command ("" = global).
const std::set<std::string> kValueFlags = {
    "root", "log", "log-format", "criu", "rootless", "bundle", "b", "pid-file", "console-socket", "process",
    "p", "cwd", "env", "e", "user", "u", "format", "preserve-fds", "cap", "c", "apparmor", "process-label",
    "additional-gids", "g", "signal", "s"};

}  // namespace

int runtimeMain(int argc, char** argv) {
  GlobalOptions global;
  if (::geteuid() == 0) {
    global.root = "/run/microvm-runtime";
  } else {
    const char* runtime_dir = std::getenv("XDG_RUNTIME_DIR");
    global.root = std::string(runtime_dir != nullptr ? runtime_dir : "/tmp") + "/microvm-runtime";
  }
  Command command;
  std::vector<std::string> operands;
  bool after_dashdash = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (after_dashdash || arg.size() < 2 || arg[0] != '-' ||
        (command.name == "exec" && !operands.empty())) {  // exec ID ARGS...: the rest is the command
      if (command.name.empty()) {
        command.name = arg;
      } else {
        operands.push_back(arg);
      }
      continue;
    }
    if (arg == "--") {
      after_dashdash = true;
      continue;
    }
    std::string name = arg.substr(arg[1] == '-' ? 2 : 1);
    std::string value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    // -f is --format for list and ps, --force for delete.
    bool takes_value = kValueFlags.count(name) || (name == "f" && (command.name == "list" || command.name == "ps"));
    if (takes_value && !has_value) {
      if (i + 1 >= argc) {
        std::cerr << "microvm-runtime: flag --" << name << " needs a value\n";
        return 1;
      }
      value = argv[++i];
    }
    if (name == "version" || (name == "v" && command.name.empty())) {
      std::cout << "microvm-runtime version " << kVersion << "\nspec: 1.1.0\n";
      return 0;
    }
    if (name == "help" || name == "h") {
      std::cout << kUsage;
      return 0;
    }
    if (name == "root") global.root = value;
    else if (name == "log") global.log = value;
    else if (name == "log-format") global.log_json = value == "json";
    else if (name == "bundle" || name == "b") command.bundle = value;
    else if (name == "pid-file") command.pid_file = value;
    else if (name == "console-socket") command.console_socket = value;
    else if (name == "process" || name == "p") command.process_file = value;
    else if (name == "cwd") command.cwd = value;
    else if (name == "env" || name == "e") command.env.push_back(value);
    else if (name == "user" || name == "u") command.user = value;
    else if (name == "format" || (name == "f" && takes_value)) command.format = value;
    else if (name == "force" || name == "f") command.force = true;
    else if (name == "all" || name == "a") command.all = true;
    else if (name == "tty" || name == "t") command.tty = true;
    else if (name == "detach" || name == "d") command.detach = true;
    else if (name == "quiet" || name == "q") command.quiet = true;
    // The rest (--systemd-cgroup, --debug, --no-pivot, --no-new-keyring,
    // --preserve-fds, --criu...) is accepted and means nothing for a VM.
  }
  if (command.name.empty()) {
    std::cerr << kUsage;
    return 1;
  }
  if (!operands.empty()) {
    command.id = operands[0];
    command.args.assign(operands.begin() + 1, operands.end());
  }
  std::string line = "argv:";
  for (int i = 1; i < argc; ++i) line += std::string(" ") + argv[i];
  appendLog(global, "debug", line);
  return runCommand(global, command);
}

}  // namespace microvm::oci
