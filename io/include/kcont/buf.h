// buf.h -- I/O buffers whose completion runs a chain of continuations.
//
// Model: a `buf` is an I/O request (read, write or fsync of a file
// descriptor at an offset) with its own kcq.  bio_submit queues the
// operation on the calling CPU's io_uring ring (or, from a thread kcont
// does not own, hands it to a CPU through a continuation); the completion
// is biodone(), reaped in hard-interrupt context {bio, interrupt}, which
// records the result and runs the chain: continuations that asked for
// {bio, interrupt} on that CPU (or are immediate) are called on the spot,
// the rest are deferred to the context each asked for.  Nothing sleeps.
//
// bread() adds the buffer cache's one trick that matters here: a read of a
// block already in flight chains onto the same buffer instead of issuing a
// second read, and every reader gets the same buffer.
//
// Buffers and their data come from a bufpool sized at creation (thread
// context); bio_submit, bread, biodone and brelse never allocate.
//
// Status passed to continuations (obj is the buf):
//   0            the whole transfer happened (done == len)
//   BIO_SHORT    fewer bytes were transferred (done < len): end of file
//   an errno     the operation failed (EIO, EBADF, ENOSPC, ...); done == 0
//
// Locking: a pool's free list and in-flight table share one spinlock,
// never held while a continuation runs; a buffer's reference count is
// atomic.  A buffer belongs to its submitter until biodone; afterwards every
// continuation that received it owns one reference and calls brelse.
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

struct bufpool;

struct buf {
  // The request: set by the caller before bio_submit (bread sets them).
  int fd = -1;
  bio_op op = bio_op::read;
  uint64_t offset = 0;
  uint32_t len = 0;
  // The result, valid when the chain runs.
  int error = 0;      // 0 or an errno
  uint32_t done = 0;  // bytes transferred
  // Data: `cap` bytes, 4096-aligned, owned by the pool.
  char *data = nullptr;
  uint32_t cap = 0;

  // Framework-owned.
  kcq waiters;
  completion comp;
  kcont submit_kc;
  std::atomic<uint32_t> refs{0};
  std::atomic<bool> busy{false};
  bool in_table = false;
  int inject = 0;
  bufpool *pool = nullptr;
  buf *hnext = nullptr;

  buf() = default;
  buf(const buf &) = delete;
  buf &operator=(const buf &) = delete;
};

struct bio_stats {
  uint64_t submitted = 0;  // operations queued on a ring
  uint64_t completed = 0;  // biodone calls
  uint64_t coalesced = 0;  // bread calls that chained onto an in-flight read
  uint64_t errors = 0;     // completions with an errno
  uint64_t short_transfers = 0;
};

// Creates a pool of `nbufs` buffers of `bufsize` bytes each.  Thread
// context; allocates.  Returns nullptr (and a reason in *err) on bad sizes
// or when memory is short.
bufpool *bufpool_create(size_t nbufs, uint32_t bufsize, std::string *err = nullptr);

// Destroys a pool; every buffer must have been released.  Thread context.
// Returns EBUSY (and destroys nothing) while buffers are out.
int bufpool_destroy(bufpool *p);

// Takes a free buffer holding one reference; nullptr when the pool is
// exhausted (back-pressure).  Any context.
buf *buf_get(bufpool *p);

// Free buffers in the pool (snapshot).
size_t bufpool_available(bufpool *p);

// The pool's counters (relaxed snapshot).
bio_stats bufpool_stats(bufpool *p);

// Adds a reference (a second owner).  Any context.
void bref(buf *bp);

// Drops a reference; the last one returns the buffer to its pool.  Any
// context; never blocks.
void brelse(buf *bp);

// Chains kc (if not null) on bp and queues bp's operation.  Returns 0,
// EBUSY (bp is already in flight, or kc is not idle), EINVAL (len > cap, or
// kcont not running).  Any context; never blocks or allocates.
int bio_submit(buf *bp, kcont *kc);

// Reads [offset, offset + len) of fd into a buffer from p and runs kc with
// it.  If the same read is already in flight, chains onto it instead
// (counted as coalesced) and kc receives the same buffer.  Either way kc
// owns one reference and must brelse it.  Returns 0, ENOBUFS (pool
// exhausted: nothing queued), EINVAL, or EBUSY (kc not idle).  Any context.
int bread(bufpool *p, int fd, uint64_t offset, uint32_t len, kcont *kc);

// Completes bp with a ring result (bytes or -errno) and runs its chain.
// Called by the ring completion at {bio, interrupt}; exposed for layers
// that complete buffers themselves.
void biodone(buf *bp, int res);

// Test hook: when set, each submission asks hook(bp, arg); a non-zero errno
// makes the operation complete with that error (through the ring, as a
// no-op, so the completion path is the real one).  nullptr clears it.
void bio_set_fault_hook(int (*hook)(const buf *bp, void *arg), void *arg);

}  // namespace kc
