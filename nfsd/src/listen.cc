// SPDX-License-Identifier: BSD-2-Clause
// listen.cc -- see listen.h.
#include "listen.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kcont/error_text.h"

namespace kc::nfs {

std::string bind_error(const char *what, const sockaddr_storage &addr, int err) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (addr.ss_family == AF_INET) {
    auto &a = reinterpret_cast<const sockaddr_in &>(addr);
    inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
    port = ntohs(a.sin_port);
  } else if (addr.ss_family == AF_INET6) {
    auto &a = reinterpret_cast<const sockaddr_in6 &>(addr);
    inet_ntop(AF_INET6, &a.sin6_addr, host, sizeof host);
    port = ntohs(a.sin6_port);
  }
  std::string msg = std::string(what) + " port " + std::to_string(port) + " on " + host + ": " +
                    kc::error_text(err);
  if (err == EADDRINUSE)
    msg += " (another server is using it; pick another with --nfs-port/--mount-port)";
  if (err == EACCES) msg += " (ports below 1024 need root)";
  return msg;
}

int listen_socket(const sockaddr_storage &addr, socklen_t len, bool reuseport, const char *what,
                  std::string *err) {
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = bind_error(what, addr, errno);
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  // A server killed a moment ago may still hold the port: its io_uring is
  // torn down asynchronously after the process dies, and a pending accept
  // keeps the listening socket open until then.  Retry for up to 3 s.
  for (int attempt = 0;; attempt++) {
    if (bind(fd, reinterpret_cast<const sockaddr *>(&addr), len) == 0 && listen(fd, 128) == 0)
      return fd;
    if (errno != EADDRINUSE || attempt >= 30) break;
    usleep(100 * 1000);
  }
  *err = bind_error(what, addr, errno);
  close(fd);
  return -1;
}

}  // namespace kc::nfs
