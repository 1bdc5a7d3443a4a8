// SPDX-License-Identifier: BSD-2-Clause
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
// Rules:
//  - Enqueueing work that is already pending is a counted no-op (it returns
//    false and counts as coalesced at {level, thread} of the CPU asked for),
//    whatever the concurrency: the enqueue claims the item with one
//    compare-and-swap on its state word, so of two racing enqueues exactly
//    one links it.
//  - Non-reentrant (as Linux's workqueues since 3.7): an item enqueued while
//    its function runs goes to the CPU running it and runs again after that
//    call returns, never beside it.
//  - The item's continuation is private: cancel with workqueue_cancel, which
//    keeps the queue's outstanding count right (a hand-cancelled item made
//    workqueue_destroy wait forever, so the field is no longer reachable).
//  - A work item may free itself from its own function.
//
// Locking: none beyond the continuation's state word.  `outstanding` counts
// enqueued items not yet finished (low 32 bits) and the threads waiting for
// it to reach zero (high 32 bits) in one word, so an item's last touch of
// the queue is a single atomic decrement and the wake-up that follows uses
// the queue's address only as a wait-channel key; waiters sleep on that
// channel (no polling).
#pragma once

#include "kcont/callout.h"
#include "kcont/kcont.h"

namespace kc {

struct workqueue;
namespace detail {
struct work_access;
}

struct work {
  work() = default;
  work(const work &) = delete;
  work &operator=(const work &) = delete;

 private:
  friend struct detail::work_access;
  kcont kc;
};

// Creates a workqueue calling func(wk, arg) for each item, in {lvl, thread}.
// Thread context; allocates; creates the level's workers.  Returns 0, or
// ENXIO (kcont not running), EINVAL, ENOMEM, EDEADLK (interrupt context), or
// a thread creation errno.
int workqueue_create(workqueue **wqp, const char *name, void (*func)(work *, void *), void *arg,
                     level lvl);

// Enqueues wk to run on CPU `cpu` (KC_CPU_ANY: the calling CPU; an item
// whose function is running goes to the CPU running it).  Returns true if wk
// is now pending; false if it already was (nothing is done: a counted
// no-op), cpu is out of range, or kcont is not running.  Any context, any
// thread; never allocates or blocks.
bool workqueue_enqueue(workqueue *wq, work *wk, int cpu = KC_CPU_ANY);

// True while wk is pending (enqueued and not yet started).  Any context.
bool workqueue_pending(const work *wk);

// Cancels wk if it is pending; otherwise waits until its function is not
// running (Linux cancel_work_sync).  Returns true if a pending run was
// cancelled: it will not run, but its link stays in its worker's inbox until
// the worker passes it, so free wk only after workqueue_wait (flush and
// destroy do not wait for cancelled links).  Thread context; from wk's own
// function it does not wait.
bool workqueue_cancel(workqueue *wq, work *wk);

// Waits until wk is neither pending nor running (Linux flush_work).  Thread
// context.  Returns 0, or EDEADLK in interrupt context or from wk's own
// function.
int workqueue_wait(workqueue *wq, work *wk);

// Waits until no item of wq is outstanding (enqueued and not finished),
// including items enqueued by items meanwhile.  Thread context, not from a
// work item of wq (EDEADLK) nor interrupt context (EDEADLK); 0 otherwise.
int workqueue_flush(workqueue *wq);

// Number of enqueued items not yet finished (a snapshot).  Any context.
uint32_t workqueue_outstanding(const workqueue *wq);

// Waits for every enqueued item to finish (workqueue_flush), then frees wq.
// A cancelled item's link may still sit in its worker's inbox afterwards:
// workqueue_wait on it before freeing the item.  Thread context.
void workqueue_destroy(workqueue *wq);

// Delayed work: a work item enqueued by a callout `ticks` ticks from now
// (Linux delayed_work).  The callout and the work run on the CPU given at
// init.  Use dw->wk with workqueue_pending/workqueue_wait as with any item.
struct delayed_work {
  work wk;
  callout timer;
  workqueue *wq = nullptr;
  int cpu = 0;
};

// Initialises dw for wq on CPU `cpu` (KC_CPU_ANY: the calling CPU, or 0).
// Returns 0 or EINVAL (no wq, cpu out of range, kcont not running).  Any
// context; never allocates.
int delayed_work_init(delayed_work *dw, workqueue *wq, int cpu = KC_CPU_ANY);

// Arms dw to be enqueued after `ticks` ticks (0: enqueue now).  Re-arming a
// waiting one moves its expiry (Linux mod_delayed_work).  Returns 0 or
// EINVAL (dw not initialised, kcont not running).  Any context.
int workqueue_enqueue_delayed(delayed_work *dw, uint64_t ticks);

// Stops the timer and cancels the work, waiting until neither the timer's
// function nor the work's runs (cancel_delayed_work_sync).  Returns true if
// something was pending.  Thread context.
bool workqueue_cancel_delayed(delayed_work *dw);

}  // namespace kc
