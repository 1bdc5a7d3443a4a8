// SPDX-License-Identifier: BSD-2-Clause
// sleepq.h -- wait channels: sleep/wakeup over kcont.
//
// Model: a wait channel is any address.  Channels hash into 256 buckets,
// each a kcq whose continuations remember their channel.  wakeup(chan) runs
// every continuation waiting on chan, wakeup_one(chan) the oldest.  A
// sleeping thread is just a continuation waiter whose function wakes it
// (an immediate continuation that stores a flag and does a futex wake), so
// sleep/wakeup and continuation waiters are one mechanism.
//
// No lost wake-ups: a sleeper is chained on its channel before it checks its
// interlock (mtsleep) or starts its timeout; when its timeout fires it tries
// to unchain itself, and if a wakeup already took it, it reports the wakeup
// (returns 0), never a timeout.  Locking: bucket spinlocks only.
#pragma once

#include <cstdint>
#include <mutex>

#include "kcont/kcont.h"

namespace kc {

inline constexpr uint64_t KC_FOREVER = 0;

// Sleeps on chan until wakeup or `timeout_ns` (KC_FOREVER: no timeout).
// Returns 0 when woken, EWOULDBLOCK on timeout, EDEADLK in interrupt
// context (where nothing may sleep).  Thread context only.
int tsleep(const void *chan, const char *wmesg, uint64_t timeout_ns);

// Like tsleep, but atomically releases `interlock` (held by the caller)
// once the caller is on the channel, and re-acquires it before returning:
// a wakeup issued under the same mutex after the caller's check can never
// be lost.  Thread context only.
int mtsleep(const void *chan, const char *wmesg, uint64_t timeout_ns, std::mutex &interlock);

// Wakes every sleeper and continuation waiting on chan; returns how many.
// Any context.
int wakeup(const void *chan);

// Wakes the oldest waiter on chan; returns 1 if there was one.  Any context.
int wakeup_one(const void *chan);

// Chains a continuation waiter on chan; when woken it runs (per its target)
// with obj = chan and status 0.  Returns 0 or EBUSY (kc not idle).  Any
// context.
int wchan_wait(const void *chan, kcont *kc);

// Removes a continuation waiter; true if it was still waiting.
bool wchan_cancel(const void *chan, kcont *kc);

}  // namespace kc
