# SPDX-License-Identifier: BSD-2-Clause
# integration.cmake -- real-client NFS integration tests of kcont-nfsd.
#
# Included from nfsd/tests/CMakeLists.txt.  Builds kcont_nfs_driver (C, linked
# with libnfs) from nfs_driver.c and registers a ctest test per model and
# case of nfs_integration.sh (nfs_integration_{kcont,threads}_<case>, see
# below): it starts the kcont-nfsd binary with the given --model on
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

# One ctest per model and per case or section of the script, named for
# what it checks: nfs_integration_<model>_<fixture>_<case> or
# nfs_integration_<model>_<section> (ctest -R runs one; a failure names it).
# A fixture's cases share one server: its start case is the fixture's
# FIXTURES_SETUP, its stop case the FIXTURES_CLEANUP, every other case
# FIXTURES_REQUIRED, so `ctest -R` of a case also runs its start and stop.
# They share the directory KCONT_IT_DIR, under /tmp (open_by_handle_at works
# there) and distinct per build directory.  The script lists the cases
# (--list); a change to it reconfigures.
set(KCONT_NFS_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/nfs_integration.sh)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${KCONT_NFS_SCRIPT})
execute_process(COMMAND bash ${KCONT_NFS_SCRIPT} --list
  OUTPUT_VARIABLE kcont_nfs_cases
  RESULT_VARIABLE kcont_nfs_list_rc)
if(NOT kcont_nfs_list_rc EQUAL 0)
  message(FATAL_ERROR "nfs_integration.sh --list failed (${kcont_nfs_list_rc})")
endif()
string(STRIP "${kcont_nfs_cases}" kcont_nfs_cases)
string(REPLACE "\n" ";" kcont_nfs_cases "${kcont_nfs_cases}")
string(MD5 kcont_nfs_build_id "${CMAKE_BINARY_DIR}")
string(SUBSTRING ${kcont_nfs_build_id} 0 10 kcont_nfs_build_id)
set(KCONT_NFS_FIXTURE_ROOT /tmp/kcont-nfs-it-${kcont_nfs_build_id})

# The driver's procedure groups are the script's driver_* cases.
add_test(NAME nfs_integration_driver_groups
  COMMAND bash ${KCONT_NFS_SCRIPT} --check-groups $<TARGET_FILE:kcont_nfs_driver>)
set_tests_properties(nfs_integration_driver_groups PROPERTIES LABELS "integration;nfs")

foreach(model kcont threads)
  foreach(case ${kcont_nfs_cases})
    string(REPLACE "." "_" name ${case})
    set(test nfs_integration_${model}_${name})
    add_test(NAME ${test}
      COMMAND bash ${KCONT_NFS_SCRIPT}
              $<TARGET_FILE:kcont-nfsd> $<TARGET_FILE:kcont_nfs_driver> ${model}
              $<TARGET_FILE:kcont_nfs_siege> "${KCONT_HANGFS}" "${KCONT_SANITIZE}"
              "${KCONT_NFSFUSE}" ${case})
    set_tests_properties(${test} PROPERTIES
      TIMEOUT 600
      RUN_SERIAL TRUE
      SKIP_RETURN_CODE 77
      LABELS "integration;nfs")
    if(case MATCHES "^([a-z_]+)\\.([a-z_]+)$")
      set(fixture nfs_${model}_${CMAKE_MATCH_1})
      set(env "KCONT_IT_DIR=${KCONT_NFS_FIXTURE_ROOT}/${model}-${CMAKE_MATCH_1}")
      if(CMAKE_MATCH_1 STREQUAL "ceph")
        # A Ceph export: run by the test command's ceph stage, which brings a
        # cluster up (KCONT_TEST_CEPH_CONF); the server loads vfs-ceph.so
        # from this build.
        list(APPEND env "KCONT_VFS_MODULE_DIR=${PROJECT_BINARY_DIR}/vfs")
        set_tests_properties(${test} PROPERTIES LABELS "integration;nfs;ceph")
      endif()
      set_tests_properties(${test} PROPERTIES ENVIRONMENT "${env}")
      if(CMAKE_MATCH_2 STREQUAL "start")
        set_tests_properties(${test} PROPERTIES FIXTURES_SETUP ${fixture})
      elseif(CMAKE_MATCH_2 STREQUAL "stop")
        set_tests_properties(${test} PROPERTIES FIXTURES_CLEANUP ${fixture})
      else()
        set_tests_properties(${test} PROPERTIES FIXTURES_REQUIRED ${fixture})
      endif()
    endif()
  endforeach()
endforeach()
