#include "net/network_config.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>

#include "base/unique_fd.h"

namespace microvm::net {
namespace {

TEST(PortMapping, ParsesDockerForms) {
  auto full = parsePortMapping("0.0.0.0:8080:80/udp");
  ASSERT_TRUE(full) << full.error().message();
  EXPECT_EQ(full->host_ip, "0.0.0.0");
  EXPECT_EQ(full->host_port, 8080);
  EXPECT_EQ(full->guest_port, 80);
  EXPECT_EQ(full->transport, Transport::kUdp);

  auto two = parsePortMapping("8080:80");
  ASSERT_TRUE(two);
  EXPECT_EQ(formatPortMapping(*two), "127.0.0.1:8080:80/tcp");
  EXPECT_EQ(describePortMapping(*two), "80/tcp -> 127.0.0.1:8080");

  auto guest_only = parsePortMapping("53/udp");
  ASSERT_TRUE(guest_only);
  EXPECT_EQ(guest_only->host_port, 0);
  EXPECT_EQ(formatPortMapping(*guest_only), "127.0.0.1:0:53/udp");

  auto pick = parsePortMapping("127.0.0.1::80");
  ASSERT_TRUE(pick);
  EXPECT_EQ(pick->host_port, 0);

  auto v6 = parsePortMapping("[::1]:8080:80");
  ASSERT_TRUE(v6) << v6.error().message();
  EXPECT_TRUE(v6->ipv6());
  EXPECT_EQ(v6->host_ip, "::1");
  EXPECT_EQ(formatPortMapping(*v6), "[::1]:8080:80/tcp");
  EXPECT_EQ(describePortMapping(*v6), "80/tcp -> [::1]:8080");
}

TEST(PortMapping, CanonicalFormRoundTrips) {
  for (const char* text : {"127.0.0.1:1:65535/tcp", "[::1]:0:53/udp", "10.1.2.3:8080:80/tcp"}) {
    auto parsed = parsePortMapping(text);
    ASSERT_TRUE(parsed) << text;
    EXPECT_EQ(formatPortMapping(*parsed), text);
  }
}

TEST(PortMapping, RejectsMalformed) {
  for (const char* text : {"", "0", "80/sctp", "65536", "a:80", "1:2:3:4", "host:80:80", "[::1]:80", "[::1:80:80",
                           "8080:0", "-1", "[1.2.3.4]:1:2", "99999:80"}) {
    auto parsed = parsePortMapping(text);
    EXPECT_FALSE(parsed) << text;
    if (!parsed) {
      EXPECT_EQ(parsed.error().code(), ErrorCode::kInvalidArgument);
    }
  }
}

TEST(PortMapping, BusyHostPortIsNamed) {
  UniqueFd busy(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // SAFETY: sockaddr_in is the AF_INET sockaddr.
  ASSERT_EQ(::bind(busy.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(busy.get(), 1), 0);
  socklen_t length = sizeof address;
  // SAFETY: as above.
  ASSERT_EQ(::getsockname(busy.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  uint16_t port = ntohs(address.sin_port);

  PortMapping mapping;
  mapping.host_port = port;
  mapping.guest_port = 80;
  auto checked = checkHostPortFree(mapping);
  ASSERT_FALSE(checked);
  EXPECT_NE(checked.error().message().find(std::to_string(port)), std::string::npos) << checked.error().message();

  auto free_port = pickFreeHostPort(mapping);
  ASSERT_TRUE(free_port);
  EXPECT_NE(*free_port, 0);
  mapping.host_port = *free_port;
  EXPECT_TRUE(checkHostPortFree(mapping));
}

TEST(HostEntry, ParsesNameAndAddress) {
  auto entry = parseHostEntry("db.local:10.0.0.5");
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->name, "db.local");
  EXPECT_EQ(entry->ip, "10.0.0.5");
  auto v6 = parseHostEntry("six:fd00::1");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->ip, "fd00::1");
  EXPECT_FALSE(parseHostEntry("noip"));
  EXPECT_FALSE(parseHostEntry(":1.2.3.4"));
  EXPECT_FALSE(parseHostEntry("bad name:1.2.3.4"));
  EXPECT_FALSE(parseHostEntry("name:999.1.1.1"));
}

TEST(Hostname, FollowsLabelRules) {
  EXPECT_TRUE(validHostname("web-1.example"));
  EXPECT_TRUE(validHostname("a"));
  EXPECT_FALSE(validHostname(""));
  EXPECT_FALSE(validHostname("-a"));
  EXPECT_FALSE(validHostname("a-"));
  EXPECT_FALSE(validHostname("a..b"));
  EXPECT_FALSE(validHostname("a b"));
  EXPECT_FALSE(validHostname(std::string(65, 'a')));
}

TEST(HostInterfaces, ListsTheLoopbackOnce) {
  auto addresses = hostInterfaceAddresses();
  auto loopback = *IpAddress::parse("127.0.0.1");
  EXPECT_EQ(std::count(addresses.begin(), addresses.end(), loopback), 1) << addresses.size() << " addresses";
}

}  // namespace
}  // namespace microvm::net
