// SPDX-License-Identifier: BSD-2-Clause
// workqueue.cc -- workqueue(9) over kcont.
//
// Model and locking: see workqueue.h.  An enqueue claims the item's
// continuation IDLE -> PENDING with one compare-and-swap (the same claim
// kcont_defer makes), and only then, owning it, writes its target {level,
// thread, cpu} and links it: there is no check-then-write window in which a
// second enqueue could relink an item that sits in a worker's inbox.  The
// trampoline calls the user's function and then decrements the queue's
// outstanding count; that decrement is the last access to the queue, and
// the wake-up after it uses the queue's address as a key only.
#include "kcont/workqueue.h"

#include <errno.h>

#include <cstdio>
#include <new>

#include "internal.h"
#include "kcont/sleepq.h"

namespace kc {

struct workqueue {
  char name[32] = {};
  void (*func)(work *, void *) = nullptr;
  void *arg = nullptr;
  level lvl{};
  // low 32 bits: outstanding items; high 32 bits: threads waiting for zero
  std::atomic<uint64_t> outstanding{0};
};

namespace detail {
struct work_access {
  static kcont *kc(work *wk) { return &wk->kc; }
  static const kcont *kc(const work *wk) { return &wk->kc; }
};
}  // namespace detail

using namespace detail;

namespace {
constexpr uint64_t WAITER = 1ull << 32;
constexpr uint64_t COUNT_MASK = WAITER - 1;

// One item finished (or was cancelled): the only access to wq after it.
void wq_done(workqueue *wq) {
  uint64_t old = wq->outstanding.fetch_sub(1, std::memory_order_seq_cst);
  if ((old & COUNT_MASK) == 1 && (old >> 32)) wakeup(&wq->outstanding);
}

void wq_trampoline(void *obj, void *env, int) {
  auto *wq = static_cast<workqueue *>(env);
  wq->func(static_cast<work *>(obj), wq->arg);
  wq_done(wq);
}

void count_coalesced(workqueue *wq, int cpu) {
  if (cpu >= 0 && cpu < sys().ncpus && sys().cpus[cpu])
    sys().cpus[cpu]->stats[wq->lvl.id][int(kind::thread)].coalesced.fetch_add(1, rlx);
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
  if (!wq || !wk || !kcont_running()) return false;
  if (cpu == KC_CPU_ANY) cpu = home_cpu();
  if (cpu < 0 || cpu >= kcont_ncpus()) return false;
  kcont *kc = work_access::kc(wk);
  wq->outstanding.fetch_add(1, std::memory_order_relaxed);
  uint64_t w = kc->st.load(rlx);
  for (;;) {
    uint32_t s = st_of(w);
    if (s == ST_IDLE) {
      if (!kc->st.compare_exchange_weak(w, st_with(w, ST_PENDING), std::memory_order_seq_cst, rlx))
        continue;
      // Ours now.  Running somewhere?  Then that CPU's worker takes it, so
      // it never runs beside itself (ran_on was stored before the running
      // call's claim, which our compare-and-swap read).
      auto *r = static_cast<executor *>(kc->ran_on.load(rlx));
      if (r && r->c && executor_runs(r, kc)) cpu = r->c->id;
      kc->fn = wq_trampoline;
      kc->env = wq;
      kc->tgt = target::in_thread(wq->lvl, int16_t(cpu));
      kc->obj.store(wk, rlx);
      kc->status.store(0, rlx);
      if (link_pending(kc)) return true;
      wq_done(wq);  // kcont stopped meanwhile
      return false;
    }
    if (s == ST_CANCELLED) {
      // Cancelled but still in its worker's inbox: revive it there.
      if (kcont_defer(kc, wk, 0)) return true;
      w = kc->st.load(rlx);
      if (st_of(w) == ST_IDLE) continue;
    }
    if (s == ST_PENDING || s == ST_REVIVING || s == ST_CANCELLED) count_coalesced(wq, cpu);
    wq_done(wq);
    return false;
  }
}

bool workqueue_pending(const work *wk) {
  uint32_t s = st_of(work_access::kc(wk)->st.load(std::memory_order_acquire));
  return s == ST_PENDING || s == ST_REVIVING;
}

bool workqueue_cancel(workqueue *wq, work *wk) {
  if (!wq || !wk) return false;
  kcont *kc = work_access::kc(wk);
  if (kcont_cancel(kc)) {
    // It will not run; its link stays in the worker's inbox until the
    // worker passes it (workqueue_wait waits for that).
    wq_done(wq);
    return true;
  }
  // Already cancelled (its link not yet passed): nothing runs, no wait.
  if (st_of(kc->st.load(std::memory_order_acquire)) == ST_CANCELLED) return false;
  kcont_drain(kc);  // running: wait (EDEADLK from its own function: no wait)
  return false;
}

int workqueue_wait(workqueue *, work *wk) {
  if (!wk) return EINVAL;
  return kcont_drain(work_access::kc(wk));
}

int workqueue_flush(workqueue *wq) {
  if (!wq) return EINVAL;
  if (kcont_in_interrupt()) return EDEADLK;
  // A thread of wq's level waiting for wq: its own items (or the ones
  // queued behind it on the same worker) could never run.
  context c = kcont_current_context();
  if (c.valid && c.k == kind::thread && c.lvl == wq->lvl) return EDEADLK;
  wq->outstanding.fetch_add(WAITER, std::memory_order_seq_cst);
  sleep_until(
      &wq->outstanding,
      [](void *a) {
        auto *q = static_cast<workqueue *>(a);
        return (q->outstanding.load(std::memory_order_acquire) & COUNT_MASK) == 0;
      },
      wq);
  wq->outstanding.fetch_sub(WAITER, std::memory_order_relaxed);
  return 0;
}

uint32_t workqueue_outstanding(const workqueue *wq) {
  return wq ? uint32_t(wq->outstanding.load(rlx) & COUNT_MASK) : 0;
}

void workqueue_destroy(workqueue *wq) {
  if (!wq) return;
  workqueue_flush(wq);
  delete wq;
}

// ---------------------------------------------------------------- delayed work

namespace {
void delayed_fire(void *arg) {
  auto *dw = static_cast<delayed_work *>(arg);
  workqueue_enqueue(dw->wq, &dw->wk, dw->cpu);
}
}  // namespace

int delayed_work_init(delayed_work *dw, workqueue *wq, int cpu) {
  if (!dw || !wq || !kcont_running()) return EINVAL;
  if (cpu == KC_CPU_ANY) cpu = kcont_current_cpu() >= 0 ? kcont_current_cpu() : 0;
  if (cpu < 0 || cpu >= kcont_ncpus()) return EINVAL;
  dw->wq = wq;
  dw->cpu = cpu;
  callout_init(&dw->timer, cpu);
  callout_setfunc(&dw->timer, delayed_fire, dw);
  return 0;
}

int workqueue_enqueue_delayed(delayed_work *dw, uint64_t ticks) {
  if (!dw || !dw->wq) return EINVAL;
  if (ticks == 0) {
    callout_stop(&dw->timer);
    workqueue_enqueue(dw->wq, &dw->wk, dw->cpu);
    return kcont_running() ? 0 : EINVAL;
  }
  return callout_schedule(&dw->timer, ticks);
}

bool workqueue_cancel_delayed(delayed_work *dw) {
  if (!dw || !dw->wq) return false;
  bool was = callout_pending(&dw->timer);
  callout_halt(&dw->timer);  // the timer cannot enqueue it any more
  return workqueue_cancel(dw->wq, &dw->wk) || was;
}

}  // namespace kc
