// SPDX-License-Identifier: BSD-2-Clause
// softint.cc -- softint(9) over kcont.
//
// Model and locking: see softint.h.  A handle holds one continuation per
// CPU, each bound to its CPU and targeted at the handle's {level, kind};
// scheduling is kcont_defer, so a pending softint coalesces.  Handles are
// kept on a free list after disestablish (type-stable memory).
#include "kcont/softint.h"

#include <errno.h>

#include <mutex>
#include <new>
#include <thread>

#include "internal.h"
#include "kcont/sleepq.h"

namespace kc {

struct softint {
  void (*func)(void *) = nullptr;
  void *arg = nullptr;
  level lvl{};
  kind k = kind::interrupt;
  std::atomic<uint32_t> users{0};
  std::atomic<bool> dying{false};
  int ncpus = 0;
  softint *next_free = nullptr;
  kcont kcs[max_cpus];
};

namespace {
std::mutex g_si_lock;
softint *g_si_free = nullptr;

void softint_trampoline(void *, void *env, int) {
  auto *si = static_cast<softint *>(env);
  si->func(si->arg);
}
}  // namespace

softint *softint_establish(level lvl, void (*func)(void *), void *arg, kind k) {
  if (!func || lvl.id >= kcont_level_count() || !kcont_running() || kcont_in_interrupt())
    return nullptr;
  softint *si;
  {
    std::lock_guard<std::mutex> g(g_si_lock);
    si = g_si_free;
    if (si) g_si_free = si->next_free;
  }
  if (!si) si = new (std::nothrow) softint;
  if (!si) return nullptr;
  si->func = func;
  si->arg = arg;
  si->lvl = lvl;
  si->k = k;
  si->ncpus = kcont_ncpus();
  si->users.store(0);
  for (int i = 0; i < si->ncpus; i++) {
    if (kcont_init(&si->kcs[i], softint_trampoline, si, target{lvl, k, false, int16_t(i)}) != 0) {
      std::lock_guard<std::mutex> g(g_si_lock);
      si->next_free = g_si_free;
      g_si_free = si;
      return nullptr;
    }
  }
  si->dying.store(false, std::memory_order_release);
  return si;
}

bool softint_schedule_cpu(softint *si, int cpu) {
  if (!si || cpu < 0 || cpu >= si->ncpus) return false;
  // Once dying is visible, stay off `users` so disestablish sees it drain.
  if (si->dying.load(std::memory_order_relaxed)) return false;
  si->users.fetch_add(1, std::memory_order_seq_cst);
  bool ok = false;
  if (!si->dying.load(std::memory_order_seq_cst)) ok = kcont_defer(&si->kcs[cpu], nullptr, 0);
  // Handles are type-stable, so touching si after the decrement is safe.
  if (si->users.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
      si->dying.load(std::memory_order_seq_cst))
    wakeup(&si->users);
  return ok;
}

bool softint_schedule(softint *si) {
  if (!si) return false;
  return softint_schedule_cpu(si, detail::home_cpu());
}

int softint_disestablish(softint *si) {
  if (!si) return EINVAL;
  // In interrupt context it could not wait for a running handler, and
  // handing the handle to the next establish meanwhile would let two
  // owners share it: refused, as NetBSD requires thread context.
  if (kcont_in_interrupt()) return EDEADLK;
  si->dying.store(true, std::memory_order_seq_cst);
  detail::sleep_until(
      &si->users,
      [](void *a) { return static_cast<softint *>(a)->users.load(std::memory_order_seq_cst) == 0; },
      si);
  for (int i = 0; i < si->ncpus; i++) {
    kcont_cancel(&si->kcs[i]);
    // From the handler itself (thread kind): EDEADLK, nothing to wait for
    // beyond our own return; refuse to recycle a handle still running.
    if (kcont_drain(&si->kcs[i]) == EDEADLK) return EDEADLK;
  }
  std::lock_guard<std::mutex> g(g_si_lock);
  si->next_free = g_si_free;
  g_si_free = si;
  return 0;
}

}  // namespace kc
