# SPDX-License-Identifier: BSD-2-Clause
# integration.cmake -- real-client NFS integration tests of kcont-nfsd.
#
# Included from nfsd/tests/CMakeLists.txt.  Builds kcont_nfs_driver (C, linked
# with libnfs) from nfs_driver.c and registers a ctest test per model and
# section, nfs_integration_{kcont,threads}_{export,exports_file,memory,
# siege,metrics,hung}, each running that section of nfs_integration.sh: it
# starts the kcont-nfsd binary with the given --model on
# free local ports and drives it with real NFSv3 clients (libnfs-utils' nfs-ls,
# nfs-cp, nfs-cat and kcont_nfs_driver), hostile clients (kcont_nfs_siege)
# and a FUSE file system that stops answering (kcont_hangfs).  The server needs root
# (open_by_handle_at); without root the script exits 77 and the test is
# reported as skipped.

enable_language(C)

find_package(PkgConfig REQUIRED)
if(NOT TARGET PkgConfig::NFS)
  pkg_check_modules(NFS REQUIRED IMPORTED_TARGET libnfs)
endif()

# kcont_c_tool(NAME SOURCE LIBRARY): a C11 (GNU) test tool.
function(kcont_c_tool name source library)
  add_executable(${name} ${CMAKE_CURRENT_LIST_DIR}/${source})
  set_target_properties(${name} PROPERTIES
    C_STANDARD 11
    C_STANDARD_REQUIRED ON
    C_EXTENSIONS ON)
  target_link_libraries(${name} PRIVATE ${library})
endfunction()

kcont_c_tool(kcont_nfs_driver nfs_driver.c PkgConfig::NFS)

# nfs_siege: hostile clients (idle, slowloris, never-reading) and a
# bystander that must still get through.
kcont_c_tool(kcont_nfs_siege nfs_siege.c PkgConfig::NFS)

# hangfs: a FUSE file system that stops answering on command (the hung disk
# of the bounded-blocking and shutdown steps).  Optional: without libfuse3
# those steps are skipped.
pkg_check_modules(FUSE3 QUIET IMPORTED_TARGET fuse3)
if(FUSE3_FOUND)
  kcont_c_tool(kcont_hangfs hangfs.c PkgConfig::FUSE3)
  set(KCONT_HANGFS $<TARGET_FILE:kcont_hangfs>)
  include(${CMAKE_CURRENT_LIST_DIR}/../bench/nfsfuse.cmake)
  set(KCONT_NFSFUSE $<TARGET_FILE:kcont-nfsfuse>)
else()
  message(STATUS "libfuse3 not found: the hung-file-system and POSIX-client NFS tests are skipped")
  set(KCONT_HANGFS "")
  set(KCONT_NFSFUSE "")
endif()

# One ctest per model and section of the script, named for what it checks:
# nfs_integration_<model>_<section> (ctest -R runs one; a failure names
# it).  Each section starts and stops its own servers.
set(KCONT_NFS_SECTIONS export exports_file memory siege metrics hung)
foreach(model kcont threads)
  foreach(section ${KCONT_NFS_SECTIONS})
    add_test(NAME nfs_integration_${model}_${section}
      COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/nfs_integration.sh
              $<TARGET_FILE:kcont-nfsd> $<TARGET_FILE:kcont_nfs_driver> ${model}
              $<TARGET_FILE:kcont_nfs_siege> "${KCONT_HANGFS}" "${KCONT_SANITIZE}"
              "${KCONT_NFSFUSE}" ${section})
    set_tests_properties(nfs_integration_${model}_${section} PROPERTIES
      TIMEOUT 600
      RUN_SERIAL TRUE
      SKIP_RETURN_CODE 77
      LABELS "integration;nfs")
  endforeach()
endforeach()
