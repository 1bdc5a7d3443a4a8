// SPDX-License-Identifier: BSD-2-Clause
// sock.cc -- TCP sockets on a CPU's ring with upcalls (see sock.h).
//
// State machine of one socket, all on the pool's CPU:
//   ring ops outstanding: `ops` counts submitted requests whose final CQE
//   has not been reaped (a multishot request counts once, until a CQE
//   without IORING_CQE_F_MORE).  Teardown (closing and ops == 0) closes the
//   descriptor, gives queued receive buffers back and frees the slot.
// Received buffers queue per socket as a FIFO of buffer ids linked through
// the pool's `bnext` array; `boff` is how much of the head buffer was read.
#include "kcont/sock.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

#include "kcont/error_text.h"
#include "kcont/ring.h"

namespace kc {

namespace {
constexpr uint16_t NO_BUF = 0xffff;
constexpr uint16_t BGID_BASE = 0x4b00;
// At most this many iovecs of queued sock_sendv requests go in one sendmsg
// (small replies queued while a send is in flight leave together).
constexpr unsigned SENDV_GATHER = 32;
std::atomic<uint16_t> g_next_bgid{0};
}  // namespace

struct sock {
  sockpool *pool = nullptr;
  int fd = -1;
  kcont *upcall = nullptr;
  uint32_t events = 0;
  int error = 0;
  bool in_use = false, listening = false, closing = false, eof = false;
  bool shut_wr = false, shut_done = false;
  bool recv_armed = false, starved = false, wants_writable = false;
  bool throttled = false;  // holds max_queued bytes: no receive until read
  bool connecting = false;
  bool on_hold = false;  // sock_hold: no receive is armed
  // sock_read_into: the rest goes straight to rx_dst (rx_left bytes) with
  // its own receive (rx_comp, in flight while rx_inflight).
  char *rx_dst = nullptr;
  size_t rx_left = 0;
  kcont *rx_done = nullptr;
  bool rx_inflight = false;
  completion rx_comp;
  // sendfile: file -> pipe -> socket with io_uring splice
  int pipe_r = -1, pipe_w = -1;
  size_t pipe_cap = 0;  // the pipe's size (F_GETPIPE_SZ)
  bool xfer = false, xfer_started = false, xfer_to_sock = false;
  bool xfer_stream = false;   // the source is a socket (sock_splice): no offset, EOF ends it
  sock *xfer_src = nullptr;   // sock_splice: the source socket
  sock *splice_to = nullptr;  // this socket is a splice source into that one
  bool spliced = false;       // ... and receives no more itself
  int xfer_fd = -1;
  // The inline road (SOCK_SENDFILE_RESIDENT, and every sock_splice):
  // splice(2) through the pipe on the dispatcher, the socket non-blocking
  // for the call; a full socket waits for POLLOUT on the ring, an empty
  // socket source for POLLIN (xfer_polling; xfer_poll_src says which), and
  // the next call goes on.  xfer_src_ready: the source's poll fired, so a
  // splice from it returns at once (data, end of file or an error).
  bool xfer_inline = false, xfer_polling = false, xfer_poll_src = false, xfer_src_ready = false;
  uint64_t xfer_off = 0;
  size_t xfer_left = 0, xfer_inpipe = 0;
  kcont *xfer_done = nullptr;
  completion xfer_comp;
  bool on_starved = false;
  sock *starve_next = nullptr;
  int ops = 0;
  completion recv_comp, send_comp, aux_comp;  // aux: accept / connect
  // receive queue
  uint16_t rq_head = NO_BUF, rq_tail = NO_BUF;
  uint32_t boff = 0;
  size_t readable = 0;
  // send buffer (circular)
  char *sbuf = nullptr;
  uint32_t shead = 0, slen = 0;
  bool send_inflight = false;  // a send (of the buffer or of sendv requests) is in flight
  // sock_sendv requests, FIFO; sent after the send buffer, before a
  // transfer queued later.  viov/vmsg: the sendmsg in flight.
  sock_sendv_req *vq_head = nullptr, *vq_tail = nullptr;
  iovec viov[SENDV_GATHER];
  msghdr vmsg{};
  completion vq_comp;
  // listener: accepted, not yet taken
  sock *acc_head = nullptr, *acc_tail = nullptr, *acc_next = nullptr;
  sockaddr_storage peer{};
  socklen_t peerlen = 0;
};

struct sockpool {
  sockpool_config cfg;
  sock *socks = nullptr;
  sock **free = nullptr;
  uint32_t nfree = 0;
  char *sndmem = nullptr;
  char *bufmem = nullptr;
  io_uring_buf_ring *br = nullptr;
  size_t br_bytes = 0;
  uint16_t bgid = 0;
  uint16_t *bnext = nullptr;
  uint32_t *blen = nullptr;
  // Receive buffers queued on sockets: written on the pool's CPU only
  // (relaxed load + store, no locked RMW), read by sockpool_get_stats.
  std::atomic<uint32_t> held{0};
  sock *starved_head = nullptr;  // sockets waiting for buffers to re-arm
  std::atomic<bool> registered{false};
  int setup_err = 0;
  std::atomic<uint64_t> accepted{0}, refused{0}, connected{0}, closed{0}, rx{0}, tx{0}, rearms{0},
      enobufs{0}, throttles{0}, rx_direct{0}, tx_inline{0};
  std::atomic<uint32_t> in_use{0};
};

namespace {

template <class T>
T *from_comp(completion *c, completion T::*m) {
  return reinterpret_cast<T *>(reinterpret_cast<char *>(c) -
                               reinterpret_cast<size_t>(&(static_cast<T *>(nullptr)->*m)));
}

bool on_pool_cpu(const sockpool *p) {
  return kcont_in_interrupt() && kcont_current_cpu() == p->cfg.cpu;
}

// Upcalls must run on the pool's CPU in interrupt kind (that is where the
// socket may be used).  A null upcall is allowed (no notifications).
bool upcall_ok(const sockpool *p, const kcont *k) {
  return !k || (k->tgt.k == kind::interrupt && k->tgt.cpu == p->cfg.cpu);
}

void notify(sock *s, uint32_t ev) {
  if (s->closing || !s->upcall) return;
  s->events |= ev;
  kcont_defer(s->upcall, s, 0);
}

void give_back(sockpool *p, uint16_t bid) {
  p->held.store(p->held.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  io_uring_buf_ring_add(p->br, p->bufmem + size_t(bid) * p->cfg.bufsize, p->cfg.bufsize, bid,
                        io_uring_buf_ring_mask(p->cfg.nbufs), 0);
  io_uring_buf_ring_advance(p->br, 1);
}

void recv_done(completion *c, int res, uint32_t flags);

// Parks s until receive buffers come back (wake_starved re-arms it).
void park_starved(sock *s) {
  s->starved = true;
  if (s->on_starved) return;
  s->on_starved = true;
  s->starve_next = s->pool->starved_head;
  s->pool->starved_head = s;
}

void unpark(sock *s) {
  if (!s->on_starved) return;
  sock **pp = &s->pool->starved_head;
  while (*pp && *pp != s) pp = &(*pp)->starve_next;
  if (*pp) *pp = s->starve_next;
  s->on_starved = false;
  s->starve_next = nullptr;
}

void arm_recv(sock *s);

// Buffers came back: re-arm every socket that ran dry.
void wake_starved(sockpool *p) {
  while (sock *s = p->starved_head) {
    if (p->held.load(std::memory_order_relaxed) >= p->cfg.nbufs) return;
    p->starved_head = s->starve_next;
    s->on_starved = false;
    s->starve_next = nullptr;
    s->starved = false;
    p->rearms.fetch_add(1, std::memory_order_relaxed);
    arm_recv(s);
  }
}

void arm_recv(sock *s) {
  // A throttled socket is re-armed by sock_read once it is drained, never
  // by buffers coming back to the pool; a held one by sock_hold, one that
  // reads into caller memory when that ends.
  if (s->recv_armed || s->throttled || s->spliced || s->closing || s->eof || s->error ||
      s->on_hold || s->rx_dst)
    return;
  io_uring_sqe *sqe = kcont_ring_sqe();
  if (!sqe) {
    park_starved(s);  // retried when buffers come back
    return;
  }
  io_uring_prep_recv(sqe, s->fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = s->pool->bgid;
  io_uring_sqe_set_data(sqe, &s->recv_comp);
  s->recv_armed = true;
  s->starved = false;
  s->ops++;
}

void maybe_teardown(sock *s);
void send_more(sock *s);
void send_vq(sock *s);
void xfer_step(sock *s);

// One splice moves up to this much (the pipe is grown to it; 1 MiB is
// Linux's default pipe-max-size): each splice is a trip through io_uring's
// worker pool, so fewer, bigger ones mean fewer context switches.
constexpr size_t PIPE_CHUNK = size_t{1024} * 1024;

void close_pipe(sock *s) {
  if (s->pipe_r >= 0) ::close(s->pipe_r);
  if (s->pipe_w >= 0) ::close(s->pipe_w);
  s->pipe_r = s->pipe_w = -1;
}

// Ends a sendfile: its continuation gets (sock, status).
void xfer_finish(sock *s, int status) {
  s->xfer = false;
  s->xfer_started = false;
  s->xfer_stream = false;
  s->xfer_inline = false;
  s->xfer_poll_src = false;
  s->xfer_src_ready = false;
  if (sock *src = s->xfer_src) {  // the source's descriptor may go now
    s->xfer_src = nullptr;
    src->splice_to = nullptr;
    src->ops--;
    maybe_teardown(src);
  }
  if (status != 0) close_pipe(s);  // it may hold bytes that were never sent
  if (s->xfer_done) kcont_defer(s->xfer_done, s, status);
  s->xfer_done = nullptr;
  if (s->wants_writable && !s->closing) {
    s->wants_writable = false;
    notify(s, SOCK_WRITABLE);
  }
  send_more(s);
}

void xfer_done_fn(completion *c, int res, uint32_t) {
  sock *s = from_comp(c, &sock::xfer_comp);
  s->ops--;
  if (s->closing || (s->xfer_src && s->xfer_src->closing)) {
    s->xfer_polling = false;
    xfer_finish(s, ECANCELED);
  } else if (s->xfer_polling) {  // room again, or the source is readable (or failed)
    s->xfer_polling = false;
    if (res < 0) {
      xfer_finish(s, -res);
    } else {
      if (s->xfer_poll_src) s->xfer_src_ready = true;
      xfer_step(s);
    }
  } else if (res < 0) {
    if (s->xfer_to_sock && !s->error) s->error = -res;
    xfer_finish(s, -res);
  } else if (!s->xfer_to_sock) {  // file -> pipe
    if (res == 0) {               // the file ended before the range did
      xfer_finish(s, ENODATA);
    } else {
      s->xfer_off += uint64_t(res);
      s->xfer_left -= size_t(res);
      s->xfer_inpipe = size_t(res);
      s->xfer_to_sock = true;
      xfer_step(s);
    }
  } else {  // pipe -> socket
    s->pool->tx.fetch_add(uint64_t(res), std::memory_order_relaxed);
    s->xfer_inpipe -= size_t(res);
    if (s->xfer_inpipe == 0) s->xfer_to_sock = false;
    if (s->xfer_inpipe == 0 && s->xfer_left == 0)
      xfer_finish(s, 0);
    else
      xfer_step(s);
  }
  maybe_teardown(s);
}

// The inline road (SOCK_SENDFILE_RESIDENT, and every sock_splice): as
// much as the source holds and the socket takes now, by splice(2) on the
// dispatcher through the socket's pipe (up to PIPE_CHUNK at a time:
// sendfile(2)'s own 64 KiB pipe cost 33-67 % more CPU per 1 MiB READ,
// docs/benchmarks.md).  The socket is non-blocking only for the call (every
// ring operation on it keeps its blocking descriptor; nothing else runs on
// it meanwhile: a transfer owns its stream).  A file source's pages are
// resident, so file -> pipe does not wait for a disk (if one was evicted
// since the caller looked, the call reads it: one disk read on the
// dispatcher, correct but slow).  A socket source is read only when it
// holds bytes (FIONREAD) or its poll fired: tcp_splice_read then returns
// what is queued without waiting, and the source's descriptor is never
// switched to non-blocking (it may be another transfer's destination).  At
// most XFER_INLINE_BUDGET bytes per call, so one busy transfer cannot hold
// the dispatcher: past it, POLLOUT is armed (it fires at once while there
// is room) and the other work of the CPU runs first.  A failed write to the
// socket becomes its error.  0: sent all (a socket source: it reached end of
// file); EAGAIN: the socket is full or the source empty (a poll is armed on
// the ring; its completion calls xfer_step again, the bytes still in the
// pipe go first); ENOBUFS: no ring entry for the poll; else the errno that
// ends the transfer.
constexpr size_t XFER_INLINE_BUDGET = 2 * PIPE_CHUNK;

int xfer_splice_inline(sock *s) {
  int fl = fcntl(s->fd, F_GETFL);
  if (fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) != 0) return errno;
  int e = 0;
  bool poll_src = false;
  size_t moved = 0;
  while (s->xfer_left > 0 || s->xfer_inpipe > 0) {
    if (moved >= XFER_INLINE_BUDGET) {
      e = EAGAIN;  // yield: POLLOUT fires at once if there is room
      break;
    }
    if (s->xfer_inpipe == 0) {  // source -> pipe, without waiting
      ssize_t n;
      if (s->xfer_stream) {
        int queued = 0;
        if (!s->xfer_src_ready && (ioctl(s->xfer_fd, FIONREAD, &queued) != 0 || queued <= 0)) {
          poll_src = true;
          e = EAGAIN;
          break;
        }
        s->xfer_src_ready = false;
        n = ::splice(s->xfer_fd, nullptr, s->pipe_w, nullptr, s->pipe_cap, SPLICE_F_NONBLOCK);
        if (n == 0) break;  // end of file: everything is forwarded
      } else {
        loff_t off = loff_t(s->xfer_off);
        n = ::splice(s->xfer_fd, &off, s->pipe_w, nullptr, std::min(s->xfer_left, s->pipe_cap),
                     SPLICE_F_NONBLOCK);
        if (n == 0) {  // the file ended before the range did
          e = ENODATA;
          break;
        }
      }
      if (n < 0) {
        e = errno;
        if (s->xfer_stream && (e == EAGAIN || e == EINTR)) {  // nothing after all: poll again
          poll_src = true;
          e = EAGAIN;
        }
        break;
      }
      s->xfer_off += uint64_t(n);
      s->xfer_left -= size_t(n);
      s->xfer_inpipe = size_t(n);
    }
    // pipe -> socket, as much as it takes now (more follows: cork)
    bool more = !s->xfer_stream && s->xfer_left > 0;
    ssize_t n = ::splice(s->pipe_r, nullptr, s->fd, nullptr, s->xfer_inpipe,
                         SPLICE_F_NONBLOCK | (more ? SPLICE_F_MORE : 0));
    if (n < 0) {
      e = errno;
      if (e != EAGAIN && e != EINTR && !s->error) s->error = e;
      break;
    }
    s->xfer_inpipe -= size_t(n);
    moved += size_t(n);
    s->pool->tx.fetch_add(uint64_t(n), std::memory_order_relaxed);
    s->pool->tx_inline.fetch_add(uint64_t(n), std::memory_order_relaxed);
  }
  fcntl(s->fd, F_SETFL, fl);
  if (e == EINTR) e = EAGAIN;
  if (e != EAGAIN) return e;
  io_uring_sqe *sqe = kcont_ring_sqe();
  if (!sqe) return ENOBUFS;
  if (poll_src)
    io_uring_prep_poll_add(sqe, s->xfer_fd, POLLIN);
  else
    io_uring_prep_poll_add(sqe, s->fd, POLLOUT);
  io_uring_sqe_set_data(sqe, &s->xfer_comp);
  s->xfer_polling = true;
  s->xfer_poll_src = poll_src;
  s->ops++;
  return EAGAIN;
}

// Queues the next splice of the transfer (or, on the inline road, sends
// what the socket takes now).
void xfer_step(sock *s) {
  if (s->xfer_inline) {
    int e = xfer_splice_inline(s);
    if (e == EAGAIN) return;  // a poll is armed: its completion goes on
    // No ring entry for the poll is EAGAIN (as for a splice).
    xfer_finish(s, e == ENOBUFS ? EAGAIN : e);
    return;
  }
  io_uring_sqe *sqe = kcont_ring_sqe();
  if (!sqe) {
    xfer_finish(s, EAGAIN);
    return;
  }
  if (s->xfer_to_sock)
    io_uring_prep_splice(sqe, s->pipe_r, -1, s->fd, -1, unsigned(s->xfer_inpipe), 0);
  else
    io_uring_prep_splice(sqe, s->xfer_fd, int64_t(s->xfer_off), s->pipe_w, -1,
                         unsigned(std::min(s->xfer_left, s->pipe_cap)), 0);
  io_uring_sqe_set_data(sqe, &s->xfer_comp);
  s->ops++;
}

// Ends every queued sendv request with `status` (the socket failed or was
// aborted: their bytes will never be sent).
void fail_vq(sock *s, int status) {
  while (sock_sendv_req *r = s->vq_head) {
    s->vq_head = r->next_;
    r->next_ = nullptr;
    if (r->done_) kcont_defer(r->done_, s, status);
  }
  s->vq_tail = nullptr;
}

// One sendmsg of what the queued sendv requests still hold (several
// requests' iovecs gathered, up to SENDV_GATHER).
void send_vq(sock *s) {
  unsigned n = 0;
  for (sock_sendv_req *r = s->vq_head; r && n < SENDV_GATHER; r = r->next_) {
    size_t skip = r->sent_;
    for (unsigned i = 0; i < r->iovcnt && n < SENDV_GATHER; i++) {
      size_t len = r->iov[i].iov_len;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      s->viov[n].iov_base = static_cast<char *>(r->iov[i].iov_base) + skip;
      s->viov[n].iov_len = len - skip;
      skip = 0;
      n++;
    }
  }
  if (n == 0) return;
  io_uring_sqe *sqe = kcont_ring_sqe();
  if (!sqe) return;  // the next completion or call retries
  if (n == 1) {      // one range (a small reply alone): a plain send is cheaper
    io_uring_prep_send(sqe, s->fd, s->viov[0].iov_base, s->viov[0].iov_len, MSG_NOSIGNAL);
  } else {
    s->vmsg = msghdr{};
    s->vmsg.msg_iov = s->viov;
    s->vmsg.msg_iovlen = n;
    io_uring_prep_sendmsg(sqe, s->fd, &s->vmsg, MSG_NOSIGNAL);
  }
  io_uring_sqe_set_data(sqe, &s->vq_comp);
  s->send_inflight = true;
  s->ops++;
}

void vq_done(completion *c, int res, uint32_t) {
  sock *s = from_comp(c, &sock::vq_comp);
  s->ops--;
  s->send_inflight = false;
  if (res < 0) {
    if (!s->error) s->error = -res;
    fail_vq(s, -res);
    notify(s, SOCK_ERROR);
  } else {
    s->pool->tx.fetch_add(uint64_t(res), std::memory_order_relaxed);
    size_t left = size_t(res);
    // Requests wholly sent are done: the kernel has copied their bytes.
    while (sock_sendv_req *r = s->vq_head) {
      size_t rest = r->len_ - r->sent_;
      if (left < rest) {
        r->sent_ += left;
        break;
      }
      left -= rest;
      s->vq_head = r->next_;
      if (!s->vq_head) s->vq_tail = nullptr;
      r->next_ = nullptr;
      if (r->done_) kcont_defer(r->done_, s, 0);
    }
    if (s->error) fail_vq(s, ECANCELED);  // aborted meanwhile
    if (!s->vq_head && s->wants_writable && !s->closing && !s->xfer) {
      s->wants_writable = false;
      notify(s, SOCK_WRITABLE);
    }
  }
  send_more(s);
  maybe_teardown(s);
}

void send_done(completion *c, int res, uint32_t) {
  sock *s = from_comp(c, &sock::send_comp);
  s->ops--;
  s->send_inflight = false;
  if (res < 0) {
    if (!s->error) s->error = -res;
    s->slen = 0;
    notify(s, SOCK_ERROR);
  } else if (s->error) {
    s->slen = 0;  // failed or aborted meanwhile: the rest is never sent
  } else {
    s->pool->tx.fetch_add(uint64_t(res), std::memory_order_relaxed);
    bool was_full = s->slen == s->pool->cfg.sndbuf;
    s->shead = (s->shead + uint32_t(res)) % s->pool->cfg.sndbuf;
    s->slen -= uint32_t(res);
    // Room opened: tell a sender that was refused, or that saw no room.
    if ((s->wants_writable || was_full) && s->slen < s->pool->cfg.sndbuf) {
      s->wants_writable = false;
      notify(s, SOCK_WRITABLE);
    }
  }
  send_more(s);
  maybe_teardown(s);
}

// sock_splice: bytes the source had received before the splice began go
// first, through the send buffer.
void feed_from_source(sock *to) {
  sock *from = to->xfer_src;
  uint32_t cap = to->pool->cfg.sndbuf;
  while (from->readable > 0 && to->slen < cap) {
    uint32_t tail = (to->shead + to->slen) % cap;
    size_t room = std::min<size_t>(cap - to->slen, cap - tail);
    long n = sock_read(from, to->sbuf + tail, room);
    if (n <= 0) break;
    to->slen += uint32_t(n);
  }
}

void send_more(sock *s) {
  if (s->send_inflight || s->fd < 0) return;
  if (s->xfer && s->xfer_src && !s->xfer_started) feed_from_source(s);
  if (s->xfer) {
    // A sendfile owns the socket's byte stream once the buffer drained (a
    // splice also waits for its source's last receive to complete).
    bool src_quiet = !s->xfer_src || (!s->xfer_src->recv_armed && s->xfer_src->readable == 0);
    if (s->slen == 0 && !s->vq_head && !s->xfer_started && src_quiet) {
      s->xfer_started = true;
      xfer_step(s);
      return;  // the transfer has the stream (an inline one may have ended
               // already: its xfer_finish called send_more for what follows)
    }
    if (s->xfer_started) return;
  }
  if (s->slen == 0) {
    if (s->vq_head) {  // the send buffer is out: the sendv requests follow
      if (s->error)
        fail_vq(s, ECANCELED);  // failed before they went
      else
        send_vq(s);
      return;
    }
    // Not while a sendfile/splice is queued: it owns the stream's tail
    // (xfer_finish calls us again).
    if (s->shut_wr && !s->shut_done && !s->xfer) {
      ::shutdown(s->fd, SHUT_WR);
      s->shut_done = true;
    }
    return;
  }
  if (s->error) return;
  io_uring_sqe *sqe = kcont_ring_sqe();
  if (!sqe) return;  // the next completion or call retries
  uint32_t cap = s->pool->cfg.sndbuf;
  uint32_t chunk = std::min(s->slen, cap - s->shead);
  io_uring_prep_send(sqe, s->fd, s->sbuf + s->shead, chunk, MSG_NOSIGNAL);
  io_uring_sqe_set_data(sqe, &s->send_comp);
  s->send_inflight = true;
  s->ops++;
}

void free_slot(sock *s) {
  sockpool *p = s->pool;
  unpark(s);
  while (s->rq_head != NO_BUF) {
    uint16_t b = s->rq_head;
    s->rq_head = p->bnext[b];
    give_back(p, b);
  }
  s->rq_tail = NO_BUF;
  wake_starved(p);
  s->in_use = false;
  p->free[p->nfree++] = s;
  p->in_use.fetch_sub(1, std::memory_order_relaxed);
  p->closed.fetch_add(1, std::memory_order_relaxed);
}

void maybe_teardown(sock *s) {
  if (!s->closing || s->ops > 0 || s->send_inflight) return;
  if ((s->slen > 0 || s->vq_head) && !s->error && s->fd >= 0) return;  // still to send
  fail_vq(s, ECANCELED);                                               // never sent (failed)
  // Accepted connections nobody took die with their listener.
  while (sock *a = s->acc_head) {
    s->acc_head = a->acc_next;
    sock_close(a);
  }
  if (s->fd >= 0) {
    ::close(s->fd);
    s->fd = -1;
  }
  close_pipe(s);
  free_slot(s);
}

// Moves up to n queued bytes to dst, gives emptied buffers back and
// re-arms a throttled socket once it is drained below half its bound.
size_t copy_queued(sock *s, void *dst, size_t n) {
  sockpool *p = s->pool;
  size_t got = 0;
  while (got < n && s->rq_head != NO_BUF) {
    uint16_t b = s->rq_head;
    uint32_t avail = p->blen[b] - s->boff;
    size_t take = std::min<size_t>(avail, n - got);
    std::memcpy(static_cast<char *>(dst) + got, p->bufmem + size_t(b) * p->cfg.bufsize + s->boff,
                take);
    got += take;
    s->boff += uint32_t(take);
    if (s->boff == p->blen[b]) {
      s->rq_head = p->bnext[b];
      if (s->rq_head == NO_BUF) s->rq_tail = NO_BUF;
      s->boff = 0;
      give_back(p, b);
    }
  }
  s->readable -= got;
  if (s->throttled && s->readable < p->cfg.max_queued / 2) {
    s->throttled = false;
    if (!s->recv_armed) {
      p->rearms.fetch_add(1, std::memory_order_relaxed);
      arm_recv(s);
    }
  }
  wake_starved(p);
  return got;
}

// Ends a sock_read_into: its continuation gets (sock, status); the pool's
// receive resumes (unless the socket is held).
void rx_finish(sock *s, int status) {
  kcont *done = s->rx_done;
  s->rx_dst = nullptr;
  s->rx_left = 0;
  s->rx_done = nullptr;
  kcont_defer(done, s, status);
  if (!s->recv_armed && !s->starved && !s->throttled) arm_recv(s);
}

// Advances a sock_read_into: queued bytes first, then one receive of the
// rest straight into the caller's memory -- once no pool receive is in
// flight (its buffer may hold the next bytes of the stream; recv_done calls
// us again).
void rx_step(sock *s) {
  if (!s->rx_dst || s->rx_inflight) return;
  if (s->closing) {
    rx_finish(s, ECANCELED);
    return;
  }
  size_t got = copy_queued(s, s->rx_dst, s->rx_left);
  s->rx_dst += got;
  s->rx_left -= got;
  if (s->rx_left == 0) {
    rx_finish(s, 0);
    return;
  }
  if (s->error) {
    rx_finish(s, s->error);
    return;
  }
  if (s->eof) {
    rx_finish(s, ENODATA);
    return;
  }
  if (s->recv_armed) return;
  io_uring_sqe *sqe = kcont_ring_sqe();
  if (!sqe) {
    rx_finish(s, EAGAIN);
    return;
  }
  // MSG_WAITALL: io_uring keeps receiving into the range until it is full
  // (one completion) instead of completing once per segment.
  io_uring_prep_recv(sqe, s->fd, s->rx_dst, s->rx_left, MSG_WAITALL);
  io_uring_sqe_set_data(sqe, &s->rx_comp);
  s->rx_inflight = true;
  s->ops++;
}

void rx_done_fn(completion *c, int res, uint32_t) {
  sock *s = from_comp(c, &sock::rx_comp);
  sockpool *p = s->pool;
  s->ops--;
  s->rx_inflight = false;
  if (res > 0) {
    size_t n = std::min(size_t(res), s->rx_left);
    s->rx_dst += n;
    s->rx_left -= n;
    p->rx_direct.fetch_add(uint64_t(n), std::memory_order_relaxed);
  } else if (res == 0) {
    s->eof = true;
    if (!s->closing) notify(s, SOCK_EOF | SOCK_READABLE);
  } else if (res != -ECANCELED || !s->closing) {
    if (!s->error) s->error = -res;
    if (!s->closing) notify(s, SOCK_ERROR);
  }
  rx_step(s);  // finishes, or receives the rest after a short receive
  maybe_teardown(s);
}

void recv_done(completion *c, int res, uint32_t flags) {
  sock *s = from_comp(c, &sock::recv_comp);
  sockpool *p = s->pool;
  if (!(flags & IORING_CQE_F_MORE)) {
    s->recv_armed = false;
    s->ops--;
  }
  if (res > 0 && (flags & IORING_CQE_F_BUFFER)) {
    uint16_t bid = uint16_t(flags >> IORING_CQE_BUFFER_SHIFT);
    if (s->closing) {
      p->held.store(p->held.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      give_back(p, bid);
    } else {
      p->held.store(p->held.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      p->blen[bid] = uint32_t(res);
      p->bnext[bid] = NO_BUF;
      if (s->rq_tail == NO_BUF)
        s->rq_head = bid;
      else
        p->bnext[s->rq_tail] = bid;
      s->rq_tail = bid;
      s->readable += size_t(res);
      p->rx.fetch_add(uint64_t(res), std::memory_order_relaxed);
      if (s->readable >= p->cfg.max_queued && !s->throttled) {
        // A socket nobody reads must not take every buffer of the pool:
        // no further receive; the data waits in the kernel (TCP pushes
        // back on the peer) until sock_read drains the queue.
        s->throttled = true;
        p->throttles.fetch_add(1, std::memory_order_relaxed);
      }
      // A splice forwards it; sock_read_into takes it (below).
      if (!s->spliced && !s->rx_dst) notify(s, SOCK_READABLE);
    }
  } else if (res == 0) {
    s->eof = true;
    notify(s, SOCK_EOF | SOCK_READABLE);
  } else if (res == -ENOBUFS) {
    // Out of receive buffers: the data waits in the kernel.  Re-arm now if
    // buffers came back meanwhile, else when sock_read gives some back.
    p->enobufs.fetch_add(1, std::memory_order_relaxed);
    if (p->held.load(std::memory_order_relaxed) >= p->cfg.nbufs) park_starved(s);
  } else if (res < 0 && res != -ECANCELED) {
    if (!s->error) s->error = -res;
    notify(s, SOCK_ERROR);
  }
  if (s->splice_to) send_more(s->splice_to);
  rx_step(s);
  if (!s->recv_armed && !s->starved && !s->closing && !s->throttled && !s->on_hold && !s->rx_dst) {
    p->rearms.fetch_add(1, std::memory_order_relaxed);
    arm_recv(s);
  }
  maybe_teardown(s);
}

sock *take_slot(sockpool *p) {
  if (!p->nfree) return nullptr;
  sock *s = p->free[--p->nfree];
  char *sbuf = s->sbuf;
  sockpool *pool = s->pool;
  completion rc = s->recv_comp, sc = s->send_comp, ac = s->aux_comp, xc = s->xfer_comp,
             xr = s->rx_comp, vc = s->vq_comp;
  *s = sock{};
  s->vq_comp = vc;
  s->xfer_comp = xc;
  s->rx_comp = xr;
  s->sbuf = sbuf;
  s->pool = pool;
  s->recv_comp = rc;
  s->send_comp = sc;
  s->aux_comp = ac;
  s->in_use = true;
  p->in_use.fetch_add(1, std::memory_order_relaxed);
  return s;
}

// Takes a slot for the new descriptor fd and a submission entry for its
// first ring operation.  On failure closes fd and returns nullptr.
sock *open_slot(sockpool *p, int fd, io_uring_sqe **sqe) {
  sock *s = take_slot(p);
  *sqe = s ? kcont_ring_sqe() : nullptr;
  if (!*sqe) {
    ::close(fd);
    if (s) free_slot(s);
    return nullptr;
  }
  s->fd = fd;
  // Bound what one receive burst can take from the shared buffers: the
  // kernel holds at most about this much unread for the socket (accepted
  // sockets inherit it from the listener).
  int rcv = int(p->cfg.max_queued);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  return s;
}

void accept_done(completion *c, int res, uint32_t flags) {
  sock *l = from_comp(c, &sock::aux_comp);
  sockpool *p = l->pool;
  if (!(flags & IORING_CQE_F_MORE)) l->ops--;
  if (res >= 0) {
    sock *s = l->closing ? nullptr : take_slot(p);
    if (!s) {
      ::close(res);  // no slot: refuse (back-pressure)
      p->refused.fetch_add(1, std::memory_order_relaxed);
    } else {
      s->fd = res;
      int one = 1;
      setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (l->acc_tail)
        l->acc_tail->acc_next = s;
      else
        l->acc_head = s;
      l->acc_tail = s;
      p->accepted.fetch_add(1, std::memory_order_relaxed);
      notify(l, SOCK_ACCEPTABLE);
    }
  } else if (res != -ECANCELED && !l->closing) {
    if (!l->error) l->error = -res;
    notify(l, SOCK_ERROR);
  }
  if (!(flags & IORING_CQE_F_MORE) && !l->closing && !l->error) {
    io_uring_sqe *sqe = kcont_ring_sqe();
    if (sqe) {
      io_uring_prep_multishot_accept(sqe, l->fd, nullptr, nullptr, SOCK_CLOEXEC);
      io_uring_sqe_set_data(sqe, &l->aux_comp);
      l->ops++;
    }
  }
  maybe_teardown(l);
}

void connect_done(completion *c, int res, uint32_t) {
  sock *s = from_comp(c, &sock::aux_comp);
  s->ops--;
  s->connecting = false;
  if (res < 0) {
    if (!s->error) s->error = -res;
    fail_vq(s, ECANCELED);  // sendv requests queued while it connected
    notify(s, SOCK_ERROR);
  } else {
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->pool->connected.fetch_add(1, std::memory_order_relaxed);
    arm_recv(s);
    send_more(s);
    notify(s, SOCK_CONNECTED);
  }
  maybe_teardown(s);
}

void cancel_op(completion *target) {
  io_uring_sqe *sqe = kcont_ring_sqe();
  if (!sqe) return;
  io_uring_prep_cancel(sqe, target, 0);
  io_uring_sqe_set_data(sqe, nullptr);
}

// Runs on the pool's CPU: registers the provided buffer ring.
struct setup_req {
  sockpool *p;
  bool unregister;
};
void setup_fn(void *env) {
  auto *r = static_cast<setup_req *>(env);
  sockpool *p = r->p;
  if (r->unregister) {
    io_uring_unregister_buf_ring(kcont_ring(), p->bgid);
  } else {
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(p->br);
    reg.ring_entries = p->cfg.nbufs;
    reg.bgid = p->bgid;
    int e = io_uring_register_buf_ring(kcont_ring(), &reg, 0);
    if (e < 0) {
      p->setup_err = -e;
    } else {
      io_uring_buf_ring_init(p->br);
      for (uint32_t i = 0; i < p->cfg.nbufs; i++)
        io_uring_buf_ring_add(p->br, p->bufmem + size_t(i) * p->cfg.bufsize, p->cfg.bufsize,
                              uint16_t(i), io_uring_buf_ring_mask(p->cfg.nbufs), int(i));
      io_uring_buf_ring_advance(p->br, int(p->cfg.nbufs));
      p->registered = true;
    }
  }
}

bool run_on_cpu(sockpool *p, bool unregister) {
  setup_req r{p, unregister};
  return kcont_run_on(p->cfg.cpu, LVL_NET, setup_fn, &r) == 0;
}

void destroy_memory(sockpool *p) {
  delete[] p->socks;
  delete[] p->free;
  delete[] p->bnext;
  delete[] p->blen;
  std::free(p->sndmem);
  std::free(p->bufmem);
  if (p->br) munmap(p->br, p->br_bytes);
  delete p;
}

}  // namespace

sockpool *sockpool_create(const sockpool_config &cfg, std::string *err) {
  auto fail = [&](const std::string &why) -> sockpool * {
    if (err) *err = why;
    return nullptr;
  };
  if (!kcont_running()) return fail("sockpool: kcont is not running");
  if (kcont_in_interrupt()) return fail("sockpool: must be created in thread context");
  if (cfg.cpu < 0 || cfg.cpu >= kcont_ncpus()) return fail("sockpool: no such CPU");
  if (cfg.nbufs == 0 || cfg.nbufs > 32768 || (cfg.nbufs & (cfg.nbufs - 1)))
    return fail("sockpool: nbufs must be a power of two up to 32768");
  if (cfg.bufsize < 512 || cfg.nsocks == 0 || cfg.sndbuf < 512)
    return fail("sockpool: bufsize and sndbuf must be at least 512, nsocks at least 1");
  // 1 would stop a socket's receive for good (it restarts below half).
  if (cfg.max_queued == 1 || cfg.max_queued > INT32_MAX)
    return fail("sockpool: max_queued must be 0 (default) or 2 .. 2^31-1");
  auto *p = new (std::nothrow) sockpool;
  if (!p) return fail("sockpool: out of memory");
  p->cfg = cfg;
  if (p->cfg.max_queued == 0)  // in 64 bits: nbufs/4 x bufsize can pass 4 GiB
    p->cfg.max_queued = uint32_t(std::min<uint64_t>(
        uint64_t(std::max<uint32_t>(cfg.nbufs / 4, 2)) * cfg.bufsize, INT32_MAX));
  p->socks = new (std::nothrow) sock[cfg.nsocks];
  p->free = new (std::nothrow) sock *[cfg.nsocks];
  p->bnext = new (std::nothrow) uint16_t[cfg.nbufs];
  p->blen = new (std::nothrow) uint32_t[cfg.nbufs];
  p->sndmem = static_cast<char *>(std::malloc(size_t(cfg.sndbuf) * cfg.nsocks));
  p->bufmem = static_cast<char *>(std::aligned_alloc(4096, size_t(cfg.bufsize) * cfg.nbufs));
  p->br_bytes = (sizeof(io_uring_buf) * cfg.nbufs + 4095) / 4096 * 4096;
  void *br = mmap(nullptr, p->br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  p->br = br == MAP_FAILED ? nullptr : static_cast<io_uring_buf_ring *>(br);
  if (!p->socks || !p->free || !p->bnext || !p->blen || !p->sndmem || !p->bufmem || !p->br) {
    destroy_memory(p);
    return fail("sockpool: out of memory");
  }
  for (uint32_t i = 0; i < cfg.nsocks; i++) {
    sock &s = p->socks[i];
    s.pool = p;
    s.sbuf = p->sndmem + size_t(cfg.sndbuf) * i;
    s.recv_comp = completion{recv_done, LVL_NET};
    s.send_comp = completion{send_done, LVL_NET};
    s.aux_comp = completion{accept_done, LVL_NET};
    s.xfer_comp = completion{xfer_done_fn, LVL_NET};
    s.rx_comp = completion{rx_done_fn, LVL_NET};
    s.vq_comp = completion{vq_done, LVL_NET};
    p->free[i] = &p->socks[cfg.nsocks - 1 - i];
  }
  p->nfree = cfg.nsocks;
  p->bgid = uint16_t(BGID_BASE + g_next_bgid.fetch_add(1));
  if (!run_on_cpu(p, false) || !p->registered) {
    std::string why = "sockpool: registering receive buffers: ";
    why += p->setup_err ? kc::error_text(p->setup_err) : "kcont stopped";
    destroy_memory(p);
    return fail(why);
  }
  return p;
}

int sockpool_destroy(sockpool *p) {
  if (!p) return 0;
  // On a dispatcher it could not wait for the unregistration on the pool's
  // CPU, and freeing the memory then would leave the buffer ring registered.
  if (kcont_in_interrupt()) return EDEADLK;
  if (p->in_use.load() != 0) return EBUSY;
  if (p->registered && kcont_running()) run_on_cpu(p, true);
  destroy_memory(p);
  return 0;
}

sockpool_stats sockpool_get_stats(sockpool *p) {
  sockpool_stats s;
  s.accepted = p->accepted.load();
  s.refused = p->refused.load();
  s.connected = p->connected.load();
  s.closed = p->closed.load();
  s.rx_bytes = p->rx.load();
  s.tx_bytes = p->tx.load();
  s.rearms = p->rearms.load();
  s.enobufs = p->enobufs.load();
  s.throttles = p->throttles.load();
  s.in_use = p->in_use.load();
  s.rx_direct_bytes = p->rx_direct.load();
  s.tx_inline_bytes = p->tx_inline.load();
  s.buffers_queued = p->held.load(std::memory_order_relaxed);
  return s;
}

sock *sock_listen(sockpool *p, const sockaddr *addr, socklen_t len, int backlog, kcont *upcall,
                  int *err, bool reuseport) {
  auto fail = [&](int e) -> sock * {
    if (err) *err = e;
    return nullptr;
  };
  if (!on_pool_cpu(p)) return fail(EPERM);
  if (!upcall_ok(p, upcall)) return fail(EINVAL);
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (::bind(fd, addr, len) < 0 || ::listen(fd, backlog) < 0) {
    int e = errno;
    ::close(fd);
    return fail(e);
  }
  io_uring_sqe *sqe;
  sock *l = open_slot(p, fd, &sqe);
  if (!l) return fail(ENOBUFS);
  l->listening = true;
  l->upcall = upcall;
  l->aux_comp.fn = accept_done;
  io_uring_prep_multishot_accept(sqe, fd, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data(sqe, &l->aux_comp);
  l->ops++;
  if (err) *err = 0;
  return l;
}

sock *sock_accept(sock *l) {
  if (!l || !on_pool_cpu(l->pool) || !l->listening) return nullptr;
  sock *s = l->acc_head;
  if (!s) return nullptr;
  l->acc_head = s->acc_next;
  if (!l->acc_head) l->acc_tail = nullptr;
  s->acc_next = nullptr;
  return s;
}

int sock_start(sock *s, kcont *upcall) {
  if (!s || !on_pool_cpu(s->pool)) return EPERM;
  if (s->listening || s->closing || !upcall_ok(s->pool, upcall)) return EINVAL;
  s->upcall = upcall;
  arm_recv(s);
  return 0;
}

int sock_detach(sock *s) {
  if (!s || !on_pool_cpu(s->pool)) return -EPERM;
  if (s->listening || s->upcall || s->closing || s->fd < 0 || s->ops > 0) return -EINVAL;
  int fd = s->fd;
  s->fd = -1;
  free_slot(s);
  s->pool->closed.fetch_sub(1, std::memory_order_relaxed);  // handed over, not closed
  return fd;
}

sock *sock_adopt(sockpool *p, int fd, kcont *upcall, int *err) {
  auto fail = [&](int e) -> sock * {
    if (err) *err = e;
    return nullptr;
  };
  if (!on_pool_cpu(p)) return fail(EPERM);
  if (fd < 0 || !upcall || !upcall_ok(p, upcall)) return fail(EINVAL);
  sock *s = take_slot(p);
  if (!s) return fail(ENOBUFS);
  s->fd = fd;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // This pool's bound, as for its own sockets (open_slot): TCP pushes back.
  int rcv = int(p->cfg.max_queued);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  p->accepted.fetch_add(1, std::memory_order_relaxed);
  s->upcall = upcall;
  arm_recv(s);
  return s;
}

sock *sock_connect(sockpool *p, const sockaddr *addr, socklen_t len, kcont *upcall, int *err) {
  auto fail = [&](int e) -> sock * {
    if (err) *err = e;
    return nullptr;
  };
  if (!on_pool_cpu(p)) return fail(EPERM);
  if (len > sizeof(sockaddr_storage) || !upcall_ok(p, upcall)) return fail(EINVAL);
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(errno);
  io_uring_sqe *sqe;
  sock *s = open_slot(p, fd, &sqe);
  if (!s) return fail(ENOBUFS);
  s->upcall = upcall;
  s->connecting = true;
  std::memcpy(&s->peer, addr, len);
  s->peerlen = len;
  s->aux_comp.fn = connect_done;
  io_uring_prep_connect(sqe, fd, reinterpret_cast<sockaddr *>(&s->peer), s->peerlen);
  io_uring_sqe_set_data(sqe, &s->aux_comp);
  s->ops++;  // the address lives in the slot: the loop's flush submits it
  if (err) *err = 0;
  return s;
}

uint32_t sock_events(sock *s) {
  if (!s || !on_pool_cpu(s->pool)) return 0;
  uint32_t e = s->events;
  s->events = 0;
  return e;
}

int sock_error(sock *s) { return s ? s->error : EINVAL; }

long sock_read(sock *s, void *dst, size_t n) {
  if (!s || !on_pool_cpu(s->pool)) return -EPERM;
  if (s->rx_dst) return -EBUSY;
  size_t got = copy_queued(s, dst, n);
  if (got) return long(got);
  if (s->eof) return 0;
  return -EAGAIN;
}

size_t sock_readable(sock *s) { return s ? s->readable : 0; }

int sock_read_into(sock *s, void *dst, size_t n, kcont *done) {
  if (!s || !on_pool_cpu(s->pool)) return EPERM;
  if (s->listening || s->spliced || !done || n == 0) return EINVAL;
  if (s->rx_dst) return EBUSY;
  if (s->closing) return EPIPE;
  s->rx_dst = static_cast<char *>(dst);
  s->rx_left = n;
  s->rx_done = done;
  rx_step(s);  // may finish at once (done deferred, not run here)
  return 0;
}

int sock_hold(sock *s, bool hold) {
  if (!s || !on_pool_cpu(s->pool)) return EPERM;
  if (s->listening) return EINVAL;
  s->on_hold = hold;
  if (!hold && !s->recv_armed && !s->starved && !s->throttled) arm_recv(s);
  return 0;
}

long sock_send(sock *s, const void *src, size_t n) {
  if (!s || !on_pool_cpu(s->pool)) return -EPERM;
  if (s->error) return -s->error;
  if (s->shut_wr || s->closing) return -EPIPE;
  if (s->xfer || s->vq_head) {  // bytes queued now must follow them: wait
    s->wants_writable = true;
    return 0;
  }
  uint32_t cap = s->pool->cfg.sndbuf;
  size_t room = cap - s->slen;
  size_t take = std::min(room, n);
  size_t done = 0;
  while (done < take) {
    uint32_t tail = (s->shead + s->slen) % cap;
    size_t chunk = std::min<size_t>(take - done, cap - tail);
    std::memcpy(s->sbuf + tail, static_cast<const char *>(src) + done, chunk);
    s->slen += uint32_t(chunk);
    done += chunk;
  }
  if (done < n) s->wants_writable = true;
  if (!s->connecting) send_more(s);
  return long(done);
}

int sock_sendv(sock *s, sock_sendv_req *r, kcont *done) {
  if (!s || !on_pool_cpu(s->pool)) return EPERM;
  if (!r || !r->iov || r->iovcnt == 0 || r->iovcnt > SOCK_SENDV_MAX_IOV) return EINVAL;
  if (s->error) return s->error;
  if (s->shut_wr || s->closing || s->listening || s->fd < 0) return EPIPE;
  if (s->xfer) return EBUSY;
  size_t len = 0;
  for (unsigned i = 0; i < r->iovcnt; i++) len += r->iov[i].iov_len;
  if (len == 0) return EINVAL;
  r->len_ = len;
  r->sent_ = 0;
  r->done_ = done;
  r->next_ = nullptr;
  if (s->vq_tail)
    s->vq_tail->next_ = r;
  else
    s->vq_head = r;
  s->vq_tail = r;
  if (!s->connecting) send_more(s);
  return 0;
}

size_t sock_send_space(sock *s) { return s ? s->pool->cfg.sndbuf - s->slen : 0; }

int sock_shutdown(sock *s) {
  if (!s || !on_pool_cpu(s->pool)) return EPERM;
  s->shut_wr = true;
  // A connecting socket shuts down once connected (connect_done sends):
  // SHUT_WR on a connecting socket would make Linux drop the connection.
  if (!s->connecting) send_more(s);
  return 0;
}

int sock_close(sock *s) {
  if (!s || !on_pool_cpu(s->pool)) return EPERM;
  if (s->closing) return 0;
  s->closing = true;
  if (s->upcall) kcont_cancel(s->upcall);
  s->upcall = nullptr;
  if (s->recv_armed) cancel_op(&s->recv_comp);
  if (s->rx_inflight)
    cancel_op(&s->rx_comp);  // rx_done_fn ends the read with ECANCELED
  else if (s->rx_dst)
    rx_finish(s, ECANCELED);
  if (s->listening || s->connecting) cancel_op(&s->aux_comp);
  // Nothing to flush (a send in flight still owns its bytes: send_done
  // drops the rest once it ends).
  if ((s->listening || s->error) && !s->send_inflight) {
    s->slen = 0;
    fail_vq(s, ECANCELED);
  }
  if (s->xfer && !s->xfer_started) xfer_finish(s, ECANCELED);
  if (s->xfer && s->xfer_started) cancel_op(&s->xfer_comp);    // a splice or a poll
  if (s->splice_to && s->fd >= 0) ::shutdown(s->fd, SHUT_RD);  // its splice sees EOF
  send_more(s);
  maybe_teardown(s);
  return 0;
}

int sock_abort(sock *s) {
  if (!s || !on_pool_cpu(s->pool)) return EPERM;
  if (!s->error) s->error = ECONNABORTED;
  if (s->fd >= 0 && !s->listening) {
    // The peer gets a reset, and a send, receive or splice blocked on the
    // connection ends now (EPIPE / 0) instead of waiting for the peer.
    linger lg{1, 0};
    setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    ::shutdown(s->fd, SHUT_RDWR);
  }
  if (!s->send_inflight) {
    s->slen = 0;
    fail_vq(s, ECANCELED);
  }
  if (!s->closing) return sock_close(s);
  maybe_teardown(s);
  return 0;
}

namespace {

int open_pipe(sock *s) {
  if (s->pipe_r >= 0) return 0;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return errno;
  s->pipe_r = p[0];
  s->pipe_w = p[1];
  fcntl(s->pipe_w, F_SETPIPE_SZ, int(PIPE_CHUNK));
  int sz = fcntl(s->pipe_w, F_GETPIPE_SZ);
  s->pipe_cap = sz > 0 ? size_t(sz) : 65536;
  return 0;
}

}  // namespace

int sock_splice(sock *from, sock *to, kcont *done) {
  if (!from || !to || !on_pool_cpu(to->pool)) return EPERM;
  if (from->pool != to->pool || from == to || from->listening || to->listening) return EINVAL;
  if (to->error) return to->error;
  if (from->closing || to->closing || to->shut_wr || from->fd < 0 || to->fd < 0) return EPIPE;
  if (to->xfer || from->spliced) return EBUSY;
  if (int e = open_pipe(to)) return e;
  // The source receives no more itself; a receive in flight is cancelled
  // (what it still brings is forwarded before the splice starts).
  from->spliced = true;
  from->splice_to = to;
  from->ops++;  // its descriptor must outlive the splice
  if (from->recv_armed) cancel_op(&from->recv_comp);
  to->xfer = true;
  to->xfer_started = false;
  to->xfer_to_sock = false;
  to->xfer_stream = true;
  to->xfer_src = from;
  to->xfer_fd = from->fd;
  to->xfer_off = 0;
  to->xfer_left = SIZE_MAX;
  to->xfer_inpipe = 0;
  to->xfer_done = done;
  to->xfer_inline = true;
  if (!to->connecting) send_more(to);
  return 0;
}

int sock_sendfile(sock *s, int file_fd, uint64_t offset, size_t len, kcont *done, unsigned flags) {
  if (!s || !on_pool_cpu(s->pool)) return EPERM;
  if (s->error) return s->error;
  if (s->closing || s->shut_wr || s->listening || s->fd < 0) return EPIPE;
  if (s->xfer) return EBUSY;
  if (len == 0 || (flags & ~SOCK_SENDFILE_RESIDENT) != 0) return EINVAL;
  s->xfer_inline = (flags & SOCK_SENDFILE_RESIDENT) != 0;
  if (int e = open_pipe(s)) return e;
  s->xfer = true;
  s->xfer_started = false;
  s->xfer_to_sock = false;
  s->xfer_fd = file_fd;
  s->xfer_off = offset;
  s->xfer_left = len;
  s->xfer_inpipe = 0;
  s->xfer_done = done;
  if (!s->connecting) send_more(s);  // starts now, or when the buffer drains
  return 0;
}

int sock_fd(sock *s) { return s ? s->fd : -1; }

}  // namespace kc
