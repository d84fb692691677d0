// The C++ API end to end, in-process: rootfs hooks writing into a VM's own
// disk (and refusing symlinked paths), post-boot hooks, handles re-attached
// by name, firewall rules with a default action, per-step timings, custom
// preflight checks, an image fetcher, the log sink, a clean data dir, and a
// workload on a guest tty resized through its handle.
// Every case boots real VMs from the suite's busybox rootfs.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <mutex>
#include <thread>

#include "harness.h"
#include "microvm/runtime.h"

namespace microvm::e2e {
namespace {

namespace fs = std::filesystem;

Runtime openRuntime(RuntimeOptions options = {}) {
  if (options.data_dir.empty()) options.data_dir = home();
  auto runtime = Runtime::open(std::move(options));
  if (!runtime) ADD_FAILURE() << runtime.error().message();
  return std::move(*runtime);
}

// Reads `fd` to EOF, for at most `limit`.
std::string drain(int fd, std::chrono::seconds limit) {
  std::string text;
  auto deadline = std::chrono::steady_clock::now() + limit;
  char buffer[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd ready{fd, POLLIN, 0};
    if (::poll(&ready, 1, 500) <= 0) continue;
    ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got <= 0) break;
    text.append(buffer, static_cast<size_t>(got));
  }
  return text;
}

struct Captured {
  int exit_code = -1;
  std::string out;    // stdout and stderr, interleaved
  std::string error;  // run() failed: its message
};

// run() with the workload's output captured, then wait().
Captured runCaptured(Runtime& runtime, RunOptions options) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return {-1, "", "pipe failed"};
  options.stdout_fd = options.stderr_fd = fds[1];
  auto vm = runtime.run(options);
  ::close(fds[1]);
  Captured captured;
  if (!vm) {
    captured.error = vm.error().message();
    ::close(fds[0]);
    return captured;
  }
  captured.out = drain(fds[0], std::chrono::seconds(120));
  ::close(fds[0]);
  auto code = vm->wait();
  captured.exit_code = code ? *code : -2;
  return captured;
}

RunOptions rootfsRun(std::vector<std::string> command) {
  RunOptions options;
  options.rootfs = rootfs();
  options.remove = true;
  options.command = std::move(command);
  return options;
}

TEST(LibraryTest, RootfsHooksWriteIntoTheVmsOwnDiskOnly) {
  Runtime runtime = openRuntime();
  fs::path tool = home() / "hook-tool.sh";
  std::ofstream(tool) << "#!/bin/sh\necho tool-ran\n";
  fs::permissions(tool, fs::perms(0755));
  RunOptions options = rootfsRun(
      {"/bin/sh", "-c",
       "cat /etc/hook.txt; stat -c '%n %a %u %g' /etc/hook.txt /opt/new/dir /root/.ssh /root/.ssh/authorized_keys "
       "/opt/new/tool.sh; cat /root/.ssh/authorized_keys /etc/hook.env; /opt/new/tool.sh"});
  options.rootfs_hooks.push_back([](RootfsEditor& disk) -> Result<void> {
    MICROVM_TRY(disk.writeFile("/etc/hook.txt", "written-by-hook\n", 0640, 1000, 1001));
    MICROVM_TRY(disk.makeDirectory("/opt/new/dir", 0750, 7, 8));
    MICROVM_TRY(disk.addAuthorizedKeys("/root", {"ssh-ed25519 AAAAC3TESTKEY test@host"}));
    return disk.writeEnvFile("/etc/hook.env", {"A=1", "B=two words"});
  });
  options.rootfs_hooks.push_back([&](RootfsEditor& disk) { return disk.copyFile(tool, "/opt/new/tool.sh"); });
  Captured hooked = runCaptured(runtime, options);
  ASSERT_EQ(hooked.error, "");
  EXPECT_EQ(hooked.exit_code, 0) << hooked.out;
  for (const char* expected :
       {"written-by-hook\n", "/etc/hook.txt 640 1000 1001\n", "/opt/new/dir 750 7 8\n", "/root/.ssh 700 0 0\n",
        "/root/.ssh/authorized_keys 600 0 0\n", "/opt/new/tool.sh 755 0 0\n", "ssh-ed25519 AAAAC3TESTKEY test@host\n",
        "A=1\nB=two words\n", "tool-ran\n"}) {
    EXPECT_NE(hooked.out.find(expected), std::string::npos) << expected << " not in:\n" << hooked.out;
  }
  // The next VM from the same (cached) base sees none of it.
  Captured plain = runCaptured(runtime, rootfsRun({"/bin/sh", "-c", "cat /etc/hook.txt 2>&1; ls /opt/new 2>&1"}));
  EXPECT_EQ(plain.exit_code, 1) << plain.out;
  EXPECT_EQ(plain.out.find("written-by-hook"), std::string::npos) << plain.out;
  EXPECT_NE(plain.out.find("No such file"), std::string::npos) << plain.out;
}

// Hook output of at most 64 KiB travels in the workload spec: a VM with it
// still restores its machine's boot template, and gets its own files. More
// needs an initramfs of the VM's own, which no template can serve.
TEST(LibraryTest, SmallRootfsHookOutputKeepsTheBootTemplateAndLargeBootsCold) {
  Runtime runtime = openRuntime();
  auto hooked = [&](const std::string& content, const std::string& name) {
    RunOptions options = rootfsRun({"/bin/sh", "-c", "wc -c < /etc/hook.txt; head -c 16 /etc/hook.txt"});
    options.remove = false;
    options.name = name;
    options.memory_mib = 440;  // a machine of this test's own: its first run makes the template
    options.rootfs_hooks.push_back([content](RootfsEditor& disk) { return disk.writeFile("/etc/hook.txt", content); });
    Captured run = runCaptured(runtime, options);
    EXPECT_EQ(run.error, "");
    EXPECT_EQ(run.exit_code, 0) << run.out;
    auto info = runtime.inspect(name);
    EXPECT_TRUE(info.ok());
    std::pair<std::string, std::string> result{run.out, info.ok() ? info->boot + ": " + info->boot_note : ""};
    EXPECT_TRUE(runtime.remove(name, true).ok());
    return result;
  };
  auto first = hooked("first-vm-content\n", "hooks-spec-1");
  EXPECT_EQ(first.first, "17\nfirst-vm-content") << first.second;
  EXPECT_EQ(first.second.rfind("cold: cold boot, saving template", 0), 0u) << first.second;
  auto second = hooked("second-vm-stuff\n", "hooks-spec-2");
  EXPECT_EQ(second.first, "16\nsecond-vm-stuff\n") << second.second;
  EXPECT_EQ(second.second.rfind("template: template ", 0), 0u) << second.second;
  auto large = hooked(std::string(70000, 'L'), "hooks-spec-3");
  EXPECT_EQ(large.first, "70000\nLLLLLLLLLLLLLLLL") << large.second;
  EXPECT_NE(large.second.find("files injected at boot"), std::string::npos) << large.second;
}

TEST(LibraryTest, RootfsHookRefusesSymlinkedPathsAndBadInput) {
  Runtime runtime = openRuntime();
  // /linuxrc is a symlink in the busybox rootfs: neither through it nor onto it.
  for (const char* path : {"/linuxrc/evil", "/linuxrc"}) {
    RunOptions options = rootfsRun({"/bin/true"});
    options.rootfs_hooks.push_back(
        [path](RootfsEditor& disk) { return disk.writeFile(path, "must not land\n"); });
    Captured refused = runCaptured(runtime, options);
    ASSERT_EQ(refused.error, "");
    EXPECT_EQ(refused.exit_code, 125) << refused.out;
    EXPECT_NE(refused.out.find("is a symlink"), std::string::npos) << path << ": " << refused.out;
  }
  // Paths the editor rejects before anything is created; a throwing hook.
  RunOptions relative = rootfsRun({"/bin/true"});
  relative.rootfs_hooks.push_back([](RootfsEditor& disk) { return disk.writeFile("etc/x", "x"); });
  Captured rejected = runCaptured(runtime, relative);
  EXPECT_NE(rejected.error.find("rootfs hook 1: rootfs hook: path \"etc/x\" must be absolute"), std::string::npos)
      << rejected.error;
  RunOptions dotdot = rootfsRun({"/bin/true"});
  dotdot.rootfs_hooks.push_back([](RootfsEditor& disk) { return disk.writeFile("/etc/../x", "x"); });
  EXPECT_NE(runCaptured(runtime, dotdot).error.find("must be normalized"), std::string::npos);
  RunOptions throwing = rootfsRun({"/bin/true"});
  throwing.rootfs_hooks.push_back([](RootfsEditor&) -> Result<void> { throw std::runtime_error("boom"); });
  EXPECT_NE(runCaptured(runtime, throwing).error.find("threw: boom"), std::string::npos);
}

TEST(LibraryTest, PostBootHookHandlesAndTimings) {
  std::vector<LogRecord> records;
  std::mutex records_lock;
  RuntimeOptions runtime_options;
  runtime_options.log_level = LogLevel::kInfo;
  runtime_options.log_sink = [&](const LogRecord& record) {
    std::lock_guard<std::mutex> hold(records_lock);
    records.push_back(record);
  };
  Runtime runtime = openRuntime(runtime_options);
  RunOptions options;
  options.rootfs = rootfs();
  options.name = "lib-handle";
  options.command = {"/bin/sh", "-c", "mkdir -p /www && echo lib-ok > /www/index.html && exec httpd -f -p 8080 -h /www"};
  options.stdout_fd = options.stderr_fd = -1;
  options.wait_for.push_back({true, 8080, "/index.html"});
  options.post_boot_hooks.push_back([](VmHandle& vm) -> Result<void> {
    ExecOptions exec;
    exec.command = {"/bin/sh", "-c", "echo booted > /tmp/post-boot"};
    auto code = vm.exec(exec);
    if (!code) return std::move(code).error();
    if (*code != 0) return Error(ErrorCode::kInternal, "exec exited " + std::to_string(*code));
    return success();
  });
  auto started = runtime.run(options);
  ASSERT_TRUE(started) << started.error().message();

  // Another handle on the same VM, by name.
  auto vm = runtime.get("lib-handle");
  ASSERT_TRUE(vm) << vm.error().message();
  EXPECT_EQ(vm->id(), started->id());
  EXPECT_EQ(*vm->status(), "running");
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  ExecOptions cat;
  cat.command = {"cat", "/tmp/post-boot"};
  cat.stdout_fd = fds[1];
  auto code = vm->exec(cat);
  ::close(fds[1]);
  EXPECT_TRUE(code && *code == 0);
  EXPECT_EQ(drain(fds[0], std::chrono::seconds(30)), "booted\n");
  ::close(fds[0]);
  ASSERT_TRUE(vm->pause());
  EXPECT_EQ(*vm->status(), "paused");
  ASSERT_TRUE(vm->resume());

  // Every step has a time: create's in the spec, boot and ready from the runner.
  auto info = vm->inspect();
  ASSERT_TRUE(info);
  for (const char* step : {"preflight", "pull", "prepare", "boot", "ready"}) {
    EXPECT_TRUE(info->timings_ms.count(step)) << step;
  }
  EXPECT_GT(info->timings_ms["boot"], 0);
  ASSERT_TRUE(vm->stop(0));
  EXPECT_TRUE(started->wait());
  EXPECT_EQ(*vm->status(), "exited");
  ASSERT_TRUE(vm->remove());
  EXPECT_FALSE(runtime.get("lib-handle"));
  std::lock_guard<std::mutex> hold(records_lock);
  bool logged_ready = false;
  for (const auto& record : records) logged_ready = logged_ready || record.message == "ready";
  EXPECT_TRUE(logged_ready);
}

// The workload's log so far (JSON lines), read from the VM's directory.
std::string workloadLog(const VmHandle& vm) {
  auto info = vm.inspect();
  if (!info) return "";
  std::ifstream file(info->dir / "workload.log");
  return std::string(std::istreambuf_iterator<char>(file), {});
}

size_t occurrences(const std::string& text, const std::string& needle) {
  size_t found = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++found;
  return found;
}

template <typename Done>
bool within(std::chrono::seconds limit, Done done) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return true;
}

TEST(LibraryTest, SuspendResumeUnpauseThroughHandles) {
  Runtime runtime = openRuntime();
  RunOptions options;
  options.rootfs = rootfs();
  options.name = "lib-suspend";
  options.vsock = false;  // QEMU cannot save the vsock device
  options.command = {"/bin/sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"};
  options.stdout_fd = options.stderr_fd = -1;
  auto vm = runtime.run(options);
  ASSERT_TRUE(vm) << vm.error().message();
  struct RemoveAtEnd {  // whatever fails, no VM outlives the test
    Runtime& runtime;
    std::string id;
    ~RemoveAtEnd() { (void)runtime.remove(id, true); }
  } remove_at_end{runtime, vm->id()};
  ASSERT_TRUE(within(std::chrono::seconds(120), [&] { return workloadLog(*vm).find(R"(tick 2\n)") != std::string::npos; }));

  auto suspended = vm->suspend();
  ASSERT_TRUE(suspended) << suspended.error().message();
  EXPECT_EQ(*vm->status(), "suspended");
  auto info = vm->inspect();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->runner_pid, 0);
  EXPECT_EQ(info->qemu_pid, 0);
  auto listed = runtime.list(false);  // suspended VMs are listed without `all`
  ASSERT_TRUE(listed);
  bool found = false;
  for (const auto& entry : *listed) found = found || entry.id == vm->id();
  EXPECT_TRUE(found);
  auto again = vm->suspend();
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("already suspended"), std::string::npos) << again.error().message();
  std::string at_suspend = workloadLog(*vm);

  ASSERT_TRUE(vm->resume()) << workloadLog(*vm);
  EXPECT_EQ(*vm->status(), "running");
  // It goes on from where it was: more ticks, and never a second "tick 0".
  ASSERT_TRUE(within(std::chrono::seconds(60), [&] { return workloadLog(*vm).size() > at_suspend.size() + 20; }));
  EXPECT_EQ(occurrences(workloadLog(*vm), R"(tick 0\n)"), 1u);

  // In memory: pause / unpause, and resume() of a paused VM unpauses it.
  ASSERT_TRUE(vm->pause());
  EXPECT_EQ(*vm->status(), "paused");
  ASSERT_TRUE(vm->unpause());
  EXPECT_EQ(*vm->status(), "running");
  ASSERT_TRUE(vm->pause());
  ASSERT_TRUE(runtime.resume(vm->id()));
  EXPECT_EQ(*vm->status(), "running");
  auto not_paused = vm->unpause();
  EXPECT_FALSE(not_paused);

  // Suspended, then stopped: exited, and its saved state is gone.
  ASSERT_TRUE(vm->suspend());
  ASSERT_TRUE(vm->stop(0));
  EXPECT_EQ(*vm->status(), "exited");
  EXPECT_FALSE(fs::exists(info->dir / "saved"));
  // The handle's wait() sees through the suspends: the VM's end, not its
  // first runner's.
  auto code = vm->wait();
  ASSERT_TRUE(code) << code.error().message();
  EXPECT_EQ(*code, 137);
  ASSERT_TRUE(vm->remove());
  EXPECT_FALSE(fs::exists(info->dir));
}

TEST(LibraryTest, FailingPostBootHookStopsTheVm) {
  Runtime runtime = openRuntime();
  RunOptions options;
  options.rootfs = rootfs();
  options.name = "lib-hook-fails";
  options.command = {"sleep", "600"};
  options.stdout_fd = options.stderr_fd = -1;
  options.post_boot_hooks.push_back([](VmHandle&) -> Result<void> { return success(); });
  options.post_boot_hooks.push_back(
      [](VmHandle&) -> Result<void> { return Error(ErrorCode::kInternal, "agent check failed"); });
  auto vm = runtime.run(options);
  ASSERT_FALSE(vm);
  EXPECT_EQ(vm.error().message(), "post-boot hook 2: agent check failed");
  auto info = runtime.inspect("lib-hook-fails");
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->status, "exited");
  EXPECT_TRUE(runtime.remove("lib-hook-fails", false));
}

TEST(LibraryTest, FirewallDenyRuleWithDefaultAllow) {
  HostServer denied("denied-token");
  HostServer open("open-token");
  Runtime runtime = openRuntime();
  RunOptions options = rootfsRun({"/bin/sh", "-c",
                                  "wget -q -O - " + denied.url() + " 2>&1; wget -q -O - " + open.url() + "; true"});
  options.firewall.push_back({FirewallRule::Action::kDeny, "10.0.2.2", denied.port(), "tcp"});
  // The default allow does not open the host's loopback (a blocked range);
  // a rule naming the gateway's port does.
  options.firewall.push_back({FirewallRule::Action::kAllow, "10.0.2.2", open.port(), "tcp"});
  options.firewall_default = FirewallRule::Action::kAllow;
  Captured result = runCaptured(runtime, options);
  ASSERT_EQ(result.error, "");
  EXPECT_EQ(result.out.find("denied-token"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("Connection refused"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("open-token"), std::string::npos) << result.out;
  RunOptions unnamed = rootfsRun(options.command);
  unnamed.firewall.push_back({FirewallRule::Action::kDeny, "10.0.2.2", denied.port(), "tcp"});
  Captured closed = runCaptured(runtime, unnamed);
  EXPECT_EQ(closed.out.find("denied-token"), std::string::npos) << closed.out;
  EXPECT_EQ(closed.out.find("open-token"), std::string::npos) << closed.out;

  // The same rule as an allow rule with the default deny: the opposite.
  RunOptions allow = rootfsRun(options.command);
  allow.firewall.push_back({FirewallRule::Action::kAllow, "10.0.2.2", denied.port(), "tcp"});
  allow.firewall_default = FirewallRule::Action::kDeny;
  Captured flipped = runCaptured(runtime, allow);
  EXPECT_NE(flipped.out.find("denied-token"), std::string::npos) << flipped.out;
  EXPECT_EQ(flipped.out.find("open-token"), std::string::npos) << flipped.out;
}

TEST(LibraryTest, PreflightChecksFetcherAndCleanDataDir) {
  // A failing required check of the embedder's stops run() before anything exists.
  RuntimeOptions checked;
  checked.preflight_checks.push_back(
      [] { return DoctorCheck{"license", false, true, "no license file", "put one in /etc/app"}; });
  Runtime strict = openRuntime(checked);
  Captured refused = runCaptured(strict, rootfsRun({"/bin/true"}));
  EXPECT_EQ(refused.error, "license: no license file (put one in /etc/app)");
  auto checks = strict.doctor();
  ASSERT_FALSE(checks.empty());
  EXPECT_EQ(checks.back().name, "license");

  // An image fetcher: the runtime asks it for a reference it does not have.
  fs::path layout = home() / "fetcher-layout";
  ASSERT_EQ(shell("python3 " MICROVM_SOURCE_DIR "/tests/e2e/oci_images.py " + layout.string() + " " +
                  rootfs().string() + " >/dev/null"),
            0);
  std::vector<std::string> asked;
  RuntimeOptions fetching;
  fetching.data_dir = home() / "fetcher-data";
  fetching.image_fetcher = [&](const std::string& reference, const std::string& platform) -> Result<std::string> {
    asked.push_back(reference + " " + platform);
    return "oci:" + layout.string() + ":busybox";
  };
  Runtime fetched_runtime = openRuntime(fetching);
  RunOptions image_run;
  image_run.image = "registry.invalid/team/app:1.0";
  image_run.remove = true;
  image_run.command = {"echo fetched-and-booted"};  // the image's entrypoint is sh -c
  Captured fetched = runCaptured(fetched_runtime, image_run);
  ASSERT_EQ(fetched.error, "");
  EXPECT_NE(fetched.out.find("fetched-and-booted"), std::string::npos) << fetched.exit_code << ": " << fetched.out;
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0], "registry.invalid/team/app:1.0 linux/amd64");
  // Cached under the name asked for: the next run does not fetch again.
  Captured again = runCaptured(fetched_runtime, image_run);
  EXPECT_NE(again.out.find("fetched-and-booted"), std::string::npos) << again.error << again.out;
  EXPECT_EQ(asked.size(), 1u);
  auto images = fetched_runtime.images();
  ASSERT_TRUE(images);
  bool listed = false;
  for (const auto& image : *images) listed = listed || image.reference == "registry.invalid/team/app:1.0";
  EXPECT_TRUE(listed);

  // clean_data_dir: VMs that are not running are gone at open().
  auto created = fetched_runtime.create(rootfsRun({"/bin/true"}));
  ASSERT_TRUE(created) << created.error().message();
  ASSERT_TRUE(fetched_runtime.inspect(*created));
  fetching.clean_data_dir = true;
  Runtime cleaned = openRuntime(fetching);
  EXPECT_FALSE(cleaned.inspect(*created));
}

// The examples docs/LIBRARY.md quotes, built from examples/cpp, run as shown.
TEST(LibraryTest, DocumentedExamplesRun) {
  Outcome hello = Cli({rootfs().string()}, {}, false, binDir() / "example_hello").finish();
  EXPECT_EQ(hello.exit_code, 0) << hello.err;
  EXPECT_EQ(hello.out, "hello from Linux example\n");
  Outcome hooks = Cli({rootfs().string()}, {}, false, binDir() / "example_hooks").finish();
  EXPECT_EQ(hooks.exit_code, 0) << hooks.err;
  EXPECT_NE(hooks.out.find("mode = \"demo\"\nssh-ed25519 AAAAC3EXAMPLEKEY demo@host\n"), std::string::npos) << hooks.out;
  EXPECT_NE(hooks.out.find("booted in "), std::string::npos) << hooks.out;
  EXPECT_NE(hooks.err.find("[info] created"), std::string::npos) << hooks.err;
  EXPECT_FALSE(openRuntime().inspect("hooks-example"));  // removed
}

// RunOptions::tty without a host terminal: the workload still gets a guest
// tty (24x80 to begin with), stdout and stderr merge, resize() reaches it
// before the stdin written after it, and the exit code comes back.
TEST(LibraryTest, TtyWorkloadOverPipesIsResizedThroughTheHandle) {
  auto runtime = openRuntime();
  int out[2], in[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(in, O_CLOEXEC), 0);
  RunOptions options = rootfsRun(
      {"/bin/sh", "-c", "stty size; echo to-stderr >&2; read line; stty size; tty; exit 3"});
  options.tty = true;
  options.interactive = true;
  options.stdin_fd = in[0];
  options.stdout_fd = options.stderr_fd = out[1];
  auto vm = runtime.run(options);
  ::close(out[1]);
  ::close(in[0]);
  ASSERT_TRUE(vm) << vm.error().message();
  std::string text;
  auto readUntil = [&](const std::string& needle) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    char buffer[4096];
    while (text.find(needle) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd ready{out[0], POLLIN, 0};
      if (::poll(&ready, 1, 500) <= 0) continue;
      ssize_t got = ::read(out[0], buffer, sizeof buffer);
      if (got <= 0) break;
      text.append(buffer, static_cast<size_t>(got));
    }
    return text.find(needle) != std::string::npos;
  };
  ASSERT_TRUE(readUntil("to-stderr\r\n")) << text;
  EXPECT_NE(text.find("24 80\r\n"), std::string::npos) << text;
  ASSERT_TRUE(vm->resize(50, 132)) << text;
  ASSERT_EQ(::write(in[1], "go\n", 3), 3);
  ::close(in[1]);
  EXPECT_TRUE(readUntil("/dev/pts/")) << text;
  EXPECT_NE(text.find("50 132\r\n"), std::string::npos) << text;
  ::close(out[0]);
  auto code = vm->wait();
  ASSERT_TRUE(code) << code.error().message();
  EXPECT_EQ(*code, 3);
  // A VM without a tty refuses a resize.
  auto plain = runtime.run([] {
    RunOptions o = rootfsRun({"/bin/sh", "-c", "sleep 30"});
    o.stdout_fd = o.stderr_fd = -1;
    return o;
  }());
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_FALSE(plain->resize(24, 80));
  EXPECT_TRUE(plain->stop(0));
}

}  // namespace
}  // namespace microvm::e2e
