// SPDX-License-Identifier: BSD-2-Clause
// The rules the API reference states, each with a test that fails when the
// rule is broken: non-reentrance, init claims, CPU-private ownership, pool
// hand-back, wake-ups that are never lost, continuations that free their own
// object, and waits that sleep once instead of polling.
#include <errno.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "fixture.h"
#include "internal.h"
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

// Voluntary context switches of thread `tid` so far.
uint64_t voluntary_switches(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("voluntary_ctxt_switches:", 0) == 0)
      return std::stoull(line.substr(std::strlen("voluntary_ctxt_switches:")));
  return 0;
}

// True once thread `tid` is asleep (state S) in the kernel.
bool is_sleeping(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto p = s.rfind(')');
  return p != std::string::npos && p + 2 < s.size() && s[p + 2] == 'S';
}

pid_t gettid_() { return pid_t(syscall(SYS_gettid)); }

// Runs `wait` on a thread while `release` is held back: the waiter must fall
// asleep, stay asleep through a long window, and be woken once.  Returns
// the waiter's voluntary context switches over the whole wait; a polling
// wait (yield then 20-50 us sleeps) makes thousands in the window.
template <class Wait, class Release>
uint64_t switches_while_waiting(Wait wait, Release release) {
  std::atomic<pid_t> tid{0};
  std::atomic<bool> done{false};
  std::atomic<uint64_t> before{0};
  std::thread t([&] {
    before = voluntary_switches(gettid_());
    tid = gettid_();
    wait();
    done = true;
  });
  EXPECT_TRUE(eventually([&] { return tid.load() != 0 && is_sleeping(tid.load()); }));
  // The window: any periodic wake-up of the waiter shows here.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  uint64_t mid = voluntary_switches(tid.load());
  release();
  EXPECT_TRUE(eventually([&] { return done.load(); }));
  t.join();
  return mid - before.load();
}

}  // namespace

// ---------------------------------------------------------------- non-reentrance

// An unbound continuation deferred from another CPU while it runs waits for
// its running call instead of running beside it.
TEST_F(KcontTest, AContinuationNeverRunsOnTwoCpusAtOnce) {
  struct st {
    kcont kc;
    std::atomic<int> inside{0}, overlap{0}, runs{0};
    std::atomic<bool> go{false}, redeferred{false};
  } s;
  // The helper asks CPU 1 to defer the continuation once it runs on CPU 0.
  std::thread helper([&] {
    while (!s.go.load()) std::this_thread::yield();
    kcont_run_on(
        1, LVL_SOFTNET,
        [](void *a) {
          auto *y = static_cast<st *>(a);
          kcont_defer(&y->kc, nullptr, 0);
          y->redeferred = true;
        },
        &s);
  });
  kcont_init(
      &s.kc,
      [](void *, void *env, int) {
        auto *x = static_cast<st *>(env);
        if (x->inside.fetch_add(1) != 0) x->overlap++;
        if (x->runs.fetch_add(1) == 0) {
          x->go = true;
          // Give a second (wrong) run on CPU 1 a window to start beside us.
          while (!x->redeferred.load()) cpu_relax();
          auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
          while (std::chrono::steady_clock::now() < end && x->inside.load() < 2) cpu_relax();
        }
        x->inside.fetch_sub(1);
      },
      &s, target::at(LVL_SOFTNET));  // unbound
  on_cpu(
      0, [&] { kcont_defer(&s.kc, nullptr, 0); }, LVL_SOFTSERIAL);
  ASSERT_TRUE(eventually([&] { return s.runs.load() == 2; }, 10));
  helper.join();
  kcont_drain(&s.kc);
  EXPECT_EQ(s.overlap.load(), 0);
}

// A work item enqueued to another CPU while its function runs runs there
// only after the running call returns (Linux's non-reentrance).
TEST_F(KcontTest, AWorkItemNeverRunsBesideItself) {
  struct st {
    work wk;
    workqueue *wq = nullptr;
    std::atomic<int> inside{0}, overlap{0}, runs{0};
  } s;
  ASSERT_EQ(workqueue_create(
                &s.wq, "reent",
                [](work *, void *a) {
                  auto *x = static_cast<st *>(a);
                  if (x->inside.fetch_add(1) != 0) x->overlap++;
                  if (x->runs.fetch_add(1) == 0) {
                    EXPECT_TRUE(workqueue_enqueue(x->wq, &x->wk, 1 - kcont_current_cpu()));
                    int chan;
                    tsleep(&chan, "window", 50000000);  // a window for a wrong second run
                  }
                  x->inside.fetch_sub(1);
                },
                &s, LVL_SOFTBIO),
            0);
  ASSERT_TRUE(workqueue_enqueue(s.wq, &s.wk, 0));
  ASSERT_TRUE(eventually([&] { return s.runs.load() == 2; }, 10));
  workqueue_destroy(s.wq);
  EXPECT_EQ(s.overlap.load(), 0);
}

// ---------------------------------------------------------------- init claims

// Two threads initialise one continuation at once, over and over: each
// gets 0 or EBUSY (never a half-written record), and the continuation then
// defers and runs exactly once.  (Re-initialising a continuation that
// another thread may be deferring is a caller error; the workqueue race
// test covers enqueue, which used to do exactly that internally.)
TEST_F(KcontTest, ConcurrentInitsOfOneContinuationHaveOneWinner) {
  const int n = stress_iters(2000);
  std::atomic<int> ran{0};
  auto fn = [](void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); };
  for (int i = 0; i < n; i++) {
    kcont k;
    std::atomic<int> go{0};
    int r[2] = {-1, -1};
    auto racer = [&](int me, level l) {
      go++;
      while (go.load() < 2) cpu_relax();
      r[me] = kcont_init(&k, fn, &ran, target::at(l, kind::interrupt, int16_t(me)));
    };
    std::thread a(racer, 0, LVL_SOFTNET), b(racer, 1, LVL_SOFTBIO);
    a.join();
    b.join();
    ASSERT_TRUE(r[0] == 0 || r[0] == EBUSY) << r[0];
    ASSERT_TRUE(r[1] == 0 || r[1] == EBUSY) << r[1];
    ASSERT_TRUE(r[0] == 0 || r[1] == 0);
    ASSERT_TRUE(kcont_defer(&k, nullptr, 0));
    ASSERT_TRUE(eventually([&] { return ran.load() == i + 1; }, 10)) << "deferral " << i << " lost";
    ASSERT_EQ(kcont_drain(&k), 0);
  }
}

TEST_F(KcontTest, ACpuPrivateContinuationIsReinitialisedOnlyOnItsCpu) {
  kcont k;
  auto fn = [](void *, void *, int) {};
  ASSERT_EQ(kcont_init(&k, fn, nullptr, target::cpu_private_to(LVL_SOFTNET, 1)), 0);
  EXPECT_EQ(kcont_init(&k, fn, nullptr, target::at(LVL_SOFTNET)), EPERM);  // off its CPU
  int on0 = -1, on1 = -1;
  on_cpu(0, [&] { on0 = kcont_init(&k, fn, nullptr, target::at(LVL_SOFTNET)); });
  EXPECT_EQ(on0, EPERM);
  on_cpu(1, [&] { on1 = kcont_init(&k, fn, nullptr, target::cpu_private_to(LVL_SOFTBIO, 1)); });
  EXPECT_EQ(on1, 0);
}

// ---------------------------------------------------------------- pools

TEST_F(KcontTest, PoolRefusesPendingAndSecondPuts) {
  std::atomic<int> ran{0};
  kcont_pool *p = kcont_pool_create(
      2, [](void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); }, &ran,
      target::at(LVL_SOFTNET, kind::interrupt, 1));
  ASSERT_NE(p, nullptr);
  kcont *k = kcont_pool_get(p);
  ASSERT_NE(k, nullptr);
  int put_pending = -1;
  on_cpu(1, [&] {
    kcont_defer(k, nullptr, 0);  // pending on this very CPU until we return
    put_pending = kcont_pool_put(p, k);
  });
  EXPECT_EQ(put_pending, EBUSY);
  ASSERT_TRUE(eventually([&] { return ran.load() == 1; }));
  kcont_drain(k);
  EXPECT_EQ(kcont_pool_put(p, k), 0);
  EXPECT_EQ(kcont_pool_put(p, k), EINVAL);  // second put
  kcont other;
  EXPECT_EQ(kcont_pool_put(p, &other), EINVAL);
  EXPECT_EQ(kcont_pool_available(p), 2u);
  kcont_pool_destroy(p);
}

// ---------------------------------------------------------------- wake-ups

// A sleeper is never lost: a wakeup issued while kcont is stopped still
// wakes it (it used to be deferred to a dispatcher that no longer exists).
TEST(KcontNoSystem, WakeupWhileStoppedStillWakesTheSleeper) {
  config cfg;
  cfg.cpus = 1;
  ASSERT_EQ(kcont_start(cfg), 0);
  kcont_stop();
  int chan = 0;
  std::atomic<int> rc{-1};
  std::thread t([&] { rc = tsleep(&chan, "stopped", 20'000'000'000ull); });  // bound: 20 s
  while (wakeup(&chan) == 0) std::this_thread::yield();
  t.join();
  EXPECT_EQ(rc.load(), 0);  // woken, not timed out
}

// mtsleep chains the sleeper before it releases the interlock.  The hook
// runs right after the release and issues the wakeup under the interlock
// at once: were the release first and the chaining second, that wakeup
// would find nobody and the sleep would run to its timeout.
namespace {
std::mutex g_il;
bool g_ready = false;
int g_chan = 0;
}  // namespace

TEST_F(KcontTest, MtsleepChainsBeforeReleasingTheInterlock) {
  detail::g_mtsleep_unlocked_hook = [](const void *chan) {
    if (chan != &g_chan) return;
    std::lock_guard<std::mutex> g(g_il);
    g_ready = true;
    wakeup(&g_chan);
  };
  const int n = stress_iters(200);
  for (int i = 0; i < n; i++) {
    std::unique_lock<std::mutex> g(g_il);
    g_ready = false;
    int rc = 0;
    while (!g_ready && rc == 0) rc = mtsleep(&g_chan, "il", 10'000'000'000ull, g_il);  // bound
    ASSERT_EQ(rc, 0) << "the wakeup issued under the interlock was lost";
  }
  detail::g_mtsleep_unlocked_hook = nullptr;
}

// ---------------------------------------------------------------- freeing itself

// The framework never touches a continuation after calling it: a function
// may free the object that embeds it (ASan checks this stage).
TEST_F(KcontTest, AContinuationMayFreeItsOwnObject) {
  struct obj {
    kcont kc;
    std::atomic<int> *count;
  };
  std::atomic<int> count{0};
  auto free_me = [](void *, void *env, int) {
    auto *o = static_cast<obj *>(env);
    o->count->fetch_add(1);
    delete o;
  };
  const target targets[] = {target::at(LVL_SOFTNET, kind::interrupt, 1), target::at(LVL_SOFTNET),
                            target::in_thread(LVL_SOFTBIO, 0), target::now()};
  int expect = 0;
  for (int round = 0; round < 50; round++) {
    for (const target &t : targets) {
      auto *o = new obj{{}, &count};
      ASSERT_EQ(kcont_init(&o->kc, free_me, o, t), 0);
      if (t.immediate) {
        kcq q;
        ASSERT_EQ(kcq_enqueue(&q, &o->kc), 0);
        ASSERT_EQ(kcq_run(&q, nullptr, 0), 1);  // called here, frees itself
      } else {
        ASSERT_TRUE(kcont_defer(&o->kc, nullptr, 0));
      }
      expect++;
    }
    // From a dispatcher: a chain run in the exact context calls directly
    // (allocated here: interrupt context must not allocate).
    auto *d = new obj{{}, &count};
    on_cpu(
        1,
        [&] {
          kcont_init(&d->kc, free_me, d, target::at(LVL_SOFTNET, kind::interrupt, 1));
          kcq q;
          kcq_enqueue(&q, &d->kc);
          kcq_run(&q, nullptr, 0);
        },
        LVL_SOFTNET);
    expect++;
  }
  ASSERT_TRUE(eventually([&] { return count.load() == expect; }));
  // A work item freeing itself.
  struct item {
    work wk;
    std::atomic<int> *count;
  };
  workqueue *wq = nullptr;
  ASSERT_EQ(workqueue_create(
                &wq, "free",
                [](work *wk, void *) {
                  auto *it = reinterpret_cast<item *>(wk);
                  it->count->fetch_add(1);
                  delete it;
                },
                nullptr, LVL_SOFTBIO),
            0);
  for (int i = 0; i < 100; i++)
    ASSERT_TRUE(workqueue_enqueue(wq, &(new item{{}, &count})->wk, i & 1));
  workqueue_destroy(wq);
  EXPECT_EQ(count.load(), expect + 100);
}

// ---------------------------------------------------------------- waits sleep once

TEST_F(KcontTest, DrainSleepsUntilWokenInsteadOfPolling) {
  std::atomic<bool> release{false}, started{false};
  kcont k;
  struct env_t {
    std::atomic<bool> *release, *started;
  } e{&release, &started};
  kcont_init(
      &k,
      [](void *, void *env, int) {
        auto *x = static_cast<env_t *>(env);
        x->started->store(true);
        int chan;
        while (!x->release->load()) tsleep(&chan, "hold", 1000000);  // a worker may block
      },
      &e, target::in_thread(LVL_SOFTBIO, 0));
  ASSERT_TRUE(kcont_defer(&k, nullptr, 0));
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  uint64_t sw =
      switches_while_waiting([&] { EXPECT_EQ(kcont_drain(&k), 0); }, [&] { release = true; });
  EXPECT_LE(sw, 4u) << "kcont_drain woke up " << sw << " times";
}

TEST_F(KcontTest, CalloutHaltAndWorkqueueFlushSleepUntilWoken) {
  // callout_halt on a callout whose function is running.
  struct co_t {
    callout c;
    std::atomic<bool> release{false}, started{false};
  } co;
  callout_init(&co.c, 1);
  callout_reset(
      &co.c, 1,
      [](void *a) {
        auto *x = static_cast<co_t *>(a);
        x->started = true;
        while (!x->release.load()) cpu_relax();  // holds CPU 1's softclock
      },
      &co);
  ASSERT_TRUE(eventually([&] { return co.started.load(); }));
  uint64_t sw = switches_while_waiting([&] { callout_halt(&co.c); }, [&] { co.release = true; });
  EXPECT_LE(sw, 4u) << "callout_halt woke up " << sw << " times";

  // workqueue_flush with an item blocked in its function.
  struct wq_t {
    work wk;
    std::atomic<bool> release{false}, started{false};
  } w;
  workqueue *wq = nullptr;
  ASSERT_EQ(workqueue_create(
                &wq, "flush",
                [](work *, void *a) {
                  auto *x = static_cast<wq_t *>(a);
                  x->started = true;
                  int chan;
                  while (!x->release.load()) tsleep(&chan, "hold", 1000000);
                },
                &w, LVL_SOFTBIO),
            0);
  ASSERT_TRUE(workqueue_enqueue(wq, &w.wk, 0));
  ASSERT_TRUE(eventually([&] { return w.started.load(); }));
  sw =
      switches_while_waiting([&] { EXPECT_EQ(workqueue_flush(wq), 0); }, [&] { w.release = true; });
  EXPECT_LE(sw, 4u) << "workqueue_flush woke up " << sw << " times";
  workqueue_destroy(wq);
}
