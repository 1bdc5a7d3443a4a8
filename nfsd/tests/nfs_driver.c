// SPDX-License-Identifier: BSD-2-Clause
/*
 * nfs_driver.c -- real-client integration driver for kcont-nfsd.
 *
 * Talks to a running NFSv3 server with libnfs 4.0.0: the high-level sync
 * API (nfs_mount, nfs_creat, nfs_pwrite, ...) where it reaches a procedure,
 * and the raw RPC API (rpc_nfs3_*_async on the context's rpc_context, then a
 * poll()/rpc_service() loop until the callback fired) for everything else
 * and for every check that needs the exact wire-level answer (status codes,
 * EOF flag, write verifiers, cookies).  Every reply is checked.
 *
 * Subcommands (URL = nfs://HOST/EXPORT?version=3&nfsport=N&mountport=M):
 *   all URL                 every NFSv3 procedure: each group below in
 *                           order, each with its own session and its own
 *                           fresh directory kcd-<group>-<pid>-<time> that
 *                           must be empty again after it; a line
 *                           "group NAME: N checks ok, M failed" per group
 *   GROUP URL               one group alone:
 *     lookup                NULL, LOOKUP . and .. at the root and of the
 *                           directory, MOUNT3 MNT of a subdirectory
 *     read_write            3 MiB file: CREATE, uneven WRITEs, COMMIT,
 *                           nfs_get_fh vs LOOKUP, READ back, EOF flags
 *     access                ACCESS of a file and a directory, nfs_access
 *     setattr               chmod, truncate down/up, guarded SETATTR
 *     write_commit          WRITE UNSTABLE + COMMIT verifiers, FILE_SYNC,
 *                           WRITE to a directory fails
 *     create                CREATE GUARDED, EXCLUSIVE, UNCHECKED
 *     rename                RENAME, identity kept, NOENT, onto a file
 *     link_remove           LINK, nlink counts, EXIST, REMOVE, NOENT
 *     symlink               SYMLINK, READLINK (also of a regular file)
 *     mknod                 FIFO, socket, NF3REG -> BADTYPE
 *     mkdir_rmdir           MKDIR, RMDIR, NOTEMPTY, NOTDIR, EXIST
 *     readdir               READDIR, READDIRPLUS, nfs_opendir list exactly
 *                           the entries of a small directory
 *     fsinfo                FSSTAT, nfs_statvfs64, FSINFO, PATHCONF
 *     bad_handles           forged/garbage handles, STALE after REMOVE
 *   groups                  the group names, one per line, in order
 *   dirlist URL N           N files; READDIRPLUS (libnfs), raw READDIR with
 *                           1 KiB pages, raw READDIRPLUS 512/4096: every name
 *                           exactly once, listings terminate
 *   save URL STATEFILE      FILE_SYNC file + UNSTABLE/COMMIT file; saves the
 *                           handles, checksums and the write verifier
 *   check URL STATEFILE     after a server kill -9 + restart: old handles
 *                           still work, data intact, write verifier changed
 *   stress URL NCLIENTS X   NCLIENTS forked clients; X = iterations per
 *                           client, or seconds when written as "10s"
 *   squash URL [UID]        root-created file is owned by UID (default 65534)
 *   ro URL NAME             read-only export: READ works, every change -> ROFS
 *
 * Output: "ok: <check>" on stdout per passed check, "FAIL: <what>: <detail>"
 * on stderr per failed one; exit status 0 only if nothing failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// libnfs.h first: the raw headers use its declarations.
// clang-format off
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-mount.h>
#include <nfsc/libnfs-raw-nfs.h>
// clang-format on

/*
 * libnfs 4.0 only forward-declares struct nfs_fh (what nfs_get_fh returns);
 * this is its layout from libnfs-private.h.  Only used to cross-check the
 * handle of an open file against a raw LOOKUP; its length is validated.
 */
struct nfs_fh {
  int len;
  char *val;
};

#define RPC_WAIT_SECONDS 60

/* ------------------------------------------------------------------ */
/* reporting                                                           */

static int g_failed;
static int g_passed;
static char g_tag[64]; /* prefix for forked stress clients */

static void ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ok(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("ok: %s", g_tag);
  vprintf(fmt, ap);
  putchar('\n');
  va_end(ap);
  g_passed++;
}

static void fail(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(const char *what, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fflush(stdout);
  fprintf(stderr, "FAIL: %s%s: ", g_tag, what);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  g_failed++;
}

/* check(cond, what, detail-format, ...) */
#define check(cond, what, ...) ((cond) ? (ok("%s", (what)), 1) : (fail((what), __VA_ARGS__), 0))

static const char *nfsstat_str(int s) {
  switch (s) {
    case NFS3_OK:
      return "NFS3_OK";
    case NFS3ERR_PERM:
      return "NFS3ERR_PERM";
    case NFS3ERR_NOENT:
      return "NFS3ERR_NOENT";
    case NFS3ERR_IO:
      return "NFS3ERR_IO";
    case NFS3ERR_NXIO:
      return "NFS3ERR_NXIO";
    case NFS3ERR_ACCES:
      return "NFS3ERR_ACCES";
    case NFS3ERR_EXIST:
      return "NFS3ERR_EXIST";
    case NFS3ERR_XDEV:
      return "NFS3ERR_XDEV";
    case NFS3ERR_NODEV:
      return "NFS3ERR_NODEV";
    case NFS3ERR_NOTDIR:
      return "NFS3ERR_NOTDIR";
    case NFS3ERR_ISDIR:
      return "NFS3ERR_ISDIR";
    case NFS3ERR_INVAL:
      return "NFS3ERR_INVAL";
    case NFS3ERR_FBIG:
      return "NFS3ERR_FBIG";
    case NFS3ERR_NOSPC:
      return "NFS3ERR_NOSPC";
    case NFS3ERR_ROFS:
      return "NFS3ERR_ROFS";
    case NFS3ERR_MLINK:
      return "NFS3ERR_MLINK";
    case NFS3ERR_NAMETOOLONG:
      return "NFS3ERR_NAMETOOLONG";
    case NFS3ERR_NOTEMPTY:
      return "NFS3ERR_NOTEMPTY";
    case NFS3ERR_DQUOT:
      return "NFS3ERR_DQUOT";
    case NFS3ERR_STALE:
      return "NFS3ERR_STALE";
    case NFS3ERR_REMOTE:
      return "NFS3ERR_REMOTE";
    case NFS3ERR_BADHANDLE:
      return "NFS3ERR_BADHANDLE";
    case NFS3ERR_NOT_SYNC:
      return "NFS3ERR_NOT_SYNC";
    case NFS3ERR_BAD_COOKIE:
      return "NFS3ERR_BAD_COOKIE";
    case NFS3ERR_NOTSUPP:
      return "NFS3ERR_NOTSUPP";
    case NFS3ERR_TOOSMALL:
      return "NFS3ERR_TOOSMALL";
    case NFS3ERR_SERVERFAULT:
      return "NFS3ERR_SERVERFAULT";
    case NFS3ERR_BADTYPE:
      return "NFS3ERR_BADTYPE";
    case NFS3ERR_JUKEBOX:
      return "NFS3ERR_JUKEBOX";
    default:
      return "(unknown nfsstat3)";
  }
}

/* ------------------------------------------------------------------ */
/* data helpers                                                        */

static uint64_t fnv1a(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

static uint64_t rng_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *s = x;
  return x;
}

static void fill_pattern(unsigned char *buf, size_t n, uint64_t seed) {
  uint64_t s = seed | 1;
  for (size_t i = 0; i < n; i++) {
    if ((i & 7) == 0) rng_next(&s);
    buf[i] = (unsigned char)(s >> ((i & 7) * 8));
  }
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "FAIL: malloc: out of memory (%zu bytes)\n", n);
    exit(2);
  }
  return p;
}

static char *xstrdup(const char *s) {
  char *p = strdup(s ? s : "");
  if (!p) {
    fprintf(stderr, "FAIL: strdup: out of memory\n");
    exit(2);
  }
  return p;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* raw RPC layer                                                       */

struct fh {
  uint32_t len;
  unsigned char data[NFS3_FHSIZE];
};

struct dent {
  char *nm;
  uint64_t fileid;
  uint64_t cookie;
  int has_attr;
  fattr3 attr;
  int has_fh;
  struct fh fh;
};

enum proc {
  P_CONNECT,
  P_MNT,
  P_NULL,
  P_GETATTR,
  P_SETATTR,
  P_LOOKUP,
  P_ACCESS,
  P_READLINK,
  P_READ,
  P_WRITE,
  P_CREATE,
  P_MKDIR,
  P_SYMLINK,
  P_MKNOD,
  P_REMOVE,
  P_RMDIR,
  P_RENAME,
  P_LINK,
  P_READDIR,
  P_READDIRPLUS,
  P_FSSTAT,
  P_FSINFO,
  P_PATHCONF,
  P_COMMIT
};

struct res {
  enum proc proc;
  int done;
  int rpc_status; /* RPC_STATUS_* or -1 if it was never sent */
  char err[512];
  int status;            /* nfsstat3 (or mountstat3) */
  const char *proto_err; /* malformed reply noticed in the callback */
  int has_attr;          /* object (post-op) attributes */
  fattr3 attr;
  int has_before; /* object/dir pre-op attributes (wcc) */
  wcc_attr before;
  int has_dattr; /* directory post-op attributes */
  fattr3 dattr;
  int has_fh;
  struct fh fh;
  uint32_t count;
  int eof;
  unsigned char *data;
  uint32_t data_len;
  int committed;
  unsigned char verf[NFS3_WRITEVERFSIZE];
  char *path;
  uint32_t access;
  FSINFO3resok fsinfo;
  FSSTAT3resok fsstat;
  PATHCONF3resok pathconf;
  unsigned char cookieverf[NFS3_COOKIEVERFSIZE];
  struct dent *ents;
  int nents;
};

static void res_free(struct res *r) {
  free(r->data);
  free(r->path);
  for (int i = 0; i < r->nents; i++) free(r->ents[i].nm);
  free(r->ents);
  r->data = NULL;
  r->path = NULL;
  r->ents = NULL;
  r->nents = 0;
}

static void res_init(struct res *r, enum proc p) {
  res_free(r);
  memset(r, 0, sizeof *r);
  r->proc = p;
}

static void take_fh(struct res *r, struct fh *d, const char *val, u_int len) {
  if (len > NFS3_FHSIZE) {
    r->proto_err = "file handle longer than NFS3_FHSIZE";
    d->len = 0;
    return;
  }
  d->len = len;
  if (len) memcpy(d->data, val, len);
}

static void take_post_attr(int *has, fattr3 *dst, const post_op_attr *p) {
  *has = p->attributes_follow ? 1 : 0;
  if (*has) *dst = p->post_op_attr_u.attributes;
}

static void take_obj_wcc(struct res *r, const wcc_data *w) {
  r->has_before = w->before.attributes_follow ? 1 : 0;
  if (r->has_before) r->before = w->before.pre_op_attr_u.attributes;
  take_post_attr(&r->has_attr, &r->attr, &w->after);
}

static void take_dir_wcc(struct res *r, const wcc_data *w) {
  r->has_before = w->before.attributes_follow ? 1 : 0;
  if (r->has_before) r->before = w->before.pre_op_attr_u.attributes;
  take_post_attr(&r->has_dattr, &r->dattr, &w->after);
}

static void take_new_obj(struct res *r, const post_op_fh3 *o, const post_op_attr *a,
                         const wcc_data *dw) {
  if (o->handle_follows) {
    r->has_fh = 1;
    take_fh(r, &r->fh, o->post_op_fh3_u.handle.data.data_val,
            o->post_op_fh3_u.handle.data.data_len);
  }
  take_post_attr(&r->has_attr, &r->attr, a);
  take_dir_wcc(r, dw);
}

static void rpc_callback(struct rpc_context *rpc, int status, void *data, void *priv) {
  struct res *r = priv;
  r->done = 1;
  r->rpc_status = status;
  if (status != RPC_STATUS_SUCCESS) {
    const char *msg =
        (status == RPC_STATUS_ERROR && data) ? (const char *)data : rpc_get_error(rpc);
    snprintf(r->err, sizeof r->err, "rpc status %d (%s)", status, msg ? msg : "no detail");
    return;
  }
  if (!data && r->proc != P_CONNECT && r->proc != P_NULL) {
    r->proto_err = "reply callback without data";
    return;
  }
  switch (r->proc) {
    case P_CONNECT:
    case P_NULL:
      break;
    case P_MNT: {
      mountres3 *m = data;
      r->status = m->fhs_status;
      if (m->fhs_status == MNT3_OK) {
        r->has_fh = 1;
        take_fh(r, &r->fh, m->mountres3_u.mountinfo.fhandle.fhandle3_val,
                m->mountres3_u.mountinfo.fhandle.fhandle3_len);
      }
      break;
    }
    case P_GETATTR: {
      GETATTR3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) {
        r->has_attr = 1;
        r->attr = x->GETATTR3res_u.resok.obj_attributes;
      }
      break;
    }
    case P_SETATTR: {
      SETATTR3res *x = data;
      r->status = x->status;
      take_obj_wcc(r, x->status == NFS3_OK ? &x->SETATTR3res_u.resok.obj_wcc
                                           : &x->SETATTR3res_u.resfail.obj_wcc);
      break;
    }
    case P_LOOKUP: {
      LOOKUP3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) {
        LOOKUP3resok *k = &x->LOOKUP3res_u.resok;
        r->has_fh = 1;
        take_fh(r, &r->fh, k->object.data.data_val, k->object.data.data_len);
        take_post_attr(&r->has_attr, &r->attr, &k->obj_attributes);
        take_post_attr(&r->has_dattr, &r->dattr, &k->dir_attributes);
      } else {
        take_post_attr(&r->has_dattr, &r->dattr, &x->LOOKUP3res_u.resfail.dir_attributes);
      }
      break;
    }
    case P_ACCESS: {
      ACCESS3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) {
        r->access = x->ACCESS3res_u.resok.access;
        take_post_attr(&r->has_attr, &r->attr, &x->ACCESS3res_u.resok.obj_attributes);
      }
      break;
    }
    case P_READLINK: {
      READLINK3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) {
        r->path = xstrdup(x->READLINK3res_u.resok.data);
        take_post_attr(&r->has_attr, &r->attr, &x->READLINK3res_u.resok.symlink_attributes);
      }
      break;
    }
    case P_READ: {
      READ3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) {
        READ3resok *k = &x->READ3res_u.resok;
        r->count = k->count;
        r->eof = k->eof ? 1 : 0;
        r->data_len = k->data.data_len;
        r->data = xmalloc(k->data.data_len);
        if (k->data.data_len) memcpy(r->data, k->data.data_val, k->data.data_len);
        take_post_attr(&r->has_attr, &r->attr, &k->file_attributes);
      }
      break;
    }
    case P_WRITE: {
      WRITE3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) {
        WRITE3resok *k = &x->WRITE3res_u.resok;
        r->count = k->count;
        r->committed = k->committed;
        memcpy(r->verf, k->verf, sizeof r->verf);
        take_obj_wcc(r, &k->file_wcc);
      } else {
        take_obj_wcc(r, &x->WRITE3res_u.resfail.file_wcc);
      }
      break;
    }
    case P_COMMIT: {
      COMMIT3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) {
        memcpy(r->verf, x->COMMIT3res_u.resok.verf, sizeof r->verf);
        take_obj_wcc(r, &x->COMMIT3res_u.resok.file_wcc);
      }
      break;
    }
    case P_CREATE: {
      CREATE3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK)
        take_new_obj(r, &x->CREATE3res_u.resok.obj, &x->CREATE3res_u.resok.obj_attributes,
                     &x->CREATE3res_u.resok.dir_wcc);
      else
        take_dir_wcc(r, &x->CREATE3res_u.resfail.dir_wcc);
      break;
    }
    case P_MKDIR: {
      MKDIR3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK)
        take_new_obj(r, &x->MKDIR3res_u.resok.obj, &x->MKDIR3res_u.resok.obj_attributes,
                     &x->MKDIR3res_u.resok.dir_wcc);
      break;
    }
    case P_SYMLINK: {
      SYMLINK3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK)
        take_new_obj(r, &x->SYMLINK3res_u.resok.obj, &x->SYMLINK3res_u.resok.obj_attributes,
                     &x->SYMLINK3res_u.resok.dir_wcc);
      break;
    }
    case P_MKNOD: {
      MKNOD3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK)
        take_new_obj(r, &x->MKNOD3res_u.resok.obj, &x->MKNOD3res_u.resok.obj_attributes,
                     &x->MKNOD3res_u.resok.dir_wcc);
      break;
    }
    case P_REMOVE: {
      REMOVE3res *x = data;
      r->status = x->status;
      take_dir_wcc(r, x->status == NFS3_OK ? &x->REMOVE3res_u.resok.dir_wcc
                                           : &x->REMOVE3res_u.resfail.dir_wcc);
      break;
    }
    case P_RMDIR: {
      RMDIR3res *x = data;
      r->status = x->status;
      take_dir_wcc(r, x->status == NFS3_OK ? &x->RMDIR3res_u.resok.dir_wcc
                                           : &x->RMDIR3res_u.resfail.dir_wcc);
      break;
    }
    case P_RENAME: {
      RENAME3res *x = data;
      r->status = x->status;
      break;
    }
    case P_LINK: {
      LINK3res *x = data;
      r->status = x->status;
      take_post_attr(&r->has_attr, &r->attr,
                     x->status == NFS3_OK ? &x->LINK3res_u.resok.file_attributes
                                          : &x->LINK3res_u.resfail.file_attributes);
      break;
    }
    case P_READDIR: {
      READDIR3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) {
        READDIR3resok *k = &x->READDIR3res_u.resok;
        int n = 0, i = 0;
        memcpy(r->cookieverf, k->cookieverf, sizeof r->cookieverf);
        r->eof = k->reply.eof ? 1 : 0;
        take_post_attr(&r->has_dattr, &r->dattr, &k->dir_attributes);
        /* libnfs may hand out entries at 4-byte aligned
         * addresses: copy each one out before reading it */
        for (const void *p = k->reply.entries; p; n++) {
          entry3 e;
          memcpy(&e, p, sizeof e);
          p = e.nextentry;
        }
        r->ents = calloc((size_t)n + 1, sizeof *r->ents);
        if (!r->ents) {
          r->proto_err = "out of memory";
          break;
        }
        for (const void *p = k->reply.entries; p && i < n; i++) {
          entry3 e;
          memcpy(&e, p, sizeof e);
          r->ents[i].nm = xstrdup(e.name);
          r->ents[i].fileid = e.fileid;
          r->ents[i].cookie = e.cookie;
          p = e.nextentry;
        }
        r->nents = n;
      }
      break;
    }
    case P_READDIRPLUS: {
      READDIRPLUS3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) {
        READDIRPLUS3resok *k = &x->READDIRPLUS3res_u.resok;
        int n = 0, i = 0;
        memcpy(r->cookieverf, k->cookieverf, sizeof r->cookieverf);
        r->eof = k->reply.eof ? 1 : 0;
        take_post_attr(&r->has_dattr, &r->dattr, &k->dir_attributes);
        for (const void *p = k->reply.entries; p; n++) {
          entryplus3 e;
          memcpy(&e, p, sizeof e);
          p = e.nextentry;
        }
        r->ents = calloc((size_t)n + 1, sizeof *r->ents);
        if (!r->ents) {
          r->proto_err = "out of memory";
          break;
        }
        for (const void *p = k->reply.entries; p && i < n; i++) {
          struct dent *d = &r->ents[i];
          entryplus3 e;
          memcpy(&e, p, sizeof e);
          d->nm = xstrdup(e.name);
          d->fileid = e.fileid;
          d->cookie = e.cookie;
          take_post_attr(&d->has_attr, &d->attr, &e.name_attributes);
          if (e.name_handle.handle_follows) {
            d->has_fh = 1;
            take_fh(r, &d->fh, e.name_handle.post_op_fh3_u.handle.data.data_val,
                    e.name_handle.post_op_fh3_u.handle.data.data_len);
          }
          p = e.nextentry;
        }
        r->nents = n;
      }
      break;
    }
    case P_FSSTAT: {
      FSSTAT3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) r->fsstat = x->FSSTAT3res_u.resok;
      break;
    }
    case P_FSINFO: {
      FSINFO3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) r->fsinfo = x->FSINFO3res_u.resok;
      break;
    }
    case P_PATHCONF: {
      PATHCONF3res *x = data;
      r->status = x->status;
      if (x->status == NFS3_OK) r->pathconf = x->PATHCONF3res_u.resok;
      break;
    }
  }
}

/* Drive the rpc context until r's callback fired. 0 = reply received. */
static int wait_res(struct rpc_context *rpc, struct res *r) {
  double deadline = now_s() + RPC_WAIT_SECONDS;
  while (!r->done) {
    struct pollfd p;
    int n;
    p.fd = rpc_get_fd(rpc);
    p.events = (short)rpc_which_events(rpc);
    p.revents = 0;
    n = poll(&p, 1, 100);
    if (n < 0 && errno != EINTR) {
      snprintf(r->err, sizeof r->err, "poll: %s", strerror(errno));
      r->rpc_status = -1;
      return -1;
    }
    if (rpc_service(rpc, n > 0 ? p.revents : 0) < 0) {
      if (r->done) break;
      snprintf(r->err, sizeof r->err, "rpc_service failed (connection lost?): %s",
               rpc_get_error(rpc));
      r->rpc_status = -1;
      return -1;
    }
    if (!r->done && now_s() > deadline) {
      snprintf(r->err, sizeof r->err, "no reply within %d s", RPC_WAIT_SECONDS);
      r->rpc_status = -1;
      return -1;
    }
  }
  if (r->rpc_status != RPC_STATUS_SUCCESS) return -1;
  if (r->proto_err) {
    snprintf(r->err, sizeof r->err, "malformed reply: %s", r->proto_err);
    return -1;
  }
  return 0;
}

static int issued(struct rpc_context *rpc, struct res *r, int rc, const char *fn) {
  if (rc != 0) {
    snprintf(r->err, sizeof r->err, "%s could not be queued: %s", fn, rpc_get_error(rpc));
    r->rpc_status = -1;
    return -1;
  }
  return wait_res(rpc, r);
}

static nfs_fh3 wire_fh(const struct fh *f) {
  nfs_fh3 x;
  x.data.data_len = f->len;
  x.data.data_val = (char *)f->data;
  return x;
}

static int r_null(struct rpc_context *rpc, struct res *r) {
  res_init(r, P_NULL);
  return issued(rpc, r, rpc_nfs3_null_async(rpc, rpc_callback, r), "NULL");
}

static int r_getattr(struct rpc_context *rpc, const struct fh *f, struct res *r) {
  GETATTR3args a;
  res_init(r, P_GETATTR);
  a.object = wire_fh(f);
  return issued(rpc, r, rpc_nfs3_getattr_async(rpc, rpc_callback, &a, r), "GETATTR");
}

static sattr3 sattr_none(void) {
  sattr3 s;
  memset(&s, 0, sizeof s);
  s.atime.set_it = DONT_CHANGE;
  s.mtime.set_it = DONT_CHANGE;
  return s;
}

static sattr3 sattr_mode(uint32_t mode) {
  sattr3 s = sattr_none();
  s.mode.set_it = 1;
  s.mode.set_mode3_u.mode = mode;
  return s;
}

static int r_setattr(struct rpc_context *rpc, const struct fh *f, const sattr3 *sa,
                     const nfstime3 *guard, struct res *r) {
  SETATTR3args a;
  res_init(r, P_SETATTR);
  memset(&a, 0, sizeof a);
  a.object = wire_fh(f);
  a.new_attributes = *sa;
  if (guard) {
    a.guard.check = 1;
    a.guard.sattrguard3_u.obj_ctime = *guard;
  }
  return issued(rpc, r, rpc_nfs3_setattr_async(rpc, rpc_callback, &a, r), "SETATTR");
}

static int r_lookup(struct rpc_context *rpc, const struct fh *dir, const char *nm, struct res *r) {
  LOOKUP3args a;
  res_init(r, P_LOOKUP);
  a.what.dir = wire_fh(dir);
  a.what.name = (char *)nm;
  return issued(rpc, r, rpc_nfs3_lookup_async(rpc, rpc_callback, &a, r), "LOOKUP");
}

static int r_access(struct rpc_context *rpc, const struct fh *f, uint32_t mask, struct res *r) {
  ACCESS3args a;
  res_init(r, P_ACCESS);
  a.object = wire_fh(f);
  a.access = mask;
  return issued(rpc, r, rpc_nfs3_access_async(rpc, rpc_callback, &a, r), "ACCESS");
}

static int r_readlink(struct rpc_context *rpc, const struct fh *f, struct res *r) {
  READLINK3args a;
  res_init(r, P_READLINK);
  a.symlink = wire_fh(f);
  return issued(rpc, r, rpc_nfs3_readlink_async(rpc, rpc_callback, &a, r), "READLINK");
}

static int r_read(struct rpc_context *rpc, const struct fh *f, uint64_t off, uint32_t count,
                  struct res *r) {
  READ3args a;
  res_init(r, P_READ);
  a.file = wire_fh(f);
  a.offset = off;
  a.count = count;
  return issued(rpc, r, rpc_nfs3_read_async(rpc, rpc_callback, &a, r), "READ");
}

static int r_write(struct rpc_context *rpc, const struct fh *f, uint64_t off, const void *buf,
                   uint32_t len, int stable, struct res *r) {
  WRITE3args a;
  res_init(r, P_WRITE);
  a.file = wire_fh(f);
  a.offset = off;
  a.count = len;
  a.stable = (stable_how)stable;
  a.data.data_len = len;
  a.data.data_val = (char *)buf;
  return issued(rpc, r, rpc_nfs3_write_async(rpc, rpc_callback, &a, r), "WRITE");
}

static int r_commit(struct rpc_context *rpc, const struct fh *f, uint64_t off, uint32_t count,
                    struct res *r) {
  COMMIT3args a;
  res_init(r, P_COMMIT);
  a.file = wire_fh(f);
  a.offset = off;
  a.count = count;
  return issued(rpc, r, rpc_nfs3_commit_async(rpc, rpc_callback, &a, r), "COMMIT");
}

/* how: UNCHECKED/GUARDED use mode; EXCLUSIVE uses verf (8 bytes) */
static int r_create(struct rpc_context *rpc, const struct fh *dir, const char *nm, int how,
                    uint32_t mode, const unsigned char *verf, struct res *r) {
  CREATE3args a;
  res_init(r, P_CREATE);
  memset(&a, 0, sizeof a);
  a.where.dir = wire_fh(dir);
  a.where.name = (char *)nm;
  a.how.mode = (createmode3)how;
  if (how == EXCLUSIVE)
    memcpy(a.how.createhow3_u.verf, verf, NFS3_CREATEVERFSIZE);
  else
    a.how.createhow3_u.obj_attributes = sattr_mode(mode);
  return issued(rpc, r, rpc_nfs3_create_async(rpc, rpc_callback, &a, r), "CREATE");
}

static int r_mkdir(struct rpc_context *rpc, const struct fh *dir, const char *nm, uint32_t mode,
                   struct res *r) {
  MKDIR3args a;
  res_init(r, P_MKDIR);
  a.where.dir = wire_fh(dir);
  a.where.name = (char *)nm;
  a.attributes = sattr_mode(mode);
  return issued(rpc, r, rpc_nfs3_mkdir_async(rpc, rpc_callback, &a, r), "MKDIR");
}

static int r_symlink(struct rpc_context *rpc, const struct fh *dir, const char *nm,
                     const char *target, struct res *r) {
  SYMLINK3args a;
  res_init(r, P_SYMLINK);
  a.where.dir = wire_fh(dir);
  a.where.name = (char *)nm;
  a.symlink.symlink_attributes = sattr_none();
  a.symlink.symlink_data = (char *)target;
  return issued(rpc, r, rpc_nfs3_symlink_async(rpc, rpc_callback, &a, r), "SYMLINK");
}

static int r_mknod(struct rpc_context *rpc, const struct fh *dir, const char *nm, int type,
                   uint32_t mode, struct res *r) {
  MKNOD3args a;
  res_init(r, P_MKNOD);
  memset(&a, 0, sizeof a);
  a.where.dir = wire_fh(dir);
  a.where.name = (char *)nm;
  a.what.type = (ftype3)type;
  switch (type) {
    case NF3CHR:
    case NF3BLK:
      a.what.mknoddata3_u.chr_device.dev_attributes = sattr_mode(mode);
      break;
    case NF3SOCK:
      a.what.mknoddata3_u.sock_attributes = sattr_mode(mode);
      break;
    case NF3FIFO:
      a.what.mknoddata3_u.pipe_attributes = sattr_mode(mode);
      break;
    default:
      break;
  }
  return issued(rpc, r, rpc_nfs3_mknod_async(rpc, rpc_callback, &a, r), "MKNOD");
}

static int r_remove(struct rpc_context *rpc, const struct fh *dir, const char *nm, struct res *r) {
  REMOVE3args a;
  res_init(r, P_REMOVE);
  a.object.dir = wire_fh(dir);
  a.object.name = (char *)nm;
  return issued(rpc, r, rpc_nfs3_remove_async(rpc, rpc_callback, &a, r), "REMOVE");
}

static int r_rmdir(struct rpc_context *rpc, const struct fh *dir, const char *nm, struct res *r) {
  RMDIR3args a;
  res_init(r, P_RMDIR);
  a.object.dir = wire_fh(dir);
  a.object.name = (char *)nm;
  return issued(rpc, r, rpc_nfs3_rmdir_async(rpc, rpc_callback, &a, r), "RMDIR");
}

static int r_rename(struct rpc_context *rpc, const struct fh *fdir, const char *fname,
                    const struct fh *tdir, const char *tname, struct res *r) {
  RENAME3args a;
  res_init(r, P_RENAME);
  a.from.dir = wire_fh(fdir);
  a.from.name = (char *)fname;
  a.to.dir = wire_fh(tdir);
  a.to.name = (char *)tname;
  return issued(rpc, r, rpc_nfs3_rename_async(rpc, rpc_callback, &a, r), "RENAME");
}

static int r_link(struct rpc_context *rpc, const struct fh *f, const struct fh *dir, const char *nm,
                  struct res *r) {
  LINK3args a;
  res_init(r, P_LINK);
  a.file = wire_fh(f);
  a.link.dir = wire_fh(dir);
  a.link.name = (char *)nm;
  return issued(rpc, r, rpc_nfs3_link_async(rpc, rpc_callback, &a, r), "LINK");
}

static int r_readdir(struct rpc_context *rpc, const struct fh *dir, uint64_t cookie,
                     const unsigned char *verf, uint32_t count, struct res *r) {
  READDIR3args a;
  res_init(r, P_READDIR);
  a.dir = wire_fh(dir);
  a.cookie = cookie;
  memcpy(a.cookieverf, verf, NFS3_COOKIEVERFSIZE);
  a.count = count;
  return issued(rpc, r, rpc_nfs3_readdir_async(rpc, rpc_callback, &a, r), "READDIR");
}

static int r_readdirplus(struct rpc_context *rpc, const struct fh *dir, uint64_t cookie,
                         const unsigned char *verf, uint32_t dircount, uint32_t maxcount,
                         struct res *r) {
  READDIRPLUS3args a;
  res_init(r, P_READDIRPLUS);
  a.dir = wire_fh(dir);
  a.cookie = cookie;
  memcpy(a.cookieverf, verf, NFS3_COOKIEVERFSIZE);
  a.dircount = dircount;
  a.maxcount = maxcount;
  return issued(rpc, r, rpc_nfs3_readdirplus_async(rpc, rpc_callback, &a, r), "READDIRPLUS");
}

static int r_fsstat(struct rpc_context *rpc, const struct fh *f, struct res *r) {
  FSSTAT3args a;
  res_init(r, P_FSSTAT);
  a.fsroot = wire_fh(f);
  return issued(rpc, r, rpc_nfs3_fsstat_async(rpc, rpc_callback, &a, r), "FSSTAT");
}

static int r_fsinfo(struct rpc_context *rpc, const struct fh *f, struct res *r) {
  FSINFO3args a;
  res_init(r, P_FSINFO);
  a.fsroot = wire_fh(f);
  return issued(rpc, r, rpc_nfs3_fsinfo_async(rpc, rpc_callback, &a, r), "FSINFO");
}

static int r_pathconf(struct rpc_context *rpc, const struct fh *f, struct res *r) {
  PATHCONF3args a;
  res_init(r, P_PATHCONF);
  a.object = wire_fh(f);
  return issued(rpc, r, rpc_nfs3_pathconf_async(rpc, rpc_callback, &a, r), "PATHCONF");
}

/* MOUNT3 MNT over its own connection (port 0 = ask the portmapper). */
static int r_mnt(const char *server, int port, const char *path, struct res *r) {
  struct rpc_context *m = rpc_init_context();
  int rc;
  if (!m) {
    res_init(r, P_MNT);
    snprintf(r->err, sizeof r->err, "rpc_init_context failed");
    r->rpc_status = -1;
    return -1;
  }
  res_init(r, P_CONNECT);
  if (port > 0)
    rc = rpc_connect_port_async(m, server, port, MOUNT_PROGRAM, MOUNT_V3, rpc_callback, r);
  else
    rc = rpc_connect_program_async(m, server, MOUNT_PROGRAM, MOUNT_V3, rpc_callback, r);
  if (issued(m, r, rc, "connect to MOUNT") != 0) {
    rpc_destroy_context(m);
    return -1;
  }
  res_init(r, P_MNT);
  rc = issued(m, r, rpc_mount3_mnt_async(m, rpc_callback, (char *)path, r), "MOUNT3 MNT");
  rpc_destroy_context(m);
  return rc;
}

/*
 * Report helpers: "the RPC got an answer with status want".  On mismatch
 * (or a transport error) one FAIL line with all details is printed.
 */
static int expect(const char *what, int rc, const struct res *r, int want) {
  if (rc != 0) {
    fail(what, "no valid reply: %s", r->err);
    return 0;
  }
  if (r->status != want) {
    fail(what, "server answered %s (%d), expected %s", nfsstat_str(r->status), r->status,
         nfsstat_str(want));
    return 0;
  }
  ok("%s", what);
  return 1;
}

static int expect_quiet(const char *what, int rc, const struct res *r, int want) {
  if (rc != 0) {
    fail(what, "no valid reply: %s", r->err);
    return 0;
  }
  if (r->status != want) {
    fail(what, "server answered %s (%d), expected %s", nfsstat_str(r->status), r->status,
         nfsstat_str(want));
    return 0;
  }
  return 1;
}

static void hex(const unsigned char *b, size_t n, char *out) {
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = d[b[i] >> 4];
    out[2 * i + 1] = d[b[i] & 15];
  }
  out[2 * n] = 0;
}

static int unhex(const char *s, unsigned char *out, size_t max) {
  size_t n = strlen(s);
  if (n % 2 || n / 2 > max) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v;
    if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
    out[i] = (unsigned char)v;
  }
  return (int)(n / 2);
}

/* ------------------------------------------------------------------ */
/* session: high-level mount + raw handles                              */

struct sess {
  struct nfs_context *nfs;
  struct rpc_context *rpc;
  char server[256];
  char export[4096];
  int mountport;
  struct fh root;
  fattr3 rootattr;
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

static int sess_open(struct sess *s, const char *url, int uid, int gid) {
  struct nfs_url *u;
  struct res r = {0};
  int rc;

  memset(s, 0, sizeof *s);
  s->nfs = nfs_init_context();
  if (!s->nfs) {
    fail("nfs_init_context", "returned NULL");
    return -1;
  }
  nfs_set_timeout(s->nfs, RPC_WAIT_SECONDS * 1000);
  nfs_set_autoreconnect(s->nfs, 0);
  if (uid >= 0) nfs_set_uid(s->nfs, uid);
  if (gid >= 0) nfs_set_gid(s->nfs, gid);
  u = nfs_parse_url_dir(s->nfs, url);
  if (!u || !u->server || !u->path) {
    fail("parse URL", "%s: %s", url, nfs_get_error(s->nfs));
    if (u) nfs_destroy_url(u);
    return -1;
  }
  snprintf(s->server, sizeof s->server, "%s", u->server);
  snprintf(s->export, sizeof s->export, "%s", u->path);
  nfs_destroy_url(u);
  s->mountport = url_int_param(url, "mountport");

  rc = nfs_mount(s->nfs, s->server, s->export);
  if (rc != 0) {
    fail("nfs_mount", "%s:%s: %d %s", s->server, s->export, rc, nfs_get_error(s->nfs));
    return -1;
  }
  s->rpc = nfs_get_rpc_context(s->nfs);

  rc = r_mnt(s->server, s->mountport, s->export, &r);
  if (rc != 0 || r.status != MNT3_OK || r.fh.len == 0) {
    fail("raw MOUNT3 MNT of export", "rc=%d mountstat=%d %s", rc, r.status, r.err);
    res_free(&r);
    return -1;
  }
  s->root = r.fh;
  rc = r_getattr(s->rpc, &s->root, &r);
  if (!expect_quiet("GETATTR of export root", rc, &r, NFS3_OK)) {
    res_free(&r);
    return -1;
  }
  s->rootattr = r.attr;
  res_free(&r);
  if (s->rootattr.type != NF3DIR) {
    fail("GETATTR of export root", "type %d, expected NF3DIR", (int)s->rootattr.type);
    return -1;
  }
  return 0;
}

static void sess_close(struct sess *s) {
  if (s->nfs) {
    nfs_destroy_context(s->nfs);
    s->nfs = NULL;
  }
}

/* raw LOOKUP that must succeed; returns 0 and fills *out */
static int lookup_fh(struct sess *s, const struct fh *dir, const char *nm, struct fh *out,
                     fattr3 *attr, const char *what) {
  struct res r = {0};
  int rc = r_lookup(s->rpc, dir, nm, &r);
  int good = expect_quiet(what, rc, &r, NFS3_OK);
  if (good) {
    *out = r.fh;
    if (attr) {
      if (r.has_attr) {
        *attr = r.attr;
      } else {
        rc = r_getattr(s->rpc, out, &r);
        good = expect_quiet(what, rc, &r, NFS3_OK);
        if (good) *attr = r.attr;
      }
    }
  }
  res_free(&r);
  return good ? 0 : -1;
}

static int getattr_ok(struct sess *s, const struct fh *f, fattr3 *attr, const char *what) {
  struct res r = {0};
  int rc = r_getattr(s->rpc, f, &r);
  int good = expect_quiet(what, rc, &r, NFS3_OK);
  if (good) *attr = r.attr;
  res_free(&r);
  return good ? 0 : -1;
}

/* Read a whole file through raw READs of chunk bytes; checks EOF flags. */
static unsigned char *raw_read_all(struct sess *s, const struct fh *f, uint64_t expect_size,
                                   uint32_t chunk, const char *what) {
  unsigned char *buf = xmalloc(expect_size + 1);
  uint64_t off = 0;
  struct res r = {0};
  int rounds = 0;
  char w[256];

  for (;;) {
    int rc = r_read(s->rpc, f, off, chunk, &r);
    snprintf(w, sizeof w, "%s: READ at %" PRIu64, what, off);
    if (!expect_quiet(w, rc, &r, NFS3_OK)) goto bad;
    if (r.count != r.data_len) {
      fail(w, "count %u != data length %u", r.count, r.data_len);
      goto bad;
    }
    if (off + r.count > expect_size) {
      fail(w, "returned %u bytes past the expected size %" PRIu64, r.count, expect_size);
      goto bad;
    }
    memcpy(buf + off, r.data, r.count);
    off += r.count;
    if (off == expect_size) {
      if (!r.eof) {
        /* legal, but then a read at EOF must say so */
        int rc2 = r_read(s->rpc, f, off, chunk, &r);
        if (!expect_quiet(w, rc2, &r, NFS3_OK)) goto bad;
        if (r.count != 0 || !r.eof) {
          fail(w,
               "READ at EOF gave count %u "
               "eof %d",
               r.count, r.eof);
          goto bad;
        }
      }
      break;
    }
    if (r.eof) {
      fail(w, "EOF set at offset %" PRIu64 " before the expected size %" PRIu64, off, expect_size);
      goto bad;
    }
    if (r.count == 0) {
      fail(w, "READ returned 0 bytes without EOF");
      goto bad;
    }
    if (++rounds > 100000) {
      fail(w, "too many READs");
      goto bad;
    }
  }
  res_free(&r);
  return buf;
bad:
  res_free(&r);
  free(buf);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* all: every procedure, in groups                                      */
/*
 * Each group runs in its own session and its own fresh directory
 * kcd-<group>-<pid>-<time> at the export root, creates every object it
 * needs there and removes it again, so a failed step cannot cascade into
 * another group.  The harness then removes the directory: that RMDIR (and
 * the LOOKUP -> NOENT after it) checks that the group left nothing behind;
 * leftovers are named in a FAIL line and removed so the next group and the
 * export stay clean.
 */

static int same_bytes(const unsigned char *a, const unsigned char *b, size_t n, size_t *where) {
  for (size_t i = 0; i < n; i++)
    if (a[i] != b[i]) {
      *where = i;
      return 0;
    }
  return 1;
}

/* what a group function gets: its session and its directory */
struct grp {
  struct sess *s;
  const char *name;
  char dname[128]; /* kcd-<group>-<pid>-<time>, at the export root */
  char path[160];  /* "/<dname>": its path for the nfs_* calls */
  struct fh dir;
  fattr3 dattr;
};

/* path of nm inside the group's directory, for the nfs_* calls */
static const char *gpath(const struct grp *g, const char *nm, char *buf, size_t n) {
  snprintf(buf, n, "%s/%s", g->path, nm);
  return buf;
}

/*
 * Setup: raw CREATE GUARDED (mode 0644) of nm in the group's directory,
 * then WRITE FILE_SYNC of size bytes of fill_pattern(seed) in pieces of at
 * most 1 MiB.  0 = done and *out is its handle; on failure a file that was
 * created is removed again.
 */
static int make_file(struct grp *g, const char *nm, size_t size, uint64_t seed, struct fh *out) {
  struct res r = {0};
  unsigned char *data = xmalloc(size);
  char w[256];
  int rc, good, made = 0;

  fill_pattern(data, size, seed);
  snprintf(w, sizeof w, "setup: CREATE %s", nm);
  rc = r_create(g->s->rpc, &g->dir, nm, GUARDED, 0644, NULL, &r);
  good = expect_quiet(w, rc, &r, NFS3_OK);
  if (good) {
    made = 1;
    if (r.has_fh)
      *out = r.fh;
    else
      good = lookup_fh(g->s, &g->dir, nm, out, NULL, w) == 0;
  }
  for (size_t off = 0; good && off < size;) {
    uint32_t n = size - off > 1048576 ? 1048576 : (uint32_t)(size - off);
    snprintf(w, sizeof w, "setup: WRITE %s at %zu", nm, off);
    rc = r_write(g->s->rpc, out, off, data + off, n, FILE_SYNC, &r);
    good = expect_quiet(w, rc, &r, NFS3_OK);
    if (good && (r.count == 0 || r.count > n)) {
      fail(w, "WRITE of %u bytes reported count %u", n, r.count);
      good = 0;
    }
    off += good ? r.count : 0;
  }
  if (good)
    ok("setup: %s created with %zu bytes", nm, size);
  else if (made)
    r_remove(g->s->rpc, &g->dir, nm, &r);
  res_free(&r);
  free(data);
  return good ? 0 : -1;
}

/* Teardown: REMOVE each name of the NULL-terminated list; one ok line. */
static int remove_names(struct grp *g, const char *const *names) {
  struct res r = {0};
  char w[256];
  int bad = 0;
  for (; *names; names++) {
    int rc = r_remove(g->s->rpc, &g->dir, *names, &r);
    snprintf(w, sizeof w, "REMOVE %s", *names);
    if (!expect_quiet(w, rc, &r, NFS3_OK)) bad++;
  }
  res_free(&r);
  if (!bad) ok("%s: removed its test files", g->name);
  return bad ? -1 : 0;
}
#define REMOVE_ALL(g, ...) remove_names((g), (const char *const[]){__VA_ARGS__, NULL})

/* ---- lookup ---- */

/* NULL; LOOKUP . and .. at the export root and .. of the test directory;
 * MOUNT3 MNT of a subdirectory of the export. */
static void grp_lookup(struct grp *g) {
  struct sess *s = g->s;
  struct res r = {0};
  struct fh fhx;
  fattr3 a;
  char sub[8192];
  int rc;

  rc = r_null(s->rpc, &r);
  check(rc == 0, "NULL procedure", "%s", r.err);

  /* LOOKUP "." and ".." at the export root stay at the root */
  rc = r_lookup(s->rpc, &s->root, "..", &r);
  if (expect("LOOKUP .. from export root", rc, &r, NFS3_OK)) {
    fhx = r.fh;
    if (getattr_ok(s, &fhx, &a, "GETATTR of root/..") == 0)
      check(a.fileid == s->rootattr.fileid && a.fsid == s->rootattr.fsid,
            "LOOKUP .. from export root stays at root",
            "fileid %" PRIu64 " fsid %" PRIu64 ", root is fileid %" PRIu64 " fsid %" PRIu64,
            a.fileid, a.fsid, s->rootattr.fileid, s->rootattr.fsid);
  }
  rc = r_lookup(s->rpc, &s->root, ".", &r);
  if (expect("LOOKUP . at export root", rc, &r, NFS3_OK)) {
    fhx = r.fh;
    if (getattr_ok(s, &fhx, &a, "GETATTR of root/.") == 0)
      check(a.fileid == s->rootattr.fileid, "LOOKUP . is the root",
            "fileid %" PRIu64 " vs %" PRIu64, a.fileid, s->rootattr.fileid);
  }
  if (lookup_fh(s, &g->dir, "..", &fhx, &a, "LOOKUP .. of test directory") == 0)
    check(a.fileid == s->rootattr.fileid, "LOOKUP .. of test directory is the root",
          "fileid %" PRIu64 " vs root %" PRIu64, a.fileid, s->rootattr.fileid);

  /* MOUNT of a subdirectory of the export */
  snprintf(sub, sizeof sub, "%s/%s", strcmp(s->export, "/") ? s->export : "", g->dname);
  rc = r_mnt(s->server, s->mountport, sub, &r);
  if (rc != 0 || r.status != MNT3_OK)
    fail("MOUNT3 MNT of a subdirectory of the export", "rc=%d mountstat=%d %s", rc, r.status,
         r.err);
  else if (getattr_ok(s, &r.fh, &a, "GETATTR of subdirectory mount") == 0)
    check(a.fileid == g->dattr.fileid, "MOUNT3 MNT of a subdirectory of the export",
          "fileid %" PRIu64 " vs %" PRIu64, a.fileid, g->dattr.fileid);
  res_free(&r);
}

/* ---- read_write: the big file ---- */

#define BIG_SIZE ((size_t)3 * 1024 * 1024 + 123)
#define BIG_SEED 0x1234567u
static const size_t rw_chunks[] = {1, 4095, 65537, 131071, 1048577, 12345, 999, 524291, 7};
#define RW_NCHUNKS (sizeof rw_chunks / sizeof rw_chunks[0])

/* the nfs_get_fh handle of an open file names the same file as *fh */
static void rw_check_get_fh(struct grp *g, struct nfsfh *nf, const struct fh *fh) {
  struct nfs_fh *h = nfs_get_fh(nf);
  struct fh hf;
  fattr3 a, a2;
  if (!h || h->len <= 0 || h->len > NFS3_FHSIZE || !h->val) {
    fail("nfs_get_fh", "unexpected handle (len %d)", h ? h->len : -1);
    return;
  }
  hf.len = (uint32_t)h->len;
  memcpy(hf.data, h->val, hf.len);
  if (getattr_ok(g->s, &hf, &a, "GETATTR via nfs_get_fh handle") == 0 &&
      getattr_ok(g->s, fh, &a2, "GETATTR of the LOOKUP handle of big.bin") == 0)
    check(a.fileid == a2.fileid && a.size == BIG_SIZE, "nfs_get_fh handle and LOOKUP agree",
          "fileid %" PRIu64 " vs %" PRIu64 " size %" PRIu64, a.fileid, a2.fileid, a.size);
}

/* nfs_creat + nfs_pwrite in uneven chunks + nfs_fsync + nfs_fstat64; *fh
 * is big.bin's handle from a raw LOOKUP.  0 = the file exists. */
/* rw_chunked: BIG_SIZE bytes of buf written to (writing) or read from nf in
 * the uneven rw_chunks sizes, starting with chunk ci; -1 (and a FAIL
 * naming `what`) at the first short or failed call. */
static int rw_chunked(struct sess *s, struct nfsfh *nf, unsigned char *buf, size_t ci, int writing,
                      const char *what) {
  size_t off = 0;
  while (off < BIG_SIZE) {
    size_t n = rw_chunks[ci++ % RW_NCHUNKS];
    int rc;
    if (n > BIG_SIZE - off) n = BIG_SIZE - off;
    rc = writing ? nfs_pwrite(s->nfs, nf, off, n, buf + off)
                 : nfs_pread(s->nfs, nf, off, n, buf + off);
    if (rc != (int)n) {
      fail(what, "offset %zu len %zu returned %d %s", off, n, rc, nfs_get_error(s->nfs));
      return -1;
    }
    off += n;
  }
  return 0;
}

static int rw_write_big(struct grp *g, const char *path, const unsigned char *data, struct fh *fh) {
  struct sess *s = g->s;
  struct nfsfh *nf = NULL;
  struct nfs_stat_64 st;
  int rc, wfail = 0, have;

  rc = nfs_creat(s->nfs, path, 0644, &nf);
  if (!check(rc == 0, "nfs_creat big.bin (CREATE)", "%d %s", rc, nfs_get_error(s->nfs))) return -1;
  wfail = rw_chunked(s, nf, (unsigned char *)data, 0, 1, "nfs_pwrite big.bin") != 0;
  if (!wfail) ok("nfs_pwrite %zu bytes in uneven chunks", BIG_SIZE);
  rc = nfs_fsync(s->nfs, nf);
  check(rc == 0, "nfs_fsync big.bin (COMMIT)", "%d %s", rc, nfs_get_error(s->nfs));
  rc = nfs_fstat64(s->nfs, nf, &st);
  check(rc == 0 && st.nfs_size == BIG_SIZE, "nfs_fstat64 size of big.bin",
        "rc %d size %" PRIu64 " expected %zu", rc, (uint64_t)st.nfs_size, BIG_SIZE);
  /* cross-check nfs_get_fh against a raw LOOKUP */
  have = lookup_fh(s, &g->dir, "big.bin", fh, NULL, "LOOKUP big.bin") == 0;
  if (have) rw_check_get_fh(g, nf, fh);
  nfs_close(s->nfs, nf);
  return 0;
}

/* read back through the high-level API, uneven chunks */
static void rw_pread_back(struct grp *g, const char *path, const unsigned char *data,
                          unsigned char *back) {
  struct sess *s = g->s;
  struct nfsfh *nf = NULL;
  size_t where = 0;
  int rc, rfail = 0;

  rc = nfs_open(s->nfs, path, O_RDONLY, &nf);
  if (!check(rc == 0, "nfs_open big.bin O_RDONLY", "%d %s", rc, nfs_get_error(s->nfs))) return;
  memset(back, 0, BIG_SIZE);
  rfail = rw_chunked(s, nf, back, 3, 0, "nfs_pread big.bin") != 0;
  if (!rfail)
    check(
        fnv1a(back, BIG_SIZE) == fnv1a(data, BIG_SIZE) && same_bytes(back, data, BIG_SIZE, &where),
        "nfs_pread big.bin checksum matches", "first difference at byte %zu", where);
  nfs_close(s->nfs, nf);
}

/* raw READ in 1 MiB pieces, the last one carrying EOF; then a READ that
 * ends exactly at EOF and one past it */
static void rw_raw_read(struct grp *g, const struct fh *fh, const unsigned char *data,
                        unsigned char *back) {
  const size_t big = BIG_SIZE;
  struct res r = {0};
  uint64_t roff = 0;
  size_t where = 0;
  int rc, eof_seen = 0, err = 0;
  char w[256];

  memset(back, 0, big);
  while (roff < big && !err) {
    rc = r_read(g->s->rpc, fh, roff, 1048576, &r);
    snprintf(w, sizeof w, "raw READ big.bin at %" PRIu64, roff);
    if (!expect_quiet(w, rc, &r, NFS3_OK) || r.count != r.data_len || roff + r.count > big ||
        r.count == 0) {
      if (rc == 0 && r.status == NFS3_OK) fail(w, "count %u data_len %u", r.count, r.data_len);
      err = 1;
      break;
    }
    memcpy(back + roff, r.data, r.count);
    roff += r.count;
    eof_seen = r.eof;
    if (r.eof && roff < big) {
      fail(w, "EOF too early");
      err = 1;
    }
  }
  if (!err) {
    check(eof_seen, "raw READ: EOF flag set on the last READ",
          "last READ ended at %" PRIu64 " without eof", roff);
    check(same_bytes(back, data, big, &where), "raw READ big.bin contents match",
          "first difference at %zu", where);
    check(r.has_attr && r.attr.size == big, "READ post-op attributes carry the size",
          "has_attr %d size %" PRIu64, r.has_attr, r.attr.size);
  }
  rc = r_read(g->s->rpc, fh, big - 100, 100, &r);
  if (expect_quiet("raw READ last 100 bytes", rc, &r, NFS3_OK))
    check(r.count == 100 && r.eof && memcmp(r.data, data + big - 100, 100) == 0,
          "raw READ of the last 100 bytes has EOF", "count %u eof %d", r.count, r.eof);
  rc = r_read(g->s->rpc, fh, big + 4096, 4096, &r);
  if (expect_quiet("raw READ past EOF", rc, &r, NFS3_OK))
    check(r.count == 0 && r.eof, "raw READ past EOF returns 0 bytes + EOF", "count %u eof %d",
          r.count, r.eof);
  res_free(&r);
}

/* CREATE, WRITEs in uneven chunks, COMMIT, READ back three ways */
static void grp_read_write(struct grp *g) {
  unsigned char *data = xmalloc(BIG_SIZE), *back = xmalloc(BIG_SIZE);
  struct fh fh;
  char path[256];

  memset(&fh, 0, sizeof fh);
  fill_pattern(data, BIG_SIZE, BIG_SEED);
  gpath(g, "big.bin", path, sizeof path);
  if (rw_write_big(g, path, data, &fh) == 0) {
    rw_pread_back(g, path, data, back);
    if (fh.len) rw_raw_read(g, &fh, data, back);
    REMOVE_ALL(g, "big.bin");
  }
  free(data);
  free(back);
}

/* ---- access ---- */

static void grp_access(struct grp *g) {
  const uint32_t want = ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND;
  struct sess *s = g->s;
  struct res r = {0};
  struct fh f;
  char path[256];
  int rc;

  if (make_file(g, "access.bin", 4096, BIG_SEED, &f) != 0) return;
  rc = r_access(s->rpc, &f, want | ACCESS3_DELETE | ACCESS3_EXECUTE | ACCESS3_LOOKUP, &r);
  if (expect("ACCESS access.bin", rc, &r, NFS3_OK))
    check((r.access & want) == want && !(r.access & ~(uint32_t)0x3f),
          "ACCESS grants READ|MODIFY|EXTEND to root", "access 0x%x", r.access);
  rc = r_access(s->rpc, &g->dir, ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE,
                &r);
  if (expect("ACCESS test directory", rc, &r, NFS3_OK))
    check((r.access & (ACCESS3_LOOKUP | ACCESS3_MODIFY)) == (ACCESS3_LOOKUP | ACCESS3_MODIFY),
          "ACCESS grants LOOKUP|MODIFY on the directory", "access 0x%x", r.access);
  rc = nfs_access(s->nfs, gpath(g, "access.bin", path, sizeof path), R_OK | W_OK);
  check(rc == 0, "nfs_access R_OK|W_OK", "%d %s", rc, nfs_get_error(s->nfs));
  res_free(&r);
  REMOVE_ALL(g, "access.bin");
}

/* ---- setattr: mode, truncate, extend, guard ---- */

/* truncate up (sparse extension) through raw SETATTR: the new part is 0s */
static void sa_extend(struct grp *g, const struct fh *f) {
  struct res r = {0};
  sattr3 sa = sattr_none();
  int rc;

  sa.size.set_it = 1;
  sa.size.set_size3_u.size = 70000;
  rc = r_setattr(g->s->rpc, f, &sa, NULL, &r);
  if (expect("SETATTR size 70000 (extend)", rc, &r, NFS3_OK))
    check(!r.has_attr || r.attr.size == 70000, "SETATTR post-op size is 70000", "size %" PRIu64,
          r.attr.size);
  rc = r_read(g->s->rpc, f, 1000, 4096, &r);
  if (expect_quiet("READ extended region", rc, &r, NFS3_OK)) {
    int zero = r.count == 4096;
    for (uint32_t i = 0; zero && i < r.count; i++) zero = r.data[i] == 0;
    check(zero, "extended region reads as zeros", "count %u", r.count);
  }
  res_free(&r);
}

/* guarded SETATTR: a stale ctime -> NOT_SYNC and nothing changed; the
 * current ctime -> done (the file is mode 0600 before) */
static void sa_guard(struct grp *g, const struct fh *f) {
  struct res r = {0};
  fattr3 a, a2;
  nfstime3 bad;
  sattr3 sa = sattr_mode(0640);
  int rc;

  if (getattr_ok(g->s, f, &a, "GETATTR before guarded SETATTR") != 0) return;
  bad = a.ctime;
  bad.seconds -= 1000;
  rc = r_setattr(g->s->rpc, f, &sa, &bad, &r);
  expect("SETATTR with mismatching ctime guard -> NOT_SYNC", rc, &r, NFS3ERR_NOT_SYNC);
  if (getattr_ok(g->s, f, &a2, "GETATTR after NOT_SYNC") == 0)
    check((a2.mode & 07777) == 0600, "failed guarded SETATTR changed nothing", "mode %o",
          a2.mode & 07777);
  rc = r_setattr(g->s->rpc, f, &sa, &a.ctime, &r);
  if (expect("SETATTR with matching ctime guard", rc, &r, NFS3_OK)) {
    check(r.has_before ? (r.before.ctime.seconds == a.ctime.seconds &&
                          r.before.ctime.nseconds == a.ctime.nseconds)
                       : 1,
          "SETATTR wcc pre-op ctime equals the guard", "pre ctime %u.%u vs %u.%u",
          r.before.ctime.seconds, r.before.ctime.nseconds, a.ctime.seconds, a.ctime.nseconds);
    check(r.has_attr && (r.attr.mode & 07777) == 0640, "SETATTR post-op mode is 0640",
          "has %d mode %o", r.has_attr, r.attr.mode & 07777);
  }
  res_free(&r);
}

static void grp_setattr(struct grp *g) {
  struct sess *s = g->s;
  struct fh f;
  fattr3 a;
  char path[256];
  unsigned char *got;
  int rc;

  /* several blocks of the big file's pattern: truncating keeps its start */
  if (make_file(g, "setattr.bin", 3 * 65536 + 123, BIG_SEED, &f) != 0) return;
  gpath(g, "setattr.bin", path, sizeof path);
  rc = nfs_chmod(s->nfs, path, 0600);
  check(rc == 0, "nfs_chmod 0600 (SETATTR)", "%d %s", rc, nfs_get_error(s->nfs));
  if (getattr_ok(s, &f, &a, "GETATTR after chmod") == 0)
    check((a.mode & 07777) == 0600, "mode is 0600 after chmod", "mode %o", a.mode & 07777);
  rc = nfs_truncate(s->nfs, path, 1000);
  check(rc == 0, "nfs_truncate to 1000 (SETATTR size)", "%d %s", rc, nfs_get_error(s->nfs));
  if (getattr_ok(s, &f, &a, "GETATTR after truncate") == 0)
    check(a.size == 1000, "size is 1000 after truncate", "size %" PRIu64, a.size);
  got = raw_read_all(s, &f, 1000, 333, "read truncated file");
  if (got) {
    unsigned char *full = xmalloc(1000);
    fill_pattern(full, 1000, BIG_SEED);
    check(memcmp(got, full, 1000) == 0, "truncated file keeps the first 1000 bytes",
          "contents differ");
    free(full);
    free(got);
  }
  sa_extend(g, &f);
  sa_guard(g, &f);
  REMOVE_ALL(g, "setattr.bin");
}

/* ---- write_commit: WRITE UNSTABLE + COMMIT, WRITE FILE_SYNC ---- */

static void grp_write_commit(struct grp *g) {
  struct sess *s = g->s;
  struct res r = {0};
  unsigned char buf[70000], v1[8];
  struct fh f;
  int rc;

  if (make_file(g, "unstable.bin", 0, 0, &f) != 0) return;
  fill_pattern(buf, sizeof buf, 77);
  rc = r_write(s->rpc, &f, 0, buf, 40000, UNSTABLE, &r);
  if (expect("WRITE UNSTABLE 40000 bytes", rc, &r, NFS3_OK)) {
    memcpy(v1, r.verf, 8);
    check(r.count == 40000 && r.committed >= UNSTABLE && r.committed <= FILE_SYNC,
          "WRITE UNSTABLE reply count/committed", "count %u committed %d", r.count, r.committed);
    rc = r_write(s->rpc, &f, 40000, buf + 40000, 30000, UNSTABLE, &r);
    if (expect("WRITE UNSTABLE second piece", rc, &r, NFS3_OK))
      check(memcmp(r.verf, v1, 8) == 0, "write verifier stable across WRITEs",
            "verifier changed between writes");
    rc = r_commit(s->rpc, &f, 0, 0, &r);
    if (expect("COMMIT", rc, &r, NFS3_OK))
      check(memcmp(r.verf, v1, 8) == 0, "COMMIT returns the WRITE verifier", "verifiers differ");
    unsigned char *got = raw_read_all(s, &f, sizeof buf, 16384, "read unstable.bin");
    if (got) {
      check(memcmp(got, buf, sizeof buf) == 0, "UNSTABLE data reads back", "contents differ");
      free(got);
    }
  }
  rc = r_write(s->rpc, &f, 100, buf, 5000, FILE_SYNC, &r);
  if (expect("WRITE FILE_SYNC", rc, &r, NFS3_OK))
    check(r.committed == FILE_SYNC && r.count == 5000, "WRITE FILE_SYNC reply says FILE_SYNC",
          "committed %d count %u", r.committed, r.count);
  /* WRITE to a directory must fail */
  rc = r_write(s->rpc, &g->dir, 0, buf, 10, FILE_SYNC, &r);
  if (rc == 0 && (r.status == NFS3ERR_ISDIR || r.status == NFS3ERR_INVAL))
    ok("WRITE to a directory fails (%s)", nfsstat_str(r.status));
  else
    fail("WRITE to a directory fails", "rc %d status %s %s", rc, nfsstat_str(r.status), r.err);
  res_free(&r);
  REMOVE_ALL(g, "unstable.bin");
}

/* ---- create: GUARDED, EXCLUSIVE, UNCHECKED ---- */

static void cr_exclusive(struct grp *g) {
  static const unsigned char va[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  static const unsigned char vb[8] = {8, 7, 6, 5, 4, 3, 2, 1};
  struct sess *s = g->s;
  struct res r = {0};
  struct fh ef;
  fattr3 a;
  uint64_t fid = 0;
  int rc;

  rc = r_create(s->rpc, &g->dir, "excl", EXCLUSIVE, 0, va, &r);
  if (expect("CREATE EXCLUSIVE (new)", rc, &r, NFS3_OK) &&
      lookup_fh(s, &g->dir, "excl", &ef, &a, "LOOKUP excl") == 0)
    fid = a.fileid;
  rc = r_create(s->rpc, &g->dir, "excl", EXCLUSIVE, 0, va, &r);
  if (expect("CREATE EXCLUSIVE retry with the same verifier", rc, &r, NFS3_OK) &&
      lookup_fh(s, &g->dir, "excl", &ef, &a, "LOOKUP excl") == 0)
    check(a.fileid == fid, "EXCLUSIVE retry returns the same file",
          "fileid %" PRIu64 " vs %" PRIu64, a.fileid, fid);
  rc = r_create(s->rpc, &g->dir, "excl", EXCLUSIVE, 0, vb, &r);
  expect("CREATE EXCLUSIVE with another verifier -> EXIST", rc, &r, NFS3ERR_EXIST);
  /* the client then sets the real attributes */
  if (lookup_fh(s, &g->dir, "excl", &ef, NULL, "LOOKUP excl") == 0) {
    sattr3 sa = sattr_mode(0604);
    rc = r_setattr(s->rpc, &ef, &sa, NULL, &r);
    expect("SETATTR after EXCLUSIVE CREATE", rc, &r, NFS3_OK);
  }
  res_free(&r);
}

static void grp_create(struct grp *g) {
  struct sess *s = g->s;
  struct res r = {0};
  int rc;

  rc = r_create(s->rpc, &g->dir, "guarded.bin", GUARDED, 0644, NULL, &r);
  if (expect("CREATE GUARDED guarded.bin", rc, &r, NFS3_OK) && r.has_fh)
    check(r.has_attr ? (r.attr.type == NF3REG && (r.attr.mode & 07777) == 0644 && r.attr.size == 0)
                     : 1,
          "CREATE post-op attributes: regular 0644 empty", "type %d mode %o size %" PRIu64,
          (int)r.attr.type, r.attr.mode & 07777, r.attr.size);
  rc = r_create(s->rpc, &g->dir, "guarded.bin", GUARDED, 0644, NULL, &r);
  expect("CREATE GUARDED on existing name -> EXIST", rc, &r, NFS3ERR_EXIST);
  cr_exclusive(g);
  rc = r_create(s->rpc, &g->dir, "unchecked", UNCHECKED, 0644, NULL, &r);
  expect("CREATE UNCHECKED (new)", rc, &r, NFS3_OK);
  rc = r_create(s->rpc, &g->dir, "unchecked", UNCHECKED, 0644, NULL, &r);
  expect("CREATE UNCHECKED (existing) succeeds", rc, &r, NFS3_OK);
  res_free(&r);
  REMOVE_ALL(g, "guarded.bin", "excl", "unchecked");
}

/* ---- rename ---- */

static void grp_rename(struct grp *g) {
  struct sess *s = g->s;
  struct res r = {0};
  struct fh f, fhx, src, dst;
  fattr3 a, a2;
  char p2[256], p3[256];
  int rc;

  if (make_file(g, "orig.bin", 4096, BIG_SEED, &f) != 0) return;
  gpath(g, "orig.bin", p2, sizeof p2);
  gpath(g, "renamed.bin", p3, sizeof p3);
  rc = nfs_rename(s->nfs, p2, p3);
  check(rc == 0, "nfs_rename orig.bin -> renamed.bin (RENAME)", "%d %s", rc, nfs_get_error(s->nfs));
  rc = r_lookup(s->rpc, &g->dir, "orig.bin", &r);
  expect("LOOKUP old name after rename -> NOENT", rc, &r, NFS3ERR_NOENT);
  if (getattr_ok(s, &f, &a2, "GETATTR old handle after rename") == 0 &&
      lookup_fh(s, &g->dir, "renamed.bin", &fhx, &a, "LOOKUP renamed.bin") == 0)
    check(a.fileid == a2.fileid, "renamed file keeps its identity and handle",
          "fileid %" PRIu64 " vs %" PRIu64, a.fileid, a2.fileid);
  rc = r_rename(s->rpc, &g->dir, "nonexistent", &g->dir, "x", &r);
  expect("RENAME of a missing name -> NOENT", rc, &r, NFS3ERR_NOENT);

  /* raw RENAME over an existing file replaces it */
  if (make_file(g, "src", 100, 21, &src) == 0) {
    if (make_file(g, "dst", 200, 22, &dst) == 0) {
      rc = r_rename(s->rpc, &g->dir, "src", &g->dir, "dst", &r);
      if (expect("RENAME onto an existing file", rc, &r, NFS3_OK) &&
          getattr_ok(s, &src, &a2, "GETATTR of the renamed source") == 0 &&
          lookup_fh(s, &g->dir, "dst", &fhx, &a, "LOOKUP dst after RENAME") == 0)
        check(a.fileid == a2.fileid && a.size == 100, "RENAME target name now is the source file",
              "fileid %" PRIu64 " vs %" PRIu64 " size %" PRIu64, a.fileid, a2.fileid, a.size);
    }
    REMOVE_ALL(g, "dst");
  }
  res_free(&r);
  REMOVE_ALL(g, "renamed.bin");
}

/* ---- link_remove: LINK, nlink counts, REMOVE ---- */

static void grp_link_remove(struct grp *g) {
  struct sess *s = g->s;
  struct res r = {0};
  struct fh f;
  fattr3 a;
  char pt[256], pl[256];
  int rc;

  if (make_file(g, "target.bin", 1000, BIG_SEED, &f) != 0) return;
  gpath(g, "target.bin", pt, sizeof pt);
  gpath(g, "hardlink", pl, sizeof pl);
  rc = nfs_link(s->nfs, pt, pl);
  check(rc == 0, "nfs_link (LINK)", "%d %s", rc, nfs_get_error(s->nfs));
  if (getattr_ok(s, &f, &a, "GETATTR after link") == 0)
    check(a.nlink == 2, "nlink is 2 after LINK", "nlink %u", a.nlink);
  rc = r_link(s->rpc, &f, &g->dir, "hardlink", &r);
  expect("LINK onto an existing name -> EXIST", rc, &r, NFS3ERR_EXIST);
  rc = r_link(s->rpc, &f, &g->dir, "hardlink2", &r);
  if (expect("raw LINK", rc, &r, NFS3_OK))
    check(r.has_attr ? r.attr.nlink == 3 : 1, "LINK post-op nlink is 3", "nlink %u", r.attr.nlink);

  rc = nfs_unlink(s->nfs, pl);
  check(rc == 0, "nfs_unlink hardlink (REMOVE)", "%d %s", rc, nfs_get_error(s->nfs));
  rc = r_lookup(s->rpc, &g->dir, "hardlink", &r);
  expect("LOOKUP after REMOVE -> NOENT", rc, &r, NFS3ERR_NOENT);
  rc = r_remove(s->rpc, &g->dir, "hardlink2", &r);
  expect("raw REMOVE hardlink2", rc, &r, NFS3_OK);
  rc = r_remove(s->rpc, &g->dir, "hardlink2", &r);
  expect("REMOVE of a missing name -> NOENT", rc, &r, NFS3ERR_NOENT);
  if (getattr_ok(s, &f, &a, "GETATTR after unlinks") == 0)
    check(a.nlink == 1, "nlink back to 1 after REMOVEs", "nlink %u", a.nlink);
  res_free(&r);
  REMOVE_ALL(g, "target.bin");
}

/* ---- symlink: SYMLINK / READLINK ---- */

static void grp_symlink(struct grp *g) {
  static const char target[] = "target.bin";
  static const char dangling[] = "/absolute/dangling/target";
  struct sess *s = g->s;
  struct res r = {0};
  struct fh f, fhx;
  fattr3 a;
  char pl[256], got[1024];
  int rc;

  if (make_file(g, target, 1000, BIG_SEED, &f) != 0) return;
  rc = nfs_symlink(s->nfs, target, gpath(g, "symlink", pl, sizeof pl));
  check(rc == 0, "nfs_symlink (SYMLINK)", "%d %s", rc, nfs_get_error(s->nfs));
  memset(got, 0, sizeof got);
  rc = nfs_readlink(s->nfs, pl, got, sizeof got - 1);
  check(rc == 0 && strcmp(got, target) == 0, "nfs_readlink returns the target (READLINK)",
        "rc %d got '%s' %s", rc, got, nfs_get_error(s->nfs));
  if (lookup_fh(s, &g->dir, "symlink", &fhx, &a, "LOOKUP symlink") == 0) {
    check(a.type == NF3LNK && a.size == strlen(target),
          "symlink attributes: NF3LNK, size = target length", "type %d size %" PRIu64, (int)a.type,
          a.size);
    rc = r_readlink(s->rpc, &fhx, &r);
    if (expect("raw READLINK", rc, &r, NFS3_OK))
      check(r.path && strcmp(r.path, target) == 0, "raw READLINK data", "got '%s'",
            r.path ? r.path : "(null)");
  }
  rc = r_readlink(s->rpc, &f, &r);
  if (rc == 0 && (r.status == NFS3ERR_INVAL || r.status == NFS3ERR_BADTYPE))
    ok("READLINK of a regular file fails (%s)", nfsstat_str(r.status));
  else
    fail("READLINK of a regular file fails", "rc %d status %s", rc, nfsstat_str(r.status));
  rc = r_symlink(s->rpc, &g->dir, "symlink2", dangling, &r);
  if (expect("raw SYMLINK (dangling absolute target)", rc, &r, NFS3_OK) && r.has_fh) {
    struct fh sl = r.fh;
    rc = r_readlink(s->rpc, &sl, &r);
    if (expect_quiet("READLINK symlink2", rc, &r, NFS3_OK))
      check(r.path && strcmp(r.path, dangling) == 0, "READLINK of the SYMLINK reply handle",
            "got '%s'", r.path ? r.path : "");
  }
  res_free(&r);
  REMOVE_ALL(g, "symlink", "symlink2", target);
}

/* ---- mknod: FIFO, socket, NF3REG ---- */

static void grp_mknod(struct grp *g) {
  struct sess *s = g->s;
  struct res r = {0};
  struct fh fhx;
  fattr3 a;
  char pl[256];
  int rc;

  rc = nfs_mknod(s->nfs, gpath(g, "fifo", pl, sizeof pl), S_IFIFO | 0644, 0);
  check(rc == 0, "nfs_mknod FIFO (MKNOD)", "%d %s", rc, nfs_get_error(s->nfs));
  if (lookup_fh(s, &g->dir, "fifo", &fhx, &a, "LOOKUP fifo") == 0)
    check(a.type == NF3FIFO, "MKNOD created a FIFO", "type %d", (int)a.type);
  rc = r_mknod(s->rpc, &g->dir, "sock", NF3SOCK, 0600, &r);
  if (expect("raw MKNOD socket", rc, &r, NFS3_OK))
    check(!r.has_attr || r.attr.type == NF3SOCK, "MKNOD created a socket", "type %d",
          (int)r.attr.type);
  rc = r_mknod(s->rpc, &g->dir, "regular", NF3REG, 0600, &r);
  expect("MKNOD of type NF3REG -> BADTYPE", rc, &r, NFS3ERR_BADTYPE);
  res_free(&r);
  REMOVE_ALL(g, "fifo", "sock");
}

/* ---- mkdir_rmdir ---- */

/* the errors around a (non-empty) subdirectory */
static void md_errors(struct grp *g, const struct fh *sub) {
  struct res r = {0};
  int rc;

  rc = r_create(g->s->rpc, sub, "inner", GUARDED, 0644, NULL, &r);
  expect("CREATE inside subdir", rc, &r, NFS3_OK);
  rc = r_rmdir(g->s->rpc, &g->dir, "subdir", &r);
  expect("RMDIR of a non-empty dir -> NOTEMPTY", rc, &r, NFS3ERR_NOTEMPTY);
  rc = r_remove(g->s->rpc, sub, "inner", &r);
  expect("REMOVE inner", rc, &r, NFS3_OK);
  rc = r_rmdir(g->s->rpc, &g->dir, "file.bin", &r);
  expect("RMDIR of a regular file -> NOTDIR", rc, &r, NFS3ERR_NOTDIR);
  rc = r_remove(g->s->rpc, &g->dir, "subdir", &r);
  if (rc == 0 && r.status != NFS3_OK)
    ok("REMOVE of a directory fails (%s)", nfsstat_str(r.status));
  else
    fail("REMOVE of a directory fails", "rc %d status %s", rc, nfsstat_str(r.status));
  res_free(&r);
}

static void grp_mkdir_rmdir(struct grp *g) {
  struct sess *s = g->s;
  struct res r = {0};
  struct fh f, sub;
  fattr3 a;
  char pl[256];
  int rc;

  if (make_file(g, "file.bin", 0, 0, &f) != 0) return;
  rc = nfs_mkdir(s->nfs, gpath(g, "subdir", pl, sizeof pl));
  check(rc == 0, "nfs_mkdir subdir (MKDIR)", "%d %s", rc, nfs_get_error(s->nfs));
  rc = r_mkdir(s->rpc, &g->dir, "subdir", 0755, &r);
  expect("MKDIR of an existing name -> EXIST", rc, &r, NFS3ERR_EXIST);
  if (lookup_fh(s, &g->dir, "subdir", &sub, &a, "LOOKUP subdir") == 0) {
    check(a.type == NF3DIR && a.nlink == 2, "subdir is a directory with nlink 2",
          "type %d nlink %u", (int)a.type, a.nlink);
    md_errors(g, &sub);
  }
  rc = nfs_rmdir(s->nfs, pl);
  check(rc == 0, "nfs_rmdir subdir (RMDIR)", "%d %s", rc, nfs_get_error(s->nfs));
  rc = r_lookup(s->rpc, &g->dir, "subdir", &r);
  expect("LOOKUP after RMDIR -> NOENT", rc, &r, NFS3ERR_NOENT);
  rc = r_mkdir(s->rpc, &g->dir, "subdir2", 0700, &r);
  if (expect("raw MKDIR subdir2", rc, &r, NFS3_OK))
    check(r.has_attr ? (r.attr.type == NF3DIR && (r.attr.mode & 07777) == 0700) : 1,
          "MKDIR post-op attributes: dir 0700", "type %d mode %o", (int)r.attr.type,
          r.attr.mode & 07777);
  rc = r_rmdir(s->rpc, &g->dir, "subdir2", &r);
  expect("raw RMDIR subdir2", rc, &r, NFS3_OK);
  res_free(&r);
  REMOVE_ALL(g, "file.bin");
}

/* ---- readdir: READDIR / READDIRPLUS / opendir of a small directory ---- */

/* regular files, symlinks, a fifo and a socket */
static const char *const rd_names[] = {"renamed.bin", "unstable.bin", "excl", "symlink",
                                       "symlink2",    "fifo",         "sock"};
#define RD_N ((int)(sizeof rd_names / sizeof rd_names[0]))

static int rd_setup(struct grp *g) {
  struct res r = {0};
  struct fh f;
  int good = make_file(g, "renamed.bin", 1000, BIG_SEED, &f) == 0 &&
             make_file(g, "unstable.bin", 70000, 77, &f) == 0 &&
             make_file(g, "excl", 0, 0, &f) == 0;
  good = good && expect("setup: SYMLINK symlink",
                        r_symlink(g->s->rpc, &g->dir, "symlink", "renamed.bin", &r), &r, NFS3_OK);
  good = good && expect("setup: SYMLINK symlink2",
                        r_symlink(g->s->rpc, &g->dir, "symlink2", "/absolute/dangling/target", &r),
                        &r, NFS3_OK);
  good = good && expect("setup: MKNOD fifo", r_mknod(g->s->rpc, &g->dir, "fifo", NF3FIFO, 0644, &r),
                        &r, NFS3_OK);
  good = good && expect("setup: MKNOD sock", r_mknod(g->s->rpc, &g->dir, "sock", NF3SOCK, 0600, &r),
                        &r, NFS3_OK);
  res_free(&r);
  return good ? 0 : -1;
}

/* one listed name: "." and ".." are counted, expected ones tallied */
static int rd_tally(const char *lbl, const char *nm, int *seen, int *dots) {
  if (!strcmp(nm, ".") || !strcmp(nm, "..")) {
    (*dots)++;
    return 0;
  }
  for (int i = 0; i < RD_N; i++)
    if (!strcmp(nm, rd_names[i])) {
      seen[i]++;
      return 0;
    }
  fail(lbl, "unexpected name '%s'", nm);
  return 1;
}

static void rd_verdict(const char *lbl, const int *seen, int dots, int bad) {
  for (int i = 0; i < RD_N; i++)
    if (seen[i] != 1) {
      fail(lbl, "'%s' listed %d times", rd_names[i], seen[i]);
      bad++;
    }
  if (!bad) ok("%s lists exactly the expected entries (%d dot entries)", lbl, dots);
}

/* READDIRPLUS entry: its attributes and handle name the listed file */
static int rd_plus_entry(struct grp *g, const char *w, const struct dent *d) {
  fattr3 a;
  if (d->has_attr && d->attr.fileid != d->fileid) {
    fail(w, "%s: attr fileid %" PRIu64 " != entry %" PRIu64, d->nm, d->attr.fileid, d->fileid);
    return 1;
  }
  if (d->has_fh && getattr_ok(g->s, &d->fh, &a, w) == 0 && a.fileid != d->fileid) {
    fail(w, "%s: handle's fileid %" PRIu64 " != entry %" PRIu64, d->nm, a.fileid, d->fileid);
    return 1;
  }
  return 0;
}

/* raw READDIR (plus = 0) or READDIRPLUS (plus = 1) in one 64 KiB reply */
static void rd_raw(struct grp *g, int plus) {
  const char *lbl = plus ? "READDIRPLUS" : "READDIR";
  unsigned char verf[NFS3_COOKIEVERFSIZE] = {0};
  struct res r = {0};
  int seen[RD_N], dots = 0, bad = 0, rc;
  char w[256];

  memset(seen, 0, sizeof seen);
  if (plus)
    rc = r_readdirplus(g->s->rpc, &g->dir, 0, verf, 65536, 65536, &r);
  else
    rc = r_readdir(g->s->rpc, &g->dir, 0, verf, 65536, &r);
  snprintf(w, sizeof w, "%s of test directory", lbl);
  if (expect(w, rc, &r, NFS3_OK)) {
    check(r.eof, "small directory listed in one reply with EOF", "%s eof %d", lbl, r.eof);
    for (int j = 0; j < r.nents; j++) {
      int b = rd_tally(w, r.ents[j].nm, seen, &dots);
      bad += b;
      if (!b && plus) bad += rd_plus_entry(g, w, &r.ents[j]);
    }
    rd_verdict(lbl, seen, dots, bad);
  }
  res_free(&r);
}

static void rd_opendir(struct grp *g) {
  const char *lbl = "nfs_opendir";
  struct nfsdir *nd = NULL;
  struct nfsdirent *de;
  int seen[RD_N], dots = 0, bad = 0, rc;

  memset(seen, 0, sizeof seen);
  rc = nfs_opendir(g->s->nfs, g->path, &nd);
  if (!check(rc == 0, "nfs_opendir test dir", "%d %s", rc, nfs_get_error(g->s->nfs))) return;
  while ((de = nfs_readdir(g->s->nfs, nd))) bad += rd_tally("nfs_readdir", de->name, seen, &dots);
  nfs_closedir(g->s->nfs, nd);
  rd_verdict(lbl, seen, dots, bad);
}

static void grp_readdir(struct grp *g) {
  if (rd_setup(g) == 0) {
    rd_raw(g, 0);
    rd_raw(g, 1);
    rd_opendir(g);
  }
  REMOVE_ALL(g, "renamed.bin", "unstable.bin", "excl", "symlink", "symlink2", "fifo", "sock");
}

/* ---- fsinfo: FSSTAT / FSINFO / PATHCONF ---- */

static void grp_fsinfo(struct grp *g) {
  struct sess *s = g->s;
  struct res r = {0};
  struct nfs_statvfs_64 sv;
  struct fh f;
  int rc;

  rc = r_fsstat(s->rpc, &s->root, &r);
  if (expect("FSSTAT", rc, &r, NFS3_OK))
    check(r.fsstat.tbytes > 0 && r.fsstat.fbytes <= r.fsstat.tbytes &&
              r.fsstat.abytes <= r.fsstat.fbytes && r.fsstat.ffiles <= r.fsstat.tfiles,
          "FSSTAT values consistent",
          "tbytes %" PRIu64 " fbytes %" PRIu64 " abytes %" PRIu64 " tfiles %" PRIu64
          " ffiles %" PRIu64,
          r.fsstat.tbytes, r.fsstat.fbytes, r.fsstat.abytes, r.fsstat.tfiles, r.fsstat.ffiles);
  rc = nfs_statvfs64(s->nfs, g->path, &sv);
  check(rc == 0 && sv.f_blocks > 0 && sv.f_bfree <= sv.f_blocks, "nfs_statvfs64",
        "rc %d blocks %" PRIu64 " free %" PRIu64, rc, sv.f_blocks, sv.f_bfree);
  rc = r_fsinfo(s->rpc, &s->root, &r);
  if (expect("FSINFO", rc, &r, NFS3_OK)) {
    FSINFO3resok *fi = &r.fsinfo;
    check(fi->rtmax == 1048576 && fi->wtmax == 1048576, "FSINFO rtmax and wtmax are 1048576",
          "rtmax %u wtmax %u", fi->rtmax, fi->wtmax);
    check(fi->rtpref > 0 && fi->rtpref <= fi->rtmax && fi->wtpref > 0 && fi->wtpref <= fi->wtmax &&
              fi->dtpref > 0 && fi->maxfilesize > 0,
          "FSINFO preferences sane", "rtpref %u wtpref %u dtpref %u maxfilesize %" PRIu64,
          fi->rtpref, fi->wtpref, fi->dtpref, fi->maxfilesize);
    check((fi->properties & (FSF3_LINK | FSF3_SYMLINK)) == (FSF3_LINK | FSF3_SYMLINK),
          "FSINFO properties include LINK and SYMLINK", "properties 0x%x", fi->properties);
  }
  if (make_file(g, "pathconf.bin", 0, 0, &f) == 0) {
    rc = r_pathconf(s->rpc, &f, &r);
    if (expect("PATHCONF", rc, &r, NFS3_OK))
      check(r.pathconf.name_max >= 255 && r.pathconf.linkmax >= 2,
            "PATHCONF name_max >= 255, linkmax >= 2", "name_max %u linkmax %u", r.pathconf.name_max,
            r.pathconf.linkmax);
    REMOVE_ALL(g, "pathconf.bin");
  }
  res_free(&r);
}

/* ---- bad_handles: forged / garbage / stale handles ---- */

/* variant 0..3 of a bad handle made from the real handle f */
static const char *bh_forge(int variant, const struct fh *f, struct fh *out) {
  memset(out, 0, sizeof *out);
  switch (variant) {
    case 0:
      out->len = 32;
      memset(out->data, 0xa5, 32);
      return "GETATTR with a 32-byte garbage handle";
    case 1:
      out->len = 0;
      return "GETATTR with a zero-length handle";
    case 2:
      *out = *f;
      out->len = f->len > 1 ? f->len / 2 : 1;
      return "GETATTR with a truncated real handle";
    default:
      *out = *f;
      if (out->len == 0) out->len = 1;
      out->data[out->len - 1] ^= 0x5a;
      if (out->len > 8) out->data[out->len / 2] ^= 0xff;
      return "GETATTR with a bit-flipped real handle";
  }
}

static void grp_bad_handles(struct grp *g) {
  struct sess *s = g->s;
  struct res r = {0};
  struct fh f, bad;
  fattr3 a2;
  int rc;

  if (make_file(g, "victim.bin", 4096, BIG_SEED, &f) != 0) return;
  if (getattr_ok(s, &f, &a2, "GETATTR victim.bin for forgery") != 0) memset(&a2, 0, sizeof a2);
  for (int variant = 0; variant < 4; variant++) {
    const char *lbl = bh_forge(variant, &f, &bad);
    rc = r_getattr(s->rpc, &bad, &r);
    if (rc == 0 && (r.status == NFS3ERR_BADHANDLE || r.status == NFS3ERR_STALE))
      ok("%s -> %s", lbl, nfsstat_str(r.status));
    else if (variant == 3 && rc == 0 && r.status == NFS3_OK && r.attr.fileid != a2.fileid)
      fail(lbl, "server accepted a forged handle and returned another object (fileid %" PRIu64 ")",
           r.attr.fileid);
    else
      fail(lbl, "rc %d status %s (%d) %s", rc, nfsstat_str(r.status), r.status, r.err);
  }
  rc = r_null(s->rpc, &r);
  check(rc == 0, "server still answers after garbage handles", "%s", r.err);

  /* the handle of a removed file */
  if (REMOVE_ALL(g, "victim.bin") == 0) {
    rc = r_getattr(s->rpc, &f, &r);
    if (rc == 0 && r.status == NFS3ERR_STALE)
      ok("GETATTR of a removed file's handle -> STALE");
    else
      fail("GETATTR of a removed file's handle -> STALE", "rc %d status %s", rc,
           nfsstat_str(r.status));
  }
  res_free(&r);
}

/* ---- the harness ---- */

static const struct grp_def {
  const char *name;
  void (*fn)(struct grp *g);
} grp_table[] = {
    {"lookup", grp_lookup},   {"read_write", grp_read_write},     {"access", grp_access},
    {"setattr", grp_setattr}, {"write_commit", grp_write_commit}, {"create", grp_create},
    {"rename", grp_rename},   {"link_remove", grp_link_remove},   {"symlink", grp_symlink},
    {"mknod", grp_mknod},     {"mkdir_rmdir", grp_mkdir_rmdir},   {"readdir", grp_readdir},
    {"fsinfo", grp_fsinfo},   {"bad_handles", grp_bad_handles},
};
#define NGROUPS ((int)(sizeof grp_table / sizeof grp_table[0]))

static const struct grp_def *find_group(const char *name) {
  for (int i = 0; i < NGROUPS; i++)
    if (!strcmp(grp_table[i].name, name)) return &grp_table[i];
  return NULL;
}

/* all: "; 2 of 14 groups failed: a b" or "; all 14 groups passed", for the
 * summary line; empty for the other subcommands */
static char g_summary_note[512];

/*
 * Best effort: remove everything in dir (subdirectories emptied first, at
 * most depth levels down): READDIR from cookie 0, REMOVE or empty+RMDIR
 * what it lists, until nothing is listed.  The names met at this level are
 * appended to left.  Returns how many entries were found.
 */
static int purge_dir(struct sess *s, const struct fh *dir, int depth, char *left, size_t leftsz) {
  unsigned char verf[NFS3_COOKIEVERFSIZE] = {0};
  struct res r = {0}, x = {0};
  int found = 0;

  for (int round = 0; round < 50; round++) {
    int listed = 0, removed = 0;
    if (r_readdir(s->rpc, dir, 0, verf, 65536, &r) != 0 || r.status != NFS3_OK) break;
    for (int i = 0; i < r.nents; i++) {
      const char *nm = r.ents[i].nm;
      struct fh sub;
      if (!strcmp(nm, ".") || !strcmp(nm, "..")) continue;
      listed++;
      if (left && strlen(left) + strlen(nm) + 2 < leftsz)
        snprintf(left + strlen(left), leftsz - strlen(left), " %s", nm);
      if (r_remove(s->rpc, dir, nm, &x) == 0 && x.status == NFS3_OK) {
        removed++;
        continue;
      }
      if (depth > 0 && r_lookup(s->rpc, dir, nm, &x) == 0 && x.status == NFS3_OK && x.has_attr &&
          x.attr.type == NF3DIR) {
        sub = x.fh;
        purge_dir(s, &sub, depth - 1, NULL, 0);
        if (r_rmdir(s->rpc, dir, nm, &x) == 0 && x.status == NFS3_OK) removed++;
      }
    }
    found += listed;
    left = NULL; /* name each leftover once */
    if (!listed || !removed) break;
  }
  res_free(&r);
  res_free(&x);
  return found;
}

/* the group's fresh directory kcd-<group>-<pid>-<time> at the export root */
static int grp_mkdir(struct grp *g) {
  struct sess *s = g->s;
  char w[256];
  int rc;

  snprintf(g->dname, sizeof g->dname, "kcd-%s-%ld-%ld", g->name, (long)getpid(), (long)time(NULL));
  snprintf(g->path, sizeof g->path, "/%s", g->dname);
  rc = nfs_mkdir2(s->nfs, g->path, 0755);
  snprintf(w, sizeof w, "%s: nfs_mkdir2 test directory", g->name);
  if (!check(rc == 0, w, "%s: %d %s", g->path, rc, nfs_get_error(s->nfs))) return -1;
  snprintf(w, sizeof w, "%s: LOOKUP test directory", g->name);
  if (lookup_fh(s, &s->root, g->dname, &g->dir, &g->dattr, w) != 0) return -1;
  snprintf(w, sizeof w, "%s: test directory is a dir with mode 0755", g->name);
  check(g->dattr.type == NF3DIR && (g->dattr.mode & 07777) == 0755, w, "type %d mode %o",
        (int)g->dattr.type, g->dattr.mode & 07777);
  return 0;
}

/* remove the group's directory: it must be empty; leftovers are named,
 * removed, and the directory removed after all */
static void grp_rmdir(struct grp *g) {
  struct sess *s = g->s;
  struct res r = {0};
  char w[256], left[1024] = "";
  int rc = nfs_rmdir(s->nfs, g->path);

  snprintf(w, sizeof w, "%s: nfs_rmdir test directory (the group left nothing behind)", g->name);
  if (!check(rc == 0, w, "%s: %d %s", g->path, rc, nfs_get_error(s->nfs))) {
    int n = purge_dir(s, &g->dir, 8, left, sizeof left);
    snprintf(w, sizeof w, "%s: cleanup after the group", g->name);
    if (n) fail(w, "%d entries left behind in %s:%s", n, g->path, left);
    rc = r_rmdir(s->rpc, &s->root, g->dname, &r);
    if (rc != 0 || r.status != NFS3_OK)
      fail(w, "RMDIR %s after removing the leftovers: rc %d status %s %s", g->dname, rc,
           nfsstat_str(r.status), r.err);
  }
  rc = r_lookup(s->rpc, &s->root, g->dname, &r);
  snprintf(w, sizeof w, "%s: test directory is gone", g->name);
  expect(w, rc, &r, NFS3ERR_NOENT);
  res_free(&r);
}

/* One group with its own session and directory.  1 = something failed. */
static int run_group(const char *url, const struct grp_def *gr) {
  int f0 = g_failed, p0 = g_passed;
  struct res r = {0};
  struct sess S;
  struct grp g;

  memset(&g, 0, sizeof g);
  g.s = &S;
  g.name = gr->name;
  if (sess_open(&S, url, -1, -1) == 0) {
    ok("%s: mount %s:%s (root fileid %" PRIu64 ")", gr->name, S.server, S.export,
       S.rootattr.fileid);
    if (grp_mkdir(&g) == 0) {
      gr->fn(&g);
      /* a group that broke its connection: clean up over a new one */
      if (r_null(S.rpc, &r) != 0) {
        fail(gr->name, "the session stopped answering: %s; cleaning up over a new one", r.err);
        sess_close(&S);
        if (sess_open(&S, url, -1, -1) != 0) goto out;
      }
      grp_rmdir(&g);
    }
  }
out:
  res_free(&r);
  sess_close(&S);
  printf("group %s: %d checks ok, %d failed\n", gr->name, g_passed - p0, g_failed - f0);
  return g_failed != f0;
}

/* every group in order, each with its own setup; 1 = any failed */
static int cmd_all(const char *url) {
  char failed[400] = "";
  int nbad = 0;
  for (int i = 0; i < NGROUPS; i++)
    if (run_group(url, &grp_table[i])) {
      nbad++;
      snprintf(failed + strlen(failed), sizeof failed - strlen(failed), " %s", grp_table[i].name);
    }
  if (nbad)
    snprintf(g_summary_note, sizeof g_summary_note, "; %d of %d groups failed:%s", nbad, NGROUPS,
             failed);
  else
    snprintf(g_summary_note, sizeof g_summary_note, "; all %d groups passed", NGROUPS);
  return nbad ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* dirlist                                                              */

static void dl_name(char *buf, size_t n, int i) {
  /* varying length names exercise XDR padding */
  snprintf(buf, n, "e%05d_%.*s", i, i % 17, "abcdefghijklmnopq");
}

static int dl_index(const char *nm, int n) {
  char want[64];
  int i;
  if (nm[0] != 'e' || sscanf(nm + 1, "%5d", &i) != 1 || i < 0 || i >= n) return -1;
  dl_name(want, sizeof want, i);
  return strcmp(want, nm) == 0 ? i : -1;
}

struct tally {
  const char *what;
  int n;
  int *seen;
  uint64_t *fileid; /* shared across listings, 0 = unknown */
  int dots;
  int problems;
};

static void tally_start(struct tally *t, const char *what, int n, uint64_t *fileid) {
  t->what = what;
  t->n = n;
  t->seen = calloc((size_t)n, sizeof *t->seen);
  if (!t->seen) {
    fprintf(stderr, "FAIL: out of memory\n");
    exit(2);
  }
  t->fileid = fileid;
  t->dots = 0;
  t->problems = 0;
}

static void tally_add(struct tally *t, const char *nm, uint64_t fileid) {
  int i;
  if (!strcmp(nm, ".") || !strcmp(nm, "..")) {
    if (++t->dots > 2 && t->problems++ < 10)
      fail(t->what, "'%s' listed again (%d dot entries)", nm, t->dots);
    return;
  }
  i = dl_index(nm, t->n);
  if (i < 0) {
    if (t->problems++ < 10) fail(t->what, "unexpected name '%s'", nm);
    return;
  }
  if (++t->seen[i] > 1 && t->problems++ < 10) fail(t->what, "'%s' listed %d times", nm, t->seen[i]);
  if (fileid && t->fileid) {
    if (t->fileid[i] == 0)
      t->fileid[i] = fileid;
    else if (t->fileid[i] != fileid && t->problems++ < 10)
      fail(t->what, "'%s' fileid %" PRIu64 " differs from earlier listing (%" PRIu64 ")", nm,
           fileid, t->fileid[i]);
  }
}

static void tally_end(struct tally *t, int pages) {
  int missing = 0, first = -1;
  for (int i = 0; i < t->n; i++)
    if (t->seen[i] == 0) {
      if (first < 0) first = i;
      missing++;
    }
  if (missing) {
    char nm[64];
    dl_name(nm, sizeof nm, first);
    fail(t->what, "%d of %d names missing (first: %s)", missing, t->n, nm);
    t->problems++;
  }
  if (!t->problems)
    ok("%s: all %d names exactly once, %d dot entries, %d pages", t->what, t->n, t->dots, pages);
  free(t->seen);
  t->seen = NULL;
}

/* raw paged listing; plus=0 READDIR(count), plus=1 READDIRPLUS */
static void dl_raw(struct sess *s, const struct fh *dir, int n, int plus, uint32_t count,
                   uint32_t maxcount, uint64_t *fileids, const char *what) {
  struct tally t;
  struct res r = {0};
  unsigned char verf[8] = {0};
  uint64_t cookie = 0;
  int pages = 0, cap = n + 64, done = 0, missing_attr = 0, missing_fh = 0;

  tally_start(&t, what, n, fileids);
  while (!done) {
    int rc;
    if (++pages > cap) {
      fail(what,
           "no EOF after %d pages: listing does not "
           "terminate",
           cap);
      t.problems++;
      break;
    }
    if (plus)
      rc = r_readdirplus(s->rpc, dir, cookie, verf, count, maxcount, &r);
    else
      rc = r_readdir(s->rpc, dir, cookie, verf, count, &r);
    if (!expect_quiet(what, rc, &r, NFS3_OK)) {
      t.problems++;
      break;
    }
    if (r.nents == 0 && !r.eof) {
      fail(what,
           "page %d has no entries and no EOF (cookie "
           "%" PRIu64 ")",
           pages, cookie);
      t.problems++;
      break;
    }
    for (int j = 0; j < r.nents; j++) {
      struct dent *d = &r.ents[j];
      tally_add(&t, d->nm, d->fileid);
      if (d->cookie == 0 && t.problems++ < 10) fail(what, "entry '%s' has cookie 0", d->nm);
      if (plus && strcmp(d->nm, ".") && strcmp(d->nm, "..")) {
        if (!d->has_attr)
          missing_attr++;
        else if (d->attr.fileid != d->fileid || d->attr.type != NF3REG) {
          if (t.problems++ < 10)
            fail(what,
                 "'%s': attributes "
                 "fileid %" PRIu64 " type %d, entry fileid %" PRIu64,
                 d->nm, d->attr.fileid, (int)d->attr.type, d->fileid);
        }
        if (!d->has_fh) missing_fh++;
      }
    }
    if (r.nents) cookie = r.ents[r.nents - 1].cookie;
    memcpy(verf, r.cookieverf, 8);
    done = r.eof;
  }
  if (plus && (missing_attr || missing_fh))
    printf(
        "note: %s: %d entries without attributes, %d without "
        "handles (allowed by RFC 1813)\n",
        what, missing_attr, missing_fh);
  tally_end(&t, pages);
  res_free(&r);
}

static int cmd_dirlist(const char *url, int n) {
  struct sess S, *s = &S;
  struct res r = {0};
  struct fh dirfh;
  char dname[128], path[256], nm[64];
  uint64_t *fileids;
  int rc, bad = 0;
  double t0;

  if (n <= 0 || n > 99999) {
    fail("dirlist", "N must be 1..99999");
    return 2;
  }
  if (sess_open(s, url, -1, -1) != 0) return 1;
  fileids = calloc((size_t)n, sizeof *fileids);
  if (!fileids) return 2;
  snprintf(dname, sizeof dname, "kcd-dirlist-%ld-%ld", (long)getpid(), (long)time(NULL));
  snprintf(path, sizeof path, "/%s", dname);
  rc = r_mkdir(s->rpc, &s->root, dname, 0755, &r);
  if (!expect("MKDIR dirlist directory", rc, &r, NFS3_OK) ||
      lookup_fh(s, &s->root, dname, &dirfh, NULL, "LOOKUP dirlist directory") != 0) {
    sess_close(s);
    return 1;
  }
  t0 = now_s();
  for (int i = 0; i < n; i++) {
    dl_name(nm, sizeof nm, i);
    rc = r_create(s->rpc, &dirfh, nm, GUARDED, 0644, NULL, &r);
    if (!expect_quiet("CREATE dirlist file", rc, &r, NFS3_OK)) {
      fprintf(stderr, "  (while creating '%s', #%d)\n", nm, i);
      if (++bad > 5) break;
    } else if (r.has_fh && r.has_attr) {
      fileids[i] = r.attr.fileid;
    }
  }
  if (!bad) ok("created %d files in %.1f s", n, now_s() - t0);

  /* (a) libnfs high-level listing (READDIRPLUS underneath) */
  {
    struct nfsdir *nd = NULL;
    struct nfsdirent *de;
    struct tally t;
    tally_start(&t, "nfs_opendir/nfs_readdir listing", n, fileids);
    rc = nfs_opendir(s->nfs, path, &nd);
    if (rc != 0) {
      fail("nfs_opendir", "%d %s", rc, nfs_get_error(s->nfs));
      t.problems++;
    } else {
      while ((de = nfs_readdir(s->nfs, nd))) tally_add(&t, de->name, de->inode);
      nfs_closedir(s->nfs, nd);
    }
    tally_end(&t, 0);
  }
  /* (b) raw READDIR, 1 KiB pages */
  dl_raw(s, &dirfh, n, 0, 1024, 0, fileids, "raw READDIR count=1024");
  /* (c) raw READDIRPLUS dircount=512 maxcount=4096 */
  dl_raw(s, &dirfh, n, 1, 512, 4096, fileids, "raw READDIRPLUS dircount=512 maxcount=4096");
  /* a too-small READDIR must answer TOOSMALL, not loop or crash */
  {
    unsigned char verf[8] = {0};
    rc = r_readdir(s->rpc, &dirfh, 0, verf, 40, &r);
    if (rc == 0 && (r.status == NFS3ERR_TOOSMALL || (r.status == NFS3_OK && r.nents <= 1)))
      ok("READDIR count=40: %s with %d entries", nfsstat_str(r.status), r.nents);
    else
      fail("READDIR count=40",
           "rc %d status %s with %d entries: a reply with "
           "several entries cannot fit in 40 bytes (RFC 1813 "
           "wants NFS3ERR_TOOSMALL) %s",
           rc, nfsstat_str(r.status), r.nents, r.err);
  }

  /* remove them all, then the directory must list empty */
  t0 = now_s();
  bad = 0;
  for (int i = 0; i < n; i++) {
    dl_name(nm, sizeof nm, i);
    rc = r_remove(s->rpc, &dirfh, nm, &r);
    if (!expect_quiet("REMOVE dirlist file", rc, &r, NFS3_OK)) {
      fprintf(stderr, "  (while removing '%s')\n", nm);
      if (++bad > 5) break;
    }
  }
  if (!bad) ok("removed %d files in %.1f s", n, now_s() - t0);
  {
    unsigned char verf[8] = {0};
    int others = 0;
    rc = r_readdir(s->rpc, &dirfh, 0, verf, 4096, &r);
    if (expect_quiet("READDIR of emptied directory", rc, &r, NFS3_OK)) {
      for (int j = 0; j < r.nents; j++)
        if (strcmp(r.ents[j].nm, ".") && strcmp(r.ents[j].nm, "..")) others++;
      check(others == 0 && r.eof, "emptied directory lists only . and ..",
            "%d other entries, eof %d", others, r.eof);
    }
  }
  rc = r_rmdir(s->rpc, &s->root, dname, &r);
  expect("RMDIR dirlist directory", rc, &r, NFS3_OK);
  res_free(&r);
  free(fileids);
  sess_close(s);
  return g_failed ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* save / check (server restart)                                        */

#define SAVE_A_SIZE (256 * 1024 + 17)
#define SAVE_B_SIZE (3 * 100000)

static int cmd_save(const char *url, const char *statefile) {
  struct sess S, *s = &S;
  struct res r = {0};
  struct fh dirfh, fa, fb;
  char dname[128], hx[2 * NFS3_FHSIZE + 1], vx[17];
  unsigned char *da = xmalloc(SAVE_A_SIZE), *db = xmalloc(SAVE_B_SIZE);
  unsigned char verf[8];
  FILE *f;
  int rc, verf_ok = 1;

  if (sess_open(s, url, -1, -1) != 0) return 1;
  snprintf(dname, sizeof dname, "kcd-restart-%ld-%ld", (long)getpid(), (long)time(NULL));
  rc = r_mkdir(s->rpc, &s->root, dname, 0755, &r);
  if (!expect("MKDIR restart directory", rc, &r, NFS3_OK) ||
      lookup_fh(s, &s->root, dname, &dirfh, NULL, "LOOKUP restart dir"))
    return 1;

  fill_pattern(da, SAVE_A_SIZE, 0xa11ce);
  fill_pattern(db, SAVE_B_SIZE, 0xb0b);

  rc = r_create(s->rpc, &dirfh, "filesync.bin", GUARDED, 0644, NULL, &r);
  if (!expect("CREATE filesync.bin", rc, &r, NFS3_OK) ||
      lookup_fh(s, &dirfh, "filesync.bin", &fa, NULL, "LOOKUP filesync.bin"))
    return 1;
  for (uint32_t off = 0; off < SAVE_A_SIZE;) {
    uint32_t n = SAVE_A_SIZE - off > 65536 ? 65536 : SAVE_A_SIZE - off;
    rc = r_write(s->rpc, &fa, off, da + off, n, FILE_SYNC, &r);
    if (!expect_quiet("WRITE FILE_SYNC", rc, &r, NFS3_OK)) return 1;
    if (r.committed != FILE_SYNC || r.count == 0 || r.count > n) {
      fail("WRITE FILE_SYNC", "committed %d count %u", r.committed, r.count);
      return 1;
    }
    off += r.count;
  }
  ok("wrote filesync.bin with FILE_SYNC");

  rc = r_create(s->rpc, &dirfh, "unstable.bin", GUARDED, 0644, NULL, &r);
  if (!expect("CREATE unstable.bin", rc, &r, NFS3_OK) ||
      lookup_fh(s, &dirfh, "unstable.bin", &fb, NULL, "LOOKUP unstable.bin"))
    return 1;
  for (uint32_t off = 0; off < SAVE_B_SIZE;) {
    uint32_t n = 100000;
    rc = r_write(s->rpc, &fb, off, db + off, n, UNSTABLE, &r);
    if (!expect_quiet("WRITE UNSTABLE", rc, &r, NFS3_OK)) return 1;
    if (off == 0)
      memcpy(verf, r.verf, 8);
    else if (memcmp(verf, r.verf, 8))
      verf_ok = 0;
    if (r.count == 0 || r.count > n) {
      fail("WRITE UNSTABLE", "count %u", r.count);
      return 1;
    }
    off += r.count;
  }
  rc = r_commit(s->rpc, &fb, 0, 0, &r);
  if (expect("COMMIT unstable.bin", rc, &r, NFS3_OK))
    check(verf_ok && memcmp(verf, r.verf, 8) == 0, "WRITE and COMMIT verifiers agree",
          "they differ");

  /* read back before the kill */
  {
    unsigned char *got = raw_read_all(s, &fa, SAVE_A_SIZE, 100000, "read filesync.bin");
    check(got && !memcmp(got, da, SAVE_A_SIZE), "filesync.bin reads back", "contents differ");
    free(got);
    got = raw_read_all(s, &fb, SAVE_B_SIZE, 100000, "read unstable.bin");
    check(got && !memcmp(got, db, SAVE_B_SIZE), "unstable.bin reads back", "contents differ");
    free(got);
  }

  f = fopen(statefile, "w");
  if (!f) {
    fail("write state file", "%s: %s", statefile, strerror(errno));
    return 1;
  }
  fprintf(f, "dir %s\n", dname);
  hex(dirfh.data, dirfh.len, hx);
  fprintf(f, "dirfh %s\n", hx);
  hex(fa.data, fa.len, hx);
  fprintf(f, "fha %s\nsizea %d\nsuma %016" PRIx64 "\n", hx, SAVE_A_SIZE, fnv1a(da, SAVE_A_SIZE));
  hex(fb.data, fb.len, hx);
  fprintf(f, "fhb %s\nsizeb %d\nsumb %016" PRIx64 "\n", hx, SAVE_B_SIZE, fnv1a(db, SAVE_B_SIZE));
  hex(verf, 8, vx);
  fprintf(f, "verf %s\n", vx);
  if (fclose(f) != 0) {
    fail("write state file", "%s", strerror(errno));
    return 1;
  }
  ok("state saved to %s", statefile);
  free(da);
  free(db);
  res_free(&r);
  sess_close(s);
  return g_failed ? 1 : 0;
}

static int cmd_check(const char *url, const char *statefile) {
  struct sess S, *s = &S;
  struct res r = {0};
  char line[512], key[32], val[256], dname[300] = "";
  struct fh dirfh = {0, {0}}, fa = {0, {0}}, fb = {0, {0}};
  unsigned char oldverf[8];
  uint64_t suma = 0, sumb = 0, sizea = 0, sizeb = 0;
  int have = 0, rc;
  FILE *f = fopen(statefile, "r");

  if (!f) {
    fail("read state file", "%s: %s", statefile, strerror(errno));
    return 1;
  }
  while (fgets(line, sizeof line, f)) {
    int n;
    if (sscanf(line, "%31s %255s", key, val) != 2) continue;
    if (!strcmp(key, "dir")) {
      snprintf(dname, sizeof dname, "%s", val);
      have |= 1;
    } else if (!strcmp(key, "dirfh") && (n = unhex(val, dirfh.data, NFS3_FHSIZE)) > 0) {
      dirfh.len = (uint32_t)n;
      have |= 2;
    } else if (!strcmp(key, "fha") && (n = unhex(val, fa.data, NFS3_FHSIZE)) > 0) {
      fa.len = (uint32_t)n;
      have |= 4;
    } else if (!strcmp(key, "fhb") && (n = unhex(val, fb.data, NFS3_FHSIZE)) > 0) {
      fb.len = (uint32_t)n;
      have |= 8;
    } else if (!strcmp(key, "suma")) {
      suma = strtoull(val, NULL, 16);
      have |= 16;
    } else if (!strcmp(key, "sumb")) {
      sumb = strtoull(val, NULL, 16);
      have |= 32;
    } else if (!strcmp(key, "sizea")) {
      sizea = strtoull(val, NULL, 10);
      have |= 64;
    } else if (!strcmp(key, "sizeb")) {
      sizeb = strtoull(val, NULL, 10);
      have |= 128;
    } else if (!strcmp(key, "verf") && unhex(val, oldverf, 8) == 8) {
      have |= 256;
    }
  }
  fclose(f);
  if (have != 511) {
    fail("read state file", "incomplete (mask 0x%x)", have);
    return 1;
  }
  if (sess_open(s, url, -1, -1) != 0) return 1;

  /* old handles, no new lookup */
  {
    struct fh *fhs[2] = {&fa, &fb};
    uint64_t sizes[2] = {sizea, sizeb}, sums[2] = {suma, sumb};
    const char *lbl[2] = {"FILE_SYNC file", "UNSTABLE+COMMIT file"};
    for (int i = 0; i < 2; i++) {
      char w[128];
      fattr3 a;
      unsigned char *got;
      snprintf(w, sizeof w, "GETATTR old handle of %s", lbl[i]);
      rc = r_getattr(s->rpc, fhs[i], &r);
      if (!expect(w, rc, &r, NFS3_OK)) continue;
      a = r.attr;
      snprintf(w, sizeof w, "%s: type and size intact", lbl[i]);
      check(a.type == NF3REG && a.size == sizes[i], w,
            "after restart: type %d size %" PRIu64 " expected %" PRIu64, (int)a.type, a.size,
            sizes[i]);
      snprintf(w, sizeof w, "READ old handle of %s", lbl[i]);
      got = raw_read_all(s, fhs[i], sizes[i], 65536, w);
      if (got) {
        check(fnv1a(got, sizes[i]) == sums[i], w, "checksum %016" PRIx64 " expected %016" PRIx64,
              fnv1a(got, sizes[i]), sums[i]);
        free(got);
      }
    }
    rc = r_getattr(s->rpc, &dirfh, &r);
    if (expect("GETATTR old directory handle", rc, &r, NFS3_OK))
      check(r.attr.type == NF3DIR, "old dir handle is a dir", "type %d", (int)r.attr.type);
  }
  /* new write verifier */
  {
    unsigned char buf[4096];
    fill_pattern(buf, sizeof buf, 99);
    rc = r_write(s->rpc, &fb, sizeb, buf, sizeof buf, UNSTABLE, &r);
    if (expect("WRITE UNSTABLE after restart", rc, &r, NFS3_OK)) {
      char o[17], n[17];
      unsigned char nv[8];
      memcpy(nv, r.verf, 8);
      hex(oldverf, 8, o);
      hex(nv, 8, n);
      check(memcmp(nv, oldverf, 8) != 0, "write verifier changed across restart", "still %s", n);
      rc = r_commit(s->rpc, &fb, 0, 0, &r);
      if (expect("COMMIT after restart", rc, &r, NFS3_OK))
        check(memcmp(r.verf, nv, 8) == 0,
              "COMMIT verifier equals new WRITE "
              "verifier",
              "old %s new %s", o, n);
    }
  }
  /* clean up by name through the old directory handle */
  rc = r_remove(s->rpc, &dirfh, "filesync.bin", &r);
  expect("REMOVE filesync.bin", rc, &r, NFS3_OK);
  rc = r_remove(s->rpc, &dirfh, "unstable.bin", &r);
  expect("REMOVE unstable.bin", rc, &r, NFS3_OK);
  rc = r_rmdir(s->rpc, &s->root, dname, &r);
  expect("RMDIR restart directory", rc, &r, NFS3_OK);
  res_free(&r);
  sess_close(s);
  return g_failed ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* stress                                                               */

static int stress_client(const char *url, int id, int iters, double secs) {
  struct sess S, *s = &S;
  char dir[128], p[256], p2[256];
  uint64_t rng = (uint64_t)getpid() * 2654435761u + (uint64_t)id + 1;
  unsigned char *buf = xmalloc(700000), *back = xmalloc(700000);
  double end = now_s() + secs;
  int it, rc;

  snprintf(g_tag, sizeof g_tag, "[client %d] ", id);
  if (sess_open(s, url, -1, -1) != 0) return 1;
  snprintf(dir, sizeof dir, "/kcd-stress-%ld-%d", (long)getppid(), id);
  rc = nfs_mkdir(s->nfs, dir);
  if (rc != 0) {
    fail("nfs_mkdir", "%s: %d %s", dir, rc, nfs_get_error(s->nfs));
    return 1;
  }
  for (it = 0; secs > 0 ? now_s() < end : it < iters; it++) {
    struct nfsfh *nf = NULL;
    struct nfs_stat_64 st;
    size_t size = rng_next(&rng) % 600000, off = 0;
    snprintf(p, sizeof p, "%s/f%d", dir, it);
    fill_pattern(buf, size, rng_next(&rng));
    rc = nfs_creat(s->nfs, p, 0644, &nf);
    if (rc != 0) {
      fail("nfs_creat", "%s: %d %s", p, rc, nfs_get_error(s->nfs));
      break;
    }
    while (off < size) {
      size_t n = 1 + rng_next(&rng) % 131072;
      if (n > size - off) n = size - off;
      rc = nfs_pwrite(s->nfs, nf, off, n, buf + off);
      if (rc != (int)n) {
        fail("nfs_pwrite", "%s off %zu: %d %s", p, off, rc, nfs_get_error(s->nfs));
        break;
      }
      off += n;
    }
    nfs_close(s->nfs, nf);
    if (off < size) break;
    if (it % 3 == 2) {
      snprintf(p2, sizeof p2, "%s/r%d", dir, it);
      rc = nfs_rename(s->nfs, p, p2);
      if (rc != 0) {
        fail("nfs_rename", "%d %s", rc, nfs_get_error(s->nfs));
        break;
      }
      snprintf(p, sizeof p, "%s", p2);
    }
    rc = nfs_open(s->nfs, p, O_RDONLY, &nf);
    if (rc != 0) {
      fail("nfs_open", "%s: %d %s", p, rc, nfs_get_error(s->nfs));
      break;
    }
    rc = nfs_fstat64(s->nfs, nf, &st);
    if (rc != 0 || st.nfs_size != size) {
      fail("nfs_fstat64", "%s: rc %d size %" PRIu64 " expected %zu", p, rc, (uint64_t)st.nfs_size,
           size);
      nfs_close(s->nfs, nf);
      break;
    }
    off = 0;
    while (off < size) {
      size_t n = 1 + rng_next(&rng) % 200000;
      if (n > size - off) n = size - off;
      rc = nfs_pread(s->nfs, nf, off, n, back + off);
      if (rc != (int)n) {
        fail("nfs_pread", "%s off %zu: %d %s", p, off, rc, nfs_get_error(s->nfs));
        break;
      }
      off += n;
    }
    nfs_close(s->nfs, nf);
    if (off < size) break;
    if (memcmp(buf, back, size) != 0) {
      size_t where = 0;
      same_bytes(buf, back, size, &where);
      fail("read back", "%s: data differs at byte %zu of %zu", p, where, size);
      break;
    }
    rc = nfs_unlink(s->nfs, p);
    if (rc != 0) {
      fail("nfs_unlink", "%s: %d %s", p, rc, nfs_get_error(s->nfs));
      break;
    }
  }
  if (!g_failed) {
    rc = nfs_rmdir(s->nfs, dir);
    check(rc == 0, "nfs_rmdir own directory", "%d %s", rc, nfs_get_error(s->nfs));
  }
  if (!g_failed) ok("%d create/write/read/remove iterations", it);
  free(buf);
  free(back);
  sess_close(s);
  return g_failed ? 1 : 0;
}

static int cmd_stress(const char *url, int nclients, const char *amount) {
  int iters = 0, failed = 0;
  double secs = 0;
  pid_t *pids;
  char *end;

  if (nclients < 1 || nclients > 256) {
    fail("stress", "NCLIENTS must be 1..256");
    return 2;
  }
  iters = (int)strtol(amount, &end, 10);
  if (*end == 's') {
    secs = iters;
    iters = 0;
  } else if (*end || iters <= 0) {
    fail("stress", "bad amount '%s' (N iterations or Ns seconds)", amount);
    return 2;
  }
  pids = calloc((size_t)nclients, sizeof *pids);
  if (!pids) return 2;
  fflush(stdout);
  fflush(stderr);
  for (int i = 0; i < nclients; i++) {
    pid_t p = fork();
    if (p < 0) {
      fail("fork", "%s", strerror(errno));
      failed++;
      break;
    }
    if (p == 0) {
      int rc = stress_client(url, i, iters, secs);
      fflush(stdout);
      fflush(stderr);
      _exit(rc);
    }
    pids[i] = p;
  }
  for (int i = 0; i < nclients; i++) {
    int st;
    if (pids[i] <= 0) continue;
    if (waitpid(pids[i], &st, 0) < 0) {
      fail("waitpid", "%s", strerror(errno));
      failed++;
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fail("stress client", "client %d %s %d", i,
           WIFEXITED(st) ? "exited with" : "killed by signal",
           WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
      failed++;
    }
  }
  free(pids);
  if (!failed) ok("all %d stress clients succeeded", nclients);
  return failed || g_failed ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* raw: read-after-write under concurrent readers                       */

#define RAW_BLOCK 8192
#define RAW_BLOCKS 4

/* Reads random blocks of the file until `end` (keeps in-flight reads of
 * every block going, so a READ after a WRITE has older reads to join). */
static int raw_reader(const char *url, const char *path, int id, double end) {
  struct sess S, *s = &S;
  struct nfsfh *nf = NULL;
  unsigned char b[RAW_BLOCK];
  uint64_t rng = (uint64_t)getpid() * 2654435761u + (uint64_t)id;
  int rc;

  snprintf(g_tag, sizeof g_tag, "[reader %d] ", id);
  if (sess_open(s, url, -1, -1) != 0) return 1;
  rc = nfs_open(s->nfs, path, O_RDONLY, &nf);
  if (rc != 0) {
    fail("nfs_open", "%s: %d %s", path, rc, nfs_get_error(s->nfs));
    sess_close(s);
    return 1;
  }
  while (now_s() < end) {
    uint64_t blk = rng_next(&rng) % RAW_BLOCKS;
    rc = nfs_pread(s->nfs, nf, blk * RAW_BLOCK, RAW_BLOCK, b);
    if (rc != RAW_BLOCK) {
      fail("nfs_pread", "block %" PRIu64 ": %d %s", blk, rc, nfs_get_error(s->nfs));
      break;
    }
  }
  nfs_close(s->nfs, nf);
  sess_close(s);
  return g_failed ? 1 : 0;
}

/* One writer stamps a version into a block, waits for the WRITE reply, and
 * reads the block back while `nreaders` other clients read the same blocks:
 * every read-back must show the version just written (RFC 1813: a READ
 * that starts after the WRITE's reply sees the write). */
static int cmd_raw(const char *url, int nreaders, double secs) {
  struct sess S, *s = &S;
  struct nfsfh *nf = NULL;
  char path[128];
  uint32_t b[RAW_BLOCK / 4], back[RAW_BLOCK / 4];
  uint32_t version[RAW_BLOCKS] = {0};
  uint64_t rng = (uint64_t)getpid();
  pid_t pids[64];
  int n = 0, stale = 0, rc, failed = 0;
  double end;

  if (nreaders < 0 || nreaders > 64) {
    fail("raw", "NREADERS must be 0..64");
    return 2;
  }
  if (sess_open(s, url, -1, -1) != 0) return 1;
  snprintf(path, sizeof path, "/kcd-raw-%ld", (long)getpid());
  rc = nfs_creat(s->nfs, path, 0644, &nf);
  if (rc != 0) {
    fail("nfs_creat", "%s: %d %s", path, rc, nfs_get_error(s->nfs));
    sess_close(s);
    return 1;
  }
  memset(b, 0, sizeof b);
  for (int i = 0; i < RAW_BLOCKS; i++)
    if (nfs_pwrite(s->nfs, nf, (uint64_t)i * RAW_BLOCK, RAW_BLOCK, b) != RAW_BLOCK) {
      fail("nfs_pwrite", "initial block %d: %s", i, nfs_get_error(s->nfs));
      sess_close(s);
      return 1;
    }
  end = now_s() + secs;
  fflush(stdout);
  fflush(stderr);
  for (int i = 0; i < nreaders; i++) {
    pid_t p = fork();
    if (p < 0) {
      fail("fork", "%s", strerror(errno));
      nreaders = i;
      break;
    }
    if (p == 0) _exit(raw_reader(url, path, i, end + 1));
    pids[i] = p;
  }
  while (now_s() < end && !g_failed) {
    int blk = (int)(rng_next(&rng) % RAW_BLOCKS);
    uint32_t v = ++version[blk];
    for (size_t i = 0; i < RAW_BLOCK / 4; i++) b[i] = v;
    rc = nfs_pwrite(s->nfs, nf, (uint64_t)blk * RAW_BLOCK, RAW_BLOCK, b);
    if (rc != RAW_BLOCK) {
      fail("nfs_pwrite", "block %d: %d %s", blk, rc, nfs_get_error(s->nfs));
      break;
    }
    rc = nfs_pread(s->nfs, nf, (uint64_t)blk * RAW_BLOCK, RAW_BLOCK, back);
    if (rc != RAW_BLOCK) {
      fail("nfs_pread", "block %d: %d %s", blk, rc, nfs_get_error(s->nfs));
      break;
    }
    if (back[0] != v || back[RAW_BLOCK / 4 - 1] != v) {
      if (stale++ < 5)
        fail("read after write", "block %d: wrote %u, read back %u", blk, v, back[0]);
    }
    n++;
  }
  for (int i = 0; i < nreaders; i++) {
    int st;
    if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fail("reader", "reader %d failed", i);
      failed++;
    }
  }
  nfs_close(s->nfs, nf);
  nfs_unlink(s->nfs, path);
  sess_close(s);
  if (n == 0 && !g_failed)
    fail("read after write", "no write/read-back pair ran in %.1f s: nothing was tested", secs);
  else if (!stale && !failed && !g_failed)
    ok("%d write/read-back pairs with %d concurrent readers: "
       "every read-back saw its write",
       n, nreaders);
  else if (stale)
    fail("read after write", "%d of %d read-backs were stale", stale, n);
  return stale || failed || g_failed || n == 0 ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* squash                                                               */

static int cmd_squash(const char *url, uint32_t anon) {
  struct sess S, *s = &S;
  struct res r = {0};
  struct fh dirfh, ffh;
  fattr3 a;
  char dname[128], p[300];
  struct nfsfh *nf = NULL;
  int rc;

  if (sess_open(s, url, 0, 0) != 0) return 1;
  snprintf(dname, sizeof dname, "kcd-squash-%ld", (long)getpid());
  snprintf(p, sizeof p, "/%s", dname);
  rc = nfs_mkdir(s->nfs, p);
  if (check(rc == 0, "nfs_mkdir as root on a root_squash export", "%d %s", rc,
            nfs_get_error(s->nfs)) &&
      lookup_fh(s, &s->root, dname, &dirfh, &a, "LOOKUP squash dir") == 0) {
    check(a.uid == anon && a.gid == anon, "directory made by root is owned by the anon id",
          "uid %u gid %u expected %u", a.uid, a.gid, anon);
    snprintf(p, sizeof p, "/%s/rootfile", dname);
    rc = nfs_creat(s->nfs, p, 0644, &nf);
    if (check(rc == 0, "nfs_creat as root", "%d %s", rc, nfs_get_error(s->nfs))) {
      rc = nfs_pwrite(s->nfs, nf, 0, 5, "hello");
      check(rc == 5, "write as squashed root", "%d %s", rc, nfs_get_error(s->nfs));
      nfs_close(s->nfs, nf);
      if (lookup_fh(s, &dirfh, "rootfile", &ffh, &a, "LOOKUP rootfile") == 0)
        check(a.uid == anon && a.gid == anon,
              "file created as root is owned by the "
              "anon id",
              "uid %u gid %u expected %u", a.uid, a.gid, anon);
      /* root may not give files away to root */
      {
        sattr3 sa = sattr_none();
        sa.uid.set_it = 1;
        sa.uid.set_uid3_u.uid = 0;
        rc = r_setattr(s->rpc, &ffh, &sa, NULL, &r);
        if (rc == 0 && (r.status == NFS3ERR_PERM || r.status == NFS3ERR_ACCES))
          ok("chown to uid 0 by squashed root "
             "refused (%s)",
             nfsstat_str(r.status));
        else
          fail(
              "chown to uid 0 by squashed root "
              "refused",
              "rc %d status %s", rc, nfsstat_str(r.status));
      }
      rc = nfs_unlink(s->nfs, p);
      check(rc == 0, "nfs_unlink rootfile", "%d %s", rc, nfs_get_error(s->nfs));
    }
    snprintf(p, sizeof p, "/%s", dname);
    rc = nfs_rmdir(s->nfs, p);
    check(rc == 0, "nfs_rmdir squash dir", "%d %s", rc, nfs_get_error(s->nfs));
  }
  res_free(&r);
  sess_close(s);
  return g_failed ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* ro: a read-only export refuses every modification                    */

static int cmd_ro(const char *url, const char *existing) {
  struct sess S, *s = &S;
  struct res r = {0};
  struct fh f;
  fattr3 a;
  int rc;
  unsigned char buf[16] = "overwrite-try";

  if (sess_open(s, url, -1, -1) != 0) return 1;
  if (lookup_fh(s, &s->root, existing, &f, &a, "LOOKUP existing file on read-only export") != 0) {
    sess_close(s);
    return 1;
  }
  ok("LOOKUP existing file on read-only export");
  rc = r_read(s->rpc, &f, 0, 4096, &r);
  if (expect("READ on read-only export", rc, &r, NFS3_OK))
    check(r.count == (a.size < 4096 ? a.size : 4096), "READ on read-only export returns the data",
          "count %u size %" PRIu64, r.count, a.size);
  rc = r_create(s->rpc, &s->root, "kcd-ro-create", GUARDED, 0644, NULL, &r);
  expect("CREATE on read-only export -> ROFS", rc, &r, NFS3ERR_ROFS);
  rc = r_mkdir(s->rpc, &s->root, "kcd-ro-mkdir", 0755, &r);
  expect("MKDIR on read-only export -> ROFS", rc, &r, NFS3ERR_ROFS);
  rc = r_write(s->rpc, &f, 0, buf, sizeof buf, FILE_SYNC, &r);
  expect("WRITE on read-only export -> ROFS", rc, &r, NFS3ERR_ROFS);
  {
    sattr3 sa = sattr_mode(0600);
    rc = r_setattr(s->rpc, &f, &sa, NULL, &r);
    expect("SETATTR on read-only export -> ROFS", rc, &r, NFS3ERR_ROFS);
  }
  rc = r_remove(s->rpc, &s->root, existing, &r);
  expect("REMOVE on read-only export -> ROFS", rc, &r, NFS3ERR_ROFS);
  rc = r_rename(s->rpc, &s->root, existing, &s->root, "kcd-ro-renamed", &r);
  expect("RENAME on read-only export -> ROFS", rc, &r, NFS3ERR_ROFS);
  rc = r_access(s->rpc, &f, ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND, &r);
  if (expect("ACCESS on read-only export", rc, &r, NFS3_OK))
    check((r.access & ACCESS3_READ) && !(r.access & (ACCESS3_MODIFY | ACCESS3_EXTEND)),
          "ACCESS on read-only export grants READ only", "access 0x%x", r.access);
  if (getattr_ok(s, &f, &a, "GETATTR after refused changes") == 0)
    ok("file still there, mode %o size %" PRIu64, a.mode & 07777, a.size);
  res_free(&r);
  sess_close(s);
  return g_failed ? 1 : 0;
}

/* ------------------------------------------------------------------ */

static void usage(void) {
  fprintf(stderr,
          "usage: nfs_driver all URL\n"
          "       nfs_driver GROUP URL\n"
          "       nfs_driver groups\n"
          "       nfs_driver dirlist URL N\n"
          "       nfs_driver save URL STATEFILE\n"
          "       nfs_driver check URL STATEFILE\n"
          "       nfs_driver stress URL NCLIENTS ITERATIONS|SECONDSs\n"
          "       nfs_driver raw URL NREADERS SECONDS\n"
          "       nfs_driver squash URL [ANONUID]\n"
          "       nfs_driver ro URL EXISTING-FILE-NAME\n"
          "GROUP is one of:");
  for (int i = 0; i < NGROUPS; i++) fprintf(stderr, " %s", grp_table[i].name);
  fputc('\n', stderr);
}

int main(int argc, char **argv) {
  const struct grp_def *gr;
  int rc;
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 2 && !strcmp(argv[1], "groups")) {
    for (int i = 0; i < NGROUPS; i++) puts(grp_table[i].name);
    return 0;
  }
  if (argc < 3) {
    usage();
    return 2;
  }
  if (!strcmp(argv[1], "all") && argc == 3)
    rc = cmd_all(argv[2]);
  else if ((gr = find_group(argv[1])) && argc == 3)
    rc = run_group(argv[2], gr);
  else if (!strcmp(argv[1], "dirlist") && argc == 4)
    rc = cmd_dirlist(argv[2], atoi(argv[3]));
  else if (!strcmp(argv[1], "save") && argc == 4)
    rc = cmd_save(argv[2], argv[3]);
  else if (!strcmp(argv[1], "check") && argc == 4)
    rc = cmd_check(argv[2], argv[3]);
  else if (!strcmp(argv[1], "raw") && argc == 5)
    return cmd_raw(argv[2], atoi(argv[3]), atof(argv[4]));
  else if (!strcmp(argv[1], "stress") && argc == 5)
    rc = cmd_stress(argv[2], atoi(argv[3]), argv[4]);
  else if (!strcmp(argv[1], "squash") && (argc == 3 || argc == 4))
    rc = cmd_squash(argv[2], argc == 4 ? (uint32_t)strtoul(argv[3], NULL, 10) : 65534u);
  else if (!strcmp(argv[1], "ro") && argc == 4)
    rc = cmd_ro(argv[2], argv[3]);
  else {
    usage();
    return 2;
  }
  printf("%s: %d checks passed, %d failed%s\n", argv[1], g_passed, g_failed, g_summary_note);
  return rc ? rc : (g_failed ? 1 : 0);
}
