// Runtime: opening a runtime, and making VMs: create (plan, pull, prepare),
// start, run, the hooks around them.
#include "microvm/runtime.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <tuple>

#include "base/paths.h"
#include "base/fs.h"
#include "base/hash.h"
#include "base/process.h"
#include "net/pod_link.h"
#include "hypervisor/accel.h"
#include "image/image_store.h"
#include "image/root_disk.h"
#include "image/workload_config.h"
#include "preflight/preflight.h"
#include "core/images.h"
#include "core/rootfs_injection.h"
#include "core/runner_watch.h"
#include "core/runtime_impl.h"
#include "core/templates.h"
#include "core/vm_plan.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

// The first non-empty of: explicit option, environment variable, fallback.
std::string pick(const std::string& option, const char* env_name, const std::string& fallback) {
  if (!option.empty()) return option;
  const char* value = std::getenv(env_name);
  if (value && *value) return value;
  return fallback;
}

// Milliseconds between laps, to 0.1 ms.
class Stopwatch {
 public:
  double lap() {
    auto now = std::chrono::steady_clock::now();
    double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
    return std::round(ms * 10) / 10;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

std::string formatMs(double ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", ms);
  return text;
}

// Calls an embedder's callback: whatever it throws comes back as an Error,
// so that no exception crosses the API.
template <typename Fn>
auto callHook(Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& exception) {
    return Error(ErrorCode::kInternal, std::string("threw: ") + exception.what());
  } catch (...) {
    return Error(ErrorCode::kInternal, "threw an exception");
  }
}

DoctorCheck runCustomCheck(const PreflightCheckFn& check) {
  try {
    return check();
  } catch (...) {
    return {"custom", false, true, "the check threw an exception", ""};
  }
}

Result<void> runCustomChecks(const std::vector<PreflightCheckFn>& checks) {
  for (const auto& check_fn : checks) {
    DoctorCheck check = runCustomCheck(check_fn);
    if (check.ok || !check.required) continue;
    return Error(ErrorCode::kUnavailable,
                 check.name + ": " + check.detail + (check.hint.empty() ? "" : " (" + check.hint + ")"));
  }
  return success();
}

}  // namespace

Result<Runtime> Runtime::open(RuntimeOptions options) {
  auto layout = Layout::resolve(options.data_dir);
  if (!layout) return std::move(layout).error();
  // The runner and the guest's files sit beside the code: the CLI's bin/ or
  // libmicrovm.so's lib/ (or lib/<multiarch>/) in an installed tree.
  auto module_dir = moduleDir(reinterpret_cast<const void*>(&pick));
  if (!module_dir) return std::move(module_dir).error();
  fs::path exe_dir = *module_dir;
  fs::path share_dir = (exe_dir / ".." / "share" / "microvm").lexically_normal();
  std::error_code ec;
  for (const char* up : {"..", "../.."}) {
    fs::path bin = (exe_dir / up / "bin").lexically_normal();
    if (!fs::exists(exe_dir / "microvm-runner", ec) && fs::exists(bin / "microvm-runner", ec)) {
      share_dir = (bin / ".." / "share" / "microvm").lexically_normal();
      exe_dir = bin;
      break;
    }
  }

  auto impl = std::make_shared<Impl>();
  impl->data_dir_ = layout->dataDir();
  impl->runtime_dir_ = layout->runtimeDir();
  impl->cache_dir_ = layout->cacheDir();
  impl->share_dir_ = share_dir;
  impl->kernel_ = pick(options.kernel, "MICROVM_KERNEL", (impl->share_dir_ / "vmlinux").string());
  impl->initramfs_ = pick(options.initramfs, "MICROVM_INITRAMFS", (impl->share_dir_ / "initramfs.cpio").string());
  impl->runner_ = pick("", "MICROVM_RUNNER", (exe_dir / "microvm-runner").string());
  impl->qemu_ = pick(options.qemu, "MICROVM_QEMU", "qemu-system-x86_64");
  impl->accel_request_ = pick(options.accel, "MICROVM_ACCEL", "auto");
  impl->images_dir_ = options.image_dir.empty() ? ImagePaths::inDataDir(impl->data_dir_).dir() : fs::absolute(options.image_dir);
  impl->templates_dir_ =
      options.template_dir.empty() ? TemplatePaths::inDataDir(impl->data_dir_).dir() : fs::absolute(options.template_dir);
  if (options.backend != "qemu") {
    return Error(ErrorCode::kUnsupported, "backend \"" + options.backend + "\" is not available (this build has qemu)");
  }
  impl->options_ = options;
  if (options.docker_config.empty()) {
    const char* home = std::getenv("HOME");
    fs::path docker_dir = pick("", "DOCKER_CONFIG", (fs::path(home ? home : "/root") / ".docker").string());
    impl->options_.docker_config = docker_dir / "config.json";
  }
  if (auto request = parseAccelRequest(impl->accel_request_); !request) return std::move(request).error();
  Runtime runtime(std::move(impl));
  if (options.clean_data_dir) {
    auto removed = runtime.prune();
    if (!removed) return std::move(removed).error().withContext("clean data dir");
    runtime.impl_->log(LogLevel::kInfo, "cleaned data dir", {{"removed_vms", std::to_string(removed->size())}});
  }
  return runtime;
}

Result<HostInfo> Runtime::info() {
  HostInfo info;
  auto qemu = findOnPath(impl_->qemu_);
  info.qemu = qemu ? qemu->string() : impl_->qemu_ + " (not found)";
  if (qemu) {
    std::string output;
    if (runCommand({qemu->string(), "--version"}, &output)) {
      info.qemu_version = output.substr(0, output.find('\n'));
    }
  }
  info.kernel = impl_->kernel_;
  info.initramfs = impl_->initramfs_;
  info.data_dir = impl_->data_dir_;
  if (qemu && fs::exists(impl_->kernel_)) {
    auto accel = impl_->acceleration();
    if (!accel) return std::move(accel).error();
    std::tie(info.accel, info.accel_reason) = *accel;
  } else {
    info.accel = "unknown";
    info.accel_reason = "needs QEMU and a guest kernel to decide";
  }
  return info;
}

Result<std::string> Runtime::create(const RunOptions& options) {
  const Impl& runtime = *impl_;
  auto plan = planVm(options, gatherHostFacts(runtime.kernel_, runtime.initramfs_, runtime.qemu_));
  if (!plan) return std::move(plan).error();
  Stopwatch step;
  std::map<std::string, double> timings;
  if (!runtime.options_.replace_preflight_checks) {
    MICROVM_TRY(runPreflight({runtime.qemu_, runtime.kernel_, runtime.initramfs_, runtime.runner_, runtime.data_dir_, {}}));
  }
  MICROVM_TRY(runCustomChecks(runtime.options_.preflight_checks));
  auto accel = impl_->acceleration();
  if (!accel) return std::move(accel).error();
  plan->machine.accel = accel->first;
  // Preflight found QEMU; planning may have run before it was installed.
  if (plan->machine.qemu.empty()) plan->machine.qemu = findOnPath(runtime.qemu_)->string();
  timings["preflight"] = step.lap();

  auto layout = runtime.layout();
  if (!layout) return std::move(layout).error();
  VmStore store(*layout);
  MICROVM_TRY(makeDirs(layout->vmsDir()));
  // The root disk and the workload: from the image (its config merged with
  // the options, Docker's way), or from a directory and the options alone.
  ImageDefaults defaults;
  fs::path base;
  VmSpec spec;
  // From before the base disk is pulled or built until the VM's spec names
  // it: `image prune` keeps what a VM uses, but cannot see this VM before.
  std::vector<UniqueFd> image_holds;
  auto held = ImageStore::hold(runtime.images_dir_);
  if (!held) return std::move(held).error();
  image_holds.push_back(std::move(*held));
  if (!options.image.empty()) {
    auto reference = resolveImage(options);
    if (!reference) return std::move(reference).error();
    auto image = findOrPullImage(runtime.images_dir_, runtime.options_, *reference, options.platform);
    if (!image) return std::move(image).error();
    if (*reference != options.image) {
      // Fetched: cached under the name it was asked for, so the next run finds it.
      image = ImageStore(runtime.images_dir_).tag(options.image, *image);
      if (!image) return std::move(image).error();
    }
    base = image->base_disk;
    defaults = image->defaults;
    spec.image = image->reference;
    spec.exposed_ports = image->exposed_ports;
  } else {
    auto built = ensureBaseDisk(ImagePaths(runtime.images_dir_).rootfsDir(), options.rootfs);
    if (!built) return std::move(built).error().withContext("build root disk");
    base = *built;
  }
  timings["pull"] = step.lap();
  impl_->log(LogLevel::kInfo, "image ready", {{"image", options.image.empty() ? options.rootfs.string() : options.image},
                                              {"ms", formatMs(timings["pull"])}});
  auto workload = mergeImageDefaults(defaults, plan->workload.overrides);
  if (!workload) return std::move(workload).error();
  RootfsEditor rootfs;
  for (size_t i = 0; i < options.rootfs_hooks.size(); ++i) {
    auto hooked = callHook([&] { return options.rootfs_hooks[i](rootfs); });
    if (!hooked) return std::move(hooked).error().withContext("rootfs hook " + std::to_string(i + 1));
  }

  spec.id = randomHex(32);
  spec.name = plan->name.empty() ? spec.id.substr(0, 12) : plan->name;
  spec.created_at = nowRfc3339();
  spec.hostname = spec.id.substr(0, 12);  // unless the plan names one
  writePlan(*plan, spec);
  spec.base_disk = base.string();
  spec.argv = workload->argv;
  spec.env = workload->env;
  spec.workdir = workload->workdir;
  spec.user = workload->user;

  fs::path vm_dir = layout->vmDir(spec.id);
  spec.root_disk = VmPaths(vm_dir).disk().string();
  spec.runtime_dir = layout->vmRuntimeDir(spec.id).string();
  MICROVM_TRY(checkSocketPath(VmSockets(spec.runtime_dir).runner()));
  // Guest port P without a mapping reaches "<vsock.sock>_P": the longest
  // port must still fit.
  MICROVM_TRY(checkSocketPath(VmSockets(spec.runtime_dir).vsock().string() + "_4294967294"));
  MICROVM_TRY(checkSocketPath(VmSockets(spec.runtime_dir).vhostVsock()));

  // Small hook output rides in the spec (so a boot template still serves
  // the VM); more goes in an initramfs of the VM's own.
  bool inject_in_spec = fitsInSpec(rootfs.entries());
  if (inject_in_spec) {
    for (const auto& entry : rootfs.entries()) {
      spec.injected.push_back({entry.path, entry.directory, entry.content, entry.mode, entry.uid, entry.gid});
    }
  } else {
    spec.initramfs = VmPaths(vm_dir).initramfs().string();
  }
  spec.timings_ms = timings;
  double prepare_ms = step.lap();
  MICROVM_TRY(chooseBootTemplate(runtime.templates_dir_, spec, options.boot_template, vm_dir));
  spec.template_share_memory = options.share_template_memory;
  if (!spec.template_dir.empty() && spec.template_share_memory) spec.template_note += ", memory shared";
  auto make_disks = [&](const fs::path&) -> Result<void> {
    if (!inject_in_spec) MICROVM_TRY(writeInjectionInitramfs(plan->machine.initramfs, rootfs.entries(), spec.initramfs));
    MICROVM_TRY(createOverlay(base, spec.root_disk));
    // The store saves `spec` (this object) after this returns.
    spec.timings_ms["prepare"] = std::round((prepare_ms + step.lap()) * 10) / 10;
    return success();
  };
  MICROVM_TRY(store.add(spec, !options.name.empty(), make_disks));
  impl_->log(LogLevel::kInfo, "created", {{"vm", spec.id.substr(0, 12)}, {"name", spec.name},
                                          {"preflight_ms", formatMs(spec.timings_ms["preflight"])},
                                          {"prepare_ms", formatMs(spec.timings_ms["prepare"])}});
  return spec.id;
}

std::vector<DoctorCheck> Runtime::doctor(const std::vector<int>& host_ports) {
  std::vector<DoctorCheck> checks;
  const Impl& runtime = *impl_;
  if (!runtime.options_.replace_preflight_checks) {
    for (auto& check : runPreflightChecks({runtime.qemu_, runtime.kernel_, runtime.initramfs_, runtime.runner_,
                                           runtime.data_dir_, host_ports})) {
      checks.push_back({check.name, check.ok, check.required, check.detail, check.hint});
    }
  }
  for (const auto& check : runtime.options_.preflight_checks) checks.push_back(runCustomCheck(check));
  // /dev/kvm opening is not the verdict: say what a VM would actually use.
  for (auto& check : checks) {
    if (check.name != "kvm" || !findOnPath(runtime.qemu_) || !fs::exists(runtime.kernel_)) continue;
    if (auto accel = impl_->acceleration(); accel) {
      const auto& [name, reason] = *accel;
      check = {"acceleration", name == "kvm", false, name + ": " + reason,
               "VMs run under TCG (software emulation): correct but slower"};
    }
  }
  return checks;
}

Result<VmHandle> Runtime::start(const std::string& reference, int stdout_fd, int stderr_fd, int stdin_fd) {
  auto record = impl_->findVm(reference);
  if (!record) return std::move(record).error();
  if (isActive(*record)) return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is already running");
  if (record->state.status == VmStatus::kSuspended) {
    // It comes back where it was; to boot afresh, stop it first.
    MICROVM_TRY(resume(record->spec.id));
    return get(record->spec.id);
  }
  // Saved state left by a suspend that did not complete is not this VM's.
  (void)removeTree(VmPaths(record->dir).saved());
  (void)removeTree(VmPaths(record->dir).saving());
  return spawnRunner(record->spec.id, stdout_fd, stderr_fd, stdin_fd);
}

namespace {

SpawnOptions runnerSpawn(const fs::path& runner, const VmRecord& record) {
  SpawnOptions spawn_options;
  spawn_options.argv = {runner.string(), record.dir.string()};
  // Its own session: the VM outlives this process and its terminal.
  spawn_options.new_session = true;
  return spawn_options;
}

// A detached start: the runner has the VM running, or the reason it has not.
Result<void> awaitRunning(RunnerWatch& watch, Process& process, const VmRecord& record) {
  switch (watch.wait([](const VmState& state) { return state.status != VmStatus::kExited; }, kRunnerStartTimeout)) {
    case RunnerWatch::kStarted:
      return success();
    case RunnerWatch::kExited: {
      auto status = process.wait();
      auto state = loadState(record.dir);
      std::string why = state && !state->error.empty() ? state->error
                        : status                      ? "the runner " + describeWaitStatus(*status)
                                                      : status.error().message();
      return Error(ErrorCode::kIo, "VM " + record.spec.name + " failed to start: " + why);
    }
    case RunnerWatch::kTimedOut:
      break;
  }
  return Error(ErrorCode::kTimeout, "VM " + record.spec.name + " did not start within 30 s");
}

}  // namespace

Result<VmHandle> Runtime::spawnRunner(const std::string& id, int stdout_fd, int stderr_fd, int stdin_fd) {
  auto record = impl_->findVm(id);
  if (!record) return std::move(record).error();
  SpawnOptions runner = runnerSpawn(impl_->runner_, *record);
  if (stdin_fd >= 0 && record->spec.open_stdin) {
    runner.argv.push_back("--stdin");
    runner.fds.push_back({0, stdin_fd});
  }
  if (stdout_fd >= 0) runner.fds.push_back({1, stdout_fd});
  if (stderr_fd >= 0) runner.fds.push_back({2, stderr_fd});
  // Watching from before the spawn: no state change can slip past.
  RunnerWatch watch(record->dir);
  auto process = spawn(runner);
  if (!process) return std::move(process).error().withContext("start runner");
  pid_t pid = process->pid();
  watch.watchProcess(pid);
  if (stdout_fd >= 0 || stderr_fd >= 0) {
    // Attached: whatever happens next, including a failed boot, the runner
    // reports on the caller's stderr and in its exit status. The handle
    // comes back once the VM runs (so that exec and hooks can follow at
    // once) or its runner has exited, which is then the handle's to reap.
    (void)watch.wait([](const VmState& state) { return state.status != VmStatus::kCreated; }, kRunnerStartTimeout);
    return VmHandle(share(), record->spec.id, process->release());
  }
  // Detached: return once the runner has the VM running, or say why not.
  MICROVM_TRY(awaitRunning(watch, *process, *record));
  return VmHandle(share(), record->spec.id, process->release());
}

Result<std::vector<VmHandle>> Runtime::startDetached(const std::vector<std::string>& ids) {
  struct Starting {
    VmRecord record;
    RunnerWatch watch;
    Process process;
  };
  std::vector<Starting> starting;
  Result<void> failed = success();
  for (const auto& id : ids) {
    auto record = impl_->findVm(id);
    if (!record) {
      failed = std::move(record).error();
      break;
    }
    RunnerWatch watch(record->dir);
    auto process = spawn(runnerSpawn(impl_->runner_, *record));
    if (!process) {
      failed = std::move(process).error().withContext("start runner");
      break;
    }
    watch.watchProcess(process->pid());
    starting.push_back({std::move(*record), std::move(watch), std::move(*process)});
  }
  std::vector<VmHandle> handles;
  for (auto& entry : starting) {
    if (auto running = awaitRunning(entry.watch, entry.process, entry.record); !running) {
      if (failed) failed = std::move(running);
      continue;
    }
    handles.push_back(VmHandle(share(), entry.record.spec.id, entry.process.release()));
  }
  if (!failed) return std::move(failed).error();
  return handles;
}

Result<VmHandle> Runtime::run(const RunOptions& options) {
  auto id = create(options);
  if (!id) return std::move(id).error();
  auto vm = start(*id, options.stdout_fd, options.stderr_fd, options.stdin_fd);
  if (!vm) return vm;
  if (!options.wait_for.empty()) {
    Stopwatch ready_time;
    if (auto ready = waitReady(*id, options.wait_for, options.ready_timeout); !ready) {
      // Not ready is not running: nothing is left half-started.
      impl_->log(LogLevel::kWarn, "not ready, stopping", {{"vm", id->substr(0, 12)}, {"error", ready.error().message()}});
      (void)stop(*id, 0);
      return std::move(ready).error();
    }
    double ms = ready_time.lap();
    (void)impl_->requestRunning(*id, TimingRequest{"ready", ms});
    impl_->log(LogLevel::kInfo, "ready", {{"vm", id->substr(0, 12)}, {"ms", formatMs(ms)}});
  }
  if (auto hooked = runPostBootHooks(*vm, options); !hooked) return std::move(hooked).error();
  return vm;
}

Result<void> Runtime::runPostBootHooks(VmHandle& vm, const RunOptions& options) {
  if (options.post_boot_hooks.empty()) return success();
  // Post-boot means the guest answers: the agent's ping retries while the
  // guest is still coming up.
  Result<void> up = ping(vm.id());
  for (size_t i = 0; up && i < options.post_boot_hooks.size(); ++i) {
    up = callHook([&] { return options.post_boot_hooks[i](vm); });
    if (!up) up = std::move(up).error().withContext("post-boot hook " + std::to_string(i + 1));
  }
  if (up) return success();
  impl_->log(LogLevel::kWarn, "post-boot hook failed, stopping", {{"vm", vm.id().substr(0, 12)}, {"error", up.error().message()}});
  (void)stop(vm.id(), 0);
  (void)vm.wait();
  return std::move(up).error();
}

Result<VmHandle> Runtime::get(const std::string& reference) {
  auto record = impl_->findVm(reference);
  if (!record) return std::move(record).error();
  return VmHandle(share(), record->spec.id);
}

Result<std::string> Runtime::resolveImage(const RunOptions& options) {
  const ImageFetcher& fetcher = impl_->options_.image_fetcher;
  if (!fetcher) return options.image;
  // A cached image needs no fetch.
  if (auto local = ImageStore(impl_->images_dir_).find(options.image); local && *local) return options.image;
  auto fetched = callHook([&] { return fetcher(options.image, options.platform); });
  if (!fetched) return std::move(fetched).error().withContext("image fetcher for " + options.image);
  impl_->log(LogLevel::kInfo, "image fetched", {{"image", options.image}, {"as", *fetched}});
  return fetched;
}

Result<std::string> namespaceLink(const std::filesystem::path& netns) {
  auto link = net::inspectNamespace(netns);
  if (!link) return std::move(link).error();
  if (!*link) return std::string();
  return (*link)->name + " " + (*link)->address4 + "/" + std::to_string((*link)->prefix_length);
}

}  // namespace microvm
