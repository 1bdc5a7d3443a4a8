// SPDX-License-Identifier: BSD-2-Clause
// internal.h -- the kcont core's private structures.
//
// Everything here is shared by the core's translation units and by the
// layers (softint, callout, workqueue, sleepq) and the I/O library through
// kcont/ring.h; nothing here is public API.
//
// Ownership rules (the locking of the whole core in one place):
//  - struct cpu: the dispatcher thread alone touches `queues`, `pending`,
//    `spl_slots`, the ring and the counters it writes; other threads touch
//    only `inbox`, `sleeping` and the doorbell eventfd.
//  - struct worker: its thread alone touches its counters; others push to
//    its inbox and wake it through `sleeping` (a futex word).
//  - struct executor: written by its own thread, read by kcont_drain and
//    kcont_state on any thread (relaxed/acquire loads of `running`).
//  - Counters are std::atomic written by one owner with load+store (plain
//    moves on x86) so that any thread may read them while they change;
//    `coalesced` is the exception (bumped by any deferring thread).
#pragma once

#include <liburing.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>

#include "kcont/assert.h"
#include "kcont/kcont.h"
#include "kcont/ring.h"
#include "kcont/spinlock.h"

namespace kc::detail {

// Internal values of kcont::st (its low six bits).
enum : uint32_t {
  ST_IDLE = 0,
  ST_CHAINED = 1,
  ST_PENDING = 2,
  ST_CANCELLED = 3,  // still linked on a queue; the dispatcher skips it
  ST_REVIVING = 4,   // a cancelled kc being deferred again (transient)
  ST_INIT = 5,       // kcont_init is writing the fields (transient)
};

// The state word: the state in the low six bits, the BIASED and PRIVATE
// flags, the owner's CPU, and a 48-bit generation above them that changes on every claim for a call
// and every revival, so that no observer can mistake "idle again after another run" for "still
// idle" (ABA).
//
// BIASED: the word belongs to one dispatcher (the *owner*), which moves it
// with plain stores instead of compare-and-swaps.  A CPU-private
// continuation is biased for life (nobody else may move it).  A bound
// interrupt-kind continuation becomes biased after its own CPU deferred it
// bias_streak_min times in a row; any other thread that wants to move it
// first takes the bias away (unbias(): an asymmetric Dekker handshake with
// membarrier, see kcont.cc) and then uses compare-and-swap.  Every other
// bit of the protocol (generation, states) is the same in both modes.
//
// Layout: bits 0-5 state, bit 6 BIASED, bit 7 PRIVATE (biased for life),
// bits 8-15 the owner's CPU (valid while BIASED), bits 16-63 generation.
inline constexpr uint64_t ST_MASK = 0x3f;
inline constexpr uint64_t ST_BIASED = 0x40;
inline constexpr uint64_t ST_PRIVATE = 0x80;
inline constexpr uint64_t ST_OWNER = 0xff00;
inline constexpr uint64_t ST_GEN = 0x10000;
inline constexpr uint8_t bias_streak_min = 255;
inline uint32_t st_of(uint64_t w) { return uint32_t(w & ST_MASK); }
inline uint64_t st_with(uint64_t w, uint32_t st) { return (w & ~ST_MASK) | st; }
inline int st_owner(uint64_t w) { return int((w & ST_OWNER) >> 8); }
inline uint64_t st_biased_to(uint64_t w, int cpu) {
  return (w & ~ST_OWNER) | ST_BIASED | (uint64_t(uint8_t(cpu)) << 8);
}
inline uint64_t st_unbiased(uint64_t w) { return w & ~(ST_BIASED | ST_OWNER); }
inline constexpr std::memory_order rlx = std::memory_order_relaxed;

inline void bump(std::atomic<uint64_t> &c, uint64_t n = 1) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
inline void raise_max(std::atomic<uint64_t> &c, uint64_t v) {
  if (v > c.load(std::memory_order_relaxed)) c.store(v, std::memory_order_relaxed);
}

uint64_t now_ns();

// Lock-free multi-producer, single-consumer list of continuations (a
// Treiber stack that the consumer detaches whole, so there is no ABA).
struct inbox {
  std::atomic<kcont *> head{nullptr};
  // Pushes kc; returns true on the empty -> non-empty transition.
  bool push(kcont *kc) {
    kcont *old = head.load(std::memory_order_relaxed);
    do {
      kc->next = old;
    } while (
        !head.compare_exchange_weak(old, kc, std::memory_order_seq_cst, std::memory_order_relaxed));
    return old == nullptr;
  }
  // Detaches everything, oldest first.
  kcont *take_fifo() {
    kcont *l = head.exchange(nullptr, std::memory_order_acquire);
    kcont *r = nullptr;
    while (l) {
      kcont *n = l->next;
      l->next = r;
      r = l;
      l = n;
    }
    return r;
  }
  bool empty() const { return head.load(std::memory_order_seq_cst) == nullptr; }
};

struct qstats {
  std::atomic<uint64_t> deferred{0}, run{0}, direct{0}, cancelled{0}, max_depth{0},
      max_latency_ns{0}, latency_sum_ns{0};
  std::atomic<uint64_t> latency_hist[level_stats::latency_buckets] = {};
  // Bumped by the deferring threads, not the dispatcher: on a line of its
  // own, so that a producer retrying a pending continuation does not take
  // the line the dispatcher publishes its counters to.
  alignas(64) std::atomic<uint64_t> coalesced{0};
};

// A thread that runs continuations: a dispatcher, a worker, or another
// thread that called kcq_run.  `running` holds the continuations whose
// functions it is executing (nested calls from kcq_run stack up to 4).
inline constexpr int max_nesting = 4;
struct cpu;
struct executor {
  cpu *c = nullptr;  // nullptr for threads kcont does not own
  bool dispatcher = false;
  int16_t owner_cpu = -2;  // the dispatcher's CPU id (owner of biased kcs); -2 elsewhere
  level cur_level{};
  kind cur_kind = kind::interrupt;
  bool in_context = false;  // a handler or continuation is running
  int depth = 0;
  std::atomic<kcont *> running[max_nesting];
  std::atomic<bool> in_use{false};
};

// constinit: no TLS wrapper call on the hot path.
extern constinit thread_local executor *tl_exec __attribute__((tls_model("initial-exec")));
executor *current_executor();             // may be nullptr
executor *current_or_foreign_executor();  // registers a foreign thread
void for_each_executor(void (*fn)(executor *, void *), void *arg);
void set_thread_executor(executor *ex);
// True on c's own dispatcher thread: what dispatcher-only code asserts.
inline bool on_dispatcher_of(const cpu *c) {
  const executor *ex = current_executor();
  return ex != nullptr && ex->dispatcher && ex->c == c;
}
void ensure_builtin_levels();
void assign_slots();
int kcq_enqueue_keyed(kcq *q, kcont *kc, const void *key);
int kcq_run_keyed(kcq *q, const void *key, int status, bool one);
bool kc_is_running(const kcont *kc);
bool executor_runs(const executor *ex, const kcont *kc);

// Wait channels for the framework's own waits (kcont_drain, callout_halt,
// workqueue_destroy, softint_disestablish, kcont_run_on): sleeps on `chan`
// until pred(arg) is true, checking it only after the sleeper is chained, so
// a waker that makes it true and then calls wakeup(chan) is never missed.
// Between chaining and checking it issues heavy_fence(), so a waker may use
// the cheap side of the asymmetric pair (light_fence) before it reads
// whether anyone waits.  Thread context only.  Returns 0, or EWOULDBLOCK when
// `timeout_ns` (0: none) passes first.
int sleep_until(const void *chan, bool (*pred)(void *), void *arg, uint64_t timeout_ns = 0);

// Test hook: called by mtsleep right after it released the interlock (the
// sleeper is already on the channel).  nullptr in production.
extern void (*g_mtsleep_unlocked_hook)(const void *chan);

// The asymmetric fence pair (membarrier(2) PRIVATE_EXPEDITED): a waiter
// calls heavy_fence() between publishing "I wait" and reading the condition;
// a waker calls light_fence() between making the condition true and reading
// "does anyone wait".  light_fence is a compiler barrier when membarrier is
// available and a full fence otherwise.  Any context.
void fences_init();
extern bool g_membarrier;
inline void light_fence() {
  if (__builtin_expect(g_membarrier, 1))
    std::atomic_signal_fence(std::memory_order_seq_cst);
  else
    std::atomic_thread_fence(std::memory_order_seq_cst);
}
void heavy_fence();

// Threads sleeping in kcont_drain (any continuation).  While non-zero,
// every consumer that finishes a continuation wakes the drainers of it.
extern std::atomic<uint32_t> g_drainers;
void wake_drainers(const kcont *kc);

// A local FIFO queue of one {level, interrupt} on one CPU.  Its counters
// are plain (dispatcher-owned) and published to qstats once per batch by
// run_soft, never per call.
struct local_queue {
  kcont *head = nullptr;
  kcont *tail = nullptr;
  uint64_t linked = 0;  // continuations ever linked here (qstats::deferred)
  uint64_t popped = 0;  // continuations ever taken off
  uint64_t stamp = 0;   // now_ns() of a sampled empty->non-empty transition
};

struct worker {
  cpu *c = nullptr;
  level lvl{};
  std::thread th;
  inbox in;
  std::atomic<uint32_t> sleeping{0};  // futex word
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> loops{0}, sleeps{0};
  executor ex;
};

struct callout_cpu;  // callout.cc
struct cpu;

// Cross-CPU batches.  A dispatcher that defers interrupt-kind continuations
// to another CPU's dispatcher does not push each onto that CPU's inbox (a
// linked list: the consumer's walk of it takes one cache miss after the
// other, and every push moves the inbox head's line): it writes their
// pointers into a batch of its own for that CPU, and pushes the batch onto
// the inbox as one node when it is full, when the dispatcher has run 64
// calls in a row, and before it reaps or sleeps -- so a staged continuation
// waits at most one dispatcher batch.  The consumer reads the pointers in
// order (the lines of the continuations can be fetched side by side) and
// links them onto its local queues, then hands the batch back.
//
// Each ordered pair of CPUs has xfers_per_pair batches, owned by the
// producer: `busy` goes 0 -> 1 when the producer takes one (a plain store;
// only it takes) and 1 -> 0 when the consumer has linked its items
// (release; the producer's acquire load sees the items read).  With none
// free the producer falls back to a push per continuation; it has no open
// batch for that CPU then, so everything it staged before is on the inbox
// already and the order of its deferrals is kept.
inline constexpr unsigned xfer_cap = 16;
inline constexpr unsigned xfers_per_pair = 4;
void xfer_marker(void *, void *, int);  // a batch's hdr.fn (never called)
struct xfer {
  kcont hdr;  // the node on the destination's inbox (hdr.fn == xfer_marker)
  std::atomic<uint32_t> busy{0};
  uint32_t n = 0;
  kcont *items[xfer_cap];
  xfer() { hdr.fn = xfer_marker; }
};

// Ring operations a dispatcher must keep armed to be woken at all.
enum : uint32_t { ARM_DOORBELL = 1u << 0, ARM_TIMER = 1u << 1 };

struct cpu {
  int id = 0;
  std::thread th;
  io_uring ring{};
  bool ring_ok = false;
  int efd = -1;  // doorbell eventfd
  uint64_t efd_buf = 0;
  completion doorbell_comp;
  executor ex;

  // dispatcher-owned
  uint32_t pending = 0;      // slots with a non-empty queue
  uint32_t spl_slots = 0;    // held slots
  bool stamp_armed = false;  // take one latency stamp (re-armed every 64 loops)
  // Odd while the dispatcher is inside a plain-store section on a biased
  // continuation; written by the dispatcher only, read by unbias().
  std::atomic<uint32_t> fast_seq{0};
  local_queue queues[max_levels];  // indexed by dispatch slot
  bool stopping_seen = false;
  uint32_t unarmed = 0;       // ARM_* operations that found no SQE; retried before sleeping
  uint64_t open_mask = 0;     // CPUs with an open batch (xfer) in open[]
  xfer *open[max_cpus] = {};  // the batch being filled for each CPU

  // shared
  inbox in;
  std::atomic<bool> sleeping{false};
  std::atomic<bool> stop{false};
  std::atomic<worker *> workers[max_levels];

  qstats stats[max_levels][2];  // [level id][kind]
  std::atomic<uint64_t> loops{0}, sleeps{0}, doorbells{0}, inbox_items{0}, arm_retries{0}, spins{0},
      spin_hits{0};

  callout_cpu *co = nullptr;

  // this CPU's batches to each CPU (xfer); `busy` is shared with the consumer
  xfer xfers[max_cpus][xfers_per_pair];
};

// Stages kc (pending, to be linked on dispatcher `to`) in the calling
// dispatcher p's batch for `to`.  False: no batch free, push it yourself.
bool xfer_stage(cpu *p, cpu *to, kcont *kc);
// Pushes p's open batches onto their CPUs' inboxes.  p's dispatcher only.
void xfer_flush_all(cpu *p);
inline void xfer_flush(cpu *p) {
  if (__builtin_expect(p->open_mask != 0, 0)) xfer_flush_all(p);
}

// Global system state.
struct level_info {
  char name[32] = {};
  int rank = 0;
  bool used = false;
};

struct system_state {
  std::mutex admin;                     // start/stop/register/establish
  uint8_t level_slot[max_levels] = {};  // level id -> dispatch slot (hot copy)
  level_info levels[max_levels];
  int nlevels = 0;
  uint8_t slot_to_level[max_levels] = {};
  std::atomic<bool> running{false};
  int ncpus = 0;
  cpu *cpus[max_cpus] = {};
  config cfg{};
  std::atomic<uint64_t> doorbells{0};
};
extern system_state g_sys;
inline system_state &sys() { return g_sys; }

inline uint32_t slot_bit(level l) { return 1u << sys().level_slot[l.id]; }
uint32_t slots_of(level_set s);
level_set levels_of_slots(uint32_t slots);

// True when the {l, thread} worker exists on `cpu` (every CPU for ANY).
bool workers_ready(level l, int cpu);

// Picks the CPU an unbound continuation deferred by the caller goes to.
int home_cpu();

// Links a continuation the caller just made pending to its target queue.
// An unbound one that is running right now goes to the CPU (and worker)
// running it, so a continuation never runs on two threads at once.
// try_link returns false, leaving it PENDING and unlinked, when the target
// cannot take it: system stopped, CPU out of range, or no worker for a
// thread target.  link_pending then sets it idle again (set_idle_unlinked,
// which also wakes its drainers) and returns false.
bool try_link(kcont *kc);
void set_idle_unlinked(kcont *kc);
inline bool link_pending(kcont *kc) {
  if (try_link(kc)) return true;
  set_idle_unlinked(kc);
  return false;
}

// True when kc's target is exactly the caller's context.
bool is_exact_context(const executor *ex, const kcont *kc);

// Stamps an empty -> non-empty transition for the latency sample (cold).
__attribute__((noinline, cold)) void take_stamp(cpu *c, local_queue &q);

// Links a pending kc on one of cpu c's local queues.  Dispatcher of c only.
// Counts nothing shared: run_soft publishes the queue's counters per batch.
// `stamp`: false when the caller has already seen stamp_armed clear.
template <bool stamp = true>
__attribute__((always_inline)) inline void local_link(cpu *c, kcont *kc) {
  KC_ASSERT(on_dispatcher_of(c), "a CPU's local run queues are touched by its dispatcher alone");
  const uint8_t slot = sys().level_slot[kc->tgt.lvl.id];
  local_queue &q = c->queues[slot];
  kc->next = nullptr;
  if (q.tail) {
    q.tail->next = kc;
  } else {
    q.head = kc;
    c->pending |= 1u << slot;
    if (stamp && __builtin_expect(c->stamp_armed, 0)) take_stamp(c, q);
  }
  q.tail = kc;
  q.linked++;
}

// True when `ex` is the dispatcher that owns the bias of state word w.
inline bool is_bias_owner(const executor *ex, uint64_t w) {
  return ex && ex->owner_cpu == st_owner(w);
}

// The CPU record of `id` (records live for the whole process), or nullptr.
cpu *cpu_record(int id);

// Takes the bias away from a biased kc so the caller (not its owner) may
// move it with compare-and-swap.  Thread or interrupt context; never
// blocks on a lock (waits at most for the owner's current plain-store
// section, a few instructions).
void unbias(kcont *kc);

// The owner's plain-store section: odd fast_seq while inside.  enter
// returns false (and leaves the section) when an unbias is in progress.
__attribute__((always_inline)) inline bool bias_enter(cpu *c, const kcont *kc) {
  uint32_t s = c->fast_seq.load(rlx);
  c->fast_seq.store(s + 1, rlx);
  std::atomic_signal_fence(std::memory_order_seq_cst);  // pairs with unbias's membarrier
  if (__builtin_expect(kc->unbias.load(rlx) == 0, 1)) return true;
  c->fast_seq.store(s + 2, std::memory_order_release);
  return false;
}
__attribute__((always_inline)) inline void bias_leave(cpu *c) {
  c->fast_seq.store(c->fast_seq.load(rlx) + 1, std::memory_order_release);
}

void call_untracked(kcont *kc);
bool call_direct_cas(executor *ex, kcont *kc, int d);

// The end of a call: the running slot is cleared and drainers are woken.
// kc may be gone by now; its address is only a wait-channel key.
__attribute__((always_inline)) inline bool call_finish(executor *ex, kcont *kc, int d, bool call) {
  ex->running[d].store(nullptr, std::memory_order_release);
  ex->depth--;
  light_fence();
  if (__builtin_expect(g_drainers.load(rlx) != 0, 0)) wake_drainers(kc);
  return call;
}

// Calls a PENDING continuation the caller owns (popped off a queue or taken
// off a chain) in the caller's executor, tracked in ex->running for
// kcont_drain; false if it was cancelled.  A CPU-private continuation is
// written only by its CPU now (we are its dispatcher, or kcq_run took it
// under the chain's lock) and a biased one only by its owner, which we are
// while we hold the section: both are claimed with plain stores, inline;
// everything else goes through call_direct_cas.
__attribute__((always_inline)) inline bool call_direct(executor *ex, kcont *kc) {
  const int d = ex->depth++;
  ex->running[d].store(kc, rlx);
  uint64_t w = kc->st.load(std::memory_order_acquire);
  const bool priv = w & ST_PRIVATE;
  if (!priv) {
    if (!((w & ST_BIASED) && is_bias_owner(ex, w) && bias_enter(ex->c, kc)))
      return call_direct_cas(ex, kc, d);
    w = kc->st.load(std::memory_order_acquire);
    if (__builtin_expect(!(w & ST_BIASED), 0)) {  // taken away before we entered
      bias_leave(ex->c);
      return call_direct_cas(ex, kc, d);
    }
  }
  const kc_fn fn = kc->fn;
  void *const env = kc->env;
  void *const obj = kc->obj.load(rlx);
  const int status = kc->status.load(rlx);
  const bool call = st_of(w) == ST_PENDING;
  kc->st.store(st_with(w + (call ? ST_GEN : 0), ST_IDLE), std::memory_order_release);
  if (!priv) bias_leave(ex->c);
  if (call) fn(obj, env, status);
  return call_finish(ex, kc, d, call);
}

// callout.cc hooks, called by the dispatcher.
int callout_cpu_init(cpu *c);
void callout_cpu_fini(cpu *c);
// Re-arms the CPU's timer after a re-arm found no SQE (ARM_TIMER).
// Returns true once armed (or nothing to arm).  Dispatcher of c only.
bool callout_cpu_rearm(cpu *c);

}  // namespace kc::detail
