// SPDX-License-Identifier: BSD-2-Clause
// The VFS through both backends (memory, and local on a fresh mkdtemp
// directory -- the local backend needs root for open_by_handle_at, so its
// tests are skipped otherwise).
//
// VfsTest runs every operation synchronously (vop_call): success, the main
// errors, stale handles, readdir cookies, EROFS, exclusive create, special
// files, setuid clearing.  AsyncVfsTest starts kcont and the VFS and runs
// requests with vop_start from a dispatcher: which road each took
// (used_thread), the buffer a read comes back in, the counters.  Tests wait
// for events, never for time.
#include <fcntl.h>
#include <ftw.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/fsuid.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "creds.h"
#include "fixture.h"   // core/tests: eventually()
#include "internal.h"  // the test backend (vfs_alloc, vfs_backend)
#include "kcont/spinlock.h"
#include "kcont/vfs.h"

using namespace kc;
using namespace kc::vfs;
using namespace kcvfstest;

namespace {

enum class be { memory, local };

std::string be_name(const ::testing::TestParamInfo<be> &i) {
  return i.param == be::memory ? "memory" : "local";
}

bool same(const vfh &a, const vfh &b) {
  return a.len == b.len && std::memcmp(a.data, b.data, a.len) == 0;
}

int rm_one(const char *p, const struct stat *, int, struct FTW *) { return remove(p); }

// A mounted backend: the memory one, or the local one on a fresh directory
// (mode 0777 like the memory root).
struct mounted {
  kc::vfs::mount *fs = nullptr;
  std::string dir;

  // Returns false and a reason to skip.
  bool mount(be b, std::string *why, size_t max_bytes = 16 << 20) {
    std::string err;
    if (b == be::memory) {
      fs = vfs_mount_memory(max_bytes, &err);
    } else {
      if (geteuid() != 0) {
        *why = "the local backend needs root (open_by_handle_at)";
        return false;
      }
      char t[] = "/tmp/kcont-vfs-XXXXXX";
      if (!mkdtemp(t)) {
        *why = std::string("mkdtemp: ") + std::strerror(errno);
        return false;
      }
      dir = t;
      chmod(t, 0777);
      fs = vfs_mount_local(dir, 64, &err);
    }
    if (!fs) *why = "mount: " + err;
    return fs != nullptr;
  }
  void unmount() {
    vfs_cred_reset();
    if (fs) vfs_unmount(fs);
    fs = nullptr;
    if (!dir.empty()) nftw(dir.c_str(), rm_one, 16, FTW_DEPTH | FTW_PHYS);
    dir.clear();
  }
};

void set_name(char *dst, const char *s) { std::snprintf(dst, VFS_NAME_MAX + 1, "%s", s); }

// Readdir collector: takes up to `budget` entries per call.
struct listing {
  int budget = 1 << 30;
  std::vector<std::string> names;
  std::vector<uint64_t> cookies;
  std::map<std::string, vdirent> ents;  // name -> entry (name pointer cleared)
};

bool collect(void *arg, const vdirent &e) {
  auto *l = static_cast<listing *>(arg);
  if (l->budget <= 0) return false;
  l->budget--;
  std::string n(e.name, e.namelen);
  l->names.push_back(n);
  l->cookies.push_back(e.cookie);
  vdirent copy = e;
  copy.name = nullptr;
  l->ents[n] = copy;
  return true;
}

class VfsTest : public ::testing::TestWithParam<be> {
 protected:
  void SetUp() override {
    std::string why;
    if (!m_.mount(GetParam(), &why)) {
      if (GetParam() == be::local && geteuid() != 0) KCONT_NOT_TESTED(why);
      FAIL() << why;
    }
    fs_ = m_.fs;
  }
  void TearDown() override { m_.unmount(); }

  bool memory() const { return GetParam() == be::memory; }
  vfh root() const { return vfs_root(fs_); }

  void prep(vreq &r, vop op, const vfh &fh, const vcred &c = ROOT) {
    r.op = op;
    r.fs = fs_;
    r.fh = fh;
    r.cred = c;
  }

  // CREATE (unchecked) or MKDIR dir/name with a mode; the new handle.
  int make(vop op, const vfh &dir, const char *name, vfh *out, uint32_t mode,
           const vcred &c = ROOT) {
    vreq r;
    prep(r, op, dir, c);
    set_name(r.name, name);
    r.sattr.set_mode = true;
    r.sattr.mode = mode;
    int e = vop_call(&r);
    if (e == 0 && out) {
      EXPECT_TRUE(r.have_res_fh);
      *out = r.res_fh;
    }
    return e;
  }
  vfh file(const vfh &dir, const char *name, uint32_t mode = 0644, const vcred &c = ROOT) {
    vfh fh;
    EXPECT_EQ(make(vop::create, dir, name, &fh, mode, c), 0) << name;
    return fh;
  }
  vfh mkdir(const vfh &dir, const char *name, uint32_t mode = 0755, const vcred &c = ROOT) {
    vfh fh;
    EXPECT_EQ(make(vop::mkdir, dir, name, &fh, mode, c), 0) << name;
    return fh;
  }
  int mknod(const vfh &dir, const char *name, vtype t, vfh *out = nullptr) {
    vreq r;
    prep(r, vop::mknod, dir);
    set_name(r.name, name);
    r.mknod_type = t;
    r.rdev_major = 1;
    r.rdev_minor = 3;
    int e = vop_call(&r);
    if (e == 0 && out) *out = r.res_fh;
    return e;
  }
  int write(const vfh &fh, uint64_t off, const std::string &s, const vcred &c = ROOT,
            vreq *out = nullptr) {
    vreq r;
    prep(r, vop::write, fh, c);
    r.offset = off;
    r.count = uint32_t(s.size());
    r.data = reinterpret_cast<const uint8_t *>(s.data());
    r.stable = stable_how::file_sync;
    int e = vop_call(&r);
    if (e == 0) {
      EXPECT_EQ(r.written, s.size());
    }
    if (out) {
      out->obj = r.obj;
      out->written = r.written;
    }
    return e;
  }
  int read(const vfh &fh, uint64_t off, uint32_t count, std::string *out, bool *eof = nullptr,
           const vcred &c = ROOT, uint32_t cap = 0) {
    std::vector<uint8_t> dst(count + 1);
    vreq r;
    prep(r, vop::read, fh, c);
    r.offset = off;
    r.count = count;
    r.dst = dst.data();
    r.dst_cap = cap ? cap : count;
    int e = vop_call(&r);
    if (e == 0) {
      EXPECT_TRUE(r.obj.have_post);
      EXPECT_TRUE(r.rd.where == rd_where::dst || r.rd.where == rd_where::none);
      out->assign(reinterpret_cast<char *>(dst.data()), r.rd.n);
      if (eof) *eof = r.rd.eof;
    }
    vreq_release(&r);
    return e;
  }
  // GETATTR of a request that arrived at `arrived` (vreq::arrived).
  vattr attrs_arrived(const vfh &fh, uint64_t arrived) {
    vreq r;
    prep(r, vop::getattr, fh);
    r.arrived = arrived;
    EXPECT_EQ(vop_call(&r), 0);
    EXPECT_TRUE(r.obj.have_post);
    return r.obj.post;
  }
  std::string path_of(const char *name) const { return m_.dir + "/" + name; }
  int getattr(const vfh &fh, vattr *a = nullptr) {
    vreq r;
    prep(r, vop::getattr, fh);
    int e = vop_call(&r);
    if (e == 0) {
      EXPECT_TRUE(r.obj.have_post);
      if (a) *a = r.obj.post;
    }
    return e;
  }
  vattr attrs(const vfh &fh) {
    vattr a;
    EXPECT_EQ(getattr(fh, &a), 0);
    return a;
  }
  int lookup(const vfh &dir, const char *name, vfh *out = nullptr, vattr *a = nullptr,
             const vcred &c = ROOT) {
    vreq r;
    prep(r, vop::lookup, dir, c);
    set_name(r.name, name);
    int e = vop_call(&r);
    EXPECT_TRUE(r.obj.have_post) << name;
    if (e == 0) {
      EXPECT_TRUE(r.have_res_fh && r.have_res_attr);
      if (out) *out = r.res_fh;
      if (a) *a = r.res_attr;
    }
    return e;
  }
  int name_op(vop op, const vfh &dir, const char *name, const vcred &c = ROOT) {
    vreq r;
    prep(r, op, dir, c);
    set_name(r.name, name);
    int e = vop_call(&r);
    EXPECT_TRUE(r.obj.have_pre && r.obj.have_post) << vop_name(op) << " " << name;
    return e;
  }
  int rename(const vfh &from, const char *n1, const vfh &to, const char *n2,
             const vcred &c = ROOT) {
    vreq r;
    prep(r, vop::rename, from, c);
    r.fh2 = to;
    set_name(r.name, n1);
    set_name(r.name2, n2);
    int e = vop_call(&r);
    EXPECT_TRUE(r.obj.have_pre && r.obj.have_post && r.obj2.have_pre && r.obj2.have_post);
    return e;
  }
  int setattr(const vfh &fh, const vsattr &s, const vcred &c = ROOT, vreq *out = nullptr) {
    vreq r;
    prep(r, vop::setattr, fh, c);
    r.sattr = s;
    int e = vop_call(&r);
    EXPECT_TRUE(r.obj.have_pre && r.obj.have_post);
    if (out) out->obj = r.obj;
    return e;
  }
  int chmod(const vfh &fh, uint32_t mode, const vcred &c = ROOT) {
    vsattr s;
    s.set_mode = true;
    s.mode = mode;
    return setattr(fh, s, c);
  }
  // Every entry of dir, in readdir order, `per_call` at a time.
  int list(const vfh &dir, listing *l, int per_call = 1 << 30, bool plus = false,
           int *calls = nullptr) {
    uint64_t cookie = 0;
    for (int n = 1;; n++) {
      vreq r;
      prep(r, vop::readdir, dir);
      r.cookie = cookie;
      r.plus = plus;
      r.emit = collect;
      r.emit_arg = l;
      l->budget = per_call;
      size_t before = l->names.size();
      int e = vop_call(&r);
      EXPECT_TRUE(r.obj.have_post);
      if (e) return e;
      if (calls) *calls = n;
      if (r.eof) return 0;
      if (l->names.size() == before) return ENOSPC;  // no progress
      cookie = l->cookies.back();
    }
  }
  int walk(const std::string &path, vfh *out = nullptr) {
    vreq r;
    prep(r, vop::walk, root());
    r.data = reinterpret_cast<const uint8_t *>(path.data());
    r.count = uint32_t(path.size());
    int e = vop_call(&r);
    if (e == 0) {
      EXPECT_TRUE(r.have_res_fh && r.have_res_attr);
      if (out) *out = r.res_fh;
    }
    return e;
  }

  mounted m_;
  kc::vfs::mount *fs_ = nullptr;
};

INSTANTIATE_TEST_SUITE_P(Backends, VfsTest, ::testing::Values(be::memory, be::local), be_name);

// The tests of what only the local backend has (system calls to share,
// kernel identities, descriptors, paths).
class VfsLocalTest : public VfsTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) KCONT_NOT_TESTED("the local backend needs root");
    VfsTest::SetUp();
  }
  // A second mount of the same directory: its vnode cache is empty, so
  // every handle is resolved again (as after a restart).
  kc::vfs::mount *fresh_mount() {
    std::string err;
    kc::vfs::mount *fs = vfs_mount_local(m_.dir, 64, &err);
    EXPECT_NE(fs, nullptr) << err;
    return fs;
  }
};

INSTANTIATE_TEST_SUITE_P(Local, VfsLocalTest, ::testing::Values(be::local), be_name);

}  // namespace

// ---- attributes and lookups ----------------------------------------------------

TEST_P(VfsTest, RootIsAWritableDirectoryOwnedByRoot) {
  vattr a = attrs(root());
  EXPECT_EQ(a.type, vtype::dir);
  EXPECT_EQ(a.mode, 0777u);
  EXPECT_EQ(a.uid, 0u);
  EXPECT_EQ(a.gid, 0u);
  EXPECT_GE(a.nlink, 2u);
  EXPECT_NE(a.fileid, 0u);
  EXPECT_GT(a.mtime.tv_sec, 1600000000);  // real time
  vfh fh;
  ASSERT_EQ(lookup(root(), ".", &fh), 0);
  EXPECT_TRUE(same(fh, root()));
  ASSERT_EQ(lookup(root(), "..", &fh), 0);
  EXPECT_TRUE(same(fh, root())) << "'..' of the root is the root";
}

TEST_P(VfsTest, CreateThenLookupAndGetattr) {
  vreq r;
  prep(r, vop::create, root(), USER);
  set_name(r.name, "f");
  r.sattr.set_mode = true;
  r.sattr.mode = 0640;
  ASSERT_EQ(vop_call(&r), 0);
  ASSERT_TRUE(r.have_res_fh && r.have_res_attr);
  EXPECT_EQ(r.res_attr.type, vtype::reg);
  EXPECT_EQ(r.res_attr.mode, 0640u);
  EXPECT_EQ(r.res_attr.uid, 1000u);
  EXPECT_EQ(r.res_attr.gid, 1000u);
  EXPECT_EQ(r.res_attr.size, 0u);
  EXPECT_EQ(r.res_attr.nlink, 1u);
  EXPECT_TRUE(r.obj.have_pre && r.obj.have_post);  // the directory's wcc
  EXPECT_EQ(r.obj.post.type, vtype::dir);
  vfh fh;
  vattr a;
  ASSERT_EQ(lookup(root(), "f", &fh, &a), 0);
  EXPECT_TRUE(same(fh, r.res_fh));
  EXPECT_EQ(a.fileid, r.res_attr.fileid);
  vattr g = attrs(fh);
  EXPECT_EQ(g.fileid, a.fileid);
  EXPECT_EQ(g.mode, 0640u);
  EXPECT_EQ(lookup(root(), "missing"), ENOENT);
  EXPECT_EQ(lookup(fh, "x"), ENOTDIR);
  vfh d = mkdir(root(), "d");
  vfh up;
  ASSERT_EQ(lookup(d, "..", &up), 0);
  EXPECT_TRUE(same(up, root()));
}

TEST_P(VfsTest, LookupNeedsSearchPermission) {
  vfh d = mkdir(root(), "private", 0700);
  file(d, "x");
  EXPECT_EQ(lookup(d, "x", nullptr, nullptr, USER), EACCES);
  EXPECT_EQ(lookup(d, "x", nullptr, nullptr, ROOT), 0);
  ASSERT_EQ(chmod(d, 0711), 0);
  EXPECT_EQ(lookup(d, "x", nullptr, nullptr, USER), 0);
}

TEST_P(VfsTest, BadHandleAndNames) {
  vreq r;
  prep(r, vop::getattr, root());
  r.fh.len = 0;
  EXPECT_EQ(vop_call(&r), VFS_BADHANDLE);
  vreq empty;
  prep(empty, vop::lookup, root());
  EXPECT_EQ(vop_call(&empty), ENOENT);
  vreq slash;
  prep(slash, vop::lookup, root());
  set_name(slash.name, "a/b");
  EXPECT_EQ(vop_call(&slash), EACCES);
}

// ---- data ---------------------------------------------------------------------------

TEST_P(VfsTest, WriteThenRead) {
  vfh fh = file(root(), "f");
  vreq w;
  ASSERT_EQ(write(fh, 0, "hello world", ROOT, &w), 0);
  EXPECT_TRUE(w.obj.have_pre && w.obj.have_post);
  EXPECT_EQ(w.obj.pre.size, 0u);
  EXPECT_EQ(w.obj.post.size, 11u);
  std::string s;
  bool eof = false;
  ASSERT_EQ(read(fh, 0, 100, &s, &eof), 0);
  EXPECT_EQ(s, "hello world");
  EXPECT_TRUE(eof);
  ASSERT_EQ(read(fh, 6, 3, &s, &eof), 0);
  EXPECT_EQ(s, "wor");
  EXPECT_FALSE(eof);
  ASSERT_EQ(read(fh, 6, 5, &s, &eof), 0);
  EXPECT_EQ(s, "world");
  EXPECT_TRUE(eof);
  ASSERT_EQ(read(fh, 100, 10, &s, &eof), 0);
  EXPECT_EQ(s, "");
  EXPECT_TRUE(eof);
  // Overwrite in place and extend with a hole.
  ASSERT_EQ(write(fh, 0, "J"), 0);
  ASSERT_EQ(write(fh, 20, "end"), 0);
  ASSERT_EQ(read(fh, 0, 100, &s, &eof), 0);
  EXPECT_EQ(s, std::string("Jello world") + std::string(9, '\0') + "end");
  EXPECT_EQ(attrs(fh).size, 23u);
}

// A read the caller's memory cannot hold is short (the client asks for the
// rest), and not at the end of the file.
TEST_P(VfsTest, ReadShortToTheCallersCapacity) {
  vfh fh = file(root(), "f");
  ASSERT_EQ(write(fh, 0, "0123456789"), 0);
  std::string s;
  bool eof = true;
  ASSERT_EQ(read(fh, 0, 10, &s, &eof, ROOT, 4), 0);
  EXPECT_EQ(s, "0123");
  EXPECT_FALSE(eof) << "six more bytes follow";
}

TEST_P(VfsTest, ReadAndWriteErrors) {
  vfh d = mkdir(root(), "d");
  std::string s;
  EXPECT_EQ(read(d, 0, 10, &s), EISDIR);
  EXPECT_EQ(write(d, 0, "x"), EISDIR);
  vfh fifo;
  ASSERT_EQ(mknod(root(), "p", vtype::fifo, &fifo), 0);
  EXPECT_EQ(read(fifo, 0, 10, &s), EINVAL);
  EXPECT_EQ(write(fifo, 0, "x"), EINVAL);
  vfh priv = file(root(), "priv", 0600);
  ASSERT_EQ(write(priv, 0, "secret"), 0);
  EXPECT_EQ(read(priv, 0, 10, &s, nullptr, USER), EACCES);
  EXPECT_EQ(write(priv, 0, "x", USER), EACCES);
  vfh pub = file(root(), "pub", 0644);
  EXPECT_EQ(read(pub, 0, 10, &s, nullptr, USER), 0);
  EXPECT_EQ(write(pub, 0, "x", USER), EACCES);
  // The owner may always read and write (as knfsd allows).
  vfh mine = file(root(), "mine", 0644, USER);
  ASSERT_EQ(chmod(mine, 0), 0);
  EXPECT_EQ(write(mine, 0, "ok", USER), 0);
  EXPECT_EQ(read(mine, 0, 10, &s, nullptr, USER), 0);
  EXPECT_EQ(s, "ok");
}

// The kernel's rule (the local backend runs the write under the caller's
// identity): a write by someone without root clears setuid and setgid.
TEST_P(VfsTest, ANonOwnersWriteClearsSetuidAndSetgid) {
  vfh fh = file(root(), "suid");
  ASSERT_EQ(chmod(fh, 06777), 0);
  ASSERT_EQ(attrs(fh).mode, 06777u);
  ASSERT_EQ(write(fh, 0, "x", USER), 0);
  vattr a = attrs(fh);
  EXPECT_EQ(a.mode & 06000, 0u);
  EXPECT_EQ(a.mode & 0777, 0777u);
  // Root's own write leaves them.
  ASSERT_EQ(chmod(fh, 06777), 0);
  ASSERT_EQ(write(fh, 0, "y", ROOT), 0);
  EXPECT_EQ(attrs(fh).mode, 06777u);
}

// ---- setattr --------------------------------------------------------------------------

TEST_P(VfsTest, SetattrModeOwnerSizeAndTimes) {
  vfh fh = file(root(), "f");
  ASSERT_EQ(write(fh, 0, "abcdef"), 0);
  vsattr s;
  s.set_mode = true;
  s.mode = 0600;
  s.set_uid = s.set_gid = true;
  s.uid = 1000;
  s.gid = 1001;
  vreq out;
  ASSERT_EQ(setattr(fh, s, ROOT, &out), 0);
  EXPECT_EQ(out.obj.pre.mode, 0644u);
  EXPECT_EQ(out.obj.post.mode, 0600u);
  EXPECT_EQ(out.obj.post.uid, 1000u);
  EXPECT_EQ(out.obj.post.gid, 1001u);
  vsattr t;
  t.set_size = true;
  t.size = 3;
  ASSERT_EQ(setattr(fh, t), 0);
  std::string d;
  ASSERT_EQ(read(fh, 0, 100, &d), 0);
  EXPECT_EQ(d, "abc");
  t.size = 8;
  ASSERT_EQ(setattr(fh, t), 0);
  ASSERT_EQ(read(fh, 0, 100, &d), 0);
  EXPECT_EQ(d, std::string("abc") + std::string(5, '\0'));
  vsattr times;
  times.atime_how = times.mtime_how = 2;
  times.atime = {1000000000, 5};
  times.mtime = {1100000000, 7};
  ASSERT_EQ(setattr(fh, times), 0);
  vattr a = attrs(fh);
  EXPECT_EQ(a.atime.tv_sec, 1000000000);
  EXPECT_EQ(a.mtime.tv_sec, 1100000000);
  EXPECT_EQ(a.mtime.tv_nsec, 7);
  times.mtime_how = 1;  // now
  times.atime_how = 0;
  ASSERT_EQ(setattr(fh, times), 0);
  EXPECT_GT(attrs(fh).mtime.tv_sec, 1600000000);
}

TEST_P(VfsTest, SetattrGuardAndErrors) {
  vfh fh = file(root(), "f");
  vattr a = attrs(fh);
  vreq r;
  prep(r, vop::setattr, fh);
  r.sattr.set_mode = true;
  r.sattr.mode = 0600;
  r.guard = true;
  r.guard_ctime = {1, 0};
  EXPECT_EQ(vop_call(&r), VFS_NOT_SYNC);
  EXPECT_EQ(attrs(fh).mode, 0644u);
  vreq r2;
  prep(r2, vop::setattr, fh);
  r2.sattr = r.sattr;
  r2.guard = true;
  r2.guard_ctime = a.ctime;
  EXPECT_EQ(vop_call(&r2), 0);
  EXPECT_EQ(attrs(fh).mode, 0600u);
  // Sizes of what has no data.
  vsattr sz;
  sz.set_size = true;
  vfh d = mkdir(root(), "d");
  EXPECT_EQ(setattr(d, sz), EISDIR);
  vfh fifo;
  ASSERT_EQ(mknod(root(), "p", vtype::fifo, &fifo), 0);
  EXPECT_EQ(setattr(fifo, sz), EINVAL);
  // Only the owner (or root) changes the mode; only root gives a file away.
  EXPECT_EQ(chmod(fh, 0666, USER), EPERM);
  vfh mine = file(root(), "mine", 0644, USER);
  EXPECT_EQ(chmod(mine, 0600, USER), 0);
  vsattr chown;
  chown.set_uid = true;
  chown.uid = 1001;
  EXPECT_EQ(setattr(mine, chown, USER), EPERM);
  EXPECT_EQ(attrs(mine).uid, 1000u);
}

// ---- access ---------------------------------------------------------------------------

TEST_P(VfsTest, AccessFromModeBits) {
  const uint32_t all = VACCESS_READ | VACCESS_LOOKUP | VACCESS_MODIFY | VACCESS_EXTEND |
                       VACCESS_DELETE | VACCESS_EXECUTE;
  vfh fh = file(root(), "f", 0640);
  auto access = [&](const vfh &h, const vcred &c, uint8_t flags = 0) {
    vreq r;
    prep(r, vop::access, h, c);
    r.flags = flags;
    r.access_want = all;
    EXPECT_EQ(vop_call(&r), 0);
    EXPECT_TRUE(r.obj.have_post);
    return r.access_granted;
  };
  EXPECT_EQ(access(fh, ROOT), uint32_t(VACCESS_READ | VACCESS_MODIFY | VACCESS_EXTEND));
  EXPECT_EQ(access(fh, USER), 0u);
  EXPECT_EQ(access(fh, cred_of(1000, 0)), uint32_t(VACCESS_READ));  // the group
  EXPECT_EQ(access(fh, ROOT, VREQ_RDONLY), uint32_t(VACCESS_READ));
  // The owner is told what the mode bits say, as knfsd and the kernel
  // answer (the owner override is READ's and WRITE's own, not ACCESS's).
  vfh mine = file(root(), "mine", 0500, USER);
  EXPECT_EQ(access(mine, USER), uint32_t(VACCESS_READ | VACCESS_EXECUTE));
  vfh wx = file(root(), "wx", 0300, USER);
  EXPECT_EQ(access(wx, USER), uint32_t(VACCESS_MODIFY | VACCESS_EXTEND | VACCESS_EXECUTE));
  vfh ro = file(root(), "ro", 0400, USER);
  EXPECT_EQ(access(ro, USER), uint32_t(VACCESS_READ));
  vfh none = file(root(), "none", 0, USER);
  EXPECT_EQ(access(none, USER), 0u);
  // ... while the owner's READ and WRITE themselves still go through.
  EXPECT_EQ(write(none, 0, "data", USER), 0);
  std::string got;
  EXPECT_EQ(read(none, 0, 4, &got, nullptr, USER), 0);
  EXPECT_EQ(got, "data");
  EXPECT_EQ(access(root(), ROOT), uint32_t(VACCESS_READ | VACCESS_LOOKUP | VACCESS_MODIFY |
                                           VACCESS_EXTEND | VACCESS_DELETE));
  vfh d = mkdir(root(), "d", 0755);
  EXPECT_EQ(access(d, USER), uint32_t(VACCESS_READ | VACCESS_LOOKUP));
}

// ---- symlinks and special files ---------------------------------------------------

TEST_P(VfsTest, SymlinkAndReadlink) {
  const std::string target = "some/where/else";
  vreq r;
  prep(r, vop::symlink, root());
  set_name(r.name, "ln");
  r.data = reinterpret_cast<const uint8_t *>(target.data());
  r.count = uint32_t(target.size());
  ASSERT_EQ(vop_call(&r), 0);
  ASSERT_TRUE(r.have_res_fh);
  EXPECT_EQ(r.res_attr.type, vtype::lnk);
  EXPECT_EQ(r.res_attr.size, target.size());
  vfh ln = r.res_fh;
  char buf[256];
  vreq rl;
  prep(rl, vop::readlink, ln);
  rl.dst = reinterpret_cast<uint8_t *>(buf);
  rl.dst_cap = sizeof buf;
  ASSERT_EQ(vop_call(&rl), 0);
  EXPECT_EQ(std::string(buf, rl.link_len), target);
  EXPECT_TRUE(rl.obj.have_post);
  vreq small;
  prep(small, vop::readlink, ln);
  small.dst = reinterpret_cast<uint8_t *>(buf);
  small.dst_cap = 3;
  EXPECT_EQ(vop_call(&small), ENAMETOOLONG);
  vfh f = file(root(), "f");
  vreq notlink;
  prep(notlink, vop::readlink, f);
  notlink.dst = reinterpret_cast<uint8_t *>(buf);
  notlink.dst_cap = sizeof buf;
  EXPECT_EQ(vop_call(&notlink), EINVAL);
  // Lookup does not follow it.
  vattr a;
  ASSERT_EQ(lookup(root(), "ln", nullptr, &a), 0);
  EXPECT_EQ(a.type, vtype::lnk);
  // Bad targets.
  vreq empty;
  prep(empty, vop::symlink, root());
  set_name(empty.name, "e");
  empty.data = reinterpret_cast<const uint8_t *>("");
  empty.count = 0;
  EXPECT_EQ(vop_call(&empty), EINVAL);
  vreq nul;
  prep(nul, vop::symlink, root());
  set_name(nul.name, "n");
  nul.data = reinterpret_cast<const uint8_t *>("a\0b");
  nul.count = 3;
  EXPECT_EQ(vop_call(&nul), EINVAL);
  vreq exists;
  prep(exists, vop::symlink, root());
  set_name(exists.name, "f");
  exists.data = reinterpret_cast<const uint8_t *>(target.data());
  exists.count = uint32_t(target.size());
  EXPECT_EQ(vop_call(&exists), EEXIST);
}

TEST_P(VfsTest, MknodMakesSpecialFilesOnly) {
  vfh fh;
  vattr a;
  ASSERT_EQ(mknod(root(), "fifo", vtype::fifo, &fh), 0);
  ASSERT_EQ(getattr(fh, &a), 0);
  EXPECT_EQ(a.type, vtype::fifo);
  ASSERT_EQ(mknod(root(), "sock", vtype::sock), 0);
  ASSERT_EQ(lookup(root(), "sock", nullptr, &a), 0);
  EXPECT_EQ(a.type, vtype::sock);
  ASSERT_EQ(mknod(root(), "chr", vtype::chr), 0);
  ASSERT_EQ(lookup(root(), "chr", nullptr, &a), 0);
  EXPECT_EQ(a.type, vtype::chr);
  EXPECT_EQ(a.rdev_major, 1u);
  EXPECT_EQ(a.rdev_minor, 3u);
  EXPECT_EQ(mknod(root(), "r", vtype::reg), VFS_BADTYPE);
  EXPECT_EQ(mknod(root(), "d", vtype::dir), VFS_BADTYPE);
  EXPECT_EQ(mknod(root(), "l", vtype::lnk), VFS_BADTYPE);
  EXPECT_EQ(mknod(root(), "n", vtype::none), VFS_BADTYPE);
  EXPECT_EQ(mknod(root(), "fifo", vtype::fifo), EEXIST);
  vreq commit;
  prep(commit, vop::commit, fh);
  EXPECT_EQ(vop_call(&commit), EINVAL);
}

// CREATE naming a FIFO answers EEXIST at once: nothing opens it (an open
// would wait for a writer for good).
TEST_P(VfsTest, CreateOverAFifoIsEexistAtOnce) {
  ASSERT_EQ(mknod(root(), "p", vtype::fifo), 0);
  for (create_how how : {create_how::unchecked, create_how::guarded, create_how::exclusive}) {
    vreq r;
    prep(r, vop::create, root());
    set_name(r.name, "p");
    r.how = how;
    EXPECT_EQ(vop_call(&r), EEXIST) << int(how);
  }
  EXPECT_EQ(make(vop::create, root(), "p", nullptr, 0644), EEXIST);
}

// ---- create ------------------------------------------------------------------------------

TEST_P(VfsTest, CreateModes) {
  vfh fh = file(root(), "f");
  ASSERT_EQ(write(fh, 0, "data"), 0);
  // Guarded: the name is taken.
  vreq g;
  prep(g, vop::create, root());
  set_name(g.name, "f");
  g.how = create_how::guarded;
  EXPECT_EQ(vop_call(&g), EEXIST);
  EXPECT_TRUE(g.obj.have_post);
  // Unchecked: the same file, truncated when asked.
  vreq u;
  prep(u, vop::create, root());
  set_name(u.name, "f");
  u.sattr.set_size = true;
  u.sattr.size = 0;
  ASSERT_EQ(vop_call(&u), 0);
  EXPECT_TRUE(same(u.res_fh, fh));
  EXPECT_EQ(attrs(fh).size, 0u);
  // Unchecked over a directory.
  mkdir(root(), "d");
  EXPECT_EQ(make(vop::create, root(), "d", nullptr, 0644), EEXIST);
  // In a file; without write permission on the directory.
  EXPECT_EQ(make(vop::create, fh, "x", nullptr, 0644), ENOTDIR);
  vfh ro = mkdir(root(), "ro", 0755);
  EXPECT_EQ(make(vop::create, ro, "x", nullptr, 0644, USER), EACCES);
  // Mkdir over an existing name; below a file.
  EXPECT_EQ(make(vop::mkdir, root(), "f", nullptr, 0755), EEXIST);
  EXPECT_EQ(make(vop::mkdir, fh, "x", nullptr, 0755), ENOTDIR);
}

TEST_P(VfsTest, ExclusiveCreateRetryWithTheSameVerifierSucceeds) {
  auto excl = [&](const char *verf, vreq *r) {
    prep(*r, vop::create, root());
    set_name(r->name, "x");
    r->how = create_how::exclusive;
    std::memcpy(r->verf, verf, 8);
    return vop_call(r);
  };
  vreq a, b, c;
  ASSERT_EQ(excl("verf-one", &a), 0);
  ASSERT_TRUE(a.have_res_fh);
  EXPECT_EQ(a.res_attr.type, vtype::reg);
  ASSERT_EQ(excl("verf-one", &b), 0) << "the retry of our own create";
  EXPECT_TRUE(same(a.res_fh, b.res_fh));
  EXPECT_EQ(excl("verf-two", &c), EEXIST);
}

TEST_P(VfsTest, MkdirCountsLinks) {
  uint32_t before = attrs(root()).nlink;
  vreq r;
  prep(r, vop::mkdir, root());
  set_name(r.name, "d");
  r.sattr.set_mode = true;
  r.sattr.mode = 0750;
  ASSERT_EQ(vop_call(&r), 0);
  EXPECT_EQ(r.res_attr.type, vtype::dir);
  EXPECT_EQ(r.res_attr.mode, 0750u);
  EXPECT_EQ(r.res_attr.nlink, 2u);
  EXPECT_EQ(r.obj.pre.nlink, before);
  EXPECT_EQ(r.obj.post.nlink, before + 1);
  vfh d = r.res_fh;
  mkdir(d, "sub");
  EXPECT_EQ(attrs(d).nlink, 3u);
}

// ---- remove, rmdir, rename, link ---------------------------------------------------

TEST_P(VfsTest, RemoveMakesTheHandleStale) {
  vfh fh = file(root(), "f");
  ASSERT_EQ(getattr(fh), 0);  // cached
  ASSERT_EQ(name_op(vop::remove, root(), "f"), 0);
  EXPECT_EQ(lookup(root(), "f"), ENOENT);
  EXPECT_EQ(getattr(fh), ESTALE);
  EXPECT_GE(vfs_get_stats(fs_).stale, 1u);
  EXPECT_EQ(name_op(vop::remove, root(), "f"), ENOENT);
  vfh d = mkdir(root(), "d");
  EXPECT_EQ(name_op(vop::remove, root(), "d"), EISDIR);
  EXPECT_EQ(getattr(d), 0);
  // Only write permission on the directory lets one remove.
  vfh shared = mkdir(root(), "shared", 0755);
  file(shared, "x");
  EXPECT_EQ(name_op(vop::remove, shared, "x", USER), EACCES);
}

TEST_P(VfsTest, Rmdir) {
  vfh d = mkdir(root(), "d");
  file(d, "x");
  EXPECT_EQ(name_op(vop::rmdir, root(), "d"), ENOTEMPTY);
  file(root(), "f");
  EXPECT_EQ(name_op(vop::rmdir, root(), "f"), ENOTDIR);
  EXPECT_EQ(name_op(vop::rmdir, d, "."), EINVAL);
  EXPECT_EQ(name_op(vop::rmdir, d, ".."), ENOTEMPTY);
  EXPECT_EQ(name_op(vop::rmdir, root(), "missing"), ENOENT);
  ASSERT_EQ(name_op(vop::remove, d, "x"), 0);
  uint32_t before = attrs(root()).nlink;
  ASSERT_EQ(name_op(vop::rmdir, root(), "d"), 0);
  EXPECT_EQ(attrs(root()).nlink, before - 1);
  EXPECT_EQ(getattr(d), ESTALE);
}

TEST_P(VfsTest, RenameFollowsPosix) {
  vfh a = mkdir(root(), "a");
  vfh b = mkdir(root(), "b");
  vfh f = file(a, "f");
  ASSERT_EQ(write(f, 0, "payload"), 0);
  // Within a directory, then across.
  ASSERT_EQ(rename(a, "f", a, "g"), 0);
  EXPECT_EQ(lookup(a, "f"), ENOENT);
  vfh g;
  ASSERT_EQ(lookup(a, "g", &g), 0);
  EXPECT_EQ(attrs(g).fileid, attrs(f).fileid);
  ASSERT_EQ(rename(a, "g", b, "h"), 0);
  EXPECT_EQ(lookup(a, "g"), ENOENT);
  std::string s;
  ASSERT_EQ(read(f, 0, 100, &s), 0) << "the handle survives a rename";
  EXPECT_EQ(s, "payload");
  // Over another file: that one is gone.
  vfh victim = file(b, "v");
  ASSERT_EQ(getattr(victim), 0);
  ASSERT_EQ(rename(b, "h", b, "v"), 0);
  EXPECT_EQ(getattr(victim), ESTALE);
  EXPECT_EQ(lookup(b, "h"), ENOENT);
  // Directories only over empty directories.
  vfh full = mkdir(root(), "full");
  file(full, "x");
  vfh empty = mkdir(root(), "empty");
  EXPECT_EQ(rename(root(), "a", root(), "full"), ENOTEMPTY);
  EXPECT_EQ(rename(b, "v", root(), "empty"), EISDIR);
  EXPECT_EQ(rename(root(), "a", b, "v"), ENOTDIR);
  ASSERT_EQ(rename(root(), "a", root(), "empty"), 0);
  EXPECT_EQ(getattr(empty), ESTALE);
  vfh moved;
  ASSERT_EQ(lookup(root(), "empty", &moved), 0);
  EXPECT_TRUE(same(moved, a));
  // Not below itself.
  vfh sub = mkdir(a, "sub");
  EXPECT_EQ(rename(root(), "empty", sub, "loop"), EINVAL);
  EXPECT_EQ(rename(root(), "empty", a, "self"), EINVAL);
  EXPECT_EQ(rename(root(), "nothing", root(), "x"), ENOENT);
  // A moved directory's ".." is its new parent.
  ASSERT_EQ(rename(a, "sub", b, "sub2"), 0);
  vfh up;
  ASSERT_EQ(lookup(sub, "..", &up), 0);
  EXPECT_TRUE(same(up, b));
}

TEST_P(VfsTest, LinkAddsAName) {
  vfh f = file(root(), "f");
  vfh d = mkdir(root(), "d");
  vreq r;
  prep(r, vop::link, f);
  r.fh2 = d;
  set_name(r.name2, "g");
  ASSERT_EQ(vop_call(&r), 0);
  EXPECT_TRUE(r.obj.have_post);
  EXPECT_EQ(r.obj.post.nlink, 2u);  // the file
  EXPECT_TRUE(r.obj2.have_pre && r.obj2.have_post);
  EXPECT_EQ(r.obj2.post.type, vtype::dir);
  vattr a;
  ASSERT_EQ(lookup(d, "g", nullptr, &a), 0);
  EXPECT_EQ(a.fileid, attrs(f).fileid);
  vreq again;
  prep(again, vop::link, f);
  again.fh2 = d;
  set_name(again.name2, "g");
  EXPECT_EQ(vop_call(&again), EEXIST);
  vreq dir;
  prep(dir, vop::link, d);
  dir.fh2 = root();
  set_name(dir.name2, "dd");
  EXPECT_EQ(vop_call(&dir), EISDIR);
  // One name gone, the other keeps the object (and its handle) alive.
  ASSERT_EQ(name_op(vop::remove, root(), "f"), 0);
  EXPECT_EQ(attrs(f).nlink, 1u);
}

// The sticky bit: only the owner of the entry (or of the directory, or
// root) removes or renames it away.
TEST_P(VfsTest, StickyDirectoriesProtectOthersEntries) {
  vfh t = mkdir(root(), "tmp", 0755);
  ASSERT_EQ(chmod(t, 01777), 0);
  file(t, "mine", 0644, USER);
  file(t, "also", 0644, USER);
  EXPECT_EQ(name_op(vop::remove, t, "mine", OTHER), EPERM);
  EXPECT_EQ(rename(t, "mine", t, "stolen", OTHER), EPERM);
  EXPECT_EQ(name_op(vop::remove, t, "mine", USER), 0);
  EXPECT_EQ(name_op(vop::remove, t, "also", ROOT), 0);
}

// A setgid directory hands its group down, and the bit to subdirectories.
TEST_P(VfsTest, SetgidDirectoriesHandTheirGroupDown) {
  vfh d = mkdir(root(), "shared", 0755);
  vsattr s;
  s.set_mode = true;
  s.mode = 02777;
  s.set_gid = true;
  s.gid = 1000;
  ASSERT_EQ(setattr(d, s), 0);
  ASSERT_EQ(attrs(d).mode, 02777u);
  vreq c;
  prep(c, vop::create, d, OTHER);
  set_name(c.name, "f");
  ASSERT_EQ(vop_call(&c), 0);
  EXPECT_EQ(c.res_attr.uid, 1001u);
  EXPECT_EQ(c.res_attr.gid, 1000u);
  vreq m;
  prep(m, vop::mkdir, d, OTHER);
  set_name(m.name, "sub");
  m.sattr.set_mode = true;
  m.sattr.mode = 0755;
  ASSERT_EQ(vop_call(&m), 0);
  EXPECT_EQ(m.res_attr.gid, 1000u);
  EXPECT_EQ(m.res_attr.mode & 02000, 02000u);
}

// ---- readdir -------------------------------------------------------------------------

TEST_P(VfsTest, ReaddirListsEverythingWithPlus) {
  vfh d = mkdir(root(), "d");
  std::set<std::string> want = {".", ".."};
  for (int i = 0; i < 10; i++) {
    std::string n = "file" + std::to_string(i);
    file(d, n.c_str());
    want.insert(n);
  }
  listing l;
  ASSERT_EQ(list(d, &l, 1 << 30, true), 0);
  EXPECT_EQ(std::set<std::string>(l.names.begin(), l.names.end()), want);
  EXPECT_EQ(l.names.size(), want.size());
  if (memory()) {  // insertion order, "." and ".." first
    ASSERT_GE(l.names.size(), 3u);
    EXPECT_EQ(l.names[0], ".");
    EXPECT_EQ(l.names[1], "..");
    EXPECT_EQ(l.names[2], "file0");
  }
  const vdirent &e = l.ents["file3"];
  ASSERT_TRUE(e.have_attr && e.have_fh);
  EXPECT_EQ(e.attr.type, vtype::reg);
  vattr a = attrs(e.fh);
  EXPECT_EQ(a.fileid, e.fileid);
  EXPECT_EQ(a.fileid, e.attr.fileid);
  listing bad;
  EXPECT_EQ(list(file(root(), "notdir"), &bad), ENOTDIR);
}

// Cookies resume where the last call stopped, entries removed meanwhile
// shift nothing, and the cookie of a removed entry resumes after it.
TEST_P(VfsTest, ReaddirCookiesResumeAcrossCalls) {
  vfh d = mkdir(root(), "d");
  std::set<std::string> all = {".", ".."};
  for (int i = 0; i < 12; i++) {
    std::string n = "e" + std::to_string(i);
    file(d, n.c_str());
    all.insert(n);
  }
  listing l;
  int calls = 0;
  ASSERT_EQ(list(d, &l, 3, false, &calls), 0);
  EXPECT_GE(calls, 5);
  EXPECT_EQ(std::set<std::string>(l.names.begin(), l.names.end()), all);
  EXPECT_EQ(l.names.size(), all.size()) << "no entry twice";

  // First call takes 4 entries; then the last one taken and one not yet
  // taken are removed; the next calls list the rest exactly once.
  listing first;
  vreq r;
  prep(r, vop::readdir, d);
  r.emit = collect;
  r.emit_arg = &first;
  first.budget = 4;
  ASSERT_EQ(vop_call(&r), 0);
  ASSERT_EQ(first.names.size(), 4u);
  EXPECT_FALSE(r.eof);
  std::set<std::string> seen(first.names.begin(), first.names.end());
  std::string last = first.names.back();
  std::string later;
  for (const auto &n : all)
    if (!seen.count(n)) later = n;
  if (last != "." && last != "..") {
    ASSERT_EQ(name_op(vop::remove, d, last.c_str()), 0);
  }
  ASSERT_EQ(name_op(vop::remove, d, later.c_str()), 0);
  listing rest;
  uint64_t cookie = first.cookies.back();
  for (int n = 0; n < 100; n++) {
    vreq c;
    prep(c, vop::readdir, d);
    c.cookie = cookie;
    c.emit = collect;
    c.emit_arg = &rest;
    rest.budget = 3;
    ASSERT_EQ(vop_call(&c), 0);
    if (c.eof) break;
    ASSERT_FALSE(rest.cookies.empty());
    cookie = rest.cookies.back();
  }
  std::set<std::string> expect;
  for (const auto &n : all)
    if (!seen.count(n) && n != later) expect.insert(n);
  EXPECT_EQ(std::set<std::string>(rest.names.begin(), rest.names.end()), expect);
  EXPECT_EQ(rest.names.size(), expect.size());
}

// ---- fsstat, fsinfo, commit, walk ------------------------------------------------------

TEST_P(VfsTest, FsstatAndFsinfo) {
  vreq st;
  prep(st, vop::fsstat, root());
  ASSERT_EQ(vop_call(&st), 0);
  EXPECT_TRUE(st.obj.have_post);
  EXPECT_GT(st.fsi.tbytes, 0u);
  EXPECT_LE(st.fsi.fbytes, st.fsi.tbytes);
  vreq in;
  prep(in, vop::fsinfo, root());
  ASSERT_EQ(vop_call(&in), 0);
  EXPECT_TRUE(in.obj.have_post);
  EXPECT_EQ(in.fsi.name_max, 255u);
  EXPECT_GT(in.fsi.link_max, 0u);
  EXPECT_GT(in.fsi.max_file_size, 0u);
  if (memory()) {
    EXPECT_EQ(st.fsi.tbytes, 16u << 20);
    EXPECT_EQ(st.fsi.fbytes, 16u << 20);
    EXPECT_EQ(in.fsi.link_max, 65000u);
    EXPECT_EQ(in.fsi.max_file_size, 16u << 20);
    vfh f = file(root(), "f");
    ASSERT_EQ(write(f, 0, std::string(1000, 'x')), 0);
    vreq st2;
    prep(st2, vop::fsstat, root());
    ASSERT_EQ(vop_call(&st2), 0);
    EXPECT_EQ(st2.fsi.fbytes, (16u << 20) - 1000);
  }
}

TEST_P(VfsTest, Commit) {
  vfh f = file(root(), "f");
  ASSERT_EQ(write(f, 0, "x"), 0);
  vreq c;
  prep(c, vop::commit, f);
  ASSERT_EQ(vop_call(&c), 0);
  EXPECT_TRUE(c.obj.have_post);
  EXPECT_EQ(c.obj.post.size, 1u);
}

TEST_P(VfsTest, WalkThroughDirectories) {
  vfh a = mkdir(root(), "a");
  vfh b = mkdir(a, "b");
  vfh c = mkdir(b, "c");
  vfh f = file(b, "file");
  vfh fh;
  ASSERT_EQ(walk("a/b/c", &fh), 0);
  EXPECT_TRUE(same(fh, c));
  ASSERT_EQ(walk("/a//b/./", &fh), 0);
  EXPECT_TRUE(same(fh, b));
  ASSERT_EQ(walk("", &fh), 0);
  EXPECT_TRUE(same(fh, root()));
  EXPECT_EQ(walk("a/../a"), EACCES);
  EXPECT_EQ(walk("a/missing"), ENOENT);
  vreq fr;
  prep(fr, vop::walk, root());
  const std::string fp = "a/b/file";
  fr.data = reinterpret_cast<const uint8_t *>(fp.data());
  fr.count = uint32_t(fp.size());
  ASSERT_EQ(vop_call(&fr), 0) << "the last component need not be a directory";
  ASSERT_TRUE(fr.have_res_fh && fr.have_res_attr);
  EXPECT_EQ(fr.res_attr.type, vtype::reg);
  EXPECT_TRUE(same(fr.res_fh, f));
  EXPECT_EQ(walk("a/b/file/x"), ENOTDIR);
  EXPECT_EQ(walk(std::string("a\0b", 3)), ENOENT);
}

// ---- read-only callers ----------------------------------------------------------------

// ATTRIBUTE SNAPSHOTS in vfs(9): requests that arrived before the local
// backend read a vnode's attributes may share that read; a request that
// arrived after a change completed never gets attributes from before it.
// (The memory backend has nothing to share: no system call.)
TEST_P(VfsLocalTest, RequestsThatArrivedBeforeAnAttributeReadShareIt) {
  vfh f = file(root(), "f");
  ASSERT_EQ(write(f, 0, "abc"), 0);
  const uint64_t a = vfs_arrival();
  vfs_stats s0 = vfs_get_stats(fs_);
  EXPECT_EQ(attrs_arrived(f, a).size, 3u);  // reads, and offers it
  ASSERT_EQ(truncate(path_of("f").c_str(), 10), 0) << std::strerror(errno);
  // Arrived before the read above began: may take it (and does).
  EXPECT_EQ(attrs_arrived(f, a).size, 3u);
  vfs_stats s1 = vfs_get_stats(fs_);
  EXPECT_EQ(s1.attr_read, s0.attr_read + 1);
  EXPECT_EQ(s1.attr_shared, s0.attr_shared + 1);
  // Arrived after the truncate completed: must see it.
  const uint64_t b = vfs_arrival();
  EXPECT_GT(b, a);
  EXPECT_EQ(attrs_arrived(f, b).size, 10u);
  // Arrival not known: never shares.
  vfs_stats s2 = vfs_get_stats(fs_);
  EXPECT_EQ(attrs_arrived(f, 0).size, 10u);
  EXPECT_EQ(vfs_get_stats(fs_).attr_read, s2.attr_read + 1);
  // A READ that arrived after a change through the VFS sees it: its
  // attributes bound the data, and a stale size would cut it short.
  ASSERT_EQ(write(f, 10, "0123456789"), 0);
  vreq r;
  std::vector<uint8_t> dst(64);
  prep(r, vop::read, f);
  r.arrived = vfs_arrival();
  r.count = 64;
  r.dst = dst.data();
  r.dst_cap = 64;
  ASSERT_EQ(vop_call(&r), 0);
  EXPECT_EQ(r.rd.n, 20u);
  EXPECT_TRUE(r.rd.eof);
  EXPECT_EQ(r.obj.post.size, 20u);
  vreq_release(&r);
}

// An operation that changes its object answers with attributes read after
// the change, never with a snapshot -- even one read after it arrived.
TEST_P(VfsTest, AnOperationThatChangesSomethingNeverAnswersWithASnapshot) {
  vfh f = file(root(), "f", 0644);
  const uint64_t a = vfs_arrival();
  EXPECT_EQ(attrs_arrived(f, a).mode, 0644u);  // a snapshot any request of `a` may take
  vreq s;
  prep(s, vop::setattr, f);
  s.arrived = a;
  s.sattr.set_mode = true;
  s.sattr.mode = 0600;
  ASSERT_EQ(vop_call(&s), 0);
  ASSERT_TRUE(s.obj.have_post);
  EXPECT_EQ(s.obj.post.mode, 0600u) << "SETATTR answered with the attributes from before it";
  vreq w;
  prep(w, vop::write, f);
  w.arrived = a;
  w.data = reinterpret_cast<const uint8_t *>("abcd");
  w.count = 4;
  ASSERT_EQ(vop_call(&w), 0);
  ASSERT_TRUE(w.obj.have_post);
  EXPECT_EQ(w.obj.post.size, 4u) << "WRITE answered with the attributes from before it";
  vfs_cred_reset();
}

// A vnode cache entry reused for another file must not hand out the
// snapshot of the file it held before: 3 x the cache's size of files, each
// asked for with an arrival that would accept any snapshot.
TEST_P(VfsTest, AReusedVnodeNeverAnswersWithTheLastFilesAttributes) {
  std::vector<vfh> fhs;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 192; i++) {
    std::string n = "f" + std::to_string(i);
    fhs.push_back(file(root(), n.c_str()));
    ids.push_back(attrs(fhs.back()).fileid);
  }
  const uint64_t early = 1;  // the first possible arrival: every snapshot is newer
  for (int round = 0; round < 2; round++) {
    for (size_t i = 0; i < fhs.size(); i++) {
      ASSERT_EQ(attrs_arrived(fhs[i], early).fileid, ids[i]) << "file " << i;
    }
  }
  if (!memory()) {
    EXPECT_GT(vfs_get_stats(fs_).evictions, 0u);
  }
}

// Exactness under concurrency: a thread grows a file with ftruncate and
// publishes each size once the call returned; two threads keep asking for
// its attributes with an arrival read after loading the published size.
// Every answer must be at least that size, however the reads are shared.
TEST_P(VfsTest, SharedAttributesNeverPredateARequestsArrival) {
  vfh f = file(root(), "grow");
  constexpr uint64_t STEPS = 3000;
  std::atomic<uint64_t> published{0};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0}, asked{0};
  auto reader = [&] {
    while (!stop.load(std::memory_order_acquire)) {
      const uint64_t k = published.load(std::memory_order_acquire);
      vreq r;
      prep(r, vop::getattr, f);
      r.arrived = vfs_arrival();
      if (vop_call(&r) != 0 || !r.obj.have_post || r.obj.post.size < k) bad.fetch_add(1);
      asked.fetch_add(1);
    }
    vfs_cred_reset();
  };
  std::thread r1(reader), r2(reader);
  if (memory()) {
    for (uint64_t k = 1; k <= STEPS; k++) {
      vreq w;
      prep(w, vop::setattr, f);
      w.sattr.set_size = true;
      w.sattr.size = k;
      ASSERT_EQ(vop_call(&w), 0);
      published.store(k, std::memory_order_release);
    }
  } else {
    int fd = open(path_of("grow").c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    for (uint64_t k = 1; k <= STEPS; k++) {
      ASSERT_EQ(ftruncate(fd, off_t(k)), 0);
      published.store(k, std::memory_order_release);
    }
    close(fd);
  }
  // Let the readers see the last size too (an event, not a time).
  const uint64_t seen = asked.load();
  while (asked.load() < seen + 8) std::this_thread::yield();
  stop.store(true, std::memory_order_release);
  r1.join();
  r2.join();
  EXPECT_EQ(bad.load(), 0u) << "of " << asked.load() << " answers";
  EXPECT_EQ(attrs_arrived(f, vfs_arrival()).size, STEPS);
  vfs_cred_reset();
}

TEST_P(VfsTest, ReadOnlyCallersGetErofs) {
  vfh f = file(root(), "f");
  vreq c;
  prep(c, vop::create, root());
  c.flags = VREQ_RDONLY;
  set_name(c.name, "new");
  EXPECT_EQ(vop_call(&c), EROFS);
  EXPECT_TRUE(c.obj.have_post);
  EXPECT_EQ(lookup(root(), "new"), ENOENT);
  vreq w;
  prep(w, vop::write, f);
  w.flags = VREQ_RDONLY;
  w.data = reinterpret_cast<const uint8_t *>("x");
  w.count = 1;
  EXPECT_EQ(vop_call(&w), EROFS);
  EXPECT_TRUE(w.obj.have_post);
  EXPECT_EQ(attrs(f).size, 0u);
  vreq rm;
  prep(rm, vop::remove, root());
  rm.flags = VREQ_RDONLY;
  set_name(rm.name, "f");
  EXPECT_EQ(vop_call(&rm), EROFS);
  EXPECT_EQ(lookup(root(), "f"), 0);
  vreq ga;
  prep(ga, vop::getattr, f);
  ga.flags = VREQ_RDONLY;
  EXPECT_EQ(vop_call(&ga), 0);
}

// ---- local only: identity, depth, descriptors ------------------------------------

// Drops CAP_SETUID and CAP_SETGID from the calling thread (and the threads
// it starts).  False if the kernel refused.
bool drop_setid_caps() {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2] = {};
  if (syscall(SYS_capget, &h, d) != 0) return false;
  for (int cap : {CAP_SETUID, CAP_SETGID}) {
    d[CAP_TO_INDEX(cap)].effective &= ~CAP_TO_MASK(cap);
    d[CAP_TO_INDEX(cap)].permitted &= ~CAP_TO_MASK(cap);
  }
  return syscall(SYS_capset, &h, d) == 0;
}

TEST_P(VfsLocalTest, WithoutTheCapabilityToSwitchNoRequestRunsAsRoot) {
  std::string why;
  ASSERT_EQ(vfs_identity_check(&why), 0) << why;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child: 10 + step on a failure, 0 when both outcomes are right.
    if (!drop_setid_caps()) _exit(10);
    std::string w;
    if (vfs_identity_check(&w) != EPERM || w.find("CAP_SET") == std::string::npos) _exit(11);
    // A user's request fails instead of running as root...
    vreq r;
    prep(r, vop::create, root(), USER);
    set_name(r.name, "made-as-user");
    if (vop_call(&r) != VFS_CRED) _exit(12);
    struct stat st;
    if (stat((m_.dir + "/made-as-user").c_str(), &st) == 0) _exit(13);
    // ... unless the operator accepted one identity: then it runs as the
    // process (root), said outright.
    vfs_set_single_identity(true);
    vreq s;
    prep(s, vop::create, root(), USER);
    set_name(s.name, "made-as-process");
    if (vop_call(&s) != 0 || s.res_attr.uid != 0) _exit(14);
    _exit(0);
  }
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0) << "10 capset, 11 check, 12 not refused, 13 made, 14 single";
}

TEST_P(VfsLocalTest, ADirectoryDeeperThanPathMaxIsServed) {
  // 24 levels of 200-byte names: about 4,800 bytes below the export.
  vfh d = root();
  std::string name(200, 'd');
  for (int i = 0; i < 24; i++) d = mkdir(d, name.c_str());
  vfh f = file(d, "leaf");
  ASSERT_EQ(write(f, 0, "deep"), 0);
  kc::vfs::mount *again = fresh_mount();
  ASSERT_NE(again, nullptr);
  vreq r;
  prep(r, vop::getattr, d);
  r.fs = again;
  EXPECT_EQ(vop_call(&r), 0);  // resolved afresh: by its ancestors
  EXPECT_EQ(r.obj.post.type, vtype::dir);
  vreq l;
  prep(l, vop::lookup, d);
  l.fs = again;
  set_name(l.name, "leaf");
  EXPECT_EQ(vop_call(&l), 0);
  vfs_cred_reset();
  vfs_unmount(again);
}

TEST_P(VfsLocalTest, AFileThatCannotBeReopenedIsNotCached) {
  vfh f = file(root(), "f");
  ASSERT_EQ(write(f, 0, "data"), 0);
  kc::vfs::mount *again = fresh_mount();
  ASSERT_NE(again, nullptr);
  auto read_again = [&](std::string *out) {
    uint8_t buf[16];
    vreq r;
    prep(r, vop::read, f);
    r.fs = again;
    r.count = sizeof buf;
    r.dst = buf;
    r.dst_cap = sizeof buf;
    int e = vop_call(&r);
    if (e == 0) out->assign(reinterpret_cast<char *>(buf), r.rd.n);
    return e;
  };
  // Room for exactly one more descriptor: the handle opens, its reopen
  // cannot.
  int next = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(next, 0);
  close(next);
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit tight = old;
  tight.rlim_cur = rlim_t(next) + 1;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &tight), 0);
  std::string got;
  int e = read_again(&got);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  EXPECT_EQ(e, EAGAIN);            // NFS3ERR_JUKEBOX: the client tries again
  EXPECT_EQ(read_again(&got), 0);  // and then it works: nothing unusable was cached
  EXPECT_EQ(got, "data");
  vfs_cred_reset();
  vfs_unmount(again);
}

// A READ beyond the caller's room, with VREQ_EXTENT_OK, is a file extent;
// `resident` says whether its pages were in the page cache when the backend
// looked (cachestat(2)): after they are dropped it is false (the caller
// must take the road that may wait for the disk), once read again true.
TEST_P(VfsLocalTest, AnExtentSaysWhetherItsPagesAreResident) {
  vfh f = file(root(), "big");
  const std::string data(256 * 1024, 'x');
  ASSERT_EQ(write(f, 0, data), 0);
  auto resident = [&] {
    vreq r;
    prep(r, vop::read, f);
    r.count = uint32_t(data.size());
    r.flags |= VREQ_EXTENT_OK;
    EXPECT_EQ(vop_call(&r), 0);
    EXPECT_TRUE(r.rd.where == rd_where::extent);
    EXPECT_EQ(r.rd.n, data.size());
    bool res = r.rd.resident;
    vreq_release(&r);
    return res;
  };
  EXPECT_TRUE(resident());  // just written: cached
  int fd = open((m_.dir + "/big").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fdatasync(fd), 0);  // clean pages can be dropped
  ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  EXPECT_FALSE(resident());
  std::string back(data.size(), '\0');
  ASSERT_EQ(pread(fd, back.data(), back.size(), 0), ssize_t(back.size()));
  EXPECT_TRUE(resident());
  close(fd);
}

// ---- memory only -------------------------------------------------------------------------

TEST(VfsMemory, WritesBeyondMaxBytesAreEnospc) {
  std::string err;
  kc::vfs::mount *fs = vfs_mount_memory(4096, &err);
  ASSERT_NE(fs, nullptr) << err;
  vreq c;
  c.op = vop::create;
  c.fs = fs;
  c.fh = vfs_root(fs);
  c.cred = ROOT;
  set_name(c.name, "f");
  ASSERT_EQ(vop_call(&c), 0);
  std::string big(5000, 'x');
  vreq w;
  w.op = vop::write;
  w.fs = fs;
  w.fh = c.res_fh;
  w.cred = ROOT;
  w.data = reinterpret_cast<const uint8_t *>(big.data());
  w.count = 4000;
  ASSERT_EQ(vop_call(&w), 0);
  w.offset = 4000;
  w.count = 200;
  EXPECT_EQ(vop_call(&w), ENOSPC);
  vreq s;
  s.op = vop::setattr;
  s.fs = fs;
  s.fh = c.res_fh;
  s.cred = ROOT;
  s.sattr.set_size = true;
  s.sattr.size = 5000;
  EXPECT_EQ(vop_call(&s), ENOSPC);
  s.sattr.size = 10;  // room again once truncated
  ASSERT_EQ(vop_call(&s), 0);
  w.offset = 3000;
  EXPECT_EQ(vop_call(&w), 0);
  vfs_unmount(fs);
}

// A handle from another mount (another generation) is stale.
TEST(VfsMemory, HandlesOfAnotherMountAreStale) {
  std::string err;
  kc::vfs::mount *a = vfs_mount_memory(1 << 20, &err);
  kc::vfs::mount *b = vfs_mount_memory(1 << 20, &err);
  ASSERT_TRUE(a && b);
  vreq r;
  r.op = vop::getattr;
  r.fs = b;
  r.fh = vfs_root(a);
  EXPECT_EQ(vop_call(&r), ESTALE);
  vfs_unmount(a);
  vfs_unmount(b);
}

// ---- the asynchronous road ------------------------------------------------------------

namespace {

// What a request's continuation saw.
struct waiter {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  int status = -1;
  context ctx{};
  bool inside_start = false;
};

std::atomic<bool> g_in_start{false};

void on_done(void *, void *env, int status) {
  auto *w = static_cast<waiter *>(env);
  std::lock_guard<std::mutex> g(w->mu);
  w->ctx = kcont_current_context();
  w->inside_start = g_in_start.load();
  w->status = status;
  w->done = true;
  w->cv.notify_all();
}

void start_on_dispatcher(void *arg) {
  g_in_start = true;
  vop_start(static_cast<vreq *>(arg));
  g_in_start = false;
}

class AsyncVfsTest : public ::testing::TestWithParam<be> {
 protected:
  void SetUp() override {
    if (GetParam() == be::local && geteuid() != 0)
      KCONT_NOT_TESTED("the local backend needs root (open_by_handle_at)");
    ASSERT_EQ(vfs_register_levels(), 0);
    config cfg;
    cfg.cpus = 2;
    std::string err;
    ASSERT_EQ(kcont_start(cfg, &err), 0) << err;
    started_ = true;
    vfs_config vc;
    vc.bufs = 16;
    ASSERT_EQ(vfs_start(vc, &err), 0) << err;
    vfs_started_ = true;
    ASSERT_TRUE(m_.mount(GetParam(), &err)) << err;
    fs_ = m_.fs;
  }
  void TearDown() override {
    m_.unmount();
    if (vfs_started_) {
      EXPECT_EQ(bufpool_available(vfs_bufpool()), 16u) << "a buffer leaked";
      vfs_stop();
    }
    if (started_) kcont_stop();
  }

  vfh root() const { return vfs_root(fs_); }

  void prep(vreq &r, vop op, const vfh &fh, const vcred &c = ROOT) {
    r.op = op;
    r.fs = fs_;
    r.fh = fh;
    r.cred = c;
  }

  // Starts r from CPU 0's dispatcher ({softnet, interrupt}) and waits for
  // its continuation, which runs there too.
  int start(vreq &r) {
    waiter w;
    kcont k;
    EXPECT_EQ(kcont_init(&k, on_done, &w, target::at(LVL_SOFTNET, kind::interrupt, 0)), 0);
    r.done = &k;
    EXPECT_EQ(kcont_run_on(0, LVL_SOFTNET, start_on_dispatcher, &r), 0);
    {
      std::unique_lock<std::mutex> g(w.mu);
      // The bound only keeps a broken build from hanging: not a timing test.
      EXPECT_TRUE(w.cv.wait_for(g, std::chrono::seconds(60), [&] { return w.done; }));
    }
    kcont_drain(&k);
    EXPECT_EQ(w.status, r.error);
    EXPECT_FALSE(w.inside_start) << "the continuation ran inside vop_start";
    EXPECT_EQ(w.ctx.lvl, LVL_SOFTNET);
    EXPECT_EQ(w.ctx.k, kind::interrupt);
    return w.status;
  }

  vfh sync_create(const char *name, const std::string &data) {
    vreq c;
    prep(c, vop::create, root());
    set_name(c.name, name);
    EXPECT_EQ(vop_call(&c), 0);
    if (!data.empty()) {
      vreq w;
      prep(w, vop::write, c.res_fh);
      w.data = reinterpret_cast<const uint8_t *>(data.data());
      w.count = uint32_t(data.size());
      EXPECT_EQ(vop_call(&w), 0);
    }
    vfs_cred_reset();
    return c.res_fh;
  }

  // A file made by open(2) in the local backend's directory, its handle
  // found by a LOOKUP (which caches nothing).
  vfh outside_create(const char *name) {
    int fd = open((m_.dir + "/" + name).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    if (fd >= 0) close(fd);
    vreq l;
    prep(l, vop::lookup, root());
    set_name(l.name, name);
    EXPECT_EQ(vop_call(&l), 0);
    vfs_cred_reset();
    return l.res_fh;
  }

  uint64_t interrupt_ops(vop op) { return vfs_get_stats(fs_).ops_interrupt[size_t(op)]; }
  uint64_t thread_ops(vop op) { return vfs_get_stats(fs_).ops_thread[size_t(op)]; }

  mounted m_;
  kc::vfs::mount *fs_ = nullptr;
  bool started_ = false, vfs_started_ = false;
};

INSTANTIATE_TEST_SUITE_P(Backends, AsyncVfsTest, ::testing::Values(be::memory, be::local), be_name);

#ifndef NDEBUG
// KC_ASSERT (Debug builds): a misuse of the request API dies naming the
// invariant it broke.
TEST_P(AsyncVfsTest, VopCallOnADispatcherDies) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  vreq r;
  prep(r, vop::getattr, root());
  EXPECT_DEATH(kcont_run_on(
                   0, LVL_SOFTNET, [](void *a) { vop_call(static_cast<vreq *>(a)); }, &r),
               "vop_call may block: thread context only");
}

TEST_P(AsyncVfsTest, ResettingOrRestartingARequestInFlightDies) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  vreq r;
  prep(r, vop::getattr, root());
  r.in_flight = true;  // as between vop_start and the deferral of r.done
  EXPECT_DEATH(vreq_reset(&r), "vreq_reset only on a request not in flight");
  EXPECT_DEATH(vop_start(&r), "started again only after its continuation was deferred");
  r.in_flight = false;
}
#endif

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i++) s[i] = char('a' + i % 23);
  return s;
}

}  // namespace

TEST_P(AsyncVfsTest, AFirstRequestUsesAThreadACachedGetattrDoesNot) {
  // Made outside the VFS on the local backend: a CREATE through it would
  // leave the file cached (AFileJustCreatedIsCachedForTheRequestsThatFollow).
  vfh f = GetParam() == be::memory ? sync_create("f", "") : outside_create("f");
  uint64_t t0 = thread_ops(vop::getattr), i0 = interrupt_ops(vop::getattr);
  uint64_t misses0 = vfs_get_stats(fs_).cache_misses;
  vreq a;
  prep(a, vop::getattr, f);
  ASSERT_EQ(start(a), 0);
  EXPECT_TRUE(a.used_thread) << "the handle was not cached";
  EXPECT_TRUE(a.obj.have_post);
  EXPECT_EQ(a.obj.post.type, vtype::reg);
  vreq b;
  prep(b, vop::getattr, f);
  ASSERT_EQ(start(b), 0);
  EXPECT_FALSE(b.used_thread);
  EXPECT_TRUE(b.obj.have_post);
  EXPECT_EQ(b.obj.post.fileid, a.obj.post.fileid);
  vfs_stats s = vfs_get_stats(fs_);
  EXPECT_EQ(s.ops_thread[size_t(vop::getattr)], t0 + 1);
  EXPECT_EQ(s.ops_interrupt[size_t(vop::getattr)], i0 + 1);
  EXPECT_GE(s.cache_misses, misses0 + 1);
  EXPECT_GE(s.cache_hits, 1u);
}

// CREATE enters the file it made into the vnode cache: the WRITE and
// GETATTR that follow need no thread (before, the first request on the new
// handle resolved it in thread context).
// (The memory backend resolves handles in place: nothing to cache.)
class AsyncVfsLocalTest : public AsyncVfsTest {};
INSTANTIATE_TEST_SUITE_P(Local, AsyncVfsLocalTest, ::testing::Values(be::local), be_name);

TEST_P(AsyncVfsLocalTest, AFileJustCreatedIsCachedForTheRequestsThatFollow) {
  uint64_t primed0 = vfs_get_stats(fs_).cache_primed;
  vfh f = sync_create("new", "");
  EXPECT_EQ(vfs_get_stats(fs_).cache_primed, primed0 + 1);
  std::string data = pattern(4096);
  vreq w;
  prep(w, vop::write, f);
  w.data = reinterpret_cast<const uint8_t *>(data.data());
  w.count = uint32_t(data.size());
  ASSERT_EQ(start(w), 0);
  EXPECT_FALSE(w.used_thread) << "the created file was not cached";
  EXPECT_EQ(w.written, 4096u);
  vreq g;
  prep(g, vop::getattr, f);
  ASSERT_EQ(start(g), 0);
  EXPECT_FALSE(g.used_thread);
  EXPECT_EQ(g.obj.post.size, 4096u);
  // An unchecked CREATE of a file the caller may not write primes nothing
  // (no read-write descriptor for it), and the file still works through
  // the slow road.
  ASSERT_EQ(chmod((m_.dir + "/new").c_str(), 0444), 0);
  vreq c;
  prep(c, vop::create, root(), USER);
  set_name(c.name, "new");
  vfs_stats before = vfs_get_stats(fs_);
  EXPECT_EQ(vop_call(&c), 0);
  vfs_cred_reset();
  EXPECT_EQ(vfs_get_stats(fs_).cache_primed, before.cache_primed);
}

// A walk of nothing (MOUNT of an export root) names the root itself and
// needs no thread once the root is cached -- so a MOUNT of an export whose
// thread context is all taken by a hung file system still completes.
TEST_P(AsyncVfsTest, AWalkOfNothingCompletesWithoutAThread) {
  vreq warm;
  prep(warm, vop::getattr, root());
  ASSERT_EQ(start(warm), 0);
  for (std::string path : {"", "/", "./.", "//"}) {
    vreq w;
    prep(w, vop::walk, root());
    w.data = reinterpret_cast<const uint8_t *>(path.data());
    w.count = uint32_t(path.size());
    ASSERT_EQ(start(w), 0) << "'" << path << "'";
    EXPECT_FALSE(w.used_thread) << "'" << path << "'";
    ASSERT_TRUE(w.have_res_fh && w.have_res_attr);
    EXPECT_TRUE(same(w.res_fh, root())) << "'" << path << "'";
    EXPECT_EQ(w.res_attr.type, vtype::dir);
  }
  vfh f = sync_create("f", "");
  std::string sub = "/f";
  vreq w;
  prep(w, vop::walk, root());
  w.data = reinterpret_cast<const uint8_t *>(sub.data());
  w.count = uint32_t(sub.size());
  ASSERT_EQ(start(w), 0);
  ASSERT_TRUE(w.have_res_fh);
  EXPECT_TRUE(same(w.res_fh, f));
}

TEST_P(AsyncVfsTest, ACachedReadCompletesWithoutAThreadInABuffer) {
  const std::string data = pattern(20000);
  vfh f = sync_create("f", data);
  vreq warm;
  prep(warm, vop::getattr, f);
  ASSERT_EQ(start(warm), 0);
  uint64_t i0 = interrupt_ops(vop::read);
  vreq r;
  prep(r, vop::read, f);
  r.offset = 100;
  r.count = 5000;
  ASSERT_EQ(start(r), 0);
  EXPECT_FALSE(r.used_thread);
  ASSERT_EQ(r.rd.where, rd_where::buf);
  ASSERT_NE(r.rd.bp, nullptr);
  ASSERT_EQ(r.rd.n, 5000u);
  EXPECT_FALSE(r.rd.eof);
  EXPECT_EQ(std::string(r.rd.bp->data, r.rd.n), data.substr(100, 5000));
  EXPECT_TRUE(r.obj.have_post);
  EXPECT_EQ(interrupt_ops(vop::read), i0 + 1);
  vreq_release(&r);
  EXPECT_EQ(r.rd.bp, nullptr);
  vreq_release(&r);  // idempotent
  // The tail: short, at the end.
  vreq t;
  prep(t, vop::read, f);
  t.offset = 19000;
  t.count = 4096;
  ASSERT_EQ(start(t), 0);
  ASSERT_EQ(t.rd.n, 1000u);
  EXPECT_TRUE(t.rd.eof);
  if (t.rd.where == rd_where::buf) {
    EXPECT_EQ(std::string(t.rd.bp->data, 1000), data.substr(19000));
  }
  vreq_release(&t);
}

TEST_P(AsyncVfsTest, AWriteThenAReadReturnsTheNewData) {
  vfh f = sync_create("f", pattern(8192));
  vreq warm;
  prep(warm, vop::getattr, f);
  ASSERT_EQ(start(warm), 0);
  // Read first (the old data may now be in flight or cached anywhere).
  vreq r0;
  prep(r0, vop::read, f);
  r0.count = 4096;
  ASSERT_EQ(start(r0), 0);
  vreq_release(&r0);
  const std::string fresh(4096, 'Z');
  vreq w;
  prep(w, vop::write, f);
  w.offset = 1000;
  w.count = uint32_t(fresh.size());
  w.data = reinterpret_cast<const uint8_t *>(fresh.data());
  ASSERT_EQ(start(w), 0);
  EXPECT_EQ(w.written, fresh.size());
  EXPECT_TRUE(w.obj.have_post);
  EXPECT_FALSE(w.used_thread) << "an overwrite of a cached file by root needs no thread";
  vreq r;
  prep(r, vop::read, f);
  r.offset = 0;
  r.count = 8192;
  std::vector<uint8_t> dst(8192);
  r.dst = dst.data();
  r.dst_cap = 8192;
  ASSERT_EQ(start(r), 0);
  ASSERT_EQ(r.rd.n, 8192u);
  std::string got = r.rd.where == rd_where::buf
                        ? std::string(r.rd.bp->data, r.rd.n)
                        : std::string(reinterpret_cast<char *>(dst.data()), r.rd.n);
  std::string want = pattern(8192);
  want.replace(1000, fresh.size(), fresh);
  EXPECT_EQ(got, want);
  vreq_release(&r);
  // A write that grows the file, then the read of the new tail.
  vreq g;
  prep(g, vop::write, f);
  g.offset = 8192;
  g.count = uint32_t(fresh.size());
  g.data = reinterpret_cast<const uint8_t *>(fresh.data());
  ASSERT_EQ(start(g), 0);
  if (GetParam() == be::memory) {
    EXPECT_TRUE(g.used_thread) << "growing a file allocates";
  }
  vreq r2;
  prep(r2, vop::read, f);
  r2.offset = 8192;
  r2.count = 8192;
  r2.dst = dst.data();
  r2.dst_cap = 8192;
  ASSERT_EQ(start(r2), 0);
  ASSERT_EQ(r2.rd.n, fresh.size());
  EXPECT_TRUE(r2.rd.eof);
  got = r2.rd.where == rd_where::buf ? std::string(r2.rd.bp->data, r2.rd.n)
                                     : std::string(reinterpret_cast<char *>(dst.data()), r2.rd.n);
  EXPECT_EQ(got, fresh);
  vreq_release(&r2);
}

TEST_P(AsyncVfsTest, CreateRunsInAThread) {
  vreq warm;
  prep(warm, vop::getattr, root());
  ASSERT_EQ(start(warm), 0);
  uint64_t t0 = thread_ops(vop::create);
  vreq c;
  prep(c, vop::create, root(), USER);
  set_name(c.name, "new");
  ASSERT_EQ(start(c), 0);
  EXPECT_TRUE(c.used_thread);
  ASSERT_TRUE(c.have_res_fh && c.have_res_attr);
  EXPECT_EQ(c.res_attr.uid, 1000u);
  EXPECT_TRUE(c.obj.have_pre && c.obj.have_post);
  EXPECT_EQ(thread_ops(vop::create), t0 + 1);
  vreq l;
  prep(l, vop::lookup, root());
  set_name(l.name, "new");
  ASSERT_EQ(start(l), 0);
  EXPECT_TRUE(l.have_res_fh);
}

// A read-only caller's modifying request on a cached handle is refused on
// the spot, with the attributes it reports.
TEST_P(AsyncVfsTest, ErofsIsAnsweredWithoutAThread) {
  vreq warm;
  prep(warm, vop::getattr, root());
  ASSERT_EQ(start(warm), 0);
  vreq c;
  prep(c, vop::mkdir, root());
  c.flags = VREQ_RDONLY;
  set_name(c.name, "d");
  EXPECT_EQ(start(c), EROFS);
  EXPECT_FALSE(c.used_thread);
  EXPECT_TRUE(c.obj.have_post);
}

TEST_P(AsyncVfsTest, ARemovedObjectsHandleIsStale) {
  vfh f = sync_create("f", "x");
  vreq warm;
  prep(warm, vop::getattr, root());
  ASSERT_EQ(start(warm), 0);
  vreq rm;
  prep(rm, vop::remove, root());
  set_name(rm.name, "f");
  ASSERT_EQ(start(rm), 0);
  EXPECT_TRUE(rm.used_thread);
  vreq g;
  prep(g, vop::getattr, f);
  EXPECT_EQ(start(g), ESTALE);
  EXPECT_TRUE(g.used_thread);
}

// The memory backend lists a cached directory in interrupt context.
TEST_P(AsyncVfsTest, ReaddirOfACachedDirectory) {
  std::set<std::string> want = {".", ".."};
  for (int i = 0; i < 5; i++) {
    std::string n = "f" + std::to_string(i);
    sync_create(n.c_str(), "");
    want.insert(n);
  }
  vreq warm;
  prep(warm, vop::getattr, root());
  ASSERT_EQ(start(warm), 0);
  // emit may run in interrupt context: it must not allocate (the debug
  // build's allocation guard aborts), so it fills fixed arrays.
  struct fixed {
    int budget = 0, n = 0;
    char names[16][16] = {};
    uint64_t cookies[16] = {};
    bool have_fh[16] = {};
  } l;
  auto emit = [](void *arg, const vdirent &e) {
    auto *f = static_cast<fixed *>(arg);
    if (f->budget <= 0 || f->n == 16 || e.namelen >= 16) return false;
    f->budget--;
    std::memcpy(f->names[f->n], e.name, e.namelen);
    f->cookies[f->n] = e.cookie;
    f->have_fh[f->n] = e.have_fh;
    f->n++;
    return true;
  };
  uint64_t cookie = 0;
  for (int calls = 0; calls < 100; calls++) {
    vreq r;
    prep(r, vop::readdir, root());
    r.cookie = cookie;
    r.plus = true;
    r.emit = emit;
    r.emit_arg = &l;
    l.budget = 2;
    ASSERT_EQ(start(r), 0);
    EXPECT_TRUE(r.obj.have_post);
    if (GetParam() == be::memory) {
      EXPECT_FALSE(r.used_thread);
    }
    if (r.eof) break;
    ASSERT_GT(l.n, 0);
    cookie = l.cookies[l.n - 1];
  }
  std::set<std::string> got;
  for (int i = 0; i < l.n; i++) {
    got.insert(l.names[i]);
    if (l.names[i][0] == 'f') {
      EXPECT_TRUE(l.have_fh[i]) << l.names[i];
    }
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(size_t(l.n), want.size());
}

// A write by someone without root to a setuid file: the local backend sends
// it to a thread (the kernel must clear the bits under the caller's
// identity); either way the bits are gone.
TEST_P(AsyncVfsTest, AWriteBySomeoneElseClearsSetuid) {
  vfh f = sync_create("f", "data");
  vreq ch;
  prep(ch, vop::setattr, f);
  ch.sattr.set_mode = true;
  ch.sattr.mode = 06777;
  ASSERT_EQ(start(ch), 0);
  ASSERT_EQ(ch.obj.post.mode, 06777u);
  vreq w;
  prep(w, vop::write, f, USER);
  w.count = 2;
  w.data = reinterpret_cast<const uint8_t *>("xy");
  ASSERT_EQ(start(w), 0);
  if (GetParam() == be::local) {
    EXPECT_TRUE(w.used_thread);
  }
  vreq g;
  prep(g, vop::getattr, f);
  ASSERT_EQ(start(g), 0);
  EXPECT_EQ(g.obj.post.mode, 0777u);
}

// ---- thread context: a mount's share of the lanes ---------------------------
//
// A test backend whose every operation goes to thread context; on the
// "stuck" mount, run() waits at a gate the test opens at the end -- a file
// system that stopped answering.  The other mount answers at once.

namespace {

struct gate_state {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false, held_open = false;
  int running = 0, max_running = 0, held = 0;
  void reset() {
    std::lock_guard<std::mutex> g(mu);
    open = held_open = false;
    running = max_running = held = 0;
  }
  // Lets the requests waiting on `flag` (open: the stuck ones, held_open:
  // the slow ones) answer.
  void release(bool gate_state::*flag) {
    {
      std::lock_guard<std::mutex> g(mu);
      this->*flag = true;
    }
    cv.notify_all();
  }
};
gate_state g_gate;

int gate_vget(kc::vfs::mount *, const vfh &, vnode *vp) {
  vp->type = vtype::dir;
  return 0;
}
void gate_reclaim(vnode *) {}
int gate_start(vreq *) { return VB_BLOCK; }
int held_tag;  // a mount whose requests wait for g_gate.held_open
void gate_run(vreq *r) {
  if (r->fs->priv == nullptr) return;  // the healthy mount
  std::unique_lock<std::mutex> g(g_gate.mu);
  if (r->fs->priv == &held_tag) {  // slow, not stuck: answers when the test says
    g_gate.held++;
    g_gate.cv.wait(g, [] { return g_gate.held_open; });
    g_gate.held--;
    return;
  }
  g_gate.running++;
  g_gate.max_running = std::max(g_gate.max_running, g_gate.running);
  g_gate.cv.wait(g, [] { return g_gate.open; });
  g_gate.running--;
}
void gate_unmount(kc::vfs::mount *) {}
const vfs_backend gate_backend = {"gate",     gate_vget, gate_reclaim,
                                  gate_start, gate_run,  gate_unmount};

void count_done(void *, void *env, int) { static_cast<std::atomic<int> *>(env)->fetch_add(1); }

struct gated_requests {
  std::vector<std::unique_ptr<vreq>> reqs;
  std::vector<std::unique_ptr<kcont>> kcs;
  std::atomic<int> done{0};
  void start(kc::vfs::mount *fs, int n) {
    for (int i = 0; i < n; i++) {
      auto r = std::make_unique<vreq>();
      auto k = std::make_unique<kcont>();
      ASSERT_EQ(kcont_init(k.get(), count_done, &done, target::at(LVL_SOFTNET, kind::interrupt, 0)),
                0);
      r->op = vop::getattr;
      r->fs = fs;
      r->fh = fs->root;
      r->done = k.get();
      ASSERT_EQ(kcont_run_on(
                    0, LVL_SOFTNET, [](void *a) { vop_start(static_cast<vreq *>(a)); }, r.get()),
                0);
      reqs.push_back(std::move(r));
      kcs.push_back(std::move(k));
    }
  }
  void drain() {
    for (auto &k : kcs) kcont_drain(k.get());
  }
};

// kcont on two CPUs and the VFS's lanes, `share` lanes per mount (0: half).
void start_lanes(uint32_t share) {
  ASSERT_EQ(vfs_register_levels(), 0);
  config cfg;
  cfg.cpus = 2;
  std::string err;
  ASSERT_EQ(kcont_start(cfg, &err), 0) << err;
  vfs_config vc;
  vc.bufs = 16;
  vc.mount_share = share;
  ASSERT_EQ(vfs_start(vc, &err), 0) << err;
}

// A mount of a test backend whose root handle is "r"; priv tags it.
kc::vfs::mount *test_mount(const vfs_backend *be, void *priv = nullptr) {
  kc::vfs::mount *fs = vfs_alloc(be, 16);
  fs->priv = priv;
  fs->root.len = 1;
  fs->root.data[0] = 'r';
  return fs;
}

// Unmounts the test mounts, then stops the VFS and kcont.
void stop_lanes(std::initializer_list<kc::vfs::mount *> mounts) {
  for (kc::vfs::mount *fs : mounts) vfs_unmount(fs);
  vfs_stop();
  kcont_stop();
}

TEST(VfsLanes, AHungMountHoldsOnlyItsShareAndOthersGoOn) {
  g_gate.reset();
  ASSERT_NO_FATAL_FAILURE(start_lanes(0));
  const int lanes = 4 * kcont_ncpus(), share = lanes / 2;
  static int stuck_tag;
  kc::vfs::mount *stuck = test_mount(&gate_backend, &stuck_tag),
                 *healthy = test_mount(&gate_backend);

  gated_requests a, b;
  a.start(stuck, 3 * lanes);  // far more than its share
  // Its share of lanes is taken, and no more.
  ASSERT_TRUE(kctest::eventually([&] {
    std::lock_guard<std::mutex> g(g_gate.mu);
    return g_gate.running == share;
  }));
  // Meanwhile every request of the other mount completes: none waits
  // behind a stuck worker.
  b.start(healthy, 2 * lanes);
  EXPECT_TRUE(kctest::eventually([&] { return b.done.load() == 2 * lanes; }))
      << b.done.load() << " of " << 2 * lanes << " completed";
  EXPECT_EQ(a.done.load(), 0);
  {
    std::lock_guard<std::mutex> g(g_gate.mu);
    EXPECT_EQ(g_gate.max_running, share);
    g_gate.open = true;
  }
  g_gate.cv.notify_all();
  // The parked ones go as the running ones finish.
  EXPECT_TRUE(kctest::eventually([&] { return a.done.load() == 3 * lanes; }));
  EXPECT_GT(stuck->share->waits, 0u);
  EXPECT_EQ(stuck->share->in_thread, 0u);
  a.drain();
  b.drain();
  stop_lanes({stuck, healthy});
}

// Two mounts of one file system (one device) share one share: together
// they hold no more lanes than one would.
TEST(VfsLanes, TwoMountsOfAHungFileSystemHoldOneShare) {
  g_gate.reset();
  ASSERT_NO_FATAL_FAILURE(start_lanes(0));
  const int lanes = 4 * kcont_ncpus(), share = lanes / 2;
  static int stuck_tag;
  kc::vfs::mount *one = test_mount(&gate_backend, &stuck_tag),
                 *two = test_mount(&gate_backend, &stuck_tag);
  kc::vfs::mount *healthy = test_mount(&gate_backend);
  vfs_set_device(one, 0x1234);
  vfs_set_device(two, 0x1234);
  vfs_set_device(healthy, 0x5678);
  EXPECT_EQ(one->share, two->share);
  EXPECT_NE(one->share, healthy->share);
  gated_requests a, b, c;
  a.start(one, 2 * lanes);
  b.start(two, 2 * lanes);
  ASSERT_TRUE(kctest::eventually([&] {
    std::lock_guard<std::mutex> g(g_gate.mu);
    return g_gate.running == share;
  }));
  ASSERT_TRUE(kctest::eventually([&] {
    spinlock g(one->share->lock);
    return one->share->waiting == uint32_t(4 * lanes - share);
  }));
  c.start(healthy, 2 * lanes);  // the other half of the lanes serves it
  EXPECT_TRUE(kctest::eventually([&] { return c.done.load() == 2 * lanes; }));
  {
    std::lock_guard<std::mutex> g(g_gate.mu);
    EXPECT_EQ(g_gate.max_running, share) << "two mounts of one file system took two shares";
    g_gate.open = true;
  }
  g_gate.cv.notify_all();
  EXPECT_TRUE(kctest::eventually([&] { return a.done.load() + b.done.load() == 4 * lanes; }));
  a.drain();
  b.drain();
  c.drain();
  stop_lanes({one, two, healthy});
}

// With every lane busy -- half stuck in a hung file system, half in a slow
// one -- a third mount's requests queue behind the slow workers, never
// behind a stuck one: a lane busy with one request for STALL_MS is taken
// last.  Before, the tie on load went round robin, and some of them waited
// for the hung file system.
TEST(VfsLanes, NoRequestQueuesBehindAStalledWorker) {
  g_gate.reset();
  ASSERT_NO_FATAL_FAILURE(start_lanes(0));
  const int lanes = 4 * kcont_ncpus(), share = lanes / 2;
  static int stuck_tag;
  kc::vfs::mount *stuck = test_mount(&gate_backend, &stuck_tag),
                 *slow = test_mount(&gate_backend, &held_tag);
  kc::vfs::mount *third = test_mount(&gate_backend);
  gated_requests a, b, c;
  a.start(stuck, share);
  // The event: every stuck request runs, and its lane counts as stalled.
  ASSERT_TRUE(kctest::eventually([&] {
    std::lock_guard<std::mutex> g(g_gate.mu);
    return g_gate.running == share;
  }));
  ASSERT_TRUE(kctest::eventually([&] { return vfs_lanes_stalled() == uint32_t(share); }));
  b.start(slow, share);  // the free lanes
  ASSERT_TRUE(kctest::eventually([&] {
    std::lock_guard<std::mutex> g(g_gate.mu);
    return g_gate.held == share;
  }));
  c.start(third, 4 * lanes);
  g_gate.release(&gate_state::held_open);  // the slow file system answers
  EXPECT_TRUE(kctest::eventually([&] { return c.done.load() == 4 * lanes; }))
      << c.done.load() << " of " << 4 * lanes << " completed: the rest wait behind a stuck worker";
  EXPECT_EQ(a.done.load(), 0);
  g_gate.release(&gate_state::open);
  EXPECT_TRUE(kctest::eventually([&] { return a.done.load() == share; }));
  a.drain();
  b.drain();
  c.drain();
  stop_lanes({stuck, slow, third});
}

// One file system allowed every lane but one (threads=) hangs in all of
// them; another mount's requests, many more than the one free lane, all
// complete -- at once, not after its stuck neighbours have been in their
// requests for STALL_MS.  Before, a request that found every lane busy
// queued on the busy lane whose worker began last, which here is a stuck
// one: it waited for the hung file system (seen 1 run in 40 with 6 of 8
// lanes stuck; with every lane but one, most runs).
TEST(VfsLanes, NoRequestWaitsBehindAStuckWorkerEvenBeforeItCountsAsStalled) {
  g_gate.reset();
  ASSERT_NO_FATAL_FAILURE(start_lanes(0));
  const int lanes = 4 * kcont_ncpus(), stuck_lanes = lanes - 1;
  static int stuck_tag;
  kc::vfs::mount *stuck = test_mount(&gate_backend, &stuck_tag),
                 *healthy = test_mount(&gate_backend);
  vfs_set_thread_limit(stuck, uint32_t(stuck_lanes));
  gated_requests a, b;
  a.start(stuck, stuck_lanes);
  ASSERT_TRUE(kctest::eventually([&] {
    std::lock_guard<std::mutex> g(g_gate.mu);
    return g_gate.running == stuck_lanes;
  }));
  b.start(healthy, 8 * lanes);
  EXPECT_TRUE(kctest::eventually([&] { return b.done.load() == 8 * lanes; }))
      << b.done.load() << " of " << 8 * lanes << " completed: the rest wait behind a stuck worker";
  EXPECT_EQ(a.done.load(), 0);
  g_gate.release(&gate_state::open);
  EXPECT_TRUE(kctest::eventually([&] { return a.done.load() == stuck_lanes; }));
  a.drain();
  b.drain();
  stop_lanes({stuck, healthy});
}

// A back end whose calls wait on a network (VBC_REMOTE): each call takes
// at least a millisecond (a sleep never ends early) while g_remote_waits,
// none otherwise.
std::atomic<bool> g_remote_waits{false};
void remote_run(vreq *) {
  if (g_remote_waits.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}
const vfs_backend remote_backend = {"remote",   gate_vget,    gate_reclaim, gate_start,
                                    remote_run, gate_unmount, VBC_REMOTE};

// Mounted before vfs_start, a remote back end gets 16 lanes per CPU; its
// share is mount_share while its calls answer at once, every lane but
// mount_share's worth while they wait, and narrows again when they stop
// waiting.
TEST(VfsLanes, ARemoteFileSystemsShareWidensWhileItsCallsWait) {
  g_remote_waits = true;
  kc::vfs::mount *fs = test_mount(&remote_backend);
  ASSERT_NO_FATAL_FAILURE(start_lanes(0));
  const uint32_t lanes = REMOTE_LANES_PER_CPU * uint32_t(kcont_ncpus()),
                 narrow = std::min(lanes / 2, 2 * uint32_t(kcont_ncpus()));
  EXPECT_EQ(vfs_get_stats(fs).thread_share, narrow);
  {
    gated_requests slow;
    slow.start(fs, 16);
    EXPECT_TRUE(kctest::eventually([&] { return slow.done.load() == 16; }));
    slow.drain();
  }
  EXPECT_EQ(vfs_get_stats(fs).thread_share, lanes - narrow);
  g_remote_waits = false;
  EXPECT_TRUE(kctest::eventually([&] {
    gated_requests quick;
    quick.start(fs, 64);
    const bool all = kctest::eventually([&] { return quick.done.load() == 64; });
    quick.drain();
    return all && vfs_get_stats(fs).thread_share == narrow;
  }));
  stop_lanes({fs});
}

// Which worker threads ran a mount's requests: the first one waits for the
// gate while the rest park in the mount's FIFO (share 1).
struct chain_state {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  int ran = 0;
  std::set<std::thread::id> threads;
};
chain_state g_chain;

int chain_start(vreq *) { return VB_BLOCK; }
void chain_run(vreq *) {
  std::unique_lock<std::mutex> g(g_chain.mu);
  g_chain.threads.insert(std::this_thread::get_id());
  g_chain.ran++;
  g_chain.cv.notify_all();
  g_chain.cv.wait(g, [] { return g_chain.open; });
}
const vfs_backend chain_backend = {"chain",     gate_vget, gate_reclaim,
                                   chain_start, chain_run, gate_unmount};

// A worker whose request is done runs its mount's next parked request
// itself when nothing else is queued on its lane: handing it to another
// lane would wake a sleeping worker while this one goes to sleep.
TEST(VfsLanes, AWorkerRunsItsMountsParkedRequestsItself) {
  {
    std::lock_guard<std::mutex> g(g_chain.mu);  // a repeated run starts afresh
    g_chain.open = false;
    g_chain.ran = 0;
    g_chain.threads.clear();
  }
  ASSERT_NO_FATAL_FAILURE(start_lanes(1));
  kc::vfs::mount *fs = test_mount(&chain_backend);
  constexpr int n = 24;  // three times the lanes of two CPUs
  gated_requests reqs;
  reqs.start(fs, n);
  // One runs (and waits at the gate); the others are parked behind it.
  ASSERT_TRUE(kctest::eventually([&] {
    uint32_t parked;
    {
      spinlock g(fs->share->lock);
      parked = fs->share->waiting;
    }
    std::lock_guard<std::mutex> g(g_chain.mu);
    return g_chain.ran == 1 && parked == uint32_t(n - 1);
  }));
  {
    std::lock_guard<std::mutex> g(g_chain.mu);
    g_chain.open = true;
  }
  g_chain.cv.notify_all();
  EXPECT_TRUE(kctest::eventually([&] { return reqs.done.load() == n; }));
  {
    std::lock_guard<std::mutex> g(g_chain.mu);
    EXPECT_EQ(g_chain.ran, n);
    EXPECT_EQ(g_chain.threads.size(), 1u) << "parked requests were handed to other workers";
  }
  {
    spinlock g(fs->share->lock);
    EXPECT_EQ(fs->share->in_thread, 0u);
    EXPECT_EQ(fs->share->waits, uint64_t(n - 1));
  }
  reqs.drain();
  stop_lanes({fs});
}

// An export's threads= limit holds, is capped at the lanes there are, and
// the larger of two mounts' limits is the file system's; lanes_per_cpu
// above 16 is refused.
TEST(VfsLanes, AFileSystemsThreadLimitHoldsItsRequests) {
  g_gate.reset();
  ASSERT_EQ(vfs_register_levels(), 0);
  config cfg;
  cfg.cpus = 2;
  std::string err;
  ASSERT_EQ(kcont_start(cfg, &err), 0) << err;
  vfs_config vc;
  vc.bufs = 16;
  vc.lanes_per_cpu = 17;
  EXPECT_EQ(vfs_start(vc, &err), EINVAL);
  EXPECT_NE(err.find("at most 16"), std::string::npos) << err;
  vc.lanes_per_cpu = 3;
  ASSERT_EQ(vfs_start(vc, &err), 0) << err;
  const int lanes = 3 * kcont_ncpus();
  static int stuck_tag;
  kc::vfs::mount *one = test_mount(&gate_backend, &stuck_tag),
                 *two = test_mount(&gate_backend, &stuck_tag), *wide = test_mount(&gate_backend);
  vfs_set_device(one, 0x77);
  vfs_set_thread_limit(one, 2);
  vfs_set_device(two, 0x77);
  vfs_set_thread_limit(two, 3);
  vfs_set_thread_limit(wide, 1000);
  EXPECT_EQ(vfs_get_stats(one).thread_share, 3u);
  EXPECT_EQ(vfs_get_stats(wide).thread_share, uint32_t(lanes));
  gated_requests a;
  a.start(one, 10);
  ASSERT_TRUE(kctest::eventually([&] {
    std::lock_guard<std::mutex> g(g_gate.mu);
    return g_gate.running == 3;
  }));
  ASSERT_TRUE(kctest::eventually([&] {
    spinlock g(one->share->lock);
    return one->share->waiting == 7u;
  }));
  {
    std::lock_guard<std::mutex> g(g_gate.mu);
    EXPECT_EQ(g_gate.max_running, 3);
    g_gate.open = true;
  }
  g_gate.cv.notify_all();
  EXPECT_TRUE(kctest::eventually([&] { return a.done.load() == 10; }));
  a.drain();
  stop_lanes({one, two, wide});
}

// ---- a back end that completes from a thread of its own --------------------
//
// As a network file system's client library would: `start` hands GETATTR
// to the back end's own thread and answers VB_PENDING; that thread fills
// the results and calls vop_complete (vfs(9), THE BACKEND INTERFACE).  The
// queue is a ring allocated at mount time: `start` runs in interrupt
// context, where nothing may allocate (the Debug build's allocation guard
// aborts).

constexpr size_t FOREIGN_RING = 4096;
constexpr uint64_t FOREIGN_ROOT_FILEID = 77;

struct foreign_fs {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<vreq *> ring = std::vector<vreq *>(FOREIGN_RING);
  size_t head = 0, tail = 0;  // taken at head, put at tail; tail - head <= FOREIGN_RING
  bool stop = false;
  std::thread thread;
  std::atomic<uint64_t> answered{0};
};

foreign_fs *ff(kc::vfs::mount *fs) { return static_cast<foreign_fs *>(fs->priv); }

void foreign_root_attrs(vreq *r) {
  r->obj.have_post = true;
  r->obj.post = vattr{};
  r->obj.post.type = vtype::dir;
  r->obj.post.mode = 0755;
  r->obj.post.nlink = 2;
  r->obj.post.fileid = FOREIGN_ROOT_FILEID;
  r->error = 0;
}

int foreign_start(vreq *r) {
  if (r->op != vop::getattr) return VB_BLOCK;
  foreign_fs *f = ff(r->fs);
  {
    std::lock_guard<std::mutex> g(f->mu);
    if (f->tail - f->head == FOREIGN_RING) return VB_BLOCK;  // full: thread context does it
    f->ring[f->tail++ % FOREIGN_RING] = r;
  }
  f->cv.notify_one();
  return VB_PENDING;  // r is the foreign thread's now
}

void foreign_run(vreq *r) {  // thread context (vop_call): answered at once
  if (r->op == vop::getattr)
    foreign_root_attrs(r);
  else
    r->error = ENOTSUP;
}

void foreign_unmount(kc::vfs::mount *fs) {
  foreign_fs *f = ff(fs);
  {
    std::lock_guard<std::mutex> g(f->mu);
    f->stop = true;
  }
  f->cv.notify_one();
  f->thread.join();
}

const vfs_backend foreign_backend = {
    "foreign",   gate_vget,       gate_reclaim,          foreign_start,
    foreign_run, foreign_unmount, VBC_FOREIGN_COMPLETION};

void foreign_thread(foreign_fs *f) {
  std::unique_lock<std::mutex> g(f->mu);
  for (;;) {
    f->cv.wait(g, [&] { return f->stop || f->head != f->tail; });
    if (f->head == f->tail) return;  // stopping, nothing left
    vreq *r = f->ring[f->head++ % FOREIGN_RING];
    g.unlock();
    foreign_root_attrs(r);
    f->answered.fetch_add(1, std::memory_order_relaxed);
    vop_complete(r);  // from a thread the VFS does not own
    g.lock();
  }
}

// What the continuations saw: how often each ran, and whether any ran off
// {softnet, interrupt} of CPU 0, on the foreign thread, or with an error.
struct foreign_results {
  std::vector<std::atomic<int>> runs;
  std::atomic<size_t> done{0};
  std::atomic<bool> wrong_context{false};
  std::thread::id foreign;
  explicit foreign_results(size_t n) : runs(n) {}
};

struct foreign_request {
  vreq r;
  kcont k;
  size_t index = 0;
  foreign_results *res = nullptr;
};

void foreign_done(void *, void *env, int status) {
  auto *q = static_cast<foreign_request *>(env);
  context c = kcont_current_context();
  q->res->runs[q->index].fetch_add(1);
  if (c.lvl != LVL_SOFTNET || c.k != kind::interrupt || status != 0 ||
      std::this_thread::get_id() == q->res->foreign)
    q->res->wrong_context = true;
  q->res->done.fetch_add(1);
}

TEST(VfsBackendInterface, PendingRequestsCompletedFromAForeignThreadRunTheirContinuationsOnce) {
  ASSERT_NO_FATAL_FAILURE(start_lanes(0));
  foreign_fs f;
  kc::vfs::mount *fs = test_mount(&foreign_backend, &f);
  f.thread = std::thread(foreign_thread, &f);
  constexpr size_t N = 2000;
  foreign_results res(N);
  res.foreign = f.thread.get_id();

  // Thread context first: resolves and caches the root's vnode, so the
  // requests below reach the back end's start.
  vreq sync;
  sync.op = vop::getattr;
  sync.fs = fs;
  sync.fh = fs->root;
  ASSERT_EQ(vop_call(&sync), 0);
  EXPECT_EQ(sync.obj.post.fileid, FOREIGN_ROOT_FILEID);
  vfs_cred_reset();

  std::vector<std::unique_ptr<foreign_request>> reqs(N);
  std::vector<foreign_request *> batch;
  for (size_t i = 0; i < N; i++) {
    reqs[i] = std::make_unique<foreign_request>();
    foreign_request *q = reqs[i].get();
    q->index = i;
    q->res = &res;
    q->r.op = vop::getattr;
    q->r.fs = fs;
    q->r.fh = fs->root;
    ASSERT_EQ(kcont_init(&q->k, foreign_done, q, target::at(LVL_SOFTNET, kind::interrupt, 0)), 0);
    q->r.done = &q->k;
    batch.push_back(q);
  }
  ASSERT_EQ(kcont_run_on(
                0, LVL_SOFTNET,
                [](void *a) {
                  for (foreign_request *q : *static_cast<std::vector<foreign_request *> *>(a))
                    vop_start(&q->r);
                },
                &batch),
            0);
  EXPECT_TRUE(kctest::eventually([&] { return res.done.load() >= N; }, 120));
  for (auto &q : reqs) kcont_drain(&q->k);
  EXPECT_EQ(res.done.load(), N);
  EXPECT_FALSE(res.wrong_context.load());
  for (size_t i = 0; i < N; i++) EXPECT_EQ(res.runs[i].load(), 1) << "request " << i;
  for (auto &q : reqs) {
    EXPECT_EQ(q->r.error, 0);
    EXPECT_TRUE(q->r.obj.have_post);
    EXPECT_EQ(q->r.obj.post.fileid, FOREIGN_ROOT_FILEID);
  }
  EXPECT_EQ(f.answered.load(), N);
  vfs_stats st = vfs_get_stats(fs);
  EXPECT_EQ(st.ops_interrupt[size_t(vop::getattr)], N)
      << "pending requests count as done without a thread of the VFS";
  stop_lanes({fs});
}

// ---- capability bits: what the VFS skips for a back end that said so --------------

// What run saw: the thread's filesystem uid and gid (setfsuid/setfsgid
// with an invalid id only read them), and whether a kcont dispatcher was
// calling it.
struct caps_seen {
  std::atomic<int> runs{0};
  std::atomic<uint32_t> fsuid{0}, fsgid{0};
  std::atomic<bool> in_interrupt{false};
};
caps_seen g_caps;

void caps_run(vreq *r) {
  g_caps.fsuid = uint32_t(setfsuid(uid_t(-1)));
  g_caps.fsgid = uint32_t(setfsgid(gid_t(-1)));
  g_caps.in_interrupt = kcont_in_interrupt();
  g_caps.runs++;
  foreign_root_attrs(r);
}
int caps_start_never(vreq *) {
  ADD_FAILURE() << "start called on a VBC_THREAD_ONLY back end";
  return VB_BLOCK;
}
const vfs_backend thread_only_backend = {"thread-only", gate_vget,    gate_reclaim,   nullptr,
                                         caps_run,      gate_unmount, VBC_THREAD_ONLY};
const vfs_backend own_cred_backend = {"own-cred",
                                      gate_vget,
                                      gate_reclaim,
                                      caps_start_never,
                                      caps_run,
                                      gate_unmount,
                                      VBC_OWN_CREDENTIALS | VBC_THREAD_ONLY};
const vfs_backend switched_backend = {"switched", gate_vget, gate_reclaim,
                                      gate_start, caps_run,  gate_unmount};

// A request to a VBC_THREAD_ONLY back end whose vnode is cached goes
// straight to a lane: start (nullptr here) is never called.
// threads=N is an option of every back end: vfs_mount takes it before the
// back end sees its options, and refuses what is not 1..4096.
TEST(VfsMountOptions, ThreadsIsEveryBackEndsAndChecked) {
  std::string err;
  kc::vfs::mount *m = vfs_mount("memory", {{"size", "1M"}, {"threads", "3"}}, &err);
  ASSERT_NE(m, nullptr) << err;
  EXPECT_EQ(m->share->limit.load(), 3u);
  vfs_unmount(m);
  for (const char *bad : {"0", "x", "4097", "-1", "2K", ""}) {
    err.clear();
    EXPECT_EQ(vfs_mount("memory", {{"size", "1M"}, {"threads", bad}}, &err), nullptr) << bad;
    EXPECT_NE(err.find("threads"), std::string::npos) << bad << ": " << err;
  }
  err.clear();
  EXPECT_EQ(vfs_mount("memory", {{"size", "1M"}, {"threads", "2"}, {"threads", "2"}}, &err),
            nullptr);
  EXPECT_NE(err.find("twice"), std::string::npos) << err;
}

TEST(VfsBackendCaps, AThreadOnlyBackEndIsNeverAskedToStart) {
  ASSERT_NO_FATAL_FAILURE(start_lanes(0));
  kc::vfs::mount *fs = test_mount(&thread_only_backend);
  vreq sync;  // caches the root's vnode: the next request would reach start
  sync.op = vop::getattr;
  sync.fs = fs;
  sync.fh = fs->root;
  ASSERT_EQ(vop_call(&sync), 0);
  vfs_cred_reset();
  g_caps.runs = 0;
  vreq r;
  r.op = vop::getattr;
  r.fs = fs;
  r.fh = fs->root;
  std::atomic<int> done{0};
  kcont k;
  ASSERT_EQ(kcont_init(&k, count_done, &done, target::at(LVL_SOFTNET, kind::interrupt, 0)), 0);
  r.done = &k;
  ASSERT_EQ(kcont_run_on(
                0, LVL_SOFTNET, [](void *a) { vop_start(static_cast<vreq *>(a)); }, &r),
            0);
  ASSERT_TRUE(kctest::eventually([&] { return done.load() == 1; }));
  kcont_drain(&k);
  EXPECT_EQ(r.error, 0);
  EXPECT_TRUE(r.used_thread);
  EXPECT_EQ(g_caps.runs.load(), 1);
  EXPECT_FALSE(g_caps.in_interrupt.load());
  EXPECT_EQ(vfs_get_stats(fs).ops_thread[size_t(vop::getattr)], 2u);
  stop_lanes({fs});
}

// The VFS switches a thread's identity to the caller's for a back end
// that relies on the kernel's checks, and leaves it alone for one that
// declares VBC_OWN_CREDENTIALS (it hands r->cred to its library itself).
TEST(VfsBackendCaps, ABackEndThatCarriesCredentialsRunsWithoutAnIdentitySwitch) {
  if (geteuid() != 0) KCONT_NOT_TESTED("switching identities needs root");
  std::string why;
  ASSERT_EQ(vfs_identity_check(&why), 0) << why;
  for (const vfs_backend *be : {&switched_backend, &own_cred_backend}) {
    SCOPED_TRACE(be->name);
    kc::vfs::mount *fs = test_mount(be);
    std::thread([&] {
      vreq r;
      r.op = vop::getattr;
      r.fs = fs;
      r.fh = fs->root;
      r.cred.uid = 1000;
      r.cred.gid = 1001;
      EXPECT_EQ(vop_call(&r), 0);
      vfs_cred_reset();
    }).join();
    const bool own = be->caps & VBC_OWN_CREDENTIALS;
    EXPECT_EQ(g_caps.fsuid.load(), own ? geteuid() : 1000u);
    EXPECT_EQ(g_caps.fsgid.load(), own ? getegid() : 1001u);
    vfs_unmount(fs);
  }
}

}  // namespace
