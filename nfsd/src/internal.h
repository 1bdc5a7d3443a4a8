// SPDX-License-Identifier: BSD-2-Clause
// internal.h -- what the protocol code (nfs3.cc) shares with the
// transports: file handles, the handle cache, credentials, and the XDR
// encoders of NFS attributes.  Not installed; see server.h for the model.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <cstdint>

#include "kcont/nfsd/server.h"
#include "kcont/vfs.h"

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
// Wire layout (at most 64 bytes): 'k' 'n' version(1) blen(1) export-id(4),
// then blen bytes of the VFS's own handle (vfs(9): for the local backend
// the kernel's name_to_handle_at handle, so a handle names an inode and
// survives a restart).  The export id ties it to its export; the VFS
// checks the rest (stale, outside the tree, malformed).

struct nfs_fh {
  uint32_t len = 0;
  uint8_t data[NFS3_FHSIZE] = {};
  bytes_view view() const { return {data, len}; }
};

inline constexpr uint32_t FH_HEADER = 8;
inline constexpr uint8_t FH_VERSION = 2;

// Wraps a VFS handle of export `id` into the wire layout.
void fh_wrap(uint32_t export_id, const vfs::vfh &in, nfs_fh *out);

// Unwraps a wire handle.  Returns NFS3_OK (and the export id and VFS
// handle) or NFS3ERR_BADHANDLE.
nfsstat3 fh_unwrap(bytes_view fh, uint32_t *export_id, vfs::vfh *out);

// ---- credentials -------------------------------------------------------------

// The credential a call acts with on an export (squashing applied).
vfs::vcred effective_cred(const rpc_call &call, const export_opts &o);

// ---- attribute encoding --------------------------------------------------------

void put_fattr(xdr_out &out, const vfs::vattr &a, uint32_t fsid);
void put_post_op_attr(xdr_out &out, const vfs::vattr *a, uint32_t fsid);
void put_pre_op_attr(xdr_out &out, const vfs::vattr *a);
void put_wcc(xdr_out &out, const vfs::vwcc &w, uint32_t fsid);

// Encodes the RPC SUCCESS header and the nfsstat3 of a reply.
void begin_nfs_reply(xdr_out &out, uint32_t xid, nfsstat3 st);

// Time of a request for the per-procedure latency counters.
uint64_t now_ns();

// ---- calls in flight ---------------------------------------------------------------
//
// One call from decode to reply (procedures in nfs3.cc, the life cycle in
// server.h).  A transport owns it (a kcont slot, a worker's stack) and
// drives it: call_begin decodes and either answers at once or leaves a
// VFS request in `v` for the transport to run (vop_start with a
// continuation, or vop_call); call_end then encodes the reply from it.

struct proc_info;

struct readdir_state {
  size_t limit = 0, names_limit = 0, names = 0, entries = 0;
  uint32_t fsid = 0;
};

struct nfs_call {
  server *srv = nullptr;
  request *req = nullptr;
  rpc_call rpc;
  const proc_info *pi = nullptr;
  proc_counter *ctr = nullptr;
  const export_table *exports = nullptr;
  const export_entry *ex = nullptr;
  const export_opts *opts = nullptr;
  nfsstat3 status = NFS3_OK;  // set before the VFS runs: it does not run
  bool ran = false;           // the VFS request ran
  size_t body_at = 0;         // reply offset just after the status word
  uint32_t stable = 0, dircount = 0, maxcount = 0;
  uint64_t t0 = 0;
  nfs_fh mnt_fh;        // MNT: the handle made
  bytes_view mnt_path;  // MNT, UMNT
  readdir_state rds;
  vfs::vreq v;
};

enum class begin_result { vop, reply, drop, close };

// Decodes the record in req and prepares c.  Returns vop (run c.v, then
// call_end), reply (req.out holds the finished reply), drop or close.  Any
// context: never blocks (the VFS decides where the work runs).
begin_result call_begin(nfs_call &c, server &srv, request &req);

// Encodes the reply of a call whose VFS request completed, finishes the
// record and counts the call.  Always a reply.  Any context.
serve_result call_end(nfs_call &c);

}  // namespace kc::nfs
