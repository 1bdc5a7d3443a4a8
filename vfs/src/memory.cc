// SPDX-License-Identifier: BSD-2-Clause
// memory.cc -- the in-memory backend: a tree of nodes in this process.
//
// Model: every object is a node -- a regular file (its bytes in a vector),
// a directory (its entries), a symlink (its target) or a special file (blk,
// chr, sock, fifo: attributes and rdev only, no data) -- with the
// attributes a local file system would keep (mode, owner, group, times from
// the real-time clock -- a reproducible mount stamps its fixed `at`
// instead).  A node has a 64-bit id, never reused in a mount, which is also
// its fileid; a handle is that id and the mount's 32-bit generation (odd,
// drawn at mount time from the clock and the mount's address, so a handle
// from an earlier mount is stale rather than naming whatever has the same
// id now; a reproducible mount uses `generation | 1` instead, so its
// handles are the same every time).  The mount keeps a table from id to
// node of the nodes in the tree: vget resolves a handle there, so once an
// object's last name is removed its handle is stale (ESTALE) although the
// node lives on while a vnode references it -- the open-but-unlinked file
// of Unix -- and is freed by the last reclaim.
//
// Directories keep their entries in insertion order: each entry gets the
// next number of a per-directory sequence, and that number is the entry's
// readdir cookie ("." is 1, ".." 2, the rest from 3).  Removing an entry
// shifts no other entry's cookie, a rename gives the entry a new number (it
// is a new entry of the target directory), and a cookie whose entry is gone
// resumes at the next higher number.  A cookie the directory never issued
// is VFS_BAD_COOKIE.
//
// Rules follow Linux's (the local backend's kernel): permission from mode
// bits through mode_allows (READ and WRITE through data_access_allowed: the
// owner may always read and write the data, as knfsd allows), search permission to look a name up,
// write and search to add or remove one, the sticky bit on directories, setuid/setgid cleared by a
// write or truncate of a caller without root and by any chown, errors in
// the order the kernel finds them (EEXIST before EACCES when a name exists,
// EISDIR for removing a directory, EINVAL for moving a directory below
// itself, ...).  The new attributes of a SETATTR (and of a new object) are
// all checked before any is applied: an object is made with all of them or
// not at all.  An unchecked CREATE of an existing regular file applies only
// the size, as knfsd does; an exclusive one keeps the client's verifier in
// the node, so its retry finds its own file.  The total of regular files'
// bytes may not exceed max_bytes (ENOSPC).  No object is ever opened:
// READ/WRITE of a special file is EINVAL and CREATE over one EEXIST, as in
// the local backend.
//
// What completes in interrupt context (start): every operation that only
// reads the tree or changes it in place -- getattr, lookup, access,
// readlink, read (copied into a buffer of the VFS's pool, or into the
// caller's memory), readdir, fsstat, fsinfo, commit, walk, a write that
// does not grow its file, a setattr that does not grow it, and a modifying
// request already refused with EROFS.  What allocates or frees (a write or
// setattr that grows a file, and every operation that adds or removes a
// name: create, mkdir, symlink, mknod, remove, rmdir, rename, link) answers
// VB_BLOCK and runs in thread context (run, which also performs every
// operation for vop_call).
//
// Locking: one spinlock per mount protects the whole tree, the id table and
// the byte count; every operation holds it from its first look to its last
// result, so each is atomic.  The VFS core's functions called under it take
// no lock of their own (vfs_bufpool, mode_allows, data_access_allowed,
// vop_modifies, timespec_eq); the only other spinlock taken under it is the
// buffer pool's (buf_get, in a read); vnode_forget, which takes the cache's
// lock and may reclaim (mem_reclaim takes this one), is called after it is
// dropped.  Thread-context operations allocate under it (bounded by the one
// operation).  readdir calls the caller's emit under it, in interrupt
// context when started there (emit only encodes into the caller's memory:
// it must neither block nor allocate).  A node freed by a reclaim in
// interrupt context is put on the mount's graveyard and deleted by the next
// thread-context operation (or the unmount): interrupt context never frees.
#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <map>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "internal.h"
#include "kcont/spinlock.h"

namespace kc::vfs {

namespace {

constexpr uint32_t FH_LEN = 12;  // id (8 bytes), generation (4)
constexpr uint32_t MEM_LINK_MAX = 65000;
constexpr uint64_t DIR_SIZE = 4096;
constexpr uint64_t FILES_MAX = uint64_t(1) << 32;
constexpr uint64_t SEQ_DOT = 1, SEQ_DOTDOT = 2, SEQ_FIRST = 3;
constexpr size_t CACHE = 1024;  // vnodes

struct mnode;

struct mslot {
  uint64_t seq = 0;
  mnode *node = nullptr;
};

using name_map = std::map<std::string, mslot, std::less<>>;

struct mnode {
  uint64_t id = 0;
  vattr a;                    // all but nlink, size and used, which are derived
  uint32_t links = 0;         // directory entries naming it (a directory: 0 or 1)
  uint32_t subdirs = 0;       // a directory: entries that are directories
  int refs = 0;               // vnodes holding it
  bool linked = true;         // in the tree: its handle resolves
  mnode *parent = nullptr;    // a directory: the one holding it (the root: itself)
  std::vector<uint8_t> data;  // reg
  std::string target;         // lnk
  name_map by_name;           // dir: name -> entry
  std::map<uint64_t, name_map::iterator> by_seq;  // dir: the entries in cookie order
  uint64_t next_seq = SEQ_FIRST;
  bool has_verf = false;  // made by an exclusive CREATE with verf
  uint8_t verf[8] = {};
  mnode *dead_next = nullptr;  // on the graveyard
};

struct mem_mount {
  std::atomic<uint32_t> lock{0};
  uint64_t max_bytes = 0;
  uint64_t used = 0;   // bytes of regular files (unlinked ones until freed)
  uint64_t nodes = 0;  // live nodes
  uint64_t next_id = 1;
  uint32_t gen = 0;
  std::optional<timespec> fixed_time;  // reproducible mounts: every stamp
  mnode *root = nullptr;
  std::unordered_map<uint64_t, mnode *> table;  // the nodes in the tree, by id
  mnode *graveyard = nullptr;                   // freed in interrupt context: delete later
};

mem_mount *mm(const mount *fs) { return static_cast<mem_mount *>(fs->priv); }
mnode *nd(const vnode *vp) { return static_cast<mnode *>(vp->priv); }

// What an operation leaves for after the lock: a handle to forget in the
// vnode cache, a node to delete.
struct aftermath {
  vfh forget;
  mnode *dead = nullptr;
};

// The time to stamp: the clock, or the mount's fixed time (reproducible).
timespec now_ts(const mem_mount &m) {
  if (m.fixed_time) return *m.fixed_time;
  timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return t;
}

void put_be(uint8_t *p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--, v >>= 8) p[i] = uint8_t(v);
}

uint64_t get_be(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = v << 8 | p[i];
  return v;
}

void make_fh(const mem_mount &m, const mnode *n, vfh *out) {
  put_be(out->data, n->id, 8);
  put_be(out->data + 8, m.gen, 4);
  out->len = FH_LEN;
}

bool is_dir(const mnode *n) { return n->a.type == vtype::dir; }
bool is_reg(const mnode *n) { return n->a.type == vtype::reg; }

void attr_of(const mnode *n, vattr *out) {
  *out = n->a;
  switch (n->a.type) {
    case vtype::reg:
      out->nlink = n->links;
      out->size = out->used = n->data.size();
      break;
    case vtype::dir:
      out->nlink = n->linked ? 2 + n->subdirs : 0;
      out->size = out->used = DIR_SIZE;
      break;
    case vtype::lnk:
      out->nlink = n->links;
      out->size = out->used = n->target.size();
      break;
    default:
      out->nlink = n->links;
      out->size = out->used = 0;
  }
}

vattr attr(const mnode *n) {
  vattr a;
  attr_of(n, &a);
  return a;
}

void pre(vreq *r) {
  attr_of(nd(r->vp), &r->obj.pre);
  r->obj.have_pre = true;
}
void post(vreq *r) {
  attr_of(nd(r->vp), &r->obj.post);
  r->obj.have_post = true;
}
void pre2(vreq *r) {
  attr_of(nd(r->vp2), &r->obj2.pre);
  r->obj2.have_pre = true;
}
void post2(vreq *r) {
  attr_of(nd(r->vp2), &r->obj2.post);
  r->obj2.have_post = true;
}

bool in_group(const vcred &c, uint32_t gid) {
  if (c.gid == gid) return true;
  for (uint32_t i = 0; i < c.ngids && i < VFS_MAX_GIDS; i++)
    if (c.gids[i] == gid) return true;
  return false;
}

bool is_dot(std::string_view s) { return s == "." || s == ".."; }

// The object dir/name names ("." the directory, ".." its parent), or
// nullptr.
mnode *find(const mnode *d, std::string_view name) {
  if (name == ".") return const_cast<mnode *>(d);
  if (name == "..") return d->parent;  // the root's is itself; a removed directory's none
  auto it = d->by_name.find(name);
  return it == d->by_name.end() ? nullptr : it->second.node;
}

// Whether `a` is d or one of d's ancestors.
bool ancestor_or_self(const mnode *a, const mnode *d) {
  for (const mnode *p = d; p; p = p->parent == p ? nullptr : p->parent)
    if (p == a) return true;
  return false;
}

// The sticky bit of directory d forbids c to remove or replace n.
bool sticky_denies(const mnode *d, const mnode *n, const vcred &c) {
  return (d->a.mode & S_ISVTX) && c.uid != 0 && c.uid != n->a.uid && c.uid != d->a.uid;
}

// A write, truncate or chown clears setuid, and setgid when group-execute
// is set (otherwise setgid marks mandatory locking), as Linux does.
void kill_suid(mnode *n) {
  if (!is_reg(n)) return;
  n->a.mode &= ~uint32_t(S_ISUID);
  if (n->a.mode & S_IXGRP) n->a.mode &= ~uint32_t(S_ISGID);
}

void touch(const mem_mount &m, mnode *n, bool mtime) {
  timespec t = now_ts(m);
  n->a.ctime = t;
  if (mtime) n->a.mtime = t;
}

// ---- the tree ------------------------------------------------------------------

mnode *new_node(mem_mount &m, vtype t, uint32_t mode, const mnode *dir, const vcred &c) {
  auto *n = new mnode;
  n->id = m.next_id++;
  n->a.type = t;
  n->a.fileid = n->id;
  n->a.uid = c.uid;
  // A setgid directory hands its group down (and, to directories, the bit).
  bool inherit = dir && (dir->a.mode & S_ISGID);
  n->a.gid = inherit ? dir->a.gid : c.gid;
  if (inherit && t == vtype::dir) mode |= S_ISGID;
  if ((mode & S_ISGID) && t != vtype::dir && c.uid != 0 && !in_group(c, n->a.gid))
    mode &= ~uint32_t(S_ISGID);
  n->a.mode = mode & 07777;
  n->a.atime = n->a.mtime = n->a.ctime = now_ts(m);
  return n;
}

// Enters a node made by new_node into the id table (its handle resolves
// from now on) and counts it; dir_insert gives it its name.
void publish(mem_mount &m, mnode *n) {
  m.table.emplace(n->id, n);
  m.nodes++;
}

void dir_insert(mnode *d, std::string_view name, mnode *n) {
  uint64_t seq = d->next_seq++;
  auto it = d->by_name.emplace(std::string(name), mslot{seq, n}).first;
  d->by_seq.emplace(seq, it);
  n->links++;
  if (is_dir(n)) {
    n->parent = d;
    d->subdirs++;
  }
}

void dir_erase(mnode *d, name_map::iterator it) {
  mnode *n = it->second.node;
  d->by_seq.erase(it->second.seq);
  d->by_name.erase(it);
  n->links--;
  if (is_dir(n)) d->subdirs--;
}

uint64_t bytes_of(const mnode *n) { return is_reg(n) ? n->data.size() : 0; }

// Takes a node that lost its last name out of the tree: its handle goes
// stale; it is freed now if no vnode holds it, else by the last reclaim.
void unlinked(mem_mount &m, mnode *n, aftermath *out) {
  if (n->links > 0) return;
  n->linked = false;
  if (is_dir(n)) n->parent = nullptr;
  m.table.erase(n->id);
  make_fh(m, n, &out->forget);
  if (n->refs == 0) {
    m.used -= bytes_of(n);
    m.nodes--;
    out->dead = n;
  }
}

void resize(mem_mount &m, mnode *n, uint64_t size) {
  m.used = m.used - n->data.size() + size;
  n->data.resize(size);
}

// ENOSPC unless a regular file n may grow to `size` bytes.
int room_for(const mem_mount &m, const mnode *n, uint64_t size) {
  if (size <= n->data.size()) return 0;
  return size - n->data.size() > m.max_bytes - m.used ? ENOSPC : 0;
}

// ---- attributes ----------------------------------------------------------------

// Whether c may set s on n (all of it: nothing is applied unless all may).
int check_sattr(const mem_mount &m, const mnode *n, const vsattr &s, const vcred &c) {
  vattr a = attr(n);
  bool root = c.uid == 0, owner = c.uid == a.uid;
  if (s.set_uid && !root && (!owner || s.uid != a.uid)) return EPERM;
  if (s.set_gid && !root && (!owner || (s.gid != a.gid && !in_group(c, s.gid)))) return EPERM;
  if (s.set_mode && !root && !owner) return EPERM;
  if ((s.atime_how == 2 || s.mtime_how == 2) && !root && !owner) return EPERM;
  if ((s.atime_how == 1 || s.mtime_how == 1) && !owner && !mode_allows(a, c, 2)) return EACCES;
  if (s.set_size) {
    if (!is_reg(n)) return is_dir(n) ? EISDIR : EINVAL;
    if (!mode_allows(a, c, 2)) return EACCES;
    if (int e = room_for(m, n, s.size)) return e;
  }
  return 0;
}

// Applies s (checked) to n, in the order chown, chmod, truncate, times.
void apply_sattr(mem_mount &m, mnode *n, const vsattr &s, const vcred &c) {
  timespec t = now_ts(m);
  bool changed = false;
  if (s.set_uid || s.set_gid) {
    if (s.set_uid) n->a.uid = s.uid;
    if (s.set_gid) n->a.gid = s.gid;
    kill_suid(n);
    changed = true;
  }
  if (s.set_mode) {
    uint32_t mode = s.mode & 07777;
    if (c.uid != 0 && !in_group(c, n->a.gid)) mode &= ~uint32_t(S_ISGID);
    n->a.mode = mode;
    changed = true;
  }
  if (s.set_size) {
    resize(m, n, s.size);
    n->a.mtime = t;
    if (c.uid != 0) kill_suid(n);
    changed = true;
  }
  if (s.atime_how) n->a.atime = s.atime_how == 2 ? s.atime : t;
  if (s.mtime_how) n->a.mtime = s.mtime_how == 2 ? s.mtime : t;
  if (changed || s.atime_how || s.mtime_how) n->a.ctime = t;
}

// What is left of s for an object just made with its mode: a size only for
// a regular file (knfsd drops it for the others).
vsattr rest_of(const vsattr &s, vtype t) {
  vsattr rest = s;
  rest.set_mode = false;
  if (t != vtype::reg) rest.set_size = false;
  return rest;
}

// ---- operations (the mount's lock held) -----------------------------------------

// The result of a name operation: the object's handle and attributes.
void result(const mem_mount &m, vreq *r, const mnode *n) {
  make_fh(m, n, &r->res_fh);
  attr_of(n, &r->res_attr);
  r->have_res_fh = r->have_res_attr = true;
}

// A modifying operation refused before it started (EROFS): the attributes
// it reports.
void refused(vreq *r) {
  if (r->op != vop::link) pre(r);
  post(r);
  if (r->op == vop::rename || r->op == vop::link) {
    pre2(r);
    post2(r);
  }
}

void op_setattr(mem_mount &m, vreq *r) {
  mnode *n = nd(r->vp);
  pre(r);
  if (r->guard && !timespec_eq(r->obj.pre.ctime, r->guard_ctime)) r->error = VFS_NOT_SYNC;
  if (r->error == 0 && r->sattr.set_size && !is_reg(n)) r->error = is_dir(n) ? EISDIR : EINVAL;
  if (r->error == 0) r->error = check_sattr(m, n, r->sattr, r->cred);
  if (r->error == 0) apply_sattr(m, n, r->sattr, r->cred);
  post(r);
}

void op_lookup(const mem_mount &m, vreq *r) {
  mnode *d = nd(r->vp);
  if (!is_dir(d)) {
    r->error = ENOTDIR;
  } else if (!mode_allows(attr(d), r->cred, 1)) {
    r->error = EACCES;
  } else if (mnode *n = find(d, r->name)) {
    result(m, r, n);
  } else {
    r->error = ENOENT;
  }
  post(r);
}

// As the local backend: ACCESS bits from the read, write and execute
// decisions; a read-only caller gets no modifying bit.
void op_access(vreq *r) {
  post(r);
  const vattr &a = r->obj.post;
  bool dir = a.type == vtype::dir;
  uint32_t ok = 0;
  if (mode_allows(a, r->cred, 4)) ok |= VACCESS_READ;
  if (mode_allows(a, r->cred, 2) && !(r->flags & VREQ_RDONLY))
    ok |= VACCESS_MODIFY | VACCESS_EXTEND | (dir ? uint32_t(VACCESS_DELETE) : 0u);
  if (mode_allows(a, r->cred, 1)) ok |= dir ? VACCESS_LOOKUP : VACCESS_EXECUTE;
  r->access_granted = ok & r->access_want;
}

void op_readlink(vreq *r) {
  const mnode *n = nd(r->vp);
  if (n->a.type != vtype::lnk) {
    r->error = EINVAL;
  } else if (!r->dst || n->target.size() > r->dst_cap) {
    r->error = ENAMETOOLONG;
  } else {
    std::memcpy(r->dst, n->target.data(), n->target.size());
    r->link_len = uint32_t(n->target.size());
  }
  post(r);
}

int data_type_error(const mnode *n) {
  if (is_dir(n)) return EISDIR;
  if (!is_reg(n)) return EINVAL;
  return 0;
}

// Interrupt context copies into a buffer of the VFS's pool when there is
// one (as the local backend's bread); otherwise, and in thread context,
// into the caller's memory, short to dst_cap.
void op_read(vreq *r, bool interrupt) {
  const mem_mount &m = *mm(r->fs);
  mnode *n = nd(r->vp);
  r->error = data_type_error(n);
  if (r->error == 0 && !data_access_allowed(attr(n), r->cred, 4)) r->error = EACCES;
  if (r->error == 0) {
    uint64_t size = n->data.size();
    uint32_t len = r->offset >= size ? 0 : uint32_t(std::min<uint64_t>(r->count, size - r->offset));
    bufpool *p = vfs_bufpool();
    buf *bp = nullptr;
    if (len > 0 && len <= VFS_BUF_MAX && p && (interrupt || !r->dst)) bp = buf_get(p);
    if (bp) {
      len = std::min(len, bp->cap);
      std::memcpy(bp->data, n->data.data() + r->offset, len);
      bp->done = len;
      r->rd.where = rd_where::buf;
      r->rd.bp = bp;
      r->rd.n = len;
    } else if (len > 0 && !r->dst) {
      r->error = EINVAL;
    } else if (len > 0) {
      len = std::min(len, r->dst_cap);
      std::memcpy(r->dst, n->data.data() + r->offset, len);
      r->rd.where = rd_where::dst;
      r->rd.n = len;
    }
    if (r->rd.n > 0) n->a.atime = now_ts(m);
    r->rd.eof = r->offset + r->rd.n >= size;
  }
  post(r);
}

// Whether a write (or a size change) of r would grow its file: that
// allocates, so it is done in thread context.
bool grows(const vreq *r) {
  const mnode *n = nd(r->vp);
  if (!is_reg(n)) return false;
  if (r->op == vop::setattr) return r->sattr.set_size && r->sattr.size > n->data.size();
  return r->count > 0 && r->offset + r->count > n->data.size();
}

void op_write(mem_mount &m, vreq *r) {
  mnode *n = nd(r->vp);
  pre(r);
  r->error = data_type_error(n);
  if (r->error == 0 && !data_access_allowed(r->obj.pre, r->cred, 2)) r->error = EACCES;
  if (r->error == 0 && r->count > 0) {
    if (r->offset > UINT64_MAX - r->count) r->error = EFBIG;
    if (r->error == 0) r->error = room_for(m, n, r->offset + r->count);
    if (r->error == 0 && !r->data) r->error = EFAULT;
    if (r->error == 0) {
      if (r->offset + r->count > n->data.size()) resize(m, n, r->offset + r->count);
      std::memcpy(n->data.data() + r->offset, r->data, r->count);
      touch(m, n, true);
      if (r->cred.uid != 0) kill_suid(n);
    }
  }
  if (r->error == 0) r->written = r->count;
  post(r);
}

// The checks every name-making operation shares, in the kernel's order:
// a directory, search permission, the name free, write permission, the
// directory still in the tree.
int may_make(const mnode *d, const char *name, const vcred &c) {
  if (!is_dir(d)) return ENOTDIR;
  vattr a = attr(d);
  if (!mode_allows(a, c, 1)) return EACCES;
  if (find(d, name)) return EEXIST;
  if (!mode_allows(a, c, 3)) return EACCES;
  if (!d->linked) return ENOENT;
  return 0;
}

// Makes dir/name from n (new_node), applying `rest`: all or nothing.
int make(mem_mount &m, vreq *r, mnode *n, const vsattr &rest) {
  mnode *d = nd(r->vp);
  if (int e = check_sattr(m, n, rest, r->cred)) {
    delete n;
    return e;
  }
  publish(m, n);
  dir_insert(d, r->name, n);
  apply_sattr(m, n, rest, r->cred);
  touch(m, d, true);
  result(m, r, n);
  return 0;
}

void op_create(mem_mount &m, vreq *r) {
  mnode *d = nd(r->vp);
  const vsattr &s = r->sattr;
  pre(r);
  mnode *ex = nullptr;
  if (!is_dir(d)) {
    r->error = ENOTDIR;
  } else if (!mode_allows(attr(d), r->cred, 1)) {
    r->error = EACCES;
  } else if ((ex = find(d, r->name)) != nullptr) {
    if (r->how == create_how::exclusive) {
      // The retry of our own exclusive create succeeds.
      bool ours = is_reg(ex) && ex->has_verf && std::memcmp(ex->verf, r->verf, 8) == 0;
      r->error = ours ? 0 : EEXIST;
    } else if (r->how == create_how::guarded || !is_reg(ex)) {
      r->error = EEXIST;  // never a special file opened: as the local backend
    } else {
      vsattr size_only;  // as knfsd: of the attributes, only a size applies to it
      size_only.set_size = s.set_size;
      size_only.size = s.size;
      if ((r->error = check_sattr(m, ex, size_only, r->cred)) == 0)
        apply_sattr(m, ex, size_only, r->cred);
    }
    if (r->error == 0) result(m, r, ex);
  } else if ((r->error = may_make(d, r->name, r->cred)) == 0) {
    bool excl = r->how == create_how::exclusive;
    uint32_t mode = excl ? 0600 : s.set_mode ? s.mode : 0644;
    mnode *n = new_node(m, vtype::reg, mode, d, r->cred);
    vsattr rest = excl ? vsattr{} : rest_of(s, vtype::reg);
    if (excl) {
      n->has_verf = true;
      std::memcpy(n->verf, r->verf, 8);
    }
    r->error = make(m, r, n, rest);
  }
  post(r);
}

void op_mkdir(mem_mount &m, vreq *r) {
  const vsattr &s = r->sattr;
  pre(r);
  mnode *d = nd(r->vp);
  r->error = may_make(d, r->name, r->cred);
  if (r->error == 0 && d->subdirs + 2 >= MEM_LINK_MAX) r->error = EMLINK;
  if (r->error == 0) {
    mnode *n = new_node(m, vtype::dir, s.set_mode ? s.mode : 0755, d, r->cred);
    r->error = make(m, r, n, rest_of(s, vtype::dir));
  }
  post(r);
}

void op_symlink(mem_mount &m, vreq *r) {
  pre(r);
  mnode *d = nd(r->vp);
  if (!is_dir(d)) r->error = ENOTDIR;
  if (r->error == 0 && (r->count == 0 || !r->data || std::memchr(r->data, '\0', r->count)))
    r->error = EINVAL;
  if (r->error == 0 && r->count >= PATH_MAX) r->error = ENAMETOOLONG;  // as symlinkat
  if (r->error == 0) r->error = may_make(d, r->name, r->cred);
  if (r->error == 0) {
    mnode *n = new_node(m, vtype::lnk, 0777, d, r->cred);  // a symlink's mode is 0777
    n->target.assign(reinterpret_cast<const char *>(r->data), r->count);
    r->error = make(m, r, n, vsattr{});
  }
  post(r);
}

void op_mknod(mem_mount &m, vreq *r) {
  const vsattr &s = r->sattr;
  pre(r);
  mnode *d = nd(r->vp);
  vtype t = r->mknod_type;
  if (!is_dir(d)) r->error = ENOTDIR;
  if (r->error == 0 && t != vtype::blk && t != vtype::chr && t != vtype::sock && t != vtype::fifo)
    r->error = VFS_BADTYPE;
  if (r->error == 0) r->error = may_make(d, r->name, r->cred);
  if (r->error == 0 && (t == vtype::blk || t == vtype::chr) && r->cred.uid != 0)
    r->error = EPERM;  // CAP_MKNOD
  if (r->error == 0) {
    mnode *n = new_node(m, t, s.set_mode ? s.mode : 0644, d, r->cred);
    if (t == vtype::blk || t == vtype::chr) {
      n->a.rdev_major = r->rdev_major;
      n->a.rdev_minor = r->rdev_minor;
    }
    r->error = make(m, r, n, rest_of(s, t));
  }
  post(r);
}

void op_remove(mem_mount &m, vreq *r, bool rmdir, aftermath *out) {
  pre(r);
  mnode *d = nd(r->vp);
  std::string_view name = r->name;
  name_map::iterator it;
  mnode *n = nullptr;
  if (!is_dir(d)) {
    r->error = ENOTDIR;
  } else if (rmdir && name == ".") {
    r->error = EINVAL;
  } else if (rmdir && name == "..") {
    r->error = ENOTEMPTY;
  } else if (!rmdir && is_dot(name)) {
    r->error = EISDIR;
  } else if (!mode_allows(attr(d), r->cred, 1)) {
    r->error = EACCES;
  } else if ((it = d->by_name.find(name)) == d->by_name.end()) {
    r->error = ENOENT;
  } else if (n = it->second.node; !mode_allows(attr(d), r->cred, 3)) {
    r->error = EACCES;
  } else if (sticky_denies(d, n, r->cred)) {
    r->error = EPERM;
  } else if (rmdir && !is_dir(n)) {
    r->error = ENOTDIR;
  } else if (!rmdir && is_dir(n)) {
    r->error = EISDIR;
  } else if (rmdir && !n->by_name.empty()) {
    r->error = ENOTEMPTY;
  } else {
    dir_erase(d, it);
    touch(m, d, true);
    touch(m, n, false);
    unlinked(m, n, out);
  }
  post(r);
}

void op_rename(mem_mount &m, vreq *r, aftermath *out) {
  mnode *fd = nd(r->vp), *td = nd(r->vp2);
  pre(r);
  pre2(r);
  const vcred &c = r->cred;
  int e = 0;
  name_map::iterator sit, tit;
  mnode *src = nullptr, *dst = nullptr;
  if (!is_dir(fd) || !is_dir(td)) {
    e = ENOTDIR;
  } else if (!mode_allows(attr(fd), c, 1) || !mode_allows(attr(td), c, 1)) {
    e = EACCES;
  } else if (is_dot(r->name) || is_dot(r->name2)) {
    e = EBUSY;
  } else if ((sit = fd->by_name.find(std::string_view(r->name))) == fd->by_name.end()) {
    e = ENOENT;
  } else {
    src = sit->second.node;
    tit = td->by_name.find(std::string_view(r->name2));
    dst = tit == td->by_name.end() ? nullptr : tit->second.node;
    bool sdir = is_dir(src);
    if (sdir && ancestor_or_self(src, td)) {
      e = EINVAL;  // a directory below itself
    } else if (dst && is_dir(dst) && ancestor_or_self(dst, fd)) {
      e = ENOTEMPTY;  // the target is an ancestor of the source
    } else if (dst == src) {
      // Two names of one object: nothing to do (POSIX).
    } else if (!mode_allows(attr(fd), c, 3)) {
      e = EACCES;
    } else if (sticky_denies(fd, src, c)) {
      e = EPERM;
    } else if (dst && !mode_allows(attr(td), c, 3)) {
      e = EACCES;
    } else if (dst && sticky_denies(td, dst, c)) {
      e = EPERM;
    } else if (dst && sdir && !is_dir(dst)) {
      e = ENOTDIR;
    } else if (dst && !sdir && is_dir(dst)) {
      e = EISDIR;
    } else if (!dst && !mode_allows(attr(td), c, 3)) {
      e = EACCES;
    } else if (sdir && fd != td && !mode_allows(attr(src), c, 2)) {
      e = EACCES;  // its ".." changes
    } else if (dst && is_dir(dst) && !dst->by_name.empty()) {
      e = ENOTEMPTY;
    } else if (!td->linked) {
      e = ENOENT;
    } else if (sdir && !dst && fd != td && td->subdirs + 2 >= MEM_LINK_MAX) {
      e = EMLINK;
    } else {
      std::string name2(r->name2);  // allocated before the tree changes
      if (dst) {
        dir_erase(td, tit);
        touch(m, dst, false);
        unlinked(m, dst, out);
      }
      dir_erase(fd, sit);
      dir_insert(td, name2, src);
      touch(m, fd, true);
      touch(m, td, true);
      touch(m, src, false);
    }
  }
  r->error = e;
  post(r);
  post2(r);
}

void op_link(vreq *r) {
  const mem_mount &m = *mm(r->fs);
  mnode *n = nd(r->vp), *d = nd(r->vp2);
  const vcred &c = r->cred;
  pre2(r);
  int e = 0;
  if (!is_dir(d)) {
    e = ENOTDIR;
  } else if (is_dir(n)) {
    e = EISDIR;
  } else if (!mode_allows(attr(d), c, 1)) {
    e = EACCES;
  } else if (find(d, r->name2)) {
    e = EEXIST;
  } else if (c.uid != 0 && c.uid != n->a.uid &&
             (!is_reg(n) || (n->a.mode & S_ISUID) ||
              (n->a.mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP) ||
              !mode_allows(attr(n), c, 6))) {
    e = EPERM;  // fs.protected_hardlinks
  } else if (!mode_allows(attr(d), c, 3)) {
    e = EACCES;
  } else if (!d->linked || !n->linked) {
    e = ENOENT;
  } else if (n->links >= MEM_LINK_MAX) {
    e = EMLINK;
  } else {
    dir_insert(d, r->name2, n);
    touch(m, n, false);
    touch(m, d, true);
  }
  r->error = e;
  post(r);
  post2(r);
}

bool emit_one(vreq *r, const mem_mount &m, const mnode *n, const char *name, uint64_t cookie) {
  vdirent e;
  e.fileid = n->id;
  e.name = name;
  e.namelen = uint32_t(std::strlen(name));
  e.cookie = cookie;
  if (r->plus) {
    attr_of(n, &e.attr);
    make_fh(m, n, &e.fh);
    e.have_attr = e.have_fh = true;
  }
  return r->emit(r->emit_arg, e);
}

void op_readdir(const mem_mount &m, vreq *r) {
  const mnode *d = nd(r->vp);
  post(r);
  if (!is_dir(d)) {
    r->error = ENOTDIR;
  } else if (!mode_allows(r->obj.post, r->cred, 4)) {
    r->error = EACCES;
  } else if (r->cookie >= d->next_seq) {
    r->error = VFS_BAD_COOKIE;  // never issued here
  } else if (!r->emit) {
    r->error = EINVAL;
  } else {
    const mnode *up = d->parent ? d->parent : d;
    if (r->cookie < SEQ_DOT && !emit_one(r, m, d, ".", SEQ_DOT)) return;
    if (r->cookie < SEQ_DOTDOT && !emit_one(r, m, up, "..", SEQ_DOTDOT)) return;
    for (auto it = d->by_seq.upper_bound(r->cookie); it != d->by_seq.end(); ++it) {
      const auto &[name, slot] = *it->second;
      if (!emit_one(r, m, slot.node, name.c_str(), slot.seq)) return;
    }
    r->eof = true;
  }
}

void op_fsstat(const mem_mount &m, vreq *r) {
  r->fsi.tbytes = m.max_bytes;
  r->fsi.fbytes = r->fsi.abytes = m.max_bytes - m.used;
  r->fsi.tfiles = FILES_MAX;
  r->fsi.ffiles = r->fsi.afiles = m.nodes < FILES_MAX ? FILES_MAX - m.nodes : 0;
  post(r);
}

void op_fsinfo(const mem_mount &m, vreq *r) {
  r->fsi.link_max = MEM_LINK_MAX;
  r->fsi.name_max = VFS_NAME_MAX;
  r->fsi.max_file_size = m.max_bytes;
  post(r);
}

void op_commit(vreq *r) {
  const mnode *n = nd(r->vp);
  pre(r);
  if (!is_reg(n) && !is_dir(n)) r->error = EINVAL;  // nothing is ever unstable here
  post(r);
}

// A path below r->fh, '/'-separated: every component but the last a
// directory (searchable by the caller), `..` refused.
void op_walk(const mem_mount &m, vreq *r) {
  const mnode *n = nd(r->vp);
  std::string_view path(reinterpret_cast<const char *>(r->data), r->data ? r->count : 0);
  if (path.find('\0') != std::string_view::npos) r->error = ENOENT;
  size_t pos = 0;
  while (r->error == 0 && pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view comp = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (comp.empty() || comp == ".") continue;
    const mnode *next = nullptr;
    if (!is_dir(n)) {
      r->error = ENOTDIR;
    } else if (comp == "..") {
      r->error = EACCES;
    } else if (comp.size() > VFS_NAME_MAX) {
      r->error = ENAMETOOLONG;
    } else if (!mode_allows(attr(n), r->cred, 1)) {
      r->error = EACCES;
    } else if ((next = find(n, comp)) == nullptr) {
      r->error = ENOENT;
    } else {
      n = next;
    }
  }
  if (r->error == 0) result(m, r, n);
}

// Takes the graveyard (the lock held).
mnode *take_dead(mem_mount &m) {
  mnode *d = m.graveyard;
  m.graveyard = nullptr;
  return d;
}

void free_list(mnode *n) {
  while (n) {
    mnode *next = n->dead_next;
    delete n;
    n = next;
  }
}

// ---- backend entries ------------------------------------------------------------

int mem_vget(mount *fs, const vfh &fh, vnode *vp) {
  mem_mount &m = *mm(fs);
  if (fh.len != FH_LEN) return VFS_BADHANDLE;
  uint64_t id = get_be(fh.data, 8);
  uint32_t gen = uint32_t(get_be(fh.data + 8, 4));
  spinlock g(m.lock);
  auto it = m.table.find(id);
  if (gen != m.gen || it == m.table.end()) return ESTALE;
  mnode *n = it->second;
  n->refs++;
  vp->priv = n;
  vp->type = n->a.type;
  vp->is_root = n == m.root;
  vp->fd = -1;
  return 0;
}

void mem_reclaim(vnode *vp) {
  mem_mount &m = *mm(vp->fs);
  mnode *n = nd(vp);
  vp->priv = nullptr;
  if (!n) return;
  mnode *dead = nullptr;
  {
    spinlock g(m.lock);
    if (--n->refs == 0 && !n->linked) {
      m.used -= bytes_of(n);
      m.nodes--;
      if (kcont_in_interrupt()) {  // never free there: the next thread operation does
        n->dead_next = m.graveyard;
        m.graveyard = n;
      } else {
        dead = n;
      }
    }
  }
  delete dead;
}

int mem_start(vreq *r) {
  mem_mount &m = *mm(r->fs);
  spinlock g(m.lock);
  if (r->error && vop_modifies(r->op)) {
    refused(r);
    return VB_DONE;
  }
  switch (r->op) {
    case vop::getattr:
      post(r);
      return VB_DONE;
    case vop::setattr:
      if (grows(r)) return VB_BLOCK;
      op_setattr(m, r);
      return VB_DONE;
    case vop::lookup:
      op_lookup(m, r);
      return VB_DONE;
    case vop::access:
      op_access(r);
      return VB_DONE;
    case vop::readlink:
      op_readlink(r);
      return VB_DONE;
    case vop::read:
      op_read(r, true);
      return VB_DONE;
    case vop::write:
      if (grows(r)) return VB_BLOCK;
      op_write(m, r);
      return VB_DONE;
    case vop::readdir:
      op_readdir(m, r);
      return VB_DONE;
    case vop::fsstat:
      op_fsstat(m, r);
      return VB_DONE;
    case vop::fsinfo:
      op_fsinfo(m, r);
      return VB_DONE;
    case vop::commit:
      op_commit(r);
      return VB_DONE;
    case vop::walk:
      op_walk(m, r);
      return VB_DONE;
    default:
      return VB_BLOCK;  // name operations allocate or free
  }
}

// Thread context: every operation, under the mount's lock (mem_run).
constexpr auto mem_vops = [] {
  vop_vector<mem_mount &, aftermath *> v;
  v.set(vop::getattr, [](vreq *r, mem_mount &, aftermath *) { post(r); });
  v.set(vop::setattr, [](vreq *r, mem_mount &m, aftermath *) { op_setattr(m, r); });
  v.set(vop::lookup, [](vreq *r, mem_mount &m, aftermath *) { op_lookup(m, r); });
  v.set(vop::access, [](vreq *r, mem_mount &, aftermath *) { op_access(r); });
  v.set(vop::readlink, [](vreq *r, mem_mount &, aftermath *) { op_readlink(r); });
  v.set(vop::read, [](vreq *r, mem_mount &, aftermath *) { op_read(r, false); });
  v.set(vop::write, [](vreq *r, mem_mount &m, aftermath *) { op_write(m, r); });
  v.set(vop::create, [](vreq *r, mem_mount &m, aftermath *) { op_create(m, r); });
  v.set(vop::mkdir, [](vreq *r, mem_mount &m, aftermath *) { op_mkdir(m, r); });
  v.set(vop::symlink, [](vreq *r, mem_mount &m, aftermath *) { op_symlink(m, r); });
  v.set(vop::mknod, [](vreq *r, mem_mount &m, aftermath *) { op_mknod(m, r); });
  v.set(vop::remove, [](vreq *r, mem_mount &m, aftermath *a) { op_remove(m, r, false, a); });
  v.set(vop::rmdir, [](vreq *r, mem_mount &m, aftermath *a) { op_remove(m, r, true, a); });
  v.set(vop::rename, [](vreq *r, mem_mount &m, aftermath *a) { op_rename(m, r, a); });
  v.set(vop::link, [](vreq *r, mem_mount &, aftermath *) { op_link(r); });
  v.set(vop::readdir, [](vreq *r, mem_mount &m, aftermath *) { op_readdir(m, r); });
  v.set(vop::fsstat, [](vreq *r, mem_mount &m, aftermath *) { op_fsstat(m, r); });
  v.set(vop::fsinfo, [](vreq *r, mem_mount &m, aftermath *) { op_fsinfo(m, r); });
  v.set(vop::commit, [](vreq *r, mem_mount &, aftermath *) { op_commit(r); });
  v.set(vop::walk, [](vreq *r, mem_mount &m, aftermath *) { op_walk(m, r); });
  return v;
}();
static_assert(mem_vops.complete());

void mem_run(vreq *r) {
  mem_mount &m = *mm(r->fs);
  aftermath after;
  mnode *dead = nullptr;
  try {
    spinlock g(m.lock);
    dead = take_dead(m);
    if (r->error && vop_modifies(r->op)) {
      refused(r);
    } else {
      mem_vops.call(r, m, &after);
    }
  } catch (const std::bad_alloc &) {
    r->error = ENOMEM;
  }
  if (after.forget.len) vnode_forget(r->fs, after.forget);
  delete after.dead;
  free_list(dead);
}

void mem_unmount(mount *fs) {
  mem_mount *m = mm(fs);
  for (auto &[id, n] : m->table) delete n;
  free_list(m->graveyard);
  delete m;
}

const vfs_backend memory_backend = {"memory",  mem_vget, mem_reclaim,
                                    mem_start, mem_run,  mem_unmount};

}  // namespace

// vfs_mount's "memory": size=BYTES (required).
mount *memory_mount_options(const vfs_options &opts, std::string *err) {
  uint64_t size = 0;
  if (vfs_options_unknown(opts, {"size"}, "memory", err) ||
      !vfs_option_size(opts, "size", &size, true, err))
    return nullptr;
  return vfs_mount_memory(size_t(size), err);
}

mount *vfs_mount_memory(size_t max_bytes, std::string *err, const memory_reproducible *repro) {
  (void)err;  // nothing here can fail but memory (which throws)
  auto *m = new mem_mount;
  m->max_bytes = max_bytes;
  if (repro) {
    m->fixed_time = repro->at;
    m->gen = repro->generation | 1;
  } else {
    timespec t = now_ts(*m);
    uint64_t seed = uint64_t(t.tv_sec) * 1000000007ull ^ uint64_t(t.tv_nsec) ^
                    uint64_t(reinterpret_cast<uintptr_t>(m));
    m->gen = uint32_t(seed ^ seed >> 32) | 1;
  }
  vcred root_cred;
  root_cred.uid = root_cred.gid = 0;
  mnode *root = new_node(*m, vtype::dir, 0777, nullptr, root_cred);
  root->parent = root;
  root->links = 1;
  publish(*m, root);
  m->root = root;
  mount *fs = vfs_alloc(&memory_backend, CACHE);
  fs->priv = m;
  make_fh(*m, root, &fs->root);
  return fs;
}

}  // namespace kc::vfs
