// The guest agent's server loop and the host client, talking over a unix
// socket on the host: the same code as in a VM, minus vsock and confinement.
#include "guest/agent.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pty.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/vm_sockets.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "agent/client.h"
#include "guest/agent_for_test.h"

namespace microvm::guest {
namespace {

using microvm::agent::AgentClient;

// A pipe whose read end the test hands to the client as its signal_fd: the
// client reads signalfd_siginfo records from it, whoever wrote them.
// `blocking`: a read of the empty pipe waits, as one of a signalfd made
// without SFD_NONBLOCK does.
struct FakeSignals {
  int read_end = -1;
  int write_end = -1;
  explicit FakeSignals(bool blocking = false) {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC | (blocking ? 0 : O_NONBLOCK)), 0);
    read_end = fds[0];
    write_end = fds[1];
  }
  ~FakeSignals() {
    ::close(read_end);
    if (write_end >= 0) ::close(write_end);
  }
  void raise(int sig) const {
    signalfd_siginfo info{};
    info.ssi_signo = static_cast<uint32_t>(sig);
    EXPECT_EQ(::write(write_end, &info, sizeof info), static_cast<ssize_t>(sizeof info));
  }
};

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/microvm-agent-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    socket_path_ = dir_ + "/agent.sock";
    auto channel = WorkloadExitChannel::create();
    ASSERT_TRUE(channel.ok());
    channel_.emplace(std::move(*channel));
    startServer();
  }

  void TearDown() override {
    if (server_ > 0) {
      ::kill(server_, SIGKILL);
      ::waitpid(server_, nullptr, 0);
    }
    (void)std::system(("rm -rf '" + dir_ + "'").c_str());
  }

  void startServer() {
    int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(listener, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket_path_.c_str(), sizeof address.sun_path - 1);
    // SAFETY: sockaddr_un is the sockaddr of AF_UNIX, passed with its size.
    ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    ASSERT_EQ(::listen(listener, 64), 0);
    server_ = ::fork();
    ASSERT_GE(server_, 0);
    if (server_ == 0) {
      AgentOptions options;
      options.workload.env = {"FROM_WORKLOAD=yes"};
      options.confine = false;
      options.exit_channel = &*channel_;
      // kRefresh's effects are recorded in files: the test must never set
      // the host's clock. A file "refuse" makes setting the clock fail.
      std::string dir = dir_;
      options.refresh.set_clock = [dir](int64_t realtime_ns) -> Result<void> {
        if (std::filesystem::exists(dir + "/refuse")) return Error(ErrorCode::kIo, "clock_settime: Operation not permitted", EPERM);
        std::ofstream(dir + "/clock") << realtime_ns;
        return success();
      };
      options.refresh.add_entropy = [dir](std::string_view entropy) -> Result<void> {
        std::ofstream(dir + "/entropy", std::ios::binary | std::ios::app) << entropy << "|reseeded|";
        return success();
      };
      channel_->closeWriteEnd();
      Error error = serveAgent(listener, options);
      (void)error;
      ::_exit(1);
    }
    ::close(listener);
  }

  AgentClient client() const { return AgentClient::direct(socket_path_); }

  struct Output {
    int code = -1;
    std::string out;
    std::string err;
  };

  // Runs argv with stdin from `input` (nullopt: none) and collects output.
  Output run(std::vector<std::string> argv, std::optional<std::string> input = std::nullopt,
             agent::ExecCommand command = {}) {
    command.argv = std::move(argv);
    std::string out_path = dir_ + "/out." + std::to_string(counter_++);
    std::string err_path = out_path + ".err";
    int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int fds[2] = {-1, -1};
    std::thread feeder;
    agent::ExecStreams streams;
    streams.stdout_fd = out_fd;
    streams.stderr_fd = err_fd;
    if (input) {
      EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
      streams.stdin_fd = fds[0];
      feeder = std::thread([data = *input, fd = fds[1]] {
        std::string_view rest = data;
        while (!rest.empty()) {
          ssize_t written = ::write(fd, rest.data(), rest.size());
          if (written <= 0) break;
          rest.remove_prefix(static_cast<size_t>(written));
        }
        ::close(fd);
      });
    }
    auto code = client().exec(command, streams);
    if (feeder.joinable()) feeder.join();
    if (fds[0] >= 0) ::close(fds[0]);
    ::close(out_fd);
    ::close(err_fd);
    Output output;
    EXPECT_TRUE(code.ok()) << code.error().message();
    if (code.ok()) output.code = *code;
    output.out = readAll(out_path);
    output.err = readAll(err_path);
    return output;
  }

  std::string dir_;
  std::string socket_path_;
  std::optional<WorkloadExitChannel> channel_;
  pid_t server_ = -1;
  int counter_ = 0;
};

TEST_F(AgentTest, PingAnswers) { ASSERT_TRUE(client().ping().ok()); }

TEST(AgentPeerTest, OverVsockOnlyTheHostIsServed) {
  sockaddr_vm vsock{};
  vsock.svm_family = AF_VSOCK;
  vsock.svm_port = 1234;
  auto allowed = [&](uint32_t cid) {
    vsock.svm_cid = cid;
    // SAFETY: sockaddr_vm is the sockaddr of AF_VSOCK, passed with its size.
    return agentPeerAllowed(reinterpret_cast<const sockaddr*>(&vsock), sizeof vsock);
  };
  EXPECT_TRUE(allowed(VMADDR_CID_HOST));
  EXPECT_FALSE(allowed(VMADDR_CID_LOCAL)) << "vsock loopback: a process in the guest";
  EXPECT_FALSE(allowed(3)) << "the VM's own CID: a process in the guest";
  EXPECT_FALSE(allowed(VMADDR_CID_HYPERVISOR));
  EXPECT_FALSE(allowed(VMADDR_CID_ANY));
  vsock.svm_cid = VMADDR_CID_HOST;
  // SAFETY: as above, with a length too short for a sockaddr_vm.
  EXPECT_FALSE(agentPeerAllowed(reinterpret_cast<const sockaddr*>(&vsock), sizeof(sa_family_t) + 2));
  sockaddr_in inet{};
  inet.sin_family = AF_INET;
  // SAFETY: sockaddr_in is the sockaddr of AF_INET, passed with its size.
  EXPECT_FALSE(agentPeerAllowed(reinterpret_cast<const sockaddr*>(&inet), sizeof inet));
}

// The accept loop asks every connection who it is from: a TCP peer (neither
// the host over vsock nor the unit tests' unix socket) is closed unanswered.
TEST(AgentPeerTest, TheServerLoopClosesAPeerItDoesNotServe) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  // SAFETY: sockaddr_in is the sockaddr of AF_INET, passed with its size.
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  pid_t server = ::fork();
  ASSERT_GE(server, 0);
  if (server == 0) {
    AgentOptions options;
    options.confine = false;
    (void)serveAgent(listener, options);
    ::_exit(1);
  }
  ::close(listener);
  int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  std::string hello;
  agent::appendFrame(hello, agent::FrameType::kAgentHello, agent::encodeU32(agent::kAgentProtocolVersion));
  EXPECT_EQ(::write(client, hello.data(), hello.size()), static_cast<ssize_t>(hello.size()));
  timeval limit{5, 0};
  ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  char answer[64];
  ssize_t got = ::read(client, answer, sizeof answer);
  // Closed with the hello unread, the connection may end in a reset; a
  // timeout (EAGAIN) or an answer means it was served.
  bool closed = got == 0 || (got < 0 && errno == ECONNRESET);
  EXPECT_TRUE(closed) << "read: " << got << " (" << std::strerror(errno) << "): the agent served a peer it must not";
  ::close(client);
  ::kill(server, SIGKILL);
  ::waitpid(server, nullptr, 0);
}

TEST_F(AgentTest, ExecReturnsExitCodesAndOutputStreams) {
  auto output = run({"/bin/sh", "-c", "echo out; echo err >&2; exit 7"});
  EXPECT_EQ(output.code, 7);
  EXPECT_EQ(output.out, "out\n");
  EXPECT_EQ(output.err, "err\n");
  EXPECT_EQ(run({"true"}).code, 0);
}

TEST_F(AgentTest, ExecOfAMissingProgramIs127AndANonExecutableIs126) {
  auto missing = run({"no-such-program-microvm"});
  EXPECT_EQ(missing.code, 127);
  EXPECT_NE(missing.err.find("executable file not found in $PATH"), std::string::npos) << missing.err;
  std::string script = dir_ + "/not-executable";
  std::ofstream(script) << "#!/bin/sh\n";
  ::chmod(script.c_str(), 0644);
  EXPECT_EQ(run({script}).code, 126);
}

TEST_F(AgentTest, ExecKilledBySignalIs128PlusSignal) {
  EXPECT_EQ(run({"/bin/sh", "-c", "kill -TERM $$"}).code, 128 + SIGTERM);
}

TEST_F(AgentTest, ExecGetsTheWorkloadEnvironmentPlusItsOwnAndItsWorkdir) {
  agent::ExecCommand command;
  command.env = {"EXTRA=1"};
  command.workdir = dir_;
  auto output = run({"/bin/sh", "-c", "echo $FROM_WORKLOAD $EXTRA; pwd"}, std::nullopt, command);
  EXPECT_EQ(output.out, "yes 1\n" + dir_ + "\n");
}

TEST_F(AgentTest, StdinIsForwardedAndItsEofEndsTheCommand) {
  std::string input = randomBytes(3 << 20, 1);
  auto output = run({"cat"}, input);
  EXPECT_EQ(output.code, 0);
  EXPECT_TRUE(output.out == input) << "got " << output.out.size() << " bytes of " << input.size();
  // Without stdin the command sees EOF at once.
  auto empty = run({"cat"});
  EXPECT_EQ(empty.code, 0);
  EXPECT_EQ(empty.out, "");
}

TEST_F(AgentTest, BigOutputArrivesIntact) {
  std::string data = randomBytes(64 << 20, 2);
  std::string path = dir_ + "/big";
  std::ofstream(path, std::ios::binary) << data;
  auto output = run({"cat", path});
  EXPECT_EQ(output.code, 0);
  ASSERT_EQ(output.out.size(), data.size());
  EXPECT_TRUE(output.out == data);
}

TEST_F(AgentTest, OutputOfACommandThatIgnoresStdinDoesNotDeadlock) {
  // stdin is never read while 8 MiB come out: neither side may block the other.
  std::string input = randomBytes(4 << 20, 3);
  auto output = run({"/bin/sh", "-c", "head -c 8388608 /dev/zero; exec 0<&-; sleep 0.2"}, input);
  EXPECT_EQ(output.code, 0);
  EXPECT_EQ(output.out.size(), 8u << 20);
}

TEST_F(AgentTest, ConcurrentSessionsStaySeparate) {
  constexpr int kSessions = 16;
  std::vector<std::thread> threads;
  std::atomic<int> correct{0};
  for (int i = 0; i < kSessions; ++i) {
    threads.emplace_back([&, i] {
      std::string out_path = dir_ + "/concurrent." + std::to_string(i);
      int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      agent::ExecCommand command;
      command.argv = {"/bin/sh", "-c", "sleep 0.2; echo session $0; exit $0", std::to_string(i)};
      agent::ExecStreams streams;
      streams.stdout_fd = fd;
      auto code = client().exec(command, streams);
      ::close(fd);
      if (code.ok() && *code == i && readAll(out_path) == "session " + std::to_string(i) + "\n") ++correct;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(correct.load(), kSessions);
}

TEST_F(AgentTest, SignalsReachTheCommand) {
  FakeSignals signals;
  signals.raise(SIGTERM);
  agent::ExecCommand command;
  command.argv = {"/bin/sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.05; done"};
  agent::ExecStreams streams;
  streams.signal_fd = signals.read_end;
  // The signal may arrive before the trap is set: then sh dies of it (143).
  auto code = client().exec(command, streams);
  ASSERT_TRUE(code.ok()) << code.error().message();
  EXPECT_TRUE(*code == 42 || *code == 143) << *code;

  FakeSignals kill_signals;
  kill_signals.raise(SIGKILL);
  command.argv = {"sleep", "30"};
  streams.signal_fd = kill_signals.read_end;
  auto killed = client().exec(command, streams);
  ASSERT_TRUE(killed.ok());
  EXPECT_EQ(*killed, 128 + SIGKILL);
}

// The OCI runtime once handed exec a blocking signalfd, and a SIGWINCH
// (podman sizing the console) stalled the session in a second read.
TEST_F(AgentTest, ABlockingSignalFdDoesNotStallTheSession) {
  FakeSignals signals(/*blocking=*/true);
  agent::ExecCommand command;
  command.argv = {"/bin/sh", "-c", "read line; echo got $line"};
  command.tty = true;
  std::string out_path = dir_ + "/blocking.out";
  int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int input[2];
  ASSERT_EQ(::pipe2(input, O_CLOEXEC), 0);
  agent::ExecStreams streams;
  streams.stdin_fd = input[0];
  streams.stdout_fd = out_fd;
  streams.signal_fd = signals.read_end;
  std::atomic<bool> done{false};
  std::atomic<bool> stalled{false};
  std::thread driver([&] {
    signals.raise(SIGWINCH);
    ::usleep(100'000);
    (void)!::write(input[1], "go\n", 3);
    // Bounded: a client stalled in a read is freed by EOF, and the test fails.
    for (int i = 0; i < 100 && !done; ++i) ::usleep(50'000);
    if (!done) {
      stalled = true;
      ::close(signals.write_end);
      signals.write_end = -1;
    }
  });
  auto code = client().exec(command, streams);
  done = true;
  driver.join();
  ::close(input[0]);
  ::close(input[1]);
  ::close(out_fd);
  ASSERT_TRUE(code.ok()) << code.error().message();
  EXPECT_EQ(*code, 0);
  EXPECT_FALSE(stalled) << "the session waited for a second signal";
  EXPECT_NE(readAll(out_path).find("got go"), std::string::npos) << readAll(out_path);
}

TEST_F(AgentTest, TtyHasTheWindowSizeAndFollowsResizes) {
  // The host side's terminal, whose size the client reads on SIGWINCH.
  int master = -1;
  int slave = -1;
  winsize host_size{50, 132, 0, 0};
  ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, &host_size), 0);
  FakeSignals signals;
  agent::ExecCommand command;
  command.argv = {"/bin/sh", "-c", "stty size; test -t 0 && echo tty; read line; stty size"};
  command.tty = true;
  command.window = {30, 100};
  std::string out_path = dir_ + "/tty.out";
  int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int input[2];
  ASSERT_EQ(::pipe2(input, O_CLOEXEC), 0);
  agent::ExecStreams streams;
  streams.stdin_fd = input[0];
  streams.stdout_fd = out_fd;
  streams.signal_fd = signals.read_end;
  streams.terminal_fd = slave;
  std::thread driver([&] {
    // Once the first size is printed: resize, then let the script go on.
    for (int i = 0; i < 200 && readAll(out_path).find("tty") == std::string::npos; ++i) ::usleep(20'000);
    signals.raise(SIGWINCH);
    ::usleep(100'000);
    (void)!::write(input[1], "go\n", 3);
  });
  auto code = client().exec(command, streams);
  driver.join();
  ::close(input[0]);
  ::close(input[1]);
  ::close(out_fd);
  ::close(master);
  ::close(slave);
  ASSERT_TRUE(code.ok()) << code.error().message();
  EXPECT_EQ(*code, 0);
  std::string out = readAll(out_path);
  EXPECT_NE(out.find("30 100\r\ntty\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("50 132\r\n"), std::string::npos) << out;
}

TEST_F(AgentTest, PutAndGetRoundTripWithModeAndMtime) {
  std::string data = randomBytes(5 << 20, 4);
  std::string source = dir_ + "/source";
  std::ofstream(source, std::ios::binary) << data;
  int fd = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
  std::string target = dir_ + "/put-target";
  agent::PutOptions options;
  options.mode = 0751;
  options.mtime = 1'600'000'000;
  auto put = client().putFile(target, fd, options);
  ::close(fd);
  ASSERT_TRUE(put.ok()) << put.error().message();
  EXPECT_TRUE(readAll(target) == data);
  struct stat st {};
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0751u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'600'000'000);

  std::string back = dir_ + "/back";
  int out = ::open(back.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  auto info = client().getFile(target, out);
  ::close(out);
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(info->mode, 0751u);
  EXPECT_EQ(info->size, data.size());
  EXPECT_TRUE(readAll(back) == data);
}

TEST_F(AgentTest, FailedPutsAnswerAfterTheDataAndLeaveNothingBehind) {
  std::string data = randomBytes(1 << 20, 5);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::thread feeder([&] {
    (void)!::write(fds[1], data.data(), data.size());
    ::close(fds[1]);
  });
  auto put = client().putFile(dir_ + "/missing/file", fds[0], {});
  feeder.join();
  ::close(fds[0]);
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.error().code(), ErrorCode::kNotFound) << put.error().message();

  // A rename that fails (onto a non-empty directory) removes its temporary file.
  ASSERT_EQ(::mkdir((dir_ + "/occupied").c_str(), 0755), 0);
  std::ofstream(dir_ + "/occupied/file") << "x";
  int empty = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto onto_dir = client().putFile(dir_ + "/occupied", empty, {});
  ::close(empty);
  ASSERT_FALSE(onto_dir.ok());
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename().string().find(".microvm-put-"), std::string::npos) << entry.path();
  }
}

TEST_F(AgentTest, StatListMkdirAndSymlinks) {
  auto made = client().mkdir(dir_ + "/a/b/c", 0700, true);
  ASSERT_TRUE(made.ok()) << made.error().message();
  EXPECT_TRUE(client().mkdir(dir_ + "/a/b/c", 0700, true).ok());
  auto again = client().mkdir(dir_ + "/a/b/c", 0700, false);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
  ASSERT_TRUE(client().putSymlink(dir_ + "/a/link", "b/c").ok());
  std::ofstream(dir_ + "/a/file") << "12345";

  auto info = client().stat(dir_ + "/a/b/c");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->type, agent::FileType::kDirectory);
  EXPECT_EQ(info->mode, 0700u);

  auto entries = client().list(dir_ + "/a");
  ASSERT_TRUE(entries.ok()) << entries.error().message();
  std::map<std::string, agent::FileInfo> by_name;
  for (const auto& entry : *entries) by_name[entry.name] = entry;
  ASSERT_EQ(by_name.size(), 3u);
  EXPECT_EQ(by_name["b"].type, agent::FileType::kDirectory);
  EXPECT_EQ(by_name["link"].type, agent::FileType::kSymlink);
  EXPECT_EQ(by_name["link"].link_target, "b/c");
  EXPECT_EQ(by_name["file"].type, agent::FileType::kRegular);
  EXPECT_EQ(by_name["file"].size, 5u);

  auto missing = client().stat(dir_ + "/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  auto relative = client().stat("relative/path");
  ASSERT_FALSE(relative.ok());
  EXPECT_EQ(relative.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(AgentTest, UnknownOperationIsUnsupported) {
  agent::AgentRequest request;
  request.op = 999;
  request.id = 77;
  auto session = client().begin(request);
  ASSERT_TRUE(session.ok()) << session.error().message();
  auto frame = session->receive();
  ASSERT_TRUE(frame.ok());
  ASSERT_EQ(frame->type, agent::FrameType::kResult);
  auto result = agent::decodeResult(frame->payload);
  ASSERT_TRUE(result.ok()) << result.error().message();
  EXPECT_EQ(result->status, agent::AgentStatus::kUnsupported);
  EXPECT_EQ(result->id, 77u);
}

// Sends raw bytes as a client and returns the agent's kResult, if any.
std::optional<agent::AgentResult> rawExchange(const AgentClient& client, const std::string& wire) {
  auto fd = client.connectRaw();
  if (!fd.ok()) return std::nullopt;
  (void)!::write(fd->get(), wire.data(), wire.size());
  ::shutdown(fd->get(), SHUT_WR);
  agent::FrameReader reader;
  char buffer[4096];
  for (;;) {
    ssize_t got = ::read(fd->get(), buffer, sizeof buffer);
    if (got <= 0) break;
    reader.feed(std::string_view(buffer, static_cast<size_t>(got)));
  }
  while (auto frame = reader.next()) {
    if (frame->type != agent::FrameType::kResult) continue;
    auto result = agent::decodeResult(frame->payload);
    if (!result) return std::nullopt;
    return std::move(*result);
  }
  return std::nullopt;
}

TEST_F(AgentTest, MalformedInputIsRefusedAndTheAgentCarriesOn) {
  std::string hello;
  agent::appendFrame(hello, agent::FrameType::kAgentHello, agent::encodeU32(agent::kAgentProtocolVersion));

  // A request before the hello.
  std::string no_hello;
  agent::appendFrame(no_hello, agent::FrameType::kRequest, "");
  auto result = rawExchange(client(), no_hello);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status, agent::AgentStatus::kBadRequest);

  // Another protocol version.
  std::string future;
  agent::appendFrame(future, agent::FrameType::kAgentHello, agent::encodeU32(99));
  result = rawExchange(client(), future);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status, agent::AgentStatus::kUnsupported);

  // A request whose field runs past its end.
  std::string truncated = hello;
  std::string fields;
  agent::appendU32Field(fields, agent::AgentTag::kOp, 1);
  fields += std::string("\x0a\x00\xff\xff\x00\x00", 6);
  agent::appendFrame(truncated, agent::FrameType::kRequest, fields);
  result = rawExchange(client(), truncated);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status, agent::AgentStatus::kBadRequest);
  EXPECT_EQ(result->message, "malformed request: field 10 (path) at offset 10: length 65535 exceeds the 0 byte(s) "
                             "left in the 16-byte payload");

  // A frame length above the limit.
  std::string oversized = hello;
  agent::putLe16(oversized, static_cast<uint16_t>(agent::FrameType::kRequest));
  agent::putLe16(oversized, 0);
  agent::putLe32(oversized, agent::kMaxPayload + 1);
  result = rawExchange(client(), oversized);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status, agent::AgentStatus::kBadRequest);

  // Garbage, then silence.
  (void)rawExchange(client(), std::string(100, '\xff'));

  EXPECT_TRUE(client().ping().ok());
}

TEST_F(AgentTest, WaitAnswersOnceTheWorkloadExitCodeIsPublished) {
  std::atomic<int> code{-1};
  std::thread waiter([&] {
    auto result = client().waitWorkload();
    if (result.ok()) code = *result;
  });
  for (int i = 0; i < 200 && channel_->waiters() == 0; ++i) ::usleep(10'000);
  EXPECT_EQ(channel_->waiters(), 1);
  EXPECT_EQ(code.load(), -1);
  channel_->publish(3);
  waiter.join();
  EXPECT_EQ(code.load(), 3);
  // Later waiters get it at once.
  auto again = client().waitWorkload();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 3);
}

// A loopback listener on a free port; answers HTTP requests with `status`.
class LoopbackServer {
 public:
  explicit LoopbackServer(int status) : status_(status) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // SAFETY: sockaddr_in is the sockaddr of AF_INET, passed with its size.
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    socklen_t length = sizeof address;
    // SAFETY: as above.
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    ::listen(fd_, 8);
    thread_ = std::thread([this] {
      int connection = ::accept(fd_, nullptr, nullptr);
      if (connection < 0) return;
      char buffer[1024];
      std::string request;
      while (request.find("\r\n\r\n") == std::string::npos) {
        ssize_t got = ::read(connection, buffer, sizeof buffer);
        if (got <= 0) break;
        request.append(buffer, static_cast<size_t>(got));
      }
      request_ = request;
      std::string response = "HTTP/1.1 " + std::to_string(status_) + " Whatever\r\nContent-Length: 0\r\n\r\n";
      (void)!::write(connection, response.data(), response.size());
      ::close(connection);
    });
  }
  ~LoopbackServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  const std::string& request() const { return request_; }

 private:
  int status_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::string request_;
  std::thread thread_;
};

TEST_F(AgentTest, RefreshSetsTheClockAndMixesInTheEntropyThenReseeds) {
  std::string entropy = randomBytes(64, 7);
  ASSERT_TRUE(client().refresh(int64_t{1'800'000'000'123'456'789}, entropy).ok());
  EXPECT_EQ(readAll(dir_ + "/clock"), "1800000000123456789");
  EXPECT_EQ(readAll(dir_ + "/entropy"), entropy + "|reseeded|");

  // Without a time the clock is left alone; the RNG is still reseeded.
  std::filesystem::remove(dir_ + "/clock");
  ASSERT_TRUE(client().refresh(std::nullopt, "xy").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/clock"));
  EXPECT_EQ(readAll(dir_ + "/entropy"), entropy + "|reseeded|xy|reseeded|");
}

TEST_F(AgentTest, ARefreshThatFailsSaysWhyAndTheAgentCarriesOn) {
  { std::ofstream(dir_ + "/refuse") << ""; }
  auto refused = client().refresh(int64_t{1}, "e");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("clock_settime: Operation not permitted"), std::string::npos)
      << refused.error().message();
  EXPECT_EQ(refused.error().sysErrno(), EPERM);
  EXPECT_TRUE(client().ping().ok());
}

TEST_F(AgentTest, OversizedRefreshEntropyIsABadRequest) {
  agent::AgentRequest request;
  request.op = static_cast<uint32_t>(agent::AgentOp::kRefresh);
  request.entropy = std::string(agent::kMaxRefreshEntropy + 1, 'x');
  auto session = client().begin(request);
  ASSERT_TRUE(session.ok()) << session.error().message();
  auto result = session->result("refresh");
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message().find("exceed 512"), std::string::npos) << result.error().message();
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/entropy"));
}

TEST_F(AgentTest, ProbesConnectToLoopbackPorts) {
  {
    LoopbackServer server(204);
    auto status = client().probeHttp(server.port(), "/healthz?x=1");
    ASSERT_TRUE(status.ok()) << status.error().message();
    EXPECT_EQ(*status, 204);
    EXPECT_EQ(server.request().rfind("GET /healthz?x=1 HTTP/1.0\r\n", 0), 0u) << server.request();
  }
  {
    LoopbackServer server(200);
    EXPECT_TRUE(client().probeTcp(server.port()).ok());
  }
  // The port of a closed listener refuses on both addresses.
  uint16_t closed_port = 0;
  {
    LoopbackServer server(200);
    closed_port = server.port();
    ASSERT_TRUE(client().probeTcp(server.port()).ok());
  }
  auto refused = client().probeTcp(closed_port);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().sysErrno(), ECONNREFUSED) << refused.error().message();
  auto bad_path = client().probeHttp(80, "/a b");
  ASSERT_FALSE(bad_path.ok());
  EXPECT_EQ(bad_path.error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace microvm::guest
