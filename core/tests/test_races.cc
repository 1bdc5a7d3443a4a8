// SPDX-License-Identifier: BSD-2-Clause
// Races, each run many thousands of times: cancel vs run, drain vs
// re-defer, disestablish vs schedule, callout_halt vs expiry, and wakeup vs
// sleep timeout.  Every one checks an exact invariant, never a timing.
#include <errno.h>

#include <random>

#include "fixture.h"
#include "kcont/callout.h"
#include "kcont/sleepq.h"
#include "kcont/softint.h"
#include "stress.h"

using namespace kc;
using kctest::eventually;
using kctest::KcontTest;

// Every deferral either runs or is cancelled, never both, never neither.
TEST_F(KcontTest, RaceCancelVsRun) {
  std::atomic<int> ran{0};
  kcont k;
  kcont_init(
      &k, [](void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); }, &ran,
      target::at(LVL_SOFTNET, kind::interrupt, 1));
  const int n = stress_iters(4000);
  int cancelled = 0;
  std::mt19937 rng(1);
  for (int i = 0; i < n; i++) {
    ASSERT_TRUE(kcont_defer(&k, nullptr, 0));
    if (i % 4 == 0)
      std::this_thread::sleep_for(std::chrono::microseconds(100));  // let it run
    else
      for (int spin = int(rng() % 2000); spin > 0; spin--) asm volatile("" ::: "memory");
    if (kcont_cancel(&k)) cancelled++;
    ASSERT_EQ(kcont_drain(&k), 0);
    ASSERT_EQ(ran.load() + cancelled, i + 1);
  }
  EXPECT_EQ(ran.load() + cancelled, n);
  // Both outcomes happened (otherwise the race was not exercised).
  EXPECT_GT(cancelled, 0);
  EXPECT_GT(ran.load(), 0);
}

// Cancel from another CPU's interrupt context while that CPU runs it.
TEST_F(KcontTest, RaceCancelFromOtherCpuVsRun) {
  struct st {
    kcont victim;
    kcont canceller;
    std::atomic<int> ran{0}, cancelled{0}, rounds{0};
  } s;
  kcont_init(
      &s.victim, [](void *, void *env, int) { static_cast<st *>(env)->ran++; }, &s,
      target::at(LVL_SOFTBIO, kind::interrupt, 1));
  kcont_init(
      &s.canceller,
      [](void *, void *env, int) {
        auto *x = static_cast<st *>(env);
        if (kcont_cancel(&x->victim)) x->cancelled++;
        x->rounds++;
      },
      &s, target::at(LVL_SOFTNET, kind::interrupt, 0));
  const int n = stress_iters(3000);
  for (int i = 0; i < n; i++) {
    kcont_defer(&s.victim, nullptr, 0);
    kcont_defer(&s.canceller, nullptr, 0);
    ASSERT_TRUE(eventually([&] { return s.rounds.load() == i + 1; }));
    kcont_drain(&s.victim);
    ASSERT_EQ(s.ran.load() + s.cancelled.load(), i + 1);
  }
}

// A continuation that re-defers itself K times: drain returns only when
// the whole self-chain is over, never in the gap between two runs.
TEST_F(KcontTest, RaceDrainVsRedefer) {
  struct st {
    kcont k;
    std::atomic<int> left{0}, ran{0};
  } s;
  const int rounds = stress_iters(400);
  for (kind kd : {kind::interrupt, kind::thread}) {
    ASSERT_EQ(kcont_init(
                  &s.k,
                  [](void *, void *env, int) {
                    auto *x = static_cast<st *>(env);
                    x->ran++;
                    if (x->left.fetch_sub(1) > 1) kcont_defer(&x->k, nullptr, 0);
                  },
                  &s, target{LVL_SOFTNET, kd, false, 1}),
              0);
    for (int r = 0; r < rounds; r++) {
      int chain = 1 + r % 13;
      s.left = chain;
      s.ran = 0;
      ASSERT_TRUE(kcont_defer(&s.k, nullptr, 0));
      ASSERT_EQ(kcont_drain(&s.k), 0);
      ASSERT_EQ(s.ran.load(), chain) << "drain returned mid-chain";
      ASSERT_EQ(kcont_state(&s.k), kc_state::idle);
    }
  }
}

// Schedulers hammer a softint while it is disestablished: after
// softint_disestablish returns the handler never runs again.
TEST_F(KcontTest, RaceDisestablishVsSchedule) {
  const int n = stress_iters(300);
  for (int i = 0; i < n; i++) {
    std::atomic<int> runs{0};
    softint *si =
        softint_establish((i & 1) ? LVL_SOFTNET : LVL_SOFTCLOCK,
                          [](void *a) { static_cast<std::atomic<int> *>(a)->fetch_add(1); }, &runs,
                          (i % 4 == 3) ? kind::thread : kind::interrupt);
    ASSERT_NE(si, nullptr);
    std::atomic<bool> stop{false};
    std::thread t([&] {
      int c = 0;
      while (!stop.load()) softint_schedule_cpu(si, c++ & 1);
    });
    while (runs.load() == 0) std::this_thread::yield();
    softint_disestablish(si);
    int after = runs.load();
    for (int j = 0; j < 50; j++) std::this_thread::yield();
    stop = true;
    t.join();
    ASSERT_EQ(runs.load(), after) << "handler ran after disestablish";
  }
}

// A one-tick callout halted at random moments around its expiry: after
// callout_halt returns its function is not running and never runs later.
TEST_F(KcontTest, RaceCalloutHaltVsExpiry) {
  struct st {
    std::atomic<int> inside{0}, ran{0};
  } s;
  callout c;
  callout_init(&c, 1);
  const int n = stress_iters(600);
  std::mt19937 rng(7);
  int expired = 0;
  for (int i = 0; i < n; i++) {
    callout_reset(
        &c, 1,
        [](void *a) {
          auto *x = static_cast<st *>(a);
          x->inside = 1;
          for (int j = 0; j < 200; j++) asm volatile("" ::: "memory");
          x->ran++;
          x->inside = 0;
        },
        &s);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 1500));
    int before = s.ran.load();
    if (callout_halt(&c)) expired++;
    ASSERT_EQ(s.inside.load(), 0) << "function still running after halt";
    int after = s.ran.load();
    ASSERT_GE(after, before);
    ASSERT_FALSE(callout_pending(&c));
    // Nothing may run after halt.
    for (int j = 0; j < 20; j++) std::this_thread::yield();
    ASSERT_EQ(s.ran.load(), after);
  }
  EXPECT_GT(expired, 0);
  EXPECT_EQ(callout_destroy(&c), 0);
}

// Sleepers with tiny timeouts race wakers: every wakeup that found a
// sleeper is reported by exactly one sleeper as a wakeup (returns 0), so
// none is lost and none is doubled.
TEST_F(KcontTest, RaceWakeupVsSleepTimeout) {
  int chan = 0;
  const int per = stress_iters(3000);
  std::atomic<int> woken{0}, timed_out{0}, delivered{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> sleepers;
  for (int t = 0; t < 2; t++)
    sleepers.emplace_back([&, t] {
      for (int i = 0; i < per; i++) {
        int rc = tsleep(&chan, "race", 20000 + uint64_t((i * 7919 + t) % 40000));
        if (rc == 0)
          woken++;
        else if (rc == EWOULDBLOCK)
          timed_out++;
      }
    });
  std::thread waker([&] {
    int i = 0;
    while (!done.load()) {
      delivered += (i++ & 1) ? wakeup_one(&chan) : wakeup(&chan);
      if (i % 3 == 0) std::this_thread::yield();
    }
  });
  for (auto &t : sleepers) t.join();
  done = true;
  waker.join();
  EXPECT_EQ(woken.load() + timed_out.load(), 2 * per);
  EXPECT_EQ(delivered.load(), woken.load()) << "a wakeup was lost or doubled";
  EXPECT_GT(woken.load(), 0);
}
