// SPDX-License-Identifier: BSD-2-Clause
// model_kcont.cc -- the kcont transport: NFS requests as chains of
// continuations, with no thread sleeping for an I/O.
//
// Model: every CPU has a socket pool and a fixed set of connection objects,
// each with `slots` request slots (request buffer + reply buffer, mapped
// once and reused, and the call's state).  CPU 0 listens on both ports and
// hands each new connection to the CPU serving the fewest of its port,
// counting those on their way (sock_detach -> a per-CPU hand-off list with
// room for every CPU's objects -> sock_adopt there); a CPU with
// no room for it (no free object, none idle to evict) passes it on to the
// next, and only when every CPU has tried is it refused.  Everything about a
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
//   -> reply queued on the connection; the pump hands it to the socket
//      with sock_sendv straight from the slot's reply buffer (and READ data
//      from its buffer), or the reply buffer then sock_sendfile for a file
//      extent -- nothing is copied into a send buffer; replies queued
//      together leave in one sendmsg -- and the slot is released when the
//      kernel holds its bytes, which resumes reading if the connection was
//      stalled for lack of slots (back-pressure).
//
// Limits (conn_limits.h): CPU 0 counts each accepted connection against its
// client address and hands it over with its port (one past its address's
// share goes uncounted from CPU to CPU until one closes an idle connection
// of that address for it, and is refused when none has); each CPU keeps separate
// connection objects for the NFS and the MOUNT port and, when a port's are
// all taken, evicts an idle connection of that port (conn_limits.h says
// which).  A per-CPU sweep -- a callout every quarter of the shorter
// timeout, armed only while the CPU has connections -- advances the CPU's epoch and closes
// connections that sat idle, or whose request or reply did not complete, for too many epochs.
// Activity is stamped with the epoch, never with a clock read.
//
// Life cycle (conn_state.h): a connection object is free, open or closing,
// and moves only through conn_state_move's asserted edges.  Every way out
// of open -- peer closed, error, bad framing, a reply that cannot be sent,
// timeout, eviction, shutdown -- is stop_reading (open -> closing); every
// event handler of a connection ends in conn_reap, the one teardown, which
// frees a closing connection once none of its slots is in flight (in the
// VFS, being received or being sent: `busy`).  One that must go now (timed
// out, evicted) is reset with sock_abort first (close_now), which also ends
// a send blocked on its peer.  A free object is reused only when its
// upcall continuation is idle.  A slot moves idle -> [vfs ->] sending ->
// idle (slot_to); replies wait in the connection's send_queue and are
// handed to the socket strictly in order.
//
// Locking: none per connection (one CPU owns it); the VFS, the server
// counters and the per-address table have their own.
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

#include "conn_limits.h"
#include "conn_state.h"
#include "internal.h"
#include "kcont/bind.h"
#include "kcont/callout.h"
#include "kcont/error_text.h"
#include "kcont/kcont.h"
#include "kcont/nfsd/transport.h"
#include "kcont/sock.h"
#include "kcont/spinlock.h"
#include "listen.h"

namespace kc::nfs {

namespace {

class kcont_transport;
struct kconn;

// A request slot's stage: idle (free, being filled, or its reply waiting in
// the send queue), vfs (in the VFS), sending / sending_file (handed to the
// socket).  The slot's continuation runs only for the last three.
enum class stage : uint8_t { idle, vfs, sending, sending_file };

struct kslot {
  kconn *conn = nullptr;
  uint8_t *req = nullptr;
  uint8_t *rep = nullptr;
  request r;
  serve_result result = serve_result::reply;
  stage st = stage::idle;
  kcont kc;  // softnet on the connection's CPU: the VFS, the send and sendfile end here
  nfs_call call;
  // Sending: the reply buffer, READ data from its buffer and the XDR
  // padding in one sock_sendv request -- or, for a file extent, the reply
  // buffer, then sock_sendfile, then the padding (sreq again: the sendfile
  // starts only once the reply buffer was sent).
  iovec iov[3] = {};
  sock_sendv_req sreq;
  uint32_t ready_at = 0;  // epoch the reply was queued
  size_t charged = 0;     // request buffer bytes beyond SLOT_KEEP charged to the budget
  kslot *next = nullptr;
};

// Moves s to stage `next`: into the VFS only from idle, to the socket only
// from idle or the VFS (a reply is handed once); back to idle from any.
void slot_to(kslot *s, stage next) {
  KC_ASSERT(next == stage::idle || (next == stage::vfs && s->st == stage::idle) ||
                (next != stage::vfs && (s->st == stage::idle || s->st == stage::vfs)),
            "a slot goes idle -> [vfs ->] sending -> idle, and only so");
  s->st = next;
}

// Each slot keeps SLOT_KEEP bytes of request buffer (and its whole reply
// buffer, KCONT_REPLY_BUFFER) mapped while its connection is open; what a
// large request touched beyond them is charged to the memory budget
// (memory_budget.h) and given back (MADV_DONTNEED) at the first sweep that
// finds the connection quiet, when the slot is released while somebody
// waits for memory, and when the connection closes.

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
  send_queue<kslot> sq;                 // replies not yet the kernel's (conn_state.h)
  uint32_t busy = 0;                    // slots in flight (thread, ring, send queue)
  conn_state state = conn_state::free;  // the life cycle (conn_state.h)
  bool sending = false;  // a handed reply's file extent is being sent (it owns the stream's tail)
  uint8_t port = PORT_NFS;
  uint32_t last_active = 0;  // epoch of the last byte read or sent
  uint32_t rec_start = 0;    // epoch the record being read began
  bool big = false;          // some slot may hold a charge
  bool mem_waiting = false;  // waits for the budget to read on (kcpu::mem_waiters);
                             // its socket is held meanwhile (sock_hold)
  // A charged record's body is received straight into its slot
  // (sock_read_into): rx_kc runs when rx_len bytes are there.  Counted in
  // `busy`: the slot's memory is the kernel's until then.
  kcont rx_kc;
  bool receiving = false;
  size_t rx_len = 0;
  void *mem = nullptr;
  size_t mem_len = 0;
};

// In use (open or closing), or free for the next connection.
bool in_use(const kconn *c) { return c->state != conn_state::free; }

// Open: reading requests (a closing connection reads nothing more).
bool reading_on(const kconn *c) { return c->state == conn_state::open; }

void stop_mem_wait(kconn *c);

// No more reading (peer closed, error, framing, timeout...): open ->
// closing.  The slot of a record begun is given back, and the connection
// no longer waits for memory.
void stop_reading(kconn *c) {
  conn_state_move(&c->state, conn_state::closing);
  if (c->cur) {
    c->free_slots.push_back(c->cur);
    c->cur = nullptr;
  }
  stop_mem_wait(c);
}

// A slot leaves flight (released, received, sent): `busy` never goes below 0.
void slot_landed(kconn *c) {
  KC_ASSERT(c->busy > 0, "a connection's busy count never goes negative");
  c->busy--;
}

// A handed-over connection: accepted on CPU 0, adopted by its CPU.
struct handoff_item {
  int fd = -1;
  uint8_t port = PORT_NFS;
  uint8_t tried = 0;      // CPUs that had no room for it so far
  bool at_share = false;  // not counted yet: its address holds its share
  sockaddr_storage peer{};
};

struct kcpu {
  kcont_transport *t = nullptr;
  int cpu = 0;
  sockpool *pool = nullptr;
  sock *listeners[2] = {};
  kcont lkc;
  std::vector<kconn> conns;  // [0, nfs_conns) NFS port, the rest MOUNT
  uint32_t nfs_conns = 0;
  std::atomic<uint32_t> active{0};
  std::atomic<uint32_t> open_port[2] = {};  // active, by conn_port
  bool draining = false;
  // Connections accepted on CPU 0 and handed to this CPU, waiting for
  // adopt_kc (room for every CPU's connection objects + ACCEPT_SLACK).
  std::atomic<uint32_t> handoff_lock{0};
  std::vector<handoff_item> handoff, adopting;  // capacity reserved at start
  std::atomic<uint32_t> handoff_port[2] = {};   // handed, not yet adopted, by port
  kcont adopt_kc;
  // The timeout sweep: sweep_co (softclock) defers sweep_kc (softnet).
  callout sweep_co;
  kcont sweep_kc;
  uint32_t epoch = 0;
  bool sweep_armed = false;
  // Connections of this CPU waiting for memory; the budget's wake-up hook
  // defers mem_kc, which lets them read on.
  std::atomic<uint32_t> mem_waiters{0};
  kcont mem_kc;
};

class kcont_transport final : public transport {
 public:
  kcont_transport(server &s, const transport_config &c)
      : srv_(s),
        cfg_(c),
        gate_(c.max_conns + c.max_mount_conns + 1024, c.max_conns_per_peer, mem_,
              size_t(c.slots) * (SLOT_KEEP + KCONT_REPLY_BUFFER), counters_) {}
  ~kcont_transport() override {
    stop();
    if (abandoned_)  // requests still use them: leave them to the exit
      for (auto &k : cpus_) (void)k.release();
  }

  int start(std::string *err) override;
  uint32_t stop() override;
  std::string describe() override;
  transport_stats stats() override {
    transport_stats s;
    fill_transport_stats(counters_, mem_, &s);
    return s;
  }

  server &srv_;
  transport_config cfg_;
  std::vector<std::unique_ptr<kcpu>> cpus_;
  std::atomic<uint32_t> rr_{0};
  conn_counters counters_;
  memory_budget mem_;
  conn_gate gate_;
  uint32_t sweep_ms_ = 0;     // 0: no timeouts, no sweep
  uint32_t idle_epochs_ = 0;  // 0: no idle timeout
  uint32_t record_epochs_ = 0;
  bool vfs_started_ = false;
  bool stopped_ = false;
  bool abandoned_ = false;
  uint32_t cut_short_ = 0;
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
void record_received(void *obj, void *env, int status);
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
  kcont_init(&c->rx_kc, record_received, c,
             target::at(LVL_SOFTNET, kind::interrupt, int16_t(k->cpu)));
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
  c->sq.reset();
  KC_ASSERT(c->busy == 0 && !c->sending && !c->receiving,
            "a free connection object has nothing in flight");
  conn_state_move(&c->state, conn_state::open);
  return true;
}

// c no longer waits for memory (it reads no more, or it was charged).
void stop_mem_wait(kconn *c) {
  if (!c->mem_waiting) return;
  c->cpu->t->mem_.stop_waiting(&c->mem_waiting);
  c->cpu->mem_waiters.fetch_sub(1, std::memory_order_seq_cst);
}

// Gives back what a slot touched beyond SLOT_KEEP, and its charge.  The
// slot is not in use.
void trim_slot(kslot *s) {
  if (!s->charged) return;
  madvise(s->req + SLOT_KEEP, s->charged, MADV_DONTNEED);
  s->conn->cpu->t->mem_.uncharge(s->charged);
  s->charged = 0;
}

// The one teardown: a closing connection whose slots have all landed goes
// closing -> free (socket closed, pages and charges given back, counted
// out).  Every event handler of a connection ends here; it does nothing to
// an open connection, or to a closing one with slots still in flight.
void conn_reap(kconn *c) {
  if (c->state != conn_state::closing) return;
  stop_mem_wait(c);
  if (c->busy > 0) return;
  KC_ASSERT(c->sq.empty() && !c->sending && !c->receiving && !c->cur,
            "a connection is freed with nothing queued, sent or received");
  if (c->s) sock_close(c->s);
  c->s = nullptr;
  conn_state_move(&c->state, conn_state::free);
  madvise(c->mem, c->mem_len, MADV_DONTNEED);  // the pages go back now
  kcont_transport *t = c->cpu->t;
  for (auto &s : c->slots) {
    t->mem_.uncharge(s.charged);
    s.charged = 0;
  }
  c->big = false;
  t->gate_.release(c->peer);
  t->counters_.open[c->port].fetch_sub(1, std::memory_order_relaxed);
  c->cpu->active.fetch_sub(1, std::memory_order_relaxed);
  c->cpu->open_port[c->port].fetch_sub(1, std::memory_order_relaxed);
}

void fail_sends(kconn *c);

// Closes c now (timed out, evicted, shutting down): no more reading, queued
// replies dropped, the socket reset so that nothing waits for the peer.
// Requests in the VFS finish first; conn_reap frees the object then.
void close_now(kconn *c, std::atomic<uint64_t> *why) {
  if (why) why->fetch_add(1, std::memory_order_relaxed);
  stop_reading(c);
  fail_sends(c);
  if (c->s) sock_abort(c->s);  // a running sendfile ends with ECANCELED
  c->s = nullptr;
  conn_reap(c);
}

// Reading a record that has begun.
bool mid_record(const kconn *c) { return c->cur && !c->rd.idle(); }

// Nothing being read, in flight or to send.
bool quiet(const kconn *c) { return reading_on(c) && c->s && c->busy == 0 && !mid_record(c); }

// The connection objects of `port` on k.
std::pair<kconn *, kconn *> port_range(kcpu *k, uint8_t port) {
  kconn *b = k->conns.data(), *e = b + k->conns.size();
  kconn *mid = b + k->nfs_conns;
  return port == PORT_NFS ? std::pair{b, mid} : std::pair{mid, e};
}

// A free connection object of k for `port` (its upcall idle).  With none,
// an idle connection of the port is evicted to make one (see below);
// nullptr if none is idle.
kconn *free_conn(kcpu *k, uint8_t port) {
  if (k->draining) return nullptr;
  auto [b, e] = port_range(k, port);
  for (kconn *c = b; c != e; c++)
    if (!in_use(c) && c->mem && kcont_state(&c->upcall) == kc_state::idle) return c;
  // The victim: eviction_pick's (conn_limits.h).
  eviction_pick pick(k->t->gate_, nullptr);
  kconn *oldest = nullptr;
  for (kconn *c = b; c != e; c++)
    if (quiet(c) && pick.offer(c->peer, k->epoch - c->last_active)) oldest = c;
  if (!oldest) return nullptr;
  close_now(oldest, &k->t->counters_.evicted);
  if (!in_use(oldest) && kcont_state(&oldest->upcall) == kc_state::idle) return oldest;
  return nullptr;
}

// Closes the longest idle connection of `peer` on k, on either port, to
// make room within its share for a new one.  False if none of them is idle.
bool evict_own(kcpu *k, const sockaddr_storage &peer) {
  eviction_pick pick(k->t->gate_, &peer);
  kconn *victim = nullptr;
  for (auto &c : k->conns)
    if (quiet(&c) && pick.offer(c.peer, k->epoch - c.last_active)) victim = &c;
  if (!victim) return false;
  close_now(victim, &k->t->counters_.evicted);
  return true;
}

void sweep_fire(void *arg) { kcont_defer(&static_cast<kcpu *>(arg)->sweep_kc, nullptr, 0); }

void conn_started(kcpu *k, kconn *c, sock *s, uint8_t port, const sockaddr_storage &peer) {
  kcont_transport *t = k->t;
  c->s = s;
  c->port = port;
  c->peer = peer;
  c->last_active = k->epoch;
  k->active.fetch_add(1, std::memory_order_relaxed);
  k->open_port[port].fetch_add(1, std::memory_order_relaxed);
  t->counters_.open[port].fetch_add(1, std::memory_order_relaxed);
  t->counters_.accepted.fetch_add(1, std::memory_order_relaxed);
  t->srv_.stats.connections.fetch_add(1, std::memory_order_relaxed);
  if (t->sweep_ms_ && !k->sweep_armed && !k->draining) {
    k->sweep_armed = true;
    callout_reset(&k->sweep_co, mstohz(t->sweep_ms_), sweep_fire, k);
  }
}

// Gives back what large requests touched beyond SLOT_KEEP of their slots.
// The connection is quiet: no slot is in use.
void trim_slots(kconn *c) {
  for (auto &s : c->slots) trim_slot(&s);
  c->big = false;
}

// The sweep: one epoch passed on k; close what timed out.  Re-arms while
// the CPU has connections.
void sweep(void *, void *env, int) {
  auto *k = static_cast<kcpu *>(env);
  kcont_transport *t = k->t;
  uint32_t now = ++k->epoch;
  for (auto &c : k->conns) {
    if (!in_use(&c) || !c.s) continue;
    // A record waiting for memory is not the client's slowness: its clock
    // restarts when it is charged (charge_record).
    if (t->record_epochs_ &&
        ((mid_record(&c) && !c.mem_waiting && now - c.rec_start > t->record_epochs_) ||
         (!c.sq.empty() && now - c.sq.oldest()->ready_at > t->record_epochs_)))
      close_now(&c, &t->counters_.closed_stalled);
    else if (t->idle_epochs_ && quiet(&c) && now - c.last_active > t->idle_epochs_)
      close_now(&c, &t->counters_.closed_idle);
    else if (c.big && quiet(&c))
      trim_slots(&c);
  }
  k->sweep_armed = k->active.load(std::memory_order_relaxed) > 0 && !k->draining;
  if (k->sweep_armed) callout_reset(&k->sweep_co, mstohz(t->sweep_ms_), sweep_fire, k);
}

// CPU 0 accepts every connection and spreads them: each goes to the CPU
// with the fewest of its port (then the fewest in all; SO_REUSEPORT would
// hash them, and two connections land on one CPU half the time).
kcpu *pick_cpu(kcont_transport *t, uint8_t port) {
  kcpu *best = nullptr;
  uint32_t start = t->rr_.fetch_add(1, std::memory_order_relaxed);
  size_t n = t->cpus_.size();
  // Connections on their way count too: in a burst the open counts lag,
  // and every connection would go to the same CPU.
  auto load = [port](kcpu *k) {
    uint32_t coming = k->handoff_port[port].load(std::memory_order_relaxed);
    return std::pair{k->open_port[port].load(std::memory_order_relaxed) + coming,
                     k->active.load(std::memory_order_relaxed) + coming};
  };
  for (size_t i = 0; i < n; i++) {
    kcpu *k = t->cpus_[(start + i) % n].get();
    if (!best || load(k) < load(best)) best = k;
  }
  return best;
}

// Queues h for CPU `to` (its adopt_kc takes it).  False, nothing queued,
// if to's hand-off list is full.
bool hand_to(kcpu *to, const handoff_item &h) {
  // Counted before it is listed, so that the adopter's decrement never
  // comes first.
  to->handoff_port[h.port].fetch_add(1, std::memory_order_relaxed);
  {
    spinlock g(to->handoff_lock);
    if (to->handoff.size() < to->handoff.capacity()) {
      to->handoff.push_back(h);
    } else {
      to->handoff_port[h.port].fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
  }
  kcont_defer(&to->adopt_kc, nullptr, 0);
  return true;
}

// `from` had no room for h (no free connection object of its port, none
// idle to evict): the next CPU tries, until every CPU has.  False when all
// have (the caller refuses it).
bool pass_on(kcont_transport *t, kcpu *from, handoff_item h) {
  size_t n = t->cpus_.size();
  if (++h.tried >= n) return false;
  return hand_to(t->cpus_[(size_t(from->cpu) + 1) % n].get(), h);
}

void adopt_upcall(void *, void *env, int) {
  auto *k = static_cast<kcpu *>(env);
  kcont_transport *t = k->t;
  {
    spinlock g(k->handoff_lock);
    k->adopting.swap(k->handoff);
  }
  for (handoff_item &h : k->adopting) {
    k->handoff_port[h.port].fetch_sub(1, std::memory_order_relaxed);
    if (h.at_share) {
      // Room within its address's share: one of the address's idle
      // connections here goes, or the next CPU looks at its own.
      if (k->draining || !evict_own(k, h.peer)) {
        if (!k->draining && pass_on(t, k, h)) continue;
        t->gate_.refuse_at_share(h.peer);
        close(h.fd);
        continue;
      }
      h.at_share = false;
      if (!t->gate_.admit_replacing(h.peer)) {  // counted there
        close(h.fd);
        continue;
      }
    }
    kconn *c = free_conn(k, h.port);
    if (!c && !k->draining && pass_on(t, k, h)) continue;
    sock *s = nullptr;
    int err = 0;
    if (c) {
      // The upcall cannot run before conn_setup: it is deferred to this
      // CPU's softnet, which runs it after this continuation returns.
      s = sock_adopt(k->pool, h.fd, &c->upcall, &err);
      if (s) conn_setup(c, k);
    }
    if (!s) {
      t->counters_.refused_full.fetch_add(1, std::memory_order_relaxed);
      t->gate_.release(h.peer);
      close(h.fd);
      continue;
    }
    conn_started(k, c, s, h.port, h.peer);
  }
  k->adopting.clear();
}

// Detaches s into h->fd and queues h with `queue` (hand_to, pass_on).
// False when either fails: then s, or the descriptor taken from it, is
// closed.
template <class Queue>
bool hand_off(sock *s, handoff_item *h, Queue queue) {
  h->fd = sock_detach(s);
  if (h->fd >= 0 && queue()) return true;
  if (h->fd >= 0)
    close(h->fd);
  else
    sock_close(s);
  return false;
}

void listener_upcall(void *, void *env, int) {
  auto *k = static_cast<kcpu *>(env);
  kcont_transport *t = k->t;
  for (uint8_t port : {PORT_NFS, PORT_MOUNT}) {
    sock *l = k->listeners[port];
    if (!l) continue;
    sock_events(l);
    while (sock *s = sock_accept(l)) {
      handoff_item h;
      h.port = port;
      socklen_t len = sizeof h.peer;
      if (getpeername(sock_fd(s), reinterpret_cast<sockaddr *>(&h.peer), &len) != 0) {
        t->counters_.refused_peer.fetch_add(1, std::memory_order_relaxed);
        sock_close(s);
        continue;
      }
      const admission a = t->gate_.admit(h.peer);
      if (a == admission::no_memory) {  // counted there
        sock_close(s);
        continue;
      }
      if (a == admission::at_share) {
        // Uncounted, to the CPUs in turn (this one first) until one of
        // them closes an idle connection of the address (adopt_upcall).
        h.at_share = true;
        if (!hand_off(s, &h, [&] { return !k->draining && hand_to(k, h); }))
          t->gate_.refuse_at_share(h.peer);
        continue;
      }
      kcpu *to = k->draining ? k : pick_cpu(t, port);
      kconn *c = to == k ? free_conn(k, port) : nullptr;
      if (to != k || (!c && !k->draining && t->cpus_.size() > 1)) {
        if (!hand_off(s, &h, [&] { return to != k ? hand_to(to, h) : pass_on(t, k, h); })) {
          t->counters_.refused_full.fetch_add(1, std::memory_order_relaxed);
          t->gate_.release(h.peer);
        }
        continue;
      }
      if (!c) {
        t->counters_.refused_full.fetch_add(1, std::memory_order_relaxed);
        t->gate_.release(h.peer);
        sock_close(s);
        continue;
      }
      conn_setup(c, k);
      conn_started(k, c, s, port, h.peer);
      sock_start(s, &c->upcall);
    }
  }
}

void conn_upcall(void *, void *env, int) {
  auto *c = static_cast<kconn *>(env);
  if (!in_use(c) || !c->s) return;
  uint32_t ev = sock_events(c->s);
  if (ev & SOCK_ERROR) stop_reading(c);
  if (ev & (SOCK_READABLE | SOCK_EOF)) read_records(c);
  if (ev & SOCK_WRITABLE) pump(c);
  conn_reap(c);
}

void release_slot(kslot *s) {
  kconn *c = s->conn;
  if (s->charged && c->cpu->t->mem_.pressed()) trim_slot(s);
  release_reply(s->r);
  slot_to(s, stage::idle);
  s->next = nullptr;
  c->free_slots.push_back(s);
  slot_landed(c);
}

// Queues a finished reply for sending.
void reply_ready(kslot *s) {
  kconn *c = s->conn;
  if (s->result != serve_result::reply || !reading_on(c)) {
    if (s->result == serve_result::close) stop_reading(c);
    release_slot(s);
    conn_reap(c);
    if (reading_on(c) && !c->cur) read_records(c);
    return;
  }
  s->ready_at = c->cpu->epoch;
  c->sq.push(s);
  pump(c);
}

// Takes s (handed, its bytes now the kernel's or never to be sent) off the
// send queue and releases it.
void sent_slot(kslot *s) {
  s->conn->sq.remove_handed(s);
  release_slot(s);
}

// No more sending: replies not handed to the socket are released now; the
// handed ones end through their continuations (ECANCELED once the socket
// is aborted, or when a closing socket has sent them).
void fail_sends(kconn *c) {
  stop_reading(c);
  kslot *s = c->sq.take_waiting();
  while (s) {
    kslot *n = s->next;
    release_slot(s);
    s = n;
  }
}

const uint8_t XDR_ZERO[4] = {};

// Hands every waiting reply to the socket, in order: no copy, no send
// buffer to fill, so nothing waits for SOCK_WRITABLE -- only a file extent
// being sent holds the next replies back (it owns the stream's tail).
void pump(kconn *c) {
  if (!c->s) {
    fail_sends(c);
    return;
  }
  c->last_active = c->cpu->epoch;
  while (kslot *s = c->sq.next_to_hand()) {
    if (c->sending) return;  // the file extent's continuation calls again
    file_part &fp = s->r.file;
    unsigned n = 0;
    s->iov[n++] = {s->rep, s->r.out.size()};
    if (fp.len == 0) {
      if (s->r.data_len > 0) s->iov[n++] = {s->r.data_buf->data, s->r.data_len};
      if (fp.pad > 0) s->iov[n++] = {const_cast<uint8_t *>(XDR_ZERO), fp.pad};
    }
    s->sreq.iov = s->iov;
    s->sreq.iovcnt = n;
    // With a file extent the reply buffer goes first without a
    // continuation: the sendfile queued behind it starts once it is sent,
    // and the slot ends with the sendfile.
    slot_to(s, fp.len > 0 ? stage::sending_file : stage::sending);
    int e = sock_sendv(c->s, &s->sreq, fp.len > 0 ? nullptr : &s->kc);
    if (e == 0 && fp.len > 0) {
      e = sock_sendfile(c->s, fp.fd, fp.offset, fp.len, &s->kc,
                        fp.resident ? SOCK_SENDFILE_RESIDENT : 0);
      if (e != 0) {  // the reply buffer is queued: nothing may follow it
        slot_to(s, stage::idle);
        close_now(c, nullptr);
        return;
      }
      c->sending = true;
    }
    if (e != 0) {
      slot_to(s, stage::idle);
      fail_sends(c);
      return;
    }
    c->sq.handed(s);
  }
  if (reading_on(c) && !c->cur) read_records(c);
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
      slot_to(s, stage::vfs);
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

// The record being read into c->cur announces `need` bytes beyond
// SLOT_KEEP: charges what the slot lacks, or makes c wait for memory and
// gives back what its idle slots hold.  A waiting connection's socket is
// held (sock_hold): it takes no more of the CPU's receive buffers, which
// the connections that are charged or read small records need.  False: c
// waits; mem_available resumes it.
bool charge_record(kconn *c, size_t need) {
  kcpu *k = c->cpu;
  size_t more = need - c->cur->charged;
  bool at_once = !c->mem_waiting && k->t->mem_.charge(more);  // the usual case
  bool charged = at_once;
  if (!charged) {
    // Counted on the CPU before the budget sees the waiter, so that a
    // wake-up that sees the waiter also finds this CPU.
    if (!c->mem_waiting) k->mem_waiters.fetch_add(1, std::memory_order_seq_cst);
    charged = k->t->mem_.wait_for(more, &c->mem_waiting);
    if (charged) k->mem_waiters.fetch_sub(1, std::memory_order_seq_cst);
  }
  if (charged) {
    c->cur->charged = need;
    c->big = true;
    if (!at_once) {
      sock_hold(c->s, false);
      c->rec_start = k->epoch;  // the record's clock restarts
    }
    return true;
  }
  sock_hold(c->s, true);
  for (kslot *s : c->free_slots) trim_slot(s);
  return false;
}

// n bytes arrived where c->rd.want() said: a complete record starts its
// request.  `arrived`: vfs_arrival() read after the bytes were in hand, 0
// until a record needs it (read then, once per batch of records).  False:
// the stream is bad (c->eof set).
bool take_bytes(kconn *c, size_t n, uint64_t &arrived) {
  kcont_transport *t = c->cpu->t;
  c->last_active = c->cpu->epoch;
  auto r = c->rd.commit(n);
  if (r == record_reader::too_big || r == record_reader::bad_fragment) {
    t->srv_.stats.bad_records.fetch_add(1, std::memory_order_relaxed);
    stop_reading(c);
    return false;
  }
  if (r == record_reader::record) {
    kslot *s = c->cur;
    c->cur = nullptr;
    s->r.len = c->rd.length();
    if (arrived == 0) arrived = vfs::vfs_arrival();
    s->r.arrived = arrived;
    start_request(s);
  }
  return true;
}

// A charged record's fragment body at least this large and not yet queued
// is received straight into the slot (sock_read_into).
constexpr size_t READ_INTO_MIN = size_t{16} * 1024;

void read_records(kconn *c) {
  kcont_transport *t = c->cpu->t;
  uint64_t arrived = 0;  // every byte sock_read hands out below is in hand now
  while (reading_on(c) && c->s && !c->receiving) {
    if (!c->cur) {
      if (c->free_slots.empty()) return;  // back-pressure: resumes on release
      c->cur = c->free_slots.back();
      c->free_slots.pop_back();
      c->rd.begin(c->cur->req, t->srv_.cfg.max_record);
    }
    size_t need = beyond_keep(c->rd.announced());
    if (need > c->cur->charged && !charge_record(c, need)) return;
    size_t want;
    uint8_t *p = c->rd.want(&want);
    bool was_idle = c->rd.idle();
    if (c->cur->charged && want >= READ_INTO_MIN && want > sock_readable(c->s)) {
      // The body of a large record: what is queued, then the rest received
      // into the slot by the kernel -- no receive buffer of the CPU's pool,
      // so a charged record always completes, however many connections
      // hold the pool's buffers while they wait for memory.
      if (sock_read_into(c->s, p, want, &c->rx_kc) != 0) {
        stop_reading(c);
        break;
      }
      c->receiving = true;
      c->rx_len = want;
      c->busy++;
      return;
    }
    long n = sock_read(c->s, p, want);
    if (n == -EAGAIN) return;
    if (n <= 0) {
      stop_reading(c);
      break;
    }
    if (was_idle) c->rec_start = c->cpu->epoch;
    if (!take_bytes(c, size_t(n), arrived)) break;
  }
}

// sock_read_into's continuation: the body is in the slot (status 0), or
// the stream ended or failed (the connection goes), or the socket was
// closed (ECANCELED: c closes; the slot's memory is ours again).
void record_received(void *, void *env, int status) {
  auto *c = static_cast<kconn *>(env);
  KC_ASSERT(c->receiving, "a body receive ends once per sock_read_into");
  c->receiving = false;
  slot_landed(c);
  uint64_t arrived = 0;
  if (status == 0 && reading_on(c) && c->s)
    take_bytes(c, c->rx_len, arrived);
  else
    stop_reading(c);
  read_records(c);
  conn_reap(c);
}

// Memory was given back while connections of this CPU waited for it: they
// try again (the first that fits takes it; the others wait on).
void mem_available(void *, void *env, int) {
  auto *k = static_cast<kcpu *>(env);
  for (auto &c : k->conns) {
    if (!in_use(&c) || !c.mem_waiting) continue;
    read_records(&c);
    conn_reap(&c);
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
    case stage::sending:
      // The reply is the kernel's (0), or will never be sent.
      sent_slot(s);
      if (status != 0) {
        fail_sends(c);
      } else if (c->s) {
        pump(c);  // may resume reading (slots were all taken)
      }
      break;
    case stage::sending_file: {
      KC_ASSERT(c->sending, "a file extent's send ends once");
      c->sending = false;
      uint32_t pad = s->r.file.pad;
      if (status != 0 || !c->s) {
        // ECANCELED (closed), ENODATA (the file shrank) or a send error:
        // the record cannot be completed, so the connection must go.
        sent_slot(s);
        fail_sends(c);
        break;
      }
      if (pad > 0) {  // static zeros: nothing of the slot is needed for them
        s->iov[2] = {const_cast<uint8_t *>(XDR_ZERO), pad};
        s->sreq.iov = &s->iov[2];
        s->sreq.iovcnt = 1;
        if (sock_sendv(c->s, &s->sreq, nullptr) != 0) {
          sent_slot(s);
          fail_sends(c);
          break;
        }
      }
      sent_slot(s);
      pump(c);
      break;
    }
    case stage::idle:
      KC_ASSERT(false, "a slot's continuation runs only while the slot is in flight");
      break;
  }
  conn_reap(c);
}

// Spare socket slots of CPU 0's pool for accepted connections on their way
// (hand-off, eviction, refusal).
constexpr uint32_t ACCEPT_SLACK = 8;

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
  if (!mem_.configure(cfg_.max_memory, size_t(cfg_.slots) * (SLOT_KEEP + KCONT_REPLY_BUFFER),
                      srv_.cfg.max_record, cfg_.max_conns + cfg_.max_mount_conns, err))
    return EINVAL;
  vfs::vfs_config vc;
  vc.lanes_per_cpu = cfg_.vfs_lanes_per_cpu;
  if (int e = vfs::vfs_start(vc, err)) return e;
  vfs_started_ = true;
  // The sweep runs four times per shorter timeout (so a timeout fires
  // within 25 % of its length), at most every 10 s and at least every 50 ms.
  uint32_t shortest = 0;
  for (uint32_t ms : {cfg_.idle_timeout_ms, cfg_.record_timeout_ms})
    if (ms && (!shortest || ms < shortest)) shortest = ms;
  if (shortest) {
    sweep_ms_ = std::clamp<uint32_t>(shortest / 4, 50, 10000);
    idle_epochs_ = (cfg_.idle_timeout_ms + sweep_ms_ - 1) / sweep_ms_;
    record_epochs_ = (cfg_.record_timeout_ms + sweep_ms_ - 1) / sweep_ms_;
  }
  auto share = [&](uint32_t n) {
    return std::max<uint32_t>(1, (n + uint32_t(ncpu) - 1) / uint32_t(ncpu));
  };
  uint32_t nfs_per_cpu = share(cfg_.max_conns), mount_per_cpu = share(cfg_.max_mount_conns);
  uint32_t per_cpu = nfs_per_cpu + mount_per_cpu;
  for (int cpu = 0; cpu < ncpu; cpu++) {
    auto k = std::make_unique<kcpu>();
    k->t = this;
    k->cpu = cpu;
    k->conns = std::vector<kconn>(per_cpu);
    k->nfs_conns = nfs_per_cpu;
    for (auto &c : k->conns) {
      if (!conn_alloc(&c, k.get())) {
        *err = "cannot map connection buffers: " + std::string(kc::error_text(errno));
        return ENOMEM;
      }
    }
    sockpool_config pc;
    pc.cpu = cpu;
    // CPU 0 also holds every connection between accept and its hand-off,
    // eviction or refusal: without slots to spare, a CPU 0 whose own
    // connection objects are all in use could not accept at all, so it
    // could neither evict an idle connection nor refuse the new one (they
    // would wait in the kernel's backlog).
    pc.nsocks = per_cpu + 2 + (cpu == 0 ? ACCEPT_SLACK : 0);
    // Replies go with sock_sendv from the slots and never through the send
    // buffer: the smallest one will do (512 bytes, not 256 KiB per socket).
    pc.sndbuf = 512;
    pc.nbufs = 256;
    pc.bufsize = 64 * 1024;
    k->pool = sockpool_create(pc, err);
    if (!k->pool) return ENOMEM;
    kcont_init(&k->lkc, listener_upcall, k.get(),
               target::at(LVL_SOFTNET, kind::interrupt, int16_t(cpu)));
    kcont_init(&k->adopt_kc, adopt_upcall, k.get(),
               target::at(LVL_SOFTNET, kind::interrupt, int16_t(cpu)));
    kcont_init(&k->sweep_kc, sweep, k.get(),
               target::at(LVL_SOFTNET, kind::interrupt, int16_t(cpu)));
    kcont_init(&k->mem_kc, mem_available, k.get(),
               target::at(LVL_SOFTNET, kind::interrupt, int16_t(cpu)));
    callout_init(&k->sweep_co, cpu);
    // Room for as many connections on their way as all CPUs' tables hold:
    // a burst that CPU 0 accepts faster than this CPU adopts must reach
    // free_conn, which evicts an idle connection to make room, instead of
    // being refused for want of a list entry (seen under TSan: 53 refused,
    // none evicted, while idle connections filled the tables).
    k->handoff.reserve(size_t(per_cpu) * ncpu + ACCEPT_SLACK);
    k->adopting.reserve(size_t(per_cpu) * ncpu + ACCEPT_SLACK);
    cpus_.push_back(std::move(k));
  }
  // Any context that gives memory back may wake a CPU's waiters.
  mem_.set_wake([this] {
    for (auto &k : cpus_)
      if (k->mem_waiters.load(std::memory_order_seq_cst) > 0) kcont_defer(&k->mem_kc, nullptr, 0);
  });
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

uint32_t kcont_transport::stop() {
  if (stopped_) return cut_short_;
  stopped_ = true;
  // 1. Stop accepting; the sweep stops re-arming.
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
  // Requests in flight on every CPU (in the VFS or being sent).
  auto busy_slots = [this] {
    std::atomic<uint32_t> busy{0};
    for (auto &k : cpus_) {
      kcpu *kp = k.get();
      run_on_cpu(kp->cpu, [kp, &busy] {
        for (auto &c : kp->conns)
          if (in_use(&c)) busy += c.busy;
      });
    }
    return busy.load();
  };
  auto wait_idle = [&](uint32_t ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    for (;;) {
      uint32_t busy = busy_slots();
      if (busy == 0 || std::chrono::steady_clock::now() > deadline) return busy;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  // 2. Let in-flight requests finish, up to the grace period.
  wait_idle(cfg_.grace_ms);
  // 3. Close every connection: a quiet one after its queued sends, a busy
  //    one at once (a reply its client does not read is dropped).
  for (auto &k : cpus_) {
    kcpu *kp = k.get();
    run_on_cpu(kp->cpu, [kp] {
      for (auto &c : kp->conns) {
        if (!in_use(&c)) continue;
        if (c.busy == 0) {
          stop_reading(&c);
          conn_reap(&c);
        } else {
          close_now(&c, nullptr);
        }
      }
    });
  }
  // 4. The reset sends unwind at once; what is still busy now waits for a
  //    file system that does not answer.  It is abandoned, not waited for.
  if (uint32_t stuck = wait_idle(1000)) {
    cut_short_ = stuck;
    abandoned_ = true;
    return cut_short_;
  }
  // 5. Wait for the sockets' teardown, then free.
  for (auto &k : cpus_) {
    for (int i = 0; i < 2000 && sockpool_get_stats(k->pool).in_use > 0; i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (vfs_started_) vfs::vfs_stop();  // nothing is in thread context any more
  vfs_started_ = false;
  for (auto &k : cpus_) {
    callout_halt(&k->sweep_co);
    callout_destroy(&k->sweep_co);
    kcont_drain(&k->sweep_kc);
    kcont_drain(&k->lkc);
    kcont_drain(&k->adopt_kc);
    kcont_drain(&k->mem_kc);
    for (const handoff_item &h : k->handoff) {
      gate_.release(h.peer);
      close(h.fd);
    }
    for (auto &c : k->conns) {
      if (!c.mem) continue;
      kcont_drain(&c.upcall);
      kcont_drain(&c.rx_kc);
      for (auto &s : c.slots) kcont_drain(&s.kc);
    }
    if (sockpool_get_stats(k->pool).in_use == 0) sockpool_destroy(k->pool);
    for (auto &c : k->conns)
      if (c.mem && !in_use(&c)) munmap(c.mem, c.mem_len);
  }
  return 0;
}

std::string kcont_transport::describe() {
  return "kcont model on " + std::to_string(cpus_.size()) + " CPUs: " + counters_.describe() +
         "; " + mem_.describe();
}

}  // namespace

std::unique_ptr<transport> make_kcont_transport(server &srv, const transport_config &cfg) {
  return std::make_unique<kcont_transport>(srv, cfg);
}

// Registers the levels the VFS's thread-context workers use.  Call before
// kcont_start.
int register_nfsd_levels() { return vfs::vfs_register_levels(); }

}  // namespace kc::nfs
