// `microvm doctor` and `info`: the host, and what microvm runs with there.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_commands.h"
#include "microvm/version.h"

namespace microvm::cli {

namespace {

int cmdDoctor(const GlobalFlags& global, const std::string& format, const std::vector<int>& ports) {
  if (format != "text" && format != "json") return fail("unknown format \"" + format + "\" (want text or json)");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto checks = runtime->doctor(ports);
  bool healthy = true;
  nlohmann::json list = nlohmann::json::array();
  for (const auto& check : checks) {
    healthy = healthy && (check.ok || !check.required);
    if (format == "json") {
      list.push_back({{"name", check.name},
                      {"ok", check.ok},
                      {"required", check.required},
                      {"detail", check.detail},
                      {"hint", check.ok ? "" : check.hint}});
    } else {
      const char* mark = check.ok ? "ok  " : (check.required ? "FAIL" : "warn");
      std::printf("%s  %-16s %s%s\n", mark, check.name.c_str(), check.detail.c_str(),
                  check.ok ? "" : (" -> " + check.hint).c_str());
    }
  }
  if (format == "json") std::cout << nlohmann::json{{"ok", healthy}, {"checks", list}}.dump(2) << "\n";
  return healthy ? 0 : 1;
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

}  // namespace

void addDoctorCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct DoctorFlags {
    std::string format;
    std::vector<int> ports;
  };
  auto flags = std::make_shared<DoctorFlags>();
  auto* doctor_cmd = app.add_subcommand("doctor", "Check that this host can run VMs, with a fix for each problem");
  doctor_cmd->add_option("--format", flags->format, "text (default) or json");
  doctor_cmd->add_option("-p,--port", flags->ports, "Also check that this host port is free (repeatable)");
  commands.add(doctor_cmd, [&global, flags] {
    return cmdDoctor(global, flags->format.empty() ? "text" : flags->format, flags->ports);
  });
}

void addInfoCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  auto format = std::make_shared<std::string>();
  auto* info_cmd = app.add_subcommand("info", "Show the QEMU, kernel, acceleration and data dir in use");
  info_cmd->add_option("-f,--format", *format, "Output format: text or json")->default_str("text");
  commands.add(info_cmd, [&global, format] { return cmdInfo(global, format->empty() ? "text" : *format); });
}

}  // namespace microvm::cli
