// `--network tap:NETNS` end to end: a VM that owns the address of a network
// namespace's veth, as a pod's VM does under Kata. The test makes two
// namespaces joined by a veth pair ("pod": eth0 10.88.0.2/24, default route
// via 10.88.0.1; "peer": 10.88.0.1/24), runs one VM attached to "pod", and
// moves real TCP between the guest and the peer both ways. No traffic leaves
// the two namespaces; both are deleted whatever happens.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness.h"

namespace microvm::e2e {
namespace {

using std::chrono::seconds;
namespace fs = std::filesystem;

// Runs `command` with sh and returns its stdout (bounded) and exit status.
Outcome capture(const std::string& command) {
  Outcome outcome;
  FILE* pipe = ::popen(("timeout 60 sh -c '" + command + "'").c_str(), "r");
  if (pipe == nullptr) return outcome;
  char buffer[4096];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0 && outcome.out.size() < (1 << 20)) {
    outcome.out.append(buffer, got);
  }
  int status = ::pclose(pipe);
  outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return outcome;
}

class TapTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // TAP mode needs root (a TAP device, tc) and iproute2 for the namespaces.
    if (::geteuid() != 0 || shell("command -v ip >/dev/null") != 0) return;
    std::string suffix = std::to_string(::getpid());
    pod_ = "mvtap-pod-" + suffix;
    peer_ = "mvtap-peer-" + suffix;
    pod2_ = "mvtap-pod2-" + suffix;
    removeNamespaces();
    fs::path www = home() / "tap-www";
    fs::create_directories(www);
    std::ofstream(www / "index.html") << "peer-says-hello\n";
    // The peer's end keeps a name of its own; the pod's is eth0, as CNI names it.
    int made = shell("set -e; ip netns add " + pod_ + "; ip netns add " + peer_ + "; ip -n " + pod_ +
                     " link set lo up; ip -n " + peer_ +
                     " link set lo up"
                     "; ip -n " +
                     pod_ + " link add eth0 type veth peer name peer0 netns " + peer_ + "; ip -n " + pod_ +
                     " addr add 10.88.0.2/24 dev eth0; ip -n " + pod_ +
                     " link set eth0 up"
                     "; ip -n " +
                     pod_ +
                     " route add default via 10.88.0.1"
                     "; ip -n " +
                     peer_ + " addr add 10.88.0.1/24 dev peer0; ip -n " + peer_ +
                     " link set peer0 up"
                     // A second pod on the same peer, for VMs booted both ways.
                     "; ip netns add " +
                     pod2_ + "; ip -n " + pod2_ +
                     " link set lo up"
                     "; ip -n " +
                     pod2_ + " link add eth0 type veth peer name peer1 netns " + peer_ + "; ip -n " + pod2_ +
                     " addr add 10.89.0.2/24 dev eth0; ip -n " + pod2_ +
                     " link set eth0 up"
                     "; ip -n " +
                     pod2_ +
                     " route add default via 10.89.0.1"
                     "; ip -n " +
                     peer_ + " addr add 10.89.0.1/24 dev peer1; ip -n " + peer_ + " link set peer1 up");
    ASSERT_EQ(made, 0) << "making the test's namespaces";
    mac_ = capture("ip netns exec " + pod_ + " cat /sys/class/net/eth0/address").out;
    if (!mac_.empty() && mac_.back() == '\n') mac_.pop_back();
    // The peer's server, for the guest to reach.
    ASSERT_EQ(shell("ip netns exec " + peer_ + " busybox httpd -p 10.88.0.1:8081 -h " + www.string()), 0);
    // The guest serves a token on 8080 to each connection, one at a time.
    vm_ = runDetached({"--network", "tap:/run/netns/" + pod_},
                      {"/bin/sh", "-c", "n=0; while true; do n=$((n+1)); echo guest-token-$n | nc -l -p 8080; done"});
  }

  static void TearDownTestSuite() {
    if (pod_.empty()) return;
    if (!vm_.empty()) (void)microvm({"rm", "-f", vm_});
    removeNamespaces();
  }

  void SetUp() override {
    if (pod_.empty()) GTEST_SKIP() << "needs root and iproute2";
  }

  static void removeNamespaces() {
    // The peer's httpd lives in its namespace: kill it before the namespace goes.
    (void)shell("for p in $(ip netns pids " + peer_ + " 2>/dev/null); do kill $p; done; ip netns del " + pod_ +
                " 2>/dev/null; ip netns del " + pod2_ + " 2>/dev/null; ip netns del " + peer_ + " 2>/dev/null; true");
  }

  static std::string pod_, pod2_, peer_, vm_, mac_;
};
std::string TapTest::pod_, TapTest::pod2_, TapTest::peer_, TapTest::vm_, TapTest::mac_;

TEST_F(TapTest, GuestOwnsThePodsAddressAndMac) {
  ASSERT_FALSE(vm_.empty());
  Outcome addr;
  ASSERT_TRUE(eventually(
      [&] {
        addr = microvm({"exec", vm_, "ip", "addr", "show", "eth0"});
        return addr.exit_code == 0 && addr.out.find("10.88.0.2/24") != std::string::npos;
      },
      seconds(90)))
      << addr.out << addr.err;
  EXPECT_NE(addr.out.find("link/ether " + mac_), std::string::npos) << "veth MAC " << mac_ << "\n" << addr.out;
  // The MTU is the veth's, not the user network's 65520.
  EXPECT_NE(addr.out.find("mtu 1500"), std::string::npos) << addr.out;
  // The default route is the pod's (the kernel's table, in hex: 0100580A = 10.88.0.1).
  Outcome route = microvm({"exec", vm_, "cat", "/proc/net/route"});
  EXPECT_NE(route.out.find("eth0\t00000000\t0100580A"), std::string::npos) << route.out;
  nlohmann::json info = inspect(vm_);
  EXPECT_EQ(info["network"]["mode"], "tap:/run/netns/" + pod_) << info.dump(2);
}

TEST_F(TapTest, PeerReachesTheGuestAtThePodAddress) {
  ASSERT_FALSE(vm_.empty());
  // The guest's nc serves one connection at a time: each answer carries its
  // number, so three in a row show three connections, checked by content.
  int served = 0;
  std::string last;
  for (int attempt = 0; attempt < 60 && served < 3; ++attempt) {
    Outcome got = capture("ip netns exec " + peer_ + " busybox nc -w 5 10.88.0.2 8080 </dev/null");
    if (got.out.find("guest-token-") != std::string::npos) {
      ++served;
      last = got.out;
    } else {
      ::sleep(1);  // the guest's server is not up yet, or nc is between connections
    }
  }
  EXPECT_EQ(served, 3) << last;
  EXPECT_EQ(last.rfind("guest-token-", 0), 0u) << last;
  // Nothing in the pod's namespace answered for the guest: its stack never
  // saw the frames (tc moved them to the TAP), so the peer's ARP entry is the veth's MAC.
  Outcome neighbour = capture("ip -n " + peer_ + " neigh show 10.88.0.2");
  EXPECT_NE(neighbour.out.find(mac_), std::string::npos) << neighbour.out;
}

TEST_F(TapTest, GuestReachesThePeer) {
  ASSERT_FALSE(vm_.empty());
  for (int round = 0; round < 3; ++round) {
    Outcome got;
    ASSERT_TRUE(eventually(
        [&] {
          got = microvm({"exec", vm_, "timeout", "10", "wget", "-q", "-O", "-", "http://10.88.0.1:8081/"});
          return got.out == "peer-says-hello\n";
        },
        seconds(60)))
        << got.out << got.err;
  }
  // The relay's counters reach state.json about once a second.
  nlohmann::json info;
  EXPECT_TRUE(eventually(
      [&] {
        info = inspect(vm_);
        auto counters = info["network"]["counters"];
        return counters.value("frames_from_guest", 0) > 0 && counters.value("frames_to_guest", 0) > 0;
      },
      seconds(10)))
      << info.dump(2);
}

// The link is configured from the spec init receives after boot: a cold
// boot and a VM restored from the boot template (the first run on this data
// dir saved one) both come up with the pod's address and reach the peer.
TEST_F(TapTest, ColdBootAndTemplateRestoreBothConfigureTheLink) {
  std::vector<std::string> boots;
  for (bool cold : {true, false}) {
    std::vector<std::string> flags = {"--network", "tap:/run/netns/" + pod2_};
    if (cold) flags.push_back("--no-template");
    std::string id = runDetached(flags, {"/bin/sh", "-c", "sleep 600"});
    ASSERT_FALSE(id.empty());
    Outcome ping;
    bool reached = eventually(
        [&] {
          ping = microvm({"exec", id, "sh", "-c", "ip addr show eth0; ping -c 1 -W 5 10.89.0.1"});
          return ping.out.find("1 packets received") != std::string::npos;
        },
        seconds(90));
    nlohmann::json info = inspect(id);
    boots.push_back(info["boot"].value("path", ""));
    (void)microvm({"rm", "-f", id});
    ASSERT_TRUE(reached) << ping.out << ping.err;
    EXPECT_NE(ping.out.find("inet 10.89.0.2/24"), std::string::npos) << ping.out;
  }
  EXPECT_EQ(boots[0], "cold");
  // The template exists once any VM of this suite booted cold on this data dir.
  EXPECT_EQ(boots[1], "template") << inspect(vm_).dump(2);
}

}  // namespace
}  // namespace microvm::e2e
