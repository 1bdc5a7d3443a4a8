// SPDX-License-Identifier: BSD-2-Clause
// spinlock.h -- a tiny lock for critical sections of a few instructions.
//
// Test-and-test-and-set on one 32-bit word, spinning with the CPU's pause
// hint and yielding after 64 tries.  Use it where a sleeping mutex is not
// allowed (interrupt context) and the section only splices lists; never
// hold it while a continuation or callout function runs.  Any context.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace kc {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// RAII guard: locks `word` for its lifetime.
struct spinlock {
  std::atomic<uint32_t> &w;
  explicit spinlock(std::atomic<uint32_t> &word) : w(word) {
    for (;;) {
      if (w.exchange(1, std::memory_order_acquire) == 0) return;
      int spins = 0;
      while (w.load(std::memory_order_relaxed) != 0) {
        if (++spins < 64)
          cpu_relax();
        else
          std::this_thread::yield();
      }
    }
  }
  ~spinlock() { w.store(0, std::memory_order_release); }
  spinlock(const spinlock &) = delete;
  spinlock &operator=(const spinlock &) = delete;
};

}  // namespace kc
