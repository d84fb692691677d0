#include "core/rootfs_injection.h"

#include <gtest/gtest.h>

#include "base/fs.h"
#include "base/temp_dir.h"

namespace microvm {
namespace {

TEST(RootfsEditor, ValidatesPathsAndBuildsEntries) {
  RootfsEditor editor;
  EXPECT_TRUE(editor.writeFile("/etc/app.conf", "x=1\n", 0600, 5, 6));
  EXPECT_TRUE(editor.addAuthorizedKeys("/home/app/", {"ssh-ed25519 KEY a@b"}, 1000, 1000));
  EXPECT_TRUE(editor.writeEnvFile("/etc/environment", {"A=1", "B=2"}));
  for (const char* bad : {"", "/", "relative", "/a//b", "/a/./b", "/a/../b", "/a/", "/a\nb"}) {
    EXPECT_FALSE(editor.writeFile(bad, "x")) << bad;
  }
  EXPECT_FALSE(editor.writeFile("/a", "x", 010000));
  EXPECT_FALSE(editor.writeEnvFile("/e", {"NOEQUALS"}));
  EXPECT_FALSE(editor.addAuthorizedKeys("/root", {"two\nlines"}));
  EXPECT_FALSE(editor.copyFile("/nonexistent/file", "/x"));
  ASSERT_EQ(editor.entries().size(), 4u);
  EXPECT_EQ(editor.entries()[1].path, "/home/app/.ssh");
  EXPECT_TRUE(editor.entries()[1].directory);
  EXPECT_EQ(editor.entries()[2].path, "/home/app/.ssh/authorized_keys");
  EXPECT_EQ(editor.entries()[2].mode, 0600u);
  EXPECT_EQ(injectionManifest(editor.entries()),
            "f 600 5 6 0 /etc/app.conf\n"
            "d 700 1000 1000 1 /home/app/.ssh\n"
            "f 600 1000 1000 2 /home/app/.ssh/authorized_keys\n"
            "f 644 0 0 3 /etc/environment\n");
}

TEST(RootfsEditor, InitramfsKeepsTheBaseAndAppendsANewcArchive) {
  auto made = TempDir::create("rootfs-injection-test");
  ASSERT_TRUE(made);
  const TempDir& dir = *made;
  ASSERT_TRUE(writeFileAtomic(dir.path() / "base.cpio", "BASE!"));
  RootfsEditor editor;
  ASSERT_TRUE(editor.writeFile("/etc/hello", "hello\n"));
  ASSERT_TRUE(writeInjectionInitramfs(dir.path() / "base.cpio", editor.entries(), dir.path() / "out.cpio"));
  auto out = readFile(dir.path() / "out.cpio");
  ASSERT_TRUE(out);
  EXPECT_EQ(out->substr(0, 8), std::string("BASE!\0\0\0", 8));  // padded to 4
  EXPECT_EQ(out->substr(8, 6), "070701");
  EXPECT_NE(out->find(".microvm-inject/manifest"), std::string::npos);
  EXPECT_NE(out->find("f 644 0 0 0 /etc/hello\n"), std::string::npos);
  EXPECT_NE(out->find(".microvm-inject/0"), std::string::npos);
  EXPECT_NE(out->find("hello\n"), std::string::npos);
  EXPECT_NE(out->find("TRAILER!!!"), std::string::npos);
  EXPECT_EQ(out->size() % 4, 0u);
}

}  // namespace
}  // namespace microvm
