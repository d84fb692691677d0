#include "core/vm_plan.h"
#include "runner/guest_network.h"

#include <gtest/gtest.h>

#include <set>

#include "base/temp_dir.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;

// A host with the directories in `directories`, the files in `files`, and
// every port free except those in `busy_ports`.
struct FakeHost {
  std::set<fs::path> directories{"/srv/rootfs", "/data", "/home/user/work"};
  std::set<fs::path> files{"/etc/profile.json"};
  std::set<uint16_t> busy_ports;
  int port_checks = 0;
  uid_t euid = 1000;

  HostFacts facts() {
    HostFacts host;
    host.euid = euid;
    host.cwd = "/home/user";
    host.qemu = "/usr/bin/qemu-system-x86_64";
    host.tsc_khz = 2000000;
    host.kernel = "/usr/share/microvm/vmlinux";
    host.initramfs = "/usr/share/microvm/initramfs.cpio";
    host.is_directory = [this](const fs::path& path) { return directories.count(path) != 0; };
    host.exists = [this](const fs::path& path) { return directories.count(path) != 0 || files.count(path) != 0; };
    host.read_file = [this](const fs::path& path) -> Result<std::string> {
      if (files.count(path) == 0) return Error(ErrorCode::kNotFound, "open " + path.string() + ": no such file");
      return std::string(R"({"defaultAction": "SCMP_ACT_ALLOW"})");
    };
    host.check_host_port_free = [this](const net::PortMapping& mapping) -> Result<void> {
      ++port_checks;
      if (busy_ports.count(mapping.host_port) != 0) {
        return Error(ErrorCode::kInvalidArgument, "port " + std::to_string(mapping.host_port) + " is already in use");
      }
      return success();
    };
    return host;
  }
};

RunOptions rootfsOptions() {
  RunOptions options;
  options.rootfs = "/srv/rootfs";
  options.command = {"/bin/sh", "-c", "true"};
  return options;
}

// The message planVm fails with, or "ok".
std::string planError(const RunOptions& options, FakeHost host = {}) {
  auto plan = planVm(options, host.facts());
  return plan ? "ok" : plan.error().message();
}

TEST(VmPlan, AValidPlanHasEverySection) {
  RunOptions options = rootfsOptions();
  options.cpus = 2;
  options.memory_mib = 256;
  options.env = {"A=1"};
  options.workdir = "/work";
  options.hostname = "box";
  options.tmp_size = "64m";
  options.tmpfs = {"/scratch:size=1m", "/cache"};
  options.interactive = true;
  FakeHost host;
  auto plan = planVm(options, host.facts());
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->machine.cpus, 2);
  EXPECT_EQ(plan->machine.memory_mib, 256);
  EXPECT_EQ(plan->machine.qemu, "/usr/bin/qemu-system-x86_64");
  EXPECT_EQ(plan->machine.kernel, "/usr/share/microvm/vmlinux");
  EXPECT_EQ(plan->machine.tsc_khz, 2000000u);
  EXPECT_TRUE(plan->machine.vsock);
  EXPECT_EQ(plan->workload.overrides.args, options.command);
  EXPECT_EQ(plan->workload.overrides.env, options.env);
  EXPECT_EQ(plan->workload.overrides.workdir, "/work");
  EXPECT_EQ(plan->workload.hostname, "box");
  EXPECT_TRUE(plan->workload.open_stdin);
  using Mount = std::pair<std::string, std::string>;
  EXPECT_EQ(plan->workload.tmpfs, (std::vector<Mount>{{"/tmp", "size=64m,mode=1777"},
                                                      {"/scratch", "size=1m"},
                                                      {"/cache", ""}}));
  EXPECT_TRUE(plan->workload.confinement.no_new_privs);
  EXPECT_NE(plan->workload.confinement.capabilities, 0u);
  EXPECT_EQ(plan->network.mode, "user");
  EXPECT_FALSE(plan->network.guest.egress.active);
  EXPECT_TRUE(plan->shares.empty());
}

TEST(VmPlan, VolumesGetTheirTagsOnceInOrder) {
  RunOptions options = rootfsOptions();
  options.volumes.push_back({"/data", "/mnt/data", true, {}, {}});
  options.volumes.push_back({"work", "/mnt/work", false, {}, {}});
  FakeHost host;
  host.directories.insert("work");
  auto plan = planVm(options, host.facts());
  ASSERT_TRUE(plan) << plan.error().message();
  ASSERT_EQ(plan->shares.size(), 2u);
  EXPECT_EQ(plan->shares[0].tag, "vol0");
  EXPECT_EQ(plan->shares[0].host, "/data");
  EXPECT_TRUE(plan->shares[0].readonly);
  EXPECT_EQ(plan->shares[1].tag, "vol1");
  EXPECT_EQ(plan->shares[1].host, "/home/user/work");  // relative to the caller's directory
  VmSpec spec;
  writePlan(*plan, spec);
  ASSERT_EQ(spec.shares.size(), 2u);
  EXPECT_EQ(spec.shares[1].tag, "vol1");
}

TEST(VmPlan, PortsDnsAndEgressAreParsedOnce) {
  RunOptions options = rootfsOptions();
  options.publish = {"8080:80", "[::1]:0:53/udp"};
  options.dns = {"1.1.1.1", "[2001:db8::1]:5353"};
  options.egress_allow = {"*.example.com:443/tcp"};
  options.egress_allow_cidr = {"10.0.0.0/8"};
  options.firewall.push_back({FirewallRule::Action::kDeny, "bad.example.com", 0, ""});
  FakeHost host;
  auto plan = planVm(options, host.facts());
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(host.port_checks, 2);
  ASSERT_EQ(plan->network.guest.ports.size(), 2u);
  EXPECT_EQ(plan->network.guest.ports[0].host_port, 8080);
  EXPECT_EQ(plan->network.guest.ports[0].guest_port, 80);
  EXPECT_EQ(plan->network.guest.ports[1].host_ip, "::1");
  EXPECT_EQ(plan->network.guest.ports[1].transport, net::Transport::kUdp);
  ASSERT_EQ(plan->network.guest.dns.size(), 2u);
  EXPECT_EQ(plan->network.guest.dns[1].port, 5353);
  EXPECT_TRUE(plan->network.guest.egress.active);
  EXPECT_EQ(plan->network.guest.egress.rules.size(), 2u);
  EXPECT_EQ(plan->network.guest.egress.deny_rules.size(), 1u);
  EXPECT_FALSE(plan->network.guest.egress.default_allow);
  EXPECT_EQ(plan->network.egress_request.deny, std::vector<std::string>{"bad.example.com"});

  // spec.json keeps the canonical forms inspect shows.
  VmSpec spec;
  writePlan(*plan, spec);
  EXPECT_EQ(spec.ports, (std::vector<std::string>{"127.0.0.1:8080:80/tcp", "[::1]:0:53/udp"}));
  EXPECT_EQ(spec.dns, (std::vector<std::string>{"1.1.1.1:53", "[2001:db8::1]:5353"}));
  EXPECT_EQ(spec.egress_allow, options.egress_allow);
  EXPECT_EQ(spec.egress_deny, std::vector<std::string>{"bad.example.com"});

  // The runner gets the parsed section back from spec.json as it was planned.
  auto dir = TempDir::create("microvm-plan-test");
  ASSERT_TRUE(dir);
  spec.id = "x";
  ASSERT_TRUE(saveSpec(dir->path(), spec));
  auto loaded = loadSpec(dir->path());
  ASSERT_TRUE(loaded) << loaded.error().message();
  auto guest = guestNetworkPlan(*loaded);
  ASSERT_TRUE(guest) << guest.error().message();
  EXPECT_TRUE(*guest == plan->network.guest);
  EXPECT_EQ(guest->egress.rules[0].host, "example.com");
  EXPECT_EQ(guest->dns[1].address.toString(), "2001:db8::1");

  // A spec.json without the parsed section (an older VM or snapshot): the
  // runner parses its strings into the same plan.
  VmSpec legacy = *loaded;
  legacy.network_plan = {};
  legacy.network_plan_recorded = false;
  auto reparsed = guestNetworkPlan(legacy);
  ASSERT_TRUE(reparsed) << reparsed.error().message();
  EXPECT_TRUE(*reparsed == plan->network.guest);
}

TEST(VmPlan, DenyRulesAloneAllowEverythingElse) {
  RunOptions options = rootfsOptions();
  options.egress_deny = {"10.0.0.0/8"};
  auto plan = planVm(options, FakeHost{}.facts());
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_TRUE(plan->network.guest.egress.default_allow);
  EXPECT_TRUE(plan->network.egress_request.default_allow);
}

TEST(VmPlan, WhatToRunErrors) {
  RunOptions neither;
  EXPECT_EQ(planError(neither), "nothing to run: give an image, or a root filesystem with --rootfs DIR");
  RunOptions both = rootfsOptions();
  both.image = "busybox";
  EXPECT_EQ(planError(both), "give an image or --rootfs, not both");
  RunOptions no_command = rootfsOptions();
  no_command.command.clear();
  EXPECT_EQ(planError(no_command), "no command given (put it after the options, or after --)");
  RunOptions missing = rootfsOptions();
  missing.rootfs = "/nope";
  EXPECT_EQ(planError(missing), "rootfs /nope: no such directory");
  RunOptions file = rootfsOptions();
  file.rootfs = "/etc/profile.json";
  EXPECT_EQ(planError(file), "rootfs /etc/profile.json: not a directory");
  RunOptions empty = rootfsOptions();
  empty.command = {""};
  EXPECT_EQ(planError(empty), "the command is an empty string");
}

TEST(VmPlan, MachineAndWorkloadErrors) {
  auto with = [](auto change) {
    RunOptions options = rootfsOptions();
    change(options);
    return planError(options);
  };
  EXPECT_EQ(with([](RunOptions& o) { o.cpus = 0; }), "cpus must be between 1 and 64");
  EXPECT_EQ(with([](RunOptions& o) { o.memory_mib = 32; }), "memory must be between 64 MiB and 1 TiB");
  EXPECT_EQ(with([](RunOptions& o) { o.workdir = "rel"; }), "working directory \"rel\" is not an absolute path");
  EXPECT_EQ(with([](RunOptions& o) { o.env = {"=x"}; }), "environment entry \"=x\" is not KEY=VALUE");
  EXPECT_EQ(with([](RunOptions& o) { o.stop_timeout_seconds = -1; }), "stop timeout must not be negative");
  EXPECT_EQ(with([](RunOptions& o) { o.log_max_size = 10; }), "log max-size must be at least 1 KiB");
  EXPECT_EQ(with([](RunOptions& o) { o.log_max_files = 0; }), "log max-file must be between 1 and 100");
  EXPECT_EQ(with([](RunOptions& o) { o.tmpfs = {"rel"}; }), "tmpfs \"rel\": the path must be absolute");
  EXPECT_EQ(with([](RunOptions& o) { o.hostname = "-bad"; }), "hostname \"-bad\" is not a valid host name");
  EXPECT_EQ(with([](RunOptions& o) { o.seccomp = "/missing.json"; }),
            "seccomp profile: open /missing.json: no such file");
}

TEST(VmPlan, VolumeErrors) {
  auto with = [](Volume volume, uid_t euid = 1000) {
    RunOptions options = rootfsOptions();
    options.volumes.push_back(std::move(volume));
    FakeHost host;
    host.euid = euid;
    return planError(options, host);
  };
  EXPECT_EQ(with({"/nope", "/mnt", false, {}, {}}), "volume /nope: no such directory on the host");
  EXPECT_EQ(with({"/data", "/", false, {}, {}}), "volume target \"/\" must be an absolute path other than /");
  EXPECT_EQ(with({"/data", "mnt", false, {}, {}}), "volume target \"mnt\" must be an absolute path other than /");
  EXPECT_EQ(with({"/data", "/mnt", false, 5, {}}),
            "volume /data: uid=/gid= present files under another owner through an idmapped mount, which needs "
            "microvm to run as root");
  EXPECT_EQ(with({"/data", "/mnt", false, 5, {}}, 0), "ok");
  EXPECT_EQ(with({"/data", "/mnt", false, 4294967295u, {}}, 0),
            "volume /data: 4294967295 is not a valid uid or gid");
}

TEST(VmPlan, NetworkErrors) {
  auto with = [](auto change, FakeHost host = {}) {
    RunOptions options = rootfsOptions();
    change(options);
    return planError(options, host);
  };
  EXPECT_EQ(with([](RunOptions& o) { o.network = "bridge"; }), "unknown network \"bridge\" (want user, none, tap or tap:NETNS_PATH)");
  EXPECT_EQ(with([](RunOptions& o) {
              o.network = "none";
              o.publish = {"80"};
            }),
            "--network none has no network: it takes no -p, --dns or egress rules");
  EXPECT_EQ(with([](RunOptions& o) { o.firewall.push_back({FirewallRule::Action::kAllow, "", 0, ""}); }),
            "firewall rule without a destination");
  EXPECT_EQ(with([](RunOptions& o) { o.firewall.push_back({FirewallRule::Action::kAllow, "a.com", 70000, ""}); }),
            "firewall rule a.com: port out of range");
  EXPECT_EQ(with([](RunOptions& o) { o.firewall.push_back({FirewallRule::Action::kAllow, "a.com", 0, "icmp"}); }),
            "firewall rule a.com: protocol must be tcp, udp or empty");
  EXPECT_EQ(with([](RunOptions& o) { o.publish = {"8080:80", "8080:81"}; }), "host port 8080 is published twice");
  FakeHost busy;
  busy.busy_ports = {8080};
  EXPECT_EQ(with([](RunOptions& o) { o.publish = {"8080:80"}; }, busy), "port 8080 is already in use");
  // The parsers' own messages come through unchanged.
  EXPECT_NE(with([](RunOptions& o) { o.dns = {"not-an-ip"}; }), "ok");
  EXPECT_NE(with([](RunOptions& o) { o.add_hosts = {"nocolon"}; }), "ok");
  EXPECT_NE(with([](RunOptions& o) { o.egress_allow = {"bad host!"}; }), "ok");
  EXPECT_NE(with([](RunOptions& o) { o.publish = {"99999"}; }), "ok");
}

TEST(VmPlan, VsockErrors) {
  auto with = [](std::vector<VsockPort> ports, bool vsock = true) {
    RunOptions options = rootfsOptions();
    options.vsock = vsock;
    options.vsock_ports = std::move(ports);
    return planError(options);
  };
  EXPECT_EQ(with({{5000, "/run/a.sock", false}}, false), "--vsock mappings need the vsock device");
  EXPECT_EQ(with({{UINT32_MAX, "/run/a.sock", false}}), "vsock port 4294967295: not a usable port");
  EXPECT_EQ(with({{5000, "/run/a.sock", false}, {5000, "/run/b.sock", false}}), "vsock port 5000 is mapped twice");
  EXPECT_EQ(with({{5000, "a.sock", false}}), "vsock port 5000: host socket \"a.sock\" must be an absolute path");
  EXPECT_EQ(with({{5000, "/run/a.sock", true}, {5001, "/run/./a.sock", true}}),
            "vsock port 5001: /run/./a.sock is already a listening socket of this VM");
  std::string long_path = "/" + std::string(120, 'x');
  EXPECT_EQ(with({{5000, long_path, false}}),
            "vsock port 5000: host socket path " + long_path + " is 121 bytes; unix sockets allow 107");
  EXPECT_EQ(with({{5000, "/run/a.sock", true}}), "ok");
}


TEST(VmPlan, TapModeTakesTheNamespacesLinkAndNothingToPublish) {
  FakeHost root;
  root.euid = 0;
  root.files.insert("/run/netns/pod");
  RunOptions tap = rootfsOptions();
  tap.network = "tap:/run/netns/pod";
  tap.dns = {"10.88.0.1"};
  auto plan = planVm(tap, root.facts());
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->network.mode, "tap:/run/netns/pod");
  RunOptions here = rootfsOptions();
  here.network = "tap";
  EXPECT_EQ(planError(here, root), "ok");
  EXPECT_EQ(planError(here), "--network tap needs root (it makes a TAP device)");
  RunOptions published = tap;
  published.publish = {"8080:80"};
  EXPECT_EQ(planError(published, root).rfind("--network tap:/run/netns/pod puts the guest on the namespace's link", 0), 0u);
  RunOptions egress = tap;
  egress.egress_deny_all = true;
  EXPECT_NE(planError(egress, root), "ok");
  RunOptions missing = rootfsOptions();
  missing.network = "tap:/run/netns/gone";
  EXPECT_EQ(planError(missing, root), "--network tap:/run/netns/gone: no such namespace");
  RunOptions relative = rootfsOptions();
  relative.network = "tap:pod";
  EXPECT_EQ(planError(relative, root), "--network tap:PATH needs an absolute path");
  RunOptions unknown = rootfsOptions();
  unknown.network = "tapx";
  EXPECT_EQ(planError(unknown, root), "unknown network \"tapx\" (want user, none, tap or tap:NETNS_PATH)");
}

}  // namespace
}  // namespace microvm

