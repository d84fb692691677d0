// A detached VM set up by hooks: a rootfs hook puts a config file and an
// SSH key on the VM's own disk before it boots, a post-boot hook checks the
// guest, and a handle found by name runs a command and stops the VM.
//   hooks ROOTFS_DIR
#include <cstdio>

#include "microvm/runtime.h"

using microvm::Error;
using microvm::ErrorCode;
using microvm::Result;

int fail(const char* what, const Error& error) {
  std::fprintf(stderr, "%s: %s\n", what, error.message().c_str());
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s ROOTFS_DIR\n", argv[0]);
    return 2;
  }
  microvm::RuntimeOptions runtime_options;
  runtime_options.log_level = microvm::LogLevel::kInfo;
  runtime_options.log_sink = [](const microvm::LogRecord& record) {
    std::fprintf(stderr, "[%s] %s\n", microvm::toString(record.level), record.message.c_str());
  };
  auto runtime = microvm::Runtime::open(runtime_options);
  if (!runtime) return fail("open", runtime.error());

  microvm::RunOptions options;
  options.rootfs = argv[1];
  options.name = "hooks-example";
  options.command = {"sleep", "3600"};
  options.stdout_fd = options.stderr_fd = -1;  // detached: output only to the VM's log
  options.rootfs_hooks.push_back([](microvm::RootfsEditor& disk) -> Result<void> {
    MICROVM_TRY(disk.writeFile("/etc/app/config.toml", "mode = \"demo\"\n", 0640));
    return disk.addAuthorizedKeys("/root", {"ssh-ed25519 AAAAC3EXAMPLEKEY demo@host"});
  });
  options.post_boot_hooks.push_back([](microvm::VmHandle& vm) -> Result<void> {
    microvm::ExecOptions check;
    check.command = {"test", "-s", "/etc/app/config.toml"};
    auto code = vm.exec(check);
    if (!code) return std::move(code).error();
    if (*code != 0) return Error(ErrorCode::kInternal, "config missing in the guest");
    return microvm::success();
  });
  auto started = runtime->run(options);
  if (!started) return fail("run", started.error());

  auto vm = runtime->get("hooks-example");  // as another process would
  if (!vm) return fail("get", vm.error());
  microvm::ExecOptions show;
  show.command = {"cat", "/etc/app/config.toml", "/root/.ssh/authorized_keys"};
  auto shown = vm->exec(show);
  if (!shown) return fail("exec", shown.error());
  auto info = vm->inspect();
  if (info) std::printf("booted in %.0f ms\n", info->timings_ms["boot"]);
  if (auto stopped = vm->stop(0); !stopped) return fail("stop", stopped.error());
  if (auto removed = vm->remove(); !removed) return fail("remove", removed.error());
  return *shown;
}
