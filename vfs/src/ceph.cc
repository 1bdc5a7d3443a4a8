// SPDX-License-Identifier: BSD-2-Clause
// ceph.cc -- the CephFS back end: a subtree of a Ceph file system, through
// libcephfs's low-level (ceph_ll_*) interface.
//
// Model: one mount is one libcephfs client (ceph_create .. ceph_mount) of
// one file system (fsname=, the cluster's default otherwise) with its root
// at `path=`.  A handle is the object's identity in the cluster, not in this
// process: a tag, the file system's id (fscid), the inode number and the
// snapshot id -- the same bytes from every kcont-nfsd in front of that file
// system, and after a restart, when vget resolves them again with
// ceph_ll_lookup_inode (the MDS answers for inodes this client never saw).
// A handle carries a MAC under a key kept with the export (an extended
// attribute of its root, made by the first server to mount it), so a
// handle this export did not make -- forged, or another export's -- is
// ESTALE; vget also walks a directory's `..` up to the export's root and
// refuses one that was moved elsewhere (a file cannot be walked up: `..`
// of a file needs search permission on the file itself).  A vnode holds a reference
// on the client's Inode and, from the first READ or WRITE on, one file
// handle (Fh) opened read-write as root: data access is decided here, from
// mode bits, as on local exports (the owner may always read and write; the
// client takes no POSIX ACLs: client_acl_type is cleared, so the mode bits
// are the whole decision in libcephfs as well).
//
// Identity: every call carries the caller's credential as a UserPerm (one
// per lane thread, remade only when the credential changes), so the back
// end declares VBC_OWN_CREDENTIALS and the VFS switches no thread's
// fsuid.  Root squashing and anonymous ids are applied by the server
// before a request gets here, as on local exports; vfs_set_single_identity
// does not apply (a UserPerm needs no privilege).  libcephfs checks
// permissions itself (lookups, creates, removes, setattr); ACCESS, READ and
// WRITE are decided from mode bits here (mode_allows, data_access_allowed).
//
// Contexts: every libcephfs call takes the client's lock and may wait for
// the MDS or an OSD, and allocates -- none of it may happen in interrupt
// context.  `start` therefore answers only a walk that stays where it
// starts (MNT of an export root, from the handle the request holds: no
// call at all) and sends everything else to thread context, where the
// mount's thread share bounds what a stalled cluster can hold: a SIGSTOPped
// OSD blocks this mount's lanes, never another export's.  A call's time is
// mostly a wait for an OSD or the MDS, so throughput follows the calls in
// flight (measured, 8 KiB random READs with 128 outstanding: 4 in flight
// 7.0-7.4k READs/s, 8: 8.1k, 28: 10.5-10.7k; docs/benchmarks.md): the back
// end declares VBC_REMOTE, and while its calls wait (REMOTE_WAIT_US on
// average) its share is every lane but the others' mount_share, of 16 lanes
// per CPU; an export may set its own with threads=.  Pacific's client
// has no non-blocking data calls; Reef's ceph_ll_nonblocking_readv_writev
// (a completion callback on the client's own thread) would slot in as a
// VB_PENDING read and write in `start`, with VBC_FOREIGN_COMPLETION, and
// nothing above the VFS would change.  `reclaim` may be called in
// interrupt context (the last reference of a forgotten vnode going with a
// request): what it would release there -- ceph_ll_close may flush,
// ceph_ll_put takes the client's lock -- is queued on the mount and released
// by its next thread-context request, or at unmount.
//
// Semantics as RFC 1813 asks and the local back end does: an EXCLUSIVE
// create keeps the verifier in atime/mtime; a WRITE's stable levels and
// COMMIT go through ceph_ll_fsync / ceph_ll_sync_inode; READDIR cookies are
// the directory stream's own positions (ceph_telldir: stable across calls,
// so a client resumes a large directory where it left off); special files
// are never opened for I/O (READ/WRITE EINVAL, CREATE over one EEXIST);
// errors map to the errno the server turns into nfsstat3 (ETIMEDOUT: try
// again later, JUKEBOX; a client cut off by the cluster: EIO).
//
// Memory: libcephfs caches inodes (client_cache_size) and file data
// (client_oc_size): both are set from the mount's options, so the server's
// memory is bounded by --max-memory plus oc_size plus libcephfs's cached
// inodes (vfs(9), BACKENDS).  The client's in-memory debug log is quieted
// (0/0) for every subsystem the conf file leaves at Ceph's default: it
// costs a formatted message and a wake-up of libcephfs's log thread per
// call even when nothing is printed.
//
// Locking: per request, but the vnode's Fh (installed once with a
// compare-and-swap; a racing opener closes its own) and the mount's queue
// of deferred releases (a lock-free stack: pushed with a compare-and-swap,
// taken whole with an exchange).
#include <cephfs/libcephfs.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "internal.h"
#include "kcont/error_text.h"

extern "C" int kcont_ceph_lookup_vino(struct ceph_mount_info *cm, uint64_t ino, uint64_t snapid,
                                      struct Inode **out);

namespace kc::vfs {

namespace {

// The handle: a tag and version, then fscid, ino and snapid (little-endian),
// then MAC_LEN bytes of HMAC-SHA256 over those under the export's key.
constexpr uint8_t FH_TAG[4] = {'c', 'e', 'p', '1'};
constexpr uint32_t FH_BODY = 4 + 8 + 8 + 8, MAC_LEN = 16, FH_LEN = FH_BODY + MAC_LEN;
static_assert(FH_LEN <= VFS_FHSIZE);
constexpr uint32_t KEY_LEN = 32;
// Where the export's handle key lives: an extended attribute of its root.
constexpr const char *KEY_XATTR = "user.kcont.handle_key";
constexpr unsigned WANT_ATTRS = CEPH_STATX_BASIC_STATS;
// The snapshot id of the live file system (CEPH_NOSNAP, which libcephfs.h
// defines for C only).
constexpr uint64_t LIVE_SNAPID = uint64_t(-2);
// The parents vget walks up to prove a handle is below the export's root.
constexpr int MAX_DEPTH = 4096;

struct ceph_vnode {
  Inode *in = nullptr;
  std::atomic<Fh *> fh{nullptr};
  ceph_vnode *next_release = nullptr;  // on the mount's deferred releases
};

struct ceph_mount_state {
  ceph_mount_info *cm = nullptr;
  UserPerm *root_perms = nullptr;
  Inode *root = nullptr;
  uint64_t root_ino = 0;
  bool whole = false;  // the export is the file system's root: every inode is below it
  int64_t fscid = 0;
  uint8_t key[KEY_LEN] = {};                    // the export's handle key (KEY_XATTR)
  std::string spec;                             // for messages: "fsname:path"
  std::atomic<ceph_vnode *> releases{nullptr};  // deferred from interrupt context
};

ceph_mount_state *cms(const mount *fs) { return static_cast<ceph_mount_state *>(fs->priv); }
ceph_vnode *cv(const vnode *vp) { return static_cast<ceph_vnode *>(vp->priv); }

// A libcephfs result (negative errno) as the errno the server maps.
int ceph_error(int rc) {
  int e = rc < 0 ? -rc : rc;
  switch (e) {
    case ETIMEDOUT:  // an OSD or MDS that did not answer in time: try later
      return EAGAIN;
    case ESHUTDOWN:  // this client was blocklisted (evicted) by the cluster
    case ENOTCONN:   // or is no longer mounted
    case ENODATA:
      return EIO;
    case EBADF:  // the vnode's file handle is read-only
      return EACCES;
    default:
      return e;
  }
}

void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = uint8_t(v >> (8 * i));
}
// The verifier's halves, big-endian, as the local back end reads them.
uint32_t get32(const uint8_t *p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

// The MAC of a handle's body under the export's key.
void handle_mac(const ceph_mount_state &m, const uint8_t *body, uint8_t *mac) {
  uint8_t full[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  HMAC(EVP_sha256(), m.key, int(KEY_LEN), body, FH_BODY, full, &n);
  std::memcpy(mac, full, MAC_LEN);
}

// The handle of an object whose statx is stx.  ceph_statx's stx_dev is
// the inode's snapshot id (CEPH_NOSNAP for the live file system).
void make_fh(const ceph_mount_state &m, const struct ceph_statx &stx, vfh *out) {
  out->len = FH_LEN;
  std::memcpy(out->data, FH_TAG, 4);
  put64(out->data + 4, uint64_t(m.fscid));
  put64(out->data + 12, stx.stx_ino);
  put64(out->data + 20, uint64_t(stx.stx_dev));
  handle_mac(m, out->data, out->data + FH_BODY);
}

// Whether fh is a handle this export made (tag, file system, MAC).
bool handle_authentic(const ceph_mount_state &m, const vfh &fh) {
  if (fh.len != FH_LEN || std::memcmp(fh.data, FH_TAG, 4) != 0) return false;
  if (int64_t(get64(fh.data + 4)) != m.fscid) return false;
  uint8_t mac[MAC_LEN];
  handle_mac(m, fh.data, mac);
  return CRYPTO_memcmp(mac, fh.data + FH_BODY, MAC_LEN) == 0;
}

void to_vattr(const struct ceph_statx &s, vattr *a) {
  a->type = vtype_of_mode(s.stx_mode);
  a->mode = s.stx_mode & 07777;
  a->nlink = s.stx_nlink;
  a->uid = s.stx_uid;
  a->gid = s.stx_gid;
  a->size = s.stx_size;
  a->used = s.stx_blocks * 512;
  a->rdev_major = major(s.stx_rdev);
  a->rdev_minor = minor(s.stx_rdev);
  a->fileid = s.stx_ino;
  a->atime = s.stx_atime;
  a->mtime = s.stx_mtime;
  a->ctime = s.stx_ctime;
}

// ---- identities ----------------------------------------------------------------

bool same_cred(const vcred &a, const vcred &b) {
  return a.uid == b.uid && a.gid == b.gid && a.ngids == b.ngids &&
         std::equal(a.gids, a.gids + a.ngids, b.gids);
}

// The calling thread's UserPerm for c: remade only when the credential
// changes (a lane mostly serves one client's identity after another's).
struct thread_perm {
  vcred cred;
  UserPerm *perm = nullptr;
  ~thread_perm() {
    if (perm) ceph_userperm_destroy(perm);
  }
};
thread_local thread_perm t_perm;

const UserPerm *perm_of(const vcred &c) {
  if (t_perm.perm && same_cred(t_perm.cred, c)) return t_perm.perm;
  if (t_perm.perm) ceph_userperm_destroy(t_perm.perm);
  gid_t gids[VFS_MAX_GIDS];
  for (uint32_t i = 0; i < c.ngids; i++) gids[i] = gid_t(c.gids[i]);
  t_perm.perm = ceph_userperm_new(uid_t(c.uid), gid_t(c.gid), int(c.ngids), gids);
  t_perm.cred = c;
  return t_perm.perm;
}

// ---- vnodes ----------------------------------------------------------------------

void release_now(ceph_mount_info *cm, ceph_vnode *v) {
  if (Fh *fh = v->fh.load(std::memory_order_acquire)) ceph_ll_close(cm, fh);
  if (v->in) ceph_ll_put(cm, v->in);
  delete v;
}

// Releases what reclaim queued from interrupt context (one load when
// nothing is queued).  Thread context.
void release_deferred(ceph_mount_state *m) {
  if (!m->releases.load(std::memory_order_relaxed)) return;
  ceph_vnode *list = m->releases.exchange(nullptr, std::memory_order_acquire);
  while (list) {
    ceph_vnode *next = list->next_release;
    release_now(m->cm, list);
    list = next;
  }
}

// The vnode's file handle, opened read-write as root on first use (read-
// only where writing is refused); nullptr with *err on failure.
Fh *file_of(vreq *r, int *err) {
  ceph_vnode *v = cv(r->vp);
  if (Fh *fh = v->fh.load(std::memory_order_acquire)) return fh;
  ceph_mount_state *m = cms(r->fs);
  Fh *fh = nullptr;
  int rc = ceph_ll_open(m->cm, v->in, O_RDWR, &fh, m->root_perms);
  if (rc == -EROFS || rc == -EACCES || rc == -EPERM)
    rc = ceph_ll_open(m->cm, v->in, O_RDONLY, &fh, m->root_perms);
  if (rc < 0) {
    *err = ceph_error(rc);
    return nullptr;
  }
  Fh *expected = nullptr;
  if (!v->fh.compare_exchange_strong(expected, fh, std::memory_order_acq_rel)) {
    ceph_ll_close(m->cm, fh);  // another lane opened it first
    return expected;
  }
  return fh;
}

// ---- attributes ------------------------------------------------------------------

int stat_inode(vreq *r, Inode *in, vattr *a) {
  struct ceph_statx stx;
  int rc = ceph_ll_getattr(cms(r->fs)->cm, in, &stx, WANT_ATTRS, 0, cms(r->fs)->root_perms);
  if (rc < 0) return ceph_error(rc);
  to_vattr(stx, a);
  return 0;
}
void pre(vreq *r) { r->obj.have_pre = stat_inode(r, cv(r->vp)->in, &r->obj.pre) == 0; }
void post(vreq *r) { r->obj.have_post = stat_inode(r, cv(r->vp)->in, &r->obj.post) == 0; }
void pre2(vreq *r) { r->obj2.have_pre = stat_inode(r, cv(r->vp2)->in, &r->obj2.pre) == 0; }
void post2(vreq *r) { r->obj2.have_post = stat_inode(r, cv(r->vp2)->in, &r->obj2.post) == 0; }

// The result of a name operation: the object's handle and attributes from
// its statx; the Inode reference the call returned (if any) is dropped
// (vget takes its own when the handle is used).
void result_of(vreq *r, Inode *in, const struct ceph_statx &stx) {
  make_fh(*cms(r->fs), stx, &r->res_fh);
  to_vattr(stx, &r->res_attr);
  r->have_res_fh = r->have_res_attr = true;
  if (in) ceph_ll_put(cms(r->fs)->cm, in);
}

// Sets what s asks on in, as the caller (libcephfs checks: only the owner
// may chmod or set times, only root may give a file away).
int apply_sattr(vreq *r, Inode *in, const vsattr &s) {
  struct ceph_statx stx {};
  int mask = 0;
  if (s.set_mode) {
    stx.stx_mode = uint16_t(s.mode & 07777);
    mask |= CEPH_SETATTR_MODE;
  }
  if (s.set_uid) {
    stx.stx_uid = s.uid;
    mask |= CEPH_SETATTR_UID;
  }
  if (s.set_gid) {
    stx.stx_gid = s.gid;
    mask |= CEPH_SETATTR_GID;
  }
  if (s.set_size) {
    stx.stx_size = s.size;
    mask |= CEPH_SETATTR_SIZE;
  }
  if (s.atime_how == 2) {
    stx.stx_atime = s.atime;
    mask |= CEPH_SETATTR_ATIME;
  } else if (s.atime_how == 1) {
    mask |= CEPH_SETATTR_ATIME | CEPH_SETATTR_ATIME_NOW;
  }
  if (s.mtime_how == 2) {
    stx.stx_mtime = s.mtime;
    mask |= CEPH_SETATTR_MTIME;
  } else if (s.mtime_how == 1) {
    mask |= CEPH_SETATTR_MTIME | CEPH_SETATTR_MTIME_NOW;
  }
  if (mask == 0) return 0;
  int rc = ceph_ll_setattr(cms(r->fs)->cm, in, &stx, mask, perm_of(r->cred));
  return rc < 0 ? ceph_error(rc) : 0;
}

// ---- thread-context operations ------------------------------------------------

void do_getattr(vreq *r) {
  r->error = stat_inode(r, cv(r->vp)->in, &r->obj.post);
  r->obj.have_post = r->error == 0;
}

void do_setattr(vreq *r) {
  pre(r);
  const vsattr &s = r->sattr;
  if (r->error == 0 && r->guard && r->obj.have_pre &&
      !timespec_eq(r->obj.pre.ctime, r->guard_ctime))
    r->error = VFS_NOT_SYNC;
  if (r->error == 0 && s.set_size && r->vp->type != vtype::reg)
    r->error = r->vp->type == vtype::dir ? EISDIR : EINVAL;
  if (r->error == 0) r->error = apply_sattr(r, cv(r->vp)->in, s);
  post(r);
}

// A lookup of one name in the directory `dir`: `.` is the directory itself
// and `..` of the export's root is the root (never outside the tree); *out
// is then nullptr (no reference taken), else the Inode found, referenced.
int lookup_name(vreq *r, Inode *dir, bool dir_is_root, const char *name, Inode **out,
                struct ceph_statx *stx) {
  ceph_mount_state *m = cms(r->fs);
  *out = nullptr;
  if (std::strcmp(name, ".") == 0 || (std::strcmp(name, "..") == 0 && dir_is_root)) {
    int rc = ceph_ll_getattr(m->cm, dir, stx, WANT_ATTRS, 0, m->root_perms);
    return rc < 0 ? ceph_error(rc) : 0;
  }
  int rc =
      ceph_ll_lookup(m->cm, dir, name, out, stx, WANT_ATTRS, AT_SYMLINK_NOFOLLOW, perm_of(r->cred));
  return rc < 0 ? ceph_error(rc) : 0;
}

void do_lookup(vreq *r) {
  if (r->vp->type != vtype::dir) r->error = ENOTDIR;
  if (r->error == 0) {
    Inode *in = nullptr;
    struct ceph_statx stx;
    r->error = lookup_name(r, cv(r->vp)->in, r->vp->is_root, r->name, &in, &stx);
    if (r->error == 0) result_of(r, in, stx);
  }
  post(r);
}

uint32_t access_bits(vreq *r, const vattr &a) {
  bool dir = a.type == vtype::dir;
  uint32_t ok = 0;
  if (mode_allows(a, r->cred, 4)) ok |= VACCESS_READ;
  if (mode_allows(a, r->cred, 2) && !(r->flags & VREQ_RDONLY))
    ok |= VACCESS_MODIFY | VACCESS_EXTEND | (dir ? uint32_t(VACCESS_DELETE) : 0u);
  if (mode_allows(a, r->cred, 1)) ok |= dir ? VACCESS_LOOKUP : VACCESS_EXECUTE;
  return ok & r->access_want;
}

void do_access(vreq *r) {
  r->error = stat_inode(r, cv(r->vp)->in, &r->obj.post);
  r->obj.have_post = r->error == 0;
  if (r->error == 0) r->access_granted = access_bits(r, r->obj.post);
}

void do_readlink(vreq *r) {
  if (r->vp->type != vtype::lnk) {
    r->error = EINVAL;
  } else {
    int n = ceph_ll_readlink(cms(r->fs)->cm, cv(r->vp)->in, reinterpret_cast<char *>(r->dst),
                             r->dst_cap, perm_of(r->cred));
    if (n < 0)
      r->error = ceph_error(n);
    else if (uint32_t(n) >= r->dst_cap)
      r->error = ENAMETOOLONG;
    else
      r->link_len = uint32_t(n);
  }
  post(r);
}

// READ: attributes taken just before the data (as the local back end's).
void do_read(vreq *r) {
  r->error = data_type_error(r->vp);
  vattr &a = r->obj.post;
  if (r->error == 0) r->error = stat_inode(r, cv(r->vp)->in, &a);
  r->obj.have_post = r->error == 0;
  if (r->error == 0 && !data_access_allowed(a, r->cred, 4)) r->error = EACCES;
  uint32_t n = 0;
  if (r->error == 0) {
    n = r->offset >= a.size ? 0 : uint32_t(std::min<uint64_t>(r->count, a.size - r->offset));
    if (n > 0 && !r->dst) r->error = EINVAL;
  }
  if (r->error == 0 && n > 0) {
    Fh *fh = file_of(r, &r->error);
    // More than the caller's memory holds: a buffer of the large pool, if
    // one is free (else the read is short and the client asks again).
    buf *bp = nullptr;
    bufpool *large = vfs_large_bufpool();
    if (fh && n > r->dst_cap && n <= VFS_LARGE_BUF_MAX && large) bp = buf_get(large);
    if (!bp) n = std::min(n, r->dst_cap);
    char *into = bp ? bp->data : reinterpret_cast<char *>(r->dst);
    int got = fh ? ceph_ll_read(cms(r->fs)->cm, fh, int64_t(r->offset), n, into) : 0;
    if (got < 0) {
      r->error = ceph_error(got);
    } else if (fh) {
      r->rd.where = bp ? rd_where::buf : rd_where::dst;
      r->rd.n = uint32_t(got);
      if (bp) bp->done = uint32_t(got);
      r->rd.bp = std::exchange(bp, nullptr);
    }
    if (bp) brelse(bp);
  }
  if (r->error && r->vp->type != vtype::reg) post(r);
  r->rd.eof = r->rd.n < n || r->offset + r->rd.n >= (r->obj.have_post ? a.size : 0);
}

// A write by anyone but root clears setuid, and setgid where group
// execute makes it one (the kernel's rule for a writer without
// CAP_FSETID); the vnode's handle writes as root, so it is done here.
void kill_suid(vreq *r, const vattr &before) {
  uint32_t kill = S_ISUID | ((before.mode & S_IXGRP) ? S_ISGID : 0u);
  if (r->cred.uid == 0 || !(before.mode & kill)) return;
  struct ceph_statx stx {};
  stx.stx_mode = uint16_t(before.mode & ~kill & 07777);
  ceph_mount_state *m = cms(r->fs);
  ceph_ll_setattr(m->cm, cv(r->vp)->in, &stx, CEPH_SETATTR_MODE, m->root_perms);
}

void do_write(vreq *r) {
  pre(r);
  if (r->error == 0) r->error = data_type_error(r->vp);
  if (r->error == 0 && !r->obj.have_pre) r->error = EIO;
  if (r->error == 0 && !data_access_allowed(r->obj.pre, r->cred, 2)) r->error = EACCES;
  if (r->error == 0) {
    Fh *fh = file_of(r, &r->error);
    ceph_mount_state *m = cms(r->fs);
    int n = fh ? ceph_ll_write(m->cm, fh, int64_t(r->offset), r->count,
                               reinterpret_cast<const char *>(r->data))
               : 0;
    if (n < 0) {
      r->error = ceph_error(n);
    } else if (fh) {
      r->written = uint32_t(n);
      if (r->stable != stable_how::unstable) {
        int rc = ceph_ll_fsync(m->cm, fh, r->stable == stable_how::data_sync);
        if (rc < 0) r->error = ceph_error(rc);
      }
      kill_suid(r, r->obj.pre);
    }
  }
  post(r);
}

// CREATE: a new file made with O_EXCL (nothing that was there is reached);
// an UNCHECKED create of an existing regular file changes only its size,
// anything else there is EEXIST (never opened); EXCLUSIVE keeps the
// verifier in atime/mtime so that the client's retry is recognised.
void do_create(vreq *r) {
  pre(r);
  if (r->error == 0 && r->vp->type != vtype::dir) r->error = ENOTDIR;
  if (r->error != 0) {
    post(r);
    return;
  }
  ceph_mount_state *m = cms(r->fs);
  Inode *dir = cv(r->vp)->in;
  const vsattr &s = r->sattr;
  const bool excl = r->how == create_how::exclusive;
  const mode_t mode = excl ? 0600 : s.set_mode ? (s.mode & 07777) : 0644;
  const uint32_t verf_a = get32(r->verf), verf_m = get32(r->verf + 4);
  Inode *in = nullptr;
  Fh *fh = nullptr;
  struct ceph_statx stx;
  int rc = ceph_ll_create(m->cm, dir, r->name, mode, O_CREAT | O_EXCL | O_RDWR, &in, &fh, &stx,
                          WANT_ATTRS, 0, perm_of(r->cred));
  if (fh) ceph_ll_close(m->cm, fh);
  if (rc == 0) {
    vsattr rest;
    if (excl) {
      rest.atime_how = rest.mtime_how = 2;
      rest.atime = timespec{time_t(verf_a), 0};
      rest.mtime = timespec{time_t(verf_m), 0};
    } else {
      rest = s;
      rest.set_mode = false;  // given to the create
    }
    r->error = apply_sattr(r, in, rest);
    if (r->error == 0) {
      rc = ceph_ll_getattr(m->cm, in, &stx, WANT_ATTRS, 0, m->root_perms);
      if (rc < 0) r->error = ceph_error(rc);
    }
  } else if (rc == -EEXIST && r->how != create_how::guarded) {
    r->error = lookup_name(r, dir, false, r->name, &in, &stx);
    if (r->error == 0 && vtype_of_mode(stx.stx_mode) != vtype::reg) {
      r->error = EEXIST;  // not a regular file: refused, as knfsd does
    } else if (r->error == 0 && excl) {
      if (uint32_t(stx.stx_atime.tv_sec) != verf_a || uint32_t(stx.stx_mtime.tv_sec) != verf_m)
        r->error = EEXIST;  // not the retry of our own exclusive create
    } else if (r->error == 0 && s.set_size) {
      vsattr size_only;
      size_only.set_size = true;
      size_only.size = s.size;
      r->error = apply_sattr(r, in, size_only);
      rc = r->error == 0 ? ceph_ll_getattr(m->cm, in, &stx, WANT_ATTRS, 0, m->root_perms) : 0;
      if (rc < 0) r->error = ceph_error(rc);
    }
  } else {
    r->error = ceph_error(rc);
  }
  if (r->error == 0)
    result_of(r, in, stx);
  else if (in)
    ceph_ll_put(m->cm, in);
  post(r);
}

// Applies what is left of s (the mode went to the call that made `in`)
// and reads the attributes again into *stx when anything was set.
int finish_new(vreq *r, Inode *in, const vsattr &s, struct ceph_statx *stx) {
  vsattr rest = s;
  rest.set_mode = false;
  if (!rest.set_uid && !rest.set_gid && !rest.set_size && !rest.atime_how && !rest.mtime_how)
    return 0;
  if (int e = apply_sattr(r, in, rest)) return e;
  ceph_mount_state *m = cms(r->fs);
  int rc = ceph_ll_getattr(m->cm, in, stx, WANT_ATTRS, 0, m->root_perms);
  return rc < 0 ? ceph_error(rc) : 0;
}

// MKDIR, SYMLINK and MKNOD: the object is made by one call as the caller,
// then given what is left of the attributes asked for.
void made(vreq *r, int rc, Inode *in, struct ceph_statx *stx, const vsattr *rest) {
  if (rc < 0) {
    r->error = ceph_error(rc);
  } else if (rest && (r->error = finish_new(r, in, *rest, stx)) != 0) {
    ceph_ll_put(cms(r->fs)->cm, in);
  } else {
    result_of(r, in, *stx);
  }
}

void do_mkdir(vreq *r) {
  pre(r);
  if (r->error == 0 && r->vp->type != vtype::dir) r->error = ENOTDIR;
  if (r->error == 0) {
    const vsattr &s = r->sattr;
    const mode_t mode = s.set_mode ? (s.mode & 07777) : 0755;
    Inode *in = nullptr;
    struct ceph_statx stx;
    int rc = ceph_ll_mkdir(cms(r->fs)->cm, cv(r->vp)->in, r->name, mode, &in, &stx, WANT_ATTRS, 0,
                           perm_of(r->cred));
    made(r, rc, in, &stx, &s);
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
    Inode *in = nullptr;
    struct ceph_statx stx;
    int rc = ceph_ll_symlink(cms(r->fs)->cm, cv(r->vp)->in, r->name, t, &in, &stx, WANT_ATTRS, 0,
                             perm_of(r->cred));
    made(r, rc, in, &stx, nullptr);
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
    Inode *in = nullptr;
    struct ceph_statx stx;
    int rc = ceph_ll_mknod(cms(r->fs)->cm, cv(r->vp)->in, r->name, mode,
                           makedev(r->rdev_major, r->rdev_minor), &in, &stx, WANT_ATTRS, 0,
                           perm_of(r->cred));
    made(r, rc, in, &stx, nullptr);
  }
  post(r);
}

// The handle of dir/name, if it has one now (to forget it once the name
// is gone).
bool handle_of_name(vreq *r, Inode *dir, const char *name, vfh *out) {
  ceph_mount_state *m = cms(r->fs);
  Inode *in = nullptr;
  struct ceph_statx stx;
  if (ceph_ll_lookup(m->cm, dir, name, &in, &stx, CEPH_STATX_INO, AT_SYMLINK_NOFOLLOW,
                     m->root_perms) < 0)
    return false;
  make_fh(*m, stx, out);
  ceph_ll_put(m->cm, in);
  return true;
}

void do_remove(vreq *r, bool rmdir) {
  pre(r);
  if (r->error == 0 && r->vp->type != vtype::dir) r->error = ENOTDIR;
  if (r->error == 0 && rmdir && std::strcmp(r->name, ".") == 0) r->error = EINVAL;
  if (r->error == 0 && rmdir && std::strcmp(r->name, "..") == 0) r->error = ENOTEMPTY;
  if (r->error == 0) {
    ceph_mount_state *m = cms(r->fs);
    Inode *dir = cv(r->vp)->in;
    vfh victim;
    bool known = handle_of_name(r, dir, r->name, &victim);
    int rc = rmdir ? ceph_ll_rmdir(m->cm, dir, r->name, perm_of(r->cred))
                   : ceph_ll_unlink(m->cm, dir, r->name, perm_of(r->cred));
    if (rc < 0)
      r->error = ceph_error(rc);
    else if (known)
      vnode_forget(r->fs, victim);
  }
  post(r);
}

void do_rename(vreq *r) {
  pre(r);
  pre2(r);
  if (r->error == 0 && (r->vp->type != vtype::dir || r->vp2->type != vtype::dir))
    r->error = ENOTDIR;
  if (r->error == 0) {
    vfh replaced;
    bool known = handle_of_name(r, cv(r->vp2)->in, r->name2, &replaced);
    int rc = ceph_ll_rename(cms(r->fs)->cm, cv(r->vp)->in, r->name, cv(r->vp2)->in, r->name2,
                            perm_of(r->cred));
    if (rc < 0)
      r->error = ceph_error(rc);
    else if (known)
      vnode_forget(r->fs, replaced);
  }
  post(r);
  post2(r);
}

void do_link(vreq *r) {
  pre2(r);
  if (r->error == 0 && r->vp2->type != vtype::dir) r->error = ENOTDIR;
  if (r->error == 0 && r->vp->type == vtype::dir) r->error = EISDIR;
  if (r->error == 0) {
    int rc =
        ceph_ll_link(cms(r->fs)->cm, cv(r->vp)->in, cv(r->vp2)->in, r->name2, perm_of(r->cred));
    if (rc < 0) r->error = ceph_error(rc);
  }
  post(r);
  post2(r);
}

// READDIR(PLUS): a directory stream opened as the caller (it needs read
// permission), positioned at the cookie, read entry by entry; an entry's
// cookie is the stream's position after it.  Attributes of the entries
// come with the MDS's reply (AT_STATX_DONT_SYNC: no call per entry).
void do_readdir(vreq *r) {
  if (r->vp->type != vtype::dir) r->error = ENOTDIR;
  ceph_mount_state *m = cms(r->fs);
  ceph_dir_result *dirp = nullptr;
  if (r->error == 0) {
    int rc = ceph_ll_opendir(m->cm, cv(r->vp)->in, &dirp, perm_of(r->cred));
    if (rc < 0)
      r->error = ceph_error(rc);
    else if (r->cookie != 0)
      ceph_seekdir(m->cm, dirp, int64_t(r->cookie));
  }
  post(r);
  if (r->error == 0 && !r->obj.have_post) r->error = EIO;
  while (r->error == 0) {
    struct dirent de;
    struct ceph_statx stx;
    int rc = ceph_readdirplus_r(m->cm, dirp, &de, &stx, r->plus ? WANT_ATTRS : CEPH_STATX_INO,
                                AT_STATX_DONT_SYNC | AT_SYMLINK_NOFOLLOW, nullptr);
    if (rc < 0) {
      r->error = ceph_error(rc);
      break;
    }
    if (rc == 0) {
      r->eof = true;
      break;
    }
    vdirent e;
    bool dotdot_root = r->vp->is_root && std::strcmp(de.d_name, "..") == 0;
    e.fileid = dotdot_root ? r->obj.post.fileid : de.d_ino;
    e.name = de.d_name;
    e.namelen = uint32_t(std::strlen(de.d_name));
    e.cookie = uint64_t(ceph_telldir(m->cm, dirp));
    if (r->plus && !dotdot_root) {
      to_vattr(stx, &e.attr);
      make_fh(*m, stx, &e.fh);
      e.have_attr = e.have_fh = true;
    }
    if (!r->emit(r->emit_arg, e)) break;
  }
  if (dirp) ceph_ll_releasedir(m->cm, dirp);
}

void do_fsstat(vreq *r) {
  struct statvfs v;
  int rc = ceph_ll_statfs(cms(r->fs)->cm, cv(r->vp)->in, &v);
  if (rc < 0) {
    r->error = ceph_error(rc);
  } else {
    uint64_t f = v.f_frsize;
    r->fsi.tbytes = v.f_blocks * f;
    r->fsi.fbytes = v.f_bfree * f;
    r->fsi.abytes = v.f_bavail * f;
    // CephFS has no inode table: it reports the files in use and "no
    // limit" (-1) free; NFS wants tfiles >= ffiles >= afiles.
    const uint64_t free_files = v.f_ffree == fsfilcnt_t(-1) ? (uint64_t(1) << 40) : v.f_ffree;
    r->fsi.tfiles = v.f_files + free_files;
    r->fsi.ffiles = r->fsi.afiles = free_files;
  }
  post(r);
}

void do_fsinfo(vreq *r) {
  r->fsi.link_max = 65000;
  r->fsi.name_max = VFS_NAME_MAX;
  r->fsi.max_file_size = uint64_t(1) << 40;  // Ceph's default max_file_size
  post(r);
}

void do_commit(vreq *r) {
  pre(r);
  if (r->vp->type != vtype::reg && r->vp->type != vtype::dir) r->error = EINVAL;
  if (r->error == 0) {
    int rc = ceph_ll_sync_inode(cms(r->fs)->cm, cv(r->vp)->in, 0);
    if (rc < 0) r->error = ceph_error(rc);
  }
  post(r);
}

// WALK: a path below the directory r->fh names, one lookup per component,
// none followed if it is a symlink, `..` refused.
void do_walk(vreq *r) {
  ceph_mount_state *m = cms(r->fs);
  std::string_view path(reinterpret_cast<const char *>(r->data), r->data ? r->count : 0);
  if (path.find('\0') != std::string_view::npos) r->error = ENOENT;
  Inode *cur = cv(r->vp)->in;
  Inode *held = nullptr;  // cur, when a lookup here referenced it
  struct ceph_statx stx;
  int rc = ceph_ll_getattr(m->cm, cur, &stx, WANT_ATTRS, 0, m->root_perms);
  if (rc < 0) r->error = ceph_error(rc);
  size_t pos = 0;
  while (r->error == 0 && pos <= path.size()) {
    size_t slash = std::min(path.find('/', pos), path.size());
    std::string comp(path.substr(pos, slash - pos));
    pos = slash + 1;
    if (comp.empty() || comp == ".") continue;
    if (vtype_of_mode(stx.stx_mode) != vtype::dir) {
      r->error = ENOTDIR;
    } else if (comp == "..") {
      r->error = EACCES;
    } else if (comp.size() > VFS_NAME_MAX) {
      r->error = ENAMETOOLONG;
    } else {
      Inode *next = nullptr;
      rc = ceph_ll_lookup(m->cm, cur, comp.c_str(), &next, &stx, WANT_ATTRS, AT_SYMLINK_NOFOLLOW,
                          perm_of(r->cred));
      if (rc < 0) {
        r->error = (rc == -ENOENT || rc == -ENOTDIR) ? -rc : EACCES;
      } else {
        if (held) ceph_ll_put(m->cm, held);
        cur = held = next;
      }
    }
  }
  if (r->error == 0) {
    result_of(r, held, stx);  // drops held
  } else if (held) {
    ceph_ll_put(m->cm, held);
  }
}

// ---- interrupt context ---------------------------------------------------------

// Only MNT of the root answers here (from the handle the request holds:
// no libcephfs call), so that it answers even while the cluster stalls;
// everything else is thread context.
int ceph_start(vreq *r) {
  if (r->op != vop::walk || !walk_stays(r)) return VB_BLOCK;
  r->res_fh = r->fh;
  r->have_res_fh = true;
  return VB_DONE;
}

// ---- backend entries -------------------------------------------------------------

// Whether `in` (ino) is the export's root or below it: walks `..` up.
// Thread context.  0, ESTALE (elsewhere), or another errno.
int below_root(ceph_mount_state *m, Inode *in, uint64_t ino) {
  if (m->whole || ino == m->root_ino) return 0;
  Inode *cur = in, *held = nullptr;
  int e = ESTALE;
  for (int depth = 0; depth < MAX_DEPTH; depth++) {
    Inode *parent = nullptr;
    struct ceph_statx stx;
    int rc = ceph_ll_lookup(m->cm, cur, "..", &parent, &stx, CEPH_STATX_INO, 0, m->root_perms);
    if (rc < 0) {
      e = rc == -ENOENT ? ESTALE : ceph_error(rc);
      break;
    }
    const bool stuck = parent == cur;  // `..` of the file system's root
    if (held) ceph_ll_put(m->cm, held);
    cur = held = parent;
    if (stx.stx_ino == m->root_ino) {
      e = 0;
      break;
    }
    if (stuck) break;
  }
  if (held) ceph_ll_put(m->cm, held);
  return e;
}

int ceph_vget(mount *fs, const vfh &fh, vnode *vp) {
  ceph_mount_state *m = cms(fs);
  release_deferred(m);
  if (fh.len != FH_LEN || std::memcmp(fh.data, FH_TAG, 4) != 0) return VFS_BADHANDLE;
  if (!handle_authentic(*m, fh)) return ESTALE;  // another export's, or forged
  const uint64_t ino = get64(fh.data + 12), snapid = get64(fh.data + 20);
  Inode *in = nullptr;
  int rc = kcont_ceph_lookup_vino(m->cm, ino, snapid, &in);
  if (rc < 0) return rc == -ENOENT || rc == -ESTALE || rc == -EINVAL ? ESTALE : ceph_error(rc);
  struct ceph_statx stx;
  rc = ceph_ll_getattr(m->cm, in, &stx, WANT_ATTRS, 0, m->root_perms);
  int e = rc < 0 ? ceph_error(rc) : stx.stx_nlink == 0 ? ESTALE : 0;
  if (e == 0 && vtype_of_mode(stx.stx_mode) == vtype::dir) e = below_root(m, in, ino);
  if (e != 0) {
    ceph_ll_put(m->cm, in);
    return e == ENOENT ? ESTALE : e;
  }
  auto *v = new ceph_vnode;
  v->in = in;
  vp->priv = v;
  vp->type = vtype_of_mode(stx.stx_mode);
  vp->is_root = ino == m->root_ino && snapid == LIVE_SNAPID;
  return 0;
}

void ceph_reclaim(vnode *vp) {
  ceph_vnode *v = cv(vp);
  vp->priv = nullptr;
  if (!v) return;
  ceph_mount_state *m = cms(vp->fs);
  if (kcont_in_interrupt()) {  // no library call here: the next request releases it
    ceph_vnode *head = m->releases.load(std::memory_order_relaxed);
    do {
      v->next_release = head;
    } while (!m->releases.compare_exchange_weak(head, v, std::memory_order_release,
                                                std::memory_order_relaxed));
    return;
  }
  release_now(m->cm, v);
}

constexpr auto ceph_vops = [] {
  vop_vector<> v;
  v.set(vop::getattr, do_getattr).set(vop::setattr, do_setattr).set(vop::lookup, do_lookup);
  v.set(vop::access, do_access).set(vop::readlink, do_readlink).set(vop::read, do_read);
  v.set(vop::write, do_write).set(vop::create, do_create).set(vop::mkdir, do_mkdir);
  v.set(vop::symlink, do_symlink).set(vop::mknod, do_mknod);
  v.set(vop::remove, [](vreq *r) { do_remove(r, false); });
  v.set(vop::rmdir, [](vreq *r) { do_remove(r, true); });
  v.set(vop::rename, do_rename).set(vop::link, do_link).set(vop::readdir, do_readdir);
  v.set(vop::fsstat, do_fsstat).set(vop::fsinfo, do_fsinfo).set(vop::commit, do_commit);
  v.set(vop::walk, do_walk);
  return v;
}();
static_assert(ceph_vops.complete());

void ceph_run(vreq *r) {
  release_deferred(cms(r->fs));
  if (r->error != 0) {  // refused already (EROFS): the attributes it reports
    post(r);
    if (r->op == vop::rename || r->op == vop::link) post2(r);
    return;
  }
  ceph_vops.call(r);
}

void shut_down(ceph_mount_state *m) {
  if (m->root) ceph_ll_put(m->cm, m->root);
  if (m->root_perms) ceph_userperm_destroy(m->root_perms);
  if (m->cm) {
    ceph_unmount(m->cm);
    ceph_release(m->cm);
  }
  delete m;
}

void ceph_unmount_fs(mount *fs) {
  ceph_mount_state *m = cms(fs);
  release_deferred(m);
  shut_down(m);
  fs->priv = nullptr;
}

const vfs_backend ceph_backend = {"ceph",
                                  ceph_vget,
                                  ceph_reclaim,
                                  ceph_start,
                                  ceph_run,
                                  ceph_unmount_fs,
                                  VBC_OWN_CREDENTIALS | VBC_REMOTE};

// Reads the export's handle key from its root, or makes one and stores it
// there (XATTR_CREATE: of two servers mounting at once, the second reads
// the first's).  Every server in front of the export then makes and
// accepts the same handles.  0 or a libcephfs result.
int load_key(ceph_mount_state *m) {
  for (int attempt = 0; attempt < 2; attempt++) {
    int n = ceph_ll_getxattr(m->cm, m->root, KEY_XATTR, m->key, KEY_LEN, m->root_perms);
    if (n == int(KEY_LEN)) return 0;
    if (n >= 0) return -EINVAL;  // something else wrote it
    if (n != -ENODATA) return n;
    uint8_t fresh[KEY_LEN];
    if (getrandom(fresh, sizeof fresh, 0) != ssize_t(sizeof fresh)) return -errno;
    int rc =
        ceph_ll_setxattr(m->cm, m->root, KEY_XATTR, fresh, KEY_LEN, XATTR_CREATE, m->root_perms);
    if (rc == 0) {
      std::memcpy(m->key, fresh, KEY_LEN);
      return 0;
    }
    if (rc != -EEXIST) return rc;
  }
  return -EAGAIN;
}

// The device key of a file system (vfs_set_device), from its identity.
uint64_t key_of(const std::string &s) {
  return fnv1a(reinterpret_cast<const uint8_t *>(s.data()), s.size()) |
         (uint64_t(1) << 63);  // never a real device number's
}

bool set_conf(ceph_mount_info *cm, const char *name, const std::string &value, std::string *err) {
  int rc = ceph_conf_set(cm, name, value.c_str());
  if (rc < 0) *err = std::string("ceph: ") + name + "=" + value + ": " + error_text(-rc);
  return rc >= 0;
}

// The debug subsystems a libcephfs client writes to.  Ceph gathers their
// messages up to the second level of `debug_X = LOG/GATHER` in memory, for
// a crash report, even when it prints none: a 0/5 client formats a message
// and wakes its log thread several times per READ (measured: 6-15 us and
// ~1.7 context switches per 8 KiB READ on this back end's lanes).
constexpr const char *CLIENT_LOG_SUBSYS[] = {
    "debug_client", "debug_objectcacher", "debug_objecter",    "debug_ms",
    "debug_monc",   "debug_auth",         "debug_finisher",    "debug_context",
    "debug_buffer", "debug_timer",        "debug_filer",       "debug_striper",
    "debug_asok",   "debug_throttle",     "debug_perfcounter", "debug_crypto",
};
constexpr size_t N_LOG_SUBSYS = sizeof CLIENT_LOG_SUBSYS / sizeof CLIENT_LOG_SUBSYS[0];
using log_levels = std::array<std::array<char, 32>, N_LOG_SUBSYS>;

// The client's current debug levels, before or after its conf is read.
log_levels read_log_levels(ceph_mount_info *cm) {
  log_levels v{};
  for (size_t i = 0; i < N_LOG_SUBSYS; i++)
    if (ceph_conf_get(cm, CLIENT_LOG_SUBSYS[i], v[i].data(), v[i].size() - 1) < 0) v[i][0] = 0;
  return v;
}

// Quiets (0/0) every subsystem whose level the conf file left at Ceph's
// default (`before`); a level the file sets is the operator's and stays.
bool quiet_client_log(ceph_mount_info *cm, const log_levels &before, std::string *err) {
  const log_levels now = read_log_levels(cm);
  for (size_t i = 0; i < N_LOG_SUBSYS; i++)
    if (std::strcmp(now[i].data(), before[i].data()) == 0 && now[i][0] &&
        !set_conf(cm, CLIENT_LOG_SUBSYS[i], "0/0", err))
      return false;
  return true;
}

}  // namespace

// vfs_mount's "ceph" (vfs(9), BACKENDS).
mount *ceph_mount_options(const vfs_options &opts, std::string *err) {
  std::string conf, id, fsname, path = "/";
  uint64_t cache = 4096, oc_size = 64 << 20, timeout = 30;
  if (vfs_options_unknown(opts, {"conf", "id", "fsname", "path", "cache", "oc_size", "timeout"},
                          "ceph", err) ||
      !vfs_option_string(opts, "conf", &conf, false, err) ||
      !vfs_option_string(opts, "id", &id, false, err) ||
      !vfs_option_string(opts, "fsname", &fsname, false, err) ||
      !vfs_option_string(opts, "path", &path, false, err) ||
      !vfs_option_size(opts, "cache", &cache, false, err) ||
      !vfs_option_size(opts, "oc_size", &oc_size, false, err) ||
      !vfs_option_size(opts, "timeout", &timeout, false, err))
    return nullptr;
  if (path.empty() || path[0] != '/') {
    *err = "ceph: path=" + path + ": must be absolute within the file system";
    return nullptr;
  }
  if (cache == 0 || timeout == 0) {
    *err = "ceph: cache= and timeout= must be positive";
    return nullptr;
  }
  auto *m = new ceph_mount_state;
  m->spec = (fsname.empty() ? std::string("(default)") : fsname) + ":" + path;
  m->whole = path.find_first_not_of('/') == std::string::npos;
  // *err says what failed and why (rc: a libcephfs result; 0 when *err
  // already holds the reason).
  auto fail = [&](const std::string &what, int rc) -> mount * {
    if (rc != 0) *err = "ceph " + m->spec + ": " + what + ": " + error_text(-rc);
    shut_down(m);
    return nullptr;
  };
  int rc = ceph_create(&m->cm, id.empty() ? nullptr : id.c_str());
  if (rc < 0) {
    m->cm = nullptr;
    return fail("ceph_create", rc);
  }
  const log_levels default_log = read_log_levels(m->cm);
  rc = ceph_conf_read_file(m->cm, conf.empty() ? nullptr : conf.c_str());
  if (rc < 0)
    return fail("reading " + (conf.empty() ? std::string("the default ceph.conf") : conf), rc);
  if (!quiet_client_log(m->cm, default_log, err)) return fail("", 0);
  // The client's caches are this server's memory: bounded from the options.
  // POSIX ACLs off: mode bits are then the whole permission decision, in
  // libcephfs as in this back end's ACCESS, READ and WRITE.
  if (!set_conf(m->cm, "client_cache_size", std::to_string(std::max<uint64_t>(cache * 2, 1024)),
                err) ||
      !set_conf(m->cm, "client_oc_size", std::to_string(oc_size), err) ||
      !set_conf(m->cm, "client_oc_max_dirty", std::to_string(oc_size / 2), err) ||
      !set_conf(m->cm, "client_acl_type", "", err) ||
      !set_conf(m->cm, "client_mount_timeout", std::to_string(timeout), err))
    return fail("", 0);
  rc = ceph_init(m->cm);
  if (rc < 0) return fail("ceph_init", rc);
  // The session of this server's previous run (same instance, same file
  // system and path), if the MDS still has it, is ended now instead of
  // after the MDS's session timeout: its capabilities would hold the
  // export's objects -- the root among them -- until then.
  if (std::string inst = vfs_instance(); !inst.empty()) {
    const std::string uuid = inst + "|" + fsname + ":" + path;
    rc = ceph_start_reclaim(m->cm, uuid.c_str(), CEPH_RECLAIM_RESET);
    if (rc < 0 && rc != -ENOENT && rc != -EOPNOTSUPP) return fail("reclaiming " + uuid, rc);
    if (rc == 0) ceph_finish_reclaim(m->cm);
    ceph_set_uuid(m->cm, uuid.c_str());
  }
  if (!fsname.empty() && (rc = ceph_select_filesystem(m->cm, fsname.c_str())) < 0)
    return fail("selecting the file system", rc);
  rc = ceph_mount(m->cm, path.c_str());
  if (rc < 0) return fail("mounting (is the cluster up, and the path there?)", rc);
  m->root_perms = ceph_userperm_new(0, 0, 0, nullptr);
  rc = ceph_ll_lookup_root(m->cm, &m->root);
  struct ceph_statx stx;
  if (rc == 0) rc = ceph_ll_getattr(m->cm, m->root, &stx, WANT_ATTRS, 0, m->root_perms);
  if (rc < 0) return fail("the root", rc);
  m->root_ino = stx.stx_ino;
  m->fscid = ceph_get_fs_cid(m->cm);
  if (m->fscid < 0) return fail("the file system's id", int(m->fscid));
  if ((rc = load_key(m)) < 0)
    return fail(std::string("the handle key (") + KEY_XATTR + " of the export's root)", rc);

  mount *fs = vfs_alloc(&ceph_backend, size_t(cache));
  fs->priv = m;
  make_fh(*m, stx, &fs->root);
  char fsid[64] = {};
  ceph_conf_get(m->cm, "fsid", fsid, sizeof fsid - 1);
  char mon[256] = {};
  ceph_conf_get(m->cm, "mon_host", mon, sizeof mon - 1);
  vfs_set_device(fs, key_of(std::string(fsid) + "/" + mon + "/" + std::to_string(m->fscid)));
  return fs;
}

}  // namespace kc::vfs

// The module's entry (KCONT_VFS_MODULE_ENTRY).
extern "C" __attribute__((visibility("default"))) const kc::vfs::vfs_fstype *kcont_vfs_module_v1() {
  static const kc::vfs::vfs_fstype type = {"ceph", kc::vfs::ceph_mount_options};
  return &type;
}
