// SPDX-License-Identifier: BSD-2-Clause
// memory_budget.cc -- the --max-memory budget (see memory_budget.h).
#include "memory_budget.h"

#include <unistd.h>

#include <algorithm>

namespace kc::nfs {

uint64_t default_max_memory() {
  uint64_t gib = uint64_t(1) << 30;
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return gib;
  return std::min(gib, uint64_t(pages) * uint64_t(page) / 4);
}

namespace {

constexpr uint64_t PAGE_SHIFT = 12;
uint64_t pages(uint64_t bytes) { return (bytes + (uint64_t(1) << PAGE_SHIFT) - 1) >> PAGE_SHIFT; }
uint64_t big_pages(uint64_t word) { return word & 0xffffffffu; }
uint64_t reserved_pages(uint64_t word) { return word >> 32; }

}  // namespace

bool memory_budget::configure(uint64_t limit, size_t reserve, size_t max_record,
                              uint32_t table_conns, std::string *err) {
  if (!limit) limit = default_max_memory();
  limit = std::min<uint64_t>(limit, uint64_t(0xffffffffu) << PAGE_SHIFT);
  uint64_t largest = beyond_keep(max_record);
  uint64_t least = reserve + largest;
  if (limit < least) {
    *err = "--max-memory " + std::to_string(limit >> 10) + " KiB cannot hold one connection (" +
           std::to_string(reserve >> 10) + " KiB for its slots) and one largest request (" +
           std::to_string(largest >> 10) + " KiB more): give at least " +
           std::to_string((least + (1 << 20) - 1) >> 20) + " MiB, or fewer --slots";
    return false;
  }
  limit_pages_ = limit >> PAGE_SHIFT;
  uint64_t big = std::max(largest, limit / 4);
  uint64_t reserved =
      std::max<uint64_t>(reserve, std::min<uint64_t>(limit / 2, uint64_t(table_conns) * reserve));
  if (big + reserved > limit) big = limit - reserved;  // both still >= one of each
  guaranteed_[0] = pages(big);
  guaranteed_[1] = reserved >> PAGE_SHIFT;
  return true;
}

bool memory_budget::take(size_t n, share which) {
  uint64_t p = pages(n), cur = used_.load(std::memory_order_relaxed), next;
  uint64_t other_guarantee = guaranteed_[which == BIG ? 1 : 0];
  do {
    uint64_t mine = which == BIG ? big_pages(cur) : reserved_pages(cur);
    uint64_t other = which == BIG ? reserved_pages(cur) : big_pages(cur);
    // What the other share uses, or is guaranteed if it uses less.
    if (limit_pages_ && mine + p + std::max(other, other_guarantee) > limit_pages_) return false;
    next = cur + (p << which);
  } while (!used_.compare_exchange_weak(cur, next, std::memory_order_seq_cst));
  uint64_t total = (big_pages(next) + reserved_pages(next)) << PAGE_SHIFT;
  uint64_t pk = peak_.load(std::memory_order_relaxed);
  while (total > pk && !peak_.compare_exchange_weak(pk, total, std::memory_order_relaxed)) {
  }
  return true;
}

void memory_budget::give(size_t n, share which) {
  if (n == 0) return;
  used_.fetch_sub(pages(n) << which, std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) > 0 && wake_) wake_();
}

uint64_t memory_budget::used() const {
  uint64_t w = used_.load(std::memory_order_relaxed);
  return (big_pages(w) + reserved_pages(w)) << PAGE_SHIFT;
}

bool memory_budget::wait_for(size_t n, bool *waiting) {
  bool first = !*waiting;
  if (first) {
    if (charge(n)) return true;
    *waiting = true;
    waiters_.fetch_add(1, std::memory_order_seq_cst);
  }
  // The last try, after announcing the wait: a release that came before
  // the announcement is seen here, one that comes after sees the waiter.
  if (!charge(n)) {
    if (first) waits_.fetch_add(1, std::memory_order_relaxed);  // a wait begins
    return false;
  }
  stop_waiting(waiting);
  return true;
}

void memory_budget::stop_waiting(bool *waiting) {
  if (!*waiting) return;
  *waiting = false;
  waiters_.fetch_sub(1, std::memory_order_seq_cst);
}

std::string memory_budget::describe() const {
  auto mib = [](uint64_t b) { return std::to_string((b + (1 << 20) - 1) >> 20); };  // up
  return "memory " + mib(used()) + " of " +
         (limit_pages_ ? mib(limit()) : std::string("unlimited")) + " MiB (peak " + mib(peak()) +
         "), " + std::to_string(waits()) + " waited, " + std::to_string(refused()) +
         " connections refused, " + std::to_string(limited_replies()) + " replies limited";
}

}  // namespace kc::nfs
