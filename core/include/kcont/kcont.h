// SPDX-License-Identifier: BSD-2-Clause
// kcont.h -- kernel-style continuations, levels and per-CPU dispatch.
//
// Model
// -----
// A *continuation* (struct kcont) is a small record owned by its caller,
// usually embedded in a long-lived object: a function fn(obj, env, status),
// the env the caller bound at init, the object and status saved when it was
// deferred, and the *target* context in which it must run.  Whoever completes
// an operation runs the continuation -- now, if the target is the current
// context (or the continuation is *immediate*), or later, by deferring it to
// the queue of its target context.  Nothing sleeps per operation.
//
// A *level* is a named priority domain (clock, bio, net, serial, softclock,
// softbio, softnet, softserial, and any registered before kcont_start).
// Levels are never compared.  Each level has a *dispatch rank* that says
// which pending level a CPU serves first, and masking is a separate thing:
// an explicit level_set held with spl_block() and released with splx().
//
// A *context* is {level, kind}: kind is interrupt (run by the CPU's
// dispatcher thread, must not block) or thread (run by a worker thread per
// {level, CPU}, may block).  The current context is thread-local state that
// only the framework sets.
//
// A *CPU* is a dispatcher thread with one io_uring ring.  It owns a queue
// per {level, interrupt} and a worker per {level, thread}; other threads
// hand it work through its inbox (lock-free MPSC), ringing its doorbell only
// on the empty->non-empty transition while it sleeps.
//
// States
// ------
//   idle     -- initialised, on no queue; may be deferred or chained.
//   chained  -- on a kcq, waiting for the event that runs the chain.
//   pending  -- on a CPU queue or inbox, waiting to be dispatched.
//   running  -- its function is executing (it may be pending again at the
//               same time if it was deferred while running).
// Deferring a pending continuation coalesces: kcont_defer returns false and
// the first deferral's object and status stand.  Chaining a continuation
// that is not idle is refused.  The framework never touches a continuation
// after calling its function: the function may free, re-init or re-defer it.
//
// Allocation
// ----------
// Nothing in this header allocates after kcont_start, except where a
// function says "thread context; may allocate" (establishing a worker).
// Continuations live in caller memory; kcont_pool hands out preallocated
// ones for the few places that need one per event.
//
// Locking
// -------
// A kc's state word is the shared field: every transition out of idle,
// pending or cancelled is an atomic compare-and-swap (with a generation
// count against ABA), so two deferrals of one continuation never link it
// twice; a chained continuation belongs to its kcq's lock.  The exception
// is a *biased* continuation (bound, interrupt kind, deferred by its own
// CPU 255 times in a row; CPU-private ones for life): its dispatcher moves
// it with plain stores, and any other thread first takes the bias away with
// a membarrier(2) handshake, then uses compare-and-swap (kcont(9),
// LOCKING).  Local queues are touched only by their dispatcher; inboxes are
// Treiber stacks detached whole by their one consumer (no ABA); a kcq is a
// short spinlocked list.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace kc {

inline constexpr int max_levels = 32;
inline constexpr int max_cpus = 64;

// ---------------------------------------------------------------- levels

// A registered level.  Handles are small integers; compare them only for
// identity, never with < or <=.
struct level {
  uint8_t id = 0xff;
  friend bool operator==(level, level) = default;
};

// Built-in levels.  Hard levels are where completions are reaped (clock:
// timer ticks, bio: block I/O, net: sockets, serial: free for users); soft
// levels are where deferred work runs.
inline constexpr level LVL_CLOCK{0};
inline constexpr level LVL_BIO{1};
inline constexpr level LVL_NET{2};
inline constexpr level LVL_SERIAL{3};
inline constexpr level LVL_SOFTCLOCK{4};
inline constexpr level LVL_SOFTBIO{5};
inline constexpr level LVL_SOFTNET{6};
inline constexpr level LVL_SOFTSERIAL{7};

// An explicit set of levels (a mask).  Sets are built from levels, never
// from ranges of levels.
class level_set {
 public:
  constexpr level_set() = default;
  constexpr level_set(std::initializer_list<level> ls) {
    for (level l : ls) add(l);
  }
  constexpr level_set &add(level l) {
    bits_ |= 1u << l.id;
    return *this;
  }
  constexpr level_set &remove(level l) {
    bits_ &= ~(1u << l.id);
    return *this;
  }
  constexpr bool contains(level l) const { return (bits_ >> l.id) & 1u; }
  constexpr bool empty() const { return bits_ == 0; }
  constexpr uint32_t bits() const { return bits_; }
  static constexpr level_set from_bits(uint32_t b) {
    level_set s;
    s.bits_ = b;
    return s;
  }
  friend constexpr bool operator==(level_set, level_set) = default;

 private:
  uint32_t bits_ = 0;
};

// Registers a level named `name` with dispatch rank `rank` (higher ranks are
// served first when several levels are pending on a CPU; equal ranks are
// served in registration order).  Thread context, before kcont_start only.
// Returns 0 and stores the handle, or EEXIST (name taken), ENOSPC (32 levels
// already), EBUSY (system running), EINVAL (null, empty or 32+ characters).
int kcont_level_register(const char *name, int rank, level *out);

// Looks a level up by name; returns false when none is registered.
bool kcont_level_lookup(const char *name, level *out);

// The name and rank of a registered level ("?" and 0 for an unknown handle).
const char *kcont_level_name(level l);
int kcont_level_rank(level l);

// Number of registered levels (ids 0 .. count-1).
int kcont_level_count();

// ---------------------------------------------------------------- contexts

enum class kind : uint8_t { interrupt = 0, thread = 1 };

// The context code runs in.  `valid` is false on threads the framework does
// not own (main(), test threads, your own threads).
struct context {
  level lvl{};
  kind k = kind::interrupt;
  bool valid = false;
  friend bool operator==(context, context) = default;
};

// Any CPU (no binding).
inline constexpr int16_t KC_CPU_ANY = -1;

// Where a continuation runs.  `immediate` means "call me directly wherever
// the event is completed -- any thread, any context -- I am quick".  When an
// immediate continuation has to be deferred anyway (kcont_defer, nesting of
// direct calls at its limit of 4, or no executor record left for a foreign
// thread) it goes to {lvl, k}.
//
// A *CPU-private* continuation (target::cpu_private_to) belongs to one CPU's
// dispatcher, like NetBSD's per-CPU softint handles: only code running on
// that dispatcher may defer it, chain it, cancel it or re-initialise it
// (elsewhere those calls are refused: false / EPERM).  Any thread may still
// run a chain it is on (kcq_run, wakeup), which hands it to its CPU, and
// drain it or read its state.  In exchange its defer, dispatch and cancel
// use plain stores instead of atomic read-modify-writes.
struct target {
  level lvl = LVL_SOFTSERIAL;
  kind k = kind::interrupt;
  bool immediate = false;
  int16_t cpu = KC_CPU_ANY;
  bool cpu_private = false;

  static constexpr target at(level l, kind k = kind::interrupt, int16_t cpu = KC_CPU_ANY) {
    return target{l, k, false, cpu, false};
  }
  static constexpr target in_thread(level l, int16_t cpu = KC_CPU_ANY) {
    return target{l, kind::thread, false, cpu, false};
  }
  // Immediate; deferred falls back to {fallback, interrupt}.
  static constexpr target now(level fallback = LVL_SOFTSERIAL) {
    return target{fallback, kind::interrupt, true, KC_CPU_ANY, false};
  }
  // CPU-private: {l, interrupt} on `cpu`, owned by that CPU's dispatcher.
  static constexpr target cpu_private_to(level l, int16_t cpu) {
    return target{l, kind::interrupt, false, cpu, true};
  }
};

// The calling thread's context.  Any context.
context kcont_current_context();

// The calling thread's CPU index, or -1 on a thread kcont does not own.
int kcont_current_cpu();

// True while the caller runs in interrupt kind (dispatcher thread).
bool kcont_in_interrupt();

// ---------------------------------------------------------------- kcont

using kc_fn = void (*)(void *obj, void *env, int status);

enum class kc_state : uint8_t { idle, chained, pending, running };

// The continuation record.  Treat the fields as private; use the functions.
struct kcont {
  kc_fn fn = nullptr;
  void *env = nullptr;
  std::atomic<void *> obj{nullptr};  // saved by defer/run
  std::atomic<int> status{0};        // saved by defer/run
  target tgt{};
  std::atomic<uint16_t> unbias{0};      // internal: threads taking the bias away now
  std::atomic<uint8_t> bias_streak{0};  // internal: owner deferrals in a row
  std::atomic<uint64_t> st{0};          // internal: state, bias flag, generation
  kcont *next = nullptr;                // intrusive link (queue, inbox or kcq)
  kcont *prev = nullptr;                // kcq back link
  void *chain = nullptr;                // kcq this kc is chained on
  std::atomic<void *> ran_on{nullptr};  // internal: executor of its last call

  kcont() = default;
  kcont(const kcont &) = delete;
  kcont &operator=(const kcont &) = delete;
};

// Initialises `kc` to call fn(obj, env, status) in target `t`.  Any context
// (a CPU-private continuation that is already in use: its CPU only, while
// kcont runs).  Returns 0, EBUSY if kc is pending, chained, being cancelled
// or being initialised by another thread (re-init needs it idle; two racing
// inits: one wins), EPERM (an initialised CPU-private kc re-initialised off
// its CPU while kcont runs), or EINVAL (null fn, unknown level, CPU out of
// range, or a CPU-private target that is unbound, thread kind or
// immediate).  Re-initialising a continuation that another thread may be
// deferring at the same moment is a caller error (the claim keeps every
// queue intact, but that deferral may read the old or the new target).  For
// a thread-kind target whose worker does not exist yet, called in thread
// context while kcont runs, it establishes the worker (kcont_establish: may
// allocate and create a thread, and returns its errors); otherwise it never
// allocates.
int kcont_init(kcont *kc, kc_fn fn, void *env, target t);

// Makes sure the worker thread for {level, thread} exists on `cpu` (or on
// every CPU for KC_CPU_ANY).  Thread context only; may allocate and create
// threads.  Returns 0, EINVAL, ENXIO (system not running), EDEADLK (called
// from interrupt context), ENOMEM, or an errno from thread creation.
int kcont_establish(level l, int cpu = KC_CPU_ANY);

// Queues kc to its target context with (obj, status) saved in it.  Returns
// true if it is now pending; false if it was already pending (it coalesces:
// it will run once, with its first obj/status, and the event is counted as
// coalesced) or chained, and also -- leaving it idle -- when kcont is not
// running, its CPU binding is >= kcont_ncpus(), or a thread-kind target has
// no worker, or a CPU-private kc is deferred off its CPU.  Any context, any
// thread; never blocks and never allocates.
// Unbound continuations go to the caller's CPU (a thread kcont does not own
// picks one by the CPU it runs on) -- except one whose function is running
// right now on a kcont thread, which goes to that CPU.  A dispatcher's
// deferral to another CPU's dispatcher is staged in a batch for that CPU
// and leaves when the batch is full, after the dispatcher's current run of
// calls (at most 64), or before it reaps or sleeps; one thread's deferrals
// to one queue always run in the order they were made.
//
// Non-reentrance: a continuation never runs on two threads at once.  A bound
// one is run by its CPU's dispatcher or its {level, CPU} worker only, one
// call at a time; an unbound one deferred while it runs is sent after its
// running call, as above.  The one exception is a continuation that is
// called directly (kcq_run: immediate, or exact context) by one thread while
// it also runs on another: immediate continuations run wherever their event
// completes, by definition.
bool kcont_defer(kcont *kc, void *obj, int status);

// Removes a pending kc from its queue so it will not run: returns true if it
// was pending and is now cancelled, false otherwise (idle, chained, already
// running or run, or a CPU-private kc cancelled off its CPU).  A cancelled kc may be deferred again
// at once; before it is freed or re-initialised call kcont_drain.  Any context.
bool kcont_cancel(kcont *kc);

// Waits until kc is neither pending nor running on any CPU (a chained kc
// stays chained: remove it with kcq_remove first).  It sleeps on a wait
// channel and is woken by the consumer that finishes the call; no polling.
// Thread context only (dispatcher: EDEADLK); from kc's own function, on any
// thread, it returns EDEADLK at once instead of waiting for itself.  0 on
// success.  A call made with no executor record (more than 512 foreign
// threads inside kcq_run at once, see kcq_run) is not visible to it.
int kcont_drain(kcont *kc);

// A snapshot of kc's state (running is reported while its function
// executes, unless it is also pending).  Any context.
kc_state kcont_state(const kcont *kc);

// ---------------------------------------------------------------- kcq

// The chain of continuations hung off an object with a pending operation.
// Safe to use from any CPU and any context; the lock is held only for list
// splicing, never while a continuation runs.
struct kcq {
  std::atomic<uint32_t> lock{0};
  kcont *head = nullptr;
  kcont *tail = nullptr;
  uint32_t count = 0;

  kcq() = default;
  kcq(const kcq &) = delete;
  kcq &operator=(const kcq &) = delete;
};

// Chains an idle kc on q.  Returns 0, EBUSY if kc is not idle (chaining a
// queued continuation is refused), or EPERM for a CPU-private kc chained off
// its CPU.  Any context.
int kcq_enqueue(kcq *q, kcont *kc);

// Unchains kc from q; returns true if it was chained there.  Any context.
bool kcq_remove(kcq *q, kcont *kc);

// Completes the event: takes every continuation off q and, for each, with
// (obj, status) saved in it, calls it now if it is immediate or its target
// is exactly the current context (same level, same kind, a CPU it may run
// on, level not masked here, nesting below 4), and otherwise defers it to
// its target.  An immediate continuation that cannot be deferred either
// (kcont stopped) is called on the spot anyway, so a sleeper is never lost;
// any other that cannot be deferred is set idle.  Returns how many will run
// (called or deferred).  Any context.
int kcq_run(kcq *q, void *obj, int status);

// Like kcq_run for the first continuation only (wakeup_one).  Returns 1 if
// one was taken and will run, 0 otherwise.
int kcq_run_one(kcq *q, void *obj, int status);

// Number of continuations chained (a snapshot).  Any context.
uint32_t kcq_count(kcq *q);

// ---------------------------------------------------------------- masks

// Holds dispatch of the levels in `set` on the calling CPU and returns the
// previous mask.  Levels not in the set are not affected.  A mask holds the
// interrupt-kind continuations queued at those levels; it does not hold the
// reaping of ring completions (their handlers are the hardware interrupt;
// what they defer is held) nor thread-kind workers.  Must be called on a
// dispatcher thread; elsewhere it returns the empty set and does nothing.
level_set spl_block(level_set set);

// Restores a mask returned by spl_block; held work of newly unmasked levels
// runs when the current handler returns.  Dispatcher thread only.
void splx(level_set saved);

// The calling CPU's current mask.
level_set spl_current();

// ---------------------------------------------------------------- pools

// A fixed pool of continuations, filled in thread context at creation.  Get
// and put take a short spinlock and never allocate or block.
struct kcont_pool;

// Creates a pool of `n` continuations that all call fn/env at target t.
// Thread context; allocates.  Returns nullptr on bad arguments.
kcont_pool *kcont_pool_create(size_t n, kc_fn fn, void *env, target t);
// Takes an idle continuation; nullptr when the pool is empty.  Any context.
kcont *kcont_pool_get(kcont_pool *p);
// Returns a continuation taken from p (typically from its own function).
// Returns 0, EBUSY if kc is pending or chained (it would be handed out while
// a queue still links it), or EINVAL if kc is not from p or was not taken.
// Any context.
int kcont_pool_put(kcont_pool *p, kcont *kc);
// Number of continuations currently available (snapshot).
size_t kcont_pool_available(kcont_pool *p);
// Destroys the pool: every continuation must have been returned.  Thread
// context.
void kcont_pool_destroy(kcont_pool *p);

// ---------------------------------------------------------------- system

struct config {
  int cpus = 0;      // dispatcher threads; 0 = one per online core
  bool pin = false;  // pin dispatcher i (and its workers) to core i
  unsigned ring_entries = 256;
  unsigned tick_ns = 1000000;  // callout tick (hz = 1e9 / tick_ns)
  // Adaptive spin: before it sleeps, a dispatcher with nothing to do polls
  // its inbox and ring for up to spin_ns (0 = off, the default: an idle
  // dispatcher sleeps at once).  Trades CPU for fewer sleeps and doorbells
  // when work arrives within the window; at most 10 ms.
  unsigned spin_ns = 0;
};

// Starts the dispatchers (and their rings).  Thread context, not from a
// kcont thread.  Returns 0, EBUSY (already running), EINVAL (bad config),
// EDEADLK (called from a kcont thread) or EIO (a dispatcher could not set
// up its ring, eventfd, timer or thread); `err` (if given) gets a
// human-readable reason such as "kcont_start: io_uring_queue_init: Operation
// not permitted (io_uring is unavailable: check kernel.io_uring_disabled,
// seccomp or container policy; kcont needs io_uring)".
int kcont_start(const config &cfg, std::string *err = nullptr);

// Stops every dispatcher and worker after they run what is pending.  Thread
// context, not from a kcont thread.  Continuations still chained are left
// alone.
void kcont_stop();

bool kcont_running();
int kcont_ncpus();

// Waits until every continuation of level `l` (both kinds, every CPU) that
// was pending or running when it was called has run or been cancelled --
// NetBSD's xc_barrier / Linux's flush_workqueue for a level.  A marker is
// sent down each {l, interrupt} queue and each existing {l, thread}
// worker's queue, behind everything already there, and it sleeps (wait
// channel) until every marker ran.  Deferrals made after it was called may
// or may not be waited for; continuations called directly by kcq_run are
// not queued and not waited for.  A level masked on a CPU holds its marker
// until unmasked.  Thread context, not a worker of level l.  Returns 0,
// EINVAL (unknown level), ENXIO (kcont not running) or EDEADLK (called on a
// dispatcher, or on a worker of level l whose own marker could never run).
int kcont_level_flush(level l);

// Runs fn(arg) on CPU `cpu`'s dispatcher in {lvl, interrupt} and waits for
// it to return (sleeping on a wait channel).  For set-up that must happen on
// a CPU (listening sockets, registering buffers).  Thread context, not a
// dispatcher.  Returns 0, EDEADLK (called on a dispatcher), EINVAL (bad cpu
// or level), or ENXIO (kcont not running).
int kcont_run_on(int cpu, level lvl, void (*fn)(void *), void *arg);

// ---------------------------------------------------------------- stats

struct level_stats {
  uint64_t deferred = 0;        // linked on this queue
  uint64_t run = 0;             // functions called from this queue
  uint64_t direct = 0;          // called directly by kcq_run (immediate/exact)
  uint64_t coalesced = 0;       // deferrals of an already pending kc
  uint64_t cancelled = 0;       // removed by kcont_cancel
  uint64_t max_depth = 0;       // deepest the queue has been
  uint64_t max_latency_ns = 0;  // queued -> dispatched, interrupt kind only,
                                // one sample per 64 dispatcher loops
  uint64_t latency_sum_ns = 0;  // the sum of those samples
  // Histogram of those samples: bucket 0 < 256 ns, bucket i (1..14) in
  // [2^(i+7), 2^(i+8)) ns, bucket 15 >= 4.19 ms.
  static constexpr int latency_buckets = 16;
  uint64_t latency_hist[latency_buckets] = {};
};

struct cpu_stats {
  uint64_t loops = 0;          // dispatcher loop iterations
  uint64_t sleeps = 0;         // times it blocked in the ring
  uint64_t doorbells = 0;      // wake-ups other threads sent it (syscalls)
  uint64_t inbox_items = 0;    // items received through the inbox
  uint64_t arm_retries = 0;    // loops that found the doorbell or timer unarmed
                               // (ring full); it does not sleep until armed
  uint64_t worker_loops = 0;   // loop iterations of this CPU's workers (all levels)
  uint64_t worker_sleeps = 0;  // times those workers blocked
  uint64_t spins = 0;          // adaptive spins (config::spin_ns) before sleeping
  uint64_t spin_hits = 0;      // of which found work (no sleep, no doorbell)
};

// One row of a counter snapshot: {cpu, level, kind} and its counters.
struct stats_row {
  int cpu = 0;
  level lvl{};
  kind k = kind::interrupt;
  level_stats s;
};

// Reads the counters of {cpu, level, kind}.  Any context; values are
// relaxed snapshots taken while the system runs.
level_stats kcont_stats(int cpu, level l, kind k);
cpu_stats kcont_cpu_stats(int cpu);

// Total doorbells (eventfd writes and futex wakes) sent since start.
uint64_t kcont_doorbells_total();

// A machine-readable snapshot of every counter, for exporters: fills
// rows[0 .. max) with one row per {cpu, registered level, kind} of every CPU
// started since the process began (zero rows included, in cpu, level, kind
// order) and returns how many rows exist (may exceed max: call again with a
// larger array).  Reads relaxed counters while everything runs; stops
// nothing, takes no lock, never allocates.  Any context.  Per-CPU counters:
// kcont_cpu_stats.
size_t kcont_stats_snapshot(stats_row *rows, size_t max);

// A printable table of all non-zero counters.  Thread context (allocates).
std::string kcont_stats_format();

}  // namespace kc
