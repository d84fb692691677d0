#include "runner/guest_network.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/unique_fd.h"
#include "net/network_config.h"

namespace microvm {
namespace {

// A TCP port on 127.0.0.1 that this test holds bound, so that it is busy.
struct BusyPort {
  UniqueFd fd;
  uint16_t port = 0;
};

BusyPort bindLoopbackPort() {
  BusyPort busy;
  busy.fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(busy.fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(::listen(busy.fd.get(), 1), 0);
  socklen_t length = sizeof address;
  EXPECT_EQ(::getsockname(busy.fd.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  busy.port = ntohs(address.sin_port);
  return busy;
}

struct Stack {
  std::optional<EventLoop> loop;
  UniqueFd qemu_end;
  std::vector<std::string> log;

  Result<std::unique_ptr<GuestNetwork>> create(const net::NetworkPlan& plan) {
    auto created = EventLoop::create();
    if (!created) return std::move(created).error();
    loop.emplace(std::move(*created));
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    qemu_end.reset(fds[1]);
    return GuestNetwork::create(*loop, UniqueFd(fds[0]), plan, [this](const std::string& line) { log.push_back(line); });
  }
};

TEST(GuestNetworkTest, OpensThePlannedForwardsAndPicksFreeHostPorts) {
  net::NetworkPlan plan;
  plan.ports.push_back({"127.0.0.1", 0, 80, net::Transport::kTcp});
  Stack stack;
  auto network = stack.create(plan);
  ASSERT_TRUE(network) << network.error().message();
  auto ports = (*network)->ports();
  ASSERT_EQ(ports.size(), 1u);
  EXPECT_EQ(ports[0].rfind("127.0.0.1:", 0), 0u) << ports[0];
  EXPECT_NE(ports[0], "127.0.0.1:0:80/tcp");  // a real port was picked
  EXPECT_EQ(ports[0].substr(ports[0].size() - 7), ":80/tcp");

  // At runtime: add a UDP forward, then remove it by its guest port.
  auto added = (*network)->addPort("127.0.0.1:0:53/udp");
  ASSERT_TRUE(added) << added.error().message();
  EXPECT_EQ(added->transport, net::Transport::kUdp);
  EXPECT_NE(added->host_port, 0);
  EXPECT_EQ((*network)->ports().size(), 2u);
  ASSERT_TRUE((*network)->removePort("53/udp"));
  EXPECT_EQ((*network)->ports(), ports);
}

TEST(GuestNetworkTest, ABusyHostPortIsAnErrorThatNamesIt) {
  BusyPort busy = bindLoopbackPort();
  net::NetworkPlan plan;
  plan.ports.push_back({"127.0.0.1", busy.port, 80, net::Transport::kTcp});
  Stack stack;
  auto network = stack.create(plan);
  ASSERT_FALSE(network);
  EXPECT_NE(network.error().message().find(std::to_string(busy.port)), std::string::npos)
      << network.error().message();
}

TEST(GuestNetworkTest, TheGuestsHalfForAUserNetwork) {
  VmSpec spec;
  spec.hostname = "box";
  spec.extra_hosts = {"db:192.0.2.7", "host:host-gateway"};
  agent::WorkloadSpec workload;
  describeGuestNetwork(spec, workload);
  EXPECT_EQ(workload.net_address4, std::string(net::kGuestAddress4) + "/24");
  EXPECT_EQ(workload.net_gateway4, net::kGateway4);
  EXPECT_FALSE(workload.net_address6.empty());
  EXPECT_EQ(workload.etc_resolv_conf, std::string("nameserver ") + net::kNameserver4 + "\n");
  EXPECT_NE(workload.etc_hosts.find(std::string(net::kGuestAddress4) + "\tbox\n"), std::string::npos);
  EXPECT_NE(workload.etc_hosts.find("192.0.2.7\tdb\n"), std::string::npos);
  EXPECT_NE(workload.etc_hosts.find(std::string(net::kGateway4) + "\thost\n"), std::string::npos);
}

TEST(GuestNetworkTest, NoNetworkLeavesTheGuestOnlyLoopback) {
  VmSpec spec;
  spec.network = "none";
  spec.hostname = "box";
  agent::WorkloadSpec workload;
  describeGuestNetwork(spec, workload);
  EXPECT_TRUE(workload.net_address4.empty());
  EXPECT_TRUE(workload.net_address6.empty());
  EXPECT_TRUE(workload.etc_resolv_conf.empty());
  EXPECT_NE(workload.etc_hosts.find("127.0.1.1\tbox\n"), std::string::npos);
  EXPECT_NE(workload.etc_hosts.find("127.0.0.1\tlocalhost\n"), std::string::npos);
}

}  // namespace
}  // namespace microvm
