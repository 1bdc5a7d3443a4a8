// SPDX-License-Identifier: BSD-2-Clause
// assert.h -- KC_ASSERT: invariants checked in Debug and sanitizer builds.
//
// Model: NetBSD's KASSERT.  KC_ASSERT(cond, "invariant") states something
// the code relies on and that no input can make false -- only a bug in
// kcont or in its caller's use of the API.  Bad input from the network or a
// user is an error return, never an assertion.  A failed assertion prints
// the invariant, the expression, the file and the line on stderr and aborts
// (a core dump and the test's failure name it).
//
// On when NDEBUG is not defined (CMake's Debug builds, and the sanitizer
// builds, which are Debug builds); in Release (NDEBUG) the condition is
// not evaluated and no code is generated -- kc::asserts_on lets code that
// only feeds an assertion (a debug-only flag) vanish with it.  Any context:
// the failure path does not allocate.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace kc {

#ifdef NDEBUG
inline constexpr bool asserts_on = false;
#else
inline constexpr bool asserts_on = true;
#endif

namespace detail {
// Reports a violated invariant and aborts.  Never returns.
[[noreturn, gnu::cold, gnu::noinline]] inline void assert_failed(const char *invariant,
                                                                 const char *expr, const char *file,
                                                                 int line) noexcept {
  std::fprintf(stderr, "kcont: invariant violated: %s\n  (%s) is false at %s:%d\n", invariant, expr,
               file, line);
  std::abort();
}
}  // namespace detail

}  // namespace kc

#ifdef NDEBUG
#define KC_ASSERT(cond, invariant) ((void)sizeof(!(cond)))
#else
#define KC_ASSERT(cond, invariant)              \
  (__builtin_expect(static_cast<bool>(cond), 1) \
       ? (void)0                                \
       : ::kc::detail::assert_failed(invariant, #cond, __FILE__, __LINE__))
#endif
