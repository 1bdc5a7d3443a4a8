// SPDX-License-Identifier: BSD-2-Clause
// listen.h -- listening sockets and their start-up error messages, shared
// by the two transports.  Thread context.
#pragma once

#include <sys/socket.h>

#include <string>

namespace kc::nfs {

// "NFS port 2049 on 127.0.0.1: Address already in use (another server?)".
std::string bind_error(const char *what, const sockaddr_storage &addr, int err);

// A bound, listening TCP socket (SO_REUSEADDR; SO_REUSEPORT if asked), or
// -1 with *err set by bind_error.  A port in use is retried for up to 3 s
// (a just-killed server's port frees asynchronously).
int listen_socket(const sockaddr_storage &addr, socklen_t len, bool reuseport, const char *what,
                  std::string *err);

}  // namespace kc::nfs
