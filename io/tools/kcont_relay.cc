// SPDX-License-Identifier: BSD-2-Clause
// kcont-relay -- forwards TCP connections through kcont sockets.
//
//   kcont-relay --listen HOST:PORT --to HOST:PORT [--cpus N] [--max-conns N] [--copy]
//
// Model: one socket pool per CPU, each listening on the same address with
// SO_REUSEPORT so the kernel spreads connections over the CPUs.  A client
// connection and its upstream connection form a pair owned by one CPU; each
// side's upcall pumps what it can from the other side into it, stops
// reading when the destination's send buffer is full (back-pressure, no
// unbounded queue), propagates end-of-file with a half-close, and closes
// both sides when both directions are done or either fails.  No thread per
// connection and no allocation per connection: pairs are preallocated.
//
// Data path (default): once the upstream connection is up, each direction
// is one sock_splice -- socket -> pipe -> socket in the kernel, no copy in
// user space; a direction that reaches end of file half-closes the other
// side.  With --copy: provided receive buffer -> a per-CPU scratch buffer
// -> the destination's send buffer (two copies), pumped by the upcalls.
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kcont/error_text.h"
#include "kcont/kcont.h"
#include "kcont/sock.h"

using namespace kc;

namespace {

struct relay_cpu;

struct pair {
  relay_cpu *rc = nullptr;
  sock *a = nullptr;  // client side
  sock *b = nullptr;  // upstream side
  kcont ka, kb;
  kcont da, db;      // splice mode: a -> b and b -> a ended
  int splicing = 0;  // splices whose continuation has not run yet
  bool b_connected = false;
  bool a_eof = false, b_eof = false;  // read side saw EOF (and forwarded it)
  bool closed = false;
  pair *next_free = nullptr;
};

struct relay_cpu {
  int cpu = 0;
  sockpool *pool = nullptr;
  sock *listener = nullptr;
  kcont lkc;
  std::vector<pair> pairs;
  pair *free = nullptr;
  std::vector<char> scratch;
  bool copy = false;  // --copy: the two-copy path instead of splice
  sockaddr_storage to{};
  socklen_t tolen = 0;
  std::atomic<uint64_t> conns{0}, refused{0};
};

void close_pair(pair *p) {
  if (p->closed) return;
  p->closed = true;
  if (p->a) sock_close(p->a);
  if (p->b) sock_close(p->b);
  p->a = p->b = nullptr;
  // The pair's continuations may still be linked (cancelled) on this CPU's
  // queue; the pair goes back on the free list only after they are passed,
  // which take_pair() checks -- and after its splices reported.
  if (p->splicing == 0) {
    p->next_free = p->rc->free;
    p->rc->free = p;
  }
}

// Splice mode: one direction ended (obj is its destination).  0: the
// source reached end of file -- pass it on; anything else ends the pair.
void splice_done(void *obj, void *env, int status) {
  auto *p = static_cast<pair *>(env);
  p->splicing--;
  if (p->closed) {
    if (p->splicing == 0) {  // the last report: the pair may be reused
      p->next_free = p->rc->free;
      p->rc->free = p;
    }
    return;
  }
  sock *to = static_cast<sock *>(obj);
  if (status != 0) {
    close_pair(p);
    return;
  }
  sock_shutdown(to);
  if (to == p->b)
    p->a_eof = true;
  else
    p->b_eof = true;
  if (p->a_eof && p->b_eof) close_pair(p);
}

void start_splices(pair *p) {
  if (sock_splice(p->a, p->b, &p->da) == 0) p->splicing++;
  if (sock_splice(p->b, p->a, &p->db) == 0) p->splicing++;
  if (p->splicing < 2) close_pair(p);
}

// Moves what `from` has into `to` while `to` has room.  Returns false when
// the pair was closed.
bool pump(pair *p, sock *from, sock *to, bool &from_eof) {
  relay_cpu *rc = p->rc;
  for (;;) {
    size_t room = sock_send_space(to);
    if (room == 0) return true;  // wait for SOCK_WRITABLE on `to`
    long n = sock_read(from, rc->scratch.data(), std::min(room, rc->scratch.size()));
    if (n > 0) {
      long w = sock_send(to, rc->scratch.data(), size_t(n));
      if (w != n) {  // destination failed
        close_pair(p);
        return false;
      }
      continue;
    }
    if (n == 0 && !from_eof) {  // EOF: half-close the other side
      from_eof = true;
      sock_shutdown(to);
    }
    return true;
  }
}

void maybe_finish(pair *p) {
  if (!p->closed && p->a_eof && p->b_eof) close_pair(p);
}

void side_upcall(void *obj, void *env, int) {
  auto *p = static_cast<pair *>(env);
  if (p->closed) return;
  sock *s = static_cast<sock *>(obj);
  uint32_t ev = sock_events(s);
  if (ev & SOCK_ERROR) {
    close_pair(p);
    return;
  }
  if (s == p->b && (ev & SOCK_CONNECTED) && !p->b_connected) {
    p->b_connected = true;
    if (!p->rc->copy) {
      start_splices(p);
      return;
    }
  }
  if (!p->b_connected || !p->rc->copy) return;  // data waits / the splices move it
  // Pump both directions: readable data on either side, or room that
  // opened on either side, can unblock either direction.
  if (!pump(p, p->a, p->b, p->a_eof)) return;
  if (!pump(p, p->b, p->a, p->b_eof)) return;
  maybe_finish(p);
}

pair *take_pair(relay_cpu *rc) {
  // A pair is reusable once its continuations are idle (cancelled ones are
  // passed by the dispatcher shortly).
  pair **pp = &rc->free;
  while (pair *p = *pp) {
    if (kcont_state(&p->ka) == kc_state::idle && kcont_state(&p->kb) == kc_state::idle &&
        kcont_state(&p->da) == kc_state::idle && kcont_state(&p->db) == kc_state::idle) {
      *pp = p->next_free;
      return p;
    }
    pp = &p->next_free;
  }
  return nullptr;
}

void listener_upcall(void *, void *env, int) {
  auto *rc = static_cast<relay_cpu *>(env);
  sock_events(rc->listener);
  while (sock *a = sock_accept(rc->listener)) {
    pair *p = take_pair(rc);
    if (!p) {
      sock_close(a);
      rc->refused.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    p->rc = rc;
    p->a = a;
    p->b = nullptr;
    p->b_connected = false;
    p->a_eof = p->b_eof = false;
    p->closed = false;
    p->splicing = 0;
    kcont_init(&p->ka, side_upcall, p, target::cpu_private_to(LVL_SOFTNET, int16_t(rc->cpu)));
    kcont_init(&p->kb, side_upcall, p, target::cpu_private_to(LVL_SOFTNET, int16_t(rc->cpu)));
    kcont_init(&p->da, splice_done, p, target::cpu_private_to(LVL_SOFTNET, int16_t(rc->cpu)));
    kcont_init(&p->db, splice_done, p, target::cpu_private_to(LVL_SOFTNET, int16_t(rc->cpu)));
    int err = 0;
    p->b = sock_connect(rc->pool, reinterpret_cast<sockaddr *>(&rc->to), rc->tolen, &p->kb, &err);
    if (!p->b || sock_start(a, &p->ka) != 0) {
      close_pair(p);
      rc->refused.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    rc->conns.fetch_add(1, std::memory_order_relaxed);
  }
}

bool parse_hostport(const std::string &s, sockaddr_storage *out, socklen_t *len, std::string *err) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) {
    *err = "expected HOST:PORT, got '" + s + "'";
    return false;
  }
  std::string host = s.substr(0, colon), port = s.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  int e = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (e != 0 || !res) {
    *err = "cannot resolve '" + s + "': " + gai_strerror(e);
    return false;
  }
  std::memcpy(out, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return true;
}

void usage(FILE *f) {
  std::fprintf(f,
               "usage: kcont-relay --listen HOST:PORT --to HOST:PORT [--cpus N] [--max-conns N] "
               "[--copy]\n"
               "  Forwards every TCP connection accepted on --listen to --to.\n"
               "  --cpus N        dispatcher CPUs (default: one per core)\n"
               "  --max-conns N   connections per CPU (default 1024)\n"
               "  --copy          copy through user space instead of splicing (zero-copy)\n");
}

}  // namespace

int main(int argc, char **argv) {
  std::string listen_s, to_s;
  int cpus = 0;
  long max_conns = 1024;
  bool copy = false;
  bool missing = false;  // an option without its value
  for (int i = 1; i < argc && !missing; i++) {
    std::string a = argv[i];
    auto value = [&](const char *name) -> std::string {
      if (i + 1 < argc) return argv[++i];
      std::fprintf(stderr, "kcont-relay: %s needs a value\n", name);
      missing = true;
      return {};
    };
    if (a == "--listen")
      listen_s = value("--listen");
    else if (a == "--to")
      to_s = value("--to");
    else if (a == "--cpus")
      cpus = std::atoi(value("--cpus").c_str());
    else if (a == "--max-conns")
      max_conns = std::atol(value("--max-conns").c_str());
    else if (a == "--copy")
      copy = true;
    else if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "kcont-relay: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (missing) return 2;
  if (listen_s.empty() || to_s.empty()) {
    usage(stderr);
    return 2;
  }
  if (max_conns < 1 || max_conns > 100000 || cpus < 0 || cpus > max_cpus) {
    std::fprintf(stderr, "kcont-relay: --max-conns must be 1..100000 and --cpus 0..%d\n", max_cpus);
    return 2;
  }
  sockaddr_storage laddr{}, taddr{};
  socklen_t llen = 0, tlen = 0;
  std::string err;
  if (!parse_hostport(listen_s, &laddr, &llen, &err) ||
      !parse_hostport(to_s, &taddr, &tlen, &err)) {
    std::fprintf(stderr, "kcont-relay: %s\n", err.c_str());
    return 2;
  }
  // Signals are taken synchronously by the main thread (sigwait), so every
  // thread kcont creates inherits them blocked.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  config cfg;
  cfg.cpus = cpus;
  if (kcont_start(cfg, &err) != 0) {
    std::fprintf(stderr, "kcont-relay: %s\n", err.c_str());
    return 1;
  }
  int n = kcont_ncpus();
  std::vector<relay_cpu> rcs(static_cast<size_t>(n));
  int rc_exit = 0;
  for (int c = 0; c < n && rc_exit == 0; c++) {
    relay_cpu &rc = rcs[size_t(c)];
    rc.cpu = c;
    rc.to = taddr;
    rc.tolen = tlen;
    rc.scratch.resize(size_t{64} * 1024);
    rc.copy = copy;
    rc.pairs = std::vector<pair>(size_t(max_conns));
    for (auto &p : rc.pairs) {
      p.next_free = rc.free;
      rc.free = &p;
    }
    sockpool_config pc;
    pc.cpu = c;
    pc.nsocks = uint32_t(2 * max_conns + 1);
    pc.sndbuf = 128 * 1024;
    pc.nbufs = 1024;
    pc.bufsize = 16 * 1024;
    rc.pool = sockpool_create(pc, &err);
    if (!rc.pool) {
      std::fprintf(stderr, "kcont-relay: %s\n", err.c_str());
      rc_exit = 1;
      break;
    }
    kcont_init(&rc.lkc, listener_upcall, &rc, target::at(LVL_SOFTNET, kind::interrupt, int16_t(c)));
    // Listen from the pool's CPU.
    struct job {
      relay_cpu *rc;
      sockaddr_storage *a;
      socklen_t l;
      int err = 0;
    } j{&rc, &laddr, llen};
    kcont_run_on(
        c, LVL_SOFTNET,
        [](void *env) {
          auto *jb = static_cast<job *>(env);
          jb->rc->listener = sock_listen(jb->rc->pool, reinterpret_cast<sockaddr *>(jb->a), jb->l,
                                         1024, &jb->rc->lkc, &jb->err, true);
        },
        &j);
    if (!rc.listener) {
      std::fprintf(stderr, "kcont-relay: cannot listen on %s: %s\n", listen_s.c_str(),
                   kc::error_text(j.err));
      rc_exit = 1;
    }
  }
  if (rc_exit == 0) {
    std::fprintf(stderr, "kcont-relay: %s -> %s on %d CPUs\n", listen_s.c_str(), to_s.c_str(), n);
    int sig = 0;
    do {
      sigwait(&sigs, &sig);
    } while (sig == SIGPIPE);
    uint64_t conns = 0, bytes = 0, refused = 0;
    for (auto &rc : rcs) {
      conns += rc.conns.load();
      bytes += sockpool_get_stats(rc.pool).tx_bytes;  // both directions, either path
      refused += rc.refused.load();
    }
    std::fprintf(stderr, "kcont-relay: stopping (%s): %llu connections, %llu bytes, %llu refused\n",
                 sig == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)conns,
                 (unsigned long long)bytes, (unsigned long long)refused);
  }
  kcont_stop();
  _exit(rc_exit);  // pools and pairs die with the process
}
