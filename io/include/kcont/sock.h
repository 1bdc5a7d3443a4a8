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
// one send is in flight at a time; when a full buffer drains, the upcall
// gets SOCK_WRITABLE.
//
// Teardown: sock_close stops upcalls at once, cancels the receive (and a
// listener's accept), lets queued sends finish, and frees the slot only when
// no ring operation of the socket is outstanding -- so it is safe from
// inside the socket's own upcall, and a completion never finds a freed
// socket.
//
// Memory per connection: one slot (416 bytes on x86-64, sizeof(sock)) plus `sndbuf` bytes of
// send buffer, both preallocated; receive buffers are shared by the pool's
// sockets (`nbufs` x `bufsize`); once a socket holds `max_queued` unread
// bytes its receive is not re-armed until sock_read drains half of it, so
// one socket holds at most `max_queued` + `bufsize` of them.  Its kernel
// receive buffer is also set to `max_queued` (SO_RCVBUF, capped by
// net.core.rmem_max), so TCP pushes back on a sender nobody reads.
//
// Rules: every function except sockpool_create/destroy must be called on the
// pool's CPU dispatcher (kcont_current_cpu() == the pool's CPU, interrupt
// kind); elsewhere they fail with EPERM.  Upcalls must target that CPU in
// interrupt kind (EINVAL otherwise).  sock_close lingers until queued sends
// are written or fail.  Locking: none (one CPU).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "kcont/kcont.h"

namespace kc {

struct sockpool;
struct sock;

// Event bits (sock_events).
enum : uint32_t {
  SOCK_READABLE = 1u << 0,    // received data is queued (or EOF, see sock_read)
  SOCK_WRITABLE = 1u << 1,    // the send buffer drained after being full
  SOCK_EOF = 1u << 2,         // the peer shut down its side
  SOCK_ERROR = 1u << 3,       // sock_error() tells which
  SOCK_CONNECTED = 1u << 4,   // sock_connect completed
  SOCK_ACCEPTABLE = 1u << 5,  // a listener has connections for sock_accept
};

struct sockpool_config {
  int cpu = 0;                   // the CPU that owns the pool
  uint32_t nsocks = 64;          // socket slots
  uint32_t sndbuf = 64 * 1024;   // send buffer per socket
  uint32_t nbufs = 256;          // provided receive buffers (a power of two)
  uint32_t bufsize = 16 * 1024;  // bytes each
  // Most received bytes one socket may hold unread (0: a quarter of the
  // pool's buffers, at least two).  Beyond it the socket's receive is
  // stopped until sock_read drains half of it, so one connection that is
  // not being read cannot starve the others of buffers.
  uint32_t max_queued = 0;
};

struct sockpool_stats {
  uint64_t accepted = 0, refused = 0, connected = 0, closed = 0;
  uint64_t rx_bytes = 0, tx_bytes = 0, rearms = 0, enobufs = 0;
  uint64_t throttles = 0;  // receives stopped at max_queued
  uint32_t in_use = 0;
};

// Creates a pool on cfg.cpu: allocates everything and registers the receive
// buffers with that CPU's ring (waits for it).  Thread context; kcont must
// be running.  Returns nullptr with a reason in *err.
sockpool *sockpool_create(const sockpool_config &cfg, std::string *err = nullptr);

// Unregisters and frees the pool; every socket must be closed and torn down
// (returns EBUSY otherwise).  Thread context.
int sockpool_destroy(sockpool *p);

sockpool_stats sockpool_get_stats(sockpool *p);

// Listens on addr.  Accepted connections queue on the listener and its
// upcall gets SOCK_ACCEPTABLE; take them with sock_accept.  Returns the
// listener or nullptr with *err set to an errno (EADDRINUSE, ENOBUFS: no free
// slot, EPERM, ...).  With reuseport, several pools (one per CPU) may listen
// on the same address and the kernel spreads connections over them.
sock *sock_listen(sockpool *p, const sockaddr *addr, socklen_t len, int backlog, kcont *upcall,
                  int *err, bool reuseport = false);

// The next accepted connection (its upcall is not set yet: call
// sock_start), or nullptr when none is queued.
sock *sock_accept(sock *listener);

// Sets the upcall of an accepted socket and starts receiving.  Returns 0 or
// EPERM/EINVAL.
int sock_start(sock *s, kcont *upcall);

// Takes the descriptor out of an accepted socket that was never started
// and frees its slot, so the connection can be served by another CPU's
// pool (sock_adopt).  Returns the descriptor, or -EPERM / -EINVAL (started,
// listening or closing).
int sock_detach(sock *s);

// Makes a connected TCP descriptor (from sock_detach, or accepted
// elsewhere) a socket of pool p and starts it with `upcall`.  Returns the
// socket, or nullptr with *err = EPERM, EINVAL or ENOBUFS (no free slot);
// on failure the caller still owns fd.
sock *sock_adopt(sockpool *p, int fd, kcont *upcall, int *err);

// Connects to addr; the upcall gets SOCK_CONNECTED (or SOCK_ERROR).
// Returns the socket or nullptr with *err set.
sock *sock_connect(sockpool *p, const sockaddr *addr, socklen_t len, kcont *upcall, int *err);

// Reads and clears the socket's pending event bits.
uint32_t sock_events(sock *s);

// The socket's error (an errno) after SOCK_ERROR, else 0.
int sock_error(sock *s);

// Copies up to n received bytes; returns the count, 0 at end of file (EOF
// seen and nothing queued), or -EAGAIN when nothing is queued yet.
long sock_read(sock *s, void *dst, size_t n);

// Bytes received and not yet read.
size_t sock_readable(sock *s);

// Queues up to n bytes for sending; returns how many were accepted (less
// than n when the send buffer is full: wait for SOCK_WRITABLE), or -EPIPE /
// -errno once the socket is shut down or failed.
long sock_send(sock *s, const void *src, size_t n);

// Free space in the send buffer.
size_t sock_send_space(sock *s);

// Shuts down sending once queued data is sent (the peer sees EOF).
int sock_shutdown(sock *s);

// Closes: no upcalls after this returns; teardown completes when the
// socket's ring operations have ended.  Safe from the socket's own upcall.
int sock_close(sock *s);

// Sends [offset, offset + len) of file_fd after everything already queued,
// zero-copy (io_uring splice, file -> pipe -> socket).  `done` then runs
// with (sock, status): 0 when all was sent, ENODATA if the file ended
// first, or an errno.  While it runs, sock_send accepts nothing (returns 0;
// SOCK_WRITABLE follows).  If the socket is closed meanwhile, `done` still
// runs, with ECANCELED -- and must not touch the socket then.  Returns 0,
// EBUSY (a transfer is running), EPIPE, EINVAL, EPERM, or the socket's error.
int sock_sendfile(sock *s, int file_fd, uint64_t offset, size_t len, kcont *done);

// Forwards everything `from` receives to `to`, zero-copy (io_uring splice,
// socket -> pipe -> socket), after the bytes already queued on `to` and
// those `from` had already received.  `from` stops receiving for itself (no
// more SOCK_READABLE data); `done` runs with (to, status): 0 when `from`
// reached end of file (shut `to` down yourself if you want the peer to see
// it), ECANCELED if either socket was closed, or an errno.  While it runs,
// sock_send on `to` accepts nothing.  Both sockets must belong to the same
// pool; closing either ends the splice.  Returns 0, EBUSY, EINVAL, EPIPE,
// EPERM.  The splices run in io_uring's worker threads (the kernel cannot
// splice from a socket without blocking), so this trades copies for a few
// context switches per pipe-full (1 MiB).
int sock_splice(sock *from, sock *to, kcont *done);

// The socket's file descriptor (for getsockname and friends).
int sock_fd(sock *s);

}  // namespace kc
