#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "cli/cli_run.h"

namespace microvm::cli {
namespace {

// `run`'s flags parsed from `args`, then translated with the words after them.
Result<RunOptions> translate(std::vector<std::string> args, std::vector<std::string> command) {
  CLI::App app;
  RunFlags flags;
  addRunFlags(app, flags);
  std::vector<char*> argv{const_cast<char*>("run")};
  for (auto& arg : args) argv.push_back(arg.data());
  app.parse(static_cast<int>(argv.size()), argv.data());
  return toRunOptions(flags, std::move(command));
}

// microvm's main() on `args`, with stderr captured into `stderr_text`.
int runMain(std::vector<std::string> args, std::string& stderr_text) {
  std::vector<char*> argv{const_cast<char*>("microvm")};
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  testing::internal::CaptureStderr();
  int code = main(static_cast<int>(argv.size()) - 1, argv.data());
  stderr_text = testing::internal::GetCapturedStderr();
  return code;
}

TEST(CliRunOptions, DefaultsAreTheLibrarys) {
  auto options = translate({}, {"busybox"});
  ASSERT_TRUE(options) << options.error().message();
  RunOptions defaults;
  EXPECT_EQ(options->image, "busybox");
  EXPECT_TRUE(options->command.empty());
  EXPECT_EQ(options->memory_mib, defaults.memory_mib);
  EXPECT_EQ(options->cpus, defaults.cpus);
  EXPECT_EQ(options->log_max_size, defaults.log_max_size);
  EXPECT_EQ(options->log_max_files, defaults.log_max_files);
  EXPECT_EQ(options->network, defaults.network);
  EXPECT_EQ(options->platform, defaults.platform);
  EXPECT_EQ(options->stop_timeout_seconds, defaults.stop_timeout_seconds);
  EXPECT_EQ(options->ready_timeout, defaults.ready_timeout);
  EXPECT_TRUE(options->vsock);
  EXPECT_FALSE(options->has_entrypoint);
  EXPECT_TRUE(options->no_new_privs);
  EXPECT_EQ(options->stdout_fd, 1);
  EXPECT_EQ(options->stdin_fd, -1);
}

TEST(CliRunOptions, EveryParsedFlag) {
  auto options = translate({"-v", "/srv:/data:ro,uid=5", "--vsock", "1024:/run/s.sock:listen", "-m", "1g",
                            "--cpus", "2", "--log-opt", "max-size=64k,max-file=3", "--security-opt",
                            "seccomp=unconfined", "--security-opt", "no-new-privileges=false", "--network", "bridge",
                            "-p", "8080:80", "--wait-tcp", "80", "--wait-http", "8080/health", "--wait-timeout", "5",
                            "--entrypoint", "", "--rm", "-i", "--name", "web", "-h", "box", "--no-vsock",
                            "--stop-timeout", "3", "--egress-allow", "example.com", "--egress-deny-all"},
                           {"nginx:latest", "nginx", "-g", "daemon off;"});
  ASSERT_TRUE(options) << options.error().message();
  EXPECT_EQ(options->image, "nginx:latest");
  EXPECT_EQ(options->command, (std::vector<std::string>{"nginx", "-g", "daemon off;"}));
  ASSERT_EQ(options->volumes.size(), 1u);
  EXPECT_EQ(options->volumes[0].host, "/srv");
  EXPECT_EQ(options->volumes[0].guest, "/data");
  EXPECT_TRUE(options->volumes[0].readonly);
  EXPECT_EQ(options->volumes[0].uid, 5u);
  ASSERT_EQ(options->vsock_ports.size(), 1u);
  EXPECT_EQ(options->vsock_ports[0].port, 1024u);
  EXPECT_EQ(options->vsock_ports[0].host_socket, "/run/s.sock");
  EXPECT_TRUE(options->vsock_ports[0].listen);
  EXPECT_FALSE(options->vsock);
  EXPECT_EQ(options->memory_mib, 1024);
  EXPECT_EQ(options->cpus, 2);
  EXPECT_EQ(options->log_max_size, 64u << 10);
  EXPECT_EQ(options->log_max_files, 3);
  EXPECT_EQ(options->seccomp, "unconfined");
  EXPECT_FALSE(options->no_new_privs);
  EXPECT_EQ(options->network, "user");  // Docker's "bridge"
  EXPECT_EQ(options->publish, (std::vector<std::string>{"8080:80"}));
  ASSERT_EQ(options->wait_for.size(), 2u);
  EXPECT_FALSE(options->wait_for[0].http);
  EXPECT_EQ(options->wait_for[0].port, 80);
  EXPECT_TRUE(options->wait_for[1].http);
  EXPECT_EQ(options->wait_for[1].port, 8080);
  EXPECT_EQ(options->wait_for[1].path, "/health");
  EXPECT_EQ(options->ready_timeout, std::chrono::seconds(5));
  EXPECT_TRUE(options->has_entrypoint);
  EXPECT_EQ(options->entrypoint, "");
  EXPECT_TRUE(options->remove);
  EXPECT_TRUE(options->interactive);
  EXPECT_EQ(options->name, "web");
  EXPECT_EQ(options->hostname, "box");
  EXPECT_EQ(options->stop_timeout_seconds, 3);
  EXPECT_EQ(options->egress_allow, (std::vector<std::string>{"example.com"}));
  EXPECT_TRUE(options->egress_deny_all);
}

TEST(CliRunOptions, RootfsOrSnapshotKeepTheFirstWordAsTheCommand) {
  auto rootfs = translate({"--rootfs", "/srv/root"}, {"/bin/sh", "-c", "true"});
  ASSERT_TRUE(rootfs);
  EXPECT_EQ(rootfs->image, "");
  EXPECT_EQ(rootfs->rootfs, "/srv/root");
  EXPECT_EQ(rootfs->command.front(), "/bin/sh");
  auto snapshot = translate({}, {});
  ASSERT_TRUE(snapshot);
  EXPECT_EQ(snapshot->image, "");
  EXPECT_TRUE(snapshot->command.empty());
}

TEST(CliRunOptions, EnvFromFlagsAfterEnvFromOurs) {
  ::setenv("MICROVM_CLI_TEST_VAR", "ours", 1);
  ::unsetenv("MICROVM_CLI_TEST_UNSET");
  auto options = translate({"-e", "A=1", "-e", "MICROVM_CLI_TEST_VAR", "-e", "MICROVM_CLI_TEST_UNSET"}, {"busybox"});
  ASSERT_TRUE(options);
  EXPECT_EQ(options->env, (std::vector<std::string>{"A=1", "MICROVM_CLI_TEST_VAR=ours"}));
}

TEST(CliRunOptions, TheFirstBadValueIsTheError) {
  EXPECT_EQ(translate({"-v", "/a"}, {"busybox"}).error().message(),
            "invalid volume \"/a\" (want HOST:GUEST[:OPTIONS], OPTIONS from ro, rw, uid=N, gid=N)");
  EXPECT_EQ(translate({"--vsock", "x:/a"}, {"busybox"}).error().message(),
            "invalid vsock mapping \"x:/a\" (want PORT:HOST_SOCKET_PATH[:listen])");
  EXPECT_EQ(translate({"-m", "1k", "-v", "/a"}, {"busybox"}).error().message(),
            "memory size \"1k\" is not a whole number of MiB");
  EXPECT_EQ(translate({"--env-file", "/nonexistent/env"}, {"busybox"}).error().message(),
            "env file /nonexistent/env: cannot be read");
  EXPECT_EQ(translate({"--security-opt", "label=x"}, {"busybox"}).error().message(),
            "unknown --security-opt \"label=x\"");
}

TEST(CliMain, BadOptionsFailWith125BeforeAnyVm) {
  std::string error;
  EXPECT_EQ(runMain({"run", "-v", "/a", "--rootfs", "/", "true"}, error), 125);
  EXPECT_EQ(error,
            "microvm: invalid volume \"/a\" (want HOST:GUEST[:OPTIONS], OPTIONS from ro, rw, uid=N, gid=N)\n");
  EXPECT_EQ(runMain({"run", "--nope"}, error), 125);
  EXPECT_EQ(error, "microvm: The following argument was not expected: --nope\nSee 'microvm run --help'.\n");
  EXPECT_EQ(runMain({"run", "--snapshot", "s", "--rootfs", "/", "true"}, error), 125);
  EXPECT_EQ(error, "microvm: --snapshot resumes a saved VM: it takes no --rootfs and no command\n");
}

TEST(CliMain, TheWorkloadsOptionsAreNotOurs) {
  // "-v" after the command belongs to it; ours would be an invalid volume.
  std::string error;
  EXPECT_EQ(runMain({"create", "-m", "1k", "--rootfs", "/", "ls", "-v", "/a"}, error), 125);
  EXPECT_EQ(error, "microvm: memory size \"1k\" is not a whole number of MiB\n");
}

}  // namespace
}  // namespace microvm::cli
