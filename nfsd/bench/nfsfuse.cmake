# SPDX-License-Identifier: BSD-2-Clause
# kcont-nfsfuse: a FUSE file system on libnfs (C, libfuse3), so that real
# POSIX programs (tar, diff, rm) run against an NFS server on a machine
# without a kernel NFS client.  Used by bench/nfs-compare's POSIX part and
# by the integration test's POSIX-client step; included from both places
# (whichever comes first defines it).  Needs PkgConfig::NFS and
# PkgConfig::FUSE3.
if(NOT TARGET kcont-nfsfuse)
  enable_language(C)
  add_executable(kcont-nfsfuse ${CMAKE_CURRENT_LIST_DIR}/kcont_nfsfuse.c)
  # Always beside kcont-nfsbench, whichever directory defined it.
  set_target_properties(kcont-nfsfuse PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON
                        C_EXTENSIONS ON RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/nfsd/bench)
  target_link_libraries(kcont-nfsfuse PRIVATE PkgConfig::NFS PkgConfig::FUSE3)
endif()
