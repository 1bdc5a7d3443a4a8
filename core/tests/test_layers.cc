// SPDX-License-Identifier: BSD-2-Clause
// The classic APIs layered on kcont: softint(9), callout(9), workqueue(9)
// and sleep/wakeup, with their classic semantics.
#include <errno.h>
#include <time.h>

#include "fixture.h"
#include "kcont/callout.h"
#include "kcont/sleepq.h"
#include "kcont/softint.h"
#include "kcont/workqueue.h"

using namespace kc;
using kctest::eventually;
using kctest::KcontTest;
using kctest::on_cpu;

namespace {
void bump_fn(void *a) { static_cast<std::atomic<int> *>(a)->fetch_add(1); }
}  // namespace

TEST_F(KcontTest, SoftintRunsOnTheScheduledCpuAndCoalesces) {
  struct seen {
    std::atomic<int> n{0};
    std::atomic<int> cpu{-1};
    context ctx{};
  } s;
  softint *si = softint_establish(
      LVL_SOFTBIO,
      [](void *a) {
        auto *x = static_cast<seen *>(a);
        x->cpu = kcont_current_cpu();
        x->ctx = kcont_current_context();
        x->n++;
      },
      &s);
  ASSERT_NE(si, nullptr);
  bool first = false, second = true;
  on_cpu(1, [&] {
    level_set m = spl_block({LVL_SOFTBIO});
    first = softint_schedule(si);  // current CPU: 1
    second = softint_schedule(si);
    splx(m);
  });
  EXPECT_TRUE(first);
  EXPECT_FALSE(second);
  ASSERT_TRUE(eventually([&] { return s.n.load() == 1; }));
  EXPECT_EQ(s.cpu.load(), 1);
  EXPECT_EQ(s.ctx.lvl, LVL_SOFTBIO);
  EXPECT_TRUE(softint_schedule_cpu(si, 0));
  ASSERT_TRUE(eventually([&] { return s.n.load() == 2; }));
  softint_disestablish(si);
  EXPECT_EQ(s.cpu.load(), 0);
}

TEST_F(KcontTest, SoftintThreadKindMayBlock) {
  std::atomic<int> n{0};
  softint *si = softint_establish(
      LVL_SOFTNET,
      [](void *a) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // blocking is allowed
        static_cast<std::atomic<int> *>(a)->fetch_add(1);
      },
      &n, kind::thread);
  ASSERT_NE(si, nullptr);
  softint_schedule_cpu(si, 0);
  softint_schedule_cpu(si, 1);
  ASSERT_TRUE(eventually([&] { return n.load() == 2; }));
  softint_disestablish(si);
  EXPECT_FALSE(softint_schedule_cpu(si, 0));  // refused after disestablish
}

TEST_F(KcontTest, CalloutResetStopAndFlags) {
  std::atomic<int> n{0};
  callout c;
  callout_init(&c, 0);
  EXPECT_FALSE(callout_pending(&c));
  ASSERT_EQ(callout_reset(&c, mstohz(10000), bump_fn, &n), 0);
  EXPECT_TRUE(callout_pending(&c));
  EXPECT_TRUE(callout_active(&c));
  EXPECT_FALSE(callout_stop(&c));  // was pending, not expired
  EXPECT_FALSE(callout_pending(&c));
  EXPECT_FALSE(callout_active(&c));
  // Rescheduling moves the expiry: a long one made short fires soon.
  ASSERT_EQ(callout_reset(&c, mstohz(10000), bump_fn, &n), 0);
  ASSERT_EQ(callout_reset(&c, 1, bump_fn, &n), 0);
  ASSERT_TRUE(eventually([&] { return n.load() == 1; }));
  ASSERT_TRUE(eventually([&] { return !callout_pending(&c); }));
  EXPECT_TRUE(callout_expired(&c));
  EXPECT_TRUE(callout_invoking(&c));
  callout_ack(&c);
  EXPECT_FALSE(callout_invoking(&c));
  EXPECT_TRUE(callout_stop(&c));  // it had expired
  // callout_schedule re-uses the function.
  ASSERT_EQ(callout_schedule(&c, 2), 0);
  ASSERT_TRUE(eventually([&] { return n.load() == 2; }));
  callout_halt(&c);
  EXPECT_EQ(callout_destroy(&c), 0);
  EXPECT_EQ(callout_reset(&c, 1, bump_fn, &n), EINVAL);  // destroyed
}

// Callouts 1..12 ticks apart, alternating between two CPUs.  What callout(9)
// promises, and all this checks: none fires before its expiry, and on each
// CPU they fire in expiry order.  Across CPUs there is no order to check --
// two dispatchers on a loaded machine may run their softclocks in either
// order (an earlier version of this test failed that way under load).
TEST_F(KcontTest, CalloutsFireInExpiryOrderOnEachCpuAndNeverEarly) {
  constexpr int N = 12;
  struct one {
    callout c;
    int id = 0;
    std::atomic<int> *seq = nullptr;
    std::atomic<int> order{-1};
    std::atomic<int> cpu{-1};
    std::atomic<uint64_t> fired_ns{0};
  } ones[N];
  std::atomic<int> seq{0};
  for (int i = 0; i < N; i++) {
    ones[i].id = i;
    ones[i].seq = &seq;
    callout_init(&ones[i].c, i % 2);
  }
  for (int i = N - 1; i >= 0; i--)
    callout_reset(
        &ones[i].c, uint64_t(i + 1),
        [](void *a) {
          auto *o = static_cast<one *>(a);
          timespec ts;
          clock_gettime(CLOCK_MONOTONIC, &ts);
          o->fired_ns = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
          o->cpu = kcont_current_cpu();
          o->order = o->seq->fetch_add(1);
        },
        &ones[i]);
  ASSERT_TRUE(eventually([&] { return seq.load() == N; }));
  for (int i = 0; i < N; i++) {
    EXPECT_EQ(ones[i].cpu.load(), i % 2);
    // callout_reset stored the absolute expiry tick (1 ms ticks by default).
    EXPECT_GE(ones[i].fired_ns.load(), ones[i].c.expire * 1000000ull)
        << "callout " << i << " fired early";
    if (i >= 2) {
      EXPECT_GT(ones[i].order.load(), ones[i - 2].order.load()) << "same CPU, out of order";
    }
  }
  for (auto &o : ones) callout_halt(&o.c);
}

TEST_F(KcontTest, PeriodicCalloutReschedulesItself) {
  struct per {
    callout c;
    std::atomic<int> n{0};
  } p;
  callout_init(&p.c, 1);
  callout_reset(
      &p.c, 1,
      [](void *a) {
        auto *x = static_cast<per *>(a);
        if (x->n.fetch_add(1) + 1 < 5) callout_schedule(&x->c, 1);
      },
      &p);
  ASSERT_TRUE(eventually([&] { return p.n.load() == 5; }));
  callout_halt(&p.c);
  EXPECT_EQ(p.n.load(), 5);
}

TEST_F(KcontTest, TsleepTimesOutAndWakeupWakes) {
  int chan = 0;
  EXPECT_EQ(tsleep(&chan, "test", 2000000), EWOULDBLOCK);  // 2 ms, nobody wakes
  std::atomic<int> rc{-1};
  std::thread t([&] { rc = tsleep(&chan, "test", KC_FOREVER); });
  while (wakeup(&chan) == 0) std::this_thread::yield();  // until the sleeper is on
  t.join();
  EXPECT_EQ(rc.load(), 0);
  EXPECT_EQ(wakeup(&chan), 0);  // nobody left
  int rc2 = 0;
  on_cpu(0, [&] { rc2 = tsleep(&chan, "x", 1000); });
  EXPECT_EQ(rc2, EDEADLK);  // nothing sleeps in interrupt context
}

TEST_F(KcontTest, WakeupOneWakesExactlyOne) {
  int chan = 0;
  std::atomic<int> woken{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 3; i++)
    ts.emplace_back([&] {
      if (tsleep(&chan, "one", KC_FOREVER) == 0) woken++;
    });
  int on = 0;
  for (int i = 0; i < 3; i++) {
    while (wakeup_one(&chan) == 0) std::this_thread::yield();
    on++;
    ASSERT_TRUE(eventually([&] { return woken.load() == on; }));
  }
  for (auto &t : ts) t.join();
  EXPECT_EQ(woken.load(), 3);
}

TEST_F(KcontTest, ContinuationWaitersRunInTheirContext) {
  struct seen {
    std::atomic<int> n{0};
    std::atomic<void *> obj{nullptr};
    context ctx{};
  } s;
  kcont k;
  kcont_init(
      &k,
      [](void *obj, void *env, int) {
        auto *x = static_cast<seen *>(env);
        x->ctx = kcont_current_context();
        x->obj = obj;
        x->n++;
      },
      &s, target::at(LVL_SOFTNET, kind::interrupt, 1));
  int chan = 0;
  ASSERT_EQ(wchan_wait(&chan, &k), 0);
  EXPECT_EQ(wchan_wait(&chan, &k), EBUSY);
  EXPECT_EQ(wakeup(&chan), 1);
  ASSERT_TRUE(eventually([&] { return s.n.load() == 1; }));
  kcont_drain(&k);
  EXPECT_EQ(s.obj.load(), &chan);
  EXPECT_EQ(s.ctx.lvl, LVL_SOFTNET);
  ASSERT_EQ(wchan_wait(&chan, &k), 0);
  EXPECT_TRUE(wchan_cancel(&chan, &k));
  EXPECT_EQ(wakeup(&chan), 0);
}
