// SPDX-License-Identifier: BSD-2-Clause
// fuzz_rpc.cc -- libFuzzer target for kcont-nfsd's request path: record
// marking (record_reader), call decoding and the whole protocol
// (serve_call: NFSv3, MOUNT v3, file handles, the export rules) -- and the
// same records through the kcont transport, where they reach vop_start and
// the backends' start (without a thread where they can), the 64 KiB reply
// buffers and the buf/extent READ paths.
//
// How: the input is one TCP byte stream.  It is fed to a record_reader in
// chunks whose sizes come from a PRNG seeded by the input's bytes (so
// every split of fragment headers and bodies gets exercised, and a given
// input always splits the same way), into a record buffer of
// server_config::max_record bytes.  Each complete record is copied into a
// heap buffer of exactly its length (ASan sees any overread) and served by
// a server exporting two temporary directories (one rw without root
// squash, one ro with squashing), created once in LLVMFuzzerInitialize and
// populated with a file, a subdirectory and symlinks.
//
// Real file handles and export paths are unguessable (inode numbers,
// mkdtemp names), so the harness expands placeholders before serving: the
// XDR opaque `00000004 'F' 'H' k 00` becomes the handle of object k, and
// `00000004 'P' 'A' k 00` the path of object k (tables below; the seeds in
// corpus/ use them).  Anything else is served as is.
//
// The records served go to the kcont transport too (serving the same
// server on two CPUs, on loopback ports below the ephemeral range):
// re-framed into fragments cut by the same PRNG, sent on a new TCP
// connection, which is then half-closed; every reply is read until the
// server closes.  Each must be a well-formed record carrying the xid of a
// call that was sent, and there are never more replies than calls.  The
// memory export holds a file of 200,000 bytes and a directory (handles 9
// and 10) so that the seeds reach every procedure on the memory backend.
//
// Checks beyond the sanitizers: every reply record is well formed (its
// mark matches its length, it carries the call's xid) and the reply
// buffer never overflowed.  Between inputs the fixed objects are restored
// when a call removed them, and every few thousand inputs the export is
// swept of whatever the fuzzer created.  With KCONT_FUZZ_STATS set, the
// server's per-procedure counters are printed at exit.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "internal.h"
#include "kcont/kcont.h"
#include "kcont/nfsd/rpc.h"
#include "kcont/nfsd/server.h"
#include "kcont/nfsd/transport.h"
#include "loopback_transport.h"  // nfsd/tests

using namespace kc::nfs;

namespace {

// Objects whose handles the placeholders name: (export index, path
// relative to that export's root; "" is the root).
struct object {
  int exp;
  const char *rel;
};
// Export 2 is the in-memory backend (vfs(9)): the same protocol code on a
// second file-system implementation.
constexpr object HANDLES[] = {
    {0, ""},     {0, "file"},      {0, "dir"}, {0, "link"}, {0, "escape"}, {1, ""},
    {1, "file"}, {0, "dir/inner"}, {2, ""},    {2, "file"}, {2, "dir"},
};
constexpr uint32_t MEMORY_FILE_BYTES = 200000;  // over the kcont reply buffer
constexpr int NHANDLES = int(sizeof HANDLES / sizeof HANDLES[0]);
constexpr object PATHS[] = {{0, ""}, {1, ""}, {0, "dir"}, {0, "link"}, {0, "escape/ssl"}, {2, ""}};
constexpr const char *MEMORY_EXPORT = "/kcont-fuzz-memory";
constexpr uint64_t MEMORY_BYTES = 64ull << 20;
constexpr int NPATHS = int(sizeof PATHS / sizeof PATHS[0]);
const char *const FIXED_NAMES[] = {"file", "dir", "link", "escape"};

struct world {
  std::string base;
  std::string dirs[2];
  std::unique_ptr<server> srv;
  std::vector<uint8_t> rec;  // the record_reader's buffer
  std::vector<uint8_t> out;  // the reply buffer
  nfs_fh handles[NHANDLES];
  std::string paths[NPATHS];
  uint64_t inputs = 0;
  // The kcont transport serving srv too, and where it listens.
  std::unique_ptr<transport> ktp;
  sockaddr_in kaddr{};
  std::vector<std::vector<uint8_t>> sent;  // this input's records, expanded
};

world *W = nullptr;

void die(const char *what) {
  std::fprintf(stderr, "fuzz_rpc: %s: %s\n", what, std::strerror(errno));
  std::abort();
}

void make_file(const std::string &p, const char *content) {
  int fd = open(p.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) die(p.c_str());
  if (write(fd, content, std::strlen(content)) < 0) die(p.c_str());
  close(fd);
}

// Runs one VFS request as root in this thread; its error.
int vfs_run(kc::vfs::vreq *r) {
  r->cred = kc::vfs::vcred{0, 0, 0, {}};
  return kc::vfs::vop_call(r);
}

// The memory export's fixed objects: `file` (MEMORY_FILE_BYTES) and `dir`,
// made again when missing.  True if something was made.
bool populate_memory(kc::vfs::mount *fs) {
  using namespace kc::vfs;
  bool made = false;
  for (const char *name : {"file", "dir"}) {
    auto r = std::make_unique<vreq>();
    r->op = vop::lookup;
    r->fs = fs;
    r->fh = vfs_root(fs);
    std::strcpy(r->name, name);
    if (vfs_run(r.get()) == 0) continue;
    const bool dir = name[0] == 'd';
    r = std::make_unique<vreq>();
    r->op = dir ? vop::mkdir : vop::create;
    r->fs = fs;
    r->fh = vfs_root(fs);
    std::strcpy(r->name, name);
    r->sattr.set_mode = true;
    r->sattr.mode = dir ? 0777 : 0666;
    if (vfs_run(r.get()) != 0 || !r->have_res_fh) die("memory export: create");
    made = true;
    if (dir) continue;
    std::vector<uint8_t> data(MEMORY_FILE_BYTES);
    for (size_t i = 0; i < data.size(); i++) data[i] = uint8_t(i * 7);
    vfh f = r->res_fh;
    r = std::make_unique<vreq>();
    r->op = vop::write;
    r->fs = fs;
    r->fh = f;
    r->data = data.data();
    r->count = uint32_t(data.size());
    r->stable = kc::vfs::stable_how::file_sync;
    if (vfs_run(r.get()) != 0) die("memory export: write");
  }
  return made;
}

// (Re)creates the fixed objects of the exports and recomputes their
// handles.  Cheap when nothing is missing.
void populate(world &w) {
  auto exists = [](const std::string &p) {
    struct stat st;
    return lstat(p.c_str(), &st) == 0;
  };
  bool changed = false;
  for (int e = 0; e < 2; e++) {
    const std::string &d = w.dirs[e];
    chmod(d.c_str(), 0755);  // a SETATTR may have changed them
    if (!exists(d + "/file")) {
      make_file(d + "/file", "0123456789abcdef\n");
      changed = true;
    }
  }
  const std::string &d = w.dirs[0];
  if (!exists(d + "/dir")) {
    if (mkdir((d + "/dir").c_str(), 0755) != 0) die("mkdir dir");
    changed = true;
  }
  if (!exists(d + "/dir/inner")) {
    make_file(d + "/dir/inner", "inner\n");
    changed = true;
  }
  if (!exists(d + "/link")) {
    if (symlink("file", (d + "/link").c_str()) != 0) die("symlink link");
    changed = true;
  }
  if (!exists(d + "/escape")) {
    if (symlink("/etc", (d + "/escape").c_str()) != 0) die("symlink escape");
    changed = true;
  }
  auto table = w.srv->exports();
  if (populate_memory(table->exports[2].fs)) changed = true;
  if (!changed && w.handles[0].len) return;
  for (int i = 0; i < NHANDLES; i++) {
    const export_entry &ex = table->exports[size_t(HANDLES[i].exp)];
    w.handles[i] = nfs_fh{};
    auto r = std::make_unique<kc::vfs::vreq>();  // the VFS walks to it as the server would
    r->op = kc::vfs::vop::walk;
    r->fs = ex.fs;
    r->fh = kc::vfs::vfs_root(ex.fs);
    r->data = reinterpret_cast<const uint8_t *>(HANDLES[i].rel);
    r->count = uint32_t(std::strlen(HANDLES[i].rel));
    if (vfs_run(r.get()) == 0 && r->have_res_fh)  // on failure: an empty handle
      fh_wrap(ex.id, r->res_fh, &w.handles[i]);
  }
}

// Removes whatever the fuzzer created in the exports.
void sweep(world &w) {
  for (const std::string &d : w.dirs) {
    std::error_code ec;
    for (auto &ent : std::filesystem::directory_iterator(d, ec)) {
      std::string name = ent.path().filename();
      bool keep = false;
      for (const char *f : FIXED_NAMES) keep |= name == f;
      if (!keep) std::filesystem::remove_all(ent.path(), ec);
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(w.dirs[0] + "/dir", ec);  // contents too
  std::filesystem::remove_all(w.dirs[1] + "/file", ec);
  std::filesystem::remove_all(w.dirs[0] + "/file", ec);  // may have grown huge
  populate(w);
}

void cleanup() {
  if (W && W->ktp) {
    W->ktp->stop();
    W->ktp.reset();
    kc::kcont_stop();
  }
  if (W && W->srv && std::getenv("KCONT_FUZZ_STATS"))
    std::fprintf(stderr, "fuzz_rpc: server counters after %llu inputs\n%s",
                 (unsigned long long)W->inputs, format_stats(*W->srv).c_str());
  if (W && !W->base.empty()) {
    kc::vfs::vfs_cred_reset();
    std::error_code ec;
    std::filesystem::remove_all(W->base, ec);
  }
}

// Copies the record, expanding the placeholders, into an exactly sized
// buffer.
std::vector<uint8_t> expand(const world &w, const uint8_t *p, size_t n, size_t max) {
  std::vector<uint8_t> r;
  r.reserve(n);
  auto put32 = [&](uint32_t v) {
    uint8_t b[4];
    xdr_out::put32(b, v);
    r.insert(r.end(), b, b + 4);
  };
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n && p[i] == 0 && p[i + 1] == 0 && p[i + 2] == 0 && p[i + 3] == 4 &&
        p[i + 7] == 0 && r.size() + 1100 <= max) {
      if (p[i + 4] == 'F' && p[i + 5] == 'H' && p[i + 6] < NHANDLES) {
        const nfs_fh &fh = w.handles[p[i + 6]];
        put32(fh.len);
        r.insert(r.end(), fh.data, fh.data + fh.len);
        r.resize(r.size() + xdr_pad(fh.len));
        i += 8;
        continue;
      }
      if (p[i + 4] == 'P' && p[i + 5] == 'A' && p[i + 6] < NPATHS) {
        const std::string &s = w.paths[p[i + 6]];
        put32(uint32_t(s.size()));
        r.insert(r.end(), s.begin(), s.end());
        r.resize(r.size() + xdr_pad(s.size()));
        i += 8;
        continue;
      }
    }
    r.push_back(p[i++]);
  }
  r.shrink_to_fit();
  return r;
}

uint64_t splitmix(uint64_t &s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void check(bool ok, const char *what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_rpc: invariant violated: %s\n", what);
    std::abort();
  }
}

// Serves one record; false when the connection must be closed.  The
// expanded record is kept for the kcont transport (w.sent).
bool serve_record(world &w, const uint8_t *p, size_t n, uint64_t &rng) {
  w.sent.push_back(expand(w, p, n, w.srv->cfg.max_record));
  std::vector<uint8_t> rec = w.sent.back();  // exactly sized: ASan sees overreads
  request req;
  req.rec = rec.data();
  req.len = rec.size();
  uint64_t r = splitmix(rng);
  switch (r % 4) {  // the client's address: export_access and DUMP
    case 0:
    case 1: {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = (r & 4) ? htonl(INADDR_LOOPBACK) : htonl(0x0a000001);
      std::memcpy(&req.peer, &a, sizeof a);
      break;
    }
    case 2: {
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_loopback;
      if (r & 4) inet_pton(AF_INET6, "::ffff:127.0.0.1", &a.sin6_addr);
      std::memcpy(&req.peer, &a, sizeof a);
      break;
    }
    default:
      req.peer.ss_family = AF_UNIX;  // no address: export_access refuses
      break;
  }
  req.allow_file_part = (r & 8) != 0;
  req.out = xdr_out(w.out.data(), w.out.size());
  serve_result res = serve_call(*w.srv, req);
  kc::vfs::vfs_cred_reset();  // serve_call leaves the thread with the caller's identity
  if (res != serve_result::reply) {
    check(req.out.size() == 0, "no reply bytes for drop/close");
    check(req.file.ref == nullptr && req.data_buf == nullptr, "no data without a reply");
    return res == serve_result::drop;
  }
  check(req.out.ok(), "reply buffer overflow reached the transport");
  check(req.out.size() >= 24, "reply shorter than a header");
  const uint8_t *o = w.out.data();
  uint32_t mark = uint32_t(o[0]) << 24 | uint32_t(o[1]) << 16 | uint32_t(o[2]) << 8 | o[3];
  check(mark == (0x80000000u |
                 uint32_t(req.out.size() - 4 + req.data_len + req.file.len + req.file.pad)),
        "record mark matches the reply length");
  check(rec.size() >= 4 && std::memcmp(o + 4, rec.data(), 4) == 0, "reply carries the xid");
  if (req.file.ref) {
    check(req.allow_file_part, "file part only when allowed");
    check(req.file.len <= MAX_IO && req.file.pad < 4, "file part bounds");
  }
  release_reply(req);
  return true;
}

uint32_t get32(const uint8_t *p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

// connect(2) that a signal does not end (libFuzzer's SIGALRM for its
// -timeout check interrupts a connect that has to wait, and the connection
// then completes in the background): waits for it and returns its result.
int connect_retrying(int fd, const sockaddr_in &addr) {
  if (connect(fd, reinterpret_cast<const sockaddr *>(&addr), sizeof addr) == 0) return 0;
  if (errno != EINTR) return -1;
  pollfd p{fd, POLLOUT, 0};
  int n;
  while ((n = poll(&p, 1, -1)) < 0 && errno == EINTR) {
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return -1;
  errno = err;
  return err == 0 ? 0 : -1;
}

// Sends w.sent through the kcont transport on a new connection, cut into
// fragments by rng, half-closes it and checks every reply until the
// server closes.
void through_kcont(world &w, uint64_t &rng) {
  if (w.sent.empty()) return;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (connect_retrying(fd, w.kaddr) != 0) die("connect to the kcont transport");
  std::vector<uint8_t> stream;
  std::set<uint32_t> xids;
  for (const auto &rec : w.sent) {
    if (rec.size() >= 4) xids.insert(get32(rec.data()));
    size_t frags = 1 + splitmix(rng) % 3, at = 0;
    for (size_t i = 0; i < frags; i++) {
      size_t len = i + 1 == frags ? rec.size() - at : (rec.size() - at) / 2;
      uint8_t mark[4];
      xdr_out::put32(mark, uint32_t(len) | (i + 1 == frags ? 0x80000000u : 0));
      stream.insert(stream.end(), mark, mark + 4);
      stream.insert(stream.end(), rec.begin() + long(at), rec.begin() + long(at + len));
      at += len;
    }
  }
  // Send and receive together (poll): a client that only sent would stall
  // a server whose replies fill the socket.
  size_t out_at = 0, replies = 0;
  std::vector<uint8_t> in;
  bool open = true;
  while (open) {
    pollfd pf{fd, short(POLLIN | (out_at < stream.size() ? POLLOUT : 0)), 0};
    if (poll(&pf, 1, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if ((pf.revents & POLLOUT) && out_at < stream.size()) {
      ssize_t k =
          send(fd, stream.data() + out_at, stream.size() - out_at, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (k > 0) out_at += size_t(k);
      if (k < 0 && errno != EAGAIN && errno != EINTR) out_at = stream.size();  // reset
      if (out_at == stream.size()) shutdown(fd, SHUT_WR);
    }
    if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
      uint8_t buf[65536];
      ssize_t k = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (k > 0) in.insert(in.end(), buf, buf + k);
      if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) open = false;
    }
    // Every complete reply record in hand.
    size_t at = 0;
    while (in.size() - at >= 4) {
      uint32_t m = get32(in.data() + at), len = m & 0x7fffffffu;
      check((m & 0x80000000u) != 0, "kcont: replies are single-fragment records");
      if (in.size() - at - 4 < len) break;
      const uint8_t *rep = in.data() + at + 4;
      check(len >= 12, "kcont: reply shorter than a header");
      check(get32(rep + 4) == 1, "kcont: a REPLY message");
      check(xids.count(get32(rep)) == 1, "kcont: a reply carries the xid of a call");
      check(++replies <= w.sent.size(), "kcont: no more replies than calls");
      at += 4 + len;
    }
    in.erase(in.begin(), in.begin() + long(at));
  }
  check(in.empty(), "kcont: a reply record cut short");
  close(fd);
}

// Starts kcont and the kcont transport on srv, on the first free pair of
// loopback ports from 24000 (below the ephemeral range), spread by pid.
void start_kcont(world &w) {
  std::string err;
  if (register_nfsd_levels() != 0) die("register_nfsd_levels");
  kc::config cfg;
  cfg.cpus = 2;
  if (kc::kcont_start(cfg, &err) != 0) {
    std::fprintf(stderr, "fuzz_rpc: kcont_start: %s\n", err.c_str());
    std::exit(1);
  }
  sockaddr_in mount_at;
  w.ktp = start_loopback_transport(*w.srv, 16, 24000, 6000, &w.kaddr, &mount_at, &err, 100);
  if (!w.ktp) {
    std::fprintf(stderr, "fuzz_rpc: no free port pair for the kcont transport: %s\n", err.c_str());
    std::exit(1);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  if (geteuid() != 0) {
    std::fprintf(stderr,
                 "fuzz_rpc: needs root (the server's file handles use open_by_handle_at)\n");
    std::exit(1);
  }
  W = new world;
  char t[] = "/tmp/kcont-nfsd-fuzz.XXXXXX";
  if (!mkdtemp(t)) die("mkdtemp");
  W->base = t;
  std::atexit(cleanup);
  chmod(t, 0755);
  W->dirs[0] = W->base + "/rw";
  W->dirs[1] = W->base + "/ro";
  for (auto &d : W->dirs)
    if (mkdir(d.c_str(), 0755) != 0) die(d.c_str());
  W->srv = std::make_unique<server>();
  std::string err;
  auto table = parse_exports(W->dirs[0] + " *(rw,no_root_squash)\n" + W->dirs[1] +
                                 " 127.0.0.1(ro,root_squash) ::1(ro,all_squash,anonuid=7)\n",
                             "fuzz", &err);
  if (!table) {
    std::fprintf(stderr, "fuzz_rpc: %s\n", err.c_str());
    std::exit(1);
  }
  {
    export_entry mem;  // not a directory of this machine: built by hand
    mem.path = MEMORY_EXPORT;
    mem.id = 0x6d656d30;
    mem.fs = kc::vfs::vfs_mount_memory(MEMORY_BYTES, &err);
    if (mem.fs) mem.mount = std::shared_ptr<kc::vfs::mount>(mem.fs, kc::vfs::vfs_unmount);
    if (!mem.fs) {
      std::fprintf(stderr, "fuzz_rpc: memory mount: %s\n", err.c_str());
      std::exit(1);
    }
    export_client any;
    any.spec = "*";
    any.any = true;
    any.opts.rw = true;
    any.opts.root_squash = false;
    mem.clients.push_back(any);
    table->exports.push_back(std::move(mem));
  }
  W->srv->set_exports(table);
  W->rec.resize(W->srv->cfg.max_record);
  W->out.resize(THREADS_REPLY_BUFFER);
  for (int i = 0; i < NPATHS; i++)
    W->paths[i] = (PATHS[i].exp == 2 ? std::string(MEMORY_EXPORT) : W->dirs[PATHS[i].exp]) +
                  (PATHS[i].rel[0] ? std::string("/") + PATHS[i].rel : "");
  populate(*W);
  start_kcont(*W);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  world &w = *W;
  if (++w.inputs % 4096 == 0)
    sweep(w);
  else
    populate(w);

  // Chunk sizes from the input itself.
  uint64_t rng = size;
  for (size_t i = 0; i < size && i < 64; i++) rng = (rng ^ data[i]) * 0x100000001b3ull;

  w.sent.clear();
  record_reader rr;
  rr.begin(w.rec.data(), w.rec.size());
  size_t pos = 0;
  while (pos < size) {
    size_t want = 0;
    uint8_t *dst = rr.want(&want);
    check(want > 0, "record_reader wants bytes");
    uint64_t r = splitmix(rng);
    size_t chunk = (r & 3) == 0 ? 1 + (r >> 8) % 3 : 1 + (r >> 8) % 512;
    size_t k = std::min({want, chunk, size - pos});
    std::memcpy(dst, data + pos, k);
    pos += k;
    record_reader::result res = rr.commit(k);
    if (res == record_reader::more) continue;
    if (res != record_reader::record) break;  // too_big / bad_fragment: connection closed
    check(rr.length() > 0 && rr.length() <= w.rec.size(), "record length in bounds");
    if (!serve_record(w, w.rec.data(), rr.length(), rng)) break;
    rr.begin(w.rec.data(), w.rec.size());
  }
  through_kcont(w, rng);
  return 0;
}
