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

// As Linux 6.1 prints /proc/net/tcp: a header, then one row per socket with
// tx_queue:rx_queue in hex as the fifth field.
TEST(TcpUnsentBytes, AddsTheSendQueuesOfEveryRowAndSkipsTheHeader) {
  const char* table =
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
      "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0\n"
      "   1: 0F02000A:BB60 0202000A:B7E6 04 00110000:00000000 01:00000014 00000000     0        0 0 1 0 20 4\n"
      "   2: 0F02000A:BB62 0202000A:B7E6 01 0000000A:00000010 00:00000000 00000000     0        0 1003 1 0 20 10\n";
  EXPECT_EQ(microvm::guest::tcpUnsentBytes(table), 0x110000u + 0xAu);
}

TEST(TcpUnsentBytes, NoSocketsOrRowsItCannotReadCountNothing) {
  EXPECT_EQ(microvm::guest::tcpUnsentBytes(""), 0u);
  EXPECT_EQ(microvm::guest::tcpUnsentBytes("  sl  local_address rem_address   st tx_queue rx_queue\n"), 0u);
  EXPECT_EQ(microvm::guest::tcpUnsentBytes("header\n   0: short row\n   1: a b c zz:00\n"), 0u);
}
