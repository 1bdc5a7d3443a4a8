// SPDX-License-Identifier: BSD-2-Clause
// callout.h -- callout(9) as a thin layer over kcont.
//
// Model: each CPU has a hashed timer wheel (256 slots of one tick each;
// callouts further away wait for their round).  The wheel is tickless: the
// dispatcher arms one absolute io_uring timeout for the earliest expiry.
// Its completion is hardclock, in {clock, interrupt}; hardclock defers the
// CPU's softclock continuation, and softclock runs each expired callout's
// function in {softclock, interrupt} on the callout's CPU, as in NetBSD.
//
// Locking: a per-CPU wheel lock (a spinlock, never held while a callout
// function runs) covers the wheel and the callout's flags and links.  The
// wheel remembers which callout is running, so callout_halt can wait for it
// without touching the callout after its function was called.
//
// Times are in ticks (kcont config tick_ns, 1 ms by default); mstohz()
// converts.
#pragma once

#include <cstdint>

#include "kcont/kcont.h"

namespace kc {

enum : uint32_t {
  CALLOUT_PENDING = 1u << 0,   // on a wheel, waiting to expire
  CALLOUT_EXPIRED = 1u << 1,   // expired since last reset/stop
  CALLOUT_INVOKING = 1u << 2,  // function called, not yet acknowledged
  CALLOUT_ACTIVE = 1u << 3,    // reset and not stopped (callout_active)
};

struct callout {
  void (*func)(void *) = nullptr;
  void *arg = nullptr;
  uint64_t expire = 0;  // absolute tick
  callout *next = nullptr, *prev = nullptr;
  int16_t cpu = 0;
  std::atomic<uint32_t> flags{0};
  uint32_t magic = 0;
};

// Ticks in `ms` milliseconds (at least 1 for ms > 0).
uint64_t mstohz(uint64_t ms);

// Initialises c on CPU `cpu` (KC_CPU_ANY: the calling CPU, or 0).  Any
// context; never allocates.
void callout_init(callout *c, int cpu = KC_CPU_ANY);

// Sets the function without scheduling.
void callout_setfunc(callout *c, void (*func)(void *), void *arg);

// (Re)schedules c to call func(arg) `ticks` ticks from now (0 counts as 1),
// cancelling a pending expiry.  Any context.  Returns EINVAL if kcont is not
// running, c was never initialised (or was destroyed), or its CPU is >=
// kcont_ncpus(); 0 otherwise.
int callout_reset(callout *c, uint64_t ticks, void (*func)(void *), void *arg);

// (Re)schedules with the function set by callout_setfunc/callout_reset.
int callout_schedule(callout *c, uint64_t ticks);

// Cancels a pending expiry and clears PENDING, EXPIRED and ACTIVE.  Returns
// true if the callout had expired since the last reset/stop (its function
// was called, is running, or ran), false if it was still pending -- a due
// callout whose function has not been called yet is cancelled and will not
// run -- or idle.  Any context; never waits.
bool callout_stop(callout *c);

// Like callout_stop, then waits (sleeping on a wait channel, woken by
// softclock) until the function is no longer running
// (unless called from that very function).  Thread context, or interrupt
// context on the callout's own CPU.  Returns true if it had expired;
// sets *err (if given) to EDEADLK when called from another CPU's interrupt
// context, where it cannot wait.
bool callout_halt(callout *c, int *err = nullptr);

// Invalidates c; it must be neither pending nor running (callout_halt
// first).  Returns EBUSY otherwise.
int callout_destroy(callout *c);

bool callout_pending(const callout *c);
bool callout_expired(const callout *c);
bool callout_active(const callout *c);
bool callout_invoking(const callout *c);
// Clears CALLOUT_INVOKING (call it from the function once it has looked).
void callout_ack(callout *c);

}  // namespace kc
