// `microvm ps`, `inspect`, `logs`, `wait`, `port`, and the commands that
// change a VM's state: `stop`, `restart`, `kill`, `rm`, `pause`, `unpause`,
// `suspend`, `resume` and `prune`.
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <utility>

#include "cli_commands.h"
#include "microvm/options.h"

namespace microvm::cli {

namespace {

std::string describeStatus(const VmInfo& vm) {
  if (vm.status == "running") return "Up " + duration(::time(nullptr) - parseTime(vm.started_at));
  if (vm.status == "paused") return "Up " + duration(::time(nullptr) - parseTime(vm.started_at)) + " (Paused)";
  if (vm.status == "suspended") return "Suspended";
  if (vm.status == "exited") {
    std::string code = vm.has_exit_code ? std::to_string(vm.exit_code) : "?";
    return "Exited (" + code + ") " + ago(vm.finished_at);
  }
  return "Created";
}

std::string shortCommand(const std::vector<std::string>& argv) {
  std::string text;
  for (const auto& arg : argv) text += (text.empty() ? "" : " ") + arg;
  if (text.size() > 20) text = text.substr(0, 19) + "…";
  return "\"" + text + "\"";
}

// Docker's PORTS column: "127.0.0.1:8080->80/tcp, ..." from `port` lines.
std::string psPorts(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) {
    size_t arrow = line.find(" -> ");
    if (arrow == std::string::npos) continue;
    text += (text.empty() ? "" : ", ") + line.substr(arrow + 4) + "->" + line.substr(0, arrow);
  }
  return text;
}

int cmdPs(const GlobalFlags& global, bool all, const std::string& format, bool quiet) {
  if (format != "table" && format != "json") return fail("unknown format \"" + format + "\" (want table or json)");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto vms = runtime->list(all);
  if (!vms) return fail(vms.error());
  if (quiet) {
    for (const auto& vm : *vms) std::cout << vm.id.substr(0, 12) << "\n";
    return 0;
  }
  if (format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& vm : *vms) list.push_back(toJson(vm));
    std::cout << list.dump(2) << "\n";
    return 0;
  }
  std::printf("%-12s   %-20s   %-22s   %-16s   %-24s   %s\n", "VM ID", "NAME", "COMMAND", "CREATED", "STATUS",
              "PORTS");
  for (const auto& vm : *vms) {
    std::printf("%-12s   %-20s   %-22s   %-16s   %-24s   %s\n", vm.id.substr(0, 12).c_str(), vm.name.c_str(),
                shortCommand(vm.command).c_str(), ago(vm.created_at).c_str(), describeStatus(vm).c_str(),
                psPorts(vm.ports).c_str());
  }
  return 0;
}

int cmdInspect(const GlobalFlags& global, const std::vector<std::string>& refs) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  nlohmann::json list = nlohmann::json::array();
  int code = 0;
  for (const auto& ref : refs) {
    auto vm = runtime->inspect(ref);
    if (!vm) {
      std::fprintf(stderr, "microvm: %s\n", vm.error().message().c_str());
      code = 1;
      continue;
    }
    list.push_back(toJson(*vm));
  }
  std::cout << list.dump(2) << "\n";
  return code;
}

int cmdLogs(const GlobalFlags& global, const std::string& ref, const LogOptions& options) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto shown = runtime->logs(ref, options, STDOUT_FILENO, STDERR_FILENO);
  if (!shown) return fail(shown.error());
  return 0;
}

int cmdWait(const GlobalFlags& global, const std::vector<std::string>& refs) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  int code = 0;
  for (const auto& ref : refs) {
    auto exit_code = runtime->wait(ref);
    if (!exit_code) {
      std::fprintf(stderr, "microvm: %s\n", exit_code.error().message().c_str());
      code = 1;
      continue;
    }
    std::cout << *exit_code << std::endl;
  }
  return code;
}

// microvm port VM [GUESTPORT[/proto]] | VM add SPEC... | VM rm SPEC...
int cmdPort(const GlobalFlags& global, const std::vector<std::string>& args) {
  if (args.empty()) return fail("port: name a VM");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  const std::string& vm = args[0];
  if (args.size() >= 2 && (args[1] == "add" || args[1] == "rm")) {
    if (args.size() < 3) return fail("port " + args[1] + ": give a port mapping");
    int code = 0;
    for (size_t i = 2; i < args.size(); ++i) {
      if (args[1] == "add") {
        auto added = runtime->addPort(vm, args[i]);
        if (!added) {
          std::fprintf(stderr, "microvm: %s\n", added.error().message().c_str());
          code = 1;
        } else {
          std::cout << *added << "\n";
        }
      } else if (auto removed = runtime->removePort(vm, args[i]); !removed) {
        std::fprintf(stderr, "microvm: %s\n", removed.error().message().c_str());
        code = 1;
      }
    }
    return code;
  }
  if (args.size() > 2) return fail("port: want VM [GUESTPORT[/PROTO]], VM add SPEC or VM rm SPEC");
  auto lines = runtime->ports(vm);
  if (!lines) return fail(lines.error());
  std::string filter;
  if (args.size() == 2) filter = args[1].find('/') == std::string::npos ? args[1] + "/tcp" : args[1];
  bool any = false;
  for (const auto& line : *lines) {
    if (!filter.empty()) {
      if (line.rfind(filter + " -> ", 0) != 0) continue;
      std::cout << line.substr(filter.size() + 4) << "\n";  // as Docker: only the host side
    } else {
      std::cout << line << "\n";
    }
    any = true;
  }
  if (!filter.empty() && !any) return fail("no public port '" + filter + "' published for " + vm);
  return 0;
}

int cmdPrune(const GlobalFlags& global) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto removed = runtime->prune();
  if (!removed) return fail(removed.error());
  for (const auto& id : *removed) std::cout << id << "\n";
  return 0;
}

// `action(runtime, ref)` for each VM, printed as forEachVm does.
template <typename Action>
int forEachVmOpened(const GlobalFlags& global, const std::vector<std::string>& refs, Action action) {
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  return forEachVm(refs, [&](const std::string& ref) { return action(*runtime, ref); });
}

}  // namespace

void addRestartCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct RestartFlags {
    std::vector<std::string> refs;
    int timeout = 10;
  };
  auto flags = std::make_shared<RestartFlags>();
  auto* restart_cmd = app.add_subcommand("restart", "Stop, then start one or more VMs");
  restart_cmd->add_option("vm", flags->refs, "VM id, id prefix or name")->required();
  restart_cmd->add_option("-t,--time", flags->timeout, "Seconds to wait for the workload before stopping it hard");
  commands.add(restart_cmd, [&global, flags] {
    return forEachVmOpened(global, flags->refs, [&](Runtime& runtime, const std::string& ref) -> Result<void> {
      MICROVM_TRY(runtime.stop(ref, flags->timeout));
      auto vm = runtime.start(ref);
      if (!vm) return std::move(vm).error();
      return success();
    });
  });
}

void addPsCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct PsFlags {
    bool all = false;
    bool quiet = false;
    std::string format;
  };
  auto flags = std::make_shared<PsFlags>();
  auto* ps_cmd = app.add_subcommand("ps", "List VMs");
  ps_cmd->add_flag("-a,--all", flags->all, "Show all VMs (default: only running ones)");
  ps_cmd->add_flag("-q,--quiet", flags->quiet, "Only show short ids");
  ps_cmd->add_option("--format", flags->format, "table (default) or json")->default_str("table");
  commands.add(ps_cmd, [&global, flags] {
    return cmdPs(global, flags->all, flags->format.empty() ? "table" : flags->format, flags->quiet);
  });
}

void addInspectCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  auto refs = std::make_shared<std::vector<std::string>>();
  auto* inspect_cmd = app.add_subcommand("inspect", "Show the full record of one or more VMs, as JSON");
  inspect_cmd->add_option("vm", *refs, "VM id, id prefix or name")->required();
  commands.add(inspect_cmd, [&global, refs] { return cmdInspect(global, *refs); });
}

void addLogsCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct LogsFlags {
    std::string ref;
    LogOptions options;
  };
  auto flags = std::make_shared<LogsFlags>();
  auto* logs_cmd = app.add_subcommand("logs", "Show a VM's workload output");
  logs_cmd->add_option("vm", flags->ref, "VM id, id prefix or name")->required();
  logs_cmd->add_flag("-f,--follow", flags->options.follow, "Follow the output until the VM exits");
  logs_cmd->add_option("-n,--tail", flags->options.tail, "Only the last N records");
  logs_cmd->add_flag("-t,--timestamps", flags->options.timestamps, "Prefix each record with its time");
  logs_cmd->add_flag("--console", flags->options.console, "Show the guest kernel console instead");
  commands.add(logs_cmd, [&global, flags] { return cmdLogs(global, flags->ref, flags->options); });
}

void addStopCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct StopFlags {
    std::vector<std::string> refs;
    int timeout = 10;
  };
  auto flags = std::make_shared<StopFlags>();
  auto* stop_cmd = app.add_subcommand("stop", "Stop one or more VMs (SIGTERM, then a hard stop)");
  stop_cmd->add_option("vm", flags->refs, "VM id, id prefix or name")->required();
  stop_cmd->add_option("-t,--time", flags->timeout, "Seconds to wait before stopping hard")->check(CLI::NonNegativeNumber);
  commands.add(stop_cmd, [&global, flags] {
    return forEachVmOpened(global, flags->refs,
                           [&](Runtime& runtime, const std::string& ref) { return runtime.stop(ref, flags->timeout); });
  });
}

void addKillCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct KillFlags {
    std::vector<std::string> refs;
    std::string signal_name = "KILL";
  };
  auto flags = std::make_shared<KillFlags>();
  auto* kill_cmd = app.add_subcommand("kill", "Send a signal to the workload of one or more VMs");
  kill_cmd->add_option("vm", flags->refs, "VM id, id prefix or name")->required();
  kill_cmd->add_option("-s,--signal", flags->signal_name, "Signal name or number (default KILL)");
  commands.add(kill_cmd, [&global, flags] {
    auto runtime = openRuntime(global);
    if (!runtime) return fail(runtime.error());
    auto signal = parseSignal(flags->signal_name);
    if (!signal) return fail(signal.error());
    return forEachVm(flags->refs, [&](const std::string& ref) { return runtime->kill(ref, *signal); });
  });
}

void addRmCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct RmFlags {
    std::vector<std::string> refs;
    bool force = false;
  };
  auto flags = std::make_shared<RmFlags>();
  auto* rm_cmd = app.add_subcommand("rm", "Remove one or more VMs and all their files");
  rm_cmd->add_option("vm", flags->refs, "VM id, id prefix or name")->required();
  rm_cmd->add_flag("-f,--force", flags->force, "Stop a running VM hard first");
  commands.add(rm_cmd, [&global, flags] {
    return forEachVmOpened(global, flags->refs,
                           [&](Runtime& runtime, const std::string& ref) { return runtime.remove(ref, flags->force); });
  });
}

void addWaitCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  auto refs = std::make_shared<std::vector<std::string>>();
  auto* wait_cmd = app.add_subcommand("wait", "Wait for VMs to exit and print their exit codes");
  wait_cmd->add_option("vm", *refs, "VM id, id prefix or name")->required();
  commands.add(wait_cmd, [&global, refs] { return cmdWait(global, *refs); });
}

void addPauseCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  auto refs = std::make_shared<std::vector<std::string>>();
  auto* pause_cmd = app.add_subcommand("pause", "Freeze the vCPUs of one or more VMs");
  pause_cmd->add_option("vm", *refs, "VM id, id prefix or name")->required();
  commands.add(pause_cmd, [&global, refs] {
    return forEachVmOpened(global, *refs, [](Runtime& runtime, const std::string& ref) { return runtime.pause(ref); });
  });
}

void addUnpauseCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  auto refs = std::make_shared<std::vector<std::string>>();
  auto* unpause_cmd = app.add_subcommand("unpause", "Thaw the vCPUs of paused VMs");
  unpause_cmd->add_option("vm", *refs, "VM id, id prefix or name")->required();
  commands.add(unpause_cmd, [&global, refs] {
    return forEachVmOpened(global, *refs, [](Runtime& runtime, const std::string& ref) { return runtime.unpause(ref); });
  });
}

void addSuspendCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  auto refs = std::make_shared<std::vector<std::string>>();
  auto* suspend_cmd =
      app.add_subcommand("suspend", "Save VMs' memory to disk and end their processes (resume brings them back)");
  suspend_cmd->add_option("vm", *refs, "VM id, id prefix or name")->required();
  commands.add(suspend_cmd, [&global, refs] {
    return forEachVmOpened(global, *refs, [](Runtime& runtime, const std::string& ref) { return runtime.suspend(ref); });
  });
}

void addResumeCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  auto refs = std::make_shared<std::vector<std::string>>();
  auto* resume_cmd = app.add_subcommand("resume", "Bring suspended VMs back where they were (paused ones: unpause)");
  resume_cmd->add_option("vm", *refs, "VM id, id prefix or name")->required();
  commands.add(resume_cmd, [&global, refs] {
    return forEachVmOpened(global, *refs, [](Runtime& runtime, const std::string& ref) { return runtime.resume(ref); });
  });
}

void addPruneCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  auto* prune_cmd = app.add_subcommand("prune", "Remove every VM that is not running");
  commands.add(prune_cmd, [&global] { return cmdPrune(global); });
}

void addPortCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  auto args = std::make_shared<std::vector<std::string>>();
  auto* port_cmd = app.add_subcommand("port", "List a VM's port forwards, or change them: port VM add|rm SPEC");
  port_cmd->add_option("args", *args, "VM [GUESTPORT[/PROTO]] | VM add SPEC... | VM rm SPEC...")->required();
  commands.add(port_cmd, [&global, args] { return cmdPort(global, *args); });
}

}  // namespace microvm::cli
