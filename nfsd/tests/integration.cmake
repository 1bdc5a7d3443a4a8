# integration.cmake -- real-client NFS integration tests of kcont-nfsd.
#
# Included from nfsd/tests/CMakeLists.txt.  Builds kcont_nfs_driver (C, linked
# with libnfs) from nfs_driver.c and registers two ctest tests,
# nfs_integration_kcont and nfs_integration_threads, which run
# nfs_integration.sh: it starts the kcont-nfsd binary with the given --model on
# free local ports and drives it with real NFSv3 clients (libnfs-utils' nfs-ls,
# nfs-cp, nfs-cat and kcont_nfs_driver).  The server needs root
# (open_by_handle_at); without root the script exits 77 and the test is
# reported as skipped.

enable_language(C)

find_package(PkgConfig REQUIRED)
if(NOT TARGET PkgConfig::NFS)
  pkg_check_modules(NFS REQUIRED IMPORTED_TARGET libnfs)
endif()

add_executable(kcont_nfs_driver ${CMAKE_CURRENT_LIST_DIR}/nfs_driver.c)
set_target_properties(kcont_nfs_driver PROPERTIES
  C_STANDARD 11
  C_STANDARD_REQUIRED ON
  C_EXTENSIONS ON)
target_link_libraries(kcont_nfs_driver PRIVATE PkgConfig::NFS)

foreach(model kcont threads)
  add_test(NAME nfs_integration_${model}
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/nfs_integration.sh
            $<TARGET_FILE:kcont-nfsd> $<TARGET_FILE:kcont_nfs_driver> ${model}
            $<TARGET_FILE:kcont_nfs_siege>)
  set_tests_properties(nfs_integration_${model} PROPERTIES
    TIMEOUT 600
    RUN_SERIAL TRUE
    SKIP_RETURN_CODE 77
    LABELS "integration;nfs")
endforeach()

# nfs_siege: hostile clients (idle, slowloris, never-reading) and a
# bystander that must still get through; run by nfs_reliability.sh.
add_executable(kcont_nfs_siege ${CMAKE_CURRENT_LIST_DIR}/nfs_siege.c)
set_target_properties(kcont_nfs_siege PROPERTIES
  C_STANDARD 11
  C_STANDARD_REQUIRED ON
  C_EXTENSIONS ON)
target_link_libraries(kcont_nfs_siege PRIVATE PkgConfig::NFS)
