#include "runner/pod_network.h"

#include <gtest/gtest.h>

#include "net/dns_forwarder.h"

namespace microvm {
namespace {

TEST(PodNetwork, GuestTakesTheLinksAddressMacGatewayAndMtu) {
  VmSpec spec;
  spec.hostname = "web";
  spec.extra_hosts = {"db:10.88.0.9", "host:host-gateway"};
  net::PodInterface link{"eth0", 2, "aa:bb:cc:00:11:22", 1450, "10.88.0.2", 24, "10.88.0.1"};
  agent::WorkloadSpec workload;
  workload.net_address6 = "fd00::15/64";  // what the user network would have given
  describePodNetwork(spec, link, workload);
  EXPECT_EQ(workload.net_mac, "aa:bb:cc:00:11:22");
  EXPECT_EQ(workload.net_address4, "10.88.0.2/24");
  EXPECT_EQ(workload.net_gateway4, "10.88.0.1");
  EXPECT_EQ(workload.net_mtu, 1450u);
  EXPECT_TRUE(workload.net_address6.empty());
  EXPECT_NE(workload.etc_hosts.find("10.88.0.2\tweb\n"), std::string::npos) << workload.etc_hosts;
  EXPECT_NE(workload.etc_hosts.find("10.88.0.9\tdb\n"), std::string::npos) << workload.etc_hosts;
  EXPECT_NE(workload.etc_hosts.find("10.88.0.1\thost\n"), std::string::npos) << workload.etc_hosts;
  // Without --dns the image's (or the engine's) resolv.conf stays.
  EXPECT_TRUE(workload.etc_resolv_conf.empty());
  spec.network_plan.dns.push_back(*net::parseDnsUpstream("10.88.0.1"));
  describePodNetwork(spec, link, workload);
  EXPECT_EQ(workload.etc_resolv_conf, "nameserver 10.88.0.1\n");
}

}  // namespace
}  // namespace microvm
