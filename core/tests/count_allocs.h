// SPDX-License-Identifier: BSD-2-Clause
// count_allocs.h -- replaces the global allocation functions with counting
// versions.  Include it in exactly one file of a binary (it defines
// malloc, calloc, realloc, free and the global operator new/delete); read
// the count with allocations_so_far().  Used by kcont_alloc_tests and the
// benchmarks' allocs/op column.  Not for sanitizer builds (they own malloc).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

extern "C" {
void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void __libc_free(void *);
}

inline std::atomic<uint64_t> g_allocs{0};
inline uint64_t allocations_so_far() { return g_allocs.load(std::memory_order_relaxed); }

extern "C" void *malloc(size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(n);
}
extern "C" void *calloc(size_t a, size_t b) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(a, b);
}
extern "C" void *realloc(void *p, size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, n);
}
extern "C" void free(void *p) { __libc_free(p); }

void *operator new(size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void *p = __libc_malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void *operator new[](size_t n) { return operator new(n); }
void *operator new(size_t n, const std::nothrow_t &) noexcept {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(n ? n : 1);
}
void *operator new[](size_t n, const std::nothrow_t &t) noexcept { return operator new(n, t); }
void operator delete(void *p) noexcept { __libc_free(p); }
void operator delete[](void *p) noexcept { __libc_free(p); }
void operator delete(void *p, size_t) noexcept { __libc_free(p); }
void operator delete[](void *p, size_t) noexcept { __libc_free(p); }
