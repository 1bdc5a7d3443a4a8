// SPDX-License-Identifier: BSD-2-Clause
// One regression test per defect of the 2004 prototype (DESIGN.md §2),
// named after it, each proving the defect cannot happen here.
#include <errno.h>
#include <pthread.h>

#include <set>
#include <vector>

#include "fixture.h"
#include "kcont/callout.h"
#include "kcont/sleepq.h"
#include "kcont/softint.h"
#include "kcont/workqueue.h"
#include "stress.h"

using namespace kc;
using kctest::eventually;
using kctest::KcontTest;
using kctest::on_cpu;

namespace {
const level kAllBuiltin[] = {LVL_CLOCK,     LVL_BIO,     LVL_NET,     LVL_SERIAL,
                             LVL_SOFTCLOCK, LVL_SOFTBIO, LVL_SOFTNET, LVL_SOFTSERIAL};

struct observed {
  std::atomic<int> runs{0};
  std::atomic<int> cpu{-2};
  context ctx{};
  std::atomic<bool> ctx_ok{false};
  std::atomic<pthread_t> thread{};
};

void observe(void *, void *env, int) {
  auto *o = static_cast<observed *>(env);
  o->cpu.store(kcont_current_cpu());
  context c = kcont_current_context();
  o->ctx_ok.store(c.valid && c.lvl == o->ctx.lvl && c.k == o->ctx.k);
  o->thread.store(pthread_self());
  o->runs.fetch_add(1);
}
}  // namespace

// Defect 1: levels were compared with <=.  Here masking is an explicit set:
// holding any one level holds exactly that level, whatever the ranks, and
// dispatch rank only orders service among unmasked pending levels.
TEST_F(KcontTest, Defect1_LevelsAreNeverOrdered) {
  for (level held : kAllBuiltin) {
    observed obs[8];
    kcont ks[8];
    for (int i = 0; i < 8; i++) {
      obs[i].ctx = context{kAllBuiltin[i], kind::interrupt, true};
      ASSERT_EQ(
          kcont_init(&ks[i], observe, &obs[i], target::at(kAllBuiltin[i], kind::interrupt, 0)), 0);
    }
    level_set saved;
    on_cpu(
        0,
        [&] {
          saved = spl_block({held});
          for (auto &k : ks) kcont_defer(&k, nullptr, 0);
        },
        held == LVL_SOFTNET ? LVL_SOFTBIO : LVL_SOFTNET);
    // Every level but the held one runs; the held one waits.
    for (int i = 0; i < 8; i++) {
      if (kAllBuiltin[i] == held) continue;
      ASSERT_TRUE(eventually([&] { return obs[i].runs.load() == 1; }))
          << "holding " << kcont_level_name(held) << " blocked "
          << kcont_level_name(kAllBuiltin[i]);
    }
    int held_idx = held.id;
    EXPECT_EQ(obs[held_idx].runs.load(), 0) << kcont_level_name(held) << " ran while held";
    // Unmask from a level other than the held one (held work cannot run).
    on_cpu(
        0, [&] { splx(saved); }, held == LVL_SOFTNET ? LVL_SOFTBIO : LVL_SOFTNET);
    ASSERT_TRUE(eventually([&] { return obs[held_idx].runs.load() == 1; }));
    for (auto &k : ks) kcont_drain(&k);
  }
}

TEST_F(KcontTest, Defect1_RankOrdersServiceNotMasking) {
  // Queue one continuation on every level while all are held, then release
  // them at once: they run highest rank first.  (Continuations run in
  // interrupt context, so the record is preallocated, not a vector.)
  struct log {
    std::atomic<int> n{0};
    int order[8] = {};
  } lg;
  struct rec {
    log *lg;
    int id;
  } recs[8];
  kcont ks[8];
  level_set all;
  for (int i = 0; i < 8; i++) {
    recs[i] = {&lg, i};
    all.add(kAllBuiltin[i]);
    kcont_init(
        &ks[i],
        [](void *, void *env, int) {
          auto *r = static_cast<rec *>(env);
          r->lg->order[r->lg->n.load()] = r->id;
          r->lg->n.fetch_add(1);
        },
        &recs[i], target::at(kAllBuiltin[i], kind::interrupt, 1));
  }
  on_cpu(1, [&] {
    level_set s = spl_block(all);
    for (auto &k : ks) kcont_defer(&k, nullptr, 0);
    splx(s);
  });
  ASSERT_TRUE(eventually([&] { return lg.n.load() == 8; }));
  for (int i = 1; i < 8; i++)
    EXPECT_GT(kcont_level_rank(kAllBuiltin[lg.order[i - 1]]),
              kcont_level_rank(kAllBuiltin[lg.order[i]]));
  for (auto &k : ks) kcont_drain(&k);
}

// Defect 2: one global queue and one worker.  Here every {level, kind} has
// its own queue on every CPU, and every {level, CPU} its own worker thread.
TEST_F(KcontTest, Defect2_QueuePerLevelAndKindOnEveryCpu) {
  std::set<pthread_t> workers;
  for (int cpu = 0; cpu < kcont_ncpus(); cpu++) {
    for (level l : kAllBuiltin) {
      for (kind k : {kind::interrupt, kind::thread}) {
        level_stats before = kcont_stats(cpu, l, k);
        observed o;
        o.ctx = context{l, k, true};
        kcont kc;
        ASSERT_EQ(kcont_init(&kc, observe, &o, target{l, k, false, int16_t(cpu)}), 0);
        ASSERT_TRUE(kcont_defer(&kc, nullptr, 0));
        ASSERT_TRUE(eventually([&] { return o.runs.load() == 1; }));
        ASSERT_EQ(kcont_drain(&kc), 0);
        EXPECT_EQ(o.cpu.load(), cpu);
        EXPECT_TRUE(o.ctx_ok.load()) << kcont_level_name(l) << (k == kind::thread ? " thr" : "");
        // Counters are published after the batch that ran the call.
        EXPECT_TRUE(eventually([&] { return kcont_stats(cpu, l, k).run == before.run + 1; }));
        EXPECT_EQ(kcont_stats(cpu, l, k).run, before.run + 1);
        if (k == kind::thread) workers.insert(o.thread.load());
      }
    }
  }
  EXPECT_EQ(workers.size(), size_t(8 * kcont_ncpus()));
}

// Defect 3: continuations were allocated on the fly, even in interrupt
// context.  Debug builds abort on any allocation in interrupt context (the
// zero-allocation counts are in kcont_alloc_tests).
TEST(KcontDeathTest, Defect3_AllocationInInterruptContextAborts) {
#ifdef KCONT_DEBUG_ALLOC
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        config cfg;
        cfg.cpus = 1;
        kcont_start(cfg);
        kcont k;
        kcont_init(
            &k,
            [](void *, void *, int) {
              int *volatile p = new int(1);
              delete p;
            },
            nullptr, target::at(LVL_SOFTNET));
        kcont_defer(&k, nullptr, 0);
        std::this_thread::sleep_for(std::chrono::seconds(10));
      },
      "allocation in interrupt context");
#else
  GTEST_SKIP() << "allocation guard is compiled into Debug builds only";
#endif
}

// Defect 4: the worker polled with a one-second timeout and could lose a
// wake-up.  Here producers race the dispatchers and workers going to sleep,
// many thousands of times, one producer and then many; every deferral runs,
// and a lost one fails within seconds (a bounded wait, not the ctest
// timeout).  Then, idle, no dispatcher and no worker wakes up at all over a
// window longer than the 2004 poll period.
namespace {
// Waits (bounded) until `ran` reaches `want`; false means a wake-up was lost.
bool all_ran(const std::atomic<int> &ran, int want) {
  return eventually([&] { return ran.load() == want; }, 10);
}

uint64_t all_loops() {
  uint64_t n = 0;
  for (int c = 0; c < kcont_ncpus(); c++) {
    cpu_stats s = kcont_cpu_stats(c);
    n += s.loops + s.worker_loops;
  }
  return n;
}
}  // namespace

TEST_F(KcontTest, Defect4_NoLostWakeupsAndNoPolling) {
  const int n = stress_iters(4000);
  std::atomic<int> ran{0};
  auto count = [](void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); };
  // One producer, interrupt kind: each deferral waits for its run, so every
  // one meets a dispatcher that may be just falling asleep.
  kcont k;
  kcont_init(&k, count, &ran, target::at(LVL_SOFTNET, kind::interrupt, 1));
  for (int i = 0; i < n; i++) {
    ASSERT_TRUE(kcont_defer(&k, nullptr, 0));
    ASSERT_TRUE(all_ran(ran, i + 1)) << "lost wake-up at deferral " << i;
    if (i % 7 == 0) std::this_thread::sleep_for(std::chrono::microseconds(i % 50));
  }
  // Thread kind: the same for a worker.
  std::atomic<int> tran{0};
  kcont tk;
  kcont_init(&tk, count, &tran, target::in_thread(LVL_SOFTBIO, 0));
  for (int i = 0; i < n / 4; i++) {
    ASSERT_TRUE(kcont_defer(&tk, nullptr, 0));
    ASSERT_TRUE(all_ran(tran, i + 1)) << "lost worker wake-up at deferral " << i;
  }
  kcont_drain(&k);
  kcont_drain(&tk);
}

TEST_F(KcontTest, Defect4_NoLostWakeupsWithManyProducers) {
  const int per = stress_iters(2000);
  constexpr int P = 4, K = 8;
  std::atomic<int> ran{0};
  auto count = [](void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); };
  // Each producer owns K continuations on both CPUs and both kinds, and
  // defers whichever is idle, so deferrals never coalesce.
  std::vector<kcont> ks(P * K);
  for (int i = 0; i < P * K; i++)
    kcont_init(&ks[i], count, &ran,
               (i % 4 == 3) ? target::in_thread(LVL_SOFTBIO, int16_t(i % 2))
                            : target::at(LVL_SOFTNET, kind::interrupt, int16_t(i % 2)));
  std::atomic<int> deferred{0};
  std::vector<std::thread> ts;
  for (int p = 0; p < P; p++)
    ts.emplace_back([&, p] {
      for (int i = 0; i < per; i++) {
        kcont &kc = ks[p * K + i % K];
        while (kcont_state(&kc) != kc_state::idle) std::this_thread::yield();
        if (kcont_defer(&kc, nullptr, 0)) deferred++;
        if (i % 11 == 0) std::this_thread::sleep_for(std::chrono::microseconds(i % 30));
      }
    });
  for (auto &t : ts) t.join();
  EXPECT_EQ(deferred.load(), P * per);
  ASSERT_TRUE(all_ran(ran, deferred.load()))
      << "lost wake-up: " << ran.load() << " of " << deferred.load() << " ran";
  for (auto &kc : ks) kcont_drain(&kc);
}

TEST_F(KcontTest, Defect4_IdleDispatchersAndWorkersNeverWakeUp) {
  // Create a worker on every CPU too, and give everyone work once.
  std::atomic<int> ran{0};
  auto count = [](void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); };
  kcont ks[4];
  for (int i = 0; i < 4; i++) {
    kcont_init(&ks[i], count, &ran,
               i < 2 ? target::at(LVL_SOFTNET, kind::interrupt, int16_t(i))
                     : target::in_thread(LVL_SOFTBIO, int16_t(i % 2)));
    ASSERT_TRUE(kcont_defer(&ks[i], nullptr, 0));
  }
  ASSERT_TRUE(all_ran(ran, 4));
  for (auto &k : ks) kcont_drain(&k);
  // Quiet: the loop counters stop moving.
  uint64_t last = all_loops();
  ASSERT_TRUE(eventually([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    uint64_t now = all_loops();
    bool same = now == last;
    last = now;
    return same;
  }));
  // Any periodic wake-up with a period under 1.5 s -- the 2004 worker's
  // one-second poll included -- shows up here as a loop.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(all_loops(), last) << "an idle dispatcher or worker woke up";
}

// Defect 5: enqueueing a queued continuation corrupted the queue; there
// was no pending bit, cancel or drain.  Here concurrent deferrals of one
// continuation coalesce, chaining a queued one is refused, and cancel and
// drain exist (their races are in test_races.cc).
TEST_F(KcontTest, Defect5_DoubleDeferCoalescesAndChainingQueuedIsRefused) {
  std::atomic<int> ran{0};
  kcont k;
  kcont_init(
      &k, [](void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); }, &ran,
      target::at(LVL_SOFTNET, kind::interrupt, 0));
  std::atomic<int> accepted{0};
  std::atomic<bool> go{false};
  const int per = stress_iters(4000);
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; t++)
    ts.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < per; i++)
        if (kcont_defer(&k, nullptr, 0)) accepted.fetch_add(1);
    });
  go = true;
  for (auto &t : ts) t.join();
  kcont_drain(&k);
  EXPECT_EQ(ran.load(), accepted.load());  // each accepted deferral ran once
  EXPECT_GE(accepted.load(), 1);
  uint64_t coalesced = 0;
  for (int c = 0; c < kcont_ncpus(); c++)
    coalesced += kcont_stats(c, LVL_SOFTNET, kind::interrupt).coalesced;
  EXPECT_EQ(uint64_t(accepted.load()) + coalesced, uint64_t(3 * per));
  // Chaining a pending continuation is refused.
  kcq q;
  int rc = 0;
  on_cpu(0, [&] {
    level_set s = spl_block({LVL_SOFTNET});
    kcont_defer(&k, nullptr, 0);
    rc = kcq_enqueue(&q, &k);
    splx(s);
  });
  EXPECT_EQ(rc, EBUSY);
  kcont_drain(&k);
}

// Defect 6: kcont_run leaked one deferred item's object and status into
// the next.  Here each continuation carries its own.
TEST_F(KcontTest, Defect6_EachContinuationKeepsItsOwnObjectAndStatus) {
  constexpr int N = 32;
  struct rec {
    std::atomic<void *> obj{nullptr};
    std::atomic<int> status{-1};
  } recs[N];
  kcont ks[N];
  int objs[N];
  for (int i = 0; i < N; i++)
    kcont_init(
        &ks[i],
        [](void *obj, void *env, int st) {
          auto *r = static_cast<rec *>(env);
          r->obj = obj;
          r->status = st;
        },
        &recs[i], target::at(LVL_SOFTBIO, kind::interrupt, 0));
  kcq q;
  for (int i = 0; i < N / 2; i++) kcq_enqueue(&q, &ks[i]);
  on_cpu(0, [&] {
    level_set s = spl_block({LVL_SOFTBIO});
    for (int i = N / 2; i < N; i++) kcont_defer(&ks[i], &objs[i], 1000 + i);
    splx(s);
  });
  kcq_run(&q, &objs[0], 77);  // one event: same obj/status for its chain
  ASSERT_TRUE(eventually([&] {
    for (auto &r : recs)
      if (r.status.load() < 0) return false;
    return true;
  }));
  for (int i = 0; i < N / 2; i++) {
    EXPECT_EQ(recs[i].obj.load(), &objs[0]);
    EXPECT_EQ(recs[i].status.load(), 77);
  }
  for (int i = N / 2; i < N; i++) {
    EXPECT_EQ(recs[i].obj.load(), &objs[i]);
    EXPECT_EQ(recs[i].status.load(), 1000 + i);
  }
  for (auto &k : ks) kcont_drain(&k);
}

// Defect 7: the soft-clock queue was registered with the soft-net queue's
// address, so soft-clock continuations never ran.  Here every level's
// continuations run in that level, and callouts really fire at softclock.
TEST_F(KcontTest, Defect7_EveryLevelRunsItsOwnContinuations) {
  for (level l : kAllBuiltin) {
    observed o;
    o.ctx = context{l, kind::interrupt, true};
    kcont k;
    kcont_init(&k, observe, &o, target::at(l));
    kcont_defer(&k, nullptr, 0);
    ASSERT_TRUE(eventually([&] { return o.runs.load() == 1; })) << kcont_level_name(l);
    EXPECT_TRUE(o.ctx_ok.load()) << kcont_level_name(l);
    kcont_drain(&k);
  }
  struct fired {
    std::atomic<int> n{0};
    context ctx{};
  } f;
  callout co;
  callout_init(&co, 1);
  callout_reset(
      &co, 1,
      [](void *a) {
        auto *x = static_cast<fired *>(a);
        x->ctx = kcont_current_context();
        x->n++;
      },
      &f);
  ASSERT_TRUE(eventually([&] { return f.n.load() == 1; }));
  EXPECT_EQ(f.ctx.lvl, LVL_SOFTCLOCK);
  EXPECT_EQ(f.ctx.k, kind::interrupt);
  callout_halt(&co);
  EXPECT_EQ(callout_destroy(&co), 0);
}

// Defect 8: soft interrupts and kcont were two mechanisms.  Here softint,
// callout, workqueue and wait channels all dispatch through kcont queues,
// visible in kcont's own counters.
TEST_F(KcontTest, Defect8_OneMechanismUnderneath) {
  auto runs = [](level l, kind k) {
    uint64_t s = 0;
    for (int c = 0; c < kcont_ncpus(); c++) s += kcont_stats(c, l, k).run;
    return s;
  };
  // softint at softnet
  uint64_t before = runs(LVL_SOFTNET, kind::interrupt);
  std::atomic<int> si_runs{0};
  softint *si = softint_establish(
      LVL_SOFTNET, [](void *a) { static_cast<std::atomic<int> *>(a)->fetch_add(1); }, &si_runs);
  ASSERT_NE(si, nullptr);
  softint_schedule_cpu(si, 0);
  ASSERT_TRUE(eventually([&] { return si_runs.load() == 1; }));
  softint_disestablish(si);
  // Counters are published after the batch that ran the call.
  EXPECT_TRUE(eventually([&] { return runs(LVL_SOFTNET, kind::interrupt) >= before + 1; }));
  // callout at softclock
  before = runs(LVL_SOFTCLOCK, kind::interrupt);
  std::atomic<int> co_runs{0};
  callout co;
  callout_init(&co, 0);
  callout_reset(
      &co, 1, [](void *a) { static_cast<std::atomic<int> *>(a)->fetch_add(1); }, &co_runs);
  ASSERT_TRUE(eventually([&] { return co_runs.load() == 1; }));
  callout_halt(&co);
  // Counters are published after the batch that ran the call.
  EXPECT_TRUE(eventually([&] { return runs(LVL_SOFTCLOCK, kind::interrupt) >= before + 1; }));
  // workqueue at softbio, thread kind
  before = runs(LVL_SOFTBIO, kind::thread);
  std::atomic<int> wq_runs{0};
  workqueue *wq = nullptr;
  ASSERT_EQ(workqueue_create(
                &wq, "t", [](work *, void *a) { static_cast<std::atomic<int> *>(a)->fetch_add(1); },
                &wq_runs, LVL_SOFTBIO),
            0);
  work wk;
  ASSERT_TRUE(workqueue_enqueue(wq, &wk, 1));
  workqueue_wait(wq, &wk);
  EXPECT_EQ(wq_runs.load(), 1);
  workqueue_destroy(wq);
  // Counters are published after the batch that ran the call.
  EXPECT_TRUE(eventually([&] { return runs(LVL_SOFTBIO, kind::thread) >= before + 1; }));
  // a continuation waiter on a wait channel, woken from a thread
  before = runs(LVL_SOFTSERIAL, kind::interrupt);
  std::atomic<int> w_runs{0};
  kcont wk2;
  kcont_init(
      &wk2, [](void *, void *a, int) { static_cast<std::atomic<int> *>(a)->fetch_add(1); }, &w_runs,
      target::at(LVL_SOFTSERIAL));
  int chan = 0;
  ASSERT_EQ(wchan_wait(&chan, &wk2), 0);
  EXPECT_EQ(wakeup(&chan), 1);
  ASSERT_TRUE(eventually([&] { return w_runs.load() == 1; }));
  kcont_drain(&wk2);
  // Counters are published after the batch that ran the call.
  EXPECT_TRUE(eventually([&] { return runs(LVL_SOFTSERIAL, kind::interrupt) >= before + 1; }));
}
