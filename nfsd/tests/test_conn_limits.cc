// The per-address connection count (conn_limits.h): the limit holds per
// address, IPv4-mapped IPv6 counts as IPv4, and many addresses coming and
// going in any order never lose or confuse a count (the table deletes by
// backward shift: a wrong shift shows up as a count found under the wrong
// key or not found at all).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "conn_limits.h"

using namespace kc::nfs;

namespace {

sockaddr_storage v4(uint32_t host_order) {
  sockaddr_storage s{};
  auto *a = reinterpret_cast<sockaddr_in *>(&s);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(host_order);
  a->sin_port = htons(uint16_t(host_order * 7));  // ports never matter
  return s;
}

sockaddr_storage v6(const char *text) {
  sockaddr_storage s{};
  auto *a = reinterpret_cast<sockaddr_in6 *>(&s);
  a->sin6_family = AF_INET6;
  EXPECT_EQ(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
  return s;
}

TEST(PeerTable, TheLimitHoldsPerAddress) {
  peer_table t(64, 3);
  auto a = v4(0x7f000002), b = v4(0x7f000003);
  for (int i = 0; i < 3; i++) EXPECT_TRUE(t.admit(a));
  EXPECT_FALSE(t.admit(a));  // the fourth from a
  EXPECT_TRUE(t.admit(b));   // b has its own share
  EXPECT_EQ(t.count(a), 3u);
  t.release(a);
  EXPECT_TRUE(t.admit(a));  // room again
  EXPECT_EQ(t.count(b), 1u);
}

TEST(PeerTable, MappedIpv6CountsAsIpv4AndZeroMeansNoLimit) {
  peer_table t(64, 1);
  EXPECT_TRUE(t.admit(v4(0x0a000001)));
  EXPECT_FALSE(t.admit(v6("::ffff:10.0.0.1")));
  EXPECT_TRUE(t.admit(v6("2001:db8::1")));
  EXPECT_FALSE(t.admit(v6("2001:db8::1")));
  peer_table unlimited(8, 0);
  for (int i = 0; i < 1000; i++) EXPECT_TRUE(unlimited.admit(v4(1)));
  EXPECT_EQ(unlimited.count(v4(1)), 1000u);
}

TEST(PeerTable, ManyAddressesComingAndGoingKeepTheirCounts) {
  const uint32_t kAddrs = 200;
  peer_table t(kAddrs * 4, 0);
  std::vector<uint32_t> expect(kAddrs, 0);
  std::mt19937 rng(12345);
  for (int round = 0; round < 200000; round++) {
    uint32_t i = rng() % kAddrs;
    // Addresses close together collide in the table: the shifts matter.
    auto a = v4(0x0a000000 + i * 3);
    if (expect[i] > 0 && rng() % 2) {
      t.release(a);
      expect[i]--;
    } else if (expect[i] < 4) {
      ASSERT_TRUE(t.admit(a));
      expect[i]++;
    }
    if (round % 9973 == 0) {
      for (uint32_t j = 0; j < kAddrs; j++)
        ASSERT_EQ(t.count(v4(0x0a000000 + j * 3)), expect[j]) << "address " << j;
    }
  }
  for (uint32_t j = 0; j < kAddrs; j++) EXPECT_EQ(t.count(v4(0x0a000000 + j * 3)), expect[j]);
}

}  // namespace
