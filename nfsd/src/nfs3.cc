// SPDX-License-Identifier: BSD-2-Clause
// nfs3.cc -- the protocol: RPC dispatch, the 22 NFSv3 procedures (RFC 1813)
// and the 6 MOUNT v3 procedures, each written once against vfs(9).
//
// Model: a call goes through three steps, the same for both transports.
//   decode   call_begin decodes the RPC header and the procedure's
//            arguments (garbage -> GARBAGE_ARGS), unwraps the file handles
//            (BADHANDLE), finds the export and the client's rights on it
//            (STALE, ACCES), squashes the credential, and fills one VFS
//            request.  Procedures that need no file system (NULL, DUMP,
//            UMNT, UMNTALL, EXPORT) and calls refused here are encoded at
//            once.
//   run      the transport runs the VFS request: vop_start with a
//            continuation (kcont model: the VFS completes it without a
//            thread when the kernel allows, or in thread context), or
//            vop_call (threads model, serve_call).
//   encode   call_end writes the reply from the request's results: status,
//            attributes, data.
// The table `nfs_procs` holds each procedure's decoder, encoder, VFS
// operation (none for the procedures answered at once).  READ data goes where
// the VFS put it: in place in the reply buffer, in an I/O-layer buffer sent
// after it, or as a file extent the kcont transport sends with sendfile.
// READDIR entries are encoded by the VFS's emit callback straight into the
// reply buffer, after room left for the directory's attributes.
//
// Locking: none of its own beyond the server's (mount list spinlock);
// every call's state is in its nfs_call.
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

#include "internal.h"
#include "kcont/nfsd/transport.h"
#include "kcont/spinlock.h"

namespace kc::nfs {

using vfs::vattr;
using vfs::vop;
using vfs::vwcc;

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
    case vfs::VFS_BADHANDLE:
      return NFS3ERR_BADHANDLE;
    case vfs::VFS_NOT_SYNC:
      return NFS3ERR_NOT_SYNC;
    case vfs::VFS_BAD_COOKIE:
      return NFS3ERR_BAD_COOKIE;
    case vfs::VFS_BADTYPE:
      return NFS3ERR_BADTYPE;
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

// ---- file handles and credentials ------------------------------------------------------

void fh_wrap(uint32_t export_id, const vfs::vfh &in, nfs_fh *out) {
  out->data[0] = 'k';
  out->data[1] = 'n';
  out->data[2] = FH_VERSION;
  out->data[3] = uint8_t(in.len);
  xdr_out::put32(out->data + 4, export_id);
  std::memcpy(out->data + FH_HEADER, in.data, in.len);
  out->len = FH_HEADER + in.len;
}

nfsstat3 fh_unwrap(bytes_view fh, uint32_t *export_id, vfs::vfh *out) {
  if (fh.len <= FH_HEADER || fh.len > NFS3_FHSIZE || fh.data[0] != 'k' || fh.data[1] != 'n' ||
      fh.data[2] != FH_VERSION || FH_HEADER + fh.data[3] != fh.len || fh.data[3] > vfs::VFS_FHSIZE)
    return NFS3ERR_BADHANDLE;
  *export_id = uint32_t(fh.data[4]) << 24 | uint32_t(fh.data[5]) << 16 | uint32_t(fh.data[6]) << 8 |
               fh.data[7];
  out->len = fh.data[3];
  std::memcpy(out->data, fh.data + FH_HEADER, out->len);
  return NFS3_OK;
}

vfs::vcred effective_cred(const rpc_call &call, const export_opts &o) {
  vfs::vcred c;
  c.uid = o.anonuid;
  c.gid = o.anongid;
  if (call.flavor != AUTH_SYS || o.all_squash) return c;
  c.uid = call.sys.uid;
  c.gid = call.sys.gid;
  c.ngids = std::min<uint32_t>(call.sys.ngids, vfs::VFS_MAX_GIDS);
  std::copy(call.sys.gids, call.sys.gids + c.ngids, c.gids);
  if (o.root_squash) {
    if (c.uid == 0) c.uid = o.anonuid;
    if (c.gid == 0) c.gid = o.anongid;
    for (uint32_t i = 0; i < c.ngids; i++)
      if (c.gids[i] == 0) c.gids[i] = o.anongid;
  }
  return c;
}

// ---- attribute encoding ------------------------------------------------------------

namespace {

void put_time(xdr_out &out, const timespec &t) {
  out.u32(uint32_t(t.tv_sec));
  out.u32(uint32_t(t.tv_nsec));
}

}  // namespace

void put_fattr(xdr_out &out, const vattr &a, uint32_t fsid) {
  uint32_t type = a.type == vfs::vtype::none ? 1 : uint32_t(a.type);  // ftype3 values
  out.u32(type);
  out.u32(a.mode & 07777);
  out.u32(a.nlink);
  out.u32(a.uid);
  out.u32(a.gid);
  out.u64(a.size);
  out.u64(a.used);
  out.u32(a.rdev_major);
  out.u32(a.rdev_minor);
  out.u64(fsid);
  out.u64(a.fileid);
  put_time(out, a.atime);
  put_time(out, a.mtime);
  put_time(out, a.ctime);
}

void put_post_op_attr(xdr_out &out, const vattr *a, uint32_t fsid) {
  out.boolean(a != nullptr);
  if (a) put_fattr(out, *a, fsid);
}

void put_pre_op_attr(xdr_out &out, const vattr *a) {
  out.boolean(a != nullptr);
  if (!a) return;
  out.u64(a->size);
  put_time(out, a->mtime);
  put_time(out, a->ctime);
}

void put_wcc(xdr_out &out, const vwcc &w, uint32_t fsid) {
  put_pre_op_attr(out, w.have_pre ? &w.pre : nullptr);
  put_post_op_attr(out, w.have_post ? &w.post : nullptr, fsid);
}

void begin_nfs_reply(xdr_out &out, uint32_t xid, nfsstat3 st) {
  encode_accepted(out, xid, SUCCESS);
  out.u32(st);
}

// ---- server object -------------------------------------------------------------------

server::server() {
  mounts.reserve(MAX_MOUNT_RECORDS);
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t v = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  v ^= uint64_t(getpid()) << 48;
  write_verf.store(v, std::memory_order_relaxed);
}

server::~server() = default;

void server::new_write_verf() {
  // A different value from every earlier one of this run: the low bits
  // count the changes.
  write_verf.fetch_add(0x9e3779b97f4a7c15ull, std::memory_order_relaxed);
}

std::shared_ptr<const export_table> server::exports() const {
  std::lock_guard<std::mutex> g(exports_lock_);
  return exports_;
}

void server::set_exports(std::shared_ptr<export_table> t) {
  std::lock_guard<std::mutex> g(exports_lock_);
  // Keep the mount of every path exported before from the same back end
  // with the same options: the newest table that has it wins.  t's own mount of that path was never
  // published: it goes now.
  auto adopt = [](export_entry &e, const export_table *old) {
    if (!old) return false;
    for (const export_entry &o : old->exports) {
      if (o.id == e.id && o.path == e.path && o.backend == e.backend && o.mount) {
        e.mount = o.mount;
        e.fs = o.fs;
        return true;
      }
    }
    return false;
  };
  for (export_entry &e : t->exports) {
    if (adopt(e, exports_.get())) continue;
    for (auto it = retired_.rbegin(); it != retired_.rend(); ++it)
      if (adopt(e, it->get())) break;
  }
  if (exports_) retired_.push_back(exports_);
  current_.store(t.get(), std::memory_order_release);
  exports_ = std::move(t);
}

void release_reply(request &req) {
  if (req.file.ref) vfs::vnode_rele(req.file.ref);
  req.file = file_part{};
  if (req.data_buf) brelse(req.data_buf);
  req.data_buf = nullptr;
  req.data_len = 0;
}

// ---- procedures ------------------------------------------------------------------------

struct proc_info {
  bool (*decode)(nfs_call &c, xdr_in &in);  // false: garbage arguments
  void (*encode)(nfs_call &c);              // the reply body, from c.v (or c.status)
  vop op;  // the VFS operation decode prepares, or vop::count_: none (answered at once)
};

namespace {

// The largest READDIR/READDIRPLUS reply body, whatever the client asks:
// fits the kcont transport's reply buffer with room for the RPC header.
constexpr size_t READDIR_MAX = KCONT_REPLY_BUFFER - 1024;

constexpr uint32_t ATTR = 88;  // post_op_attr with attributes
constexpr size_t MNTPATHLEN = sizeof(server::mount_record::dir);

xdr_out &out_of(nfs_call &c) { return c.req->out; }
uint32_t fsid(const nfs_call &c) { return c.ex ? c.ex->id : 0; }

// The call's NFS status: a refusal before the VFS, or the VFS's result.
nfsstat3 status_of(const nfs_call &c) {
  return c.status != NFS3_OK ? c.status : errno_to_nfs(c.v.error);
}

const vattr *post_of(const vwcc &w) { return w.have_post ? &w.post : nullptr; }

// Starts the reply body with the status.
nfsstat3 begin(nfs_call &c) {
  nfsstat3 st = status_of(c);
  out_of(c).rewind(c.body_at);
  out_of(c).u32(st);
  return st;
}

// Unwraps a handle and sets up the request for its export: the mount, the
// client's squashed credential and rights.  A second handle must be on the
// same export (XDEV).  Returns false only on garbage.
bool get_fh(nfs_call &c, xdr_in &in, vfs::vfh *out) {
  bytes_view raw = in.var(NFS3_FHSIZE);
  if (!in.ok()) return false;
  if (c.status != NFS3_OK) return true;
  uint32_t id = 0;
  if ((c.status = fh_unwrap(raw, &id, out)) != NFS3_OK) return true;
  const export_entry *ex = c.exports ? c.exports->by_id(id) : nullptr;
  if (!ex) {
    c.status = NFS3ERR_STALE;
  } else if (c.ex && c.ex != ex) {
    c.status = NFS3ERR_XDEV;
  } else if (!c.ex) {
    c.ex = ex;
    c.opts = export_access(*ex, c.req->peer);
    if (!c.opts) {
      c.status = NFS3ERR_ACCES;
      return true;
    }
    c.v.fs = ex->fs;
    c.v.cred = effective_cred(c.rpc, *c.opts);
    if (!c.opts->rw) c.v.flags |= vfs::VREQ_RDONLY;
  }
  return true;
}

// A component name: copied NUL-terminated; an invalid one is refused with
// an NFS error.  filename3 has no length limit in XDR: a name of any length
// the record holds decodes, and one over NAME_MAX is NFS3ERR_NAMETOOLONG.
bool get_name(nfs_call &c, xdr_in &in, char out[vfs::VFS_NAME_MAX + 1]) {
  bytes_view n = in.var(UINT32_MAX);
  if (!in.ok()) return false;
  nfsstat3 st = NFS3_OK;
  if (n.len == 0)
    st = NFS3ERR_NOENT;
  else if (n.len > NAME_MAX)
    st = NFS3ERR_NAMETOOLONG;
  else if (std::memchr(n.data, '/', n.len) || std::memchr(n.data, '\0', n.len))
    st = NFS3ERR_ACCES;
  if (st != NFS3_OK) {
    if (c.status == NFS3_OK) c.status = st;
    return true;
  }
  std::memcpy(out, n.data, n.len);
  out[n.len] = '\0';
  return true;
}

void get_sattr(xdr_in &in, vfs::vsattr *s) {
  if ((s->set_mode = in.boolean())) s->mode = in.u32();
  if ((s->set_uid = in.boolean())) s->uid = in.u32();
  if ((s->set_gid = in.boolean())) s->gid = in.u32();
  if ((s->set_size = in.boolean())) s->size = in.u64();
  uint32_t ah = in.u32();
  if (ah == 2) {
    s->atime.tv_sec = in.u32();
    s->atime.tv_nsec = in.u32();
  }
  uint32_t mh = in.u32();
  if (mh == 2) {
    s->mtime.tv_sec = in.u32();
    s->mtime.tv_nsec = in.u32();
  }
  if (ah > 2 || mh > 2) in.fail();
  s->atime_how = uint8_t(ah);
  s->mtime_how = uint8_t(mh);
}

// Data the VFS wrote at `at` in the reply buffer, moved to where the
// encoding reached (they differ only when attributes were missing).
void place_data(nfs_call &c, size_t at, uint32_t n) {
  xdr_out &out = out_of(c);
  if (out.size() != at && at + n <= out.capacity())
    std::memmove(out.data() + out.size(), out.data() + at, n);
  out.skip(n);
  out.pad(n);
}

// Where data after `head` bytes of reply body goes, and how much fits.
uint8_t *data_at(nfs_call &c, uint32_t head, uint32_t want, uint32_t *cap) {
  xdr_out &out = out_of(c);
  size_t at = c.body_at + head;
  size_t room = out.capacity() > at + 4 ? out.capacity() - at - 4 : 0;
  *cap = uint32_t(std::min<size_t>(want, room));
  return out.data() + at;
}

// ---- the procedures: decode, then encode -----------------------------------------------

bool dec_none(nfs_call &, xdr_in &) { return true; }

void enc_null(nfs_call &c) { out_of(c).rewind(c.body_at); }  // void result

bool dec_fh(nfs_call &c, xdr_in &in) { return get_fh(c, in, &c.v.fh); }

void enc_getattr(nfs_call &c) {
  if (begin(c) == NFS3_OK) put_fattr(out_of(c), c.v.obj.post, fsid(c));
}

bool dec_setattr(nfs_call &c, xdr_in &in) {
  if (!get_fh(c, in, &c.v.fh)) return false;
  get_sattr(in, &c.v.sattr);
  if ((c.v.guard = in.boolean())) {
    c.v.guard_ctime.tv_sec = in.u32();
    c.v.guard_ctime.tv_nsec = in.u32();
  }
  return in.ok();
}

void enc_wcc(nfs_call &c) {
  begin(c);
  put_wcc(out_of(c), c.v.obj, fsid(c));
}

bool dec_dir_name(nfs_call &c, xdr_in &in) {
  return get_fh(c, in, &c.v.fh) && get_name(c, in, c.v.name);
}

void enc_lookup(nfs_call &c) {
  xdr_out &out = out_of(c);
  if (begin(c) == NFS3_OK && c.v.have_res_fh) {
    nfs_fh fh;
    fh_wrap(fsid(c), c.v.res_fh, &fh);
    out.var(fh.data, fh.len);
    put_post_op_attr(out, c.v.have_res_attr ? &c.v.res_attr : nullptr, fsid(c));
  } else if (status_of(c) == NFS3_OK) {
    out.rewind(c.body_at);
    out.u32(NFS3ERR_SERVERFAULT);
  }
  put_post_op_attr(out, post_of(c.v.obj), fsid(c));
}

bool dec_access(nfs_call &c, xdr_in &in) {
  if (!get_fh(c, in, &c.v.fh)) return false;
  c.v.access_want = in.u32();
  return in.ok();
}

void enc_access(nfs_call &c) {
  nfsstat3 st = begin(c);
  put_post_op_attr(out_of(c), post_of(c.v.obj), fsid(c));
  if (st == NFS3_OK) out_of(c).u32(c.v.access_granted);
}

bool dec_readlink(nfs_call &c, xdr_in &in) {
  if (!get_fh(c, in, &c.v.fh)) return false;
  c.v.dst = data_at(c, 4 + ATTR + 4, PATH_MAX, &c.v.dst_cap);
  return true;
}

void enc_readlink(nfs_call &c) {
  nfsstat3 st = begin(c);
  put_post_op_attr(out_of(c), post_of(c.v.obj), fsid(c));
  if (st != NFS3_OK) return;
  out_of(c).u32(c.v.link_len);
  place_data(c, c.body_at + 4 + ATTR + 4, c.v.link_len);
}

bool dec_read(nfs_call &c, xdr_in &in) {
  if (!get_fh(c, in, &c.v.fh)) return false;
  c.v.offset = in.u64();
  c.v.count = std::min(in.u32(), MAX_IO);
  if (c.req->allow_file_part) c.v.flags |= vfs::VREQ_EXTENT_OK;
  c.v.dst = data_at(c, 4 + ATTR + 12, c.v.count, &c.v.dst_cap);
  return in.ok();
}

void enc_read(nfs_call &c) {
  xdr_out &out = out_of(c);
  nfsstat3 st = begin(c);
  put_post_op_attr(out, post_of(c.v.obj), fsid(c));
  if (st != NFS3_OK) return;
  vfs::vread &rd = c.v.rd;
  out.u32(rd.n);
  out.boolean(rd.eof);
  out.u32(rd.n);
  switch (rd.where) {
    case vfs::rd_where::dst:
      place_data(c, c.body_at + 4 + ATTR + 12, rd.n);
      break;
    case vfs::rd_where::buf:  // sent from the buffer after the reply bytes
      c.req->data_buf = rd.bp;
      c.req->data_len = rd.n;
      c.req->file.pad = uint32_t(xdr_pad(rd.n));
      rd.bp = nullptr;
      break;
    case vfs::rd_where::extent:  // sent from the file (sendfile)
      c.req->file = file_part{rd.fd, rd.offset, rd.n, uint32_t(xdr_pad(rd.n)), rd.ref, rd.resident};
      rd.ref = nullptr;
      break;
    case vfs::rd_where::none:
      break;
  }
}

void put_verf(nfs_call &c) {
  uint64_t verf = c.srv->write_verf.load(std::memory_order_relaxed);
  uint8_t v[8];
  xdr_out::put32(v, uint32_t(verf >> 32));
  xdr_out::put32(v + 4, uint32_t(verf));
  out_of(c).fixed(v, 8);
}

// A write or write-back the file system failed: data acknowledged earlier
// as UNSTABLE may be lost, so the verifier changes and clients resend.
void maybe_lost_writes(nfs_call &c) {
  int e = c.v.error;
  if (c.ran && (e == EIO || e == ENOSPC || e == EDQUOT)) c.srv->new_write_verf();
}

bool dec_write(nfs_call &c, xdr_in &in) {
  if (!get_fh(c, in, &c.v.fh)) return false;
  c.v.offset = in.u64();
  uint32_t count = in.u32();
  c.stable = in.u32();
  bytes_view data = in.var(MAX_IO);
  if (!in.ok() || c.stable > FILE_SYNC) return false;
  c.v.data = data.data;
  c.v.count = std::min<uint32_t>(count, uint32_t(data.len));
  c.v.stable = vfs::stable_how(c.stable);
  return true;
}

void enc_write(nfs_call &c) {
  maybe_lost_writes(c);
  nfsstat3 st = begin(c);
  put_wcc(out_of(c), c.v.obj, fsid(c));
  if (st != NFS3_OK) return;
  out_of(c).u32(c.v.written);
  out_of(c).u32(c.stable);
  put_verf(c);
}

bool dec_create(nfs_call &c, xdr_in &in) {
  if (!dec_dir_name(c, in)) return false;
  uint32_t how = in.u32();
  if (how == 2) {
    bytes_view verf = in.fixed(8);
    if (in.ok()) std::memcpy(c.v.verf, verf.data, 8);
  } else {
    get_sattr(in, &c.v.sattr);
  }
  if (!in.ok() || how > 2) return false;
  c.v.how = vfs::create_how(how);
  return true;
}

// CREATE, MKDIR, SYMLINK, MKNOD: on success post_op_fh3, post_op_attr of
// the new object, wcc of the directory; on failure the directory's wcc.
void enc_created(nfs_call &c) {
  xdr_out &out = out_of(c);
  if (begin(c) == NFS3_OK) {
    nfs_fh fh;
    if (c.v.have_res_fh) fh_wrap(fsid(c), c.v.res_fh, &fh);
    out.boolean(c.v.have_res_fh);
    if (c.v.have_res_fh) out.var(fh.data, fh.len);
    put_post_op_attr(out, c.v.have_res_attr ? &c.v.res_attr : nullptr, fsid(c));
  }
  put_wcc(out, c.v.obj, fsid(c));
}

bool dec_mkdir(nfs_call &c, xdr_in &in) {
  if (!dec_dir_name(c, in)) return false;
  get_sattr(in, &c.v.sattr);
  return in.ok();
}

bool dec_symlink(nfs_call &c, xdr_in &in) {
  if (!dec_dir_name(c, in)) return false;
  get_sattr(in, &c.v.sattr);
  // nfspath3 has no length limit in XDR either: too long a target is
  // NFS3ERR_NAMETOOLONG, not GARBAGE_ARGS.
  bytes_view target = in.var(UINT32_MAX);
  if (in.ok() && target.len >= PATH_MAX && c.status == NFS3_OK) c.status = NFS3ERR_NAMETOOLONG;
  c.v.data = target.data;
  c.v.count = uint32_t(target.len);
  return in.ok();
}

bool dec_mknod(nfs_call &c, xdr_in &in) {
  if (!dec_dir_name(c, in)) return false;
  uint32_t type = in.u32();
  switch (type) {
    case 3:  // NF3BLK
    case 4:  // NF3CHR
      get_sattr(in, &c.v.sattr);
      c.v.rdev_major = in.u32();
      c.v.rdev_minor = in.u32();
      break;
    case 6:  // NF3SOCK
    case 7:  // NF3FIFO
      get_sattr(in, &c.v.sattr);
      break;
    case 1:
    case 2:
    case 5:
      break;  // the VFS answers BADTYPE with the directory's attributes
    default:
      return false;
  }
  c.v.mknod_type = vfs::vtype(type);
  return in.ok();
}

bool dec_rename(nfs_call &c, xdr_in &in) {
  return dec_dir_name(c, in) && get_fh(c, in, &c.v.fh2) && get_name(c, in, c.v.name2);
}

void enc_rename(nfs_call &c) {
  begin(c);
  put_wcc(out_of(c), c.v.obj, fsid(c));
  put_wcc(out_of(c), c.v.obj2, fsid(c));
}

bool dec_link(nfs_call &c, xdr_in &in) {
  return get_fh(c, in, &c.v.fh) && get_fh(c, in, &c.v.fh2) && get_name(c, in, c.v.name2);
}

void enc_link(nfs_call &c) {
  begin(c);
  put_post_op_attr(out_of(c), post_of(c.v.obj), fsid(c));
  put_wcc(out_of(c), c.v.obj2, fsid(c));
}

// READDIR and READDIRPLUS.  The entries are encoded by emit_entry as the
// VFS reads the directory, after room for the directory's attributes and
// the cookie verifier; the budget is the client's (bounded by the reply
// buffer).  The cookie verifier is always zero and never checked (clients
// differ in what they send back).
bool emit_entry(void *arg, const vfs::vdirent &e) {
  auto &c = *static_cast<nfs_call *>(arg);
  readdir_state &s = c.rds;
  xdr_out &out = out_of(c);
  size_t fixed = 8 + 4 + e.namelen + xdr_pad(e.namelen) + 8;
  size_t need = 4 + fixed;
  nfs_fh fh;
  if (c.v.plus) {
    if (e.have_fh) fh_wrap(s.fsid, e.fh, &fh);
    need += 4 + (e.have_attr ? 84 : 0) + 4 + (e.have_fh ? 4 + fh.len + xdr_pad(fh.len) : 0);
  }
  if (out.size() - (c.body_at) + need > s.limit || s.names + fixed > s.names_limit) {
    return false;
  }
  out.boolean(true);
  out.u64(e.fileid);
  out.var(e.name, e.namelen);
  out.u64(e.cookie);
  if (c.v.plus) {
    put_post_op_attr(out, e.have_attr ? &e.attr : nullptr, s.fsid);
    out.boolean(e.have_fh);
    if (e.have_fh) out.var(fh.data, fh.len);
  }
  s.names += fixed;
  s.entries++;
  return true;
}

bool dec_readdir_common(nfs_call &c, xdr_in &in, bool plus) {
  if (!get_fh(c, in, &c.v.fh)) return false;
  c.v.cookie = in.u64();
  in.fixed(8);  // cookieverf
  c.dircount = in.u32();
  c.maxcount = plus ? in.u32() : c.dircount;
  if (!in.ok()) return false;
  c.v.plus = plus;
  c.v.emit = emit_entry;
  c.v.emit_arg = &c;
  xdr_out &out = out_of(c);
  readdir_state &s = c.rds;
  s = readdir_state{};
  s.fsid = fsid(c);
  // Budget: the client's limit, bounded by READDIR_MAX (not by the
  // transport's buffer: a page is the same whichever transport carries
  // it), less the list's end.
  s.limit = std::min<size_t>({c.maxcount, READDIR_MAX, out.capacity() - c.body_at});
  s.limit = s.limit > 8 ? s.limit - 8 : 0;  // a count below 8 fits nothing: TOOSMALL
  s.names_limit = plus ? c.dircount : s.limit;
  out.rewind(c.body_at);
  out.skip(4 + ATTR + 8);  // status, attributes, verifier: written after the VFS
  return true;
}

bool dec_readdir(nfs_call &c, xdr_in &in) { return dec_readdir_common(c, in, false); }
bool dec_readdirplus(nfs_call &c, xdr_in &in) { return dec_readdir_common(c, in, true); }

void enc_readdir(nfs_call &c) {
  xdr_out &out = out_of(c);
  readdir_state &s = c.rds;
  nfsstat3 st = status_of(c);
  if (st == NFS3_OK && s.entries == 0 && !c.v.eof) st = NFS3ERR_TOOSMALL;
  if (st != NFS3_OK || !c.ran) {
    out.rewind(c.body_at);
    out.u32(st);
    put_post_op_attr(out, post_of(c.v.obj), fsid(c));
    return;
  }
  out.boolean(false);
  out.boolean(c.v.eof);
  size_t end = out.size();
  // The head, in the room left before the entries.
  uint8_t head[4 + ATTR + 8];
  xdr_out h(head, sizeof head);
  h.u32(NFS3_OK);
  put_post_op_attr(h, post_of(c.v.obj), fsid(c));
  uint8_t zero[8] = {};
  h.fixed(zero, 8);
  size_t gap = sizeof head - h.size();  // 84 when the attributes are missing
  uint8_t *base = out.data() + c.body_at;
  std::memcpy(base + gap, head, h.size());
  if (gap > 0) std::memmove(base, base + gap, end - c.body_at - gap);
  out.rewind(end - gap);
}

void enc_fsstat(nfs_call &c) {
  xdr_out &out = out_of(c);
  nfsstat3 st = begin(c);
  put_post_op_attr(out, post_of(c.v.obj), fsid(c));
  if (st != NFS3_OK) return;
  const vfs::vfsinfo &f = c.v.fsi;
  out.u64(f.tbytes);
  out.u64(f.fbytes);
  out.u64(f.abytes);
  out.u64(f.tfiles);
  out.u64(f.ffiles);
  out.u64(f.afiles);
  out.u32(0);  // invarsec
}

void enc_fsinfo(nfs_call &c) {
  xdr_out &out = out_of(c);
  nfsstat3 st = begin(c);
  put_post_op_attr(out, post_of(c.v.obj), fsid(c));
  if (st != NFS3_OK) return;
  const vfs::vfsinfo &f = c.v.fsi;
  out.u32(MAX_IO);     // rtmax
  out.u32(MAX_IO);     // rtpref
  out.u32(4096);       // rtmult
  out.u32(MAX_IO);     // wtmax
  out.u32(MAX_IO);     // wtpref
  out.u32(4096);       // wtmult
  out.u32(64 * 1024);  // dtpref
  out.u64(f.max_file_size);
  out.u32(0);  // time_delta: 1 ns
  out.u32(1);
  out.u32((f.hardlinks ? 0x1 : 0) | (f.symlinks ? 0x2 : 0) | 0x8 | (f.cansettime ? 0x10 : 0));
}

void enc_pathconf(nfs_call &c) {
  xdr_out &out = out_of(c);
  nfsstat3 st = begin(c);
  put_post_op_attr(out, post_of(c.v.obj), fsid(c));
  if (st != NFS3_OK) return;
  out.u32(c.v.fsi.link_max);
  out.u32(c.v.fsi.name_max);
  out.boolean(true);   // no_trunc
  out.boolean(true);   // chown_restricted
  out.boolean(false);  // case_insensitive
  out.boolean(true);   // case_preserving
}

bool dec_commit(nfs_call &c, xdr_in &in) {
  if (!get_fh(c, in, &c.v.fh)) return false;
  in.u64();
  in.u32();
  return in.ok();
}

void enc_commit(nfs_call &c) {
  maybe_lost_writes(c);
  nfsstat3 st = begin(c);
  put_wcc(out_of(c), c.v.obj, fsid(c));
  if (st == NFS3_OK) put_verf(c);
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

// The client's address as text, into buf (no allocation: MOUNT may run on
// a dispatcher).
void peer_host(const sockaddr_storage &p, char (&buf)[46]) {
  std::strcpy(buf, "?");
  if (p.ss_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in &>(p).sin_addr, buf, sizeof buf);
  else if (p.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6 &>(p).sin6_addr, buf, sizeof buf);
}

bool same_record(const server::mount_record &m, const char *host, bytes_view dir, bool any_dir) {
  return std::strcmp(m.host, host) == 0 &&
         (any_dir || (m.dir_len == dir.len && std::memcmp(m.dir, dir.data, dir.len) == 0));
}

// MNT: the export containing the path (longest prefix), then the rest of
// the path walked by the VFS (no symlinks, no `..`).
bool dec_mnt(nfs_call &c, xdr_in &in) {
  c.mnt_path = in.var(MNTPATHLEN);
  if (!in.ok()) return false;
  std::string_view path = c.mnt_path.str();
  const export_entry *best = nullptr;
  if (c.exports) {
    for (const auto &e : c.exports->exports) {
      std::string_view p = e.path;
      bool inside = path == p || (path.size() > p.size() && path.substr(0, p.size()) == p &&
                                  (p == "/" || path[p.size()] == '/'));
      if (inside && (!best || p.size() > best->path.size())) best = &e;
    }
  }
  if (!best || path.find('\0') != std::string_view::npos) {
    c.status = NFS3ERR_NOENT;
    return true;
  }
  c.ex = best;
  if (!export_access(*best, c.req->peer)) {
    c.status = NFS3ERR_ACCES;
    return true;
  }
  size_t skip = std::min(path.size(), best->path.size());
  c.v.fs = best->fs;
  c.v.fh = vfs::vfs_root(best->fs);
  c.v.cred = vfs::vcred{0, 0, 0, {}};  // the walk is the server's, not the client's
  c.v.data = c.mnt_path.data + skip;
  c.v.count = uint32_t(path.size() - skip);
  return true;
}

mountstat3 mount_status(const nfs_call &c) {
  if (c.status == NFS3ERR_NOENT) return MNT3ERR_NOENT;
  if (c.status != NFS3_OK) return MNT3ERR_ACCES;
  switch (c.v.error) {
    case 0:
      if (c.v.have_res_attr && c.v.res_attr.type != vfs::vtype::dir) return MNT3ERR_NOTDIR;
      return c.v.have_res_fh ? MNT3_OK : MNT3ERR_ACCES;
    case ENOENT:
      return MNT3ERR_NOENT;
    case ENOTDIR:
      return MNT3ERR_NOTDIR;
    case ENAMETOOLONG:
      return MNT3ERR_NAMETOOLONG;
    default:
      return MNT3ERR_ACCES;
  }
}

void enc_mnt(nfs_call &c) {
  xdr_out &out = out_of(c);
  out.rewind(c.body_at);
  mountstat3 st = mount_status(c);
  out.u32(st);
  if (st != MNT3_OK) {
    c.status = NFS3ERR_ACCES;  // counted as an error
    return;
  }
  nfs_fh fh;
  fh_wrap(c.ex->id, c.v.res_fh, &fh);
  out.var(fh.data, fh.len);
  out.u32(2);
  out.u32(AUTH_SYS);
  out.u32(AUTH_NONE);
  char host[46];
  peer_host(c.req->peer, host);
  server &srv = *c.srv;
  spinlock g(srv.mounts_lock);
  for (auto &m : srv.mounts)
    if (same_record(m, host, c.mnt_path, false)) return;
  if (srv.mounts.size() >= server::MAX_MOUNT_RECORDS) return;
  server::mount_record &m = srv.mounts.emplace_back();  // capacity reserved: no allocation
  std::memcpy(m.host, host, sizeof host);
  m.dir_len = uint32_t(c.mnt_path.len);
  std::memcpy(m.dir, c.mnt_path.data, c.mnt_path.len);
}

void enc_dump(nfs_call &c) {
  xdr_out &out = out_of(c);
  out.rewind(c.body_at);
  spinlock g(c.srv->mounts_lock);
  for (auto &m : c.srv->mounts) {
    out.boolean(true);
    out.str(m.host);
    out.var(m.dir, m.dir_len);
  }
  out.boolean(false);
}

bool dec_umnt(nfs_call &c, xdr_in &in) {
  c.mnt_path = in.var(MNTPATHLEN);
  return in.ok();
}

void enc_umnt(nfs_call &c) {
  out_of(c).rewind(c.body_at);
  char host[46];
  peer_host(c.req->peer, host);
  bool all = c.rpc.proc == 4;
  spinlock g(c.srv->mounts_lock);
  std::erase_if(c.srv->mounts, [&](auto &m) { return same_record(m, host, c.mnt_path, all); });
}

void enc_export(nfs_call &c) {
  xdr_out &out = out_of(c);
  out.rewind(c.body_at);
  if (c.exports) {
    for (const auto &e : c.exports->exports) {
      out.boolean(true);
      out.str(e.path);
      for (const auto &cl : e.clients) {
        out.boolean(true);
        out.str(cl.spec);
      }
      out.boolean(false);
    }
  }
  out.boolean(false);
}

}  // namespace

// ---- the tables -------------------------------------------------------------------------

constexpr vop NONE = vop::count_;

static const proc_info nfs_procs[NFS3_PROCS] = {
    {dec_none, enc_null, NONE},                    // NULL
    {dec_fh, enc_getattr, vop::getattr},           // GETATTR
    {dec_setattr, enc_wcc, vop::setattr},          // SETATTR
    {dec_dir_name, enc_lookup, vop::lookup},       // LOOKUP
    {dec_access, enc_access, vop::access},         // ACCESS
    {dec_readlink, enc_readlink, vop::readlink},   // READLINK
    {dec_read, enc_read, vop::read},               // READ
    {dec_write, enc_write, vop::write},            // WRITE
    {dec_create, enc_created, vop::create},        // CREATE
    {dec_mkdir, enc_created, vop::mkdir},          // MKDIR
    {dec_symlink, enc_created, vop::symlink},      // SYMLINK
    {dec_mknod, enc_created, vop::mknod},          // MKNOD
    {dec_dir_name, enc_wcc, vop::remove},          // REMOVE
    {dec_dir_name, enc_wcc, vop::rmdir},           // RMDIR
    {dec_rename, enc_rename, vop::rename},         // RENAME
    {dec_link, enc_link, vop::link},               // LINK
    {dec_readdir, enc_readdir, vop::readdir},      // READDIR
    {dec_readdirplus, enc_readdir, vop::readdir},  // READDIRPLUS
    {dec_fh, enc_fsstat, vop::fsstat},             // FSSTAT
    {dec_fh, enc_fsinfo, vop::fsinfo},             // FSINFO
    {dec_fh, enc_pathconf, vop::fsinfo},           // PATHCONF
    {dec_commit, enc_commit, vop::commit},         // COMMIT
};

static const proc_info mount_procs[MOUNT3_PROCS] = {
    {dec_none, enc_null, NONE},     // NULL
    {dec_mnt, enc_mnt, vop::walk},  // MNT
    {dec_none, enc_dump, NONE},     // DUMP
    {dec_umnt, enc_umnt, NONE},     // UMNT
    {dec_none, enc_umnt, NONE},     // UMNTALL
    {dec_none, enc_export, NONE},   // EXPORT
};

// ---- dispatch ------------------------------------------------------------------------------

namespace {

void count(nfs_call &c) {
  if (!c.ctr) return;
  server_stats &st = c.srv->stats;
  c.ctr->calls.fetch_add(1, std::memory_order_relaxed);
  bool nfs = c.ctr >= st.nfs && c.ctr < st.nfs + NFS3_PROCS;
  if (c.status != NFS3_OK || c.v.error != 0) {
    c.ctr->errors.fetch_add(1, std::memory_order_relaxed);
    if (nfs) {
      int i = nfs3_status_index(c.status != NFS3_OK ? uint32_t(c.status)
                                                    : uint32_t(errno_to_nfs(c.v.error)));
      if (i >= 0) st.nfs_errors[i].fetch_add(1, std::memory_order_relaxed);
    }
  } else if (c.ctr == &st.nfs[NFSPROC3_READ]) {
    st.read_bytes.fetch_add(c.v.rd.n, std::memory_order_relaxed);
  } else if (c.ctr == &st.nfs[NFSPROC3_WRITE]) {
    st.written_bytes.fetch_add(c.v.written, std::memory_order_relaxed);
  }
  if (!c.req->in_thread && !(c.ran && c.v.used_thread))
    c.ctr->no_thread.fetch_add(1, std::memory_order_relaxed);
  uint64_t ns = now_ns() - c.t0;
  c.ctr->ns.fetch_add(ns, std::memory_order_relaxed);
  c.ctr->latency[proc_latency_bucket(ns)].fetch_add(1, std::memory_order_relaxed);
}

// Encodes the reply and finishes the record.
serve_result finish(nfs_call &c) {
  request &req = *c.req;
  c.pi->encode(c);
  if (!req.out.ok()) {  // the reply did not fit: just the RPC error
    release_reply(req);
    req.out = xdr_out(req.out.data(), req.out.capacity());
    encode_accepted(req.out, c.rpc.xid, SYSTEM_ERR);
    c.srv->stats.rpc_errors.fetch_add(1, std::memory_order_relaxed);
    c.status = NFS3ERR_SERVERFAULT;
  }
  finish_record(req.out, req.data_len + req.file.len + req.file.pad);
  count(c);
  return serve_result::reply;
}

void reset(nfs_call &c, server &srv, request &req) {
  c.srv = &srv;
  c.req = &req;
  c.pi = nullptr;
  c.ctr = nullptr;
  c.exports = nullptr;
  c.ex = nullptr;
  c.opts = nullptr;
  c.status = NFS3_OK;
  c.ran = false;
  c.body_at = 0;
  c.stable = c.dircount = c.maxcount = 0;
  c.mnt_path = {};
  c.rds = readdir_state{};
  vfs::vreq_reset(&c.v);
}

}  // namespace

begin_result call_begin(nfs_call &c, server &srv, request &req) {
  reset(c, srv, req);
  c.v.arrived = req.arrived;
  c.t0 = now_ns();
  req.file = file_part{};
  req.data_buf = nullptr;
  req.data_len = 0;
  xdr_in in(req.rec, req.len);
  switch (decode_call(in, &c.rpc)) {
    case call_status::garbage:
      srv.stats.bad_records.fetch_add(1, std::memory_order_relaxed);
      return begin_result::close;
    case call_status::not_a_call:
      return begin_result::drop;
    case call_status::rpc_mismatch:
      encode_rpc_mismatch(req.out, c.rpc.xid);
      srv.stats.rpc_errors.fetch_add(1, std::memory_order_relaxed);
      finish_record(req.out);
      return begin_result::reply;
    case call_status::bad_cred:
      encode_auth_error(req.out, c.rpc.xid, AUTH_BADCRED);
      srv.stats.rpc_errors.fetch_add(1, std::memory_order_relaxed);
      finish_record(req.out);
      return begin_result::reply;
    case call_status::ok:
      break;
  }
  uint32_t prog = c.rpc.prog, proc = c.rpc.proc;
  if (prog == NFS_PROGRAM && c.rpc.vers == NFS_V3 && proc < NFS3_PROCS) {
    c.pi = &nfs_procs[proc];
    c.ctr = &srv.stats.nfs[proc];

  } else if (prog == MOUNT_PROGRAM && c.rpc.vers == MOUNT_V3 && proc < MOUNT3_PROCS) {
    c.pi = &mount_procs[proc];
    c.ctr = &srv.stats.mount[proc];

  } else {
    if (prog == NFS_PROGRAM || prog == MOUNT_PROGRAM) {
      if (c.rpc.vers == 3)
        encode_accepted(req.out, c.rpc.xid, PROC_UNAVAIL);
      else
        encode_prog_mismatch(req.out, c.rpc.xid, 3, 3);
    } else {
      encode_accepted(req.out, c.rpc.xid, PROG_UNAVAIL);
    }
    srv.stats.rpc_errors.fetch_add(1, std::memory_order_relaxed);
    finish_record(req.out);
    return begin_result::reply;
  }
  c.v.op = c.pi->op;
  c.exports = srv.exports_now();
  encode_accepted(req.out, c.rpc.xid, SUCCESS);
  c.body_at = req.out.size();
  if (!c.pi->decode(c, in)) {
    req.out = xdr_out(req.out.data(), req.out.capacity());
    encode_accepted(req.out, c.rpc.xid, GARBAGE_ARGS);
    srv.stats.rpc_errors.fetch_add(1, std::memory_order_relaxed);
    c.status = NFS3ERR_SERVERFAULT;
    finish_record(req.out);
    count(c);
    return begin_result::reply;
  }
  if (c.pi->op == NONE || c.status != NFS3_OK) return finish(c), begin_result::reply;
  return begin_result::vop;
}

serve_result call_end(nfs_call &c) {
  c.ran = true;
  serve_result r = finish(c);
  vfs::vreq_release(&c.v);  // whatever the reply did not take
  return r;
}

serve_result serve_call(server &srv, request &req) {
  // Large (a VFS request holds two names): one per thread, reused.
  thread_local std::unique_ptr<nfs_call> t_call;
  if (!t_call) t_call = std::make_unique<nfs_call>();
  nfs_call &c = *t_call;
  req.in_thread = true;
  switch (call_begin(c, srv, req)) {
    case begin_result::vop:
      vfs::vop_call(&c.v);
      return call_end(c);
    case begin_result::reply:
      return serve_result::reply;
    case begin_result::drop:
      return serve_result::drop;
    case begin_result::close:
      break;
  }
  return serve_result::close;
}

int proc_latency_bucket(uint64_t ns) {
  if (ns < 1024) return 0;
  int b = (63 - __builtin_clzll(ns)) - 9;
  return b < PROC_LATENCY_BUCKETS - 1 ? b : PROC_LATENCY_BUCKETS - 1;
}

namespace {
struct status_name {
  nfsstat3 status;
  const char *name;
};
constexpr status_name NFS3_ERRORS[NFS3_ERROR_STATUSES] = {
    {NFS3ERR_PERM, "NFS3ERR_PERM"},
    {NFS3ERR_NOENT, "NFS3ERR_NOENT"},
    {NFS3ERR_IO, "NFS3ERR_IO"},
    {NFS3ERR_NXIO, "NFS3ERR_NXIO"},
    {NFS3ERR_ACCES, "NFS3ERR_ACCES"},
    {NFS3ERR_EXIST, "NFS3ERR_EXIST"},
    {NFS3ERR_XDEV, "NFS3ERR_XDEV"},
    {NFS3ERR_NODEV, "NFS3ERR_NODEV"},
    {NFS3ERR_NOTDIR, "NFS3ERR_NOTDIR"},
    {NFS3ERR_ISDIR, "NFS3ERR_ISDIR"},
    {NFS3ERR_INVAL, "NFS3ERR_INVAL"},
    {NFS3ERR_FBIG, "NFS3ERR_FBIG"},
    {NFS3ERR_NOSPC, "NFS3ERR_NOSPC"},
    {NFS3ERR_ROFS, "NFS3ERR_ROFS"},
    {NFS3ERR_MLINK, "NFS3ERR_MLINK"},
    {NFS3ERR_NAMETOOLONG, "NFS3ERR_NAMETOOLONG"},
    {NFS3ERR_NOTEMPTY, "NFS3ERR_NOTEMPTY"},
    {NFS3ERR_DQUOT, "NFS3ERR_DQUOT"},
    {NFS3ERR_STALE, "NFS3ERR_STALE"},
    {NFS3ERR_REMOTE, "NFS3ERR_REMOTE"},
    {NFS3ERR_BADHANDLE, "NFS3ERR_BADHANDLE"},
    {NFS3ERR_NOT_SYNC, "NFS3ERR_NOT_SYNC"},
    {NFS3ERR_BAD_COOKIE, "NFS3ERR_BAD_COOKIE"},
    {NFS3ERR_NOTSUPP, "NFS3ERR_NOTSUPP"},
    {NFS3ERR_TOOSMALL, "NFS3ERR_TOOSMALL"},
    {NFS3ERR_SERVERFAULT, "NFS3ERR_SERVERFAULT"},
    {NFS3ERR_BADTYPE, "NFS3ERR_BADTYPE"},
    {NFS3ERR_JUKEBOX, "NFS3ERR_JUKEBOX"},
};
}  // namespace

int nfs3_status_index(uint32_t status) {
  for (int i = 0; i < NFS3_ERROR_STATUSES; i++)
    if (NFS3_ERRORS[i].status == status) return i;
  return -1;
}

const char *nfs3_status_name(int index) {
  return index >= 0 && index < NFS3_ERROR_STATUSES ? NFS3_ERRORS[index].name : "?";
}

std::string format_stats(server &srv) {
  std::string s;
  char line[PATH_MAX + 200];
  auto row = [&](const char *prog, const char *name, proc_counter &p) {
    uint64_t n = p.calls.load(std::memory_order_relaxed);
    if (!n) return;
    uint64_t free = p.no_thread.load(std::memory_order_relaxed);
    std::snprintf(line, sizeof line,
                  "  %-5s %-12s calls %10llu  errors %8llu  avg %8.1f us  no thread %5.1f%%\n",
                  prog, name, (unsigned long long)n,
                  (unsigned long long)p.errors.load(std::memory_order_relaxed),
                  double(p.ns.load(std::memory_order_relaxed)) / double(n) / 1000.0,
                  100.0 * double(free) / double(n));
    s += line;
  };
  for (uint32_t i = 0; i < NFS3_PROCS; i++) row("nfs", nfs3_proc_name(i), srv.stats.nfs[i]);
  for (uint32_t i = 0; i < MOUNT3_PROCS; i++) row("mount", mount3_proc_name(i), srv.stats.mount[i]);
  std::snprintf(line, sizeof line, "  rpc errors %llu, bad records %llu, connections %llu\n",
                (unsigned long long)srv.stats.rpc_errors.load(),
                (unsigned long long)srv.stats.bad_records.load(),
                (unsigned long long)srv.stats.connections.load());
  s += line;
  // Thread context per export: a hung file system shows as its share held
  // and requests waiting.
  if (const export_table *t = srv.exports_now()) {
    for (const export_entry &e : t->exports) {
      if (!e.fs) continue;
      vfs::vfs_stats v = vfs::vfs_get_stats(e.fs);
      if (v.thread_share) {  // lanes: not the threads model
        std::snprintf(line, sizeof line,
                      "  export %s: thread context %u of %u, %u waiting (%llu waited)\n",
                      e.path.c_str(), v.thread_running, v.thread_share, v.thread_waiting,
                      (unsigned long long)v.thread_waits);
        s += line;
      }
      if (v.attr_shared + v.attr_read) {
        std::snprintf(line, sizeof line,
                      "  export %s: attributes shared %llu, read %llu (operations that change "
                      "nothing)\n",
                      e.path.c_str(), (unsigned long long)v.attr_shared,
                      (unsigned long long)v.attr_read);
        s += line;
      }
    }
  }
  return s;
}

}  // namespace kc::nfs
