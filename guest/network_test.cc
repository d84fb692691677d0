// Unit tests of network setup's address parsing.
#include "guest/network.h"

#include <gtest/gtest.h>

namespace microvm::guest {
namespace {

TEST(ParseInterfaceAddress, SplitsAddressAndPrefix) {
  auto v4 = parseInterfaceAddress("10.0.2.15/24");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->address, "10.0.2.15");
  EXPECT_EQ(v4->prefix_length, 24);
  EXPECT_FALSE(v4->ipv6);
  auto v6 = parseInterfaceAddress("fd00::15/64");
  ASSERT_TRUE(v6.ok());
  EXPECT_TRUE(v6->ipv6);
  EXPECT_EQ(v6->prefix_length, 64);
  for (const char* bad : {"", "10.0.2.15", "10.0.2.15/33", "10.0.2.15/", "fd00::1/129", "x/24", "10.0.2.15/2x"}) {
    EXPECT_FALSE(parseInterfaceAddress(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace microvm::guest
