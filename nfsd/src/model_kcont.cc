// model_kcont.cc -- the kcont transport: NFS requests as chains of
// continuations, with no thread sleeping for an I/O.
//
// Model: every CPU has a socket pool and a fixed set of connection objects,
// each with `slots` request slots (request buffer + reply buffer, mapped
// once and reused).  CPU 0 listens on both ports and hands each new
// connection to the CPU serving the fewest (sock_detach -> a per-CPU
// hand-off list -> sock_adopt there).  Everything about a connection happens on its
// CPU's dispatcher at {softnet, interrupt}:
//
//   upcall (data arrived) -> record reassembled straight into a free slot
//     -> fast path, for NULL / GETATTR / READ / WRITE / COMMIT whose handle
//        is in the cache:
//          GETATTR, NULL, READ > 64 KiB: answered on the spot (fstat of an
//            open descriptor; big READ data goes out by sock_sendfile)
//          READ <= 64 KiB: bread() -> biodone at {bio, intr} -> the slot's
//            continuation at softnet encodes the reply from the buffer
//          WRITE, COMMIT: an io_uring write (RWF_DSYNC/RWF_SYNC for stable
//            writes) or fsync -> completion at {bio, intr} -> the slot's
//            continuation encodes the reply
//     -> otherwise: the slot's work item goes to a workqueue (thread
//        context, the only place that blocks) which runs serve_call and
//        defers the slot's continuation back to the connection's CPU
//   -> reply queued on the connection; the pump writes it with sock_send
//      (and sock_sendfile for file data), waits for SOCK_WRITABLE when the
//      send buffer is full, and releases the slot, which resumes reading if
//      the connection was stalled for lack of slots (back-pressure).
//
// Teardown: a connection is closed only when none of its slots is in flight
// (in a worker, on the ring, or being sent); its object is reused only when
// its upcall continuation is idle.
//
// Locking: none per connection (one CPU owns it); the handle cache and the
// server counters have their own.  The fstat calls on the fast path are on
// descriptors the cache holds open: they read an in-core inode and never
// wait for the disk.
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "internal.h"
#include "kcont/bind.h"
#include "kcont/buf.h"
#include "kcont/kcont.h"
#include "kcont/nfsd/transport.h"
#include "kcont/ring.h"
#include "kcont/sock.h"
#include "kcont/spinlock.h"
#include "kcont/workqueue.h"
#include "listen.h"

namespace kc::nfs {

namespace {

constexpr int THREAD_QUEUES = 4;  // thread-context workers per CPU

class kcont_transport;
struct kconn;

enum class stage : uint8_t {
  idle,
  thread,
  reply_ready,
  read_done,
  write_done,
  commit_done,
  sending_file
};

struct kslot {
  kconn *conn = nullptr;
  uint8_t *req = nullptr;
  uint8_t *rep = nullptr;
  request r;
  serve_result result = serve_result::reply;
  stage st = stage::idle;
  kcont kc;         // softnet on the connection's CPU: every stage ends here
  work wk;          // thread-context hand-off
  completion comp;  // raw ring operation (write, fsync)
  // Fast-path state.
  fh_entry *fe = nullptr;
  uint32_t xid = 0, proc = 0, fsid = 0, count = 0, stable = 0;
  uint64_t offset = 0;
  struct stat pre {};
  uint64_t t0 = 0;
  // Sending: the reply buffer, then either a file part (sendfile) or the
  // data of a buffer (bread), then the XDR padding.
  buf *bp = nullptr;
  uint32_t tail_len = 0;
  size_t tail_sent = 0;
  size_t sent = 0;
  bool file_sent = false;
  kslot *next = nullptr;
};

struct kcpu;

struct kconn {
  kcpu *cpu = nullptr;
  sock *s = nullptr;
  kcont upcall;
  sockaddr_storage peer{};
  record_reader rd;
  kslot *cur = nullptr;  // slot the reader fills
  std::vector<kslot> slots;
  std::vector<kslot *> free_slots;
  kslot *sq_head = nullptr, *sq_tail = nullptr;
  uint32_t busy = 0;  // slots in flight (thread, ring, send queue)
  bool active = false;
  bool eof = false;      // no more reading: peer closed, error or framing
  bool sending = false;  // the head of the send queue waits for sendfile
  void *mem = nullptr;
  size_t mem_len = 0;
};

struct kcpu {
  kcont_transport *t = nullptr;
  int cpu = 0;
  sockpool *pool = nullptr;
  sock *listeners[2] = {};
  kcont lkc;
  std::vector<kconn> conns;
  std::atomic<uint32_t> active{0};
  std::atomic<uint64_t> refused{0};
  bool draining = false;
  // Connections accepted on CPU 0 and handed to this CPU: descriptors
  // waiting for adopt_kc (bounded by the CPU's connection objects).
  std::atomic<uint32_t> handoff_lock{0};
  std::vector<int> handoff, adopting;  // capacity reserved at start
  kcont adopt_kc;
};

class kcont_transport final : public transport {
 public:
  kcont_transport(server &s, const transport_config &c) : srv_(s), cfg_(c) {}
  ~kcont_transport() override { stop(); }

  int start(std::string *err) override;
  void stop() override;
  std::string describe() override;

  server &srv_;
  transport_config cfg_;
  std::vector<std::unique_ptr<kcpu>> cpus_;
  bufpool *bufs_ = nullptr;
  workqueue *wq_[THREAD_QUEUES] = {};
  std::atomic<uint32_t> rr_{0};
  bool stopped_ = false;
};

// Runs fn on CPU `cpu` at {softnet, interrupt} and waits for it.  Thread
// context (start-up and shutdown only).
void run_on_cpu(int cpu, const std::function<void()> &fn) {
  kcont_run_on(
      cpu, LVL_SOFTNET, [](void *a) { (*static_cast<const std::function<void()> *>(a))(); },
      const_cast<std::function<void()> *>(&fn));
}

// ---- connections -----------------------------------------------------------------

void conn_upcall(void *obj, void *env, int status);
void slot_continue(void *obj, void *env, int status);
void slot_work(work *wk, void *arg);
void read_records(kconn *c);
void pump(kconn *c);

// Allocates a connection object's slots and maps its buffers (address
// space only: MAP_NORESERVE, pages come as requests touch them).  Thread
// context, at start: nothing is allocated once connections arrive.
bool conn_alloc(kconn *c, kcpu *k) {
  kcont_transport *t = k->t;
  size_t rec = t->srv_.cfg.max_record, rep = KCONT_REPLY_BUFFER;
  c->cpu = k;
  c->mem_len = size_t(t->cfg_.slots) * (rec + rep);
  c->mem = mmap(nullptr, c->mem_len, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (c->mem == MAP_FAILED) {
    c->mem = nullptr;
    return false;
  }
  c->slots = std::vector<kslot>(t->cfg_.slots);
  c->free_slots.reserve(t->cfg_.slots);
  for (uint32_t i = 0; i < t->cfg_.slots; i++) {
    kslot &s = c->slots[i];
    s.conn = c;
    s.req = static_cast<uint8_t *>(c->mem) + size_t(i) * (rec + rep);
    s.rep = s.req + rec;
    kcont_init(&s.kc, slot_continue, &s, target::at(LVL_SOFTNET, kind::interrupt, int16_t(k->cpu)));
  }
  kcont_init(&c->upcall, conn_upcall, c, target::at(LVL_SOFTNET, kind::interrupt, int16_t(k->cpu)));
  return true;
}

// Readies a free connection object for a new socket.  Never allocates.
bool conn_setup(kconn *c, kcpu *k) {
  if (!c->mem) return false;
  c->cpu = k;
  c->free_slots.clear();
  for (auto &s : c->slots) c->free_slots.push_back(&s);
  c->cur = nullptr;
  c->rd = record_reader{};
  c->sq_head = c->sq_tail = nullptr;
  c->busy = 0;
  c->eof = false;
  c->sending = false;
  c->active = true;
  return true;
}

void maybe_close(kconn *c) {
  if (!c->active || !c->eof || c->busy > 0) return;
  sock_close(c->s);
  c->s = nullptr;
  c->active = false;
  c->cpu->active.fetch_sub(1, std::memory_order_relaxed);
}

// A free connection object of k (its upcall idle), or nullptr.
kconn *free_conn(kcpu *k) {
  if (k->draining) return nullptr;
  for (auto &cand : k->conns)
    if (!cand.active && cand.mem && kcont_state(&cand.upcall) == kc_state::idle) return &cand;
  return nullptr;
}

void conn_started(kcpu *k, kconn *c, sock *s) {
  c->s = s;
  socklen_t len = sizeof c->peer;
  getpeername(sock_fd(s), reinterpret_cast<sockaddr *>(&c->peer), &len);
  k->active.fetch_add(1, std::memory_order_relaxed);
  k->t->srv_.stats.connections.fetch_add(1, std::memory_order_relaxed);
}

// CPU 0 accepts every connection and spreads them: each goes to the CPU
// with the fewest (SO_REUSEPORT would hash them, and two connections land
// on one CPU half the time).
kcpu *pick_cpu(kcont_transport *t) {
  kcpu *best = nullptr;
  uint32_t start = t->rr_.fetch_add(1, std::memory_order_relaxed);
  size_t n = t->cpus_.size();
  for (size_t i = 0; i < n; i++) {
    kcpu *k = t->cpus_[(start + i) % n].get();
    if (!best ||
        k->active.load(std::memory_order_relaxed) < best->active.load(std::memory_order_relaxed))
      best = k;
  }
  return best;
}

void adopt_upcall(void *, void *env, int) {
  auto *k = static_cast<kcpu *>(env);
  {
    spinlock g(k->handoff_lock);
    k->adopting.swap(k->handoff);
  }
  for (int fd : k->adopting) {
    kconn *c = free_conn(k);
    sock *s = nullptr;
    int err = 0;
    if (c && conn_setup(c, k)) {
      s = sock_adopt(k->pool, fd, &c->upcall, &err);
      if (!s) c->active = false;
    }
    if (!s) {
      k->refused.fetch_add(1, std::memory_order_relaxed);
      close(fd);
      continue;
    }
    conn_started(k, c, s);
  }
  k->adopting.clear();
}

void listener_upcall(void *, void *env, int) {
  auto *k = static_cast<kcpu *>(env);
  for (sock *l : k->listeners) {
    if (!l) continue;
    sock_events(l);
    while (sock *s = sock_accept(l)) {
      kcpu *to = k->draining ? k : pick_cpu(k->t);
      if (to != k) {
        int fd = sock_detach(s);
        bool queued = false;
        if (fd >= 0) {
          spinlock g(to->handoff_lock);
          if (to->handoff.size() < to->handoff.capacity()) {
            to->handoff.push_back(fd);
            queued = true;
          }
        }
        if (queued) {
          kcont_defer(&to->adopt_kc, nullptr, 0);
        } else {
          k->refused.fetch_add(1, std::memory_order_relaxed);
          if (fd >= 0)
            close(fd);
          else
            sock_close(s);
        }
        continue;
      }
      kconn *c = free_conn(k);
      if (!c || !conn_setup(c, k)) {
        k->refused.fetch_add(1, std::memory_order_relaxed);
        sock_close(s);
        continue;
      }
      conn_started(k, c, s);
      sock_start(s, &c->upcall);
    }
  }
}

void conn_upcall(void *, void *env, int) {
  auto *c = static_cast<kconn *>(env);
  if (!c->active || !c->s) return;
  uint32_t ev = sock_events(c->s);
  if (ev & SOCK_ERROR) c->eof = true;
  if (ev & (SOCK_READABLE | SOCK_EOF)) read_records(c);
  if (ev & SOCK_WRITABLE) pump(c);
  maybe_close(c);
}

void release_slot(kslot *s) {
  kconn *c = s->conn;
  server &srv = c->cpu->t->srv_;
  release_file_part(srv, s->r.file);
  if (s->fe) {
    fh_put(srv.handles, s->fe);
    s->fe = nullptr;
  }
  if (s->bp) {
    brelse(s->bp);
    s->bp = nullptr;
  }
  s->tail_len = 0;
  s->st = stage::idle;
  s->next = nullptr;
  c->free_slots.push_back(s);
  c->busy--;
}

// Counts a finished call in the server's per-procedure counters.
void count_call(server &srv, uint32_t proc, nfsstat3 st, uint64_t t0) {
  proc_counter &p = srv.stats.nfs[proc];
  p.calls.fetch_add(1, std::memory_order_relaxed);
  if (st != NFS3_OK) p.errors.fetch_add(1, std::memory_order_relaxed);
  p.ns.fetch_add(now_ns() - t0, std::memory_order_relaxed);
  srv.stats.fast_path.fetch_add(1, std::memory_order_relaxed);
}

// Queues a finished reply for sending.
void reply_ready(kslot *s) {
  kconn *c = s->conn;
  if (s->result != serve_result::reply || c->eof) {
    if (s->result == serve_result::close) c->eof = true;
    release_slot(s);
    maybe_close(c);
    if (!c->eof && !c->cur) read_records(c);
    return;
  }
  s->sent = 0;
  s->tail_sent = 0;
  s->file_sent = false;
  s->next = nullptr;
  if (c->sq_tail)
    c->sq_tail->next = s;
  else
    c->sq_head = s;
  c->sq_tail = s;
  pump(c);
}

void fail_sends(kconn *c) {
  c->eof = true;
  while (kslot *s = c->sq_head) {
    if (c->sending && s == c->sq_head) return;  // sendfile's continuation will come
    c->sq_head = s->next;
    if (!c->sq_head) c->sq_tail = nullptr;
    release_slot(s);
  }
}

void pump(kconn *c) {
  while (kslot *s = c->sq_head) {
    if (c->sending) return;
    size_t total = s->r.out.size();
    if (s->sent < total) {
      long n = sock_send(c->s, s->rep + s->sent, total - s->sent);
      if (n < 0) {
        fail_sends(c);
        return;
      }
      s->sent += size_t(n);
      if (s->sent < total) return;  // SOCK_WRITABLE will call again
    }
    if (s->tail_sent < s->tail_len) {
      long n = sock_send(c->s, s->bp->data + s->tail_sent, s->tail_len - s->tail_sent);
      if (n < 0) {
        fail_sends(c);
        return;
      }
      s->tail_sent += size_t(n);
      if (s->tail_sent < s->tail_len) return;
    }
    file_part &fp = s->r.file;
    if (fp.len > 0 && !s->file_sent) {
      s->st = stage::sending_file;
      int e = sock_sendfile(c->s, fp.fd, fp.offset, fp.len, &s->kc);
      if (e != 0) {
        fail_sends(c);
        return;
      }
      c->sending = true;
      return;
    }
    if (fp.pad > 0) {
      static const uint8_t zero[4] = {};
      long n = sock_send(c->s, zero, fp.pad);
      if (n < 0) {
        fail_sends(c);
        return;
      }
      fp.pad -= uint32_t(n);
      if (fp.pad > 0) return;
    }
    c->sq_head = s->next;
    if (!c->sq_head) c->sq_tail = nullptr;
    release_slot(s);
  }
  if (!c->eof && !c->cur) read_records(c);
}

// ---- the fast path ---------------------------------------------------------------

void fast_reply_begin(kslot *s, nfsstat3 st) {
  s->r.out = xdr_out(s->rep, KCONT_REPLY_BUFFER);
  begin_nfs_reply(s->r.out, s->xid, st);
}

void fast_finish(kslot *s, nfsstat3 st) {
  finish_record(s->r.out, s->r.file.len + s->r.file.pad + s->tail_len);
  count_call(s->conn->cpu->t->srv_, s->proc, st, s->t0);
  s->result = serve_result::reply;
  reply_ready(s);
}

void ring_done(completion *cp, int res, uint32_t) {
  kslot *s = reinterpret_cast<kslot *>(reinterpret_cast<char *>(cp) - offsetof(kslot, comp));
  kcont_defer(&s->kc, s, res);
}

// Tries to serve the call in interrupt context.  Returns false (nothing
// done, nothing held) when it must go to thread context.
bool try_fast(kslot *s) {
  kconn *c = s->conn;
  server &srv = c->cpu->t->srv_;
  xdr_in in(s->req, s->r.len);
  rpc_call call;
  if (decode_call(in, &call) != call_status::ok || call.prog != NFS_PROGRAM || call.vers != NFS_V3)
    return false;
  s->xid = call.xid;
  s->proc = call.proc;
  s->t0 = now_ns();
  s->r.file = file_part{};
  if (call.proc == NFSPROC3_NULL) {
    fast_reply_begin(s, NFS3_OK);
    s->r.out.rewind(s->r.out.size() - 4);
    fast_finish(s, NFS3_OK);
    return true;
  }
  if (call.proc != NFSPROC3_GETATTR && call.proc != NFSPROC3_READ && call.proc != NFSPROC3_WRITE &&
      call.proc != NFSPROC3_COMMIT)
    return false;
  bytes_view fh = in.var(NFS3_FHSIZE);
  if (!in.ok()) return false;
  fh_entry *fe = fh_lookup_cached(srv.handles, fh);
  if (!fe) return false;
  const export_table *exports = srv.exports_now();
  const export_entry *ex = exports ? exports->by_id(fe->export_id) : nullptr;
  const export_opts *opts = ex ? export_access(*ex, c->peer) : nullptr;
  struct stat st;
  if (!opts || fstat(fe->fd, &st) != 0) {
    fh_put(srv.handles, fe);
    return false;
  }
  s->fe = fe;
  s->fsid = ex->id;
  cred who = effective_cred(call, *opts);
  auto give_up = [&] {
    fh_put(srv.handles, fe);
    s->fe = nullptr;
    return false;
  };

  switch (call.proc) {
    case NFSPROC3_GETATTR:
      fast_reply_begin(s, NFS3_OK);
      put_fattr(s->r.out, st, s->fsid);
      fast_finish(s, NFS3_OK);  // release_slot drops the handle
      return true;

    case NFSPROC3_READ: {
      s->offset = in.u64();
      s->count = std::min(in.u32(), MAX_IO);
      if (!in.ok() || !S_ISREG(st.st_mode) || !mode_allows(st, who, 4)) return give_up();
      uint64_t size = uint64_t(st.st_size);
      uint32_t n = s->offset >= size ? 0 : uint32_t(std::min<uint64_t>(s->count, size - s->offset));
      if (n == 0 || s->count > INLINE_READ_MAX) {
        // Nothing to read, or big: the data goes straight from the file
        // to the socket after this header.
        fast_reply_begin(s, NFS3_OK);
        put_read_head(s->r.out, st, s->fsid, n, s->offset + n >= size);
        if (n > 0) {
          s->r.file = file_part{fe->fd, s->offset, n, uint32_t(xdr_pad(n)), fe};
          s->fe = nullptr;  // owned by the file part now
        }
        fast_finish(s, NFS3_OK);
        return true;
      }
      s->pre = st;
      s->st = stage::read_done;
      if (bread(c->cpu->t->bufs_, fe->fd, s->offset, n, &s->kc) != 0) {
        s->st = stage::idle;
        return give_up();
      }
      return true;
    }

    case NFSPROC3_WRITE: {
      s->offset = in.u64();
      uint32_t count = in.u32();
      s->stable = in.u32();
      bytes_view data = in.var(MAX_IO);
      if (!in.ok() || s->stable > FILE_SYNC || !opts->rw || !S_ISREG(st.st_mode) ||
          !mode_allows(st, who, 2))
        return give_up();
      s->count = std::min<uint32_t>(count, uint32_t(data.len));
      io_uring_sqe *sqe = kcont_ring_sqe();
      if (!sqe) return give_up();
      io_uring_prep_write(sqe, fe->fd, data.data, s->count, s->offset);
      sqe->rw_flags = s->stable == FILE_SYNC ? RWF_SYNC : s->stable == DATA_SYNC ? RWF_DSYNC : 0;
      s->pre = st;
      s->comp.fn = ring_done;
      s->comp.lvl = LVL_BIO;
      io_uring_sqe_set_data(sqe, &s->comp);
      s->st = stage::write_done;
      return true;
    }

    case NFSPROC3_COMMIT: {
      in.u64();
      in.u32();
      if (!in.ok() || !S_ISREG(st.st_mode)) return give_up();
      io_uring_sqe *sqe = kcont_ring_sqe();
      if (!sqe) return give_up();
      io_uring_prep_fsync(sqe, fe->fd, 0);
      s->pre = st;
      s->comp.fn = ring_done;
      s->comp.lvl = LVL_BIO;
      io_uring_sqe_set_data(sqe, &s->comp);
      s->st = stage::commit_done;
      return true;
    }
  }
  return give_up();
}

// The data stays in the buffer and is sent from there (pump); the post-op
// attributes are the ones read before the READ (a read changes none that
// matter to the client but atime, which it does not cache).
void finish_read(kslot *s, buf *bp, int status) {
  nfsstat3 rc = status > 0 ? errno_to_nfs(status) : NFS3_OK;
  fast_reply_begin(s, rc);
  if (rc == NFS3_OK) {
    uint32_t n = bp->done;
    put_read_head(s->r.out, s->pre, s->fsid, n,
                  n < s->count || s->offset + n >= uint64_t(s->pre.st_size));
    s->bp = bp;
    s->tail_len = n;
    s->r.file.pad = uint32_t(xdr_pad(n));
  } else {
    put_post_op_attr(s->r.out, &s->pre, s->fsid);
    brelse(bp);
  }
  fast_finish(s, rc);
}

// res: the ring's result (bytes written, 0 for fsync, or -errno).
void finish_write(kslot *s, int res) {
  // Before the reply: a READ that starts after it must not join a bread
  // issued before the write (read-after-write; buf(9) bio_invalidate).
  if (s->proc == NFSPROC3_WRITE) bio_invalidate(s->conn->cpu->t->bufs_);
  struct stat st;
  bool have = fstat(s->fe->fd, &st) == 0;
  nfsstat3 rc = res < 0 ? errno_to_nfs(-res) : NFS3_OK;
  fast_reply_begin(s, rc);
  put_wcc(s->r.out, &s->pre, have ? &st : nullptr, s->fsid);
  if (rc == NFS3_OK) {
    if (s->proc == NFSPROC3_WRITE) {
      s->r.out.u32(uint32_t(res));
      s->r.out.u32(s->stable);
    }
    s->r.out.fixed(s->conn->cpu->t->srv_.write_verf, 8);
  }
  fast_finish(s, rc);
}

// ---- reading requests ---------------------------------------------------------------

void start_request(kslot *s) {
  kconn *c = s->conn;
  kcont_transport *t = c->cpu->t;
  c->busy++;
  s->r.rec = s->req;
  s->r.peer = c->peer;
  s->r.allow_file_part = true;
  if (try_fast(s)) return;
  t->srv_.stats.thread_path.fetch_add(1, std::memory_order_relaxed);
  s->st = stage::thread;
  s->r.out = xdr_out(s->rep, KCONT_REPLY_BUFFER);
  uint32_t q = t->rr_.fetch_add(1, std::memory_order_relaxed) % THREAD_QUEUES;
  workqueue_enqueue(t->wq_[q], &s->wk, c->cpu->cpu);
}

void read_records(kconn *c) {
  kcont_transport *t = c->cpu->t;
  while (!c->eof && c->s) {
    if (!c->cur) {
      if (c->free_slots.empty()) return;  // back-pressure: resumes on release
      c->cur = c->free_slots.back();
      c->free_slots.pop_back();
      c->rd.begin(c->cur->req, t->srv_.cfg.max_record);
    }
    size_t want;
    uint8_t *p = c->rd.want(&want);
    long n = sock_read(c->s, p, want);
    if (n == -EAGAIN) return;
    if (n <= 0) {
      c->eof = true;
      break;
    }
    auto r = c->rd.commit(size_t(n));
    if (r == record_reader::too_big || r == record_reader::bad_fragment) {
      t->srv_.stats.bad_records.fetch_add(1, std::memory_order_relaxed);
      c->eof = true;
      break;
    }
    if (r == record_reader::record) {
      kslot *s = c->cur;
      c->cur = nullptr;
      s->r.len = c->rd.length();
      start_request(s);
    }
  }
  if (c->eof && c->cur) {
    c->free_slots.push_back(c->cur);
    c->cur = nullptr;
  }
}

// The slot's continuation: every asynchronous stage ends here, on the
// connection's CPU at softnet.
void slot_continue(void *obj, void *env, int status) {
  auto *s = static_cast<kslot *>(env);
  kconn *c = s->conn;
  switch (s->st) {
    case stage::reply_ready:
      reply_ready(s);
      break;
    case stage::read_done:
      finish_read(s, static_cast<buf *>(obj), status);
      break;
    case stage::write_done:
    case stage::commit_done:
      finish_write(s, status);
      break;
    case stage::sending_file:
      c->sending = false;
      s->file_sent = true;
      if (status != 0) {
        // ECANCELED (closed), ENODATA (the file shrank) or a send error:
        // the record cannot be completed, so the connection must go.
        c->sq_head = s->next;
        if (!c->sq_head) c->sq_tail = nullptr;
        release_slot(s);
        fail_sends(c);
      } else if (c->s) {
        pump(c);
      }
      break;
    default:
      break;
  }
  maybe_close(c);
}

// Thread context: the blocking half of a request.
void slot_work(work *wk, void *arg) {
  auto *t = static_cast<kcont_transport *>(arg);
  kslot *s = reinterpret_cast<kslot *>(reinterpret_cast<char *>(wk) - offsetof(kslot, wk));
  s->result = serve_call(t->srv_, s->r);
  // Any call served here may have changed file data (WRITE, SETATTR,
  // CREATE ...): before its reply, no READ may join a read issued before it.
  bio_invalidate(t->bufs_);
  s->st = stage::reply_ready;
  kcont_defer(&s->kc, s, 0);
}

// ---- start and stop -------------------------------------------------------------------

int kcont_transport::start(std::string *err) {
  int ncpu = kcont_ncpus();
  if (ncpu <= 0) {
    *err = "kcont is not running";
    return ENXIO;
  }
  // Probe both ports with a plain bind first: a port in use is then a
  // clear start-up error before anything is set up.
  for (int i = 0; i < 2; i++) {
    int fd = listen_socket(i == 0 ? cfg_.nfs_addr : cfg_.mount_addr, cfg_.addr_len, false,
                           i == 0 ? "NFS" : "MOUNT", err);
    if (fd < 0) return EADDRINUSE;
    close(fd);
  }
  bufs_ = bufpool_create(256, INLINE_READ_MAX, err);
  if (!bufs_) return ENOMEM;
  for (int i = 0; i < THREAD_QUEUES; i++) {
    level l;
    char name[16];
    std::snprintf(name, sizeof name, "nfsd%d", i);
    if (!kcont_level_lookup(name, &l)) {
      *err = std::string("kcont level ") + name + " was not registered before kcont_start";
      return EINVAL;
    }
    if (int e = workqueue_create(&wq_[i], name, slot_work, this, l)) {
      *err = std::string("workqueue: ") + std::strerror(e);
      return e;
    }
  }
  uint32_t per_cpu = std::max<uint32_t>(1, (cfg_.max_conns + uint32_t(ncpu) - 1) / uint32_t(ncpu));
  for (int cpu = 0; cpu < ncpu; cpu++) {
    auto k = std::make_unique<kcpu>();
    k->t = this;
    k->cpu = cpu;
    k->conns = std::vector<kconn>(per_cpu);
    for (auto &c : k->conns) {
      if (!conn_alloc(&c, k.get())) {
        *err = "cannot map connection buffers: " + std::string(std::strerror(errno));
        return ENOMEM;
      }
    }
    sockpool_config pc;
    pc.cpu = cpu;
    pc.nsocks = per_cpu + 2;
    pc.sndbuf = 256 * 1024;
    pc.nbufs = 256;
    pc.bufsize = 64 * 1024;
    k->pool = sockpool_create(pc, err);
    if (!k->pool) return ENOMEM;
    kcont_init(&k->lkc, listener_upcall, k.get(),
               target::at(LVL_SOFTNET, kind::interrupt, int16_t(cpu)));
    kcont_init(&k->adopt_kc, adopt_upcall, k.get(),
               target::at(LVL_SOFTNET, kind::interrupt, int16_t(cpu)));
    k->handoff.reserve(per_cpu);
    k->adopting.reserve(per_cpu);
    cpus_.push_back(std::move(k));
  }
  // Listen only once every CPU exists: CPU 0's accept path reads cpus_.
  {
    int e1 = 0, e2 = 0;
    kcpu *kp = cpus_.front().get();
    int cpu = 0;
    run_on_cpu(cpu, [&] {
      kp->listeners[0] = sock_listen(kp->pool, reinterpret_cast<const sockaddr *>(&cfg_.nfs_addr),
                                     cfg_.addr_len, 1024, &kp->lkc, &e1, false);
      kp->listeners[1] = sock_listen(kp->pool, reinterpret_cast<const sockaddr *>(&cfg_.mount_addr),
                                     cfg_.addr_len, 1024, &kp->lkc, &e2, false);
    });
    if (e1 || e2) {
      *err = e1 ? bind_error("NFS", cfg_.nfs_addr, e1) : bind_error("MOUNT", cfg_.mount_addr, e2);
      return e1 ? e1 : e2;
    }
  }
  return 0;
}

void kcont_transport::stop() {
  if (stopped_) return;
  stopped_ = true;
  // 1. Stop accepting.
  for (auto &k : cpus_) {
    kcpu *kp = k.get();
    run_on_cpu(kp->cpu, [kp] {
      kp->draining = true;
      for (auto &l : kp->listeners) {
        if (l) sock_close(l);
        l = nullptr;
      }
    });
  }
  // 2. Let in-flight requests finish, up to the grace period.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg_.grace_ms);
  for (;;) {
    std::atomic<uint32_t> busy{0};
    for (auto &k : cpus_) {
      kcpu *kp = k.get();
      run_on_cpu(kp->cpu, [kp, &busy] {
        for (auto &c : kp->conns)
          if (c.active) busy += c.busy;
      });
    }
    if (busy == 0 || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // 3. Close every connection (sockets finish their queued sends).
  for (auto &k : cpus_) {
    kcpu *kp = k.get();
    run_on_cpu(kp->cpu, [kp] {
      for (auto &c : kp->conns) {
        if (!c.active) continue;
        c.eof = true;
        if (c.busy == 0) maybe_close(&c);
      }
    });
  }
  // 4. Wait for the sockets' teardown, then free.
  for (auto &k : cpus_) {
    for (int i = 0; i < 2000 && sockpool_get_stats(k->pool).in_use > 0; i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (auto &q : wq_) {
    if (q) workqueue_destroy(q);
    q = nullptr;
  }
  for (auto &k : cpus_) {
    kcont_drain(&k->lkc);
    kcont_drain(&k->adopt_kc);
    for (int fd : k->handoff) close(fd);
    for (auto &c : k->conns) {
      if (!c.mem) continue;
      kcont_drain(&c.upcall);
      for (auto &s : c.slots) kcont_drain(&s.kc);
    }
    if (sockpool_get_stats(k->pool).in_use == 0) sockpool_destroy(k->pool);
    for (auto &c : k->conns)
      if (c.mem && !c.active) munmap(c.mem, c.mem_len);
  }
  if (bufs_ && bufpool_destroy(bufs_) == 0) bufs_ = nullptr;
}

std::string kcont_transport::describe() {
  uint32_t active = 0;
  uint64_t refused = 0;
  for (auto &k : cpus_) {
    active += k->active.load(std::memory_order_relaxed);
    refused += k->refused.load(std::memory_order_relaxed);
  }
  return "kcont model: " + std::to_string(active) + " connections on " +
         std::to_string(cpus_.size()) + " CPUs, " + std::to_string(refused) + " refused";
}

}  // namespace

std::unique_ptr<transport> make_kcont_transport(server &srv, const transport_config &cfg) {
  return std::make_unique<kcont_transport>(srv, cfg);
}

// Registers the levels the kcont transport's thread-context workers use.
// Call before kcont_start.
int register_nfsd_levels() {
  for (int i = 0; i < THREAD_QUEUES; i++) {
    char name[16];
    std::snprintf(name, sizeof name, "nfsd%d", i);
    level l;
    if (kcont_level_lookup(name, &l)) continue;
    if (int e = kcont_level_register(name, 45 + i, &l)) return e;
  }
  return 0;
}

}  // namespace kc::nfs
