#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <gtest/gtest.h>
#include <sstream>
#include <thread>

namespace microvm::e2e {

namespace fs = std::filesystem;

namespace {

struct Fixtures {
  fs::path scratch;
  fs::path home;
  fs::path rootfs;

  Fixtures() {
    char pattern[] = "/tmp/microvm-e2e.XXXXXX";
    if (!::mkdtemp(pattern)) std::abort();
    scratch = pattern;
    home = scratch / "home";
    rootfs = scratch / "rootfs";
    fs::create_directories(home);
    std::string make = std::string(MICROVM_SOURCE_DIR) + "/scripts/make-rootfs.sh " + rootfs.string();
    if (std::system(make.c_str()) != 0) std::abort();
    // Extras the tests rely on.
    std::ofstream(rootfs / "etc" / "not-executable") << "#!/bin/sh\necho never\n";
    ::chmod((rootfs / "etc" / "not-executable").c_str(), 0644);
    // busybox has no keyctl applet: a static probe that calls keyctl(2)
    // (KEYCTL_GET_KEYRING_ID of the session keyring) and prints the outcome.
    std::ofstream(scratch / "keyctl-probe.c")
        << "#include <errno.h>\n#include <stdio.h>\n#include <string.h>\n#include <sys/syscall.h>\n"
           "#include <unistd.h>\nint main(void) {\n"
           "  long r = syscall(SYS_keyctl, 0, -3, 1);\n"
           "  printf(\"keyctl: %s\\n\", r < 0 ? strerror(errno) : \"ok\");\n  return r < 0;\n}\n";
    std::string compile = "cc -static -O2 -o " + (rootfs / "bin" / "keyctl-probe").string() + " " +
                          (scratch / "keyctl-probe.c").string();
    if (std::system(compile.c_str()) != 0) std::abort();
    // The guest end of the vsock tests (AF_VSOCK client and servers).
    compile = "cc -static -O2 -o " + (rootfs / "bin" / "vsock-probe").string() + " " + MICROVM_SOURCE_DIR +
              "/tests/e2e/vsock_probe.c";
    if (std::system(compile.c_str()) != 0) std::abort();
    // The guest end of the bulk transfer tests: bench/net.sh's 64 KiB-chunk sender and receiver.
    compile = "cc -static -O2 -o " + (rootfs / "bin" / "tcp_stream").string() + " " + MICROVM_SOURCE_DIR +
              "/bench/tcp_stream.c";
    if (std::system(compile.c_str()) != 0) std::abort();
  }
  ~Fixtures() { fs::remove_all(scratch); }
};

Fixtures& fixtures() {
  static Fixtures instance;
  return instance;
}

}  // namespace

const fs::path& home() { return fixtures().home; }
const fs::path& rootfs() { return fixtures().rootfs; }
fs::path binDir() { return MICROVM_BIN_DIR; }

Cli::Cli(const std::vector<std::string>& args, const std::vector<std::string>& extra_env, bool pipe_stdin,
         const std::filesystem::path& program) {
  int out[2];
  int err[2];
  int in[2] = {-1, -1};
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) std::abort();
  if (pipe_stdin && ::pipe2(in, O_CLOEXEC) != 0) std::abort();
  std::string binary = program.empty() ? (binDir() / "microvm").string() : program.string();
  std::string home_env = "MICROVM_HOME=" + home().string();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    int null_fd = ::open("/dev/null", O_RDONLY);
    ::dup2(pipe_stdin ? in[0] : null_fd, 0);
    ::setpgid(0, 0);  // our own group: signals in tests hit only this CLI
    ::putenv(home_env.data());
    for (const auto& var : extra_env) ::putenv(const_cast<char*>(var.c_str()));
    std::vector<char*> argv = {binary.data()};
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(126);
  }
  ::close(out[1]);
  ::close(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
  if (pipe_stdin) {
    ::close(in[0]);
    in_fd_ = in[1];
  }
}

bool Cli::writeStdin(const std::string& bytes) {
  ::signal(SIGPIPE, SIG_IGN);  // a CLI that died is a test failure, not a crash
  size_t done = 0;
  while (in_fd_ >= 0 && done < bytes.size()) {
    ssize_t n = ::write(in_fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return in_fd_ >= 0;
}

void Cli::closeStdin() {
  if (in_fd_ >= 0) ::close(in_fd_);
  in_fd_ = -1;
}

Cli::~Cli() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0) ::close(out_fd_);
  if (err_fd_ >= 0) ::close(err_fd_);
  closeStdin();
}

bool Cli::pump(std::chrono::milliseconds timeout) {
  pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
  int ready = ::poll(fds, 2, static_cast<int>(timeout.count()));
  if (ready <= 0) return out_fd_ >= 0 || err_fd_ >= 0;
  for (int i = 0; i < 2; ++i) {
    if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    char buffer[4096];
    ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
    std::string& sink = i == 0 ? outcome_.out : outcome_.err;
    int& fd = i == 0 ? out_fd_ : err_fd_;
    if (n > 0) {
      sink.append(buffer, static_cast<size_t>(n));
    } else {
      ::close(fd);
      fd = -1;
      fds[i].fd = -1;
    }
  }
  return out_fd_ >= 0 || err_fd_ >= 0;
}

bool Cli::waitForStdout(const std::string& needle, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (outcome_.out.find(needle) == std::string::npos) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (!pump(std::chrono::milliseconds(100))) return outcome_.out.find(needle) != std::string::npos;
  }
  return true;
}

Outcome Cli::finish(std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline && pump(std::chrono::milliseconds(100))) {
  }
  int status = 0;
  for (;;) {
    pid_t got = ::waitpid(pid_, &status, WNOHANG);
    if (got == pid_) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      ADD_FAILURE() << "microvm did not finish within " << limit.count() << " s";
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
      return outcome_;
    }
    ::usleep(10000);
  }
  pid_ = -1;
  outcome_.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return outcome_;
}

std::vector<std::string> runArgs(std::vector<std::string> flags, std::vector<std::string> command) {
  std::vector<std::string> args = {"run", "--rm", "--rootfs", rootfs().string()};
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back("--");
  args.insert(args.end(), command.begin(), command.end());
  return args;
}

Outcome microvm(const std::vector<std::string>& args, const std::vector<std::string>& extra_env) {
  Cli cli(args, extra_env);
  return cli.finish();
}

Background::Background(const std::vector<std::string>& argv, const fs::path& log) {
  pid_ = ::fork();
  if (pid_ == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
}

Background::~Background() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

PtyCli::PtyCli(const std::vector<std::string>& args, winsize size) {
  std::string binary = (binDir() / "microvm").string();
  std::string home_env = "MICROVM_HOME=" + home().string();
  pid_ = ::forkpty(&master_, nullptr, nullptr, &size);
  if (pid_ == 0) {
    ::putenv(home_env.data());
    ::putenv(const_cast<char*>("TERM=xterm"));
    std::vector<char*> argv = {binary.data()};
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(126);
  }
}

PtyCli::~PtyCli() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (master_ >= 0) ::close(master_);
}

void PtyCli::type(const std::string& text) { (void)!::write(master_, text.data(), text.size()); }

void PtyCli::resize(winsize size) {
  // SAFETY: TIOCSWINSZ reads one winsize.
  ::ioctl(master_, TIOCSWINSZ, &size);
}

bool PtyCli::waitFor(const std::string& needle, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (output_.find(needle) == std::string::npos) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    pollfd watch{master_, POLLIN, 0};
    if (::poll(&watch, 1, 100) <= 0) continue;
    char buffer[4096];
    ssize_t got = ::read(master_, buffer, sizeof buffer);
    if (got <= 0) return output_.find(needle) != std::string::npos;
    output_.append(buffer, static_cast<size_t>(got));
  }
  return true;
}

int PtyCli::wait(std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    waitFor("\x01never\x01", std::chrono::seconds(0));  // drain output so the CLI never blocks
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

int shell(const std::string& command) {
  int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  // SAFETY: sockaddr_in is the sockaddr variant for AF_INET.
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

bool waitForPort(int port, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // SAFETY: sockaddr_in is the sockaddr variant for AF_INET.
    bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    ::close(fd);
    if (up) return true;
    ::usleep(50000);
  }
  return false;
}

std::vector<pid_t> processesMentioning(const std::string& needle) {
  std::vector<pid_t> found;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream file(entry.path() / "cmdline");
    std::stringstream text;
    text << file.rdbuf();
    if (text.str().find(needle) != std::string::npos) found.push_back(std::stoi(name));
  }
  return found;
}

std::vector<std::string> listDir(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename();
    if (name[0] != '.') names.push_back(name);
  }
  return names;
}

HostServer::HostServer(const std::string& token) : port_(freePort()) {
  std::filesystem::path www = home() / ("www-" + std::to_string(port_));
  std::filesystem::create_directories(www);
  std::ofstream(www / "index.html") << token << "\n";
  server_ = std::make_unique<Background>(
      std::vector<std::string>{"/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:" + std::to_string(port_), "-h",
                               www.string()},
      home() / ("httpd-" + std::to_string(port_) + ".log"));
  EXPECT_TRUE(waitForPort(port_, std::chrono::seconds(10)));
}

const std::vector<std::string> kCounter = {"/bin/sh", "-c",
                                           "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"};

std::string runDetached(std::vector<std::string> flags, const std::vector<std::string>& command) {
  std::vector<std::string> args = {"run", "-d", "--rootfs", rootfs().string()};
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back("--");
  args.insert(args.end(), command.begin(), command.end());
  auto result = microvm(args);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::string id = result.out.substr(0, result.out.find('\n'));
  EXPECT_EQ(id.size(), 64u) << result.out;
  return id;
}

nlohmann::json inspect(const std::string& ref) {
  auto result = microvm({"inspect", ref});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  auto list = nlohmann::json::parse(result.out, nullptr, false);
  return list.is_array() && !list.empty() ? list[0] : nlohmann::json();
}

int lastTick(const std::string& ref) {
  auto logs = microvm({"logs", "--tail", "1", ref});
  size_t at = logs.out.rfind("tick ");
  return at == std::string::npos ? -1 : std::stoi(logs.out.substr(at + 5));
}

// One HTTP/1.0 GET to 127.0.0.1:port (or [::1]:port with `ipv6`); the whole response, or "" if the
// connection failed (refused) or nothing came within `limit`.
std::string httpGet(int port, const std::string& path, std::chrono::seconds limit, bool ipv6) {
  int fd = ::socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sockaddr_in6 address6{};
  address6.sin6_family = AF_INET6;
  address6.sin6_port = htons(static_cast<uint16_t>(port));
  address6.sin6_addr = in6addr_loopback;
  // SAFETY: sockaddr_in / sockaddr_in6 are the sockaddrs of AF_INET / AF_INET6.
  int connected = ipv6 ? ::connect(fd, reinterpret_cast<sockaddr*>(&address6), sizeof address6)
                       : ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  if (connected != 0) {
    ::close(fd);
    return "";
  }
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: test\r\n\r\n";
  (void)!::write(fd, request.data(), request.size());
  std::string response;
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 200) <= 0) continue;
    char buffer[4096];
    ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got <= 0) break;
    response.append(buffer, static_cast<size_t>(got));
  }
  ::close(fd);
  return response;
}

// Retries httpGet until the body contains `needle` (the guest server may
// still be booting); bounded by `limit`.
bool eventuallyServes(int port, const std::string& needle, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (httpGet(port, "/", std::chrono::seconds(5)).find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  return false;
}

}  // namespace microvm::e2e
