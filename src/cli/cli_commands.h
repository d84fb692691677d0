// The commands of `microvm`, one family per file. Each add*Command function
// adds its subcommand with its flags to `app` and registers its action in
// `commands`; cli.cc calls them in the order the help lists them.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "cli_common.h"

namespace microvm::cli {

// cli_run.cc. `run` and `create` take the workload's command from `command`,
// which cli.cc fills before parsing; they return their subcommand for that.
CLI::App* addRunCommand(CLI::App& app, GlobalFlags& global, const std::vector<std::string>& command,
                        Commands& commands);
CLI::App* addCreateCommand(CLI::App& app, GlobalFlags& global, const std::vector<std::string>& command,
                           Commands& commands);
void addStartCommand(CLI::App& app, GlobalFlags& global, Commands& commands);

// cli_exec.cc: into running VMs. `exec` takes VM COMMAND... from `words`.
CLI::App* addExecCommand(CLI::App& app, GlobalFlags& global, const std::vector<std::string>& words,
                         Commands& commands);
void addCpCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addAttachCommand(CLI::App& app, GlobalFlags& global, Commands& commands);

// cli_lifecycle.cc: listing, watching and changing the state of VMs.
void addRestartCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addPsCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addInspectCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addLogsCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addStopCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addKillCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addRmCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addWaitCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addPauseCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addUnpauseCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addSuspendCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addResumeCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addPruneCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addPortCommand(CLI::App& app, GlobalFlags& global, Commands& commands);

// cli_snapshot.cc: `snapshot create|ls|rm|restore`, `template ls|rm|prune`, `fork`.
void addSnapshotCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addTemplateCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addForkCommand(CLI::App& app, GlobalFlags& global, Commands& commands);

// cli_images.cc: images and registry credentials.
void addPullCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addImagesCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addRmiCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addImageCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addLoginCommand(CLI::App& app, GlobalFlags& global, Commands& commands);

// cli_system.cc: the host.
void addDoctorCommand(CLI::App& app, GlobalFlags& global, Commands& commands);
void addInfoCommand(CLI::App& app, GlobalFlags& global, Commands& commands);

}  // namespace microvm::cli
