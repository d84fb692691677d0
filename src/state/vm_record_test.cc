#include "state/vm_record.h"

#include <gtest/gtest.h>

#include <optional>
#include <unistd.h>

#include "base/paths.h"
#include "base/fs.h"
#include "base/temp_dir.h"

namespace microvm {
namespace {

class VmRecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto temp = TempDir::create("microvm-record-test");
    ASSERT_TRUE(temp);
    temp_.emplace(std::move(*temp));
    dir_ = temp_->path();
  }
  std::optional<TempDir> temp_;
  std::filesystem::path dir_;
};

TEST_F(VmRecordTest, SpecRoundTrips) {
  VmSpec spec;
  spec.id = "abc";
  spec.argv = {"/bin/sh", "-c", "echo \"quoted\" \n"};
  spec.env = {"A=1"};
  spec.cpus = 2;
  spec.remove_on_exit = true;
  spec.tty = true;
  spec.tty_rows = 50;
  spec.tty_cols = 132;
  ASSERT_TRUE(saveSpec(dir_, spec));
  auto loaded = loadSpec(dir_);
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(loaded->argv, spec.argv);
  EXPECT_EQ(loaded->env, spec.env);
  EXPECT_EQ(loaded->cpus, 2);
  EXPECT_TRUE(loaded->remove_on_exit);
  EXPECT_TRUE(loaded->tty);
  EXPECT_EQ(loaded->tty_rows, 50);
  EXPECT_EQ(loaded->tty_cols, 132);
}

TEST_F(VmRecordTest, VsockPortsRoundTripInOrder) {
  VmSpec spec;
  spec.runtime_dir = "/run/microvm/abc";
  spec.vsock_ports = {{5000, "/tmp/a.sock", false}, {1024, "/tmp/agent.sock", true}};
  ASSERT_TRUE(saveSpec(dir_, spec));
  auto loaded = loadSpec(dir_);
  ASSERT_TRUE(loaded) << loaded.error().message();
  ASSERT_EQ(loaded->vsock_ports.size(), 2u);
  EXPECT_EQ(loaded->vsock_ports[0].port, 5000u);
  EXPECT_EQ(loaded->vsock_ports[0].path, "/tmp/a.sock");
  EXPECT_FALSE(loaded->vsock_ports[0].listen);
  EXPECT_EQ(loaded->vsock_ports[1].port, 1024u);
  EXPECT_TRUE(loaded->vsock_ports[1].listen);
  EXPECT_EQ(VmSockets(loaded->runtime_dir).vsock(), "/run/microvm/abc/vsock.sock");
  EXPECT_TRUE(loaded->vsock);
  spec.vsock = false;
  ASSERT_TRUE(saveSpec(dir_, spec));
  EXPECT_FALSE(loadSpec(dir_)->vsock);
}

TEST_F(VmRecordTest, StateRoundTripsWithAndWithoutExitCode) {
  VmState state;
  state.status = VmStatus::kRunning;
  state.runner_pid = 42;
  ASSERT_TRUE(saveState(dir_, state));
  auto loaded = loadState(dir_);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->status, VmStatus::kRunning);
  EXPECT_FALSE(loaded->exit_code.has_value());

  state.status = VmStatus::kExited;
  state.exit_code = 3;
  ASSERT_TRUE(saveState(dir_, state));
  loaded = loadState(dir_);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->exit_code, 3);
}

TEST_F(VmRecordTest, SuspendedRoundTripsWithItsPortsAndOlderStatusesStillLoad) {
  VmState state;
  state.status = VmStatus::kSuspended;
  state.ports = {"127.0.0.1:8080:80/tcp"};
  ASSERT_TRUE(saveState(dir_, state));
  auto loaded = loadState(dir_);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->status, VmStatus::kSuspended);
  EXPECT_EQ(loaded->ports, state.ports);
  EXPECT_STREQ(toString(VmStatus::kSuspended), "suspended");
  // The older statuses keep their names: a state.json written before
  // suspend existed reads as it did.
  state.status = VmStatus::kPaused;
  ASSERT_TRUE(saveState(dir_, state));
  auto text = readFile(dir_ / "state.json");
  ASSERT_TRUE(text);
  EXPECT_NE(text->find(R"("status": "paused")"), std::string::npos) << *text;
  loaded = loadState(dir_);
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(loaded->status, VmStatus::kPaused);
}

TEST_F(VmRecordTest, ShareTagsAndTheParsedNetworkRoundTrip) {
  VmSpec spec;
  spec.id = "abc";
  spec.shares.push_back({"/data", "/mnt", true, {}, 7, "vol0"});
  spec.network_plan.ports.push_back({"::1", 8080, 80, net::Transport::kUdp});
  net::IpAddress v6;
  v6.v4 = false;
  v6.bytes[15] = 1;
  spec.network_plan.dns.push_back({v6, 5353});
  net::EgressRule rule;
  rule.kind = net::EgressRule::Kind::kNetwork;
  rule.network.bytes = {10};
  rule.prefix_bits = 8;
  rule.port = 443;
  rule.protocol = net::RuleProtocol::kTcp;
  rule.text = "10.0.0.0/8:443/tcp";
  spec.network_plan.egress.active = true;
  spec.network_plan.egress.rules.push_back(rule);
  ASSERT_TRUE(saveSpec(dir_, spec));
  auto loaded = loadSpec(dir_);
  ASSERT_TRUE(loaded) << loaded.error().message();
  ASSERT_EQ(loaded->shares.size(), 1u);
  EXPECT_EQ(loaded->shares[0].tag, "vol0");
  EXPECT_EQ(loaded->shares[0].gid, 7u);
  EXPECT_TRUE(loaded->network_plan_recorded);
  const auto& network = loaded->network_plan;
  ASSERT_EQ(network.ports.size(), 1u);
  EXPECT_EQ(network.ports[0].host_ip, "::1");
  EXPECT_EQ(network.ports[0].transport, net::Transport::kUdp);
  ASSERT_EQ(network.dns.size(), 1u);
  EXPECT_FALSE(network.dns[0].address.v4);
  EXPECT_EQ(network.dns[0].address.bytes, v6.bytes);
  EXPECT_EQ(network.dns[0].port, 5353);
  EXPECT_TRUE(network.egress.active);
  ASSERT_EQ(network.egress.rules.size(), 1u);
  EXPECT_EQ(network.egress.rules[0].kind, net::EgressRule::Kind::kNetwork);
  EXPECT_EQ(network.egress.rules[0].network.bytes, rule.network.bytes);
  EXPECT_EQ(network.egress.rules[0].protocol, net::RuleProtocol::kTcp);
  EXPECT_EQ(network.egress.rules[0].text, rule.text);
}

TEST_F(VmRecordTest, AnOlderSpecWithoutTagsOrParsedNetworkStillLoads) {
  ASSERT_TRUE(writeFileAtomic(dir_ / "spec.json", R"({"id": "abc", "name": "n", "created_at": "",
    "machine": {"qemu": "", "accel": "tcg", "tsc_khz": 0, "cpus": 1, "memory_mib": 512, "kernel": "",
                "initramfs": "", "root_disk": "", "base_disk": "", "runtime_dir": ""},
    "workload": {"argv": ["/bin/true"], "env": [], "workdir": "/", "user": "", "hostname": "h"},
    "shares": [{"host": "/a", "guest": "/a", "readonly": false}, {"host": "/b", "guest": "/b", "readonly": true}],
    "network": {"mode": "user", "ports": ["127.0.0.1:8080:80/tcp"]},
    "remove_on_exit": false, "stop_timeout_seconds": 10})"));
  auto loaded = loadSpec(dir_);
  ASSERT_TRUE(loaded) << loaded.error().message();
  ASSERT_EQ(loaded->shares.size(), 2u);
  EXPECT_EQ(loaded->shares[0].tag, "vol0");
  EXPECT_EQ(loaded->shares[1].tag, "vol1");
  EXPECT_FALSE(loaded->network_plan_recorded);  // the runner parses loaded->ports then
  EXPECT_EQ(loaded->ports, std::vector<std::string>{"127.0.0.1:8080:80/tcp"});
}

TEST_F(VmRecordTest, NetworkSettingsAndPortsRoundTrip) {
  VmSpec spec;
  spec.id = "abc";
  spec.network = "none";
  spec.ports = {"127.0.0.1:8080:80/tcp"};
  spec.dns = {"127.0.0.1:5353"};
  spec.extra_hosts = {"db:10.0.0.5"};
  spec.egress_allow = {"*.example.com:443"};
  spec.egress_allow_cidr = {"10.0.0.0/8"};
  spec.egress_deny_all = true;
  spec.egress_log = true;
  ASSERT_TRUE(saveSpec(dir_, spec));
  auto loaded = loadSpec(dir_);
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(loaded->network, "none");
  EXPECT_EQ(loaded->ports, spec.ports);
  EXPECT_EQ(loaded->dns, spec.dns);
  EXPECT_EQ(loaded->extra_hosts, spec.extra_hosts);
  EXPECT_EQ(loaded->egress_allow, spec.egress_allow);
  EXPECT_EQ(loaded->egress_allow_cidr, spec.egress_allow_cidr);
  EXPECT_TRUE(loaded->egress_deny_all);
  EXPECT_TRUE(loaded->egress_log);

  VmState state;
  state.ports = {"127.0.0.1:41000:80/tcp"};
  state.net_counters = {{"frames_from_guest", 12}};
  ASSERT_TRUE(saveState(dir_, state));
  auto state_loaded = loadState(dir_);
  ASSERT_TRUE(state_loaded);
  EXPECT_EQ(state_loaded->ports, state.ports);
  EXPECT_EQ(state_loaded->net_counters.at("frames_from_guest"), 12u);
}

TEST_F(VmRecordTest, MalformedStateIsAnErrorNotACrash) {
  ASSERT_TRUE(writeFileAtomic(dir_ / "state.json", "{\"status\": 7"));
  auto loaded = loadState(dir_);
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().code(), ErrorCode::kProtocol);
  ASSERT_TRUE(writeFileAtomic(dir_ / "state.json", "{\"status\": \"flying\"}"));
  EXPECT_FALSE(loadState(dir_));
}

TEST_F(VmRecordTest, MissingFileNamesThePath) {
  auto loaded = loadSpec(dir_ / "nope");
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(loaded.error().message().find("nope/spec.json"), std::string::npos);
}

}  // namespace
}  // namespace microvm
