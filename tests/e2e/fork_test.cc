// `fork` end to end: a running counter is forked into two children, which
// continue from the fork point independently (their own counters, files,
// hostnames) and answer exec, while the parent runs on; their disks are
// overlays of one frozen layer that outlives the parent.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "harness.h"

namespace microvm::e2e {
namespace {

using std::chrono::seconds;

int firstTick(const std::string& ref) {
  auto logs = microvm({"logs", ref});
  size_t at = logs.out.find("tick ");
  return at == std::string::npos ? -1 : std::stoi(logs.out.substr(at + 5));
}

TEST(ForkTest, TwoChildrenContinueTheCounterFromTheForkPointIndependentlyAndAnswerExecWhileTheParentRunsOn) {
  std::string parent = runDetached({"--name", "fork-parent"}, kCounter);
  ASSERT_TRUE(eventually([&] { return lastTick(parent) >= 3; })) << "the parent never counted to 3";
  ASSERT_EQ(microvm({"exec", "fork-parent", "sh", "-c", "echo from-the-parent > /written-before-the-fork"}).exit_code, 0);
  int before = lastTick(parent);
  auto forked = microvm({"fork", "--count", "2", "--name", "fork-child", "fork-parent"});
  ASSERT_EQ(forked.exit_code, 0) << forked.err;
  std::istringstream lines(forked.out);
  std::vector<std::string> children;
  for (std::string line; std::getline(lines, line);) children.push_back(line);
  ASSERT_EQ(children.size(), 2u) << forked.out;
  int after = lastTick(parent);
  ASSERT_GE(after, before);

  std::vector<std::string> hostnames;
  for (size_t i = 0; i < children.size(); ++i) {
    std::string name = "fork-child-" + std::to_string(i + 1);
    EXPECT_EQ(inspect(children[i]).value("name", ""), name);
    EXPECT_NE(inspect(name)["boot"].value("note", "").find("forked from VM fork-parent"), std::string::npos);
    // The child's log starts where the parent was when it was saved.
    ASSERT_TRUE(eventually([&] { return lastTick(name) >= 0; }, seconds(30))) << name << " never counted";
    int first = firstTick(name);
    EXPECT_GE(first, before) << name;
    EXPECT_LE(first, after + 2) << name;
    int now = lastTick(name);
    EXPECT_TRUE(eventually([&] { return lastTick(name) >= now + 3; }, seconds(30))) << name << " stopped counting";
    auto shown = microvm({"exec", name, "/bin/sh", "-c", "hostname; echo child-" + std::to_string(i + 1) +
                                                                   " > /root-file-of-the-child"});
    ASSERT_EQ(shown.exit_code, 0) << shown.err;
    hostnames.push_back(shown.out);
  }
  EXPECT_NE(hostnames[0], hostnames[1]);
  // Each child's disk is its own, and the parent's is untouched.
  auto one = microvm({"exec", "fork-child-1", "cat", "/root-file-of-the-child"});
  auto two = microvm({"exec", "fork-child-2", "cat", "/root-file-of-the-child"});
  EXPECT_EQ(one.out, "child-1\n");
  EXPECT_EQ(two.out, "child-2\n");
  auto in_parent = microvm({"exec", "fork-parent", "cat", "/root-file-of-the-child"});
  EXPECT_NE(in_parent.exit_code, 0);
  // The parent ran on through the fork.
  int parent_now = lastTick(parent);
  EXPECT_TRUE(eventually([&] { return lastTick(parent) >= parent_now + 3; }, seconds(30)));

  auto taken = microvm({"fork", "--name", "fork-child", "fork-parent"});
  EXPECT_NE(taken.exit_code, 0);
  EXPECT_NE(taken.err.find("fork-child-1"), std::string::npos) << taken.err;

  // The children's disks are overlays of one frozen layer, the parent's disk
  // at the fork, which outlives the parent. Read with the guests' page caches
  // dropped, the files come from the chain on the host.
  auto layers = [&](const std::string& id) {
    std::vector<std::filesystem::path> found;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(home() / "vms" / id / "layers", ec)) {
      found.push_back(entry.path());
    }
    return found;
  };
  auto one_layers = layers(children[0]);
  auto two_layers = layers(children[1]);
  ASSERT_EQ(one_layers.size(), 1u);
  ASSERT_EQ(two_layers.size(), 1u);
  EXPECT_TRUE(std::filesystem::equivalent(one_layers[0], two_layers[0])) << "the children copied the parent's disk";
  EXPECT_EQ(microvm({"rm", "-f", "fork-parent"}).exit_code, 0);
  const std::string uncached = "sync && echo 3 > /proc/sys/vm/drop_caches && cat /written-before-the-fork /root-file-of-the-child";
  EXPECT_EQ(microvm({"exec", "fork-child-1", "sh", "-c", uncached}).out, "from-the-parent\nchild-1\n");
  EXPECT_EQ(microvm({"exec", "fork-child-2", "sh", "-c", uncached}).out, "from-the-parent\nchild-2\n");
  // A snapshot of a child keeps the whole chain: restored after every VM of
  // it is gone, the copy is two layers deep and has both files.
  ASSERT_EQ(microvm({"snapshot", "create", "fork-child-1", "fork-grandchild"}).exit_code, 0);
  EXPECT_EQ(microvm({"rm", "-f", "fork-child-1", "fork-child-2"}).exit_code, 0);
  auto restored = microvm({"run", "-d", "--snapshot", "fork-grandchild", "--name", "fork-grandchild"});
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  std::string grandchild = restored.out.substr(0, restored.out.find('\n'));
  EXPECT_EQ(layers(grandchild).size(), 2u);
  EXPECT_EQ(microvm({"exec", "fork-grandchild", "sh", "-c", uncached}).out, "from-the-parent\nchild-1\n");
  EXPECT_EQ(microvm({"rm", "-f", "fork-grandchild"}).exit_code, 0);
  EXPECT_EQ(microvm({"snapshot", "rm", "fork-grandchild"}).exit_code, 0);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(home() / "snapshots", ec)) {
    EXPECT_NE(entry.path().filename().string().rfind(".tmp-fork-", 0), 0u) << "fork left " << entry.path();
  }
}

}  // namespace
}  // namespace microvm::e2e
