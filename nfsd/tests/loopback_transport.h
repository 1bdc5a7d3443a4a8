// SPDX-License-Identifier: BSD-2-Clause
// loopback_transport.h -- a kcont transport on a free pair of loopback
// ports, for the tests (test_serve.cc) and the fuzzer (nfsd/fuzz), which
// carry records to it over TCP.
//
// Ports: below the ephemeral range, from `first` over `span` ports, spread
// by pid so that concurrent test processes rarely collide; the next pair
// when one is taken.  kcont must be running (kcont_start) before the call.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>

#include "kcont/nfsd/server.h"
#include "kcont/nfsd/transport.h"

namespace kc::nfs {

// Starts a kcont transport for srv with at most max_conns NFS connections;
// *nfs_at and *mount_at say where it listens.  nullptr and *err (the last
// bind's error) if no pair of `attempts` was free.  Thread context.
inline std::unique_ptr<transport> start_loopback_transport(server &srv, uint32_t max_conns,
                                                           uint16_t first, uint16_t span,
                                                           sockaddr_in *nfs_at,
                                                           sockaddr_in *mount_at, std::string *err,
                                                           int attempts = 50) {
  for (int attempt = 0; attempt < attempts; attempt++) {
    uint16_t port = uint16_t(first + (getpid() * 2 + attempt * 2) % span);
    transport_config tc;
    auto *a = reinterpret_cast<sockaddr_in *>(&tc.nfs_addr);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons(port);
    auto *m = reinterpret_cast<sockaddr_in *>(&tc.mount_addr);
    *m = *a;
    m->sin_port = htons(uint16_t(port + 1));
    tc.addr_len = sizeof(sockaddr_in);
    tc.max_conns = max_conns;
    auto t = make_kcont_transport(srv, tc);
    if (t->start(err) == 0) {
      *nfs_at = *a;
      *mount_at = *m;
      return t;
    }
  }
  return nullptr;
}

}  // namespace kc::nfs
