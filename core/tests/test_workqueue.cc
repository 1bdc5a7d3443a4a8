// SPDX-License-Identifier: BSD-2-Clause
// workqueue(9): pending enqueues are counted no-ops under any concurrency,
// cancel keeps the outstanding count right, flush and destroy wait for
// exactly what is outstanding, delayed work fires through a callout.
#include <errno.h>

#include <thread>
#include <vector>

#include "fixture.h"
#include "kcont/sleepq.h"
#include "kcont/workqueue.h"
#include "stress.h"

using namespace kc;
using kctest::eventually;
using kctest::KcontTest;
using kctest::on_cpu;

namespace {
// A gate a work function can block on (thread context) until opened.
struct gate {
  std::atomic<bool> open{false};
  std::atomic<int> waiting{0};
  void pass() {
    waiting++;
    while (!open.load()) tsleep(this, "gate", 1000000);
    waiting--;
  }
  void release() {
    open = true;
    wakeup(this);
  }
};

struct counter {
  std::atomic<int> n{0};
  gate *g = nullptr;
  work *gated = nullptr;  // this item waits at the gate
};

void count_fn(work *wk, void *a) {
  auto *c = static_cast<counter *>(a);
  if (c->g && wk == c->gated) c->g->pass();
  c->n++;
}
}  // namespace

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
                  c->n++;
                },
                &cx, LVL_SOFTNET),
            0);
  work items[16];
  for (int i = 0; i < 16; i++) ASSERT_TRUE(workqueue_enqueue(wq, &items[i], i % 2));
  for (auto &w : items) EXPECT_EQ(workqueue_wait(wq, &w), 0);
  EXPECT_EQ(cx.n.load(), 16);
  EXPECT_EQ(cx.bad.load(), 0);
  // From interrupt context: allowed, never blocks.
  on_cpu(0, [&] { EXPECT_TRUE(workqueue_enqueue(wq, &items[0], 1)); });
  workqueue_destroy(wq);  // waits for items[0]
  EXPECT_EQ(cx.n.load(), 17);
}

// An item that is really pending (queued behind a blocked one on the same
// worker): enqueueing it again returns false, is counted, and it runs once.
TEST_F(KcontTest, EnqueueingPendingWorkIsACountedNoOp) {
  gate g;
  counter c;
  work blocker, item;
  c.g = &g;
  c.gated = &blocker;
  workqueue *wq = nullptr;
  ASSERT_EQ(workqueue_create(&wq, "pend", count_fn, &c, LVL_SOFTBIO), 0);
  ASSERT_TRUE(workqueue_enqueue(wq, &blocker, 0));
  ASSERT_TRUE(eventually([&] { return g.waiting.load() == 1; }));
  const uint64_t before = kcont_stats(0, LVL_SOFTBIO, kind::thread).coalesced;
  ASSERT_TRUE(workqueue_enqueue(wq, &item, 0));
  EXPECT_TRUE(workqueue_pending(&item));
  EXPECT_FALSE(workqueue_enqueue(wq, &item, 0));
  EXPECT_FALSE(workqueue_enqueue(wq, &item, 1));  // another CPU: still the same pending item
  EXPECT_EQ(kcont_stats(0, LVL_SOFTBIO, kind::thread).coalesced +
                kcont_stats(1, LVL_SOFTBIO, kind::thread).coalesced - before,
            2u);
  EXPECT_EQ(workqueue_outstanding(wq), 2u);
  g.release();
  workqueue_destroy(wq);
  EXPECT_EQ(c.n.load(), 2);  // blocker once, item once
}

// Many threads enqueue the same few items as fast as they can, from both
// sides of every state change: every `true` is exactly one run, nothing is
// lost, and the queue drains to zero (it used to lose items and hang).
TEST_F(KcontTest, RaceConcurrentEnqueuesOfTheSameItems) {
  counter c;
  workqueue *wq = nullptr;
  ASSERT_EQ(workqueue_create(&wq, "race", count_fn, &c, LVL_SOFTNET), 0);
  work items[4];
  std::atomic<int> accepted{0};
  const int per = stress_iters(4000);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++)
    ts.emplace_back([&, t] {
      for (int i = 0; i < per; i++)
        if (workqueue_enqueue(wq, &items[(i + t) % 4], (i >> 3) & 1)) accepted++;
    });
  for (auto &t : ts) t.join();
  ASSERT_TRUE(eventually([&] { return workqueue_outstanding(wq) == 0; }, 10))
      << workqueue_outstanding(wq) << " items never finished";
  EXPECT_EQ(c.n.load(), accepted.load());
  workqueue_destroy(wq);
}

TEST_F(KcontTest, WorkqueueCancelKeepsTheCountAndDestroyReturns) {
  gate g;
  counter c;
  work blocker, item;
  c.g = &g;
  c.gated = &blocker;
  workqueue *wq = nullptr;
  ASSERT_EQ(workqueue_create(&wq, "cancel", count_fn, &c, LVL_SOFTBIO), 0);
  ASSERT_TRUE(workqueue_enqueue(wq, &blocker, 0));
  ASSERT_TRUE(eventually([&] { return g.waiting.load() == 1; }));
  ASSERT_TRUE(workqueue_enqueue(wq, &item, 0));
  EXPECT_TRUE(workqueue_cancel(wq, &item));  // pending -> cancelled, not run
  EXPECT_FALSE(workqueue_cancel(wq, &item));
  EXPECT_EQ(workqueue_outstanding(wq), 1u);
  // Enqueued again while its cancelled link still sits in the inbox (revived
  // in place), then cancelled again.
  ASSERT_TRUE(workqueue_enqueue(wq, &item, 0));
  EXPECT_TRUE(workqueue_cancel(wq, &item));
  g.release();
  // A cancelled item's link stays in the worker's inbox until the worker
  // passes it: wait for that before the item goes out of scope (workqueue.h).
  // Without this wait the worker read this frame after the test returned
  // (the TSan-only hang of 2026-12-02: it spun on a reused stack slot).
  EXPECT_EQ(workqueue_wait(wq, &item), 0);
  workqueue_destroy(wq);     // would wait forever on a miscounted cancel
  EXPECT_EQ(c.n.load(), 1);  // the blocker only
}

TEST_F(KcontTest, WorkqueueFlushRefusesItsOwnLevelAndInterruptContext) {
  struct st {
    workqueue *wq = nullptr;
    std::atomic<int> rc{-1};
    work wk;
  } s;
  ASSERT_EQ(workqueue_create(
                &s.wq, "self",
                [](work *, void *a) {
                  auto *x = static_cast<st *>(a);
                  x->rc = workqueue_flush(x->wq);
                },
                &s, LVL_SOFTBIO),
            0);
  ASSERT_TRUE(workqueue_enqueue(s.wq, &s.wk, 1));
  ASSERT_TRUE(eventually([&] { return s.rc.load() != -1; }));
  EXPECT_EQ(s.rc.load(), EDEADLK);
  int irc = 0;
  on_cpu(0, [&] { irc = workqueue_flush(s.wq); });
  EXPECT_EQ(irc, EDEADLK);
  workqueue_destroy(s.wq);
}

TEST_F(KcontTest, DelayedWorkFiresThroughACalloutAndCancels) {
  counter c;
  workqueue *wq = nullptr;
  ASSERT_EQ(workqueue_create(&wq, "delayed", count_fn, &c, LVL_SOFTBIO), 0);
  delayed_work dw;
  ASSERT_EQ(delayed_work_init(&dw, wq, 1), 0);
  ASSERT_EQ(workqueue_enqueue_delayed(&dw, mstohz(5)), 0);
  ASSERT_TRUE(eventually([&] { return c.n.load() == 1; }));
  EXPECT_EQ(workqueue_wait(wq, &dw.wk), 0);
  // Armed far in the future, then cancelled: never runs.
  ASSERT_EQ(workqueue_enqueue_delayed(&dw, mstohz(60000)), 0);
  EXPECT_TRUE(workqueue_cancel_delayed(&dw));
  EXPECT_FALSE(callout_pending(&dw.timer));
  // 0 ticks: enqueued at once.
  ASSERT_EQ(workqueue_enqueue_delayed(&dw, 0), 0);
  ASSERT_TRUE(eventually([&] { return c.n.load() == 2; }));
  workqueue_destroy(wq);
  EXPECT_EQ(c.n.load(), 2);
}
