// SPDX-License-Identifier: BSD-2-Clause
// Allocation counting: this binary replaces the global operator new and
// malloc/calloc/realloc with counting versions, and checks that steady-state
// defer, dispatch, cross-CPU deferral, thread-kind deferral, kcq run,
// wakeup and callout make zero allocations per operation.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "count_allocs.h"
#include "kcont/callout.h"
#include "kcont/kcont.h"
#include "kcont/sleepq.h"

using namespace kc;

namespace {

constexpr int kOps = 20000;

struct chain {
  kcont k;
  std::atomic<int> left{0};
  std::atomic<bool> done{false};
};

void chain_fn(void *, void *env, int) {
  auto *c = static_cast<chain *>(env);
  if (c->left.fetch_sub(1) > 1)
    kcont_defer(&c->k, nullptr, 0);
  else
    c->done.store(true);
}

void wait_done(std::atomic<bool> &d) {
  while (!d.load()) std::this_thread::yield();
}

class AllocTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config cfg;
    cfg.cpus = 2;
    ASSERT_EQ(kcont_start(cfg), 0);
  }
  void TearDown() override { kcont_stop(); }

  // Runs a self-re-deferring chain of n operations at target t and returns
  // the allocations it made.
  uint64_t chain_allocs(target t, int n) {
    chain c;
    EXPECT_EQ(kcont_init(&c.k, chain_fn, &c, t), 0);
    // warm-up round (creates workers, touches lazily-initialised state)
    c.left = 10;
    kcont_defer(&c.k, nullptr, 0);
    wait_done(c.done);
    kcont_drain(&c.k);
    c.done = false;
    c.left = n;
    uint64_t before = g_allocs.load();
    kcont_defer(&c.k, nullptr, 0);
    wait_done(c.done);
    kcont_drain(&c.k);
    return g_allocs.load() - before;
  }
};

}  // namespace

TEST_F(AllocTest, SameCpuDeferAndDispatchAllocateNothing) {
  EXPECT_EQ(chain_allocs(target::at(LVL_SOFTNET, kind::interrupt, 0), kOps), 0u);
}

TEST_F(AllocTest, ThreadKindDeferAllocatesNothing) {
  EXPECT_EQ(chain_allocs(target::in_thread(LVL_SOFTBIO, 1), kOps / 4), 0u);
}

TEST_F(AllocTest, CrossCpuDeferAllocatesNothing) {
  // Ping-pong between two continuations bound to different CPUs.
  struct pp {
    kcont a, b;
    std::atomic<int> left{0};
    std::atomic<bool> done{false};
  } p;
  auto fn = [](void *, void *env, int status) {
    auto *x = static_cast<pp *>(env);
    if (x->left.fetch_sub(1) > 1)
      kcont_defer(status ? &x->a : &x->b, nullptr, !status);
    else
      x->done = true;
  };
  kcont_init(&p.a, fn, &p, target::at(LVL_SOFTNET, kind::interrupt, 0));
  kcont_init(&p.b, fn, &p, target::at(LVL_SOFTNET, kind::interrupt, 1));
  p.left = 10;
  kcont_defer(&p.a, nullptr, 0);
  wait_done(p.done);
  kcont_drain(&p.a);
  kcont_drain(&p.b);
  p.done = false;
  p.left = kOps;
  uint64_t before = g_allocs.load();
  kcont_defer(&p.a, nullptr, 0);
  wait_done(p.done);
  kcont_drain(&p.a);
  kcont_drain(&p.b);
  EXPECT_EQ(g_allocs.load() - before, 0u);
}

TEST_F(AllocTest, ChainRunAndWakeupAllocateNothing) {
  std::atomic<int> ran{0};
  kcont k;
  kcont_init(
      &k, [](void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); }, &ran,
      target::now());
  kcq q;
  int chan = 0;
  // warm-up: the calling thread gets its executor record once
  kcq_enqueue(&q, &k);
  kcq_run(&q, nullptr, 0);
  uint64_t before = g_allocs.load();
  for (int i = 0; i < kOps; i++) {
    kcq_enqueue(&q, &k);
    kcq_run(&q, nullptr, 0);
    wchan_wait(&chan, &k);
    wakeup(&chan);
  }
  EXPECT_EQ(g_allocs.load() - before, 0u);
  EXPECT_EQ(ran.load(), 2 * kOps + 1);
}

TEST_F(AllocTest, CalloutsAllocateNothing) {
  struct per {
    callout c;
    std::atomic<int> left{0};
    std::atomic<bool> done{false};
  } p;
  callout_init(&p.c, 1);
  auto fn = [](void *a) {
    auto *x = static_cast<per *>(a);
    if (x->left.fetch_sub(1) > 1)
      callout_schedule(&x->c, 1);
    else
      x->done = true;
  };
  p.left = 3;
  callout_reset(&p.c, 1, fn, &p);
  wait_done(p.done);
  callout_halt(&p.c);
  p.done = false;
  p.left = 200;
  uint64_t before = g_allocs.load();
  callout_reset(&p.c, 1, fn, &p);
  wait_done(p.done);
  callout_halt(&p.c);
  EXPECT_EQ(g_allocs.load() - before, 0u);
}
