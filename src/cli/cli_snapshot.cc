// `microvm snapshot create|ls|rm|restore`: saved VMs, and new VMs from them;
// `microvm template ls|rm|prune`: the boot templates runs make and restore;
// `microvm fork`: running copies of a running VM.
#include <algorithm>
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

int cmdTemplateList(const GlobalFlags& global, const std::string& format) {
  if (format != "table" && format != "json") return fail("unknown format \"" + format + "\" (want table or json)");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto templates = runtime->listTemplates();
  if (!templates) return fail(templates.error());
  if (format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& entry : *templates) {
      list.push_back({{"key", entry.key},
                      {"created_at", entry.created_at},
                      {"source", entry.source},
                      {"cpus", entry.cpus},
                      {"memory_mib", entry.memory_mib},
                      {"bytes", entry.bytes},
                      {"stale", entry.stale},
                      {"stale_reason", entry.stale_reason}});
    }
    std::cout << list.dump(2) << "\n";
    return 0;
  }
  std::printf("%-12s   %-36s   %-4s   %-8s   %-16s   %-9s   %s\n", "KEY", "SOURCE", "CPUS", "MEMORY", "CREATED", "SIZE",
              "STATE");
  for (const auto& entry : *templates) {
    std::string memory = std::to_string(entry.memory_mib) + " MiB";
    std::string size = std::to_string(entry.bytes / 1'000'000) + " MB";
    std::string state = entry.stale ? "stale (" + entry.stale_reason + ")" : "current";
    std::printf("%-12s   %-36s   %-4d   %-8s   %-16s   %-9s   %s\n", entry.key.substr(0, 12).c_str(),
                entry.source.c_str(), entry.cpus, memory.c_str(), ago(entry.created_at).c_str(), size.c_str(),
                state.c_str());
  }
  return 0;
}

int cmdTemplateBuild(const GlobalFlags& global, const RunFlags& run_flags, const std::vector<std::string>& image) {
  if (!run_flags.rootfs.empty() && !image.empty()) return fail("template build takes an IMAGE or --rootfs, not both");
  // The command does not make the template (the guest is saved before it
  // gets one), but a --rootfs run needs one.
  auto options = toRunOptions(run_flags, run_flags.rootfs.empty() ? image : std::vector<std::string>{"/bin/true"});
  if (!options) return fail(options.error());
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto before = runtime->listTemplates();
  auto built = runtime->buildTemplate(*options);
  if (!built) return fail(built.error());
  bool existed = before && std::any_of(before->begin(), before->end(),
                                       [&](const TemplateInfo& entry) { return entry.key == built->key; });
  std::printf("%s   %s\n", built->key.substr(0, 12).c_str(), existed ? "current already" : "saved");
  return 0;
}

}  // namespace

void addTemplateCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct TemplateFlags {
    std::vector<std::string> keys;
    std::string format;
  };
  auto flags = std::make_shared<TemplateFlags>();
  auto* template_cmd = app.add_subcommand("template", "Boot templates: saved guests that runs restore instead of booting");
  template_cmd->require_subcommand(1);
  auto* template_ls = template_cmd->add_subcommand("ls", "List boot templates");
  template_ls->add_option("--format", flags->format, "table (default) or json");
  auto* template_rm = template_cmd->add_subcommand("rm", "Remove boot templates");
  template_rm->add_option("key", flags->keys, "Template key or unique prefix")->required();
  auto* template_prune = template_cmd->add_subcommand("prune", "Remove every boot template (runs make them again)");
  auto build_flags = std::make_shared<RunFlags>();
  auto build_image = std::make_shared<std::vector<std::string>>();
  auto* template_build = template_cmd->add_subcommand(
      "build", "Make the boot template that runs with these options would restore, now");
  template_build->footer("Usage: microvm template build [OPTIONS] IMAGE\n"
                         "       microvm template build [OPTIONS] --rootfs DIR");
  addRunFlags(*template_build, *build_flags);
  addPullFlags(*template_build, global);
  template_build->add_option("image", *build_image, "The image (not with --rootfs)");
  commands.add(template_build,
               [&global, build_flags, build_image] { return cmdTemplateBuild(global, *build_flags, *build_image); });

  commands.add(template_ls,
               [&global, flags] { return cmdTemplateList(global, flags->format.empty() ? "table" : flags->format); });
  commands.add(template_rm, [&global, flags] {
    auto runtime = openRuntime(global);
    if (!runtime) return fail(runtime.error());
    return forEachVm(flags->keys, [&](const std::string& key) { return runtime->removeTemplate(key); });
  });
  commands.add(template_prune, [&global] {
    auto runtime = openRuntime(global);
    if (!runtime) return fail(runtime.error());
    auto removed = runtime->pruneTemplates();
    if (!removed) return fail(removed.error());
    for (const auto& key : *removed) std::printf("%s\n", key.c_str());
    return 0;
  });
}

void addForkCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct ForkFlags {
    std::string vm;
    int count = 1;
    std::string prefix;
  };
  auto flags = std::make_shared<ForkFlags>();
  auto* fork_cmd = app.add_subcommand(
      "fork", "Start running copies of a VM that continue from this instant (the VM runs on); prints their ids");
  fork_cmd->add_option("vm", flags->vm, "VM id, id prefix or name")->required();
  fork_cmd->add_option("-n,--count", flags->count, "How many children (1 to 64)");
  fork_cmd->add_option("--name", flags->prefix, "Name the children PREFIX-1, PREFIX-2, ...");
  commands.add(fork_cmd, [&global, flags] {
    auto runtime = openRuntime(global);
    if (!runtime) return fail(runtime.error());
    auto children = runtime->fork(flags->vm, flags->count, flags->prefix);
    if (!children) return fail(children.error());
    for (const auto& child : *children) std::printf("%s\n", child.id().c_str());
    return 0;
  });
}

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
