#include "image/workload_config.h"

#include <gtest/gtest.h>

namespace microvm {
namespace {

using Argv = std::vector<std::string>;

ImageDefaults shImage() {
  ImageDefaults image;
  image.entrypoint = {"/bin/sh", "-c"};
  image.cmd = {"echo hi"};
  image.env = {"PATH=/bin", "A=image"};
  image.working_dir = "/srv";
  image.user = "app";
  return image;
}

TEST(WorkloadConfigTest, ImageDefaultsApplyWhenNothingIsOverridden) {
  auto merged = mergeImageDefaults(shImage(), {});
  ASSERT_TRUE(merged);
  EXPECT_EQ(merged->argv, (Argv{"/bin/sh", "-c", "echo hi"}));
  EXPECT_EQ(merged->env, (Argv{"PATH=/bin", "A=image"}));
  EXPECT_EQ(merged->workdir, "/srv");
  EXPECT_EQ(merged->user, "app");
}

TEST(WorkloadConfigTest, ArgsReplaceCmdButKeepEntrypoint) {
  WorkloadOverrides overrides;
  overrides.args = {"echo bye"};
  EXPECT_EQ(mergeImageDefaults(shImage(), overrides)->argv, (Argv{"/bin/sh", "-c", "echo bye"}));
}

TEST(WorkloadConfigTest, EntrypointOverrideDropsTheImageCmd) {
  WorkloadOverrides overrides;
  overrides.entrypoint = "/bin/echo";
  EXPECT_EQ(mergeImageDefaults(shImage(), overrides)->argv, (Argv{"/bin/echo"}));
  overrides.args = {"x", "y"};
  EXPECT_EQ(mergeImageDefaults(shImage(), overrides)->argv, (Argv{"/bin/echo", "x", "y"}));
}

TEST(WorkloadConfigTest, EmptyEntrypointClearsIt) {
  WorkloadOverrides overrides;
  overrides.entrypoint = "";
  overrides.args = {"/bin/true"};
  EXPECT_EQ(mergeImageDefaults(shImage(), overrides)->argv, (Argv{"/bin/true"}));
  overrides.args.clear();
  auto empty = mergeImageDefaults(shImage(), overrides);
  ASSERT_FALSE(empty);
  EXPECT_NE(empty.error().message().find("no command"), std::string::npos);
}

TEST(WorkloadConfigTest, EnvOverridesByKeyAndAppends) {
  WorkloadOverrides overrides;
  overrides.env = {"A=mine", "B=new"};
  EXPECT_EQ(mergeImageDefaults(shImage(), overrides)->env, (Argv{"PATH=/bin", "A=mine", "B=new"}));
}

TEST(WorkloadConfigTest, WorkdirAndUserOverridesAndFallbacks) {
  WorkloadOverrides overrides;
  overrides.workdir = "/tmp";
  overrides.user = "0:0";
  auto merged = mergeImageDefaults(shImage(), overrides);
  EXPECT_EQ(merged->workdir, "/tmp");
  EXPECT_EQ(merged->user, "0:0");
  ImageDefaults bare;
  bare.cmd = {"/bin/true"};
  EXPECT_EQ(mergeImageDefaults(bare, {})->workdir, "/");
  EXPECT_EQ(mergeImageDefaults(bare, {})->user, "");
}

}  // namespace
}  // namespace microvm
