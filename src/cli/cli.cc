#include "cli/cli.h"

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "microvm/runtime.h"
#include "microvm/version.h"

namespace microvm::cli {

namespace {

constexpr int kExitCliError = 125;  // Docker's code for "the runtime itself failed"

int fail(const std::string& message) {
  std::fprintf(stderr, "microvm: %s\n", message.c_str());
  return kExitCliError;
}

int fail(const Error& error) { return fail(error.message()); }

// "512" (MiB), "512m", "2g", "1048576k", "536870912b" -> MiB.
Result<int> parseMemory(const std::string& text) {
  auto invalid = Error(ErrorCode::kInvalidArgument,
                       "invalid memory size \"" + text + "\" (want MiB, or a number with b, k, m or g)");
  if (text.empty()) return invalid;
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 15 || text.size() - digits > 1) return invalid;
  unsigned long long value = std::stoull(text.substr(0, digits));
  char unit = digits < text.size() ? static_cast<char>(std::tolower(text[digits])) : 'm';
  unsigned long long bytes = 0;
  switch (unit) {
    case 'b': bytes = value; break;
    case 'k': bytes = value << 10; break;
    case 'm': bytes = value << 20; break;
    case 'g': bytes = value << 30; break;
    default: return invalid;
  }
  if (bytes % (1 << 20) != 0) return Error(ErrorCode::kInvalidArgument, "memory size \"" + text + "\" is not a whole number of MiB");
  return static_cast<int>(std::min<unsigned long long>(bytes >> 20, 1u << 30));
}

// `-e KEY` takes KEY's value from our environment, as Docker does; unset keys are dropped.
std::vector<std::string> expandEnv(const std::vector<std::string>& entries) {
  std::vector<std::string> env;
  for (const auto& entry : entries) {
    if (entry.find('=') != std::string::npos) {
      env.push_back(entry);
    } else if (const char* value = std::getenv(entry.c_str())) {
      env.push_back(entry + "=" + value);
    }
  }
  return env;
}

struct GlobalFlags {
  std::string data_dir;
  std::string accel;
};

Result<Runtime> openRuntime(const GlobalFlags& flags) {
  RuntimeOptions options;
  options.data_dir = flags.data_dir;
  options.accel = flags.accel;
  return Runtime::open(options);
}

struct RunFlags {
  bool remove = false;
  int cpus = 1;
  std::string memory = "512";
  std::vector<std::string> env;
  std::string workdir = "/";
  std::string user;
  std::string hostname;
  std::string name;
  std::string rootfs;
  int stop_timeout = 10;
};

int cmdRun(const GlobalFlags& global, const RunFlags& flags, std::vector<std::string> command) {
  auto memory = parseMemory(flags.memory);
  if (!memory) return fail(memory.error());
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());

  RunOptions options;
  options.rootfs = flags.rootfs;
  options.command = std::move(command);
  options.env = expandEnv(flags.env);
  options.workdir = flags.workdir;
  options.user = flags.user;
  options.hostname = flags.hostname;
  options.name = flags.name;
  options.cpus = flags.cpus;
  options.memory_mib = *memory;
  options.remove = flags.remove;
  options.stop_timeout_seconds = flags.stop_timeout;

  // Block the stop signals before the VM exists, so none is lost; a helper
  // thread forwards each one to the VM (Docker's sig-proxy).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop_signals, sig);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto vm = runtime->start(options);
  if (!vm) return fail(vm.error());
  std::thread([&stop_signals, runner = &*vm] {
    for (;;) {
      int sig = 0;
      if (sigwait(&stop_signals, &sig) == 0) runner->signal(sig);
    }
  }).detach();
  auto code = vm->wait();
  if (!code) return fail(code.error());
  return *code;
}

int cmdInfo(const GlobalFlags& global, const std::string& format) {
  if (format != "text" && format != "json") return fail("unknown format \"" + format + "\" (want text or json)");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto info = runtime->info();
  if (!info) return fail(info.error());
  if (format == "json") {
    nlohmann::json j = {{"version", kVersion},
                        {"qemu", info->qemu},
                        {"qemu_version", info->qemu_version},
                        {"kernel", info->kernel.string()},
                        {"initramfs", info->initramfs.string()},
                        {"accel", info->accel},
                        {"accel_reason", info->accel_reason},
                        {"data_dir", info->data_dir.string()}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "Version:       " << kVersion << "\n"
              << "QEMU:          " << info->qemu << "\n"
              << "QEMU version:  " << info->qemu_version << "\n"
              << "Kernel:        " << info->kernel.string() << "\n"
              << "Initramfs:     " << info->initramfs.string() << "\n"
              << "Acceleration:  " << info->accel << " (" << info->accel_reason << ")\n"
              << "Data dir:      " << info->data_dir.string() << "\n";
  }
  return 0;
}

// True if `word` names an option of `app` that takes a value in the next word.
bool takesSeparateValue(const CLI::App& app, const std::string& word) {
  if (word.size() < 2 || word[0] != '-' || word.find('=') != std::string::npos) return false;
  const CLI::Option* option = app.get_option_no_throw(word);
  return option != nullptr && option->get_items_expected_min() > 0;
}

// Docker's rule for `run [OPTIONS] [--] COMMAND [ARG...]`: the first word
// that is not an option (or follows "--") starts the workload's command.
// Moves that tail into `command` and returns how many words remain to parse.
int splitWorkloadCommand(const CLI::App& app, const CLI::App& run, int argc, char** argv,
                         std::vector<std::string>& command) {
  int i = 1;
  while (i < argc && argv[i][0] == '-') i += takesSeparateValue(app, argv[i]) ? 2 : 1;
  if (i >= argc || std::string(argv[i]) != run.get_name()) return argc;
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

  RunFlags run;
  std::vector<std::string> command;
  auto* run_cmd = app.add_subcommand("run", "Run a command in a new microVM");
  run_cmd->footer("Usage: microvm run [OPTIONS] --rootfs DIR [--] COMMAND [ARG...]");
  run_cmd->add_flag("--rm", run.remove, "Remove the VM and all its files when it exits");
  run_cmd->add_option("--rootfs", run.rootfs, "Host directory to use as the root filesystem")->required();
  run_cmd->add_option("--cpus", run.cpus, "Number of vCPUs")->check(CLI::Range(1, 64));
  run_cmd->add_option("-m,--memory", run.memory, "Memory: MiB, or with a unit (512m, 2g)");
  run_cmd->add_option("-e,--env", run.env, "Set an environment variable (KEY=VALUE, or KEY to pass ours)");
  run_cmd->add_option("-w,--workdir", run.workdir, "Working directory inside the VM");
  run_cmd->add_option("-u,--user", run.user, "User inside the VM: UID[:GID] or NAME[:GROUP]");
  run_cmd->add_option("--hostname", run.hostname, "Hostname inside the VM (default: the short VM id)");
  run_cmd->add_option("--name", run.name, "Name of the VM");
  run_cmd->add_option("--stop-timeout", run.stop_timeout,
                      "Seconds between forwarding SIGTERM and stopping the VM hard")
      ->check(CLI::NonNegativeNumber);

  std::string format = "text";
  auto* info_cmd = app.add_subcommand("info", "Show the QEMU, kernel, acceleration and data dir in use");
  info_cmd->add_option("-f,--format", format, "Output format: text or json");

  // Everything from COMMAND on belongs to the workload, options included, so
  // only the words before it go to the parser.
  int parsed_argc = splitWorkloadCommand(app, *run_cmd, argc, argv, command);
  try {
    app.parse(parsed_argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "microvm: %s\nSee 'microvm %s--help'.\n", e.what(),
                 run_cmd->parsed() ? "run " : (info_cmd->parsed() ? "info " : ""));
    return kExitCliError;
  }
  if (run_cmd->parsed()) return cmdRun(global, run, command);
  if (info_cmd->parsed()) return cmdInfo(global, format);
  return 0;
}

}  // namespace microvm::cli
