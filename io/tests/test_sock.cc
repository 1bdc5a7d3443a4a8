// SPDX-License-Identifier: BSD-2-Clause
// Sockets with upcalls: echo over many connections, close from inside the
// socket's own upcall, peers resetting mid-transfer, a slow reader pushing
// back on the sender, and receive buffers running out without losing a
// byte.  Clients are plain blocking sockets on test threads (loopback only).
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "fixture.h"
#include "kcont/sock.h"
#include "stress.h"

using namespace kc;
using kctest::eventually;
using kctest::on_cpu;

namespace {

constexpr int kCpu = 1;

// A server: a listener plus preallocated connection records.
struct server;
struct conn {
  server *srv = nullptr;
  sock *s = nullptr;
  kcont kc;
  size_t sent = 0, to_send = 0;  // for the push test
  uint64_t rx = 0;
  bool bad = false;
  kcont done;  // sendfile completion; handoff mode: the adoption on CPU 0;
               // records mode: the sock_read_into completion
  int handoff_fd = -1;
  // records mode: a 4-byte big-endian length, then that many bytes
  uint8_t hdr[4] = {};
  size_t hdr_have = 0;
  std::vector<char> rec;
  bool reading_into = false;
  std::atomic<bool> stalled{false};  // reads nothing while set
  bool junk = false;                 // records mode: accepted stalled; discards its bytes
};

enum class mode { echo, echo_close_on_bye, push, sink, sendfile, handoff, splice, records, sendv };

struct server {
  sockpool *pool = nullptr;
  sock *listener = nullptr;
  kcont lkc;
  std::vector<conn> conns;
  std::atomic<size_t> next{0};
  mode m = mode::echo;
  size_t push_bytes = 0;
  int file_fd = -1;  // sendfile mode: what to send
  uint64_t file_off = 0;
  size_t file_len = 0;
  unsigned file_flags = 0;  // sock_sendfile flags
  std::atomic<int> sf_status{-1};
  std::atomic<int> closed{0}, errors{0}, accepted{0}, bad{0};
  std::atomic<bool> stall_first{false};  // conns[0] does not read while set
  std::atomic<bool> stall_new{false};    // connections accepted now are stalled
  std::atomic<int> reading_into{0};      // records mode: sock_read_into calls made
  std::atomic<int> rx_status{-1};        // records mode: the last completion's status
  // sendv mode: two requests of caller memory between buffered bytes and a
  // file; their completions' statuses in the order they ran.
  std::vector<char> vmem;
  iovec viov[4] = {};
  sock_sendv_req vreq[2];
  kcont vdone[2];
  std::atomic<int> vstatus[3] = {-1, -1, -1};  // [2]: the sendfile's
  std::atomic<int> vorder{0};
  std::atomic<int> vseen[3] = {-1, -1, -1};  // which completion ran 1st, 2nd, 3rd
  std::atomic<long> send_while_queued{-99};
  bool vabort = false;  // abort instead of the file: the requests never all go
  struct vctx_t {
    server *srv;
    int which;
  } vctx[3] = {{this, 0}, {this, 1}, {this, 2}};
  sockpool *adopt_pool = nullptr;  // handoff mode: CPU 0's pool
  std::atomic<int> upcalls_on_cpu0{0};
  uint16_t port = 0;
};

uint8_t pattern(uint64_t i) { return uint8_t(i % 251); }

void push_more(conn *c) {
  char chunk[8192];
  while (c->sent < c->to_send) {
    size_t n = std::min(sizeof chunk, c->to_send - c->sent);
    for (size_t i = 0; i < n; i++) chunk[i] = char(pattern(c->sent + i));
    long w = sock_send(c->s, chunk, n);
    if (w <= 0) return;  // full: wait for SOCK_WRITABLE
    c->sent += size_t(w);
  }
  if (c->sent == c->to_send) {
    sock_close(c->s);  // lingers until everything is sent
    c->srv->closed++;
  }
}

void sendfile_done(void *obj, void *env, int status) {
  auto *c = static_cast<conn *>(env);
  c->srv->sf_status = status;
  if (status != ECANCELED) {
    sock_close(static_cast<sock *>(obj));
    c->srv->closed++;
  }
}

// records mode: reads headers with sock_read and each record's body with
// sock_read_into, checks it and answers with the length.
void records_read(conn *c) {
  server *srv = c->srv;
  while (!c->reading_into && !c->stalled.load()) {
    long n = sock_read(c->s, c->hdr + c->hdr_have, 4 - c->hdr_have);
    if (n == -EAGAIN) return;
    if (n <= 0) {  // EOF or -EBUSY (must not happen) or error
      if (n != 0) srv->bad++;
      sock_close(c->s);
      srv->closed++;
      return;
    }
    c->hdr_have += size_t(n);
    if (c->hdr_have < 4) continue;
    uint32_t len = uint32_t(c->hdr[0]) << 24 | uint32_t(c->hdr[1]) << 16 |
                   uint32_t(c->hdr[2]) << 8 | c->hdr[3];
    c->hdr_have = 0;
    if (len > c->rec.capacity()) {  // reserved at start: no allocation here
      srv->bad++;
      sock_close(c->s);
      srv->closed++;
      return;
    }
    c->rec.assign(len, 0);
    c->reading_into = true;
    srv->reading_into++;
    if (sock_read_into(c->s, c->rec.data(), len, &c->done) != 0) srv->bad++;
  }
}

void records_done(void *obj, void *env, int status) {
  auto *c = static_cast<conn *>(env);
  server *srv = c->srv;
  c->reading_into = false;
  srv->rx_status = status;
  if (status == ECANCELED) return;  // closed: the socket is gone
  sock *s = static_cast<sock *>(obj);
  if (status != 0) {
    srv->errors++;
    sock_close(s);
    srv->closed++;
    return;
  }
  for (size_t i = 0; i < c->rec.size(); i++)
    if (uint8_t(c->rec[i]) != pattern(i)) {
      srv->bad++;
      break;
    }
  uint32_t len = uint32_t(c->rec.size());
  uint8_t ack[4] = {uint8_t(len >> 24), uint8_t(len >> 16), uint8_t(len >> 8), uint8_t(len)};
  if (sock_send(s, ack, 4) != 4) srv->bad++;
  records_read(c);  // bytes queued meanwhile got no upcall
}

void conn_upcall(void *obj, void *env, int) {
  auto *c = static_cast<conn *>(env);
  sock *s = static_cast<sock *>(obj);
  server *srv = c->srv;
  uint32_t ev = sock_events(s);
  if (srv->m == mode::push || srv->m == mode::sendfile) {
    if (ev & SOCK_ERROR) {
      srv->errors++;
      sock_close(s);
      srv->closed++;
      return;
    }
    if (ev & SOCK_WRITABLE) push_more(c);
    return;
  }
  if (srv->stall_first.load() && c == &srv->conns[0]) return;
  if (srv->m == mode::records && !c->junk) {
    if (ev & SOCK_ERROR) srv->errors++;
    records_read(c);
    return;
  }
  if (c->stalled.load()) return;
  if (srv->m == mode::handoff && kcont_current_cpu() == 0) srv->upcalls_on_cpu0++;
  if (srv->m == mode::splice) return;  // the splice moves the bytes
  char buf[4096];
  for (;;) {
    long n = sock_read(s, buf, sizeof buf);
    if (n > 0) {
      if (srv->m == mode::records) continue;  // junk: discarded
      if (srv->m == mode::sink) {
        for (long i = 0; i < n; i++)
          if (uint8_t(buf[i]) != pattern(c->rx + uint64_t(i))) c->bad = true;
        c->rx += uint64_t(n);
        continue;
      }
      if (srv->m == mode::echo_close_on_bye && n >= 3 && std::memcmp(buf, "bye", 3) == 0) {
        sock_close(s);  // from inside this socket's own upcall
        srv->closed++;
        return;
      }
      if (sock_send(s, buf, size_t(n)) != n) srv->bad++;
      continue;
    }
    if (n == 0 || (ev & SOCK_ERROR)) {  // EOF or error: close
      if (ev & SOCK_ERROR) srv->errors++;
      if (c->bad) srv->bad++;
      sock_close(s);
      srv->closed++;
    }
    return;
  }
}

// sendv mode: a request's (or the file's) completion.
void sendv_done(void *obj, void *env, int status) {
  auto *ctx = static_cast<server::vctx_t *>(env);
  server *srv = ctx->srv;
  int which = ctx->which;
  (void)obj;
  srv->vstatus[which] = status;
  int n = srv->vorder.fetch_add(1);
  if (n < 3) srv->vseen[n] = which;
  if (which == 2 && status != ECANCELED) {
    sock_close(srv->conns[0].s);
    srv->closed++;
  }
}

// splice mode: conns[0] -> conns[1] ended; pass EOF on and close both.
void splice_done(void *, void *env, int status) {
  auto *c = static_cast<conn *>(env);
  server *srv = c->srv;
  srv->sf_status = status;
  sock_shutdown(srv->conns[1].s);
  sock_close(srv->conns[0].s);
  sock_close(srv->conns[1].s);
  srv->closed += 2;
}

// handoff mode: runs on CPU 0 and makes the detached descriptor a socket
// of CPU 0's pool.
void adopt_on_cpu0(void *, void *env, int) {
  auto *c = static_cast<conn *>(env);
  int err = 0;
  c->s = sock_adopt(c->srv->adopt_pool, c->handoff_fd, &c->kc, &err);
  if (!c->s) {
    close(c->handoff_fd);
    c->srv->bad++;
  }
}

void listener_upcall(void *, void *env, int) {
  auto *srv = static_cast<server *>(env);
  sock_events(srv->listener);
  while (sock *s = sock_accept(srv->listener)) {
    size_t i = srv->next.fetch_add(1);
    if (i >= srv->conns.size()) {
      sock_close(s);
      continue;
    }
    conn *c = &srv->conns[i];
    c->srv = srv;
    if (srv->m == mode::handoff) {
      // Accepted here (CPU 1), served by CPU 0's pool.
      c->handoff_fd = sock_detach(s);
      if (c->handoff_fd < 0) {
        srv->bad++;
        sock_close(s);
        continue;
      }
      kcont_init(&c->kc, conn_upcall, c, target::cpu_private_to(LVL_SOFTNET, 0));
      kcont_init(&c->done, adopt_on_cpu0, c, target::at(LVL_SOFTNET, kind::interrupt, 0));
      kcont_defer(&c->done, nullptr, 0);
      srv->accepted++;
      continue;
    }
    c->s = s;
    c->stalled = srv->stall_new.load();
    c->junk = c->stalled.load();
    kcont_init(&c->kc, conn_upcall, c, target::cpu_private_to(LVL_SOFTNET, kCpu));
    if (srv->m == mode::records)
      kcont_init(&c->done, records_done, c, target::at(LVL_SOFTNET, kind::interrupt, kCpu));
    ASSERT_EQ(sock_start(s, &c->kc), 0);
    srv->accepted++;
    if (srv->m == mode::push) {
      c->to_send = srv->push_bytes;
      push_more(c);
    }
    if (srv->m == mode::splice && i == 1) {
      // Both ends are here: everything conns[0] receives goes to conns[1].
      kcont_init(&c->done, splice_done, c, target::at(LVL_SOFTNET, kind::interrupt, kCpu));
      ASSERT_EQ(sock_splice(srv->conns[0].s, s, &c->done), 0);
      EXPECT_EQ(sock_splice(srv->conns[0].s, s, nullptr), EBUSY);
      EXPECT_EQ(sock_send(s, "x", 1), 0);  // the splice owns the stream
    }
    if (srv->m == mode::sendv) {
      // "HDR\n" through the buffer, request 0 (three iovecs), request 1
      // (one), then the file: the client must see exactly that.
      ASSERT_EQ(sock_send(s, "HDR\n", 4), 4);
      char *m = srv->vmem.data();
      size_t third = (srv->vmem.size() - 1000) / 3;
      srv->viov[0] = {m, third};
      srv->viov[1] = {m + third, third};
      srv->viov[2] = {m + 2 * third, srv->vmem.size() - 1000 - 2 * third};
      srv->viov[3] = {m + srv->vmem.size() - 1000, 1000};
      srv->vreq[0].iov = &srv->viov[0];
      srv->vreq[0].iovcnt = 3;
      srv->vreq[1].iov = &srv->viov[3];
      srv->vreq[1].iovcnt = 1;
      for (int k = 0; k < 2; k++) ASSERT_EQ(sock_sendv(s, &srv->vreq[k], &srv->vdone[k]), 0);
      srv->send_while_queued = sock_send(s, "x", 1);  // must wait behind them
      if (srv->vabort) {
        sock_abort(s);
        srv->closed++;
      } else {
        kcont_init(&c->done, sendv_done, &srv->vctx[2],
                   target::at(LVL_SOFTNET, kind::interrupt, kCpu));
        ASSERT_EQ(sock_sendfile(s, srv->file_fd, 0, srv->file_len, &c->done), 0);
        EXPECT_EQ(sock_sendv(s, &srv->vreq[0], nullptr), EBUSY);  // the file owns the tail
      }
    }
    if (srv->m == mode::sendfile) {
      // A header through the send buffer, then the file, in that order.
      ASSERT_EQ(sock_send(s, "HDR\n", 4), 4);
      kcont_init(&c->done, sendfile_done, c, target::at(LVL_SOFTNET, kind::interrupt, kCpu));
      EXPECT_EQ(sock_sendfile(s, srv->file_fd, 0, 1, nullptr, 1u << 7), EINVAL);  // unknown flag
      ASSERT_EQ(
          sock_sendfile(s, srv->file_fd, srv->file_off, srv->file_len, &c->done, srv->file_flags),
          0);
      EXPECT_EQ(sock_sendfile(s, srv->file_fd, 0, 1, nullptr), EBUSY);
    }
  }
}

class SockTest : public kctest::KcontTest {
 protected:
  void start_server(mode m, size_t nconns, sockpool_config cfg = {}) {
    cfg.cpu = kCpu;
    if (cfg.nsocks < nconns + 2) cfg.nsocks = uint32_t(nconns + 2);
    std::string err;
    srv_.pool = sockpool_create(cfg, &err);
    ASSERT_NE(srv_.pool, nullptr) << err;
    srv_.m = m;
    srv_.conns = std::vector<conn>(nconns);
    if (m == mode::records)
      for (auto &c : srv_.conns) c.rec.reserve(4u << 20);
    kcont_init(&srv_.lkc, listener_upcall, &srv_, target::at(LVL_SOFTNET, kind::interrupt, kCpu));
    int e = -1;
    on_cpu(kCpu, [&] {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = 0;
      srv_.listener =
          sock_listen(srv_.pool, reinterpret_cast<sockaddr *>(&a), sizeof a, 128, &srv_.lkc, &e);
      if (srv_.listener) {
        sockaddr_in b{};
        socklen_t bl = sizeof b;
        getsockname(sock_fd(srv_.listener), reinterpret_cast<sockaddr *>(&b), &bl);
        srv_.port = ntohs(b.sin_port);
      }
    });
    ASSERT_NE(srv_.listener, nullptr) << strerror(e);
  }
  void TearDown() override {
    if (srv_.listener) on_cpu(kCpu, [&] { sock_close(srv_.listener); });
    if (srv_.pool) {
      // Every connection and the listener are torn down: nothing leaked.
      EXPECT_TRUE(eventually([&] { return sockpool_get_stats(srv_.pool).in_use == 0; }))
          << sockpool_get_stats(srv_.pool).in_use << " sockets still in use";
      kcont_drain(&srv_.lkc);
      for (auto &c : srv_.conns) {
        kcont_drain(&c.kc);
        kcont_drain(&c.done);
      }
      EXPECT_EQ(sockpool_destroy(srv_.pool), 0);
    }
    KcontTest::TearDown();
  }
  // A connected client; rcvbuf > 0 sets its SO_RCVBUF first (a small one
  // makes the server's socket fill).
  int client(int rcvbuf = 0) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(srv_.port);
    if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
      close(fd);
      return -1;
    }
    timeval tv{30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
  }
  static bool read_exact(int fd, char *p, size_t n) {
    while (n) {
      ssize_t r = recv(fd, p, n, 0);
      if (r <= 0) return false;
      p += r;
      n -= size_t(r);
    }
    return true;
  }
  server srv_;
};

}  // namespace

TEST_F(SockTest, EchoOverManyConnections) {
  const int per = stress_iters(100), threads = 4;
  start_server(mode::echo, size_t(per * threads));
  std::atomic<int> ok{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; t++)
    ts.emplace_back([&, t] {
      for (int i = 0; i < per; i++) {
        int fd = client();
        if (fd < 0) continue;
        char msg[600], back[600];
        for (size_t j = 0; j < sizeof msg; j++) msg[j] = char((t * 31 + i + j) & 0xff);
        if (send(fd, msg, sizeof msg, MSG_NOSIGNAL) == ssize_t(sizeof msg) &&
            read_exact(fd, back, sizeof back) && std::memcmp(msg, back, sizeof msg) == 0)
          ok++;
        close(fd);
      }
    });
  for (auto &t : ts) t.join();
  EXPECT_EQ(ok.load(), per * threads);
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == per * threads; }));
  EXPECT_EQ(srv_.bad.load(), 0);
}

TEST_F(SockTest, CloseFromInsideItsOwnUpcall) {
  const int n = stress_iters(200);
  start_server(mode::echo_close_on_bye, size_t(n));
  int eofs = 0;
  for (int i = 0; i < n; i++) {
    int fd = client();
    ASSERT_GE(fd, 0);
    char c;
    send(fd, "hi", 2, MSG_NOSIGNAL);
    char back[2];
    ASSERT_TRUE(read_exact(fd, back, 2));
    send(fd, "bye", 3, MSG_NOSIGNAL);
    if (recv(fd, &c, 1, 0) == 0) eofs++;  // the server closed
    close(fd);
  }
  EXPECT_EQ(eofs, n);
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == n; }));
}

TEST_F(SockTest, PeersResettingMidTransfer) {
  const int n = stress_iters(100);
  start_server(mode::echo, size_t(n));
  for (int i = 0; i < n; i++) {
    int fd = client();
    ASSERT_GE(fd, 0);
    std::vector<char> big(20000 + i * 100, 'x');
    send(fd, big.data(), big.size(), MSG_NOSIGNAL);  // echo is not read: it piles up
    linger lg{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);  // RST
  }
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == n; }));
  EXPECT_EQ(srv_.accepted.load(), n);
}

// A peer that never reads: sock_close would linger with the send buffer
// full for as long as TCP keeps the connection; sock_abort frees the socket
// now and the peer sees the connection reset.
TEST_F(SockTest, AbortFreesASocketWhosePeerNeverReads) {
  sockpool_config cfg;
  cfg.sndbuf = 16 * 1024;
  srv_.push_bytes = size_t(1) << 30;  // far more than the kernel buffers hold
  start_server(mode::push, 1, cfg);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(srv_.port);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
  conn *c = &srv_.conns[0];
  // Wait until the server's send buffer is full: a send is then blocked on
  // the peer.
  ASSERT_TRUE(eventually([&] {
    size_t space = 1;
    on_cpu(kCpu, [&] {
      if (c->s) space = sock_send_space(c->s);
    });
    return space == 0;
  }));
  int rc = -1;
  on_cpu(kCpu, [&] {
    rc = sock_abort(c->s);
    c->to_send = 0;  // the upcall must not touch it again
    srv_.closed++;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(sock_abort(nullptr), EPERM);
  // Freed although the peer has read nothing: only the listener is left.
  EXPECT_TRUE(eventually([&] { return sockpool_get_stats(srv_.pool).in_use == 1; }));
  char buf[65536];
  ssize_t r;
  while ((r = recv(fd, buf, sizeof buf, 0)) > 0) {
  }
  EXPECT_TRUE(r == 0 || errno == ECONNRESET) << strerror(errno);
  close(fd);
}

TEST_F(SockTest, SlowReaderPushesBackOnTheSender) {
  const size_t total = 4u << 20;
  sockpool_config cfg;
  cfg.sndbuf = 16 * 1024;   // small: the sender must wait for SOCK_WRITABLE often
  srv_.push_bytes = total;  // before the listener exists: its upcall reads it
  start_server(mode::push, 1, cfg);
  int fd = client();
  ASSERT_GE(fd, 0);
  std::vector<char> buf(3000);
  size_t got = 0;
  bool ok = true;
  int reads = 0;
  for (;;) {
    ssize_t r = recv(fd, buf.data(), buf.size(), 0);
    if (r <= 0) break;
    for (ssize_t i = 0; i < r; i++)
      if (uint8_t(buf[size_t(i)]) != pattern(got + size_t(i))) ok = false;
    got += size_t(r);
    if (++reads % 64 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  close(fd);
  EXPECT_EQ(got, total);
  EXPECT_TRUE(ok);
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 1; }));
}

TEST_F(SockTest, ReceiveBuffersRunningOutLoseNothing) {
  sockpool_config cfg;
  cfg.nbufs = 4;
  cfg.bufsize = 4096;
  start_server(mode::sink, 2, cfg);
  const size_t total = 8u << 20;
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; t++)
    ts.emplace_back([&] {
      int fd = client();
      ASSERT_GE(fd, 0);
      std::vector<char> chunk(65536);
      for (size_t off = 0; off < total; off += chunk.size()) {
        for (size_t i = 0; i < chunk.size(); i++) chunk[i] = char(pattern(off + i));
        ASSERT_EQ(send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL), ssize_t(chunk.size()));
      }
      shutdown(fd, SHUT_WR);
      char c;
      recv(fd, &c, 1, 0);  // wait for the server's close
      close(fd);
    });
  for (auto &t : ts) t.join();
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 2; }));
  EXPECT_EQ(srv_.bad.load(), 0);
  EXPECT_EQ(srv_.conns[0].rx, total);
  EXPECT_EQ(srv_.conns[1].rx, total);
  // 4 buffers for 16 MiB: the multishot receive ran dry and was re-armed.
  EXPECT_GT(sockpool_get_stats(srv_.pool).rearms, 0u);
}

TEST_F(SockTest, AStalledReaderCannotStarveThePool) {
  sockpool_config cfg;
  cfg.nbufs = 16;
  cfg.bufsize = 4096;
  cfg.max_queued = 16384;
  srv_.stall_first = true;
  start_server(mode::sink, 2, cfg);
  const size_t total = 1u << 20;
  auto sender = [&](int fd) {
    std::vector<char> chunk(65536);
    for (size_t off = 0; off < total; off += chunk.size()) {
      for (size_t i = 0; i < chunk.size(); i++) chunk[i] = char(pattern(off + i));
      if (send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) != ssize_t(chunk.size())) return;
    }
    shutdown(fd, SHUT_WR);
  };
  int a = client();
  ASSERT_GE(a, 0);
  ASSERT_TRUE(eventually([&] { return srv_.accepted.load() >= 1; }));  // a is conns[0]
  std::thread ta(sender, a);
  int b = client();
  ASSERT_GE(b, 0);
  std::thread tb(sender, b);
  // Without the per-socket limit, the unread socket would hold all the
  // buffers and the second connection could never finish.
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 1; }));
  EXPECT_GT(sockpool_get_stats(srv_.pool).throttles, 0u);
  srv_.stall_first = false;
  // Read what it holds (its continuation is CPU-private: defer on its CPU).
  kctest::on_cpu(
      kCpu, [&] { kcont_defer(&srv_.conns[0].kc, srv_.conns[0].s, 0); }, LVL_SOFTNET);
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 2; }));
  ta.join();
  tb.join();
  close(a);
  close(b);
  EXPECT_EQ(srv_.bad.load(), 0);
  EXPECT_EQ(srv_.conns[0].rx, total);
  EXPECT_EQ(srv_.conns[1].rx, total);
}

// sockpool_create refuses a configuration that could never work, with a
// reason: max_queued 1 would stop a socket's receive for good.
TEST_F(SockTest, APoolThatCouldNeverReceiveIsRefused) {
  sockpool_config c;
  c.cpu = 0;
  c.nsocks = 1;
  c.max_queued = 1;
  std::string err;
  EXPECT_EQ(sockpool_create(c, &err), nullptr);
  EXPECT_NE(err.find("max_queued"), std::string::npos) << err;
  c.max_queued = 2;
  sockpool *p = sockpool_create(c, &err);
  ASSERT_NE(p, nullptr) << err;
  EXPECT_EQ(sockpool_destroy(p), 0);
}

TEST_F(SockTest, ADetachedConnectionIsServedByAnotherCpusPool) {
  sockpool_config c0;
  c0.cpu = 0;
  c0.nsocks = 4;
  std::string err;
  sockpool *pool0 = sockpool_create(c0, &err);
  ASSERT_NE(pool0, nullptr) << err;
  int drc = -1;  // never on a dispatcher: it could not wait for the CPU
  on_cpu(0, [&] { drc = sockpool_destroy(pool0); });
  EXPECT_EQ(drc, EDEADLK);
  srv_.adopt_pool = pool0;
  start_server(mode::handoff, 2);
  int detach_listener = 0;
  on_cpu(kCpu, [&] { detach_listener = sock_detach(srv_.listener); });
  EXPECT_EQ(detach_listener, -EINVAL);  // only accepted, never-started sockets
  for (int i = 0; i < 2; i++) {
    int fd = client();
    ASSERT_GE(fd, 0);
    const char msg[] = "served by another CPU";
    ASSERT_EQ(send(fd, msg, sizeof msg, 0), ssize_t(sizeof msg));
    char back[sizeof msg];
    ASSERT_TRUE(read_exact(fd, back, sizeof back));
    EXPECT_EQ(std::memcmp(back, msg, sizeof msg), 0);
    close(fd);
  }
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 2; }));
  EXPECT_EQ(srv_.bad.load(), 0);
  EXPECT_GE(srv_.upcalls_on_cpu0.load(), 2);
  EXPECT_EQ(sockpool_get_stats(pool0).accepted, 2u);
  EXPECT_TRUE(eventually([&] { return sockpool_get_stats(pool0).in_use == 0; }));
  EXPECT_EQ(sockpool_destroy(pool0), 0);
}

TEST_F(SockTest, SpliceForwardsOneSocketIntoAnotherZeroCopy) {
  start_server(mode::splice, 2);
  const size_t early = 60000, total = 8u << 20;
  int a = client();
  ASSERT_GE(a, 0);
  // Bytes sent before the splice exists are queued on the source and must
  // come out first.
  std::vector<char> buf(65536);
  for (size_t i = 0; i < early; i++) buf[i] = char(pattern(i));
  ASSERT_EQ(send(a, buf.data(), early, MSG_NOSIGNAL), ssize_t(early));
  ASSERT_TRUE(eventually([&] { return srv_.accepted.load() == 1; }));
  // A small receive buffer: the destination fills again and again (the
  // splice waits for POLLOUT), and the source runs dry whenever the relay
  // catches up with the sender (it waits for POLLIN).
  int b = client(64 << 10);
  ASSERT_GE(b, 0);
  std::thread sender([&] {
    std::vector<char> chunk(65536);
    for (size_t off = early; off < total;) {
      size_t n = std::min(chunk.size(), total - off);
      for (size_t i = 0; i < n; i++) chunk[i] = char(pattern(off + i));
      if (send(a, chunk.data(), n, MSG_NOSIGNAL) != ssize_t(n)) return;
      off += n;
    }
    shutdown(a, SHUT_WR);
  });
  size_t got = 0;
  bool ok = true;
  for (;;) {
    ssize_t r = recv(b, buf.data(), buf.size(), 0);
    if (r <= 0) break;
    for (ssize_t i = 0; i < r; i++)
      if (uint8_t(buf[size_t(i)]) != pattern(got + size_t(i))) ok = false;
    got += size_t(r);
  }
  sender.join();
  close(a);
  close(b);
  EXPECT_EQ(got, total);
  EXPECT_TRUE(ok);
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 2; }));
  EXPECT_EQ(srv_.sf_status.load(), 0);
  // Every byte went either through the source's receive and the send
  // buffer (what it had received before the splice began: `early` and
  // whatever else arrived by then) or by splice(2) on the dispatcher --
  // none through io_uring's workers.
  const sockpool_stats st = sockpool_get_stats(srv_.pool);
  EXPECT_EQ(st.tx_bytes, total);
  EXPECT_EQ(st.tx_inline_bytes + st.rx_bytes, total);
  EXPECT_GT(st.tx_inline_bytes, 0u);
}

TEST_F(SockTest, ClosingTheSourceEndsABlockedSplice) {
  start_server(mode::splice, 2);
  int a = client();
  ASSERT_GE(a, 0);
  ASSERT_TRUE(eventually([&] { return srv_.accepted.load() == 1; }));
  int b = client();
  ASSERT_GE(b, 0);
  ASSERT_TRUE(eventually([&] { return srv_.accepted.load() == 2; }));
  ASSERT_EQ(send(a, "hello", 5, MSG_NOSIGNAL), 5);
  char got[5];
  ASSERT_TRUE(read_exact(b, got, 5));
  // The splice now waits in the kernel for more from a; closing the source
  // must end it (ECANCELED) and let both sockets be torn down.
  on_cpu(
      kCpu, [&] { sock_close(srv_.conns[0].s); }, LVL_SOFTNET);
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 2; }));
  EXPECT_EQ(srv_.sf_status.load(), ECANCELED);
  close(a);
  close(b);
}

TEST_F(SockTest, CallsOffThePoolsCpuAreRefused) {
  start_server(mode::echo, 1);
  EXPECT_EQ(sock_close(srv_.listener), EPERM);
  EXPECT_EQ(sock_accept(srv_.listener), nullptr);
  kcont wrong;
  kcont_init(&wrong, conn_upcall, nullptr, target::at(LVL_SOFTNET, kind::interrupt, 0));
  int e = 0;
  on_cpu(kCpu, [&] {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(sock_connect(srv_.pool, reinterpret_cast<sockaddr *>(&a), sizeof a, &wrong, &e),
              nullptr);
  });
  EXPECT_EQ(e, EINVAL);  // upcall on another CPU
}

namespace {

// A header through the send buffer, then [4096, 10 MiB) of a file with
// sock_sendfile(flags); then a range past the file's end (ENODATA).  The
// client's receive buffer is small, so the socket fills long before the
// file is sent (10 MiB against at most 4 MiB of send buffer): the
// transfer must wait for room and go on.
void sendfile_case(server &srv, unsigned flags, const std::function<void(mode, size_t)> &start,
                   const std::function<int(int)> &connect_with_rcvbuf) {
  char path[] = "/tmp/kcont-sendfile-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  const size_t size = 10u << 20;
  std::vector<char> data(size);
  for (size_t i = 0; i < size; i++) data[i] = char(pattern(i));
  ASSERT_EQ(pwrite(fd, data.data(), size, 0), ssize_t(size));
  srv.file_fd = fd;
  srv.file_off = 4096;
  srv.file_len = size - 4096;
  srv.file_flags = flags;
  start(mode::sendfile, 2);
  int c = connect_with_rcvbuf(64 << 10);
  ASSERT_GE(c, 0);
  std::vector<char> got;
  char buf[65536];
  for (;;) {
    ssize_t r = recv(c, buf, sizeof buf, 0);
    if (r <= 0) break;
    got.insert(got.end(), buf, buf + r);
  }
  close(c);
  ASSERT_EQ(got.size(), 4 + size - 4096);
  EXPECT_EQ(std::memcmp(got.data(), "HDR\n", 4), 0);
  EXPECT_EQ(std::memcmp(got.data() + 4, data.data() + 4096, size - 4096), 0);
  ASSERT_TRUE(eventually([&] { return srv.sf_status.load() == 0; }));
  const uint64_t inline_bytes = sockpool_get_stats(srv.pool).tx_inline_bytes;
  if (flags & SOCK_SENDFILE_RESIDENT)
    EXPECT_EQ(inline_bytes, size - 4096);  // all of it on the dispatcher
  else
    EXPECT_EQ(inline_bytes, 0u);
  // A range past the end of the file: the peer gets what exists, the
  // continuation gets ENODATA.
  on_cpu(kCpu, [&] {  // the listener's upcall reads these on that CPU
    srv.file_off = size - 100;
    srv.file_len = 1000;
    srv.sf_status = -1;
  });
  c = connect_with_rcvbuf(0);
  ASSERT_GE(c, 0);
  size_t n = 0;
  for (;;) {
    ssize_t r = recv(c, buf, sizeof buf, 0);
    if (r <= 0) break;
    n += size_t(r);
  }
  close(c);
  EXPECT_EQ(n, 4u + 100u);
  ASSERT_TRUE(eventually([&] { return srv.sf_status.load() == ENODATA; }));
  close(fd);
}

}  // namespace

TEST_F(SockTest, SendfileSendsAFileAfterQueuedBytesZeroCopy) {
  sendfile_case(
      srv_, 0, [&](mode m, size_t n) { start_server(m, n); },
      [&](int rcvbuf) { return client(rcvbuf); });
}

// SOCK_SENDFILE_RESIDENT: the same bytes, in the same order, spliced on
// the dispatcher (tx_inline_bytes), waiting for POLLOUT whenever the socket
// is full.
TEST_F(SockTest, ResidentSendfileRunsInlineAndWaitsForRoom) {
  sendfile_case(
      srv_, SOCK_SENDFILE_RESIDENT, [&](mode m, size_t n) { start_server(m, n); },
      [&](int rcvbuf) { return client(rcvbuf); });
}

namespace {

// A record for records mode: a 4-byte big-endian length, then the pattern.
std::vector<char> make_record(uint32_t len) {
  std::vector<char> r(4 + size_t(len));
  r[0] = char(len >> 24);
  r[1] = char(len >> 16);
  r[2] = char(len >> 8);
  r[3] = char(len);
  for (uint32_t i = 0; i < len; i++) r[4 + i] = char(pattern(i));
  return r;
}

bool send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

}  // namespace

// Records of every size class, pipelined on two connections: each body
// arrives whole and in order whether it was queued in the pool's buffers,
// received straight into the caller's memory, or both.
TEST_F(SockTest, ReadIntoReceivesRecordsInOrderIntoCallerMemory) {
  sockpool_config cfg;
  cfg.nbufs = 16;
  cfg.bufsize = 4096;
  start_server(mode::records, 2, cfg);
  const uint32_t sizes[] = {1, 4095, 4096, 4097, 65537, 1u << 20, (3u << 20) + 7, 2};
  std::vector<std::thread> ts;
  std::atomic<int> acks_ok{0};
  for (int t = 0; t < 2; t++)
    ts.emplace_back([&] {
      int fd = client();
      ASSERT_GE(fd, 0);
      std::thread w([&] {
        for (uint32_t len : sizes) {
          auto r = make_record(len);
          if (!send_all(fd, r.data(), r.size())) return;
        }
      });
      for (uint32_t len : sizes) {
        char ack[4];
        if (!read_exact(fd, ack, 4)) break;
        uint32_t got = uint32_t(uint8_t(ack[0])) << 24 | uint32_t(uint8_t(ack[1])) << 16 |
                       uint32_t(uint8_t(ack[2])) << 8 | uint8_t(ack[3]);
        if (got == len) acks_ok++;
      }
      w.join();
      close(fd);
    });
  for (auto &t : ts) t.join();
  EXPECT_EQ(acks_ok.load(), 2 * int(std::size(sizes)));
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 2; }));
  EXPECT_EQ(srv_.bad.load(), 0);
  EXPECT_EQ(srv_.errors.load(), 0);
  // The 1 MiB and 3 MiB bodies cannot all have been queued (64 KiB of
  // buffers): the rest went straight into the records.
  EXPECT_GT(sockpool_get_stats(srv_.pool).rx_direct_bytes, 0u);
}

// Other sockets hold every receive buffer of the pool and read nothing; a
// record whose length is known still arrives, received into its own memory.
// With sock_read instead of sock_read_into its connection would wait for
// buffers that never come back.
TEST_F(SockTest, ReadIntoProgressesWhileOtherSocketsHoldEveryBuffer) {
  sockpool_config cfg;
  cfg.nbufs = 8;
  cfg.bufsize = 4096;  // max_queued: 2 buffers; a stalled socket holds <= 3
  start_server(mode::records, 8, cfg);
  int a = client();
  ASSERT_GE(a, 0);
  const uint32_t len = 2u << 20;
  auto r = make_record(len);
  ASSERT_TRUE(send_all(a, r.data(), 4));  // the header alone
  ASSERT_TRUE(eventually([&] { return srv_.reading_into.load() == 1; }));
  // Four stalled connections fill the pool.
  srv_.stall_new = true;
  std::vector<int> stalled;
  std::vector<char> junk(16384, 'j');
  for (int i = 0; i < 4; i++) {
    int fd = client();
    ASSERT_GE(fd, 0);
    stalled.push_back(fd);
    ASSERT_EQ(send(fd, junk.data(), junk.size(), MSG_NOSIGNAL | MSG_DONTWAIT),
              ssize_t(junk.size()));
  }
  ASSERT_TRUE(eventually([&] { return sockpool_get_stats(srv_.pool).buffers_queued == 8; }));
  // The body: no buffer is free for it.
  std::thread w([&] { send_all(a, r.data() + 4, len); });
  char ack[4];
  ASSERT_TRUE(read_exact(a, ack, 4)) << "the record never completed";
  w.join();
  EXPECT_EQ(uint32_t(uint8_t(ack[0])) << 24 | uint32_t(uint8_t(ack[1])) << 16 |
                uint32_t(uint8_t(ack[2])) << 8 | uint8_t(ack[3]),
            len);
  EXPECT_EQ(srv_.rx_status.load(), 0);
  EXPECT_EQ(sockpool_get_stats(srv_.pool).buffers_queued, 8u);  // still all held
  EXPECT_GE(sockpool_get_stats(srv_.pool).rx_direct_bytes, len - 8 * 4096);
  close(a);
  // Let the stalled connections read and see their clients' EOF.
  for (int fd : stalled) close(fd);
  for (size_t i = 1; i <= stalled.size(); i++) {
    conn *c = &srv_.conns[i];
    c->stalled = false;
    kctest::on_cpu(
        kCpu, [&] { kcont_defer(&c->kc, c->s, 0); }, LVL_SOFTNET);
  }
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 5; }));
  EXPECT_EQ(srv_.bad.load(), 0);
}

// The stream ends before the record does: ENODATA.  The socket is closed
// while a read waits: ECANCELED, and the completion does not touch it.
TEST_F(SockTest, ReadIntoReportsAnEndedStreamAndAClose) {
  start_server(mode::records, 2);
  int a = client();
  ASSERT_GE(a, 0);
  auto r = make_record(1u << 20);
  ASSERT_TRUE(send_all(a, r.data(), 4 + 1000));
  shutdown(a, SHUT_WR);
  ASSERT_TRUE(eventually([&] { return srv_.rx_status.load() == ENODATA; }));
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 1; }));
  EXPECT_EQ(srv_.errors.load(), 1);  // records_done counts the short stream
  close(a);

  srv_.rx_status = -1;
  int b = client();
  ASSERT_GE(b, 0);
  ASSERT_TRUE(send_all(b, r.data(), 4 + 1000));
  ASSERT_TRUE(eventually([&] { return srv_.reading_into.load() == 2; }));
  conn *c = &srv_.conns[1];
  int busy = 0, again = 0, closed = -1;
  kctest::on_cpu(
      kCpu,
      [&] {
        char x;
        busy = int(sock_read(c->s, &x, 1));
        again = sock_read_into(c->s, &x, 1, &c->done);
        closed = sock_close(c->s);
      },
      LVL_SOFTNET);
  EXPECT_EQ(busy, -EBUSY);
  EXPECT_EQ(again, EBUSY);
  EXPECT_EQ(closed, 0);
  srv_.closed++;
  ASSERT_TRUE(eventually([&] { return srv_.rx_status.load() == ECANCELED; }));
  close(b);
  EXPECT_EQ(srv_.bad.load(), 0);
}

// A held socket arms no receive: while the other connection streams a
// megabyte through the pool, the held one's 64 KiB wait in the kernel (one
// receive in flight when it was held may bring a buffer); released, it
// reads all of it.
TEST_F(SockTest, AHeldSocketTakesNoMoreBuffers) {
  sockpool_config cfg;
  cfg.nbufs = 64;
  cfg.bufsize = 4096;  // max_queued 64 KiB: unheld, the socket would queue it all
  start_server(mode::sink, 2, cfg);
  int a = client();
  ASSERT_GE(a, 0);
  ASSERT_TRUE(eventually([&] { return srv_.accepted.load() == 1; }));
  conn *held = &srv_.conns[0];
  int rc = -1;
  kctest::on_cpu(
      kCpu, [&] { rc = sock_hold(held->s, true); }, LVL_SOFTNET);
  ASSERT_EQ(rc, 0);
  srv_.stall_first = true;  // the sink would read it otherwise
  std::vector<char> body(65536);
  for (size_t i = 0; i < body.size(); i++) body[i] = char(pattern(i));
  ASSERT_TRUE(send_all(a, body.data(), body.size()));
  // Another connection streams 1 MiB through the pool meanwhile.
  int b = client();
  ASSERT_GE(b, 0);
  std::vector<char> mb(1u << 20);
  for (size_t i = 0; i < mb.size(); i++) mb[i] = char(pattern(i));
  ASSERT_TRUE(send_all(b, mb.data(), mb.size()));
  shutdown(b, SHUT_WR);
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 1; }));
  EXPECT_EQ(srv_.conns[1].rx, mb.size());
  size_t queued = 0;
  kctest::on_cpu(
      kCpu, [&] { queued = sock_readable(held->s); }, LVL_SOFTNET);
  EXPECT_LE(queued, cfg.bufsize) << "a held socket kept receiving";
  // Released: everything arrives.
  srv_.stall_first = false;
  kctest::on_cpu(
      kCpu, [&] { rc = sock_hold(held->s, false); }, LVL_SOFTNET);
  EXPECT_EQ(rc, 0);
  shutdown(a, SHUT_WR);
  ASSERT_TRUE(eventually([&] { return srv_.closed.load() == 2; }));
  EXPECT_EQ(held->rx, body.size());
  EXPECT_EQ(srv_.bad.load(), 0);
  close(a);
  close(b);
}

// Buffered bytes, two requests of caller memory and a file leave in the
// order they were queued; sock_send waits behind the requests, a request
// cannot be queued behind the file, and each completion runs once its bytes
// are the kernel's -- the requests' before the file's.
TEST_F(SockTest, SendvSendsCallerMemoryInOrderBetweenBufferAndFile) {
  char path[] = "/tmp/kcont-sendv-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  std::vector<char> file(300000);
  for (size_t i = 0; i < file.size(); i++) file[i] = char(i * 7 + 3);
  ASSERT_EQ(write(fd, file.data(), file.size()), ssize_t(file.size()));
  srv_.file_fd = fd;
  srv_.file_len = file.size();
  srv_.vmem.resize((2u << 20) + 1000);
  for (size_t i = 0; i < srv_.vmem.size(); i++) srv_.vmem[i] = char(pattern(i));
  for (int k = 0; k < 2; k++)
    kcont_init(&srv_.vdone[k], sendv_done, &srv_.vctx[k],
               target::at(LVL_SOFTNET, kind::interrupt, kCpu));
  start_server(mode::sendv, 1);
  int a = client();
  ASSERT_GE(a, 0);
  std::vector<char> got(4 + srv_.vmem.size() + file.size());
  ASSERT_TRUE(read_exact(a, got.data(), got.size()));
  char extra;
  EXPECT_EQ(recv(a, &extra, 1, 0), 0) << "bytes after the file (sock_send did not wait?)";
  close(a);
  EXPECT_EQ(std::memcmp(got.data(), "HDR\n", 4), 0);
  EXPECT_EQ(std::memcmp(got.data() + 4, srv_.vmem.data(), srv_.vmem.size()), 0);
  EXPECT_EQ(std::memcmp(got.data() + 4 + srv_.vmem.size(), file.data(), file.size()), 0);
  ASSERT_TRUE(eventually([&] { return srv_.vorder.load() == 3; }));
  EXPECT_EQ(srv_.send_while_queued.load(), 0);
  for (int k = 0; k < 3; k++) EXPECT_EQ(srv_.vstatus[k].load(), 0) << k;
  EXPECT_EQ(srv_.vseen[0].load(), 0);
  EXPECT_EQ(srv_.vseen[1].load(), 1);
  EXPECT_EQ(srv_.vseen[2].load(), 2);
  for (auto &k : srv_.vdone) kcont_drain(&k);
  close(fd);
}

// Aborted with requests queued (the peer reads nothing, so 2 MiB cannot
// all be the kernel's): every request completes, the unsent with a
// nonzero status, and the socket is torn down.
TEST_F(SockTest, SendvRequestsOfAnAbortedSocketComplete) {
  srv_.vabort = true;
  srv_.vmem.resize((2u << 20) + 1000, 'v');
  for (int k = 0; k < 2; k++)
    kcont_init(&srv_.vdone[k], sendv_done, &srv_.vctx[k],
               target::at(LVL_SOFTNET, kind::interrupt, kCpu));
  start_server(mode::sendv, 1);
  int a = client();
  ASSERT_GE(a, 0);
  ASSERT_TRUE(eventually([&] { return srv_.vorder.load() == 2; }));
  EXPECT_NE(srv_.vstatus[1].load(), 0);   // 1000 bytes behind 2 MiB nobody read
  EXPECT_EQ(srv_.vstatus[2].load(), -1);  // no file was queued
  close(a);
  for (auto &k : srv_.vdone) kcont_drain(&k);
}
