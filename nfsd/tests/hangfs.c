// SPDX-License-Identifier: BSD-2-Clause
/*
 * hangfs.c -- a FUSE file system that stops answering on command: the
 * "hung disk" of kcont-nfsd's reliability tests (docs/reliability.md).
 *
 *   hangfs FLAGFILE MOUNTPOINT [FUSE OPTIONS]
 *
 * It holds one directory (the root) with one file, `hello`.  While
 * FLAGFILE does not exist every operation answers at once; once it exists,
 * every operation that reaches the daemon waits forever.  Run it
 * single-threaded (-s) so that the first hung request holds every later
 * one too, and with attr_timeout=0,entry_timeout=0 so that every stat
 * reaches it.  Killing the daemon (SIGKILL) aborts the connection: every
 * waiting request then fails with ENOTCONN, and `fusermount3 -u -z`
 * detaches the mount.
 */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fuse.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *g_flag;
static const char g_hello[] = "hello from a FUSE file system\n";

/* Waits forever once the flag file exists. */
static void maybe_hang(void) {
  while (access(g_flag, F_OK) == 0) pause();
}

static void *hang_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  (void)conn;
  cfg->use_ino = 1;
  cfg->attr_timeout = 0;
  cfg->entry_timeout = 0;
  cfg->negative_timeout = 0;
  return NULL;
}

static int hang_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  (void)fi;
  maybe_hang();
  memset(st, 0, sizeof *st);
  if (strcmp(path, "/") == 0) {
    st->st_ino = 1;
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (strcmp(path, "/hello") == 0) {
    st->st_ino = 2;
    st->st_mode = S_IFREG | 0644;
    st->st_nlink = 1;
    st->st_size = (off_t)(sizeof g_hello - 1);
    return 0;
  }
  return -ENOENT;
}

static int hang_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                        struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
  (void)off;
  (void)fi;
  (void)flags;
  maybe_hang();
  if (strcmp(path, "/") != 0) return -ENOENT;
  fill(buf, ".", NULL, 0, 0);
  fill(buf, "..", NULL, 0, 0);
  fill(buf, "hello", NULL, 0, 0);
  return 0;
}

static int hang_open(const char *path, struct fuse_file_info *fi) {
  (void)fi;
  maybe_hang();
  return strcmp(path, "/hello") == 0 ? 0 : -ENOENT;
}

static int hang_read(const char *path, char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi) {
  size_t len = sizeof g_hello - 1;
  (void)fi;
  maybe_hang();
  if (strcmp(path, "/hello") != 0) return -ENOENT;
  if ((size_t)off >= len) return 0;
  if (size > len - (size_t)off) size = len - (size_t)off;
  memcpy(buf, g_hello + off, size);
  return (int)size;
}

static int hang_statfs(const char *path, struct statvfs *sv) {
  (void)path;
  maybe_hang();
  memset(sv, 0, sizeof *sv);
  sv->f_bsize = 4096;
  sv->f_namemax = 255;
  return 0;
}

static const struct fuse_operations hang_ops = {
    .init = hang_init,
    .getattr = hang_getattr,
    .readdir = hang_readdir,
    .open = hang_open,
    .read = hang_read,
    .statfs = hang_statfs,
};

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr,
            "usage: hangfs FLAGFILE MOUNTPOINT [FUSE "
            "OPTIONS]\n");
    return 2;
  }
  g_flag = argv[1];
  /* fuse_main sees: hangfs MOUNTPOINT [OPTIONS] */
  argv[1] = argv[0];
  return fuse_main(argc - 1, argv + 1, &hang_ops, NULL);
}
