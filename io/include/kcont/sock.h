// SPDX-License-Identifier: BSD-2-Clause
// sock.h -- TCP sockets driven by a CPU's io_uring ring, with upcalls.
//
// Model: a sockpool belongs to one CPU.  It holds a fixed number of socket
// slots, each with a fixed send buffer, and a ring of provided receive
// buffers registered with that CPU's io_uring.  Everything about its sockets
// happens on that CPU's dispatcher: ring completions are reaped at {net,
// interrupt}, and the socket's *upcall* -- a continuation of the user's,
// usually at {softnet, interrupt} on the same CPU -- is deferred whenever
// something happened (BSD's so_upcall: "look at the socket").  The upcall
// reads what happened with sock_events(), then calls sock_read, sock_send,
// sock_accept, sock_shutdown or sock_close -- on this very socket or others.
//
// Receiving is one recv at a time per socket into the provided buffers
// (re-armed as each completes, so a socket never has more than one buffer
// in flight -- a multishot recv would let one busy socket take the whole
// pool in a single burst): received buffers queue on the socket until
// sock_read copies them out and gives them back.  If the buffers run out
// the recv ends with ENOBUFS; the data stays in the kernel's socket buffer
// and the recv is re-armed as soon as buffers come back.  Nothing is
// dropped and nothing is allocated per receive.
//
// Sending copies into the socket's send buffer (bounded: back-pressure);
// one send is in flight at a time; when room opens after sock_send accepted
// less than asked (or the buffer was full), the upcall gets SOCK_WRITABLE.
//
// Teardown: sock_close stops upcalls at once, cancels the receive (and a
// listener's accept or a pending connect), lets queued sends finish (unless
// the socket failed), and
// frees the slot only when no ring operation of the socket is outstanding --
// so it is safe from inside the socket's own upcall, and a completion never
// finds a freed socket.
//
// Memory per connection: one slot (416 bytes on x86-64, sizeof(sock)) plus
// `sndbuf` bytes of send buffer, both preallocated; receive buffers are
// shared by the pool's sockets (`nbufs` x `bufsize`); once a socket holds
// `max_queued` unread bytes its receive is not re-armed until sock_read
// drains it below half of that, so one socket holds less than `max_queued` +
// `bufsize` of them.  The kernel receive buffer of sockets made by
// sock_listen (inherited by accepted ones) and sock_connect is set to
// `max_queued` (SO_RCVBUF, capped by net.core.rmem_max), so TCP pushes back
// on a sender nobody reads; sock_adopt sets it on the adopted descriptor.
// From its first sock_sendfile/sock_splice until teardown (or a failed
// transfer) a socket also keeps a pipe.
//
// Upcalls: fn(obj = the sock, env, status = 0), deferred with kcont_defer.
// An upcall must be bound to the pool's CPU in interrupt kind
// (target::at(l, kind::interrupt, cpu) or target::cpu_private_to(l, cpu));
// an unbound, thread-kind or other-CPU one is refused with EINVAL; null
// means no notifications (and no events recorded).  Give each socket its
// own upcall: a pending upcall coalesces, keeping the first deferral's
// socket as obj.
//
// Contexts: sockpool_create/destroy in thread context; sockpool_get_stats on
// any thread.  Everything else is for the pool's CPU: code running on its
// dispatcher (kcont_in_interrupt() and kcont_current_cpu() == cfg.cpu --
// ring completions, upcalls, any interrupt-kind continuation on that CPU).
// Off it: sock_start, sock_shutdown, sock_close, sock_sendfile,
// sock_splice, sock_sendv, sock_read_into and sock_hold return EPERM;
// sock_detach, sock_read and sock_send -EPERM; sock_listen/connect/adopt
// nullptr with *err = EPERM; sock_accept nullptr and sock_events 0 (nothing
// changed, no errno).  sock_error, sock_readable, sock_send_space and
// sock_fd do not check: off the CPU they read fields that CPU writes
// without synchronisation (a data race: stale values, a descriptor that may
// be closed and reused) -- do not call them there.  A null socket gets the
// off-CPU result (sock_error: EINVAL, sock_readable/send_space: 0,
// sock_fd: -1).  sock_close lingers until queued sends (the buffer and
// sock_sendv requests) are written or fail.  Locking: none (one CPU).
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <string>

#include "kcont/kcont.h"

namespace kc {

struct sockpool;
struct sock;

// Event bits (sock_events).
enum : uint32_t {
  SOCK_READABLE = 1u << 0,    // received data is queued (or EOF, see sock_read)
  SOCK_WRITABLE = 1u << 1,    // room opened after sock_send accepted less than asked
                              // (or the buffer was full), or a transfer that made
                              // sock_send return 0 ended
  SOCK_EOF = 1u << 2,         // the peer shut down its side (a receive returned 0)
  SOCK_ERROR = 1u << 3,       // a receive, send, connect or accept failed: sock_error()
  SOCK_CONNECTED = 1u << 4,   // sock_connect succeeded
  SOCK_ACCEPTABLE = 1u << 5,  // a listener has connections for sock_accept
};

// Set by the caller, copied by sockpool_create (later changes have no effect).
struct sockpool_config {
  int cpu = 0;                   // the CPU that owns the pool: 0 .. kcont_ncpus() - 1
  uint32_t nsocks = 64;          // socket slots, >= 1 (listeners and queued accepts use one)
  uint32_t sndbuf = 64 * 1024;   // bytes of send buffer per socket, >= 512
  uint32_t nbufs = 256;          // provided receive buffers: a power of two, 1 .. 32768
  uint32_t bufsize = 16 * 1024;  // bytes per receive buffer, >= 512
  // Bytes one socket may hold unread (0: max(nbufs / 4, 2) x bufsize,
  // capped at 2^31-1; otherwise 2 .. 2^31-1, sockpool_create refuses 1).
  // Once a receive brings it to this or more, the socket's receive is
  // stopped until sock_read drains it below max_queued / 2, so one
  // connection that is not being read cannot starve the others of buffers.
  // Also the SO_RCVBUF of listened, connected and adopted sockets.
  uint32_t max_queued = 0;
};

// Counters since sockpool_create, written by the pool's CPU (relaxed atomics).
struct sockpool_stats {
  uint64_t accepted = 0;         // connections a listener took into a slot, plus sock_adopt
                                 // successes (sock_detach takes nothing back)
  uint64_t refused = 0;          // accepted connections closed at once: no free slot (or
                                 // the listener was closing)
  uint64_t connected = 0;        // sock_connect that succeeded
  uint64_t closed = 0;           // slots freed by teardown (also a listen/connect that got
                                 // a slot but no ring entry); not sock_detach
  uint64_t rx_bytes = 0;         // bytes received into the pool's buffers (not spliced bytes)
  uint64_t tx_bytes = 0;         // bytes written to sockets: sends, sendfile and splice
  uint64_t rearms = 0;           // receive re-arms: after each receive completion, when
                                 // buffers came back to a starved socket, when a throttle ended
  uint64_t enobufs = 0;          // receives that ended with ENOBUFS (pool out of buffers)
  uint64_t throttles = 0;        // receives stopped at max_queued
  uint32_t in_use = 0;           // slots in use now (current value, not a counter)
  uint64_t rx_direct_bytes = 0;  // bytes received straight into caller memory
                                 // (sock_read_into), not counted in rx_bytes
  uint32_t buffers_queued = 0;   // receive buffers holding unread data now (of nbufs)
  uint64_t tx_inline_bytes = 0;  // of tx_bytes, spliced on the dispatcher
                                 // (SOCK_SENDFILE_RESIDENT), not by io_uring's workers
};

// Creates a pool on cfg.cpu: allocates everything and registers the receive
// buffers with that CPU's ring (kcont_run_on: waits for it).  Thread context
// (not a dispatcher); kcont must be running.  Returns nullptr with a reason
// in *err: kcont not running, called on a dispatcher, cpu out of range,
// nbufs not a power of two in 1 .. 32768, bufsize or sndbuf < 512, nsocks 0,
// max_queued 1 or above 2^31-1, out of memory, or registration failed.
sockpool *sockpool_create(const sockpool_config &cfg, std::string *err = nullptr);

// Unregisters (on the pool's CPU, waiting, if kcont runs) and frees the
// pool.  Returns 0 (also for nullptr), EBUSY and does nothing while a
// slot is in use (a socket not yet torn down), or EDEADLK and does nothing
// on a dispatcher (it could not wait there).  Thread context; nobody may
// use the pool meanwhile.
int sockpool_destroy(sockpool *p);

// The pool's counters: each field read atomically, not one consistent
// snapshot.  Any thread, any context; p must be a live pool.
sockpool_stats sockpool_get_stats(sockpool *p);

// Listens on addr.  Accepted connections queue on the listener and its
// upcall gets SOCK_ACCEPTABLE; take them with sock_accept.  Returns the
// listener (*err = 0) or nullptr with *err = EPERM (off the pool's CPU),
// EINVAL (bad upcall), an errno of socket/bind/listen (EADDRINUSE, ...), or
// ENOBUFS (no free slot or no ring entry).  With reuseport, several pools
// (one per CPU) may listen on the same address and the kernel spreads
// connections over them.  Pool CPU.
sock *sock_listen(sockpool *p, const sockaddr *addr, socklen_t len, int backlog, kcont *upcall,
                  int *err, bool reuseport = false);

// The next accepted connection (not started: call sock_start, sock_detach
// or sock_close), or nullptr when none is queued -- and also, without an
// errno, when listener is null or not a listener, or off the pool's CPU.
// Pool CPU.
sock *sock_accept(sock *listener);

// Sets the upcall of an accepted socket and starts receiving.  Returns 0,
// EPERM (null socket or off the pool's CPU) or EINVAL (a listener, closing,
// or a bad upcall).  On a started socket it replaces the upcall.  Pool CPU.
int sock_start(sock *s, kcont *upcall);

// Takes the descriptor out of an accepted socket that was never started
// and frees its slot, so the connection can be served by another CPU's
// pool (sock_adopt).  Returns the descriptor, or -EPERM (null socket or off
// the pool's CPU) / -EINVAL (started, listening, closing, or a ring
// operation outstanding).  Pool CPU.
int sock_detach(sock *s);

// Makes a connected TCP descriptor (from sock_detach, or accepted
// elsewhere) a socket of pool p and starts it with `upcall` (not null).
// Returns the socket, or nullptr with *err = EPERM (off p's CPU), EINVAL
// (fd < 0, null or bad upcall) or ENOBUFS (no free slot); on failure the
// caller still owns fd.  p's CPU.
sock *sock_adopt(sockpool *p, int fd, kcont *upcall, int *err);

// Connects to addr; the upcall gets SOCK_CONNECTED (or SOCK_ERROR, with the
// error in sock_error).  Data sent meanwhile is queued.  Returns the socket
// (*err = 0) or nullptr with *err = EPERM (off the pool's CPU), EINVAL (len
// > sizeof(sockaddr_storage) or a bad upcall), socket()'s errno, or ENOBUFS
// (no free slot or no ring entry).  Pool CPU.
sock *sock_connect(sockpool *p, const sockaddr *addr, socklen_t len, kcont *upcall, int *err);

// Reads and clears the socket's pending event bits.  Returns 0 -- clearing
// nothing, without an errno -- for a null socket or off the pool's CPU.
// Pool CPU.
uint32_t sock_events(sock *s);

// The socket's first error (an errno): set with SOCK_ERROR, or by a
// sendfile/splice whose write to the socket failed (reported to its `done`
// only); else 0.  EINVAL for a null socket.  Pool CPU only; not checked
// (elsewhere: a data race).
int sock_error(sock *s);

// Copies up to n received bytes; returns the count, 0 at end of file (EOF
// seen and nothing queued), -EAGAIN when nothing is queued (also after an
// error: see sock_error), -EBUSY while a sock_read_into runs, or -EPERM
// (null socket or off the pool's CPU).  Pool CPU.
long sock_read(sock *s, void *dst, size_t n);

// Bytes received and not yet read; 0 for a null socket.  Pool CPU only; not
// checked (elsewhere: a data race).
size_t sock_readable(sock *s);

// Reads exactly n bytes of the stream into dst, which must stay valid and
// untouched until `done` runs: bytes already queued are copied at once, the
// rest the kernel receives straight into dst (one io_uring receive with
// MSG_WAITALL, once any pool receive in flight has completed) -- no receive
// buffer of the pool is used for it, so it progresses while the pool's
// buffers are all taken by other sockets, and the bytes are copied once.
// `done` (not null) is then deferred with (sock, status): 0 when all n bytes
// are in dst, ENODATA if the stream ended first, ECANCELED if the socket was
// closed meanwhile (`done` must not touch it then), EAGAIN if the ring had
// no free entry, or the socket's error.  On a status other than 0 the
// number of bytes that arrived is unknown: close the socket.  While it runs,
// sock_read returns -EBUSY and no SOCK_READABLE upcall is made (SOCK_EOF
// and SOCK_ERROR still are); the pool's receive resumes when it ends.
// Returns 0, EPERM (null socket or off the pool's CPU), EINVAL (a listener,
// a splice source, no `done`, n == 0), EBUSY (one is running) or EPIPE
// (closing).  Pool CPU.
int sock_read_into(sock *s, void *dst, size_t n, kcont *done);

// hold = true: no receive is armed for the socket from now on, so it takes
// no more of the pool's receive buffers (a receive already in flight still
// completes: at most one more buffer); unread data waits in the kernel and
// TCP pushes back on the peer.  For a reader that cannot take more data for
// a while (e.g. it waits for memory) and must not starve the pool's other
// sockets.  hold = false receives again.  Queued bytes stay readable either
// way.  Returns 0, EPERM (null socket or off the pool's CPU) or EINVAL (a
// listener).  Pool CPU.
int sock_hold(sock *s, bool hold);

// Most iovecs in one sock_sendv request.
inline constexpr unsigned SOCK_SENDV_MAX_IOV = 8;

// A send of caller memory (sock_sendv).  The caller owns the record, its
// iovec array and the memory they point at, and must leave all three alone
// from sock_sendv until `done` runs; the fields ending in _ are the
// socket's while the request is queued.
struct sock_sendv_req {
  const iovec *iov = nullptr;
  unsigned iovcnt = 0;  // 1 .. SOCK_SENDV_MAX_IOV
  size_t len_ = 0, sent_ = 0;
  kcont *done_ = nullptr;
  sock_sendv_req *next_ = nullptr;
};

// Sends the bytes r's iovecs describe, in order after everything queued on
// the socket before (send-buffer bytes, earlier requests), straight from the
// caller's memory: nothing is copied into the send buffer; requests queued
// together go out gathered in one sendmsg.  `done` (may be null: then the
// caller learns nothing, but a sendfile/splice queued later starts only
// after the request is sent) is deferred with (sock, status): 0 once the
// kernel holds every byte (the memory is the caller's again), the socket's
// errno if the send failed, ECANCELED if the socket was aborted or failed
// before the bytes went.  After sock_close the queued requests are still
// sent (like the buffer), but `done` must not touch the socket: it may be
// gone.  While requests are queued, sock_send accepts nothing (returns 0;
// SOCK_WRITABLE follows once they are sent) and a sock_sendfile or
// sock_splice queues behind them.  Returns 0, EPERM (null socket or off the
// pool's CPU), EINVAL (no request, iovcnt 0 or above SOCK_SENDV_MAX_IOV, no
// bytes), the socket's error, EPIPE (closing, shut down or a listener) or
// EBUSY (a sendfile/splice is queued or running: it owns the stream's tail).
// Pool CPU.
int sock_sendv(sock *s, sock_sendv_req *r, kcont *done);

// Queues up to n bytes for sending; returns how many were accepted (less
// than n when the send buffer is full: wait for SOCK_WRITABLE; 0 while a
// sendfile/splice runs on it or sock_sendv requests are queued), -errno
// once the socket failed (its error), -EPIPE after sock_shutdown or
// sock_close, or -EPERM (null socket or off the pool's CPU).  Pool CPU.
long sock_send(sock *s, const void *src, size_t n);

// Free bytes in the send buffer (sndbuf - queued); 0 for a null socket.  It
// does not say sock_send will take them (not during a transfer, after
// shutdown or an error).  Pool CPU only; not checked (elsewhere: a data
// race).
size_t sock_send_space(sock *s);

// Shuts down sending once queued data (and a running transfer) is sent: the
// peer sees EOF.  Returns 0, or EPERM (null socket or off the pool's CPU).
// Pool CPU.
int sock_shutdown(sock *s);

// Closes: no upcalls after this returns; teardown completes when the
// socket's ring operations have ended (queued sends linger).  Returns 0
// (also when already closing), or EPERM (null socket or off the pool's
// CPU).  Pool CPU; safe from the socket's own upcall.
int sock_close(sock *s);

// Closes at once, discarding what is queued: the peer gets a reset, a
// send, receive or transfer blocked on the connection ends (a transfer's
// `done` gets ECANCELED or the splice's errno), and teardown does not wait
// for a peer that does not read -- for connections that must go now (timed
// out, evicted).  Also on a socket already closing.  Returns 0, or EPERM
// (null socket or off the pool's CPU).  Pool CPU; safe from the socket's own
// upcall.
int sock_abort(sock *s);

// sock_sendfile flags.
// SOCK_SENDFILE_RESIDENT: the caller knows the range is in the page cache
// (vfs(9) vread::resident), so reading it does not wait for a disk: the
// transfer runs on the dispatcher with splice(2) through the socket's pipe,
// the socket non-blocking for the call, and a full socket waits for
// POLLOUT on the ring -- no worker thread.  Without it the transfer is
// io_uring splices (file -> pipe -> socket), which io_uring runs on its
// workers (a context switch or more per pipe-full).
inline constexpr unsigned SOCK_SENDFILE_RESIDENT = 1u << 0;

// Sends [offset, offset + len) of file_fd after everything already queued,
// zero-copy (file -> pipe -> socket: io_uring splices, or splice(2) on the
// dispatcher with SOCK_SENDFILE_RESIDENT).  `done` (may be null)
// is then deferred with (sock, status): 0 when all was sent, ENODATA if the
// file ended first, ECANCELED if the socket was closed meanwhile (`done`
// must not touch it then), EAGAIN if the ring had no free entry, or the
// splice's errno (a failed write to the socket also becomes its error).
// `done` runs in its own target; only on the pool's CPU may it use the
// socket.  While the transfer runs, sock_send accepts nothing (returns 0;
// SOCK_WRITABLE follows).  Returns 0, EPERM (null socket or off the pool's
// CPU), the socket's error, EPIPE (closing, shut down or a listener), EBUSY
// (a transfer -- sendfile or splice into it -- is running), EINVAL (len ==
// 0 or an unknown flag), or pipe2's errno (EMFILE, ENFILE).  Pool CPU.
int sock_sendfile(sock *s, int file_fd, uint64_t offset, size_t len, kcont *done,
                  unsigned flags = 0);

// Forwards everything `from` receives to `to`, zero-copy (splice(2),
// socket -> pipe -> socket, on the pool's CPU), after the bytes already queued on `to` and
// those `from` had already received.  `from` stops receiving for itself for
// good (no more SOCK_READABLE data, even after `done`; it cannot be spliced
// again: EBUSY).  `done` (may be null) is deferred with (to, status): 0 when
// `from` reached end of file (shut `to` down yourself if you want the peer
// to see it), ECANCELED if either socket was closed, EAGAIN if the ring had
// no free entry, or the splice's errno (a failed write to `to` also becomes
// its error).  While it runs, sock_send on `to` accepts nothing.  Returns 0,
// EPERM (a null socket, or off `to`'s pool CPU), EINVAL (different pools,
// from == to, or a listener), `to`'s error, EPIPE (either closing, or `to`
// shut down), EBUSY (`to` has a transfer running or `from` is already a
// splice source), or pipe2's errno.  Closing either ends the splice.  The
// splices run on the dispatcher, never waiting: `from` is read only when it
// holds bytes (or its poll says it is at end of file or failed), `to`
// written non-blocking; an empty source waits for POLLIN and a full `to`
// for POLLOUT on the ring, so no worker thread runs and nothing sleeps per
// chunk.  One call moves at most 2 MiB before the CPU's other work runs
// (counted in tx_inline_bytes).  Pool CPU.
int sock_splice(sock *from, sock *to, kcont *done);

// The socket's file descriptor (for getsockname and friends); -1 for a null
// socket or once torn down or detached.  Pool CPU only; not checked
// (elsewhere: a data race, and the descriptor may be closed and reused).
int sock_fd(sock *s);

}  // namespace kc
