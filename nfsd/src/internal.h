// internal.h -- what the protocol code (nfs3.cc) shares with the
// transports: file handles, the handle cache, credentials, and the XDR
// encoders of NFS attributes.  Not installed; see server.h for the model.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <cstdint>

#include "kcont/nfsd/server.h"

namespace kc::nfs {

// nfsstat3 (RFC 1813).
enum nfsstat3 : uint32_t {
  NFS3_OK = 0,
  NFS3ERR_PERM = 1,
  NFS3ERR_NOENT = 2,
  NFS3ERR_IO = 5,
  NFS3ERR_NXIO = 6,
  NFS3ERR_ACCES = 13,
  NFS3ERR_EXIST = 17,
  NFS3ERR_XDEV = 18,
  NFS3ERR_NODEV = 19,
  NFS3ERR_NOTDIR = 20,
  NFS3ERR_ISDIR = 21,
  NFS3ERR_INVAL = 22,
  NFS3ERR_FBIG = 27,
  NFS3ERR_NOSPC = 28,
  NFS3ERR_ROFS = 30,
  NFS3ERR_MLINK = 31,
  NFS3ERR_NAMETOOLONG = 63,
  NFS3ERR_NOTEMPTY = 66,
  NFS3ERR_DQUOT = 69,
  NFS3ERR_STALE = 70,
  NFS3ERR_REMOTE = 71,
  NFS3ERR_BADHANDLE = 10001,
  NFS3ERR_NOT_SYNC = 10002,
  NFS3ERR_BAD_COOKIE = 10003,
  NFS3ERR_NOTSUPP = 10004,
  NFS3ERR_TOOSMALL = 10005,
  NFS3ERR_SERVERFAULT = 10006,
  NFS3ERR_BADTYPE = 10007,
  NFS3ERR_JUKEBOX = 10008,
};

nfsstat3 errno_to_nfs(int e);

enum nfs3_proc : uint32_t {
  NFSPROC3_NULL = 0,
  NFSPROC3_GETATTR = 1,
  NFSPROC3_SETATTR = 2,
  NFSPROC3_LOOKUP = 3,
  NFSPROC3_ACCESS = 4,
  NFSPROC3_READLINK = 5,
  NFSPROC3_READ = 6,
  NFSPROC3_WRITE = 7,
  NFSPROC3_CREATE = 8,
  NFSPROC3_MKDIR = 9,
  NFSPROC3_SYMLINK = 10,
  NFSPROC3_MKNOD = 11,
  NFSPROC3_REMOVE = 12,
  NFSPROC3_RMDIR = 13,
  NFSPROC3_RENAME = 14,
  NFSPROC3_LINK = 15,
  NFSPROC3_READDIR = 16,
  NFSPROC3_READDIRPLUS = 17,
  NFSPROC3_FSSTAT = 18,
  NFSPROC3_FSINFO = 19,
  NFSPROC3_PATHCONF = 20,
  NFSPROC3_COMMIT = 21,
};

enum stable_how : uint32_t { UNSTABLE = 0, DATA_SYNC = 1, FILE_SYNC = 2 };

// ---- file handles ------------------------------------------------------------
//
// Wire layout (at most 64 bytes): 'k' 'n' version(1) hlen(1) export-id(4)
// handle-type(4) f_handle(hlen) -- the f_handle of name_to_handle_at(2), so
// a handle names an inode and survives a restart; the export id ties it to
// its export.  Decoding checks the layout (BADHANDLE), the export (STALE if
// gone), opens the inode with open_by_handle_at relative to the export's
// root (STALE if gone), and checks that the path of what it opened lies
// inside the export (STALE otherwise: a forged handle reaches nothing
// outside).

struct nfs_fh {
  uint32_t len = 0;
  uint8_t data[NFS3_FHSIZE] = {};
  bytes_view view() const { return {data, len}; }
};

inline constexpr uint32_t FH_HEADER = 12;

// Makes the handle of dirfd/name (name "" = dirfd itself) without following
// a final symlink.  Returns 0 or an errno (EOVERFLOW: the filesystem's
// handles are too big; EXDEV: it is on another filesystem).
int fh_make(const export_entry &e, int dirfd, const char *name, nfs_fh *out);

// Opens the inode a well-formed handle of export e names (open_by_handle_at
// relative to e's root), with no further checks.  Returns a descriptor or
// -errno (-EPERM without CAP_DAC_READ_SEARCH).
int fh_open(const export_entry &e, bytes_view fh, int flags);

// A resolved handle: an open descriptor of the inode, kept in the cache.
// Regular files are open read-write (read-only if that fails), directories
// read-only, everything else O_PATH.
struct fh_entry {
  nfs_fh fh;
  int fd = -1;
  uint32_t export_id = 0;
  mode_t type = 0;  // S_IFMT bits
  bool is_root = false;
  // Cache-private.
  int refs = 0;
  bool hashed = false;
  bool referenced = false;  // clock bit
  fh_entry *hnext = nullptr;
};

struct fhcache_stats {
  uint64_t hits = 0, misses = 0, evictions = 0, stale = 0;
};

fhcache *fhcache_create(size_t entries);
void fhcache_destroy(fhcache *c);
fhcache_stats fhcache_get_stats(fhcache *c);

// Looks a handle up in the cache only (no system call); takes a reference.
// Any context; never blocks for long (a spinlock around a hash chain).
fh_entry *fh_lookup_cached(fhcache *c, bytes_view fh);

// Looks up or opens the handle.  Returns NFS3_OK with *out referenced, or
// BADHANDLE / STALE / SERVERFAULT.  Thread context (open_by_handle_at may
// read the disk).
nfsstat3 fh_resolve(server &srv, const export_table &t, bytes_view fh, fh_entry **out);

// Drops a reference.  Any context.
void fh_put(fhcache *c, fh_entry *e);

// Forgets a handle (its file was removed or replaced): later lookups open
// it again (and find it stale).  Any context.
void fh_forget(fhcache *c, bytes_view fh);

// ---- credentials -------------------------------------------------------------

struct cred {
  uint32_t uid = 65534, gid = 65534;
  uint32_t ngids = 0;
  uint32_t gids[MAX_GIDS] = {};
};

// The credential a call acts with on an export (squashing applied).
cred effective_cred(const rpc_call &call, const export_opts &o);

// Whether mode bits let c read (want 4), write (2) or execute (1) a file.
// The owner may always read and write (as knfsd allows, so a file created
// read-only can still be written by its creator).
bool mode_allows(const struct stat &st, const cred &c, int want);

// Switches the calling thread's filesystem identity (fsuid, fsgid, groups)
// to c, or back to root.  Thread context (worker threads only).
void cred_enter(const cred &c);
void cred_leave();

// ---- attribute encoding --------------------------------------------------------

void put_fattr(xdr_out &out, const struct stat &st, uint32_t fsid);
void put_post_op_attr(xdr_out &out, const struct stat *st, uint32_t fsid);
void put_pre_op_attr(xdr_out &out, const struct stat *st);
void put_wcc(xdr_out &out, const struct stat *before, const struct stat *after, uint32_t fsid);

// Encodes the RPC SUCCESS header and the nfsstat3 of a reply.
void begin_nfs_reply(xdr_out &out, uint32_t xid, nfsstat3 st);

// READs of up to this many bytes are answered from memory (a buf or the
// reply buffer); bigger ones, where the transport allows, with a file_part
// sent zero-copy.
inline constexpr uint32_t INLINE_READ_MAX = 64 * 1024;

// After a NFS3_OK status: READ3resok's attributes, count, eof and the
// length of the n data bytes that follow.
void put_read_head(xdr_out &out, const struct stat &st, uint32_t fsid, uint32_t n, bool eof);

// Time of a request for the per-procedure latency counters.
uint64_t now_ns();

}  // namespace kc::nfs
