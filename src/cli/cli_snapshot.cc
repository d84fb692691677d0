// `microvm snapshot create|ls|rm|restore`: saved VMs, and new VMs from them.
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli_commands.h"
#include "cli_run.h"

namespace microvm::cli {

namespace {

int cmdSnapshotList(const GlobalFlags& global, const std::string& format) {
  if (format != "table" && format != "json") return fail("unknown format \"" + format + "\" (want table or json)");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto snapshots = runtime->listSnapshots();
  if (!snapshots) return fail(snapshots.error());
  if (format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& snapshot : *snapshots) {
      list.push_back({{"name", snapshot.name},
                      {"created_at", snapshot.created_at},
                      {"source_id", snapshot.source_id},
                      {"source_name", snapshot.source_name},
                      {"bytes", snapshot.bytes}});
    }
    std::cout << list.dump(2) << "\n";
    return 0;
  }
  std::printf("%-24s   %-20s   %-16s   %s\n", "NAME", "VM", "CREATED", "SIZE");
  for (const auto& snapshot : *snapshots) {
    std::printf("%-24s   %-20s   %-16s   %.1f MB\n", snapshot.name.c_str(), snapshot.source_name.c_str(),
                ago(snapshot.created_at).c_str(), static_cast<double>(snapshot.bytes) / 1e6);
  }
  return 0;
}

}  // namespace

void addSnapshotCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct SnapshotFlags {
    std::string vm;
    std::vector<std::string> names;
    std::string format;
    RunFlags restore;  // only the snapshot and --name are set
  };
  auto flags = std::make_shared<SnapshotFlags>();
  auto* snapshot_cmd = app.add_subcommand("snapshot", "Save running VMs and start new ones from them");
  snapshot_cmd->require_subcommand(1);
  auto* snapshot_create = snapshot_cmd->add_subcommand("create", "Save a VM's memory, devices and disk");
  snapshot_create->add_option("vm", flags->vm, "VM id, id prefix or name")->required();
  snapshot_create->add_option("name", flags->names, "Snapshot name")->required()->expected(1);
  auto* snapshot_ls = snapshot_cmd->add_subcommand("ls", "List snapshots");
  snapshot_ls->add_option("--format", flags->format, "table (default) or json");
  auto* snapshot_rm = snapshot_cmd->add_subcommand("rm", "Remove snapshots");
  snapshot_rm->add_option("name", flags->names, "Snapshot name")->required();
  auto* snapshot_restore = snapshot_cmd->add_subcommand("restore", "Start a new VM from a snapshot (detached)");
  snapshot_restore->add_option("name", flags->restore.snapshot, "Snapshot name")->required();
  snapshot_restore->add_option("--name", flags->restore.name, "Name of the new VM");

  commands.add(snapshot_create, [&global, flags] {
    auto runtime = openRuntime(global);
    if (!runtime) return fail(runtime.error());
    return forEachVm(flags->names, [&](const std::string& name) { return runtime->snapshot(flags->vm, name); });
  });
  commands.add(snapshot_ls,
               [&global, flags] { return cmdSnapshotList(global, flags->format.empty() ? "table" : flags->format); });
  commands.add(snapshot_rm, [&global, flags] {
    auto runtime = openRuntime(global);
    if (!runtime) return fail(runtime.error());
    return forEachVm(flags->names, [&](const std::string& name) { return runtime->removeSnapshot(name); });
  });
  commands.add(snapshot_restore, [&global, flags] { return runDetached(global, flags->restore); });
}

}  // namespace microvm::cli
