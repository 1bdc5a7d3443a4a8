// SPDX-License-Identifier: BSD-2-Clause
// softint.h -- softint(9) as a thin layer over kcont.
//
// A soft interrupt handle is a per-CPU set of continuations (one per CPU,
// bound to it) created at establish time.  softint_schedule defers the
// current CPU's continuation: scheduling a pending softint coalesces, as in
// NetBSD.  The handler runs in {level, kind} on the CPU it was scheduled on.
//
// Handles are type-stable: disestablished handles go back to a free list
// and are never freed, so a softint_schedule racing with
// softint_disestablish touches valid memory and is refused (the handler
// never runs after softint_disestablish returns).  Locking: a schedule
// counts itself in `users` while it defers; disestablish marks the handle
// dying and waits for `users` to drain and every CPU's continuation to be
// idle.
#pragma once

#include "kcont/kcont.h"

namespace kc {

struct softint;

// Establishes a soft interrupt that calls func(arg) in {lvl, k}.  Thread
// context (allocates per-CPU continuations; creates workers for the thread
// kind).  Returns nullptr when kcont is not running, arguments are bad, or
// it is called in interrupt context.
softint *softint_establish(level lvl, void (*func)(void *), void *arg, kind k = kind::interrupt);

// Schedules the handler on the calling CPU (a thread kcont does not own
// picks a CPU by where it runs).  Returns false if it was already pending
// there (coalesced) or the handle is being disestablished.  Any context.
bool softint_schedule(softint *si);

// Schedules the handler on CPU `cpu`.  Any context.
bool softint_schedule_cpu(softint *si, int cpu);

// Disestablishes: further schedules are refused, pending runs are cancelled,
// and it returns once no handler is running; only then may the handle be
// handed to a later softint_establish.  Thread context, not from the
// handler itself.  Returns 0, EINVAL (null), or EDEADLK (interrupt context
// or the handler's own thread: nothing is done, or -- from the handler --
// the handle stays dying and is not recycled).
int softint_disestablish(softint *si);

}  // namespace kc
