// SPDX-License-Identifier: BSD-2-Clause
// bind.h -- typed binding over the raw fn(obj, env, status) form.
//
// kcont_bind<&T::method>(kc, self, target) makes kc call self->method(...)
// where method is `void (int status)` or `void (U *obj, int status)` for any
// object type U.  The adapter is a captureless function instantiated per
// method, so a typed continuation costs the same single indirect call as a
// hand-written trampoline; nobody casts void * at the call site.
// kcont_bind_fn<&f>(kc, env, target) does the same for a free function
// `void f(U *obj, E *env, int status)`.
#pragma once

#include "kcont/kcont.h"

namespace kc {
namespace detail {

template <class M>
struct bind_member;

template <class T>
struct bind_member<void (T::*)(int)> {
  using self = T;
  template <void (T::*M)(int)>
  static void call(void *, void *env, int status) {
    (static_cast<T *>(env)->*M)(status);
  }
};

template <class T, class U>
struct bind_member<void (T::*)(U *, int)> {
  using self = T;
  template <void (T::*M)(U *, int)>
  static void call(void *obj, void *env, int status) {
    (static_cast<T *>(env)->*M)(static_cast<U *>(obj), status);
  }
};

template <class F>
struct bind_free;

template <class U, class E>
struct bind_free<void (*)(U *, E *, int)> {
  using env = E;
  template <void (*F)(U *, E *, int)>
  static void call(void *obj, void *e, int status) {
    F(static_cast<U *>(obj), static_cast<E *>(e), status);
  }
};

}  // namespace detail

// Initialises kc to call self->*M.  Same contexts and errors as kcont_init.
template <auto M>
int kcont_bind(kcont *kc, typename detail::bind_member<decltype(M)>::self *self, target t) {
  using B = detail::bind_member<decltype(M)>;
  return kcont_init(kc, &B::template call<M>, self, t);
}

// Initialises kc to call F(obj, env, status) with typed obj and env.
template <auto F>
int kcont_bind_fn(kcont *kc, typename detail::bind_free<decltype(F)>::env *env, target t) {
  using B = detail::bind_free<decltype(F)>;
  return kcont_init(kc, &B::template call<F>, env, t);
}

}  // namespace kc
