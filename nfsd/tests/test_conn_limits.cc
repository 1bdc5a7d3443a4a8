// SPDX-License-Identifier: BSD-2-Clause
// The per-address connection count (conn_limits.h): the limit holds per
// address, IPv4-mapped IPv6 counts as IPv4, and many addresses coming and
// going in any order never lose or confuse a count (the table deletes by
// backward shift: a wrong shift shows up as a count found under the wrong
// key or not found at all).  The memory budget never passes its limit, no
// waiter misses its wake-up, and a connection whose reservation does not
// fit is refused and counted.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
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

// ---- the memory budget (memory_budget.h) and admission (conn_gate) ----

TEST(MemoryBudget, BeyondKeepCountsWholePagesPastTheKeptPart) {
  EXPECT_EQ(beyond_keep(0), 0u);
  EXPECT_EQ(beyond_keep(SLOT_KEEP), 0u);
  EXPECT_EQ(beyond_keep(SLOT_KEEP + 1), 4096u);
  EXPECT_EQ(beyond_keep(SLOT_KEEP + 4096), 4096u);
  EXPECT_EQ(beyond_keep((1u << 20) + 4096), (1u << 20) + 4096 - SLOT_KEEP);
}

TEST(MemoryBudget, ConfigureRefusesABudgetThatCannotServeOneLargeRequest) {
  memory_budget m;
  std::string err;
  size_t reserve = 16 * 2 * SLOT_KEEP, record = (1u << 20) + 4096;
  EXPECT_FALSE(m.configure(reserve, reserve, record, 320, &err));
  EXPECT_NE(err.find("--max-memory"), std::string::npos) << err;
  EXPECT_NE(err.find("give at least 3 MiB"), std::string::npos) << err;
  EXPECT_TRUE(m.configure(reserve + beyond_keep(record), reserve, record, 320, &err));
  EXPECT_TRUE(m.configure(0, reserve, record, 320, &err));  // the default
  EXPECT_EQ(m.limit(), default_max_memory());
  EXPECT_LE(default_max_memory(), uint64_t(1) << 30);
}

TEST(MemoryBudget, ChargesNeverPassTheLimitAndAllComeBack) {
  memory_budget m;
  std::string err;
  ASSERT_TRUE(m.configure(8 << 20, 0, 0, 0, &err));
  std::vector<std::thread> threads;
  std::atomic<uint64_t> granted{0}, denied{0};
  for (int t = 0; t < 4; t++)
    threads.emplace_back([&, t] {
      std::mt19937 rng{uint32_t(t)};
      std::vector<size_t> held;
      for (int i = 0; i < 20000; i++) {
        if (!held.empty() && rng() % 2) {
          m.uncharge(held.back());
          held.pop_back();
          continue;
        }
        size_t n = 4096 * (1 + rng() % 512);
        if (m.charge(n)) {
          held.push_back(n);
          granted++;
        } else {
          denied++;
        }
      }
      for (size_t n : held) m.uncharge(n);
    });
  for (auto &t : threads) t.join();
  EXPECT_LE(m.peak(), 8u << 20);
  EXPECT_EQ(m.used(), 0u);
  EXPECT_GT(granted.load(), 0u);
  EXPECT_GT(denied.load(), 0u);  // the limit was reached, and held
}

// A waiter and a releaser racing, many times: the waiter announces itself
// before its last try and the release looks for waiters after it gives
// back, so every wait ends.  A lost wake-up hangs this test (the ctest
// timeout ends it); nothing here waits for time.
TEST(MemoryBudget, NoWakeUpIsLost) {
  memory_budget m;
  std::string err;
  ASSERT_TRUE(m.configure(1 << 20, 0, 0, 0, &err));
  std::mutex lock;
  std::condition_variable cv;
  uint64_t wakes = 0;
  m.set_wake([&] {
    std::lock_guard<std::mutex> g(lock);
    wakes++;
    cv.notify_all();
  });
  constexpr int ROUNDS = 20000;
  std::atomic<int> round{0};
  std::thread holder([&] {
    for (int i = 0; i < ROUNDS; i++) {
      while (!m.charge(1 << 20)) std::this_thread::yield();  // the whole budget
      round.store(i + 1);
      std::this_thread::yield();
      m.uncharge(1 << 20);
    }
  });
  uint64_t waited = 0;
  for (int i = 0; i < ROUNDS; i++) {
    while (round.load() <= i) std::this_thread::yield();
    bool waiting = false;
    for (;;) {
      uint64_t seen;
      {
        std::lock_guard<std::mutex> g(lock);
        seen = wakes;
      }
      bool was_waiting = waiting;
      if (m.wait_for(4096, &waiting)) break;
      if (!was_waiting) waited++;  // a wait begins
      std::unique_lock<std::mutex> g(lock);
      cv.wait(g, [&] { return wakes != seen; });
    }
    EXPECT_FALSE(waiting);
    m.uncharge(4096);
  }
  holder.join();
  EXPECT_EQ(m.used(), 0u);
  EXPECT_FALSE(m.pressed());
  EXPECT_EQ(m.waits(), waited);  // one per wait, however many wake-ups it took
}

TEST(MemoryBudget, EachShareKeepsItsGuaranteedPart) {
  memory_budget m;
  std::string err;
  // 20 MiB, tables of 2 connections: large requests are guaranteed a
  // quarter (5 MiB), reservations what the tables need (4 MiB; at most
  // half).
  ASSERT_TRUE(m.configure(20 << 20, 2 << 20, (1 << 20) + 4096, 2, &err));
  int big = 0;
  while (m.charge(1 << 20)) big++;
  EXPECT_EQ(big, 16);               // all but the reservations' part
  EXPECT_TRUE(m.reserve(2 << 20));  // the tables' clients still get in...
  EXPECT_TRUE(m.reserve(2 << 20));
  EXPECT_FALSE(m.reserve(2 << 20));  // ...as far as their part goes
  EXPECT_EQ(m.used(), 20u << 20);
  for (int i = 0; i < big; i++) m.uncharge(1 << 20);
  // Now connections take what is free, but not the large requests' part.
  int conns = 2;
  while (m.reserve(2 << 20)) conns++;
  EXPECT_EQ(conns, 7);  // 14 MiB: 16 would leave large requests less than 5
  int more = 0;
  while (m.charge(1 << 20)) more++;
  EXPECT_EQ(more, 6);  // their guaranteed part, and the last free MiB
  EXPECT_EQ(m.used(), 20u << 20);
  EXPECT_LE(m.peak(), 20u << 20);
}

TEST(ConnGate, AConnectionWhoseReservationDoesNotFitIsRefusedAndCounted) {
  memory_budget m;
  conn_counters counters;
  std::string err;
  // 10 MiB: three 2 MiB reservations fit beside the large requests' part.
  ASSERT_TRUE(m.configure(10 << 20, 2 << 20, 0, 64, &err));
  conn_gate gate(64, 2, m, 2 << 20, counters);
  auto a = v4(0x7f000002), b = v4(0x7f000003), c = v4(0x7f000004);
  const auto in = admission::admitted;
  EXPECT_EQ(gate.admit(a), in);
  EXPECT_EQ(gate.admit(a), in);
  EXPECT_EQ(gate.admit(a), admission::at_share);  // its address's share
  EXPECT_EQ(gate.count(a), 2u);                   // nothing counted
  gate.refuse_at_share(a);                        // the transport found none of a's idle
  EXPECT_EQ(counters.refused_peer.load(), 1u);
  EXPECT_EQ(gate.admit(b), in);
  EXPECT_EQ(gate.admit(c), admission::no_memory);  // the fourth reservation does not fit
  EXPECT_EQ(counters.refused_memory.load(), 1u);
  EXPECT_EQ(m.refused(), 1u);
  EXPECT_EQ(gate.count(c), 0u);  // a refusal counts nothing
  gate.release(a);
  EXPECT_EQ(gate.admit(c), in);
  EXPECT_EQ(m.used(), 6u << 20);
  gate.release(a);
  gate.release(b);
  gate.release(c);
  EXPECT_EQ(m.used(), 0u);
  EXPECT_NE(counters.describe().find("+ 1 memory"), std::string::npos) << counters.describe();
}

TEST(ConnGate, AConnectionPastItsShareReplacesOneOfItsAddresssOwn) {
  memory_budget m;
  conn_counters counters;
  std::string err;
  ASSERT_TRUE(m.configure(10 << 20, 2 << 20, 0, 64, &err));
  conn_gate gate(64, 2, m, 1 << 20, counters);
  auto a = v4(0x7f000002);
  ASSERT_EQ(gate.admit(a), admission::admitted);
  ASSERT_EQ(gate.admit(a), admission::admitted);
  ASSERT_EQ(gate.admit(a), admission::at_share);
  // One of a's connections was closed to make room; its release comes
  // later: the share is not checked, the memory is.
  EXPECT_TRUE(gate.admit_replacing(a));
  EXPECT_EQ(gate.count(a), 3u);
  gate.release(a);  // the evicted one's release
  EXPECT_EQ(gate.count(a), 2u);
  EXPECT_EQ(m.used(), 2u << 20);
  while (m.reserve(1 << 20)) {
  }
  EXPECT_FALSE(gate.admit_replacing(a));  // no memory: refused, nothing counted
  EXPECT_EQ(gate.count(a), 2u);
  EXPECT_EQ(counters.refused_memory.load(), 1u);
  EXPECT_EQ(counters.refused_peer.load(), 0u);
}

TEST(EvictionPick, AFullTableTakesTheBusiestAddressesLongestIdle) {
  memory_budget m;
  conn_counters counters;
  conn_gate gate(64, 0, m, 0, counters);
  auto a = v4(0x7f000002), b = v4(0x7f000003);
  for (int i = 0; i < 3; i++) ASSERT_EQ(gate.admit(a), admission::admitted);
  ASSERT_EQ(gate.admit(b), admission::admitted);
  eviction_pick pick(gate, nullptr);
  EXPECT_FALSE(pick.found());
  EXPECT_TRUE(pick.offer(b, 1000));  // the only one so far
  EXPECT_TRUE(pick.offer(a, 5));     // a holds more, however recent
  EXPECT_FALSE(pick.offer(b, 9999));
  EXPECT_FALSE(pick.offer(a, 5));  // not longer idle than the pick
  EXPECT_TRUE(pick.offer(a, 6));
  EXPECT_TRUE(pick.found());
}

TEST(EvictionPick, WithinAShareOnlyThatAddressesConnectionsCount) {
  memory_budget m;
  conn_counters counters;
  conn_gate gate(64, 0, m, 0, counters);
  auto a = v4(0x7f000002), b = v4(0x7f000003);
  for (int i = 0; i < 3; i++) ASSERT_EQ(gate.admit(b), admission::admitted);
  ASSERT_EQ(gate.admit(a), admission::admitted);
  eviction_pick pick(gate, &a);
  EXPECT_FALSE(pick.offer(b, 1000));
  EXPECT_FALSE(pick.found());
  EXPECT_TRUE(pick.offer(v6("::ffff:127.0.0.2"), 3));  // a, as mapped IPv6
  EXPECT_FALSE(pick.offer(a, 2));
  EXPECT_TRUE(pick.offer(a, 4));
}

}  // namespace
