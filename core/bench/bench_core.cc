// SPDX-License-Identifier: BSD-2-Clause
// bench_core.cc -- the kcont core benchmark table.
//
// Every row runs in this one process, one after another, so the ratios
// compare like with like on the same machine at the same moment:
//
//   bare        an intrusive FIFO push + pop + indirect call (the floor)
//   atomic-rmw  one uncontended compare-and-swap (the floor of a state
//               change that another thread may race with)
//   same-cpu    kcont: a continuation that re-defers itself on its CPU
//               (defer -> dispatch -> call), inside the dispatcher
//   kcq-run     kcont: chain one immediate continuation and run the chain
//   kcq-chain64 kcont: chain 64 immediate continuations, run them in one
//               kcq_run; per element
//   cross-cpu   kcont: CPU 0 defers batches to continuations bound to CPU 1,
//               retrying the ones still pending
//   cross-cpu-flow  the same with flow control: no retries (see cross_cpu)
//   ping-pong   kcont: two continuations on two CPUs defer each other
//   ping-pong-spin  the same with the dispatchers' adaptive spin on
//   condvar     a mutex + condition variable ping-pong between two threads
//               (classic sleep/wakeup hand-off)
//   asio        standalone Asio io_context::post, self-re-posting handler
//   boost.asio  Boost.Asio, the same
//   uv-async    libuv uv_async_send from its own callback
//
// Each row reports ns per operation, operations per second, allocations
// per operation (global operator new and malloc are counted in this
// binary) and context switches per operation (getrusage, all threads).
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "count_allocs.h"  // core/tests: counts every allocation
#include "kcont/kcont.h"

// Asio and Boost.Asio cannot share a translation unit: bench_asio.cc and
// bench_boost_asio.cc each run a self-re-posting chain of n handlers.
void asio_chain(uint64_t n);
void boost_asio_chain(uint64_t n);

namespace {

uint64_t csw_now() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return uint64_t(ru.ru_nvcsw + ru.ru_nivcsw);
}
// CPU time of the whole process (all threads), ns.
uint64_t cpu_ns_now() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto ns = [](const timeval &t) {
    return uint64_t(t.tv_sec) * 1000000000ull + uint64_t(t.tv_usec) * 1000ull;
  };
  return ns(ru.ru_utime) + ns(ru.ru_stime);
}

struct row {
  double ns_per_op = 0;
  double allocs_per_op = 0;
  double csw_per_op = 0;
  double doorbells_per_op = -1;
  double cpu_ns_per_op = 0;
};
std::map<std::string, row> g_rows;

// Measures the operations of a row.  Time per operation is the median over
// the benchmark's iterations (this machine is a shared VM: the median is
// stable where the mean is not); allocations, context switches and
// doorbells are totals over all iterations divided by all operations.
struct probe {
  benchmark::State &st;
  uint64_t a0, c0, d0, cpu0;
  std::chrono::steady_clock::time_point t0, lap0;
  uint64_t lap_ops0 = 0;
  std::vector<double> laps;
  explicit probe(benchmark::State &s)
      : st(s),
        a0(g_allocs.load()),
        c0(csw_now()),
        d0(kc::kcont_doorbells_total()),
        cpu0(cpu_ns_now()),
        t0(std::chrono::steady_clock::now()),
        lap0(t0) {
    laps.reserve(64);
  }
  // Call at the end of each iteration with the running operation count.
  void lap(uint64_t ops_so_far) {
    auto now = std::chrono::steady_clock::now();
    laps.push_back(std::chrono::duration<double, std::nano>(now - lap0).count() /
                   double(ops_so_far - lap_ops0));
    lap0 = now;
    lap_ops0 = ops_so_far;
  }
  void finish(const char *name, uint64_t ops, bool doorbells = false) {
    row r;
    std::sort(laps.begin(), laps.end());
    r.ns_per_op = laps.empty() ? 0 : laps[laps.size() / 2];
    r.allocs_per_op = double(g_allocs.load() - a0) / double(ops);
    r.csw_per_op = double(csw_now() - c0) / double(ops);
    r.cpu_ns_per_op = double(cpu_ns_now() - cpu0) / double(ops);
    if (doorbells) r.doorbells_per_op = double(kc::kcont_doorbells_total() - d0) / double(ops);
    g_rows[name] = r;
    st.SetItemsProcessed(int64_t(ops));
    st.counters["allocs/op"] = r.allocs_per_op;
    st.counters["csw/op"] = r.csw_per_op;
    // Every row carries the same counters: the CSV reporter aborts on a row
    // that lacks one the header has.  Rows that do not measure doorbells
    // report kcont's doorbells during the row all the same (0 or close).
    st.counters["doorbells/op"] = double(kc::kcont_doorbells_total() - d0) / double(ops);
  }
};

constexpr uint64_t kChain = 2000000;

unsigned g_spin_ns = 0;  // config::spin_ns of the next start

void start_kcont() {
  if (kc::kcont_running()) return;
  kc::config cfg;
  cfg.cpus = 2;
  cfg.pin = true;
  cfg.spin_ns = g_spin_ns;
  std::string err;
  if (kc::kcont_start(cfg, &err) != 0) {
    std::fprintf(stderr, "kcont_bench: %s\n", err.c_str());
    std::exit(1);
  }
}

// ------------------------------------------------------------ bare floor

struct node {
  node *next;
  void (*fn)(node *);
  uint64_t n;
};
__attribute__((noinline)) void bare_fn(node *x) { x->n++; }

void BM_Bare(benchmark::State &st) {
  node nd{nullptr, nullptr, 0};
  void (*volatile fp)(node *) = bare_fn;
  nd.fn = fp;
  node *head = nullptr, **tail = &head;
  uint64_t ops = 0;
  probe p(st);
  for (auto _ : st) {
    for (uint64_t i = 0; i < kChain; i++) {
      nd.next = nullptr;
      *tail = &nd;
      tail = &nd.next;
      node *x = head;
      head = x->next;
      if (!head) tail = &head;
      x->fn(x);
    }
    ops += kChain;
    p.lap(ops);
  }
  benchmark::DoNotOptimize(nd.n);
  p.finish("bare", ops);
}

// One uncontended compare-and-swap per operation on a line no other thread
// touches: the floor of any state change another thread may race with
// (kcont_defer from a foreign thread, kcq_enqueue, kcq_run's claim).
void BM_AtomicRmw(benchmark::State &st) {
  alignas(64) static std::atomic<uint64_t> word{0};
  uint64_t ops = 0;
  probe p(st);
  for (auto _ : st) {
    for (uint64_t i = 0; i < kChain; i++) {
      uint64_t w = word.load(std::memory_order_relaxed);
      word.compare_exchange_strong(w, w + 1, std::memory_order_acq_rel);
    }
    ops += kChain;
    p.lap(ops);
  }
  benchmark::DoNotOptimize(word.load());
  p.finish("atomic-rmw", ops);
}

// ------------------------------------------------------------ kcont rows

struct chain {
  kc::kcont k;
  uint64_t left = 0;
  std::atomic<bool> done{false};
};
void chain_fn(void *, void *env, int) {
  auto *c = static_cast<chain *>(env);
  if (--c->left)
    kc::kcont_defer(&c->k, nullptr, 0);
  else
    c->done.store(true, std::memory_order_release);
}

// The chain objects are static: heap and .bss addresses are page-aligned
// under ASLR, stack addresses are not, and a stack object's offset within
// its page changes 4K-aliasing with the dispatcher's queues from run to run
// (a bimodal 14 / 22 ns on this VM).
chain g_chain_shared, g_chain_private;

void BM_KcontSameCpu(benchmark::State &st) {
  start_kcont();
  chain &c = g_chain_shared;
  kc::kcont_init(&c.k, chain_fn, &c, kc::target::at(kc::LVL_SOFTNET, kc::kind::interrupt, 1));
  uint64_t ops = 0;
  probe p(st);
  for (auto _ : st) {
    c.left = kChain;
    c.done = false;
    kc::kcont_defer(&c.k, nullptr, 0);
    while (!c.done.load(std::memory_order_acquire))
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    kc::kcont_drain(&c.k);
    ops += kChain;
    p.lap(ops);
  }
  p.finish("same-cpu", ops);
}

// The same chain with a CPU-private continuation (plain-store fast path).
// Only its CPU may defer it, so a starter continuation on that CPU kicks it.
void BM_KcontSameCpuPrivate(benchmark::State &st) {
  start_kcont();
  chain &c = g_chain_private;
  kc::kcont_init(&c.k, chain_fn, &c, kc::target::cpu_private_to(kc::LVL_SOFTNET, 1));
  kc::kcont starter;
  kc::kcont_init(
      &starter,
      [](void *, void *env, int) { kc::kcont_defer(static_cast<kc::kcont *>(env), nullptr, 0); },
      &c.k, kc::target::at(kc::LVL_SOFTSERIAL, kc::kind::interrupt, 1));
  uint64_t ops = 0;
  probe p(st);
  for (auto _ : st) {
    c.left = kChain;
    c.done = false;
    kc::kcont_defer(&starter, nullptr, 0);
    while (!c.done.load(std::memory_order_acquire))
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    kc::kcont_drain(&c.k);
    kc::kcont_drain(&starter);
    ops += kChain;
    p.lap(ops);
  }
  p.finish("same-cpu-prv", ops);
}

void BM_KcqRunImmediate(benchmark::State &st) {
  start_kcont();
  uint64_t hits = 0;
  kc::kcont k;
  kc::kcont_init(
      &k, [](void *, void *env, int) { ++*static_cast<uint64_t *>(env); }, &hits,
      kc::target::now());
  kc::kcq q;
  kc::kcq_enqueue(&q, &k);
  kc::kcq_run(&q, nullptr, 0);  // warm-up: executor record for this thread
  uint64_t ops = 0;
  probe p(st);
  for (auto _ : st) {
    for (uint64_t i = 0; i < kChain / 4; i++) {
      kc::kcq_enqueue(&q, &k);
      kc::kcq_run(&q, nullptr, 0);
    }
    ops += kChain / 4;
    p.lap(ops);
  }
  benchmark::DoNotOptimize(hits);
  p.finish("kcq-run", ops);
}

// kcq_run of a chain of 64 immediate continuations, per element: chain them
// all, then one kcq_run calls them one after another (the chain's lock is
// taken once per enqueue and once for the whole run).
void BM_KcqRunChain64(benchmark::State &st) {
  start_kcont();
  static kc::kcont ks[64];
  uint64_t hits = 0;
  for (auto &k : ks)
    kc::kcont_init(
        &k, [](void *, void *env, int) { ++*static_cast<uint64_t *>(env); }, &hits,
        kc::target::now());
  kc::kcq q;
  uint64_t ops = 0;
  probe p(st);
  for (auto _ : st) {
    for (uint64_t i = 0; i < kChain / 64 / 4; i++) {
      for (auto &k : ks) kc::kcq_enqueue(&q, &k);
      kc::kcq_run(&q, nullptr, 0);
    }
    ops += kChain / 4;
    p.lap(ops);
  }
  benchmark::DoNotOptimize(hits);
  p.finish("kcq-chain64", ops);
}

// CPU 0 produces: a producer continuation defers consumer continuations
// bound to CPU 1, then re-defers itself; CPU 1 calls them.  The producer's
// and the consumer's counters live on separate cache lines: sharing one
// made every consumer call bounce the producer's line.
//   cross-cpu       64 consumers; each pass tries all 64 and counts the
//                   deferrals that took (the others are still pending:
//                   each retry pulls that continuation's line away from
//                   the consumer and is counted as coalesced).
//   cross-cpu-flow  flow control, as a producer with real work does it:
//                   256 consumers deferred in order, at most 192 in flight
//                   (so the one deferred next ran at least 64 deferrals
//                   ago: FIFO), up to 64 per pass; nothing is retried.
template <int N, bool Flow>
struct xcpu {
  kc::kcont producer;
  kc::kcont consumers[N];
  alignas(64) uint64_t to_send = 0;
  uint64_t sent = 0;
  alignas(64) std::atomic<uint64_t> received{0};

  static void consume(void *, void *env, int) {
    auto *x = static_cast<xcpu *>(env);
    x->received.store(x->received.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }
  static void produce(void *, void *env, int) {
    auto *x = static_cast<xcpu *>(env);
    if constexpr (Flow) {
      const uint64_t done = x->received.load(std::memory_order_acquire);
      for (int i = 0; i < 64 && x->sent < x->to_send && x->sent - done < N - 64; i++) {
        if (!kc::kcont_defer(&x->consumers[x->sent % N], nullptr, 0))
          std::abort();  // still pending: the order was broken
        x->sent++;
      }
      if (x->sent == x->to_send) return;
    } else {
      for (auto &k : x->consumers) {
        if (x->sent == x->to_send) return;
        if (kc::kcont_defer(&k, nullptr, 0)) x->sent++;
      }
    }
    kc::kcont_defer(&x->producer, nullptr, 0);
  }
};

template <int N, bool Flow>
void cross_cpu(benchmark::State &st, const char *name) {
  start_kcont();
  static xcpu<N, Flow> x;  // up to 25 KiB: not on the benchmark thread's stack
  kc::kcont_init(&x.producer, x.produce, &x,
                 kc::target::at(kc::LVL_SOFTNET, kc::kind::interrupt, 0));
  for (auto &k : x.consumers)
    kc::kcont_init(&k, x.consume, &x, kc::target::at(kc::LVL_SOFTNET, kc::kind::interrupt, 1));
  uint64_t ops = 0;
  probe p(st);
  for (auto _ : st) {
    x.sent = 0;
    x.received = 0;
    x.to_send = kChain / 2;
    kc::kcont_defer(&x.producer, nullptr, 0);
    while (x.received.load(std::memory_order_acquire) != x.to_send)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    kc::kcont_drain(&x.producer);
    ops += x.to_send;
    p.lap(ops);
  }
  for (auto &k : x.consumers) kc::kcont_drain(&k);
  p.finish(name, ops, true);
}
void BM_KcontCrossCpu(benchmark::State &st) { cross_cpu<64, false>(st, "cross-cpu"); }
void BM_KcontCrossCpuFlow(benchmark::State &st) { cross_cpu<256, true>(st, "cross-cpu-flow"); }

struct pingpong {
  kc::kcont a, b;
  uint64_t left = 0;
  std::atomic<bool> done{false};
};
void pp_fn(void *, void *env, int status) {
  auto *x = static_cast<pingpong *>(env);
  if (--x->left == 0) {
    x->done.store(true, std::memory_order_release);
    return;
  }
  kc::kcont_defer(status ? &x->a : &x->b, nullptr, !status);
}

void pingpong_row(benchmark::State &st, const char *name);
void BM_KcontPingPong(benchmark::State &st) { pingpong_row(st, "ping-pong"); }
// The same with the dispatchers' adaptive spin on (config::spin_ns = 50 us):
// fewer sleeps and doorbells, paid for in CPU time (the cpu-ns/op column).
void BM_KcontPingPongSpin(benchmark::State &st) {
  kc::kcont_stop();
  g_spin_ns = 50000;
  pingpong_row(st, "ping-pong-spin");
  kc::kcont_stop();
  g_spin_ns = 0;
}

void pingpong_row(benchmark::State &st, const char *name) {
  start_kcont();
  pingpong x;
  kc::kcont_init(&x.a, pp_fn, &x, kc::target::at(kc::LVL_SOFTNET, kc::kind::interrupt, 0));
  kc::kcont_init(&x.b, pp_fn, &x, kc::target::at(kc::LVL_SOFTNET, kc::kind::interrupt, 1));
  uint64_t ops = 0;
  probe p(st);
  for (auto _ : st) {
    x.left = kChain / 10;
    x.done = false;
    kc::kcont_defer(&x.a, nullptr, 0);
    while (!x.done.load(std::memory_order_acquire))
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    kc::kcont_drain(&x.a);
    kc::kcont_drain(&x.b);
    ops += kChain / 10;
    p.lap(ops);
  }
  p.finish(name, ops, true);
}

// ------------------------------------------------------------ baselines

void BM_CondvarPingPong(benchmark::State &st) {
  kc::kcont_stop();  // give the two threads the two cores
  std::mutex m;
  std::condition_variable cv;
  uint64_t turn = 0;  // even: ping's turn, odd: pong's
  const uint64_t n = 100000;
  uint64_t ops = 0;
  probe p(st);
  for (auto _ : st) {
    turn = 0;
    std::thread pong([&] {
      std::unique_lock<std::mutex> g(m);
      for (uint64_t i = 0; i < n; i++) {
        cv.wait(g, [&] { return turn % 2 == 1; });
        turn++;
        cv.notify_one();
      }
    });
    {
      std::unique_lock<std::mutex> g(m);
      for (uint64_t i = 0; i < n; i++) {
        turn++;
        cv.notify_one();
        cv.wait(g, [&] { return turn % 2 == 0; });
      }
    }
    pong.join();
    ops += 2 * n;  // two notifications per round trip
    p.lap(ops);
  }
  p.finish("condvar", ops);
}

void asio_row(benchmark::State &st, const char *name, void (*chain_fn)(uint64_t)) {
  kc::kcont_stop();
  uint64_t ops = 0;
  chain_fn(1000);  // warm-up
  probe p(st);
  for (auto _ : st) {
    chain_fn(kChain / 4);
    ops += kChain / 4;
    p.lap(ops);
  }
  p.finish(name, ops);
}
void BM_AsioPost(benchmark::State &st) { asio_row(st, "asio", asio_chain); }
void BM_BoostAsioPost(benchmark::State &st) { asio_row(st, "boost.asio", boost_asio_chain); }

struct uvstate {
  uv_async_t async;
  uint64_t left;
};
void BM_UvAsync(benchmark::State &st) {
  kc::kcont_stop();
  uv_loop_t loop;
  uv_loop_init(&loop);
  uvstate s{};
  uv_async_init(&loop, &s.async, [](uv_async_t *h) {
    auto *x = static_cast<uvstate *>(h->data);
    if (--x->left)
      uv_async_send(h);
    else
      uv_stop(h->loop);
  });
  s.async.data = &s;
  uint64_t ops = 0;
  probe p(st);
  for (auto _ : st) {
    s.left = kChain / 20;
    uv_async_send(&s.async);
    uv_run(&loop, UV_RUN_DEFAULT);
    ops += kChain / 20;
    p.lap(ops);
  }
  p.finish("uv-async", ops);
  uv_close(reinterpret_cast<uv_handle_t *>(&s.async), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

BENCHMARK(BM_Bare)->Iterations(20);
BENCHMARK(BM_AtomicRmw)->Iterations(10);
BENCHMARK(BM_KcontSameCpu)->Iterations(20);
BENCHMARK(BM_KcontSameCpuPrivate)->Iterations(20);
BENCHMARK(BM_KcqRunImmediate)->Iterations(10);
BENCHMARK(BM_KcqRunChain64)->Iterations(10);
BENCHMARK(BM_KcontCrossCpu)->Iterations(5);
BENCHMARK(BM_KcontCrossCpuFlow)->Iterations(5);
BENCHMARK(BM_KcontPingPong)->Iterations(3);
BENCHMARK(BM_KcontPingPongSpin)->Iterations(3);
BENCHMARK(BM_CondvarPingPong)->Iterations(5);
BENCHMARK(BM_AsioPost)->Iterations(10);
BENCHMARK(BM_BoostAsioPost)->Iterations(10);
BENCHMARK(BM_UvAsync)->Iterations(3);

void print_table() {
  auto get = [](const char *n) -> const row * {
    auto it = g_rows.find(n);
    return it == g_rows.end() ? nullptr : &it->second;
  };
  const row *bare = get("bare"), *same = get("same-cpu");
  std::printf("\nkcont core benchmarks -- one process, one run, 2 CPUs\n");
  std::printf("%-14s %10s %12s %10s %9s %12s %11s  %s\n", "row", "ns/op", "ops/s", "allocs/op",
              "csw/op", "doorbells/op", "cpu-ns/op", "ratio");
  struct line {
    const char *name, *what;
  } lines[] = {
      {"bare", "baseline"},
      {"atomic-rmw", "vs bare (one compare-and-swap)"},
      {"same-cpu", "vs bare (target <= 2x)"},
      {"same-cpu-prv", "vs bare (target <= 2x)"},
      {"kcq-run", "vs bare"},
      {"kcq-chain64", "vs bare (target <= 2x per element; 3 atomic-rmw each)"},
      {"cross-cpu", "vs bare (producer retries pending ones)"},
      {"cross-cpu-flow", "vs bare (target <= 50 ns, <= 0.01 doorbells)"},
      {"ping-pong", "vs bare"},
      {"ping-pong-spin", "vs bare (spin_ns = 50 us)"},
      {"condvar", "kcont same-cpu is Nx faster (target >= 100x)"},
      {"asio", "kcont same-cpu is Nx faster (target >= 10x)"},
      {"boost.asio", "kcont same-cpu is Nx faster (target >= 10x)"},
      {"uv-async", "kcont same-cpu is Nx faster"},
  };
  for (const auto &l : lines) {
    const row *r = get(l.name);
    if (!r) continue;
    char ratio[128] = "";
    if (std::string(l.name) == "bare") {
      std::snprintf(ratio, sizeof ratio, "1.00  %s", l.what);
    } else if (std::string(l.what).rfind("vs bare", 0) == 0 && bare) {
      std::snprintf(ratio, sizeof ratio, "%.2fx bare  %s", r->ns_per_op / bare->ns_per_op,
                    l.what + 7);
    } else if (same) {
      std::snprintf(ratio, sizeof ratio, "%.1fx  %s", r->ns_per_op / same->ns_per_op, l.what);
    }
    char db[16] = "-";
    if (r->doorbells_per_op >= 0) std::snprintf(db, sizeof db, "%.5f", r->doorbells_per_op);
    std::printf("%-14s %10.2f %12.0f %10.4f %9.4f %12s %11.1f  %s\n", l.name, r->ns_per_op,
                1e9 / r->ns_per_op, r->allocs_per_op, r->csw_per_op, db, r->cpu_ns_per_op, ratio);
  }
}

}  // namespace

int main(int argc, char **argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  kc::kcont_stop();
  print_table();
  return 0;
}
