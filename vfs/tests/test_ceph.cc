// SPDX-License-Identifier: BSD-2-Clause
// The CephFS back end against a real cluster (the test command's ceph
// stage brings one up and names its ceph.conf in KCONT_TEST_CEPH_CONF;
// without it these fail under CI=true and are skipped otherwise): handles
// that survive a remount and are refused when forged or another export's,
// a directory moved out of the export, two clients of one file system
// (close-to-open through COMMIT), READDIR cookies over a large directory,
// a quota that runs out, and the client's in-memory log quieted.  Each
// test works in a directory of its own, made through a mount of the file
// system's root.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "creds.h"
#include "fixture.h"  // core/tests: KCONT_NOT_TESTED
#include "kcont/buf.h"
#include "kcont/kcont.h"
#include "kcont/vfs.h"

using namespace kc::vfs;
using namespace kcvfstest;

namespace {

const char *ceph_conf() {
  const char *c = std::getenv("KCONT_TEST_CEPH_CONF");
  return c && *c ? c : nullptr;
}

#define NEED_CEPH()                                                               \
  do {                                                                            \
    if (!ceph_conf()) KCONT_NOT_TESTED("no Ceph cluster (KCONT_TEST_CEPH_CONF)"); \
  } while (0)

mount *mount_ceph(const std::string &path, std::string *err) {
  return vfs_mount("ceph", {{"conf", ceph_conf()}, {"path", path}}, err);
}

struct call {
  vreq r;
  call(vop op, mount *fs, const vfh &fh, const char *name = "") {
    r.op = op;
    r.fs = fs;
    r.fh = fh;
    r.cred = ROOT;
    std::snprintf(r.name, sizeof r.name, "%s", name);
  }
  int run() { return vop_call(&r); }
};

vfh make(vop op, mount *fs, const vfh &dir, const char *name, int *err = nullptr) {
  call c(op, fs, dir, name);
  c.r.sattr.set_mode = true;
  c.r.sattr.mode = op == vop::mkdir ? 0777 : 0666;
  int e = c.run();
  if (err) *err = e;
  EXPECT_TRUE(err || e == 0) << vop_name(op) << " " << name << ": " << std::strerror(e);
  return c.r.res_fh;
}

int write_at(mount *fs, const vfh &fh, uint64_t off, const std::string &data, stable_how how) {
  call c(vop::write, fs, fh);
  c.r.offset = off;
  c.r.data = reinterpret_cast<const uint8_t *>(data.data());
  c.r.count = uint32_t(data.size());
  c.r.stable = how;
  int e = c.run();
  if (e == 0 && c.r.written != data.size()) return EIO;
  return e;
}

std::string read_all(mount *fs, const vfh &fh, uint32_t n, int *err) {
  std::string out(n, '\0');
  call c(vop::read, fs, fh);
  c.r.count = n;
  c.r.dst = reinterpret_cast<uint8_t *>(out.data());
  c.r.dst_cap = n;
  *err = c.run();
  out.resize(c.r.rd.n);
  return out;
}

int getattr(mount *fs, const vfh &fh, vattr *a = nullptr) {
  call c(vop::getattr, fs, fh);
  int e = c.run();
  if (a) *a = c.r.obj.post;
  return e;
}

// A directory of the test's own below the file system's root, and a mount
// of it (the export).
struct scratch {
  mount *top = nullptr, *fs = nullptr;
  std::string path;
  vfh dir_in_top;
  explicit scratch(const char *what) {
    std::string err;
    top = mount_ceph("/", &err);
    EXPECT_NE(top, nullptr) << err;
    if (!top) return;
    std::string name = std::string(what) + "-" + std::to_string(getpid());
    dir_in_top = make(vop::mkdir, top, vfs_root(top), name.c_str());
    path = "/" + name;
    fs = mount_ceph(path, &err);
    EXPECT_NE(fs, nullptr) << err;
  }
  ~scratch() {
    if (fs) vfs_unmount(fs);
    if (top) vfs_unmount(top);
    vfs_cred_reset();
  }
};

TEST(VfsCeph, HandlesSurviveARemountAndNameTheSameObject) {
  NEED_CEPH();
  scratch s("remount");
  ASSERT_NE(s.fs, nullptr);
  vfh f = make(vop::create, s.fs, vfs_root(s.fs), "kept");
  ASSERT_EQ(write_at(s.fs, f, 0, "survives a restart", stable_how::file_sync), 0);
  vattr before;
  ASSERT_EQ(getattr(s.fs, f, &before), 0);
  vfs_unmount(s.fs);
  std::string err;
  s.fs = mount_ceph(s.path, &err);  // a new client: nothing of the old one's cache
  ASSERT_NE(s.fs, nullptr) << err;
  vattr after;
  ASSERT_EQ(getattr(s.fs, f, &after), 0);
  EXPECT_EQ(after.fileid, before.fileid);
  int e = 0;
  EXPECT_EQ(read_all(s.fs, f, 64, &e), "survives a restart");
  EXPECT_EQ(e, 0);
  // The same name looked up gives the same handle.
  call l(vop::lookup, s.fs, vfs_root(s.fs), "kept");
  ASSERT_EQ(l.run(), 0);
  EXPECT_EQ(l.r.res_fh.len, f.len);
  EXPECT_EQ(std::memcmp(l.r.res_fh.data, f.data, f.len), 0);
}

TEST(VfsCeph, AHandleThisExportDidNotMakeIsStale) {
  NEED_CEPH();
  scratch s("forged");
  ASSERT_NE(s.fs, nullptr);
  // A file outside the export, named by the wider export's handle.
  vfh outside =
      make(vop::create, s.top, vfs_root(s.top), ("outside-" + std::to_string(getpid())).c_str());
  EXPECT_EQ(getattr(s.top, outside), 0);
  EXPECT_EQ(getattr(s.fs, outside), ESTALE) << "another export's handle";
  // One of ours with its inode number changed.
  vfh f = make(vop::create, s.fs, vfs_root(s.fs), "mine");
  ASSERT_EQ(getattr(s.fs, f), 0);
  vfh forged = f;
  forged.data[12] ^= 1;
  EXPECT_EQ(getattr(s.fs, forged), ESTALE);
  forged = f;
  forged.len = 10;
  EXPECT_EQ(getattr(s.fs, forged), VFS_BADHANDLE);
  call rm(vop::remove, s.top, vfs_root(s.top), ("outside-" + std::to_string(getpid())).c_str());
  EXPECT_EQ(rm.run(), 0);
}

TEST(VfsCeph, ADirectoryMovedOutOfTheExportIsStale) {
  NEED_CEPH();
  scratch s("moved");
  ASSERT_NE(s.fs, nullptr);
  vfh d = make(vop::mkdir, s.fs, vfs_root(s.fs), "leaving");
  const std::string away = "away-" + std::to_string(getpid());
  // Moved by another client (the root mount), then asked for by a fresh
  // server that never saw it.
  call mv(vop::rename, s.top, s.dir_in_top, "leaving");
  mv.r.fh2 = vfs_root(s.top);
  mv.r.op = vop::rename;
  std::snprintf(mv.r.name2, sizeof mv.r.name2, "%s", away.c_str());
  ASSERT_EQ(mv.run(), 0);
  vfs_unmount(s.fs);
  std::string err;
  s.fs = mount_ceph(s.path, &err);
  ASSERT_NE(s.fs, nullptr) << err;
  EXPECT_EQ(getattr(s.fs, d), ESTALE);
  call rm(vop::rmdir, s.top, vfs_root(s.top), away.c_str());
  EXPECT_EQ(rm.run(), 0);
}

// Two servers in front of one file system: what one wrote and committed,
// the other reads back exactly (close-to-open: its GETATTR and READ come
// after the COMMIT).
TEST(VfsCeph, TwoClientsOfOneFileSystemSeeEachOthersCommittedWrites) {
  NEED_CEPH();
  scratch s("two");
  ASSERT_NE(s.fs, nullptr);
  std::string err;
  mount *other = mount_ceph(s.path, &err);
  ASSERT_NE(other, nullptr) << err;
  vfh f = make(vop::create, s.fs, vfs_root(s.fs), "shared");
  for (int round = 0; round < 20; round++) {
    std::string data =
        "round " + std::to_string(round) + " " + std::string(size_t(round) * 97, 'x');
    mount *writer = round % 2 ? other : s.fs, *reader = round % 2 ? s.fs : other;
    ASSERT_EQ(write_at(writer, f, 0, data, stable_how::unstable), 0);
    call commit(vop::commit, writer, f);
    ASSERT_EQ(commit.run(), 0);
    vattr a;
    ASSERT_EQ(getattr(reader, f, &a), 0);
    EXPECT_GE(a.size, data.size());
    int e = 0;
    std::string got = read_all(reader, f, uint32_t(data.size()), &e);
    ASSERT_EQ(e, 0);
    EXPECT_EQ(got, data) << "round " << round;
  }
  vfs_unmount(other);
}

struct listing {
  std::vector<std::string> names;
  uint64_t last_cookie = 0;
  size_t room = 0;
};

bool take(void *arg, const vdirent &e) {
  auto *l = static_cast<listing *>(arg);
  if (l->room == 0) return false;
  l->room--;
  l->names.emplace_back(e.name, e.namelen);
  l->last_cookie = e.cookie;
  return true;
}

// READDIR in small pieces, each resumed at the cookie of the last entry
// taken, sees every name of a large directory exactly once.
TEST(VfsCeph, ReaddirCookiesResumeALargeDirectoryExactly) {
  NEED_CEPH();
  scratch s("bigdir");
  ASSERT_NE(s.fs, nullptr);
  constexpr int N = 1500;
  for (int i = 0; i < N; i++)
    make(vop::create, s.fs, vfs_root(s.fs), ("f" + std::to_string(i)).c_str());
  for (bool plus : {false, true}) {
    SCOPED_TRACE(plus ? "readdirplus" : "readdir");
    listing l;
    bool eof = false;
    for (int calls = 0; !eof && calls < 10 * N; calls++) {
      call c(vop::readdir, s.fs, vfs_root(s.fs));
      c.r.cookie = l.last_cookie;
      c.r.plus = plus;
      c.r.emit = take;
      c.r.emit_arg = &l;
      l.room = 97;
      ASSERT_EQ(c.run(), 0);
      eof = c.r.eof;
    }
    ASSERT_TRUE(eof);
    std::multiset<std::string> seen(l.names.begin(), l.names.end());
    EXPECT_EQ(seen.size(), size_t(N) + 2);  // with . and ..
    for (int i = 0; i < N; i++) EXPECT_EQ(seen.count("f" + std::to_string(i)), 1u) << i;
    EXPECT_EQ(seen.count("."), 1u);
    EXPECT_EQ(seen.count(".."), 1u);
  }
}

// A directory quota (ceph.quota.max_bytes, set by the cluster's admin):
// a write beyond it fails with EDQUOT, which the server reports as
// NFS3ERR_DQUOT.
TEST(VfsCeph, AWriteBeyondAQuotaIsEdquot) {
  NEED_CEPH();
  scratch s("quota");
  ASSERT_NE(s.fs, nullptr);
  // Set by another client (python3-cephfs, as an admin would), then the
  // export mounted afresh: its root carries the quota.
  std::string py = "/usr/bin/python3 -c \"import cephfs; f = cephfs.LibCephFS(conffile='" +
                   std::string(ceph_conf()) + "'); f.mount(); f.setxattr('" + s.path +
                   "', 'ceph.quota.max_bytes', b'4194304', 0); f.shutdown()\"";
  ASSERT_EQ(std::system(py.c_str()), 0) << py;
  vfs_unmount(s.fs);
  std::string err;
  s.fs = mount_ceph(s.path, &err);
  ASSERT_NE(s.fs, nullptr) << err;
  vfh f = make(vop::create, s.fs, vfs_root(s.fs), "big");
  const std::string mib(1 << 20, 'q');
  int e = 0;
  for (int i = 0; i < 16 && e == 0; i++) {
    e = write_at(s.fs, f, uint64_t(i) << 20, mib, stable_how::file_sync);
  }
  EXPECT_EQ(e, EDQUOT) << std::strerror(e);
}

// What the client's admin socket at `sock` answers for `config get VAR`
// (the value, or "" when the socket does not answer).  The protocol: the
// command as JSON with a NUL, then a 32-bit big-endian length and the reply.
std::string client_config(const std::string &sock, const char *var) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock.c_str());
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) == 0) {
    const std::string cmd =
        std::string(R"({"prefix": "config get", "var": ")") + var + R"("})" + '\0';
    uint32_t len = 0;
    if (write(fd, cmd.data(), cmd.size()) == ssize_t(cmd.size()) &&
        read(fd, &len, sizeof len) == ssize_t(sizeof len)) {
      std::string reply(ntohl(len), '\0');
      size_t got = 0;
      for (ssize_t n; got < reply.size() && (n = read(fd, &reply[got], reply.size() - got)) > 0;)
        got += size_t(n);
      // {"debug_client": "0/0"}: the last quoted string.
      size_t end = reply.rfind('"'),
             start = end == std::string::npos ? end : reply.rfind('"', end - 1);
      if (start != std::string::npos) out = reply.substr(start + 1, end - start - 1);
    }
  }
  close(fd);
  return out;
}

}  // namespace

// libcephfs gathers its debug messages in memory up to each subsystem's
// second level, and wakes its log thread for them, even when it prints
// none: the back end quiets (0/0) every level the conf file leaves at
// Ceph's default, and keeps one the file sets.
TEST(VfsCeph, TheClientsInMemoryLogIsQuietUnlessTheConfSetsIt) {
  NEED_CEPH();
  char dir[] = "/tmp/kcont-ceph-log-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string conf = std::string(dir) + "/ceph.conf", sock = std::string(dir) + "/c.asok";
  {
    FILE *in = std::fopen(ceph_conf(), "r");
    FILE *out = std::fopen(conf.c_str(), "w");
    ASSERT_TRUE(in && out);
    char line[4096];
    while (std::fgets(line, sizeof line, in)) std::fputs(line, out);
    std::fprintf(out, "\n[client.kctest]\nadmin_socket = %s\ndebug_objecter = 1/3\n", sock.c_str());
    std::fclose(in);
    std::fclose(out);
  }
  std::string err;
  mount *fs = vfs_mount("ceph", {{"conf", conf}, {"id", "kctest"}, {"path", "/"}}, &err);
  ASSERT_NE(fs, nullptr) << err;
  EXPECT_EQ(client_config(sock, "debug_client"), "0/0");
  EXPECT_EQ(client_config(sock, "debug_objectcacher"), "0/0");
  EXPECT_EQ(client_config(sock, "debug_objecter"), "1/3");
  vfs_unmount(fs);
  std::remove(conf.c_str());
  std::remove(sock.c_str());
  rmdir(dir);
}

// A READ larger than the caller's memory (the kcont model's 64 KiB reply
// buffer) is answered whole from the large pool, not short: before it,
// every 1 MiB READ of a Ceph export came back 65,400 bytes short.  With
// every large buffer taken it is short, and correct.
TEST(VfsCeph, AReadLargerThanTheCallersMemoryComesWholeFromTheLargePool) {
  NEED_CEPH();
  ASSERT_EQ(vfs_register_levels(), 0);
  kc::config cfg;
  cfg.cpus = 1;
  std::string err;
  ASSERT_EQ(kc::kcont_start(cfg, &err), 0) << err;
  vfs_config vc;
  vc.bufs = 4;
  vc.large_bufs = 1;
  ASSERT_EQ(vfs_start(vc, &err), 0) << err;
  {
    scratch s("large-read");
    ASSERT_NE(s.fs, nullptr);
    vfh f = make(vop::create, s.fs, vfs_root(s.fs), "big");
    std::string data(1 << 20, '\0');
    for (size_t i = 0; i < data.size(); i++) data[i] = char(i * 7 + i / 4096);
    ASSERT_EQ(write_at(s.fs, f, 0, data, stable_how::file_sync), 0);
    std::vector<uint8_t> small(64 * 1024);
    call c(vop::read, s.fs, f);
    c.r.count = uint32_t(data.size());
    c.r.dst = small.data();
    c.r.dst_cap = uint32_t(small.size());
    ASSERT_EQ(c.run(), 0);
    ASSERT_EQ(c.r.rd.where, rd_where::buf);
    ASSERT_NE(c.r.rd.bp, nullptr);
    EXPECT_EQ(c.r.rd.n, data.size());
    EXPECT_TRUE(c.r.rd.eof);
    EXPECT_EQ(std::memcmp(c.r.rd.bp->data, data.data(), data.size()), 0);
    // The one large buffer is out: the next such READ is short, into dst.
    call d(vop::read, s.fs, f);
    d.r.count = uint32_t(data.size());
    d.r.dst = small.data();
    d.r.dst_cap = uint32_t(small.size());
    ASSERT_EQ(d.run(), 0);
    EXPECT_EQ(d.r.rd.where, rd_where::dst);
    EXPECT_EQ(d.r.rd.n, small.size());
    EXPECT_FALSE(d.r.rd.eof);
    EXPECT_EQ(std::memcmp(small.data(), data.data(), small.size()), 0);
    vreq_release(&c.r);
    vreq_release(&d.r);
  }
  vfs_stop();
  kc::kcont_stop();
}
