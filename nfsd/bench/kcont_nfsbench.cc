// SPDX-License-Identifier: BSD-2-Clause
// kcont-nfsbench -- NFSv3 load generator on libnfs's asynchronous raw API.
//
//   kcont-nfsbench --url nfs://127.0.0.1/DIR?version=3&nfsport=N&mountport=M
//                  --op read|write|getattr|mix|meta|cycle --size BYTES --depth N --conns N
//                  --procs N --duration S --warmup S --pattern seq|random
//                  --file NAME --file-size BYTES --stable unstable|file_sync
//                  [--server-pid PID] [--json FILE] [--quiet]
//   kcont-nfsbench --run 'SHELL COMMAND' --server-pid PID [--json FILE]
//
// What it does:
//   1. Prepares the test file (NAME, relative to the export) with the
//      high-level sync API: creates it and fills it with 1 MiB WRITEs when it
//      is missing or smaller than --file-size.
//   2. Forks --procs client processes.  Each opens --conns connections (one
//      nfs_context each: MOUNT, then nfs_open + nfs_get_fh for the handle) and
//      drives all of them from one poll() loop, keeping --depth requests
//      outstanding on every connection.  Every request is exactly one NFS RPC
//      sent with the raw API (rpc_nfs3_read_async / write / getattr): a READ
//      of --size bytes (the returned count is checked: a short read is an
//      error unless it is the file's last block), a WRITE of --size bytes
//      (count and stability checked), or a GETATTR of the file.  "mix" picks
//      per request: 70% READ, 20% GETATTR, 10% WRITE.  "meta" works on a tree
//      of 256 files beside the test file (NAME.tree, created once): LOOKUP,
//      GETATTR or ACCESS (a third each) of a random file.  "cycle" runs, in
//      every request slot, CREATE of a new file in the tree, WRITE of 4 KiB,
//      COMMIT, GETATTR, REMOVE, and again; every call is one op.
//      UNSTABLE writes are followed by a COMMIT per connection every 64 MiB
//      written and once at the end (counted as "commits", not as ops).
//   3. After --warmup seconds, it measures for --duration seconds: only
//      replies that arrive inside the window count.  Latency (issue -> reply)
//      goes into a preallocated log-linear histogram per process (64
//      sub-buckets per power of two, < 1.6% error); the histograms and
//      counters live in shared memory and are merged by the parent.
//   4. With --server-pid it samples the server at both ends of the window:
//      (and with --extra-pid PID, repeatable, the summed CPU time of other
//      processes the server depends on -- a Ceph cluster's daemons --, per
//      op as extra_cpu_us_per_op; and the server's VmRSS at the end):
//      context switches (voluntary + nonvoluntary of every thread in
//      /proc/PID/task/*/status) and CPU time (utime + stime of /proc/PID/stat),
//      reported per op.  The client processes measure their own CPU time over
//      the same window, and /proc/stat gives the whole machine's busy share,
//      which tells whether the client, the server or the CPUs are the limit.
//
// With --run it generates no load: it runs the shell command (sh -c) and
// measures the server -- context switches and CPU time as above, sampled
// every 100 ms -- from the command's start to its exit.  That is how a real
// POSIX workload through a FUSE mount (kcont-nfsfuse) is measured; the
// server's own counters give the number of calls.  Output: one line, and
// with --json the command, its exit status, elapsed_s, server_cpu_s,
// server_csw and server_vcsw.  Exit status: the command's (1 if it could
// not run or was killed).
//
// Output: a progress line on stderr once per second (unless --quiet), the
// result as a table on stdout, and with --json FILE the same numbers as one
// JSON object.  MB/s is 10^6 bytes per second.  Exit status: 0 = ran without
// errors, 3 = ran but some requests failed, 1 = set-up failed (e.g. the mount;
// the message names the URL and libnfs's error), 2 = bad usage.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// libnfs.h first: the raw headers rely on what it defines.
// clang-format off
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-nfs.h>
// clang-format on

// libnfs 4.0 only forward-declares struct nfs_fh (what nfs_get_fh returns);
// this is its layout from libnfs-private.h.  The length is validated.
struct nfs_fh {
  int len;
  char *val;
};

namespace {

constexpr uint64_t kCommitEvery = 64ull << 20;  // UNSTABLE bytes per COMMIT
constexpr uint64_t kFillChunk = 1ull << 20;     // preparation WRITE size
constexpr int64_t kDrainNs = 10'000'000'000;    // wait for replies after the end

enum class Op { kRead, kWrite, kGetattr, kMix, kMeta, kCycle };
enum class Kind : uint8_t { kRead, kWrite, kGetattr, kCommit, kLookup, kAccess, kCreate, kRemove };

constexpr int kTreeFiles = 256;         // files of the metadata tree
constexpr uint32_t kCycleWrite = 4096;  // bytes each cycle writes
// The steps of one create-write-commit-getattr-remove cycle.
constexpr Kind kCycle[] = {Kind::kCreate, Kind::kWrite, Kind::kCommit, Kind::kGetattr,
                           Kind::kRemove};
constexpr int kCycleSteps = int(sizeof kCycle / sizeof kCycle[0]);

struct Options {
  std::string url;
  std::string op = "read";
  uint64_t size = 8192;
  int depth = 16;
  int conns = 1;
  int procs = 1;
  double duration = 5;
  double warmup = 1;
  std::string pattern = "random";
  std::string file = "kcont-nfsbench.dat";
  uint64_t file_size = 256ull << 20;
  std::string stable = "unstable";
  int server_pid = 0;
  std::vector<int> extra_pids;  // --extra-pid: their CPU is summed and reported beside the server's
  std::string json;
  std::string run;  // --run: the shell command to measure the server under
  bool quiet = false;

  Op opk = Op::kRead;
  bool random = true;
  bool unstable = true;
};

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

double cpu_s_self() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

void sleep_until(int64_t t) {
  timespec ts{time_t(t / 1'000'000'000), long(t % 1'000'000'000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// ---------------------------------------------------------------------------
// Log-linear latency histogram (nanoseconds): values below 64 exactly, then
// 64 sub-buckets per power of two up to 2^45 ns (~10 h).

constexpr int kSubBits = 6;
constexpr int kSub = 1 << kSubBits;
constexpr int kMaxExp = 45;
constexpr int kBuckets = (kMaxExp - kSubBits + 1) * kSub + kSub;

int hist_index(uint64_t v) {
  if (v < uint64_t(kSub)) return int(v);
  int e = 63 - __builtin_clzll(v);
  if (e > kMaxExp) return kBuckets - 1;
  int shift = e - kSubBits;
  int m = int((v >> shift) & (kSub - 1));
  return (e - kSubBits + 1) * kSub + m;
}

// Midpoint of a bucket, in nanoseconds.
double hist_value(int idx) {
  if (idx < kSub) return idx;
  int e = idx / kSub + kSubBits - 1;
  int m = idx % kSub;
  double width = std::ldexp(1.0, e - kSubBits);
  return double(kSub + m) * width + width / 2;
}

double hist_quantile(const uint64_t *h, uint64_t total, double q) {
  if (total == 0) return 0;
  uint64_t rank = uint64_t(std::ceil(q * double(total)));
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; i++) {
    seen += h[i];
    if (seen >= rank) return hist_value(i);
  }
  return hist_value(kBuckets - 1);
}

// ---------------------------------------------------------------------------
// Shared memory between the parent and the client processes.

struct alignas(64) ProcSlot {
  // live, written by the child (relaxed atomics), read by the parent
  uint64_t live_ops;
  uint64_t live_bytes;
  int32_t state;  // 0 starting, 1 ready, 2 done, -1 failed
  // final results, written by the child before state = 2
  uint64_t ops, bytes, errors, commits, reads, writes, getattrs;
  uint64_t lat_sum_ns, lat_max_ns;
  double cpu_s;
  char err[512];
  uint64_t hist[kBuckets];
};

struct Shared {
  int32_t go;  // 0 wait, 1 run, 2 abort
  int64_t t_start, t_measure, t_end;
  ProcSlot procs[];
};

template <class T>
T ld(T &x) {
  return std::atomic_ref<T>(x).load(std::memory_order_acquire);
}
template <class T>
void st(T &x, T v) {
  std::atomic_ref<T>(x).store(v, std::memory_order_release);
}

void set_err(ProcSlot *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void set_err(ProcSlot *s, const char *fmt, ...) {
  if (s->err[0]) return;  // keep the first one
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err, sizeof s->err, fmt, ap);
  va_end(ap);
}

// ---------------------------------------------------------------------------
// Mounting.

std::string file_path(const Options &o) { return o.file[0] == '/' ? o.file : "/" + o.file; }

// The metadata tree: a directory beside the test file holding kTreeFiles
// files (meta) and the cycle's short-lived files.
std::string tree_path(const Options &o) { return file_path(o) + ".tree"; }

std::string tree_file(int i) {
  char n[16];
  snprintf(n, sizeof n, "f%04d", i);
  return n;
}

// Creates a context and mounts the URL's export; nullptr + *err on failure.
nfs_context *mount_url(const std::string &url, std::string *err) {
  nfs_context *nfs = nfs_init_context();
  if (!nfs) {
    *err = "nfs_init_context failed";
    return nullptr;
  }
  nfs_set_autoreconnect(nfs, 0);
  nfs_url *u = nfs_parse_url_dir(nfs, url.c_str());
  if (!u || !u->server || !u->path) {
    *err = "cannot parse URL " + url + ": " + nfs_get_error(nfs);
    if (u) nfs_destroy_url(u);
    nfs_destroy_context(nfs);
    return nullptr;
  }
  if (nfs_mount(nfs, u->server, u->path) != 0) {
    *err = "cannot mount " + url + ": " + nfs_get_error(nfs);
    nfs_destroy_url(u);
    nfs_destroy_context(nfs);
    return nullptr;
  }
  nfs_destroy_url(u);
  return nfs;
}

// Creates/extends the test file to at least o.file_size; returns its size.
bool prepare_file(const Options &o, uint64_t *actual, std::string *err) {
  nfs_context *nfs = mount_url(o.url, err);
  if (!nfs) return false;
  std::string path = file_path(o);
  struct nfs_stat_64 st;
  nfsfh *fh = nullptr;
  uint64_t have = 0;
  bool ok = true;
  if (nfs_stat64(nfs, path.c_str(), &st) == 0) {
    have = st.nfs_size;
    if (have < o.file_size && nfs_open(nfs, path.c_str(), O_RDWR, &fh) != 0) {
      *err = "cannot open " + path + " on " + o.url + ": " + nfs_get_error(nfs);
      ok = false;
    }
  } else if (nfs_creat(nfs, path.c_str(), 0644, &fh) != 0) {
    *err = "cannot create " + path + " on " + o.url + ": " + nfs_get_error(nfs);
    ok = false;
  }
  if (ok && have < o.file_size) {
    if (!o.quiet)
      fprintf(stderr, "kcont-nfsbench: filling %s from %" PRIu64 " to %" PRIu64 " bytes\n",
              path.c_str(), have, o.file_size);
    std::vector<unsigned char> buf(kFillChunk);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (auto &b : buf) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      b = (unsigned char)x;
    }
    for (uint64_t off = have; off < o.file_size && ok;) {
      uint64_t n = std::min<uint64_t>(kFillChunk, o.file_size - off);
      int rc = nfs_pwrite(nfs, fh, off, n, buf.data());
      if (rc <= 0) {
        *err = "WRITE while filling " + path + ": " + nfs_get_error(nfs);
        ok = false;
      } else {
        off += uint64_t(rc);
      }
    }
    if (ok && nfs_fsync(nfs, fh) != 0) {
      *err = "COMMIT while filling " + path + ": " + nfs_get_error(nfs);
      ok = false;
    }
  }
  if (fh) nfs_close(nfs, fh);
  if (ok) {
    if (nfs_stat64(nfs, path.c_str(), &st) != 0) {
      *err = "cannot stat " + path + ": " + nfs_get_error(nfs);
      ok = false;
    } else {
      *actual = st.nfs_size;
    }
  }
  nfs_destroy_context(nfs);
  return ok;
}

// Creates the metadata tree when missing (meta) and removes what an earlier
// cycle run left behind.  Sync API.
bool prepare_tree(const Options &o, std::string *err) {
  nfs_context *nfs = mount_url(o.url, err);
  if (!nfs) return false;
  std::string dir = tree_path(o);
  bool ok = true;
  struct nfs_stat_64 st;
  if (nfs_stat64(nfs, dir.c_str(), &st) != 0 && nfs_mkdir(nfs, dir.c_str()) != 0) {
    *err = "cannot create " + dir + ": " + nfs_get_error(nfs);
    ok = false;
  }
  for (int i = 0; ok && i < kTreeFiles; i++) {
    std::string f = dir + "/" + tree_file(i);
    nfsfh *fh = nullptr;
    if (nfs_stat64(nfs, f.c_str(), &st) == 0) continue;
    if (nfs_creat(nfs, f.c_str(), 0644, &fh) != 0) {
      *err = "cannot create " + f + ": " + nfs_get_error(nfs);
      ok = false;
    } else {
      nfs_close(nfs, fh);
    }
  }
  nfsdir *d = nullptr;
  if (ok && nfs_opendir(nfs, dir.c_str(), &d) == 0) {
    std::vector<std::string> stale;
    while (nfsdirent *e = nfs_readdir(nfs, d))
      if (e->name[0] == 'c') stale.push_back(e->name);
    nfs_closedir(nfs, d);
    for (auto &n : stale) nfs_unlink(nfs, (dir + "/" + n).c_str());
  }
  nfs_destroy_context(nfs);
  return ok;
}

// ---------------------------------------------------------------------------
// A client process.

struct Worker;
struct Conn;

struct Req {
  Conn *c = nullptr;
  int64_t t0 = 0;
  uint64_t off = 0;
  uint32_t len = 0;
  Kind kind = Kind::kRead;
  bool active = false;
  // meta: the tree file; cycle: the step, the file's name and handle.
  int file = 0;
  int step = 0;
  uint64_t seq = 0;
  char name[48] = {};
  char fhbuf[NFS3_FHSIZE] = {};
  nfs_fh3 fh{};
};

struct Conn {
  Worker *w = nullptr;
  nfs_context *nfs = nullptr;
  rpc_context *rpc = nullptr;
  nfsfh *file = nullptr;
  char fhbuf[NFS3_FHSIZE];
  nfs_fh3 fh{};
  uint64_t cursor = 0;
  uint64_t since_commit = 0;
  bool dirty = false;  // UNSTABLE data not yet committed
  bool dead = false;
  int inflight = 0;
  Req commit;
  std::vector<Req> reqs;
  // meta and cycle: the tree directory and (meta) its files.
  nfsfh *dir = nullptr;
  char dirbuf[NFS3_FHSIZE];
  nfs_fh3 dirfh{};
  std::vector<nfsfh *> files;
  std::vector<std::vector<char>> filebufs;
  std::vector<nfs_fh3> filefh;
};

struct Worker {
  const Options *o = nullptr;
  Shared *sh = nullptr;
  ProcSlot *slot = nullptr;
  std::vector<Conn> conns;
  std::vector<unsigned char> wbuf;
  uint64_t nblocks = 0;  // request-sized blocks in the range used
  uint64_t range = 0;    // bytes of the file in use
  uint64_t fsize = 0;    // the file's real size
  uint64_t rng = 0;
  int64_t t_measure = 0, t_end = 0;
  bool stopping = false;  // no more requests after the end
  bool teardown = false;  // callbacks from nfs_destroy_context are ignored
  int64_t now = 0;

  uint64_t next_rand() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  }
};

void on_reply(rpc_context *rpc, int status, void *data, void *priv);

bool issue(Req *r) {
  Conn *c = r->c;
  Worker *w = c->w;
  const Options &o = *w->o;
  if (r->kind != Kind::kCommit || o.opk == Op::kCycle) {
    Kind k = Kind::kRead;
    switch (o.opk) {
      case Op::kRead:
        k = Kind::kRead;
        break;
      case Op::kWrite:
        k = Kind::kWrite;
        break;
      case Op::kGetattr:
        k = Kind::kGetattr;
        break;
      case Op::kMix: {
        uint64_t p = w->next_rand() % 10;
        k = p < 7 ? Kind::kRead : p < 9 ? Kind::kGetattr : Kind::kWrite;
        break;
      }
      case Op::kMeta: {
        uint64_t p = w->next_rand();
        r->file = int((p >> 8) % kTreeFiles);
        k = p % 3 == 0 ? Kind::kLookup : p % 3 == 1 ? Kind::kGetattr : Kind::kAccess;
        break;
      }
      case Op::kCycle:
        k = kCycle[r->step];
        if (k == Kind::kCreate)
          snprintf(r->name, sizeof r->name, "c%d-%p-%" PRIu64, int(getpid()),
                   static_cast<void *>(r), r->seq++);
        break;
    }
    r->kind = k;
    if (o.opk == Op::kMeta || o.opk == Op::kCycle) {
      r->off = 0;
      r->len = k == Kind::kWrite ? kCycleWrite : 0;
    } else if (k != Kind::kGetattr) {
      uint64_t blk;
      if (o.random) {
        blk = w->next_rand() % w->nblocks;
      } else {
        blk = c->cursor;
        c->cursor = (c->cursor + 1) % w->nblocks;
      }
      r->off = blk * o.size;
      r->len = uint32_t(std::min<uint64_t>(o.size, w->range - r->off));
    } else {
      r->off = 0;
      r->len = 0;
    }
  }
  r->t0 = w->now ? w->now : now_ns();
  int rc = -1;
  switch (r->kind) {
    case Kind::kRead: {
      READ3args a{};
      a.file = c->fh;
      a.offset = r->off;
      a.count = r->len;
      rc = rpc_nfs3_read_async(c->rpc, on_reply, &a, r);
      break;
    }
    case Kind::kWrite: {
      WRITE3args a{};
      a.file = o.opk == Op::kCycle ? r->fh : c->fh;
      a.offset = r->off;
      a.count = r->len;
      a.stable = o.unstable ? UNSTABLE : FILE_SYNC;
      a.data.data_len = r->len;
      a.data.data_val = reinterpret_cast<char *>(w->wbuf.data());
      rc = rpc_nfs3_write_async(c->rpc, on_reply, &a, r);
      break;
    }
    case Kind::kGetattr: {
      GETATTR3args a{};
      a.object = o.opk == Op::kMeta    ? c->filefh[size_t(r->file)]
                 : o.opk == Op::kCycle ? r->fh
                                       : c->fh;
      rc = rpc_nfs3_getattr_async(c->rpc, on_reply, &a, r);
      break;
    }
    case Kind::kLookup: {
      static thread_local std::string name;
      name = tree_file(r->file);
      LOOKUP3args a{};
      a.what.dir = c->dirfh;
      a.what.name = const_cast<char *>(name.c_str());
      rc = rpc_nfs3_lookup_async(c->rpc, on_reply, &a, r);
      break;
    }
    case Kind::kAccess: {
      ACCESS3args a{};
      a.object = c->filefh[size_t(r->file)];
      a.access = 0x3f;
      rc = rpc_nfs3_access_async(c->rpc, on_reply, &a, r);
      break;
    }
    case Kind::kCreate: {
      CREATE3args a{};
      a.where.dir = c->dirfh;
      a.where.name = r->name;
      a.how.mode = UNCHECKED;
      a.how.createhow3_u.obj_attributes.mode.set_it = 1;
      a.how.createhow3_u.obj_attributes.mode.set_mode3_u.mode = 0644;
      rc = rpc_nfs3_create_async(c->rpc, on_reply, &a, r);
      break;
    }
    case Kind::kRemove: {
      REMOVE3args a{};
      a.object.dir = c->dirfh;
      a.object.name = r->name;
      rc = rpc_nfs3_remove_async(c->rpc, on_reply, &a, r);
      break;
    }
    case Kind::kCommit: {
      COMMIT3args a{};
      a.file = o.opk == Op::kCycle ? r->fh : c->fh;
      a.offset = 0;
      a.count = 0;
      rc = rpc_nfs3_commit_async(c->rpc, on_reply, &a, r);
      break;
    }
  }
  if (rc != 0) {
    set_err(w->slot, "cannot queue an RPC: %s", rpc_get_error(c->rpc));
    w->slot->errors++;
    return false;
  }
  r->active = true;
  c->inflight++;
  return true;
}

const char *kind_name(Kind k) {
  switch (k) {
    case Kind::kRead:
      return "READ";
    case Kind::kWrite:
      return "WRITE";
    case Kind::kGetattr:
      return "GETATTR";
    case Kind::kCommit:
      return "COMMIT";
    case Kind::kLookup:
      return "LOOKUP";
    case Kind::kAccess:
      return "ACCESS";
    case Kind::kCreate:
      return "CREATE";
    case Kind::kRemove:
      return "REMOVE";
  }
  return "?";
}

void on_reply(rpc_context *rpc, int status, void *data, void *priv) {
  Req *r = static_cast<Req *>(priv);
  Conn *c = r->c;
  Worker *w = c->w;
  r->active = false;
  c->inflight--;
  if (w->teardown) return;
  ProcSlot *s = w->slot;
  const Options &o = *w->o;
  int64_t t = now_ns();
  w->now = t;
  bool ok = true;
  uint64_t bytes = 0;
  if (status != RPC_STATUS_SUCCESS) {
    const char *msg =
        (status == RPC_STATUS_ERROR && data) ? static_cast<const char *>(data) : rpc_get_error(rpc);
    set_err(s, "%s: rpc status %d (%s)", kind_name(r->kind), status, msg ? msg : "no detail");
    ok = false;
  } else {
    switch (r->kind) {
      case Kind::kRead: {
        auto *x = static_cast<READ3res *>(data);
        if (x->status != NFS3_OK) {
          set_err(s, "READ at %" PRIu64 ": nfsstat3 %d", r->off, int(x->status));
          ok = false;
          break;
        }
        const READ3resok &k = x->READ3res_u.resok;
        // A full block everywhere but at the file's end, where the last
        // block may be short and must then say EOF.
        uint64_t want = std::min<uint64_t>(r->len, w->fsize > r->off ? w->fsize - r->off : 0);
        if (k.count != want || k.data.data_len != k.count ||
            (k.count < r->len && r->off + k.count >= w->fsize && !k.eof)) {
          set_err(s, "READ at %" PRIu64 " of %u: got %u bytes (data %u, eof %d), expected %" PRIu64,
                  r->off, r->len, k.count, k.data.data_len, int(k.eof), want);
          ok = false;
        }
        bytes = k.count;
        break;
      }
      case Kind::kWrite: {
        auto *x = static_cast<WRITE3res *>(data);
        if (x->status != NFS3_OK) {
          set_err(s, "WRITE at %" PRIu64 ": nfsstat3 %d", r->off, int(x->status));
          ok = false;
          break;
        }
        const WRITE3resok &k = x->WRITE3res_u.resok;
        if (k.count != r->len) {
          set_err(s, "WRITE at %" PRIu64 ": wrote %u of %u bytes", r->off, k.count, r->len);
          ok = false;
        } else if (!o.unstable && k.committed != FILE_SYNC) {
          set_err(s, "WRITE FILE_SYNC answered committed=%d", int(k.committed));
          ok = false;
        }
        bytes = k.count;
        if (k.committed != FILE_SYNC && o.opk != Op::kCycle) {
          c->dirty = true;
          c->since_commit += k.count;
        }
        break;
      }
      case Kind::kGetattr: {
        auto *x = static_cast<GETATTR3res *>(data);
        if (x->status != NFS3_OK) {
          set_err(s, "GETATTR: nfsstat3 %d", int(x->status));
          ok = false;
        }
        break;
      }
      case Kind::kCommit: {
        auto *x = static_cast<COMMIT3res *>(data);
        if (x->status != NFS3_OK) {
          set_err(s, "COMMIT: nfsstat3 %d", int(x->status));
          ok = false;
        }
        break;
      }
      case Kind::kLookup: {
        auto *x = static_cast<LOOKUP3res *>(data);
        if (x->status != NFS3_OK) {
          set_err(s, "LOOKUP %s: nfsstat3 %d", tree_file(r->file).c_str(), int(x->status));
          ok = false;
        }
        break;
      }
      case Kind::kAccess: {
        auto *x = static_cast<ACCESS3res *>(data);
        if (x->status != NFS3_OK) {
          set_err(s, "ACCESS: nfsstat3 %d", int(x->status));
          ok = false;
        }
        break;
      }
      case Kind::kCreate: {
        auto *x = static_cast<CREATE3res *>(data);
        const post_op_fh3 *h = x->status == NFS3_OK ? &x->CREATE3res_u.resok.obj : nullptr;
        if (!h || !h->handle_follows || h->post_op_fh3_u.handle.data.data_len > NFS3_FHSIZE) {
          set_err(s, "CREATE %s: nfsstat3 %d%s", r->name, int(x->status),
                  h ? " without a handle" : "");
          ok = false;
        } else {
          const nfs_fh3 &fh = h->post_op_fh3_u.handle;
          memcpy(r->fhbuf, fh.data.data_val, fh.data.data_len);
          r->fh.data.data_len = fh.data.data_len;
          r->fh.data.data_val = r->fhbuf;
        }
        break;
      }
      case Kind::kRemove: {
        auto *x = static_cast<REMOVE3res *>(data);
        if (x->status != NFS3_OK) {
          set_err(s, "REMOVE %s: nfsstat3 %d", r->name, int(x->status));
          ok = false;
        }
        break;
      }
    }
  }
  // A cycle goes on with its next step (after a failure: a new file).
  if (o.opk == Op::kCycle && r != &c->commit) r->step = ok ? (r->step + 1) % kCycleSteps : 0;
  if (r->kind == Kind::kCommit && r == &c->commit) {
    if (ok) s->commits++;
    if (!ok) s->errors++;
    return;
  }
  bool in_window = t >= w->t_measure && t <= w->t_end;
  if (!ok) {
    if (in_window || t < w->t_measure) s->errors++;
  } else {
    std::atomic_ref<uint64_t>(s->live_ops).store(s->live_ops + 1, std::memory_order_relaxed);
    std::atomic_ref<uint64_t>(s->live_bytes)
        .store(s->live_bytes + bytes, std::memory_order_relaxed);
    if (in_window) {
      uint64_t lat = uint64_t(t - r->t0);
      s->hist[hist_index(lat)]++;
      s->lat_sum_ns += lat;
      s->lat_max_ns = std::max(s->lat_max_ns, lat);
      s->ops++;
      s->bytes += bytes;
      if (r->kind == Kind::kRead) s->reads++;
      if (r->kind == Kind::kWrite) s->writes++;
      if (r->kind == Kind::kGetattr) s->getattrs++;
    }
  }
  if (t < w->t_end && !w->stopping) {
    // Periodic COMMIT of UNSTABLE data, beside the --depth requests.
    if (c->since_commit >= kCommitEvery && !c->commit.active) {
      c->since_commit = 0;
      c->dirty = false;
      issue(&c->commit);
    }
    issue(r);
  }
}

// Returns the process exit status.
// Copies a handle libnfs holds into buf and points fh at it.
bool take_fh(nfsfh *f, char *buf, nfs_fh3 *fh) {
  nfs_fh *h = nfs_get_fh(f);
  if (!h || h->len <= 0 || h->len > NFS3_FHSIZE) return false;
  memcpy(buf, h->val, size_t(h->len));
  fh->data.data_len = u_int(h->len);
  fh->data.data_val = buf;
  return true;
}

// The tree's directory handle and (meta) the handles of its files.
bool open_tree(const Options &o, Conn *c, std::string *err) {
  std::string dir = tree_path(o);
  if (nfs_open(c->nfs, dir.c_str(), O_RDONLY, &c->dir) != 0 ||
      !take_fh(c->dir, c->dirbuf, &c->dirfh)) {
    *err = "cannot open " + dir + ": " + nfs_get_error(c->nfs);
    return false;
  }
  if (o.opk != Op::kMeta) return true;
  c->files.resize(kTreeFiles);
  c->filebufs.assign(kTreeFiles, std::vector<char>(NFS3_FHSIZE));
  c->filefh.resize(kTreeFiles);
  for (int i = 0; i < kTreeFiles; i++) {
    std::string f = dir + "/" + tree_file(i);
    if (nfs_open(c->nfs, f.c_str(), O_RDONLY, &c->files[size_t(i)]) != 0 ||
        !take_fh(c->files[size_t(i)], c->filebufs[size_t(i)].data(), &c->filefh[size_t(i)])) {
      *err = "cannot open " + f + ": " + nfs_get_error(c->nfs);
      return false;
    }
  }
  return true;
}

int worker_main(const Options &o, Shared *sh, int idx, uint64_t fsize) {
  ProcSlot *s = &sh->procs[idx];
  Worker w;
  w.o = &o;
  w.sh = sh;
  w.slot = s;
  w.fsize = fsize;
  w.range = std::min<uint64_t>(o.file_size, fsize);
  w.nblocks = (w.range + o.size - 1) / o.size;
  w.rng = 0x2545f4914f6cdd1dull ^ (uint64_t(getpid()) << 17) ^ uint64_t(idx + 1) * 0x9e37ull;
  w.wbuf.resize(std::max<uint64_t>(o.size, kCycleWrite));
  for (size_t i = 0; i < w.wbuf.size(); i++) w.wbuf[i] = (unsigned char)(w.next_rand() >> 32);
  w.conns.resize(size_t(o.conns));

  int total = o.procs * o.conns;
  std::string path = file_path(o);
  for (int i = 0; i < o.conns; i++) {
    Conn &c = w.conns[size_t(i)];
    c.w = &w;
    std::string err;
    c.nfs = mount_url(o.url, &err);
    if (!c.nfs) {
      set_err(s, "%s", err.c_str());
      st(s->state, -1);
      return 1;
    }
    int fl = (o.opk == Op::kRead || o.opk == Op::kGetattr) ? O_RDONLY : O_RDWR;
    if (nfs_open(c.nfs, path.c_str(), fl, &c.file) != 0) {
      set_err(s, "cannot open %s on %s: %s", path.c_str(), o.url.c_str(), nfs_get_error(c.nfs));
      st(s->state, -1);
      return 1;
    }
    nfs_fh *h = nfs_get_fh(c.file);
    if (!h || h->len <= 0 || h->len > NFS3_FHSIZE) {
      set_err(s, "nfs_get_fh: unexpected handle length %d", h ? h->len : -1);
      st(s->state, -1);
      return 1;
    }
    memcpy(c.fhbuf, h->val, size_t(h->len));
    c.fh.data.data_len = u_int(h->len);
    c.fh.data.data_val = c.fhbuf;
    if (o.opk == Op::kMeta || o.opk == Op::kCycle) {
      std::string err2;
      if (!open_tree(o, &c, &err2)) {
        set_err(s, "%s", err2.c_str());
        st(s->state, -1);
        return 1;
      }
    }
    c.rpc = nfs_get_rpc_context(c.nfs);
    // sequential streams start spread over the file
    c.cursor = uint64_t(idx * o.conns + i) * w.nblocks / uint64_t(total);
    c.reqs.resize(size_t(o.depth));
    for (auto &r : c.reqs) r.c = &c;
    c.commit.c = &c;
    c.commit.kind = Kind::kCommit;
  }
  st(s->state, 1);
  while (ld(sh->go) == 0) usleep(1000);
  if (ld(sh->go) != 1) return 1;
  w.t_measure = sh->t_measure;
  w.t_end = sh->t_end;

  w.now = now_ns();
  for (auto &c : w.conns)
    for (auto &r : c.reqs) issue(&r);

  std::vector<pollfd> pfds(w.conns.size());
  bool measuring = false, ended = false;
  double cpu0 = 0, cpu1 = 0;
  int64_t drain_deadline = 0;
  bool final_commit_sent = false;
  for (;;) {
    int64_t t = now_ns();
    w.now = 0;
    if (!measuring && t >= w.t_measure) {
      measuring = true;
      cpu0 = cpu_s_self();
    }
    if (!ended && t >= w.t_end) {
      ended = true;
      cpu1 = cpu_s_self();
      w.stopping = true;
      drain_deadline = t + kDrainNs;
    }
    int inflight = 0;
    for (auto &c : w.conns)
      if (!c.dead) inflight += c.inflight;
    if (ended && inflight == 0) {
      // Outside the window: the final COMMIT of UNSTABLE data.
      if (final_commit_sent) break;
      final_commit_sent = true;
      for (auto &c : w.conns)
        if (!c.dead && c.dirty) {
          c.dirty = false;
          issue(&c.commit);
        }
      continue;
    }
    if (ended && t > drain_deadline) {
      set_err(s, "%d requests still unanswered %.0f s after the end", inflight, kDrainNs / 1e9);
      s->errors += uint64_t(inflight);
      break;
    }
    for (size_t i = 0; i < w.conns.size(); i++) {
      pfds[i].fd = w.conns[i].dead ? -1 : nfs_get_fd(w.conns[i].nfs);
      pfds[i].events = short(w.conns[i].dead ? 0 : nfs_which_events(w.conns[i].nfs));
      pfds[i].revents = 0;
    }
    int64_t next = !measuring ? w.t_measure : !ended ? w.t_end : drain_deadline;
    int timeout = int(std::clamp<int64_t>((next - t) / 1'000'000 + 1, 0, 100));
    int n = poll(pfds.data(), nfds_t(pfds.size()), timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      set_err(s, "poll: %s", strerror(errno));
      break;
    }
    for (size_t i = 0; i < w.conns.size() && n > 0; i++) {
      Conn &c = w.conns[i];
      if (c.dead || !pfds[i].revents) continue;
      if (nfs_service(c.nfs, pfds[i].revents) < 0) {
        set_err(s, "connection %zu lost: %s", i, nfs_get_error(c.nfs));
        s->errors += uint64_t(c.inflight) + 1;
        c.dead = true;
      }
    }
    bool all_dead = true;
    for (auto &c : w.conns) all_dead = all_dead && c.dead;
    if (all_dead) break;
    if (ld(sh->go) == 2) break;  // the parent gave up (Ctrl-C)
  }
  if (!ended) cpu1 = cpu_s_self();
  if (!measuring) cpu0 = cpu1;
  s->cpu_s = cpu1 - cpu0;
  w.teardown = true;
  for (auto &c : w.conns) {
    if (!c.dead && c.inflight == 0) {
      if (c.file) nfs_close(c.nfs, c.file);
      if (c.dir) nfs_close(c.nfs, c.dir);
      for (nfsfh *f : c.files)
        if (f) nfs_close(c.nfs, f);
    }
    nfs_destroy_context(c.nfs);
  }
  st(s->state, 2);
  return 0;
}

// ---------------------------------------------------------------------------
// Server and machine sampling.

// The server's CPU time (utime + stime of /proc/PID/stat: every thread,
// exited ones included), in seconds; < 0 if it cannot be read.
double server_cpu_s(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')');
  if (!p) return -1;
  // fields after the comm: 3 state ... 14 utime 15 stime
  unsigned long long ut = 0, stime = 0;
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stime) != 2)
    return -1;
  return double(ut + stime) / double(sysconf(_SC_CLK_TCK));
}

// The sum of server_cpu_s over pids; -1 if any cannot be read.
double pids_cpu_s(const std::vector<int> &pids) {
  double sum = 0;
  for (int pid : pids) {
    double s = server_cpu_s(pid);
    if (s < 0) return -1;
    sum += s;
  }
  return sum;
}

// The process's resident set (VmRSS) in KiB, or -1.
long rss_kib(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &kib) == 1) break;
  fclose(f);
  return kib;
}

// Context switches (voluntary + nonvoluntary) of all of a process's threads
// over an interval.  Threads come and go (NFS-Ganesha grows and shrinks its
// pools) and an exited thread's counts vanish from /proc, so the parent
// samples every thread often (every 100 ms) and adds up each one's growth; a
// thread first seen after the start began during the interval and counts
// whole.  Only what a thread did between its last sample and its exit is
// missed, so the figure is a (tight) lower bound.
class CswTracker {
 public:
  // false if the process is gone
  bool sample(int pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) return false;
    seen_.clear();
    while (dirent *e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      char sp[300];
      snprintf(sp, sizeof sp, "/proc/%d/task/%s/status", pid, e->d_name);
      FILE *sf = fopen(sp, "r");
      if (!sf) continue;  // the thread just exited
      counts n;
      char line[256];
      while (fgets(line, sizeof line, sf)) {
        unsigned long long v;
        if (sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1) {
          n.all += v;
          n.vol += v;
        } else if (sscanf(line, "nonvoluntary_ctxt_switches: %llu", &v) == 1) {
          n.all += v;
        }
      }
      fclose(sf);
      seen_.emplace_back(atoi(e->d_name), n);
    }
    closedir(d);
    for (auto [tid, n] : seen_) {
      auto it = std::find_if(last_.begin(), last_.end(), [&](auto &x) { return x.first == tid; });
      if (it != last_.end()) {
        total_ += n.all >= it->second.all ? n.all - it->second.all : 0;
        voluntary_ += n.vol >= it->second.vol ? n.vol - it->second.vol : 0;
      } else if (started_) {
        total_ += n.all;
        voluntary_ += n.vol;
      }
    }
    last_.swap(seen_);
    started_ = true;
    return true;
  }
  uint64_t total() const { return total_; }
  // Only the switches where a thread went to sleep (the sleep/wakeup cost
  // kcont removes); the rest are preemptions, e.g. by client processes
  // sharing the CPUs.
  uint64_t voluntary() const { return voluntary_; }

 private:
  struct counts {
    uint64_t vol = 0, all = 0;
  };
  std::vector<std::pair<int, counts>> last_, seen_;
  uint64_t total_ = 0, voluntary_ = 0;
  bool started_ = false;
};

struct CpuSample {
  uint64_t busy = 0, total = 0;
};

CpuSample sample_machine() {
  CpuSample c;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return c;
  unsigned long long v[10] = {};
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                 &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
  fclose(f);
  if (n < 8) return c;
  // user nice system idle iowait irq softirq steal (guest is in user)
  for (int i = 0; i < 8; i++) c.total += v[i];
  c.busy = c.total - v[3] - v[4];
  return c;
}

std::string json_escape(const std::string &s) {
  std::string r;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      r += '\\';
      r += ch;
    } else if ((unsigned char)ch < 0x20) {
      char b[8];
      snprintf(b, sizeof b, "\\u%04x", ch);
      r += b;
    } else {
      r += ch;
    }
  }
  return r;
}

volatile sig_atomic_t g_interrupted = 0;
void on_signal(int) { g_interrupted = 1; }

}  // namespace

// The --json file, opened for writing; nullptr (with a message) if not.
FILE *open_json(const Options &o) {
  FILE *f = fopen(o.json.c_str(), "w");
  if (!f) fprintf(stderr, "kcont-nfsbench: cannot write %s: %s\n", o.json.c_str(), strerror(errno));
  return f;
}

// --run: the server measured while a shell command runs (see the top).
int run_mode(const Options &o) {
  if (o.server_pid <= 0 || (kill(o.server_pid, 0) != 0 && errno == ESRCH)) {
    fprintf(stderr, "kcont-nfsbench: --run needs the --server-pid of a running server\n");
    return 2;
  }
  CswTracker csw;
  const double cpu0 = server_cpu_s(o.server_pid);
  if (cpu0 < 0 || !csw.sample(o.server_pid)) {
    fprintf(stderr, "kcont-nfsbench: cannot read /proc/%d\n", o.server_pid);
    return 1;
  }
  const int64_t t0 = now_ns();
  pid_t child = fork();
  if (child < 0) {
    fprintf(stderr, "kcont-nfsbench: fork: %s\n", strerror(errno));
    return 1;
  }
  if (child == 0) {
    execl("/bin/sh", "sh", "-c", o.run.c_str(), static_cast<char *>(nullptr));
    _exit(127);
  }
  // Sampled every 100 ms; the end is taken when the command exits (its
  // pidfd becomes readable), not at the next sample.
  const int pidfd = int(syscall(SYS_pidfd_open, child, 0));
  int status = 0;
  int64_t t1 = 0;
  for (;;) {
    pid_t r = waitpid(child, &status, WNOHANG);
    if (r == child) break;
    if (r < 0 && errno != EINTR) {
      status = 1 << 8;
      break;
    }
    csw.sample(o.server_pid);
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      if (poll(&p, 1, 100) > 0) t1 = now_ns();
    } else {
      usleep(100 * 1000);  // no pidfd (kernel < 5.3): the end is known to 100 ms
    }
  }
  if (t1 == 0) t1 = now_ns();
  if (pidfd >= 0) close(pidfd);
  const double secs = double(t1 - t0) / 1e9;
  const bool alive = csw.sample(o.server_pid);
  const double cpu1 = server_cpu_s(o.server_pid);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  const double cpu = alive && cpu1 >= 0 ? cpu1 - cpu0 : -1;
  printf("run: exit %d, %.3f s; server: %.3f s CPU, %" PRIu64 " context switches (%" PRIu64
         " voluntary)%s\n",
         code, secs, cpu, csw.total(), csw.voluntary(), alive ? "" : " -- the server exited");
  if (!o.json.empty()) {
    FILE *f = open_json(o);
    if (!f) return 1;
    fprintf(f,
            "{\"run\": \"%s\", \"exit\": %d, \"elapsed_s\": %.4f, \"server_cpu_s\": %.4f, "
            "\"server_csw\": %" PRIu64 ", \"server_vcsw\": %" PRIu64 "}\n",
            json_escape(o.run).c_str(), code, secs, cpu, csw.total(), csw.voluntary());
    fclose(f);
  }
  return alive ? code : 1;
}

int main(int argc, char **argv) {
  Options o;
  CLI::App app{"kcont-nfsbench: NFSv3 load generator (libnfs async raw API)"};
  auto *url = app.add_option("--url", o.url, "nfs://HOST/EXPORT?version=3&nfsport=N&mountport=M");
  auto *run = app.add_option("--run", o.run,
                             "Generate no load: run this shell command and measure --server-pid "
                             "from its start to its exit");
  url->excludes(run);
  app.add_option("--op", o.op,
                 "read, write, getattr, mix (70% READ, 20% GETATTR, 10% WRITE), meta (LOOKUP, "
                 "GETATTR, ACCESS on a tree of 256 files) or cycle (CREATE, WRITE 4 KiB, COMMIT, "
                 "GETATTR, REMOVE per file)")
      ->check(CLI::IsMember({"read", "write", "getattr", "mix", "meta", "cycle"}))
      ->capture_default_str();
  app.add_option("--size", o.size, "Bytes per READ/WRITE (suffixes K, M: 1024-based)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app.add_option("--depth", o.depth, "Outstanding requests per connection")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--conns", o.conns, "Connections per process (one poll loop drives them)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--procs", o.procs, "Client processes (results summed)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--duration", o.duration, "Measured seconds")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "Seconds of load before measuring")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("--pattern", o.pattern, "seq or random offsets (aligned to --size)")
      ->check(CLI::IsMember({"seq", "random"}))
      ->capture_default_str();
  app.add_option("--file", o.file, "Test file, relative to the export")->capture_default_str();
  app.add_option("--file-size", o.file_size, "Bytes of the file to use (created/filled if short)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app.add_option("--stable", o.stable, "WRITE stability: unstable (+COMMIT) or file_sync")
      ->check(CLI::IsMember({"unstable", "file_sync"}))
      ->capture_default_str();
  app.add_option("--server-pid", o.server_pid, "Server PID: report its csw/op and CPU/op");
  app.add_option("--extra-pid", o.extra_pids,
                 "Another process whose CPU per op is reported beside the server's (e.g. a Ceph "
                 "daemon; repeatable, summed)");
  app.add_option("--json", o.json, "Also write the results as JSON to this file");
  app.add_flag("--quiet", o.quiet, "No progress line");
  CLI11_PARSE(app, argc, argv);
  if (!o.run.empty()) return run_mode(o);
  if (o.url.empty()) {
    fprintf(stderr, "kcont-nfsbench: --url is required (or --run)\n");
    return 2;
  }

  o.opk = o.op == "read"    ? Op::kRead
          : o.op == "write" ? Op::kWrite
          : o.op == "mix"   ? Op::kMix
          : o.op == "meta"  ? Op::kMeta
          : o.op == "cycle" ? Op::kCycle
                            : Op::kGetattr;
  o.random = o.pattern == "random";
  o.unstable = o.stable == "unstable";
  if (o.size == 0 || o.size > (1u << 30)) {
    fprintf(stderr, "kcont-nfsbench: --size must be 1 .. 1 GiB\n");
    return 2;
  }
  if (o.file_size < o.size) o.file_size = o.size;
  if (o.server_pid > 0 && kill(o.server_pid, 0) != 0 && errno == ESRCH) {
    fprintf(stderr, "kcont-nfsbench: --server-pid %d: no such process\n", o.server_pid);
    return 2;
  }
  for (int pid : o.extra_pids) {
    if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH)) {
      fprintf(stderr, "kcont-nfsbench: --extra-pid %d: no such process\n", pid);
      return 2;
    }
  }

  uint64_t fsize = 0;
  std::string err;
  if (!prepare_file(o, &fsize, &err) ||
      ((o.opk == Op::kMeta || o.opk == Op::kCycle) && !prepare_tree(o, &err))) {
    fprintf(stderr, "kcont-nfsbench: %s\n", err.c_str());
    return 1;
  }

  size_t shm_len = sizeof(Shared) + sizeof(ProcSlot) * size_t(o.procs);
  void *mem = mmap(nullptr, shm_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    fprintf(stderr, "kcont-nfsbench: mmap: %s\n", strerror(errno));
    return 1;
  }
  auto *sh = static_cast<Shared *>(mem);

  fflush(stdout);
  fflush(stderr);
  std::vector<pid_t> kids;
  for (int i = 0; i < o.procs; i++) {
    pid_t p = fork();
    if (p < 0) {
      fprintf(stderr, "kcont-nfsbench: fork: %s\n", strerror(errno));
      st(sh->go, 2);
      for (pid_t k : kids) waitpid(k, nullptr, 0);
      return 1;
    }
    if (p == 0) {
      signal(SIGINT, SIG_IGN);  // the parent decides when to stop
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() == 1) _exit(1);
      _exit(worker_main(o, sh, i, fsize));
    }
    kids.push_back(p);
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  auto fail_all = [&](const std::string &why) {
    st(sh->go, 2);
    for (pid_t k : kids) waitpid(k, nullptr, 0);
    fprintf(stderr, "kcont-nfsbench: %s\n", why.c_str());
    for (int i = 0; i < o.procs; i++)
      if (sh->procs[i].err[0])
        fprintf(stderr, "kcont-nfsbench: client %d: %s\n", i, sh->procs[i].err);
    return 1;
  };

  // Wait until every client is connected.
  int64_t ready_deadline = now_ns() + 60'000'000'000;
  for (;;) {
    int ready = 0, failed = 0;
    for (int i = 0; i < o.procs; i++) {
      int s = ld(sh->procs[i].state);
      ready += s == 1;
      failed += s == -1;
    }
    if (failed) return fail_all("a client process could not set up its connections");
    if (ready == o.procs) break;
    if (g_interrupted) return fail_all("interrupted");
    if (now_ns() > ready_deadline) return fail_all("clients not connected after 60 s");
    for (pid_t k : kids) {
      int ws;
      if (waitpid(k, &ws, WNOHANG) == k) {
        kids.erase(std::find(kids.begin(), kids.end(), k));
        return fail_all("a client process died while connecting");
      }
    }
    usleep(2000);
  }

  int64_t t0 = now_ns();
  sh->t_start = t0;
  sh->t_measure = t0 + int64_t(o.warmup * 1e9);
  sh->t_end = sh->t_measure + int64_t(o.duration * 1e9);
  st(sh->go, 1);

  bool tty = isatty(2);
  bool progress = !o.quiet;
  CswTracker csw;
  double srv_cpu0 = -1, srv_cpu1 = -1, extra_cpu0 = -1, extra_cpu1 = -1;
  long srv_rss = -1;
  bool srv_ok = o.server_pid > 0;
  constexpr int64_t kCswEvery = 100'000'000;
  int64_t next_csw = 0;
  CpuSample m0, m1;
  bool sampled0 = false, sampled1 = false;
  uint64_t last_ops = 0, last_bytes = 0, base_ops = 0, base_bytes = 0;
  int64_t last_t = t0, base_t = t0;
  auto live = [&](uint64_t *ops, uint64_t *bytes) {
    *ops = *bytes = 0;
    for (int i = 0; i < o.procs; i++) {
      *ops += ld(sh->procs[i].live_ops);
      *bytes += ld(sh->procs[i].live_bytes);
    }
  };
  double total_s = o.warmup + o.duration;
  for (int64_t tick = t0 + 1'000'000'000;;) {
    int64_t next = tick;
    if (!sampled0) next = std::min(next, sh->t_measure);
    if (!sampled1) next = std::min(next, sh->t_end);
    if (sampled0 && !sampled1 && srv_ok) next = std::min(next, next_csw);
    sleep_until(next);
    int64_t t = now_ns();
    if (!sampled0 && t >= sh->t_measure) {
      if (srv_ok) {
        srv_cpu0 = server_cpu_s(o.server_pid);
        srv_ok = srv_cpu0 >= 0 && csw.sample(o.server_pid);
        next_csw = t + kCswEvery;
      }
      if (!o.extra_pids.empty()) extra_cpu0 = pids_cpu_s(o.extra_pids);
      m0 = sample_machine();
      sampled0 = true;
      live(&base_ops, &base_bytes);
      base_t = t;
    }
    if (!sampled1 && t >= sh->t_end) {
      if (srv_ok) {
        srv_cpu1 = server_cpu_s(o.server_pid);
        srv_ok = srv_cpu1 >= 0 && csw.sample(o.server_pid);
        srv_rss = rss_kib(o.server_pid);
      }
      if (!o.extra_pids.empty() && extra_cpu0 >= 0) extra_cpu1 = pids_cpu_s(o.extra_pids);
      m1 = sample_machine();
      sampled1 = true;
    } else if (sampled0 && srv_ok && t >= next_csw) {
      srv_ok = csw.sample(o.server_pid);
      next_csw = t + kCswEvery;
    }
    if (t >= tick) {
      tick += 1'000'000'000;
      uint64_t ops, bytes;
      live(&ops, &bytes);
      double dt = double(t - last_t) / 1e9;
      double dt_avg = double(t - base_t) / 1e9;
      if (progress && dt > 0 && dt_avg > 0 && !sampled1) {
        // this second's rate, and the average so far (of the measured
        // window once it has begun)
        double el = double(t - t0) / 1e9;
        fprintf(stderr, "%s%-7s %9.0f ops/s (avg %9.0f) %8.1f MB/s (avg %8.1f)  %5.1f / %.1f s%s",
                tty ? "\r" : "", sampled0 ? "measure" : "warmup", double(ops - last_ops) / dt,
                double(ops - base_ops) / dt_avg, double(bytes - last_bytes) / dt / 1e6,
                double(bytes - base_bytes) / dt_avg / 1e6, el, total_s, tty ? "   " : "\n");
        fflush(stderr);
      }
      last_ops = ops, last_bytes = bytes, last_t = t;
    }
    if (g_interrupted) {
      if (progress && tty) fputc('\n', stderr);
      return fail_all("interrupted");
    }
    if (sampled1) break;
  }
  if (progress && tty) fputc('\n', stderr);

  // Collect the clients.
  bool child_failed = false;
  for (pid_t k : kids) {
    int ws = 0;
    while (waitpid(k, &ws, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) child_failed = true;
  }
  std::vector<uint64_t> hist(kBuckets, 0);
  uint64_t ops = 0, bytes = 0, errors = 0, commits = 0, reads = 0, writes = 0, getattrs = 0;
  uint64_t lat_sum = 0, lat_max = 0;
  double client_cpu = 0;
  for (int i = 0; i < o.procs; i++) {
    ProcSlot &p = sh->procs[i];
    if (ld(p.state) != 2) child_failed = true;
    ops += p.ops, bytes += p.bytes, errors += p.errors, commits += p.commits;
    reads += p.reads, writes += p.writes, getattrs += p.getattrs;
    lat_sum += p.lat_sum_ns;
    lat_max = std::max(lat_max, p.lat_max_ns);
    client_cpu += p.cpu_s;
    for (int b = 0; b < kBuckets; b++) hist[size_t(b)] += p.hist[b];
    if (p.err[0]) fprintf(stderr, "kcont-nfsbench: client %d: first error: %s\n", i, p.err);
  }
  if (child_failed) errors++;

  double secs = double(sh->t_end - sh->t_measure) / 1e9;
  double ops_s = double(ops) / secs;
  double mb_s = double(bytes) / secs / 1e6;
  double p50 = hist_quantile(hist.data(), ops, 0.50) / 1e3;
  double p99 = hist_quantile(hist.data(), ops, 0.99) / 1e3;
  double p999 = hist_quantile(hist.data(), ops, 0.999) / 1e3;
  double mean = ops ? double(lat_sum) / double(ops) / 1e3 : 0;
  double client_us_op = ops ? client_cpu * 1e6 / double(ops) : 0;
  bool have_srv = srv_ok && sampled1;
  if (o.server_pid > 0 && !have_srv)
    fprintf(stderr, "kcont-nfsbench: server %d could not be sampled (gone?)\n", o.server_pid);
  double srv_cpu = have_srv ? srv_cpu1 - srv_cpu0 : 0;
  double srv_csw = have_srv ? double(csw.total()) : 0;
  double srv_csw_op = have_srv && ops ? srv_csw / double(ops) : 0;
  double srv_vcsw_op = have_srv && ops ? double(csw.voluntary()) / double(ops) : 0;
  double srv_us_op = have_srv && ops ? srv_cpu * 1e6 / double(ops) : 0;
  const bool have_extra = extra_cpu0 >= 0 && extra_cpu1 >= 0;
  if (!o.extra_pids.empty() && !have_extra)
    fprintf(stderr, "kcont-nfsbench: an --extra-pid could not be sampled (gone?)\n");
  double extra_us_op = have_extra && ops ? (extra_cpu1 - extra_cpu0) * 1e6 / double(ops) : 0;
  double busy = m1.total > m0.total ? double(m1.busy - m0.busy) / double(m1.total - m0.total) : 0;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

  printf("%-8s %8s %6s %5s %5s %-6s %11s %9s %9s %9s %9s %7s %9s %9s %9s %9s %6s\n", "op", "size",
         "depth", "conns", "procs", "pattrn", "ops/s", "MB/s", "p50(us)", "p99(us)", "p99.9(us)",
         "errors", "srv_csw/op", "srv_vcsw", "srv_us/op", "cli_us/op", "busy%");
  char csw_s[32] = "-", vcsw_s[32] = "-", srv_s[32] = "-";
  if (have_srv) {
    snprintf(csw_s, sizeof csw_s, "%.3f", srv_csw_op);
    snprintf(vcsw_s, sizeof vcsw_s, "%.4f", srv_vcsw_op);
    snprintf(srv_s, sizeof srv_s, "%.2f", srv_us_op);
  }
  printf("%-8s %8" PRIu64 " %6d %5d %5d %-6s %11.0f %9.1f %9.1f %9.1f %9.1f %7" PRIu64
         " %9s %9s %9s %9.2f %6.1f\n",
         o.op.c_str(), o.size, o.depth, o.conns, o.procs, o.pattern.c_str(), ops_s, mb_s, p50, p99,
         p999, errors, csw_s, vcsw_s, srv_s, client_us_op, busy * 100);
  if (commits) printf("commits: %" PRIu64 "\n", commits);
  if (have_extra) printf("extra processes' CPU: %.2f us/op\n", extra_us_op);
  if (have_srv && srv_rss >= 0) printf("server RSS: %.1f MB\n", double(srv_rss) / 1024);

  if (!o.json.empty()) {
    FILE *f = open_json(o);
    if (!f) return 1;
    fprintf(f,
            "{\"url\": \"%s\", \"op\": \"%s\", \"size\": %" PRIu64
            ", \"depth\": %d, \"conns\": %d, \"procs\": %d, \"pattern\": \"%s\", \"stable\": "
            "\"%s\", \"file\": \"%s\", \"file_size\": %" PRIu64
            ", \"warmup_s\": %.3f, \"duration_s\": %.6f,\n"
            " \"ops\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"reads\": %" PRIu64
            ", \"writes\": %" PRIu64 ", \"getattrs\": %" PRIu64 ", \"commits\": %" PRIu64
            ", \"errors\": %" PRIu64
            ",\n \"ops_per_s\": %.1f, \"mb_per_s\": %.3f,"
            " \"lat_p50_us\": %.2f, \"lat_p99_us\": %.2f, \"lat_p999_us\": %.2f,"
            " \"lat_mean_us\": %.2f, \"lat_max_us\": %.2f,\n",
            json_escape(o.url).c_str(), o.op.c_str(), o.size, o.depth, o.conns, o.procs,
            o.pattern.c_str(), o.stable.c_str(), json_escape(o.file).c_str(), fsize, o.warmup, secs,
            ops, bytes, reads, writes, getattrs, commits, errors, ops_s, mb_s, p50, p99, p999, mean,
            double(lat_max) / 1e3);
    if (have_srv)
      fprintf(f,
              " \"server_pid\": %d, \"server_csw\": %.0f, \"server_csw_per_op\": %.5f,"
              " \"server_voluntary_csw_per_op\": %.5f,"
              " \"server_cpu_s\": %.4f, \"server_cpu_us_per_op\": %.3f,"
              " \"server_cpu_share\": %.4f, \"server_rss_kib\": %ld,\n",
              o.server_pid, srv_csw, srv_csw_op, srv_vcsw_op, srv_cpu, srv_us_op, srv_cpu / secs,
              srv_rss);
    else
      fprintf(f,
              " \"server_pid\": null, \"server_csw\": null, \"server_csw_per_op\": null,"
              " \"server_voluntary_csw_per_op\": null,"
              " \"server_cpu_s\": null, \"server_cpu_us_per_op\": null,"
              " \"server_cpu_share\": null, \"server_rss_kib\": null,\n");
    if (have_extra)
      fprintf(f, " \"extra_cpu_us_per_op\": %.3f,\n", extra_us_op);
    else
      fprintf(f, " \"extra_cpu_us_per_op\": null,\n");
    fprintf(f,
            " \"client_cpu_s\": %.4f, \"client_cpu_us_per_op\": %.3f, \"client_cpu_share\": %.4f,"
            " \"machine_busy_frac\": %.4f, \"machine_cpus\": %ld}\n",
            client_cpu, client_us_op, client_cpu / secs, busy, ncpu);
    fclose(f);
  }
  munmap(mem, shm_len);
  return errors ? 3 : 0;
}
