// SPDX-License-Identifier: BSD-2-Clause
// kcont-nfsd -- an NFSv3 server on kcont (docs/nfsd.md).
//
//   kcont-nfsd [--export DIR | --exports FILE] [--bind ADDR] [--nfs-port N]
//              [--mount-port M] [--cpus N] [--model kcont|threads] [--rpcbind]
//
// Without --export/--exports it serves a demo export it creates itself.
// The main thread only parses the command line, starts things, and then
// waits for signals synchronously (sigwait): SIGINT/SIGTERM stop cleanly,
// SIGHUP reloads the exports file, SIGUSR1 prints the counters.
//
// Libraries: CLI11 for the command line, spdlog for logging (Debian
// packages libcli11-dev, libspdlog-dev); neither is on a request's path.
// With libsystemd (libsystemd-dev at build time) it tells systemd when it
// is ready (both ports listen), reloading and stopping (sd_notify; a
// no-op outside a Type=notify unit).
#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef KCONT_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "kcont/error_text.h"
#include "kcont/kcont.h"
#include "kcont/nfsd/metrics.h"
#include "kcont/nfsd/server.h"
#include "kcont/nfsd/transport.h"
#include "portmap.h"

using namespace kc;
using namespace kc::nfs;

namespace {

// Caps glibc's malloc arenas at the number of online CPUs (glibc's default
// is eight per CPU), unless the environment chooses (MALLOC_ARENA_MAX, or
// arena_max in GLIBC_TUNABLES).  The server's own request path does not
// allocate, but a library behind the VFS may: libcephfs copies every WRITE
// into buffers allocated on the lane's thread and freed on its own threads,
// and with an arena per allocating thread the freed pages scatter over a
// dozen heaps that each keep what they once held (after 64 KiB WRITEs to a
// Ceph export: 413-464 MiB of RSS with glibc's default, 243-255 MiB with
// two arenas on two CPUs, throughput within the runs' spread;
// docs/benchmarks.md).  Returns the cap set, 0 when the environment's holds.
// Call before the first thread starts.
int cap_malloc_arenas() {
  // NOLINTBEGIN(concurrency-mt-unsafe): one thread yet, and nothing in this
  // program sets the environment
  const char *tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("MALLOC_ARENA_MAX") || (tunables && std::strstr(tunables, "arena_max"))) return 0;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int cap = int(std::clamp<long>(cpus, 1, 64));
  return mallopt(M_ARENA_MAX, cap) == 1 ? cap : 0;
  // NOLINTEND(concurrency-mt-unsafe)
}

// Tells systemd about the service's state (READY=1, RELOADING=1,
// STOPPING=1); nothing without libsystemd or outside a notify unit.
void notify_systemd([[maybe_unused]] const char *state) {
#ifdef KCONT_HAVE_SYSTEMD
  sd_notify(0, state);
#endif
}

// Fills the demo export (idempotent): a README, a small text file and a
// 4 MiB file of deterministic bytes.
bool make_demo_export(const std::string &dir, std::string *err) {
  std::string sub = dir + "/data";
  for (const std::string &d : {dir, sub}) {
    if (mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) {
      *err = "cannot create demo export " + d + ": " + kc::error_text(errno);
      return false;
    }
  }
  auto write_if_missing = [&](const std::string &path, const std::string &content) {
    struct stat st;
    if (stat(path.c_str(), &st) == 0) return true;
    std::ofstream f(path, std::ios::binary);
    f << content;
    if (!f) *err = "cannot write " + path;
    return bool(f);
  };
  std::string big(4 << 20, '\0');
  for (size_t i = 0; i < big.size(); i++) big[i] = char((i * 2654435761u) >> 24);
  return write_if_missing(dir + "/README.txt",
                          "This is kcont-nfsd's demo export.  Everything here is served over\n"
                          "NFSv3 by continuations: try nfs-ls, nfs-cat and nfs-cp on it.\n") &&
         write_if_missing(dir + "/hello.txt", "hello from kcont-nfsd\n") &&
         write_if_missing(sub + "/4MiB.bin", big);
}

bool parse_bind(const std::string &host, int port, sockaddr_storage *out, socklen_t *len,
                std::string *err) {
  std::memset(out, 0, sizeof *out);
  auto *a4 = reinterpret_cast<sockaddr_in *>(out);
  auto *a6 = reinterpret_cast<sockaddr_in6 *>(out);
  if (inet_pton(AF_INET, host.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(uint16_t(port));
    *len = sizeof *a4;
    return true;
  }
  if (inet_pton(AF_INET6, host.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(uint16_t(port));
    *len = sizeof *a6;
    return true;
  }
  *err = "--bind " + host + ": not an IPv4 or IPv6 address";
  return false;
}

}  // namespace

static int run_server(int argc, char **argv) {
  CLI::App app{"kcont-nfsd: an NFSv3 server built on kcont continuations"};
  std::string export_dir, exports_file, bind_addr = "127.0.0.1", model = "kcont";
  std::string demo_dir = "/tmp/kcont-nfsd-demo", log_level = "info", memory_export, metrics;
  uint32_t memory_mib = 1024;
  int nfs_port = 20490, mount_port = 20048, cpus = 0, spin_us = 0;
  uint32_t slots = 16, max_conns = 256, max_mount_conns = 64, per_addr = 128, threads = 8,
           stats_interval = 0, vfs_lanes = 0;
  double idle_timeout = 360, record_timeout = 30, grace = 5;
  uint64_t max_memory = 0;
  bool rpcbind = false, pin = false;
  auto *ex1 = app.add_option("--export", export_dir, "Export one directory read-write to everyone");
  auto *ex2 = app.add_option("--exports", exports_file, "Exports file (exports(5) style)");
  app.add_option("--memory-export", memory_export,
                 "Also serve an in-memory tree (vfs(9) memory backend) at this virtual path, "
                 "read-write to everyone; its contents are lost on exit")
      ->excludes(ex2);
  app.add_option("--memory-size", memory_mib, "MiB of file data the in-memory tree may hold")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  ex1->excludes(ex2);
  app.add_option("--demo-dir", demo_dir, "Where the demo export lives when none is given")
      ->capture_default_str();
  app.add_option("--bind", bind_addr, "Address to listen on")->capture_default_str();
  app.add_option("--nfs-port", nfs_port, "NFS port")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--mount-port", mount_port, "MOUNT port")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--cpus", cpus, "kcont CPUs (dispatcher threads); 0 = one per core")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  app.add_flag("--pin", pin, "Pin each kcont CPU to a core");
  app.add_option("--spin-us", spin_us,
                 "Microseconds an idle kcont CPU polls for work before it sleeps (0 = sleep at "
                 "once; fewer context switches, more CPU)")
      ->capture_default_str()
      ->check(CLI::Range(0, 10000));
  app.add_option("--model", model, "kcont (continuations) or threads (the classic design)")
      ->capture_default_str()
      ->check(CLI::IsMember({"kcont", "threads"}));
  app.add_option("--slots", slots, "Request slots per connection")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--max-conns", max_conns,
                 "Most NFS-port connections at once (the longest-idle one is closed to make room)")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  app.add_option("--max-mount-conns", max_mount_conns, "Most MOUNT-port connections at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  app.add_option("--max-conns-per-addr", per_addr,
                 "Most connections from one client address, both ports (0: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65536));
  app.add_option("--idle-timeout", idle_timeout,
                 "Seconds after which an idle connection is closed (0: never)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--record-timeout", record_timeout,
                 "Seconds a request may take to arrive (waits for --max-memory not counted), or a "
                 "reply to be taken by its client, before the connection is reset (0: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--grace", grace,
                 "Seconds SIGTERM/SIGINT lets in-flight requests finish; requests still running "
                 "then (a hung file system) are abandoned and the process exits")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--max-memory", max_memory,
                 "Request and reply buffer memory of all connections (e.g. 512M, 2G): a "
                 "connection that cannot reserve its slots is refused, a large request waits "
                 "for memory (default: 1G or a quarter of RAM, whichever is less)")
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--threads", threads, "Worker threads (threads model)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--vfs-lanes", vfs_lanes,
                 "Thread-context lanes per CPU (kcont model; vfs(9)); 0 = 4, 16 with a Ceph export")
      ->capture_default_str()
      ->check(CLI::Range(0, 16));
  app.add_option("--metrics", metrics,
                 "Serve the counters in Prometheus text format over HTTP at ADDR:PORT "
                 "(e.g. 127.0.0.1:9449; GET /metrics), on kcont sockets");
  app.add_flag("--rpcbind", rpcbind, "Register NFS and MOUNT with the local rpcbind");
  bool single_identity = false;
  app.add_flag("--single-identity", single_identity,
               "Run every request with the server's own identity when it cannot switch to "
               "each client's (no CAP_SETUID/CAP_SETGID); without it such a server refuses "
               "to start");
  app.add_option("--stats-interval", stats_interval,
                 "Print counters every N seconds (0: only on SIGUSR1)")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("kcont-nfsd");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("kcont-nfsd: [%H:%M:%S.%e] %^%l%$: %v");
  spdlog::set_level(spdlog::level::from_str(log_level));
  if (int cap = cap_malloc_arenas())
    spdlog::debug("malloc arenas: at most {} (MALLOC_ARENA_MAX overrides)", cap);

  // Identity: every request runs as its client, or the operator said
  // otherwise.
  std::string err;
  if (int e = vfs::vfs_identity_check(&err); e != 0 && !single_identity) {
    spdlog::error(
        "cannot run requests under their clients' identities: {}; refusing to start "
        "(give the capability, or --single-identity to run every request as uid {})",
        err, geteuid());
    return 1;
  } else if (e != 0) {
    spdlog::warn(
        "--single-identity: {}; EVERY REQUEST RUNS AS uid {} gid {} -- permission "
        "checks in thread context are the server's own, not the clients'",
        err, geteuid(), getegid());
    vfs::vfs_set_single_identity(true);
  } else if (single_identity) {
    spdlog::info("--single-identity ignored: this process can switch identities");
  }

  // Exports.  A restarted server is the same instance as before: a back
  // end with remote state (Ceph's sessions) takes its previous run's over.
  vfs::vfs_set_instance("kcont-nfsd@" + bind_addr + ":" + std::to_string(nfs_port));
  std::shared_ptr<export_table> table;
  if (!exports_file.empty()) {
    table = load_exports(exports_file, &err);
  } else if (export_dir.empty() && !memory_export.empty()) {
    table = std::make_shared<export_table>();  // the in-memory tree alone
  } else {
    if (export_dir.empty()) {
      if (!make_demo_export(demo_dir, &err)) {
        spdlog::error("{}", err);
        return 1;
      }
      export_dir = demo_dir;
      spdlog::info("no --export given: serving the demo export {}", demo_dir);
    }
    table = single_export(export_dir, &err);
  }
  if (table && !memory_export.empty() &&
      !add_memory_export(*table, memory_export, uint64_t(memory_mib) << 20, &err))
    table = nullptr;
  if (!table) {
    spdlog::error("{}", err);
    return 1;
  }

  transport_config tc;
  if (!parse_bind(bind_addr, nfs_port, &tc.nfs_addr, &tc.addr_len, &err) ||
      !parse_bind(bind_addr, mount_port, &tc.mount_addr, &tc.addr_len, &err)) {
    spdlog::error("{}", err);
    return 1;
  }
  if (nfs_port == mount_port) {
    spdlog::error("--nfs-port and --mount-port must differ (both are {})", nfs_port);
    return 1;
  }
  tc.slots = slots;
  tc.max_conns = max_conns;
  tc.max_mount_conns = max_mount_conns;
  tc.max_conns_per_peer = per_addr;
  auto ms = [](double sec) { return uint32_t(std::lround(sec * 1000)); };
  tc.idle_timeout_ms = ms(idle_timeout);
  tc.record_timeout_ms = ms(record_timeout);
  tc.grace_ms = ms(grace);
  tc.threads = threads;
  tc.vfs_lanes_per_cpu = vfs_lanes;
  tc.max_memory = max_memory;

  // Signals are taken synchronously by this thread; every other thread
  // inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGPIPE}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  server srv;
  srv.set_exports(table);

  // The metrics endpoint: ADDR:PORT ([v6addr]:PORT for IPv6).
  sockaddr_storage metrics_addr{};
  socklen_t metrics_len = 0;
  if (!metrics.empty()) {
    auto colon = metrics.rfind(':');
    std::string host = colon == std::string::npos ? "" : metrics.substr(0, colon);
    if (host.size() > 1 && host.front() == '[' && host.back() == ']')
      host = host.substr(1, host.size() - 2);
    char *end = nullptr;
    long port = colon == std::string::npos ? 0 : std::strtol(metrics.c_str() + colon + 1, &end, 10);
    if (host.empty() || port < 1 || port > 65535 || !end || *end ||
        !parse_bind(host, int(port), &metrics_addr, &metrics_len, &err)) {
      spdlog::error("--metrics {}: give ADDR:PORT, e.g. 127.0.0.1:9449{}", metrics,
                    err.empty() ? "" : " (" + err + ")");
      return 1;
    }
  }

  bool use_kcont = model == "kcont";
  // The threads model runs kcont only to serve --metrics (one CPU).
  bool kcont_needed = use_kcont || !metrics.empty();
  if (use_kcont) {
    if (int e = register_nfsd_levels()) {
      spdlog::error("cannot register kcont levels: {}", kc::error_text(e));
      return 1;
    }
  }
  if (kcont_needed) {
    config kc_cfg;
    kc_cfg.cpus = use_kcont ? cpus : 1;
    kc_cfg.pin = pin;
    kc_cfg.spin_ns = unsigned(spin_us) * 1000u;
    kc_cfg.ring_entries = 1024;
    if (kcont_start(kc_cfg, &err) != 0) {
      spdlog::error("cannot start kcont: {}", err);
      return 1;
    }
  }
  auto tp = use_kcont ? make_kcont_transport(srv, tc) : make_threads_transport(srv, tc);
  if (tp->start(&err) != 0) {
    spdlog::error("{}", err);
    tp.reset();
    if (kcont_needed) kcont_stop();
    return 1;
  }
  std::unique_ptr<metrics_server> scrape;
  if (!metrics.empty()) {
    metrics_config mc;
    mc.addr = metrics_addr;
    mc.addr_len = metrics_len;
    scrape = metrics_start(srv, tp.get(), mc, &err);
    if (!scrape) {
      spdlog::error("{}", err);
      tp->stop();
      tp.reset();
      kcont_stop();
      return 1;
    }
    spdlog::info("metrics: http://{}/metrics", metrics);
  }
  bool registered = false;
  if (rpcbind) {
    if (!portmap_register(uint16_t(nfs_port), uint16_t(mount_port), &err))
      spdlog::warn("--rpcbind: {} (serving anyway; clients must name the ports)", err);
    else
      registered = true;
  }

  std::string url_path = table->exports.front().path;
  spdlog::info("ready: model={} cpus={} nfs={}:{} mount={}:{} exports={}", model,
               use_kcont ? kcont_ncpus() : 0, bind_addr, nfs_port, bind_addr, mount_port,
               table->exports.size());
  for (auto &e : table->exports) {
    std::string who;
    for (auto &c : e.clients)
      who += (who.empty() ? "" : " ") + c.spec + (c.opts.rw ? "(rw)" : "(ro)");
    spdlog::info("export {} -> {}", e.path, who);
  }
  std::fprintf(stderr,
               "kcont-nfsd: ready (try: nfs-ls 'nfs://%s%s?version=3&nfsport=%d&mountport=%d')\n",
               bind_addr.c_str(), url_path.c_str(), nfs_port, mount_port);
  notify_systemd("READY=1");

  // Wait for signals.
  int sig = 0;
  for (;;) {
    if (stats_interval > 0) {
      timespec ts{time_t(stats_interval), 0};
      sig = sigtimedwait(&sigs, nullptr, &ts);
      if (sig < 0) {
        spdlog::info("{}\n{}", tp->describe(), format_stats(srv));
        continue;
      }
    } else if (sigwait(&sigs, &sig) != 0) {
      continue;
    }
    if (sig == SIGINT || sig == SIGTERM) break;
    if (sig == SIGUSR1) spdlog::info("{}\n{}", tp->describe(), format_stats(srv));
    if (sig == SIGHUP) {
      notify_systemd("RELOADING=1");
      struct ready_again {
        ~ready_again() { notify_systemd("READY=1"); }
      } after_reload;
      if (exports_file.empty()) {
        spdlog::info("SIGHUP: no exports file to reload");
        continue;
      }
      auto fresh = load_exports(exports_file, &err);
      if (!fresh) {
        spdlog::error("SIGHUP: keeping the old exports: {}", err);
      } else {
        srv.set_exports(fresh);
        spdlog::info("SIGHUP: reloaded {} ({} exports)", exports_file, fresh->exports.size());
      }
    }
  }
  notify_systemd("STOPPING=1");
  spdlog::info("stopping ({}): finishing in-flight requests", sig == SIGINT ? "SIGINT" : "SIGTERM");
  if (registered) portmap_unregister(uint16_t(nfs_port), uint16_t(mount_port));
  scrape.reset();  // no scrape while the transport goes
  if (uint32_t cut = tp->stop()) {
    // Workers are stuck in the kernel (a file system that does not answer):
    // nothing can wait for them, so the process ends around them.
    spdlog::warn("{}\n{}", tp->describe(), format_stats(srv));
    spdlog::warn(
        "stopped after the grace period of {} s: {} request(s) still running in the file "
        "system were cut short",
        grace, cut);
    spdlog::shutdown();
    std::fflush(nullptr);
    _exit(0);
  }
  spdlog::info("{}\n{}", tp->describe(), format_stats(srv));
  tp.reset();
  if (kcont_needed) kcont_stop();
  spdlog::info("stopped");
  return 0;
}

// Nothing the program does should throw past its own handling (CLI11 reports
// bad options itself); should a library throw anyway (std::bad_alloc, a
// filesystem error), say so and exit 1 instead of std::terminate's abort.
int main(int argc, char **argv) {
  try {
    return run_server(argc, argv);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "kcont-nfsd: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "kcont-nfsd: unexpected exception\n");
  }
  return 1;
}
