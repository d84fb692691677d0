// config.json → RunOptions, as microvm-runtime's create applies it.
#include "oci/bundle_spec.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "oci/container.h"

namespace microvm::oci {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class BundleSpec : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/oci-spec-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    bundle_ = pattern;
    fs::create_directories(bundle_ / "rootfs");
    fs::create_directories(bundle_ / "data");
    std::ofstream(bundle_ / "hosts") << "127.0.0.1 localhost\n";
  }
  void TearDown() override { fs::remove_all(bundle_); }

  // What podman 4.3 writes for `run --network none -v DIR:/data:ro IMAGE echo hi` (trimmed).
  json podmanSpec() const {
    return json::parse(R"({
      "ociVersion": "1.0.2-dev",
      "process": {
        "user": {"uid": 1000, "gid": 50, "umask": 18},
        "args": ["echo", "hi"],
        "env": ["PATH=/usr/bin:/bin", "TERM=xterm", "HOSTNAME=abc"],
        "cwd": "/srv",
        "capabilities": {
          "bounding": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
                       "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
                       "CAP_SYS_CHROOT", "CAP_NET_ADMIN"],
          "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]
      },
      "root": {"path": "rootfs"},
      "hostname": "abc",
      "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "hosts", "options": ["bind", "rprivate"]},
        {"destination": "/dev/shm", "type": "bind", "source": "data", "options": ["bind"]},
        {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=64m", "nosuid"]}
      ],
      "annotations": {"io.container.manager": "libpod"},
      "linux": {
        "sysctl": {"net.ipv4.ping_group_range": "0 0"},
        "resources": {"devices": [{"allow": false, "access": "rwm"}], "pids": {"limit": 2048},
                      "memory": {"limit": 268435456}, "cpu": {"quota": 150000, "period": 100000}},
        "cgroupsPath": "/libpod_parent/libpod-abc",
        "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}],
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]},
        "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]
      }
    })");
  }

  Result<BundlePlan> plan(const json& spec) const { return planBundle(spec.dump(), bundle_); }

  fs::path bundle_;
};

TEST_F(BundleSpec, PodmanSpecBecomesRunOptions) {
  auto plan = this->plan(podmanSpec());
  ASSERT_TRUE(plan) << plan.error().message();
  const RunOptions& options = plan->options;
  EXPECT_EQ(options.rootfs, bundle_ / "rootfs");
  EXPECT_EQ(options.command, (std::vector<std::string>{"echo", "hi"}));
  EXPECT_EQ(options.env.size(), 3u);
  EXPECT_EQ(options.workdir, "/srv");
  EXPECT_EQ(options.user, "1000:50");
  json primary_only = podmanSpec();
  primary_only["process"]["user"]["additionalGids"] = {50};  // what containerd writes
  EXPECT_TRUE(this->plan(primary_only));
  EXPECT_EQ(options.hostname, "abc");
  EXPECT_EQ(options.network, "none");  // a new network namespace: nothing but lo
  EXPECT_EQ(options.memory_mib, 256);
  EXPECT_EQ(options.cpus, 2);  // 1.5 CPUs of quota round up
  EXPECT_FALSE(options.no_new_privs);  // the spec's default
  EXPECT_EQ(options.cap_add, std::vector<std::string>{"NET_ADMIN"});
  for (const char* dropped : {"MKNOD", "NET_RAW", "AUDIT_WRITE"}) {
    EXPECT_NE(std::find(options.cap_drop.begin(), options.cap_drop.end(), dropped), options.cap_drop.end()) << dropped;
  }
  EXPECT_EQ(std::find(options.cap_drop.begin(), options.cap_drop.end(), "CHOWN"), options.cap_drop.end());
  ASSERT_EQ(options.volumes.size(), 1u);  // /dev/shm is the guest's own
  EXPECT_EQ(options.volumes[0].host, bundle_ / "data");
  EXPECT_EQ(options.volumes[0].guest, "/data");
  EXPECT_TRUE(options.volumes[0].readonly);
  ASSERT_EQ(plan->files.size(), 1u);
  EXPECT_EQ(plan->files[0].guest, "/etc/hosts");
  EXPECT_EQ(options.tmpfs, std::vector<std::string>{"/scratch:size=64m"});
  EXPECT_NE(plan->seccomp_profile.find("SCMP_ACT_ERRNO"), std::string::npos);
  EXPECT_FALSE(plan->terminal);
  EXPECT_EQ(plan->annotations.at("io.container.manager"), "libpod");
  // rlimits become the library's ulimits, which the guest sets.
  EXPECT_EQ(std::find(plan->ignored.begin(), plan->ignored.end(), "process.rlimits"), plan->ignored.end());
  EXPECT_EQ(options.ulimits, std::vector<std::string>{"RLIMIT_NOFILE=1048576:1048576"});
}

TEST_F(BundleSpec, SeccompProfilesWithArgumentFiltersGetTheDefaultProfile) {
  json spec = podmanSpec();
  spec["linux"]["seccomp"]["syscalls"].push_back(
      {{"names", {"socket"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 22},
       {"args", {{{"index", 0}, {"value", 40}, {"op", "SCMP_CMP_EQ"}}}}});
  auto plan = this->plan(spec);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->seccomp_profile, "");  // not every socket() denied
}

TEST_F(BundleSpec, AnnotationsOverrideSizeAndNetwork) {
  json spec = podmanSpec();
  spec["annotations"]["org.microvm.cpus"] = "3";
  spec["annotations"]["org.microvm.memory-mib"] = "1024";
  spec["annotations"]["org.microvm.network"] = "user";
  auto plan = this->plan(spec);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->options.cpus, 3);
  EXPECT_EQ(plan->options.memory_mib, 1024);
  EXPECT_EQ(plan->options.network, "user");
  spec["annotations"]["org.microvm.cpus"] = "lots";
  EXPECT_FALSE(this->plan(spec));
  spec["annotations"]["org.microvm.cpus"] = "1000";
  EXPECT_FALSE(this->plan(spec));
}

TEST_F(BundleSpec, NoNetworkNamespaceMeansTheRunnersNat) {
  json spec = podmanSpec();
  spec["linux"]["namespaces"] = json::array({{{"type", "pid"}}});
  auto plan = this->plan(spec);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->options.network, "user");
}

TEST_F(BundleSpec, TheEnginesNetworkNamespaceIsWhereTheRunnerNats) {
  json spec = podmanSpec();
  spec["linux"]["namespaces"][1]["path"] = "/run/netns/pod";
  spec["linux"]["namespaces"][0]["path"] = "/proc/1/ns/pid";  // a pod's shared namespace: nothing to share
  spec["annotations"]["org.microvm.publish"] = "127.0.0.1:8080:80,9090:90/udp";
  auto plan = this->plan(spec);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->netns_path, "/run/netns/pod");
  EXPECT_EQ(plan->options.network, "user");
  EXPECT_EQ(plan->options.publish, (std::vector<std::string>{"127.0.0.1:8080:80", "9090:90/udp"}));
  spec["linux"]["namespaces"][1]["path"] = "relative";
  EXPECT_FALSE(this->plan(spec));
}

// The engine's namespace without publish or network annotations: create
// looks inside it and takes tap when it has a configured interface.
TEST_F(BundleSpec, TheEnginesNamespaceLetsCreatePickTheTapNetwork) {
  json spec = podmanSpec();
  spec["linux"]["namespaces"][1]["path"] = "/run/netns/pod";
  auto plan = this->plan(spec);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_TRUE(plan->pick_network);
  EXPECT_EQ(plan->options.network, "user");  // until create finds the interface
  spec["annotations"]["org.microvm.network"] = "tap";
  plan = this->plan(spec);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_FALSE(plan->pick_network);
  EXPECT_EQ(plan->options.network, "tap");
  spec["annotations"].erase("org.microvm.network");
  spec["annotations"]["org.microvm.publish"] = "8080:80";
  plan = this->plan(spec);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_FALSE(plan->pick_network);  // ports asked: the runner's NAT
  // tap without the engine's namespace would take the host's link.
  json host = podmanSpec();
  host["linux"]["namespaces"] = json::array({{{"type", "pid"}}});
  host["annotations"]["org.microvm.network"] = "tap";
  auto refused = this->plan(host);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("tap needs the engine's network namespace"), std::string::npos)
      << refused.error().message();
}

TEST_F(BundleSpec, UnsupportedFieldsAreRefusedByNameUnlessIgnored) {
  struct Case {
    const char* pointer;
    json value;
    const char* field;
  };
  std::vector<Case> cases = {
      {"/root/readonly", true, "root.readonly"},
      {"/process/user/additionalGids", json::array({10}), "process.user.additionalGids"},
      {"/hooks", {{"createContainer", json::array({{{"path", "/bin/true"}}})}}, "hooks.createContainer"},
      {"/linux/uidMappings", json::array({{{"containerID", 0}, {"hostID", 1000}, {"size", 1}}}), "linux.uidMappings"},
      {"/linux/resources/blockIO", {{"weight", 10}}, "linux.resources.blockIO"},
      {"/mounts/0/type", "nfs", "mounts[0].type"},
      {"/process/apparmorProfile", "docker-default", "process.apparmorProfile"},
  };
  for (const auto& c : cases) {
    json spec = podmanSpec();
    spec[json::json_pointer(c.pointer)] = c.value;
    auto refused = plan(spec);
    ASSERT_FALSE(refused) << c.field;
    EXPECT_NE(refused.error().message().find(c.field), std::string::npos) << refused.error().message();
    EXPECT_NE(refused.error().message().find("org.microvm.ignore"), std::string::npos);
    spec["annotations"]["org.microvm.ignore"] = std::string("foo, ") + c.field;
    auto ignored = plan(spec);
    ASSERT_TRUE(ignored) << c.field << ": " << ignored.error().message();
    EXPECT_NE(std::find(ignored->ignored.begin(), ignored->ignored.end(), c.field), ignored->ignored.end());
    spec["annotations"]["org.microvm.ignore"] = "*";
    EXPECT_TRUE(plan(spec)) << c.field;
  }
}

TEST_F(BundleSpec, BadBundlesGetClearErrors) {
  auto message = [&](const std::string& text) {
    auto plan = planBundle(text, bundle_);
    return plan ? std::string("accepted") : plan.error().message();
  };
  EXPECT_NE(message("{not json").find("not valid JSON"), std::string::npos);
  EXPECT_NE(message("[]").find("must be an object"), std::string::npos);
  json spec = podmanSpec();
  spec["root"]["path"] = "missing-rootfs";
  EXPECT_NE(message(spec.dump()).find("missing-rootfs is not a directory"), std::string::npos);
  spec = podmanSpec();
  spec.erase("root");
  EXPECT_NE(message(spec.dump()).find("root: missing"), std::string::npos);
  spec = podmanSpec();
  spec["process"]["args"] = json::array();
  EXPECT_NE(message(spec.dump()).find("process.args: must not be empty"), std::string::npos);
  spec = podmanSpec();
  spec["process"]["args"] = "echo hi";
  EXPECT_NE(message(spec.dump()).find("process.args: must be an array"), std::string::npos);
  spec = podmanSpec();
  spec["process"]["user"]["uid"] = -1;
  EXPECT_NE(message(spec.dump()).find("process.user.uid: out of range"), std::string::npos);
  spec = podmanSpec();
  spec["process"]["user"]["color"] = "blue";
  EXPECT_NE(message(spec.dump()).find("process.user.color: unknown field"), std::string::npos);
  spec = podmanSpec();
  spec["mounts"][4]["source"] = "/nonexistent/file";
  EXPECT_NE(message(spec.dump()).find("/nonexistent/file does not exist"), std::string::npos);
  spec = podmanSpec();
  spec["mounts"][4]["destination"] = "etc/../hosts";
  EXPECT_NE(message(spec.dump()).find("must be an absolute path"), std::string::npos);
  spec = podmanSpec();
  spec["ociVersion"] = "2.0.0";
  EXPECT_NE(message(spec.dump()).find("not a 1.x version"), std::string::npos);
  spec = podmanSpec();
  spec["process"]["env"] = json::array({"NOEQUALS"});
  EXPECT_NE(message(spec.dump()).find("not KEY=VALUE"), std::string::npos);
  // Bounded: nesting and size.
  EXPECT_NE(message(std::string(100, '[') + std::string(100, ']')).find("nested deeper"), std::string::npos);
  EXPECT_NE(message("\"" + std::string(kMaxConfigBytes, 'a') + "\"").find("larger than 4 MiB"), std::string::npos);
}

TEST_F(BundleSpec, TerminalAndProcessFiles) {
  json spec = podmanSpec();
  spec["process"]["terminal"] = true;
  spec["process"]["consoleSize"] = {{"height", 40}, {"width", 120}};
  auto plan = this->plan(spec);
  ASSERT_TRUE(plan);
  EXPECT_TRUE(plan->terminal);
  EXPECT_EQ(plan->console_rows, 40);
  EXPECT_EQ(plan->console_cols, 120);
  for (json bad : {json("40x120"), json{{"height", -1}}, json{{"width", 70000}}, json{{"height", "40"}}}) {
    spec["process"]["consoleSize"] = bad;
    EXPECT_FALSE(this->plan(spec)) << bad.dump();
  }

  auto process = planProcess(R"({"args": ["sh", "-c", "id"], "env": ["A=1"], "cwd": "/tmp", "terminal": true,
                                 "user": {"uid": 5, "gid": 6}, "capabilities": {"bounding": []}})");
  ASSERT_TRUE(process) << process.error().message();
  EXPECT_EQ(process->args, (std::vector<std::string>{"sh", "-c", "id"}));
  EXPECT_EQ(process->env, std::vector<std::string>{"A=1"});
  EXPECT_EQ(process->cwd, "/tmp");
  EXPECT_EQ(process->user, "5:6");
  EXPECT_TRUE(process->terminal);
  EXPECT_FALSE(planProcess(R"({"args": []})"));
  EXPECT_FALSE(planProcess("nope"));
}

TEST_F(BundleSpec, FeaturesNameTheAnnotations) {
  json features = json::parse(featuresJson());
  EXPECT_EQ(features["ociVersionMax"], "1.1.0");
  EXPECT_TRUE(features["annotations"].contains("org.microvm.ignore"));
  EXPECT_FALSE(features["linux"]["cgroup"]["v1"].get<bool>());
}

TEST_F(BundleSpec, HooksRunOnTheHostWithTheStateOnStdin) {
  json spec = podmanSpec();
  std::string out = (bundle_ / "hook.out").string();
  spec["hooks"] = {{"prestart", {{{"path", "/bin/sh"}, {"args", {"sh", "-c", "echo $X; cat"}}, {"env", {"X=1"}}}}},
                   {"poststop", {{{"path", "/bin/sh"}, {"args", {"sh", "-c", "exit 3"}}}}},
                   {"poststart", {{{"path", "/bin/sleep"}, {"args", {"sleep", "10"}}, {"timeout", 1}}}}};
  auto plan = this->plan(spec);
  ASSERT_TRUE(plan) << plan.error().message();
  ASSERT_EQ(plan->hooks.at("prestart").size(), 1u);
  // The hook's stdout is /dev/null: have it write a file instead.
  plan->hooks["prestart"][0].args = {"sh", "-c", "{ echo $X; cat; } > " + out};
  ASSERT_TRUE(runHooks(plan->hooks, "prestart", "{\"id\":\"c\"}"));
  std::ifstream written(out);
  std::string text((std::istreambuf_iterator<char>(written)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "1\n{\"id\":\"c\"}");
  auto failed = runHooks(plan->hooks, "poststop", "{}");
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message().find("exited with 3"), std::string::npos);
  auto slow = runHooks(plan->hooks, "poststart", "{}");
  ASSERT_FALSE(slow);
  EXPECT_NE(slow.error().message().find("timed out after 1 s"), std::string::npos);
  EXPECT_TRUE(runHooks(plan->hooks, "createRuntime", "{}"));  // none

  std::vector<std::string> refused;
  auto again = parseHooks(hooksJson(plan->hooks), refused);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->at("poststart")[0].timeout_seconds, 1);
  spec["hooks"] = {{"prestart", {{{"path", "relative"}}}}};
  EXPECT_FALSE(this->plan(spec));
  spec["hooks"] = {{"sometime", {{{"path", "/bin/true"}}}}};
  EXPECT_FALSE(this->plan(spec));
}

TEST(OciContainer, IdsSignalsAndState) {
  EXPECT_TRUE(checkContainerId("c78e710674d3"));
  EXPECT_TRUE(checkContainerId("my_ctr.1-2"));
  for (const char* bad : {"", "../x", "a/b", ".hidden", "-x"}) EXPECT_FALSE(checkContainerId(bad)) << bad;
  EXPECT_EQ(*parseSignal("KILL"), SIGKILL);
  EXPECT_EQ(*parseSignal("sigterm"), SIGTERM);
  EXPECT_EQ(*parseSignal("15"), SIGTERM);
  EXPECT_FALSE(parseSignal("0"));
  EXPECT_FALSE(parseSignal("NOPE"));
  EXPECT_FALSE(parseSignal("99999"));

  ContainerState state;
  state.id = "abc";
  state.bundle = "/b";
  state.pid = 42;
  state.annotations["k"] = "v";
  json running = json::parse(stateJson(state, "running"));
  for (const char* key : {"ociVersion", "id", "status", "pid", "bundle", "annotations"}) {
    EXPECT_TRUE(running.contains(key)) << key;
  }
  EXPECT_EQ(running["pid"], 42);
  EXPECT_EQ(json::parse(stateJson(state, "stopped"))["pid"], 0);

  EXPECT_TRUE(processAlive(::getpid(), processStartTime(::getpid())));
  EXPECT_FALSE(processAlive(::getpid(), processStartTime(::getpid()) + 1));  // a reused pid
}

TEST(OciContainer, RecordsRoundTripAndList) {
  char pattern[] = "/tmp/oci-root-test-XXXXXX";
  ASSERT_NE(::mkdtemp(pattern), nullptr);
  fs::path root = pattern;
  ContainerDir dir(root, "ctr1");
  fs::create_directories(dir.dir());
  EXPECT_FALSE(dir.load());
  ContainerState state;
  state.id = "ctr1";
  state.vm_id = "vm";
  state.pid = ::getpid();
  state.pid_start = processStartTime(::getpid());
  ASSERT_TRUE(dir.save(state));
  auto loaded = dir.load();
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->vm_id, "vm");
  EXPECT_EQ(dir.status(*loaded), "created");
  std::ofstream(dir.startedMark()).close();
  EXPECT_EQ(dir.status(*loaded), "running");
  loaded->pid_start += 1;
  EXPECT_EQ(dir.status(*loaded), "stopped");
  EXPECT_EQ(listContainers(root), std::vector<std::string>{"ctr1"});
  EXPECT_EQ(dir.dataDir().parent_path(), root / ".vm");
  EXPECT_LT(dir.dataDir().string().size(), root.string().size() + 25);
  fs::remove_all(root);
}

}  // namespace
}  // namespace microvm::oci
