// SPDX-License-Identifier: BSD-2-Clause
// vfs.cc -- the VFS core: requests, the road each one takes, the vnode
// cache, credentials.
//
// Model: vop_start resolves the request's handles from the mount's vnode
// cache and lets the backend try the operation in the caller's interrupt
// context (backend->start).  A cache miss, or a backend that answers
// VB_BLOCK, sends the request to thread context: it is handed to one of
// the VFS's *lanes* -- a workqueue level ("vfs0".."vfs3" by default, up to
// "vfs15": vfs_config::lanes_per_cpu) on one CPU, each served by one worker
// thread -- but only to a free one: with every lane busy it waits in the
// subsystem's ready FIFO, and the next worker to finish takes it.  No
// request ever waits behind a worker that is in another request, so a
// worker stuck in a file system that does not answer holds that request
// and nothing more.  A file system (every mount of one device:
// thread_share) may hold at most its share's limit of requests in thread
// context at once (share_limit: the export's `threads=`, else mount_share
// -- two per CPU by default); more of its requests wait in the share's
// FIFO, taking no worker, and go as its running ones finish (behind the
// ready FIFO's, on the finishing worker itself) -- a hung file system
// under one export, or under several, can tie up only its share, never
// another file system.  There a worker resolves the handles
// (open_by_handle_at may read the disk), switches its filesystem identity
// to the request's credential (not under vfs_set_single_identity) and calls
// backend->run.  MOUNT's walk escapes the share only when the backend
// answers it in start, which needs the root's vnode cached (the local
// backend answers there only a walk that stays at the root); MNT of a root
// not cached, or of a path below the root on a local mount, goes through
// the share like any request.  However the operation ends, vop_complete
// drops the request's vnode references, counts the road taken, and defers
// the caller's continuation (hand_back, which a request with no mount
// reaches directly) -- the one place a request completes, so the
// continuation never runs inside vop_start and always runs in the context
// its caller chose.  vop_call is the same without the first attempt and the
// hand-off: resolve, switch identity, run, in the calling thread.
//
// The vnode cache (per mount) is a fixed array of entries allocated at
// mount time, a chained hash over the handle bytes and a clock hand for
// eviction: an entry with no references whose clock bit is clear is
// recycled.  Removing or replacing an object's name forgets its handle (the
// local backend on every such name, the memory backend with the last), so a
// later request resolves it again -- and finds it stale if that was the
// object's last name.
//
// Locking: one spinlock per mount protects its cache (table, chains,
// references, clock); it is never held across a system call -- what an
// evicted or forgotten vnode holds is reclaimed after the lock is dropped.
// The subsystem's state (workqueues, buffer pool, start count) is written
// only by vfs_start/vfs_stop under a mutex, in thread context; the lanes'
// start times are atomics, written by their workers; which lanes are busy,
// the ready FIFO and the round-robin counter are under the subsystem's
// run_lock, a share's count and FIFO under its own spinlock (no two of
// these are ever held together, nor with a mount's); the registry of shares
// is under a mutex (mount and unmount only), as are the loaded back-end
// modules (vfs_mount; never unloaded) and the instance name.
#include <dirent.h>
#include <dlfcn.h>
#include <sched.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>

#include "internal.h"
#include "kcont/error_text.h"
#include "kcont/spinlock.h"

namespace kc::vfs {

namespace {

// Lanes per CPU: workqueue levels "vfs0".."vfs<MAX_QUEUES - 1>" are all
// registered (vfs_register_levels runs before the configuration is known);
// vfs_start creates workers on the first g_sys.queues of them.
constexpr int MAX_QUEUES = 16;
constexpr int DEFAULT_QUEUES = 4;

struct subsystem {
  std::mutex lock;
  int users = 0;
  bufpool *pool = nullptr, *large_pool = nullptr;
  workqueue *wq[MAX_QUEUES] = {};
  // Lane i is workqueue wq[i % queues] on CPU i / queues.
  uint32_t queues = DEFAULT_QUEUES, lanes = 0;
  // Under run_lock (dispatch, next_for_lane): which lanes are busy (1: a
  // request handed to the lane's worker and not yet finished; read without
  // the lock for statistics), the round-robin counter, and the ready FIFO
  // of requests that found every lane busy.
  std::atomic<uint32_t> run_lock{0};
  std::unique_ptr<std::atomic<uint32_t>[]> lane_busy;
  uint32_t rr = 0;
  vreq *ready_head = nullptr, *ready_tail = nullptr;
  // When the lane's worker began its current request (coarse monotonic ms).
  std::unique_ptr<std::atomic<int64_t>[]> lane_started;
  uint32_t mount_share = 1;  // lanes' worth per file system without a limit of its own
};
subsystem g_sys;
// The most requests share sh may have in thread context (see the top).
// Under sh->lock or not: limit changes only at mount.
uint32_t share_limit(const thread_share *sh) {
  const uint32_t limit = sh->limit.load(std::memory_order_relaxed);
  if (limit) return std::min(limit, g_sys.lanes);
  if (sh->remote && sh->run_us.load(std::memory_order_relaxed) >= REMOTE_WAIT_US)
    return std::max(g_sys.mount_share, g_sys.lanes - g_sys.mount_share);
  return g_sys.mount_share;
}

// Mounts of VBC_REMOTE back ends alive (vfs_mount .. vfs_unmount): a
// vfs_start with lanes_per_cpu 0 makes REMOTE_LANES_PER_CPU lanes per CPU
// while there are any.
std::atomic<int> g_remote_mounts{0};

int64_t monotonic_us() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return int64_t(t.tv_sec) * 1000000 + t.tv_nsec / 1000;
}

// Folds one request's time in thread context into a remote share's moving
// average (weight 1/8; a racing update may be lost -- it is a hint).
void note_run_time(thread_share *sh, int64_t us) {
  const uint32_t avg = sh->run_us.load(std::memory_order_relaxed);
  const auto sample = uint32_t(std::clamp<int64_t>(us, 0, 1000000));
  sh->run_us.store(avg - avg / 8 + sample / 8, std::memory_order_relaxed);
}

std::atomic<bufpool *> g_pool{nullptr}, g_large_pool{nullptr};

const char *const op_names[size_t(vop::count_)] = {
    "getattr", "setattr", "lookup",  "access", "readlink", "read",  "write",
    "create",  "mkdir",   "symlink", "mknod",  "remove",   "rmdir", "rename",
    "link",    "readdir", "fsstat",  "fsinfo", "commit",   "walk"};

bool same_fh(const vfh &a, const vfh &b) {
  return a.len == b.len && std::memcmp(a.data, b.data, a.len) == 0;
}

vnode **chain_of(mount *fs, const vfh &fh) {
  return &fs->buckets[fnv1a(fh.data, fh.len) & fs->mask];
}

vnode *find_locked(mount *fs, const vfh &fh) {
  for (vnode *v = *chain_of(fs, fh); v; v = v->hnext)
    if (same_fh(v->fh, fh)) return v;
  return nullptr;
}

void unhash_locked(mount *fs, vnode *v) {
  for (vnode **pp = chain_of(fs, v->fh); *pp; pp = &(*pp)->hnext) {
    if (*pp == v) {
      *pp = v->hnext;
      break;
    }
  }
  v->hnext = nullptr;
  v->hashed = false;
}

// Moves what a vnode holds into *out (for reclaim after the lock).
void take_locked(vnode *v, vnode *out) {
  out->fs = v->fs;
  out->fd = v->fd;
  out->priv = v->priv;
  out->type = v->type;
  std::memcpy(out->state, v->state, sizeof v->state);
  v->fd = -1;
  v->priv = nullptr;
  std::memset(v->state, 0, sizeof v->state);
  v->attrs.epoch.store(0, std::memory_order_relaxed);  // no reference: nobody reads it
}

void reclaim(mount *fs, vnode *held) {
  if (held->fd >= 0 || held->priv) fs->be->reclaim(held);
}

// An unreferenced entry to reuse (unhashed, emptied into *old), or nullptr.
vnode *victim_locked(mount *fs, vnode *old) {
  size_t n = fs->entries.size();
  for (size_t i = 0; i < 2 * n; i++) {
    vnode *v = &fs->entries[fs->hand];
    fs->hand = (fs->hand + 1) % n;
    if (v->refs > 0) continue;
    if (v->hashed && v->referenced) {
      v->referenced = false;
      continue;
    }
    if (v->hashed) {
      unhash_locked(fs, v);
      fs->evictions++;
    }
    take_locked(v, old);
    return v;
  }
  return nullptr;
}

bool needs_second(vop op) { return op == vop::rename || op == vop::link; }

bool uses_name(vop op) {
  switch (op) {
    case vop::lookup:
    case vop::create:
    case vop::mkdir:
    case vop::symlink:
    case vop::mknod:
    case vop::remove:
    case vop::rmdir:
    case vop::rename:
      return true;
    default:
      return false;
  }
}

// Clears the results: flags, counts and pointers only (the attributes
// behind a false have_* flag are never read), so that starting a request
// costs no more than a few stores.
void reset_results(vreq *r) {
  r->error = 0;
  r->used_thread = false;
  r->obj.have_pre = r->obj.have_post = false;
  r->obj2.have_pre = r->obj2.have_post = false;
  r->have_res_fh = r->have_res_attr = false;
  r->res_fh.len = 0;
  r->access_granted = 0;
  r->link_len = 0;
  r->rd.where = rd_where::none;
  r->rd.n = 0;
  r->rd.eof = false;
  r->rd.bp = nullptr;
  r->rd.fd = -1;
  r->rd.ref = nullptr;
  r->rd.resident = false;
  r->written = 0;
  r->eof = false;
  r->vp = r->vp2 = nullptr;
}

// Checks what can be checked before touching the file system.
int precheck(vreq *r) {
  if (!r->fs || size_t(r->op) >= size_t(vop::count_)) return EINVAL;
  if (uses_name(r->op))
    if (int e = check_name(r->name)) return e;
  if (r->op == vop::rename || r->op == vop::link)
    if (int e = check_name(r->name2)) return e;
  return 0;
}

void drop_vnodes(vreq *r) {
  if (r->vp) vnode_rele(r->vp);
  if (r->vp2) vnode_rele(r->vp2);
  r->vp = r->vp2 = nullptr;
}

// Resolves the request's handles in thread context.  Returns 0 or an errno.
int resolve_blocking(vreq *r) {
  if (!r->vp)
    if (int e = vnode_get(r->fs, r->fh, &r->vp)) return e;
  if (needs_second(r->op) && !r->vp2)
    if (int e = vnode_get(r->fs, r->fh2, &r->vp2)) return e;
  return 0;
}

// Thread context: the whole operation (vop_call, and the worker).
void run_here(vreq *r) {
  // Resolving a handle that is not cached needs the process's own identity
  // (open_by_handle_at); a cached one needs no switch, which keeps the
  // identity of the previous call (often the same client's) in place.
  if (!r->vp) r->vp = vnode_lookup_cached(r->fs, r->fh);
  if (needs_second(r->op) && !r->vp2) r->vp2 = vnode_lookup_cached(r->fs, r->fh2);
  // A back end that acts as the caller by itself needs neither.
  const bool switch_identity = !(r->fs->be->caps & VBC_OWN_CREDENTIALS);
  if (switch_identity && (!r->vp || (needs_second(r->op) && !r->vp2))) vfs_cred_reset();
  r->error = resolve_blocking(r);
  if (r->error == 0) {
    // Never run as anyone but the caller: a failed switch fails the request.
    if (int e = switch_identity ? cred_enter(r->cred) : 0) {
      r->error = e;
      return;
    }
    if ((r->flags & VREQ_RDONLY) && vop_modifies(r->op)) r->error = EROFS;
    r->fs->be->run(r);  // sets the attributes it can even for EROFS
  }
}

// Coarse monotonic milliseconds (a vDSO read, no system call).
int64_t coarse_ms() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
  return int64_t(t.tv_sec) * 1000 + t.tv_nsec / 1000000;
}

// The FIFOs of requests waiting for thread context (a share's, the ready
// one), linked through vreq::wait_next; under the lock of their owner.
void fifo_push(vreq **head, vreq **tail, vreq *r) {
  r->wait_next = nullptr;
  if (*tail)
    (*tail)->wait_next = r;
  else
    *head = r;
  *tail = r;
}
vreq *fifo_pop(vreq **head, vreq **tail) {
  vreq *r = *head;
  if (r && !(*head = r->wait_next)) *tail = nullptr;
  return r;
}

// A lane counts as stalled when its worker has been in one request for
// STALL_MS (a file system that does not answer, most likely): for
// vfs_lanes_stalled and the operator, not for the choice of a lane -- a
// request only ever goes to a free lane.
bool lane_stalled(uint32_t lane, int64_t now) {
  return g_sys.lane_busy[lane].load(std::memory_order_relaxed) > 0 &&
         now - g_sys.lane_started[lane].load(std::memory_order_relaxed) >= STALL_MS;
}

// Hands r to a free lane -- the one whose worker began a request last (the
// likeliest still on a CPU), ties round robin -- or, with every lane busy,
// appends it to the subsystem's ready FIFO, which the next worker to finish
// takes from.  No request ever waits behind a worker that is in another
// request: a worker stuck in a file system that does not answer holds
// that request, nothing more.  Any context.
void dispatch(vreq *r) {
  uint32_t best = UINT32_MAX;
  {
    spinlock g(g_sys.run_lock);
    const uint32_t n = g_sys.lanes, first = g_sys.rr++ % n;
    int64_t best_since = 0;
    for (uint32_t k = 0; k < n; k++) {
      const uint32_t j = (first + k) % n;
      if (g_sys.lane_busy[j].load(std::memory_order_relaxed) != 0) continue;
      const int64_t since = g_sys.lane_started[j].load(std::memory_order_relaxed);
      if (best == UINT32_MAX || since > best_since) {
        best = j;
        best_since = since;
      }
    }
    if (best == UINT32_MAX) {
      fifo_push(&g_sys.ready_head, &g_sys.ready_tail, r);
      return;
    }
    g_sys.lane_busy[best].store(1, std::memory_order_relaxed);
  }
  r->lane = uint16_t(best);
  workqueue_enqueue(g_sys.wq[best % g_sys.queues], &r->wk, int(best / g_sys.queues));
}

// Sends r to thread context within its file system's share, or parks it
// in the share's FIFO.
void to_thread(vreq *r) {
  thread_share *sh = r->fs->share;
  {
    spinlock g(sh->lock);
    if (sh->in_thread >= share_limit(sh)) {
      fifo_push(&sh->wait_head, &sh->wait_tail, r);
      sh->waiting++;
      sh->waits++;
      return;
    }
    sh->in_thread++;
  }
  dispatch(r);
}

// What a lane's worker runs after its request is done: the oldest request
// waiting for a lane, where `parked` -- the share's next request, which has
// just taken the finished one's place in the share, or nullptr -- queues
// behind those already waiting; nullptr, with the lane marked free, when
// nothing waits.  The finishing worker runs it itself: it is awake, where
// handing it to another lane would wake a sleeping worker (two context
// switches) while this one goes to sleep.
vreq *next_for_lane(uint32_t lane, vreq *parked) {
  spinlock g(g_sys.run_lock);
  vreq *head = fifo_pop(&g_sys.ready_head, &g_sys.ready_tail);
  if (!head) {
    if (!parked) g_sys.lane_busy[lane].store(0, std::memory_order_relaxed);
    return parked;
  }
  if (parked) fifo_push(&g_sys.ready_head, &g_sys.ready_tail, parked);
  return head;
}

// A lane's worker: runs its request, passes the request's place in the
// share to the share's next parked request (of any mount of the file
// system), completes it, and goes on with what next_for_lane gives it.
void worker(work *wk, void *) {
  vreq *r = reinterpret_cast<vreq *>(reinterpret_cast<char *>(wk) - offsetof(vreq, wk));
  const uint16_t lane = r->lane;
  for (;;) {
    r->used_thread = true;
    g_sys.lane_started[lane].store(coarse_ms(), std::memory_order_relaxed);
    thread_share *sh = r->fs->share;
    const int64_t began = sh->remote ? monotonic_us() : 0;
    run_here(r);
    if (sh->remote) note_run_time(sh, monotonic_us() - began);
    vreq *parked = nullptr;
    {
      spinlock g(sh->lock);
      if ((parked = fifo_pop(&sh->wait_head, &sh->wait_tail)) != nullptr) {
        sh->waiting--;
      } else {
        sh->in_thread--;
      }
    }
    vop_complete(r);  // r belongs to its caller from here on
    if ((r = next_for_lane(lane, parked)) == nullptr) return;
    r->lane = lane;
  }
}

// ---- credentials ----------------------------------------------------------

thread_local bool t_is_root = true;
thread_local bool t_cred_valid = false;  // t_cred is the thread's identity
thread_local bool t_umask_zero = false;  // thread_umask_zero done
thread_local vcred t_cred;
std::atomic<bool> g_single_identity{false};

bool same_cred(const vcred &a, const vcred &b) {
  return a.uid == b.uid && a.gid == b.gid && a.ngids == b.ngids &&
         std::equal(a.gids, a.gids + a.ngids, b.gids);
}

}  // namespace

const char *vop_name(vop op) {
  return size_t(op) < size_t(vop::count_) ? op_names[size_t(op)] : "?";
}

// ---- attribute snapshots ----------------------------------------------------
//
// The arrival counter orders two kinds of events: a request's arrival (a
// load) and the start of a read of attributes (an increment, before the
// fstat).  A snapshot whose increment returned e may answer a request that
// loaded a <= e: then the increment came after the load, so the fstat
// began after the request arrived and sees every change completed before
// it.  Both are sequentially consistent; the counter has its own cache
// line.  It starts at 1 so that 0 can mean "arrival not known".
namespace {
struct alignas(64) arrival_counter {
  std::atomic<uint64_t> v{1};
};
arrival_counter g_arrivals;
}  // namespace

uint64_t vfs_arrival() { return g_arrivals.v.load(std::memory_order_seq_cst); }

uint64_t attr_epoch_begin() { return g_arrivals.v.fetch_add(1, std::memory_order_seq_cst); }

bool attr_snapshot_get(attr_snapshot &s, uint64_t arrived, vattr *a) {
  if (arrived == 0) return false;
  const uint32_t s1 = s.seq.load(std::memory_order_acquire);
  if (s1 & 1) return false;
  const uint64_t e = s.epoch.load(std::memory_order_relaxed);
  uint64_t w[attr_snapshot::WORDS];
  for (size_t i = 0; i < attr_snapshot::WORDS; i++)
    w[i] = s.words[i].load(std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (s.seq.load(std::memory_order_relaxed) != s1 || e == 0 || e < arrived) return false;
  std::memcpy(static_cast<void *>(a), w, sizeof *a);
  return true;
}

void attr_snapshot_put(attr_snapshot &s, uint64_t epoch, const vattr &a) {
  uint32_t s1 = s.seq.load(std::memory_order_relaxed);
  if ((s1 & 1) || s.epoch.load(std::memory_order_relaxed) >= epoch ||
      !s.seq.compare_exchange_strong(s1, s1 + 1, std::memory_order_acquire,
                                     std::memory_order_relaxed))
    return;
  std::atomic_thread_fence(std::memory_order_release);
  if (s.epoch.load(std::memory_order_relaxed) < epoch) {
    uint64_t w[attr_snapshot::WORDS] = {};
    std::memcpy(w, static_cast<const void *>(&a), sizeof a);
    for (size_t i = 0; i < attr_snapshot::WORDS; i++)
      s.words[i].store(w[i], std::memory_order_relaxed);
    s.epoch.store(epoch, std::memory_order_relaxed);
  }
  s.seq.store(s1 + 2, std::memory_order_release);
}

bool timespec_eq(const timespec &a, const timespec &b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

int check_name(const char *name) {
  size_t n = strnlen(name, VFS_NAME_MAX + 1);
  if (n == 0) return ENOENT;
  if (n > VFS_NAME_MAX) return ENAMETOOLONG;
  if (std::memchr(name, '/', n)) return EACCES;
  return 0;
}

bool data_access_allowed(const vattr &a, const vcred &c, int want) {
  return (c.uid == a.uid && (want & 6) == want) || mode_allows(a, c, want);
}

bool vop_modifies(vop op) {
  switch (op) {
    case vop::setattr:
    case vop::write:
    case vop::create:
    case vop::mkdir:
    case vop::symlink:
    case vop::mknod:
    case vop::remove:
    case vop::rmdir:
    case vop::rename:
    case vop::link:
    case vop::commit:  // an fsync is a write to the disk (knfsd: NFS3ERR_ROFS)
      return true;
    default:
      return false;
  }
}

int check_symlink_target(const vreq *r) {
  if (r->count == 0 || !r->data || std::memchr(r->data, '\0', r->count)) return EINVAL;
  return r->count >= PATH_MAX ? ENAMETOOLONG : 0;
}

uint32_t mknod_format(const vreq *r) {
  switch (r->mknod_type) {
    case vtype::blk:
      return S_IFBLK;
    case vtype::chr:
      return S_IFCHR;
    case vtype::sock:
      return S_IFSOCK;
    case vtype::fifo:
      return S_IFIFO;
    default:
      return 0;
  }
}

bool walk_stays(const vreq *r) {
  std::string_view path(reinterpret_cast<const char *>(r->data), r->data ? r->count : 0);
  for (size_t pos = 0; pos <= path.size();) {
    size_t slash = std::min(path.find('/', pos), path.size());
    std::string_view comp = path.substr(pos, slash - pos);
    if (!comp.empty() && comp != ".") return false;
    pos = slash + 1;
  }
  return true;
}

bool mode_allows(const vattr &a, const vcred &c, int want) {
  if (c.uid == 0) return (want & 1) == 0 || (a.mode & 0111) || a.type == vtype::dir;
  if (c.uid == a.uid) return ((a.mode >> 6) & uint32_t(want)) == uint32_t(want);
  bool in_group = c.gid == a.gid;
  for (uint32_t i = 0; i < c.ngids && !in_group; i++) in_group = c.gids[i] == a.gid;
  if (in_group) return ((a.mode >> 3) & uint32_t(want)) == uint32_t(want);
  return (a.mode & uint32_t(want)) == uint32_t(want);
}

namespace {

// A thread that runs VFS operations gets its own filesystem context
// (unshare(CLONE_FS): cwd, root and umask become per thread) with umask 0,
// once: an object is created with exactly the mode the client asked for,
// whatever umask the process was started with, and no other thread's
// umask changes.  0 or an errno.
int thread_umask_zero() {
  if (t_umask_zero) return 0;
  if (unshare(CLONE_FS) != 0) return errno;
  umask(0);
  t_umask_zero = true;
  return 0;
}

// setfsuid/setfsgid answer the previous value whether or not they worked;
// an invalid id (-1) changes nothing and answers the current one.
bool fsuid_is(uid_t u) { return uid_t(setfsuid(uid_t(-1))) == u; }
bool fsgid_is(gid_t g) { return gid_t(setfsgid(gid_t(-1))) == g; }

}  // namespace

int cred_enter(const vcred &c) {
  if (int e = thread_umask_zero()) return e;
  if (g_single_identity.load(std::memory_order_relaxed)) return 0;
  if (!t_is_root && t_cred_valid && same_cred(c, t_cred)) return 0;
  gid_t g[VFS_MAX_GIDS];
  uint32_t n = std::min(c.ngids, VFS_MAX_GIDS);
  for (uint32_t i = 0; i < n; i++) g[i] = c.gids[i];
  t_is_root = false;
  t_cred_valid = false;  // until every step below is known to have worked
  // setgroups through the system call: this thread only (glibc's does all).
  if (syscall(SYS_setgroups, size_t(n), g) != 0) return VFS_CRED;
  setfsgid(c.gid);
  if (!fsgid_is(c.gid)) return VFS_CRED;
  setfsuid(c.uid);
  if (!fsuid_is(c.uid)) return VFS_CRED;
  t_cred = c;
  t_cred_valid = true;
  return 0;
}

void vfs_cred_reset() {
  if (t_is_root) return;
  // The process's own identity.  Should that ever fail, the thread stays
  // marked as switched (the next call tries again) and resolving a handle,
  // which needs the process's identity, fails meanwhile: never silently.
  setfsuid(geteuid());
  setfsgid(getegid());
  bool ok = fsuid_is(geteuid()) && fsgid_is(getegid());
  if (!g_single_identity.load(std::memory_order_relaxed))
    ok = syscall(SYS_setgroups, size_t(0), nullptr) == 0 && ok;
  t_is_root = ok;
  t_cred_valid = false;
}

void vfs_set_single_identity(bool on) { g_single_identity.store(on, std::memory_order_relaxed); }

namespace {
std::mutex g_instance_mu;
std::string g_instance;
}  // namespace

void vfs_set_instance(const std::string &name) {
  std::lock_guard<std::mutex> g(g_instance_mu);
  g_instance = name;
}

std::string vfs_instance() {
  std::lock_guard<std::mutex> g(g_instance_mu);
  return g_instance;
}

int vfs_identity_check(std::string *why) {
  int rc = 0;
  // On a thread of its own: whatever happens, no caller's identity changes.
  std::thread([&] {
    constexpr uid_t NOBODY = 65534;
    constexpr gid_t NOGROUP = 65534, GROUP = 65533;
    if (int e = thread_umask_zero()) {
      rc = e;
      *why = std::string("unshare(CLONE_FS): ") + kc::error_text(e);
      return;
    }
    gid_t g = GROUP;
    if (syscall(SYS_setgroups, size_t(1), &g) != 0) {
      rc = EPERM;
      *why = "cannot set supplementary groups (setgroups needs CAP_SETGID)";
    } else if (setfsgid(NOGROUP), !fsgid_is(NOGROUP)) {
      rc = EPERM;
      *why = "cannot switch the filesystem group id (setfsgid needs CAP_SETGID)";
    } else if (setfsuid(NOBODY), !fsuid_is(NOBODY)) {
      rc = EPERM;
      *why = "cannot switch the filesystem user id (setfsuid needs CAP_SETUID)";
    }
  }).join();
  return rc;
}

// ---- the subsystem ------------------------------------------------------------

int vfs_register_levels() {
  for (int i = 0; i < MAX_QUEUES; i++) {
    char name[16];
    std::snprintf(name, sizeof name, "vfs%d", i);
    level l;
    if (kcont_level_lookup(name, &l)) continue;
    // Ranks 45..48 for the first four (unchanged since there were only
    // four), 49 for the rest: all below bio (50), above softserial (40).
    if (int e = kcont_level_register(name, 45 + std::min(i, 4), &l)) return e;
  }
  return 0;
}

int vfs_start(const vfs_config &cfg, std::string *err) {
  std::lock_guard<std::mutex> g(g_sys.lock);
  if (g_sys.users > 0) {
    g_sys.users++;
    return 0;
  }
  int ncpu = kcont_ncpus();
  if (ncpu <= 0) {
    if (err) *err = "kcont is not running";
    return ENXIO;
  }
  if (cfg.lanes_per_cpu > uint32_t(MAX_QUEUES)) {
    if (err)
      *err = "lanes_per_cpu " + std::to_string(cfg.lanes_per_cpu) + ": at most " +
             std::to_string(MAX_QUEUES);
    return EINVAL;
  }
  g_sys.queues = cfg.lanes_per_cpu            ? cfg.lanes_per_cpu
                 : g_remote_mounts.load() > 0 ? REMOTE_LANES_PER_CPU
                                              : uint32_t(DEFAULT_QUEUES);
  g_sys.lanes = g_sys.queues * uint32_t(ncpu);
  g_sys.lane_busy = std::make_unique<std::atomic<uint32_t>[]>(g_sys.lanes);
  g_sys.lane_started = std::make_unique<std::atomic<int64_t>[]>(g_sys.lanes);
  // Default: two lanes per CPU (half of DEFAULT_QUEUES), whatever the
  // number of lanes: more lanes (--vfs-lanes) are for file systems given a
  // larger limit of their own (threads=), not for every one.
  g_sys.mount_share = cfg.mount_share
                          ? std::min(cfg.mount_share, g_sys.lanes)
                          : std::max<uint32_t>(1, std::min(g_sys.lanes / 2, 2 * uint32_t(ncpu)));
  g_sys.pool = bufpool_create(cfg.bufs, VFS_BUF_MAX, err);
  if (!g_sys.pool) return ENOMEM;
  if (cfg.large_bufs &&
      !(g_sys.large_pool = bufpool_create(cfg.large_bufs, VFS_LARGE_BUF_MAX, err))) {
    bufpool_destroy(g_sys.pool);
    g_sys.pool = nullptr;
    return ENOMEM;
  }
  for (uint32_t i = 0; i < g_sys.queues; i++) {
    char name[16];
    std::snprintf(name, sizeof name, "vfs%u", i);
    level l;
    int e = 0;
    if (!kcont_level_lookup(name, &l)) {
      if (err) *err = std::string("kcont level ") + name + " was not registered before kcont_start";
      e = EINVAL;
    } else if ((e = workqueue_create(&g_sys.wq[i], name, worker, nullptr, l)) != 0) {
      if (err) *err = std::string("vfs workqueue: ") + kc::error_text(e);
    }
    if (e) {
      for (auto &q : g_sys.wq) {
        if (q) workqueue_destroy(q);
        q = nullptr;
      }
      bufpool_destroy(g_sys.pool);
      bufpool_destroy(g_sys.large_pool);
      g_sys.pool = g_sys.large_pool = nullptr;
      return e;
    }
  }
  g_pool.store(g_sys.pool, std::memory_order_release);
  g_large_pool.store(g_sys.large_pool, std::memory_order_release);
  g_sys.users = 1;
  return 0;
}

void vfs_stop() {
  std::lock_guard<std::mutex> g(g_sys.lock);
  if (g_sys.users == 0 || --g_sys.users > 0) return;
  for (auto &q : g_sys.wq) {
    if (q) workqueue_destroy(q);
    q = nullptr;
  }
  g_pool.store(nullptr, std::memory_order_release);
  g_large_pool.store(nullptr, std::memory_order_release);
  if (g_sys.pool && bufpool_destroy(g_sys.pool) == 0) g_sys.pool = nullptr;
  if (g_sys.large_pool && bufpool_destroy(g_sys.large_pool) == 0) g_sys.large_pool = nullptr;
}

bufpool *vfs_bufpool() { return g_pool.load(std::memory_order_acquire); }
bufpool *vfs_large_bufpool() { return g_large_pool.load(std::memory_order_acquire); }

// ---- mounts and the vnode cache ----------------------------------------------

mount *vfs_alloc(const vfs_backend *be, size_t cache) {
  auto *fs = new mount;
  fs->be = be;
  if (be->caps & VBC_REMOTE) {
    fs->own_share.remote = true;
    g_remote_mounts.fetch_add(1);
  }
  fs->entries = std::vector<vnode>(std::max<size_t>(cache, 16));
  size_t b = 1;
  while (b < 2 * fs->entries.size()) b <<= 1;
  fs->buckets.assign(b, nullptr);
  fs->mask = b - 1;
  return fs;
}

uint32_t vfs_lanes_stalled() {
  uint32_t n = 0;
  const int64_t now = coarse_ms();
  for (uint32_t i = 0; i < g_sys.lanes; i++) n += lane_stalled(i, now);
  return n;
}

// The shares of file systems mounted more than zero times, by device.
std::mutex g_shares_mu;
std::vector<thread_share *> g_shares;

void vfs_set_device(mount *fs, uint64_t dev) {
  std::lock_guard<std::mutex> g(g_shares_mu);
  thread_share *sh = nullptr;
  for (thread_share *s : g_shares)
    if (s->dev == dev) sh = s;
  if (!sh) {
    sh = new thread_share;
    sh->dev = dev;
    sh->keyed = true;
    g_shares.push_back(sh);
  }
  sh->refs++;
  sh->limit.store(std::max(sh->limit.load(), fs->own_share.limit.load()));
  // Written only by the first mount of a remote file system (one device is
  // one back end's), before any request of it reads the flag.
  if (fs->own_share.remote && !sh->remote) sh->remote = true;
  fs->share = sh;
}

void vfs_set_thread_limit(mount *fs, uint32_t n) {
  std::lock_guard<std::mutex> g(g_shares_mu);
  KC_ASSERT(n >= 1, "a thread limit of 0");
  fs->share->limit.store(std::max(fs->share->limit.load(), n));
}

void vfs_unmount(mount *fs) {
  if (!fs) return;
  for (auto &v : fs->entries) {
    vnode held;
    take_locked(&v, &held);
    reclaim(fs, &held);
  }
  if (fs->be->unmount) fs->be->unmount(fs);
  if (fs->be->caps & VBC_REMOTE) g_remote_mounts.fetch_sub(1);
  if (fs->share->keyed) {
    std::lock_guard<std::mutex> g(g_shares_mu);
    if (--fs->share->refs == 0) {
      g_shares.erase(std::find(g_shares.begin(), g_shares.end(), fs->share));
      delete fs->share;
    }
  }
  delete fs;
}

const vfh &vfs_root(const mount *fs) { return fs->root; }

// ---- mounting by name --------------------------------------------------------

namespace {

// The back ends built in.  Others are modules (load_module).
constexpr vfs_fstype FSTYPES[] = {
    {"local", local_mount_options},
    {"memory", memory_mount_options},
};

// Where back-end modules are: $KCONT_VFS_MODULE_DIR, else the directory
// this build installs them to.
std::string module_dir() {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): nothing in this program sets the environment
  const char *env = std::getenv("KCONT_VFS_MODULE_DIR");
  return env && *env ? env : KCONT_VFS_MODULE_DIR;
}

// A module's name: lower-case letters, digits and '_' only (an exports
// file cannot name a path).
bool module_name_ok(const std::string &name) {
  if (name.empty() || name.size() > 32) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

std::mutex g_modules_mu;
std::vector<std::pair<std::string, const vfs_fstype *>> g_modules;  // loaded, never unloaded

// The back end `name` from its module, vfs-NAME.so in module_dir(), loaded
// once; nullptr with *why when there is none or it cannot be loaded.
const vfs_fstype *load_module(const std::string &name, std::string *why) {
  if (!module_name_ok(name)) {
    *why = "no back end '" + name + "'";
    return nullptr;
  }
  std::lock_guard<std::mutex> g(g_modules_mu);
  for (const auto &[n, t] : g_modules)
    if (n == name) return t;
  std::string path = module_dir() + "/vfs-" + name + ".so";
  if (access(path.c_str(), F_OK) != 0) {
    *why = "no back end '" + name + "' in this installation (its module " + path + " is not there)";
    return nullptr;
  }
  void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();  // NOLINT(concurrency-mt-unsafe): glibc's is per thread
    *why = "back end '" + name + "': cannot load " + path + ": " + (e ? e : "dlopen failed");
    return nullptr;
  }
  using entry_fn = const vfs_fstype *(*)();
  auto entry = reinterpret_cast<entry_fn>(dlsym(h, KCONT_VFS_MODULE_ENTRY));
  const vfs_fstype *t = entry ? entry() : nullptr;
  if (!t || !t->name || name != t->name || !t->make) {
    *why = "back end '" + name + "': " + path + " is not a kcont VFS module of this version";
    dlclose(h);
    return nullptr;
  }
  g_modules.emplace_back(name, t);
  return t;
}

// The value of option `name`, or nullptr; *twice when it is given twice.
const std::string *find_option(const vfs_options &opts, const char *name, bool *twice) {
  const std::string *v = nullptr;
  *twice = false;
  for (const auto &[k, val] : opts) {
    if (k != name) continue;
    if (v) *twice = true;
    v = &val;
  }
  return v;
}

}  // namespace

bool vfs_option_string(const vfs_options &opts, const char *name, std::string *out, bool required,
                       std::string *err) {
  bool twice = false;
  const std::string *v = find_option(opts, name, &twice);
  if (twice) {
    *err = std::string("option ") + name + " given twice";
    return false;
  }
  if (!v || v->empty()) {
    if (!required && !v) return true;
    *err = std::string("option ") + name + (v ? " needs a value" : " is required");
    return false;
  }
  *out = *v;
  return true;
}

bool vfs_option_size(const vfs_options &opts, const char *name, uint64_t *out, bool required,
                     std::string *err) {
  std::string v;
  if (!vfs_option_string(opts, name, &v, required, err)) return false;
  if (v.empty()) return true;  // optional and absent
  // Digits, then nothing or one of K, M, G.
  size_t digits = v.find_first_not_of("0123456789");
  const std::string suffix = digits == std::string::npos ? "" : v.substr(digits);
  int shift = suffix.empty()  ? 0
              : suffix == "K" ? 10
              : suffix == "M" ? 20
              : suffix == "G" ? 30
                              : -1;
  errno = 0;
  unsigned long long n = digits == 0 ? 0 : std::strtoull(v.c_str(), nullptr, 10);
  if (digits == 0 || shift < 0 || errno || n > (UINT64_MAX >> shift)) {
    *err = std::string("option ") + name + "=" + v + ": not a size (a number, K, M or G)";
    return false;
  }
  *out = uint64_t(n) << shift;
  return true;
}

bool vfs_options_unknown(const vfs_options &opts, std::initializer_list<const char *> known,
                         const char *backend, std::string *err) {
  for (const auto &opt : opts) {
    bool ok = false;
    for (const char *k : known) ok = ok || opt.first == k;
    if (!ok) {
      *err = "back end " + std::string(backend) + " has no option '" + opt.first + "' (it has:";
      for (const char *k : known) *err += std::string(" ") + k;
      *err += ")";
      return true;
    }
  }
  return false;
}

mount *vfs_mount(const std::string &fs, const vfs_options &opts, std::string *err) {
  std::string why;
  const vfs_fstype *type = nullptr;
  for (const vfs_fstype &t : FSTYPES)
    if (fs == t.name) type = &t;
  if (!type && !(type = load_module(fs, &why))) {
    if (err) *err = why + "; back ends here: " + vfs_backends();
    return nullptr;
  }
  // threads=N is every back end's: how many of the file system's requests
  // may be in thread context at once (vfs_set_thread_limit).
  std::string threads_text;
  if (!vfs_option_string(opts, "threads", &threads_text, false, &why)) {
    if (err) *err = why;
    return nullptr;
  }
  unsigned long threads = 0;
  if (!threads_text.empty()) {
    threads = threads_text.find_first_not_of("0123456789") == std::string::npos &&
                      threads_text.size() <= 4
                  ? std::strtoul(threads_text.c_str(), nullptr, 10)
                  : 0;
    if (threads < 1 || threads > 4096) {
      if (err) *err = "option threads=" + threads_text + ": a number of requests, 1 to 4096";
      return nullptr;
    }
  }
  vfs_options own;
  for (const auto &o : opts)
    if (o.first != "threads") own.push_back(o);
  mount *m = type->make(own, &why);
  if (!m && err) *err = why;
  if (m && threads) vfs_set_thread_limit(m, uint32_t(threads));
  return m;
}

std::string vfs_backends() {
  std::vector<std::string> names;
  for (const vfs_fstype &t : FSTYPES) names.emplace_back(t.name);
  std::vector<std::string> mods;
  if (DIR *d = opendir(module_dir().c_str())) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): a stream of this call's own
    while (dirent *e = readdir(d)) {
      std::string_view n(e->d_name);
      if (n.size() > 10 && n.substr(0, 4) == "vfs-" && n.substr(n.size() - 3) == ".so")
        mods.emplace_back(n.substr(4, n.size() - 7));
    }
    closedir(d);
  }
  std::sort(mods.begin(), mods.end());
  for (const std::string &m : mods)
    if (module_name_ok(m)) names.push_back(m);
  std::string out;
  for (const std::string &n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

vfs_stats vfs_get_stats(const mount *fs) {
  vfs_stats s;
  auto *m = const_cast<mount *>(fs);
  {
    spinlock g(m->lock);
    s.cache_hits = m->hits;
    s.cache_misses = m->misses;
    s.cache_primed = m->primed;
    s.evictions = m->evictions;
    s.stale = m->stale;
  }
  {
    thread_share *sh = m->share;  // the file system's: every mount of it shows the same
    spinlock g(sh->lock);
    s.thread_running = sh->in_thread;
    s.thread_waiting = sh->waiting;
    s.thread_waits = sh->waits;
  }
  s.attr_shared = fs->attr_shared.load(std::memory_order_relaxed);
  s.attr_read = fs->attr_read.load(std::memory_order_relaxed);
  s.thread_share = g_sys.lanes ? share_limit(m->share) : 0;  // 0: vfs_start not called
  for (size_t i = 0; i < size_t(vop::count_); i++) {
    s.ops_interrupt[i] = fs->ops_interrupt[i].load(std::memory_order_relaxed);
    s.ops_thread[i] = fs->ops_thread[i].load(std::memory_order_relaxed);
  }
  return s;
}

vnode *vnode_lookup_cached(mount *fs, const vfh &fh) {
  spinlock g(fs->lock);
  vnode *v = find_locked(fs, fh);
  if (v) {
    v->refs++;
    v->referenced = true;
    fs->hits++;
  }
  return v;
}

namespace {
// Enters `fresh` (just resolved by the backend) into the cache, or finds
// the entry another thread entered for the same handle meanwhile (fresh is
// then reclaimed).  Returns the entry referenced, or nullptr when every
// entry is in use (fresh reclaimed).  `primed`: an entry made is counted
// as a priming, not as a miss.
vnode *enter(mount *fs, vnode &fresh, bool primed) {
  const vfh &fh = fresh.fh;
  vnode old, dup;
  vnode *v;
  {
    spinlock g(fs->lock);
    if (!primed) fs->misses++;
    v = find_locked(fs, fh);  // another thread may have resolved it meanwhile
    if (v) {
      v->refs++;
      take_locked(&fresh, &dup);
    } else if ((v = victim_locked(fs, &old)) != nullptr) {
      if (primed) fs->primed++;
      v->fs = fs;
      v->fh = fh;
      v->type = fresh.type;
      v->is_root = fresh.is_root;
      v->fd = fresh.fd;
      v->priv = fresh.priv;
      std::memcpy(v->state, fresh.state, sizeof v->state);
      v->refs = 1;
      v->referenced = true;
      v->hashed = true;
      vnode **chain = chain_of(fs, fh);
      v->hnext = *chain;
      *chain = v;
    }
  }
  reclaim(fs, &old);
  reclaim(fs, &dup);
  if (!v) reclaim(fs, &fresh);  // every entry is in use: the cache is too small for the load
  return v;
}
}  // namespace

int vnode_get(mount *fs, const vfh &fh, vnode **out) {
  if (fh.len == 0 || fh.len > VFS_FHSIZE) return VFS_BADHANDLE;
  if ((*out = vnode_lookup_cached(fs, fh)) != nullptr) return 0;
  vnode fresh;
  fresh.fs = fs;
  fresh.fh = fh;
  if (int e = fs->be->vget(fs, fh, &fresh)) {
    if (e == ESTALE) {
      spinlock g(fs->lock);
      fs->stale++;
    }
    return e;
  }
  *out = enter(fs, fresh, false);
  return *out ? 0 : EAGAIN;
}

void vnode_prime(vnode &fresh) {
  if (vnode *v = enter(fresh.fs, fresh, true)) vnode_rele(v);
}

void vnode_ref(vnode *vp) {
  spinlock g(vp->fs->lock);
  vp->refs++;
}

void vnode_rele(vnode *vp) {
  mount *fs = vp->fs;
  vnode held;
  {
    spinlock g(fs->lock);
    if (--vp->refs == 0 && !vp->hashed) take_locked(vp, &held);
  }
  reclaim(fs, &held);
}

void vnode_forget(mount *fs, const vfh &fh) {
  vnode held;
  {
    spinlock g(fs->lock);
    vnode *v = find_locked(fs, fh);
    if (!v) return;
    unhash_locked(fs, v);
    if (v->refs == 0) take_locked(v, &held);
  }
  reclaim(fs, &held);
}

// ---- requests ------------------------------------------------------------------

// r leaves the VFS: from the deferral of r->done on it is its caller's.
static void hand_back(vreq *r) {
  KC_ASSERT(r->in_flight, "a request completes once per vop_start");
  if constexpr (asserts_on) r->in_flight = false;
  kcont_defer(r->done, r, r->error);
}

void vop_complete(vreq *r) {
  KC_ASSERT(kcont_current_cpu() >= 0 || (r->fs->be->caps & VBC_FOREIGN_COMPLETION),
            "vop_complete from a thread kcont does not own: the back end must declare "
            "VBC_FOREIGN_COMPLETION");
  drop_vnodes(r);
  auto &ctr = r->used_thread ? r->fs->ops_thread : r->fs->ops_interrupt;
  ctr[size_t(r->op)].fetch_add(1, std::memory_order_relaxed);
  hand_back(r);
}

void vop_start(vreq *r) {
  KC_ASSERT(!r->in_flight, "a request is started again only after its continuation was deferred");
  KC_ASSERT(r->done != nullptr, "vop_start needs the continuation it completes with");
  if constexpr (asserts_on) r->in_flight = true;
  reset_results(r);
  if ((r->error = precheck(r)) != 0) {
    if (r->fs) {
      vop_complete(r);
    } else {
      hand_back(r);
    }
    return;
  }
  bool cached = (r->vp = vnode_lookup_cached(r->fs, r->fh)) != nullptr &&
                (!needs_second(r->op) || (r->vp2 = vnode_lookup_cached(r->fs, r->fh2)) != nullptr);
  if (cached && !(r->fs->be->caps & VBC_THREAD_ONLY)) {
    if ((r->flags & VREQ_RDONLY) && vop_modifies(r->op)) r->error = EROFS;
    switch (r->fs->be->start(r)) {
      case VB_DONE:
        vop_complete(r);
        return;
      case VB_PENDING:
        return;
      default:
        r->error = 0;
        break;
    }
  }
  if (!vfs_bufpool()) {  // vfs_start was not called: no thread context to go to
    r->error = ENXIO;
    vop_complete(r);
    return;
  }
  to_thread(r);
}

int vop_call(vreq *r) {
  KC_ASSERT(!kcont_in_interrupt(), "vop_call may block: thread context only");
  KC_ASSERT(!r->in_flight, "vop_call on a request that vop_start still runs");
  reset_results(r);
  r->used_thread = true;
  r->error = precheck(r);
  if (r->error == 0) run_here(r);
  drop_vnodes(r);
  if (r->fs) r->fs->ops_thread[size_t(r->op)].fetch_add(1, std::memory_order_relaxed);
  return r->error;
}

void vreq_reset(vreq *r) {
  KC_ASSERT(!r->in_flight, "vreq_reset only on a request not in flight");
  r->op = vop::getattr;
  r->flags = 0;
  r->fs = nullptr;
  r->fh.len = r->fh2.len = 0;
  r->cred = vcred{};
  r->name[0] = r->name2[0] = '\0';
  r->offset = 0;
  r->count = 0;
  r->data = nullptr;
  r->dst = nullptr;
  r->dst_cap = 0;
  r->stable = stable_how::unstable;
  r->how = create_how::unchecked;
  std::memset(r->verf, 0, sizeof r->verf);
  r->sattr = vsattr{};
  r->guard = false;
  r->guard_ctime = timespec{};
  r->mknod_type = vtype::none;
  r->rdev_major = r->rdev_minor = 0;
  r->access_want = 0;
  r->cookie = 0;
  r->plus = false;
  r->emit = nullptr;
  r->emit_arg = nullptr;
  r->arrived = 0;
  r->done = nullptr;
  reset_results(r);
}

void vreq_release(vreq *r) {
  if (r->rd.bp) brelse(r->rd.bp);
  if (r->rd.ref) vnode_rele(r->rd.ref);
  r->rd.bp = nullptr;
  r->rd.ref = nullptr;
}

}  // namespace kc::vfs
