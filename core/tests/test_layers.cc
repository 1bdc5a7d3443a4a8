// The classic APIs layered on kcont: softint(9), callout(9), workqueue(9)
// and sleep/wakeup, with their classic semantics.
#include <errno.h>

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

TEST_F(KcontTest, CalloutsFireInExpiryOrderAcrossCpus) {
  struct rec {
    std::atomic<uint32_t> lock{0};
    int n = 0;
    int order[6] = {};
  } r;
  struct one {
    rec *r;
    int id;
  } ones[6];
  callout cs[6];
  for (int i = 0; i < 6; i++) {
    ones[i] = {&r, i};
    callout_init(&cs[i], i % 2);
  }
  // Far apart enough (20 ms) that the order is determined by expiry.
  for (int i = 5; i >= 0; i--)
    callout_reset(
        &cs[i], mstohz(20 * (i + 1)),
        [](void *a) {
          // Interrupt context: no allocation, no sleeping lock.
          auto *o = static_cast<one *>(a);
          while (o->r->lock.exchange(1)) {
          }
          o->r->order[o->r->n++] = o->id;
          o->r->lock.store(0);
        },
        &ones[i]);
  ASSERT_TRUE(eventually([&] {
    while (r.lock.exchange(1)) {
    }
    int n = r.n;
    r.lock.store(0);
    return n == 6;
  }));
  for (int i = 0; i < 6; i++) EXPECT_EQ(r.order[i], i);
  for (auto &c : cs) callout_halt(&c);
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

TEST_F(KcontTest, WorkqueueRunsItemsInThreadContextAndWaits) {
  struct ctx {
    std::atomic<int> n{0};
    std::atomic<int> bad{0};
  } cx;
  workqueue *wq = nullptr;
  ASSERT_EQ(workqueue_create(
                &wq, "wq",
                [](work *, void *a) {
                  auto *c = static_cast<ctx *>(a);
                  context k = kcont_current_context();
                  if (!k.valid || k.k != kind::thread || k.lvl != LVL_SOFTNET) c->bad++;
                  std::this_thread::sleep_for(std::chrono::microseconds(100));
                  c->n++;
                },
                &cx, LVL_SOFTNET),
            0);
  work items[16];
  for (int i = 0; i < 16; i++) ASSERT_TRUE(workqueue_enqueue(wq, &items[i], i % 2));
  for (auto &w : items) workqueue_wait(wq, &w);
  EXPECT_EQ(cx.n.load(), 16);
  EXPECT_EQ(cx.bad.load(), 0);
  // Enqueueing pending work is a counted no-op.
  on_cpu(0, [&] {
    // From interrupt context: allowed, never blocks.
    EXPECT_TRUE(workqueue_enqueue(wq, &items[0], 1));
  });
  workqueue_destroy(wq);  // waits for items[0]
  EXPECT_EQ(cx.n.load(), 17);
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

TEST_F(KcontTest, MtsleepNeverLosesAWakeupIssuedUnderTheInterlock) {
  std::mutex m;
  bool ready = false;
  int chan = 0;
  std::thread t([&] {
    std::unique_lock<std::mutex> g(m);
    while (!ready) ASSERT_EQ(mtsleep(&chan, "cond", KC_FOREVER, m), 0);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  {
    std::lock_guard<std::mutex> g(m);
    ready = true;
    wakeup(&chan);
  }
  t.join();
  SUCCEED();
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
