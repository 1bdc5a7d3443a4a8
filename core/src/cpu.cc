// SPDX-License-Identifier: BSD-2-Clause
// cpu.cc -- dispatchers, workers, inboxes, doorbells, masks, start/stop.
//
// Model: each CPU is one dispatcher thread that owns an io_uring ring and a
// FIFO queue per {level, interrupt}.  Its loop is
//
//   1. reap completions: each CQE's user_data is a kc::completion whose
//      handler runs in hard-interrupt context {completion::lvl, interrupt};
//   2. move what other threads sent through the inbox onto local queues;
//   3. run pending queues of unmasked levels, highest dispatch slot (rank)
//      first, re-checking for completions and inbox work every 64 calls;
//   4. push the batches of deferrals it staged for other CPUs (xfer,
//      internal.h; also every 64 calls inside step 3), flush submissions;
//      and only when nothing unmasked is pending, sleep in
//      io_uring_submit_and_wait() until a completion arrives.
//
// The doorbell is an eventfd with a read always armed on the ring.  A
// producer rings it only when its push made the inbox non-empty *and* the
// dispatcher has announced it is going to sleep (`sleeping`), which gives
// the usual Dekker pair: the dispatcher stores `sleeping` then re-reads the
// inbox; the producer pushes then reads `sleeping`, both seq_cst, so either
// the dispatcher sees the item or the producer sees it asleep.  No polling
// and no lost wake-ups.
//
// Each {level, thread} on a CPU has a worker thread, created by
// kcont_establish.  Workers consume their own inbox and sleep on a futex
// word with the same Dekker handshake.  They may block; they are not
// affected by spl masks (masks hold interrupt-kind dispatch only, as spl
// holds interrupts and not threads in a kernel).
//
// Masks: spl_block/splx change the CPU's held set; held levels stay queued
// and run as soon as a handler unmasks them.  Blocking one level never
// blocks another: masks are sets, and levels are never compared.
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <new>
#include <string>

#include "internal.h"
#include "kcont/error_text.h"

namespace kc {
namespace detail {

namespace {

void futex_wait(std::atomic<uint32_t> *w, uint32_t val) {
  syscall(SYS_futex, reinterpret_cast<uint32_t *>(w), FUTEX_WAIT_PRIVATE, val, nullptr, nullptr, 0);
}
void futex_wake(std::atomic<uint32_t> *w) {
  syscall(SYS_futex, reinterpret_cast<uint32_t *>(w), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

// CPU and worker records live for the whole process and are reused across
// kcont_start/kcont_stop, because executors are looked up by pointer.
cpu *g_cpu_store[max_cpus];
worker *g_worker_store[max_cpus][max_levels];

void ring_doorbell(cpu *c) {
  if (c->sleeping.load(std::memory_order_seq_cst) &&
      c->sleeping.exchange(false, std::memory_order_seq_cst)) {
    uint64_t one = 1;
    ssize_t r = write(c->efd, &one, sizeof one);
    (void)r;
    c->doorbells.fetch_add(1, std::memory_order_relaxed);
    sys().doorbells.fetch_add(1, std::memory_order_relaxed);
  }
}

void wake_worker(worker *w) {
  if (w->sleeping.load(std::memory_order_seq_cst) &&
      w->sleeping.exchange(0, std::memory_order_seq_cst)) {
    futex_wake(&w->sleeping);
    sys().doorbells.fetch_add(1, std::memory_order_relaxed);
  }
}

// Links the continuations of batch x in order and hands x back to its
// producer.  Returns how many there were.
uint32_t xfer_unpack(cpu *c, xfer *x) {
  const uint32_t n = x->n;
  constexpr uint32_t ahead = 8;
  for (uint32_t i = 0; i < n && i < ahead; i++) __builtin_prefetch(x->items[i], 1);
  for (uint32_t i = 0; i < n; i++) {
    if (i + ahead < n) __builtin_prefetch(x->items[i + ahead], 1);
    local_link(c, x->items[i]);
  }
  x->busy.store(0, std::memory_order_release);  // x is the producer's again
  return n;
}

void drain_inbox(cpu *c) {
  KC_ASSERT(on_dispatcher_of(c), "a CPU's inbox is drained by its dispatcher alone");
  kcont *l = c->in.take_fifo();
  uint64_t n = 0;
  while (l) {
    kcont *k = l;
    l = l->next;
    if (k->fn == xfer_marker) {
      n += xfer_unpack(c, reinterpret_cast<xfer *>(k));  // hdr is xfer's first member
      continue;
    }
    local_link(c, k);
    n++;
  }
  if (n) bump(c->inbox_items, n);
}

void xfer_publish(cpu *p, int d) {
  xfer *x = p->open[d];
  p->open[d] = nullptr;
  p->open_mask &= ~(uint64_t(1) << d);
  cpu *to = g_cpu_store[d];  // records live for the process: safe while it stops
  if (to->in.push(&x->hdr)) ring_doorbell(to);
}

struct reaped {
  completion *comp;
  int res;
  uint32_t flags;
};

// Returns the number of completions handled.
unsigned reap(cpu *c) {
  reaped batch[64];
  unsigned n = 0, head;
  io_uring_cqe *cqe;
  io_uring_for_each_cqe(&c->ring, head, cqe) {
    batch[n++] = {static_cast<completion *>(io_uring_cqe_get_data(cqe)), cqe->res, cqe->flags};
    if (n == 64) break;
  }
  if (n == 0) return 0;
  io_uring_cq_advance(&c->ring, n);
  executor &ex = c->ex;
  for (unsigned i = 0; i < n; i++) {
    completion *comp = batch[i].comp;
    if (!comp || !comp->fn) continue;
    ex.in_context = true;
    ex.cur_level = comp->lvl;
    ex.cur_kind = kind::interrupt;
    comp->fn(comp, batch[i].res, batch[i].flags);
    ex.in_context = false;
  }
  return n;
}

// Records the sampled queued -> dispatched latency of q (cold).
__attribute__((noinline, cold)) void record_latency(qstats &st, local_queue &q) {
  const uint64_t ns = now_ns() - q.stamp;
  q.stamp = 0;
  raise_max(st.max_latency_ns, ns);
  bump(st.latency_sum_ns, ns);
  int b = ns < 256 ? 0 : (63 - __builtin_clzll(ns)) - 7;
  if (b >= level_stats::latency_buckets) b = level_stats::latency_buckets - 1;
  bump(st.latency_hist[b]);
}

// Adaptive spin (config::spin_ns): polls for work before the dispatcher
// sleeps.  While it spins `sleeping` stays false, so producers send no
// doorbell.  True when work arrived (the caller loops instead of sleeping).
bool spin_for_work(cpu *c, uint64_t spin_ns) {
  bump(c->spins);
  const uint64_t end = now_ns() + spin_ns;
  for (unsigned i = 0;; i++) {
    if (!c->in.empty() || io_uring_cq_ready(&c->ring) || c->stop.load(std::memory_order_relaxed)) {
      bump(c->spin_hits);
      return true;
    }
    if ((i & 63) == 63 && now_ns() >= end) return false;
    cpu_relax();
  }
}

// Runs pending queues of unmasked levels, highest slot first.  A batch
// stays on one queue while that queue is still the highest ready one, so
// the per-level context is set once per batch, not once per call; after
// every call it re-checks, so a higher level made pending (or this level
// masked) by the call is honoured at once.  Counters are published once
// per batch: run, cancelled, the links made since the last batch
// (deferred), the depth at the batch's start (max_depth) and, when the
// queue carries a stamp, the queued -> dispatched latency.
void run_soft(cpu *c) {
  KC_ASSERT(on_dispatcher_of(c), "a CPU's run queues run on its dispatcher alone");
  executor &ex = c->ex;
  unsigned budget = 64;
  for (;;) {
    const uint32_t ready = c->pending & ~c->spl_slots;
    if (!ready) return;
    const int slot = 31 - __builtin_clz(ready);
    local_queue &q = c->queues[slot];
    const uint8_t lid = sys().slot_to_level[slot];
    qstats &st = c->stats[lid][0];
    if (__builtin_expect(q.stamp != 0, 0)) record_latency(st, q);
    raise_max(st.max_depth, q.linked - q.popped);
    ex.in_context = true;
    ex.cur_level = level{lid};
    ex.cur_kind = kind::interrupt;
    uint64_t ran = 0, popped = 0;
    for (;;) {
      kcont *kc = q.head;
      q.head = kc->next;
      if (!q.head) {
        q.tail = nullptr;
        c->pending &= ~(1u << slot);
      }
      popped++;
      ran += call_direct(&ex, kc);
      if (--budget == 0) break;
      // Still this slot, and nothing higher?  (Also false once masked.)
      if (((c->pending & ~c->spl_slots) >> slot) != 1u) break;
    }
    ex.in_context = false;
    q.popped += popped;
    bump(st.run, ran);
    if (popped != ran) bump(st.cancelled, popped - ran);
    st.deferred.store(q.linked, std::memory_order_relaxed);  // the queue's own count
    if (budget == 0) {
      xfer_flush(c);  // staged deferrals wait at most one batch
      if (io_uring_cq_ready(&c->ring) || !c->in.empty()) return;
      budget = 64;
    }
  }
}

// Arms the read on the doorbell eventfd (submitted with the next flush).
// False when the ring has no SQE even after a flush; the dispatcher then
// retries before it sleeps and never sleeps without it (see arm_all).
bool arm_doorbell(cpu *c) {
  io_uring_sqe *sqe = kcont_ring_sqe();
  if (!sqe) {
    c->unarmed |= ARM_DOORBELL;
    return false;
  }
  io_uring_prep_read(sqe, c->efd, &c->efd_buf, sizeof c->efd_buf, 0);
  io_uring_sqe_set_data(sqe, &c->doorbell_comp);
  c->unarmed &= ~ARM_DOORBELL;
  return true;
}

void doorbell_done(completion *comp, int, uint32_t) {
  arm_doorbell(
      reinterpret_cast<cpu *>(reinterpret_cast<char *>(comp) - offsetof(cpu, doorbell_comp)));
}

// Retries what found no SQE.  Returns true when everything is armed.  A
// dispatcher with something unarmed does not sleep: it keeps reaping (which
// is what frees a ring whose submissions are refused), counts each retry in
// arm_retries and says so once on stderr.
bool arm_all(cpu *c) {
  if (!c->unarmed) return true;
  if (c->unarmed & ARM_DOORBELL) arm_doorbell(c);
  if (c->unarmed & ARM_TIMER) callout_cpu_rearm(c);
  if (io_uring_sq_ready(&c->ring)) io_uring_submit(&c->ring);
  if (!c->unarmed) return true;
  if (c->arm_retries.fetch_add(1, std::memory_order_relaxed) == 0)
    std::fprintf(stderr,
                 "kcont: cpu%d: ring full, %s not armed; the dispatcher keeps reaping instead of "
                 "sleeping until it is\n",
                 c->id, (c->unarmed & ARM_DOORBELL) ? "doorbell" : "timer");
  return false;
}

void pin_to(int i) {
  long ncores = sysconf(_SC_NPROCESSORS_ONLN);
  if (ncores <= 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(i % ncores, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

std::string errstr(const char *what, int err) {
  std::string s = what;
  s += ": ";
  s += kc::error_text(err);
  if (err == EPERM || err == ENOSYS)
    s += " (io_uring is unavailable: check kernel.io_uring_disabled, seccomp "
         "or container policy; kcont needs io_uring)";
  return s;
}

void dispatcher_main(cpu *c, std::promise<std::string> *ready) {
  auto &s = sys();
  c->ex.c = c;
  c->ex.dispatcher = true;
  c->ex.owner_cpu = int16_t(c->id);
  set_thread_executor(&c->ex);
  if (s.cfg.pin) pin_to(c->id);
  {
    char name[16];
    std::snprintf(name, sizeof name, "kcont-cpu%d", c->id);
    pthread_setname_np(pthread_self(), name);
  }
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
  int r = io_uring_queue_init_params(s.cfg.ring_entries, &c->ring, &p);
  if (r == -EINVAL) {  // older kernel: no single-issuer / coop taskrun
    p = io_uring_params{};
    r = io_uring_queue_init_params(s.cfg.ring_entries, &c->ring, &p);
  }
  if (r < 0) {
    ready->set_value(errstr("io_uring_queue_init", -r));
    return;
  }
  c->ring_ok = true;
  c->efd = eventfd(0, EFD_CLOEXEC);
  if (c->efd < 0) {
    int e = errno;
    io_uring_queue_exit(&c->ring);
    c->ring_ok = false;
    ready->set_value(errstr("eventfd", e));
    return;
  }
  c->doorbell_comp.fn = doorbell_done;
  c->doorbell_comp.lvl = LVL_SERIAL;
  c->unarmed = 0;
  arm_doorbell(c);
  if (int e = callout_cpu_init(c); e != 0) {
    io_uring_queue_exit(&c->ring);
    close(c->efd);
    c->ring_ok = false;
    ready->set_value(errstr("callout init", e));
    return;
  }
  r = io_uring_submit(&c->ring);
  if (r < 0) {
    callout_cpu_fini(c);
    io_uring_queue_exit(&c->ring);
    close(c->efd);
    c->ring_ok = false;
    ready->set_value(errstr("io_uring_submit", -r));
    return;
  }
  ready->set_value(std::string());

  for (;;) {
    // One latency sample (queued -> dispatched) per 64 loops, per CPU.
    if ((c->loops.load(std::memory_order_relaxed) & 63) == 0) c->stamp_armed = true;
    bump(c->loops);
    reap(c);
    if (!c->in.empty()) drain_inbox(c);
    run_soft(c);
    xfer_flush(c);  // what reaping and running staged for other CPUs
    if (io_uring_sq_ready(&c->ring)) io_uring_submit(&c->ring);
    if (c->pending & ~c->spl_slots) continue;
    if (io_uring_cq_ready(&c->ring)) continue;
    if (c->stop.load(std::memory_order_acquire) && c->in.empty()) break;
    if (!arm_all(c)) {
      std::this_thread::yield();
      continue;
    }
    if (s.cfg.spin_ns && spin_for_work(c, s.cfg.spin_ns)) continue;
    c->sleeping.store(true, std::memory_order_seq_cst);
    if (!c->in.empty() || io_uring_cq_ready(&c->ring) || c->stop.load(std::memory_order_seq_cst)) {
      c->sleeping.store(false, std::memory_order_relaxed);
      continue;
    }
    bump(c->sleeps);
    io_uring_submit_and_wait(&c->ring, 1);
    c->sleeping.store(false, std::memory_order_relaxed);
  }
  callout_cpu_fini(c);
  io_uring_queue_exit(&c->ring);
  c->ring_ok = false;
  // The doorbell eventfd stays open: kcont_stop may still be ringing it.
  // kcont_stop closes it after joining this thread.
  set_thread_executor(nullptr);
}

void worker_main(worker *w) {
  w->ex.c = w->c;
  w->ex.dispatcher = false;
  set_thread_executor(&w->ex);
  if (sys().cfg.pin) pin_to(w->c->id);
  {
    char name[16];
    std::snprintf(name, sizeof name, "kc%d-%.10s", w->c->id, kcont_level_name(w->lvl));
    pthread_setname_np(pthread_self(), name);
  }
  const uint8_t lid = w->lvl.id;
  qstats &st = w->c->stats[lid][1];
  for (;;) {
    bump(w->loops);
    kcont *l = w->in.take_fifo();
    if (l) {
      uint64_t n = 0, ran = 0;
      for (kcont *k = l; k; k = k->next) n++;
      bump(st.deferred, n);
      raise_max(st.max_depth, n);
      w->ex.in_context = true;
      w->ex.cur_level = w->lvl;
      w->ex.cur_kind = kind::thread;
      while (l) {
        kcont *kc = l;
        l = l->next;
        ran += call_direct(&w->ex, kc);
      }
      w->ex.in_context = false;
      bump(st.run, ran);
      if (ran != n) bump(st.cancelled, n - ran);
      continue;
    }
    if (w->stop.load(std::memory_order_acquire)) break;
    w->sleeping.store(1, std::memory_order_seq_cst);
    if (!w->in.empty() || w->stop.load(std::memory_order_seq_cst)) {
      w->sleeping.store(0, std::memory_order_relaxed);
      continue;
    }
    bump(w->sleeps);
    futex_wait(&w->sleeping, 1);
    w->sleeping.store(0, std::memory_order_relaxed);
  }
  set_thread_executor(nullptr);
}

void reset_cpu(cpu *c, int id) {
  c->id = id;
  for (auto &q : c->queues) q = local_queue{};
  c->pending = 0;
  c->spl_slots = 0;
  c->in.head.store(nullptr);
  c->sleeping.store(false);
  c->stop.store(false);
  for (auto &w : c->workers) w.store(nullptr);
  for (auto &row : c->stats)
    for (auto &q : row)
      for (auto *a : {&q.deferred, &q.run, &q.direct, &q.coalesced, &q.cancelled, &q.max_depth,
                      &q.max_latency_ns, &q.latency_sum_ns})
        a->store(0);
  for (auto &row : c->stats)
    for (auto &q : row)
      for (auto &h : q.latency_hist) h.store(0);
  for (auto *a : {&c->loops, &c->sleeps, &c->doorbells, &c->inbox_items, &c->arm_retries, &c->spins,
                  &c->spin_hits})
    a->store(0);
  c->unarmed = 0;
  // Batches left on an inbox at the last stop were dropped with it.
  c->open_mask = 0;
  for (auto &o : c->open) o = nullptr;
  for (auto &row : c->xfers)
    for (auto &x : row) x.busy.store(0);
}

// Tells a dispatcher to finish, wakes it, joins it, and closes its doorbell
// (only now: a late producer may still ring it until the thread is gone).
void stop_dispatcher(cpu *c) {
  c->stop.store(true, std::memory_order_seq_cst);
  uint64_t one = 1;
  ssize_t r = write(c->efd, &one, sizeof one);
  (void)r;
  c->th.join();
  close(c->efd);
  c->efd = -1;
}

bool system_idle() {
  auto &s = sys();
  for (int i = 0; i < s.ncpus; i++) {
    cpu *c = s.cpus[i];
    if (!c->in.empty() || !c->sleeping.load()) return false;
    for (auto &wp : c->workers) {
      worker *w = wp.load();
      if (w && (!w->in.empty() || !w->sleeping.load())) return false;
    }
  }
  return true;
}

}  // namespace

void take_stamp(cpu *c, local_queue &q) {
  q.stamp = now_ns();
  c->stamp_armed = false;
}

cpu *cpu_record(int id) { return id >= 0 && id < max_cpus ? g_cpu_store[id] : nullptr; }

bool workers_ready(level l, int cpu_index) {
  auto &s = sys();
  if (!s.running.load(std::memory_order_acquire)) return false;
  int lo = cpu_index == KC_CPU_ANY ? 0 : cpu_index;
  int hi = cpu_index == KC_CPU_ANY ? s.ncpus : cpu_index + 1;
  if (lo < 0 || hi > s.ncpus) return false;
  for (int i = lo; i < hi; i++)
    if (!s.cpus[i]->workers[l.id].load(std::memory_order_acquire)) return false;
  return true;
}

bool try_link(kcont *kc) {
  auto &s = sys();
  executor *ex = tl_exec;
  int c = kc->tgt.cpu;
  if (c == KC_CPU_ANY) {
    // Unbound: the caller's CPU -- unless it is running right now on
    // another kcont thread, whose CPU then takes it (non-reentrant, like a
    // Linux work item).  ran_on was stored before the running call's claim,
    // which our IDLE -> PENDING compare-and-swap read, so it is current.
    auto *r = static_cast<executor *>(kc->ran_on.load(rlx));
    if (__builtin_expect(r != ex && r != nullptr, 0) && r->c && !kc->tgt.immediate &&
        executor_runs(r, kc))
      c = r->c->id;
    else if (ex && ex->dispatcher && kc->tgt.k == kind::interrupt) {
      local_link(ex->c, kc);  // fast path: a dispatcher deferring to itself
      return true;
    } else
      c = home_cpu();
  } else if (ex && ex->dispatcher && kc->tgt.k == kind::interrupt && c == ex->c->id) {
    local_link(ex->c, kc);
    return true;
  }
  cpu *cp =
      (c >= 0 && c < s.ncpus && s.running.load(std::memory_order_relaxed)) ? s.cpus[c] : nullptr;
  if (!cp) return false;
  if (kc->tgt.k == kind::thread) {
    worker *w = cp->workers[kc->tgt.lvl.id].load(std::memory_order_acquire);
    if (!w) return false;
    if (w->in.push(kc)) wake_worker(w);
    return true;
  }
  if (ex && ex->dispatcher) {
    if (ex->c == cp) {
      local_link(cp, kc);
      return true;
    }
    if (xfer_stage(ex->c, cp, kc)) return true;
  }
  if (cp->in.push(kc)) ring_doorbell(cp);
  return true;
}

void xfer_marker(void *, void *, int) {}

bool xfer_stage(cpu *p, cpu *to, kcont *kc) {
  KC_ASSERT(on_dispatcher_of(p), "a cross-CPU batch is filled by its producer's dispatcher");
  const int d = to->id;
  xfer *x = p->open[d];
  KC_ASSERT(!x || x->n < xfer_cap, "an open cross-CPU batch is never full (published at xfer_cap)");
  if (!x) {
    for (auto &f : p->xfers[d])
      if (!f.busy.load(std::memory_order_acquire)) {
        x = &f;
        break;
      }
    if (!x) return false;
    x->busy.store(1, std::memory_order_relaxed);
    x->n = 0;
    p->open[d] = x;
    p->open_mask |= uint64_t(1) << d;
  }
  x->items[x->n++] = kc;
  if (x->n == xfer_cap) xfer_publish(p, d);
  return true;
}

void xfer_flush_all(cpu *p) {
  while (p->open_mask) xfer_publish(p, __builtin_ctzll(p->open_mask));
}

void set_idle_unlinked(kcont *kc) {
  kc->st.store(st_with(kc->st.load(rlx), ST_IDLE), std::memory_order_release);
  light_fence();
  if (g_drainers.load(rlx)) wake_drainers(kc);
}

}  // namespace detail

using namespace detail;

// ------------------------------------------------------------ ring API

io_uring_sqe *kcont_ring_sqe() {
  executor *ex = tl_exec;
  if (!ex || !ex->dispatcher) return nullptr;
  io_uring *r = &ex->c->ring;
  io_uring_sqe *sqe = io_uring_get_sqe(r);
  if (!sqe) {
    io_uring_submit(r);
    sqe = io_uring_get_sqe(r);
  }
  return sqe;
}

io_uring *kcont_ring() {
  executor *ex = tl_exec;
  return ex && ex->dispatcher ? &ex->c->ring : nullptr;
}

int kcont_ring_submit() {
  executor *ex = tl_exec;
  if (!ex || !ex->dispatcher) return -EPERM;
  return io_uring_submit(&ex->c->ring);
}

// ------------------------------------------------------------ masks

level_set spl_block(level_set set) {
  executor *ex = tl_exec;
  if (!ex || !ex->dispatcher) return level_set{};
  cpu *c = ex->c;
  level_set prev = levels_of_slots(c->spl_slots);
  c->spl_slots |= slots_of(set);
  return prev;
}

void splx(level_set saved) {
  executor *ex = tl_exec;
  if (!ex || !ex->dispatcher) return;
  ex->c->spl_slots = slots_of(saved);
}

level_set spl_current() {
  executor *ex = tl_exec;
  if (!ex || !ex->dispatcher) return level_set{};
  return levels_of_slots(ex->c->spl_slots);
}

// ------------------------------------------------------------ workers

int kcont_establish(level l, int cpu_index) {
  auto &s = sys();
  if (l.id >= kcont_level_count()) return EINVAL;
  if (kcont_in_interrupt()) return EDEADLK;
  std::lock_guard<std::mutex> g(s.admin);
  if (!s.running.load()) return ENXIO;
  if (cpu_index != KC_CPU_ANY && (cpu_index < 0 || cpu_index >= s.ncpus)) return EINVAL;
  int lo = cpu_index == KC_CPU_ANY ? 0 : cpu_index;
  int hi = cpu_index == KC_CPU_ANY ? s.ncpus : cpu_index + 1;
  for (int i = lo; i < hi; i++) {
    cpu *c = s.cpus[i];
    if (c->workers[l.id].load()) continue;
    worker *&w = g_worker_store[i][l.id];
    if (!w) {
      w = new (std::nothrow) worker;
      if (!w) return ENOMEM;
    }
    w->c = c;
    w->lvl = l;
    w->in.head.store(nullptr);
    w->sleeping.store(0);
    w->stop.store(false);
    w->loops.store(0);
    w->sleeps.store(0);
    try {
      w->th = std::thread(worker_main, w);
    } catch (const std::system_error &e) {
      return e.code().value() ? e.code().value() : EAGAIN;
    }
    c->workers[l.id].store(w, std::memory_order_release);
  }
  return 0;
}

// ------------------------------------------------------------ start/stop

int kcont_start(const config &cfg, std::string *err) {
  ensure_builtin_levels();
  fences_init();
  auto &s = sys();
  auto fail = [&](int e, const std::string &why) {
    if (err) *err = why;
    return e;
  };
  if (tl_exec && tl_exec->c) return fail(EDEADLK, "kcont_start called from a kcont thread");
  std::lock_guard<std::mutex> g(s.admin);
  if (s.running.load()) return fail(EBUSY, "kcont is already running");
  int n = cfg.cpus;
  if (n < 0 || n > max_cpus) return fail(EINVAL, "cpus must be between 0 and 64");
  if (n == 0) {
    long h = sysconf(_SC_NPROCESSORS_ONLN);
    n = h > 0 ? int(std::min<long>(h, max_cpus)) : 1;
  }
  if (cfg.ring_entries < 8 || cfg.ring_entries > 32768)
    return fail(EINVAL, "ring_entries must be between 8 and 32768");
  if (cfg.tick_ns < 10000) return fail(EINVAL, "tick_ns must be at least 10000");
  if (cfg.spin_ns > 10000000) return fail(EINVAL, "spin_ns must be at most 10000000 (10 ms)");
  assign_slots();
  s.cfg = cfg;
  s.ncpus = n;
  s.doorbells.store(0);
  // Defers issued by dispatchers during start-up (callout set-up) must link.
  s.running.store(true);
  std::string first_error;
  int started = 0;
  for (int i = 0; i < n; i++) {
    cpu *&c = g_cpu_store[i];
    if (!c) {
      c = new (std::nothrow) cpu;
      if (!c) {
        first_error = "out of memory";
        break;
      }
    }
    reset_cpu(c, i);
    s.cpus[i] = c;
    std::promise<std::string> ready;
    auto fut = ready.get_future();
    try {
      c->th = std::thread(dispatcher_main, c, &ready);
    } catch (const std::system_error &e) {
      first_error = std::string("creating dispatcher thread: ") + e.what();
      break;
    }
    std::string why = fut.get();
    if (!why.empty()) {
      c->th.join();
      first_error = why;
      break;
    }
    started++;
  }
  if (!first_error.empty()) {
    for (int i = 0; i < started; i++) stop_dispatcher(s.cpus[i]);
    s.running.store(false);
    s.ncpus = 0;
    return fail(EIO, "kcont_start: " + first_error);
  }
  return 0;
}

void kcont_stop() {
  auto &s = sys();
  if (tl_exec && tl_exec->c) return;
  std::lock_guard<std::mutex> g(s.admin);
  if (!s.running.load()) return;
  // Let in-flight work finish: wait (bounded) until every dispatcher and
  // worker is asleep with an empty inbox, twice in a row.
  int quiet = 0;
  for (int i = 0; i < 2000 && quiet < 2; i++) {
    quiet = system_idle() ? quiet + 1 : 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  s.running.store(false);
  for (int i = 0; i < s.ncpus; i++) {
    cpu *c = s.cpus[i];
    for (auto &wp : c->workers) {
      worker *w = wp.load();
      if (!w) continue;
      w->stop.store(true, std::memory_order_seq_cst);
      w->sleeping.store(0, std::memory_order_seq_cst);
      futex_wake(&w->sleeping);
      w->th.join();
      wp.store(nullptr);
    }
  }
  for (int i = 0; i < s.ncpus; i++) {
    stop_dispatcher(s.cpus[i]);
    s.cpus[i] = nullptr;
  }
  s.ncpus = 0;
}

bool kcont_running() { return sys().running.load(); }
int kcont_ncpus() { return sys().ncpus; }

// ------------------------------------------------------------ stats

level_stats kcont_stats(int cpu_index, level l, kind k) {
  auto &s = sys();
  level_stats out;
  if (cpu_index < 0 || cpu_index >= max_cpus || l.id >= max_levels) return out;
  cpu *c = g_cpu_store[cpu_index];
  if (!c) return out;
  const qstats &q = c->stats[l.id][int(k)];
  auto ld = [](const std::atomic<uint64_t> &a) { return a.load(std::memory_order_relaxed); };
  out.deferred = ld(q.deferred);
  out.run = ld(q.run);
  out.direct = ld(q.direct);
  out.coalesced = ld(q.coalesced);
  out.cancelled = ld(q.cancelled);
  out.max_depth = ld(q.max_depth);
  out.max_latency_ns = ld(q.max_latency_ns);
  out.latency_sum_ns = ld(q.latency_sum_ns);
  for (int b = 0; b < level_stats::latency_buckets; b++)
    out.latency_hist[b] = ld(q.latency_hist[b]);
  (void)s;
  return out;
}

size_t kcont_stats_snapshot(stats_row *rows, size_t max) {
  int ncpu = 0;
  for (int i = 0; i < max_cpus; i++)
    if (g_cpu_store[i]) ncpu = i + 1;
  const int nlev = kcont_level_count();
  size_t n = 0;
  for (int i = 0; i < ncpu; i++)
    for (int l = 0; l < nlev; l++)
      for (int k = 0; k < 2; k++, n++) {
        if (n >= max || !rows) continue;
        rows[n].cpu = i;
        rows[n].lvl = level{uint8_t(l)};
        rows[n].k = kind(k);
        rows[n].s = kcont_stats(i, rows[n].lvl, rows[n].k);
      }
  return n;
}

cpu_stats kcont_cpu_stats(int cpu_index) {
  cpu_stats out;
  if (cpu_index < 0 || cpu_index >= max_cpus || !g_cpu_store[cpu_index]) return out;
  cpu *c = g_cpu_store[cpu_index];
  out.loops = c->loops.load(std::memory_order_relaxed);
  out.sleeps = c->sleeps.load(std::memory_order_relaxed);
  out.doorbells = c->doorbells.load(std::memory_order_relaxed);
  out.inbox_items = c->inbox_items.load(std::memory_order_relaxed);
  out.arm_retries = c->arm_retries.load(std::memory_order_relaxed);
  out.spins = c->spins.load(std::memory_order_relaxed);
  out.spin_hits = c->spin_hits.load(std::memory_order_relaxed);
  for (int l = 0; l < max_levels; l++) {
    // Records are never freed: safe to read while kcont stops.
    worker *w = c->workers[l].load(std::memory_order_acquire);
    if (!w) continue;
    out.worker_loops += w->loops.load(std::memory_order_relaxed);
    out.worker_sleeps += w->sleeps.load(std::memory_order_relaxed);
  }
  return out;
}

uint64_t kcont_doorbells_total() { return sys().doorbells.load(std::memory_order_relaxed); }

std::string kcont_stats_format() {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-4s %-12s %-4s %12s %12s %10s %10s %10s %9s %12s\n", "cpu",
                "level", "kind", "deferred", "run", "direct", "coalesced", "cancelled", "maxdepth",
                "maxlat_ns");
  out += line;
  int ncpu = 0;
  for (int i = 0; i < max_cpus; i++)
    if (g_cpu_store[i]) ncpu = i + 1;
  for (int i = 0; i < ncpu; i++) {
    for (int l = 0; l < kcont_level_count(); l++) {
      for (int k = 0; k < 2; k++) {
        level_stats st = kcont_stats(i, level{uint8_t(l)}, kind(k));
        if (!st.deferred && !st.run && !st.direct && !st.coalesced && !st.cancelled) continue;
        std::snprintf(line, sizeof line,
                      "%-4d %-12s %-4s %12llu %12llu %10llu %10llu %10llu %9llu %12llu\n", i,
                      kcont_level_name(level{uint8_t(l)}), k ? "thr" : "intr",
                      (unsigned long long)st.deferred, (unsigned long long)st.run,
                      (unsigned long long)st.direct, (unsigned long long)st.coalesced,
                      (unsigned long long)st.cancelled, (unsigned long long)st.max_depth,
                      (unsigned long long)st.max_latency_ns);
        out += line;
      }
    }
    cpu_stats cs = kcont_cpu_stats(i);
    std::snprintf(line, sizeof line,
                  "cpu%d: loops %llu sleeps %llu doorbells %llu inbox_items %llu spins %llu "
                  "(found work %llu)\n",
                  i, (unsigned long long)cs.loops, (unsigned long long)cs.sleeps,
                  (unsigned long long)cs.doorbells, (unsigned long long)cs.inbox_items,
                  (unsigned long long)cs.spins, (unsigned long long)cs.spin_hits);
    out += line;
  }
  return out;
}

}  // namespace kc
