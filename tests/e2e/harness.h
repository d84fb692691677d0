// End-to-end harness: runs the real `microvm` binary against a shared
// temporary data dir and a busybox rootfs built once per test binary.
#pragma once

#include <thread>

#include <nlohmann/json.hpp>

#include <sys/ioctl.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace microvm::e2e {

struct Outcome {
  int exit_code = -1;  // -1: killed by the harness after its time limit
  std::string out;
  std::string err;
};

// A running `microvm` process whose stdout/stderr are being collected.
class Cli {
 public:
  // With `pipe_stdin` its stdin is a pipe fed by writeStdin(); else /dev/null.
  // `program` other than the CLI: an example or a tool from the build.
  explicit Cli(const std::vector<std::string>& args, const std::vector<std::string>& extra_env = {},
               bool pipe_stdin = false, const std::filesystem::path& program = {});
  Cli(const Cli&) = delete;
  Cli& operator=(const Cli&) = delete;
  ~Cli();

  pid_t pid() const { return pid_; }
  // Reads output until `needle` shows up on stdout or `limit` passes.
  bool waitForStdout(const std::string& needle, std::chrono::seconds limit);
  // Writes to its stdin (a pipe_stdin Cli); false if it is gone.
  bool writeStdin(const std::string& bytes);
  void closeStdin();
  // Reads to EOF and reaps; kills the process if it outlives `limit`.
  Outcome finish(std::chrono::seconds limit = std::chrono::seconds(120));

 private:
  bool pump(std::chrono::milliseconds timeout);
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  int in_fd_ = -1;
  Outcome outcome_;
};

// A helper process (a registry, a server) for the length of a test suite;
// killed and reaped on destruction. Its output goes to `log`.
class Background {
 public:
  Background(const std::vector<std::string>& argv, const std::filesystem::path& log);
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  ~Background();

 private:
  pid_t pid_ = -1;
};

// `microvm ARGS...` with a pseudo-terminal of ours as its controlling
// terminal, in its foreground process group, as a user's shell runs it: ^C
// written to the master makes the terminal driver send SIGINT to the CLI.
class PtyCli {
 public:
  PtyCli(const std::vector<std::string>& args, winsize size);
  PtyCli(const PtyCli&) = delete;
  PtyCli& operator=(const PtyCli&) = delete;
  ~PtyCli();

  pid_t pid() const { return pid_; }
  void type(const std::string& text);
  // The kernel sends SIGWINCH to the terminal's foreground process group.
  void resize(winsize size);
  // Reads until `needle` appears in the output or `limit` passes.
  bool waitFor(const std::string& needle, std::chrono::seconds limit);
  // The exit status (128+N if killed by signal N); -1 if still running at `limit`.
  int wait(std::chrono::seconds limit);
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int master_ = -1;
  std::string output_;
};

// Runs a shell command; returns its exit status (output to our stderr).
int shell(const std::string& command);

// A TCP port on 127.0.0.1 that was free a moment ago.
int freePort();

// Waits up to `limit` for something to listen on 127.0.0.1:port.
bool waitForPort(int port, std::chrono::seconds limit);

// `run --rm --rootfs <shared rootfs> FLAGS... -- COMMAND...`
std::vector<std::string> runArgs(std::vector<std::string> flags, std::vector<std::string> command);

// Runs `microvm ARGS...` to completion.
Outcome microvm(const std::vector<std::string>& args, const std::vector<std::string>& extra_env = {});

// The shared fixtures.
const std::filesystem::path& home();    // MICROVM_HOME for every test
const std::filesystem::path& rootfs();  // busybox rootfs
std::filesystem::path binDir();

// A busybox httpd on 127.0.0.1 serving `token` at /, for the suite's length.
// Guests reach it through their gateway: url().
class HostServer {
 public:
  explicit HostServer(const std::string& token);
  int port() const { return port_; }
  std::string url() const { return "http://10.0.2.2:" + std::to_string(port_) + "/"; }

 private:
  int port_;
  std::unique_ptr<Background> server_;
};

// Processes whose command line mentions `needle` (e.g. leftover QEMUs).
std::vector<pid_t> processesMentioning(const std::string& needle);

// Entries directly under `dir`, except dotfiles such as lock files (empty if
// `dir` does not exist).
std::vector<std::string> listDir(const std::filesystem::path& dir);

// Detached VMs running a counter, shared by the lifecycle, snapshot and
// suspend tests.
// A workload that prints "tick N" every 0.2 s, so progress is observable.
extern const std::vector<std::string> kCounter;
// `run -d --rootfs <busybox> FLAGS -- COMMAND`; the VM's full id.
std::string runDetached(std::vector<std::string> flags, const std::vector<std::string>& command);
// `inspect REF`'s object (null if there is none).
nlohmann::json inspect(const std::string& ref);
// The last "tick N" in the VM's log, or -1.
int lastTick(const std::string& ref);

// One HTTP/1.0 GET to 127.0.0.1:port (or [::1]:port with `ipv6`); the whole
// response, or "" if the connection failed or nothing came within `limit`.
std::string httpGet(int port, const std::string& path = "/", std::chrono::seconds limit = std::chrono::seconds(10),
                    bool ipv6 = false);
// Retries httpGet until the body contains `needle`; bounded by `limit`.
bool eventuallyServes(int port, const std::string& needle, std::chrono::seconds limit);

// Polls `done` every 100 ms for up to `limit`.
template <typename Done>
bool eventually(Done done, std::chrono::seconds limit = std::chrono::seconds(60)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return done();
}

}  // namespace microvm::e2e
