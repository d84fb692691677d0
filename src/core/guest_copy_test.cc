// `microvm cp VM:SRC DEST` against a fake guest agent that reports what a
// hostile guest could: setuid and world-writable modes, a symlink and then
// entries under it, the same name twice, more bytes than declared. The host
// side must keep the copy inside DEST with safe modes, whatever it is told.
#include "core/guest_copy.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "agent/fake_agent_for_test.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;
using agent::AgentOp;
using agent::AgentResult;
using agent::FileInfo;
using agent::FileType;

FileInfo node(const std::string& name, FileType type, uint32_t mode, uint64_t size = 0) {
  FileInfo info;
  info.name = name;
  info.type = type;
  info.mode = mode;
  info.size = size;
  info.mtime = 1'600'000'000;
  return info;
}

FileInfo link(const std::string& name, const std::string& target) {
  FileInfo info = node(name, FileType::kSymlink, 0777);
  info.link_target = target;
  return info;
}

// What the fake guest answers: stat per path, listings per directory, file
// contents (sent in full whatever size the stat or listing declared).
struct FakeGuest {
  std::mutex mutex;
  std::map<std::string, FileInfo> stats;
  std::map<std::string, std::vector<FileInfo>> listings;
  std::map<std::string, std::string> contents;

  void answer(const agent::AgentRequest& request, int fd) {
    respond(request, fd);
    agent::fakeAgentHoldUntilClosed(fd);
  }

  void respond(agent::AgentRequest request, int fd) {
    std::lock_guard<std::mutex> lock(mutex);
    // "/t/." and "/t/./f" name what "/t" and "/t/f" do, as in a real guest.
    for (size_t dot; (dot = request.path.find("/./")) != std::string::npos;) request.path.erase(dot, 2);
    if (request.path.size() > 2 && request.path.ends_with("/.")) request.path.resize(request.path.size() - 2);
    auto op = static_cast<AgentOp>(request.op);
    AgentResult missing;
    missing.status = agent::AgentStatus::kFailed;
    missing.error_number = ENOENT;
    missing.message = request.path + ": no such file";
    if (op == AgentOp::kStat) {
      auto found = stats.find(request.path);
      if (found == stats.end()) return (void)agent::fakeAgentSendResult(fd, missing);
      AgentResult result;
      result.info = found->second;
      agent::fakeAgentSendResult(fd, result);
    } else if (op == AgentOp::kList) {
      auto found = listings.find(request.path);
      if (found == listings.end()) return (void)agent::fakeAgentSendResult(fd, missing);
      agent::fakeAgentSend(fd, agent::FrameType::kEntries, agent::encodeEntries(found->second));
      agent::fakeAgentSendResult(fd, AgentResult{});
    } else if (op == AgentOp::kGetFile) {
      auto found = contents.find(request.path);
      if (found == contents.end()) return (void)agent::fakeAgentSendResult(fd, missing);
      size_t slash = request.path.rfind('/');
      std::string parent = slash == 0 ? "/" : request.path.substr(0, slash);
      AgentResult header;
      header.info = node("", FileType::kRegular, 0644, found->second.size());
      // The mode and size the listing declared, as a real agent would repeat them.
      for (const auto& entry : listings[parent]) {
        if (entry.name == request.path.substr(slash + 1)) header.info = entry;
      }
      header.info->name.clear();
      agent::fakeAgentSendResult(fd, header);
      agent::fakeAgentSend(fd, agent::FrameType::kData, found->second);
      agent::fakeAgentSend(fd, agent::FrameType::kData, "");
    } else {
      AgentResult unsupported;
      unsupported.status = agent::AgentStatus::kUnsupported;
      agent::fakeAgentSendResult(fd, unsupported);
    }
  }
};

class GuestCopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/microvm-guest-copy-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    saved_umask_ = ::umask(022);
    fake_ = std::make_unique<agent::FakeAgent>(
        dir_ / "agent.sock", [this](const agent::AgentRequest& request, int fd) { guest_.answer(request, fd); });
    ASSERT_TRUE(fake_->listening());
    fs::create_directory(dir_ / "outside");
  }
  void TearDown() override {
    fake_.reset();
    ::umask(saved_umask_);
    fs::remove_all(dir_);
  }

  Result<void> copy(const std::string& source, const fs::path& destination, uint64_t max_bytes = UINT64_MAX) {
    return copyFromGuest(fake_->client(std::chrono::milliseconds(5'000)), source, destination.string(), max_bytes);
  }

  // Bytes of regular files under `root`, and entries (root included).
  static std::pair<uint64_t, size_t> footprint(const fs::path& root) {
    uint64_t bytes = 0;
    size_t entries = 1;
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
      ++entries;
      if (entry.is_regular_file()) bytes += entry.file_size();
    }
    return {bytes, entries};
  }

  static uint32_t modeOf(const fs::path& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  }

  static std::string readAll(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  }

  // Nothing has appeared outside DEST.
  void expectOutsideUntouched() {
    EXPECT_TRUE(fs::is_empty(dir_ / "outside"));
    for (const auto& entry : fs::directory_iterator(dir_)) {
      std::string name = entry.path().filename().string();
      EXPECT_TRUE(name == "outside" || name == "out" || name == "agent.sock") << "unexpected " << entry.path();
    }
  }

  // No temporary file of the copy was left behind under `root`.
  static void expectNoTemporaries(const fs::path& root) {
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
      EXPECT_EQ(entry.path().filename().string().find(".microvm-cp-"), std::string::npos) << entry.path();
    }
  }

  fs::path dir_;
  mode_t saved_umask_ = 022;
  FakeGuest guest_;
  std::unique_ptr<agent::FakeAgent> fake_;
};

TEST_F(GuestCopyTest, GuestModesNeverMakeSetuidOrWritableHostFiles) {
  guest_.stats["/t"] = node("", FileType::kDirectory, 0777);
  guest_.listings["/t"] = {node("suid", FileType::kRegular, 04755, 6), node("sgid", FileType::kDirectory, 02777),
                           node("sticky", FileType::kDirectory, 01777), node("open", FileType::kRegular, 0666, 4),
                           node("private", FileType::kRegular, 0600, 2), link("link", "/etc/passwd")};
  guest_.listings["/t/sgid"] = {node("both", FileType::kRegular, 06777, 4)};
  guest_.listings["/t/sticky"] = {};
  guest_.contents = {{"/t/suid", "ELF..."}, {"/t/open", "open"}, {"/t/private", "pp"}, {"/t/sgid/both", "both"}};

  auto copied = copy("/t", dir_ / "out");
  ASSERT_TRUE(copied.ok()) << copied.error().message();
  fs::path out = dir_ / "out";
  EXPECT_EQ(modeOf(out), 0755u);
  EXPECT_EQ(modeOf(out / "suid"), 0755u);
  EXPECT_EQ(readAll(out / "suid"), "ELF...");
  EXPECT_EQ(modeOf(out / "sgid"), 0755u);
  EXPECT_EQ(modeOf(out / "sgid" / "both"), 0755u);
  EXPECT_EQ(modeOf(out / "sticky"), 0755u);
  EXPECT_EQ(modeOf(out / "open"), 0644u);
  EXPECT_EQ(modeOf(out / "private"), 0600u);
  EXPECT_EQ(fs::read_symlink(out / "link"), "/etc/passwd");
  for (const auto& entry : fs::recursive_directory_iterator(out)) {
    struct stat st {};
    ASSERT_EQ(::lstat(entry.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, ::getuid()) << entry.path();
    EXPECT_EQ(st.st_gid, ::getgid()) << entry.path();
  }
  expectNoTemporaries(out);

  // The caller's umask is the caller's: 077 keeps everything private.
  ::umask(077);
  fs::remove_all(out);
  copied = copy("/t", out);
  ASSERT_TRUE(copied.ok()) << copied.error().message();
  EXPECT_EQ(modeOf(out), 0700u);
  EXPECT_EQ(modeOf(out / "suid"), 0700u);
  EXPECT_EQ(modeOf(out / "open"), 0600u);
}

TEST_F(GuestCopyTest, AnExistingHostDirectoryKeepsItsModeAndOwner) {
  guest_.stats["/t"] = node("", FileType::kDirectory, 0777);
  guest_.listings["/t"] = {node("f", FileType::kRegular, 0644, 1)};
  guest_.contents = {{"/t/f", "x"}};
  fs::path out = dir_ / "out";
  fs::create_directories(out / "t");
  ASSERT_EQ(::chmod(out.c_str(), 0750), 0);
  ASSERT_EQ(::chmod((out / "t").c_str(), 0700), 0);
  // Owned by someone else (the test runs as root; otherwise the owner stays ours).
  bool root = ::geteuid() == 0;
  if (root) {
    ASSERT_EQ(::chown((out / "t").c_str(), 1234, 1234), 0);
  }

  // "VM:/t" into out: out/t exists.
  auto copied = copy("/t", out);
  ASSERT_TRUE(copied.ok()) << copied.error().message();
  EXPECT_EQ(modeOf(out / "t"), 0700u);
  EXPECT_EQ(readAll(out / "t" / "f"), "x");
  struct stat st {};
  ASSERT_EQ(::stat((out / "t").c_str(), &st), 0);
  if (root) {
    EXPECT_EQ(st.st_uid, 1234u);
  }

  // "VM:/t/." into out: out itself receives the entries and keeps its mode.
  copied = copy("/t/.", out);
  ASSERT_TRUE(copied.ok()) << copied.error().message();
  EXPECT_EQ(modeOf(out), 0750u);
  EXPECT_EQ(readAll(out / "f"), "x");
}

TEST_F(GuestCopyTest, ASymlinkFromTheGuestNeverLeadsTheCopyOutOfDest) {
  fs::path out = dir_ / "out";
  fs::create_directory(out);
  std::string outside = (dir_ / "outside").string();

  // First copy: t/a is a symlink to a host directory outside DEST, and the
  // listing carries on with a directory of the same name (entries "under a/").
  guest_.stats["/t"] = node("", FileType::kDirectory, 0755);
  guest_.listings["/t"] = {link("a", outside), node("a", FileType::kDirectory, 0755)};
  guest_.listings["/t/a"] = {node("pwned", FileType::kRegular, 0644, 3)};
  guest_.contents = {{"/t/a/pwned", "bad"}};
  auto copied = copy("/t", out);
  ASSERT_FALSE(copied.ok());
  EXPECT_EQ(copied.error().message(), "agent: the listing of /t names a twice");
  expectOutsideUntouched();

  // The symlink alone arrives as a symlink (text, never followed).
  guest_.listings["/t"] = {link("a", outside)};
  copied = copy("/t", out);
  ASSERT_TRUE(copied.ok()) << copied.error().message();
  EXPECT_EQ(fs::read_symlink(out / "t" / "a"), outside);

  // A second copy into the same DEST, where the guest now says t/a is a
  // directory holding a file: the host's t/a is still the symlink.
  guest_.listings["/t"] = {node("a", FileType::kDirectory, 0755)};
  copied = copy("/t", out);
  ASSERT_FALSE(copied.ok());
  EXPECT_EQ(copied.error().message(), (out / "t" / "a").string() + " exists and is not a directory");
  expectOutsideUntouched();

  // A file of that name replaces the link itself; nothing goes through it.
  guest_.listings["/t"] = {node("a", FileType::kRegular, 0644, 3)};
  guest_.contents["/t/a"] = "new";
  copied = copy("/t", out);
  ASSERT_TRUE(copied.ok()) << copied.error().message();
  EXPECT_FALSE(fs::is_symlink(out / "t" / "a"));
  EXPECT_EQ(readAll(out / "t" / "a"), "new");
  expectOutsideUntouched();
  expectNoTemporaries(out);
}

TEST_F(GuestCopyTest, AFileLongerThanDeclaredLeavesNothingBehind) {
  fs::path out = dir_ / "out";
  fs::create_directory(out);
  guest_.stats["/t"] = node("", FileType::kDirectory, 0755);
  guest_.listings["/t"] = {node("f", FileType::kRegular, 0644, 3)};
  guest_.contents = {{"/t/f", std::string(100'000, 'x')}};
  auto copied = copy("/t", out);
  ASSERT_FALSE(copied.ok());
  EXPECT_EQ(copied.error().code(), ErrorCode::kProtocol);
  EXPECT_EQ(copied.error().message(), "agent: get /t/f: the agent sent more than the 3 bytes it declared");
  EXPECT_FALSE(fs::exists(out / "t" / "f"));
  expectNoTemporaries(out);
  expectOutsideUntouched();
}

TEST_F(GuestCopyTest, TheCopyStopsAtItsByteLimitWhateverTheGuestHolds) {
  fs::path out = dir_ / "out";
  fs::create_directory(out);
  // One file over the limit: refused on its declared size, nothing written.
  guest_.stats["/big"] = node("", FileType::kRegular, 0644, 300'000);
  guest_.listings["/"] = {node("big", FileType::kRegular, 0644, 300'000)};
  guest_.contents = {{"/big", std::string(300'000, 'x')}};
  auto copied = copy("/big", out, 100'000);
  ASSERT_FALSE(copied.ok());
  EXPECT_EQ(copied.error().code(), ErrorCode::kIo);
  EXPECT_EQ(copied.error().sysErrno(), EFBIG);
  EXPECT_EQ(footprint(out), std::make_pair(uint64_t{0}, size_t{1}));
  expectNoTemporaries(out);

  // A tree whose files fit one by one but not together, and a directory of
  // many empty files: each stops within the limit (512 bytes per entry).
  guest_.stats["/t"] = node("", FileType::kDirectory, 0755);
  for (int i = 0; i < 10; ++i) {
    std::string name = "f" + std::to_string(i);
    guest_.listings["/t"].push_back(node(name, FileType::kRegular, 0644, 30'000));
    guest_.contents["/t/" + name] = std::string(30'000, 'y');
  }
  copied = copy("/t", out, 100'000);
  ASSERT_FALSE(copied.ok());
  EXPECT_EQ(copied.error().sysErrno(), EFBIG) << copied.error().message();
  auto [bytes, entries] = footprint(out);
  EXPECT_LE(bytes + 512 * (entries - 1), 100'000u);
  EXPECT_EQ(bytes, 90'000u);
  expectNoTemporaries(out);

  fs::remove_all(out / "t");
  guest_.listings["/t"].clear();
  for (int i = 0; i < 1000; ++i) {
    std::string name = "e" + std::to_string(i);
    guest_.listings["/t"].push_back(node(name, FileType::kRegular, 0644));
    guest_.contents["/t/" + name] = "";
  }
  copied = copy("/t", out, 100'000);
  ASSERT_FALSE(copied.ok());
  EXPECT_EQ(copied.error().sysErrno(), EFBIG) << copied.error().message();
  EXPECT_EQ(footprint(out).second - 1, 100'000u / 512);

  // Within the limit, the same tree copies whole.
  fs::remove_all(out / "t");
  copied = copy("/t", out, 1000 * 512 + 512);
  ASSERT_TRUE(copied.ok()) << copied.error().message();
  EXPECT_EQ(footprint(out).second - 1, 1001u);
  expectOutsideUntouched();
}

}  // namespace
}  // namespace microvm
