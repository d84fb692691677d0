// The `microvm` app: the global flags, the commands in their help order
// (each family in its cli_*.cc), and the split of the workload's command.
#include "cli.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <vector>

#include "cli_commands.h"
#include "cli_common.h"
#include "microvm/version.h"

namespace microvm::cli {

namespace {

// True if `word` names an option of `app` that takes a value in the next word.
bool takesSeparateValue(const CLI::App& app, const std::string& word) {
  if (word.size() < 2 || word[0] != '-' || word.find('=') != std::string::npos) return false;
  const CLI::Option* option = app.get_option_no_throw(word);
  return option != nullptr && option->get_items_expected_min() > 0;
}

// Docker's rule for `run [OPTIONS] [--] COMMAND [ARG...]`: the first word
// that is not an option (or follows "--") starts the workload's command.
// Moves that tail into `command` and returns how many words remain to parse.
int splitWorkloadCommand(const CLI::App& app, std::initializer_list<const CLI::App*> commands, int argc,
                         char** argv, std::vector<std::string>& command) {
  int i = 1;
  while (i < argc && argv[i][0] == '-') i += takesSeparateValue(app, argv[i]) ? 2 : 1;
  if (i >= argc) return argc;
  const CLI::App* found = nullptr;
  for (const auto* candidate : commands) {
    if (candidate->get_name() == argv[i]) found = candidate;
  }
  if (!found) return argc;
  const CLI::App& run = *found;
  for (++i; i < argc; ++i) {
    std::string word = argv[i];
    if (word == "--") {
      command.assign(argv + i + 1, argv + argc);
      return i;
    }
    if (word.size() < 2 || word[0] != '-') {
      command.assign(argv + i, argv + argc);
      return i;
    }
    if (takesSeparateValue(run, word)) ++i;
  }
  return argc;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"microvm: run OCI container images as hardware-isolated microVMs", "microvm"};
  app.require_subcommand(1);
  app.set_version_flag("-v,--version", std::string("microvm version ") + kVersion);
  GlobalFlags global;
  app.add_option("--data-dir", global.data_dir, "Where VMs and images live (default: $MICROVM_HOME, "
                                                  "$XDG_DATA_HOME/microvm, or /var/lib/microvm for root)");
  app.add_option("--accel", global.accel, "Acceleration: auto (default), kvm or tcg")
      ->check(CLI::IsMember({"auto", "kvm", "tcg"}));
  app.add_option("--insecure-registry", global.insecure_registries, "Registry to reach over plain http (repeatable)");
  app.add_option("--log-level", global.log_level, "Log the runtime's steps on stderr: debug, info, warn (default), "
                                                  "error or off")
      ->check(CLI::IsMember({"debug", "info", "warn", "warning", "error", "off"}));
  app.add_option("--log-format", global.log_format, "Log lines as text (default) or json (one object per line)")
      ->check(CLI::IsMember({"text", "json"}));

  // The order of the help's command list.
  Commands commands;
  std::vector<std::string> command;
  auto* run_cmd = addRunCommand(app, global, command, commands);
  auto* exec_cmd = addExecCommand(app, global, command, commands);
  addCpCommand(app, global, commands);
  auto* create_cmd = addCreateCommand(app, global, command, commands);
  addStartCommand(app, global, commands);
  addAttachCommand(app, global, commands);
  addRestartCommand(app, global, commands);
  addPsCommand(app, global, commands);
  addInspectCommand(app, global, commands);
  addLogsCommand(app, global, commands);
  addStopCommand(app, global, commands);
  addKillCommand(app, global, commands);
  addRmCommand(app, global, commands);
  addWaitCommand(app, global, commands);
  addPauseCommand(app, global, commands);
  addUnpauseCommand(app, global, commands);
  addSuspendCommand(app, global, commands);
  addResumeCommand(app, global, commands);
  addPruneCommand(app, global, commands);
  addPortCommand(app, global, commands);
  addSnapshotCommand(app, global, commands);
  addTemplateCommand(app, global, commands);
  addForkCommand(app, global, commands);
  addPullCommand(app, global, commands);
  addImagesCommand(app, global, commands);
  addRmiCommand(app, global, commands);
  addImageCommand(app, global, commands);
  addLoginCommand(app, global, commands);
  addDoctorCommand(app, global, commands);
  addInfoCommand(app, global, commands);

  // Everything from COMMAND on belongs to the workload, options included, so
  // only the words before it go to the parser.
  int parsed_argc = splitWorkloadCommand(app, {run_cmd, create_cmd, exec_cmd}, argc, argv, command);
  try {
    app.parse(parsed_argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string sub;
    for (const auto* candidate : app.get_subcommands()) sub = candidate->get_name() + " ";
    std::fprintf(stderr, "microvm: %s\nSee 'microvm %s--help'.\n", e.what(), sub.c_str());
    return kExitCliError;
  }

  return commands.runParsed();
}

}  // namespace microvm::cli
