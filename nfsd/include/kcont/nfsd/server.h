// SPDX-License-Identifier: BSD-2-Clause
// server.h -- kcont-nfsd: the NFSv3 + MOUNT v3 server, independent of how
// requests reach it.
//
// Model: `server` owns the exports (each one a mounted vfs(9)), the write
// verifier and the per-procedure counters.  The protocol is written once
// (nfs3.cc): a call is decoded, its semantics are one VFS request, and the
// reply is encoded from that request's results -- whichever transport
// carries it.  The VFS decides whether the request completes in the
// caller's interrupt context or needs a thread.  Two transports:
//
//   kcont model (model_kcont.cc): per-CPU kcont sockets; each call is
//   started on the connection's dispatcher with vop_start and finished by
//   the slot's continuation; no thread of the transport ever sleeps.
//
//   threads model (model_threads.cc): the classic design -- a reader thread
//   per connection, a pool of worker threads, sleep/wakeup hand-off; the
//   workers call serve_call, which runs the VFS request with vop_call.
//
// Rules: serve_call may be called from any number of threads at once.
// Locking: exports are an immutable table swapped on reload (readers take a
// shared_ptr copy, or exports_now() for tables kept until the server goes);
// the mount list has a spinlock; counters are relaxed atomics.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kcont/nfsd/rpc.h"
#include "kcont/nfsd/xdr.h"
#include "kcont/vfs.h"

namespace kc::nfs {

inline constexpr uint32_t NFS_PROGRAM = 100003;
inline constexpr uint32_t MOUNT_PROGRAM = 100005;
inline constexpr uint32_t NFS_V3 = 3;
inline constexpr uint32_t MOUNT_V3 = 3;
inline constexpr uint32_t NFS3_FHSIZE = 64;
inline constexpr uint32_t NFS3_PROCS = 22;
inline constexpr uint32_t MOUNT3_PROCS = 6;
inline constexpr uint32_t MAX_IO = 1024 * 1024;  // rtmax = wtmax

// ---- exports ---------------------------------------------------------------

struct export_opts {
  bool rw = false;
  bool root_squash = true;
  bool all_squash = false;
  uint32_t anonuid = 65534, anongid = 65534;
};

struct export_client {
  std::string spec;  // as written: "*", "10.0.0.0/8", "127.0.0.1"
  bool any = false;  // "*"
  bool v6 = false;
  uint8_t addr[16] = {};  // network address (IPv4 in the first 4 bytes)
  int prefix = 0;         // bits that must match
  export_opts opts;
};

struct export_entry {
  std::string path;          // the export's name: canonical absolute path (realpath of a
                             // local directory; as written for a back end named with fs=)
  std::string backend;       // "local" for a plain directory, else its fs=NAME,... word
  uint32_t id = 0;           // stable identity carried in every file handle
  vfs::mount *fs = nullptr;  // the mounted tree (mount.get())
  // Owns the mount (unmounted with its last table).  A reload keeps the
  // mount of every path exported before (server::set_exports), so reloads
  // neither reopen roots nor lose the vnode cache, and a retired table
  // holds no descriptor of its own.
  std::shared_ptr<vfs::mount> mount;
  std::vector<export_client> clients;
};

struct export_table {
  std::vector<export_entry> exports;
  ~export_table();
  const export_entry *by_id(uint32_t id) const;
};

// Parses exports(5)-style text: one export per line, `/path client(opts)
// ...`; `#` starts a comment.  Opens every root.  Returns nullptr and a
// message naming the line on error.
std::shared_ptr<export_table> parse_exports(const std::string &text, const std::string &origin,
                                            std::string *err);
// Reads and parses an exports file.
std::shared_ptr<export_table> load_exports(const std::string &file, std::string *err);
// One directory exported read-write to every client, no root squash.
std::shared_ptr<export_table> single_export(const std::string &dir, std::string *err);

// Adds an export served from memory (vfs(9) memory backend, at most
// max_bytes of file data, lost on exit) at the virtual path `path`,
// read-write to every client, no root squash.  For tests and
// demonstrations: nothing of it touches the disk.  With `repro`, the
// mount is reproducible (vfs(9) memory_reproducible: fixed handles'
// generation and time stamps), for tests that compare two servers.
// Returns false and a reason on a bad or duplicate path.  Thread context.
bool add_memory_export(export_table &t, const std::string &path, uint64_t max_bytes,
                       std::string *err, const vfs::memory_reproducible *repro = nullptr);

// The options that apply to a client address, or nullptr if it may not
// use the export.
const export_opts *export_access(const export_entry &e, const sockaddr_storage &peer);

// ---- counters --------------------------------------------------------------

// Server time per call (decode to reply ready), log2 buckets: bucket i
// (0 .. PROC_LATENCY_BUCKETS - 2) counts calls under 2^(i+10) ns (1.024 us
// << i, up to 2.1 s), the last one the rest.
inline constexpr int PROC_LATENCY_BUCKETS = 22;
int proc_latency_bucket(uint64_t ns);

struct proc_counter {
  std::atomic<uint64_t> calls{0}, errors{0}, ns{0};
  std::atomic<uint64_t> no_thread{0};  // completed without any thread (kcont model)
  std::atomic<uint64_t> latency[PROC_LATENCY_BUCKETS] = {};
};

// The NFSv3 error statuses (RFC 1813), indexed 0 .. NFS3_ERROR_STATUSES-1.
inline constexpr int NFS3_ERROR_STATUSES = 28;
// The index of an nfsstat3 error, or -1 (NFS3_OK or not a status).
int nfs3_status_index(uint32_t status);
// "NFS3ERR_NOENT" for an index of nfs3_status_index.
const char *nfs3_status_name(int index);

struct server_stats {
  proc_counter nfs[NFS3_PROCS];
  proc_counter mount[MOUNT3_PROCS];
  std::atomic<uint64_t> nfs_errors[NFS3_ERROR_STATUSES] = {};  // NFS replies by error status
  std::atomic<uint64_t> read_bytes{0};                         // data returned by READ
  std::atomic<uint64_t> written_bytes{0};                      // data taken by WRITE
  std::atomic<uint64_t> rpc_errors{0};   // PROG_UNAVAIL, GARBAGE_ARGS, ... replies
  std::atomic<uint64_t> bad_records{0};  // connections closed on framing errors
  std::atomic<uint64_t> connections{0};
};

const char *nfs3_proc_name(uint32_t proc);
const char *mount3_proc_name(uint32_t proc);

// ---- the server ------------------------------------------------------------

struct server_config {
  uint32_t max_record = MAX_IO + 4096;  // largest RPC record accepted
};

struct server {
  server_config cfg;
  // The write verifier: changes on every start (nanoseconds + pid) and
  // whenever a write-back failed (new_write_verf), so clients resend the
  // UNSTABLE writes it may have lost, as knfsd does.  Any context.
  std::atomic<uint64_t> write_verf{0};
  void new_write_verf();
  server_stats stats;

  std::shared_ptr<const export_table> exports() const;
  // Publishes t.  An export whose path was exported before (now or by a
  // retired table) takes over that mount, and t's own, never-used mount of
  // it is unmounted.  Thread context.
  void set_exports(std::shared_ptr<export_table> t);
  // The current table without taking a reference: valid for the server's
  // lifetime (replaced tables are kept until the server is destroyed, so a
  // reader never sees one freed; reloads are rare).  Any context.
  const export_table *exports_now() const { return current_.load(std::memory_order_acquire); }

  // Mount list for DUMP: at most MAX_MOUNT_RECORDS, stored in place
  // (reserved at construction: MNT may run on a dispatcher, where nothing
  // is allocated), under a kcont spinlock.
  struct mount_record {
    char host[46] = {};  // INET6_ADDRSTRLEN
    uint32_t dir_len = 0;
    char dir[1024] = {};  // MNTPATHLEN
  };
  static constexpr size_t MAX_MOUNT_RECORDS = 1024;
  std::atomic<uint32_t> mounts_lock{0};
  std::vector<mount_record> mounts;

  server();
  ~server();
  server(const server &) = delete;
  server &operator=(const server &) = delete;

 private:
  mutable std::mutex exports_lock_;
  std::shared_ptr<const export_table> exports_;
  std::vector<std::shared_ptr<const export_table>> retired_;
  std::atomic<const export_table *> current_{nullptr};
};

// Where a reply's file data may come from instead of the reply buffer (a
// zero-copy transport sends it after the buffer's bytes, then `pad` zero
// bytes).  Set by serve_call only when the request allows it.
struct file_part {
  int fd = -1;
  uint64_t offset = 0;
  uint32_t len = 0;
  uint32_t pad = 0;
  vfs::vnode *ref = nullptr;  // vnode to release (vnode_rele) when sent
  bool resident = false;      // the VFS found its pages cached (vfs(9) vread::resident)
};

struct request {
  const uint8_t *rec = nullptr;  // the record, without its mark
  size_t len = 0;
  sockaddr_storage peer{};
  xdr_out out;                   // the reply record is written here
  bool allow_file_part = false;  // READ may answer with a file_part
  bool in_thread = false;        // the transport runs the call in thread context
  // vfs_arrival() read once the whole record was in hand (0: not known):
  // lets the VFS share attributes read after it (vreq::arrived).
  uint64_t arrived = 0;
  file_part file;
  // READ data in a buffer of the I/O layer, sent after the reply buffer's
  // bytes and before file/pad; the transport brelse()s it.
  buf *data_buf = nullptr;
  uint32_t data_len = 0;
};

enum class serve_result { reply, drop, close };

// Decodes and executes one call; writes the reply record into req.out
// (reply), or says the message needs no answer (drop) or that the
// connection must be closed (close).  Thread context; blocks (vop_call);
// leaves the thread's filesystem identity as the caller's (see
// vfs_cred_reset).
serve_result serve_call(server &srv, request &req);

// Releases what a reply still holds (file part, data buffer).  Any
// context.
void release_reply(request &req);

// Human-readable counters (one line per procedure that was called).
std::string format_stats(server &srv);

}  // namespace kc::nfs
