#include "runner/template_memory.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "base/temp_dir.h"
#include "base/unix_socket.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSize = 4 << 20;

// A template RAM file: holes, and one page of data at 1 MiB.
class TemplateMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto temp = TempDir::create("template-memory-test");
    ASSERT_TRUE(temp);
    temp_.emplace(std::move(*temp));
    ram_ = temp_->path() / "memory.ram";
    UniqueFd fd(::open(ram_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(::ftruncate(fd.get(), kSize), 0);
    std::string page(4096, 'T');
    ASSERT_EQ(::pwrite(fd.get(), page.data(), page.size(), 1 << 20), 4096);
  }
  void TearDown() override {
    if (holder_ > 0) {
      ::kill(holder_, SIGKILL);
      ::waitpid(holder_, nullptr, 0);
    }
  }

  // The holder, forked from the test (the runner binary is not at hand):
  // returns once it serves, as the runner's start does.
  void startHolder(uid_t as = 0) {
    auto name = templateMemorySocketName(ram_, kSize);
    ASSERT_TRUE(name);
    int report[2];
    ASSERT_EQ(::pipe(report), 0);
    holder_ = ::fork();
    ASSERT_GE(holder_, 0);
    if (holder_ == 0) {
      ::close(report[0]);
      int ram = ::open(ram_.c_str(), O_RDONLY);
      if (as != 0 && ::setresuid(as, as, as) != 0) ::_exit(3);
      ::_exit(serveTemplateMemory(*name, kSize, ram, report[1]));
    }
    ::close(report[1]);
    char said[16] = {};
    ASSERT_GT(::read(report[0], said, sizeof said - 1), 0);
    ::close(report[0]);
    ASSERT_STREQ(said, "ready");
  }

  // Whether the holder exits within `timeout`.
  bool holderExits(std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(holder_, nullptr, WNOHANG) == holder_) {
        holder_ = -1;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::optional<TempDir> temp_;
  fs::path ram_;
  pid_t holder_ = -1;
};

TEST_F(TemplateMemoryTest, EveryVmGetsTheSameSealedMemoryAndOnlyCopiesWhatItWrites) {
  startHolder();
  auto first = TemplateMemory::attach(ram_, kSize);
  auto second = TemplateMemory::attach(ram_, kSize);
  ASSERT_TRUE(first) << first.error().message();
  ASSERT_TRUE(second) << second.error().message();
  struct stat a {}, b {};
  ASSERT_EQ(::fstat(first->fd(), &a), 0);
  ASSERT_EQ(::fstat(second->fd(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);  // one memfd: the pages are shared
  EXPECT_EQ(static_cast<uint64_t>(a.st_size), kSize);

  // As QEMU maps it (share=off): the template's data, and writes of one VM
  // that neither the memfd nor the other VM sees.
  auto* mine = static_cast<char*>(::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE, first->fd(), 0));
  auto* theirs = static_cast<char*>(::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE, second->fd(), 0));
  ASSERT_NE(mine, MAP_FAILED);
  ASSERT_NE(theirs, MAP_FAILED);
  EXPECT_EQ(mine[(1 << 20) + 7], 'T');
  EXPECT_EQ(mine[0], 0);
  mine[(1 << 20) + 7] = 'X';
  EXPECT_EQ(theirs[(1 << 20) + 7], 'T');
  ::munmap(mine, kSize);
  ::munmap(theirs, kSize);

  // A hostile VMM cannot change it: not by write, a shared writable
  // mapping, a resize or a punched hole.
  EXPECT_EQ(::pwrite(first->fd(), "X", 1, 1 << 20), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, first->fd(), 0), MAP_FAILED);
  EXPECT_EQ(::ftruncate(first->fd(), kSize * 2), -1);
  EXPECT_EQ(::fallocate(first->fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1 << 20, 4096), -1);
  // Reopened read-write, as QEMU opens /proc/self/fd/N: still sealed.
  std::string path = "/proc/self/fd/" + std::to_string(first->fd());
  UniqueFd reopened(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(reopened.valid());
  EXPECT_EQ(::pwrite(reopened.get(), "X", 1, 1 << 20), -1);
  char byte = 0;
  ASSERT_EQ(::pread(second->fd(), &byte, 1, (1 << 20) + 7), 1);
  EXPECT_EQ(byte, 'T');
}

TEST_F(TemplateMemoryTest, TheHolderLeavesOnceNoVmUsesIt) {
  startHolder();
  {
    auto memory = TemplateMemory::attach(ram_, kSize);
    ASSERT_TRUE(memory) << memory.error().message();
    EXPECT_FALSE(holderExits(std::chrono::seconds(1)));  // in use
  }
  EXPECT_TRUE(holderExits(std::chrono::seconds(15)));
}

TEST_F(TemplateMemoryTest, AHolderOfAnotherUserIsNotTrusted) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run the holder as another user";
  startHolder(65534);
  auto memory = TemplateMemory::attach(ram_, kSize);
  ASSERT_FALSE(memory);
  EXPECT_NE(memory.error().message().find("another user"), std::string::npos) << memory.error().message();
}

TEST_F(TemplateMemoryTest, AnUnsealedMemfdIsRefused) {
  // Someone of our own user squats the name and hands out writable memory.
  auto name = templateMemorySocketName(ram_, kSize);
  ASSERT_TRUE(name);
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path + 1, name->data(), name->size());
  auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name->size());
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), length), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  std::thread squatter([&] {
    UniqueFd client(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    UniqueFd memfd(::memfd_create("squatter", MFD_CLOEXEC));
    (void)!::ftruncate(memfd.get(), kSize);
    int fd = memfd.get();
    (void)sendWithFds(client.get(), "M", std::span(&fd, 1));
  });
  auto memory = TemplateMemory::attach(ram_, kSize);
  squatter.join();
  ASSERT_FALSE(memory);
  EXPECT_NE(memory.error().message().find("not sealed"), std::string::npos) << memory.error().message();
}

}  // namespace
}  // namespace microvm
