// SPDX-License-Identifier: BSD-2-Clause
// metrics.cc -- the Prometheus exposition of kcont-nfsd's counters and the
// small HTTP server that serves it on kcont sockets.  See
// kcont/nfsd/metrics.h for the model, the limits and the locking.
#include "kcont/nfsd/metrics.h"

#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "kcont/callout.h"
#include "kcont/error_text.h"
#include "kcont/kcont.h"
#include "kcont/sock.h"
#include "kcont/vfs.h"

namespace kc::nfs {

// ---- rendering ------------------------------------------------------------------

namespace {

// Appends to a fixed buffer; remembers if anything did not fit.
struct text {
  char *buf;
  size_t cap, len = 0;
  bool full = false;

  __attribute__((format(printf, 2, 3))) void add(const char *fmt, ...) {
    if (full) return;
    va_list ap;
    va_start(ap, fmt);
    int n = std::vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
    if (n < 0 || size_t(n) >= cap - len) {
      full = true;
      return;
    }
    len += size_t(n);
  }
  void help(const char *name, const char *type, const char *what) {
    add("# HELP %s %s\n# TYPE %s %s\n", name, what, name, type);
  }
};

using ull = unsigned long long;

ull ld(const std::atomic<uint64_t> &a) { return a.load(std::memory_order_relaxed); }

// The procedures of both programs, as (program label, name, counter).
template <typename F>
void each_proc(server &srv, F fn) {
  for (uint32_t i = 0; i < NFS3_PROCS; i++) fn("nfs", nfs3_proc_name(i), srv.stats.nfs[i]);
  for (uint32_t i = 0; i < MOUNT3_PROCS; i++) fn("mount", mount3_proc_name(i), srv.stats.mount[i]);
}

void render_procedures(server &srv, text &t) {
  struct {
    const char *name, *what;
    std::atomic<uint64_t> proc_counter::*field;
  } const counters[] = {
      {"kcont_nfsd_calls_total", "Calls per NFS and MOUNT procedure.", &proc_counter::calls},
      {"kcont_nfsd_call_errors_total", "Calls answered with a status other than OK.",
       &proc_counter::errors},
      {"kcont_nfsd_calls_without_thread_total",
       "Calls completed without any thread (kcont model: decode to reply on a dispatcher).",
       &proc_counter::no_thread},
  };
  for (const auto &c : counters) {
    t.help(c.name, "counter", c.what);
    each_proc(srv, [&](const char *prog, const char *name, proc_counter &p) {
      t.add("%s{program=\"%s\",procedure=\"%s\"} %llu\n", c.name, prog, name, ld(p.*c.field));
    });
  }
  const char *h = "kcont_nfsd_call_duration_seconds";
  t.help(h, "histogram", "Server time per call, from decode to reply ready.");
  each_proc(srv, [&](const char *prog, const char *name, proc_counter &p) {
    ull cum = 0;
    for (int b = 0; b < PROC_LATENCY_BUCKETS - 1; b++) {
      cum += ld(p.latency[b]);
      t.add("%s_bucket{program=\"%s\",procedure=\"%s\",le=\"%.9g\"} %llu\n", h, prog, name,
            double(uint64_t(1) << (b + 10)) * 1e-9, cum);
    }
    cum += ld(p.latency[PROC_LATENCY_BUCKETS - 1]);
    t.add("%s_bucket{program=\"%s\",procedure=\"%s\",le=\"+Inf\"} %llu\n", h, prog, name, cum);
    t.add("%s_sum{program=\"%s\",procedure=\"%s\"} %.9f\n", h, prog, name, double(ld(p.ns)) * 1e-9);
    t.add("%s_count{program=\"%s\",procedure=\"%s\"} %llu\n", h, prog, name, cum);
  });
  t.help("kcont_nfsd_nfs_errors_total", "counter", "NFS replies by error status.");
  for (int i = 0; i < NFS3_ERROR_STATUSES; i++)
    t.add("kcont_nfsd_nfs_errors_total{status=\"%s\"} %llu\n", nfs3_status_name(i),
          ld(srv.stats.nfs_errors[i]));
  t.help("kcont_nfsd_read_bytes_total", "counter", "File data returned by READ.");
  t.add("kcont_nfsd_read_bytes_total %llu\n", ld(srv.stats.read_bytes));
  t.help("kcont_nfsd_written_bytes_total", "counter", "File data taken by WRITE.");
  t.add("kcont_nfsd_written_bytes_total %llu\n", ld(srv.stats.written_bytes));
  t.help("kcont_nfsd_rpc_errors_total", "counter",
         "RPC-level error replies (PROG_UNAVAIL, GARBAGE_ARGS, ...).");
  t.add("kcont_nfsd_rpc_errors_total %llu\n", ld(srv.stats.rpc_errors));
  t.help("kcont_nfsd_bad_records_total", "counter", "Connections closed on a framing error.");
  t.add("kcont_nfsd_bad_records_total %llu\n", ld(srv.stats.bad_records));
}

void render_transport(transport *tp, text &t) {
  if (!tp) return;
  transport_stats s = tp->stats();
  t.help("kcont_nfsd_connections", "gauge", "Connections open now, by port.");
  t.add("kcont_nfsd_connections{port=\"nfs\"} %u\n", s.open_nfs);
  t.add("kcont_nfsd_connections{port=\"mount\"} %u\n", s.open_mount);
  t.help("kcont_nfsd_connections_accepted_total", "counter", "Connections accepted.");
  t.add("kcont_nfsd_connections_accepted_total %llu\n", ull(s.accepted));
  t.help("kcont_nfsd_connections_refused_total", "counter",
         "Connections refused: table full, address over its limit, no memory.");
  t.add("kcont_nfsd_connections_refused_total{reason=\"full\"} %llu\n", ull(s.refused_full));
  t.add("kcont_nfsd_connections_refused_total{reason=\"per_address\"} %llu\n", ull(s.refused_peer));
  t.add("kcont_nfsd_connections_refused_total{reason=\"memory\"} %llu\n", ull(s.refused_memory));
  t.help("kcont_nfsd_connections_evicted_total", "counter",
         "Idle connections closed to make room for a new one.");
  t.add("kcont_nfsd_connections_evicted_total %llu\n", ull(s.evicted));
  t.help("kcont_nfsd_connections_closed_total", "counter",
         "Connections closed by a timeout: idle, or a stalled request or reply.");
  t.add("kcont_nfsd_connections_closed_total{reason=\"idle\"} %llu\n", ull(s.closed_idle));
  t.add("kcont_nfsd_connections_closed_total{reason=\"stalled\"} %llu\n", ull(s.closed_stalled));
  t.help("kcont_nfsd_buffer_memory_bytes", "gauge",
         "Request and reply buffer memory charged to the --max-memory budget.");
  t.add("kcont_nfsd_buffer_memory_bytes %llu\n", ull(s.memory_used));
  t.help("kcont_nfsd_buffer_memory_limit_bytes", "gauge", "The --max-memory budget.");
  t.add("kcont_nfsd_buffer_memory_limit_bytes %llu\n", ull(s.memory_limit));
  t.help("kcont_nfsd_buffer_memory_peak_bytes", "gauge", "The most ever charged at once.");
  t.add("kcont_nfsd_buffer_memory_peak_bytes %llu\n", ull(s.memory_peak));
  t.help("kcont_nfsd_buffer_memory_waits_total", "counter",
         "Times a connection stopped reading to wait for memory.");
  t.add("kcont_nfsd_buffer_memory_waits_total %llu\n", ull(s.memory_waits));
  t.help("kcont_nfsd_replies_limited_total", "counter",
         "Replies built in 64 KiB for want of memory (threads model).");
  t.add("kcont_nfsd_replies_limited_total %llu\n", ull(s.replies_limited));
}

void render_exports(server &srv, text &t) {
  const export_table *tab = srv.exports_now();
  if (!tab) return;
  struct row {
    const char *name, *type, *what;
  } const rows[] = {
      {"kcont_vfs_handle_cache_hits_total", "counter", "File handles found in the vnode cache."},
      {"kcont_vfs_handle_cache_misses_total", "counter",
       "File handles opened because they were not cached."},
      {"kcont_vfs_handle_cache_primed_total", "counter",
       "Files entered into the vnode cache by the CREATE that made them."},
      {"kcont_vfs_thread_context_running", "gauge",
       "Requests of the export in thread context now."},
      {"kcont_vfs_thread_context_waiting", "gauge",
       "Requests of the export waiting for its share of thread context."},
      {"kcont_vfs_attributes_shared_total", "counter",
       "Operations that change nothing answered with attributes read for an earlier request "
       "after this one arrived."},
      {"kcont_vfs_attributes_read_total", "counter",
       "Operations that change nothing that read their object's attributes themselves."},
  };
  for (int r = 0; r < int(std::size(rows)); r++) {
    t.help(rows[r].name, rows[r].type, rows[r].what);
    for (const export_entry &e : tab->exports) {
      if (!e.fs) continue;
      vfs::vfs_stats v = vfs::vfs_get_stats(e.fs);
      const ull values[] = {v.cache_hits,     v.cache_misses, v.cache_primed, v.thread_running,
                            v.thread_waiting, v.attr_shared,  v.attr_read};
      ull value = values[r];
      // Paths are canonical and may hold any byte but NUL: escape \ " \n.
      t.add("%s{export=\"", rows[r].name);
      for (char ch : e.path) {
        if (ch == '\\' || ch == '"')
          t.add("\\%c", ch);
        else if (ch == '\n')
          t.add("\\n");
        else
          t.add("%c", ch);
      }
      t.add("\"} %llu\n", value);
    }
  }
}

void render_core(text &t) {
  int ncpu = kcont_ncpus();
  if (ncpu <= 0) return;
  struct {
    const char *name, *type, *what;
    uint64_t level_stats::*field;
  } const counters[] = {
      {"kcont_deferred_total", "counter", "Continuations queued, per CPU, level and kind.",
       &level_stats::deferred},
      {"kcont_run_total", "counter", "Continuations run from their queue.", &level_stats::run},
      {"kcont_direct_total", "counter", "Continuations called directly by kcq_run.",
       &level_stats::direct},
      {"kcont_coalesced_total", "counter", "Deferrals of a continuation already pending.",
       &level_stats::coalesced},
      {"kcont_cancelled_total", "counter", "Pending continuations cancelled.",
       &level_stats::cancelled},
      {"kcont_queue_max_depth", "gauge", "The deepest the queue has been.",
       &level_stats::max_depth},
  };
  auto each_row = [&](auto fn) {
    for (int cpu = 0; cpu < ncpu; cpu++)
      for (int id = 0; id < max_levels; id++) {
        level l{uint8_t(id)};
        const char *name = kcont_level_name(l);
        if (!name || std::strcmp(name, "?") == 0) continue;
        for (kind k : {kind::interrupt, kind::thread}) {
          level_stats s = kcont_stats(cpu, l, k);
          if (!s.deferred && !s.run && !s.direct && !s.coalesced && !s.cancelled) continue;
          fn(cpu, name, k == kind::interrupt ? "interrupt" : "thread", s);
        }
      }
  };
  for (const auto &c : counters) {
    t.help(c.name, c.type, c.what);
    each_row([&](int cpu, const char *lvl, const char *kd, const level_stats &s) {
      t.add("%s{cpu=\"%d\",level=\"%s\",kind=\"%s\"} %llu\n", c.name, cpu, lvl, kd,
            ull(s.*c.field));
    });
  }
  const char *h = "kcont_dispatch_latency_seconds";
  t.help(h, "histogram",
         "Queued to dispatched, sampled once per 64 dispatcher loops (interrupt kind).");
  each_row([&](int cpu, const char *lvl, const char *kd, const level_stats &s) {
    if (std::strcmp(kd, "interrupt") != 0) return;
    ull cum = 0;
    for (int b = 0; b < level_stats::latency_buckets - 1; b++) {
      cum += s.latency_hist[b];
      t.add("%s_bucket{cpu=\"%d\",level=\"%s\",le=\"%.9g\"} %llu\n", h, cpu, lvl,
            double(uint64_t(1) << (b + 8)) * 1e-9, cum);
    }
    cum += s.latency_hist[level_stats::latency_buckets - 1];
    t.add("%s_bucket{cpu=\"%d\",level=\"%s\",le=\"+Inf\"} %llu\n", h, cpu, lvl, cum);
    t.add("%s_sum{cpu=\"%d\",level=\"%s\"} %.9f\n", h, cpu, lvl, double(s.latency_sum_ns) * 1e-9);
    t.add("%s_count{cpu=\"%d\",level=\"%s\"} %llu\n", h, cpu, lvl, cum);
  });
  struct {
    const char *name, *what;
    uint64_t cpu_stats::*field;
  } const per_cpu[] = {
      {"kcont_dispatcher_loops_total", "Dispatcher loop iterations.", &cpu_stats::loops},
      {"kcont_dispatcher_sleeps_total", "Times a dispatcher blocked in its ring.",
       &cpu_stats::sleeps},
      {"kcont_doorbells_total", "Wake-ups other threads sent a dispatcher.", &cpu_stats::doorbells},
      {"kcont_inbox_items_total", "Items received through a CPU's inbox.", &cpu_stats::inbox_items},
      {"kcont_worker_loops_total", "Loop iterations of a CPU's thread-kind workers.",
       &cpu_stats::worker_loops},
      {"kcont_worker_sleeps_total", "Times those workers blocked.", &cpu_stats::worker_sleeps},
  };
  for (const auto &c : per_cpu) {
    t.help(c.name, "counter", c.what);
    for (int cpu = 0; cpu < ncpu; cpu++)
      t.add("%s{cpu=\"%d\"} %llu\n", c.name, cpu, ull(kcont_cpu_stats(cpu).*c.field));
  }
}

}  // namespace

size_t metrics_render(server &srv, transport *tp, char *buf, size_t cap) {
  if (!buf || cap == 0) return 0;
  text t{buf, cap};
  render_procedures(srv, t);
  render_transport(tp, t);
  render_exports(srv, t);
  render_core(t);
  return t.full ? 0 : t.len;
}

// ---- the HTTP server ----------------------------------------------------------------

namespace {

constexpr size_t REQUEST_MAX = 4096;
constexpr size_t HEADER_ROOM = 256;  // the status line and headers, before the body
constexpr uint32_t SWEEP_MS = 250;

struct scraper {
  metrics_server::impl *m = nullptr;
  sock *s = nullptr;
  kcont upcall;
  char req[REQUEST_MAX];
  size_t req_len = 0;
  std::vector<char> out;  // HEADER_ROOM + body, allocated at start
  size_t out_at = 0, out_end = 0;
  bool responding = false;
  uint64_t started = 0;  // sweep tick at accept
};

}  // namespace

struct metrics_server::impl {
  server *srv = nullptr;
  transport *tp = nullptr;
  metrics_config cfg;
  sockpool *pool = nullptr;
  sock *listener = nullptr;
  kcont listen_kc;
  std::vector<scraper> scrapers;
  callout sweep_co;
  kcont sweep_kc;
  uint64_t tick = 0;
  uint32_t timeout_ticks = 0;
  bool stopping = false;
  std::atomic<uint64_t> served{0}, refused{0}, timed_out{0}, bad{0};
};

namespace {

using impl = metrics_server::impl;

void finish(scraper *c) {
  if (c->s) sock_close(c->s);  // queued response bytes still go out
  c->s = nullptr;
}

void reset(scraper *c) {
  if (c->s) sock_abort(c->s);
  c->s = nullptr;
}

// Sends what the socket takes; closes when all is queued.
void pump(scraper *c) {
  while (c->out_at < c->out_end) {
    long n = sock_send(c->s, c->out.data() + c->out_at, c->out_end - c->out_at);
    if (n < 0) {
      reset(c);
      return;
    }
    if (n == 0) return;  // SOCK_WRITABLE follows
    c->out_at += size_t(n);
  }
  finish(c);
}

// Puts the status line and headers right before the body at
// out[HEADER_ROOM, HEADER_ROOM + body) and starts sending (the headers
// alone for HEAD).
void respond(scraper *c, const char *status, const char *type, size_t body, bool with_body = true) {
  char head[HEADER_ROOM];
  int n = std::snprintf(head, sizeof head,
                        "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n",
                        status, type, body);
  if (n <= 0 || size_t(n) >= sizeof head) {
    reset(c);
    return;
  }
  c->out_at = HEADER_ROOM - size_t(n);
  std::memcpy(c->out.data() + c->out_at, head, size_t(n));
  c->out_end = HEADER_ROOM + (with_body ? body : 0);
  c->responding = true;
  pump(c);
}

void respond_text(scraper *c, const char *status, const char *msg) {
  size_t len = std::strlen(msg);
  std::memcpy(c->out.data() + HEADER_ROOM, msg, len);
  respond(c, status, "text/plain; charset=utf-8", len);
}

// A whole request head is in c->req: answer it.
void handle(scraper *c) {
  impl *m = c->m;
  char method[8] = {}, path[256] = {};
  if (std::sscanf(c->req, "%7s %255s HTTP/", method, path) != 2) {
    m->bad.fetch_add(1, std::memory_order_relaxed);
    respond_text(c, "400 Bad Request", "bad request\n");
    return;
  }
  bool head = std::strcmp(method, "HEAD") == 0;
  if (!head && std::strcmp(method, "GET") != 0) {
    m->bad.fetch_add(1, std::memory_order_relaxed);
    respond_text(c, "405 Method Not Allowed", "only GET\n");
    return;
  }
  if (std::strcmp(path, "/metrics") == 0 || std::strncmp(path, "/metrics?", 9) == 0) {
    size_t n =
        metrics_render(*m->srv, m->tp, c->out.data() + HEADER_ROOM, c->out.size() - HEADER_ROOM);
    if (n == 0) {
      respond_text(c, "500 Internal Server Error", "the metrics did not fit the buffer\n");
      return;
    }
    m->served.fetch_add(1, std::memory_order_relaxed);
    respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", n, !head);
    return;
  }
  if (std::strcmp(path, "/") == 0) {
    respond_text(c, "200 OK", "kcont-nfsd: the metrics are at /metrics\n");
    return;
  }
  respond_text(c, "404 Not Found", "not found: try /metrics\n");
}

void scraper_upcall(void *, void *env, int) {
  auto *c = static_cast<scraper *>(env);
  if (!c->s) return;
  uint32_t ev = sock_events(c->s);
  if (ev & SOCK_ERROR) {
    reset(c);
    return;
  }
  if (c->responding) {
    if (ev & SOCK_WRITABLE) pump(c);
    return;
  }
  for (;;) {
    if (c->req_len == REQUEST_MAX - 1) {
      c->m->bad.fetch_add(1, std::memory_order_relaxed);
      respond_text(c, "431 Request Header Fields Too Large", "request too large\n");
      return;
    }
    long n = sock_read(c->s, c->req + c->req_len, REQUEST_MAX - 1 - c->req_len);
    if (n == -EAGAIN) return;
    if (n <= 0) {
      reset(c);
      return;
    }
    c->req_len += size_t(n);
    c->req[c->req_len] = '\0';
    if (std::strstr(c->req, "\r\n\r\n") || std::strstr(c->req, "\n\n")) {
      handle(c);
      return;
    }
  }
}

void listen_upcall(void *, void *env, int) {
  auto *m = static_cast<impl *>(env);
  sock_events(m->listener);
  while (sock *s = sock_accept(m->listener)) {
    scraper *free_one = nullptr;
    for (auto &c : m->scrapers)
      if (!c.s && kcont_state(&c.upcall) == kc_state::idle) {
        free_one = &c;
        break;
      }
    if (!free_one || m->stopping) {
      m->refused.fetch_add(1, std::memory_order_relaxed);
      sock_close(s);
      continue;
    }
    scraper *c = free_one;
    c->s = s;
    c->req_len = 0;
    c->responding = false;
    c->out_at = c->out_end = 0;
    c->started = m->tick;
    if (sock_start(s, &c->upcall) != 0) {
      c->s = nullptr;
      sock_close(s);
    }
  }
}

void sweep_fire(void *arg) { kcont_defer(&static_cast<impl *>(arg)->sweep_kc, nullptr, 0); }

// Resets scrapers that took longer than the timeout; re-arms itself.
void sweep(void *, void *env, int) {
  auto *m = static_cast<impl *>(env);
  m->tick++;
  for (auto &c : m->scrapers)
    if (c.s && m->tick - c.started > m->timeout_ticks) {
      m->timed_out.fetch_add(1, std::memory_order_relaxed);
      reset(&c);
    }
  if (!m->stopping) callout_reset(&m->sweep_co, mstohz(SWEEP_MS), sweep_fire, m);
}

void run_on_cpu0(void (*fn)(impl *), impl *m) {
  struct call {
    void (*fn)(impl *);
    impl *m;
  } c{fn, m};
  kcont_run_on(
      0, LVL_SOFTNET, [](void *a) { static_cast<call *>(a)->fn(static_cast<call *>(a)->m); }, &c);
}

}  // namespace

std::unique_ptr<metrics_server> metrics_start(server &srv, transport *tp, const metrics_config &cfg,
                                              std::string *err) {
  if (!kcont_running()) {
    *err = "--metrics: kcont is not running";
    return nullptr;
  }
  auto ms = std::make_unique<metrics_server>();
  ms->p = std::make_unique<impl>();
  impl *m = ms->p.get();
  m->srv = &srv;
  m->tp = tp;
  m->cfg = cfg;
  m->timeout_ticks = (cfg.timeout_ms + SWEEP_MS - 1) / SWEEP_MS;
  m->scrapers = std::vector<scraper>(cfg.max_conns ? cfg.max_conns : 1);
  for (auto &c : m->scrapers) {
    c.m = m;
    c.out.resize(HEADER_ROOM + cfg.buffer);
    kcont_init(&c.upcall, scraper_upcall, &c, target::at(LVL_SOFTNET, kind::interrupt, 0));
  }
  sockpool_config pc;
  pc.cpu = 0;
  pc.nsocks = uint32_t(m->scrapers.size()) + 4;
  pc.sndbuf = 256 * 1024;
  pc.nbufs = 16;
  pc.bufsize = 4096;
  m->pool = sockpool_create(pc, err);
  if (!m->pool) {
    *err = "--metrics: " + *err;
    return nullptr;
  }
  kcont_init(&m->listen_kc, listen_upcall, m, target::at(LVL_SOFTNET, kind::interrupt, 0));
  kcont_init(&m->sweep_kc, sweep, m, target::at(LVL_SOFTNET, kind::interrupt, 0));
  callout_init(&m->sweep_co, 0);
  int e = 0;
  struct args {
    impl *m;
    int *e;
  } a{m, &e};
  kcont_run_on(
      0, LVL_SOFTNET,
      [](void *p) {
        auto *x = static_cast<args *>(p);
        impl *mm = x->m;
        mm->listener = sock_listen(mm->pool, reinterpret_cast<const sockaddr *>(&mm->cfg.addr),
                                   mm->cfg.addr_len, 64, &mm->listen_kc, x->e, false);
        if (mm->listener) callout_reset(&mm->sweep_co, mstohz(SWEEP_MS), sweep_fire, mm);
      },
      &a);
  if (!m->listener) {
    *err = std::string("--metrics: cannot listen: ") + kc::error_text(e);
    callout_destroy(&m->sweep_co);
    sockpool_destroy(m->pool);
    m->pool = nullptr;
    return nullptr;
  }
  return ms;
}

void metrics_stop(metrics_server *ms) {
  if (!ms || !ms->p || !ms->p->pool) return;
  impl *m = ms->p.get();
  run_on_cpu0(
      [](impl *mm) {
        mm->stopping = true;
        if (mm->listener) sock_close(mm->listener);
        mm->listener = nullptr;
        for (auto &c : mm->scrapers) reset(&c);
      },
      m);
  callout_halt(&m->sweep_co);
  callout_destroy(&m->sweep_co);
  kcont_drain(&m->sweep_kc);
  kcont_drain(&m->listen_kc);
  for (auto &c : m->scrapers) kcont_drain(&c.upcall);
  // Teardown of the reset sockets completes on CPU 0's ring.
  for (int i = 0; i < 2000 && sockpool_get_stats(m->pool).in_use > 0; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (sockpool_destroy(m->pool) == 0) m->pool = nullptr;
}

metrics_server::~metrics_server() { metrics_stop(this); }

metrics_server_stats metrics_get_stats(const metrics_server *ms) {
  metrics_server_stats s;
  if (!ms || !ms->p) return s;
  s.served = ms->p->served.load(std::memory_order_relaxed);
  s.refused = ms->p->refused.load(std::memory_order_relaxed);
  s.timed_out = ms->p->timed_out.load(std::memory_order_relaxed);
  s.bad_requests = ms->p->bad.load(std::memory_order_relaxed);
  return s;
}

}  // namespace kc::nfs
