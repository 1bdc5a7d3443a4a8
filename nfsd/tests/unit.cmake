# SPDX-License-Identifier: BSD-2-Clause
# unit.cmake -- GoogleTest unit tests of kcont-nfsd's protocol layer.
#
# Included from nfsd/tests/CMakeLists.txt.  kcont_nfsd_tests holds
# test_rpc.cc (XDR, record marking, call decoding, reply headers: pure
# computation) and test_serve.cc (serve_call on a server exporting a
# temporary directory; needs root for open_by_handle_at, and skips without
# it), test_conn_limits.cc (the per-address connection count) and
# test_conn_state.cc (the kcont transport's connection life cycle and send
# queue, with death tests of their assertions in Debug builds).  The
# tests include the library's private internal.h for the file
# handle layout and the nfsstat3 codes.

find_package(GTest REQUIRED)
include(GoogleTest)

add_executable(kcont_nfsd_tests
  ${CMAKE_CURRENT_LIST_DIR}/test_rpc.cc
  ${CMAKE_CURRENT_LIST_DIR}/test_serve.cc
  ${CMAKE_CURRENT_LIST_DIR}/test_conn_limits.cc
  ${CMAKE_CURRENT_LIST_DIR}/test_conn_state.cc)
target_include_directories(kcont_nfsd_tests PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../src
  ${PROJECT_SOURCE_DIR}/core/tests)  # fixture.h: KCONT_NOT_TESTED
target_link_libraries(kcont_nfsd_tests PRIVATE kcont_nfsd GTest::gtest GTest::gtest_main)
kcont_exports_for_modules(kcont_nfsd_tests)
gtest_discover_tests(kcont_nfsd_tests DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)
