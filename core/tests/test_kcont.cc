// SPDX-License-Identifier: BSD-2-Clause
// Basic semantics of continuations, chains, pools and typed binding.
#include <errno.h>
#include <pthread.h>

#include "fixture.h"
#include "kcont/bind.h"

using namespace kc;
using kctest::eventually;
using kctest::KcontTest;
using kctest::on_cpu;

namespace {
struct counter {
  std::atomic<int> n{0};
  std::atomic<void *> last_obj{nullptr};
  std::atomic<int> last_status{0};
};
void count_fn(void *obj, void *env, int status) {
  auto *c = static_cast<counter *>(env);
  c->last_obj.store(obj);
  c->last_status.store(status);
  c->n.fetch_add(1);
}
}  // namespace

TEST(KcontNoSystem, InitValidatesArguments) {
  kcont k;
  EXPECT_EQ(kcont_init(&k, nullptr, nullptr, target{}), EINVAL);
  EXPECT_EQ(kcont_init(&k, count_fn, nullptr, target::at(level{200})), EINVAL);
  EXPECT_EQ(kcont_init(&k, count_fn, nullptr, target::at(LVL_SOFTNET, kind::interrupt, 99)),
            EINVAL);
  EXPECT_EQ(kcont_init(&k, count_fn, nullptr, target::at(LVL_SOFTNET)), 0);
  // Not running: defer refuses and leaves it idle.
  EXPECT_FALSE(kcont_defer(&k, nullptr, 0));
  EXPECT_EQ(kcont_state(&k), kc_state::idle);
}

TEST(KcontNoSystem, StartRejectsBadConfig) {
  config cfg;
  cfg.cpus = 1000;
  std::string err;
  EXPECT_EQ(kcont_start(cfg, &err), EINVAL);
  EXPECT_FALSE(err.empty());
  EXPECT_FALSE(kcont_running());
}

TEST_F(KcontTest, DeferRunsWithItsObjectAndStatus) {
  counter c;
  kcont k;
  ASSERT_EQ(kcont_init(&k, count_fn, &c, target::at(LVL_SOFTNET)), 0);
  int obj;
  EXPECT_TRUE(kcont_defer(&k, &obj, 42));
  ASSERT_TRUE(eventually([&] { return c.n.load() == 1; }));
  EXPECT_EQ(c.last_obj.load(), &obj);
  EXPECT_EQ(c.last_status.load(), 42);
  EXPECT_EQ(kcont_drain(&k), 0);
  EXPECT_EQ(kcont_state(&k), kc_state::idle);
}

TEST_F(KcontTest, DeferringAPendingContinuationCoalesces) {
  counter c;
  kcont k;
  ASSERT_EQ(kcont_init(&k, count_fn, &c, target::at(LVL_SOFTBIO, kind::interrupt, 0)), 0);
  // Hold softbio on CPU 0 so the first deferral stays pending.
  std::atomic<bool> first{false}, second{true};
  on_cpu(0, [&] {
    spl_block({LVL_SOFTBIO});
    first = kcont_defer(&k, nullptr, 1);
    second = kcont_defer(&k, nullptr, 2);
    EXPECT_EQ(kcont_state(&k), kc_state::pending);
  });
  EXPECT_TRUE(first.load());
  EXPECT_FALSE(second.load());
  on_cpu(0, [&] { splx(level_set{}); });
  ASSERT_TRUE(eventually([&] { return c.n.load() == 1; }));
  EXPECT_EQ(c.last_status.load(), 1);  // the first deferral's status stands
  kcont_drain(&k);
  EXPECT_EQ(c.n.load(), 1);
  EXPECT_GE(kcont_stats(0, LVL_SOFTBIO, kind::interrupt).coalesced, 1u);
}

TEST_F(KcontTest, CancelRemovesAPendingContinuation) {
  counter c;
  kcont k;
  ASSERT_EQ(kcont_init(&k, count_fn, &c, target::at(LVL_SOFTCLOCK, kind::interrupt, 1)), 0);
  bool cancelled = false, again = false;
  on_cpu(1, [&] {
    spl_block({LVL_SOFTCLOCK});
    kcont_defer(&k, nullptr, 0);
    cancelled = kcont_cancel(&k);
    again = kcont_cancel(&k);
    splx(level_set{});
  });
  EXPECT_TRUE(cancelled);
  EXPECT_FALSE(again);
  EXPECT_EQ(kcont_drain(&k), 0);
  EXPECT_EQ(c.n.load(), 0);
  EXPECT_EQ(kcont_state(&k), kc_state::idle);
  // A cancelled continuation can be deferred again and runs once.
  EXPECT_TRUE(kcont_defer(&k, nullptr, 7));
  ASSERT_TRUE(eventually([&] { return c.n.load() == 1; }));
  EXPECT_EQ(c.last_status.load(), 7);
}

TEST_F(KcontTest, CancelRevivedInPlaceRunsOnceWithNewArguments) {
  counter c;
  kcont k;
  ASSERT_EQ(kcont_init(&k, count_fn, &c, target::at(LVL_SOFTNET, kind::interrupt, 0)), 0);
  int a, b;
  on_cpu(0, [&] {
    spl_block({LVL_SOFTNET});
    EXPECT_TRUE(kcont_defer(&k, &a, 1));
    EXPECT_TRUE(kcont_cancel(&k));
    EXPECT_TRUE(kcont_defer(&k, &b, 2));   // revived in place
    EXPECT_FALSE(kcont_defer(&k, &a, 3));  // and pending again: coalesces
    splx(level_set{});
  });
  ASSERT_TRUE(eventually([&] { return c.n.load() == 1; }));
  kcont_drain(&k);
  EXPECT_EQ(c.n.load(), 1);
  EXPECT_EQ(c.last_obj.load(), &b);
  EXPECT_EQ(c.last_status.load(), 2);
}

TEST_F(KcontTest, InitRefusesABusyContinuation) {
  counter c;
  kcont k;
  ASSERT_EQ(kcont_init(&k, count_fn, &c, target::at(LVL_SOFTNET, kind::interrupt, 0)), 0);
  kcq q;
  ASSERT_EQ(kcq_enqueue(&q, &k), 0);
  EXPECT_EQ(kcont_init(&k, count_fn, &c, target::at(LVL_SOFTNET)), EBUSY);
  EXPECT_TRUE(kcq_remove(&q, &k));
  EXPECT_EQ(kcont_init(&k, count_fn, &c, target::at(LVL_SOFTNET)), 0);
}

TEST_F(KcontTest, ChainRunsEveryContinuationWithTheEventsObject) {
  counter c1, c2;
  kcont k1, k2;
  ASSERT_EQ(kcont_init(&k1, count_fn, &c1, target::at(LVL_SOFTBIO)), 0);
  ASSERT_EQ(kcont_init(&k2, count_fn, &c2, target::in_thread(LVL_SOFTBIO)), 0);
  kcq q;
  ASSERT_EQ(kcq_enqueue(&q, &k1), 0);
  ASSERT_EQ(kcq_enqueue(&q, &k2), 0);
  EXPECT_EQ(kcq_enqueue(&q, &k1), EBUSY);  // already chained
  EXPECT_EQ(kcont_state(&k1), kc_state::chained);
  EXPECT_FALSE(kcont_defer(&k1, nullptr, 0));  // chained: refused
  EXPECT_EQ(kcq_count(&q), 2u);
  int buf;
  EXPECT_EQ(kcq_run(&q, &buf, -EIO), 2);
  ASSERT_TRUE(eventually([&] { return c1.n.load() == 1 && c2.n.load() == 1; }));
  EXPECT_EQ(c1.last_obj.load(), &buf);
  EXPECT_EQ(c2.last_status.load(), -EIO);
  EXPECT_EQ(kcq_count(&q), 0u);
  kcont_drain(&k1);
  kcont_drain(&k2);
}

TEST_F(KcontTest, RunCallsImmediateNowAndDefersTheRest) {
  // In {softnet, interrupt} on CPU 0: an immediate kc and an exact-context
  // kc run during kcq_run; a kc for softbio does not.
  struct rec {
    std::atomic<int> ran_inside{0};
    std::atomic<int> ran{0};
    std::atomic<bool> inside{false};
  } r;
  auto fn = [](void *, void *env, int) {
    auto *x = static_cast<rec *>(env);
    if (x->inside.load()) x->ran_inside++;
    x->ran++;
  };
  kcont imm, exact, other;
  ASSERT_EQ(kcont_init(&imm, fn, &r, target::now()), 0);
  ASSERT_EQ(kcont_init(&exact, fn, &r, target::at(LVL_SOFTNET, kind::interrupt, 0)), 0);
  ASSERT_EQ(kcont_init(&other, fn, &r, target::at(LVL_SOFTBIO, kind::interrupt, 0)), 0);
  kcq q;
  kcq_enqueue(&q, &imm);
  kcq_enqueue(&q, &exact);
  kcq_enqueue(&q, &other);
  on_cpu(
      0,
      [&] {
        r.inside = true;
        kcq_run(&q, nullptr, 0);
        r.inside = false;
      },
      LVL_SOFTNET);
  ASSERT_TRUE(eventually([&] { return r.ran.load() == 3; }));
  EXPECT_EQ(r.ran_inside.load(), 2);
  EXPECT_GE(kcont_stats(0, LVL_SOFTNET, kind::interrupt).direct, 1u);
  kcont_drain(&other);
}

TEST_F(KcontTest, ExactContextMeansSameLevelSameKindAllowedCpuUnmasked) {
  // Each continuation records whether it ran on the thread that called
  // kcq_run, during that call.
  struct ctx {
    std::atomic<int> inside{0}, total{0};
    std::atomic<bool> in{false};
    std::atomic<pthread_t> caller{};
  } cx;
  auto f = [](void *, void *env, int) {
    auto *c = static_cast<ctx *>(env);
    if (c->in.load() && pthread_equal(c->caller.load(), pthread_self())) c->inside++;
    c->total++;
  };
  kcont wrong_kind, wrong_cpu, masked;
  kcont_init(&wrong_kind, f, &cx, target::in_thread(LVL_SOFTNET, 0));
  kcont_init(&wrong_cpu, f, &cx, target::at(LVL_SOFTNET, kind::interrupt, 1));
  kcont_init(&masked, f, &cx, target::at(LVL_SOFTNET, kind::interrupt, 0));
  kcq q1, q2;
  kcq_enqueue(&q1, &wrong_kind);
  kcq_enqueue(&q1, &wrong_cpu);
  kcq_enqueue(&q2, &masked);
  on_cpu(
      0,
      [&] {
        cx.caller = pthread_self();
        cx.in = true;
        kcq_run(&q1, nullptr, 0);
        level_set s = spl_block({LVL_SOFTNET});
        kcq_run(&q2, nullptr, 0);
        cx.in = false;
        splx(s);
      },
      LVL_SOFTNET);
  ASSERT_TRUE(eventually([&] { return cx.total.load() == 3; }));
  EXPECT_EQ(cx.inside.load(), 0);
  kcont_drain(&wrong_kind);
  kcont_drain(&wrong_cpu);
  kcont_drain(&masked);
}

TEST_F(KcontTest, DrainWaitsForARunningFunction) {
  std::atomic<bool> entered{false}, release{false}, finished{false};
  struct st {
    std::atomic<bool> *entered, *release, *finished;
  } s{&entered, &release, &finished};
  kcont k;
  kcont_init(
      &k,
      [](void *, void *env, int) {
        auto *x = static_cast<st *>(env);
        x->entered->store(true);
        while (!x->release->load()) std::this_thread::yield();
        x->finished->store(true);
      },
      &s, target::in_thread(LVL_SOFTSERIAL, 1));
  kcont_defer(&k, nullptr, 0);
  ASSERT_TRUE(eventually([&] { return entered.load(); }));
  EXPECT_EQ(kcont_state(&k), kc_state::running);
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    release = true;
  });
  EXPECT_EQ(kcont_drain(&k), 0);
  EXPECT_TRUE(finished.load());
  t.join();
}

TEST_F(KcontTest, DrainRefusedInInterruptContext) {
  kcont k;
  kcont_init(
      &k, [](void *, void *, int) {}, nullptr, target::at(LVL_SOFTNET));
  int rc = 0;
  on_cpu(0, [&] { rc = kcont_drain(&k); });
  EXPECT_EQ(rc, EDEADLK);
}

TEST_F(KcontTest, PoolHandsOutPreallocatedContinuations) {
  counter c;
  kcont_pool *p = kcont_pool_create(4, count_fn, &c, target::at(LVL_SOFTNET));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(kcont_pool_available(p), 4u);
  kcont *ks[5];
  for (int i = 0; i < 4; i++) ASSERT_NE(ks[i] = kcont_pool_get(p), nullptr);
  ks[4] = kcont_pool_get(p);
  EXPECT_EQ(ks[4], nullptr);
  for (int i = 0; i < 4; i++) kcont_defer(ks[i], nullptr, i);
  ASSERT_TRUE(eventually([&] { return c.n.load() == 4; }));
  for (int i = 0; i < 4; i++) {
    kcont_drain(ks[i]);
    kcont_pool_put(p, ks[i]);
  }
  EXPECT_EQ(kcont_pool_available(p), 4u);
  kcont_pool_destroy(p);
}

namespace {
struct conn {
  kcont on_done;
  std::atomic<int> status{0};
  std::atomic<int *> got{nullptr};
  void done(int *buf, int st) {
    got = buf;
    status = st;
  }
};
struct plain {
  std::atomic<int> hits{0};
};
void plain_fn(int *, plain *p, int) { p->hits++; }
}  // namespace

TEST_F(KcontTest, TypedBindingCallsTheMember) {
  conn cn;
  ASSERT_EQ(kcont_bind<&conn::done>(&cn.on_done, &cn, target::at(LVL_SOFTNET)), 0);
  int x;
  kcont_defer(&cn.on_done, &x, 5);
  ASSERT_TRUE(eventually([&] { return cn.status.load() == 5; }));
  EXPECT_EQ(cn.got.load(), &x);
  plain pl;
  kcont k;
  ASSERT_EQ(kcont_bind_fn<&plain_fn>(&k, &pl, target::at(LVL_SOFTBIO)), 0);
  kcont_defer(&k, nullptr, 0);
  ASSERT_TRUE(eventually([&] { return pl.hits.load() == 1; }));
  kcont_drain(&cn.on_done);
  kcont_drain(&k);
}

TEST_F(KcontTest, StatsFormatListsActivity) {
  counter c;
  kcont k;
  kcont_init(&k, count_fn, &c, target::at(LVL_SOFTNET, kind::interrupt, 0));
  kcont_defer(&k, nullptr, 0);
  ASSERT_TRUE(eventually([&] { return c.n.load() == 1; }));
  kcont_drain(&k);
  // Counters are published after the batch that ran the call.
  ASSERT_TRUE(eventually([] { return kcont_stats(0, LVL_SOFTNET, kind::interrupt).run >= 1; }));
  std::string s = kcont_stats_format();
  EXPECT_NE(s.find("softnet"), std::string::npos);
}

// CPU-private continuations: owned by one dispatcher, plain-store fast path.
TEST_F(KcontTest, CpuPrivateContinuationRulesAndSemantics) {
  counter c;
  kcont k;
  EXPECT_EQ(
      kcont_init(&k, count_fn, &c, target{LVL_SOFTNET, kind::interrupt, false, KC_CPU_ANY, true}),
      EINVAL);  // must be bound
  EXPECT_EQ(kcont_init(&k, count_fn, &c, target{LVL_SOFTNET, kind::thread, false, 1, true}),
            EINVAL);
  ASSERT_EQ(kcont_init(&k, count_fn, &c, target::cpu_private_to(LVL_SOFTNET, 1)), 0);
  kcq q;
  // Off its CPU: refused.
  EXPECT_FALSE(kcont_defer(&k, nullptr, 0));
  EXPECT_EQ(kcq_enqueue(&q, &k), EPERM);
  on_cpu(0, [&] { EXPECT_FALSE(kcont_defer(&k, nullptr, 0)); });
  EXPECT_EQ(c.n.load(), 0);
  // On its CPU: defer, coalesce, cancel, revive -- as for any continuation.
  int a, b;
  on_cpu(1, [&] {
    level_set s = spl_block({LVL_SOFTNET});
    EXPECT_TRUE(kcont_defer(&k, &a, 1));
    EXPECT_FALSE(kcont_defer(&k, &b, 2));  // coalesced
    EXPECT_TRUE(kcont_cancel(&k));
    EXPECT_FALSE(kcont_cancel(&k));
    EXPECT_TRUE(kcont_defer(&k, &b, 3));  // revived in place
    splx(s);
  });
  ASSERT_TRUE(eventually([&] { return c.n.load() == 1; }));
  EXPECT_EQ(kcont_drain(&k), 0);
  EXPECT_EQ(c.last_obj.load(), &b);
  EXPECT_EQ(c.last_status.load(), 3);
  // Chained by its owner, run from any thread: handed to its CPU.
  on_cpu(1, [&] { EXPECT_EQ(kcq_enqueue(&q, &k), 0); });
  EXPECT_EQ(kcq_run(&q, &a, 9), 1);
  ASSERT_TRUE(eventually([&] { return c.n.load() == 2; }));
  EXPECT_EQ(kcont_drain(&k), 0);
  EXPECT_EQ(c.last_status.load(), 9);
  EXPECT_EQ(kcont_state(&k), kc_state::idle);
}

// The owner defers and cancels while another thread runs the chain the
// continuation is on: every accepted deferral or chain run is either run or
// cancelled exactly once.
TEST_F(KcontTest, RaceCpuPrivateOwnerVsRemoteChainRun) {
  struct st {
    kcont victim, driver;
    kcq q;
    std::atomic<int> ran{0}, cancelled{0}, accepted{0}, rounds{0};
    std::atomic<int> chained{0};
  } s;
  kcont_init(
      &s.victim, [](void *, void *env, int) { static_cast<st *>(env)->ran++; }, &s,
      target::cpu_private_to(LVL_SOFTBIO, 1));
  // The driver runs on the owner CPU: chains the victim, or defers it, and
  // sometimes cancels it.
  kcont_init(
      &s.driver,
      [](void *, void *env, int) {
        auto *x = static_cast<st *>(env);
        int r = x->rounds.load();
        if (r % 2 == 0) {
          if (kcq_enqueue(&x->q, &x->victim) == 0) x->chained++;
        } else if (kcont_defer(&x->victim, nullptr, 0)) {
          x->accepted++;
        }
        if (r % 3 == 0 && kcont_cancel(&x->victim)) x->cancelled++;
        x->rounds++;
      },
      &s, target::at(LVL_SOFTNET, kind::interrupt, 1));
  const int n = 2000;
  int taken = 0;
  for (int i = 0; i < n; i++) {
    kcont_defer(&s.driver, nullptr, 0);
    taken += kcq_run(&s.q, nullptr, 0);  // races the driver
    ASSERT_TRUE(eventually([&] { return s.rounds.load() == i + 1; }));
    kcont_drain(&s.driver);
    taken += kcq_run(&s.q, nullptr, 0);  // whatever the driver chained
    ASSERT_EQ(kcont_drain(&s.victim), 0);
    ASSERT_EQ(s.ran.load() + s.cancelled.load(), s.accepted.load() + taken);
  }
  EXPECT_EQ(taken, s.chained.load());
  EXPECT_GT(s.ran.load(), 0);
}
