// SPDX-License-Identifier: BSD-2-Clause
// internal.h -- what the VFS core (vfs.cc) shares with its backends
// (local.cc, memory.cc, and the module ceph.cc): the vnode, the mount, the backend interface, the
// vnode cache and the credential switch.  Not installed.
//
// A backend implements five entries:
//   vget     thread context, as the process's own identity: resolves a
//            handle into a fresh vnode (fs, fh set; it fills fd, type,
//            is_root, priv, its vnode_state), which the VFS then enters into
//            the cache; returns 0 or an errno (ESTALE, VFS_BADHANDLE, EPERM,
//            EAGAIN, ...).
//   reclaim  any context: releases what vget (or vnode_prime's caller) put
//            in a vnode (closes fd); called once its last reference is
//            gone and it left the cache, at unmount for every entry, and
//            for a vnode that never entered the cache (its handle was
//            entered meanwhile, or every entry was in use).
//   start    interrupt context: attempts r; returns VB_DONE (complete:
//            results and r->error set), VB_PENDING (it will call
//            vop_complete(r) later), or VB_BLOCK (would block; nothing was
//            changed): the VFS then calls run in thread context.  Never
//            blocks, never allocates (the Debug build's allocation guard
//            aborts on an allocation in interrupt context): a back end whose
//            every call may allocate or block declares VBC_THREAD_ONLY
//            instead, and start is never called (it may be nullptr).
//   run      thread context, identity already switched to r->cred (the
//            process's own under vfs_set_single_identity) unless the back
//            end declares VBC_OWN_CREDENTIALS: performs r (may block); sets
//            the results and r->error.
//   unmount  thread context: frees the backend's mount state.
// and declares what it is (`caps`, VBC_* below): the VFS never asks a back
// end to do what it said it cannot, and skips what it said it does itself.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include "kcont/assert.h"
#include "kcont/vfs.h"

namespace kc::vfs {

enum { VB_DONE = 0, VB_PENDING = 1, VB_BLOCK = 2 };

// What a back end declares about itself (vfs_backend::caps).
enum : uint32_t {
  // run acts as r->cred itself (a library that takes the caller's identity
  // with each call, as libcephfs's UserPerm): the VFS never switches the
  // thread's filesystem identity for it (no cred_enter, no
  // vfs_cred_reset before vget), and vget need not run as the process's
  // own identity.  Its permission decisions are then the back end's.
  VBC_OWN_CREDENTIALS = 1u << 0,
  // start is never called: every request goes to thread context.  For a
  // back end whose calls may allocate, take a lock held across I/O, or
  // wait for a server -- none of which interrupt context allows.
  VBC_THREAD_ONLY = 1u << 1,
  // It calls vop_complete on VB_PENDING requests from threads the VFS and
  // kcont do not own (a library's callback threads); Debug builds assert
  // that no other back end does.
  VBC_FOREIGN_COMPLETION = 1u << 2,
  // Its calls mostly wait on a network (a cluster's servers), so its
  // throughput follows the calls in flight: while its requests take
  // REMOTE_WAIT_US or more on average in thread context, its file system's
  // share (without a threads= of its own) is every lane but mount_share's
  // worth, and a vfs_start with lanes_per_cpu 0 after such a mount makes
  // REMOTE_LANES_PER_CPU lanes per CPU (vfs.cc, share_limit).
  VBC_REMOTE = 1u << 3,
};

// The attributes of a vnode as last read, and the epoch of that read: a
// seqlock.  A writer takes `seq` odd with a compare-and-swap (one that
// cannot simply does not publish) and publishes only a newer epoch; a
// reader that sees `seq` odd or changed has a miss, never a torn copy.
// The words are relaxed atomics so that the race is defined.
struct attr_snapshot {
  static constexpr size_t WORDS = (sizeof(vattr) + 7) / 8;
  std::atomic<uint32_t> seq{0};
  std::atomic<uint64_t> epoch{0};  // 0: none
  std::atomic<uint64_t> words[WORDS] = {};
};

// Starts a read of attributes that may be published: returns its epoch
// (the shared counter, advanced).  Call before the system call that reads
// them.  Any context.
uint64_t attr_epoch_begin();

// Copies s into *a if it was read after `arrived` (arrived != 0).  Any
// context; never waits.
bool attr_snapshot_get(attr_snapshot &s, uint64_t arrived, vattr *a);

// Publishes a (read after attr_epoch_begin returned `epoch`) unless s holds
// a newer read or another thread is publishing.  Any context; never waits.
void attr_snapshot_put(attr_snapshot &s, uint64_t epoch, const vattr &a);

struct vnode {
  mount *fs = nullptr;
  vfh fh;
  vtype type = vtype::none;
  bool is_root = false;
  // Backend-owned: a descriptor, a pointer, and a few words of state that
  // need no allocation (vnode_state), copied with the rest when the vnode
  // enters the cache and cleared when its entry is reused.  Words the back
  // end changes after that are under the mount's cache lock.
  int fd = -1;
  void *priv = nullptr;
  alignas(8) unsigned char state[24] = {};
  // Last attributes read by an operation that changes nothing (local);
  // emptied when the entry is reused.
  attr_snapshot attrs;
  // Cache-private (the mount's lock).
  int refs = 0;
  bool hashed = false;
  bool referenced = false;  // clock bit
  vnode *hnext = nullptr;
};

// A back end's words in a vnode (vnode::state), read and written as its
// own type T (trivially copyable, small enough); a vnode's state is all
// zero bytes until the back end writes it.  Any context.
template <class T>
T vnode_state(const vnode *vp) {
  static_assert(sizeof(T) <= sizeof(vnode::state) && std::is_trivially_copyable_v<T>);
  T v;
  std::memcpy(&v, vp->state, sizeof v);
  return v;
}
template <class T>
void vnode_state_set(vnode *vp, const T &v) {
  static_assert(sizeof(T) <= sizeof(vnode::state) && std::is_trivially_copyable_v<T>);
  std::memcpy(vp->state, &v, sizeof v);
}

struct vfs_backend {
  const char *name;
  int (*vget)(mount *fs, const vfh &fh, vnode *vp);
  void (*reclaim)(vnode *vp);
  int (*start)(vreq *r);  // nullptr with VBC_THREAD_ONLY
  void (*run)(vreq *r);
  void (*unmount)(mount *fs);
  uint32_t caps = 0;  // VBC_*
};

// A file system's share of thread context (vfs.cc): its requests queued or
// running on lanes, at most the subsystem's mount_share; the rest wait in
// its FIFO.  Every mount of one file system (one device) uses one share, so
// two exports of a hung file system hold no more lanes than one; a mount
// whose backend names no device has a share of its own.  Fields under
// `lock`; `refs` and the registry under the registry's mutex.
struct thread_share {
  std::atomic<uint32_t> lock{0};
  uint32_t in_thread = 0, waiting = 0;
  vreq *wait_head = nullptr, *wait_tail = nullptr;
  uint64_t waits = 0;
  // Set at mount (vfs_set_device, vfs_set_thread_limit), read by
  // share_limit: an explicit limit (0: none, mount_share applies).  Atomic
  // (relaxed): a later mount of the file system may raise it while
  // requests of an earlier one read it.
  std::atomic<uint32_t> limit{0};
  // A VBC_REMOTE back end's (set at mount): share_limit widens it while
  // run_us, the moving average of its requests' time in thread context
  // (microseconds; written by the workers that ran them, a hint read
  // without the lock), is REMOTE_WAIT_US or more.
  bool remote = false;
  std::atomic<uint32_t> run_us{0};
  uint64_t dev = 0;    // the device (vfs_set_device), if keyed
  bool keyed = false;  // in the registry
  uint32_t refs = 0;   // mounts using it (keyed only)
};

struct mount {
  const vfs_backend *be = nullptr;
  void *priv = nullptr;  // the backend's mount state
  vfh root;
  // Vnode cache: fixed entries, chained hash over the handle bytes, clock.
  std::atomic<uint32_t> lock{0};
  std::vector<vnode> entries;
  std::vector<vnode *> buckets;
  uint64_t mask = 0;
  size_t hand = 0;
  uint64_t hits = 0, misses = 0, evictions = 0, stale = 0, primed = 0;  // under lock
  // Thread context (vfs.cc): the share this mount's requests count in --
  // its own, or its file system's (vfs_set_device).
  thread_share own_share;
  thread_share *share = &own_share;
  std::atomic<uint64_t> ops_interrupt[size_t(vop::count_)] = {};
  std::atomic<uint64_t> ops_thread[size_t(vop::count_)] = {};
  std::atomic<uint64_t> attr_shared{0}, attr_read{0};
};

// Creates the mount's cache and sets fs->be; the backend then sets priv
// and root.  Thread context.
mount *vfs_alloc(const vfs_backend *be, size_t cache);

// A back end vfs_mount can name: its options parsed and checked by
// `make` itself (vfs_option_* help), which answers like vfs_mount.
struct vfs_fstype {
  const char *name;
  mount *(*make)(const vfs_options &opts, std::string *err);
};
mount *local_mount_options(const vfs_options &opts, std::string *err);
mount *memory_mount_options(const vfs_options &opts, std::string *err);

// A back end built as a module -- vfs-NAME.so, loaded by vfs_mount when an
// export names NAME, from $KCONT_VFS_MODULE_DIR or the directory the build
// installs modules to -- exports this C function, which returns its
// vfs_fstype.  A module is built against this very header: it resolves
// the VFS's functions (vfs_alloc, vnode_forget, ...) from the program
// that loads it, which exports them (cmake: kcont_exports_for_modules).
#define KCONT_VFS_MODULE_ENTRY "kcont_vfs_module_v1"

// Option helpers for the back ends' `mount`: each takes a value once (a
// second `name=` is an error), and vfs_options_unknown names the first
// option none of the back end's names covers.  False and *err on error.
bool vfs_option_string(const vfs_options &opts, const char *name, std::string *out, bool required,
                       std::string *err);
bool vfs_option_size(const vfs_options &opts, const char *name, uint64_t *out, bool required,
                     std::string *err);
bool vfs_options_unknown(const vfs_options &opts, std::initializer_list<const char *> known,
                         const char *backend, std::string *err);

// The name vfs_set_instance gave this process ("" if none).  Thread
// context (mount time).
std::string vfs_instance();

// Lanes whose worker has been in one request for STALL_MS or more (stuck
// in a file system that does not answer, most likely).  For tests and
// diagnostics; any context.
inline constexpr int64_t STALL_MS = 100;

// Lanes per CPU that vfs_start makes, with lanes_per_cpu 0, when a
// VBC_REMOTE back end is mounted (4 otherwise).
inline constexpr uint32_t REMOTE_LANES_PER_CPU = 16;
// A VBC_REMOTE file system whose requests take at least this long in thread
// context on average is waiting on its network and may have many in
// flight; below it (answers from the client library's cache: a Ceph
// GETATTR under capabilities, 5-20 us) a few workers running the share's
// FIFO back to back beat waking a sleeping worker per request.
inline constexpr uint32_t REMOTE_WAIT_US = 100;
uint32_t vfs_lanes_stalled();

// Says which file system (device) fs is on: every mount of one device then
// counts its thread-context requests in one share.  Before any request on
// fs; thread context.
void vfs_set_device(mount *fs, uint64_t dev);

// Sets the most requests fs's file system may have in thread context at
// once (n >= 1; capped at the lanes vfs_start made).  Two mounts of one
// file system asking for different limits get the larger.  vfs_mount calls
// it for an export's `threads=`; after vfs_set_device, before any request
// on fs; thread context.
void vfs_set_thread_limit(mount *fs, uint32_t n);

// The cached vnode of fh with a reference, or nullptr.  Any context.
vnode *vnode_lookup_cached(mount *fs, const vfh &fh);

// The cached vnode of fh, or resolved now by the backend (thread context).
// Returns 0 with *out referenced, or an errno (EAGAIN: every cache entry is
// in use).
int vnode_get(mount *fs, const vfh &fh, vnode **out);

// Enters a vnode the backend has just made and opened, as vget would have
// (fresh.fs, fh, fd, type, state filled), so that the next request
// on its handle finds it cached; it holds no reference.  If the handle is
// cached already, or every entry is in use, fresh is reclaimed.  Any
// context (never blocks on anything but the cache's spinlock).
void vnode_prime(vnode &fresh);

// Adds a reference.  Any context.
void vnode_ref(vnode *vp);

// Forgets fh (a name of its object was removed or replaced): a later
// request resolves it again, and finds it stale if that was the object's
// last name.  Any context.
void vnode_forget(mount *fs, const vfh &fh);

// Completes a request a backend left pending (VB_PENDING): releases the
// request's vnodes, counts it, and defers r->done.  Any context.
void vop_complete(vreq *r);

// Switches the calling thread's filesystem identity (fsuid, fsgid,
// supplementary groups; this thread only) to c, skipping the system calls
// when it already is c, and checks that every step took.  The first call on
// a thread also gives it a filesystem context of its own with umask 0
// (creates get exactly the mode asked for).  Returns 0, the errno of
// unshare(CLONE_FS) when that context cannot be made, or VFS_CRED when the
// identity could not be taken (the thread's identity is then unknown and
// the next call switches again from scratch): the caller must not run the
// operation.  Under vfs_set_single_identity(true) nothing is switched (the
// filesystem context is still made).  Thread context.
int cred_enter(const vcred &c);

// Whether mode bits let c read (4), write (2) or execute/search (1) an
// object with attributes a: the exact decision when the object has no ACL,
// as the kernel's permission check takes it (no owner override: ACCESS
// answers with this).
bool mode_allows(const vattr &a, const vcred &c, int want);

// READ and WRITE of a file's data (want 4 or 2): the owner may always read
// and write it, whatever the mode bits (knfsd's owner override: a client
// that opened a file and then made it read-only keeps writing through the
// open), else mode_allows.  Only for the data operations themselves, never
// for ACCESS, SETATTR or directories.
bool data_access_allowed(const vattr &a, const vcred &c, int want);

// Whether r modifies the file system (refused with EROFS on VREQ_RDONLY).
bool vop_modifies(vop op);

// A back end's thread-context operations, one entry per vop: the vnode
// operations vector of BSD's vnodeopv_desc.  A back end builds its vector
// once, at compile time (set), asserts that it is complete, and its run()
// calls it; an entry takes the request and what that run() passes along
// (Extra: the memory back end's mount and aftermath).  call() answers
// EINVAL for an entry that is missing and for an op out of range.  Any
// context the entries allow.
template <class... Extra>
struct vop_vector {
  using op_fn = void (*)(vreq *, Extra...);
  op_fn ops[size_t(vop::count_)] = {};

  constexpr vop_vector &set(vop op, op_fn fn) {
    ops[size_t(op)] = fn;
    return *this;
  }
  constexpr bool complete() const {
    for (op_fn fn : ops)
      if (!fn) return false;
    return true;
  }
  void call(vreq *r, Extra... extra) const {
    size_t i = size_t(r->op);
    if (i >= size_t(vop::count_) || !ops[i]) {
      r->error = EINVAL;
      return;
    }
    ops[i](r, extra...);
  }
};

// Validates a name (r->name, and r->name2 when the operation uses it):
// non-empty, no '/', not longer than VFS_NAME_MAX.  Returns 0 or an errno.
int check_name(const char *name);

bool timespec_eq(const timespec &a, const timespec &b);

// FNV-1a over n bytes: the vnode cache's hash of handles, and any other
// key the VFS and its back ends make from bytes.  Any context.
inline uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// The vtype of a file mode's format bits (S_IFMT).  Any context.
inline vtype vtype_of_mode(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return vtype::reg;
    case S_IFDIR:
      return vtype::dir;
    case S_IFBLK:
      return vtype::blk;
    case S_IFCHR:
      return vtype::chr;
    case S_IFLNK:
      return vtype::lnk;
    case S_IFSOCK:
      return vtype::sock;
    case S_IFIFO:
      return vtype::fifo;
    default:
      return vtype::none;
  }
}

// READ and WRITE are for regular files: EISDIR for a directory, EINVAL for
// anything else (never opened for I/O), else 0.  Any context.
inline int data_type_error(const vnode *vp) {
  if (vp->type == vtype::dir) return EISDIR;
  if (vp->type != vtype::reg) return EINVAL;
  return 0;
}

// SYMLINK's target (r->data, r->count): EINVAL if empty or with a NUL,
// ENAMETOOLONG from PATH_MAX bytes on (as symlinkat), else 0.
int check_symlink_target(const vreq *r);

// MKNOD's file format (S_IFBLK, S_IFCHR, S_IFSOCK, S_IFIFO) for
// r->mknod_type, or 0 when that type cannot be made (VFS_BADTYPE).
uint32_t mknod_format(const vreq *r);

// Whether a walk's path (r->data, r->count) names no component but "."
// ("", "/", "./.": MNT of an export root): it ends where it starts, and a
// back end can answer it from the handle the request holds.  Any context.
bool walk_stays(const vreq *r);

}  // namespace kc::vfs
