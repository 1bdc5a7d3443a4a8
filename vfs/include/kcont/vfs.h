// SPDX-License-Identifier: BSD-2-Clause
// vfs.h -- a file-system layer whose operations take continuations.
//
// Model: a `mount` is one mounted tree (a backend instance: a local
// directory tree, as one export serves it, or an in-memory tree; NetBSD's
// struct mount).  Several mounts may lie on one file system (one device):
// each is a `mount` of its own, with its own vnode cache, but they share
// one allowance of thread context (one thread share:
// vfs_config::mount_share).  Objects in it are named by handles
// (`vfh`: up to VFS_FHSIZE opaque bytes the backend makes, stable across
// restarts where the backend can be); a handle resolved to an open object
// is a `vnode`, kept in the mount's vnode cache.  Every operation is one
// request record, a `vreq`, that the caller owns and fills: the operation,
// the mount, the handle(s), the caller's credential, the arguments, and the
// continuation to run when it is complete.  The request carries the results
// back (status, attributes before and after, the object found or made,
// data).
//
// Two ways to run a request:
//
//   vop_start(r)  asynchronous.  The VFS resolves the handles from the cache
//                 (one not there sends the request straight to thread
//                 context), then asks the backend to *start* the operation
//                 in the calling context (a dispatcher, interrupt kind): the
//                 backend completes it on the spot when it can do so without
//                 blocking (a getattr of an open inode), starts it on the
//                 I/O layer when the kernel can complete it asynchronously
//                 (read through buf(9), write from the caller's memory,
//                 fsync), or says it would block; then the VFS runs it in
//                 thread context on one of its lanes (4 workqueue levels on
//                 each of the kcont_ncpus() CPUs, one worker each) under the
//                 caller's credential.  Either way the request completes by
//                 deferring r->done (obj = r, status = r->error): in the
//                 context *the caller* asked for, never inside vop_start.
//                 The VFS decides which road an operation takes, never the
//                 caller; r->used_thread says afterwards which one it took.
//
//   vop_call(r)   synchronous, for thread context (the classic model): the
//                 whole operation runs in the calling thread, which may
//                 block; r->done is not used.
//
// Credentials: every permission decision the backend can leave to the
// kernel, it leaves to the kernel -- thread-context operations run with the
// thread's filesystem identity switched to r->cred (fsuid, fsgid,
// supplementary groups), so ACLs apply and a non-owner's write clears
// setuid/setgid -- except under vfs_set_single_identity, where they run
// with the process's own identity.  An operation attempted in interrupt
// context checks mode bits only when that decision is exact (no ACL on the
// inode, no setuid/setgid bit to clear); otherwise it goes to thread
// context.  As knfsd does, the owner of a file may always read and write
// it.
//
// Special files: no operation opens a FIFO, socket or device for I/O, and
// none waits without bound: READ/WRITE of them is EINVAL, CREATE over one
// is EEXIST, a size change is EINVAL.
//
// Locking: a request is the VFS's from vop_start until r->done is deferred
// (vop_call: until it returns) and its caller's otherwise; the VFS and the
// backend touch it only in between.  Each mount's vnode cache has its own
// spinlock (never held across a system call).  The VFS's global state: the
// workqueues and the buffer pool are made by the first vfs_start and torn
// down by the last vfs_stop (a count, under a mutex); every request sent
// to thread context writes the lanes' loads and start times and a
// round-robin counter (atomics); the registry of file systems' thread
// shares changes at mount and unmount (under a mutex).
#pragma once

#include <sys/types.h>
#include <time.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kcont/buf.h"
#include "kcont/kcont.h"
#include "kcont/workqueue.h"

namespace kc::vfs {

inline constexpr uint32_t VFS_FHSIZE = 56;          // bytes of a backend handle, at most
inline constexpr uint32_t VFS_NAME_MAX = 255;       // bytes of a name, at most
inline constexpr uint32_t VFS_MAX_GIDS = 16;        // supplementary groups of a credential
inline constexpr uint32_t VFS_BUF_MAX = 64 * 1024;  // reads up to this size go through buf(9)
// The largest READ a back end with no file to send from (ceph) answers in
// one buffer of the large pool (vfs_large_bufpool).
inline constexpr uint32_t VFS_LARGE_BUF_MAX = 1024 * 1024;

struct mount;
struct vnode;
struct vfs_backend;

enum class vtype : uint8_t { none, reg, dir, blk, chr, lnk, sock, fifo };

// Attributes of an object (NFS fattr3 without fsid).
struct vattr {
  vtype type = vtype::none;
  uint32_t mode = 0;  // permission bits, 07777
  uint32_t nlink = 0, uid = 0, gid = 0;
  uint64_t size = 0, used = 0;  // bytes
  uint32_t rdev_major = 0, rdev_minor = 0;
  uint64_t fileid = 0;
  timespec atime{}, mtime{}, ctime{};
};

// Attributes before and after an operation (NFS wcc_data), or after only.
struct vwcc {
  bool have_pre = false, have_post = false;
  vattr pre, post;
};

// The identity an operation acts with (squashing already applied).
struct vcred {
  uint32_t uid = 65534, gid = 65534;
  uint32_t ngids = 0;
  uint32_t gids[VFS_MAX_GIDS] = {};
};

// A handle: opaque bytes made by the backend.
struct vfh {
  uint32_t len = 0;
  uint8_t data[VFS_FHSIZE] = {};
};

// Attributes to set (NFS sattr3).  Times: how 0 = leave, 1 = server's
// current time, 2 = the given time.
struct vsattr {
  bool set_mode = false, set_uid = false, set_gid = false, set_size = false;
  uint32_t mode = 0, uid = 0, gid = 0;
  uint64_t size = 0;
  uint8_t atime_how = 0, mtime_how = 0;
  timespec atime{}, mtime{};
};

enum class vop : uint8_t {
  getattr,   // fh -> obj.post
  setattr,   // fh, sattr, guard -> obj
  lookup,    // fh (dir), name -> res_fh, res_attr, obj.post (dir)
  access,    // fh, access_want -> access_granted, obj.post
  readlink,  // fh -> link_len bytes at dst, obj.post
  read,      // fh, offset, count, dst/extent_ok -> rd, obj.post
  write,     // fh, offset, count, data, stable -> written, obj
  create,    // fh (dir), name, create_how, sattr, verf -> res_fh, res_attr, obj (dir)
  mkdir,     // fh (dir), name, sattr -> res_fh, res_attr, obj (dir)
  symlink,   // fh (dir), name, sattr, data/count (target) -> res_fh, res_attr, obj (dir)
  mknod,     // fh (dir), name, mknod_type, rdev, sattr -> res_fh, res_attr, obj (dir)
  remove,    // fh (dir), name -> obj (dir)
  rmdir,     // fh (dir), name -> obj (dir)
  rename,    // fh (from dir), name, fh2 (to dir), name2 -> obj (from), obj2 (to)
  link,      // fh (file), fh2 (dir), name2 -> obj.post (file), obj2 (dir)
  readdir,   // fh (dir), cookie, plus, emit -> eof, obj.post
  fsstat,    // fh -> fs, obj.post
  fsinfo,    // fh -> fs (limits), obj.post
  commit,    // fh -> obj
  walk,      // fh (a directory), data/count (a '/'-separated path below it; every
             // component but the last a directory, no symlink followed, no
             // `..`) -> res_fh, res_attr
  count_
};

const char *vop_name(vop op);

// ACCESS bits (NFS ACCESS3 values).
enum : uint32_t {
  VACCESS_READ = 1,
  VACCESS_LOOKUP = 2,
  VACCESS_MODIFY = 4,
  VACCESS_EXTEND = 8,
  VACCESS_DELETE = 16,
  VACCESS_EXECUTE = 32,
};

enum class create_how : uint8_t { unchecked, guarded, exclusive };
enum class stable_how : uint8_t { unstable, data_sync, file_sync };

// Request flags.
enum : uint8_t {
  VREQ_RDONLY = 1,     // the mount is read-only for this caller: modifying ops fail EROFS
  VREQ_EXTENT_OK = 2,  // read: the caller can send a file extent (rd.where == extent)
};

// A directory entry handed to readdir's emit callback.
struct vdirent {
  uint64_t fileid = 0;
  const char *name = nullptr;
  uint32_t namelen = 0;
  uint64_t cookie = 0;                      // resumes after this entry
  bool have_attr = false, have_fh = false;  // readdir with plus only
  vattr attr;
  vfh fh;
};

// Where read data is.
enum class rd_where : uint8_t {
  none,    // nothing read (n == 0 or error)
  dst,     // copied to r->dst
  buf,     // in rd.bp->data: the caller brelse()s it
  extent,  // in the file rd.fd at rd.offset: the caller sends it, then vnode_rele(rd.ref)
};

struct vread {
  rd_where where = rd_where::none;
  uint32_t n = 0;
  bool eof = false;
  buf *bp = nullptr;
  int fd = -1;
  uint64_t offset = 0;
  vnode *ref = nullptr;
  // extent: every page of it was in the page cache when the backend looked
  // (cachestat(2)), so sending it will most likely not wait for a disk.
  bool resident = false;
};

// File-system figures (NFS FSSTAT3 / FSINFO3 / PATHCONF3).
struct vfsinfo {
  uint64_t tbytes = 0, fbytes = 0, abytes = 0, tfiles = 0, ffiles = 0, afiles = 0;
  uint32_t link_max = 0, name_max = VFS_NAME_MAX;
  uint64_t max_file_size = 0;
  bool symlinks = true, hardlinks = true, cansettime = true;
};

struct vreq {
  // ---- arguments (the caller's) -------------------------------------------
  vop op = vop::getattr;
  uint8_t flags = 0;
  mount *fs = nullptr;
  vfh fh, fh2;
  vcred cred;
  char name[VFS_NAME_MAX + 1] = {};  // NUL-terminated; checked by the VFS
  char name2[VFS_NAME_MAX + 1] = {};
  uint64_t offset = 0;            // read, write
  uint32_t count = 0;             // read, write, symlink, walk: length of data / wanted
  const uint8_t *data = nullptr;  // write data, symlink target, walk path (caller memory
                                  // that stays valid until completion)
  uint8_t *dst = nullptr;         // read (when not through buf), readlink: caller memory
  uint32_t dst_cap = 0;
  stable_how stable = stable_how::unstable;
  create_how how = create_how::unchecked;
  uint8_t verf[8] = {};  // exclusive create
  vsattr sattr;
  bool guard = false;  // setattr: fail with VFS_NOT_SYNC unless ctime == guard_ctime
  timespec guard_ctime{};
  vtype mknod_type = vtype::none;
  uint32_t rdev_major = 0, rdev_minor = 0;
  uint32_t access_want = 0;
  uint64_t cookie = 0;  // readdir
  bool plus = false;
  // readdir: called for each entry in order until it returns false (that
  // entry not taken: the next readdir resumes at it), in the context the
  // operation runs in -- possibly interrupt: it must not block or allocate.
  bool (*emit)(void *arg, const vdirent &e) = nullptr;
  void *emit_arg = nullptr;
  kcont *done = nullptr;  // vop_start: run with (obj = this, status = error)
  // When the request was in hand: vfs_arrival() read after its last byte
  // arrived (0: not known).  An operation that changes nothing (getattr,
  // access, lookup, readlink, read, fsstat, fsinfo) may then answer with
  // attributes of its object that were read at any moment after that --
  // one fstat shared by every request that had arrived before it -- instead
  // of reading them for itself.  A change that completed before the
  // request arrived is always seen (ATTRIBUTE SNAPSHOTS in vfs(9)).
  uint64_t arrived = 0;

  // ---- results ----------------------------------------------------------------
  int error = 0;             // 0, an errno, or a VFS_ error below (VFS_NOT_SYNC ... VFS_CRED)
  bool used_thread = false;  // vop_start: it ran (in part) in thread context
  vwcc obj;                  // the object fh names (a directory for name operations)
  vwcc obj2;                 // the object fh2 names (rename, link)
  vfh res_fh;                // lookup, create, mkdir, symlink, mknod, walk
  bool have_res_fh = false, have_res_attr = false;
  vattr res_attr;
  uint32_t access_granted = 0;
  uint32_t link_len = 0;  // readlink: bytes at dst
  vread rd;               // read
  uint32_t written = 0;   // write
  bool eof = false;       // readdir
  vfsinfo fsi;            // fsstat, fsinfo

  // ---- the VFS's and the backend's (do not touch) ---------------------------
  vnode *vp = nullptr, *vp2 = nullptr;
  vreq *wait_next = nullptr;  // its file system's FIFO of requests over its thread share
  uint16_t lane = 0;          // the lane it runs on in thread context
  work wk;
  kcont kc;  // the backend's own stage continuation (unbound, {bio, interrupt})
  // Between vop_start and the deferral of `done` (kept in Debug builds
  // only, for KC_ASSERT; always present so that the layout never differs).
  bool in_flight = false;

  vreq() = default;
  vreq(const vreq &) = delete;
  vreq &operator=(const vreq &) = delete;
};

// Errors beyond errno values.
inline constexpr int VFS_NOT_SYNC = 10002;    // setattr guard: ctime differs
inline constexpr int VFS_BAD_COOKIE = 10003;  // readdir: cookie no longer valid
inline constexpr int VFS_BADHANDLE = 10001;   // malformed handle
inline constexpr int VFS_BADTYPE = 10007;     // mknod of a type that cannot be made
inline constexpr int VFS_CRED = 10008;        // the caller's identity could not be taken

// ---- the subsystem ---------------------------------------------------------

// Registers the kcont levels the VFS's thread-context workers use.  Call
// before kcont_start (any thread).  Returns 0 or an errno.
int vfs_register_levels();

struct vfs_config {
  uint32_t bufs = 256;  // buffers of VFS_BUF_MAX bytes for reads and writes
  // Buffers of VFS_LARGE_BUF_MAX bytes: a READ larger than the caller's
  // memory (vreq::dst_cap) from a back end that has no file extent to offer
  // takes one (rd_where::buf) instead of answering short; with none free it
  // answers short (the client asks for the rest).  Address space only
  // until a READ touches one.  0: no large pool.
  uint32_t large_bufs = 16;
  // Thread context has lanes_per_cpu x kcont_ncpus() lanes (a workqueue
  // level on a CPU, one worker each).  0: 4 per CPU, 16 if a back end
  // whose calls wait on a network (Ceph) is mounted; at most 16 (EINVAL
  // above).
  uint32_t lanes_per_cpu = 0;
  // One file system's requests (those of every mount of its device; a
  // memory mount is a file system of its own) may occupy at most this many
  // lanes at once (0: two per CPU, at most half the lanes, at least 1; at
  // most all of them); more wait in its share's FIFO without a worker, so a
  // file system that stops answering ties up only its share.  An export's
  // `threads=N` sets its file system's own limit instead; a file system
  // whose calls wait on a network (Ceph) has every lane but mount_share's
  // worth while they do (vfs(9), THE BACKEND INTERFACE).
  uint32_t mount_share = 0;
};

// Starts the asynchronous side (workqueues, buffer pool); kcont must be
// running.  Counted: every vfs_start needs a vfs_stop, and only the first
// (while none is running) applies its config -- a later one joins what is
// running and its cfg is ignored.  Thread context.  Returns 0 or an errno
// with a reason in *err.  vop_call needs none of it.
int vfs_start(const vfs_config &cfg, std::string *err);

// Stops it when the last user stops: waits for the workqueues to drain.
// Thread context; no request may be in flight.
void vfs_stop();

// The buffer pool (nullptr before vfs_start and after the last vfs_stop).
// Any context.
bufpool *vfs_bufpool();
// The pool of VFS_LARGE_BUF_MAX buffers (vfs_config::large_bufs; nullptr
// when there is none).  Any context; buf_get never waits.
bufpool *vfs_large_bufpool();

// ---- mounts ----------------------------------------------------------------

// Mounts the local directory tree at `path` (realpath'd; handles never
// cross its device).  Needs CAP_DAC_READ_SEARCH to resolve handles.
// `cache` vnodes are kept open.  Thread context.  nullptr and *err on error.
mount *vfs_mount_local(const std::string &path, size_t cache, std::string *err);

// A memory mount that behaves the same every time, for tests that compare
// two servers byte for byte: its handles carry `generation` (made odd)
// instead of a random one, and every time it stamps is `at` instead of the
// clock.  Two such mounts given the same requests give the same replies.
struct memory_reproducible {
  uint32_t generation = 1;
  timespec at{};
};

// Mounts an empty in-memory tree (a root directory, mode 0777, owned by
// root), reproducible if `repro` is given.  Thread context.
mount *vfs_mount_memory(size_t max_bytes, std::string *err,
                        const memory_reproducible *repro = nullptr);

// A back end's options, `name=value` pairs in the order given.
using vfs_options = std::vector<std::pair<std::string, std::string>>;

// Mounts a file system of the back end named `fs` -- one way for every back
// end this build has (vfs_backends()):
//   local   path=DIR (required), cache=N (vnodes kept open, default 4096):
//           vfs_mount_local
//   memory  size=BYTES (required; a K, M or G suffix multiplies by 2^10,
//           2^20, 2^30): vfs_mount_memory
//   ceph    a module (vfs-ceph.so), see vfs(9)
// and, for every back end, threads=N (1..4096): at most N of the file
// system's requests in thread context at once (vfs_config::mount_share).
// nullptr and *err on error: a back end this build does not have (the
// message lists those it has), an option the back end does not know, a
// missing or malformed value, or the back end's own failure.  Thread
// context.
mount *vfs_mount(const std::string &fs, const vfs_options &opts, std::string *err);

// The names of the back ends this build has, comma-separated ("local,
// memory").  Any context.
std::string vfs_backends();

// Unmounts: closes every cached vnode.  Thread context; no request on it
// may be in flight.
void vfs_unmount(mount *fs);

// The handle of the root.  Any context.
const vfh &vfs_root(const mount *fs);

// Counters per mount (relaxed snapshot).  Any context.
struct vfs_stats {
  uint64_t cache_hits = 0, cache_misses = 0, evictions = 0, stale = 0;
  uint64_t cache_primed = 0;  // entered by the operation that made the object (CREATE)
  uint64_t ops_interrupt[size_t(vop::count_)] = {};  // completed without a thread
  uint64_t ops_thread[size_t(vop::count_)] = {};     // ran in thread context
  // Thread context now: requests on lanes (at most thread_share, the file
  // system's limit: threads= or mount_share) and
  // parked in the FIFO -- of the mount's file system: every mount of one
  // device shares them, and shows the same figures; thread_waits counts
  // every parking.
  // thread_share is 0 until the first vfs_start (it keeps its value after
  // vfs_stop).
  uint32_t thread_running = 0, thread_waiting = 0, thread_share = 0;
  uint64_t thread_waits = 0;
  // Operations that change nothing (see vreq::arrived): answered with a
  // snapshot of the attributes shared with other requests, or after
  // reading them themselves.
  uint64_t attr_shared = 0, attr_read = 0;
};
vfs_stats vfs_get_stats(const mount *fs);

// The moment a request arrives, for vreq::arrived: read it once the
// request's last byte is in hand -- reading it later is also correct, only
// shares less.  Never 0.  Any context; one load of a shared counter.
uint64_t vfs_arrival();

// ---- requests --------------------------------------------------------------

// Starts r (see the model).  r->fs, r->op, r->fh, r->cred, the arguments
// and r->done must be set; the results are reset here.  Always completes by
// deferring r->done (status = r->error), never by running it inside
// vop_start (another thread may run it before vop_start returns).  Any
// dispatcher context (interrupt kind) after vfs_start; never blocks or
// allocates.
void vop_start(vreq *r);

// Runs r to completion in the calling thread (may block).  Thread context;
// r must not be in flight (vop_start).  Leaves the calling thread's
// filesystem identity as r->cred once switched (switching back costs
// system calls; the next vop_call switches as needed); call
// vfs_cred_reset() to return it to the process's own identity.  The first
// operation run on a thread also gives it a filesystem context of its own
// (unshare(CLONE_FS)) with umask 0.  Returns r->error.
int vop_call(vreq *r);

// Returns the calling thread's filesystem identity to the process's own.
// Thread context.
void vfs_cred_reset();

// Whether this process can run requests under their callers' identities:
// switches a scratch thread's fsuid, fsgid and supplementary groups to an
// unprivileged identity and checks each step.  0, or EPERM with the missing
// capability named in *why (CAP_SETUID, CAP_SETGID), or the errno of
// unshare(CLONE_FS) (also named in *why).  A server must refuse to start on
// EPERM unless it chose vfs_set_single_identity.  Thread context.
int vfs_identity_check(std::string *why);

// on: thread-context operations run with the process's own identity
// instead of switching to each caller's (for a process that cannot switch
// and whose operator accepted it; permission decisions taken from mode
// bits still use the caller's credential).  Off by default.  Set it before
// any request runs.  Any context.
void vfs_set_single_identity(bool on);

// Names this process's role for back ends that keep state with a remote
// service across restarts: a server restarted under the same name takes
// over what its previous run left there (the Ceph back end reclaims the
// previous run's libcephfs session, whose capabilities would otherwise
// hold the file system's objects until the MDS times it out), and two
// processes under different names never take each other's.  kcont-nfsd
// uses "kcont-nfsd@ADDR:NFS-PORT".  Empty (the default): nothing is taken
// over.  Call before mounting.  Thread context.
void vfs_set_instance(const std::string &name);

// Drops a reference to a vnode (rd.ref of an extent read).  Any context.
void vnode_rele(vnode *vp);

// Readies a request for reuse: every argument back to its default, the
// results cleared, the vnodes it resolved (vp, vp2) forgotten.  What a
// completed request still holds (rd.bp, rd.ref) is dropped, not released:
// call vreq_release first.  The request must not be in flight.  Any
// context.
void vreq_reset(vreq *r);

// Releases what a completed request still holds (rd.bp, rd.ref) that the
// caller did not take; idempotent.  Any context.
void vreq_release(vreq *r);

}  // namespace kc::vfs
