// workqueue.cc -- workqueue(9) over kcont.
//
// Model and locking: see workqueue.h.  A work item's continuation is
// re-initialised at every enqueue with the target {level, thread, cpu}; the
// trampoline calls the user's function and then decrements the queue's
// outstanding count, which is the last thing it touches.
#include "kcont/workqueue.h"

#include <errno.h>

#include <cstdio>
#include <new>
#include <thread>

#include "internal.h"

namespace kc {

struct workqueue {
  char name[32] = {};
  void (*func)(work *, void *) = nullptr;
  void *arg = nullptr;
  level lvl{};
  std::atomic<uint64_t> outstanding{0};
};

namespace {
void wq_trampoline(void *obj, void *env, int) {
  auto *wq = static_cast<workqueue *>(env);
  wq->func(static_cast<work *>(obj), wq->arg);
  wq->outstanding.fetch_sub(1, std::memory_order_release);
}
}  // namespace

int workqueue_create(workqueue **wqp, const char *name, void (*func)(work *, void *), void *arg,
                     level lvl) {
  if (!wqp || !func || lvl.id >= kcont_level_count()) return EINVAL;
  if (!kcont_running()) return ENXIO;
  if (kcont_in_interrupt()) return EDEADLK;
  int e = kcont_establish(lvl, KC_CPU_ANY);
  if (e) return e;
  auto *wq = new (std::nothrow) workqueue;
  if (!wq) return ENOMEM;
  std::snprintf(wq->name, sizeof wq->name, "%s", name ? name : "wq");
  wq->func = func;
  wq->arg = arg;
  wq->lvl = lvl;
  *wqp = wq;
  return 0;
}

bool workqueue_enqueue(workqueue *wq, work *wk, int cpu) {
  if (!wq || !wk) return false;
  if (cpu == KC_CPU_ANY) cpu = detail::home_cpu();
  if (cpu < 0 || cpu >= kcont_ncpus()) return false;
  if (kcont_init(&wk->kc, wq_trampoline, wq, target::in_thread(wq->lvl, int16_t(cpu))) != 0)
    return false;  // pending (or being cancelled): already enqueued
  wq->outstanding.fetch_add(1, std::memory_order_relaxed);
  if (!kcont_defer(&wk->kc, wk, 0)) {
    wq->outstanding.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void workqueue_wait(workqueue *, work *wk) {
  if (wk) kcont_drain(&wk->kc);
}

void workqueue_destroy(workqueue *wq) {
  if (!wq) return;
  int spins = 0;
  while (wq->outstanding.load(std::memory_order_acquire) != 0) {
    if (++spins < 100)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  delete wq;
}

}  // namespace kc
