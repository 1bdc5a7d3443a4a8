// SPDX-License-Identifier: BSD-2-Clause
// test_backend.cc -- the back-end interface as a network file system's
// client would use it: a back end whose `start` hands GETATTR to a thread of
// its own and answers VB_PENDING, that thread calling vop_complete when the
// "reply" comes (vfs(9), THE BACKEND INTERFACE).  Checked: every
// continuation runs exactly once, on the dispatcher and at the level the
// request asked for (never on the foreign thread), with the results the
// foreign thread wrote; completions may arrive before `start` has returned;
// the mount's counters count them as done without a thread of the VFS.  Run
// under TSan too (the hand-offs through the foreign thread must be ordered).
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "internal.h"
#include "kcont/kcont.h"
#include "kcont/vfs.h"

using namespace kc;
using namespace kc::vfs;

namespace {

// The "remote" side: a queue of started requests and a thread that answers
// them in order.  The queue is a ring allocated at mount time: `start` runs
// in interrupt context, where nothing may allocate (the Debug build's
// allocation guard aborts).
constexpr size_t RING = 4096;
struct foreign_fs {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<vreq *> ring = std::vector<vreq *>(RING);
  size_t head = 0, tail = 0;  // taken at head, put at tail; tail - head <= RING
  bool stop = false;
  std::thread thread;
  std::atomic<uint64_t> answered{0};
};

constexpr uint8_t ROOT_FH[8] = {'f', 'o', 'r', 'e', 'i', 'g', 'n', 1};
constexpr uint64_t ROOT_FILEID = 77;

foreign_fs *ff(mount *fs) { return static_cast<foreign_fs *>(fs->priv); }

void fill_root_attrs(vreq *r) {
  r->obj.have_post = true;
  r->obj.post = vattr{};
  r->obj.post.type = vtype::dir;
  r->obj.post.mode = 0755;
  r->obj.post.nlink = 2;
  r->obj.post.fileid = ROOT_FILEID;
  r->error = 0;
}

int foreign_vget(mount *, const vfh &fh, vnode *vp) {
  if (fh.len != sizeof ROOT_FH || std::memcmp(fh.data, ROOT_FH, sizeof ROOT_FH) != 0) return ESTALE;
  vp->type = vtype::dir;
  vp->is_root = true;
  vp->fd = -1;
  return 0;
}

void foreign_reclaim(vnode *) {}

int foreign_start(vreq *r) {
  if (r->op != vop::getattr) return VB_BLOCK;
  foreign_fs *f = ff(r->fs);
  {
    std::lock_guard<std::mutex> g(f->mu);
    if (f->tail - f->head == RING) return VB_BLOCK;  // full: thread context does it
    f->ring[f->tail++ % RING] = r;
  }
  f->cv.notify_one();
  return VB_PENDING;  // r is the foreign thread's now
}

void foreign_run(vreq *r) {  // thread context (vop_call): answered at once
  if (r->op == vop::getattr)
    fill_root_attrs(r);
  else
    r->error = ENOTSUP;
}

void foreign_unmount(mount *fs) {
  foreign_fs *f = ff(fs);
  {
    std::lock_guard<std::mutex> g(f->mu);
    f->stop = true;
  }
  f->cv.notify_one();
  f->thread.join();
  delete f;
}

const vfs_backend foreign_backend = {"foreign",     foreign_vget, foreign_reclaim,
                                     foreign_start, foreign_run,  foreign_unmount};

void foreign_thread(foreign_fs *f) {
  std::unique_lock<std::mutex> g(f->mu);
  for (;;) {
    f->cv.wait(g, [&] { return f->stop || f->head != f->tail; });
    if (f->head == f->tail) return;  // stopping, nothing left
    vreq *r = f->ring[f->head++ % RING];
    g.unlock();
    fill_root_attrs(r);
    f->answered.fetch_add(1, std::memory_order_relaxed);
    vop_complete(r);  // from a thread the VFS does not own
    g.lock();
  }
}

mount *mount_foreign() {
  auto *f = new foreign_fs;
  mount *fs = vfs_alloc(&foreign_backend, 16);
  fs->priv = f;
  fs->root.len = sizeof ROOT_FH;
  std::memcpy(fs->root.data, ROOT_FH, sizeof ROOT_FH);
  f->thread = std::thread(foreign_thread, f);
  return fs;
}

// What the continuations saw.
struct results {
  std::mutex mu;
  std::condition_variable cv;
  size_t done = 0;
  std::vector<int> runs;  // per request
  bool wrong_context = false;
  std::thread::id foreign;
};

struct request {
  vreq r;
  kcont k;
  size_t index = 0;
  results *res = nullptr;
};

void on_done(void *, void *env, int status) {
  auto *q = static_cast<request *>(env);
  context c = kcont_current_context();
  std::lock_guard<std::mutex> g(q->res->mu);
  q->res->runs[q->index]++;
  if (c.lvl != LVL_SOFTNET || c.k != kind::interrupt || status != 0 ||
      std::this_thread::get_id() == q->res->foreign)
    q->res->wrong_context = true;
  q->res->done++;
  q->res->cv.notify_all();
}

void start_all(void *arg) {
  for (request *q : *static_cast<std::vector<request *> *>(arg)) vop_start(&q->r);
}

TEST(VfsBackendTest, PendingRequestsCompletedFromAForeignThreadRunTheirContinuationsOnce) {
  ASSERT_EQ(vfs_register_levels(), 0);
  config cfg;
  cfg.cpus = 2;
  std::string err;
  ASSERT_EQ(kcont_start(cfg, &err), 0) << err;
  vfs_config vc;
  vc.bufs = 16;
  ASSERT_EQ(vfs_start(vc, &err), 0) << err;
  mount *fs = mount_foreign();
  results res;
  res.foreign = ff(fs)->thread.get_id();

  // Thread context first: resolves and caches the root's vnode, so the
  // requests below reach the back end's start.
  vreq sync;
  sync.op = vop::getattr;
  sync.fs = fs;
  sync.fh = vfs_root(fs);
  ASSERT_EQ(vop_call(&sync), 0);
  EXPECT_EQ(sync.obj.post.fileid, ROOT_FILEID);
  vfs_cred_reset();

  constexpr size_t N = 2000;
  std::vector<std::unique_ptr<request>> reqs(N);
  std::vector<request *> batch;
  res.runs.assign(N, 0);
  for (size_t i = 0; i < N; i++) {
    reqs[i] = std::make_unique<request>();
    request *q = reqs[i].get();
    q->index = i;
    q->res = &res;
    q->r.op = vop::getattr;
    q->r.fs = fs;
    q->r.fh = vfs_root(fs);
    ASSERT_EQ(kcont_init(&q->k, on_done, q, target::at(LVL_SOFTNET, kind::interrupt, 0)), 0);
    q->r.done = &q->k;
    batch.push_back(q);
  }
  ASSERT_EQ(kcont_run_on(0, LVL_SOFTNET, start_all, &batch), 0);
  {
    std::unique_lock<std::mutex> g(res.mu);
    // The bound only keeps a broken build from hanging: not a timing test.
    EXPECT_TRUE(res.cv.wait_for(g, std::chrono::seconds(120), [&] { return res.done >= N; }));
  }
  for (auto &q : reqs) kcont_drain(&q->k);
  {
    std::lock_guard<std::mutex> g(res.mu);
    EXPECT_EQ(res.done, N);
    EXPECT_FALSE(res.wrong_context) << "a continuation ran off {softnet, interrupt} of CPU 0, "
                                       "on the foreign thread, or with an error";
    for (size_t i = 0; i < N; i++) EXPECT_EQ(res.runs[i], 1) << "request " << i;
  }
  for (auto &q : reqs) {
    EXPECT_EQ(q->r.error, 0);
    EXPECT_TRUE(q->r.obj.have_post);
    EXPECT_EQ(q->r.obj.post.fileid, ROOT_FILEID);
  }
  EXPECT_EQ(ff(fs)->answered.load(), N);
  vfs_stats st = vfs_get_stats(fs);
  EXPECT_EQ(st.ops_interrupt[size_t(vop::getattr)], N) << "pending requests count as done "
                                                          "without a thread of the VFS";
  vfs_unmount(fs);
  vfs_stop();
  kcont_stop();
}

}  // namespace
