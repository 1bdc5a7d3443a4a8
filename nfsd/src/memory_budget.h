// SPDX-License-Identifier: BSD-2-Clause
// memory_budget.h -- the --max-memory budget: how much request and reply
// buffer memory all connections of a transport may hold at once.
//
// Model.  Each request slot has a request buffer (up to max_record bytes)
// and a reply buffer, mapped with MAP_NORESERVE: a page costs memory only
// once it is touched.  The budget counts what may be touched, and every
// charge is taken before the memory is used, so the count never exceeds
// the limit:
//
//   - a connection reserves SLOT_KEEP bytes of request and of reply buffer
//     per slot (2 MiB with 16 slots) when it is accepted; a connection
//     whose reservation does not fit is refused.  The reservation goes back
//     when the connection closes.
//   - a request record longer than SLOT_KEEP charges its pages beyond
//     SLOT_KEEP as soon as its record header announces them, before any of
//     those bytes is read (a slot already charged for as much charges
//     nothing more).  When the charge does not fit, the connection stops
//     reading and waits: its socket is left unread, so TCP pushes back on
//     the client; it resumes when memory is given back, and is reset if
//     the record is still incomplete after the record timeout.
//   - a reply that may grow beyond SLOT_KEEP (the threads model builds READ
//     data in the reply buffer) charges before it is built; when that does
//     not fit, the reply is built in SLOT_KEEP bytes: a shorter READ or
//     fewer directory entries, answers a client continues from.
//   - what a slot charged beyond SLOT_KEEP goes back with its pages
//     (MADV_DONTNEED): when its connection is next found quiet, at once
//     when the slot is released while somebody waits for memory, and when
//     the connection closes.
//
// Shares.  Reservations and large requests share the limit, but each is
// guaranteed a part the other cannot take: large requests at least a
// quarter of the limit (and never less than one largest request), so
// connections holding their reservations cannot starve every request
// into waiting; reservations half of it, or what the connection tables
// need if that is less, so a burst of large requests does not keep new
// clients out.
//
// Not counted: kernel socket buffers, the kcont socket pool's receive
// buffers (fixed at start), the VFS buffer cache (its own bound) and the
// server's tables.
//
// Waiting.  A connection that cannot charge announces itself as a waiter
// (wait_for) before its last try, and uncharge() looks for waiters after
// lowering the count; both are sequentially consistent, so either the last
// try succeeds or the release sees the waiter and calls the transport's
// wake-up hook: no wake-up is lost.  The hook may be called in any context
// that uncharges and must not block.
//
// Locking: none; both counts live in one word (4 KiB pages, 32 bits each)
// changed by compare-and-swap, the counters are relaxed atomics.  Any
// context.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace kc::nfs {

// Bytes of each slot's request and reply buffers a connection keeps (and
// reserves) for as long as it is open.
inline constexpr size_t SLOT_KEEP = size_t{64} * 1024;

// The default --max-memory: 1 GiB, or a quarter of the machine's memory if
// that is less.
uint64_t default_max_memory();

// Bytes beyond SLOT_KEEP that a buffer holding `len` bytes touches, in
// whole pages.
inline size_t beyond_keep(size_t len) {
  if (len <= SLOT_KEEP) return 0;
  return ((len + 4095) & ~size_t(4095)) - SLOT_KEEP;
}

class memory_budget {
 public:
  // Sets the limit (0: default_max_memory()) and the shares for
  // `table_conns` connections of `reserve` bytes and requests of up to
  // max_record bytes, and checks that the limit holds one reservation and
  // one largest request; false with *err naming the least that would.
  // Before the transport starts.
  bool configure(uint64_t limit, size_t reserve, size_t max_record, uint32_t table_conns,
                 std::string *err);
  uint64_t limit() const { return limit_pages_ << 12; }
  // The transport's wake-up hook (see Waiting above).  Before it starts.
  void set_wake(std::function<void()> fn) { wake_ = std::move(fn); }

  // Charges n bytes (rounded up to pages) for a large request or reply, if
  // they fit beside what reservations use or are guaranteed.  False:
  // nothing charged.
  bool charge(size_t n) { return take(n, BIG); }
  // Gives n charged bytes back; wakes waiters if there are any.
  void uncharge(size_t n) { give(n, BIG); }
  // A connection's reservation, the same way (see Shares).
  bool reserve(size_t n) { return take(n, RESERVED); }
  void unreserve(size_t n) { give(n, RESERVED); }

  // For a connection that must have n bytes before it reads on.  True:
  // charged (and *waiting cleared).  False: *waiting is set and the caller
  // stops until its wake-up hook runs, then calls again.  A caller that
  // gives up while waiting calls stop_waiting.
  bool wait_for(size_t n, bool *waiting);
  void stop_waiting(bool *waiting);
  // Somebody waits for memory: give back what is not in use now.
  bool pressed() const { return waiters_.load(std::memory_order_relaxed) > 0; }

  // A connection's reservation failed (counted here for the stats line).
  void count_refused() { refused_.fetch_add(1, std::memory_order_relaxed); }
  // A reply was built in SLOT_KEEP bytes for want of memory.
  void count_limited_reply() { limited_.fetch_add(1, std::memory_order_relaxed); }

  uint64_t used() const;
  uint64_t peak() const { return peak_.load(std::memory_order_relaxed); }
  uint64_t waits() const { return waits_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  uint64_t limited_replies() const { return limited_.load(std::memory_order_relaxed); }

  // "memory 18 of 1024 MiB (peak 301), 12 waited, 0 connections refused,
  // 0 replies limited".
  std::string describe() const;

 private:
  enum share { BIG = 0, RESERVED = 32 };  // bit offset of its page count
  bool take(size_t n, share which);
  void give(size_t n, share which);

  uint64_t limit_pages_ = 0;     // 0: no limit
  uint64_t guaranteed_[2] = {};  // pages: [0] large requests, [1] reservations
  std::function<void()> wake_;
  std::atomic<uint64_t> used_{0};  // reserved pages << 32 | large-request pages
  std::atomic<uint64_t> peak_{0};
  std::atomic<uint32_t> waiters_{0};
  std::atomic<uint64_t> waits_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> limited_{0};
};

}  // namespace kc::nfs
