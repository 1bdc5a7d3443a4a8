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

#include "kcont/kcont.h"
#include "kcont/ring.h"
#include "kcont/spinlock.h"

namespace kc::detail {

// Internal values of kcont::st.
enum : uint32_t {
  ST_IDLE = 0,
  ST_CHAINED = 1,
  ST_PENDING = 2,
  ST_CANCELLED = 3,  // still linked on a queue; the dispatcher skips it
  ST_REVIVING = 4,   // a cancelled kc being deferred again (transient)
  ST_INIT = 5,       // kcont_init is writing the fields (transient)
};

// The state word: state in the low byte, a 56-bit generation above it that
// changes on every claim for a call and every revival, so that no observer
// can mistake "idle again after another run" for "still idle" (ABA).
inline constexpr uint64_t ST_MASK = 0xff;
inline constexpr uint64_t ST_GEN = 0x100;
inline uint32_t st_of(uint64_t w) { return uint32_t(w & ST_MASK); }
inline uint64_t st_with(uint64_t w, uint32_t st) { return (w & ~ST_MASK) | st; }
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
  std::atomic<uint64_t> deferred{0}, run{0}, direct{0}, coalesced{0}, cancelled{0}, max_depth{0},
      max_latency_ns{0};
};

// A thread that runs continuations: a dispatcher, a worker, or another
// thread that called kcq_run.  `running` holds the continuations whose
// functions it is executing (nested calls from kcq_run stack up to 4).
inline constexpr int max_nesting = 4;
struct cpu;
struct executor {
  cpu *c = nullptr;  // nullptr for threads kcont does not own
  bool dispatcher = false;
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

// A local FIFO queue of one {level, interrupt} on one CPU.
struct local_queue {
  kcont *head = nullptr;
  kcont *tail = nullptr;
  uint64_t depth = 0;
  uint64_t stamp = 0;  // now_ns() of a sampled empty->non-empty transition
  uint32_t sample = 0;
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
  local_queue queues[max_levels];  // indexed by dispatch slot
  uint32_t pending = 0;            // slots with a non-empty queue
  uint32_t spl_slots = 0;          // held slots
  bool stopping_seen = false;
  uint32_t unarmed = 0;  // ARM_* operations that found no SQE; retried before sleeping

  // shared
  inbox in;
  std::atomic<bool> sleeping{false};
  std::atomic<bool> stop{false};
  std::atomic<worker *> workers[max_levels];

  qstats stats[max_levels][2];  // [level id][kind]
  std::atomic<uint64_t> loops{0}, sleeps{0}, doorbells{0}, inbox_items{0}, arm_retries{0};

  callout_cpu *co = nullptr;
};

// Global system state.
struct level_info {
  char name[32] = {};
  int rank = 0;
  uint8_t slot = 0;  // dispatch slot: higher slot = served first
  bool used = false;
};

struct system_state {
  std::mutex admin;  // start/stop/register/establish
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

inline uint32_t slot_bit(level l) { return 1u << sys().levels[l.id].slot; }
uint32_t slots_of(level_set s);
level_set levels_of_slots(uint32_t slots);

// True when the caller is the dispatcher that owns CPU-private kc.
inline bool is_owner(const kcont *kc) {
  executor *ex = tl_exec;
  return ex && ex->dispatcher && ex->c->id == kc->tgt.cpu;
}

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

// Calls a PENDING continuation the caller owns, in the caller's executor
// (tracked in ex->running for kcont_drain); false if it was cancelled.
bool call_direct(executor *ex, kcont *kc);
void call_untracked(kcont *kc);

// True when kc's target is exactly the caller's context.
bool is_exact_context(const executor *ex, const kcont *kc);

// Links a pending kc on one of cpu c's local queues.  Dispatcher of c only.
__attribute__((always_inline)) inline void local_link(cpu *c, kcont *kc) {
  const uint8_t lid = kc->tgt.lvl.id;
  const uint8_t slot = sys().levels[lid].slot;
  local_queue &q = c->queues[slot];
  kc->next = nullptr;
  if (q.tail) {
    q.tail->next = kc;
  } else {
    q.head = kc;
    c->pending |= 1u << slot;
    if ((++q.sample & 63) == 0) q.stamp = now_ns();
  }
  q.tail = kc;
  qstats &st = c->stats[lid][0];
  bump(st.deferred);
  raise_max(st.max_depth, ++q.depth);
}

// callout.cc hooks, called by the dispatcher.
int callout_cpu_init(cpu *c);
void callout_cpu_fini(cpu *c);
// Re-arms the CPU's timer after a re-arm found no SQE (ARM_TIMER).
// Returns true once armed (or nothing to arm).  Dispatcher of c only.
bool callout_cpu_rearm(cpu *c);

}  // namespace kc::detail
