// SPDX-License-Identifier: BSD-2-Clause
// buf.cc -- buffers, biodone, and the in-flight read table (see buf.h).
//
// Submission: on a dispatcher thread the operation is prepared straight on
// that CPU's ring (kcont_ring_sqe) with user_data pointing at the buffer's
// completion; elsewhere the buffer's own submit continuation is deferred to
// {bio, interrupt} on some CPU, which prepares it there.  The completion
// handler runs at {bio, interrupt} and calls biodone.
//
// The in-flight table maps (fd, offset, len) of reads issued by bread to
// their buffer.  bread looks up and chains under the pool lock; biodone
// takes the buffer out of the table under the same lock *before* it runs
// the chain, so a reader that found the buffer in the table is always on
// the chain that biodone runs.
#include "kcont/buf.h"

#include <errno.h>
#include <liburing.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "kcont/spinlock.h"

namespace kc {

namespace {
constexpr int TABLE = 256;
constexpr uint32_t ALIGN = 4096;

std::atomic<int (*)(const buf *, void *)> g_fault_hook{nullptr};
std::atomic<void *> g_fault_arg{nullptr};
}  // namespace

struct bufpool {
  std::atomic<uint32_t> lock{0};
  buf *bufs = nullptr;
  size_t n = 0;
  char *mem = nullptr;
  buf **free = nullptr;
  size_t nfree = 0;
  buf *table[TABLE] = {};
  std::atomic<uint64_t> submitted{0}, completed{0}, coalesced{0}, errors{0}, shorts{0},
      invalidations{0};
  uint32_t epoch = 0;  // bumped by bio_invalidate (pool lock)
};

namespace {

size_t bucket(int fd, uint64_t off, uint32_t len) {
  uint64_t h = uint64_t(uint32_t(fd)) * 0x9E3779B97F4A7C15ull ^ off * 0xC2B2AE3D27D4EB4Full ^ len;
  h ^= h >> 29;
  return size_t(h % TABLE);
}

void table_remove_locked(bufpool *p, buf *bp) {
  buf **pp = &p->table[bucket(bp->fd, bp->offset, bp->len)];
  while (*pp && *pp != bp) pp = &(*pp)->hnext;
  if (*pp) *pp = bp->hnext;
  bp->hnext = nullptr;
  bp->in_table = false;
}

void bio_complete(completion *c, int res, uint32_t) {
  buf *bp = reinterpret_cast<buf *>(reinterpret_cast<char *>(c) - offsetof(buf, comp));
  biodone(bp, res);
}

// Prepares bp's operation on the calling dispatcher's ring.
void ring_submit(buf *bp) {
  io_uring_sqe *sqe = kcont_ring_sqe();
  if (!sqe) {  // ring full even after a flush: fail the request cleanly
    biodone(bp, -EAGAIN);
    return;
  }
  if (auto hook = g_fault_hook.load(std::memory_order_acquire))
    bp->inject = hook(bp, g_fault_arg.load(std::memory_order_relaxed));
  if (bp->inject) {
    io_uring_prep_nop(sqe);
  } else {
    switch (bp->op) {
      case bio_op::read:
        io_uring_prep_read(sqe, bp->fd, bp->data, bp->len, bp->offset);
        break;
      case bio_op::write:
        io_uring_prep_write(sqe, bp->fd, bp->src ? bp->src : bp->data, bp->len, bp->offset);
        sqe->rw_flags = (bp->flags & B_SYNC) ? RWF_SYNC : (bp->flags & B_DSYNC) ? RWF_DSYNC : 0;
        break;
      case bio_op::fsync:
        io_uring_prep_fsync(sqe, bp->fd, 0);
        break;
    }
  }
  io_uring_sqe_set_data(sqe, &bp->comp);
  bp->pool->submitted.fetch_add(1, std::memory_order_relaxed);
}

void submit_fn(void *obj, void *, int) { ring_submit(static_cast<buf *>(obj)); }

// Queues bp's operation from any thread.
void start_io(buf *bp) {
  if (kcont_in_interrupt())
    ring_submit(bp);
  else if (!kcont_defer(&bp->submit_kc, bp, 0))
    biodone(bp, -EAGAIN);  // kcont stopped meanwhile
}

}  // namespace

bufpool *bufpool_create(size_t nbufs, uint32_t bufsize, std::string *err) {
  auto fail = [&](const char *why) -> bufpool * {
    if (err) *err = why;
    return nullptr;
  };
  if (nbufs == 0 || nbufs > (1u << 20)) return fail("bufpool: nbufs must be 1 .. 1048576");
  if (bufsize == 0 || bufsize > (64u << 20)) return fail("bufpool: bufsize must be 1 .. 64 MiB");
  uint32_t cap = (bufsize + ALIGN - 1) / ALIGN * ALIGN;
  auto *p = new (std::nothrow) bufpool;
  if (!p) return fail("bufpool: out of memory");
  p->bufs = new (std::nothrow) buf[nbufs];
  p->free = new (std::nothrow) buf *[nbufs];
  p->mem = static_cast<char *>(std::aligned_alloc(ALIGN, size_t(cap) * nbufs));
  if (!p->bufs || !p->free || !p->mem) {
    delete[] p->bufs;
    delete[] p->free;
    std::free(p->mem);
    delete p;
    return fail("bufpool: out of memory");
  }
  p->n = nbufs;
  for (size_t i = 0; i < nbufs; i++) {
    buf &b = p->bufs[i];
    b.pool = p;
    b.data = p->mem + size_t(cap) * i;
    b.cap = cap;
    b.comp.fn = bio_complete;
    b.comp.lvl = LVL_BIO;
    kcont_init(&b.submit_kc, submit_fn, nullptr, target::at(LVL_BIO));
    p->free[i] = &p->bufs[nbufs - 1 - i];
  }
  p->nfree = nbufs;
  return p;
}

int bufpool_destroy(bufpool *p) {
  if (!p) return 0;
  // On a dispatcher kcont_drain cannot wait: a submit continuation could
  // still run on memory freed here.
  if (kcont_in_interrupt()) return EDEADLK;
  {
    spinlock g(p->lock);
    if (p->nfree != p->n) return EBUSY;
  }
  for (size_t i = 0; i < p->n; i++) kcont_drain(&p->bufs[i].submit_kc);
  delete[] p->bufs;
  delete[] p->free;
  std::free(p->mem);
  delete p;
  return 0;
}

buf *buf_get(bufpool *p) {
  buf *bp;
  {
    spinlock g(p->lock);
    if (!p->nfree) return nullptr;
    bp = p->free[--p->nfree];
  }
  bp->refs.store(1, std::memory_order_relaxed);
  bp->busy.store(false, std::memory_order_relaxed);
  bp->error = 0;
  bp->done = 0;
  bp->inject = 0;
  bp->fd = -1;
  bp->op = bio_op::read;
  bp->offset = 0;
  bp->len = 0;
  bp->src = nullptr;
  bp->flags = 0;
  return bp;
}

size_t bufpool_available(bufpool *p) {
  spinlock g(p->lock);
  return p->nfree;
}

bio_stats bufpool_stats(bufpool *p) {
  bio_stats s;
  s.submitted = p->submitted.load(std::memory_order_relaxed);
  s.completed = p->completed.load(std::memory_order_relaxed);
  s.coalesced = p->coalesced.load(std::memory_order_relaxed);
  s.errors = p->errors.load(std::memory_order_relaxed);
  s.short_transfers = p->shorts.load(std::memory_order_relaxed);
  s.invalidations = p->invalidations.load(std::memory_order_relaxed);
  return s;
}

void bref(buf *bp) { bp->refs.fetch_add(1, std::memory_order_relaxed); }

void brelse(buf *bp) {
  if (bp->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  bufpool *p = bp->pool;
  spinlock g(p->lock);
  p->free[p->nfree++] = bp;
}

int bio_submit(buf *bp, kcont *kc) {
  if (!kcont_running() || (bp->len > bp->cap && !(bp->op == bio_op::write && bp->src)))
    return EINVAL;
  bool expect = false;
  if (!bp->busy.compare_exchange_strong(expect, true, std::memory_order_acq_rel)) return EBUSY;
  if (kc && kcq_enqueue(&bp->waiters, kc) != 0) {
    bp->busy.store(false, std::memory_order_release);
    return EBUSY;
  }
  bp->error = 0;
  bp->done = 0;
  bp->inject = 0;
  start_io(bp);
  return 0;
}

int bread(bufpool *p, int fd, uint64_t offset, uint32_t len, kcont *kc) {
  if (!p || !kc || !kcont_running()) return EINVAL;
  size_t h = bucket(fd, offset, len);
  buf *bp;
  {
    spinlock g(p->lock);
    for (buf *x = p->table[h]; x; x = x->hnext) {
      // Only a read issued since the last bio_invalidate may be joined.
      if (x->fd == fd && x->offset == offset && x->len == len && x->epoch == p->epoch) {
        if (kcq_enqueue(&x->waiters, kc) != 0) return EBUSY;
        x->refs.fetch_add(1, std::memory_order_relaxed);
        p->coalesced.fetch_add(1, std::memory_order_relaxed);
        return 0;
      }
    }
    if (!p->nfree) return ENOBUFS;
    bp = p->free[--p->nfree];
    if (len > bp->cap) {
      p->free[p->nfree++] = bp;
      return EINVAL;
    }
    if (kcq_enqueue(&bp->waiters, kc) != 0) {
      p->free[p->nfree++] = bp;
      return EBUSY;
    }
    bp->refs.store(1, std::memory_order_relaxed);
    bp->busy.store(true, std::memory_order_relaxed);
    bp->fd = fd;
    bp->op = bio_op::read;
    bp->offset = offset;
    bp->len = len;
    bp->src = nullptr;
    bp->flags = 0;
    bp->error = 0;
    bp->done = 0;
    bp->inject = 0;
    bp->epoch = p->epoch;
    bp->hnext = p->table[h];
    p->table[h] = bp;
    bp->in_table = true;
  }
  start_io(bp);
  return 0;
}

void biodone(buf *bp, int res) {
  bufpool *p = bp->pool;
  if (bp->inject) res = -bp->inject;
  int status;
  if (res < 0) {
    bp->error = -res;
    bp->done = 0;
    status = -res;
    p->errors.fetch_add(1, std::memory_order_relaxed);
  } else {
    bp->error = 0;
    bp->done = bp->op == bio_op::fsync ? bp->len : uint32_t(res);
    status = bp->done < bp->len ? BIO_SHORT : 0;
    if (status) p->shorts.fetch_add(1, std::memory_order_relaxed);
  }
  p->completed.fetch_add(1, std::memory_order_relaxed);
  if (bp->in_table) {
    spinlock g(p->lock);
    table_remove_locked(p, bp);
  }
  // Read-after-write: before anyone hears of this write, no later bread may
  // join a read issued before it.
  if (bp->op == bio_op::write && res > 0) bio_invalidate(p);
  bp->busy.store(false, std::memory_order_release);
  kcq_run(&bp->waiters, bp, status);
}

void bio_invalidate(bufpool *p) {
  if (!p) return;
  spinlock g(p->lock);
  p->epoch++;  // older entries stay until biodone takes them out, unjoinable
  p->invalidations.fetch_add(1, std::memory_order_relaxed);
}

void bio_set_fault_hook(int (*hook)(const buf *, void *), void *arg) {
  g_fault_arg.store(arg, std::memory_order_relaxed);
  g_fault_hook.store(hook, std::memory_order_release);
}

}  // namespace kc
