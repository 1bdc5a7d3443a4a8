// fh.cc -- NFS file handles and the handle cache.
//
// Model: a handle is the kernel's own (name_to_handle_at) behind a small
// header naming the export (layout in internal.h), so it survives restarts
// without any table on disk.  Resolving a handle costs an
// open_by_handle_at, an fstat and a readlink of /proc/self/fd -- too much
// for every call -- so resolved handles live in a cache of open
// descriptors: the hot path (kcont model, interrupt context) only ever
// *looks up* the cache; misses are resolved in thread context.
//
// The cache is a fixed array of entries (allocated once), a chained hash
// table over the handle bytes, and a clock hand for eviction: an entry with
// no references whose clock bit is clear is recycled.  Removing a file
// forgets its handle so a later call reopens it and finds it stale.
//
// Locking: one spinlock protects the table, the chains, the references and
// the clock; it is never held across a system call (descriptors of evicted
// entries are closed after it is dropped).  Any context.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "internal.h"
#include "kcont/spinlock.h"

namespace kc::nfs {

namespace {

constexpr uint8_t FH_MAGIC0 = 'k', FH_MAGIC1 = 'n', FH_VERSION = 1;
constexpr uint32_t MAX_KERNEL_HANDLE = NFS3_FHSIZE - FH_HEADER;

uint32_t get32(const uint8_t *p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

uint64_t hash_bytes(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

struct kernel_handle {
  struct file_handle fh;
  unsigned char bytes[MAX_KERNEL_HANDLE];
};

}  // namespace

int fh_make(const export_entry &e, int dirfd, const char *name, nfs_fh *out) {
  kernel_handle kh;
  kh.fh.handle_bytes = MAX_KERNEL_HANDLE;
  int mount_id = 0;
  int flags = name[0] == '\0' ? AT_EMPTY_PATH : 0;
  if (name_to_handle_at(dirfd, name, &kh.fh, &mount_id, flags) != 0) return errno;
  out->data[0] = FH_MAGIC0;
  out->data[1] = FH_MAGIC1;
  out->data[2] = FH_VERSION;
  out->data[3] = uint8_t(kh.fh.handle_bytes);
  xdr_out::put32(out->data + 4, e.id);
  xdr_out::put32(out->data + 8, uint32_t(kh.fh.handle_type));
  std::memcpy(out->data + FH_HEADER, kh.fh.f_handle, kh.fh.handle_bytes);
  out->len = FH_HEADER + kh.fh.handle_bytes;
  return 0;
}

struct fhcache {
  std::atomic<uint32_t> lock{0};
  std::vector<fh_entry> entries;
  std::vector<fh_entry *> buckets;
  uint64_t mask = 0;
  size_t hand = 0;
  fhcache_stats stats;
};

fhcache *fhcache_create(size_t n) {
  auto *c = new fhcache;
  c->entries.resize(n);
  size_t b = 1;
  while (b < 2 * n) b <<= 1;
  c->buckets.assign(b, nullptr);
  c->mask = b - 1;
  return c;
}

void fhcache_destroy(fhcache *c) {
  if (!c) return;
  for (auto &e : c->entries)
    if (e.fd >= 0) close(e.fd);
  delete c;
}

fhcache_stats fhcache_get_stats(fhcache *c) {
  spinlock g(c->lock);
  return c->stats;
}

namespace {

fh_entry **chain_of(fhcache *c, bytes_view fh) {
  return &c->buckets[hash_bytes(fh.data, fh.len) & c->mask];
}

fh_entry *find_locked(fhcache *c, bytes_view fh) {
  for (fh_entry *e = *chain_of(c, fh); e; e = e->hnext)
    if (e->fh.len == fh.len && std::memcmp(e->fh.data, fh.data, fh.len) == 0) return e;
  return nullptr;
}

void unhash_locked(fhcache *c, fh_entry *e) {
  for (fh_entry **pp = chain_of(c, e->fh.view()); *pp; pp = &(*pp)->hnext) {
    if (*pp == e) {
      *pp = e->hnext;
      break;
    }
  }
  e->hnext = nullptr;
  e->hashed = false;
}

// An unreferenced, unhashed entry to reuse, or nullptr (all referenced).
// Its old descriptor is returned in *old_fd for closing after unlock.
fh_entry *victim_locked(fhcache *c, int *old_fd) {
  size_t n = c->entries.size();
  for (size_t i = 0; i < 2 * n; i++) {
    fh_entry *e = &c->entries[c->hand];
    c->hand = (c->hand + 1) % n;
    if (e->refs > 0) continue;
    if (e->hashed && e->referenced) {
      e->referenced = false;
      continue;
    }
    if (e->hashed) {
      unhash_locked(c, e);
      c->stats.evictions++;
    }
    *old_fd = e->fd;
    e->fd = -1;
    return e;
  }
  return nullptr;
}

// Whether the inode open at fd lies inside the export (its path is the
// export root or below it).
bool inside_export(int fd, const export_entry &ex) {
  char link[64], path[4096];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return false;
  path[n] = '\0';
  size_t rl = ex.path.size();
  if (std::strncmp(path, ex.path.c_str(), rl) != 0) return false;
  return path[rl] == '\0' || path[rl] == '/' || ex.path == "/";
}

}  // namespace

int fh_open(const export_entry &e, bytes_view fh, int flags) {
  kernel_handle kh;
  kh.fh.handle_bytes = fh.data[3];
  kh.fh.handle_type = int(get32(fh.data + 8));
  std::memcpy(kh.fh.f_handle, fh.data + FH_HEADER, kh.fh.handle_bytes);
  int fd = open_by_handle_at(e.root_fd, &kh.fh, flags);
  return fd >= 0 ? fd : -errno;
}

fh_entry *fh_lookup_cached(fhcache *c, bytes_view fh) {
  spinlock g(c->lock);
  fh_entry *e = find_locked(c, fh);
  if (e) {
    e->refs++;
    e->referenced = true;
    c->stats.hits++;
  }
  return e;
}

nfsstat3 fh_resolve(server &srv, const export_table &t, bytes_view fh, fh_entry **out) {
  fhcache *c = srv.handles;
  if (fh.len < FH_HEADER || fh.len > NFS3_FHSIZE || fh.data[0] != FH_MAGIC0 ||
      fh.data[1] != FH_MAGIC1 || fh.data[2] != FH_VERSION || FH_HEADER + fh.data[3] != fh.len)
    return NFS3ERR_BADHANDLE;
  if ((*out = fh_lookup_cached(c, fh)) != nullptr) return NFS3_OK;

  const export_entry *ex = t.by_id(get32(fh.data + 4));
  if (!ex) return NFS3ERR_STALE;
  int pfd = fh_open(*ex, fh, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (pfd < 0) {
    if (pfd == -EPERM) return NFS3ERR_SERVERFAULT;  // no CAP_DAC_READ_SEARCH
    return pfd == -EINVAL ? NFS3ERR_BADHANDLE : NFS3ERR_STALE;
  }
  struct stat st;
  if (fstat(pfd, &st) != 0 || st.st_dev != ex->dev || st.st_nlink == 0 ||
      !inside_export(pfd, *ex)) {
    close(pfd);
    spinlock g(c->lock);
    c->stats.stale++;
    return NFS3ERR_STALE;
  }
  // Reopen with the access the procedures need (never blocks: no FIFOs).
  int fd = pfd;
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", pfd);
  if (S_ISREG(st.st_mode)) {
    fd = open(link, O_RDWR | O_CLOEXEC);
    if (fd < 0) fd = open(link, O_RDONLY | O_CLOEXEC);
  } else if (S_ISDIR(st.st_mode)) {
    fd = open(link, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  }
  if (fd < 0) fd = pfd;
  if (fd != pfd) close(pfd);
  struct stat root;
  bool is_root = fstat(ex->root_fd, &root) == 0 && root.st_ino == st.st_ino;

  int old_fd = -1, dup_fd = -1;
  fh_entry *e;
  {
    spinlock g(c->lock);
    c->stats.misses++;
    e = find_locked(c, fh);  // another thread may have resolved it meanwhile
    if (e) {
      dup_fd = fd;
      e->refs++;
    } else if ((e = victim_locked(c, &old_fd)) != nullptr) {
      std::memcpy(e->fh.data, fh.data, fh.len);
      e->fh.len = fh.len;
      e->fd = fd;
      e->export_id = ex->id;
      e->type = st.st_mode & S_IFMT;
      e->is_root = is_root;
      e->refs = 1;
      e->referenced = true;
      e->hashed = true;
      fh_entry **chain = chain_of(c, fh);
      e->hnext = *chain;
      *chain = e;
    }
  }
  if (old_fd >= 0) close(old_fd);
  if (dup_fd >= 0) close(dup_fd);
  if (!e) {  // every entry is in use: the cache is too small for the load
    close(fd);
    return NFS3ERR_JUKEBOX;
  }
  *out = e;
  return NFS3_OK;
}

void fh_put(fhcache *c, fh_entry *e) {
  int fd = -1;
  {
    spinlock g(c->lock);
    if (--e->refs == 0 && !e->hashed) {
      fd = e->fd;
      e->fd = -1;
    }
  }
  if (fd >= 0) close(fd);
}

void fh_forget(fhcache *c, bytes_view fh) {
  int fd = -1;
  {
    spinlock g(c->lock);
    fh_entry *e = find_locked(c, fh);
    if (!e) return;
    unhash_locked(c, e);
    if (e->refs == 0) {
      fd = e->fd;
      e->fd = -1;
    }
  }
  if (fd >= 0) close(fd);
}

}  // namespace kc::nfs
