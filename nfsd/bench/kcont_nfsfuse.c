// SPDX-License-Identifier: BSD-2-Clause
// kcont-nfsfuse -- a FUSE file system on libnfs: mounts an NFSv3 export at a
// local directory so that real POSIX programs (tar, diff, rm, git,
// compilers) run against an NFS server on a machine without a kernel NFS
// client.  It is a load generator for benchmarks (bench/nfs-compare's POSIX
// part), not a production client.
//
//   kcont-nfsfuse NFS-URL MOUNTPOINT [FUSE options]
//   e.g. kcont-nfsfuse 'nfs://127.0.0.1/srv?nfsport=2049&mountport=20048' /mnt/x
//
// Model: libnfs's synchronous calls from one FUSE thread (-s is forced), so
// one request is outstanding at a time and the server sees the calls a
// POSIX program's system calls turn into, in order.  Caching is off in
// both places that could hide calls: FUSE's attribute, entry and negative
// timeouts are 0 (every stat reaches the server), and libnfs's own
// read-ahead and page cache are not enabled.  Paths are resolved by libnfs
// from the export root (a LOOKUP per component): chatty, as a client with
// no name cache is.
//
// Identity: every call goes out with the calling process's uid, gid and
// supplementary groups (AUTH_SYS, from fuse_get_context and
// fuse_getgroups; the groups are read again only when the caller's pid,
// uid or gid changes), so the server decides permissions and ownership as
// it would for a kernel client.  Mounted by root, the file system allows
// other users (-o allow_other): a POSIX test suite that switches uid
// reaches the server as that uid.  Special files: mknod makes FIFOs,
// sockets and device nodes (MKNOD).
//
// Errors are libnfs's negative errno values, returned to FUSE unchanged.
// Runs in the foreground (-f is forced); stop it with fusermount3 -u or
// SIGTERM.
#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <nfsc/libnfs-zdr.h>
#include <nfsc/libnfs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

static struct nfs_context *nfs;

// The identity the context's AUTH_SYS credential carries now.
static struct {
  int set;
  pid_t pid;
  uid_t uid;
  gid_t gid;
} cred_now;

// The NFS context, its credential switched to the calling process's uid,
// gid and groups (only when they differ from the last call's).  FUSE runs
// one request at a time (-s), so the switch never races.
static struct nfs_context *caller(void) {
  const struct fuse_context *c = fuse_get_context();
  if (!c ||
      (cred_now.set && c->pid == cred_now.pid && c->uid == cred_now.uid && c->gid == cred_now.gid))
    return nfs;
  gid_t groups[16];  // AUTH_SYS carries at most 16
  int n = c->pid ? fuse_getgroups(16, groups) : 0;
  if (n < 0 || n > 16) n = 0;  // unreadable (the caller has gone) or more than fit
  uint32_t g32[16];
  for (int i = 0; i < n; i++) g32[i] = (uint32_t)groups[i];
  struct AUTH *a =
      libnfs_authunix_create("kcont-nfsfuse", (uint32_t)c->uid, (uint32_t)c->gid, (uint32_t)n, g32);
  if (!a) return nfs;  // keeps the previous credential; the server decides
  nfs_set_auth(nfs, a);
  cred_now.set = 1;
  cred_now.pid = c->pid;
  cred_now.uid = c->uid;
  cred_now.gid = c->gid;
  return nfs;
}

static struct nfsfh *fh_of(const struct fuse_file_info *fi) {
  return (struct nfsfh *)(uintptr_t)fi->fh;
}

static void to_stat(const struct nfs_stat_64 *n, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_dev = (dev_t)n->nfs_dev;
  st->st_ino = (ino_t)n->nfs_ino;
  st->st_mode = (mode_t)n->nfs_mode;
  st->st_nlink = (nlink_t)n->nfs_nlink;
  st->st_uid = (uid_t)n->nfs_uid;
  st->st_gid = (gid_t)n->nfs_gid;
  st->st_rdev = (dev_t)n->nfs_rdev;
  st->st_size = (off_t)n->nfs_size;
  st->st_blksize = (blksize_t)n->nfs_blksize;
  st->st_blocks = (blkcnt_t)n->nfs_blocks;
  st->st_atim.tv_sec = (time_t)n->nfs_atime;
  st->st_atim.tv_nsec = (long)n->nfs_atime_nsec;
  st->st_mtim.tv_sec = (time_t)n->nfs_mtime;
  st->st_mtim.tv_nsec = (long)n->nfs_mtime_nsec;
  st->st_ctim.tv_sec = (time_t)n->nfs_ctime;
  st->st_ctim.tv_nsec = (long)n->nfs_ctime_nsec;
}

static void *nf_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  (void)conn;
  cfg->attr_timeout = 0;
  cfg->entry_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->use_ino = 1;
  cfg->hard_remove = 1;  // unlink of an open file: no .fuse_hidden rename
  return NULL;
}

static int nf_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  (void)fi;
  struct nfs_stat_64 n;
  int r = nfs_lstat64(caller(), path, &n);
  if (r == 0) to_stat(&n, st);
  return r;
}

static int nf_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
  (void)off;
  (void)fi;
  (void)flags;
  struct nfsdir *d;
  int r = nfs_opendir(caller(), path, &d);
  if (r != 0) return r;
  struct nfsdirent *e;
  while ((e = nfs_readdir(caller(), d)) != NULL) {
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_ino = (ino_t)e->inode;
    st.st_mode = (mode_t)e->mode;
    if (fill(buf, e->name, &st, 0, 0)) break;
  }
  nfs_closedir(caller(), d);
  return 0;
}

static int nf_open(const char *path, struct fuse_file_info *fi) {
  struct nfsfh *fh;
  int r = nfs_open(caller(), path, fi->flags & (O_ACCMODE | O_APPEND | O_TRUNC | O_SYNC), &fh);
  if (r == 0) fi->fh = (uint64_t)(uintptr_t)fh;
  return r;
}

static int nf_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
  struct nfsfh *fh;
  int r = nfs_create(caller(), path, fi->flags & (O_ACCMODE | O_EXCL | O_TRUNC | O_APPEND),
                     (int)mode, &fh);
  if (r == 0) fi->fh = (uint64_t)(uintptr_t)fh;
  return r;
}

static int nf_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)path;
  return nfs_pread(caller(), fh_of(fi), (uint64_t)off, size, buf);
}

static int nf_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi) {
  (void)path;
  return nfs_pwrite(caller(), fh_of(fi), (uint64_t)off, size, buf);
}

static int nf_release(const char *path, struct fuse_file_info *fi) {
  (void)path;
  return nfs_close(caller(), fh_of(fi));
}

static int nf_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
  (void)path;
  (void)datasync;
  return nfs_fsync(caller(), fh_of(fi));
}

static int nf_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
  if (fi) return nfs_ftruncate(caller(), fh_of(fi), (uint64_t)size);
  return nfs_truncate(caller(), path, (uint64_t)size);
}

static int nf_mkdir(const char *path, mode_t mode) { return nfs_mkdir2(caller(), path, (int)mode); }
static int nf_rmdir(const char *path) { return nfs_rmdir(caller(), path); }
static int nf_unlink(const char *path) { return nfs_unlink(caller(), path); }
static int nf_symlink(const char *target, const char *path) {
  return nfs_symlink(caller(), target, path);
}
static int nf_mknod(const char *path, mode_t mode, dev_t rdev) {
  return nfs_mknod(caller(), path, (int)mode, (int)rdev);
}
static int nf_link(const char *from, const char *to) { return nfs_link(caller(), from, to); }

static int nf_rename(const char *from, const char *to, unsigned int flags) {
  if (flags) return -EINVAL;  // RENAME_NOREPLACE / EXCHANGE: not in NFSv3
  return nfs_rename(caller(), from, to);
}

static int nf_readlink(const char *path, char *buf, size_t size) {
  return nfs_readlink(caller(), path, buf, (int)size);
}

static int nf_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
  (void)fi;
  return nfs_lchmod(caller(), path, (int)mode);
}

static int nf_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
  (void)fi;
  return nfs_lchown(caller(), path, (int)uid, (int)gid);
}

static int nf_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
  (void)fi;
  struct timeval t[2];
  struct timeval now;
  gettimeofday(&now, NULL);
  for (int i = 0; i < 2; i++) {
    if (tv[i].tv_nsec == UTIME_NOW || tv[i].tv_nsec == UTIME_OMIT) {
      // NFSv3 SETATTR has "server time" and "don't change"; libnfs's
      // utimes sends the times given: the client's clock stands in.
      t[i] = now;
      if (tv[i].tv_nsec == UTIME_OMIT) {
        struct nfs_stat_64 n;
        int r = nfs_lstat64(caller(), path, &n);
        if (r != 0) return r;
        t[i].tv_sec = (time_t)(i == 0 ? n.nfs_atime : n.nfs_mtime);
        t[i].tv_usec = (suseconds_t)((i == 0 ? n.nfs_atime_nsec : n.nfs_mtime_nsec) / 1000);
      }
    } else {
      t[i].tv_sec = tv[i].tv_sec;
      t[i].tv_usec = tv[i].tv_nsec / 1000;
    }
  }
  return nfs_lutimes(caller(), path, t);
}

static int nf_statfs(const char *path, struct statvfs *sv) {
  struct nfs_statvfs_64 n;
  int r = nfs_statvfs64(caller(), path, &n);
  if (r != 0) return r;
  memset(sv, 0, sizeof *sv);
  sv->f_bsize = (unsigned long)n.f_bsize;
  sv->f_frsize = (unsigned long)n.f_frsize;
  sv->f_blocks = (fsblkcnt_t)n.f_blocks;
  sv->f_bfree = (fsblkcnt_t)n.f_bfree;
  sv->f_bavail = (fsblkcnt_t)n.f_bavail;
  sv->f_files = (fsfilcnt_t)n.f_files;
  sv->f_ffree = (fsfilcnt_t)n.f_ffree;
  sv->f_favail = (fsfilcnt_t)n.f_favail;
  sv->f_namemax = (unsigned long)n.f_namemax;
  return 0;
}

static const struct fuse_operations ops = {
    .getattr = nf_getattr,
    .readlink = nf_readlink,
    .mknod = nf_mknod,
    .mkdir = nf_mkdir,
    .unlink = nf_unlink,
    .rmdir = nf_rmdir,
    .symlink = nf_symlink,
    .rename = nf_rename,
    .link = nf_link,
    .chmod = nf_chmod,
    .chown = nf_chown,
    .truncate = nf_truncate,
    .open = nf_open,
    .read = nf_read,
    .write = nf_write,
    .statfs = nf_statfs,
    .release = nf_release,
    .fsync = nf_fsync,
    .readdir = nf_readdir,
    .init = nf_init,
    .create = nf_create,
    .utimens = nf_utimens,
};

static void usage(FILE *f) {
  fprintf(f,
          "usage: kcont-nfsfuse NFS-URL MOUNTPOINT [FUSE options]\n"
          "  NFS-URL  nfs://SERVER/EXPORT[?nfsport=P&mountport=Q] (NFSv3)\n"
          "Mounts the export at MOUNTPOINT through FUSE, with no attribute or name\n"
          "caching, one request at a time, each with the calling process's uid, gid\n"
          "and groups (mounted by root: -o allow_other); runs in the foreground until\n"
          "unmounted (fusermount3 -u MOUNTPOINT) or killed.\n");
}

int main(int argc, char **argv) {
  if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
    usage(stdout);
    return 0;
  }
  if (argc < 3) {
    usage(stderr);
    return 2;
  }
  nfs = nfs_init_context();
  if (!nfs) {
    fprintf(stderr, "kcont-nfsfuse: cannot make an NFS context\n");
    return 1;
  }
  struct nfs_url *url = nfs_parse_url_dir(nfs, argv[1]);
  if (!url) {
    fprintf(stderr, "kcont-nfsfuse: %s: %s\n", argv[1], nfs_get_error(nfs));
    return 2;
  }
  if (nfs_mount(nfs, url->server, url->path) != 0) {
    fprintf(stderr, "kcont-nfsfuse: mount %s:%s: %s\n", url->server, url->path, nfs_get_error(nfs));
    nfs_destroy_url(url);
    return 1;
  }
  nfs_destroy_url(url);
  // FUSE's arguments: program, mount point, forced -f -s (and, for root,
  // -o allow_other), then the rest.
  char **fargv = calloc((size_t)argc + 5, sizeof *fargv);
  if (!fargv) return 1;
  int fargc = 0;
  fargv[fargc++] = argv[0];
  fargv[fargc++] = argv[2];
  fargv[fargc++] = "-f";
  fargv[fargc++] = "-s";
  if (geteuid() == 0) {
    fargv[fargc++] = "-o";
    fargv[fargc++] = "allow_other";
  }
  for (int i = 3; i < argc; i++) fargv[fargc++] = argv[i];
  int r = fuse_main(fargc, fargv, &ops, NULL);
  free(fargv);
  nfs_umount(nfs);
  nfs_destroy_context(nfs);
  return r;
}
