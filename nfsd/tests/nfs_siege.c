// SPDX-License-Identifier: BSD-2-Clause
/*
 * nfs_siege.c -- hostile clients against kcont-nfsd, and a bystander that
 * must still get through (docs/reliability.md).
 *
 * The attackers speak raw ONC RPC over TCP from a source address of their
 * own (SRC, e.g. 127.0.0.2: any 127/8 address works on loopback); the
 * bystander is a libnfs client from the default source address that mounts
 * the export and reads one file.  URL = nfs://HOST/DIR/FILE?version=3&
 * nfsport=N&mountport=M, FILE a regular file directly in DIR.
 *
 *   siege URL SRC NIDLE NSLOW
 *       opens NIDLE idle connections and NSLOW slowloris connections (a
 *       record header, then one byte a second), half on each port; while
 *       they are held, the bystander mounts and reads FILE.  Prints how
 *       many of each the server kept open and the bystander's time.  Fails
 *       unless every attacker connection was opened (a siege that never
 *       happened proves nothing).
 *   ownidle URL SRC NIDLE
 *       opens NIDLE connections from SRC to the NFS port, each of which
 *       must get a NULL call answered before it sits idle (a client with
 *       many connections, nconnect=16 on several mounts, is served; past
 *       the per-address share, each new one takes the place of the
 *       address's longest idle); then one more from the same SRC must be
 *       answered too.
 *   ownbusy URL SRC NBUSY
 *       opens NBUSY connections from SRC, each answered a NULL call and
 *       then left in the middle of a record (busy: never evicted); one more
 *       from SRC must then be refused -- for NBUSY at the per-address share.
 *   expire URL SRC idle|slow|noread MAXSEC
 *       one connection that sits idle, trickles a record one byte every
 *       100 ms, or pipelines READs of FILE and never reads a reply; waits
 *       for the server to close it (at most MAXSEC seconds) and prints when.
 *   bigwrite URL SRC NCONN NREQ
 *       NCONN connections each pipeline NREQ UNSTABLE WRITEs of 1 MiB to
 *       FILE (offset 0), read every reply, and close: the load after which
 *       the server's memory must come back (nfs_integration.sh checks RSS).
 *   noread URL SRC NCONN SECONDS
 *       NCONN connections pipeline READs of FILE and never read a reply,
 *       for SECONDS; meanwhile the bystander mounts and reads FILE again
 *       and again.  Every bystander run must succeed.
 *   memwait URL SRC
 *       for a server whose --max-memory holds one 1 MiB WRITE at a time
 *       and whose --record-timeout is 2 s: connection B begins a record
 *       (one byte); 1 s later A sends a 1 MiB WRITE's header and 1 KiB of
 *       its data and stops, holding the memory; 0.5 s later B sends the
 *       rest of its 1 MiB WRITE, which must wait for memory.  A must be
 *       reset by the record timeout and B answered: time spent waiting for
 *       memory is not the client's slowness.  (The pauses order the steps;
 *       a machine slow enough to reorder them makes the check weaker, never
 *       failing.)
 *
 * Output: "ok: ..." per passed check, "FAIL: ..." on stderr; exit status 0
 * only if nothing failed.  Timings are printed, never asserted (the
 * bystander's own RPC timeout, 20 s, is the only limit).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nfsc/libnfs.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int g_failed;

static void ok(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("ok: ");
  vprintf(fmt, ap);
  putchar('\n');
  fflush(stdout);
  va_end(ap);
}

static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  g_failed++;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* the target                                                          */

struct target {
  char host[256];
  char dir[1024];
  char file[256];
  int nfsport, mountport;
  char dir_url[2048]; /* nfs://HOST/DIR?QUERY, for libnfs */
};

static int url_int_param(const char *url, const char *key) {
  const char *q = strchr(url, '?');
  size_t kl = strlen(key);
  while (q) {
    q++;
    if (strncmp(q, key, kl) == 0 && q[kl] == '=') return atoi(q + kl + 1);
    q = strchr(q, '&');
  }
  return 0;
}

static int parse_target(const char *url, struct target *t) {
  const char *p, *slash, *q, *last;
  memset(t, 0, sizeof *t);
  if (strncmp(url, "nfs://", 6) != 0) return -1;
  p = url + 6;
  slash = strchr(p, '/');
  if (!slash || (size_t)(slash - p) >= sizeof t->host) return -1;
  memcpy(t->host, p, (size_t)(slash - p));
  q = strchr(slash, '?');
  if (!q) q = slash + strlen(slash);
  last = q;
  while (last > slash && last[-1] != '/') last--;
  if (last == slash + 1 || last == q || (size_t)(last - 1 - slash) >= sizeof t->dir ||
      (size_t)(q - last) >= sizeof t->file)
    return -1;
  memcpy(t->dir, slash, (size_t)(last - 1 - slash));
  memcpy(t->file, last, (size_t)(q - last));
  snprintf(t->dir_url, sizeof t->dir_url, "nfs://%s%s%s", t->host, t->dir, q);
  t->nfsport = url_int_param(url, "nfsport");
  t->mountport = url_int_param(url, "mountport");
  return t->nfsport > 0 && t->mountport > 0 ? 0 : -1;
}

/* A TCP connection from src to host:port; blocking unless nb. */
static int connect_from(const char *src, const char *host, int port, int nb) {
  struct sockaddr_in a = {0}, b = {0};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  a.sin_family = AF_INET;
  if (inet_pton(AF_INET, src, &a.sin_addr) != 1 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  b.sin_family = AF_INET;
  b.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &b.sin_addr) != 1) {
    close(fd);
    return -1;
  }
  if (nb) fcntl(fd, F_SETFL, O_NONBLOCK);
  if (connect(fd, (struct sockaddr *)&b, sizeof b) != 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

/* True when the server has closed (FIN) or reset the connection: the
 * socket left ESTABLISHED.  (A peek would not tell: the replies a
 * non-reading client never read still sit before the FIN.) */
static int server_closed(int fd) {
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return 1;
  return ti.tcpi_state != TCP_ESTABLISHED && ti.tcpi_state != TCP_SYN_SENT;
}

/* ------------------------------------------------------------------ */
/* raw RPC: just enough for MNT, LOOKUP and READ                      */

struct xdr {
  uint8_t b[2048];
  size_t n;
};

static void put32(struct xdr *x, uint32_t v) {
  v = htonl(v);
  memcpy(x->b + x->n, &v, 4);
  x->n += 4;
}

static void put_opaque(struct xdr *x, const void *p, uint32_t len) {
  put32(x, len);
  memcpy(x->b + x->n, p, len);
  x->n += len;
  while (x->n % 4) x->b[x->n++] = 0;
}

/* Record mark + call header with AUTH_SYS root credentials. */
static void call_header(struct xdr *x, uint32_t xid, uint32_t prog, uint32_t proc) {
  x->n = 4; /* the record mark, filled by finish() */
  put32(x, xid);
  put32(x, 0); /* CALL */
  put32(x, 2);
  put32(x, prog);
  put32(x, 3);
  put32(x, proc);
  put32(x, 1); /* AUTH_SYS */
  put32(x, 28);
  put32(x, 0);               /* stamp */
  put_opaque(x, "siege", 5); /* machine name: 4 + 8 bytes */
  put32(x, 0);               /* uid */
  put32(x, 0);               /* gid */
  put32(x, 0);               /* no groups */
  put32(x, 0);               /* verifier AUTH_NONE */
  put32(x, 0);
}

static void finish(struct xdr *x) {
  uint32_t mark = htonl(0x80000000u | (uint32_t)(x->n - 4));
  memcpy(x->b, &mark, 4);
}

static int send_all(int fd, const void *p, size_t n) {
  const uint8_t *c = p;
  while (n > 0) {
    ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    c += k;
    n -= (size_t)k;
  }
  return 0;
}

static int recv_all(int fd, void *p, size_t n) {
  uint8_t *c = p;
  while (n > 0) {
    ssize_t k = recv(fd, c, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    c += k;
    n -= (size_t)k;
  }
  return 0;
}

/* One call, one reply record (single fragment) into rep; returns the
 * offset of the procedure's results, or -1. */
/* Sends the call in x, and in the same send() the tlen bytes of tail (the
 * start of another record, say); reads the call's reply. */
static long roundtrip_then(int fd, struct xdr *x, const void *tail, size_t tlen, uint8_t *rep,
                           size_t cap) {
  uint32_t mark, len, w[6];
  size_t n;
  finish(x);
  n = x->n;
  if (tlen) memcpy(x->b + n, tail, tlen);
  if (send_all(fd, x->b, n + tlen) != 0 || recv_all(fd, &mark, 4) != 0) return -1;
  len = ntohl(mark) & 0x7fffffffu;
  if (len > cap || len < 24 || recv_all(fd, rep, len) != 0) return -1;
  memcpy(w, rep, sizeof w);
  /* xid, REPLY, MSG_ACCEPTED, verf flavor, verf len (0), SUCCESS */
  if (ntohl(w[1]) != 1 || ntohl(w[2]) != 0 || ntohl(w[4]) != 0 || ntohl(w[5]) != 0) return -1;
  return 24;
}

static long roundtrip(int fd, struct xdr *x, uint8_t *rep, size_t cap) {
  return roundtrip_then(fd, x, NULL, 0, rep, cap);
}

struct fh {
  uint32_t len;
  uint8_t b[64];
};

static int take_fh(const uint8_t *p, size_t avail, struct fh *f) {
  uint32_t len;
  if (avail < 4) return -1;
  memcpy(&len, p, 4);
  len = ntohl(len);
  if (len == 0 || len > 64 || avail < 4 + len) return -1;
  f->len = len;
  memcpy(f->b, p + 4, len);
  return 0;
}

/* The handle of FILE: MNT of DIR on the MOUNT port, LOOKUP on the NFS port. */
static int file_handle(const struct target *t, const char *src, struct fh *out) {
  static uint8_t rep[4096];
  struct xdr x;
  struct fh dir;
  uint32_t st;
  long at;
  int fd = connect_from(src, t->host, t->mountport, 0);
  if (fd < 0) return -1;
  call_header(&x, 1, 100005, 1);
  put_opaque(&x, t->dir, (uint32_t)strlen(t->dir));
  at = roundtrip(fd, &x, rep, sizeof rep);
  close(fd);
  if (at < 0) return -1;
  memcpy(&st, rep + at, 4);
  if (ntohl(st) != 0 || take_fh(rep + at + 4, 4000, &dir) != 0) return -1;
  fd = connect_from(src, t->host, t->nfsport, 0);
  if (fd < 0) return -1;
  call_header(&x, 2, 100003, 3);
  put_opaque(&x, dir.b, dir.len);
  put_opaque(&x, t->file, (uint32_t)strlen(t->file));
  at = roundtrip(fd, &x, rep, sizeof rep);
  close(fd);
  if (at < 0) return -1;
  memcpy(&st, rep + at, 4);
  if (ntohl(st) != 0 || take_fh(rep + at + 4, 4000, out) != 0) return -1;
  return 0;
}

/* A READ of 1 MiB at offset 0: a call whose reply is big. */
static void read_call(struct xdr *x, uint32_t xid, const struct fh *f) {
  call_header(x, xid, 100003, 6);
  put_opaque(x, f->b, f->len);
  put32(x, 0);
  put32(x, 0);
  put32(x, 1u << 20);
  finish(x);
}

/* Sends READ calls without reading a reply until the connection takes no
 * more (the server stopped reading it: its slots hold unsent replies). */
static void flood_reads(int fd, const struct fh *f) {
  struct xdr x;
  uint32_t xid = 100;
  read_call(&x, xid, f);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  for (;;) {
    size_t off = 0;
    while (off < x.n) {
      ssize_t k = send(fd, x.b + off, x.n - off, MSG_NOSIGNAL);
      if (k > 0) {
        off += (size_t)k;
        continue;
      }
      if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
        struct pollfd p = {fd, POLLOUT, 0};
        if (poll(&p, 1, 2000) == 0) return; /* the server stopped reading */
        continue;
      }
      return; /* closed */
    }
    xid++;
    memcpy(x.b + 4, &(uint32_t){htonl(xid)}, 4);
  }
}

/* ------------------------------------------------------------------ */
/* the bystander                                                       */

/* Mounts DIR and reads FILE whole with libnfs from the default source
 * address, in a child process; returns the time taken, or -1. */
/* One mount and read of FILE; the bytes read, or -1 (error on stderr). */
static long bystander_once(const struct target *t, int attempt) {
  struct nfs_context *nfs = nfs_init_context();
  struct nfs_url *u;
  struct nfsfh *fh = NULL;
  char buf[65536];
  long total = 0, n = -1;
  if (!nfs) return -1;
  nfs_set_timeout(nfs, 20000);
  nfs_set_autoreconnect(nfs, 0);
  u = nfs_parse_url_dir(nfs, t->dir_url); /* sets the ports */
  if (u && nfs_mount(nfs, u->server, u->path) == 0 && nfs_open(nfs, t->file, O_RDONLY, &fh) == 0) {
    while ((n = nfs_read(nfs, fh, sizeof buf, buf)) > 0) total += n;
    nfs_close(nfs, fh);
  }
  if (n < 0) fprintf(stderr, "bystander (attempt %d): %s\n", attempt, nfs_get_error(nfs));
  if (u) nfs_destroy_url(u);
  nfs_destroy_context(nfs);
  return n < 0 ? -1 : total;
}

/* The bystander: mounts the export and reads FILE, in a child process.
 * Like a real client it tries again when the server closed its
 * connection (a full table may have to close one to make room): up to
 * three attempts.  Returns its time, or -1 if every attempt failed. */
static double bystander(const struct target *t) {
  int pfd[2];
  double took = -1;
  pid_t pid;
  if (pipe(pfd) != 0) return -1;
  pid = fork();
  if (pid == 0) {
    double t0 = now_s(), dt;
    long total = -1;
    close(pfd[0]);
    alarm(60);
    for (int attempt = 1; attempt <= 3 && total <= 0; attempt++) total = bystander_once(t, attempt);
    dt = now_s() - t0;
    if (total <= 0) _exit(1);
    (void)!write(pfd[1], &dt, sizeof dt);
    _exit(0);
  }
  close(pfd[1]);
  if (pid > 0) {
    int status;
    double dt;
    if (read(pfd[0], &dt, sizeof dt) == (ssize_t)sizeof dt) took = dt;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) took = -1;
  }
  close(pfd[0]);
  return took;
}

static void raise_nofile(long want) {
  struct rlimit r;
  getrlimit(RLIMIT_NOFILE, &r);
  if ((long)r.rlim_cur < want) {
    r.rlim_cur = (rlim_t)want;
    if ((long)r.rlim_max < want) r.rlim_max = (rlim_t)want;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

static int count_open(const int *fds, int n) {
  int open = 0;
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0 && !server_closed(fds[i])) open++;
  return open;
}

/* SRC may be a comma-separated list: connections take turns. */
static const char *pick_src(const char *list, int i, char *buf, size_t cap) {
  const char *p = list, *comma;
  int n = 1;
  for (const char *c = list; *c; c++) n += *c == ',';
  for (int k = i % n; k > 0; k--) p = strchr(p, ',') + 1;
  comma = strchr(p, ',');
  snprintf(buf, cap, "%.*s", comma ? (int)(comma - p) : (int)strlen(p), p);
  return buf;
}

static int cmd_siege(const struct target *t, const char *srcs, int nidle, int nslow) {
  char src[64];
  int *idle = calloc((size_t)nidle + 1, sizeof *idle);
  int *slow = calloc((size_t)nslow + 1, sizeof *slow);
  int made_idle = 0, made_slow = 0;
  double took, t0;
  raise_nofile(nidle + nslow + 256);
  t0 = now_s();
  for (int i = 0; i < nidle; i++) {
    idle[i] = connect_from(pick_src(srcs, i / 2, src, sizeof src), t->host,
                           i % 2 ? t->mountport : t->nfsport, 1);
    made_idle += idle[i] >= 0;
  }
  for (int i = 0; i < nslow; i++) {
    /* A record of 1000 bytes announced; its bytes come later. */
    static const uint8_t hdr[4] = {0x80, 0, 0x03, 0xe8};
    slow[i] = connect_from(pick_src(srcs, i / 2, src, sizeof src), t->host,
                           i % 2 ? t->mountport : t->nfsport, 0);
    if (slow[i] >= 0) {
      made_slow++;
      send(slow[i], hdr, 4, MSG_NOSIGNAL | MSG_DONTWAIT);
      fcntl(slow[i], F_SETFL, O_NONBLOCK);
    }
  }
  printf(
      "attacker %s: %d idle and %d slowloris connections opened in "
      "%.2f s\n",
      srcs, made_idle, made_slow, now_s() - t0);
  if (made_idle != nidle || made_slow != nslow)
    fail(
        "the siege did not happen: %d of %d idle and %d of %d "
        "slowloris connections opened",
        made_idle, nidle, made_slow, nslow);
  /* The slowloris ones trickle a byte a second while the bystander
   * runs. */
  pid_t trickler = fork();
  if (trickler == 0) {
    for (;;) {
      for (int i = 0; i < nslow; i++)
        if (slow[i] >= 0) send(slow[i], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      sleep(1);
    }
  }
  took = bystander(t);
  if (trickler > 0) {
    kill(trickler, SIGKILL);
    waitpid(trickler, NULL, 0);
  }
  printf(
      "server kept %d of %d idle and %d of %d slowloris "
      "connections\n",
      count_open(idle, nidle), made_idle, count_open(slow, nslow), made_slow);
  if (took < 0)
    fail(
        "bystander could not mount and read %s/%s during the "
        "siege",
        t->dir, t->file);
  else
    ok("bystander mounted and read %s/%s in %.3f s during the "
       "siege",
       t->dir, t->file, took);
  for (int i = 0; i < nidle; i++)
    if (idle[i] >= 0) close(idle[i]);
  for (int i = 0; i < nslow; i++)
    if (slow[i] >= 0) close(slow[i]);
  free(idle);
  free(slow);
  return g_failed ? 1 : 0;
}

/* NULL of the NFS program on fd, sent together with the tlen bytes of
 * tail: 0 when answered with SUCCESS. */
static int null_call_then(int fd, uint32_t xid, const void *tail, size_t tlen) {
  struct xdr x;
  uint8_t rep[256];
  call_header(&x, xid, 100003, 0);
  return roundtrip_then(fd, &x, tail, tlen, rep, sizeof rep) < 0 ? -1 : 0;
}

static int null_call(int fd, uint32_t xid) { return null_call_then(fd, xid, NULL, 0); }

/* Opens n connections from src, each answered a NULL call (counted in
 * *answered); with `busy`, each begins a record it never finishes, sent
 * with the NULL call -- so the server has read it when it answers. */
static int *open_own(const struct target *t, const char *src, int n, int busy, int *answered) {
  static const uint8_t hdr[5] = {0x80, 0, 0x03, 0xe8, 'x'};
  int *fds = calloc((size_t)n + 1, sizeof *fds);
  raise_nofile(n + 256);
  *answered = 0;
  for (int i = 0; i < n; i++) {
    fds[i] = connect_from(src, t->host, t->nfsport, 0);
    /* Answered: the server accepted it and let it in (one past
     * the share is closed, or makes room, at accept). */
    if (fds[i] >= 0 && null_call_then(fds[i], (uint32_t)i + 1, hdr, busy ? sizeof hdr : 0) == 0)
      (*answered)++;
  }
  return fds;
}

static void close_all(int *fds, int n) {
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) close(fds[i]);
  free(fds);
}

static int cmd_ownidle(const struct target *t, const char *src, int nidle) {
  int answered, fd;
  int *idle = open_own(t, src, nidle, 0, &answered);
  printf(
      "%s: %d idle connections answered a NULL call, %d still "
      "open\n",
      src, answered, count_open(idle, nidle));
  if (answered != nidle) fail("%d of %d connections from %s were answered", answered, nidle, src);
  fd = connect_from(src, t->host, t->nfsport, 0);
  if (fd < 0 || null_call(fd, 0x10000) != 0)
    fail(
        "a new connection from %s, after %d idle ones, was not "
        "answered",
        src, nidle);
  else
    ok("a new connection from %s got its NULL call answered "
       "beside %d idle ones",
       src, nidle);
  if (fd >= 0) close(fd);
  close_all(idle, nidle);
  return g_failed ? 1 : 0;
}

static int cmd_ownbusy(const struct target *t, const char *src, int nbusy) {
  int answered, fd;
  int *busy = open_own(t, src, nbusy, 1, &answered);
  printf(
      "%s: %d connections answered a NULL call, then began a "
      "record\n",
      src, answered);
  if (answered != nbusy) fail("%d of %d connections from %s were answered", answered, nbusy, src);
  fd = connect_from(src, t->host, t->nfsport, 0);
  if (fd >= 0 && null_call(fd, 0x10000) == 0)
    fail(
        "a new connection from %s, beside %d busy ones, was "
        "answered (none of them should have made room)",
        src, nbusy);
  else
    ok("a new connection from %s, beside %d busy ones, was "
       "refused",
       src, nbusy);
  if (fd >= 0) close(fd);
  if (count_open(busy, nbusy) != nbusy)
    fail("only %d of the %d busy connections from %s are open", count_open(busy, nbusy), nbusy,
         src);
  close_all(busy, nbusy);
  return g_failed ? 1 : 0;
}

static int cmd_expire(const struct target *t, const char *src, const char *kind, double maxsec) {
  struct fh f;
  double t0;
  int fd;
  if (strcmp(kind, "noread") == 0 && file_handle(t, src, &f) != 0) {
    fail("MNT + LOOKUP of %s/%s", t->dir, t->file);
    return 1;
  }
  fd = connect_from(src, t->host, t->nfsport, 0);
  if (fd < 0) {
    fail("connect from %s: %s", src, strerror(errno));
    return 1;
  }
  t0 = now_s();
  if (strcmp(kind, "noread") == 0) {
    /* A receive buffer that fills soon. */
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    flood_reads(fd, &f);
  } else if (strcmp(kind, "slow") == 0) {
    static const uint8_t hdr[4] = {0x80, 0, 0x03, 0xe8};
    send(fd, hdr, 4, MSG_NOSIGNAL);
  }
  /* Waits for the server's close; a slowloris trickles meanwhile. */
  while (!server_closed(fd)) {
    struct pollfd p = {fd, POLLIN, 0};
    if (now_s() - t0 > maxsec) {
      fail("%s connection still open after %.1f s", kind, maxsec);
      close(fd);
      return 1;
    }
    if (strcmp(kind, "slow") == 0) send(fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (strcmp(kind, "noread") == 0) {
      poll(NULL, 0, 100); /* replies pile up, unread */
      continue;
    }
    poll(&p, 1, 100);
  }
  ok("server closed the %s connection after %.2f s", kind, now_s() - t0);
  close(fd);
  return 0;
}

static int cmd_noread(const struct target *t, const char *src, int nconn, double secs) {
  struct fh f;
  pid_t *kids = calloc((size_t)nconn, sizeof *kids);
  int runs = 0, bad = 0;
  double worst = 0, t0;
  if (file_handle(t, src, &f) != 0) {
    fail("MNT + LOOKUP of %s/%s", t->dir, t->file);
    return 1;
  }
  for (int i = 0; i < nconn; i++) {
    kids[i] = fork();
    if (kids[i] == 0) {
      int fd = connect_from(src, t->host, t->nfsport, 0);
      int small = 4096;
      if (fd < 0) _exit(1);
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
      flood_reads(fd, &f);
      pause(); /* holds the connection, never reads */
      _exit(0);
    }
  }
  t0 = now_s();
  while (now_s() - t0 < secs) {
    double took = bystander(t);
    runs++;
    if (took < 0)
      bad++;
    else if (took > worst)
      worst = took;
  }
  for (int i = 0; i < nconn; i++)
    if (kids[i] > 0) {
      kill(kids[i], SIGKILL);
      waitpid(kids[i], NULL, 0);
    }
  free(kids);
  if (bad)
    fail(
        "%d of %d bystander runs failed while %d clients did not "
        "read their replies",
        bad, runs, nconn);
  else
    ok("%d bystander runs succeeded while %d clients did not read "
       "their replies (slowest %.3f s)",
       runs, nconn, worst);
  return bad ? 1 : 0;
}

/* The RPC header and arguments of an UNSTABLE WRITE of `count` bytes at
 * offset 0 to f, with its record mark: the data (count bytes) must follow
 * on the wire. */
static void write_call(struct xdr *x, uint32_t xid, const struct fh *f, uint32_t count) {
  uint32_t mark;
  call_header(x, xid, 100003, 7);
  put_opaque(x, f->b, f->len);
  put32(x, 0);
  put32(x, 0);     /* offset */
  put32(x, count); /* count */
  put32(x, 0);     /* UNSTABLE */
  put32(x, count); /* data<> length; the bytes follow */
  mark = htonl(0x80000000u | (uint32_t)(x->n - 4 + count));
  memcpy(x->b, &mark, 4);
}

/* Reads one reply record; 0 if it is an accepted call with NFS3_OK. */
static int ok_reply(int fd) {
  uint8_t rep[4096];
  uint32_t mark, len, st;
  if (recv_all(fd, &mark, 4) != 0) return -1;
  len = ntohl(mark) & 0x7fffffffu;
  if (len > sizeof rep || len < 28 || recv_all(fd, rep, len) != 0) return -1;
  memcpy(&st, rep + 24, 4);
  return ntohl(st) == 0 ? 0 : -1;
}

static uint8_t g_data[1u << 20];

/* One connection: NREQ pipelined 1 MiB WRITEs, then every reply. */
static int write_burst(const struct target *t, const char *src, const struct fh *f, int nreq) {
  struct xdr x;
  int fd = connect_from(src, t->host, t->nfsport, 0);
  if (fd < 0) return -1;
  for (int i = 0; i < nreq; i++) {
    write_call(&x, 1000 + (uint32_t)i, f, sizeof g_data);
    if (send_all(fd, x.b, x.n) != 0 || send_all(fd, g_data, sizeof g_data) != 0) {
      close(fd);
      return -1;
    }
  }
  for (int i = 0; i < nreq; i++) {
    if (ok_reply(fd) != 0) {
      close(fd);
      return -1;
    }
  }
  close(fd);
  return 0;
}

static int cmd_memwait(const struct target *t, const char *src) {
  struct fh f;
  struct xdr xa, xb;
  int a, b, bad = 0, status;
  pid_t pid;
  struct timeval tv = {60, 0};
  if (file_handle(t, src, &f) != 0) {
    fail("MNT + LOOKUP of %s/%s", t->dir, t->file);
    return 1;
  }
  b = connect_from(src, t->host, t->nfsport, 0);
  a = connect_from(src, t->host, t->nfsport, 0);
  if (a < 0 || b < 0) {
    fail("connect to the NFS port");
    return 1;
  }
  setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  write_call(&xa, 1, &f, sizeof g_data);
  write_call(&xb, 2, &f, sizeof g_data);
  send_all(b, xb.b, 1); /* B's record begins */
  usleep(1000000);
  send_all(a, xa.b, xa.n); /* A takes the memory and stalls */
  send_all(a, g_data, 1024);
  usleep(500000);
  pid = fork(); /* B: the rest, read by the server once it is charged */
  if (pid == 0)
    _exit(send_all(b, xb.b + 1, xb.n - 1) == 0 && send_all(b, g_data, sizeof g_data) == 0 ? 0 : 1);
  if (ok_reply(b) != 0) {
    fail(
        "the WRITE that waited for memory was not answered "
        "(reset by --record-timeout while it waited?)");
    bad = 1;
  } else {
    ok("the WRITE that waited for memory was answered");
  }
  /* Waits for the event (a reordering by a loaded machine lets A be
   * charged after B and reset 2 s later): at most 60 s. */
  for (int i = 0; i < 1200 && !server_closed(a); i++) usleep(50000);
  if (!server_closed(a)) {
    fail(
        "the connection that stalled holding the memory was not "
        "reset");
    bad = 1;
  } else {
    ok("the connection that stalled holding the memory was reset");
  }
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fail("sending the waiting WRITE");
    bad = 1;
  }
  close(a);
  close(b);
  return bad;
}

static int cmd_bigwrite(const struct target *t, const char *src, int nconn, int nreq) {
  struct fh f;
  int bad = 0;
  double t0 = now_s();
  if (file_handle(t, src, &f) != 0) {
    fail("MNT + LOOKUP of %s/%s", t->dir, t->file);
    return 1;
  }
  for (int i = 0; i < nconn; i++)
    if (fork() == 0) _exit(write_burst(t, src, &f, nreq) == 0 ? 0 : 1);
  for (int i = 0; i < nconn; i++) {
    int status;
    if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) bad++;
  }
  if (bad)
    fail("%d of %d connections did not get %d WRITE replies", bad, nconn, nreq);
  else
    ok("%d connections x %d pipelined 1 MiB WRITEs answered in "
       "%.2f s",
       nconn, nreq, now_s() - t0);
  return bad ? 1 : 0;
}

static int usage(void) {
  fprintf(stderr,
          "usage: nfs_siege siege URL SRC NIDLE NSLOW\n"
          "       nfs_siege ownidle URL SRC NIDLE\n"
          "       nfs_siege ownbusy URL SRC NBUSY\n"
          "       nfs_siege expire URL SRC idle|slow|noread MAXSEC\n"
          "       nfs_siege bigwrite URL SRC NCONN NREQ\n"
          "       nfs_siege noread URL SRC NCONN SECONDS\n"
          "       nfs_siege memwait URL SRC\n");
  return 2;
}

int main(int argc, char **argv) {
  struct target t;
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 3) return usage();
  if (parse_target(argv[2], &t) != 0) {
    fprintf(stderr,
            "nfs_siege: cannot use URL %s (want "
            "nfs://HOST/DIR/FILE?nfsport=N&mountport=M)\n",
            argv[2]);
    return 2;
  }
  if (strcmp(argv[1], "siege") == 0 && argc == 6)
    return cmd_siege(&t, argv[3], atoi(argv[4]), atoi(argv[5]));
  if (strcmp(argv[1], "ownidle") == 0 && argc == 5) return cmd_ownidle(&t, argv[3], atoi(argv[4]));
  if (strcmp(argv[1], "ownbusy") == 0 && argc == 5) return cmd_ownbusy(&t, argv[3], atoi(argv[4]));
  if (strcmp(argv[1], "expire") == 0 && argc == 6)
    return cmd_expire(&t, argv[3], argv[4], atof(argv[5]));
  if (strcmp(argv[1], "bigwrite") == 0 && argc == 6)
    return cmd_bigwrite(&t, argv[3], atoi(argv[4]), atoi(argv[5]));
  if (strcmp(argv[1], "memwait") == 0 && argc == 4) return cmd_memwait(&t, argv[3]);
  if (strcmp(argv[1], "noread") == 0 && argc == 6)
    return cmd_noread(&t, argv[3], atoi(argv[4]), atof(argv[5]));
  return usage();
}
