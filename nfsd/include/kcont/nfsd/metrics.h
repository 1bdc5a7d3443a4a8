// SPDX-License-Identifier: BSD-2-Clause
// metrics.h -- kcont-nfsd's counters in the Prometheus text exposition
// format (version 0.0.4), served over HTTP on kcont sockets (sock(9)).
//
// Model.  metrics_render writes every counter -- per NFS and MOUNT
// procedure (calls, errors, calls completed without a thread, a latency
// histogram), NFS errors by status, bytes read and written, the transport's
// connections and memory budget, each export's handle cache and thread
// context, and the core's counters per CPU, level and kind (deferred, run,
// direct, coalesced, cancelled, queue depth, a dispatch latency histogram)
// and per CPU (loops, sleeps, doorbells) -- into a caller's buffer with
// snprintf: no allocation, no lock held across it, nothing stopped.
//
// The server (metrics_start) listens on one address from kcont CPU 0's
// dispatcher.  It takes at most `max_conns` scrapers at once (more are
// closed at accept); each sends one request (at most 4 KiB of headers),
// gets one response and is closed.  `GET /metrics` renders into the
// connection's buffer, allocated at start; `GET /` says where the metrics
// are; anything else gets 404 or 405.  A scraper that has not sent its
// request, or not taken its response, `timeout_ms` after it connected is
// reset, so slow or hostile scrapers cannot hold a connection or a buffer.
//
// Locking: none of its own; everything of the server runs on CPU 0 at
// {softnet, interrupt}.  The counters it reads are relaxed atomics.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kcont/nfsd/server.h"
#include "kcont/nfsd/transport.h"

namespace kc::nfs {

// Writes the exposition text into buf (cap bytes).  Returns its length, or
// 0 if it did not fit.  tp may be null (no transport counters).  Any
// context; never allocates or blocks.
size_t metrics_render(server &srv, transport *tp, char *buf, size_t cap);

struct metrics_config {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  uint32_t max_conns = 4;      // scrapers at once
  uint32_t timeout_ms = 5000;  // request in and response out within this
  size_t buffer = 2u << 20;    // bytes of response buffer per scraper
};

class metrics_server;

// Starts serving on cfg.addr.  kcont must be running (CPU 0 serves).
// Returns nullptr and a reason in *err (the address in use, kcont not
// running, ...).  Thread context.
std::unique_ptr<metrics_server> metrics_start(server &srv, transport *tp, const metrics_config &cfg,
                                              std::string *err);

// Stops serving: the listener and every connection are closed.  Thread
// context, before kcont stops.  The destructor does the same.
void metrics_stop(metrics_server *m);

// Scrapes served, and scrapers refused or reset (for tests).
struct metrics_server_stats {
  uint64_t served = 0, refused = 0, timed_out = 0, bad_requests = 0;
};
metrics_server_stats metrics_get_stats(const metrics_server *m);

class metrics_server {
 public:
  ~metrics_server();
  struct impl;
  std::unique_ptr<impl> p;
};

}  // namespace kc::nfs
