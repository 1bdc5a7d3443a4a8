// SPDX-License-Identifier: BSD-2-Clause
// alloc_guard.cc -- debug builds: no allocation in interrupt context.
//
// Linked into Debug builds only (see core/CMakeLists.txt).  It replaces the
// global operator new: any allocation on a dispatcher thread while a
// handler or continuation runs -- interrupt context -- aborts with a message
// naming the CPU and level, because everything a handler needs must be
// allocated at establish time.  It lives in its own archive member so that
// a program that replaces operator new itself (the allocation-counting
// tests) simply does not pull it in.
#include <cstdio>
#include <cstdlib>
#include <new>

#include "internal.h"

namespace {
[[noreturn]] void alloc_in_interrupt() {
  auto *ex = kc::detail::tl_exec;
  std::fprintf(stderr,
               "kcont: allocation in interrupt context (cpu %d, level %s): "
               "continuations and buffers must be allocated at establish time\n",
               ex && ex->c ? ex->c->id : -1,
               kc::kcont_level_name(ex ? ex->cur_level : kc::level{}));
  std::abort();
}
inline void check_alloc() {
  auto *ex = kc::detail::tl_exec;
  if (ex && ex->dispatcher && ex->in_context) alloc_in_interrupt();
}
}  // namespace

void *operator new(std::size_t n) {
  check_alloc();
  if (void *p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void *operator new[](std::size_t n) {
  check_alloc();
  if (void *p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void *operator new(std::size_t n, const std::nothrow_t &) noexcept {
  check_alloc();
  return std::malloc(n ? n : 1);
}
void *operator new[](std::size_t n, const std::nothrow_t &) noexcept {
  check_alloc();
  return std::malloc(n ? n : 1);
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete[](void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }
void operator delete[](void *p, std::size_t) noexcept { std::free(p); }
