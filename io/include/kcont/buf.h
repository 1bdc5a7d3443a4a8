// SPDX-License-Identifier: BSD-2-Clause
// buf.h -- I/O buffers whose completion runs a chain of continuations.
//
// Model: a `buf` is an I/O request (read, write or fsync of a file
// descriptor at an offset) with its own kcq.  bio_submit queues the
// operation on the calling CPU's io_uring ring when called on a dispatcher;
// from any other thread -- a kcont worker (thread kind) or a thread kcont
// does not own -- it defers the buffer's submit continuation (unbound,
// {bio, interrupt}) to a CPU, which queues it there: a worker's own CPU, a
// CPU picked by the core a foreign thread runs on, or the CPU where that
// continuation is running at the moment.  The completion is biodone(),
// reaped in hard-interrupt context {bio, interrupt} on that CPU, which
// records the result and runs the chain (kcq_run): continuations that
// asked for exactly the current context (or are immediate) are called on
// the spot, the rest are deferred to the context each asked for.  Nothing
// sleeps.
//
// A request that cannot be queued completes with EAGAIN through the same
// biodone: the ring had no free entry even after a flush (biodone runs in
// the submitting dispatcher context -- inside bio_submit/bread when called
// on a dispatcher, so the chain may run before they return -- or in the
// submit continuation at {bio, interrupt}), or kcont stopped before the
// submit continuation could be deferred (biodone runs on the calling
// thread inside bio_submit/bread: immediate continuations are called there,
// any other is set idle by kcq_run and never runs).
//
// bread() adds the buffer cache's one trick that matters here: a read of a
// block already in flight chains onto the same buffer instead of issuing a
// second read, and every reader gets the same buffer.  A write completed
// through a pool's buffer invalidates that pool (bio_invalidate) before its
// chain runs, so a bread that starts after the writer learned of the write
// never joins a read issued before it (read-after-write).
//
// Buffers and their data come from a bufpool sized at creation (thread
// context); bio_submit, bread, biodone and brelse never allocate.
//
// Status passed to continuations (obj is the buf; every continuation on
// the chain gets the same one):
//   0            the whole transfer happened (done == len; always for fsync)
//   BIO_SHORT    fewer bytes were transferred (done < len): end of file
//   an errno     the operation failed (EIO, EBADF, ENOSPC, ..., EAGAIN as
//                above, or an injected error); error holds it, done == 0
//
// Locking: a pool's free list and in-flight table share one spinlock,
// never held while a continuation runs; a buffer's reference count is
// atomic.  A buffer belongs to its submitter until biodone.  bread gives
// each continuation it chains one reference (it calls brelse); bio_submit
// gives none: the buf_get reference stays with whoever holds it.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "kcont/kcont.h"
#include "kcont/ring.h"

namespace kc {

enum class bio_op : uint8_t { read, write, fsync };

// Status of a short transfer (see above).
inline constexpr int BIO_SHORT = -1;

// buf::flags for writes.
inline constexpr uint32_t B_DSYNC = 1;
inline constexpr uint32_t B_SYNC = 2;

struct bufpool;

struct buf {
  // The request: set by the caller before bio_submit (bread sets them;
  // buf_get resets them to -1, read, 0, 0).
  int fd = -1;               // file descriptor
  bio_op op = bio_op::read;  // read, write or fsync
  uint64_t offset = 0;       // byte offset in the file (unused by fsync)
  uint32_t len = 0;          // bytes to transfer, <= cap (unless src is set)
  // Write from the caller's memory instead of data: len bytes at src,
  // which must stay valid until biodone (any length).  Reset by buf_get.
  const void *src = nullptr;
  // Write durability: B_DSYNC (the data and what reading it back needs are
  // on stable storage when biodone runs, RWF_DSYNC) or B_SYNC (all of the
  // file's metadata too, RWF_SYNC); 0 = page cache only.  Reset by buf_get.
  uint32_t flags = 0;
  // The result, written by biodone, valid when the chain runs (bio_submit,
  // bread and buf_get reset both to 0).
  int error = 0;      // 0 or an errno
  uint32_t done = 0;  // bytes transferred (fsync: len on success; 0 on error)
  // Data: `cap` bytes, 4096-aligned, owned by the pool; set at creation.
  char *data = nullptr;
  uint32_t cap = 0;  // bytes: the pool's bufsize rounded up to 4096

  // Framework-owned: do not write.
  kcq waiters;                    // the chain: bio_submit/bread add, biodone runs
  completion comp;                // ring completion, {bio, interrupt}: calls biodone
  kcont submit_kc;                // unbound {bio, interrupt}: queues the op from a non-dispatcher
  std::atomic<uint32_t> refs{0};  // references: buf_get/bread set 1, bref and coalesced
                                  // bread add 1, brelse drops 1
  std::atomic<bool> busy{false};  // in flight: set by bio_submit/bread, cleared by biodone
  bool in_table = false;          // on the pool's in-flight read table (bread; pool lock)
  int inject = 0;                 // errno the fault hook chose for this submission, or 0
  uint32_t epoch = 0;             // the pool's invalidation epoch when bread issued it (pool lock)
  bufpool *pool = nullptr;        // owning pool
  buf *hnext = nullptr;           // in-flight table link (pool lock)

  buf() = default;
  buf(const buf &) = delete;
  buf &operator=(const buf &) = delete;
};

// Counters since bufpool_create (relaxed atomics, written by whoever
// submits and completes the pool's buffers).
struct bio_stats {
  uint64_t submitted = 0;        // operations prepared on a ring (fault-injected no-ops
                                 // included; EAGAIN failures not)
  uint64_t completed = 0;        // biodone calls (ring completions, EAGAIN failures, layers)
  uint64_t coalesced = 0;        // bread calls that chained onto an in-flight read
  uint64_t errors = 0;           // completions with an errno (EAGAIN and injected included)
  uint64_t short_transfers = 0;  // completions with BIO_SHORT
  uint64_t invalidations = 0;    // bio_invalidate calls
};

// Creates a pool of `nbufs` (1 .. 1048576) buffers of `bufsize` (1 .. 64
// MiB, rounded up to 4096) bytes each.  Thread context (it allocates; not
// checked); kcont need not be running.  Returns nullptr (and a reason in
// *err) on bad sizes or when memory is short.
bufpool *bufpool_create(size_t nbufs, uint32_t bufsize, std::string *err = nullptr);

// Tells the pool that file data changed (a write completed elsewhere): a
// bread that starts after this call never joins a read that bread issued
// before it, so it cannot hand out data older than the write.  Reads in
// flight still complete for the callers already chained on them.  Call it
// after the write completed and before anyone is told that it did (before
// the reply).  Costs one pool lock; no allocation.  Any context.
void bio_invalidate(bufpool *p);

// Destroys a pool: waits (kcont_drain) for the buffers' submit
// continuations, then frees.  Returns 0 (also for nullptr), EBUSY (and
// destroys nothing) while buffers are out, or EDEADLK (and destroys
// nothing) on a dispatcher, where it could not wait.  Thread context;
// nobody may use the pool meanwhile.
int bufpool_destroy(bufpool *p);

// Takes a free buffer holding one reference, its request fields reset;
// nullptr when the pool is exhausted (back-pressure).  Any context.
buf *buf_get(bufpool *p);

// Free buffers in the pool (snapshot).  Any context.
size_t bufpool_available(bufpool *p);

// The pool's counters (relaxed snapshot).  Any context.
bio_stats bufpool_stats(bufpool *p);

// Adds a reference (a second owner).  Any context.
void bref(buf *bp);

// Drops a reference; the last one returns the buffer to its pool (never
// drop the last one while it is in flight).  Any context; never blocks.
void brelse(buf *bp);

// Chains kc (if not null) on bp and queues bp's operation (see the model
// above for where; the chain may run with EAGAIN before this returns).
// Returns 0, EBUSY (bp is already in flight, or kc is not idle or is a
// CPU-private continuation chained off its CPU; nothing queued), or EINVAL
// (kcont not running, or len > cap).  Any context; never blocks or
// allocates.
int bio_submit(buf *bp, kcont *kc);

// Reads [offset, offset + len) of fd into a buffer from p and runs kc with
// it.  If the same (fd, offset, len) read is already in flight, chains onto
// it instead (counted as coalesced) and kc receives the same buffer.
// Either way kc owns one reference and must brelse it.  Returns 0, EINVAL
// (p or kc null, kcont not running, or len > the buffer size), ENOBUFS (no
// free buffer: nothing chained; checked before len), or EBUSY (kc not idle,
// or CPU-private off its CPU).  Any context; never blocks or allocates.
int bread(bufpool *p, int fd, uint64_t offset, uint32_t len, kcont *kc);

// Completes bp with a ring result (bytes or -errno; an injected error
// overrides it): sets error and done, takes bp off the in-flight table,
// clears busy, then runs its chain (kcq_run) in the caller's context.
// Called by the ring completion at {bio, interrupt} and on EAGAIN (see
// above); exposed for layers that complete buffers themselves.  Any context.
void biodone(buf *bp, int res);

// Test hook (all pools): when set, each submission that got a ring entry
// asks hook(bp, arg), on the dispatcher (interrupt kind: must not block); a
// non-zero errno makes the operation complete with that error (through the
// ring, as a no-op, so the completion path is the real one).  nullptr
// clears it.  Any context.
void bio_set_fault_hook(int (*hook)(const buf *bp, void *arg), void *arg);

}  // namespace kc
