// SPDX-License-Identifier: BSD-2-Clause
// The callers the VFS tests use: root, a user (1000:1000), another user
// (1001:1001) and a member of the user's group (1002:1000).
#pragma once

#include "kcont/vfs.h"

namespace kcvfstest {

inline kc::vfs::vcred cred_of(uint32_t uid, uint32_t gid) {
  kc::vfs::vcred c;
  c.uid = uid;
  c.gid = gid;
  return c;
}
inline const kc::vfs::vcred ROOT = cred_of(0, 0);
inline const kc::vfs::vcred USER = cred_of(1000, 1000);
inline const kc::vfs::vcred OTHER = cred_of(1001, 1001);
inline const kc::vfs::vcred MEMBER = cred_of(1002, 1000);

}  // namespace kcvfstest
