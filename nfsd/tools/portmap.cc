// SPDX-License-Identifier: BSD-2-Clause
// portmap.cc -- see portmap.h.  One short-lived TCP connection per call,
// encoded with the server's own XDR and RPC helpers.
#include "portmap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kcont/error_text.h"
#include "kcont/nfsd/rpc.h"
#include "kcont/nfsd/server.h"

namespace kc::nfs {

namespace {

constexpr uint32_t PMAP_PROG = 100000, PMAP_VERS = 2, PMAPPROC_SET = 1, PMAPPROC_UNSET = 2;

// Sends one portmapper call and returns its boolean result.
bool pmap_call(uint32_t proc, uint32_t prog, uint32_t vers, uint16_t port, std::string *err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = kc::error_text(errno);
    return false;
  }
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(111);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
    *err = std::string("cannot reach rpcbind on 127.0.0.1:111: ") + kc::error_text(errno);
    close(fd);
    return false;
  }
  uint8_t buf[256];
  xdr_out out(buf, sizeof buf);
  out.reserve();        // record mark
  out.u32(0x6b6e6673);  // xid
  out.u32(RPC_CALL);
  out.u32(2);
  out.u32(PMAP_PROG);
  out.u32(PMAP_VERS);
  out.u32(proc);
  out.u32(AUTH_NONE);
  out.u32(0);
  out.u32(AUTH_NONE);
  out.u32(0);
  out.u32(prog);
  out.u32(vers);
  out.u32(IPPROTO_TCP);
  out.u32(port);
  finish_record(out);
  bool ok = send(fd, buf, out.size(), MSG_NOSIGNAL) == ssize_t(out.size());
  size_t got = 0;
  while (ok && got < 32) {
    ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);
    if (n <= 0) break;
    got += size_t(n);
  }
  close(fd);
  // mark, xid, REPLY, MSG_ACCEPTED, verf flavour, verf length, SUCCESS, bool
  xdr_in in(buf, got);
  in.u32();
  in.u32();
  bool result = in.u32() == RPC_REPLY && in.u32() == MSG_ACCEPTED;
  in.u32();
  in.var(400);
  result = result && in.u32() == SUCCESS && in.u32() == 1 && in.ok();
  if (!result) *err = "rpcbind refused the registration (is another NFS server registered?)";
  return result;
}

}  // namespace

bool portmap_register(uint16_t nfs_port, uint16_t mount_port, std::string *err) {
  std::string ignore;
  pmap_call(PMAPPROC_UNSET, NFS_PROGRAM, NFS_V3, 0, &ignore);
  pmap_call(PMAPPROC_UNSET, MOUNT_PROGRAM, MOUNT_V3, 0, &ignore);
  return pmap_call(PMAPPROC_SET, NFS_PROGRAM, NFS_V3, nfs_port, err) &&
         pmap_call(PMAPPROC_SET, MOUNT_PROGRAM, MOUNT_V3, mount_port, err);
}

void portmap_unregister(uint16_t, uint16_t) {
  std::string ignore;
  pmap_call(PMAPPROC_UNSET, NFS_PROGRAM, NFS_V3, 0, &ignore);
  pmap_call(PMAPPROC_UNSET, MOUNT_PROGRAM, MOUNT_V3, 0, &ignore);
}

}  // namespace kc::nfs
