// SPDX-License-Identifier: BSD-2-Clause
// sleepq.cc -- wait channels over kcont (see sleepq.h for the model).
//
// A thread that sleeps puts a continuation on its stack, chains it on the
// channel's bucket with the channel as its key, and waits on a futex word
// that the continuation's function sets.  The continuation is immediate, so
// wakeup() calls it on the spot from any thread: one futex wake per sleeper,
// no hop through a dispatcher.  On timeout the sleeper unchains itself; if
// that fails a wakeup owns the continuation and is about to run it, so the
// sleeper waits for the flag and reports the wakeup.
#include "kcont/sleepq.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <functional>

#include "internal.h"

namespace kc {
namespace {

constexpr int NBUCKETS = 256;
kcq g_buckets[NBUCKETS];

kcq *bucket_of(const void *chan) {
  auto h = reinterpret_cast<uintptr_t>(chan);
  h ^= h >> 17;
  h *= 0x9E3779B97F4A7C15ull;
  return &g_buckets[(h >> 56) % NBUCKETS];
}

struct sleeper {
  kcont kc;
  std::atomic<uint32_t> woken{0};
};

void sleeper_wake(void *, void *env, int) {
  auto *w = static_cast<std::atomic<uint32_t> *>(env);
  w->store(1, std::memory_order_release);
  syscall(SYS_futex, reinterpret_cast<uint32_t *>(w), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

// Waits for the flag until `deadline_ns` (0: forever).  True when woken.
bool wait_flag(std::atomic<uint32_t> &w, uint64_t deadline_ns) {
  for (;;) {
    if (w.load(std::memory_order_acquire)) return true;
    timespec rel{}, *tp = nullptr;
    if (deadline_ns) {
      uint64_t now = detail::now_ns();
      if (now >= deadline_ns) return false;
      uint64_t d = deadline_ns - now;
      rel.tv_sec = time_t(d / 1000000000ull);
      rel.tv_nsec = long(d % 1000000000ull);
      tp = &rel;
    }
    syscall(SYS_futex, reinterpret_cast<uint32_t *>(&w), FUTEX_WAIT_PRIVATE, 0, tp, nullptr, 0);
  }
}

int sleep_common(const void *chan, uint64_t timeout_ns, std::mutex *interlock) {
  if (kcont_in_interrupt()) return EDEADLK;
  sleeper s;
  kcont_init(&s.kc, sleeper_wake, &s.woken, target::now());
  kcq *q = bucket_of(chan);
  if (int e = detail::kcq_enqueue_keyed(q, &s.kc, chan)) return e;
  // On the channel first, then the interlock goes: a wakeup issued under it
  // after the caller's check finds the sleeper chained.
  if (interlock) {
    interlock->unlock();
    if (detail::g_mtsleep_unlocked_hook) detail::g_mtsleep_unlocked_hook(chan);
  }
  uint64_t deadline = timeout_ns ? detail::now_ns() + timeout_ns : 0;
  int rc = 0;
  if (!wait_flag(s.woken, deadline)) {
    if (kcq_remove(q, &s.kc)) {
      rc = EWOULDBLOCK;
    } else {
      wait_flag(s.woken, 0);  // a wakeup took us: it is about to set the flag
    }
  }
  // No kcont_drain: after the flag is set the waker touches neither the
  // continuation nor the flag (the futex wake uses the address as a key
  // only), so this frame may go at once.
  if (interlock) interlock->lock();
  return rc;
}

}  // namespace

int tsleep(const void *chan, const char *, uint64_t timeout_ns) {
  return sleep_common(chan, timeout_ns, nullptr);
}

int mtsleep(const void *chan, const char *, uint64_t timeout_ns, std::mutex &interlock) {
  return sleep_common(chan, timeout_ns, &interlock);
}

int wakeup(const void *chan) { return detail::kcq_run_keyed(bucket_of(chan), chan, 0, false); }

int wakeup_one(const void *chan) { return detail::kcq_run_keyed(bucket_of(chan), chan, 0, true); }

namespace detail {

void (*g_mtsleep_unlocked_hook)(const void *chan) = nullptr;

int sleep_until(const void *chan, bool (*pred)(void *), void *arg, uint64_t timeout_ns) {
  if (kcont_in_interrupt()) return EDEADLK;
  const uint64_t deadline = timeout_ns ? now_ns() + timeout_ns : 0;
  kcq *q = bucket_of(chan);
  while (!pred(arg)) {
    sleeper s;
    kcont_init(&s.kc, sleeper_wake, &s.woken, target::now());
    if (int e = kcq_enqueue_keyed(q, &s.kc, chan)) return e;
    // Chained, then the condition: the waker makes it true, then looks for
    // sleepers (see internal.h for the fence pair).
    heavy_fence();
    if (pred(arg)) {
      if (!kcq_remove(q, &s.kc)) wait_flag(s.woken, 0);
      return 0;
    }
    if (!wait_flag(s.woken, deadline)) {
      if (kcq_remove(q, &s.kc)) return pred(arg) ? 0 : EWOULDBLOCK;
      wait_flag(s.woken, 0);
    }
  }
  return 0;
}

}  // namespace detail

int wchan_wait(const void *chan, kcont *kc) {
  return detail::kcq_enqueue_keyed(bucket_of(chan), kc, chan);
}

bool wchan_cancel(const void *chan, kcont *kc) { return kcq_remove(bucket_of(chan), kc); }

}  // namespace kc
