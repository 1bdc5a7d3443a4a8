// SPDX-License-Identifier: BSD-2-Clause
// bench_buf.cc -- the buf read path against the classic sleep/wakeup one.
//
//   kcont buf   continuations on CPU 0 keep `depth` reads in flight with
//               bread(); each completion (in {bio, interrupt}, called inside
//               biodone) checks the data, releases the buffer and issues the
//               next read.  No thread sleeps per read.
//   condvar     the classic design: a requesting thread hands each read to an
//               I/O thread through a mutex + condition variable, the I/O
//               thread does a blocking pread() and wakes the requester
//               (biowait/biodone as sleep/wakeup).
//
// Same file (64 MiB, in the page cache), same random 4 KiB-aligned offsets,
// one process, one run.  Prints ops/s, MB/s and context switches per read
// (getrusage over all threads) for 4 KiB and 64 KiB reads.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kcont/buf.h"

namespace {

constexpr uint64_t kFile = 64ull << 20;

uint64_t csw_now() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return uint64_t(ru.ru_nvcsw + ru.ru_nivcsw);
}

struct result {
  double ops_per_s, mb_per_s, csw_per_op;
};

std::vector<uint64_t> offsets(uint32_t size, size_t n) {
  std::mt19937_64 rng(42);
  std::vector<uint64_t> v(n);
  for (auto &o : v) o = (rng() % ((kFile - size) / 4096)) * 4096;
  return v;
}

// ---------------------------------------------------------------- kcont

struct reader;
struct kctx {
  kc::bufpool *pool = nullptr;
  int fd = -1;
  uint32_t size = 0;
  const std::vector<uint64_t> *offs = nullptr;
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> done{0};
  uint64_t total = 0;
  std::atomic<uint64_t> bad{0};
};
struct reader {
  kc::kcont k;
  kctx *cx;
};

void issue(reader *r);

void on_read(void *obj, void *env, int status) {
  auto *r = static_cast<reader *>(env);
  auto *bp = static_cast<kc::buf *>(obj);
  if (status != 0 || bp->done != r->cx->size) r->cx->bad++;
  kc::brelse(bp);
  r->cx->done.fetch_add(1, std::memory_order_relaxed);
  issue(r);
}

void issue(reader *r) {
  kctx *cx = r->cx;
  uint64_t i = cx->next.fetch_add(1, std::memory_order_relaxed);
  if (i >= cx->total) return;
  uint64_t off = (*cx->offs)[i % cx->offs->size()];
  if (kc::bread(cx->pool, cx->fd, off, cx->size, &r->k) != 0) cx->bad++;
}

result run_kcont(int fd, uint32_t size, int depth, uint64_t total,
                 const std::vector<uint64_t> &offs) {
  std::string err;
  kc::bufpool *pool = kc::bufpool_create(size_t(depth) * 2, size, &err);
  if (!pool) {
    std::fprintf(stderr, "bench_buf: %s\n", err.c_str());
    std::exit(1);
  }
  kctx cx;
  cx.pool = pool;
  cx.fd = fd;
  cx.size = size;
  cx.offs = &offs;
  cx.total = total;
  std::vector<reader> rs(depth);
  for (auto &r : rs) {
    r.cx = &cx;
    // Bound to CPU 0 at {bio, interrupt}: called inside biodone.
    kc::kcont_init(&r.k, on_read, &r, kc::target::at(kc::LVL_BIO, kc::kind::interrupt, 0));
  }
  uint64_t c0 = csw_now();
  auto t0 = std::chrono::steady_clock::now();
  // Start the readers from CPU 0 itself.
  struct starter {
    std::vector<reader> *rs;
  } st{&rs};
  kc::kcont k0;
  kc::kcont_init(
      &k0,
      [](void *, void *env, int) {
        for (auto &r : *static_cast<starter *>(env)->rs) issue(&r);
      },
      &st, kc::target::at(kc::LVL_SOFTBIO, kc::kind::interrupt, 0));
  kc::kcont_defer(&k0, nullptr, 0);
  while (cx.done.load() < total) std::this_thread::sleep_for(std::chrono::microseconds(200));
  auto t1 = std::chrono::steady_clock::now();
  uint64_t c1 = csw_now();
  kc::kcont_drain(&k0);
  for (auto &r : rs) kc::kcont_drain(&r.k);
  if (cx.bad.load())
    std::fprintf(stderr, "bench_buf: %llu bad reads\n", (unsigned long long)cx.bad.load());
  kc::bufpool_destroy(pool);
  double s = std::chrono::duration<double>(t1 - t0).count();
  return {double(total) / s, double(total) * size / s / 1e6, double(c1 - c0) / double(total)};
}

// ---------------------------------------------------------------- classic

result run_condvar(int fd, uint32_t size, uint64_t total, const std::vector<uint64_t> &offs) {
  std::mutex m;
  std::condition_variable cv_req, cv_done;
  bool have_req = false, have_done = false, quit = false;
  uint64_t req_off = 0;
  ssize_t got = 0;
  std::vector<char> data(size);
  std::thread io([&] {
    std::unique_lock<std::mutex> g(m);
    for (;;) {
      cv_req.wait(g, [&] { return have_req || quit; });
      if (quit) return;
      have_req = false;
      uint64_t off = req_off;
      g.unlock();
      ssize_t r = pread(fd, data.data(), size, off);  // the blocking call
      g.lock();
      got = r;
      have_done = true;
      cv_done.notify_one();
    }
  });
  uint64_t bad = 0;
  uint64_t c0 = csw_now();
  auto t0 = std::chrono::steady_clock::now();
  {
    std::unique_lock<std::mutex> g(m);
    for (uint64_t i = 0; i < total; i++) {
      req_off = offs[i % offs.size()];
      have_req = true;
      cv_req.notify_one();
      cv_done.wait(g, [&] { return have_done; });  // biowait: sleep
      have_done = false;
      if (got != ssize_t(size)) bad++;
    }
    quit = true;
    cv_req.notify_one();
  }
  auto t1 = std::chrono::steady_clock::now();
  uint64_t c1 = csw_now();
  io.join();
  if (bad) std::fprintf(stderr, "bench_buf: %llu bad reads\n", (unsigned long long)bad);
  double s = std::chrono::duration<double>(t1 - t0).count();
  return {double(total) / s, double(total) * size / s / 1e6, double(c1 - c0) / double(total)};
}

}  // namespace

int main(int argc, char **argv) {
  uint64_t scale = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1;
  if (scale == 0) scale = 1;
  char path[] = "/tmp/kcont-bench-buf-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) {
    std::perror("bench_buf: mkstemp");
    return 1;
  }
  unlink(path);
  std::vector<char> chunk(1 << 20);
  for (size_t i = 0; i < chunk.size(); i++) chunk[i] = char(i * 7);
  for (uint64_t off = 0; off < kFile; off += chunk.size())
    if (pwrite(fd, chunk.data(), chunk.size(), off) != ssize_t(chunk.size())) {
      std::perror("bench_buf: pwrite");
      return 1;
    }
  kc::config cfg;
  cfg.cpus = 2;
  cfg.pin = true;
  std::string err;
  std::printf(
      "buf read path vs condvar hand-off -- 64 MiB file in the page cache, random offsets\n");
  std::printf("%-7s %-22s %12s %10s %9s %8s\n", "size", "path", "ops/s", "MB/s", "csw/op", "ratio");
  for (uint32_t size : {4096u, 65536u}) {
    uint64_t total = (size == 4096 ? 200000 : 40000) * scale;
    auto offs = offsets(size, 4096);
    if (kc::kcont_start(cfg, &err) != 0) {
      std::fprintf(stderr, "bench_buf: %s\n", err.c_str());
      return 1;
    }
    result k1 = run_kcont(fd, size, 1, total, offs);
    result k16 = run_kcont(fd, size, 16, total, offs);
    kc::kcont_stop();
    result cv = run_condvar(fd, size, total / 4, offs);
    auto line = [&](const char *what, const result &r) {
      std::printf("%-7s %-22s %12.0f %10.1f %9.4f %7.1fx\n", size == 4096 ? "4 KiB" : "64 KiB",
                  what, r.ops_per_s, r.mb_per_s, r.csw_per_op, r.ops_per_s / cv.ops_per_s);
    };
    line("kcont buf, depth 1", k1);
    line("kcont buf, depth 16", k16);
    line("condvar + pread", cv);
  }
  close(fd);
  return 0;
}
