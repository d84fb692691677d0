// Unit tests of the guest's small shared helpers.
#include "guest/support.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

namespace microvm::guest {
namespace {

TEST(Support, SplitKeepsEmptyFields) {
  EXPECT_EQ(split("a::b", ':'), (std::vector<std::string_view>{"a", "", "b"}));
  EXPECT_EQ(split("", ':'), (std::vector<std::string_view>{""}));
  EXPECT_EQ(split("x,", ','), (std::vector<std::string_view>{"x", ""}));
}

TEST(Support, TrimJoinedAndParseId) {
  EXPECT_EQ(trim(" \t40\n"), "40");
  EXPECT_EQ(joined({"read", "write"}, ", "), "read, write");
  EXPECT_EQ(joined({}, ", "), "");
  EXPECT_EQ(parseId("1000"), 1000u);
  EXPECT_EQ(parseId("2147483647"), 2147483647u);
  EXPECT_FALSE(parseId("2147483648"));
  EXPECT_FALSE(parseId("-1"));
  EXPECT_FALSE(parseId(""));
  EXPECT_FALSE(parseId("12a"));
}

TEST(Support, SystemErrorNamesTheCallAndKeepsErrno) {
  errno = ENOENT;
  Error error = systemError("open /nope");
  EXPECT_EQ(error.message(), "open /nope: no such file or directory");
  EXPECT_EQ(error.sysErrno(), ENOENT);
  EXPECT_EQ(describeErrno(EACCES), "permission denied");
}

class SupportFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/microvm-guest-support-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { (void)std::system(("rm -rf '" + dir_ + "'").c_str()); }
  std::string dir_;
};

TEST_F(SupportFiles, ReadFileIfExistsIsEmptyForAMissingFile) {
  auto missing = readFileIfExists(dir_ + "/missing");
  ASSERT_TRUE(missing.ok()) << missing.error().message();
  EXPECT_EQ(*missing, "");
  std::string path = dir_ + "/file";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  writeFully(fd, "root:x:0:0\n");
  ::close(fd);
  auto present = readFileIfExists(path);
  ASSERT_TRUE(present.ok());
  EXPECT_EQ(*present, "root:x:0:0\n");
  EXPECT_FALSE(readFileIfExists(dir_).ok());  // a directory cannot be read
}

TEST_F(SupportFiles, MakeDirectoriesCreatesEveryLevelAndToleratesExisting) {
  std::string deep = dir_ + "/a/b/c";
  ASSERT_TRUE(makeDirectories(deep, 0755).ok());
  struct stat info {};
  ASSERT_EQ(::stat(deep.c_str(), &info), 0);
  EXPECT_TRUE(S_ISDIR(info.st_mode));
  EXPECT_TRUE(makeDirectories(deep, 0755).ok());
  auto refused = makeDirectory(dir_ + "/missing/x", 0755);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().sysErrno(), ENOENT);
}

TEST_F(SupportFiles, CopyToEndCopiesEverything) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::string data(200'000, 'z');
  std::string path = dir_ + "/copy";
  int out = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(out, 0);
  pid_t writer = ::fork();
  if (writer == 0) {
    ::close(fds[0]);
    writeFully(fds[1], data);
    ::_exit(0);
  }
  ::close(fds[1]);
  EXPECT_EQ(copyToEnd(fds[0], out), CopyResult::kDone);
  ::close(fds[0]);
  ::close(out);
  int status = 0;
  ::waitpid(writer, &status, 0);
  auto copied = readFileIfExists(path);
  ASSERT_TRUE(copied.ok());
  EXPECT_EQ(copied->size(), data.size());
  EXPECT_EQ(copyToEnd(-1, -1), CopyResult::kReadFailed);
}

}  // namespace
}  // namespace microvm::guest
