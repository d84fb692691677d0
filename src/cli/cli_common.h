// What every command family of the `microvm` CLI shares: the global flags
// and the runtime they open, error printing with Docker's exit codes, the
// table of registered commands, and the time formats of the listings.
//
// Each family (cli_run.cc, cli_exec.cc, ...) has an add*Command function
// per command; cli.cc calls them in the order `microvm --help` lists them:
//
//   Commands commands;
//   addPsCommand(app, global, commands);   // registers `ps`, its flags and its action
//   app.parse(argc, argv);
//   return commands.runParsed();
#pragma once

#include <time.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "microvm/runtime.h"

namespace microvm::cli {

constexpr int kExitCliError = 125;  // Docker's code for "the runtime itself failed"

// Prints "microvm: MESSAGE" on stderr and returns kExitCliError.
int fail(const std::string& message);
int fail(const Error& error);

struct GlobalFlags {
  std::string data_dir;
  std::string accel;
  std::vector<std::string> insecure_registries;
  std::string log_level = "warn";
  std::string log_format = "text";
  int pull_timeout = 3600;  // seconds; set by pull, run and create
  int pull_stall_timeout = 60;
};

Result<Runtime> openRuntime(const GlobalFlags& flags);

// The flags of every command that may pull an image.
void addPullFlags(CLI::App& command, GlobalFlags& flags);

// The commands of the app, each with what it does once the parse chose it.
// An action shares ownership of the flags the parser's bindings write into.
class Commands {
 public:
  using Action = std::function<int()>;

  void add(const CLI::App* command, Action action) { actions_.emplace_back(command, std::move(action)); }
  // The exit code of the action of the command that was parsed; 0 if none was.
  int runParsed() const;

 private:
  std::vector<std::pair<const CLI::App*, Action>> actions_;
};

// `-e KEY` takes KEY's value from our environment, as Docker does; unset keys are dropped.
std::vector<std::string> expandEnv(const std::vector<std::string>& entries);

// Docker prints each reference it acted on, and an error line for each it
// could not; the exit status is 1 if any failed.
template <typename Action>
int forEachVm(const std::vector<std::string>& refs, Action action) {
  int code = 0;
  for (const auto& ref : refs) {
    if (auto done = action(ref); !done) {
      std::fprintf(stderr, "microvm: %s\n", done.error().message().c_str());
      code = 1;
    } else {
      std::cout << ref << "\n";
    }
  }
  return code;
}

// RFC 3339 UTC ("2026-11-22T05:28:05.123Z") to seconds since the epoch; 0 if unreadable.
time_t parseTime(const std::string& text);
// "5 seconds", "3 minutes", as Docker shows durations.
std::string duration(time_t seconds);
// "5 seconds ago" for an RFC 3339 time; "" if unreadable.
std::string ago(const std::string& when);

nlohmann::json toJson(const VmInfo& vm);

}  // namespace microvm::cli
