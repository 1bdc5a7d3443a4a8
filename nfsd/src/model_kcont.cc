// model_kcont.cc -- the kcont transport: NFS requests as chains of
// continuations, with no thread sleeping for an I/O.
//
// Model: every CPU has a socket pool and a fixed set of connection objects,
// each with `slots` request slots (request buffer + reply buffer, mapped
// once and reused, and the call's state).  CPU 0 listens on both ports and
// hands each new connection to the CPU serving the fewest (sock_detach ->
// a per-CPU hand-off list -> sock_adopt there).  Everything about a
// connection happens on its CPU's dispatcher at {softnet, interrupt}:
//
//   upcall (data arrived) -> record reassembled straight into a free slot
//     -> call_begin (nfs3.cc) decodes it; calls that need no file system
//        are answered on the spot
//     -> otherwise vop_start with the slot's continuation: the VFS
//        completes the request without a thread when the kernel allows
//        (cached attributes, reads through buf, writes from the request
//        buffer, fsync) or runs it in thread context on its own workqueue
//     -> the slot's continuation, back at softnet on the connection's CPU,
//        runs call_end, which encodes the reply
//   -> reply queued on the connection; the pump writes it with sock_send
//      (then READ data from its buffer, or sock_sendfile for a file
//      extent), waits for SOCK_WRITABLE when the send buffer is full, and
//      releases the slot, which resumes reading if the connection was
//      stalled for lack of slots (back-pressure).
//
// Teardown: a connection is closed only when none of its slots is in flight
// (in the VFS or being sent); its object is reused only when its upcall
// continuation is idle.
//
// Locking: none per connection (one CPU owns it); the VFS and the server
// counters have their own.
#include <fcntl.h>
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
#include "kcont/kcont.h"
#include "kcont/nfsd/transport.h"
#include "kcont/sock.h"
#include "kcont/spinlock.h"
#include "listen.h"

namespace kc::nfs {

namespace {

class kcont_transport;
struct kconn;

enum class stage : uint8_t { idle, vfs, sending_file };

struct kslot {
  kconn *conn = nullptr;
  uint8_t *req = nullptr;
  uint8_t *rep = nullptr;
  request r;
  serve_result result = serve_result::reply;
  stage st = stage::idle;
  kcont kc;  // softnet on the connection's CPU: the VFS and sendfile end here
  nfs_call call;
  // Sending: the reply buffer, then READ data (a buffer or a file extent),
  // then the XDR padding.
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
  std::atomic<uint32_t> rr_{0};
  bool vfs_started_ = false;
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
  release_reply(s->r);
  s->st = stage::idle;
  s->next = nullptr;
  c->free_slots.push_back(s);
  c->busy--;
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
    if (s->tail_sent < s->r.data_len) {
      long n = sock_send(c->s, s->r.data_buf->data + s->tail_sent, s->r.data_len - s->tail_sent);
      if (n < 0) {
        fail_sends(c);
        return;
      }
      s->tail_sent += size_t(n);
      if (s->tail_sent < s->r.data_len) return;
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

// ---- reading requests ---------------------------------------------------------------

void start_request(kslot *s) {
  kconn *c = s->conn;
  kcont_transport *t = c->cpu->t;
  c->busy++;
  s->r.rec = s->req;
  s->r.peer = c->peer;
  s->r.allow_file_part = true;
  s->r.in_thread = false;
  s->r.out = xdr_out(s->rep, KCONT_REPLY_BUFFER);
  switch (call_begin(s->call, t->srv_, s->r)) {
    case begin_result::vop:
      s->st = stage::vfs;
      s->call.v.done = &s->kc;
      vfs::vop_start(&s->call.v);
      return;
    case begin_result::reply:
      s->result = serve_result::reply;
      break;
    case begin_result::drop:
      s->result = serve_result::drop;
      break;
    case begin_result::close:
      s->result = serve_result::close;
      break;
  }
  reply_ready(s);
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
void slot_continue(void *, void *env, int status) {
  auto *s = static_cast<kslot *>(env);
  kconn *c = s->conn;
  switch (s->st) {
    case stage::vfs:
      s->result = call_end(s->call);
      reply_ready(s);
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
  if (int e = vfs::vfs_start(vfs::vfs_config{}, err)) return e;
  vfs_started_ = true;
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
  if (vfs_started_) vfs::vfs_stop();  // waits for requests in thread context
  vfs_started_ = false;
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

// Registers the levels the VFS's thread-context workers use.  Call before
// kcont_start.
int register_nfsd_levels() { return vfs::vfs_register_levels(); }

}  // namespace kc::nfs
