// SPDX-License-Identifier: BSD-2-Clause
// What kernel developers ask for next: a per-level flush (xc_barrier /
// flush_workqueue for a level), a machine-readable snapshot of every
// counter with a latency histogram, and an adaptive spin before a
// dispatcher sleeps (off by default).  Each test waits for events, never
// for time.
#include <errno.h>

#include <thread>
#include <vector>

#include "fixture.h"
#include "kcont/sleepq.h"

using namespace kc;
using kctest::eventually;
using kctest::KcontTest;
using kctest::on_cpu;

namespace {
struct flush_case {
  std::atomic<int> done{0};
  std::atomic<bool> open{false};
  kcont blocker;
  std::vector<kcont> items;
  flush_case() : items(64) {}
};
void count_done(void *, void *env, int) { static_cast<flush_case *>(env)->done++; }
// A thread-kind continuation that waits (sleeping) until the case opens.
void block_until_open(void *, void *env, int) {
  auto *f = static_cast<flush_case *>(env);
  while (!f->open.load()) tsleep(&f->open, "gate", 1000000);
  f->done++;
}
uint64_t run_count(int cpu, level l, kind k) { return kcont_stats(cpu, l, k).run; }
}  // namespace

// kcont_level_flush returns only after every continuation of the level that
// was pending when it was called ran: here one worker is held by a blocked
// continuation with 16 more queued behind it, and 48 interrupt-kind ones are
// queued on both CPUs.
TEST_F(KcontTest, LevelFlushWaitsForEverythingPendingOnEveryCpuAndKind) {
  flush_case f;
  ASSERT_EQ(kcont_init(&f.blocker, block_until_open, &f, target::in_thread(LVL_SOFTBIO, 0)), 0);
  ASSERT_TRUE(kcont_defer(&f.blocker, nullptr, 0));
  for (int i = 0; i < 16; i++) {
    ASSERT_EQ(kcont_init(&f.items[i], count_done, &f, target::in_thread(LVL_SOFTBIO, 0)), 0);
    ASSERT_TRUE(kcont_defer(&f.items[i], nullptr, 0));
  }
  for (int i = 16; i < 64; i++) {
    ASSERT_EQ(kcont_init(&f.items[i], count_done, &f,
                         target::at(LVL_SOFTBIO, kind::interrupt, int16_t(i & 1))),
              0);
    ASSERT_TRUE(kcont_defer(&f.items[i], nullptr, 0));
  }
  // The interrupt-kind ones run at once; the flush's marker on CPU 1 runs
  // after them, which shows (run count + 1) that the flush is under way.
  ASSERT_TRUE(eventually([&] { return f.done.load() == 48; }));
  ASSERT_TRUE(eventually([&] { return run_count(1, LVL_SOFTBIO, kind::interrupt) >= 24; }));
  const uint64_t before = run_count(1, LVL_SOFTBIO, kind::interrupt);
  std::atomic<int> seen_at_return{-1};
  std::atomic<int> rc{-1};
  std::thread t([&] {
    rc = kcont_level_flush(LVL_SOFTBIO);
    seen_at_return = f.done.load();
  });
  ASSERT_TRUE(eventually([&] { return run_count(1, LVL_SOFTBIO, kind::interrupt) == before + 1; }));
  EXPECT_EQ(seen_at_return.load(), -1) << "flush returned while the worker was blocked";
  f.open = true;
  wakeup(&f.open);
  t.join();
  EXPECT_EQ(rc.load(), 0);
  EXPECT_EQ(seen_at_return.load(), 65);  // the blocker, the 16 behind it, the 48
  kcont_drain(&f.blocker);
  for (auto &k : f.items) kcont_drain(&k);
}

TEST_F(KcontTest, LevelFlushRefusesWhereItCouldNeverReturn) {
  EXPECT_EQ(kcont_level_flush(level{200}), EINVAL);
  int rc = -1;
  on_cpu(0, [&] { rc = kcont_level_flush(LVL_SOFTNET); });
  EXPECT_EQ(rc, EDEADLK);  // a dispatcher
  struct st {
    kcont k;
    std::atomic<int> rc{-1};
  } s;
  ASSERT_EQ(kcont_init(
                &s.k,
                [](void *, void *env, int) {
                  static_cast<st *>(env)->rc = kcont_level_flush(LVL_SOFTBIO);
                },
                &s, target::in_thread(LVL_SOFTBIO, 1)),
            0);
  ASSERT_TRUE(kcont_defer(&s.k, nullptr, 0));
  ASSERT_TRUE(eventually([&] { return s.rc.load() != -1; }));
  EXPECT_EQ(s.rc.load(), EDEADLK);  // a worker of the level it flushes
  kcont_drain(&s.k);
  // Another level's worker may flush: its markers run elsewhere.
  ASSERT_EQ(kcont_init(
                &s.k,
                [](void *, void *env, int) {
                  static_cast<st *>(env)->rc = kcont_level_flush(LVL_SOFTNET);
                },
                &s, target::in_thread(LVL_SOFTBIO, 1)),
            0);
  s.rc = -1;
  ASSERT_TRUE(kcont_defer(&s.k, nullptr, 0));
  ASSERT_TRUE(eventually([&] { return s.rc.load() != -1; }));
  EXPECT_EQ(s.rc.load(), 0);
  kcont_drain(&s.k);
}

// The snapshot has one row per {cpu, level, kind}, in order, and its rows
// agree with kcont_stats; the latency histogram holds the sampled latency.
TEST_F(KcontTest, StatsSnapshotHasEveryCpuLevelAndKindAndAHistogram) {
  std::atomic<int> n{0};
  kcont k;
  ASSERT_EQ(
      kcont_init(
          &k, [](void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); },
          &n, target::at(LVL_SOFTSERIAL, kind::interrupt, 0)),
      0);
  // Each deferral wakes an idle dispatcher: one loop or more each, and one
  // latency sample per 64 loops.
  for (int i = 0; i < 300; i++) {
    ASSERT_TRUE(kcont_defer(&k, nullptr, 0));
    ASSERT_TRUE(eventually([&] { return n.load() == i + 1; }));
  }
  kcont_drain(&k);
  const size_t need = kcont_stats_snapshot(nullptr, 0);
  ASSERT_GE(need, size_t(kcont_ncpus() * kcont_level_count() * 2));
  std::vector<stats_row> rows(need);
  ASSERT_TRUE(eventually([&] {
    kcont_stats_snapshot(rows.data(), rows.size());
    for (auto &r : rows)
      if (r.cpu == 0 && r.lvl == LVL_SOFTSERIAL && r.k == kind::interrupt) return r.s.run >= 300;
    return false;
  }));
  EXPECT_EQ(kcont_stats_snapshot(rows.data(), rows.size()), need);
  size_t idx = 0;
  for (int c = 0; c < int(need) / (kcont_level_count() * 2); c++)
    for (int l = 0; l < kcont_level_count(); l++)
      for (int kd = 0; kd < 2; kd++, idx++) {
        ASSERT_EQ(rows[idx].cpu, c);
        ASSERT_EQ(rows[idx].lvl.id, l);
        ASSERT_EQ(int(rows[idx].k), kd);
      }
  uint64_t samples = 0;
  for (auto &r : rows)
    for (uint64_t h : r.s.latency_hist) samples += h;
  EXPECT_GE(samples, 1u);
  level_stats ss = kcont_stats(0, LVL_SOFTSERIAL, kind::interrupt);
  EXPECT_GE(ss.run, 300u);
  // A short array gets what fits and the true count.
  stats_row two[2];
  EXPECT_EQ(kcont_stats_snapshot(two, 2), need);
  EXPECT_EQ(two[1].cpu, 0);
  EXPECT_EQ(two[1].k, kind::thread);
}

// Adaptive spin: off by default (no spins at all); on, an idle dispatcher
// spins before each sleep and work still runs; out of range is refused.
TEST(KcontSpin, AdaptiveSpinIsOffByDefaultAndBounded) {
  config cfg;
  cfg.cpus = 2;
  cfg.spin_ns = 20000000;
  std::string err;
  EXPECT_EQ(kcont_start(cfg, &err), EINVAL);
  EXPECT_NE(err.find("spin_ns"), std::string::npos);
  for (unsigned spin : {0u, 200000u}) {
    cfg.spin_ns = spin;
    ASSERT_EQ(kcont_start(cfg, &err), 0) << err;
    std::atomic<int> n{0};
    kcont k;
    ASSERT_EQ(
        kcont_init(
            &k, [](void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); },
            &n, target::at(LVL_SOFTNET, kind::interrupt, 1)),
        0);
    for (int i = 0; i < 200; i++) {
      ASSERT_TRUE(kcont_defer(&k, nullptr, 0));
      ASSERT_TRUE(eventually([&] { return n.load() == i + 1; }));
    }
    kcont_drain(&k);
    // Idle again: with the spin on, it spun at least once before sleeping.
    ASSERT_TRUE(eventually([&] { return kcont_cpu_stats(1).sleeps > 0; }));
    cpu_stats cs = kcont_cpu_stats(1);
    if (spin == 0) {
      EXPECT_EQ(cs.spins, 0u);
    } else {
      EXPECT_GE(cs.spins, 1u);
      EXPECT_LE(cs.spin_hits, cs.spins);
    }
    kcont_stop();
  }
}
