// workqueue.h -- workqueue(9) as a thin layer over kcont.
//
// A workqueue names a level whose thread-kind workers (one per CPU, created
// by workqueue_create) run its work items; each `work` embeds the
// continuation that carries it, so enqueueing never allocates.  Work items
// run in {level, thread} and may block.  Workqueues at the same level share
// that level's per-CPU workers, the way a kernel shares a thread pool per
// priority; give a workqueue its own level (kcont_level_register before
// kcont_start) when its work blocks for long.
//
// Locking: none beyond the continuation's state word; `outstanding` counts
// enqueued work so workqueue_destroy can wait for it without touching work
// items after their function was called.
#pragma once

#include "kcont/kcont.h"

namespace kc {

struct workqueue;

struct work {
  kcont kc;
};

// Creates a workqueue calling func(wk, arg) for each item, in {lvl, thread}.
// Thread context; allocates; creates the level's workers.  Returns 0, or
// ENXIO (kcont not running), EINVAL, ENOMEM, EDEADLK (interrupt context), or
// a thread creation errno.
int workqueue_create(workqueue **wqp, const char *name, void (*func)(work *, void *), void *arg,
                     level lvl);

// Enqueues wk to run on CPU `cpu` (KC_CPU_ANY: the calling CPU).  Returns
// false if wk is already pending (nothing is done: enqueueing pending work
// is a caller bug in NetBSD, a harmless no-op here) or cpu is out of range.
// Any context; never allocates (the workers exist since workqueue_create).
bool workqueue_enqueue(workqueue *wq, work *wk, int cpu = KC_CPU_ANY);

// Waits until wk is neither pending nor running.  Thread context.
void workqueue_wait(workqueue *wq, work *wk);

// Waits for every enqueued item to finish, then frees wq.  Thread context.
void workqueue_destroy(workqueue *wq);

}  // namespace kc
