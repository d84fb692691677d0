// Vsock end to end: real guests (the static vsock-probe in the test rootfs)
// talk AF_VSOCK to host unix sockets through the runner's vhost-user device.
// Content is checked both ways, by bytes or by FNV-1a digest.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "harness.h"

namespace microvm::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kFnvStart = 0xcbf29ce484222325ull;

uint64_t fnv(uint64_t hash, const unsigned char* data, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    hash ^= data[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

// The probe's pattern: byte i of a "source" stream.
unsigned char pattern(uint64_t i) { return static_cast<unsigned char>((i * 131u) ^ (i >> 11)); }

std::string hex(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_;
};

sockaddr_un unixAddress(const fs::path& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  return address;
}

Fd listenAt(const fs::path& path) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address = unixAddress(path);
  // SAFETY: sockaddr_un is the sockaddr variant for AF_UNIX.
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0) << path;
  EXPECT_EQ(::listen(fd.get(), 64), 0);
  return fd;
}

Fd connectUnix(const fs::path& path) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address = unixAddress(path);
  // SAFETY: sockaddr_un is the sockaddr variant for AF_UNIX.
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return Fd();
  timeval limit{60, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  return fd;
}

Fd acceptWithin(int listener, seconds limit) {
  pollfd pfd{listener, POLLIN, 0};
  if (::poll(&pfd, 1, static_cast<int>(limit.count() * 1000)) != 1) return Fd();
  Fd fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  timeval timeout{60, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return fd;
}

bool writeAll(int fd, const void* data, size_t len) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

std::string readToEof(int fd, size_t limit = 1 << 20) {
  std::string out;
  char buffer[65536];
  while (out.size() < limit) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

// Reads one line byte by byte, so nothing after it is consumed.
std::string readLine(int fd) {
  std::string line;
  char c;
  while (line.size() < 256 && ::read(fd, &c, 1) == 1) {
    line.push_back(c);
    if (c == '\n') break;
  }
  return line;
}

// Connects through the base socket to guest `port`, retrying while the guest
// is not listening yet (the connection is then closed without "OK").
Fd connectToGuest(const fs::path& base, uint32_t port, seconds limit = seconds(90)) {
  auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    Fd fd = connectUnix(base);
    if (fd.valid()) {
      std::string request = "CONNECT " + std::to_string(port) + "\n";
      if (writeAll(fd.get(), request.data(), request.size()) && readLine(fd.get()).rfind("OK ", 0) == 0) return fd;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return Fd();
}

class VsockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern_dir[] = "/tmp/mvsock.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern_dir), nullptr);
    dir_ = pattern_dir;
  }
  void TearDown() override {
    if (!id_.empty()) {
      EXPECT_EQ(microvm({"rm", "-f", id_}).exit_code, 0);
    }
    fs::remove_all(dir_);
  }

  // Starts a detached VM running `script` with extra flags; returns its
  // vsock base socket (from inspect).
  fs::path start(std::vector<std::string> flags, const std::string& script) {
    std::vector<std::string> args = {"run", "-d", "--rootfs", rootfs().string()};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"--", "/bin/sh", "-c", script});
    auto result = microvm(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    id_ = result.out.substr(0, result.out.find('\n'));
    auto inspected = microvm({"inspect", id_});
    auto list = json::parse(inspected.out, nullptr, false);
    EXPECT_TRUE(list.is_array() && list.size() == 1) << inspected.out;
    return list[0]["vsock"]["socket"].get<std::string>();
  }

  std::string logs() { return microvm({"logs", id_}).out; }

  fs::path dir_;
  std::string id_;
};

TEST_F(VsockTest, GuestConnectsToMappedSocketAndToBaseUnderscorePort) {
  fs::path mapped = dir_ / "mapped.sock";
  Fd mapped_server = listenAt(mapped);
  fs::path base = start({"--vsock", "5000:" + mapped.string()},
                        "vsock-probe connect 5000 send from-guest-to-mapped; "
                        "vsock-probe connect 5001 send from-guest-to-base");
  auto inspected = json::parse(microvm({"inspect", id_}).out)[0]["vsock"];
  EXPECT_EQ(inspected["ports"][0]["port"], 5000);
  EXPECT_EQ(inspected["ports"][0]["host_socket"], mapped.string());
  EXPECT_EQ(inspected["ports"][0]["listen"], false);
  Fd base_server = listenAt(base.string() + "_5001");

  Fd first = acceptWithin(mapped_server.get(), seconds(90));
  ASSERT_TRUE(first.valid()) << logs();
  EXPECT_EQ(readToEof(first.get()), "from-guest-to-mapped");
  ASSERT_TRUE(writeAll(first.get(), "hello-from-mapped-host", 22));
  first = Fd();

  Fd second = acceptWithin(base_server.get(), seconds(60));
  ASSERT_TRUE(second.valid()) << logs();
  EXPECT_EQ(readToEof(second.get()), "from-guest-to-base");
  ASSERT_TRUE(writeAll(second.get(), "hello-from-base-host", 20));
  second = Fd();

  auto waited = microvm({"wait", id_});
  EXPECT_EQ(waited.out, "0\n") << logs();
  std::string out = logs();
  EXPECT_NE(out.find("recv: hello-from-mapped-host"), std::string::npos) << out;
  EXPECT_NE(out.find("recv: hello-from-base-host"), std::string::npos) << out;
}

TEST_F(VsockTest, HostConnectsWithConnectLineAndHalfClosesAndSixteenStreamsRunAtOnce) {
  // Without a --vsock mapping the default seccomp profile refuses the
  // workload vsock sockets; this one is never connected to.
  fs::path base = start({"--vsock", "6002:" + (dir_ / "unused.sock").string()},
                        "vsock-probe listen 6000 echo & vsock-probe listen 6001 sink");

  // (b) CONNECT + OK, then an echo.
  Fd echo = connectToGuest(base, 6000);
  ASSERT_TRUE(echo.valid()) << logs();
  ASSERT_TRUE(writeAll(echo.get(), "ping over vsock", 15));
  char buffer[32] = {};
  ASSERT_EQ(::read(echo.get(), buffer, 15), 15);
  EXPECT_STREQ(buffer, "ping over vsock");
  echo = Fd();

  // (e) Half-close: the host stops writing; the guest sees EOF and still
  // answers on the same connection.
  Fd sink = connectToGuest(base, 6001);
  ASSERT_TRUE(sink.valid());
  ASSERT_TRUE(writeAll(sink.get(), "abc", 3));
  ASSERT_EQ(::shutdown(sink.get(), SHUT_WR), 0);
  auto abc = reinterpret_cast<const unsigned char*>("abc");
  EXPECT_EQ(readToEof(sink.get()), "sink 3 " + hex(fnv(kFnvStart, abc, 3)) + "\n");

  // (c) 16 concurrent streams, each echoing its own 256 KiB.
  constexpr int kStreams = 16;
  constexpr size_t kBytes = 256 * 1024;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int s = 0; s < kStreams; ++s) {
    threads.emplace_back([&, s] {
      Fd fd = connectToGuest(base, 6000, seconds(60));
      if (!fd.valid()) return;
      std::string data(kBytes, '\0');
      for (size_t i = 0; i < kBytes; ++i) data[i] = static_cast<char>(pattern(i + 7919u * s));
      // Writer and reader at once: the echo comes back while we send.
      std::thread writer([&] {
        writeAll(fd.get(), data.data(), data.size());
        ::shutdown(fd.get(), SHUT_WR);
      });
      std::string back = readToEof(fd.get(), kBytes + 1);
      writer.join();
      if (back == data) ++good;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(good.load(), kStreams) << logs();
}

TEST_F(VsockTest, SixtyFourMebibytesEachWayWithFlowControl) {
  constexpr uint64_t kBytes = 64ull << 20;
  fs::path upload = dir_ / "upload.sock";
  Fd upload_server = listenAt(upload);
  fs::path base = start({"--vsock", "5002:" + upload.string(), "--memory", "256"},
                        "vsock-probe listen 6001 sink & vsock-probe connect 5002 source " + std::to_string(kBytes) +
                            "; wait");

  uint64_t expected = kFnvStart;
  {
    std::vector<unsigned char> chunk(1 << 20);
    for (uint64_t at = 0; at < kBytes; at += chunk.size()) {
      for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = pattern(at + i);
      expected = fnv(expected, chunk.data(), chunk.size());
    }
  }

  // Guest → host.
  Fd up = acceptWithin(upload_server.get(), seconds(90));
  ASSERT_TRUE(up.valid()) << logs();
  auto started = Clock::now();
  uint64_t total = 0;
  uint64_t hash = kFnvStart;
  std::vector<unsigned char> buffer(1 << 16);
  for (;;) {
    ssize_t n = ::read(up.get(), buffer.data(), buffer.size());
    if (n <= 0) break;
    hash = fnv(hash, buffer.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
  double up_seconds = std::chrono::duration<double>(Clock::now() - started).count();
  EXPECT_EQ(total, kBytes);
  EXPECT_EQ(hex(hash), hex(expected));
  std::string reply = "host " + std::to_string(total) + " " + hex(hash);
  ASSERT_TRUE(writeAll(up.get(), reply.data(), reply.size()));
  up = Fd();

  // Host → guest.
  Fd down = connectToGuest(base, 6001);
  ASSERT_TRUE(down.valid()) << logs();
  started = Clock::now();
  std::vector<unsigned char> chunk(1 << 20);
  for (uint64_t at = 0; at < kBytes; at += chunk.size()) {
    for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = pattern(at + i);
    ASSERT_TRUE(writeAll(down.get(), chunk.data(), chunk.size()));
  }
  ::shutdown(down.get(), SHUT_WR);
  std::string answer = readToEof(down.get());
  double down_seconds = std::chrono::duration<double>(Clock::now() - started).count();
  EXPECT_EQ(answer, "sink " + std::to_string(kBytes) + " " + hex(expected) + "\n");

  std::printf("vsock throughput: guest->host %.1f MiB/s (%.2f s), host->guest %.1f MiB/s (%.2f s)\n",
              64 / up_seconds, up_seconds, 64 / down_seconds, down_seconds);
  RecordProperty("guest_to_host_mib_s", std::to_string(64 / up_seconds));
  RecordProperty("host_to_guest_mib_s", std::to_string(64 / down_seconds));
  EXPECT_NE(logs().find("recv: " + reply), std::string::npos) << logs();
}

TEST_F(VsockTest, ListenMappingForwardsHostConnectionsToTheGuestPort) {
  fs::path listen_path = dir_ / "in.sock";
  start({"--vsock", "7000:" + listen_path.string() + ":listen"}, "vsock-probe listen 7000 echo");
  EXPECT_TRUE(fs::exists(listen_path));
  // Until the guest listens, connections are accepted and closed at once.
  auto deadline = Clock::now() + seconds(90);
  std::string echoed;
  while (echoed.empty() && Clock::now() < deadline) {
    Fd fd = connectUnix(listen_path);
    if (fd.valid() && writeAll(fd.get(), "straight through", 16)) {
      ::shutdown(fd.get(), SHUT_WR);
      echoed = readToEof(fd.get());
    }
    if (echoed.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(echoed, "straight through") << logs();
}

// The guest agent runs as root and serves exec and file writes to whoever
// reaches vsock port 1024: a workload must not reach it from inside the
// guest, whatever user it runs as. Three things stop it: the default seccomp
// profile refuses AF_VSOCK sockets (without --vsock mappings), the kernel
// has no vsock loopback (CID 1, or the VM's own CID, would loop back), and
// the agent serves only CID 2 (guest/agent_test.cc, AgentPeerTest). In each
// VM the agent is shown to be up, by an exec from the host, before the
// workload tries; the exec'd probes must fare no better than the workload.
class VsockAgentIsolationTest : public VsockTest {
 protected:
  static constexpr const char* kProbes = "vsock-probe try 1 1024 self 1024 2 1024";

  // Boots with `flags`, waits for the agent, lets the workload run the
  // probes, and returns what the workload and an exec'd command printed.
  std::pair<std::string, std::string> probe(std::vector<std::string> flags) {
    start(std::move(flags), std::string("while [ ! -e /tmp/go ]; do sleep 0.2; done; ") + kProbes +
                                "; echo probes-done; exec sleep 600");
    auto deadline = Clock::now() + seconds(90);
    bool agent_up = false;
    while (!agent_up && Clock::now() < deadline) {
      agent_up = microvm({"exec", "--ping", id_}).exit_code == 0;
      if (!agent_up) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    EXPECT_TRUE(agent_up) << logs();
    auto exec = microvm({"exec", id_, "/bin/sh", "-c", std::string(kProbes) + " && touch /tmp/go"});
    EXPECT_EQ(exec.exit_code, 0) << exec.err;
    std::string workload;
    deadline = Clock::now() + seconds(60);
    while (workload.find("probes-done") == std::string::npos && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      workload = logs();
    }
    EXPECT_NE(workload.find("probes-done"), std::string::npos) << workload;
    return {workload, exec.out};
  }
};

TEST_F(VsockAgentIsolationTest, UnprivilegedWorkloadGetsNoVsockSocket) {
  auto [workload, exec] = probe({"-u", "1000"});
  for (const std::string& out : {workload, exec}) {
    EXPECT_NE(out.find("socket(high bits): Operation not permitted"), std::string::npos) << out;
    for (const char* target : {"1:1024", "self:1024", "2:1024"}) {
      EXPECT_NE(out.find(std::string("try ") + target + " socket: Operation not permitted"), std::string::npos)
          << target << "\n" << out;
    }
    EXPECT_EQ(out.find("connected"), std::string::npos) << out;
  }
}

TEST_F(VsockAgentIsolationTest, PrivilegedRootWorkloadStillCannotConnectToTheAgent) {
  auto [workload, exec] = probe({"--privileged"});
  for (const std::string& out : {workload, exec}) {
    // No seccomp filter here: the socket is made, and the connects fail.
    for (const char* target : {"1:1024", "self:1024", "2:1024"}) {
      EXPECT_NE(out.find(std::string("try ") + target + " connect: "), std::string::npos) << target << "\n" << out;
    }
    EXPECT_EQ(out.find("connected"), std::string::npos) << out;
  }
}

TEST(VsockCliTest, BadMappingsAreRefusedBeforeBoot) {
  auto run = [](const std::vector<std::string>& mappings) {
    std::vector<std::string> flags;
    for (const auto& mapping : mappings) flags.insert(flags.end(), {"--vsock", mapping});
    return microvm(runArgs(flags, {"/bin/true"}));
  };
  auto duplicate = run({"5000:/tmp/a.sock", "5000:/tmp/b.sock"});
  EXPECT_EQ(duplicate.exit_code, 125);
  EXPECT_NE(duplicate.err.find("mapped twice"), std::string::npos) << duplicate.err;
  auto relative = run({"5000:relative.sock"});
  EXPECT_EQ(relative.exit_code, 125);
  EXPECT_NE(relative.err.find("absolute"), std::string::npos) << relative.err;
  auto too_long = run({"5000:/tmp/" + std::string(120, 'x')});
  EXPECT_EQ(too_long.exit_code, 125);
  EXPECT_NE(too_long.err.find("unix sockets allow"), std::string::npos) << too_long.err;
  auto garbage = run({"port:/tmp/a.sock"});
  EXPECT_EQ(garbage.exit_code, 125);
  EXPECT_NE(garbage.err.find("PORT:HOST_SOCKET_PATH"), std::string::npos) << garbage.err;
}

}  // namespace
}  // namespace microvm::e2e
