// The host's agent client against a fake agent on a real unix socket that
// behaves as a broken or hostile guest would: silent at each step of the
// protocol, or sending more than it declared. Every wait must end with a
// clear error, and nothing beyond what was declared may be written.
#include "agent/client.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agent/fake_agent_for_test.h"

namespace microvm::agent {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

class AgentClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/microvm-client-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path socket() const { return dir_ / "agent.sock"; }

  std::string readAll(const fs::path& path) const {
    std::ifstream in(path, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  }

  fs::path dir_;
};

// Checks that a call times out soon; returns its error message.
template <typename Call>
std::string expectTimeout(Call call, milliseconds at_most = milliseconds(5'000)) {
  auto start = Clock::now();
  auto result = call();
  auto took = Clock::now() - start;
  EXPECT_LT(took, at_most);
  EXPECT_FALSE(result.ok());
  if (result.ok()) return "no error";
  EXPECT_EQ(result.error().code(), ErrorCode::kTimeout) << result.error().message();
  return result.error().message();
}

ExecCommand command(std::vector<std::string> argv) {
  ExecCommand made;
  made.argv = std::move(argv);
  return made;
}

TEST_F(AgentClientTest, AnAgentThatNeverSaysHelloTimesOut) {
  FakeAgent fake(socket(), [](const AgentRequest&, int fd) { fakeAgentHoldUntilClosed(fd); },
                 FakeAgent::Mode::kSilentHello);
  ASSERT_TRUE(fake.listening());
  auto client = fake.client(milliseconds(300));
  std::string error = expectTimeout([&] { return client.ping(); });
  EXPECT_EQ(error, "agent on VM fake did not answer within 300 ms (hello)");
  expectTimeout([&] { return client.stat("/etc"); });
  expectTimeout([&] { return client.exec(command({"/bin/true"}), ExecStreams{}); });
}

TEST_F(AgentClientTest, ARunnerThatNeverAnswersConnectTimesOut) {
  // The vsock path: the runner relays CONNECT to the guest, which never
  // accepts nor refuses.
  FakeAgent fake(socket(), [](const AgentRequest&, int fd) { fakeAgentHoldUntilClosed(fd); }, FakeAgent::Mode::kRaw);
  ASSERT_TRUE(fake.listening());
  auto client = AgentClient::viaVsock(socket());
  client.setPeerName("VM fake");
  client.setTimeouts(AgentTimeouts{milliseconds(300), milliseconds(300)});
  std::string error = expectTimeout([&] { return client.ping(); });
  EXPECT_EQ(error, "agent on VM fake did not answer within 300 ms (CONNECT)");
}

TEST_F(AgentClientTest, AnAgentSilentAfterItsHelloTimesOutOnEveryReply) {
  FakeAgent fake(socket(), [](const AgentRequest&, int fd) { fakeAgentHoldUntilClosed(fd); });
  ASSERT_TRUE(fake.listening());
  auto client = fake.client(milliseconds(300));
  std::string error = expectTimeout([&] { return client.stat("/etc/hosts"); });
  EXPECT_EQ(error, "agent on VM fake did not answer within 300 ms (stat /etc/hosts)");
  expectTimeout([&] { return client.list("/etc"); });
  expectTimeout([&] { return client.mkdir("/x", 0755, true); });
  expectTimeout([&] { return client.putSymlink("/x", "y"); });
  expectTimeout([&] { return client.exec(command({"/bin/true"}), ExecStreams{}); });
  int out = ::open((dir_ / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  expectTimeout([&] { return client.getFile("/etc/hosts", out); });
  ::close(out);
  // A probe's answer may take the probe's own timeout, then the reply's
  // (less a little: deadlines are counted in whole milliseconds).
  auto start = Clock::now();
  expectTimeout([&] { return client.probeTcp(80, milliseconds(200)); });
  EXPECT_GE(Clock::now() - start, milliseconds(480));
}

TEST_F(AgentClientTest, AFileTransferThatStallsTimesOut) {
  FakeAgent fake(socket(), [](const AgentRequest& request, int fd) {
    if (request.op == static_cast<uint32_t>(AgentOp::kGetFile)) {
      AgentResult header;
      header.info = FileInfo{};
      header.info->type = FileType::kRegular;
      header.info->size = 100;
      fakeAgentSendResult(fd, header);
      fakeAgentSend(fd, FrameType::kData, "0123456789");
    }
    // kPutFile: the data is never read.
    fakeAgentHoldUntilClosed(fd);
  });
  ASSERT_TRUE(fake.listening());
  auto client = fake.client(milliseconds(300), milliseconds(400));
  int out = ::open((dir_ / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  std::string error = expectTimeout([&] { return client.getFile("/big", out); });
  ::close(out);
  EXPECT_EQ(error, "agent on VM fake did not answer within 400 ms");
  EXPECT_EQ(readAll(dir_ / "out"), "0123456789");

  // More than the socket buffers hold, to an agent that reads none of it.
  {
    std::ofstream big(dir_ / "big", std::ios::binary);
    big << std::string(size_t{16} << 20, 'x');
  }
  int in = ::open((dir_ / "big").c_str(), O_RDONLY | O_CLOEXEC);
  error = expectTimeout([&] { return client.putFile("/big", in, PutOptions{}); });
  ::close(in);
  EXPECT_EQ(error, "agent on VM fake took no data for 400 ms (send)");
}

TEST_F(AgentClientTest, ACommandMayRunLongerThanAnyReplyTimeout) {
  // The timeouts bound the protocol's replies, not the command: an exec whose
  // command is quiet for 4 reply timeouts still ends with its exit code.
  FakeAgent fake(socket(), [](const AgentRequest&, int fd) {
    AgentResult started;
    started.pid = 42;
    fakeAgentSendResult(fd, started);
    std::this_thread::sleep_for(milliseconds(800));
    fakeAgentSend(fd, FrameType::kOutput, "done\n");
    fakeAgentSend(fd, FrameType::kExited, encodeU32(7));
    fakeAgentHoldUntilClosed(fd);
  });
  ASSERT_TRUE(fake.listening());
  auto client = fake.client(milliseconds(200));
  int out = ::open((dir_ / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ExecStreams streams;
  streams.stdout_fd = out;
  auto code = client.exec(command({"/bin/sleep", "1"}), streams);
  ::close(out);
  ASSERT_TRUE(code.ok()) << code.error().message();
  EXPECT_EQ(*code, 7);
  EXPECT_EQ(readAll(dir_ / "out"), "done\n");
}

TEST_F(AgentClientTest, AnExecWhoseGuestIgnoresTheKillEndsWhenTheSignalPipeCloses) {
  // A guest that never ends the command, whatever it is sent: the caller's
  // signal pipe closing is where the wait ends.
  FakeAgent fake(socket(), [](const AgentRequest&, int fd) {
    AgentResult started;
    started.pid = 42;
    fakeAgentSendResult(fd, started);
    fakeAgentHoldUntilClosed(fd);
  });
  ASSERT_TRUE(fake.listening());
  auto client = fake.client(milliseconds(200));
  int signals[2];
  ASSERT_EQ(::pipe2(signals, O_CLOEXEC | O_NONBLOCK), 0);
  ExecStreams streams;
  streams.signal_fd = signals[0];
  std::thread caller([&] {
    std::this_thread::sleep_for(milliseconds(300));
    signalfd_siginfo record{};
    record.ssi_signo = SIGKILL;
    EXPECT_EQ(::write(signals[1], &record, sizeof record), static_cast<ssize_t>(sizeof record));
    std::this_thread::sleep_for(milliseconds(300));
    ::close(signals[1]);
  });
  std::string message = expectTimeout([&] { return client.exec(command({"/bin/sleep", "1000"}), streams); });
  caller.join();
  ::close(signals[0]);
  EXPECT_NE(message.find("did not end the command"), std::string::npos) << message;
}

TEST_F(AgentClientTest, AFileLongerThanDeclaredIsCutOffAndNothingBeyondIsWritten) {
  FakeAgent fake(socket(), [](const AgentRequest& request, int fd) {
    AgentResult header;
    header.info = FileInfo{};
    header.info->type = FileType::kRegular;
    header.info->size = 10;
    fakeAgentSendResult(fd, header);
    if (request.path == "/two-chunks") {
      fakeAgentSend(fd, FrameType::kData, "abcd");
      fakeAgentSend(fd, FrameType::kData, "efghijklmnop");  // 16 in all
    } else {
      fakeAgentSend(fd, FrameType::kData, std::string(11, 'z'));
    }
    fakeAgentSend(fd, FrameType::kData, "");
    fakeAgentHoldUntilClosed(fd);
  });
  ASSERT_TRUE(fake.listening());
  auto client = fake.client();
  int out = ::open((dir_ / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  auto got = client.getFile("/two-chunks", out);
  ::close(out);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), ErrorCode::kProtocol);
  EXPECT_EQ(got.error().message(), "agent: get /two-chunks: the agent sent more than the 10 bytes it declared");
  EXPECT_EQ(readAll(dir_ / "out"), "abcd");

  out = ::open((dir_ / "out2").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  got = client.getFile("/one-chunk", out);
  ::close(out);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), ErrorCode::kProtocol);
  EXPECT_EQ(readAll(dir_ / "out2"), "");
}

// A minimal entry: a name and a type.
std::string entryField(const std::string& name, FileType type) {
  std::string info;
  appendField(info, AgentTag::kName, name);
  appendField(info, AgentTag::kType, std::string(1, static_cast<char>(type)));
  std::string field;
  appendField(field, AgentTag::kEntry, info);
  return field;
}

TEST_F(AgentClientTest, AListingWithoutEndIsCutOff) {
  FakeAgent fake(socket(), [](const AgentRequest& request, int fd) {
    if (request.path == "/entries") {
      // Distinct names, as many as the client takes (bounded here too).
      size_t sent = 0;
      for (int frame = 0; frame < 200; ++frame) {
        std::string batch;
        while (batch.size() < (size_t{1} << 19)) batch += entryField("e" + std::to_string(sent++), FileType::kRegular);
        if (!fakeAgentSend(fd, FrameType::kEntries, batch)) return;
      }
    } else {
      // Frames of a type the client skips, without end.
      std::string junk(kMaxPayload, 'j');
      for (int frame = 0; frame < 400; ++frame) {
        if (!fakeAgentSend(fd, static_cast<FrameType>(999), junk)) return;
      }
    }
    fakeAgentHoldUntilClosed(fd);
  });
  ASSERT_TRUE(fake.listening());
  auto client = fake.client(milliseconds(5'000));
  auto entries = client.list("/entries");
  ASSERT_FALSE(entries.ok());
  EXPECT_EQ(entries.error().code(), ErrorCode::kProtocol);
  EXPECT_EQ(entries.error().message(), "agent: the listing of /entries has more than 1048576 entries");

  auto junk = client.list("/junk");
  ASSERT_FALSE(junk.ok());
  EXPECT_EQ(junk.error().code(), ErrorCode::kProtocol);
  EXPECT_EQ(junk.error().message(), "agent: the listing of /junk exceeds 256 MiB");
}

TEST_F(AgentClientTest, AListingWithDuplicateOrOverlongNamesIsRefused) {
  FakeAgent fake(socket(), [](const AgentRequest& request, int fd) {
    std::string batch;
    if (request.path == "/twice") {
      batch = entryField("a", FileType::kSymlink) + entryField("a", FileType::kDirectory);
    } else if (request.path == "/long") {
      batch = entryField(std::string(256, 'n'), FileType::kRegular);
    } else {
      batch = entryField("a", FileType::kRegular) + entryField("b", FileType::kDirectory);
    }
    fakeAgentSend(fd, FrameType::kEntries, batch);
    fakeAgentSendResult(fd, AgentResult{});
    fakeAgentHoldUntilClosed(fd);
  });
  ASSERT_TRUE(fake.listening());
  auto client = fake.client();
  auto twice = client.list("/twice");
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().message(), "agent: the listing of /twice names a twice");
  auto long_name = client.list("/long");
  ASSERT_FALSE(long_name.ok());
  EXPECT_EQ(long_name.error().message(), "agent: invalid name in the listing of /long");
  auto fine = client.list("/fine");
  ASSERT_TRUE(fine.ok()) << fine.error().message();
  EXPECT_EQ(fine->size(), 2u);
}

}  // namespace
}  // namespace microvm::agent
