/* SPDX-License-Identifier: BSD-2-Clause */
/* ceph_shim.c -- the two libcephfs calls whose arguments C++ cannot build.
 *
 * libcephfs.h declares inodeno_t and vinodeno_t as complete structs only
 * for C (for C++ they are Ceph's own classes, not installed), and
 * ceph_ll_lookup_inode / ceph_ll_lookup_vino take them by value: this file,
 * compiled as C, makes them from plain integers, so that the C++ back end
 * (ceph.cc) never guesses another library's class layout.  Thread context
 * (both calls may ask the MDS). */
#include <cephfs/libcephfs.h>
#include <stdint.h>

int kcont_ceph_lookup_vino(struct ceph_mount_info *cm, uint64_t ino, uint64_t snapid,
                           struct Inode **out) {
  if (snapid == CEPH_NOSNAP) {
    inodeno_t i = {ino};
    return ceph_ll_lookup_inode(cm, i, out);
  }
  vinodeno_t v = {{ino}, {snapid}};
  return ceph_ll_lookup_vino(cm, v, out);
}
