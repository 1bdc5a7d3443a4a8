// SPDX-License-Identifier: BSD-2-Clause
// error_text.h -- the text of an errno value, safe from any thread.
//
// std::strerror may format into a buffer shared by every thread (POSIX marks
// it MT-unsafe), and the libraries log errors from dispatcher, worker and
// caller threads at once.  error_text returns glibc's constant description of
// the value instead (strerrordesc_np: the same words strerror prints, never a
// shared buffer, never an allocation).  Any context, interrupt included.
#pragma once

#include <cstring>

namespace kc {

// The description of errno value `errnum` ("No such file or directory"), or
// "unknown error" for a value the C library does not know.  The pointer is to
// constant storage: it never changes and never needs freeing.
inline const char *error_text(int errnum) noexcept {
  const char *text = strerrordesc_np(errnum);
  return text != nullptr ? text : "unknown error";
}

}  // namespace kc
