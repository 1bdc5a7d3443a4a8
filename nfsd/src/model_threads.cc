// SPDX-License-Identifier: BSD-2-Clause
// model_threads.cc -- the classic server design, for the A/B: a reader
// thread per connection, a pool of worker threads, and a sleep/wakeup
// hand-off (mutex + condition variable) between them.
//
// Model: an acceptor thread per listening socket accepts connections
// (applying the limits of conn_limits.h: per-port tables, per-address
// count, eviction of an idle connection) and starts a reader
// thread for each.  The reader waits in poll() on its socket and an eventfd
// and reassembles records into the connection's free slots; each complete
// record goes on the global work queue and wakes a worker; with every slot
// busy it stops reading (back-pressure).  A worker runs serve_call
// (blocking system calls, pread for READ data) into the slot's reply
// buffer and sends it without blocking: what the socket does not take
// stays in the slot, queued on the connection, and the reader sends it when
// the socket is writable -- so no worker ever waits for a client.  The slot
// is released when its reply is sent.  The reader also enforces the
// timeouts (poll's timeout is the nearest deadline: idle connection,
// incomplete record, unsent reply) and closes the connection on EOF, an
// error, a framing error or a timeout, after its in-flight requests finish;
// it then unmaps the connection's buffers at once.
//
// The reader is written as its steps: plan_pass (under the connection's
// lock: flush, take a slot, charge, stamp `quiet`, trim, compute what to
// wait for), wait_pass (poll, no lock), time_out (a deadline passed),
// receive (recv into the record, no lock; a complete record goes to the
// work queue) and close_conn.
//
// Locking: `work_lock_` guards the work queue; each connection's `lock`
// guards its free slots, in-flight count, send queue, descriptor and the
// reader's wake-up flag (sends happen under it, never blocking);
// `conns_lock_` guards the connection list; `mem_lock_` guards the list of
// readers waiting for memory.  Order, outermost first: conns_lock_ (the
// acceptor's make_room, stop) -> a connection's lock -> mem_lock_
// (charge_record and stop_mem_wait list and unlist a waiter under the
// connection's lock; the budget's wake-up hook takes mem_lock_ alone and
// only writes eventfds).  work_lock_ is never held with another lock.  The
// per-address table's spinlock (conn_limits.h) is innermost: nothing is
// taken while it is held; the memory budget has no lock (compare-and-swap).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <list>
#include <thread>
#include <vector>

#include "conn_limits.h"
#include "internal.h"
#include "kcont/error_text.h"
#include "kcont/nfsd/transport.h"
#include "listen.h"

namespace kc::nfs {

namespace {

struct tconn;

int64_t mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct tslot {
  tconn *conn = nullptr;
  uint8_t *buf = nullptr;  // the request record
  uint8_t *rep = nullptr;  // its reply
  size_t len = 0;
  size_t rep_len = 0, sent = 0;  // queued reply: bytes in rep, bytes sent
  int64_t ready_ms = 0;          // when the queued reply was ready
  size_t charged = 0;            // request buffer bytes beyond SLOT_KEEP charged to the budget
  size_t rep_charged = 0;        // reply buffer bytes beyond SLOT_KEEP charged
  bool rep_big = false;          // a reply touched the reply buffer beyond SLOT_KEEP
  tslot *next = nullptr;         // send queue
};

struct tconn {
  int fd = -1;    // -1 once the reader closed it
  int wake = -1;  // eventfd: a worker queued a reply or freed a slot
  uint8_t port = PORT_NFS;
  sockaddr_storage peer{};
  std::thread reader;
  std::mutex lock;
  std::vector<tslot> slots;
  std::vector<tslot *> free_slots;
  tslot *sq_head = nullptr, *sq_tail = nullptr;  // replies the socket has not taken
  uint32_t in_flight = 0;       // slots with a request (queued, running or being sent)
  bool reader_waiting = false;  // the reader sleeps in poll: write `wake`
  bool broken = false;          // no more sending: drop replies
  // Nothing being read, in flight or to send: true from the accept on (a
  // connection whose reader has not run yet can be evicted like any idle one).
  std::atomic<bool> quiet{true};
  std::atomic<bool> counted{true};  // still counted in its port's table
  std::atomic<bool> done{false};    // the reader has finished
  std::atomic<int64_t> last_active_ms{0};
  bool big = false;          // some slot may hold a charge (under lock)
  bool mem_waiting = false;  // the reader waits for memory (reader's; in mem_waiters_)
  void *mem = nullptr;
  size_t mem_len = 0;
};

void wake_reader(tconn *c);

// The reader thread's own state between passes (only its thread touches
// it): the record being reassembled into `cur`, whether reading ended, when
// the record began, and the timeout that closed the connection.
struct reader_state {
  record_reader rd;
  tslot *cur = nullptr;
  bool eof = false;
  int64_t rec_start = 0;
  std::atomic<uint64_t> *why = nullptr;
};
struct reader_plan;

// A quiet connection gives back what its slots hold beyond SLOT_KEEP after
// this long (sooner while somebody waits for memory).
constexpr int64_t TRIM_AFTER_MS = 1000;

class threads_transport final : public transport {
 public:
  threads_transport(server &s, const transport_config &c)
      : srv_(s),
        cfg_(c),
        gate_(c.max_conns + c.max_mount_conns, c.max_conns_per_peer, mem_,
              size_t(c.slots) * 2 * SLOT_KEEP, counters_) {}
  ~threads_transport() override {
    stop();
    if (abandoned_) {  // workers are stuck in the kernel: leave it all to the exit
      for (auto &t : workers_) t.detach();
      std::lock_guard<std::mutex> g(conns_lock_);
      for (auto &c : conns_) {
        if (c->reader.joinable()) c->reader.detach();
        (void)c.release();
      }
    }
  }

  int start(std::string *err) override {
    if (!mem_.configure(cfg_.max_memory, size_t(cfg_.slots) * 2 * SLOT_KEEP, srv_.cfg.max_record,
                        cfg_.max_conns + cfg_.max_mount_conns, err))
      return EINVAL;
    mem_.set_wake([this] {
      std::lock_guard<std::mutex> g(mem_lock_);
      for (tconn *c : mem_waiters_) wake_reader(c);
    });
    for (int i = 0; i < 2; i++) {
      const sockaddr_storage &a = i == 0 ? cfg_.nfs_addr : cfg_.mount_addr;
      int fd = listen_socket(a, cfg_.addr_len, false, i == 0 ? "NFS" : "MOUNT", err);
      if (fd < 0) {
        stop();
        return EADDRINUSE;
      }
      listen_fds_.push_back(fd);
    }
    for (uint32_t i = 0; i < cfg_.threads; i++) workers_.emplace_back([this] { worker(); });
    for (size_t i = 0; i < listen_fds_.size(); i++)
      acceptors_.emplace_back([this, i] { acceptor(listen_fds_[i], uint8_t(i)); });
    return 0;
  }

  uint32_t stop() override;

  transport_stats stats() override {
    transport_stats s;
    fill_transport_stats(counters_, mem_, &s);
    return s;
  }

  std::string describe() override {
    return "threads model, " + std::to_string(cfg_.threads) + " workers: " + counters_.describe() +
           "; " + mem_.describe();
  }

 private:
  void acceptor(int lfd, uint8_t port);
  bool make_room(uint8_t port, const sockaddr_storage *for_peer);
  void reap(bool all);
  void reader(tconn *c);
  reader_plan plan_pass(tconn *c, reader_state &st);
  int wait_pass(tconn *c, const reader_plan &plan, short *revents);
  void time_out(tconn *c, reader_state &st);
  void receive(tconn *c, reader_state &st);
  void close_conn(tconn *c, const reader_state &st);
  void worker();
  bool flush(tconn *c);
  void release(tconn *c, tslot *s);
  void reset(tconn *c);
  void trim_slot(tslot *s);
  bool charge_record(tconn *c, tslot *cur, size_t need);
  void stop_mem_wait(tconn *c);

  server &srv_;
  transport_config cfg_;
  conn_counters counters_;
  memory_budget mem_;
  conn_gate gate_;
  // Connections whose readers wait for memory; the budget's wake-up hook
  // wakes them.  Taken after a connection's lock, never before.
  std::mutex mem_lock_;
  std::vector<tconn *> mem_waiters_;
  std::vector<int> listen_fds_;
  std::vector<std::thread> acceptors_, workers_;
  std::mutex conns_lock_;
  std::list<std::unique_ptr<tconn>> conns_;
  std::mutex work_lock_;
  std::condition_variable work_cv_;
  std::deque<tslot *> work_;
  bool stopping_ = false;
  std::atomic<bool> stopped_{false};
  std::atomic<uint64_t> accept_errors_{0};  // accept4 failures retried
  bool abandoned_ = false;
  uint32_t cut_short_ = 0;
};

void wake_reader(tconn *c) {
  uint64_t one = 1;
  if (c->wake >= 0) (void)!write(c->wake, &one, sizeof one);
}

// Gives back what a slot touched beyond SLOT_KEEP, and its charges.  The
// slot is not in use.
void threads_transport::trim_slot(tslot *s) {
  if (s->charged) madvise(s->buf + SLOT_KEEP, s->charged, MADV_DONTNEED);
  if (s->rep_charged) madvise(s->rep + SLOT_KEEP, s->rep_charged, MADV_DONTNEED);
  mem_.uncharge(s->charged + s->rep_charged);
  s->charged = s->rep_charged = 0;
  s->rep_big = false;
}

// The record being read into cur announces `need` bytes beyond SLOT_KEEP:
// charges what the slot lacks, or makes the reader wait for memory (its
// socket unread) and gives back what the idle slots hold.  c->lock held.
bool threads_transport::charge_record(tconn *c, tslot *cur, size_t need) {
  size_t more = need - cur->charged;
  bool charged = !c->mem_waiting && mem_.charge(more);  // the usual case
  if (!charged) {
    if (!c->mem_waiting) {  // listed before the budget sees the waiter
      std::lock_guard<std::mutex> g(mem_lock_);
      mem_waiters_.push_back(c);
    }
    charged = mem_.wait_for(more, &c->mem_waiting);
    if (charged) {
      std::lock_guard<std::mutex> g(mem_lock_);
      std::erase(mem_waiters_, c);
    }
  }
  if (charged) {
    cur->charged = need;
    c->big = true;
    return true;
  }
  for (tslot *s : c->free_slots) trim_slot(s);
  return false;
}

// The reader no longer waits for memory.  c->lock held.
void threads_transport::stop_mem_wait(tconn *c) {
  if (!c->mem_waiting) return;
  mem_.stop_waiting(&c->mem_waiting);
  std::lock_guard<std::mutex> g(mem_lock_);
  std::erase(mem_waiters_, c);
}

// Resets the connection: nothing more is sent, the peer sees a reset, and
// the reader's poll returns.  c->lock held.
void threads_transport::reset(tconn *c) {
  c->broken = true;
  if (c->fd >= 0) {
    linger lg{1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    shutdown(c->fd, SHUT_RDWR);
  }
}

// A slot's request is over (its reply sent or dropped).  c->lock held.
void threads_transport::release(tconn *c, tslot *s) {
  s->rep_len = s->sent = 0;
  if ((s->charged || s->rep_charged) && mem_.pressed()) trim_slot(s);
  c->free_slots.push_back(s);
  c->in_flight--;
  if (c->reader_waiting) wake_reader(c);
}

// Sends queued replies until the socket takes no more.  False if the
// connection failed (its queue is then dropped).  c->lock held.
bool threads_transport::flush(tconn *c) {
  while (tslot *s = c->sq_head) {
    if (!c->broken && c->fd >= 0) {
      ssize_t n = send(c->fd, s->rep + s->sent, s->rep_len - s->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
      if (n > 0) {
        s->sent += size_t(n);
        c->last_active_ms.store(mono_ms(), std::memory_order_relaxed);
        if (s->sent < s->rep_len) continue;
      } else {
        reset(c);
      }
    }
    c->sq_head = s->next;
    if (!c->sq_head) c->sq_tail = nullptr;
    release(c, s);
  }
  return !c->broken;
}

// Closes an idle connection to make room for a new one: of `port` in a
// full table (for_peer == nullptr), or of for_peer on either port within
// its share.  The victim is eviction_pick's.  A pick with bytes waiting in
// its socket is about to be busy: it is marked so (its reader recomputes
// `quiet` when it has read them) and the next pick is tried.  False if none
// is idle.  conns_lock_ held; takes the victim's lock.
bool threads_transport::make_room(uint8_t port, const sockaddr_storage *for_peer) {
  for (;;) {
    eviction_pick pick(gate_, for_peer);
    const int64_t now = mono_ms();
    tconn *oldest = nullptr;
    for (auto &c : conns_) {
      if ((!for_peer && c->port != port) || !c->quiet.load() || !c->counted.load() ||
          c->done.load())
        continue;
      const int64_t idle_for = now - c->last_active_ms.load();
      if (pick.offer(c->peer, uint64_t(std::max<int64_t>(idle_for, 0)))) oldest = c.get();
    }
    if (!oldest) return false;
    std::lock_guard<std::mutex> g(oldest->lock);
    // The reader clears `quiet` before it receives: if the peek finds the
    // socket empty because the reader took the bytes, `quiet` shows it.
    char byte;
    if ((oldest->fd >= 0 && recv(oldest->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0) ||
        !oldest->quiet.load()) {
      oldest->quiet.store(false);
      continue;
    }
    if (!oldest->counted.exchange(false)) return false;
    counters_.open[oldest->port].fetch_sub(1);
    counters_.evicted.fetch_add(1, std::memory_order_relaxed);
    reset(oldest);
    return true;
  }
}

void threads_transport::acceptor(int lfd, uint8_t port) {
  const uint32_t limit = port == PORT_NFS ? cfg_.max_conns : cfg_.max_mount_conns;
  for (;;) {
    sockaddr_storage peer;
    socklen_t len = sizeof peer;
    int fd = accept4(lfd, reinterpret_cast<sockaddr *>(&peer), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopped_.load()) return;  // shut down (the listener was shut)
      const int e = errno;
      if (e == EINTR || e == ECONNABORTED) continue;
      // Anything else is the kernel's word on one connection or a passing
      // shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM; EPROTO, ENETDOWN,
      // EPERM, ... which accept(2) says to retry): never the end of the
      // acceptor.  A pause, and a line every hundred (about one a second).
      if (accept_errors_++ % 100 == 0)
        std::fprintf(stderr, "kcont-nfsd: accept on the %s port: %s (retrying)\n",
                     port == PORT_NFS ? "NFS" : "MOUNT", kc::error_text(e));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    reap(false);
    const admission a = gate_.admit(peer);
    if (a == admission::no_memory) {  // counted there
      close(fd);
      continue;
    }
    std::lock_guard<std::mutex> g(conns_lock_);
    if (a == admission::at_share) {
      // Room within the address's share, or the refusal.
      if (stopped_ || !make_room(port, &peer)) {
        gate_.refuse_at_share(peer);
        close(fd);
        continue;
      }
      if (!gate_.admit_replacing(peer)) {  // counted there
        close(fd);
        continue;
      }
    }
    if (stopped_ || (counters_.open[port].load() >= limit && !make_room(port, nullptr))) {
      counters_.refused_full.fetch_add(1, std::memory_order_relaxed);
      gate_.release(peer);
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<tconn>();
    c->fd = fd;
    c->port = port;
    c->peer = peer;
    c->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    size_t per_slot = srv_.cfg.max_record + THREADS_REPLY_BUFFER;
    c->mem_len = size_t(cfg_.slots) * per_slot;
    c->mem = mmap(nullptr, c->mem_len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (c->mem == MAP_FAILED || c->wake < 0) {
      if (c->mem != MAP_FAILED) munmap(c->mem, c->mem_len);
      if (c->wake >= 0) close(c->wake);
      counters_.refused_full.fetch_add(1, std::memory_order_relaxed);
      gate_.release(peer);
      close(fd);
      continue;
    }
    c->slots.resize(cfg_.slots);
    for (uint32_t i = 0; i < cfg_.slots; i++) {
      tslot &s = c->slots[i];
      s.conn = c.get();
      s.buf = static_cast<uint8_t *>(c->mem) + size_t(i) * per_slot;
      s.rep = s.buf + srv_.cfg.max_record;
      c->free_slots.push_back(&s);
    }
    c->last_active_ms = mono_ms();
    counters_.open[port].fetch_add(1);
    counters_.accepted.fetch_add(1, std::memory_order_relaxed);
    srv_.stats.connections.fetch_add(1, std::memory_order_relaxed);
    tconn *raw = c.get();
    c->reader = std::thread([this, raw] { reader(raw); });
    conns_.push_back(std::move(c));
  }
}

// Joins finished readers (all of them with `all`) and frees them.
void threads_transport::reap(bool all) {
  std::list<std::unique_ptr<tconn>> dead;
  {
    std::lock_guard<std::mutex> g(conns_lock_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (all || (*it)->done) {
        dead.push_back(std::move(*it));
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto &c : dead) c->reader.join();
}

// ---- the reader: one pass is plan (under c->lock), wait (no lock),
// deadline, receive (no lock but for the hand-off), until close ----------

// What one pass of the reader decided under c->lock: what to poll for and
// until when.
struct reader_plan {
  short events = 0;       // POLLIN and/or POLLOUT on the socket
  int64_t deadline = -1;  // ms: the nearest timeout (-1: none)
  int64_t trim_at = -1;   // ms: give back what the slots hold (-1: never)
  bool finished = false;  // no more reading and nothing in flight: close
};

// Step 1, c->lock held: sends what the socket takes, takes a free slot for
// the next record and charges what it announces, stamps `quiet`, trims a
// quiet connection's memory, and computes what to wait for.
reader_plan threads_transport::plan_pass(tconn *c, reader_state &st) {
  reader_plan plan;
  auto nearest = [&](int64_t t) {
    if (plan.deadline < 0 || t < plan.deadline) plan.deadline = t;
  };
  if (!flush(c)) st.eof = true;
  if (st.eof) stop_mem_wait(c);
  if (st.eof && c->in_flight == 0) {
    plan.finished = true;
    return plan;
  }
  if (!st.cur && !st.eof && !c->free_slots.empty()) {
    st.cur = c->free_slots.back();
    c->free_slots.pop_back();
    st.rd.begin(st.cur->buf, srv_.cfg.max_record);
  }
  size_t need = st.cur ? beyond_keep(st.rd.announced()) : 0;
  bool was_waiting = c->mem_waiting;
  bool room = !st.cur || need <= st.cur->charged || charge_record(c, st.cur, need);
  // Waiting for memory is not the client's slowness: the record's clock
  // stops meanwhile and restarts when it is charged.
  if (was_waiting && room) st.rec_start = mono_ms();
  if (st.cur && !st.eof && room) plan.events |= POLLIN;
  if (c->sq_head) {
    plan.events |= POLLOUT;
    if (cfg_.record_timeout_ms) nearest(c->sq_head->ready_ms + cfg_.record_timeout_ms);
  }
  bool mid = st.cur && !st.rd.idle();
  if (mid && cfg_.record_timeout_ms && !c->mem_waiting)
    nearest(st.rec_start + cfg_.record_timeout_ms);
  bool quiet = !st.eof && !mid && c->in_flight == 0;
  c->quiet.store(quiet);
  int64_t last = c->last_active_ms.load(std::memory_order_relaxed);
  if (quiet && cfg_.idle_timeout_ms) nearest(last + cfg_.idle_timeout_ms);
  if (quiet && c->big) {
    plan.trim_at = mem_.pressed() ? 0 : last + TRIM_AFTER_MS;
    if (mono_ms() >= plan.trim_at) {  // no slot is in use
      for (auto &s : c->slots) trim_slot(&s);
      c->big = false;
      plan.trim_at = -1;
    }
  }
  c->reader_waiting = true;
  return plan;
}

// Step 2, no lock held: polls the socket (only with interest in it: a
// hung-up socket would report POLLHUP at once, again and again) and the
// wake-up eventfd until the plan's nearest time.  Returns poll's result;
// the socket's revents in *revents.
int threads_transport::wait_pass(tconn *c, const reader_plan &plan, short *revents) {
  pollfd p[2] = {{plan.events ? c->fd : -1, plan.events, 0}, {c->wake, POLLIN, 0}};
  int64_t now = mono_ms(), wake_at = plan.deadline;
  if (plan.trim_at >= 0 && (wake_at < 0 || plan.trim_at < wake_at)) wake_at = plan.trim_at;
  int timeout = wake_at < 0 ? -1 : int(std::max<int64_t>(0, wake_at - now));
  int r = poll(p, 2, timeout);
  {
    std::lock_guard<std::mutex> g(c->lock);
    c->reader_waiting = false;
  }
  if (p[1].revents & POLLIN) {
    uint64_t v;
    (void)!read(c->wake, &v, sizeof v);
  }
  *revents = p[0].revents;
  return r;
}

// Step 3, takes c->lock: the plan's deadline passed with nothing to do --
// the connection is reset and counted as stalled (a record or reply
// incomplete) or idle.
void threads_transport::time_out(tconn *c, reader_state &st) {
  std::lock_guard<std::mutex> g(c->lock);
  bool mid = st.cur && !st.rd.idle();
  st.why = (mid || c->sq_head) ? &counters_.closed_stalled : &counters_.closed_idle;
  reset(c);
  st.eof = true;
}

// Step 4, no lock held but for the hand-off: reads what the record wants;
// a complete record goes to the work queue (counted in flight first).
void threads_transport::receive(tconn *c, reader_state &st) {
  size_t want;
  uint8_t *dst = st.rd.want(&want);
  bool was_idle = st.rd.idle();
  c->quiet.store(false);  // bytes coming: not idle (make_room relies on it)
  ssize_t n = recv(c->fd, dst, want, MSG_DONTWAIT);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    st.eof = true;
    return;
  }
  int64_t t = mono_ms();
  c->last_active_ms.store(t, std::memory_order_relaxed);
  if (was_idle) st.rec_start = t;
  auto res = st.rd.commit(size_t(n));
  if (res == record_reader::too_big || res == record_reader::bad_fragment) {
    srv_.stats.bad_records.fetch_add(1, std::memory_order_relaxed);
    st.eof = true;
    return;
  }
  if (res != record_reader::record) return;
  st.cur->len = st.rd.length();
  {
    std::lock_guard<std::mutex> g(c->lock);
    c->in_flight++;
  }
  {
    std::lock_guard<std::mutex> g(work_lock_);
    work_.push_back(st.cur);
  }
  work_cv_.notify_one();
  st.cur = nullptr;
}

// Step 5: every request of the connection is over: close it and give the
// memory back now.
void threads_transport::close_conn(tconn *c, const reader_state &st) {
  if (st.why) st.why->fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> g(c->lock);
    stop_mem_wait(c);  // before the eventfd goes
    for (auto &s : c->slots) mem_.uncharge(s.charged + s.rep_charged);
    close(c->fd);
    c->fd = -1;
    close(c->wake);
    c->wake = -1;
  }
  munmap(c->mem, c->mem_len);
  if (c->counted.exchange(false)) counters_.open[c->port].fetch_sub(1);
  gate_.release(c->peer);
  c->done = true;
}

// The reader thread of c: plan, wait, then a deadline or bytes, until the
// plan says the connection is finished.
void threads_transport::reader(tconn *c) {
  reader_state st;
  for (;;) {
    reader_plan plan;
    {
      std::lock_guard<std::mutex> g(c->lock);
      plan = plan_pass(c, st);
    }
    if (plan.finished) break;
    short revents = 0;
    int r = wait_pass(c, plan, &revents);
    if (r < 0 && errno != EINTR) break;
    if (r == 0 && plan.deadline >= 0 && mono_ms() >= plan.deadline) {
      time_out(c, st);
      continue;
    }
    if (!(revents & (POLLIN | POLLHUP | POLLERR)) || !st.cur || st.eof) continue;
    receive(c, st);
  }
  close_conn(c, st);
}

void threads_transport::worker() {
  for (;;) {
    tslot *s;
    {
      std::unique_lock<std::mutex> g(work_lock_);
      work_cv_.wait(g, [this] { return stopping_ || !work_.empty(); });
      if (work_.empty()) return;
      s = work_.front();
      work_.pop_front();
    }
    tconn *c = s->conn;
    request req;
    req.rec = s->buf;
    req.len = s->len;
    req.peer = c->peer;
    req.arrived = vfs::vfs_arrival();  // later than the record's arrival: still correct
    // READ data is built in the reply buffer: what it may touch beyond
    // SLOT_KEEP is charged first, or the reply is built in SLOT_KEEP (a
    // short READ, fewer directory entries).
    constexpr size_t REPLY_EXTRA = THREADS_REPLY_BUFFER - SLOT_KEEP;
    bool room = s->rep_charged || mem_.charge(REPLY_EXTRA);
    if (room)
      s->rep_charged = REPLY_EXTRA;
    else
      mem_.count_limited_reply();
    req.out = xdr_out(s->rep, room ? THREADS_REPLY_BUFFER : SLOT_KEEP);
    serve_result r = serve_call(srv_, req);
    if (req.out.size() > SLOT_KEEP) {
      s->rep_big = true;  // charged until the connection trims it
    } else if (room && !s->rep_big) {
      mem_.uncharge(REPLY_EXTRA);
      s->rep_charged = 0;
    }
    std::lock_guard<std::mutex> g(c->lock);
    if (s->rep_big) c->big = true;
    if (r == serve_result::close) reset(c);
    if (r != serve_result::reply || c->broken) {
      release(c, s);
      continue;
    }
    // Queue the reply behind any other, and send what the socket takes now;
    // the reader sends the rest when the socket is writable.
    s->rep_len = req.out.size();
    s->sent = 0;
    s->ready_ms = mono_ms();
    s->next = nullptr;
    bool was_empty = !c->sq_head;
    if (c->sq_tail)
      c->sq_tail->next = s;
    else
      c->sq_head = s;
    c->sq_tail = s;
    if (was_empty) flush(c);
    if (c->sq_head) wake_reader(c);  // it must poll for POLLOUT
  }
}

uint32_t threads_transport::stop() {
  if (stopped_.exchange(true)) return cut_short_;
  for (int fd : listen_fds_) shutdown(fd, SHUT_RDWR);
  for (auto &t : acceptors_) t.join();
  for (int fd : listen_fds_) close(fd);
  // Readers stop taking requests; in-flight ones finish and their replies
  // go out (the reader waits for them before it closes its socket).
  auto for_each_conn = [this](auto fn) {
    std::lock_guard<std::mutex> g(conns_lock_);
    for (auto &c : conns_) {
      std::lock_guard<std::mutex> cg(c->lock);
      if (c->fd >= 0) fn(c.get());
    }
  };
  for_each_conn([](tconn *c) { shutdown(c->fd, SHUT_RD); });
  auto wait_done = [this](uint32_t ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    for (;;) {
      uint32_t running = 0;
      {
        std::lock_guard<std::mutex> g(conns_lock_);
        for (auto &c : conns_) {
          if (c->done) continue;
          std::lock_guard<std::mutex> cg(c->lock);
          running += std::max<uint32_t>(1, c->in_flight);
        }
      }
      if (running == 0 || std::chrono::steady_clock::now() > deadline) return running;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  if (wait_done(cfg_.grace_ms) > 0) {
    // Grace is over: reset what is left (a reply its client does not read
    // is dropped); what still runs after that is stuck in the kernel.
    for_each_conn([this](tconn *c) { reset(c); });
    if (uint32_t stuck = wait_done(1000)) {
      cut_short_ = stuck;
      abandoned_ = true;
      return cut_short_;
    }
  }
  reap(true);
  {
    std::lock_guard<std::mutex> g(work_lock_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto &t : workers_) t.join();
  workers_.clear();
  return 0;
}

}  // namespace

std::unique_ptr<transport> make_threads_transport(server &srv, const transport_config &cfg) {
  return std::make_unique<threads_transport>(srv, cfg);
}

}  // namespace kc::nfs
