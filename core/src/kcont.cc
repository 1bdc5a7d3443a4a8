// SPDX-License-Identifier: BSD-2-Clause
// kcont.cc -- continuations, chains (kcq), levels, executors and pools.
//
// Model: a continuation moves idle -> pending (kcont_defer) or idle ->
// chained (kcq_enqueue); a chained one is taken by kcq_run and either
// called on the spot or made pending; a pending one is popped by its
// dispatcher or worker, set idle, and called.  Every one of those moves is a
// compare-and-swap on kcont::st, so exactly one party wins each race:
//
//   defer    IDLE -> PENDING (then link), CANCELLED -> REVIVING -> PENDING
//   pop      PENDING -> IDLE (new generation; then call),
//            CANCELLED -> IDLE (then skip)
//   cancel   PENDING -> CANCELLED (the kc stays linked until popped)
//   chain    IDLE -> CHAINED (CAS, under the kcq lock)
//   kcq_run  CHAINED -> PENDING (a store under the kcq lock, which owns
//            chained continuations; then call it or link it)
//
// A cancelled continuation is unlinked lazily by its consumer; deferring it
// again revives it in place, and kcont_drain waits for the consumer to pass
// it.  Before a consumer flips PENDING -> IDLE it publishes the kc in its
// executor's `running` slot, so kcont_drain, which reads the state word,
// then the slots, then the state word again (and requires it unchanged,
// generation included), can never see "idle and not running" while a
// function is about to run or has re-deferred itself.
//
// Levels are registered before kcont_start; at start each gets a dispatch
// slot so that "the highest pending slot" is the highest-ranked pending
// level.  Slots are an implementation of ranks, never exposed as an order
// between levels.
#include <errno.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

#include "internal.h"
#include "kcont/sleepq.h"

namespace kc {
namespace detail {

system_state g_sys;

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// ------------------------------------------------------------ executors

namespace {
// Foreign threads get a record from this fixed table the first time they
// call kcq_run; it is returned when the thread exits.
constexpr int max_foreign = 512;
executor g_foreign[max_foreign];

// Every record that can exist: a dispatcher per CPU, a worker per {CPU,
// level}, and the foreign table.  Records live for the whole process and are
// registered once each, so the table cannot overflow by construction.
constexpr int max_executors = max_cpus + max_cpus * max_levels + max_foreign;
std::atomic<executor *> g_execs[max_executors];
std::atomic<int> g_nexec{0};

struct foreign_slot {
  executor *ex = nullptr;
  ~foreign_slot() {
    if (ex) ex->in_use.store(false, std::memory_order_release);
  }
};
}  // namespace

constinit thread_local executor *tl_exec = nullptr;
thread_local foreign_slot tl_foreign;

executor *current_executor() { return tl_exec; }

void register_executor(executor *ex) {
  // Records are never removed: dispatchers and workers reuse their records
  // across restarts, and a record is looked up by pointer before it is added.
  int n = g_nexec.load(std::memory_order_acquire);
  for (int i = 0; i < n; i++)
    if (g_execs[i].load(std::memory_order_relaxed) == ex) return;
  static std::mutex m;
  std::lock_guard<std::mutex> g(m);
  n = g_nexec.load(std::memory_order_relaxed);
  for (int i = 0; i < n; i++)
    if (g_execs[i].load(std::memory_order_relaxed) == ex) return;
  if (n >= max_executors) {
    // Unreachable by construction (see max_executors); if it ever is,
    // kcont_drain could miss a running function: stop rather than lie.
    std::fprintf(stderr, "kcont: executor table full (%d records): internal error\n", n);
    std::abort();
  }
  g_execs[n].store(ex, std::memory_order_relaxed);
  g_nexec.store(n + 1, std::memory_order_release);
}

void set_thread_executor(executor *ex) {
  if (ex) register_executor(ex);
  tl_exec = ex;
}

executor *current_or_foreign_executor() {
  if (tl_exec) return tl_exec;
  if (tl_foreign.ex) return tl_foreign.ex;
  for (auto &f : g_foreign) {
    bool expect = false;
    if (f.in_use.compare_exchange_strong(expect, true)) {
      f.c = nullptr;
      f.dispatcher = false;
      f.depth = 0;
      f.in_context = false;
      register_executor(&f);
      tl_foreign.ex = &f;
      return &f;
    }
  }
  return nullptr;
}

void for_each_executor(void (*fn)(executor *, void *), void *arg) {
  int n = g_nexec.load(std::memory_order_acquire);
  for (int i = 0; i < n; i++) fn(g_execs[i].load(std::memory_order_relaxed), arg);
}

bool executor_runs(const executor *ex, const kcont *kc) {
  for (auto &r : ex->running)
    if (r.load(std::memory_order_acquire) == kc) return true;
  return false;
}

bool kc_is_running(const kcont *kc) {
  int n = g_nexec.load(std::memory_order_acquire);
  for (int i = 0; i < n; i++)
    if (executor_runs(g_execs[i].load(std::memory_order_relaxed), kc)) return true;
  return false;
}

// ------------------------------------------------------------ fences, drainers

bool g_membarrier = false;
std::atomic<uint32_t> g_drainers{0};

void fences_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_membarrier = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  });
}

void heavy_fence() {
  if (g_membarrier && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return;
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void wake_drainers(const kcont *kc) { wakeup(kc); }

// ------------------------------------------------------------ levels

uint32_t slots_of(level_set s) {
  uint32_t out = 0, b = s.bits();
  while (b) {
    int id = __builtin_ctz(b);
    b &= b - 1;
    if (id < max_levels && sys().levels[id].used) out |= 1u << sys().level_slot[id];
  }
  return out;
}

level_set levels_of_slots(uint32_t slots) {
  level_set s;
  while (slots) {
    int sl = __builtin_ctz(slots);
    slots &= slots - 1;
    s.add(level{sys().slot_to_level[sl]});
  }
  return s;
}

namespace {
struct builtin_levels {
  builtin_levels() {
    // Ranks: hard levels above soft ones; within each group the classic
    // NetBSD service order (serial, clock, net, bio / serial, net, bio,
    // clock).  Ranks choose service order only; they never mask.
    static const struct {
      const char *name;
      int rank;
    } b[] = {{"clock", 70},     {"bio", 50},     {"net", 60},     {"serial", 80},
             {"softclock", 10}, {"softbio", 20}, {"softnet", 30}, {"softserial", 40}};
    auto &s = sys();
    for (const auto &e : b) {
      level_info &li = s.levels[s.nlevels++];
      std::snprintf(li.name, sizeof li.name, "%s", e.name);
      li.rank = e.rank;
      li.used = true;
    }
  }
};
}  // namespace

void ensure_builtin_levels() { static builtin_levels once; }

// Assigns dispatch slots by rank (ties: registration order first).
void assign_slots() {
  auto &s = sys();
  for (int i = 0; i < s.nlevels; i++) {
    int below = 0;
    for (int j = 0; j < s.nlevels; j++) {
      if (j == i) continue;
      if (s.levels[j].rank < s.levels[i].rank || (s.levels[j].rank == s.levels[i].rank && j > i))
        below++;
    }
    s.level_slot[i] = uint8_t(below);
    s.slot_to_level[below] = uint8_t(i);
  }
}

// ------------------------------------------------------------ linking

int home_cpu() {
  executor *ex = tl_exec;
  if (ex && ex->c) return ex->c->id;
  int n = sys().ncpus;
  int c = sched_getcpu();
  if (c < 0) c = 0;
  return n > 0 ? c % n : 0;
}

bool is_exact_context(const executor *ex, const kcont *kc) {
  if (!ex->in_context || ex->c == nullptr) return false;
  const target &t = kc->tgt;
  if (t.lvl != ex->cur_level || t.k != ex->cur_kind) return false;
  if (t.cpu != KC_CPU_ANY && t.cpu != ex->c->id) return false;
  if (t.k == kind::interrupt && (ex->c->spl_slots & slot_bit(t.lvl))) return false;
  return true;
}

}  // namespace detail

using namespace detail;

// ------------------------------------------------------------ levels API

int kcont_level_register(const char *name, int rank, level *out) {
  ensure_builtin_levels();
  auto &s = sys();
  if (!name || !*name || std::strlen(name) >= sizeof(level_info::name)) return EINVAL;
  std::lock_guard<std::mutex> g(s.admin);
  if (s.running.load()) return EBUSY;
  for (int i = 0; i < s.nlevels; i++)
    if (std::strcmp(s.levels[i].name, name) == 0) return EEXIST;
  if (s.nlevels >= max_levels) return ENOSPC;
  level_info &li = s.levels[s.nlevels];
  std::snprintf(li.name, sizeof li.name, "%s", name);
  li.rank = rank;
  li.used = true;
  if (out) *out = level{uint8_t(s.nlevels)};
  s.nlevels++;
  return 0;
}

bool kcont_level_lookup(const char *name, level *out) {
  ensure_builtin_levels();
  auto &s = sys();
  for (int i = 0; i < s.nlevels; i++)
    if (name && std::strcmp(s.levels[i].name, name) == 0) {
      if (out) *out = level{uint8_t(i)};
      return true;
    }
  return false;
}

const char *kcont_level_name(level l) {
  ensure_builtin_levels();
  if (l.id >= max_levels || !sys().levels[l.id].used) return "?";
  return sys().levels[l.id].name;
}

int kcont_level_rank(level l) {
  ensure_builtin_levels();
  if (l.id >= max_levels || !sys().levels[l.id].used) return 0;
  return sys().levels[l.id].rank;
}

int kcont_level_count() {
  ensure_builtin_levels();
  return sys().nlevels;
}

// ------------------------------------------------------------ contexts

context kcont_current_context() {
  executor *ex = tl_exec;
  if (!ex || !ex->in_context || !ex->c) return context{};
  return context{ex->cur_level, ex->cur_kind, true};
}

int kcont_current_cpu() {
  executor *ex = tl_exec;
  return ex && ex->c ? ex->c->id : -1;
}

bool kcont_in_interrupt() {
  executor *ex = tl_exec;
  return ex && ex->dispatcher;
}

// ------------------------------------------------------------ kcont

int kcont_init(kcont *kc, kc_fn fn, void *env, target t) {
  ensure_builtin_levels();
  if (!kc || !fn) return EINVAL;
  if (t.lvl.id >= sys().nlevels) return EINVAL;
  if (t.cpu != KC_CPU_ANY && (t.cpu < 0 || t.cpu >= max_cpus)) return EINVAL;
  if (t.cpu_private && (t.cpu == KC_CPU_ANY || t.k != kind::interrupt || t.immediate))
    return EINVAL;
  executor *ex = tl_exec;
  uint64_t w = kc->st.load(std::memory_order_acquire);
  for (;;) {
    if (st_of(w) != ST_IDLE) return EBUSY;
    if ((w & ST_BIASED) && !is_bias_owner(ex, w)) {
      // A CPU-private continuation in use belongs to its CPU's dispatcher;
      // a biased one is taken from its owner before it can be claimed.
      if (w & ST_PRIVATE) {
        if (sys().running.load(rlx)) return EPERM;
      } else {
        unbias(kc);
        w = kc->st.load(std::memory_order_acquire);
        continue;
      }
    }
    // IDLE -> INIT claims the fields: of two concurrent inits (or an init
    // racing a defer) exactly one wins; the other gets EBUSY / false.
    if (kc->st.compare_exchange_strong(w, st_with(w, ST_INIT), std::memory_order_acquire, rlx))
      break;
  }
  kc->fn = fn;
  kc->env = env;
  kc->obj.store(nullptr, rlx);
  kc->status.store(0, rlx);
  kc->tgt = t;
  kc->next = kc->prev = nullptr;
  kc->chain = nullptr;
  kc->ran_on.store(nullptr, rlx);
  kc->bias_streak.store(0, rlx);
  // New flags: a CPU-private continuation is biased to its CPU for life.
  uint64_t idle = st_with(st_unbiased(w) & ~ST_PRIVATE, ST_IDLE);
  if (t.cpu_private) idle = st_biased_to(idle, t.cpu) | ST_PRIVATE;
  kc->st.store(idle, std::memory_order_release);
  // A thread target needs its worker; create it here when we may (the
  // check is lock-free when the workers already exist).
  if (t.k == kind::thread && sys().running.load() && !kcont_in_interrupt() &&
      !workers_ready(t.lvl, t.cpu)) {
    int e = kcont_establish(t.lvl, t.cpu);
    if (e != 0 && e != ENXIO) return e;
  }
  return 0;
}

namespace detail {
// Takes the bias of kc away from its owner (see internal.h).  The
// asymmetric Dekker handshake: we publish `unbias`, then membarrier() makes
// every running thread of the process pass a full barrier, so the owner
// either sees `unbias` at its next section entry (and uses compare-and-swap
// from then on) or is inside a section that began before -- which fast_seq
// shows as odd, and which we wait out (a few instructions; the owner never
// waits for anything inside one).  Then nobody stores plainly any more and
// a compare-and-swap clears the flag.
void unbias(kcont *kc) {
  uint64_t w = kc->st.load(std::memory_order_acquire);
  if (!(w & ST_BIASED) || (w & ST_PRIVATE)) return;
  kc->bias_streak.store(0, rlx);
  kc->unbias.fetch_add(1, std::memory_order_seq_cst);
  heavy_fence();
  if (cpu *c = cpu_record(st_owner(w))) {
    const uint32_t s = c->fast_seq.load(std::memory_order_acquire);
    for (int i = 0; (s & 1) && c->fast_seq.load(std::memory_order_acquire) == s; i++) {
      if (i < 64)
        cpu_relax();
      else
        sched_yield();  // the owner was preempted inside its section
    }
  }
  w = kc->st.load(std::memory_order_acquire);
  while ((w & ST_BIASED) && !(w & ST_PRIVATE) &&
         !kc->st.compare_exchange_weak(w, st_unbiased(w), std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
  }
  // Only now may the owner bias it again (maybe_bias reads the count): had
  // it re-enabled plain stores between our announcement and the clear, a
  // section of its own could overlap our compare-and-swaps.
  kc->unbias.fetch_sub(1, std::memory_order_release);
}
}  // namespace detail

namespace {
__attribute__((noinline, cold)) void count_coalesced(kcont *kc) {
  int c = kc->tgt.cpu != KC_CPU_ANY ? kc->tgt.cpu : home_cpu();
  if (c < sys().ncpus && sys().cpus[c])
    sys().cpus[c]->stats[kc->tgt.lvl.id][int(kc->tgt.k)].coalesced.fetch_add(1, rlx);
}

// IDLE -> PENDING by the owner of a biased continuation, inside its
// plain-store section (or CPU-private), and the link on its queue.
template <bool stamp>
__attribute__((always_inline)) inline void owned_make_pending(cpu *c, kcont *kc, void *obj,
                                                              int status, uint64_t w) {
  KC_ASSERT(st_of(w) == ST_IDLE, "only an idle continuation becomes pending this way");
  KC_ASSERT((w & ST_BIASED) && is_bias_owner(current_executor(), w),
            "a biased continuation is moved with plain stores by its owner's dispatcher alone");
  kc->obj.store(obj, rlx);
  kc->status.store(status, rlx);
  kc->st.store(st_with(w, ST_PENDING), std::memory_order_release);
  local_link<stamp>(c, kc);
}

// The owner's deferral of a biased continuation (CPU-private, or bound and
// biased): only its dispatcher writes its state, with plain stores (others
// move a CPU-private one only out of CHAINED, under a kcq lock, and the
// owner never writes a chained one).  Returns 1 (now pending), 0 (already
// pending, or chained) or -1 (an unbias is in progress: use the CAS path).
__attribute__((always_inline)) inline int defer_owned(cpu *c, kcont *kc, void *obj, int status,
                                                      uint64_t w) {
  KC_ASSERT(on_dispatcher_of(c) && is_bias_owner(current_executor(), w),
            "the owner's deferral runs on the owner's dispatcher");
  const bool shared = !(w & ST_PRIVATE);
  if (shared) {
    if (!bias_enter(c, kc)) return -1;
    w = kc->st.load(rlx);
    if (!(w & ST_BIASED)) {  // taken away before we entered: CAS path
      bias_leave(c);
      return -1;
    }
  }
  int r = 0;
  switch (st_of(w)) {
    case ST_IDLE:
      owned_make_pending<true>(c, kc, obj, status, w);
      r = 1;
      break;
    case ST_CANCELLED:  // still linked: revive in place, new generation
      kc->obj.store(obj, rlx);
      kc->status.store(status, rlx);
      kc->st.store(st_with(w + ST_GEN, ST_PENDING), std::memory_order_release);
      r = 1;
      break;
    case ST_PENDING:
      count_coalesced(kc);
      break;
    default:
      break;  // chained
  }
  if (shared) bias_leave(c);
  return r;
}

// The word to compare-and-swap from: a biased word is first taken from its
// owner when the caller is not the owner.  False for a CPU-private kc off
// its CPU (refused).
inline bool cas_ready(kcont *kc, uint64_t &w, const executor *ex) {
  while ((w & ST_BIASED) && !is_bias_owner(ex, w)) {
    if (w & ST_PRIVATE) return false;
    unbias(kc);
    w = kc->st.load(std::memory_order_acquire);
  }
  return true;
}

// The owner's CAS deferral counts a streak; after bias_streak_min in a row
// the continuation becomes biased to it (bound, interrupt kind, not
// immediate, and membarrier available for the other side of the handshake).
inline uint64_t maybe_bias(kcont *kc, const executor *ex, uint64_t nw) {
  const target &t = kc->tgt;
  if (!g_membarrier || !ex || ex->owner_cpu != t.cpu || t.k != kind::interrupt || t.immediate)
    return nw;
  uint8_t s = kc->bias_streak.load(rlx);
  if (s < bias_streak_min) {
    kc->bias_streak.store(uint8_t(s + 1), rlx);
    return nw;
  }
  // Not while another thread is taking the bias away (see unbias).
  if (kc->unbias.load(std::memory_order_acquire) != 0) return nw;
  return st_biased_to(nw, t.cpu);
}
}  // namespace

namespace {
// Every deferral that is not the owner's plain-store one.
__attribute__((noinline)) bool defer_cas(kcont *kc, void *obj, int status) {
  if (!sys().running.load(rlx)) return false;
  executor *ex = tl_exec;
  uint64_t w = kc->st.load(std::memory_order_acquire);
  for (;;) {
    if (!cas_ready(kc, w, ex)) return false;  // CPU-private, off its CPU
    switch (st_of(w)) {
      case ST_IDLE:
        if (kc->st.compare_exchange_weak(w, maybe_bias(kc, ex, st_with(w, ST_PENDING)),
                                         std::memory_order_acquire, rlx)) {
          kc->obj.store(obj, rlx);
          kc->status.store(status, rlx);
          return link_pending(kc);
        }
        continue;  // w now holds the current word
      case ST_CANCELLED:
        // Still linked where it was cancelled: revive it in place.  The
        // generation changes so a consumer that read the old fields cannot
        // claim it with them.
        if (kc->st.compare_exchange_weak(w, st_with(w + ST_GEN, ST_REVIVING),
                                         std::memory_order_acquire, rlx)) {
          kc->obj.store(obj, rlx);
          kc->status.store(status, rlx);
          kc->st.store(st_with(w + ST_GEN, ST_PENDING), std::memory_order_release);
          return true;
        }
        continue;
      case ST_PENDING:
      case ST_REVIVING:
        count_coalesced(kc);
        return false;
      default:
        return false;  // chained: the event will run it
    }
  }
}
}  // namespace

namespace {
// defer_owned out of line: the owner's cases other than idle -> pending.
__attribute__((noinline)) bool defer_owned_other(cpu *c, kcont *kc, void *obj, int status,
                                                 uint64_t w) {
  const int r = defer_owned(c, kc, obj, status, w);
  return r >= 0 ? r != 0 : defer_cas(kc, obj, status);
}
}  // namespace

bool kcont_defer(kcont *kc, void *obj, int status) {
  // Fast path: the owner of a biased continuation (its own dispatcher).
  const uint64_t w = kc->st.load(std::memory_order_acquire);
  executor *ex = tl_exec;
  if ((w & ST_BIASED) && is_bias_owner(ex, w) && sys().running.load(rlx)) {
    cpu *const c = ex->c;
    // The common case, idle -> pending with no latency stamp to take, is
    // defer_owned's first case written as a leaf: everything else (and
    // every call) is out of line, so this path saves no registers.
    if (st_of(w) == ST_IDLE && !c->stamp_armed) {
      const bool shared = !(w & ST_PRIVATE);
      if (!shared || bias_enter(c, kc)) {
        const uint64_t now = shared ? kc->st.load(rlx) : w;
        if (now == w) {  // still biased and idle (only the owner changes it)
          owned_make_pending<false>(c, kc, obj, status, w);
          if (shared) bias_leave(c);
          return true;
        }
        if (shared) bias_leave(c);
      }
    }
    return defer_owned_other(c, kc, obj, status, w);
  }
  return defer_cas(kc, obj, status);
}

bool kcont_cancel(kcont *kc) {
  executor *ex = tl_exec;
  uint64_t w = kc->st.load(std::memory_order_acquire);
  if ((w & ST_BIASED) && is_bias_owner(ex, w)) {
    const bool shared = !(w & ST_PRIVATE);
    if (!shared || bias_enter(ex->c, kc)) {
      w = kc->st.load(rlx);
      if (w & ST_BIASED) {
        const bool r = st_of(w) == ST_PENDING;
        if (r) kc->st.store(st_with(w, ST_CANCELLED), std::memory_order_release);
        if (shared) bias_leave(ex->c);
        return r;
      }
      bias_leave(ex->c);  // taken away before we entered: CAS path
    }
    w = kc->st.load(std::memory_order_acquire);
  }
  for (;;) {
    if (!cas_ready(kc, w, ex)) return false;  // CPU-private, off its CPU
    switch (st_of(w)) {
      case ST_PENDING:
        if (kc->st.compare_exchange_weak(w, st_with(w, ST_CANCELLED), std::memory_order_acq_rel,
                                         rlx))
          return true;
        continue;
      case ST_REVIVING:  // a deferral is finishing; it stores PENDING next
        cpu_relax();
        w = kc->st.load(rlx);
        continue;
      default:
        return false;
    }
  }
}

namespace {
bool pendingish(uint64_t w) {
  uint32_t s = st_of(w);
  return s == ST_PENDING || s == ST_CANCELLED || s == ST_REVIVING;
}
}  // namespace

namespace {
// Neither pending nor running: state first, running slots second, the same
// state word again (see the file comment).  The generation makes "idle,
// after another run started" differ from "idle".
bool kc_quiet(void *arg) {
  auto *kc = static_cast<kcont *>(arg);
  uint64_t w1 = kc->st.load(std::memory_order_acquire);
  return !pendingish(w1) && st_of(w1) != ST_INIT && !kc_is_running(kc) &&
         kc->st.load(std::memory_order_acquire) == w1;
}
}  // namespace

int kcont_drain(kcont *kc) {
  if (kcont_in_interrupt()) return EDEADLK;
  executor *self = tl_exec ? tl_exec : tl_foreign.ex;
  if (self)
    for (int i = 0; i < self->depth; i++)
      if (self->running[i].load(rlx) == kc) return EDEADLK;  // draining itself
  if (kc_quiet(kc)) return 0;
  // Sleep on the continuation's address; every consumer that finishes a
  // call (or skips a cancelled one) wakes it while g_drainers is non-zero.
  g_drainers.fetch_add(1, std::memory_order_seq_cst);
  int e = sleep_until(kc, kc_quiet, kc);
  g_drainers.fetch_sub(1, std::memory_order_relaxed);
  return e;
}

kc_state kcont_state(const kcont *kc) {
  switch (st_of(kc->st.load(std::memory_order_acquire))) {
    case ST_CHAINED:
      return kc_state::chained;
    case ST_PENDING:
    case ST_REVIVING:
      return kc_state::pending;
    default:
      return kc_is_running(kc) ? kc_state::running : kc_state::idle;
  }
}

namespace detail {

// The compare-and-swap half of call_direct (internal.h): PENDING -> IDLE
// wins the race against kcont_cancel; a cancelled one is set idle and
// skipped.  The fields are read before the claim and the claim compares the
// generation, so a cancel-and-revive in between can never run stale fields.
// The caller published kc in ex->running[d] (kcont_drain).
bool call_direct_cas(executor *ex, kcont *kc, int d) {
  bool call = false;
  kc_fn fn = nullptr;
  void *obj = nullptr, *env = nullptr;
  int status = 0;
  // Where it runs, for a deferral that races this call (link_pending sends
  // an unbound continuation that is running to the CPU running it).
  kc->ran_on.store(ex, rlx);
  for (;;) {
    uint64_t w = kc->st.load(std::memory_order_acquire);
    if ((w & ST_BIASED) && !(w & ST_PRIVATE) && !is_bias_owner(ex, w)) {
      unbias(kc);  // not ours (defensive: biased ones run on their owner)
      continue;
    }
    uint32_t s = st_of(w);
    if (s == ST_PENDING) {
      fn = kc->fn;
      env = kc->env;
      obj = kc->obj.load(rlx);
      status = kc->status.load(rlx);
      if (kc->st.compare_exchange_strong(w, st_with(w + ST_GEN, ST_IDLE), std::memory_order_seq_cst,
                                         rlx)) {
        call = true;
        break;
      }
    } else if (s == ST_CANCELLED) {
      if (kc->st.compare_exchange_strong(w, st_with(w, ST_IDLE), std::memory_order_seq_cst, rlx))
        break;
    } else {
      KC_ASSERT(s == ST_REVIVING, "a queued continuation is pending, cancelled or being revived");
      cpu_relax();  // ST_REVIVING: the reviver stores PENDING next
    }
  }
  if (call) fn(obj, env, status);
  return call_finish(ex, kc, d, call);
}

// Calls a PENDING continuation with no executor record (no slot left, or
// nesting at its limit while nothing can take a deferral).  kcont_drain
// cannot see such a call; only immediate continuations get here.
void call_untracked(kcont *kc) {
  for (;;) {
    uint64_t w = kc->st.load(std::memory_order_acquire);
    if (st_of(w) == ST_CANCELLED) {
      if (kc->st.compare_exchange_strong(w, st_with(w, ST_IDLE), std::memory_order_seq_cst, rlx))
        return;
      continue;
    }
    if (st_of(w) != ST_PENDING) {
      cpu_relax();
      continue;
    }
    kc_fn fn = kc->fn;
    void *env = kc->env, *obj = kc->obj.load(rlx);
    int status = kc->status.load(rlx);
    if (kc->st.compare_exchange_strong(w, st_with(w + ST_GEN, ST_IDLE), std::memory_order_seq_cst,
                                       rlx)) {
      fn(obj, env, status);
      return;
    }
  }
}

}  // namespace detail

// ------------------------------------------------------------ kcq

namespace {
void kcq_unlink_locked(kcq *q, kcont *kc) {
  if (kc->prev)
    kc->prev->next = kc->next;
  else
    q->head = kc->next;
  if (kc->next)
    kc->next->prev = kc->prev;
  else
    q->tail = kc->prev;
  kc->next = kc->prev = nullptr;
  kc->chain = nullptr;
  q->count--;
}

// Finishes what kcq_run took: call now where the context is exact, defer
// otherwise.  Each kc in `list` is PENDING (taken off the chain under its
// lock, so a concurrent kcont_defer coalesces), obj/status set, unlinked.
// An immediate continuation that cannot be deferred (kcont stopped) is
// called here anyway, so a sleeper is never lost; any other that cannot be
// deferred is set idle and not counted.  Returns how many were dropped.
int run_taken(kcont *list) {
  executor *ex = nullptr;
  bool have_ex = false;
  int dropped = 0;
  while (list) {
    kcont *kc = list;
    list = kc->next;
    kc->next = nullptr;
    if (!have_ex) {
      ex = current_or_foreign_executor();
      have_ex = true;
    }
    bool now = ex && ex->depth < max_nesting && (kc->tgt.immediate || is_exact_context(ex, kc));
    if (now) {
      if (ex->c)
        ex->c->stats[kc->tgt.lvl.id][int(kc->tgt.k)].direct.fetch_add(1, std::memory_order_relaxed);
      call_direct(ex, kc);
    } else if (try_link(kc)) {
      // deferred
    } else if (kc->tgt.immediate) {
      if (ex && ex->depth < max_nesting)
        call_direct(ex, kc);
      else
        call_untracked(kc);
    } else {
      set_idle_unlinked(kc);
      dropped++;
    }
  }
  return dropped;
}
}  // namespace

namespace {
// IDLE -> CHAINED.  A chained continuation is moved by whoever runs the
// chain, so the owner's claim drops the bias (a CPU-private one keeps it:
// only its own dispatcher writes it outside the chain).  EAGAIN: biased to
// another CPU -- unbias outside the kcq lock and retry.
int chain_claim(kcont *kc, const executor *ex) {
  uint64_t w = kc->st.load(std::memory_order_acquire);
  while (st_of(w) == ST_IDLE) {
    uint64_t nw = st_with(w, ST_CHAINED);
    if ((w & ST_BIASED) && !(w & ST_PRIVATE)) {
      if (!is_bias_owner(ex, w)) return EAGAIN;
      nw = st_unbiased(nw);
    }
    if (kc->st.compare_exchange_weak(w, nw, std::memory_order_acq_rel, rlx)) return 0;
  }
  return EBUSY;
}
}  // namespace

// Chains kc at q's tail, saving `key` as its obj when asked (sleepq keeps
// the wait channel there; doing it under the lock means a refused chain
// never touches a pending continuation's fields).
int chain_append(kcq *q, kcont *kc, bool keyed, const void *key) {
  executor *ex = tl_exec;
  for (;;) {
    uint64_t w = kc->st.load(std::memory_order_acquire);
    if ((w & ST_PRIVATE) && !is_bias_owner(ex, w)) return EPERM;
    if ((w & ST_BIASED) && !is_bias_owner(ex, w)) unbias(kc);  // before the lock
    spinlock g(q->lock);
    int e = chain_claim(kc, ex);
    if (e == EAGAIN) continue;  // biased again meanwhile
    if (e) return e;
    if (keyed) kc->obj.store(const_cast<void *>(key), rlx);
    kc->next = nullptr;
    kc->prev = q->tail;
    if (q->tail)
      q->tail->next = kc;
    else
      q->head = kc;
    q->tail = kc;
    kc->chain = q;
    q->count++;
    return 0;
  }
}

int kcq_enqueue(kcq *q, kcont *kc) { return chain_append(q, kc, false, nullptr); }

bool kcq_remove(kcq *q, kcont *kc) {
  spinlock g(q->lock);
  uint64_t w = kc->st.load(std::memory_order_acquire);
  if (st_of(w) != ST_CHAINED || kc->chain != q) return false;
  kcq_unlink_locked(q, kc);
  kc->st.store(st_with(w, ST_IDLE), std::memory_order_release);
  return true;
}

namespace {
int kcq_take(kcq *q, void *obj, int status, bool one, bool (*match)(kcont *, void *), void *key) {
  kcont *list = nullptr, **tail = &list;
  int n = 0;
  {
    spinlock g(q->lock);
    kcont *kc = q->head;
    while (kc) {
      kcont *next = kc->next;
      if (!match || match(kc, key)) {
        kcq_unlink_locked(q, kc);
        kc->obj.store(obj, rlx);
        kc->status.store(status, rlx);
        // CHAINED -> PENDING: ours now; a concurrent kcont_defer coalesces.
        kc->st.store(st_with(kc->st.load(rlx), ST_PENDING), std::memory_order_release);
        *tail = kc;
        tail = &kc->next;
        n++;
        if (one) break;
      }
      kc = next;
    }
  }
  return n - run_taken(list);
}
}  // namespace

int kcq_run(kcq *q, void *obj, int status) {
  return kcq_take(q, obj, status, false, nullptr, nullptr);
}

int kcq_run_one(kcq *q, void *obj, int status) {
  return kcq_take(q, obj, status, true, nullptr, nullptr);
}

uint32_t kcq_count(kcq *q) {
  spinlock g(q->lock);
  return q->count;
}

namespace detail {
// For sleepq: chain kc with its wait channel saved as obj.
int kcq_enqueue_keyed(kcq *q, kcont *kc, const void *key) { return chain_append(q, kc, true, key); }

static bool match_key(kcont *kc, void *key) { return kc->obj.load(rlx) == key; }

int kcq_run_keyed(kcq *q, const void *key, int status, bool one) {
  return kcq_take(q, const_cast<void *>(key), status, one, match_key, const_cast<void *>(key));
}
}  // namespace detail

// ------------------------------------------------------------ pools

struct kcont_pool {
  kcont *items = nullptr;
  size_t n = 0;
  std::atomic<uint32_t> lock{0};
  kcont **free = nullptr;
  bool *out = nullptr;  // out[i]: items[i] is taken
  size_t nfree = 0;
};

kcont_pool *kcont_pool_create(size_t n, kc_fn fn, void *env, target t) {
  if (n == 0 || !fn) return nullptr;
  auto *p = new (std::nothrow) kcont_pool;
  if (!p) return nullptr;
  p->items = new (std::nothrow) kcont[n];
  p->free = new (std::nothrow) kcont *[n];
  p->out = new (std::nothrow) bool[n]();
  if (!p->items || !p->free || !p->out) {
    delete[] p->items;
    delete[] p->free;
    delete[] p->out;
    delete p;
    return nullptr;
  }
  p->n = n;
  for (size_t i = 0; i < n; i++) {
    if (kcont_init(&p->items[i], fn, env, t) != 0) {
      delete[] p->items;
      delete[] p->free;
      delete[] p->out;
      delete p;
      return nullptr;
    }
    p->free[i] = &p->items[n - 1 - i];
  }
  p->nfree = n;
  return p;
}

kcont *kcont_pool_get(kcont_pool *p) {
  spinlock g(p->lock);
  if (!p->nfree) return nullptr;
  kcont *kc = p->free[--p->nfree];
  p->out[kc - p->items] = true;
  return kc;
}

int kcont_pool_put(kcont_pool *p, kcont *kc) {
  if (!p || kc < p->items || kc >= p->items + p->n) return EINVAL;
  // Pending or chained: it would be handed out while a queue still links it.
  uint32_t st = st_of(kc->st.load(std::memory_order_acquire));
  if (st != ST_IDLE) return EBUSY;
  spinlock g(p->lock);
  size_t i = size_t(kc - p->items);
  if (!p->out[i]) return EINVAL;  // not taken (a second put)
  p->out[i] = false;
  p->free[p->nfree++] = kc;
  return 0;
}

size_t kcont_pool_available(kcont_pool *p) {
  spinlock g(p->lock);
  return p->nfree;
}

void kcont_pool_destroy(kcont_pool *p) {
  if (!p) return;
  for (size_t i = 0; i < p->n; i++) kcont_drain(&p->items[i]);
  delete[] p->items;
  delete[] p->free;
  delete[] p->out;
  delete p;
}

// ------------------------------------------------------------ level flush

namespace {
struct level_flush_state {
  std::atomic<int> left{0};
};
void flush_marker(void *, void *env, int) {
  auto *f = static_cast<level_flush_state *>(env);
  if (f->left.fetch_sub(1, std::memory_order_seq_cst) == 1) {
    light_fence();
    wakeup(f);  // the address as a key only: the waiter may be gone
  }
}
}  // namespace

int kcont_level_flush(level l) {
  if (kcont_in_interrupt()) return EDEADLK;
  if (l.id >= kcont_level_count()) return EINVAL;
  if (!kcont_running()) return ENXIO;
  context cur = kcont_current_context();
  if (cur.valid && cur.k == kind::thread && cur.lvl == l) return EDEADLK;
  // Two markers per CPU at most: {l, interrupt} and {l, thread} if its
  // worker exists.  They live on this stack until every one has run.
  kcont markers[2 * max_cpus];
  level_flush_state f;
  const int n = kcont_ncpus();
  f.left.store(2 * n + 1, std::memory_order_relaxed);  // +1: ours, dropped below
  // A marker that cannot be sent is counted as run at once.
  auto send = [&](kcont *m, target t) {
    if (kcont_init(m, flush_marker, &f, t) != 0 || !kcont_defer(m, nullptr, 0))
      f.left.fetch_sub(1, std::memory_order_relaxed);
  };
  for (int c = 0; c < n; c++) {
    send(&markers[2 * size_t(c)], target::at(l, kind::interrupt, int16_t(c)));
    // A thread marker only where the worker exists (init would create it).
    if (workers_ready(l, c))
      send(&markers[2 * size_t(c) + 1], target::in_thread(l, int16_t(c)));
    else
      f.left.fetch_sub(1, std::memory_order_relaxed);
  }
  flush_marker(nullptr, &f, 0);  // our +1
  sleep_until(
      &f,
      [](void *a) {
        return static_cast<level_flush_state *>(a)->left.load(std::memory_order_seq_cst) == 0;
      },
      &f);
  for (auto &m : markers) kcont_drain(&m);
  return 0;
}

// ------------------------------------------------------------ run on a CPU

namespace {
struct run_on_job {
  void (*fn)(void *);
  void *arg;
  std::atomic<bool> done{false};
};
}  // namespace

int kcont_run_on(int cpu, level lvl, void (*fn)(void *), void *arg) {
  if (kcont_in_interrupt()) return EDEADLK;
  if (!fn || cpu < 0 || lvl.id >= kcont_level_count()) return EINVAL;
  if (!kcont_running()) return ENXIO;
  if (cpu >= kcont_ncpus()) return EINVAL;
  run_on_job j{fn, arg};
  kcont k;
  int e = kcont_init(
      &k,
      [](void *, void *env, int) {
        auto *jb = static_cast<run_on_job *>(env);
        jb->fn(jb->arg);
        jb->done.store(true, std::memory_order_seq_cst);
        wakeup(jb);  // the address as a key only: the waiter may be gone
      },
      &j, target::at(lvl, kind::interrupt, int16_t(cpu)));
  if (e) return e;
  if (!kcont_defer(&k, nullptr, 0)) return ENXIO;
  sleep_until(
      &j,
      [](void *a) { return static_cast<run_on_job *>(a)->done.load(std::memory_order_seq_cst); },
      &j);
  kcont_drain(&k);
  return 0;
}

}  // namespace kc
