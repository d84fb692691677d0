// Egress policy end to end: real VMs behind the runner's egress filter, real
// TCP and DNS. Servers listen on the host's loopback (reached through the
// gateway) or, for other destinations, in network namespaces the test
// creates: the runner's own, and behind it one that holds a TEST-NET
// address the policy does not block by range and the cloud metadata
// addresses; dnsmasq answers names with them.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "harness.h"

namespace microvm::e2e {
namespace {

using std::chrono::seconds;
namespace fs = std::filesystem;

// Runs `script` with sh, stdout captured; the environment carries MICROVM
// (the CLI), MICROVM_HOME and ROOTFS.
Outcome shellOut(const std::string& script, const fs::path& script_file) {
  std::ofstream(script_file) << "set -eu\n" << script;
  std::string command = "MICROVM=" + (binDir() / "microvm").string() + " MICROVM_HOME=" + home().string() +
                        " ROOTFS=" + rootfs().string() + " timeout 240 sh " + script_file.string();
  Outcome outcome;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return outcome;
  char buffer[4096];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) outcome.out.append(buffer, got);
  int status = ::pclose(pipe);
  outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return outcome;
}

TEST(NetPolicyTest, DenyAllRefusesFastAndAnswersNxDomain) {
  HostServer server("must-not-leak");
  // The host server is up, but the gateway is the host's loopback: refused
  // at once (a RST), not timed out; names do not resolve.
  auto result = microvm(runArgs(
      {"--egress-deny-all"},
      {"/bin/sh", "-c",
       "start=$(date +%s); wget -q -O - " + server.url() +
           " 2>&1; echo wget=$?; echo fast=$(( $(date +%s) - start < 10 )); "
           "nslookup example.com 2>&1 | grep -o NXDOMAIN | head -1"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out.find("must-not-leak"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("Connection refused"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("wget=1"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("fast=1"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("NXDOMAIN"), std::string::npos) << result.out;
}

TEST(NetPolicyTest, IpRuleOpensOnlyItsPort) {
  HostServer allowed("allowed-token");
  HostServer other("other-token");
  auto result = microvm(runArgs(
      {"--egress-allow", "10.0.2.2:" + std::to_string(allowed.port()) + "/tcp"},
      {"/bin/sh", "-c", "wget -q -O - " + allowed.url() + "; wget -q -O - " + other.url() + " 2>&1; true"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("allowed-token"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("other-token"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("Connection refused"), std::string::npos) << result.out;
}

TEST(NetPolicyTest, DenyListDoesNotOpenTheHostsLoopback) {
  HostServer denied("denied-token");
  HostServer other("other-token");
  // A denylist allows by default, but not the host: the gateway's other
  // ports stay closed too (DenyListOpensOnlyUnblockedAddresses shows what
  // the default does open).
  auto result = microvm(runArgs(
      {"--egress-deny", "10.0.2.2:" + std::to_string(denied.port()) + "/tcp"},
      {"/bin/sh", "-c",
       "wget -q -O - " + denied.url() + " 2>&1; echo denied=$?; wget -q -O - " + other.url() +
           " 2>&1; echo other=$?"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out.find("denied-token"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("other-token"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("denied=1"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("other=1"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("Connection refused"), std::string::npos) << result.out;
}

// libslirp connects every address of fd00::/64, not only the gateway
// fd00::2, to the host's ::1: fd00::3 (the DNS address, whose own DNS is
// off) is the host too, and a rule on the gateway must cover it.
TEST(NetPolicyTest, GatewaysOtherAddressesFollowItsRules) {
  int denied_port = freePort();
  int open_port = freePort();
  std::vector<std::unique_ptr<Background>> servers;
  for (auto [port, token] : {std::pair{denied_port, "v6-denied-token"}, std::pair{open_port, "v6-open-token"}}) {
    fs::path www = home() / ("www6-" + std::to_string(port));
    fs::create_directories(www);
    std::ofstream(www / "index.html") << token << "\n";
    servers.push_back(std::make_unique<Background>(
        std::vector<std::string>{"/bin/busybox", "httpd", "-f", "-p", "[::1]:" + std::to_string(port), "-h",
                                 www.string()},
        home() / ("httpd6-" + std::to_string(port) + ".log")));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto result = microvm(runArgs(
      {"--egress-allow-cidr", "fd00::/64", "--egress-deny", "[fd00::2]:" + std::to_string(denied_port) + "/tcp"},
      {"/bin/sh", "-c",
       "wget -q -O - http://[fd00::3]:" + std::to_string(denied_port) + "/ 2>&1; echo denied=$?; " +
           "wget -q -O - http://[fd00::3]:" + std::to_string(open_port) + "/ 2>&1; echo open=$?"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  // The open port proves the path: the guest reaches the host's ::1 through fd00::3.
  EXPECT_NE(result.out.find("v6-open-token\nopen=0"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("v6-denied-token"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("denied=1"), std::string::npos) << result.out;
}

TEST(NetPolicyTest, InboundPortForwardWorksUnderDenyAll) {
  int host_port = freePort();
  auto started = microvm({"run", "-d", "--rootfs", rootfs().string(), "--egress-deny-all", "-p",
                          std::to_string(host_port) + ":8080", "--", "/bin/sh", "-c",
                          "mkdir -p /www && echo inbound-ok > /www/index.html && exec httpd -f -p 8080 -h /www"});
  ASSERT_EQ(started.exit_code, 0) << started.err;
  std::string id = started.out.substr(0, started.out.find('\n'));
  std::string body;
  auto deadline = std::chrono::steady_clock::now() + seconds(90);
  while (std::chrono::steady_clock::now() < deadline && body.find("inbound-ok") == std::string::npos) {
    Outcome fetched = shellOut("wget -q -T 5 -O - http://127.0.0.1:" + std::to_string(host_port) + "/ || true\n",
                               home() / "policy-fetch.sh");
    body = fetched.out;
    if (body.find("inbound-ok") == std::string::npos) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_NE(body.find("inbound-ok"), std::string::npos);
  // The filter counted the inbound flow and refused nothing (the runner
  // publishes counters about once a second).
  nlohmann::json counters = nlohmann::json::object();
  for (int i = 0; i < 20 && counters.value("egress_connections_inbound", 0) < 1; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto inspected = microvm({"inspect", id});
    ASSERT_EQ(inspected.exit_code, 0) << inspected.err;
    auto published = nlohmann::json::parse(inspected.out)[0]["network"]["counters"];
    if (published.is_object()) counters = published;
  }
  EXPECT_GE(counters.value("egress_connections_inbound", 0), 1) << counters.dump();
  EXPECT_EQ(counters.value("egress_connections_refused", -1), 0) << counters.dump();
  EXPECT_EQ(microvm({"rm", "-f", id}).exit_code, 0);
}

// Shell lines, run in a network namespace of the test's own (`unshare -n`)
// where the runner then runs, that build a second namespace behind it,
// joined by a veth pair: "the network". There 198.51.100.1 (a TEST-NET
// address, not in a blocked range), 169.254.169.254 and 168.63.129.16 (cloud
// metadata) each serve "reached-ADDRESS" over HTTP on ports 80 and 81. The
// runner's namespace holds 203.0.113.7 on its loopback, one of "the host's"
// own addresses, serving the same way, and dnsmasq on 127.0.0.1:`dns_port`
// answering NAME.test with `names` (NAME=ADDRESS). Everything started is
// killed when the script exits.
std::string twoNamespaces(const std::string& tag, int dns_port, const std::vector<std::string>& names) {
  fs::path www = home() / ("policy-www-" + tag);
  for (const char* address : {"198.51.100.1", "169.254.169.254", "168.63.129.16", "203.0.113.7"}) {
    fs::create_directories(www / address);
    std::ofstream(www / address / "index.html") << "reached-" << address << "\n";
  }
  std::string script =
      "ip link set lo up\n"
      "unshare -n sleep 600 </dev/null >/dev/null 2>&1 & net=$!\n"
      "pids=$net\n"
      "trap 'kill $pids 2>/dev/null' EXIT\n"
      "i=0; while [ \"$(readlink /proc/$net/ns/net)\" = \"$(readlink /proc/$$/ns/net)\" ]; do\n"
      "  i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done\n"
      "ip link add va type veth peer name vb netns $net\n"
      "ip addr add 10.99.0.1/24 dev va\n"
      "ip link set va up\n"
      "ip addr add 203.0.113.7/32 dev lo\n"
      "nsenter -t $net -n ip link set lo up\n"
      "nsenter -t $net -n ip addr add 10.99.0.2/24 dev vb\n"
      "nsenter -t $net -n ip link set vb up\n"
      "nsenter -t $net -n ip route add default via 10.99.0.1\n"
      "for a in 198.51.100.1 169.254.169.254 168.63.129.16; do\n"
      "  nsenter -t $net -n ip addr add $a/32 dev lo\n"
      "  ip route add $a/32 via 10.99.0.2\n"
      "  for p in 80 81; do\n"
      "    nsenter -t $net -n busybox httpd -f -p $a:$p -h " + www.string() + "/$a </dev/null >/dev/null 2>&1 &\n"
      "    pids=\"$pids $!\"\n"
      "  done\n"
      "done\n"
      "busybox httpd -f -p 203.0.113.7:80 -h " + www.string() + "/203.0.113.7 </dev/null >/dev/null 2>&1 &\n"
      "pids=\"$pids $!\"\n"
      "dnsmasq -k --user=root --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.1 --port=" +
      std::to_string(dns_port) + " --pid-file= --log-facility=" +
      (home() / ("policy-dnsmasq-" + tag + ".log")).string();
  for (const auto& name : names) {
    size_t equals = name.find('=');
    script += " --address=/" + name.substr(0, equals) + ".test/" + name.substr(equals + 1);
  }
  script += " </dev/null >/dev/null 2>&1 &\npids=\"$pids $!\"\nsleep 1\n";
  return script;
}

// Runs `guest_script` in a VM with `flags` inside the two namespaces.
Outcome runInNamespaces(const std::string& tag, const std::vector<std::string>& names, const std::string& flags,
                        const std::string& guest_script) {
  int dns_port = freePort();
  fs::path inner = home() / ("policy-netns-" + tag + ".sh");
  std::ofstream(inner) << twoNamespaces(tag, dns_port, names) << "$MICROVM run --rm --rootfs $ROOTFS " << flags
                       << " --dns 127.0.0.1:" << dns_port << " -- /bin/sh -c '" << guest_script << "'\n";
  return shellOut("unshare -n sh -eu " + inner.string() + "\n", home() / ("policy-netns-" + tag + "-outer.sh"));
}

TEST(NetPolicyTest, AllowedNameResolvesAndConnectsOthersDoNot) {
  std::string guest_script =
      "wget -q -O - http://allowed.test/; echo allowed=$?; "
      "nslookup denied.test 2>&1 | grep -o NXDOMAIN | head -1; "
      "wget -q -O - http://198.51.100.1:81/ 2>&1; echo port81=$?";
  Outcome result = runInNamespaces("names", {"allowed=198.51.100.1", "denied=198.51.100.1"},
                                   "--egress-allow allowed.test:80/tcp", guest_script);
  EXPECT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("reached-198.51.100.1\nallowed=0"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("NXDOMAIN"), std::string::npos) << result.out;
  // The learned address is open on the rule's port only.
  EXPECT_NE(result.out.find("Connection refused"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("port81=1"), std::string::npos) << result.out;
}

// Allowed names that resolve to the host's own address or to Azure's
// metadata server open nothing; the same name rule still opens a public
// address.
TEST(NetPolicyTest, NamesOfTheHostOrMetadataOpenNothing) {
  std::string guest_script =
      "wget -q -O - http://public.test/ 2>&1; echo public=$?; "
      "wget -q -O - http://self.test/ 2>&1; echo self=$?; "
      "wget -q -O - http://azure.test/ 2>&1; echo azure=$?";
  Outcome result = runInNamespaces("rebind", {"public=198.51.100.1", "self=203.0.113.7", "azure=168.63.129.16"},
                                   "--egress-allow '*.test:80/tcp'", guest_script);
  EXPECT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("reached-198.51.100.1\npublic=0"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("reached-203.0.113.7"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("reached-168.63.129.16"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("self=1"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("azure=1"), std::string::npos) << result.out;
}

// A denylist opens what it does not deny, except the blocked ranges: cloud
// metadata, the host's own addresses and its loopback stay closed.
TEST(NetPolicyTest, DenyListOpensOnlyUnblockedAddresses) {
  std::string guest_script =
      "for a in 198.51.100.1 169.254.169.254 168.63.129.16 203.0.113.7; do "
      "wget -q -O - http://$a/ 2>&1; echo $a=$?; done; "
      "wget -q -O - http://198.51.100.1:81/ 2>&1; echo denied=$?";
  Outcome result = runInNamespaces("denylist", {}, "--egress-deny 198.51.100.1:81/tcp", guest_script);
  EXPECT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("reached-198.51.100.1\n198.51.100.1=0"), std::string::npos) << result.out;
  for (const char* address : {"169.254.169.254", "168.63.129.16", "203.0.113.7"}) {
    EXPECT_EQ(result.out.find(std::string("reached-") + address), std::string::npos) << address << result.out;
    EXPECT_NE(result.out.find(std::string(address) + "=1"), std::string::npos) << address << result.out;
  }
  EXPECT_NE(result.out.find("denied=1"), std::string::npos) << result.out;
}

}  // namespace
}  // namespace microvm::e2e
