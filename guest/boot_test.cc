// Unit tests of boot's decisions: the injection manifest, volume mounts, sysctls.
#include "guest/boot.h"

#include <gtest/gtest.h>
#include <sys/mount.h>

namespace microvm::guest {
namespace {

TEST(InjectManifest, ParsesEntriesAndRefusesWhatInitCannotTrust) {
  auto entries = parseInjectManifest("f 640 1000 1001 0 /etc/hook file.txt\nd 700 0 0 1 /root/.ssh\n\n");
  ASSERT_TRUE(entries.ok()) << entries.error().message();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_FALSE((*entries)[0].directory);
  EXPECT_EQ((*entries)[0].mode, 0640u);
  EXPECT_EQ((*entries)[0].uid, 1000u);
  EXPECT_EQ((*entries)[0].gid, 1001u);
  EXPECT_EQ((*entries)[0].path, "/etc/hook file.txt");
  EXPECT_TRUE((*entries)[1].directory);
  EXPECT_EQ((*entries)[1].index, 1u);
  for (const char* bad :
       {"x 644 0 0 0 /a", "f 644 0 0 0 relative", "f 999 0 0 0 /a", "f 644 0 0 /a", "f 644 -1 0 0 /a",
        "f 644 0 0 0 /a/../b", "f 644 0 0 0 /a//b", "f 644 0 0 0 /", "f 17777 0 0 0 /a", "f 644 0 0 0 /a/./b"}) {
    EXPECT_FALSE(parseInjectManifest(bad).ok()) << bad;
  }
}

TEST(InjectManifest, SpecEntriesAreCheckedAsTheManifestsAre) {
  auto entries = specInjectEntries({{"/etc/hook.txt", false, "x", 0640, 1000, 1001}, {"/opt/d", true, "", 0750, 7, 8}});
  ASSERT_TRUE(entries.ok()) << entries.error().message();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].path, "/etc/hook.txt");
  EXPECT_EQ((*entries)[0].mode, 0640u);
  EXPECT_EQ((*entries)[0].uid, 1000u);
  EXPECT_TRUE((*entries)[1].directory);
  for (const char* bad : {"relative", "/a/../b", "/a//b", "/", "/a/./b", ""}) {
    EXPECT_FALSE(specInjectEntries({{bad, false, "", 0644, 0, 0}}).ok()) << bad;
  }
  EXPECT_FALSE(specInjectEntries({{std::string("/a\0b", 4), false, "", 0644, 0, 0}}).ok());
  EXPECT_FALSE(specInjectEntries({{"/a", false, "", 017777, 0, 0}}).ok());
}

agent::MountSpec volume(std::string source, std::string target, std::string fstype, std::string options = "",
                        bool readonly = false) {
  return agent::MountSpec{std::move(source), std::move(target), std::move(fstype), std::move(options), readonly};
}

TEST(PlanVolumeMount, NinePUsesVirtioTransportAndReadOnlyFlag) {
  auto call = planVolumeMount(volume("vol0", "/data", "9p", "", true));
  ASSERT_TRUE(call.ok()) << call.error().message();
  EXPECT_EQ(call->source, "vol0");
  EXPECT_EQ(call->target, "/data");
  EXPECT_EQ(call->fstype, "9p");
  EXPECT_EQ(call->flags, static_cast<unsigned long>(MS_RDONLY));
  EXPECT_EQ(call->data, "trans=virtio,version=9p2000.L,msize=524288,cache=none");
  EXPECT_EQ(call->description, "volume vol0 on /data");

  auto writable = planVolumeMount(volume("vol1", "/srv/app", "9p", "access=any"));
  ASSERT_TRUE(writable.ok());
  EXPECT_EQ(writable->flags, 0ul);
  EXPECT_EQ(writable->data, std::string(k9pMountOptions) + ",access=any");
}

TEST(PlanVolumeMount, TmpfsIsNosuidNodevWithTheGivenOptions) {
  auto call = planVolumeMount(volume("ignored", "/scratch", "tmpfs", "size=16m,mode=1777"));
  ASSERT_TRUE(call.ok()) << call.error().message();
  EXPECT_EQ(call->source, "tmpfs");
  EXPECT_EQ(call->fstype, "tmpfs");
  EXPECT_EQ(call->flags, static_cast<unsigned long>(MS_NOSUID | MS_NODEV));
  EXPECT_EQ(call->data, "size=16m,mode=1777");

  auto readonly = planVolumeMount(volume("", "/ro", "tmpfs", "", true));
  ASSERT_TRUE(readonly.ok());
  EXPECT_EQ(readonly->flags, static_cast<unsigned long>(MS_NOSUID | MS_NODEV | MS_RDONLY));
}

TEST(PlanVolumeMount, RefusesBadTargetsAndTypes) {
  auto relative = planVolumeMount(volume("vol0", "data", "9p"));
  ASSERT_FALSE(relative.ok());
  EXPECT_EQ(relative.error().message(), "mount volume vol0 on data: the target must be an absolute path");
  auto dotdot = planVolumeMount(volume("vol0", "/data/../etc", "9p"));
  ASSERT_FALSE(dotdot.ok());
  EXPECT_EQ(dotdot.error().message(), "mount volume vol0 on /data/../etc: the target must not contain '..'");
  EXPECT_FALSE(planVolumeMount(volume("vol0", "/..", "9p")).ok());
  EXPECT_FALSE(planVolumeMount(volume("vol0", "", "9p")).ok());
  EXPECT_FALSE(planVolumeMount(volume("vol0", "/", "9p")).ok());
  EXPECT_FALSE(planVolumeMount(volume("vol0", "//./", "tmpfs")).ok());
  EXPECT_TRUE(planVolumeMount(volume("vol0", "/a..b/c.", "9p")).ok());  // Only whole ".." components.

  auto no_tag = planVolumeMount(volume("", "/data", "9p"));
  ASSERT_FALSE(no_tag.ok());
  EXPECT_EQ(no_tag.error().message(), "mount volume  on /data: a 9p volume needs a mount tag");
  auto nfs = planVolumeMount(volume("server:/x", "/data", "nfs"));
  ASSERT_FALSE(nfs.ok());
  EXPECT_EQ(nfs.error().message(), "mount volume nfs on /data: unknown filesystem type \"nfs\" (want 9p or tmpfs)");
}

TEST(ParseSysctl, DotsBecomeProcSysPath) {
  auto sysctl = parseSysctl("kernel.kptr_restrict=2");
  ASSERT_TRUE(sysctl.ok()) << sysctl.error().message();
  EXPECT_EQ(sysctl->path, "/proc/sys/kernel/kptr_restrict");
  EXPECT_EQ(sysctl->value, "2");

  auto spaced = parseSysctl("net.ipv4.ip_local_port_range=1024 65000");
  ASSERT_TRUE(spaced.ok());
  EXPECT_EQ(spaced->path, "/proc/sys/net/ipv4/ip_local_port_range");
  EXPECT_EQ(spaced->value, "1024 65000");

  auto equals_in_value = parseSysctl("kernel.core_pattern=|/bin/x a=b");
  ASSERT_TRUE(equals_in_value.ok());
  EXPECT_EQ(equals_in_value->value, "|/bin/x a=b");
}

TEST(ParseSysctl, RefusesKeysThatCouldNameOtherFiles) {
  auto slash = parseSysctl("kernel/../../etc/passwd=x");
  ASSERT_FALSE(slash.ok());
  EXPECT_EQ(slash.error().message(), "sysctl \"kernel/../../etc/passwd=x\": the key must not contain '/'");
  auto dotdot = parseSysctl("kernel..x=1");
  ASSERT_FALSE(dotdot.ok());
  EXPECT_EQ(dotdot.error().message(), "sysctl \"kernel..x=1\": the key must not contain '..'");
  EXPECT_FALSE(parseSysctl(".kernel.x=1").ok());
  EXPECT_FALSE(parseSysctl("kernel.x.=1").ok());
  EXPECT_FALSE(parseSysctl("=1").ok());
  EXPECT_FALSE(parseSysctl("kernel.sysrq").ok());
  EXPECT_FALSE(parseSysctl(std::string("kernel\0.x=1", 11)).ok());
}

}  // namespace
}  // namespace microvm::guest
