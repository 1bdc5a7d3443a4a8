// SPDX-License-Identifier: BSD-2-Clause
// Biased continuations: a bound interrupt-kind continuation that its own
// CPU keeps deferring is moved with plain stores by that CPU's dispatcher;
// any other thread takes the bias away (membarrier handshake) before it
// touches the state word.  These tests check that the bias is taken and
// lost when the rules say, and that every race between the owner's plain
// stores and other threads' compare-and-swaps keeps the exact invariant
// "every accepted deferral runs or is cancelled, exactly once, and never
// beside itself".
#include <errno.h>

#include <random>
#include <thread>

#include "fixture.h"
#include "internal.h"
#include "stress.h"

using namespace kc;
using kctest::eventually;
using kctest::KcontTest;
using kctest::on_cpu;

namespace {

bool biased(const kcont &k) { return k.st.load() & detail::ST_BIASED; }

// A self-deferring chain on CPU 1.  It counts every accepted deferral it
// makes (the remote side counts its own), every call, every successful
// self-cancel, and whether two calls ever overlapped.
struct chain {
  kcont k;
  std::atomic<int> left{0};
  std::atomic<int> accepted{0}, ran{0}, cancelled{0}, overlap{0};
  std::atomic<bool> inside{false};
};

void chain_fn(void *, void *env, int) {
  auto *c = static_cast<chain *>(env);
  if (c->inside.exchange(true)) c->overlap++;
  int n = c->ran.fetch_add(1) + 1;
  if (c->left.load() > 0 && c->left.fetch_sub(1) > 1) {
    if (kcont_defer(&c->k, nullptr, 0)) c->accepted++;
    // Now and then the owner cancels and revives itself (the biased
    // CANCELLED -> PENDING path).
    if (n % 97 == 0 && kcont_cancel(&c->k)) {
      c->cancelled++;
      if (kcont_defer(&c->k, nullptr, 0)) c->accepted++;
    }
  }
  c->inside.store(false);
}

// Runs the chain to its end from the test thread: re-kicks it after a
// remote cancel stopped it, and waits for quiet.
void finish(chain &c) {
  for (;;) {
    ASSERT_EQ(kcont_drain(&c.k), 0);
    if (c.left.load() <= 0) return;
    if (kcont_defer(&c.k, nullptr, 0)) c.accepted++;
  }
}

// Kicks the chain for `steps` calls from this thread and waits for its end.
void run_chain(chain &c, int steps) {
  c.left = steps;
  ASSERT_TRUE(kcont_defer(&c.k, nullptr, 0));
  c.accepted++;
  finish(c);
}

}  // namespace

TEST_F(KcontTest, ABoundContinuationIsBiasedToItsCpuAndLosesTheBiasToOthers) {
  if (!detail::g_membarrier) KCONT_NOT_TESTED("membarrier(2) unavailable: no biasing here");
  chain c;
  ASSERT_EQ(kcont_init(&c.k, chain_fn, &c, target::at(LVL_SOFTNET, kind::interrupt, 1)), 0);
  EXPECT_FALSE(biased(c.k));
  run_chain(c, 1000);
  // 1000 deferrals by its own CPU: biased to CPU 1.
  EXPECT_TRUE(biased(c.k));
  EXPECT_EQ(detail::st_owner(c.k.st.load()), 1);
  EXPECT_EQ(c.ran.load() + c.cancelled.load(), c.accepted.load());
  // A deferral from another thread takes the bias away, and still runs.
  ASSERT_TRUE(kcont_defer(&c.k, nullptr, 0));
  c.accepted++;
  EXPECT_FALSE(biased(c.k));
  finish(c);
  EXPECT_EQ(c.ran.load() + c.cancelled.load(), c.accepted.load());
  // Biased again by a new run of the chain; CPU 0 chains it on a kcq (a
  // chained continuation is moved by whoever runs the chain: no bias).
  run_chain(c, 1000);
  EXPECT_TRUE(biased(c.k));
  kcq q;
  on_cpu(0, [&] { EXPECT_EQ(kcq_enqueue(&q, &c.k), 0); });
  EXPECT_FALSE(biased(c.k));
  EXPECT_EQ(kcont_state(&c.k), kc_state::chained);
  EXPECT_EQ(kcq_run(&q, nullptr, 0), 1);
  c.accepted++;
  finish(c);
  EXPECT_EQ(c.ran.load() + c.cancelled.load(), c.accepted.load());
  // Biased once more; re-initialised from this thread: the claim takes the
  // bias first, and a fresh continuation starts unbiased.
  run_chain(c, 1000);
  EXPECT_TRUE(biased(c.k));
  EXPECT_EQ(kcont_init(&c.k, chain_fn, &c, target::at(LVL_SOFTNET, kind::interrupt, 1)), 0);
  EXPECT_FALSE(biased(c.k));
  EXPECT_EQ(c.overlap.load(), 0);
}

// The owner's plain stores against another thread's cancels and deferrals,
// at random moments, thousands of times: nothing is lost, nothing runs
// twice, nothing runs beside itself.
TEST_F(KcontTest, RaceBiasedOwnerVsRemoteCancelAndDefer) {
  chain c;
  ASSERT_EQ(kcont_init(&c.k, chain_fn, &c, target::at(LVL_SOFTNET, kind::interrupt, 1)), 0);
  std::mt19937 rng(7);
  const int rounds = stress_iters(60);
  int remote_cancels = 0, biased_seen = 0;
  for (int r = 0; r < rounds; r++) {
    c.left = 4000;
    if (kcont_defer(&c.k, nullptr, 0)) c.accepted++;
    // Let the owner take the bias first (255 deferrals in a row), so the
    // race is run against the plain-store path every round.
    ASSERT_TRUE(eventually([&] { return biased(c.k) || c.left.load() <= 0; }));
    for (int i = 0; i < 20; i++) {
      for (int spin = int(rng() % 20000); spin > 0; spin--) asm volatile("" ::: "memory");
      if (biased(c.k)) biased_seen++;
      if (rng() % 2) {
        if (kcont_cancel(&c.k)) remote_cancels++;
      } else if (kcont_defer(&c.k, nullptr, 0)) {
        c.accepted++;
      }
    }
    finish(c);
    ASSERT_EQ(c.ran.load() + c.cancelled.load() + remote_cancels, c.accepted.load())
        << "round " << r;
    ASSERT_EQ(c.overlap.load(), 0);
  }
  EXPECT_GT(remote_cancels, 0);
  // The race was run against a biased owner (not only the CAS path).
  if (detail::g_membarrier) {
    EXPECT_GT(biased_seen, 0);
  }
}

// Another CPU's dispatcher (interrupt context) takes the bias: the unbias
// handshake runs on a dispatcher too, while the owner keeps deferring.
TEST_F(KcontTest, RaceBiasedOwnerVsOtherCpuDispatcher) {
  struct st {
    chain c;
    kcont remote;
    std::atomic<int> rounds{0}, remote_cancels{0};
  } s;
  ASSERT_EQ(kcont_init(&s.c.k, chain_fn, &s.c, target::at(LVL_SOFTNET, kind::interrupt, 1)), 0);
  ASSERT_EQ(kcont_init(
                &s.remote,
                [](void *, void *env, int) {
                  auto *x = static_cast<st *>(env);
                  if (x->rounds.load() % 2) {
                    if (kcont_cancel(&x->c.k)) x->remote_cancels++;
                  } else if (kcont_defer(&x->c.k, nullptr, 0)) {
                    x->c.accepted++;
                  }
                  x->rounds++;
                },
                &s, target::at(LVL_SOFTBIO, kind::interrupt, 0)),
            0);
  const int n = stress_iters(200);
  for (int i = 0; i < n; i++) {
    s.c.left = 2000;
    if (kcont_defer(&s.c.k, nullptr, 0)) s.c.accepted++;
    std::this_thread::yield();
    ASSERT_TRUE(kcont_defer(&s.remote, nullptr, 0));
    ASSERT_TRUE(eventually([&] { return s.rounds.load() == i + 1; }));
    ASSERT_EQ(kcont_drain(&s.remote), 0);
    finish(s.c);
    ASSERT_EQ(s.c.ran.load() + s.c.cancelled.load() + s.remote_cancels.load(), s.c.accepted.load());
  }
  EXPECT_EQ(s.c.overlap.load(), 0);
}
