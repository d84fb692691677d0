// Boot templates end to end: a machine's first run saves one, later runs
// restore it and behave exactly as a cold boot does (output, env, user,
// workdir, exit code), two VMs from one template differ in what must be
// their own, a changed initramfs makes a new template, and what cannot be
// templated boots cold and says why. Each test uses a memory size of its
// own, so that its machine's template is its own in the shared data dir.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iterator>

#include <chrono>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>
#include <nlohmann/json.hpp>

#include "harness.h"

namespace microvm::e2e {
namespace {

using nlohmann::json;
using std::chrono::seconds;
namespace fs = std::filesystem;

std::string bootPath(const std::string& ref) { return inspect(ref)["boot"].value("path", ""); }
std::string bootNote(const std::string& ref) { return inspect(ref)["boot"].value("note", ""); }

// A workload that shows what the spec decides.
const std::vector<std::string> kShowSpec = {
    "/bin/sh", "-c", "echo \"id=$(id -u):$(id -g) pwd=$(pwd) foo=$FOO host=$(hostname)\"; exit 7"};

Outcome runNamed(const std::string& name, std::vector<std::string> flags) {
  std::vector<std::string> args = {"run", "--name", name, "--rootfs", rootfs().string()};
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back("--");
  args.insert(args.end(), kShowSpec.begin(), kShowSpec.end());
  return microvm(args);
}

TEST(TemplateTest, TheFirstRunSavesATemplateAndLaterRunsRestoreItAndBehaveAsAColdBoot) {
  const std::vector<std::string> flags = {"--memory", "272", "-e", "FOO=bar", "-u", "1000:1000", "-w", "/tmp",
                                          "--hostname", "same-host"};
  auto first = runNamed("tpl-first", flags);
  EXPECT_EQ(first.exit_code, 7) << first.err;
  EXPECT_EQ(bootPath("tpl-first"), "cold");
  EXPECT_NE(bootNote("tpl-first").find("saving template"), std::string::npos) << bootNote("tpl-first");

  auto cold = runNamed("tpl-cold", [&] {
    auto with = flags;
    with.push_back("--no-template");
    return with;
  }());
  EXPECT_EQ(bootPath("tpl-cold"), "cold");
  EXPECT_NE(bootNote("tpl-cold").find("--no-template"), std::string::npos) << bootNote("tpl-cold");

  for (int round = 0; round < 3; ++round) {
    std::string name = "tpl-restored-" + std::to_string(round);
    auto restored = runNamed(name, flags);
    EXPECT_EQ(bootPath(name), "template") << bootNote(name);
    EXPECT_EQ(restored.exit_code, cold.exit_code) << restored.err;
    EXPECT_EQ(restored.out, cold.out);
    EXPECT_EQ(restored.out, "id=1000:1000 pwd=/tmp foo=bar host=same-host\n");
    EXPECT_EQ(microvm({"rm", name}).exit_code, 0);
  }
  EXPECT_EQ(microvm({"rm", "tpl-first", "tpl-cold"}).exit_code, 0);

  auto listed = microvm({"template", "ls", "--format", "json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  bool found = false;
  for (const auto& entry : json::parse(listed.out)) {
    if (entry.value("memory_mib", 0) == 272) found = !entry.value("stale", true);
  }
  EXPECT_TRUE(found) << listed.out;
}

// Init mounts the root disk read-only before the template is saved, so a
// VM restored from it remounts it read-write: its writes land on its own
// disk, last across a restart (a cold boot from that disk) and never reach
// the next VM of the template.
TEST(TemplateTest, AVmFromATemplateWritesItsOwnRootDiskWhichKeepsItsFilesAndNoOtherVmSeesThem) {
  const std::vector<std::string> write = {
      "/bin/sh", "-c", "grep ' / ' /proc/mounts; cat /root/mine 2>/dev/null; echo $(hostname) > /root/mine"};
  auto made = microvm(runArgs({"--memory", "456"}, {"/bin/true"}));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  for (const std::string name : {"tpl-disk-a", "tpl-disk-b"}) {
    std::vector<std::string> args = {"run", "--name", name, "--hostname", name, "--memory", "456",
                                     "--rootfs", rootfs().string(), "--"};
    args.insert(args.end(), write.begin(), write.end());
    auto ran = microvm(args);
    ASSERT_EQ(ran.exit_code, 0) << ran.err;
    EXPECT_EQ(bootPath(name), "template") << bootNote(name);
    // Read-write, and no file of another VM of the template.
    EXPECT_EQ(ran.out, "/dev/vda / ext4 rw,noatime 0 0\n") << name;
  }
  for (const std::string name : {"tpl-disk-a", "tpl-disk-b"}) {
    auto again = microvm({"start", "-a", name});
    ASSERT_EQ(again.exit_code, 0) << again.err;
    EXPECT_EQ(again.out, "/dev/vda / ext4 rw,noatime 0 0\n" + name + "\n") << name;
  }
  EXPECT_EQ(microvm({"rm", "tpl-disk-a", "tpl-disk-b"}).exit_code, 0);
}

TEST(TemplateTest, ARootfsWithoutTmpOrRunGetsThemOnItsOwnDiskColdAndFromItsTemplate) {
  // Images without them (scratch-based ones) still get a tmpfs on each:
  // init makes the mountpoints on the VM's own disk, cold and in the
  // template's VMs alike.
  fs::path bare = home().parent_path() / "rootfs-without-tmp-run";
  fs::remove_all(bare);
  ASSERT_EQ(shell("cp -a '" + rootfs().string() + "' '" + bare.string() + "' && rm -rf '" + bare.string() + "/tmp' '" +
                  bare.string() + "/run'"),
            0);
  const std::string show = "grep -E ' /(tmp|run) ' /proc/mounts | cut -d' ' -f2,3; echo hi > /tmp/f && cat /tmp/f";
  for (const std::string name : {"tpl-bare-cold", "tpl-bare-template"}) {
    auto ran = microvm({"run", "--name", name, "--memory", "472", "--rootfs", bare.string(), "--", "/bin/sh", "-c", show});
    ASSERT_EQ(ran.exit_code, 0) << ran.err;
    EXPECT_EQ(ran.out, "/tmp tmpfs\n/run tmpfs\nhi\n") << name;
  }
  EXPECT_EQ(bootPath("tpl-bare-cold"), "cold") << bootNote("tpl-bare-cold");
  EXPECT_EQ(bootPath("tpl-bare-template"), "template") << bootNote("tpl-bare-template");
  EXPECT_EQ(microvm({"rm", "tpl-bare-cold", "tpl-bare-template"}).exit_code, 0);
  fs::remove_all(bare);
}

TEST(TemplateTest, TwoVmsFromOneTemplateHaveTheirOwnHostnameRandomBytesMacAndTheHostsClock) {
  // The first run makes the template.
  auto made = microvm(runArgs({"--memory", "288"}, {"/bin/true"}));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) ids.push_back(runDetached({"--memory", "288"}, {"sleep", "600"}));
  std::vector<std::string> hostnames, random, macs;
  for (const auto& id : ids) {
    EXPECT_EQ(bootPath(id), "template") << bootNote(id);
    auto shown = microvm({"exec", id, "/bin/sh", "-c",
                          "hostname; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; "
                          "cat /sys/class/net/eth0/address"});
    ASSERT_EQ(shown.exit_code, 0) << shown.err;
    std::istringstream lines(shown.out);
    std::string hostname, bytes, clock, mac;
    std::getline(lines, hostname);
    std::getline(lines, bytes);
    std::getline(lines, clock);
    std::getline(lines, mac);
    hostnames.push_back(hostname);
    macs.push_back(mac);
    EXPECT_EQ(mac.substr(0, 3), "02:") << shown.out;
    random.push_back(bytes);
    EXPECT_EQ(bytes.size(), 32u) << shown.out;
    // The template was saved seconds ago; the guest must show the host's time.
    long long guest = std::atoll(clock.c_str());
    long long host = static_cast<long long>(std::time(nullptr));
    EXPECT_LE(std::llabs(host - guest), 1) << "guest clock " << guest << ", host " << host;
  }
  EXPECT_NE(hostnames[0], hostnames[1]);
  EXPECT_EQ(hostnames[0], inspect(ids[0])["config"].value("hostname", ""));
  EXPECT_NE(random[0], random[1]);
  EXPECT_NE(macs[0], macs[1]);
  EXPECT_EQ(microvm({"rm", "-f", ids[0], ids[1]}).exit_code, 0);
}

// The guest's wall clock against the host's: an exec waits on its stdin,
// and reads its clock (the time of a file it touches: the kernel's coarse
// clock, one 4 ms tick) as soon as the host writes a line. Returns the
// guest's time minus the host's just before that write, and minus the
// host's once the exec ended, in ms: a right clock gives a first figure at
// or a little above 0, and a second below 0.
std::pair<double, double> guestClockAgainstHost(const std::string& id) {
  auto now = [] { return std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()); };
  Cli exec({"exec", "-i", id, "/bin/sh", "-c", "echo waiting; read line; touch /tmp/clock && stat -c %y /tmp/clock"}, {},
           /*pipe_stdin=*/true);
  EXPECT_TRUE(exec.waitForStdout("waiting", seconds(60)));
  auto before = now();
  exec.writeStdin("go\n");
  exec.closeStdin();
  auto shown = exec.finish(seconds(60));
  auto after = now();
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  // "2026-12-07 14:45:12.123456789 +0000": the guest runs in UTC.
  std::tm parts{};
  long nanoseconds = 0;
  size_t at = shown.out.find('\n');
  if (at == std::string::npos ||
      std::sscanf(shown.out.c_str() + at + 1, "%d-%d-%d %d:%d:%d.%ld", &parts.tm_year, &parts.tm_mon, &parts.tm_mday,
                  &parts.tm_hour, &parts.tm_min, &parts.tm_sec, &nanoseconds) != 7) {
    ADD_FAILURE() << "no time in " << shown.out;
    return {0, 0};
  }
  parts.tm_year -= 1900;
  parts.tm_mon -= 1;
  double guest = static_cast<double>(::timegm(&parts)) * 1000.0 + static_cast<double>(nanoseconds) / 1e6;
  return {guest - before.count(), guest - after.count()};
}

// A cold boot starts with the RTC's whole seconds, and a restore with the
// time of its save: both get the host's clock, to the round trip, before
// their workload runs; a fork's child as soon as it runs.
TEST(TemplateTest, ColdAndTemplateVmsHaveTheHostsClockToAFewMilliseconds) {
  auto made = microvm(runArgs({"--memory", "488"}, {"/bin/true"}));  // the template
  ASSERT_EQ(made.exit_code, 0) << made.err;
  // A guest up to a second behind (the RTC's resolution), or as late as a
  // restored guest reads the time it was sent (40-70 ms here, before it
  // asks again: agent::ControlClock), or ahead would fall outside this
  // slack: the coarse clock's tick and what an exact round trip may miss.
  constexpr double kSlackMs = 20;
  for (std::vector<std::string> flags : {std::vector<std::string>{"--no-template"}, std::vector<std::string>{}}) {
    flags.insert(flags.end(), {"--memory", "488"});
    std::string id = runDetached(flags, {"sleep", "600"});
    bool cold = flags.front() == "--no-template";
    EXPECT_EQ(bootPath(id), cold ? "cold" : "template") << bootNote(id);
    std::vector<std::string> vms = {id};
    if (!cold) {
      // A fork's child is restored while its workload runs: init's
      // supervisor asks for the time.
      auto forked = microvm({"fork", id});
      ASSERT_EQ(forked.exit_code, 0) << forked.err;
      vms.push_back(forked.out.substr(0, forked.out.find('\n')));
    }
    for (const std::string& vm : vms) {
      for (int sample = 0; sample < 3; ++sample) {
        auto [after_start, before_end] = guestClockAgainstHost(vm);
        EXPECT_GT(after_start, -kSlackMs) << bootPath(vm) << ": the guest's clock is behind the host's";
        EXPECT_LT(before_end, kSlackMs) << bootPath(vm) << ": the guest's clock is ahead of the host's";
      }
    }
    vms.insert(vms.begin(), "-f");
    vms.insert(vms.begin(), "rm");
    EXPECT_EQ(microvm(vms).exit_code, 0);
  }
}

// The memfd:microvm-template-ram mapping in `pid`'s maps: its inode, and the
// kB of its pages that other processes map too (smaps Shared_*).
struct TemplateMapping {
  unsigned long inode = 0;
  long shared_kb = 0;
};
TemplateMapping templateMapping(pid_t pid) {
  TemplateMapping found;
  std::ifstream smaps("/proc/" + std::to_string(pid) + "/smaps");
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    std::string first = line.substr(0, line.find(' '));
    if (first.find('-') != std::string::npos && first.back() != ':') {  // a mapping's first line
      inside = line.find("/memfd:microvm-template-ram") != std::string::npos;
      if (inside) {
        std::istringstream fields(line);
        std::string range, perms, offset, device;
        fields >> range >> perms >> offset >> device >> found.inode;
      }
      continue;
    }
    if (inside && (line.rfind("Shared_Clean:", 0) == 0 || line.rfind("Shared_Dirty:", 0) == 0)) {
      found.shared_kb += std::atol(line.substr(line.find(':') + 1).c_str());
    }
  }
  return found;
}

// The bytes of the memfd with inode `inode` that a template memory holder
// holds, read through its fd; empty if no holder has it.
std::string heldMemory(unsigned long inode) {
  for (pid_t pid : processesMentioning("--template-memory")) {
    std::string fds = "/proc/" + std::to_string(pid) + "/fd";
    std::error_code ec;
    for (const auto& fd : fs::directory_iterator(fds, ec)) {
      struct stat st {};
      if (::stat(fd.path().c_str(), &st) != 0 || st.st_ino != inode) continue;
      std::ifstream in(fd.path(), std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(in), {});
    }
  }
  return "";
}

TEST(TemplateTest, VmsFromOneTemplateShareItsMemoryCopyOnWriteAndNoneCanChangeIt) {
  auto made = microvm(runArgs({"--memory", "392"}, {"/bin/true"}));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) ids.push_back(runDetached({"--memory", "392", "--share-memory"}, {"sleep", "600"}));
  std::vector<TemplateMapping> mappings;
  for (const auto& id : ids) {
    ASSERT_EQ(bootPath(id), "template") << bootNote(id);
    ASSERT_EQ(microvm({"exec", id, "true"}).exit_code, 0);
    mappings.push_back(templateMapping(inspect(id).value("qemu_pid", 0)));
  }
  // One memfd, mapped by both VMs' QEMUs, with pages both map.
  ASSERT_NE(mappings[0].inode, 0u);
  EXPECT_EQ(mappings[0].inode, mappings[1].inode);
  EXPECT_GT(mappings[1].shared_kb, 1024) << "kB of template memory that both VMs map";

  // The template's memory as saved, and as held: the same bytes...
  std::string note = bootNote(ids[0]);
  ASSERT_NE(note.find("memory shared"), std::string::npos) << note;
  std::string key = note.substr(note.find(' ') + 1, 12);
  std::string saved;
  for (const auto& entry : fs::directory_iterator(home() / "templates")) {
    if (entry.path().filename().string().rfind(key, 0) != 0) continue;
    std::ifstream in(entry.path() / "memory.ram", std::ios::binary);
    saved.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_EQ(saved.size(), 392u << 20) << note;
  EXPECT_TRUE(heldMemory(mappings[0].inode) == saved);
  // ...also after one VM wrote 32 MiB of its memory, and the other reads them.
  auto wrote = microvm({"exec", ids[0], "/bin/sh", "-c",
                        "dd if=/dev/urandom of=/tmp/noise bs=1M count=32 2>/dev/null && sync && "
                        "head -c 64 /tmp/noise | od -An -tx1 | tr -d ' \\n'"});
  ASSERT_EQ(wrote.exit_code, 0) << wrote.err;
  EXPECT_EQ(microvm({"exec", ids[1], "test", "-e", "/tmp/noise"}).exit_code, 1);
  EXPECT_TRUE(heldMemory(mappings[0].inode) == saved) << "a VM's writes reached the template's memory";
  auto third = microvm(runArgs({"--memory", "392", "--share-memory"}, {"echo", "third"}));
  EXPECT_EQ(third.out, "third\n") << third.err;
  // Without --share-memory, a VM from the template loads its own copy.
  std::string own = runDetached({"--memory", "392"}, {"sleep", "600"});
  EXPECT_EQ(bootPath(own), "template") << bootNote(own);
  EXPECT_EQ(templateMapping(inspect(own).value("qemu_pid", 0)).inode, 0u);
  // A shared VM is saved (its memory in the stream) and restored whole.
  auto saved_vm = microvm({"snapshot", "create", ids[1], "tpl-shared-snap"});
  ASSERT_EQ(saved_vm.exit_code, 0) << saved_vm.err;
  auto restored = microvm({"snapshot", "restore", "tpl-shared-snap", "--name", "tpl-shared-restored"});
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_EQ(microvm({"exec", "tpl-shared-restored", "true"}).exit_code, 0);
  EXPECT_EQ(microvm({"rm", "-f", own, "tpl-shared-restored"}).exit_code, 0);
  EXPECT_EQ(microvm({"snapshot", "rm", "tpl-shared-snap"}).exit_code, 0);
  EXPECT_EQ(microvm({"rm", "-f", ids[0], ids[1]}).exit_code, 0);
}

TEST(TemplateTest, AnImageWithAMachineIdGivesEveryVmItsOwnAlsoFromATemplate) {
  fs::path with_id = fs::path(home()) / "tpl-machine-id-rootfs";
  ASSERT_EQ(shell("cp -a " + rootfs().string() + " " + with_id.string() + " && printf '%032d\\n' 0 > " +
                  (with_id / "etc" / "machine-id").string()),
            0);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {  // cold (saving the template), then two from it
    std::string name = "tpl-machine-id-" + std::to_string(i);
    auto shown = microvm({"run", "--name", name, "--memory", "352", "--rootfs", with_id.string(), "--", "cat",
                          "/etc/machine-id"});
    ASSERT_EQ(shown.exit_code, 0) << shown.err;
    EXPECT_EQ(bootPath(name), i == 0 ? "cold" : "template") << bootNote(name);
    EXPECT_EQ(microvm({"rm", name}).exit_code, 0);
    ASSERT_EQ(shown.out.size(), 33u) << shown.out;
    EXPECT_NE(shown.out, std::string(32, '0') + "\n");
    ids.push_back(shown.out);
  }
  EXPECT_NE(ids[0], ids[1]);
  EXPECT_NE(ids[1], ids[2]);
  EXPECT_NE(ids[0], ids[2]);
}

TEST(TemplateTest, AChangedInitramfsMakesANewTemplateAndTheOldOneShowsStale) {
  fs::path initramfs = fs::path(home()) / "tpl-initramfs.cpio";
  fs::copy_file(binDir().parent_path() / "share" / "microvm" / "initramfs.cpio", initramfs,
                fs::copy_options::overwrite_existing);
  std::vector<std::string> env = {"MICROVM_INITRAMFS=" + initramfs.string()};
  auto run = [&](const std::string& name) {
    return microvm({"run", "--name", name, "--memory", "304", "--rootfs", rootfs().string(), "--", "/bin/true"}, env);
  };
  ASSERT_EQ(run("tpl-init-a").exit_code, 0);
  ASSERT_EQ(run("tpl-init-b").exit_code, 0);
  EXPECT_EQ(bootPath("tpl-init-b"), "template") << bootNote("tpl-init-b");
  // The same bytes, written again: a rebuilt init as far as anyone can tell
  // without reading it.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  fs::copy_file(binDir().parent_path() / "share" / "microvm" / "initramfs.cpio", initramfs,
                fs::copy_options::overwrite_existing);
  ASSERT_EQ(run("tpl-init-c").exit_code, 0);
  EXPECT_EQ(bootPath("tpl-init-c"), "cold");
  EXPECT_NE(bootNote("tpl-init-c").find("saving template"), std::string::npos) << bootNote("tpl-init-c");
  ASSERT_EQ(run("tpl-init-d").exit_code, 0);
  EXPECT_EQ(bootPath("tpl-init-d"), "template") << bootNote("tpl-init-d");
  auto listed = microvm({"template", "ls", "--format", "json"});
  int stale = 0, current = 0;
  for (const auto& entry : json::parse(listed.out)) {
    if (entry.value("memory_mib", 0) != 304) continue;
    entry.value("stale", false) ? ++stale : ++current;
  }
  EXPECT_EQ(stale, 1) << listed.out;
  EXPECT_EQ(current, 1) << listed.out;
  EXPECT_EQ(microvm({"rm", "tpl-init-a", "tpl-init-b", "tpl-init-c", "tpl-init-d"}).exit_code, 0);
}

TEST(TemplateTest, WhatCannotBeTemplatedBootsColdAndSaysWhy) {
  fs::path volume = fs::path(home()) / "tpl-volume";
  fs::create_directories(volume);
  auto with_volume = microvm({"run", "--name", "tpl-vol", "--memory", "320", "-v", volume.string() + ":/data",
                              "--rootfs", rootfs().string(), "--", "/bin/true"});
  ASSERT_EQ(with_volume.exit_code, 0) << with_volume.err;
  EXPECT_EQ(bootPath("tpl-vol"), "cold");
  EXPECT_NE(bootNote("tpl-vol").find("volumes"), std::string::npos) << bootNote("tpl-vol");
  EXPECT_EQ(microvm({"rm", "tpl-vol"}).exit_code, 0);
}

TEST(TemplateTest, TemplateBuildMakesItAheadLeavesNoVmAndTheNextRunRestoresIt) {
  auto before = microvm({"ps", "-a", "-q"});
  auto built = microvm({"template", "build", "--memory", "408", "--rootfs", rootfs().string()});
  ASSERT_EQ(built.exit_code, 0) << built.err;
  EXPECT_NE(built.out.find("saved"), std::string::npos) << built.out;
  EXPECT_EQ(microvm({"ps", "-a", "-q"}).out, before.out);  // the VM that made it is gone
  auto listed = microvm({"template", "ls", "--format", "json"});
  bool found = false;
  for (const auto& entry : json::parse(listed.out)) {
    if (entry.value("memory_mib", 0) == 408) found = !entry.value("stale", true);
  }
  EXPECT_TRUE(found) << listed.out;

  auto run = runNamed("tpl-built", {"--memory", "408"});
  EXPECT_EQ(run.exit_code, 7) << run.err;
  EXPECT_EQ(bootPath("tpl-built"), "template") << bootNote("tpl-built");
  EXPECT_EQ(microvm({"rm", "tpl-built"}).exit_code, 0);

  auto again = microvm({"template", "build", "--memory", "408", "--rootfs", rootfs().string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("current already"), std::string::npos) << again.out;
  EXPECT_EQ(again.out.substr(0, 12), built.out.substr(0, 12));

  // A machine that cannot have one says why, and leaves nothing either.
  auto volume = microvm({"template", "build", "--memory", "408", "-v", home().string() + ":/data:ro", "--rootfs",
                         rootfs().string()});
  EXPECT_NE(volume.exit_code, 0);
  EXPECT_NE(volume.err.find("cannot have a boot template: volumes"), std::string::npos) << volume.err;
  EXPECT_EQ(microvm({"ps", "-a", "-q"}).out, before.out);
}

TEST(TemplateTest, PruneLeavesNothingBehindAndTheNextRunMakesOneAgain) {
  auto made = microvm(runArgs({"--memory", "336"}, {"/bin/true"}));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto pruned = microvm({"template", "prune"});
  ASSERT_EQ(pruned.exit_code, 0) << pruned.err;
  EXPECT_FALSE(pruned.out.empty());
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(home() / "templates")) left.push_back(entry.path().filename());
  EXPECT_TRUE(left.empty()) << left.size() << " left, the first: " << (left.empty() ? "" : left.front());
  auto listed = microvm({"template", "ls", "--format", "json"});
  EXPECT_EQ(json::parse(listed.out).size(), 0u) << listed.out;
  auto again = microvm({"run", "--name", "tpl-again", "--memory", "336", "--rootfs", rootfs().string(), "--", "/bin/true"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(bootNote("tpl-again").find("saving template"), std::string::npos) << bootNote("tpl-again");
  EXPECT_EQ(microvm({"rm", "tpl-again"}).exit_code, 0);
}

}  // namespace
}  // namespace microvm::e2e
