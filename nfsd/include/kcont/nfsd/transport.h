// SPDX-License-Identifier: BSD-2-Clause
// transport.h -- how RPC records reach the server: the kcont model and the
// classic threads model, behind one small interface.
//
// Both listen on two TCP addresses (NFS and MOUNT; either port serves both
// programs), give each connection a fixed number of request slots (its
// bounded memory: slots x (max_record + reply buffer)), keep what all slots
// touch under the max_memory budget (src/memory_budget.h), stop reading from
// a connection whose slots are all busy (back-pressure), never let a worker
// wait for a client (a reply that does not fit the socket waits in its
// slot), enforce the connection limits and timeouts of conn_limits.h, and
// on stop() close the listeners, let in-flight requests finish (up to a
// grace period), then close every connection.
//
// Rules: start() and stop() from the main thread; the kcont model needs
// kcont running (start() does not start it: the caller owns the system).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>

#include "kcont/nfsd/server.h"

namespace kc::nfs {

struct transport_config {
  sockaddr_storage nfs_addr{};
  sockaddr_storage mount_addr{};
  socklen_t addr_len = 0;
  uint32_t slots = 16;                 // request slots per connection
  uint32_t max_conns = 256;            // NFS-port connections (kcont model: divided over CPUs)
  uint32_t max_mount_conns = 64;       // MOUNT-port connections, a table of their own
  uint32_t max_conns_per_peer = 128;   // per client address, both ports; 0: no limit
  uint32_t idle_timeout_ms = 360000;   // close a connection idle this long; 0: never
  uint32_t record_timeout_ms = 30000;  // reset one whose request (or reply) takes longer
  uint32_t threads = 8;                // threads model: worker threads
  uint32_t vfs_lanes_per_cpu = 0;      // kcont model: vfs_config::lanes_per_cpu (0: its default)
  uint32_t grace_ms = 5000;            // stop(): how long in-flight requests may take
  uint64_t max_memory = 0;             // request/reply buffer budget; 0: 1 GiB or RAM/4
};

// What the connection limits and the memory budget did (conn_limits.h,
// memory_budget.h), for exporters.
struct transport_stats {
  uint32_t open_nfs = 0, open_mount = 0;  // connections now
  uint64_t accepted = 0, refused_full = 0, refused_peer = 0, refused_memory = 0;
  uint64_t evicted = 0, closed_idle = 0, closed_stalled = 0;
  uint64_t memory_used = 0, memory_limit = 0, memory_peak = 0;  // bytes
  uint64_t memory_waits = 0, replies_limited = 0;
};

class transport {
 public:
  virtual ~transport() = default;
  // Binds and starts serving.  Returns 0 or an errno with *err saying what
  // failed (for example "NFS port 2049: Address already in use").
  virtual int start(std::string *err) = 0;
  // Stops as described above.  Returns the number of requests still
  // running when the grace period ended (0: a clean stop).  When it is not
  // 0 those requests are abandoned, not waited for: their memory stays
  // allocated and the caller must end the process (_exit) instead of
  // destroying the transport or stopping kcont.  Idempotent (later calls
  // return the same).
  virtual uint32_t stop() = 0;
  // One line about connections and slots, for the periodic stats.
  virtual std::string describe() = 0;
  // The counters behind describe().  Any context; never allocates.
  virtual transport_stats stats() = 0;
};

std::unique_ptr<transport> make_kcont_transport(server &srv, const transport_config &cfg);
// Registers the kcont levels whose thread-kind workers the VFS uses for
// thread context ("vfs0".."vfs15").  Before kcont_start.
int register_nfsd_levels();
std::unique_ptr<transport> make_threads_transport(server &srv, const transport_config &cfg);

// Bytes of reply buffer per request slot in each model.  kcont sends READ
// data from the buffer cache or the file, so its replies are small: the
// reply buffer is the part of the slot a connection keeps.
inline constexpr size_t KCONT_REPLY_BUFFER = size_t{64} * 1024;
inline constexpr size_t THREADS_REPLY_BUFFER = MAX_IO + 64 * 1024;

}  // namespace kc::nfs
