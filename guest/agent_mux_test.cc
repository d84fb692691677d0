// Both ends of the agent's virtio-serial transport without a VM: the
// runner's AgentGateway (src/runner/agent_gateway.h) on an event loop, the
// guest's mux server (guest/agent_mux.cc) in a forked process, a socket pair
// standing for the port, and the real host client (src/agent/client.h)
// connecting to the gateway's socket with "CONNECT 1024".
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <sstream>
#include <thread>

#include "agent/client.h"
#include "guest/agent_for_test.h"
#include "base/event_loop.h"
#include "guest/agent.h"
#include "runner/agent_gateway.h"

namespace microvm::guest {
namespace {

namespace fs = std::filesystem;
using agent::AgentClient;

// The runner's side: an event loop thread that owns one gateway at a time.
class HostSide {
 public:
  HostSide(fs::path socket, int serial_fd, std::chrono::milliseconds connect_timeout)
      : socket_(std::move(socket)), serial_fd_(serial_fd), connect_timeout_(connect_timeout) {
    thread_ = std::thread([this] { run(); });
    ready_.get_future().wait();
  }
  ~HostSide() {
    stop_ = true;
    thread_.join();
  }
  uint64_t restarts() const { return restarts_; }

 private:
  void run() {
    auto loop = EventLoop::create();
    AgentGateway::Config config;
    config.socket = socket_;
    config.serial_fd = UniqueFd(::dup(serial_fd_));
    config.connect_timeout = connect_timeout_;
    auto gateway = AgentGateway::create(*loop, std::move(config));
    EXPECT_TRUE(gateway.ok());
    ready_.set_value();
    while (!stop_) {
      (void)loop->runOnce(std::chrono::milliseconds(20));
      restarts_ = (*gateway)->restarts();
    }
  }

  fs::path socket_;
  int serial_fd_;
  std::chrono::milliseconds connect_timeout_;
  std::promise<void> ready_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> restarts_{0};
  std::thread thread_;
};

class AgentMuxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/microvm-agent-mux-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair), 0);
    host_end_ = pair[0];
    guest_end_ = pair[1];
  }

  void TearDown() override {
    host_.reset();
    if (guest_ > 0) {
      ::kill(guest_, SIGKILL);
      ::waitpid(guest_, nullptr, 0);
    }
    ::close(host_end_);
    if (guest_end_ >= 0) ::close(guest_end_);
    fs::remove_all(dir_);
  }

  void startGuest() {
    guest_ = ::fork();
    ASSERT_GE(guest_, 0);
    if (guest_ == 0) {
      // Only the port: the host thread's sockets (a client the gateway has
      // accepted) must not live on in the "guest".
      if (guest_end_ > 3) ::close_range(3, static_cast<unsigned>(guest_end_) - 1, 0);
      ::close_range(static_cast<unsigned>(guest_end_) + 1, ~0U, 0);
      AgentOptions options;
      options.confine = false;
      (void)serveAgentOverMux(guest_end_, options);
      ::_exit(1);
    }
    ::close(guest_end_);
    guest_end_ = -1;
  }

  void startHost(std::chrono::milliseconds connect_timeout = std::chrono::seconds(5)) {
    host_ = std::make_unique<HostSide>(socket(), host_end_, connect_timeout);
  }
  fs::path socket() const { return dir_ / "vsock.sock"; }
  AgentClient client() const { return AgentClient::viaVsock(socket()); }

  // `echo` through exec: the output, or the error.
  std::string echo(const std::string& text) {
    fs::path out = dir_ / ("out." + std::to_string(counter_++));
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    agent::ExecCommand command;
    command.argv = {"/bin/echo", text};
    agent::ExecStreams streams;
    streams.stdout_fd = fd;
    auto code = client().exec(command, streams);
    ::close(fd);
    if (!code.ok()) return "error: " + code.error().message();
    return readAll(out);
  }

  fs::path dir_;
  int host_end_ = -1;
  int guest_end_ = -1;
  pid_t guest_ = -1;
  std::unique_ptr<HostSide> host_;
  std::atomic<int> counter_{0};
};

TEST_F(AgentMuxTest, ExecAndFilesTravelOverThePort) {
  startGuest();
  startHost();
  ASSERT_TRUE(client().ping().ok());
  EXPECT_EQ(echo("over the port"), "over the port\n");

  std::string data = randomBytes(3 << 20, 7);
  fs::path source = dir_ / "source";
  std::ofstream(source, std::ios::binary) << data;
  int in = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
  auto put = client().putFile((dir_ / "put").string(), in, {});
  ::close(in);
  ASSERT_TRUE(put.ok()) << put.error().message();
  EXPECT_TRUE(readAll(dir_ / "put") == data);
  int out = ::open((dir_ / "back").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  auto got = client().getFile((dir_ / "put").string(), out);
  ::close(out);
  ASSERT_TRUE(got.ok()) << got.error().message();
  EXPECT_TRUE(readAll(dir_ / "back") == data);
}

TEST_F(AgentMuxTest, ManyConcurrentTransfersKeepEveryByteRepeatedly) {
  startGuest();
  startHost();
  // Repeated: a stall or a lost byte shows in the tail, not in one run.
  for (int round = 0; round < 3; ++round) {
    constexpr int kStreams = 8;
    std::atomic<int> good{0};
    std::vector<std::thread> threads;
    for (int s = 0; s < kStreams; ++s) {
      threads.emplace_back([&, s] {
        std::string data = randomBytes((512 << 10) + 4096 * s, 100 * round + s);
        fs::path source = dir_ / ("src." + std::to_string(round) + "." + std::to_string(s));
        fs::path target = dir_ / ("dst." + std::to_string(round) + "." + std::to_string(s));
        fs::path back = dir_ / ("back." + std::to_string(round) + "." + std::to_string(s));
        std::ofstream(source, std::ios::binary) << data;
        int in = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
        bool put = client().putFile(target.string(), in, {}).ok();
        ::close(in);
        int out = ::open(back.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        bool got = put && client().getFile(target.string(), out).ok();
        ::close(out);
        if (got && readAll(back) == data && readAll(target) == data) ++good;
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(good.load(), kStreams) << "round " << round;
  }
}

TEST_F(AgentMuxTest, ANewRunnerEndsTheOldSessionsAndIsServed) {
  startGuest();
  startHost();
  // A session that stays open: a command that waits on stdin.
  int stdin_pipe[2];
  ASSERT_EQ(::pipe2(stdin_pipe, O_CLOEXEC), 0);
  auto pending = std::async(std::launch::async, [&] {
    agent::ExecCommand command;
    command.argv = {"/bin/cat"};
    agent::ExecStreams streams;
    streams.stdin_fd = stdin_pipe[0];
    return client().exec(command, streams);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // As after a restore: another runner (a new generation) on the same port.
  host_.reset();
  startHost();
  auto old = pending.wait_for(std::chrono::seconds(20));
  ASSERT_EQ(old, std::future_status::ready) << "the old session hangs";
  auto result = pending.get();
  EXPECT_FALSE(result.ok());
  ::close(stdin_pipe[1]);
  ::close(stdin_pipe[0]);
  EXPECT_EQ(echo("after the new runner"), "after the new runner\n");
}

TEST_F(AgentMuxTest, AGuestThatSendsGarbageGetsTheChannelRestartedAndAClientIsServedOnceTheAgentIsBack) {
  startHost(std::chrono::milliseconds(1000));
  // No agent yet: the test writes garbage as the guest, while a client waits.
  auto started = std::chrono::steady_clock::now();
  auto attempt = std::async(std::launch::async, [&] { return client().ping(); });
  std::string garbage(1 << 20, '\0');
  std::mt19937 generator(3);
  for (auto& c : garbage) c = static_cast<char>(generator());
  size_t written = 0;
  while (written < garbage.size() && std::chrono::steady_clock::now() - started < std::chrono::seconds(10)) {
    ssize_t n = ::write(guest_end_, garbage.data() + written, garbage.size() - written);
    if (n > 0) written += static_cast<size_t>(n);
    char drain[65536];
    while (::read(guest_end_, drain, sizeof drain) > 0) {
    }
    if (n <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(written, garbage.size());
  // The real agent takes over the port: the waiting client is served once
  // the host, hearing nothing it understands, greets the guest again.
  startGuest();
  ASSERT_EQ(attempt.wait_for(std::chrono::seconds(30)), std::future_status::ready) << "the client hangs";
  auto pinged = attempt.get();
  EXPECT_TRUE(pinged.ok()) << pinged.error().message();
  EXPECT_GE(host_->restarts(), 1u);
  EXPECT_EQ(echo("served"), "served\n");
}

}  // namespace
}  // namespace microvm::guest
