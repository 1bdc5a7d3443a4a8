// SPDX-License-Identifier: BSD-2-Clause
// Buffers on kcont: reads and writes through the ring, biodone running the
// chain in the right contexts, in-flight read coalescing, short reads and
// errors reaching every continuation, and no buffer leaked.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fixture.h"  // core/tests: eventually(), on_cpu()
#include "kcont/buf.h"

using namespace kc;
using kctest::eventually;
using kctest::on_cpu;

namespace {

// What a continuation saw.
struct seen {
  std::atomic<int> n{0};
  std::atomic<int> status{-100};
  std::atomic<buf *> bp{nullptr};
  context ctx{};
  std::atomic<bool> data_ok{false};
  uint8_t expect_byte = 0;
  bool release = true;
};

void on_io(void *obj, void *env, int status) {
  auto *s = static_cast<seen *>(env);
  auto *bp = static_cast<buf *>(obj);
  s->ctx = kcont_current_context();
  bool ok = true;
  for (uint32_t i = 0; i < bp->done; i++)
    if (uint8_t(bp->data[i]) != uint8_t(s->expect_byte + (bp->offset + i) % 251)) ok = false;
  s->data_ok = ok;
  s->status = status;
  s->bp = bp;
  if (s->release) brelse(bp);
  s->n++;
}

class BufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config cfg;
    cfg.cpus = 2;
    std::string err;
    ASSERT_EQ(kcont_start(cfg, &err), 0) << err;
    char path[] = "/tmp/kcont-buf-XXXXXX";
    fd_ = mkstemp(path);
    ASSERT_GE(fd_, 0);
    unlink(path);
    std::vector<char> data(kFileSize);
    for (size_t i = 0; i < data.size(); i++) data[i] = char(i % 251);
    ASSERT_EQ(pwrite(fd_, data.data(), data.size(), 0), ssize_t(data.size()));
    pool_ = bufpool_create(16, 65536, &err);
    ASSERT_NE(pool_, nullptr) << err;
  }
  void TearDown() override {
    kcont_stop();
    EXPECT_EQ(bufpool_available(pool_), 16u) << "a buffer leaked";
    EXPECT_EQ(bufpool_destroy(pool_), 0);
    close(fd_);
  }
  static constexpr size_t kFileSize = 1 << 20;
  int fd_ = -1;
  bufpool *pool_ = nullptr;
};

}  // namespace

TEST_F(BufTest, BreadReadsTheFileThroughTheRing) {
  seen s[4];
  kcont ks[4];
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(kcont_init(&ks[i], on_io, &s[i], target::at(LVL_SOFTBIO)), 0);
    ASSERT_EQ(bread(pool_, fd_, uint64_t(i) * 65536 + 100, 8192, &ks[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    ASSERT_TRUE(eventually([&] { return s[i].n.load() == 1; }));
    EXPECT_EQ(s[i].status.load(), 0);
    EXPECT_TRUE(s[i].data_ok.load());
    EXPECT_EQ(s[i].ctx.lvl, LVL_SOFTBIO);
    kcont_drain(&ks[i]);
  }
  EXPECT_EQ(bufpool_stats(pool_).submitted, 4u);
}

TEST_F(BufTest, ASecondReaderOfAnInFlightBlockChainsOntoTheSameBuffer) {
  seen a, b;
  a.release = b.release = true;
  kcont ka, kb;
  kcont_init(&ka, on_io, &a, target::at(LVL_SOFTNET));
  kcont_init(&kb, on_io, &b, target::in_thread(LVL_SOFTBIO));
  int ra = -1, rb = -1;
  // Both reads from one handler: the first is certainly still in flight.
  on_cpu(0, [&] {
    ra = bread(pool_, fd_, 4096, 16384, &ka);
    rb = bread(pool_, fd_, 4096, 16384, &kb);
  });
  EXPECT_EQ(ra, 0);
  EXPECT_EQ(rb, 0);
  ASSERT_TRUE(eventually([&] { return a.n.load() == 1 && b.n.load() == 1; }));
  EXPECT_EQ(a.bp.load(), b.bp.load());
  EXPECT_TRUE(a.data_ok.load());
  EXPECT_TRUE(b.data_ok.load());
  EXPECT_EQ(b.ctx.k, kind::thread);
  bio_stats st = bufpool_stats(pool_);
  EXPECT_EQ(st.submitted, 1u);
  EXPECT_EQ(st.coalesced, 1u);
  kcont_drain(&ka);
  kcont_drain(&kb);
  // A later read of the same block is a new read.
  seen c;
  kcont kc_;
  kcont_init(&kc_, on_io, &c, target::at(LVL_SOFTNET));
  ASSERT_EQ(bread(pool_, fd_, 4096, 16384, &kc_), 0);
  ASSERT_TRUE(eventually([&] { return c.n.load() == 1; }));
  kcont_drain(&kc_);
  EXPECT_EQ(bufpool_stats(pool_).submitted, 2u);
}

// Read-after-write: a bread that starts after bio_invalidate (a write
// completed) never joins a read issued before it -- it would hand out the
// data from before the write.  The first read is still in flight when the
// second starts (both in one handler), exactly as in the test above.
TEST_F(BufTest, AReadAfterAnInvalidationNeverJoinsAnOlderRead) {
  seen a, b;
  a.release = b.release = true;
  kcont ka, kb;
  kcont_init(&ka, on_io, &a, target::at(LVL_SOFTNET));
  kcont_init(&kb, on_io, &b, target::at(LVL_SOFTNET));
  int ra = -1, rb = -1;
  on_cpu(0, [&] {
    ra = bread(pool_, fd_, 8192, 4096, &ka);
    bio_invalidate(pool_);  // "the write completed"
    rb = bread(pool_, fd_, 8192, 4096, &kb);
  });
  EXPECT_EQ(ra, 0);
  EXPECT_EQ(rb, 0);
  ASSERT_TRUE(eventually([&] { return a.n.load() == 1 && b.n.load() == 1; }));
  EXPECT_NE(a.bp.load(), b.bp.load());
  EXPECT_TRUE(a.data_ok.load());
  EXPECT_TRUE(b.data_ok.load());
  bio_stats st = bufpool_stats(pool_);
  EXPECT_EQ(st.submitted, 2u);
  EXPECT_EQ(st.coalesced, 0u);
  EXPECT_EQ(st.invalidations, 1u);
  kcont_drain(&ka);
  kcont_drain(&kb);
  // Reads issued after the invalidation join each other again.
  seen c, d;
  c.release = d.release = true;
  kcont kc_, kd;
  kcont_init(&kc_, on_io, &c, target::at(LVL_SOFTNET));
  kcont_init(&kd, on_io, &d, target::at(LVL_SOFTNET));
  on_cpu(0, [&] {
    bread(pool_, fd_, 8192, 4096, &kc_);
    bread(pool_, fd_, 8192, 4096, &kd);
  });
  ASSERT_TRUE(eventually([&] { return c.n.load() == 1 && d.n.load() == 1; }));
  EXPECT_EQ(c.bp.load(), d.bp.load());
  EXPECT_EQ(bufpool_stats(pool_).coalesced, 1u);
  kcont_drain(&kc_);
  kcont_drain(&kd);
}

TEST_F(BufTest, BioContextContinuationsRunInsideBiodone) {
  seen s;
  kcont k;
  kcont_init(&k, on_io, &s, target::at(LVL_BIO));
  uint64_t direct_before = 0;
  for (int c = 0; c < kcont_ncpus(); c++)
    direct_before += kcont_stats(c, LVL_BIO, kind::interrupt).direct;
  ASSERT_EQ(bread(pool_, fd_, 0, 4096, &k), 0);
  ASSERT_TRUE(eventually([&] { return s.n.load() == 1; }));
  kcont_drain(&k);
  EXPECT_EQ(s.ctx.lvl, LVL_BIO);
  EXPECT_EQ(s.ctx.k, kind::interrupt);
  uint64_t direct_after = 0;
  for (int c = 0; c < kcont_ncpus(); c++)
    direct_after += kcont_stats(c, LVL_BIO, kind::interrupt).direct;
  EXPECT_EQ(direct_after, direct_before + 1);  // called in biodone, not deferred
}

TEST_F(BufTest, ShortReadAtEndOfFileIsReported) {
  seen s;
  kcont k;
  kcont_init(&k, on_io, &s, target::at(LVL_SOFTBIO));
  ASSERT_EQ(bread(pool_, fd_, kFileSize - 1000, 4096, &k), 0);
  ASSERT_TRUE(eventually([&] { return s.n.load() == 1; }));
  kcont_drain(&k);
  EXPECT_EQ(s.status.load(), BIO_SHORT);
  EXPECT_TRUE(s.data_ok.load());
  EXPECT_EQ(bufpool_stats(pool_).short_transfers, 1u);
}

TEST_F(BufTest, EbadfReachesEveryContinuationOnTheChain) {
  seen s[3];
  kcont ks[3];
  for (int i = 0; i < 3; i++) kcont_init(&ks[i], on_io, &s[i], target::at(LVL_SOFTBIO));
  on_cpu(1, [&] {
    for (auto &k : ks) EXPECT_EQ(bread(pool_, 1 << 20, 0, 4096, &k), 0);  // not an open fd
  });
  for (int i = 0; i < 3; i++) {
    ASSERT_TRUE(eventually([&] { return s[i].n.load() == 1; }));
    EXPECT_EQ(s[i].status.load(), EBADF);
    kcont_drain(&ks[i]);
  }
  EXPECT_EQ(bufpool_stats(pool_).errors, 1u);
}

namespace {
struct fault {
  std::atomic<int> err{0};
  std::atomic<int> calls{0};
};
int fault_hook(const buf *, void *arg) {
  auto *f = static_cast<fault *>(arg);
  f->calls++;
  return f->err.load();
}
}  // namespace

TEST_F(BufTest, InjectedErrorsReachEveryContinuationAndLeakNothing) {
  fault f;
  bio_set_fault_hook(fault_hook, &f);
  for (int err : {EIO, ENOSPC}) {
    f.err = err;
    buf *bp = buf_get(pool_);
    ASSERT_NE(bp, nullptr);
    bp->fd = fd_;
    bp->op = bio_op::write;
    bp->offset = 0;
    bp->len = 4096;
    std::memset(bp->data, 0, 4096);
    seen s[3];
    kcont ks[3];
    for (int i = 0; i < 3; i++) {
      s[i].release = false;
      kcont_init(&ks[i], on_io, &s[i], target::at(i == 2 ? LVL_SOFTNET : LVL_SOFTBIO));
    }
    // Chain two extra waiters first, then submit with the third.
    ASSERT_EQ(kcq_enqueue(&bp->waiters, &ks[0]), 0);
    ASSERT_EQ(kcq_enqueue(&bp->waiters, &ks[1]), 0);
    ASSERT_EQ(bio_submit(bp, &ks[2]), 0);
    for (int i = 0; i < 3; i++) {
      ASSERT_TRUE(eventually([&] { return s[i].n.load() == 1; }));
      EXPECT_EQ(s[i].status.load(), err);
      EXPECT_EQ(s[i].bp.load(), bp);
      kcont_drain(&ks[i]);
    }
    EXPECT_EQ(bp->error, err);
    brelse(bp);
  }
  bio_set_fault_hook(nullptr, nullptr);
  EXPECT_GE(f.calls.load(), 2);
  // The file was not written by the injected writes.
  char c;
  ASSERT_EQ(pread(fd_, &c, 1, 1), 1);
  EXPECT_EQ(c, char(1));
}

TEST_F(BufTest, WriteFsyncAndReadBack) {
  buf *bp = buf_get(pool_);
  ASSERT_NE(bp, nullptr);
  bp->fd = fd_;
  bp->op = bio_op::write;
  bp->offset = 8192;
  bp->len = 4096;
  for (uint32_t i = 0; i < 4096; i++) bp->data[i] = char(uint8_t(7 + (8192 + i) % 251));
  seen w;
  w.release = false;
  w.expect_byte = 7;
  kcont k;
  kcont_init(&k, on_io, &w, target::at(LVL_SOFTBIO));
  // Submit and resubmit from one handler: the completion can only be
  // reaped by this CPU after the handler returns, so it is surely in flight.
  int first = -1, second = -1;
  on_cpu(0, [&] {
    first = bio_submit(bp, &k);
    second = bio_submit(bp, nullptr);
  });
  ASSERT_EQ(first, 0);
  EXPECT_EQ(second, EBUSY);  // in flight
  ASSERT_TRUE(eventually([&] { return w.n.load() == 1; }));
  kcont_drain(&k);
  EXPECT_EQ(w.status.load(), 0);
  EXPECT_EQ(bp->done, 4096u);
  bp->op = bio_op::fsync;
  seen fs;
  fs.release = false;
  kcont_init(&k, on_io, &fs, target::at(LVL_SOFTBIO));
  ASSERT_EQ(bio_submit(bp, &k), 0);
  ASSERT_TRUE(eventually([&] { return fs.n.load() == 1; }));
  kcont_drain(&k);
  EXPECT_EQ(fs.status.load(), 0);
  brelse(bp);
  seen r;
  r.expect_byte = 7;
  kcont_init(&k, on_io, &r, target::at(LVL_SOFTBIO));
  ASSERT_EQ(bread(pool_, fd_, 8192, 4096, &k), 0);
  ASSERT_TRUE(eventually([&] { return r.n.load() == 1; }));
  kcont_drain(&k);
  EXPECT_TRUE(r.data_ok.load());
}

// A write from the caller's memory (bigger than a buffer, durable with
// B_DSYNC) lands in the file, and its completion invalidates the pool
// before its continuation runs: whoever hears of the write can never be
// handed an older in-flight read by a later bread.
TEST_F(BufTest, WriteFromCallerMemoryInvalidatesThePoolBeforeItsChainRuns) {
  std::vector<char> src(3 * 65536 + 100);
  for (size_t i = 0; i < src.size(); i++) src[i] = char(uint8_t(9 + (4096 + i) % 251));
  buf *bp = buf_get(pool_);
  ASSERT_NE(bp, nullptr);
  EXPECT_EQ(bp->src, nullptr);
  EXPECT_EQ(bp->flags, 0u);
  bp->fd = fd_;
  bp->op = bio_op::write;
  bp->offset = 4096;
  bp->len = uint32_t(src.size());
  bp->src = src.data();
  bp->flags = B_DSYNC;
  struct at_done {
    bufpool *pool;
    std::atomic<uint64_t> invalidations{UINT64_MAX};
    std::atomic<int> status{-100};
  } d{pool_};
  uint64_t before = bufpool_stats(pool_).invalidations;
  kcont k;
  kcont_init(
      &k,
      [](void *, void *env, int status) {
        auto *x = static_cast<at_done *>(env);
        x->invalidations = bufpool_stats(x->pool).invalidations;
        x->status = status;
      },
      &d, target::at(LVL_SOFTBIO));
  ASSERT_EQ(bio_submit(bp, &k), 0);
  ASSERT_TRUE(eventually([&] { return d.status.load() != -100; }));
  kcont_drain(&k);
  EXPECT_EQ(d.status.load(), 0);
  EXPECT_EQ(bp->done, uint32_t(src.size()));
  EXPECT_EQ(d.invalidations.load(), before + 1) << "not invalidated before the chain ran";
  brelse(bp);
  std::vector<char> back(src.size());
  ASSERT_EQ(pread(fd_, back.data(), back.size(), 4096), ssize_t(back.size()));
  EXPECT_EQ(back, src);
  // A write from a pool buffer longer than the buffer is still refused.
  bp = buf_get(pool_);
  bp->fd = fd_;
  bp->op = bio_op::write;
  bp->len = bp->cap + 1;
  EXPECT_EQ(bio_submit(bp, nullptr), EINVAL);
  brelse(bp);
}

TEST_F(BufTest, ExhaustedPoolPushesBack) {
  std::vector<buf *> held;
  while (buf *bp = buf_get(pool_)) held.push_back(bp);
  EXPECT_EQ(held.size(), 16u);
  kcont k;
  seen s;
  kcont_init(&k, on_io, &s, target::at(LVL_SOFTBIO));
  EXPECT_EQ(bread(pool_, fd_, 0, 4096, &k), ENOBUFS);
  EXPECT_EQ(kcont_state(&k), kc_state::idle);  // nothing chained
  for (buf *bp : held) brelse(bp);
  EXPECT_EQ(bufpool_available(pool_), 16u);
}

TEST_F(BufTest, ManyConcurrentReadersFromEveryCpu) {
  constexpr int N = 64;
  std::vector<seen> s(N);
  std::vector<kcont> ks(N);
  for (int i = 0; i < N; i++)
    kcont_init(&ks[i], on_io, &s[i], target::at(LVL_SOFTBIO, kind::interrupt, int16_t(i % 2)));
  int submitted = 0;
  for (int i = 0; i < N; i++) {
    // Eight distinct blocks, eight readers each: most coalesce or reuse.
    int rc;
    while ((rc = bread(pool_, fd_, uint64_t(i % 8) * 8192, 8192, &ks[i])) == ENOBUFS)
      std::this_thread::yield();
    ASSERT_EQ(rc, 0);
    submitted++;
  }
  for (int i = 0; i < N; i++) {
    ASSERT_TRUE(eventually([&] { return s[i].n.load() == 1; }));
    EXPECT_EQ(s[i].status.load(), 0);
    EXPECT_TRUE(s[i].data_ok.load());
    kcont_drain(&ks[i]);
  }
  bio_stats st = bufpool_stats(pool_);
  EXPECT_EQ(st.submitted + st.coalesced, uint64_t(N));
}

// A pool is never destroyed where the wait for its submit continuations is
// impossible (a dispatcher): EDEADLK, and the pool stays usable.
TEST_F(BufTest, DestroyOnADispatcherIsRefused) {
  int rc = -1;
  on_cpu(0, [&] { rc = bufpool_destroy(pool_); });
  EXPECT_EQ(rc, EDEADLK);
  EXPECT_EQ(bufpool_available(pool_), 16u);
}
