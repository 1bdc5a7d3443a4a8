// SPDX-License-Identifier: BSD-2-Clause
// conn_limits.cc -- the per-address connection count (see conn_limits.h).
#include "conn_limits.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "kcont/nfsd/transport.h"
#include "kcont/spinlock.h"

namespace kc::nfs {

namespace {

// The address as 16 bytes: IPv6 as is, IPv4 (and IPv4-mapped IPv6) as
// ::ffff:a.b.c.d, anything else as zero.
void peer_key(const sockaddr_storage &a, uint64_t *k0, uint64_t *k1) {
  uint8_t b[16] = {};
  if (a.ss_family == AF_INET) {
    b[10] = b[11] = 0xff;
    std::memcpy(b + 12, &reinterpret_cast<const sockaddr_in &>(a).sin_addr, 4);
  } else if (a.ss_family == AF_INET6) {
    std::memcpy(b, &reinterpret_cast<const sockaddr_in6 &>(a).sin6_addr, 16);
  }
  std::memcpy(k0, b, 8);
  std::memcpy(k1, b + 8, 8);
}

uint64_t mix(uint64_t k0, uint64_t k1) {
  uint64_t h = (k0 ^ (k1 * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 31);
}

}  // namespace

peer_table::peer_table(uint32_t max_conns, uint32_t per_peer) : per_peer_(per_peer) {
  size_t n = 16;
  while (n < 2 * size_t(max_conns) + 16) n *= 2;  // load factor <= 1/2
  table_.resize(n);
}

// The slot of (k0, k1), or the empty slot where it would go.  Lock held.
size_t peer_table::find(uint64_t k0, uint64_t k1, bool *found) const {
  size_t mask = table_.size() - 1;
  for (size_t i = mix(k0, k1) & mask;; i = (i + 1) & mask) {
    const entry &e = table_[i];
    if (e.count == 0 || (e.k0 == k0 && e.k1 == k1)) {
      *found = e.count != 0;
      return i;
    }
  }
}

bool same_peer(const sockaddr_storage &a, const sockaddr_storage &b) {
  uint64_t a0, a1, b0, b1;
  peer_key(a, &a0, &a1);
  peer_key(b, &b0, &b1);
  return a0 == b0 && a1 == b1;
}

bool peer_table::admit(const sockaddr_storage &addr, bool replacing) {
  uint64_t k0, k1;
  peer_key(addr, &k0, &k1);
  spinlock g(lock_);
  bool found;
  entry &e = table_[find(k0, k1, &found)];
  if (found) {
    if (per_peer_ != 0 && e.count >= per_peer_ && !replacing) return false;
    e.count++;
    return true;
  }
  e.k0 = k0;
  e.k1 = k1;
  e.count = 1;
  return true;
}

void peer_table::release(const sockaddr_storage &addr) {
  uint64_t k0, k1;
  peer_key(addr, &k0, &k1);
  spinlock g(lock_);
  bool found;
  size_t i = find(k0, k1, &found);
  if (!found || --table_[i].count > 0) return;
  // Backward-shift deletion keeps every probe sequence unbroken.
  size_t mask = table_.size() - 1;
  for (size_t j = (i + 1) & mask; table_[j].count != 0; j = (j + 1) & mask) {
    size_t home = mix(table_[j].k0, table_[j].k1) & mask;
    // Move j into the hole i when its home is not in (i, j] (cyclically).
    bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (!between) {
      table_[i] = table_[j];
      table_[j].count = 0;
      i = j;
    }
  }
}

uint32_t peer_table::count(const sockaddr_storage &addr) {
  uint64_t k0, k1;
  peer_key(addr, &k0, &k1);
  spinlock g(lock_);
  bool found;
  size_t i = find(k0, k1, &found);
  return found ? table_[i].count : 0;
}

std::string conn_counters::describe() const {
  auto n = [](const auto &a) { return std::to_string(a.load(std::memory_order_relaxed)); };
  uint32_t nfs = open[PORT_NFS].load(std::memory_order_relaxed);
  uint32_t mnt = open[PORT_MOUNT].load(std::memory_order_relaxed);
  return std::to_string(nfs + mnt) + " connections (nfs " + std::to_string(nfs) + ", mount " +
         std::to_string(mnt) + "); accepted " + n(accepted) + ", refused " + n(refused_full) +
         " full + " + n(refused_peer) + " per address + " + n(refused_memory) +
         " memory, evicted " + n(evicted) + ", closed " + n(closed_idle) + " idle + " +
         n(closed_stalled) + " stalled";
}

void fill_transport_stats(const conn_counters &c, const memory_budget &m, transport_stats *out) {
  auto ld = [](const auto &a) { return a.load(std::memory_order_relaxed); };
  out->open_nfs = ld(c.open[PORT_NFS]);
  out->open_mount = ld(c.open[PORT_MOUNT]);
  out->accepted = ld(c.accepted);
  out->refused_full = ld(c.refused_full);
  out->refused_peer = ld(c.refused_peer);
  out->refused_memory = ld(c.refused_memory);
  out->evicted = ld(c.evicted);
  out->closed_idle = ld(c.closed_idle);
  out->closed_stalled = ld(c.closed_stalled);
  out->memory_used = m.used();
  out->memory_limit = m.limit();
  out->memory_peak = m.peak();
  out->memory_waits = m.waits();
  out->replies_limited = m.limited_replies();
}

admission conn_gate::admit(const sockaddr_storage &addr) {
  if (!peers_.admit(addr)) return admission::at_share;
  return reserve(addr) ? admission::admitted : admission::no_memory;
}

bool conn_gate::admit_replacing(const sockaddr_storage &addr) {
  peers_.admit(addr, true);
  return reserve(addr);
}

// The memory of a connection just counted for addr; on failure it is
// uncounted and the refusal counted.
bool conn_gate::reserve(const sockaddr_storage &addr) {
  if (mem_.reserve(reserve_)) return true;
  peers_.release(addr);
  counters_.refused_memory.fetch_add(1, std::memory_order_relaxed);
  mem_.count_refused();
  return false;
}

void conn_gate::refuse_at_share(const sockaddr_storage &addr) {
  counters_.refused_peer.fetch_add(1, std::memory_order_relaxed);
  log_refusal(addr);
}

bool eviction_pick::offer(const sockaddr_storage &peer, uint64_t idle_for) {
  uint32_t held = 0;
  if (for_peer_) {
    if (!same_peer(peer, *for_peer_)) return false;
  } else {
    held = gate_.count(peer);
  }
  if (found_ && (held < held_ || (held == held_ && idle_for <= idle_for_))) return false;
  found_ = true;
  held_ = held;
  idle_for_ = idle_for;
  return true;
}

void conn_gate::log_refusal(const sockaddr_storage &addr) {
  using namespace std::chrono;
  const int64_t now = duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
  int64_t last = last_log_ms_.load(std::memory_order_relaxed);
  if (now - last < 1000 || !last_log_ms_.compare_exchange_strong(last, now)) {
    unlogged_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  char host[INET6_ADDRSTRLEN] = "?";
  if (addr.ss_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in &>(addr).sin_addr, host, sizeof host);
  else if (addr.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6 &>(addr).sin6_addr, host, sizeof host);
  std::fprintf(stderr,
               "kcont-nfsd: refused a connection from %s: it holds %u connections, "
               "none of them idle (--max-conns-per-addr; %llu more refused since the last "
               "line)\n",
               host, per_peer_, static_cast<unsigned long long>(unlogged_.exchange(0)));
}

void conn_gate::release(const sockaddr_storage &addr) {
  peers_.release(addr);
  mem_.unreserve(reserve_);
}

}  // namespace kc::nfs
