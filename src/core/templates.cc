#include "core/templates.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <system_error>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/fs.h"
#include "base/hash.h"
#include "base/paths.h"
#include "base/scope_guard.h"
#include "core/runner_watch.h"
#include "core/runtime_impl.h"
#include "core/snapshot_checks.h"
#include "runner/machine_config.h"
#include "state/layout.h"

namespace microvm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Bumped whenever what a template holds changes meaning (init's
// conversation, the devices' order), so that old templates stop matching.
constexpr int kTemplateFormat = 2;
// A staging directory no runner marked saved within this long is left over
// from a VM that never finished booting; it is removed.
constexpr auto kStagingTimeout = std::chrono::minutes(10);
constexpr char kSavedMark[] = "saved\n";

// A file as the key sees it: changing it (a rebuilt kernel, a new base
// disk) changes the identity without reading the file.
std::string fileIdentity(const std::string& path) {
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return path + " (missing)";
  return path + " " + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + " " +
         std::to_string(st.st_size) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

// What the key is made of, one line each; template.json keeps it so that
// `template ls` can tell a stale template from a current one.
json keyInputs(const VmSpec& spec) {
  return {{"format", kTemplateFormat},
          {"machine", machineSignature(spec)},
          {"tsc_khz", spec.tsc_khz},
          {"kernel", fileIdentity(spec.kernel)},
          {"initramfs", fileIdentity(spec.initramfs)},
          {"qemu", fileIdentity(spec.qemu)},
          {"base_disk", fileIdentity(spec.base_disk)}};
}

std::string keyOf(const json& inputs) { return sha256Hex(inputs.dump()).substr(0, 32); }

bool isStaging(const fs::path& dir) { return dir.filename().string().rfind(TemplatePaths::kTempPrefix, 0) == 0; }

bool markedSaved(const fs::path& dir) {
  auto mark = readUntrustedFile(TemplatePaths::saved(dir), 64);
  return mark && *mark == kSavedMark;
}

// Whether the VM saving into `staging` (its directory is recorded there: the
// templates may be shared by several data dirs) still runs, or may yet.
bool stillSaving(const fs::path& staging) {
  auto saver = readUntrustedFile(TemplatePaths::saver(staging), 4096);
  if (!saver || saver->empty()) return false;
  fs::path vm_dir(*saver);
  if (!fs::exists(vm_dir)) return false;
  auto state = loadState(vm_dir);
  return !state || (state->status != VmStatus::kExited && state->status != VmStatus::kSuspended);
}

bool olderThan(const fs::path& path, std::chrono::seconds age) {
  std::error_code ec;
  auto written = fs::last_write_time(path, ec);
  return !ec && fs::file_time_type::clock::now() - written > age;
}

// Seals a staged template a runner marked saved and renames it into place.
Result<void> finishStaged(const fs::path& staged, const fs::path& entry, const VmSpec& spec) {
  MICROVM_TRY(writeSeal(TemplatePaths::memory(staged), spec, TemplatePaths::seal(staged)));
  json meta = {{"key", entry.filename().string()},
               {"created_at", nowRfc3339()},
               {"source", spec.image.empty() ? spec.base_disk : spec.image},
               {"cpus", spec.cpus},
               {"memory_mib", spec.memory_mib},
               {"network", spec.network},
               {"inputs", keyInputs(spec)}};
  MICROVM_TRY(writeFileAtomic(TemplatePaths::meta(staged), meta.dump(2) + "\n"));
  (void)::unlink(TemplatePaths::saved(staged).c_str());
  if (::rename(staged.c_str(), entry.c_str()) != 0) {
    int error_number = errno;
    // Another run put the same template in place first.
    if (fs::exists(TemplatePaths::seal(entry))) return removeTree(staged);
    return Error::fromErrno("put template " + entry.string() + " in place", error_number);
  }
  return syncDirectory(entry.parent_path());
}

// Keeps at most kMaxTemplates templates in `dir`: the least recently used
// (a restore touches its entry) go first, `keep` never. VMs restoring one
// hold its files open; removing it takes nothing from them.
void evictLeastRecentlyUsed(const fs::path& dir, const fs::path& keep) {
  std::vector<std::pair<fs::file_time_type, fs::path>> entries;
  std::error_code ec;
  for (const auto& item : fs::directory_iterator(dir, ec)) {
    if (isStaging(item.path()) || !item.is_directory(ec) || item.path() == keep) continue;
    entries.emplace_back(fs::last_write_time(item.path(), ec), item.path());
  }
  if (entries.size() < kMaxTemplates) return;
  std::sort(entries.begin(), entries.end());
  size_t extra = entries.size() - (kMaxTemplates - 1);  // `keep` counts too
  for (size_t i = 0; i < extra; ++i) (void)removeTree(entries[i].second);
}

// The sealed template for `key`, if one is in place and whole; a staged one
// is finished first. Removes what is stale or left over.
Result<std::optional<fs::path>> findTemplate(const TemplatePaths& paths, const std::string& key, const VmSpec& spec,
                                             std::string& busy) {
  fs::path entry = paths.entry(key);
  if (fs::exists(entry)) {
    auto sealed = checkSeal(TemplatePaths::memory(entry), spec, TemplatePaths::seal(entry));
    if (sealed) return std::optional<fs::path>(entry);
    // Damaged or no longer this machine's: made again from this boot.
    MICROVM_TRY(removeTree(entry));
  }
  std::error_code ec;
  std::string prefix = std::string(TemplatePaths::kTempPrefix) + key + "-";
  for (const auto& item : fs::directory_iterator(paths.dir(), ec)) {
    fs::path staged = item.path();
    if (staged.filename().string().rfind(prefix, 0) != 0) continue;
    if (markedSaved(staged)) {
      if (auto finished = finishStaged(staged, entry, spec); !finished) {
        (void)removeTree(staged);
        return std::move(finished).error().withContext("template " + key);
      }
      evictLeastRecentlyUsed(paths.dir(), entry);
      return std::optional<fs::path>(entry);
    }
    std::string saver = staged.filename().string().substr(prefix.size());
    if (olderThan(staged, kStagingTimeout) || !stillSaving(staged)) {
      (void)removeTree(staged);
    } else {
      busy = saver;
    }
  }
  return std::optional<fs::path>();
}

Result<TemplateInfo> loadTemplateInfo(const fs::path& entry) {
  auto text = readUntrustedFile(TemplatePaths::meta(entry), 1 << 20);
  if (!text) return std::move(text).error();
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Error(ErrorCode::kProtocol, "malformed " + TemplatePaths::meta(entry).string());
  TemplateInfo info;
  info.key = entry.filename();
  info.created_at = j.value("created_at", "");
  info.source = j.value("source", "");
  info.cpus = j.value("cpus", 0);
  info.memory_mib = j.value("memory_mib", 0);
  std::error_code ec;
  for (const auto& file : {TemplatePaths::memory(entry), TemplatePaths::ram(entry)}) {
    struct stat st {};
    // The allocated size: guest RAM is sparse.
    if (::stat(file.c_str(), &st) == 0) info.bytes += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  // Stale: a file it was made from changed, so no run can match its key.
  if (auto inputs = j.find("inputs"); inputs != j.end() && inputs->is_object()) {
    for (const char* file : {"kernel", "initramfs", "qemu", "base_disk"}) {
      std::string recorded = inputs->value(file, "");
      std::string path = recorded.substr(0, recorded.find(' '));
      if (fileIdentity(path) != recorded) {
        info.stale = true;
        info.stale_reason = std::string(file) + " changed";
        break;
      }
    }
  }
  return info;
}

}  // namespace

std::string templateKey(const VmSpec& spec) { return keyOf(keyInputs(spec)); }

std::optional<std::string> templateRefusal(const VmSpec& spec, bool enabled, const fs::path& vm_dir) {
  if (!enabled) return "templates are off for this VM (--no-template)";
  if (!spec.restore_from.empty()) return "restored from a snapshot";
  if (spec.base_disk.empty()) return "no root disk to template";
  if (!spec.shares.empty()) return "volumes are mounted at boot";
  if (hasVsockDevice(spec)) return "vsock ports need the vsock device, which cannot be saved";
  if (!spec.initramfs.empty() && fs::path(spec.initramfs).parent_path() == vm_dir) {
    return "files injected at boot (rootfs hooks) make its initramfs its own";
  }
  return std::nullopt;
}

Result<void> chooseBootTemplate(const fs::path& templates_dir, VmSpec& spec, bool enabled, const fs::path& vm_dir) {
  if (auto refusal = templateRefusal(spec, enabled, vm_dir)) {
    spec.template_note = "cold boot: " + *refusal;
    return success();
  }
  TemplatePaths paths(templates_dir);
  MICROVM_TRY(makeDirs(paths.dir()));
  std::string key = templateKey(spec);
  std::string busy;
  auto found = findTemplate(paths, key, spec, busy);
  if (!found) {
    spec.template_note = "cold boot: " + found.error().message();
    return success();
  }
  if (*found) {
    spec.template_dir = found->value().string();
    spec.template_note = "template " + key.substr(0, 12);
    std::error_code ec;
    fs::last_write_time(**found, fs::file_time_type::clock::now(), ec);  // used: evicted last
    return success();
  }
  if (!busy.empty()) {
    spec.template_note = "cold boot: VM " + busy + " is saving the template " + key.substr(0, 12);
    return success();
  }
  fs::path staging = paths.dir() / (std::string(TemplatePaths::kTempPrefix) + key + "-" + spec.id.substr(0, 12));
  MICROVM_TRY(makeDirs(staging));
  MICROVM_TRY(writeFileAtomic(TemplatePaths::saver(staging), vm_dir.string()));
  spec.template_capture = staging.string();
  spec.template_note = "cold boot, saving template " + key.substr(0, 12) + " (the first VM of its machine)";
  return success();
}

Result<std::optional<fs::path>> finishedTemplate(const fs::path& templates_dir, const VmSpec& spec) {
  std::string busy;
  return findTemplate(TemplatePaths(templates_dir), templateKey(spec), spec, busy);
}

bool templateSaved(const fs::path& staging) { return markedSaved(staging); }

Result<TemplateInfo> templateInfo(const fs::path& entry) { return loadTemplateInfo(entry); }

Result<std::vector<TemplateInfo>> listTemplates(const fs::path& templates_dir) {
  std::vector<TemplateInfo> templates;
  std::error_code ec;
  for (const auto& item : fs::directory_iterator(TemplatePaths(templates_dir).dir(), ec)) {
    if (isStaging(item.path()) || !item.is_directory()) continue;
    if (auto info = loadTemplateInfo(item.path()); info) templates.push_back(std::move(*info));
  }
  std::sort(templates.begin(), templates.end(),
            [](const TemplateInfo& a, const TemplateInfo& b) { return a.created_at > b.created_at; });
  return templates;
}

Result<void> removeTemplate(const fs::path& templates_dir, const std::string& key) {
  bool valid = !key.empty() && key.size() <= 32 && key.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (!valid) return Error(ErrorCode::kInvalidArgument, "invalid template key \"" + key + "\" (hex digits)");
  std::vector<fs::path> matches;
  std::error_code ec;
  for (const auto& item : fs::directory_iterator(TemplatePaths(templates_dir).dir(), ec)) {
    if (!isStaging(item.path()) && item.path().filename().string().rfind(key, 0) == 0) matches.push_back(item.path());
  }
  if (matches.empty()) return Error(ErrorCode::kNotFound, "no template " + key);
  if (matches.size() > 1) return Error(ErrorCode::kInvalidArgument, "template key " + key + " is ambiguous");
  // VMs restoring it hold its files open; removing it takes nothing from them.
  return removeTree(matches.front());
}

Result<std::vector<std::string>> pruneTemplates(const fs::path& templates_dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  std::vector<fs::path> entries;
  for (const auto& item : fs::directory_iterator(TemplatePaths(templates_dir).dir(), ec)) entries.push_back(item.path());
  for (const auto& entry : entries) {
    MICROVM_TRY(removeTree(entry));
    if (!isStaging(entry)) removed.push_back(entry.filename());
  }
  return removed;
}

// The public API's template commands (runtime.h).
Result<TemplateInfo> Runtime::buildTemplate(const RunOptions& options) {
  RunOptions build = options;
  build.boot_template = true;
  build.remove = true;
  auto id = create(build);
  if (!id) return std::move(id).error();
  // Whatever happens next, the VM that makes the template goes. Its runner
  // is our child: stopped, it is reaped here, or remove() would wait on a
  // zombie.
  std::optional<VmHandle> vm;
  auto end_vm = [&] {
    if (vm) {
      (void)stop(*id, 0);
      (void)vm->wait();
      vm.reset();
    }
    (void)remove(*id, true);
  };
  ScopeGuard remove_vm(end_vm);
  auto layout = impl_->layout();
  if (!layout) return std::move(layout).error();
  auto record = VmStore(*layout).find(*id);
  if (!record) return std::move(record).error();
  const VmSpec& spec = record->spec;
  if (!spec.template_dir.empty()) return templateInfo(spec.template_dir);  // current already
  if (spec.template_capture.empty()) {
    std::string why = spec.template_note;
    if (why.rfind("cold boot: ", 0) == 0) why = why.substr(std::string("cold boot: ").size());
    return Error(ErrorCode::kInvalidArgument, "this machine cannot have a boot template: " + why);
  }
  auto started = start(*id);
  if (!started) return std::move(started).error();
  vm.emplace(std::move(*started));
  // The runner saves it at init's hello, a boot's time from now.
  auto deadline = std::chrono::steady_clock::now() + 4 * kRunnerStartTimeout;
  while (!templateSaved(spec.template_capture)) {
    auto now = VmStore(*layout).find(*id);
    if (!now || !isActive(*now)) {
      return Error(ErrorCode::kIo, "the VM making the template ended before it was saved" +
                                       (now && !now->state.error.empty() ? ": " + now->state.error : std::string()));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return Error(ErrorCode::kTimeout, "the template was not saved within " +
                                            std::to_string(4 * kRunnerStartTimeout.count()) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  end_vm();
  remove_vm.dismiss();
  auto entry = finishedTemplate(impl_->templates_dir_, spec);
  if (!entry) return std::move(entry).error();
  if (!*entry) return Error(ErrorCode::kInternal, "the saved template is not in place");
  return templateInfo(**entry);
}

Result<std::vector<TemplateInfo>> Runtime::listTemplates() { return microvm::listTemplates(impl_->templates_dir_); }

Result<void> Runtime::removeTemplate(const std::string& key) {
  return microvm::removeTemplate(impl_->templates_dir_, key);
}

Result<std::vector<std::string>> Runtime::pruneTemplates() { return microvm::pruneTemplates(impl_->templates_dir_); }

}  // namespace microvm
