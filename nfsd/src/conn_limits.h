// SPDX-License-Identifier: BSD-2-Clause
// conn_limits.h -- what both transports enforce on their connections, so
// that no client can lock the others out: a table per port, a limit per
// client address, an idle timeout, a record timeout, and the oldest idle
// connection evicted before a new client is refused.
//
// Model.  The NFS port and the MOUNT port have their own connection tables
// (transport_config max_conns and max_mount_conns), so a flood on one does
// not take the other's places.  A client address (IPv4, or IPv6; an
// IPv4-mapped IPv6 address counts as the IPv4 one) may hold at most
// max_conns_per_peer connections over both ports (default 128: nconnect=16
// on eight mounts): peer_table counts them.  A connection past the limit
// makes room within its own address: the longest idle of that address's
// connections is closed, and only when none of them is idle is the new one
// closed as soon as it is accepted, with a log line naming the address (at
// most one a second, with the count of those not logged).  When a port's
// table is full, an idle connection (no request being read, none in
// flight, nothing to send) is closed to make room, as knfsd does: one of
// the address that holds the most connections, the longest idle of those
// -- so a flood from one address evicts its own connections rather than a
// client's that has just connected; only when none is idle is the new one
// refused.  Both choices are eviction_pick's, for both transports.  A connection idle for
// idle_timeout_ms is closed (knfsd: about 6 minutes); one whose request record is not complete
// record_timeout_ms after its first byte (slowloris), or whose reply has not been sent
// record_timeout_ms after it was ready (a client that does not read), is
// reset.  Each transport applies these rules in its own way (timer sweep on
// each kcont CPU; poll timeouts in the threads model's readers) and counts
// what it did in conn_counters.
//
// Locking: peer_table has a spinlock held for a probe of a small open-
// addressing table (never while anything else is held or called);
// conn_counters are relaxed atomics.  Any context.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "memory_budget.h"

namespace kc::nfs {

enum conn_port : uint8_t { PORT_NFS = 0, PORT_MOUNT = 1 };

// Connections per client address.
class peer_table {
 public:
  // Room for `max_conns` connections at once (the sum of both tables and
  // the ones being handed over); per_peer == 0 means no limit.
  peer_table(uint32_t max_conns, uint32_t per_peer);

  // Counts one more connection from addr.  False (nothing counted) if addr
  // already holds per_peer connections, unless `replacing` (one of addr's
  // own connections was closed to make room and its release may not have
  // come yet).  Any context.
  bool admit(const sockaddr_storage &addr, bool replacing = false);
  // Uncounts one admitted connection of addr.  Any context.
  void release(const sockaddr_storage &addr);
  // Connections counted for addr (for tests and the stats).
  uint32_t count(const sockaddr_storage &addr);

 private:
  struct entry {
    uint64_t k0 = 0, k1 = 0;
    uint32_t count = 0;  // 0: empty slot
  };
  size_t find(uint64_t k0, uint64_t k1, bool *found) const;
  std::vector<entry> table_;
  uint32_t per_peer_;
  std::atomic<uint32_t> lock_{0};
};

// What the limits did, for describe() and the tests.
struct conn_counters {
  std::atomic<uint32_t> open[2] = {};  // by conn_port
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> refused_full{0};    // table full, nothing idle to evict
  std::atomic<uint64_t> refused_peer{0};    // the address held its share
  std::atomic<uint64_t> refused_memory{0};  // its reservation did not fit the budget
  std::atomic<uint64_t> evicted{0};         // idle, closed to make room
  std::atomic<uint64_t> closed_idle{0};     // idle_timeout_ms passed
  std::atomic<uint64_t> closed_stalled{0};  // record_timeout_ms passed

  // "3 connections (nfs 2, mount 1); accepted 9, refused 0 full + 4 per
  // address + 0 memory, evicted 1, closed 2 idle + 1 stalled".
  std::string describe() const;
};

struct transport_stats;
// Fills *out from the counters and the budget.  Any context.
void fill_transport_stats(const conn_counters &c, const memory_budget &m, transport_stats *out);

// The same address: IPv4-mapped IPv6 equal to IPv4, ports ignored.
bool same_peer(const sockaddr_storage &a, const sockaddr_storage &b);

enum class admission : uint8_t {
  admitted,   // counted, memory reserved
  at_share,   // nothing counted: the address holds its share (see conn_gate)
  no_memory,  // nothing counted, refusal counted: the reservation did not fit
};

// Admission of an accepted connection: its address's count, then its
// reservation in the memory budget (memory_budget.h).  Both transports
// count and uncount every connection through one conn_gate.  Any context.
class conn_gate {
 public:
  // max_conns, per_peer: as for peer_table; reserve: bytes each
  // connection reserves in mem.
  conn_gate(uint32_t max_conns, uint32_t per_peer, memory_budget &mem, size_t reserve,
            conn_counters &counters)
      : peers_(max_conns, per_peer),
        mem_(mem),
        reserve_(reserve),
        counters_(counters),
        per_peer_(per_peer) {}

  // Counts a new connection from addr (admitted), or says why not.  At
  // at_share the transport looks for an idle connection of addr
  // (eviction_pick with for_peer = addr): if it closes one it calls
  // admit_replacing, else refuse_at_share.
  admission admit(const sockaddr_storage &addr);
  // Counts a connection of addr that takes the place of one of addr's own,
  // just closed (its release may still be on its way): the share is not
  // checked, the memory is.  False (refusal counted) if the reservation
  // does not fit.
  bool admit_replacing(const sockaddr_storage &addr);
  // Counts and logs (rate-limited) the refusal of a connection from addr,
  // at its share with none of its connections idle.
  void refuse_at_share(const sockaddr_storage &addr);
  // Uncounts one admitted connection.
  void release(const sockaddr_storage &addr);
  uint32_t count(const sockaddr_storage &addr) { return peers_.count(addr); }

 private:
  void log_refusal(const sockaddr_storage &addr);
  bool reserve(const sockaddr_storage &addr);

  peer_table peers_;
  memory_budget &mem_;
  size_t reserve_;
  conn_counters &counters_;
  uint32_t per_peer_;
  std::atomic<int64_t> last_log_ms_{0};
  std::atomic<uint64_t> unlogged_{0};
};

// Which idle connection to close to make room -- the one policy of both
// transports.  Making room in a full table (for_peer == nullptr): an idle
// connection of the address that holds the most connections, the longest
// idle of those.  Making room within an address's share (for_peer set):
// the longest idle connection of that address, on either port.  The
// transport offers every connection that is idle (quiet, not already
// closing); the last offer that returned true is the pick.  Takes the
// per-address table's lock once per offer; any context.
class eviction_pick {
 public:
  eviction_pick(conn_gate &gate, const sockaddr_storage *for_peer)
      : gate_(gate), for_peer_(for_peer) {}
  // Offers an idle connection of `peer`, idle for `idle_for` (any unit,
  // the same for every offer).  True if it is the best so far.
  bool offer(const sockaddr_storage &peer, uint64_t idle_for);
  bool found() const { return found_; }

 private:
  conn_gate &gate_;
  const sockaddr_storage *for_peer_;
  bool found_ = false;
  uint32_t held_ = 0;
  uint64_t idle_for_ = 0;
};

}  // namespace kc::nfs
