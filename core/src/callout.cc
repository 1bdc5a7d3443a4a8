// SPDX-License-Identifier: BSD-2-Clause
// callout.cc -- callout(9) over kcont: a tickless per-CPU timer wheel.
//
// Model (see callout.h): hardclock is the completion of one absolute
// io_uring timeout per CPU, reaped in {clock, interrupt}; it defers the
// CPU's softclock continuation, which moves every callout due by now from
// the wheel to the CPU's expired list and calls them one at a time in
// {softclock, interrupt}, then re-arms the timeout for the earliest expiry
// left.  Threads on other CPUs that make an earlier expiry defer the CPU's
// `rearm` continuation ({clock, interrupt}, bound), which coalesces.
//
// Locking: the per-CPU wheel spinlock covers the wheel, the expired list and
// every callout's links and flags.  It is never held while a callout
// function runs.  `running` names the callout whose function is executing;
// callout_halt waits on it, never on the callout itself.
#include "kcont/callout.h"

#include <errno.h>

#include <new>

#include "internal.h"
#include "kcont/sleepq.h"

namespace kc {
namespace detail {

inline constexpr uint32_t CALLOUT_MAGIC = 0xCA11007u;
inline constexpr uint32_t CALLOUT_ON_EXPIRED = 1u << 16;  // on expired list
inline constexpr int WHEEL = 256;

struct callout_cpu {
  std::atomic<uint32_t> lock{0};
  cpu *c = nullptr;
  callout *wheel[WHEEL] = {};
  callout *exp_head = nullptr, *exp_tail = nullptr;
  uint64_t done_tick = 0;  // every tick up to this one has been processed
  size_t count = 0;        // callouts on the wheel
  std::atomic<callout *> running{nullptr};
  std::atomic<uint32_t> halt_waiters{0};  // threads in callout_halt (wait channel &running)
  kcont softclock_kc;
  kcont rearm_kc;
  completion timer_comp;
  bool armed = false;                       // dispatcher-owned
  std::atomic<uint64_t> armed_tick{~0ull};  // read by any thread
  __kernel_timespec ts{};
};

namespace {
callout_cpu *g_co_store[max_cpus];

uint64_t tick_ns() { return sys().cfg.tick_ns ? sys().cfg.tick_ns : 1000000; }
uint64_t now_tick() { return now_ns() / tick_ns(); }

callout_cpu *cc_of(const callout *c) {
  if (c->cpu < 0 || c->cpu >= sys().ncpus || !sys().cpus[c->cpu]) return nullptr;
  return sys().cpus[c->cpu]->co;
}

void wheel_insert(callout_cpu *cc, callout *c) {
  callout *&head = cc->wheel[c->expire % WHEEL];
  c->prev = nullptr;
  c->next = head;
  if (head) head->prev = c;
  head = c;
  cc->count++;
}

// Unlinks a PENDING callout from the wheel or the expired list.
void unlink_pending(callout_cpu *cc, callout *c, uint32_t f) {
  if (f & CALLOUT_ON_EXPIRED) {
    if (c->prev)
      c->prev->next = c->next;
    else
      cc->exp_head = c->next;
    if (c->next)
      c->next->prev = c->prev;
    else
      cc->exp_tail = c->prev;
  } else {
    if (c->prev)
      c->prev->next = c->next;
    else
      cc->wheel[c->expire % WHEEL] = c->next;
    if (c->next) c->next->prev = c->prev;
    cc->count--;
  }
  c->next = c->prev = nullptr;
}

// Earliest expiry on the wheel, or ~0 (lock held).
uint64_t next_expiry(callout_cpu *cc) {
  if (cc->count == 0) return ~0ull;
  uint64_t best = ~0ull;
  for (int i = 1; i <= WHEEL; i++) {
    uint64_t t = cc->done_tick + uint64_t(i);
    for (callout *c = cc->wheel[t % WHEEL]; c; c = c->next) {
      if (c->expire < best) best = c->expire;
    }
    if (best <= t) break;  // nothing in later slots can be earlier
  }
  return best;
}

// Arms (or moves earlier) the CPU's timeout.  Dispatcher of cc only.
void rearm(callout_cpu *cc) {
  uint64_t next;
  {
    spinlock g(cc->lock);
    next = next_expiry(cc);
  }
  if (next == ~0ull) return;
  if (cc->armed && cc->armed_tick.load(rlx) <= next) return;
  io_uring_sqe *sqe = kcont_ring_sqe();
  if (!sqe) {
    // Ring full even after a flush: the dispatcher retries (arm_all)
    // before it sleeps, and does not sleep until the timer is armed.
    cc->c->unarmed |= ARM_TIMER;
    return;
  }
  cc->c->unarmed &= ~ARM_TIMER;
  uint64_t at = next * tick_ns();
  cc->ts.tv_sec = int64_t(at / 1000000000ull);
  cc->ts.tv_nsec = int64_t(at % 1000000000ull);
  if (cc->armed) {
    io_uring_prep_timeout_update(sqe, &cc->ts, reinterpret_cast<uint64_t>(&cc->timer_comp),
                                 IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data(sqe, nullptr);
  } else {
    io_uring_prep_timeout(sqe, &cc->ts, 0, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data(sqe, &cc->timer_comp);
    cc->armed = true;
  }
  // cc->ts lives as long as the CPU; the dispatcher's flush submits it.  A
  // second rearm before that flush only moves it earlier, and both entries
  // then read the earlier time.
  cc->armed_tick.store(next, rlx);
}

void hardclock(completion *comp, int, uint32_t) {
  auto *cc = reinterpret_cast<callout_cpu *>(reinterpret_cast<char *>(comp) -
                                             offsetof(callout_cpu, timer_comp));
  cc->armed = false;
  cc->armed_tick.store(~0ull, rlx);
  kcont_defer(&cc->softclock_kc, cc, 0);
}

void rearm_fn(void *, void *env, int) { rearm(static_cast<callout_cpu *>(env)); }

void softclock(void *, void *env, int) {
  auto *cc = static_cast<callout_cpu *>(env);
  const uint64_t now = now_tick();
  {
    spinlock g(cc->lock);
    if (cc->done_tick < now) {
      uint64_t from = cc->done_tick + 1;
      uint64_t span = now - cc->done_tick;
      if (span > WHEEL) span = WHEEL;
      for (uint64_t i = 0; i < span; i++) {
        callout **slot = &cc->wheel[(from + i) % WHEEL];
        for (callout *c = *slot; c;) {
          callout *n = c->next;
          if (c->expire <= now) {
            uint32_t f = c->flags.load(rlx);
            unlink_pending(cc, c, f);
            c->flags.store(f | CALLOUT_ON_EXPIRED, rlx);
            c->prev = cc->exp_tail;
            if (cc->exp_tail)
              cc->exp_tail->next = c;
            else
              cc->exp_head = c;
            cc->exp_tail = c;
          }
          c = n;
        }
      }
      cc->done_tick = now;
    }
  }
  for (;;) {
    void (*fn)(void *);
    void *arg;
    {
      spinlock g(cc->lock);
      callout *c = cc->exp_head;
      if (!c) break;
      uint32_t f = c->flags.load(rlx);
      unlink_pending(cc, c, f);
      f &= ~(CALLOUT_PENDING | CALLOUT_ON_EXPIRED);
      c->flags.store(f | CALLOUT_EXPIRED | CALLOUT_INVOKING, rlx);
      fn = c->func;
      arg = c->arg;
      cc->running.store(c, std::memory_order_release);
    }
    if (fn) fn(arg);
    cc->running.store(nullptr, std::memory_order_release);
    light_fence();
    if (cc->halt_waiters.load(rlx)) wakeup(&cc->running);
  }
  rearm(cc);
}

// Asks c's CPU to arm its timer no later than `expire`.
void kick(callout_cpu *cc, uint64_t expire) {
  if (expire >= cc->armed_tick.load(rlx)) return;
  executor *ex = tl_exec;
  if (ex && ex->dispatcher && ex->c == cc->c)
    rearm(cc);
  else
    kcont_defer(&cc->rearm_kc, nullptr, 0);
}

}  // namespace

int callout_cpu_init(cpu *c) {
  callout_cpu *&cc = g_co_store[c->id];
  if (!cc) cc = new (std::nothrow) callout_cpu;
  if (!cc) return ENOMEM;
  cc->~callout_cpu();
  new (cc) callout_cpu;
  cc->c = c;
  cc->done_tick = now_tick();
  cc->timer_comp.fn = hardclock;
  cc->timer_comp.lvl = LVL_CLOCK;
  int e = kcont_init(&cc->softclock_kc, softclock, cc,
                     target::at(LVL_SOFTCLOCK, kind::interrupt, int16_t(c->id)));
  if (e == 0)
    e = kcont_init(&cc->rearm_kc, rearm_fn, cc,
                   target::at(LVL_CLOCK, kind::interrupt, int16_t(c->id)));
  c->co = cc;
  return e;
}

void callout_cpu_fini(cpu *c) { c->co = nullptr; }

bool callout_cpu_rearm(cpu *c) {
  if (c->co)
    rearm(c->co);
  else
    c->unarmed &= ~ARM_TIMER;
  return !(c->unarmed & ARM_TIMER);
}

}  // namespace detail

using namespace detail;

uint64_t mstohz(uint64_t ms) {
  if (ms == 0) return 0;
  uint64_t t = (ms * 1000000ull + tick_ns() - 1) / tick_ns();
  return t ? t : 1;
}

void callout_init(callout *c, int cpu) {
  c->func = nullptr;
  c->arg = nullptr;
  c->expire = 0;
  c->next = c->prev = nullptr;
  if (cpu == KC_CPU_ANY) cpu = kcont_current_cpu() >= 0 ? kcont_current_cpu() : 0;
  c->cpu = int16_t(cpu);
  c->flags.store(0, rlx);
  c->magic = CALLOUT_MAGIC;
}

void callout_setfunc(callout *c, void (*func)(void *), void *arg) {
  callout_cpu *cc = cc_of(c);
  if (!cc) {
    c->func = func;
    c->arg = arg;
    return;
  }
  spinlock g(cc->lock);
  c->func = func;
  c->arg = arg;
}

namespace {
int schedule_locked_fn(callout *c, uint64_t ticks, bool setfn, void (*func)(void *), void *arg) {
  if (c->magic != CALLOUT_MAGIC) return EINVAL;
  callout_cpu *cc = cc_of(c);
  if (!cc) return EINVAL;
  uint64_t expire;
  {
    spinlock g(cc->lock);
    uint32_t f = c->flags.load(rlx);
    if (f & CALLOUT_PENDING) unlink_pending(cc, c, f);
    f &= ~(CALLOUT_ON_EXPIRED | CALLOUT_EXPIRED);
    if (setfn) {
      c->func = func;
      c->arg = arg;
    }
    uint64_t base = now_tick();
    if (base < cc->done_tick) base = cc->done_tick;
    c->expire = base + (ticks ? ticks : 1);
    expire = c->expire;
    wheel_insert(cc, c);
    c->flags.store(f | CALLOUT_PENDING | CALLOUT_ACTIVE, rlx);
  }
  kick(cc, expire);
  return 0;
}
}  // namespace

int callout_reset(callout *c, uint64_t ticks, void (*func)(void *), void *arg) {
  return schedule_locked_fn(c, ticks, true, func, arg);
}

int callout_schedule(callout *c, uint64_t ticks) {
  return schedule_locked_fn(c, ticks, false, nullptr, nullptr);
}

bool callout_stop(callout *c) {
  callout_cpu *cc = cc_of(c);
  if (!cc || c->magic != CALLOUT_MAGIC) return false;
  spinlock g(cc->lock);
  uint32_t f = c->flags.load(rlx);
  bool expired = f & CALLOUT_EXPIRED;
  if (f & CALLOUT_PENDING) unlink_pending(cc, c, f);
  c->flags.store(f & ~(CALLOUT_PENDING | CALLOUT_ON_EXPIRED | CALLOUT_EXPIRED | CALLOUT_ACTIVE),
                 rlx);
  return expired;
}

bool callout_halt(callout *c, int *err) {
  if (err) *err = 0;
  bool expired = callout_stop(c);
  callout_cpu *cc = cc_of(c);
  if (!cc) return expired;
  if (cc->running.load(std::memory_order_acquire) != c) return expired;
  executor *ex = tl_exec;
  if (ex && ex->dispatcher) {
    // On c's own CPU the dispatcher is single-threaded: if c is "running"
    // we are inside its function.  Elsewhere we must not spin.
    if (ex->c != cc->c && err) *err = EDEADLK;
    return expired;
  }
  // Sleep on the wheel's `running` word; softclock wakes it after each
  // function while someone halts (asymmetric fence pair: see internal.h).
  struct halt_arg {
    callout_cpu *cc;
    callout *c;
  } a{cc, c};
  cc->halt_waiters.fetch_add(1, std::memory_order_seq_cst);
  sleep_until(
      &cc->running,
      [](void *p) {
        auto *h = static_cast<halt_arg *>(p);
        return h->cc->running.load(std::memory_order_acquire) != h->c;
      },
      &a);
  cc->halt_waiters.fetch_sub(1, std::memory_order_relaxed);
  return expired;
}

int callout_destroy(callout *c) {
  callout_cpu *cc = cc_of(c);
  if (c->flags.load(rlx) & CALLOUT_PENDING) return EBUSY;
  if (cc && cc->running.load(std::memory_order_acquire) == c) return EBUSY;
  c->magic = 0;
  return 0;
}

bool callout_pending(const callout *c) { return c->flags.load(rlx) & CALLOUT_PENDING; }
bool callout_expired(const callout *c) { return c->flags.load(rlx) & CALLOUT_EXPIRED; }
bool callout_active(const callout *c) { return c->flags.load(rlx) & CALLOUT_ACTIVE; }
bool callout_invoking(const callout *c) { return c->flags.load(rlx) & CALLOUT_INVOKING; }
void callout_ack(callout *c) {
  callout_cpu *cc = cc_of(c);
  if (!cc) return;
  spinlock g(cc->lock);
  c->flags.store(c->flags.load(rlx) & ~CALLOUT_INVOKING, rlx);
}

}  // namespace kc
