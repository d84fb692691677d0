#include "base/unix_socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "base/temp_dir.h"

namespace microvm {
namespace {

TEST(UnixSocket, ListenerIsOwnerOnlyAndAcceptsAConnection) {
  auto dir = TempDir::create("microvm-unix");
  ASSERT_TRUE(dir);
  auto path = dir->path() / "s.sock";
  std::fclose(std::fopen(path.c_str(), "w"));  // a stale file is replaced
  auto listener = listenUnix(path, 4);
  ASSERT_TRUE(listener) << listener.error().message();
  struct stat info {};
  ASSERT_EQ(::stat(path.c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0600u);

  auto client = connectUnix(path);
  ASSERT_TRUE(client) << client.error().message();
  UniqueFd server(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server.valid());
  ASSERT_EQ(::write(client->get(), "hi", 2), 2);
  char buffer[2] = {};
  ASSERT_EQ(::read(server.get(), buffer, 2), 2);
  EXPECT_EQ(std::string(buffer, 2), "hi");
}

TEST(UnixSocket, FailuresKeepConnectsErrnoAndLongPathsAreRefused) {
  auto dir = TempDir::create("microvm-unix");
  ASSERT_TRUE(dir);
  auto missing = connectUnix(dir->path() / "none.sock");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().sysErrno(), ENOENT);

  auto path = dir->path() / "closed.sock";
  { auto listener = listenUnix(path, 1); ASSERT_TRUE(listener); }  // closed: nobody listens
  auto refused = connectUnix(path);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().sysErrno(), ECONNREFUSED);

  auto long_path = dir->path() / std::string(200, 'x');
  auto too_long = listenUnix(long_path, 1);
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(too_long.error().message().find("too long"), std::string::npos);
  EXPECT_FALSE(connectUnix(long_path));
}

}  // namespace
}  // namespace microvm
