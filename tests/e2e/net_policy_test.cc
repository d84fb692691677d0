// Egress policy end to end: real VMs behind the runner's egress filter, real
// TCP and DNS. Servers listen on the host's loopback (reached through the
// gateway) or, for DNS-named destinations, inside a network namespace the
// test creates, whose loopback also holds a TEST-NET address that the policy
// does not block by range; dnsmasq there answers names with it.
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

TEST(NetPolicyTest, DenyRuleAloneAllowsEverythingElse) {
  HostServer denied("denied-token");
  HostServer open("open-token");
  auto result = microvm(runArgs(
      {"--egress-deny", "10.0.2.2:" + std::to_string(denied.port()) + "/tcp"},
      {"/bin/sh", "-c", "wget -q -O - " + denied.url() + " 2>&1; wget -q -O - " + open.url() + "; true"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out.find("denied-token"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("Connection refused"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("open-token"), std::string::npos) << result.out;
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

// The whole VM runs in a network namespace made for the test: dnsmasq on
// its 127.0.0.1 answers allowed.test and denied.test with 198.51.100.1 (on
// the namespace's loopback), where busybox httpd listens.
TEST(NetPolicyTest, AllowedNameResolvesAndConnectsOthersDoNot) {
  fs::path www = home() / "policy-netns-www";
  fs::create_directories(www);
  std::ofstream(www / "index.html") << "named-destination\n";
  std::string dns_port = std::to_string(freePort());
  std::string guest_script =
      "wget -q -O - http://allowed.test/; echo allowed=$?; "
      "nslookup denied.test 2>&1 | grep -o NXDOMAIN | head -1; "
      "wget -q -O - http://198.51.100.1:81/ 2>&1; echo port81=$?";
  fs::path inner = home() / "policy-netns-inner.sh";
  std::ofstream(inner) << "ip link set lo up\n"
                          "ip addr add 198.51.100.1/32 dev lo\n"
                          "busybox httpd -f -p 198.51.100.1:80 -h " << www.string() << " & h=$!\n"
                       << "busybox httpd -f -p 198.51.100.1:81 -h " << www.string() << " & h2=$!\n"
                       << "dnsmasq -k --user=root --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.1"
                       << " --port=" << dns_port
                       << " --address=/allowed.test/198.51.100.1 --address=/denied.test/198.51.100.1 --pid-file="
                       << " --log-facility=" << (home() / "policy-dnsmasq.log").string() << " & d=$!\n"
                       << "trap 'kill $h $h2 $d' EXIT\n"
                          "sleep 1\n"
                          "$MICROVM run --rm --rootfs $ROOTFS --egress-allow allowed.test:80/tcp --dns 127.0.0.1:"
                       << dns_port << " -- /bin/sh -c '" << guest_script << "'\n";
  std::string script = "unshare -n sh -eu " + inner.string() + "\n";
  Outcome result = shellOut(script, home() / "policy-netns.sh");
  EXPECT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("named-destination\nallowed=0"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("NXDOMAIN"), std::string::npos) << result.out;
  // The learned address is open on the rule's port only.
  EXPECT_NE(result.out.find("Connection refused"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("port81=1"), std::string::npos) << result.out;
}

}  // namespace
}  // namespace microvm::e2e
