// SPDX-License-Identifier: BSD-2-Clause
// local.cc -- the local backend: a directory tree of this machine.
//
// Model: a handle is the kernel's own (name_to_handle_at: handle type,
// then f_handle), so it names an inode and survives a restart without any
// table on disk.  Resolving one (vget, thread context, as the process's own
// identity: it needs CAP_DAC_READ_SEARCH) opens it with open_by_handle_at
// relative to the mount's root, refuses what lies on another device, has
// no links left or whose path is outside the tree (ESTALE: a forged handle
// reaches nothing outside), then keeps a descriptor: regular files open
// read-write (or read-only), directories read-only, anything else O_PATH
// -- never a FIFO, socket or device opened for I/O.  Every operation works
// relative to these descriptors with *at() calls on one name at a time,
// never following a symlink.  Where a call has no form that acts on a
// descriptor alone -- the chmod, truncate and utimensat of SETATTR and of
// a new object's attributes (apply_sattr), LINK's linkat of the file
// (do_link), the reopening of a file resolved or created (vget,
// prime_created) -- it goes through /proc/self/fd/N, the magic link to the
// open inode itself.  WALK opens its path one component at a time (openat,
// O_NOFOLLOW) from the directory it starts at.
//
// What completes in interrupt context (start), because the kernel answers
// it without waiting for anything but an in-core inode or the I/O layer:
//   getattr, fsstat, fsinfo   fstat / fstatvfs / fpathconf of an open inode
//   access                    mode bits, when the inode has no ACL
//   readlink                  a symlink with no blocks of its own (the target
//                             is in the inode): readlinkat reads no disk
//   walk                      of nothing (MOUNT of an export root): the vnode
//   lookup                    openat2(RESOLVE_CACHED, RESOLVE_NO_XDEV): the dentry cache
//                             answers or it goes to thread context; the
//                             directory's search permission from mode bits
//   read                      buf(9): bread, coalesced with reads in flight;
//                             bigger than a buffer: a file extent for the
//                             caller to send (sendfile) when it can
//   write                     buf(9) from the caller's memory with
//                             B_DSYNC/B_SYNC for stable writes, when mode
//                             bits decide and no setuid/setgid bit needs
//                             clearing (then the kernel must do the write
//                             under the caller's identity: thread context)
//   commit                    buf(9) fsync
// Everything else runs in thread context under the caller's identity
// (vfs_set_single_identity aside), but a modifying request already refused
// with EROFS, which start answers with its attributes.
// A regular file CREATE made is entered into the vnode cache there and
// then (prime_created), so the requests that follow it start cached.
// On a file system whose in-core answers may still wait for a daemon or the
// network (FUSE, NFS, SMB/CIFS, Ceph, 9P, AFS, Coda: fstat there can ask
// the server) nothing runs in interrupt context but a walk that stays
// where it starts (MNT of an export root), answered from the handle the
// request holds without a system call (start_walk): a dispatcher must
// never wait for someone else's server.
//
// Attributes of operations that change nothing (getattr, access, lookup's
// directory, readlink, read, fsstat, fsinfo) come from current_attrs: the
// vnode's snapshot when it was read after the request arrived, else an
// fstat that is then offered to others (ATTRIBUTE SNAPSHOTS in vfs(9)).
// Operations that change something always read their own.
//
// ACLs: whether an inode has a POSIX access ACL (the vnode's acl_sample) is
// read (fgetxattr, an in-core lookup) when its vnode is made and again whenever its ctime
// changed since -- setting an ACL changes ctime -- so a mode-bit decision is
// only ever taken for an inode that has no ACL.
//
// Locking: the vnode's ACL sample is written under the mount's cache lock;
// its attribute snapshot is a seqlock (internal.h) that never waits;
// everything else is per request.
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

#include "internal.h"
#include "kcont/error_text.h"
#include "kcont/spinlock.h"

namespace kc::vfs {

namespace {

constexpr uint32_t MAX_KERNEL_HANDLE = VFS_FHSIZE - 4;

struct local_mount {
  std::string path;
  int root_fd = -1;
  dev_t dev = 0;
  ino_t root_ino = 0;
  bool thread_only = false;  // a FUSE or network file system (see above)
  bool whole_fs = false;     // the root is the top of its file system
};

// File systems where even an fstat may wait for a daemon or a server.
bool may_wait_for_a_server(int fd) {
  struct statfs sf;
  if (fstatfs(fd, &sf) != 0) return true;
  switch (static_cast<unsigned long>(sf.f_type)) {
    case FUSE_SUPER_MAGIC:
    case NFS_SUPER_MAGIC:
    case SMB_SUPER_MAGIC:
    case CIFS_SUPER_MAGIC:
    case SMB2_SUPER_MAGIC:
    case CEPH_SUPER_MAGIC:
    case V9FS_MAGIC:
    case AFS_SUPER_MAGIC:
    case CODA_SUPER_MAGIC:
      return true;
    default:
      return false;
  }
}

local_mount *lm(const mount *fs) { return static_cast<local_mount *>(fs->priv); }

struct kernel_handle {
  struct file_handle fh;
  unsigned char bytes[MAX_KERNEL_HANDLE];
};

uint32_t get32(const uint8_t *p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

void put32(uint8_t *p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}

void to_vattr(const struct stat &st, vattr *a) {
  a->type = vtype_of_mode(st.st_mode);
  a->mode = st.st_mode & 07777;
  a->nlink = uint32_t(st.st_nlink);
  a->uid = st.st_uid;
  a->gid = st.st_gid;
  a->size = uint64_t(st.st_size);
  a->used = uint64_t(st.st_blocks) * 512;
  a->rdev_major = major(st.st_rdev);
  a->rdev_minor = minor(st.st_rdev);
  a->fileid = st.st_ino;
  a->atime = st.st_atim;
  a->mtime = st.st_mtim;
  a->ctime = st.st_ctim;
}

// fstat of fd into *a; false (errno set) on failure.
bool stat_fd(int fd, vattr *a) {
  struct stat st;
  if (fstat(fd, &st) != 0) return false;
  to_vattr(st, a);
  return true;
}

bool stat_at(int dirfd, const char *name, vattr *a, struct stat *raw = nullptr) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH)) != 0)
    return false;
  to_vattr(st, a);
  if (raw) *raw = st;
  return true;
}

void pre(vreq *r) { r->obj.have_pre = stat_fd(r->vp->fd, &r->obj.pre); }
void post(vreq *r) { r->obj.have_post = stat_fd(r->vp->fd, &r->obj.post); }

// The attributes an operation that changes nothing answers with: the
// vnode's snapshot if it was read after r arrived, else read now (and
// offered to the requests that arrived before this read began).  False
// (errno set) if the fstat failed.
bool current_attrs(vreq *r, vattr *a) {
  if (attr_snapshot_get(r->vp->attrs, r->arrived, a)) {
    r->fs->attr_shared.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  const uint64_t epoch = attr_epoch_begin();
  if (!stat_fd(r->vp->fd, a)) return false;
  attr_snapshot_put(r->vp->attrs, epoch, *a);
  r->fs->attr_read.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void current(vreq *r) { r->obj.have_post = current_attrs(r, &r->obj.post); }

// The handle of dirfd/name (name "" = dirfd itself), without following a
// final symlink.  Returns 0 or an errno (EOVERFLOW: too big a handle).
int make_fh(int dirfd, const char *name, vfh *out) {
  kernel_handle kh;
  kh.fh.handle_bytes = MAX_KERNEL_HANDLE;
  int mount_id = 0;
  int flags = name[0] == '\0' ? AT_EMPTY_PATH : 0;
  if (name_to_handle_at(dirfd, name, &kh.fh, &mount_id, flags) != 0) return errno;
  put32(out->data, uint32_t(kh.fh.handle_type));
  std::memcpy(out->data + 4, kh.fh.f_handle, kh.fh.handle_bytes);
  out->len = 4 + kh.fh.handle_bytes;
  return 0;
}

// Whether the directory open at fd lies inside the mount, by its
// ancestors rather than its path: `..` is opened step by step until the
// mount's root (inside), the top of the file system or another device
// (outside).  Depth is bounded only by the tree itself.
bool dir_inside(int fd, const local_mount &m) {
  int cur = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  bool in = false;
  while (cur >= 0) {
    struct stat st;
    if (fstat(cur, &st) != 0 || st.st_dev != m.dev) break;
    if (st.st_ino == m.root_ino) {
      in = true;
      break;
    }
    int up = openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct stat ust;
    if (up >= 0 && fstat(up, &ust) == 0 && ust.st_dev == st.st_dev && ust.st_ino == st.st_ino) {
      close(up);  // the top of the file system: its own parent
      up = -1;
    }
    close(cur);
    cur = up;
  }
  if (cur >= 0) close(cur);
  return in;
}

// Whether the inode open at fd (on the mount's device) lies inside the
// mount: it is the root or below it.  On a mount of a whole file system
// every inode of the device is.  Otherwise its path answers when the
// kernel can spell it (up to PATH_MAX bytes); a deeper directory is judged
// by its ancestors (dir_inside).  A deeper non-directory cannot be: the
// kernel keeps no parent of a file, so it is taken as outside (ESTALE) --
// export the file system's root to serve files below PATH_MAX bytes.
bool inside(int fd, const local_mount &m, bool is_dir) {
  if (m.whole_fs) return true;
  char link[64], path[PATH_MAX];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 0 && errno == ENAMETOOLONG) return is_dir && dir_inside(fd, m);
  if (n <= 0) return false;
  path[n] = '\0';
  size_t rl = m.path.size();
  if (std::strncmp(path, m.path.c_str(), rl) != 0) return false;
  return path[rl] == '\0' || path[rl] == '/' || m.path == "/";
}

// A vnode's ACL sample (its vnode_state): whether the inode had a POSIX
// access ACL when its ctime was `ctime` ({-1, 0}: not known).
struct acl_sample {
  bool has_acl;
  timespec ctime;
};

// 1: the inode has a POSIX access ACL, 0: it has none, -1: cannot tell
// here (an O_PATH descriptor).
int read_acl(int fd, vtype t) {
  if (t != vtype::reg && t != vtype::dir) return -1;
  ssize_t n = fgetxattr(fd, "system.posix_acl_access", nullptr, 0);
  if (n > 0) return 1;
  return (n < 0 && (errno == ENODATA || errno == EOPNOTSUPP)) ? 0 : -1;
}

// Takes a fresh vnode's ACL sample (fd and type set; st its stat).
void sample_acl(vnode *vp, const struct stat &st) {
  int acl = read_acl(vp->fd, vp->type);
  vnode_state_set(vp, acl_sample{acl != 0, acl < 0 ? timespec{-1, 0} : st.st_ctim});
}

// Whether a mode-bit decision is exact for vp with attributes a (no ACL):
// rereads the ACL sample when ctime moved since it was taken.
bool mode_bits_decide(vnode *vp, const vattr &a) {
  {
    spinlock g(vp->fs->lock);
    acl_sample s = vnode_state<acl_sample>(vp);
    if (timespec_eq(s.ctime, a.ctime)) return !s.has_acl;
  }
  int acl = read_acl(vp->fd, vp->type);
  if (acl < 0) return false;
  spinlock g(vp->fs->lock);
  vnode_state_set(vp, acl_sample{acl == 1, a.ctime});
  return acl == 0;
}

// The kernel's decision for the calling thread's identity (thread context,
// after cred_enter): R_OK, W_OK or X_OK on the inode open at fd.
bool kernel_allows(int fd, int how) {
  return syscall(SYS_faccessat2, fd, "", how, AT_EACCESS | AT_EMPTY_PATH) == 0;
}

// Thread context: may r's caller read (4) or write (2) vp's data, as the
// kernel decides for its identity?  The owner may always read and write
// (data_access_allowed), and root (whose fsuid 0 keeps CAP_DAC_OVERRIDE)
// needs no question.
bool may(vreq *r, const vattr &a, int want) {
  if (r->cred.uid == a.uid || r->cred.uid == 0) return true;
  return kernel_allows(r->vp->fd, want == 4 ? R_OK : W_OK);
}

// ---- sattr ---------------------------------------------------------------------

int apply_sattr(int fd, const vsattr &s) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  if (s.set_uid || s.set_gid) {
    if (fchownat(fd, "", s.set_uid ? uid_t(s.uid) : uid_t(-1), s.set_gid ? gid_t(s.gid) : gid_t(-1),
                 AT_EMPTY_PATH) != 0)
      return errno;
  }
  if (s.set_mode && chmod(path, s.mode & 07777) != 0) return errno;
  if (s.set_size && truncate(path, off_t(s.size)) != 0) return errno;
  if (s.atime_how || s.mtime_how) {
    timespec ts[2];
    ts[0] = s.atime_how == 2 ? s.atime : timespec{0, s.atime_how == 1 ? UTIME_NOW : UTIME_OMIT};
    ts[1] = s.mtime_how == 2 ? s.mtime : timespec{0, s.mtime_how == 1 ? UTIME_NOW : UTIME_OMIT};
    if (utimensat(AT_FDCWD, path, ts, 0) != 0) return errno;
  }
  return 0;
}

// Applies what is left of s to the object dirfd/name just made (the mode
// was given to the call that made it).
int finish_new(int dirfd, const char *name, const vsattr &s) {
  vsattr rest = s;
  rest.set_mode = false;
  if (!rest.set_uid && !rest.set_gid && !rest.set_size && !rest.atime_how && !rest.mtime_how)
    return 0;
  int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  int e = apply_sattr(fd, rest);
  close(fd);
  return e;
}

// The result of a name operation that made dir/name: its handle and
// attributes (absent if they cannot be had: the object is there anyway).
void result_of(vreq *r, const char *name) {
  struct stat st;
  r->have_res_attr = stat_at(r->vp->fd, name, &r->res_attr, &st);
  r->have_res_fh =
      r->have_res_attr && st.st_dev == lm(r->fs)->dev && make_fh(r->vp->fd, name, &r->res_fh) == 0;
}

// ---- thread-context operations ------------------------------------------------

void do_setattr(vreq *r) {
  pre(r);
  const vsattr &s = r->sattr;
  if (r->error == 0 && r->guard && r->obj.have_pre &&
      !timespec_eq(r->obj.pre.ctime, r->guard_ctime))
    r->error = VFS_NOT_SYNC;
  if (r->error == 0 && s.set_size && r->vp->type != vtype::reg)
    r->error = r->vp->type == vtype::dir ? EISDIR : EINVAL;
  if (r->error == 0) r->error = apply_sattr(r->vp->fd, s);
  if (r->error == 0 && s.set_size) bio_invalidate(vfs_bufpool());
  post(r);
}

int lookup_at(vreq *r, int *out_fd, const char **rel, int *tmp_fd) {
  int dfd = r->vp->fd;
  *tmp_fd = -1;
  *rel = r->name;
  *out_fd = dfd;
  if (std::strcmp(r->name, ".") == 0 || (std::strcmp(r->name, "..") == 0 && r->vp->is_root)) {
    *rel = "";  // the directory itself: `..` never leaves the tree
  } else if (std::strcmp(r->name, "..") == 0) {
    *tmp_fd = openat(dfd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (*tmp_fd < 0) return errno;
    *out_fd = *tmp_fd;
    *rel = "";
  }
  return 0;
}

// Fills the result of a lookup of the object open at fd (or fd/rel).
void lookup_result(vreq *r, int fd, const char *rel) {
  struct stat st;
  if (!stat_at(fd, rel, &r->res_attr, &st)) {
    r->error = errno;
  } else if (st.st_dev != lm(r->fs)->dev) {
    r->error = EACCES;  // another file system mounted inside the tree
  } else if (int e = make_fh(fd, rel, &r->res_fh)) {
    r->error = e;
  } else {
    r->have_res_fh = r->have_res_attr = true;
  }
}

void do_lookup(vreq *r) {
  if (r->vp->type != vtype::dir) r->error = ENOTDIR;
  if (r->error == 0) {
    int fd, tmp;
    const char *rel;
    r->error = lookup_at(r, &fd, &rel, &tmp);
    if (r->error == 0) lookup_result(r, fd, rel);
    if (tmp >= 0) close(tmp);
  }
  current(r);
}

uint32_t access_bits(vreq *r, const vattr &a, bool can_r, bool can_w, bool can_x) {
  bool dir = a.type == vtype::dir;
  uint32_t ok = 0;
  if (can_r) ok |= VACCESS_READ;
  if (can_w && !(r->flags & VREQ_RDONLY))
    ok |= VACCESS_MODIFY | VACCESS_EXTEND | (dir ? uint32_t(VACCESS_DELETE) : 0u);
  if (can_x) ok |= dir ? VACCESS_LOOKUP : VACCESS_EXECUTE;
  return ok & r->access_want;
}

void do_access(vreq *r) {
  current(r);
  if (!r->obj.have_post) {
    r->error = errno;
    return;
  }
  // The kernel's answer for the caller, as knfsd gives it: no owner
  // override (READ and WRITE have one; ACCESS reports the mode bits).
  int fd = r->vp->fd;
  r->access_granted = access_bits(r, r->obj.post, kernel_allows(fd, R_OK), kernel_allows(fd, W_OK),
                                  kernel_allows(fd, X_OK));
}

void do_readlink(vreq *r) {
  if (r->vp->type != vtype::lnk) {
    r->error = EINVAL;
  } else {
    ssize_t n = readlinkat(r->vp->fd, "", reinterpret_cast<char *>(r->dst), r->dst_cap);
    if (n < 0)
      r->error = errno;
    else if (uint32_t(n) >= r->dst_cap)
      r->error = ENAMETOOLONG;
    else
      r->link_len = uint32_t(n);
  }
  current(r);
}

// A symlink whose target lives in its inode (a "fast" symlink: no blocks
// of its own, as ext4 and tmpfs store short targets) is read without any
// I/O; a longer one may need its block read: thread context.
int start_readlink(vreq *r) {
  if (r->vp->type != vtype::lnk) return VB_BLOCK;  // the thread road gives the error
  current(r);
  if (!r->obj.have_post || r->obj.post.used != 0) return VB_BLOCK;
  do_readlink(r);
  return VB_DONE;
}

// The bytes a read of r can return given the file size.
uint32_t read_len(const vreq *r, uint64_t size) {
  return r->offset >= size ? 0 : uint32_t(std::min<uint64_t>(r->count, size - r->offset));
}

// EOF: the data reaches the file's size, or the kernel returned less than
// was asked of it (`asked`: after any cut to the caller's room, which is
// not an end of file).
void read_eof(vreq *r, uint32_t asked) {
  uint64_t size = r->obj.have_post ? r->obj.post.size : 0;
  r->rd.eof = r->rd.n < asked || r->offset + r->rd.n >= size;
}

// cachestat(2)'s number: the same in every Linux syscall table; glibc 2.36
// (Debian 12) has no SYS_cachestat yet.
constexpr long CACHESTAT_SYSCALL = 451;

// Whether every page of [off, off + n) of fd is in the page cache, asked
// without waiting: cachestat(2) (Linux 6.5).  False where the kernel lacks
// it (remembered: one failed call per process) or on any error -- the
// caller then takes the road that may wait for a disk.  Any context.
bool range_resident(int fd, uint64_t off, uint32_t n) {
  static std::atomic<bool> unsupported{false};
  if (n == 0 || unsupported.load(std::memory_order_relaxed)) return false;
  struct {
    uint64_t off, len;
  } range{off, n};
  struct {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
  } cs{};
  if (syscall(CACHESTAT_SYSCALL, fd, &range, &cs, 0) != 0) {
    if (errno == ENOSYS) unsupported.store(true, std::memory_order_relaxed);
    return false;
  }
  static const uint64_t page = uint64_t(sysconf(_SC_PAGESIZE));
  return cs.nr_cache >= (off + n - 1) / page - off / page + 1;
}

// The data as a file extent for the caller to send, with whether its pages
// are resident now (the caller may then send it without a worker).
void read_extent(vreq *r, uint32_t n) {
  vnode_ref(r->vp);
  r->rd.where = rd_where::extent;
  r->rd.n = n;
  r->rd.fd = r->vp->fd;
  r->rd.offset = r->offset;
  r->rd.ref = r->vp;
  r->rd.resident = range_resident(r->vp->fd, r->offset, n);
}

// The post-op attributes of a READ are the ones taken just before it (on
// both roads; possibly a snapshot read after the request arrived): a read
// changes nothing a client caches but atime, one system call less matters
// on the hot path, and attributes older than the data are harmless to a
// client's cache where newer ones would not be.
void do_read(vreq *r) {
  r->error = data_type_error(r->vp);
  vattr &a = r->obj.post;
  if (r->error == 0 && !(r->obj.have_post = current_attrs(r, &a))) r->error = errno;
  if (r->error == 0 && !may(r, a, 4)) r->error = EACCES;
  uint32_t n = 0;
  if (r->error == 0) {
    n = read_len(r, a.size);
    if (n > r->dst_cap && (r->flags & VREQ_EXTENT_OK)) {
      read_extent(r, n);
    } else if (n > 0) {
      n = std::min(n, r->dst_cap);  // a short read: the client asks for the rest
      ssize_t got = r->dst ? pread(r->vp->fd, r->dst, n, off_t(r->offset)) : -1;
      if (got < 0) {
        r->error = r->dst ? errno : EINVAL;
      } else {
        r->rd.where = rd_where::dst;
        r->rd.n = uint32_t(got);
      }
    }
  }
  if (r->error && r->vp->type != vtype::reg) post(r);
  read_eof(r, n);
}

int rwf_of(stable_how s) {
  return s == stable_how::file_sync ? RWF_SYNC : s == stable_how::data_sync ? RWF_DSYNC : 0;
}

void do_write(vreq *r) {
  pre(r);
  if (r->error == 0) r->error = data_type_error(r->vp);
  if (r->error == 0 && !r->obj.have_pre) r->error = EIO;
  if (r->error == 0 && !may(r, r->obj.pre, 2)) r->error = EACCES;
  if (r->error == 0) {
    iovec iov{const_cast<uint8_t *>(r->data), r->count};
    ssize_t n = pwritev2(r->vp->fd, &iov, 1, off_t(r->offset), rwf_of(r->stable));
    if (n < 0) {
      r->error = errno;
    } else {
      r->written = uint32_t(n);
      bio_invalidate(vfs_bufpool());
    }
  }
  post(r);
}

// Enters the regular file CREATE just made (open at fd) into the vnode
// cache, as vget would: the WRITE, SETATTR, COMMIT and GETATTR that follow
// a CREATE then find it there and run without a thread, instead of
// resolving its handle in thread context.  Only when the handle names the
// very inode at fd, and only with a read-write descriptor (the access vget
// gets as the process's own identity; the caller just made the file, so it
// may open it so too).
// Thread context, the caller's identity.
void prime_created(vreq *r, int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink == 0 ||
      st.st_ino != r->res_attr.fileid || st.st_dev != lm(r->fs)->dev)
    return;
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  int rw = open(link, O_RDWR | O_CLOEXEC);
  if (rw < 0) return;
  vnode fresh;
  fresh.fs = r->fs;
  fresh.fh = r->res_fh;
  fresh.fd = rw;
  fresh.type = vtype::reg;
  sample_acl(&fresh, st);
  vnode_prime(fresh);
}

// Opens what CREATE acts on: a regular file made here and now (O_EXCL:
// nothing that was there can be reached), or, for an UNCHECKED create of a
// name that exists, the regular file found there as O_PATH (never opened
// for I/O: a FIFO or device that takes its place between two looks is
// found by its type, not opened).  *made tells which.  Returns the
// descriptor, or -1 with errno (EEXIST: the name exists and may not be
// used).
int create_open(vreq *r, mode_t mode, bool *made) {
  int dfd = r->vp->fd;
  int fd = openat(dfd, r->name, O_CREAT | O_EXCL | O_RDONLY | O_NOFOLLOW | O_CLOEXEC, mode);
  *made = fd >= 0;
  if (fd >= 0 || errno != EEXIST || r->how != create_how::unchecked) return fd;
  fd = openat(dfd, r->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
    close(fd);  // not a regular file: refused, as knfsd does
    fd = -1;
    errno = EEXIST;
  }
  return fd;
}

// CREATE.  A new file gets its mode from the open (the thread's umask is 0:
// exactly the mode asked for) and the rest of the attributes after it; an
// existing one met by an UNCHECKED create gets only the size, as knfsd
// does; an EXCLUSIVE one keeps the client's verifier in atime/mtime (as
// knfsd does) so that its retry is recognised.
void do_create(vreq *r) {
  pre(r);
  if (r->error == 0 && r->vp->type != vtype::dir) r->error = ENOTDIR;
  if (r->error == 0) {
    const vsattr &s = r->sattr;
    const bool excl = r->how == create_how::exclusive;
    const mode_t mode = excl ? 0600 : s.set_mode ? (s.mode & 07777) : 0644;
    const uint32_t verf_a = get32(r->verf), verf_m = get32(r->verf + 4);
    bool made = false;
    int fd = create_open(r, mode, &made);
    if (fd >= 0 && made && excl) {
      timespec ts[2] = {{time_t(verf_a), 0}, {time_t(verf_m), 0}};
      if (futimens(fd, ts) != 0) r->error = errno;
    } else if (fd >= 0) {
      vsattr rest;
      if (made) {
        rest = s;
        rest.set_mode = false;  // given to the open
      } else {
        rest.set_size = s.set_size;
        rest.size = s.size;
      }
      r->error = apply_sattr(fd, rest);
      if (rest.set_size) bio_invalidate(vfs_bufpool());
    } else if (errno == EEXIST && excl) {
      struct stat st;
      if (fstatat(r->vp->fd, r->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
          uint32_t(st.st_atim.tv_sec) == verf_a && uint32_t(st.st_mtim.tv_sec) == verf_m)
        r->error = 0;  // the retry of our own exclusive create
      else
        r->error = EEXIST;
    } else {
      r->error = errno;
    }
    if (r->error == 0) result_of(r, r->name);
    if (fd >= 0 && r->error == 0 && r->have_res_fh) prime_created(r, fd);
    if (fd >= 0) close(fd);
  }
  post(r);
}

// MKDIR.  mkdir(2) keeps only the permission and sticky bits of the mode it
// is given (the setgid bit comes from the parent, if anything): a setgid
// bit the client asked for is set afterwards, as any chmod by the new
// directory's owner would.
void do_mkdir(vreq *r) {
  pre(r);
  if (r->error == 0 && r->vp->type != vtype::dir) r->error = ENOTDIR;
  if (r->error == 0) {
    const vsattr &s = r->sattr;
    const mode_t mode = s.set_mode ? (s.mode & 07777) : 0755;
    if (mkdirat(r->vp->fd, r->name, mode) != 0)
      r->error = errno;
    else
      r->error = finish_new(r->vp->fd, r->name, s);
    if (r->error == 0) result_of(r, r->name);
    if (r->error == 0 && (mode & S_ISGID) && r->have_res_attr && !(r->res_attr.mode & S_ISGID)) {
      // Through an O_PATH descriptor of what was made: never a symlink
      // that may have taken its place.
      vsattr sgid;
      sgid.set_mode = true;
      sgid.mode = r->res_attr.mode | S_ISGID;
      int fd = openat(r->vp->fd, r->name, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
      r->error = fd < 0 ? errno : apply_sattr(fd, sgid);
      if (fd >= 0) close(fd);
      if (r->error == 0) result_of(r, r->name);
    }
  }
  post(r);
}

void do_symlink(vreq *r) {
  pre(r);
  if (r->error == 0 && r->vp->type != vtype::dir) r->error = ENOTDIR;
  if (r->error == 0) r->error = check_symlink_target(r);
  if (r->error == 0) {
    char t[PATH_MAX];
    std::memcpy(t, r->data, r->count);
    t[r->count] = '\0';
    if (symlinkat(t, r->vp->fd, r->name) != 0) r->error = errno;
    if (r->error == 0) result_of(r, r->name);
  }
  post(r);
}

void do_mknod(vreq *r) {
  pre(r);
  if (r->error == 0 && r->vp->type != vtype::dir) r->error = ENOTDIR;
  const mode_t fmt = mknod_format(r);
  if (r->error == 0 && fmt == 0) r->error = VFS_BADTYPE;
  if (r->error == 0) {
    const vsattr &s = r->sattr;
    mode_t mode = fmt | (s.set_mode ? (s.mode & 07777) : 0644);
    if (mknodat(r->vp->fd, r->name, mode, makedev(r->rdev_major, r->rdev_minor)) != 0)
      r->error = errno;
    if (r->error == 0) result_of(r, r->name);
  }
  post(r);
}

void do_remove(vreq *r, bool rmdir) {
  pre(r);
  if (r->error == 0 && r->vp->type != vtype::dir) r->error = ENOTDIR;
  if (r->error == 0 && rmdir && std::strcmp(r->name, ".") == 0) r->error = EINVAL;
  if (r->error == 0 && rmdir && std::strcmp(r->name, "..") == 0) r->error = ENOTEMPTY;
  if (r->error == 0) {
    vfh victim;
    bool known = make_fh(r->vp->fd, r->name, &victim) == 0;
    if (unlinkat(r->vp->fd, r->name, rmdir ? AT_REMOVEDIR : 0) != 0)
      r->error = errno;
    else if (known)
      vnode_forget(r->fs, victim);
  }
  post(r);
}

void do_rename(vreq *r) {
  pre(r);
  r->obj2.have_pre = stat_fd(r->vp2->fd, &r->obj2.pre);
  if (r->error == 0 && (r->vp->type != vtype::dir || r->vp2->type != vtype::dir))
    r->error = ENOTDIR;
  if (r->error == 0) {
    vfh replaced;
    bool known = make_fh(r->vp2->fd, r->name2, &replaced) == 0;
    if (renameat(r->vp->fd, r->name, r->vp2->fd, r->name2) != 0)
      r->error = errno;
    else if (known)
      vnode_forget(r->fs, replaced);
  }
  post(r);
  r->obj2.have_post = stat_fd(r->vp2->fd, &r->obj2.post);
}

void do_link(vreq *r) {
  r->obj2.have_pre = stat_fd(r->vp2->fd, &r->obj2.pre);
  if (r->error == 0 && r->vp2->type != vtype::dir) r->error = ENOTDIR;
  if (r->error == 0 && r->vp->type == vtype::dir) r->error = EISDIR;
  if (r->error == 0) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", r->vp->fd);
    if (linkat(AT_FDCWD, path, r->vp2->fd, r->name2, AT_SYMLINK_FOLLOW) != 0) r->error = errno;
  }
  post(r);
  r->obj2.have_post = stat_fd(r->vp2->fd, &r->obj2.post);
}

struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

// Cookies are the directory's own seek offsets (d_off from getdents64):
// stable across calls, unambiguous with hard links, and unaffected by
// entries added elsewhere in the directory.
void do_readdir(vreq *r) {
  if (r->vp->type != vtype::dir) r->error = ENOTDIR;
  int dfd = -1;
  if (r->error == 0) {
    dfd = openat(r->vp->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
      r->error = errno;
    else if (r->cookie != 0 && lseek(dfd, off_t(r->cookie), SEEK_SET) < 0)
      r->error = VFS_BAD_COOKIE;
  }
  post(r);
  if (r->error == 0 && !r->obj.have_post) r->error = EIO;
  alignas(8) char dbuf[16384];
  bool full = false;
  while (r->error == 0 && !full) {
    long n = syscall(SYS_getdents64, dfd, dbuf, sizeof dbuf);
    if (n < 0) {
      r->error = errno;
      break;
    }
    if (n == 0) {
      r->eof = true;
      break;
    }
    for (long off = 0; off < n;) {
      auto *d = reinterpret_cast<linux_dirent64 *>(dbuf + off);
      off += d->d_reclen;
      vdirent e;
      bool dotdot_root = r->vp->is_root && std::strcmp(d->d_name, "..") == 0;
      e.fileid = dotdot_root ? r->obj.post.fileid : d->d_ino;
      e.name = d->d_name;
      e.namelen = uint32_t(std::strlen(d->d_name));
      e.cookie = uint64_t(d->d_off);
      if (r->plus && !dotdot_root) {
        struct stat st;
        e.have_attr = stat_at(dfd, d->d_name, &e.attr, &st) && st.st_dev == lm(r->fs)->dev;
        e.have_fh = e.have_attr && make_fh(dfd, d->d_name, &e.fh) == 0;
      }
      if (!r->emit(r->emit_arg, e)) {
        full = true;
        break;
      }
    }
  }
  if (dfd >= 0) close(dfd);
}

void do_fsstat(vreq *r) {
  struct statvfs v;
  if (fstatvfs(r->vp->fd, &v) != 0) {
    r->error = errno;
  } else {
    uint64_t f = v.f_frsize;
    r->fsi.tbytes = v.f_blocks * f;
    r->fsi.fbytes = v.f_bfree * f;
    r->fsi.abytes = v.f_bavail * f;
    r->fsi.tfiles = v.f_files;
    r->fsi.ffiles = v.f_ffree;
    r->fsi.afiles = v.f_favail;
  }
  current(r);
}

void do_fsinfo(vreq *r) {
  long linkmax = fpathconf(r->vp->fd, _PC_LINK_MAX);
  r->fsi.link_max = linkmax > 0 ? uint32_t(std::min<long>(linkmax, UINT32_MAX)) : 65000;
  r->fsi.name_max = VFS_NAME_MAX;
  r->fsi.max_file_size = INT64_MAX;
  current(r);
}

void do_commit(vreq *r) {
  pre(r);
  if (r->vp->type != vtype::reg && r->vp->type != vtype::dir) r->error = EINVAL;
  if (r->error == 0 && fsync(r->vp->fd) != 0) r->error = errno;
  post(r);
}

// The result of a walk that ended at the object open at fd: its attributes
// and handle, or EACCES if it is on another file system or has no handle.
void walk_result(vreq *r, int fd) {
  struct stat st;
  if (!stat_at(fd, "", &r->res_attr, &st) || st.st_dev != lm(r->fs)->dev ||
      make_fh(fd, "", &r->res_fh) != 0)
    r->error = EACCES;
  else
    r->have_res_fh = r->have_res_attr = true;
}

// A path below the directory r->fh names: every component but the last
// must be a directory; none is followed if it is a symlink; `..` is
// refused.  The result is the handle and attributes of what the path names.
void do_walk(vreq *r) {
  int fd = dup(r->vp->fd);
  if (fd < 0) {
    r->error = errno;
    return;
  }
  std::string_view path(reinterpret_cast<const char *>(r->data), r->data ? r->count : 0);
  if (path.find('\0') != std::string_view::npos) r->error = ENOENT;
  size_t pos = 0;
  bool dir = true;  // what fd names
  while (r->error == 0 && pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string comp(path.substr(pos, slash - pos));
    pos = slash + 1;
    if (comp.empty() || comp == ".") continue;
    if (!dir) {
      r->error = ENOTDIR;
    } else if (comp == "..") {
      r->error = EACCES;
    } else if (comp.size() > VFS_NAME_MAX) {
      r->error = ENAMETOOLONG;
    } else {
      int next = openat(fd, comp.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
      struct stat st;
      if (next < 0 || fstat(next, &st) != 0) {
        r->error = (errno == ENOENT || errno == ENOTDIR) ? errno : EACCES;
        if (next >= 0) close(next);
      } else {
        close(fd);
        fd = next;
        dir = S_ISDIR(st.st_mode);
      }
    }
  }
  if (r->error == 0) walk_result(r, fd);
  close(fd);
}

// ---- interrupt-context attempts ------------------------------------------------

// A walk that stays where it starts needs no thread: with its attributes
// from the descriptor, or -- on a thread-only mount, where even an fstat
// may wait for a server that does not answer -- with the start's handle
// alone, which the request already holds resolved (MNT needs nothing
// more).  So MNT of an export root whose vnode is cached (start is called
// only then) answers even while its file system hangs.  The rest walks in
// thread context.
int start_walk(vreq *r) {
  if (!walk_stays(r)) return VB_BLOCK;
  if (lm(r->fs)->thread_only) {
    r->res_fh = r->fh;
    r->have_res_fh = true;
  } else {
    walk_result(r, r->vp->fd);
  }
  return VB_DONE;
}

// Answers a request already refused (EROFS) with the attributes it reports.
int refused(vreq *r) {
  post(r);
  if (r->op == vop::rename || r->op == vop::link)
    r->obj2.have_post = stat_fd(r->vp2->fd, &r->obj2.post);
  return VB_DONE;
}

void read_done(void *obj, void *env, int status) {
  auto *r = static_cast<vreq *>(env);
  auto *bp = static_cast<buf *>(obj);
  if (status > 0) {
    r->error = status;
    brelse(bp);
  } else {
    r->rd.where = rd_where::buf;
    r->rd.bp = bp;
    r->rd.n = bp->done;
  }
  read_eof(r, bp->len);
  vop_complete(r);
}

void io_done(void *obj, void *env, int status) {
  auto *r = static_cast<vreq *>(env);
  auto *bp = static_cast<buf *>(obj);
  if (status > 0)
    r->error = status;
  else if (r->op == vop::write)
    r->written = bp->done;
  brelse(bp);
  post(r);
  vop_complete(r);
}

int start_read(vreq *r) {
  if ((r->error = data_type_error(r->vp)) != 0) return post(r), VB_DONE;
  vattr &a = r->obj.post;  // the post-op attributes: see do_read
  if (!current_attrs(r, &a)) return VB_BLOCK;
  if (!mode_bits_decide(r->vp, a)) return VB_BLOCK;
  r->obj.have_post = true;
  if (!data_access_allowed(a, r->cred, 4)) {
    r->error = EACCES;
    return VB_DONE;
  }
  uint32_t n = read_len(r, a.size);
  if (n == 0 || (n > VFS_BUF_MAX && (r->flags & VREQ_EXTENT_OK))) {
    if (n > 0) read_extent(r, n);
    r->rd.n = n;
    read_eof(r, n);
    return VB_DONE;
  }
  bufpool *p = vfs_bufpool();
  if (n > VFS_BUF_MAX || !p) return VB_BLOCK;
  kcont_init(&r->kc, read_done, r, target::at(LVL_BIO, kind::interrupt));
  if (bread(p, r->vp->fd, r->offset, n, &r->kc) != 0) return VB_BLOCK;
  return VB_PENDING;
}

int start_io(vreq *r, bio_op op) {
  bufpool *p = vfs_bufpool();
  if (!p) return VB_BLOCK;
  buf *bp = buf_get(p);
  if (!bp) return VB_BLOCK;
  bp->fd = r->vp->fd;
  bp->op = op;
  bp->offset = r->offset;
  bp->len = op == bio_op::write ? r->count : 0;
  bp->src = r->data;
  bp->flags = r->stable == stable_how::file_sync   ? B_SYNC
              : r->stable == stable_how::data_sync ? B_DSYNC
                                                   : 0;
  kcont_init(&r->kc, io_done, r, target::at(LVL_BIO, kind::interrupt));
  if (bio_submit(bp, &r->kc) != 0) {
    brelse(bp);
    return VB_BLOCK;
  }
  return VB_PENDING;
}

int start_write(vreq *r) {
  if (r->error) return refused(r);
  pre(r);
  if (!r->obj.have_pre) return VB_BLOCK;
  if ((r->error = data_type_error(r->vp)) != 0) return post(r), VB_DONE;
  const vattr &a = r->obj.pre;
  // A setuid/setgid bit must be cleared by the kernel for a non-owner's
  // write: that needs the write done under the caller's identity.
  if (!mode_bits_decide(r->vp, a) || ((a.mode & 06000) && r->cred.uid != 0)) return VB_BLOCK;
  if (!data_access_allowed(a, r->cred, 2)) {
    r->error = EACCES;
    return post(r), VB_DONE;
  }
  return start_io(r, bio_op::write);
}

int start_lookup(vreq *r) {
  if (r->vp->type != vtype::dir) {
    r->error = ENOTDIR;
    return post(r), VB_DONE;
  }
  current(r);
  if (!r->obj.have_post || !mode_bits_decide(r->vp, r->obj.post)) return VB_BLOCK;
  if (!mode_allows(r->obj.post, r->cred, 1)) {
    r->error = EACCES;
    return VB_DONE;
  }
  if (std::strcmp(r->name, "..") == 0 && !r->vp->is_root) return VB_BLOCK;
  if (std::strcmp(r->name, ".") == 0 || std::strcmp(r->name, "..") == 0) {
    lookup_result(r, r->vp->fd, "");
    return VB_DONE;
  }
  // The dentry cache answers, or the lookup would read the disk: then it
  // goes to thread context.  So does a name that crosses a mount point
  // (EXDEV): a stat of what is mounted there (a FUSE or network file system
  // inside the export) may wait for its server, which a dispatcher never
  // does; thread context decides what to answer.
  open_how how{};
  how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
  how.resolve = RESOLVE_CACHED | RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
                RESOLVE_NO_XDEV;
  long fd = syscall(SYS_openat2, r->vp->fd, r->name, &how, sizeof how);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      r->error = errno;
      return VB_DONE;
    }
    return VB_BLOCK;  // EAGAIN (not cached), or anything to be told by the slow road
  }
  lookup_result(r, int(fd), "");
  close(int(fd));
  return VB_DONE;
}

int start_access(vreq *r) {
  current(r);
  if (!r->obj.have_post || !mode_bits_decide(r->vp, r->obj.post)) return VB_BLOCK;
  const vattr &a = r->obj.post;
  r->access_granted = access_bits(r, a, mode_allows(a, r->cred, 4), mode_allows(a, r->cred, 2),
                                  mode_allows(a, r->cred, 1));
  return VB_DONE;
}

// ---- backend entries -------------------------------------------------------------

int local_vget(mount *fs, const vfh &fh, vnode *vp) {
  local_mount &m = *lm(fs);
  if (fh.len < 4 || fh.len > VFS_FHSIZE) return VFS_BADHANDLE;
  kernel_handle kh;
  kh.fh.handle_bytes = fh.len - 4;
  kh.fh.handle_type = int(get32(fh.data));
  std::memcpy(kh.fh.f_handle, fh.data + 4, kh.fh.handle_bytes);
  int pfd = open_by_handle_at(m.root_fd, &kh.fh, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (pfd < 0) {
    if (errno == EPERM) return EPERM;  // no CAP_DAC_READ_SEARCH
    return errno == EINVAL ? VFS_BADHANDLE : ESTALE;
  }
  struct stat st;
  if (fstat(pfd, &st) != 0 || st.st_dev != m.dev || st.st_nlink == 0 ||
      !inside(pfd, m, S_ISDIR(st.st_mode))) {
    close(pfd);
    return ESTALE;
  }
  // Reopen with the access the operations need (never blocks: no FIFOs).
  int fd = pfd;
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", pfd);
  if (S_ISREG(st.st_mode)) {
    // Read-write, or read-only where writing is refused (a read-only file
    // system, an immutable file).  A file that cannot be opened at all (out
    // of descriptors, say) is an error now, never a cached vnode that every
    // READ and WRITE would then fail on.
    fd = open(link, O_RDWR | O_CLOEXEC);
    if (fd < 0 && (errno == EROFS || errno == EPERM || errno == EACCES || errno == ETXTBSY))
      fd = open(link, O_RDONLY | O_CLOEXEC);
  } else if (S_ISDIR(st.st_mode)) {
    fd = open(link, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  }
  if (fd < 0) {
    int e = errno;
    close(pfd);
    return e == EMFILE || e == ENFILE || e == ENOMEM ? EAGAIN : e;  // JUKEBOX: try later
  }
  if (fd != pfd) close(pfd);
  vp->fd = fd;
  vp->type = vtype_of_mode(st.st_mode);
  vp->is_root = st.st_ino == m.root_ino;
  sample_acl(vp, st);
  return 0;
}

void local_reclaim(vnode *vp) {
  if (vp->fd >= 0) close(vp->fd);
  vp->fd = -1;
}

int local_start(vreq *r) {
  if (r->op == vop::walk) return start_walk(r);  // never waits: see there
  if (lm(r->fs)->thread_only) return VB_BLOCK;
  switch (r->op) {
    case vop::getattr:
      current(r);
      if (!r->obj.have_post) r->error = errno;
      return VB_DONE;
    case vop::fsstat:
      do_fsstat(r);
      return VB_DONE;
    case vop::fsinfo:
      do_fsinfo(r);
      return VB_DONE;
    case vop::access:
      return start_access(r);
    case vop::readlink:
      return start_readlink(r);
    case vop::lookup:
      return start_lookup(r);
    case vop::read:
      return start_read(r);
    case vop::write:
      return start_write(r);
    case vop::commit:
      if (r->error) return refused(r);  // EROFS: no fsync on a read-only export
      if (r->vp->type != vtype::reg && r->vp->type != vtype::dir) return VB_BLOCK;
      pre(r);
      return start_io(r, bio_op::fsync);
    case vop::walk:
      return start_walk(r);
    default:
      if (r->error && vop_modifies(r->op)) return refused(r);
      return VB_BLOCK;
  }
}

constexpr auto local_vops = [] {
  vop_vector<> v;
  v.set(vop::getattr, [](vreq *r) {
    current(r);
    if (!r->obj.have_post) r->error = errno;
  });
  v.set(vop::setattr, do_setattr).set(vop::lookup, do_lookup).set(vop::access, do_access);
  v.set(vop::readlink, do_readlink).set(vop::read, do_read).set(vop::write, do_write);
  v.set(vop::create, do_create).set(vop::mkdir, do_mkdir).set(vop::symlink, do_symlink);
  v.set(vop::mknod, do_mknod);
  v.set(vop::remove, [](vreq *r) { do_remove(r, false); });
  v.set(vop::rmdir, [](vreq *r) { do_remove(r, true); });
  v.set(vop::rename, do_rename).set(vop::link, do_link).set(vop::readdir, do_readdir);
  v.set(vop::fsstat, do_fsstat).set(vop::fsinfo, do_fsinfo).set(vop::commit, do_commit);
  v.set(vop::walk, do_walk);
  return v;
}();
static_assert(local_vops.complete());

void local_run(vreq *r) { local_vops.call(r); }

void local_unmount(mount *fs) {
  local_mount *m = lm(fs);
  if (m->root_fd >= 0) close(m->root_fd);
  delete m;
}

const vfs_backend local_backend = {"local",     local_vget, local_reclaim,
                                   local_start, local_run,  local_unmount};

}  // namespace

// vfs_mount's "local": path=DIR (required), cache=N (default 4096).
mount *local_mount_options(const vfs_options &opts, std::string *err) {
  std::string path;
  uint64_t cache = 4096;
  if (vfs_options_unknown(opts, {"path", "cache"}, "local", err) ||
      !vfs_option_string(opts, "path", &path, true, err) ||
      !vfs_option_size(opts, "cache", &cache, false, err))
    return nullptr;
  if (cache == 0 || cache > (uint64_t{1} << 24)) {
    *err = "option cache=" + std::to_string(cache) + ": from 1 to 16M vnodes";
    return nullptr;
  }
  return vfs_mount_local(path, size_t(cache), err);
}

mount *vfs_mount_local(const std::string &path, size_t cache, std::string *err) {
  char real[PATH_MAX];
  if (!realpath(path.c_str(), real)) {
    if (err) *err = path + ": " + kc::error_text(errno);
    return nullptr;
  }
  int fd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    if (err) *err = std::string(real) + ": " + kc::error_text(errno);
    if (fd >= 0) close(fd);
    return nullptr;
  }
  auto *m = new local_mount;
  m->path = real;
  m->root_fd = fd;
  m->dev = st.st_dev;
  m->root_ino = st.st_ino;
  m->thread_only = may_wait_for_a_server(fd);
  struct stat up;
  m->whole_fs =
      fstatat(fd, "..", &up, 0) == 0 && (up.st_dev != st.st_dev || up.st_ino == st.st_ino);
  mount *fs = vfs_alloc(&local_backend, cache);
  fs->priv = m;
  vfs_set_device(fs, uint64_t(st.st_dev));  // one thread-context share per file system
  if (int e = make_fh(fd, "", &fs->root)) {
    if (err)
      *err = std::string(real) +
             ": cannot make file handles here (name_to_handle_at: " + kc::error_text(e) + ")";
    vfs_unmount(fs);
    return nullptr;
  }
  return fs;
}

}  // namespace kc::vfs
