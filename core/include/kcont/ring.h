// SPDX-License-Identifier: BSD-2-Clause
// ring.h -- the dispatcher's io_uring ring, for layers that complete I/O.
//
// Model: each CPU's dispatcher thread is the only submitter of its ring
// (io_uring single issuer; no lock on the ring).  A layer prepares a
// submission with kcont_ring_sqe() and points its user_data at a
// `completion`; when the completion is reaped the dispatcher calls
// completion::fn in hard-interrupt context {completion::lvl, interrupt} on
// that CPU.  Submissions are flushed once per dispatcher loop, and before it
// sleeps, so a burst of requests costs one system call.
//
// Rules: call these only on a dispatcher thread (kcont_in_interrupt() is
// true there); code on other threads defers a continuation to the CPU and
// submits from it.
#pragma once

#include <cstdint>

#include "kcont/kcont.h"

struct io_uring;
struct io_uring_sqe;

namespace kc {

// A completion handler for one ring operation (embed it in your request).
struct completion {
  void (*fn)(completion *c, int res, uint32_t cqe_flags) = nullptr;
  level lvl = LVL_BIO;
};

// A free submission queue entry on the calling CPU's ring, flushing the
// queue first if it is full.  Returns nullptr off a dispatcher thread or if
// the ring stays full.  Dispatcher thread only.
io_uring_sqe *kcont_ring_sqe();

// The calling CPU's ring (nullptr off a dispatcher thread).  For liburing
// helpers that need the ring itself (buffer rings, registration).
io_uring *kcont_ring();

// Submits what is queued now (normally the dispatcher does it for you).
// Returns the number submitted or a negative errno.  Dispatcher thread only.
int kcont_ring_submit();

}  // namespace kc
