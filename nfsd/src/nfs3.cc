// nfs3.cc -- the protocol: RPC dispatch, the 22 NFSv3 procedures (RFC 1813)
// and the 6 MOUNT v3 procedures, written against blocking system calls.
//
// Model: serve_call decodes one record, picks the program, version and
// procedure, and runs it; each procedure decodes its arguments (garbage ->
// GARBAGE_ARGS), resolves its file handles (as root: open_by_handle_at
// needs CAP_DAC_READ_SEARCH), checks the client against the handle's
// export, then switches the thread's filesystem identity (fsuid/fsgid/
// groups, per thread) to the caller's squashed credential so the kernel
// enforces permissions and owns new files correctly, and performs the
// operation with *at() system calls relative to directory descriptors --
// never following a symlink and never walking a path, so nothing outside an
// export is reachable.  READ and WRITE check permission from the mode bits
// (the descriptor is the cache's, opened by root), as knfsd does.
//
// The kcont transport answers the hot procedures itself on cached handles
// (model_kcont.cc) with the encoders exported through internal.h; every
// other call comes here, in thread context.
//
// Locking: none of its own beyond the server's (mount list mutex); every
// request's state is on the stack or in its request.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

#include "internal.h"

namespace kc::nfs {

// ---- small helpers -------------------------------------------------------------

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

nfsstat3 errno_to_nfs(int e) {
  switch (e) {
    case 0:
      return NFS3_OK;
    case EPERM:
      return NFS3ERR_PERM;
    case ENOENT:
      return NFS3ERR_NOENT;
    case EIO:
      return NFS3ERR_IO;
    case ENXIO:
      return NFS3ERR_NXIO;
    case EACCES:
      return NFS3ERR_ACCES;
    case EEXIST:
      return NFS3ERR_EXIST;
    case EXDEV:
      return NFS3ERR_XDEV;
    case ENODEV:
      return NFS3ERR_NODEV;
    case ENOTDIR:
      return NFS3ERR_NOTDIR;
    case EISDIR:
      return NFS3ERR_ISDIR;
    case EINVAL:
      return NFS3ERR_INVAL;
    case EFBIG:
      return NFS3ERR_FBIG;
    case ENOSPC:
      return NFS3ERR_NOSPC;
    case EROFS:
      return NFS3ERR_ROFS;
    case EMLINK:
      return NFS3ERR_MLINK;
    case ENAMETOOLONG:
      return NFS3ERR_NAMETOOLONG;
    case ENOTEMPTY:
      return NFS3ERR_NOTEMPTY;
    case EDQUOT:
      return NFS3ERR_DQUOT;
    case ESTALE:
      return NFS3ERR_STALE;
    case ELOOP:
      return NFS3ERR_ACCES;  // a symlink where a directory was needed
    case EOPNOTSUPP:
      return NFS3ERR_NOTSUPP;
    case EAGAIN:
      return NFS3ERR_JUKEBOX;
    default:
      return NFS3ERR_SERVERFAULT;
  }
}

static const char *const nfs_names[NFS3_PROCS] = {
    "NULL",    "GETATTR",     "SETATTR", "LOOKUP", "ACCESS",   "READLINK", "READ",   "WRITE",
    "CREATE",  "MKDIR",       "SYMLINK", "MKNOD",  "REMOVE",   "RMDIR",    "RENAME", "LINK",
    "READDIR", "READDIRPLUS", "FSSTAT",  "FSINFO", "PATHCONF", "COMMIT"};
static const char *const mount_names[MOUNT3_PROCS] = {"NULL", "MNT",     "DUMP",
                                                      "UMNT", "UMNTALL", "EXPORT"};

const char *nfs3_proc_name(uint32_t p) { return p < NFS3_PROCS ? nfs_names[p] : "?"; }
const char *mount3_proc_name(uint32_t p) { return p < MOUNT3_PROCS ? mount_names[p] : "?"; }

// ---- credentials -----------------------------------------------------------------

cred effective_cred(const rpc_call &call, const export_opts &o) {
  cred c;
  c.uid = o.anonuid;
  c.gid = o.anongid;
  if (call.flavor != AUTH_SYS || o.all_squash) return c;
  c.uid = call.sys.uid;
  c.gid = call.sys.gid;
  c.ngids = call.sys.ngids;
  std::copy(call.sys.gids, call.sys.gids + c.ngids, c.gids);
  if (o.root_squash) {
    if (c.uid == 0) c.uid = o.anonuid;
    if (c.gid == 0) c.gid = o.anongid;
    for (uint32_t i = 0; i < c.ngids; i++)
      if (c.gids[i] == 0) c.gids[i] = o.anongid;
  }
  return c;
}

bool mode_allows(const struct stat &st, const cred &c, int want) {
  if (c.uid == 0) return (want & 1) == 0 || (st.st_mode & 0111) || S_ISDIR(st.st_mode);
  if (c.uid == st.st_uid) {
    if ((want & 6) == want) return true;  // owner override for read/write
    return ((st.st_mode >> 6) & want) == uint32_t(want);
  }
  bool in_group = c.gid == st.st_gid;
  for (uint32_t i = 0; i < c.ngids && !in_group; i++) in_group = c.gids[i] == st.st_gid;
  if (in_group) return ((st.st_mode >> 3) & want) == uint32_t(want);
  return (st.st_mode & want) == uint32_t(want);
}

namespace {

// The identity this thread currently has on the filesystem (root at
// start).  Switching costs three system calls, so it is skipped when the
// next call has the same credential.
thread_local bool t_is_root = true;
thread_local cred t_cred;

bool same_cred(const cred &a, const cred &b) {
  return a.uid == b.uid && a.gid == b.gid && a.ngids == b.ngids &&
         std::equal(a.gids, a.gids + a.ngids, b.gids);
}

}  // namespace

void cred_enter(const cred &c) {
  if (!t_is_root && same_cred(c, t_cred)) return;
  gid_t g[MAX_GIDS];
  for (uint32_t i = 0; i < c.ngids; i++) g[i] = c.gids[i];
  syscall(SYS_setgroups, size_t(c.ngids), g);  // this thread only (glibc's would do all)
  setfsgid(c.gid);
  setfsuid(c.uid);
  t_cred = c;
  t_is_root = false;
}

void cred_leave() {
  if (t_is_root) return;
  setfsuid(0);
  setfsgid(0);
  syscall(SYS_setgroups, size_t(0), nullptr);
  t_is_root = true;
}

// ---- attribute encoding ------------------------------------------------------------

namespace {

uint32_t ftype_of(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFREG:
      return 1;
    case S_IFDIR:
      return 2;
    case S_IFBLK:
      return 3;
    case S_IFCHR:
      return 4;
    case S_IFLNK:
      return 5;
    case S_IFSOCK:
      return 6;
    case S_IFIFO:
      return 7;
    default:
      return 1;
  }
}

void put_time(xdr_out &out, const timespec &t) {
  out.u32(uint32_t(t.tv_sec));
  out.u32(uint32_t(t.tv_nsec));
}

}  // namespace

void put_fattr(xdr_out &out, const struct stat &st, uint32_t fsid) {
  out.u32(ftype_of(st.st_mode));
  out.u32(st.st_mode & 07777);
  out.u32(uint32_t(st.st_nlink));
  out.u32(st.st_uid);
  out.u32(st.st_gid);
  out.u64(uint64_t(st.st_size));
  out.u64(uint64_t(st.st_blocks) * 512);
  out.u32(major(st.st_rdev));
  out.u32(minor(st.st_rdev));
  out.u64(fsid);
  out.u64(st.st_ino);
  put_time(out, st.st_atim);
  put_time(out, st.st_mtim);
  put_time(out, st.st_ctim);
}

void put_post_op_attr(xdr_out &out, const struct stat *st, uint32_t fsid) {
  out.boolean(st != nullptr);
  if (st) put_fattr(out, *st, fsid);
}

void put_pre_op_attr(xdr_out &out, const struct stat *st) {
  out.boolean(st != nullptr);
  if (!st) return;
  out.u64(uint64_t(st->st_size));
  put_time(out, st->st_mtim);
  put_time(out, st->st_ctim);
}

void put_wcc(xdr_out &out, const struct stat *before, const struct stat *after, uint32_t fsid) {
  put_pre_op_attr(out, before);
  put_post_op_attr(out, after, fsid);
}

void begin_nfs_reply(xdr_out &out, uint32_t xid, nfsstat3 st) {
  encode_accepted(out, xid, SUCCESS);
  out.u32(st);
}

void put_read_head(xdr_out &out, const struct stat &st, uint32_t fsid, uint32_t n, bool eof) {
  put_post_op_attr(out, &st, fsid);
  out.u32(n);
  out.boolean(eof);
  out.u32(n);
}

// ---- server object -------------------------------------------------------------------

server::server() {
  handles = fhcache_create(4096);
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t v = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  v ^= uint64_t(getpid()) << 48;
  for (int i = 0; i < 8; i++) write_verf[i] = uint8_t(v >> (56 - 8 * i));
}

server::~server() { fhcache_destroy(handles); }

std::shared_ptr<const export_table> server::exports() const {
  std::lock_guard<std::mutex> g(exports_lock_);
  return exports_;
}

void server::set_exports(std::shared_ptr<const export_table> t) {
  std::lock_guard<std::mutex> g(exports_lock_);
  if (exports_) retired_.push_back(exports_);
  current_.store(t.get(), std::memory_order_release);
  exports_ = std::move(t);
}

void release_file_part(server &srv, file_part &fp) {
  if (fp.ref) fh_put(srv.handles, static_cast<fh_entry *>(fp.ref));
  fp = file_part{};
}

// ---- procedures ------------------------------------------------------------------------

namespace {

struct sattr {
  bool set_mode = false, set_uid = false, set_gid = false, set_size = false;
  uint32_t mode = 0, uid = 0, gid = 0;
  uint64_t size = 0;
  uint32_t atime_how = 0, mtime_how = 0;  // 0 don't change, 1 server time, 2 client time
  timespec atime{}, mtime{};
};

void get_sattr(xdr_in &in, sattr *s) {
  if ((s->set_mode = in.boolean())) s->mode = in.u32();
  if ((s->set_uid = in.boolean())) s->uid = in.u32();
  if ((s->set_gid = in.boolean())) s->gid = in.u32();
  if ((s->set_size = in.boolean())) s->size = in.u64();
  if ((s->atime_how = in.u32()) == 2) {
    s->atime.tv_sec = in.u32();
    s->atime.tv_nsec = in.u32();
  }
  if ((s->mtime_how = in.u32()) == 2) {
    s->mtime.tv_sec = in.u32();
    s->mtime.tv_nsec = in.u32();
  }
  if (s->atime_how > 2 || s->mtime_how > 2) in.fail();
}

// Applies a sattr3 to the inode open at fd (any kind of descriptor).
int apply_sattr(int fd, const sattr &s) {
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

// One call being served.
struct call {
  server &srv;
  request &req;
  rpc_call rpc;
  const export_table *exports = nullptr;
  xdr_in in;
  xdr_out &out;
  nfsstat3 status = NFS3_OK;
  bool writing = false;  // the procedure modifies: needs an rw export
  call(server &s, request &r) : srv(s), req(r), out(r.out) {}
};

// A resolved file handle with the export rules for this client.
struct handle {
  fh_entry *e = nullptr;
  const export_entry *ex = nullptr;
  const export_opts *opts = nullptr;
  fhcache *cache = nullptr;
  cred who;
  ~handle() {
    if (e) fh_put(cache, e);
  }
  int fd() const { return e->fd; }
  uint32_t fsid() const { return ex->id; }
};

nfsstat3 get_handle(call &c, bytes_view fh, handle *h) {
  if (!c.exports) return NFS3ERR_STALE;
  cred_leave();  // resolving needs root (CAP_DAC_READ_SEARCH)
  h->cache = c.srv.handles;
  nfsstat3 st = fh_resolve(c.srv, *c.exports, fh, &h->e);
  if (st != NFS3_OK) return st;
  h->ex = c.exports->by_id(h->e->export_id);
  if (!h->ex) return NFS3ERR_STALE;
  h->opts = export_access(*h->ex, c.req.peer);
  if (!h->opts) return NFS3ERR_ACCES;
  h->who = effective_cred(c.rpc, *h->opts);
  return NFS3_OK;
}

// Validates a component name and copies it NUL-terminated.
nfsstat3 get_name(bytes_view n, char out[NAME_MAX + 1]) {
  if (n.len == 0) return NFS3ERR_NOENT;
  if (n.len > NAME_MAX) return NFS3ERR_NAMETOOLONG;
  if (std::memchr(n.data, '/', n.len) || std::memchr(n.data, '\0', n.len)) return NFS3ERR_ACCES;
  std::memcpy(out, n.data, n.len);
  out[n.len] = '\0';
  return NFS3_OK;
}

bool stat_fd(int fd, struct stat *st) { return fstat(fd, st) == 0; }

// Writes `status` and a wcc_data of the directory (the failure shape of
// most directory-modifying replies).
void reply_dir_wcc(call &c, const handle *dir, const struct stat *before) {
  struct stat after;
  bool have = dir && dir->e && stat_fd(dir->fd(), &after);
  begin_nfs_reply(c.out, c.rpc.xid, c.status);
  put_wcc(c.out, before, have ? &after : nullptr, dir && dir->ex ? dir->fsid() : 0);
}

void reply_attr_only(call &c, const handle *h) {
  struct stat st;
  bool have = h && h->e && stat_fd(h->fd(), &st);
  begin_nfs_reply(c.out, c.rpc.xid, c.status);
  put_post_op_attr(c.out, have ? &st : nullptr, h && h->ex ? h->fsid() : 0);
}

// The reply of CREATE, MKDIR, SYMLINK and MKNOD: on success post_op_fh3,
// post_op_attr of the new object named `name`, wcc of the directory; on
// failure only the directory's wcc.
void reply_created(call &c, const handle &dir, const char *name, const struct stat *before) {
  if (c.status != NFS3_OK) {
    reply_dir_wcc(c, &dir, before);
    return;
  }
  nfs_fh fh;
  struct stat st, after;
  bool have_fh = fh_make(*dir.ex, dir.fd(), name, &fh) == 0;
  bool have_st = fstatat(dir.fd(), name, &st, AT_SYMLINK_NOFOLLOW) == 0;
  bool have_after = stat_fd(dir.fd(), &after);
  begin_nfs_reply(c.out, c.rpc.xid, NFS3_OK);
  c.out.boolean(have_fh);
  if (have_fh) c.out.var(fh.data, fh.len);
  put_post_op_attr(c.out, have_st ? &st : nullptr, dir.fsid());
  put_wcc(c.out, before, have_after ? &after : nullptr, dir.fsid());
}

bool proc_null(call &c) {
  begin_nfs_reply(c.out, c.rpc.xid, NFS3_OK);
  c.out.rewind(c.out.size() - 4);  // NULL has no status: void result
  return true;
}

bool proc_getattr(call &c) {
  handle h;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  if (!c.in.ok()) return false;
  c.status = get_handle(c, fh, &h);
  struct stat st;
  if (c.status == NFS3_OK && !stat_fd(h.fd(), &st)) c.status = errno_to_nfs(errno);
  begin_nfs_reply(c.out, c.rpc.xid, c.status);
  if (c.status == NFS3_OK) put_fattr(c.out, st, h.fsid());
  return true;
}

bool proc_setattr(call &c) {
  handle h;
  c.writing = true;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  sattr s;
  get_sattr(c.in, &s);
  bool guard = c.in.boolean();
  timespec guard_ctime{};
  if (guard) {
    guard_ctime.tv_sec = c.in.u32();
    guard_ctime.tv_nsec = c.in.u32();
  }
  if (!c.in.ok()) return false;
  struct stat before;
  bool have_before = false;
  c.status = get_handle(c, fh, &h);
  if (c.status == NFS3_OK && !h.opts->rw) c.status = NFS3ERR_ROFS;
  if (c.status == NFS3_OK) {
    have_before = stat_fd(h.fd(), &before);
    if (guard && have_before &&
        (before.st_ctim.tv_sec != guard_ctime.tv_sec ||
         before.st_ctim.tv_nsec != guard_ctime.tv_nsec))
      c.status = NFS3ERR_NOT_SYNC;
  }
  if (c.status == NFS3_OK) {
    if (s.set_size && !S_ISREG(h.e->type))
      c.status = S_ISDIR(h.e->type) ? NFS3ERR_ISDIR : NFS3ERR_INVAL;
    else {
      cred_enter(h.who);
      c.status = errno_to_nfs(apply_sattr(h.fd(), s));
    }
  }
  struct stat after;
  bool have_after = h.e && stat_fd(h.fd(), &after);
  begin_nfs_reply(c.out, c.rpc.xid, c.status);
  put_wcc(c.out, have_before ? &before : nullptr, have_after ? &after : nullptr,
          h.ex ? h.fsid() : 0);
  return true;
}

bool proc_lookup(call &c) {
  handle dir;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  bytes_view name = c.in.var(NAME_MAX + 1);
  if (!c.in.ok()) return false;
  char nm[NAME_MAX + 1];
  c.status = get_handle(c, fh, &dir);
  if (c.status == NFS3_OK && !S_ISDIR(dir.e->type)) c.status = NFS3ERR_NOTDIR;
  if (c.status == NFS3_OK) c.status = get_name(name, nm);
  nfs_fh out;
  struct stat st;
  if (c.status == NFS3_OK) {
    cred_enter(dir.who);
    int pfd = -1;
    int at = dir.fd();
    const char *rel = nm;
    if (std::strcmp(nm, ".") == 0 || (std::strcmp(nm, "..") == 0 && dir.e->is_root)) {
      rel = "";  // the directory itself: `..` never leaves the export
    } else if (std::strcmp(nm, "..") == 0) {
      pfd = openat(dir.fd(), "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
      at = pfd;
      rel = "";
    }
    if (at < 0) {
      c.status = errno_to_nfs(errno);
    } else if (fstatat(at, rel, &st, AT_SYMLINK_NOFOLLOW | (*rel ? 0 : AT_EMPTY_PATH)) != 0) {
      c.status = errno_to_nfs(errno);
    } else if (st.st_dev != dir.ex->dev) {
      c.status = NFS3ERR_ACCES;  // another filesystem mounted inside the export
    } else if (int e = fh_make(*dir.ex, at, rel, &out)) {
      c.status = errno_to_nfs(e);
    }
    if (pfd >= 0) close(pfd);
  }
  if (c.status != NFS3_OK) {
    reply_attr_only(c, &dir);
    return true;
  }
  struct stat dst;
  bool have_dir = stat_fd(dir.fd(), &dst);
  begin_nfs_reply(c.out, c.rpc.xid, NFS3_OK);
  c.out.var(out.data, out.len);
  put_post_op_attr(c.out, &st, dir.fsid());
  put_post_op_attr(c.out, have_dir ? &dst : nullptr, dir.fsid());
  return true;
}

bool proc_access(call &c) {
  handle h;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  uint32_t want = c.in.u32();
  if (!c.in.ok()) return false;
  c.status = get_handle(c, fh, &h);
  struct stat st;
  if (c.status == NFS3_OK && !stat_fd(h.fd(), &st)) c.status = errno_to_nfs(errno);
  if (c.status != NFS3_OK) {
    reply_attr_only(c, &h);
    return true;
  }
  enum { READ = 1, LOOKUP = 2, MODIFY = 4, EXTEND = 8, DELETE = 16, EXECUTE = 32 };
  uint32_t ok = 0;
  bool dir = S_ISDIR(st.st_mode);
  if (mode_allows(st, h.who, 4)) ok |= READ;
  if (mode_allows(st, h.who, 2) && h.opts->rw) ok |= MODIFY | EXTEND | (dir ? DELETE : 0);
  if (mode_allows(st, h.who, 1)) ok |= dir ? LOOKUP : EXECUTE;
  begin_nfs_reply(c.out, c.rpc.xid, NFS3_OK);
  put_post_op_attr(c.out, &st, h.fsid());
  c.out.u32(want & ok);
  return true;
}

bool proc_readlink(call &c) {
  handle h;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  if (!c.in.ok()) return false;
  c.status = get_handle(c, fh, &h);
  char target[PATH_MAX];
  ssize_t n = -1;
  if (c.status == NFS3_OK && !S_ISLNK(h.e->type)) c.status = NFS3ERR_INVAL;
  if (c.status == NFS3_OK) {
    n = readlinkat(h.fd(), "", target, sizeof target);
    if (n < 0) c.status = errno_to_nfs(errno);
  }
  reply_attr_only(c, &h);
  if (c.status == NFS3_OK) c.out.var(target, size_t(n));
  return true;
}

bool proc_read(call &c) {
  handle h;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  uint64_t offset = c.in.u64();
  uint32_t count = std::min(c.in.u32(), MAX_IO);
  if (!c.in.ok()) return false;
  c.status = get_handle(c, fh, &h);
  struct stat st;
  if (c.status == NFS3_OK) {
    if (S_ISDIR(h.e->type))
      c.status = NFS3ERR_ISDIR;
    else if (!S_ISREG(h.e->type))
      c.status = NFS3ERR_INVAL;
    else if (!stat_fd(h.fd(), &st))
      c.status = errno_to_nfs(errno);
    else if (!mode_allows(st, h.who, 4))
      c.status = NFS3ERR_ACCES;
  }
  if (c.status != NFS3_OK) {
    reply_attr_only(c, &h);
    return true;
  }
  uint64_t size = uint64_t(st.st_size);
  if (c.req.allow_file_part && count > INLINE_READ_MAX) {
    uint32_t n = offset >= size ? 0 : uint32_t(std::min<uint64_t>(count, size - offset));
    begin_nfs_reply(c.out, c.rpc.xid, NFS3_OK);
    put_read_head(c.out, st, h.fsid(), n, offset + n >= size);
    c.req.file = file_part{h.fd(), offset, n, uint32_t(xdr_pad(n)), h.e};
    h.e = nullptr;  // the transport releases it after sending
    return true;
  }
  begin_nfs_reply(c.out, c.rpc.xid, NFS3_OK);
  size_t attr_at = c.out.size();
  put_post_op_attr(c.out, &st, h.fsid());
  size_t count_at = c.out.reserve();
  size_t eof_at = c.out.reserve();
  size_t len_at = c.out.reserve();
  uint8_t *dst = c.out.skip(count);
  if (!dst) return true;  // reply buffer too small: serve_call answers SYSTEM_ERR
  ssize_t n = pread(h.fd(), dst, count, off_t(offset));
  if (n < 0) {
    c.status = errno_to_nfs(errno);
    c.out.rewind(attr_at - 4);
    c.out.u32(c.status);
    put_post_op_attr(c.out, &st, h.fsid());
    return true;
  }
  stat_fd(h.fd(), &st);
  xdr_out attrs(c.out.data() + attr_at, count_at - attr_at);  // same size: rewrite in place
  put_post_op_attr(attrs, &st, h.fsid());
  c.out.patch(count_at, uint32_t(n));
  c.out.patch(eof_at,
              (uint32_t(n) < count || offset + uint64_t(n) >= uint64_t(st.st_size)) ? 1 : 0);
  c.out.patch(len_at, uint32_t(n));
  c.out.rewind(len_at + 4 + size_t(n));
  c.out.pad(size_t(n));
  return true;
}

bool proc_write(call &c) {
  handle h;
  c.writing = true;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  uint64_t offset = c.in.u64();
  uint32_t count = c.in.u32();
  uint32_t stable = c.in.u32();
  bytes_view data = c.in.var(MAX_IO);
  if (!c.in.ok() || stable > FILE_SYNC) return false;
  count = std::min<uint32_t>(count, uint32_t(data.len));
  struct stat before, after;
  bool have_before = false;
  c.status = get_handle(c, fh, &h);
  if (c.status == NFS3_OK && !h.opts->rw) c.status = NFS3ERR_ROFS;
  if (c.status == NFS3_OK) {
    if (S_ISDIR(h.e->type))
      c.status = NFS3ERR_ISDIR;
    else if (!S_ISREG(h.e->type))
      c.status = NFS3ERR_INVAL;
    else if (!(have_before = stat_fd(h.fd(), &before)))
      c.status = errno_to_nfs(errno);
    else if (!mode_allows(before, h.who, 2))
      c.status = NFS3ERR_ACCES;
  }
  ssize_t n = 0;
  if (c.status == NFS3_OK) {
    iovec iov{const_cast<uint8_t *>(data.data), count};
    int flags = stable == FILE_SYNC ? RWF_SYNC : stable == DATA_SYNC ? RWF_DSYNC : 0;
    n = pwritev2(h.fd(), &iov, 1, off_t(offset), flags);
    if (n < 0) c.status = errno_to_nfs(errno);
  }
  bool have_after = h.e && stat_fd(h.fd(), &after);
  begin_nfs_reply(c.out, c.rpc.xid, c.status);
  put_wcc(c.out, have_before ? &before : nullptr, have_after ? &after : nullptr,
          h.ex ? h.fsid() : 0);
  if (c.status == NFS3_OK) {
    c.out.u32(uint32_t(n));
    c.out.u32(stable);
    c.out.fixed(c.srv.write_verf, 8);
  }
  return true;
}

// Common front of the procedures that create a name in a directory:
// directory handle (rw, a directory) and a valid name.  Returns false only
// on garbage.
bool dir_and_name(call &c, handle *dir, char nm[NAME_MAX + 1], struct stat *before,
                  bool *have_before) {
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  bytes_view name = c.in.var(NAME_MAX + 1);
  if (!c.in.ok()) return false;
  c.status = get_handle(c, fh, dir);
  if (c.status == NFS3_OK && !dir->opts->rw) c.status = NFS3ERR_ROFS;
  if (c.status == NFS3_OK && !S_ISDIR(dir->e->type)) c.status = NFS3ERR_NOTDIR;
  if (c.status == NFS3_OK) c.status = get_name(name, nm);
  *have_before = c.status == NFS3_OK && stat_fd(dir->fd(), before);
  return true;
}

bool proc_create(call &c) {
  handle dir;
  char nm[NAME_MAX + 1];
  struct stat before;
  bool have_before = false;
  if (!dir_and_name(c, &dir, nm, &before, &have_before)) return false;
  uint32_t how = c.in.u32();
  sattr s;
  uint32_t verf_a = 0, verf_m = 0;  // EXCLUSIVE: the 8-byte verifier as two words
  if (how == 2) {
    verf_a = c.in.u32();
    verf_m = c.in.u32();
  } else {
    get_sattr(c.in, &s);
  }
  if (!c.in.ok() || how > 2) return false;
  if (c.status == NFS3_OK) {
    cred_enter(dir.who);
    mode_t mode = s.set_mode ? (s.mode & 07777) : 0644;
    // O_NONBLOCK: an existing FIFO must not block this thread in open()
    // (any client could stop a worker for good that way); an existing
    // object that is not a regular file is refused before and after the
    // open, as knfsd does (NFS3ERR_EXIST).
    int flags = O_CREAT | O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | (how == 0 ? 0 : O_EXCL);
    struct stat old;
    int fd = -1;
    if (how == 0 && fstatat(dir.fd(), nm, &old, AT_SYMLINK_NOFOLLOW) == 0 &&
        !S_ISREG(old.st_mode)) {
      errno = EEXIST;
    } else {
      fd = openat(dir.fd(), nm, flags, how == 2 ? 0600 : mode);
      if (fd >= 0 && (fstat(fd, &old) != 0 || !S_ISREG(old.st_mode))) {
        close(fd);  // replaced by something else between the two looks
        fd = -1;
        errno = EEXIST;
      }
    }
    if (fd >= 0 && how == 2) {
      // EXCLUSIVE: keep the client's verifier in atime/mtime (as knfsd
      // does) so a retried CREATE can be recognised.
      timespec ts[2] = {{time_t(verf_a), 0}, {time_t(verf_m), 0}};
      if (futimens(fd, ts) != 0) c.status = errno_to_nfs(errno);
    } else if (fd >= 0) {
      sattr rest = s;
      rest.set_mode = false;  // applied by open (the umask aside)
      if (s.set_mode) fchmod(fd, mode);
      c.status = errno_to_nfs(apply_sattr(fd, rest));
    } else if (errno == EEXIST && how == 2) {
      struct stat st;
      if (fstatat(dir.fd(), nm, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
          uint32_t(st.st_atim.tv_sec) == verf_a && uint32_t(st.st_mtim.tv_sec) == verf_m)
        c.status = NFS3_OK;  // the retry of our own exclusive create
      else
        c.status = NFS3ERR_EXIST;
    } else {
      c.status = errno_to_nfs(errno);
    }
    if (fd >= 0) close(fd);
  }
  reply_created(c, dir, nm, have_before ? &before : nullptr);
  return true;
}

bool proc_mkdir(call &c) {
  handle dir;
  char nm[NAME_MAX + 1];
  struct stat before;
  bool have_before = false;
  if (!dir_and_name(c, &dir, nm, &before, &have_before)) return false;
  sattr s;
  get_sattr(c.in, &s);
  if (!c.in.ok()) return false;
  if (c.status == NFS3_OK) {
    cred_enter(dir.who);
    if (mkdirat(dir.fd(), nm, s.set_mode ? (s.mode & 07777) : 0755) != 0) {
      c.status = errno_to_nfs(errno);
    } else {
      int fd = openat(dir.fd(), nm, O_PATH | O_NOFOLLOW | O_CLOEXEC);
      sattr rest = s;
      rest.set_mode = false;
      if (fd >= 0) {
        c.status = errno_to_nfs(apply_sattr(fd, rest));
        close(fd);
      }
    }
  }
  reply_created(c, dir, nm, have_before ? &before : nullptr);
  return true;
}

bool proc_symlink(call &c) {
  handle dir;
  char nm[NAME_MAX + 1];
  struct stat before;
  bool have_before = false;
  if (!dir_and_name(c, &dir, nm, &before, &have_before)) return false;
  sattr s;
  get_sattr(c.in, &s);
  bytes_view target = c.in.var(PATH_MAX - 1);
  if (!c.in.ok()) return false;
  if (c.status == NFS3_OK) {
    char t[PATH_MAX];
    std::memcpy(t, target.data, target.len);
    t[target.len] = '\0';
    if (target.len == 0 || std::memchr(target.data, '\0', target.len)) {
      c.status = NFS3ERR_INVAL;
    } else {
      cred_enter(dir.who);
      if (symlinkat(t, dir.fd(), nm) != 0) c.status = errno_to_nfs(errno);
    }
  }
  reply_created(c, dir, nm, have_before ? &before : nullptr);
  return true;
}

bool proc_mknod(call &c) {
  handle dir;
  char nm[NAME_MAX + 1];
  struct stat before;
  bool have_before = false;
  if (!dir_and_name(c, &dir, nm, &before, &have_before)) return false;
  uint32_t type = c.in.u32();
  sattr s;
  uint32_t maj = 0, min = 0;
  mode_t fmt = 0;
  switch (type) {
    case 3:  // NF3BLK
    case 4:  // NF3CHR
      get_sattr(c.in, &s);
      maj = c.in.u32();
      min = c.in.u32();
      fmt = type == 3 ? S_IFBLK : S_IFCHR;
      break;
    case 6:  // NF3SOCK
    case 7:  // NF3FIFO
      get_sattr(c.in, &s);
      fmt = type == 6 ? S_IFSOCK : S_IFIFO;
      break;
    case 1:
    case 2:
    case 5:
      if (c.status == NFS3_OK) c.status = NFS3ERR_BADTYPE;
      break;
    default:
      return false;
  }
  if (!c.in.ok()) return false;
  if (c.status == NFS3_OK) {
    cred_enter(dir.who);
    mode_t mode = fmt | (s.set_mode ? (s.mode & 07777) : 0644);
    if (mknodat(dir.fd(), nm, mode, makedev(maj, min)) != 0) c.status = errno_to_nfs(errno);
  }
  reply_created(c, dir, nm, have_before ? &before : nullptr);
  return true;
}

// REMOVE and RMDIR.
bool proc_remove(call &c, bool rmdir) {
  handle dir;
  char nm[NAME_MAX + 1];
  struct stat before;
  bool have_before = false;
  if (!dir_and_name(c, &dir, nm, &before, &have_before)) return false;
  if (c.status == NFS3_OK && rmdir && std::strcmp(nm, ".") == 0) c.status = NFS3ERR_INVAL;
  if (c.status == NFS3_OK && rmdir && std::strcmp(nm, "..") == 0) c.status = NFS3ERR_EXIST;
  if (c.status == NFS3_OK) {
    cred_enter(dir.who);
    nfs_fh victim;
    bool known = fh_make(*dir.ex, dir.fd(), nm, &victim) == 0;
    if (unlinkat(dir.fd(), nm, rmdir ? AT_REMOVEDIR : 0) != 0)
      c.status = errno_to_nfs(errno);
    else if (known)
      fh_forget(c.srv.handles, victim.view());
  }
  reply_dir_wcc(c, &dir, have_before ? &before : nullptr);
  return true;
}

bool proc_rename(call &c) {
  handle from, to;
  char fname[NAME_MAX + 1], tname[NAME_MAX + 1];
  struct stat fbefore, tbefore;
  bool have_f = false, have_t = false;
  if (!dir_and_name(c, &from, fname, &fbefore, &have_f)) return false;
  nfsstat3 first = c.status;
  if (!dir_and_name(c, &to, tname, &tbefore, &have_t)) return false;
  if (first != NFS3_OK) c.status = first;
  if (c.status == NFS3_OK && from.ex != to.ex) c.status = NFS3ERR_XDEV;
  if (c.status == NFS3_OK) {
    cred_enter(from.who);
    nfs_fh replaced;
    bool known = fh_make(*to.ex, to.fd(), tname, &replaced) == 0;
    if (renameat(from.fd(), fname, to.fd(), tname) != 0)
      c.status = errno_to_nfs(errno);
    else if (known)
      fh_forget(c.srv.handles, replaced.view());
  }
  struct stat fafter, tafter;
  bool fa = from.e && stat_fd(from.fd(), &fafter);
  bool ta = to.e && stat_fd(to.fd(), &tafter);
  begin_nfs_reply(c.out, c.rpc.xid, c.status);
  put_wcc(c.out, have_f ? &fbefore : nullptr, fa ? &fafter : nullptr, from.ex ? from.fsid() : 0);
  put_wcc(c.out, have_t ? &tbefore : nullptr, ta ? &tafter : nullptr, to.ex ? to.fsid() : 0);
  return true;
}

bool proc_link(call &c) {
  handle file, dir;
  c.writing = true;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  if (!c.in.ok()) return false;
  c.status = get_handle(c, fh, &file);
  nfsstat3 first = c.status;
  char nm[NAME_MAX + 1];
  struct stat before;
  bool have_before = false;
  if (!dir_and_name(c, &dir, nm, &before, &have_before)) return false;
  if (first != NFS3_OK) c.status = first;
  if (c.status == NFS3_OK && file.ex != dir.ex) c.status = NFS3ERR_XDEV;
  if (c.status == NFS3_OK && S_ISDIR(file.e->type)) c.status = NFS3ERR_ISDIR;
  if (c.status == NFS3_OK) {
    cred_enter(dir.who);
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", file.fd());
    if (linkat(AT_FDCWD, path, dir.fd(), nm, AT_SYMLINK_FOLLOW) != 0)
      c.status = errno_to_nfs(errno);
  }
  struct stat fst, after;
  bool have_f = file.e && stat_fd(file.fd(), &fst);
  bool have_after = dir.e && stat_fd(dir.fd(), &after);
  begin_nfs_reply(c.out, c.rpc.xid, c.status);
  put_post_op_attr(c.out, have_f ? &fst : nullptr, file.ex ? file.fsid() : 0);
  put_wcc(c.out, have_before ? &before : nullptr, have_after ? &after : nullptr,
          dir.ex ? dir.fsid() : 0);
  return true;
}

struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

// READDIR and READDIRPLUS.  Cookies are the directory's own seek offsets
// (d_off from getdents64): stable across calls, unambiguous with hard
// links, and unaffected by entries added elsewhere in the directory.  The
// cookie verifier is always zero and never checked (clients differ in what
// they send back).
bool proc_readdir(call &c, bool plus) {
  handle dir;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  uint64_t cookie = c.in.u64();
  c.in.fixed(8);  // cookieverf
  uint32_t dircount = c.in.u32();
  uint32_t maxcount = plus ? c.in.u32() : dircount;
  if (!c.in.ok()) return false;
  c.status = get_handle(c, fh, &dir);
  if (c.status == NFS3_OK && !S_ISDIR(dir.e->type)) c.status = NFS3ERR_NOTDIR;
  int dfd = -1;
  if (c.status == NFS3_OK) {
    cred_enter(dir.who);
    dfd = openat(dir.fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
      c.status = errno_to_nfs(errno);
    else if (cookie != 0 && lseek(dfd, off_t(cookie), SEEK_SET) < 0)
      c.status = NFS3ERR_BAD_COOKIE;
  }
  struct stat dst;
  if (c.status == NFS3_OK && !stat_fd(dir.fd(), &dst)) c.status = errno_to_nfs(errno);
  if (c.status != NFS3_OK) {
    if (dfd >= 0) close(dfd);
    reply_attr_only(c, &dir);
    return true;
  }
  begin_nfs_reply(c.out, c.rpc.xid, NFS3_OK);
  size_t body = c.out.size() - 4;  // the reply body starts at the status
  put_post_op_attr(c.out, &dst, dir.fsid());
  uint8_t zero[8] = {};
  c.out.fixed(zero, 8);
  // Budget: the client's limit (bounded by our buffer), less the list's end.
  size_t limit = std::min<size_t>(maxcount, c.out.capacity() - body);
  limit = limit > 8 ? limit - 8 : 0;  // a count below 8 fits nothing: TOOSMALL
  size_t names_limit = plus ? dircount : limit;
  size_t names = 0, entries = 0;
  bool eof = false, full = false;
  alignas(8) char dbuf[16384];
  while (!full) {
    long n = syscall(SYS_getdents64, dfd, dbuf, sizeof dbuf);
    if (n < 0) {
      c.status = errno_to_nfs(errno);
      break;
    }
    if (n == 0) {
      eof = true;
      break;
    }
    for (long off = 0; off < n;) {
      auto *d = reinterpret_cast<linux_dirent64 *>(dbuf + off);
      off += d->d_reclen;
      size_t len = std::strlen(d->d_name);
      size_t fixed = 8 + 4 + len + xdr_pad(len) + 8;
      bool dotdot_root = dir.e->is_root && std::strcmp(d->d_name, "..") == 0;
      uint64_t ino = dotdot_root ? dst.st_ino : d->d_ino;
      struct stat st;
      nfs_fh efh;
      bool have_st = false, have_fh = false;
      size_t need = 4 + fixed;
      if (plus) {
        if (!dotdot_root) {
          have_st =
              fstatat(dfd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == dir.ex->dev;
          have_fh = have_st && fh_make(*dir.ex, dfd, d->d_name, &efh) == 0;
        }
        need += 4 + (have_st ? 84 : 0) + 4 + (have_fh ? 4 + efh.len + xdr_pad(efh.len) : 0);
      }
      if (c.out.size() - body + need > limit || names + fixed > names_limit) {
        full = true;
        break;
      }
      c.out.boolean(true);
      c.out.u64(ino);
      c.out.var(d->d_name, len);
      c.out.u64(uint64_t(d->d_off));
      if (plus) {
        put_post_op_attr(c.out, have_st ? &st : nullptr, dir.fsid());
        c.out.boolean(have_fh);
        if (have_fh) c.out.var(efh.data, efh.len);
      }
      names += fixed;
      entries++;
    }
  }
  close(dfd);
  if (c.status == NFS3_OK && entries == 0 && !eof) c.status = NFS3ERR_TOOSMALL;
  if (c.status != NFS3_OK) {
    c.out.rewind(body);
    c.out.u32(c.status);
    put_post_op_attr(c.out, &dst, dir.fsid());
    return true;
  }
  c.out.boolean(false);
  c.out.boolean(eof);
  return true;
}

bool proc_fsstat(call &c) {
  handle h;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  if (!c.in.ok()) return false;
  c.status = get_handle(c, fh, &h);
  struct statvfs vfs;
  if (c.status == NFS3_OK && fstatvfs(h.fd(), &vfs) != 0) c.status = errno_to_nfs(errno);
  reply_attr_only(c, &h);
  if (c.status != NFS3_OK) return true;
  uint64_t f = vfs.f_frsize;
  c.out.u64(vfs.f_blocks * f);
  c.out.u64(vfs.f_bfree * f);
  c.out.u64(vfs.f_bavail * f);
  c.out.u64(vfs.f_files);
  c.out.u64(vfs.f_ffree);
  c.out.u64(vfs.f_favail);
  c.out.u32(0);  // invarsec
  return true;
}

bool proc_fsinfo(call &c) {
  handle h;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  if (!c.in.ok()) return false;
  c.status = get_handle(c, fh, &h);
  reply_attr_only(c, &h);
  if (c.status != NFS3_OK) return true;
  c.out.u32(MAX_IO);     // rtmax
  c.out.u32(MAX_IO);     // rtpref
  c.out.u32(4096);       // rtmult
  c.out.u32(MAX_IO);     // wtmax
  c.out.u32(MAX_IO);     // wtpref
  c.out.u32(4096);       // wtmult
  c.out.u32(64 * 1024);  // dtpref
  c.out.u64(INT64_MAX);  // maxfilesize
  c.out.u32(0);          // time_delta: 1 ns
  c.out.u32(1);
  c.out.u32(0x1 | 0x2 | 0x8 | 0x10);  // LINK, SYMLINK, HOMOGENEOUS, CANSETTIME
  return true;
}

bool proc_pathconf(call &c) {
  handle h;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  if (!c.in.ok()) return false;
  c.status = get_handle(c, fh, &h);
  long linkmax = 0;
  if (c.status == NFS3_OK) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", h.fd());
    linkmax = pathconf(path, _PC_LINK_MAX);
  }
  reply_attr_only(c, &h);
  if (c.status != NFS3_OK) return true;
  c.out.u32(linkmax > 0 ? uint32_t(linkmax) : 65000);
  c.out.u32(NAME_MAX);
  c.out.boolean(true);   // no_trunc
  c.out.boolean(true);   // chown_restricted
  c.out.boolean(false);  // case_insensitive
  c.out.boolean(true);   // case_preserving
  return true;
}

bool proc_commit(call &c) {
  handle h;
  bytes_view fh = c.in.var(NFS3_FHSIZE);
  c.in.u64();
  c.in.u32();
  if (!c.in.ok()) return false;
  c.status = get_handle(c, fh, &h);
  struct stat before, after;
  bool have_before = c.status == NFS3_OK && stat_fd(h.fd(), &before);
  if (c.status == NFS3_OK && !S_ISREG(h.e->type) && !S_ISDIR(h.e->type)) c.status = NFS3ERR_INVAL;
  if (c.status == NFS3_OK && fsync(h.fd()) != 0) c.status = errno_to_nfs(errno);
  bool have_after = h.e && stat_fd(h.fd(), &after);
  begin_nfs_reply(c.out, c.rpc.xid, c.status);
  put_wcc(c.out, have_before ? &before : nullptr, have_after ? &after : nullptr,
          h.ex ? h.fsid() : 0);
  if (c.status == NFS3_OK) c.out.fixed(c.srv.write_verf, 8);
  return true;
}

bool run_nfs(call &c) {
  switch (c.rpc.proc) {
    case NFSPROC3_NULL:
      return proc_null(c);
    case NFSPROC3_GETATTR:
      return proc_getattr(c);
    case NFSPROC3_SETATTR:
      return proc_setattr(c);
    case NFSPROC3_LOOKUP:
      return proc_lookup(c);
    case NFSPROC3_ACCESS:
      return proc_access(c);
    case NFSPROC3_READLINK:
      return proc_readlink(c);
    case NFSPROC3_READ:
      return proc_read(c);
    case NFSPROC3_WRITE:
      return proc_write(c);
    case NFSPROC3_CREATE:
      return proc_create(c);
    case NFSPROC3_MKDIR:
      return proc_mkdir(c);
    case NFSPROC3_SYMLINK:
      return proc_symlink(c);
    case NFSPROC3_MKNOD:
      return proc_mknod(c);
    case NFSPROC3_REMOVE:
      return proc_remove(c, false);
    case NFSPROC3_RMDIR:
      return proc_remove(c, true);
    case NFSPROC3_RENAME:
      return proc_rename(c);
    case NFSPROC3_LINK:
      return proc_link(c);
    case NFSPROC3_READDIR:
      return proc_readdir(c, false);
    case NFSPROC3_READDIRPLUS:
      return proc_readdir(c, true);
    case NFSPROC3_FSSTAT:
      return proc_fsstat(c);
    case NFSPROC3_FSINFO:
      return proc_fsinfo(c);
    case NFSPROC3_PATHCONF:
      return proc_pathconf(c);
    case NFSPROC3_COMMIT:
      return proc_commit(c);
    default:
      return false;
  }
}

// ---- MOUNT v3 ---------------------------------------------------------------------------

enum mountstat3 : uint32_t {
  MNT3_OK = 0,
  MNT3ERR_NOENT = 2,
  MNT3ERR_ACCES = 13,
  MNT3ERR_NOTDIR = 20,
  MNT3ERR_INVAL = 22,
  MNT3ERR_NAMETOOLONG = 63,
  MNT3ERR_SERVERFAULT = 10006,
};

constexpr size_t MNTPATHLEN = 1024;
constexpr size_t MAX_MOUNT_RECORDS = 1024;

std::string peer_host(const sockaddr_storage &p) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (p.ss_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in &>(p).sin_addr, buf, sizeof buf);
  else if (p.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6 &>(p).sin6_addr, buf, sizeof buf);
  return buf;
}

void begin_mount_reply(call &c) { encode_accepted(c.out, c.rpc.xid, SUCCESS); }

// MNT: the export containing `path` (longest prefix), then each further
// component opened without following symlinks; `..` is refused.
mountstat3 mount_path(call &c, std::string_view path, nfs_fh *fh) {
  const export_entry *best = nullptr;
  for (const auto &e : c.exports->exports) {
    std::string_view p = e.path;
    bool inside = path == p || (path.size() > p.size() && path.substr(0, p.size()) == p &&
                                (p == "/" || path[p.size()] == '/'));
    if (inside && (!best || p.size() > best->path.size())) best = &e;
  }
  if (!best || path.find('\0') != std::string_view::npos) return MNT3ERR_NOENT;
  if (!export_access(*best, c.req.peer)) return MNT3ERR_ACCES;
  std::string rest(path.substr(std::min(path.size(), best->path.size())));
  int fd = dup(best->root_fd);
  if (fd < 0) return MNT3ERR_SERVERFAULT;
  size_t pos = 0;
  mountstat3 st = MNT3_OK;
  while (pos <= rest.size() && st == MNT3_OK) {
    size_t slash = rest.find('/', pos);
    if (slash == std::string::npos) slash = rest.size();
    std::string comp = rest.substr(pos, slash - pos);
    pos = slash + 1;
    if (comp.empty() || comp == ".") continue;
    if (comp == ".." || comp.size() > NAME_MAX) {
      st = comp == ".." ? MNT3ERR_ACCES : MNT3ERR_NAMETOOLONG;
      break;
    }
    int next = openat(fd, comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) {
      st = errno == ENOENT ? MNT3ERR_NOENT : errno == ENOTDIR ? MNT3ERR_NOTDIR : MNT3ERR_ACCES;
      break;
    }
    close(fd);
    fd = next;
  }
  if (st == MNT3_OK) {
    struct stat s;
    if (fstat(fd, &s) != 0 || s.st_dev != best->dev || fh_make(*best, fd, "", fh) != 0)
      st = MNT3ERR_ACCES;
  }
  close(fd);
  return st;
}

bool run_mount(call &c) {
  switch (c.rpc.proc) {
    case 0:  // NULL
      encode_accepted(c.out, c.rpc.xid, SUCCESS);
      return true;
    case 1: {  // MNT
      bytes_view path = c.in.var(MNTPATHLEN);
      if (!c.in.ok()) return false;
      cred_leave();
      nfs_fh fh;
      mountstat3 st = c.exports ? mount_path(c, path.str(), &fh) : MNT3ERR_NOENT;
      begin_mount_reply(c);
      c.out.u32(st);
      if (st != MNT3_OK) {
        c.status = NFS3ERR_ACCES;
        return true;
      }
      c.out.var(fh.data, fh.len);
      c.out.u32(2);
      c.out.u32(AUTH_SYS);
      c.out.u32(AUTH_NONE);
      std::lock_guard<std::mutex> g(c.srv.mounts_lock);
      std::pair<std::string, std::string> rec{peer_host(c.req.peer), std::string(path.str())};
      if (std::find(c.srv.mounts.begin(), c.srv.mounts.end(), rec) == c.srv.mounts.end() &&
          c.srv.mounts.size() < MAX_MOUNT_RECORDS)
        c.srv.mounts.push_back(std::move(rec));
      return true;
    }
    case 2: {  // DUMP
      begin_mount_reply(c);
      std::lock_guard<std::mutex> g(c.srv.mounts_lock);
      for (auto &[host, dir] : c.srv.mounts) {
        c.out.boolean(true);
        c.out.str(host);
        c.out.str(dir);
      }
      c.out.boolean(false);
      return true;
    }
    case 3:    // UMNT
    case 4: {  // UMNTALL
      bytes_view path;
      if (c.rpc.proc == 3) path = c.in.var(MNTPATHLEN);
      if (!c.in.ok()) return false;
      std::string host = peer_host(c.req.peer);
      std::lock_guard<std::mutex> g(c.srv.mounts_lock);
      std::erase_if(c.srv.mounts, [&](auto &m) {
        return m.first == host && (c.rpc.proc == 4 || m.second == path.str());
      });
      begin_mount_reply(c);
      return true;
    }
    case 5: {  // EXPORT
      begin_mount_reply(c);
      if (c.exports) {
        for (const auto &e : c.exports->exports) {
          c.out.boolean(true);
          c.out.str(e.path);
          for (const auto &cl : e.clients) {
            c.out.boolean(true);
            c.out.str(cl.spec);
          }
          c.out.boolean(false);
        }
      }
      c.out.boolean(false);
      return true;
    }
    default:
      return false;
  }
}

}  // namespace

// ---- dispatch ------------------------------------------------------------------------------

serve_result serve_call(server &srv, request &req) {
  uint64_t t0 = now_ns();
  call c(srv, req);
  c.in = xdr_in(req.rec, req.len);
  req.file = file_part{};
  switch (decode_call(c.in, &c.rpc)) {
    case call_status::garbage:
      srv.stats.bad_records.fetch_add(1, std::memory_order_relaxed);
      return serve_result::close;
    case call_status::not_a_call:
      return serve_result::drop;
    case call_status::rpc_mismatch:
      encode_rpc_mismatch(req.out, c.rpc.xid);
      srv.stats.rpc_errors.fetch_add(1, std::memory_order_relaxed);
      finish_record(req.out);
      return serve_result::reply;
    case call_status::bad_cred:
      encode_auth_error(req.out, c.rpc.xid, AUTH_BADCRED);
      srv.stats.rpc_errors.fetch_add(1, std::memory_order_relaxed);
      finish_record(req.out);
      return serve_result::reply;
    case call_status::ok:
      break;
  }
  proc_counter *ctr = nullptr;
  bool ok = true;
  if (c.rpc.prog == NFS_PROGRAM && c.rpc.vers == NFS_V3 && c.rpc.proc < NFS3_PROCS) {
    c.exports = srv.exports_now();
    ctr = &srv.stats.nfs[c.rpc.proc];
    ok = run_nfs(c);
  } else if (c.rpc.prog == MOUNT_PROGRAM && c.rpc.vers == MOUNT_V3 && c.rpc.proc < MOUNT3_PROCS) {
    c.exports = srv.exports_now();
    ctr = &srv.stats.mount[c.rpc.proc];
    ok = run_mount(c);
  } else if (c.rpc.prog == NFS_PROGRAM || c.rpc.prog == MOUNT_PROGRAM) {
    bool vers_ok = c.rpc.vers == 3;
    if (vers_ok)
      encode_accepted(req.out, c.rpc.xid, PROC_UNAVAIL);
    else
      encode_prog_mismatch(req.out, c.rpc.xid, 3, 3);
  } else {
    encode_accepted(req.out, c.rpc.xid, PROG_UNAVAIL);
  }
  if (!ctr) srv.stats.rpc_errors.fetch_add(1, std::memory_order_relaxed);
  if (!ok || !req.out.ok()) {
    // Garbage arguments, or a reply that did not fit: start the record
    // again with just the RPC error.
    release_file_part(srv, req.file);
    req.out = xdr_out(req.out.data(), req.out.capacity());
    encode_accepted(req.out, c.rpc.xid, ok ? SYSTEM_ERR : GARBAGE_ARGS);
    srv.stats.rpc_errors.fetch_add(1, std::memory_order_relaxed);
    c.status = NFS3ERR_SERVERFAULT;
  }
  finish_record(req.out, req.file.len + req.file.pad);
  if (ctr) {
    ctr->calls.fetch_add(1, std::memory_order_relaxed);
    if (c.status != NFS3_OK) ctr->errors.fetch_add(1, std::memory_order_relaxed);
    ctr->ns.fetch_add(now_ns() - t0, std::memory_order_relaxed);
  }
  return serve_result::reply;
}

std::string format_stats(server &srv) {
  std::string s;
  char line[160];
  auto row = [&](const char *prog, const char *name, proc_counter &p) {
    uint64_t n = p.calls.load(std::memory_order_relaxed);
    if (!n) return;
    std::snprintf(line, sizeof line, "  %-5s %-12s calls %10llu  errors %8llu  avg %8.1f us\n",
                  prog, name, (unsigned long long)n,
                  (unsigned long long)p.errors.load(std::memory_order_relaxed),
                  double(p.ns.load(std::memory_order_relaxed)) / double(n) / 1000.0);
    s += line;
  };
  for (uint32_t i = 0; i < NFS3_PROCS; i++) row("nfs", nfs3_proc_name(i), srv.stats.nfs[i]);
  for (uint32_t i = 0; i < MOUNT3_PROCS; i++) row("mount", mount3_proc_name(i), srv.stats.mount[i]);
  fhcache_stats fs = fhcache_get_stats(srv.handles);
  std::snprintf(line, sizeof line,
                "  rpc errors %llu, bad records %llu, fast path %llu, thread path %llu, "
                "connections %llu; handle cache hits %llu misses %llu evictions %llu\n",
                (unsigned long long)srv.stats.rpc_errors.load(),
                (unsigned long long)srv.stats.bad_records.load(),
                (unsigned long long)srv.stats.fast_path.load(),
                (unsigned long long)srv.stats.thread_path.load(),
                (unsigned long long)srv.stats.connections.load(), (unsigned long long)fs.hits,
                (unsigned long long)fs.misses, (unsigned long long)fs.evictions);
  s += line;
  return s;
}

}  // namespace kc::nfs
