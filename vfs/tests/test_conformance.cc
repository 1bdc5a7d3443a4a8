// SPDX-License-Identifier: BSD-2-Clause
// Cross-backend conformance: one script of VFS requests, run against the
// memory backend and the local backend (a fresh directory of this machine),
// each step written to a transcript -- the error, and the type, mode, link
// count, owner, group and size of what it made or touched, or the ACCESS
// bits it granted.  The two transcripts must be equal line for line: a
// client may not learn which backend it talks to from anything but file
// ids, times, space used and fsstat (which the transcript leaves out).
//
// The process's umask is set to 022 (systemd's default) for the whole run:
// the modes a client asks for must come out exactly, whatever the umask.
// Callers are root, a user (1000:1000), another user (1001:1001) and a
// member of group 1000 (1002:1000).
//
// The local backend needs root (open_by_handle_at, credential switches):
// without it the suite fails under CI=true and is skipped otherwise.  The
// Ceph back end runs the same script when a cluster is named
// (KCONT_TEST_CEPH_CONF; the test command's ceph stage).
#include <ftw.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "creds.h"
#include "fixture.h"  // core/tests: KCONT_NOT_TESTED
#include "kcont/vfs.h"

using namespace kc::vfs;
using namespace kcvfstest;

namespace {

const char *const TYPES[] = {"none", "reg", "dir", "blk", "chr", "lnk", "sock", "fifo"};

int rm_one(const char *p, const struct stat *, int, struct FTW *) { return remove(p); }

// Runs the script against one backend and collects its transcript.
class script {
 public:
  explicit script(mount *fs) : fs_(fs) {}

  std::vector<std::string> lines;

  // The steps (see the file comment).  Names are the transcript's keys.
  void run() {
    const vfh root = vfs_root(fs_);
    // Modes on every create path, umask 022 in force.
    for (uint32_t mode : {0777u, 0775u, 0770u, 02775u, 01777u, 0700u}) {
      std::string n = "dir" + oct(mode);
      make(vop::mkdir, root, n.c_str(), mode, ROOT);
    }
    for (uint32_t mode : {0666u, 0664u, 0660u, 0777u, 0400u, 0u})
      make(vop::create, root, ("file" + oct(mode)).c_str(), mode, ROOT);
    mknod(root, "fifo0666", vtype::fifo, 0666);
    mknod(root, "sock0660", vtype::sock, 0660);
    // A shared directory (setgid, group 1000, 02775) and a sticky one.
    vfh shared = make(vop::mkdir, root, "shared", 02775, ROOT);
    setattr("shared", shared, gid_only(1000), ROOT);
    vfh sub = make(vop::mkdir, shared, "sub", 0755, MEMBER);
    make(vop::create, shared, "f", 0644, MEMBER);
    make(vop::create, sub, "g", 0600, MEMBER);
    vfh tmp = make(vop::mkdir, root, "tmp", 01777, ROOT);
    make(vop::create, tmp, "users", 0644, USER);
    name_op("remove-others-in-sticky", vop::remove, tmp, "users", OTHER);
    name_op("remove-own-in-sticky", vop::remove, tmp, "users", USER);
    // An UNCHECKED create of an existing file changes only its size.
    vfh ex = make(vop::create, root, "existing", 0640, USER);
    write("existing", ex, "0123456789", USER);
    vsattr s;
    s.set_mode = true;
    s.mode = 0777;
    s.set_uid = true;
    s.uid = 1001;
    s.set_size = true;
    s.size = 3;
    make(vop::create, root, "existing", s, USER);
    make(vop::create, root, "existing", s, USER, create_how::guarded);
    make(vop::create, root, "dir0777", s, ROOT);   // over a directory: EEXIST
    make(vop::create, root, "fifo0666", s, ROOT);  // over a FIFO: EEXIST, never opened
    // ACCESS by the mode bits, for the owner, the group and others.
    for (uint32_t mode : {0400u, 0200u, 0100u, 0300u, 0500u, 0600u, 0640u, 0604u, 0u}) {
      std::string n = "acc" + oct(mode);
      vfh f = make(vop::create, root, n.c_str(), mode, USER);
      for (const vcred *c : {&USER, &MEMBER, &OTHER, &ROOT}) access(n, f, *c);
    }
    vfh d = make(vop::mkdir, root, "accdir0750", 0750, USER);
    for (const vcred *c : {&USER, &MEMBER, &OTHER}) access("accdir0750", d, *c);
    // The owner reads and writes whatever the mode bits say; others don't.
    vfh ro = make(vop::create, root, "owner0000", 0, USER);
    write("owner0000", ro, "abc", USER);
    read("owner0000", ro, USER);
    write("owner0000", ro, "abc", OTHER);
    read("owner0000", ro, OTHER);
    // SETATTR by the owner and by others.
    vsattr chmod_only;
    chmod_only.set_mode = true;
    chmod_only.mode = 02755;
    setattr("owner0000", ro, chmod_only, USER);
    setattr("owner0000", ro, chmod_only, OTHER);
    vsattr touch;
    touch.atime_how = touch.mtime_how = 1;  // to the server's time
    setattr("owner0000-touch", ro, touch, USER);
    setattr("owner0000-touch", ro, touch, OTHER);
    // Names: too long, and links.
    std::string longname(VFS_NAME_MAX + 1, 'n');
    name_op("lookup-too-long", vop::lookup, root, longname.c_str(), ROOT);
    symlink("symlink-too-long", root, "ln", std::string(4096, 't'));
    symlink("symlink", root, "ln", "target");
    name_op("rmdir-nonempty", vop::rmdir, root, "shared", ROOT);
    name_op("remove-dir", vop::remove, root, "dir0777", ROOT);
    name_op("rmdir-file", vop::rmdir, root, "file0666", ROOT);
    // A read-only caller (export) may not change anything, COMMIT included.
    for (vop op : {vop::commit, vop::write, vop::setattr}) {
      vreq r;
      prep(r, op, ex, ROOT);
      r.flags = VREQ_RDONLY;
      r.data = reinterpret_cast<const uint8_t *>("x");
      r.count = op == vop::write ? 1 : 0;
      r.sattr.set_mode = op == vop::setattr;
      r.sattr.mode = 0600;
      int e = vop_call(&r);
      line(std::string("rdonly-") + vop_name(op), e, nullptr);
    }
    vfs_cred_reset();
  }

 private:
  mount *fs_;

  static std::string oct(uint32_t m) {
    char b[16];
    std::snprintf(b, sizeof b, "%04o", m);
    return b;
  }
  static std::string who(const vcred &c) {
    return std::to_string(c.uid) + ":" + std::to_string(c.gid);
  }
  static vsattr gid_only(uint32_t gid) {
    vsattr s;
    s.set_gid = true;
    s.gid = gid;
    return s;
  }

  void line(const std::string &what, int e, const vattr *a, const std::string &more = "") {
    std::string l = what + " -> " + (e == 0 ? std::string("ok") : std::strerror(e));
    if (e >= 10000) l = what + " -> vfs error " + std::to_string(e);
    if (e == 0 && a) {
      l += " " + std::string(TYPES[int(a->type)]) + " " + oct(a->mode) + " nlink " +
           std::to_string(a->nlink) + " " + std::to_string(a->uid) + ":" + std::to_string(a->gid);
      // A directory's size is the file system's own business.
      if (a->type == vtype::reg || a->type == vtype::lnk) l += " size " + std::to_string(a->size);
    }
    lines.push_back(l + more);
  }

  void prep(vreq &r, vop op, const vfh &fh, const vcred &c) {
    r.op = op;
    r.fs = fs_;
    r.fh = fh;
    r.cred = c;
  }

  vattr getattr(const vfh &fh) {
    vreq r;
    prep(r, vop::getattr, fh, ROOT);
    vop_call(&r);
    return r.obj.post;
  }

  vfh make(vop op, const vfh &dir, const char *name, const vsattr &s, const vcred &c,
           create_how how = create_how::unchecked) {
    vreq r;
    prep(r, op, dir, c);
    std::snprintf(r.name, sizeof r.name, "%s", name);
    r.sattr = s;
    r.how = how;
    int e = vop_call(&r);
    vattr a = e == 0 ? getattr(r.res_fh) : vattr{};
    line(std::string(vop_name(op)) + " " + name + " by " + who(c), e, &a);
    return r.res_fh;
  }
  vfh make(vop op, const vfh &dir, const char *name, uint32_t mode, const vcred &c) {
    vsattr s;
    s.set_mode = true;
    s.mode = mode;
    return make(op, dir, name, s, c);
  }

  void mknod(const vfh &dir, const char *name, vtype t, uint32_t mode) {
    vreq r;
    prep(r, vop::mknod, dir, ROOT);
    std::snprintf(r.name, sizeof r.name, "%s", name);
    r.mknod_type = t;
    r.sattr.set_mode = true;
    r.sattr.mode = mode;
    int e = vop_call(&r);
    vattr a = e == 0 ? getattr(r.res_fh) : vattr{};
    line(std::string("mknod ") + name, e, &a);
  }

  void name_op(const char *what, vop op, const vfh &dir, const char *name, const vcred &c) {
    vreq r;
    prep(r, op, dir, c);
    std::snprintf(r.name, sizeof r.name, "%s", name);
    if (std::strlen(name) > VFS_NAME_MAX) std::memset(r.name, 'n', sizeof r.name);  // unterminated
    line(what, vop_call(&r), nullptr);
  }

  void symlink(const char *what, const vfh &dir, const char *name, const std::string &target) {
    vreq r;
    prep(r, vop::symlink, dir, ROOT);
    std::snprintf(r.name, sizeof r.name, "%s", name);
    r.data = reinterpret_cast<const uint8_t *>(target.data());
    r.count = uint32_t(target.size());
    int e = vop_call(&r);
    line(what, e, e == 0 ? &r.res_attr : nullptr);
  }

  void setattr(const std::string &what, const vfh &fh, const vsattr &s, const vcred &c) {
    vreq r;
    prep(r, vop::setattr, fh, c);
    r.sattr = s;
    int e = vop_call(&r);
    vattr a = getattr(fh);
    line("setattr " + what + " by " + who(c), e, &a);
  }

  void access(const std::string &what, const vfh &fh, const vcred &c) {
    vreq r;
    prep(r, vop::access, fh, c);
    r.access_want = VACCESS_READ | VACCESS_LOOKUP | VACCESS_MODIFY | VACCESS_EXTEND |
                    VACCESS_DELETE | VACCESS_EXECUTE;
    int e = vop_call(&r);
    line("access " + what + " by " + who(c), e, nullptr,
         " granted " + std::to_string(r.access_granted));
  }

  void write(const std::string &what, const vfh &fh, const std::string &data, const vcred &c) {
    vreq r;
    prep(r, vop::write, fh, c);
    r.data = reinterpret_cast<const uint8_t *>(data.data());
    r.count = uint32_t(data.size());
    r.stable = stable_how::file_sync;
    int e = vop_call(&r);
    line("write " + what + " by " + who(c), e, nullptr, " written " + std::to_string(r.written));
  }

  void read(const std::string &what, const vfh &fh, const vcred &c) {
    uint8_t buf[64];
    vreq r;
    prep(r, vop::read, fh, c);
    r.count = sizeof buf;
    r.dst = buf;
    r.dst_cap = sizeof buf;
    int e = vop_call(&r);
    std::string got = e == 0 ? std::string(reinterpret_cast<char *>(buf), r.rd.n) : "";
    line("read " + what + " by " + who(c), e, nullptr, " '" + got + "'");
  }
};

// Runs the script against a fresh memory mount and `other` (its root an
// empty directory, mode 0777 as the memory root's), each on a thread of
// its own started under umask 022 as a server's threads are (this thread
// may have run VFS requests before), and compares the transcripts.
void agree_with_memory(mount *other, const char *label) {
  mode_t old_umask = umask(022);
  std::string err;
  mount *mem = vfs_mount_memory(16 << 20, &err);
  ASSERT_NE(mem, nullptr) << err;
  script m(mem), o(other);
  std::thread([&] { m.run(); }).join();
  std::thread([&] { o.run(); }).join();
  vfs_unmount(mem);
  umask(old_umask);

  ASSERT_EQ(m.lines.size(), o.lines.size());
  size_t differ = 0;
  for (size_t i = 0; i < m.lines.size(); i++) {
    EXPECT_EQ(m.lines[i], o.lines[i]) << "step " << i << " (memory first, " << label << " second)";
    differ += m.lines[i] != o.lines[i];
  }
  if (differ != 0 || std::getenv("KCONT_SHOW"))
    for (const std::string &x : o.lines) std::printf("  %s: %s\n", label, x.c_str());
  // The steps the script exists for, stated outright (the transcripts
  // could agree on a wrong answer).
  auto has = [&](const std::string &x) {
    for (const std::string &l : o.lines)
      if (l == x) return true;
    return false;
  };
  for (const char *want : {
           "mkdir dir0775 by 0:0 -> ok dir 0775 nlink 2 0:0",
           "mkdir dir0770 by 0:0 -> ok dir 0770 nlink 2 0:0",
           "mkdir dir2775 by 0:0 -> ok dir 2775 nlink 2 0:0",
           "mkdir dir1777 by 0:0 -> ok dir 1777 nlink 2 0:0",
           "create file0664 by 0:0 -> ok reg 0664 nlink 1 0:0 size 0",
           "mknod fifo0666 -> ok fifo 0666 nlink 1 0:0",
           "create existing by 1000:1000 -> ok reg 0640 nlink 1 1000:1000 size 3",
           "access acc0300 by 1000:1000 -> ok granted 44",
           "access acc0400 by 1000:1000 -> ok granted 1",
           "read owner0000 by 1000:1000 -> ok 'abc'",
           "rdonly-commit -> Read-only file system",
       })
    EXPECT_TRUE(has(want)) << want;
}

TEST(VfsConformance, MemoryAndLocalBackendsAgreeStepByStep) {
  if (geteuid() != 0) KCONT_NOT_TESTED("the local backend needs root (open_by_handle_at)");
  char t[] = "/tmp/kcont-conformance-XXXXXX";
  ASSERT_NE(mkdtemp(t), nullptr);
  chmod(t, 0777);  // as the memory root
  std::string err;
  mount *loc = vfs_mount_local(t, 256, &err);
  ASSERT_NE(loc, nullptr) << err;
  agree_with_memory(loc, "local");
  vfs_unmount(loc);
  nftw(t, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

// The same script against a CephFS mount (the ceph stage of the test
// command brings a cluster up and names its ceph.conf in
// KCONT_TEST_CEPH_CONF): a directory of its own below the file system's
// root, made through a mount of the root, then mounted as the export.
TEST(VfsConformanceCeph, MemoryAndCephBackendsAgreeStepByStep) {
  const char *conf = std::getenv("KCONT_TEST_CEPH_CONF");
  if (!conf || !*conf) KCONT_NOT_TESTED("no Ceph cluster (KCONT_TEST_CEPH_CONF is not set)");
  std::string err;
  mount *top = vfs_mount("ceph", {{"conf", conf}}, &err);
  ASSERT_NE(top, nullptr) << err;
  const std::string dir = "conformance-" + std::to_string(getpid());
  vreq mk;
  mk.op = vop::mkdir;
  mk.fs = top;
  mk.fh = vfs_root(top);
  mk.cred = ROOT;
  std::snprintf(mk.name, sizeof mk.name, "%s", dir.c_str());
  mk.sattr.set_mode = true;
  mk.sattr.mode = 0777;  // as the memory root
  ASSERT_EQ(vop_call(&mk), 0);
  mount *cephfs = vfs_mount("ceph", {{"conf", conf}, {"path", "/" + dir}}, &err);
  ASSERT_NE(cephfs, nullptr) << err;
  agree_with_memory(cephfs, "ceph");
  vfs_unmount(cephfs);
  vfs_unmount(top);
}

}  // namespace
