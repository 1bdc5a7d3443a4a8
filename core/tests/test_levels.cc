// SPDX-License-Identifier: BSD-2-Clause
// Levels registered at start-up: registration rules, and that a user level
// runs its continuations in its own context on the CPU they asked for.
#include <errno.h>

#include "fixture.h"

using namespace kc;
using kctest::eventually;

TEST(KcontLevels, RegistrationRules) {
  ASSERT_FALSE(kcont_running());
  level a{}, b{};
  EXPECT_EQ(kcont_level_register("", 5, &a), EINVAL);
  EXPECT_EQ(kcont_level_register("softnet", 5, &a), EEXIST);
  ASSERT_EQ(kcont_level_register("test-user-a", 45, &a), 0);
  EXPECT_EQ(kcont_level_register("test-user-a", 45, &b), EEXIST);
  EXPECT_TRUE(kcont_level_lookup("test-user-a", &b));
  EXPECT_EQ(a, b);
  EXPECT_STREQ(kcont_level_name(a), "test-user-a");
  EXPECT_EQ(kcont_level_rank(a), 45);
  EXPECT_FALSE(kcont_level_lookup("no-such-level", &b));
  config cfg;
  cfg.cpus = 2;
  ASSERT_EQ(kcont_start(cfg), 0);
  EXPECT_EQ(kcont_level_register("too-late", 1, &b), EBUSY);
  // The user level runs in its own context, interrupt and thread kind, on
  // the CPU asked for; masking it holds nothing else.
  for (kind k : {kind::interrupt, kind::thread}) {
    for (int cpu = 0; cpu < 2; cpu++) {
      struct seen {
        std::atomic<int> n{0};
        context ctx{};
        int cpu = -1;
      } s;
      kcont kc;
      ASSERT_EQ(kcont_init(
                    &kc,
                    [](void *, void *env, int) {
                      auto *x = static_cast<seen *>(env);
                      x->ctx = kcont_current_context();
                      x->cpu = kcont_current_cpu();
                      x->n++;
                    },
                    &s, target{a, k, false, int16_t(cpu)}),
                0);
      kcont_defer(&kc, nullptr, 0);
      ASSERT_TRUE(eventually([&] { return s.n.load() == 1; }));
      kcont_drain(&kc);
      EXPECT_EQ(s.ctx.lvl, a);
      EXPECT_EQ(s.ctx.k, k);
      EXPECT_EQ(s.cpu, cpu);
    }
  }
  kcont_stop();
}

TEST(KcontLevels, EqualRanksAreServedInRegistrationOrder) {
  // Both registered above (or in this test); ranks are only an order of
  // service, so equal ranks are allowed.
  level a{}, x{};
  if (!kcont_level_lookup("test-user-a", &a)) {
    ASSERT_EQ(kcont_level_register("test-user-a", 45, &a), 0);
  }
  if (!kcont_level_lookup("test-equal-rank", &x)) {
    ASSERT_EQ(kcont_level_register("test-equal-rank", 45, &x), 0);
  }
  config cfg;
  cfg.cpus = 1;
  ASSERT_EQ(kcont_start(cfg), 0);
  std::atomic<int> first{-1};
  struct r {
    std::atomic<int> *first;
    int id;
  } ra{&first, 1}, rx{&first, 2};
  auto fn = [](void *, void *env, int) {
    auto *p = static_cast<r *>(env);
    int expect = -1;
    p->first->compare_exchange_strong(expect, p->id);
  };
  kcont ka, kx;
  kcont_init(&ka, fn, &ra, target::at(a, kind::interrupt, 0));
  kcont_init(&kx, fn, &rx, target::at(x, kind::interrupt, 0));
  kctest::on_cpu(0, [&] {
    level_set s = spl_block({a, x});
    kcont_defer(&kx, nullptr, 0);
    kcont_defer(&ka, nullptr, 0);
    splx(s);
  });
  ASSERT_TRUE(eventually([&] { return first.load() != -1; }));
  kcont_drain(&ka);
  kcont_drain(&kx);
  EXPECT_EQ(first.load(), 1);  // "test-user-a" was registered first
  kcont_stop();
}
