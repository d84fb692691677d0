#include "net/pod_link.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include "net/network_config.h"
#include "net/tap_relay.h"

namespace microvm::net {
namespace {

// /proc/net/route as Linux prints it (little-endian hex words).
constexpr char kRoutes[] =
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t0100580A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "eth0\t0000580A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

TEST(PodLink, DefaultRouteGivesTheGatewayAndItsInterface) {
  EXPECT_EQ(defaultGateway4(kRoutes, "eth0"), "10.88.0.1");
  EXPECT_EQ(defaultGateway4(kRoutes, "eth1"), std::nullopt);
  EXPECT_EQ(defaultRouteInterface(kRoutes), "eth0");
  std::string no_default =
      "Iface\tDestination\tGateway\n"
      "eth0\t0000580A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
  EXPECT_EQ(defaultGateway4(no_default, "eth0"), std::nullopt);
  EXPECT_EQ(defaultRouteInterface(no_default), std::nullopt);
  EXPECT_EQ(defaultRouteInterface(""), std::nullopt);
  EXPECT_EQ(defaultRouteInterface("Iface\nshort line\n"), std::nullopt);
}

// The caller's own namespace is never taken over (it is where its own
// network, the host's for the OCI runtime, lives).
TEST(PodLink, InspectRefusesTheCallersOwnNamespace) {
  auto own = inspectNamespace("/proc/thread-self/ns/net");
  ASSERT_FALSE(own);
  EXPECT_NE(own.error().message().find("own network namespace"), std::string::npos) << own.error().message();
}

TEST(PodLink, TapModesNameTheirNamespace) {
  EXPECT_EQ(tapNamespace("tap"), "");
  EXPECT_EQ(tapNamespace("tap:/run/netns/pod"), "/run/netns/pod");
  EXPECT_EQ(tapNamespace("user"), std::nullopt);
  EXPECT_EQ(tapNamespace("tapx"), std::nullopt);
}

// The relay between QEMU's stream and a link that takes one frame per
// write (a SOCK_SEQPACKET pair stands in for the TAP).
TEST(TapRelay, CopiesFramesBothWays) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  int stream[2], link[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, stream), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, link), 0);
  UniqueFd qemu(stream[1]), wire(link[1]);
  auto relay = TapRelay::create(*loop, UniqueFd(stream[0]), UniqueFd(link[0]));
  ASSERT_TRUE(relay);
  std::string guest_frame(60, 'g');
  std::string framed;
  appendStreamFrame(framed, {reinterpret_cast<const uint8_t*>(guest_frame.data()), guest_frame.size()});
  ASSERT_EQ(::write(qemu.get(), framed.data(), framed.size()), static_cast<ssize_t>(framed.size()));
  std::string link_frame(1514, 'l');
  ASSERT_EQ(::write(wire.get(), link_frame.data(), link_frame.size()), static_cast<ssize_t>(link_frame.size()));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(loop->runOnce(std::chrono::milliseconds(10)));
  char buffer[4096];
  EXPECT_EQ(::read(wire.get(), buffer, sizeof buffer), 60);
  EXPECT_EQ(std::string(buffer, 60), guest_frame);
  StreamFrameReader reader;
  auto space = reader.prepare(sizeof buffer);
  ssize_t got = ::read(qemu.get(), space.data(), space.size());
  ASSERT_GT(got, 0);
  reader.commit(static_cast<size_t>(got));
  auto frame = reader.next();
  ASSERT_TRUE(frame);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(frame->data()), frame->size()), link_frame);
  auto counters = (*relay)->counters();
  EXPECT_EQ(counters["frames_from_guest"], 1u);
  EXPECT_EQ(counters["frames_to_guest"], 1u);
  EXPECT_EQ(counters["bytes_to_guest"], 1514u);
}

// QEMU not reading: frames for it beyond the bound are dropped and counted.
TEST(TapRelay, BoundsWhatWaitsForQemu) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  int stream[2], link[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, stream), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, link), 0);
  UniqueFd qemu(stream[1]), wire(link[1]);
  int small = 4096;
  ::setsockopt(stream[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  auto relay = TapRelay::create(*loop, UniqueFd(stream[0]), UniqueFd(link[0]), 64 * 1024);
  ASSERT_TRUE(relay);
  std::string frame(1500, 'x');
  for (int i = 0; i < 200; ++i) {
    if (::write(wire.get(), frame.data(), frame.size()) < 0) {
      ASSERT_TRUE(loop->runOnce(std::chrono::milliseconds(0)));
    }
  }
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(loop->runOnce(std::chrono::milliseconds(1)));
  auto counters = (*relay)->counters();
  EXPECT_GT(counters["frames_to_guest_dropped"], 0u);
}

}  // namespace
}  // namespace microvm::net
