// SPDX-License-Identifier: BSD-2-Clause
// Cross-CPU batches (internal.h, xfer): a dispatcher's deferrals to another
// CPU's dispatcher are staged in batches and pushed as one inbox node.
// What must not change: the order of one producer's deferrals, exactly-once
// delivery (no staged continuation left behind, also while the producer
// stays busy), and cancel/revive of a continuation that sits in a batch.
#include <atomic>
#include <vector>

#include "fixture.h"
#include "internal.h"

using namespace kctest;

namespace {

// Consumers bound to CPU 1; each appends its index to `seen` when called
// (only CPU 1's dispatcher writes it).
struct ordered {
  static constexpr int n = 1000;  // many batches, more than a pair has: the fallback is taken too
  kc::kcont ks[n];
  int idx[n] = {};
  std::vector<int> seen;
  std::atomic<int> calls{0};
};

ordered *g_ordered;

void ordered_call(void *, void *env, int) {
  g_ordered->seen.push_back(*static_cast<int *>(env));
  g_ordered->calls.fetch_add(1, std::memory_order_release);
}

}  // namespace

static_assert(ordered::n > int(kc::detail::xfer_cap * kc::detail::xfers_per_pair),
              "the test must exhaust a pair's batches");

TEST_F(KcontTest, ADispatchersDeferralsToAnotherCpuRunInOrderExactlyOnce) {
  auto *o = new ordered;
  g_ordered = o;
  o->seen.reserve(ordered::n);
  for (int i = 0; i < ordered::n; i++) {
    o->idx[i] = i;
    ASSERT_EQ(kc::kcont_init(&o->ks[i], ordered_call, &o->idx[i],
                             kc::target::at(kc::LVL_SOFTNET, kc::kind::interrupt, 1)),
              0);
  }
  // All in one call on CPU 0: batches fill, are pushed, run out; the rest
  // goes one by one until a batch comes back.
  on_cpu(0, [&] {
    for (auto &k : o->ks) EXPECT_TRUE(kc::kcont_defer(&k, nullptr, 0));
  });
  ASSERT_TRUE(eventually([&] { return o->calls.load(std::memory_order_acquire) == ordered::n; }))
      << o->calls.load() << " of " << ordered::n << " ran";
  for (auto &k : o->ks) ASSERT_EQ(kc::kcont_drain(&k), 0);
  ASSERT_EQ(o->seen.size(), size_t(ordered::n));
  for (int i = 0; i < ordered::n; i++) ASSERT_EQ(o->seen[i], i) << "out of order at " << i;
  // A second round reuses the batches the first one handed back.
  o->seen.clear();
  o->calls = 0;
  on_cpu(0, [&] {
    for (int i = 0; i < 5; i++) EXPECT_TRUE(kc::kcont_defer(&o->ks[i], nullptr, 0));
  });
  ASSERT_TRUE(eventually([&] { return o->calls.load(std::memory_order_acquire) == 5; }))
      << "a batch that is not full was not pushed when the call returned";
  for (auto &k : o->ks) ASSERT_EQ(kc::kcont_drain(&k), 0);
  for (int i = 0; i < 5; i++) EXPECT_EQ(o->seen[i], i);
  delete o;
}

TEST_F(KcontTest, AContinuationCancelledInABatchDoesNotRunAndCanBeRevived) {
  std::atomic<int> runs{0};
  kc::kcont k;
  ASSERT_EQ(
      kc::kcont_init(
          &k, [](void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); },
          &runs, kc::target::at(kc::LVL_SOFTNET, kc::kind::interrupt, 1)),
      0);
  // Still in CPU 0's open batch when cancelled: the batch is pushed when
  // the call returns, and CPU 1 must skip it.
  on_cpu(0, [&] {
    EXPECT_TRUE(kc::kcont_defer(&k, nullptr, 0));
    EXPECT_TRUE(kc::kcont_cancel(&k));
  });
  ASSERT_EQ(kc::kcont_drain(&k), 0);
  EXPECT_EQ(runs.load(), 0);
  // Cancelled and revived in the same batch: runs once.
  on_cpu(0, [&] {
    EXPECT_TRUE(kc::kcont_defer(&k, nullptr, 0));
    EXPECT_TRUE(kc::kcont_cancel(&k));
    EXPECT_TRUE(kc::kcont_defer(&k, nullptr, 0));
  });
  ASSERT_TRUE(eventually([&] { return runs.load() == 1; }));
  ASSERT_EQ(kc::kcont_drain(&k), 0);
  EXPECT_EQ(runs.load(), 1);
}

// A producer that never lets its dispatcher go idle (it re-defers itself
// on every call) must still deliver what it staged: batches are pushed
// every 64 calls, not only before the dispatcher sleeps.
TEST_F(KcontTest, ABusyDispatcherStillDeliversWhatItDeferredToAnotherCpu) {
  struct busy {
    kc::kcont self, item;
    std::atomic<bool> stop{false};
    std::atomic<int> item_runs{0};
    bool first = true;
  } b;
  ASSERT_EQ(
      kc::kcont_init(
          &b.item, [](void *, void *env, int) { static_cast<busy *>(env)->item_runs.fetch_add(1); },
          &b, kc::target::at(kc::LVL_SOFTNET, kc::kind::interrupt, 1)),
      0);
  ASSERT_EQ(kc::kcont_init(
                &b.self,
                [](void *, void *env, int) {
                  auto *p = static_cast<busy *>(env);
                  if (p->first) {
                    p->first = false;
                    kc::kcont_defer(&p->item, nullptr, 0);
                  }
                  if (!p->stop.load()) kc::kcont_defer(&p->self, nullptr, 0);
                },
                &b, kc::target::at(kc::LVL_SOFTNET, kc::kind::interrupt, 0)),
            0);
  ASSERT_TRUE(kc::kcont_defer(&b.self, nullptr, 0));
  bool delivered = eventually([&] { return b.item_runs.load() == 1; });
  b.stop = true;
  ASSERT_EQ(kc::kcont_drain(&b.self), 0);
  ASSERT_EQ(kc::kcont_drain(&b.item), 0);
  EXPECT_TRUE(delivered) << "the staged deferral waited for the producer to go idle";
  EXPECT_EQ(b.item_runs.load(), 1);
}

#ifndef NDEBUG
// KC_ASSERT (Debug builds): dispatcher-only code entered from another
// thread dies naming the invariant it broke.
TEST_F(KcontTest, ACrossCpuBatchFilledOffItsDispatcherDies) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  kc::kcont k;
  ASSERT_EQ(kc::kcont_init(
                &k, [](void *, void *, int) {}, nullptr, kc::target::in_thread(kc::LVL_SOFTNET)),
            0);
  EXPECT_DEATH(kc::detail::xfer_stage(kc::detail::cpu_record(0), kc::detail::cpu_record(1), &k),
               "a cross-CPU batch is filled by its producer's dispatcher");
}

TEST_F(KcontTest, ALocalRunQueueTouchedOffItsDispatcherDies) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  kc::kcont k;
  ASSERT_EQ(kc::kcont_init(
                &k, [](void *, void *, int) {}, nullptr, kc::target::in_thread(kc::LVL_SOFTNET)),
            0);
  EXPECT_DEATH(kc::detail::local_link(kc::detail::cpu_record(0), &k),
               "a CPU's local run queues are touched by its dispatcher alone");
}
#endif
