# SPDX-License-Identifier: BSD-2-Clause
# install.cmake -- what `cmake --install` puts where: the libraries and
# their headers, the CMake package (find_package(kcont) with targets
# kcont::core, kcont::io, kcont::vfs, kcont::nfsd and a version file), the
# pkg-config files (kcont, kcont-io, kcont-vfs, kcont-nfsd), and, with
# KCONT_NFSD, the kcont-nfsd program.  Included from the top-level
# CMakeLists.txt after every library exists.
include(CMakePackageConfigHelpers)

set(KCONT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/kcont)
install(TARGETS ${KCONT_ALL_LIBRARIES}
        EXPORT kcontTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib NAMELINK_COMPONENT dev
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT lib)
foreach(dir core io vfs nfsd)
  if(IS_DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/include AND
     (dir STREQUAL "core" OR dir STREQUAL "io" OR KCONT_NFSD))
    install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/include/
            DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)
  endif()
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/include/kcont/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kcont COMPONENT dev)

install(EXPORT kcontTargets NAMESPACE kcont:: DESTINATION ${KCONT_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kcontConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/kcontConfig.cmake
                              INSTALL_DESTINATION ${KCONT_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kcontConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kcontConfig.cmake ${PROJECT_BINARY_DIR}/kcontConfigVersion.cmake
        DESTINATION ${KCONT_CMAKE_DIR} COMPONENT dev)

# pkg-config: kcont_pc(FILE LIBRARY DESCRIPTION REQUIRES)
function(kcont_pc file library description requires)
  set(PC_DESCRIPTION ${description})
  set(PC_LIBRARY ${library})
  set(PC_REQUIRES ${requires})
  # Relocatable: the prefix is found from where the .pc file lies.
  file(RELATIVE_PATH PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/kcont.pc.in ${PROJECT_BINARY_DIR}/pkgconfig/${file}.pc
                 @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/${file}.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
endfunction()
kcont_pc(kcont kcont_core "kernel-style continuations: levels, per-CPU dispatch, callouts, softints, workqueues, sleep queues" liburing)
kcont_pc(kcont-io kcont_io "kcont I/O layer: buffers (bread/biodone) and sockets on io_uring" kcont)
if(KCONT_NFSD)
  kcont_pc(kcont-vfs kcont_vfs "kcont VFS: file-system operations that take continuations" kcont-io)
  kcont_pc(kcont-nfsd kcont_nfsd "kcont NFSv3 server library (protocol and transports)" kcont-vfs)
  install(TARGETS kcont-nfsd RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR} COMPONENT nfsd)
  install(TARGETS kcont-nfsstat RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT nfsd)
  # The configuration: relative to the prefix unless SYSCONFDIR is given
  # (the Debian build passes /etc).
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/exports
          DESTINATION ${CMAKE_INSTALL_SYSCONFDIR}/kcont-nfsd COMPONENT nfsd)
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/kcont-nfsd.default
          DESTINATION ${CMAKE_INSTALL_SYSCONFDIR}/default RENAME kcont-nfsd COMPONENT nfsd)
endif()

# Man pages, generated from docs/ with pandoc (cmake/manpage.cmake):
# KCONT_MANPAGES ON requires pandoc; by default they are built when pandoc
# is there.
find_program(KCONT_PANDOC pandoc)
if(KCONT_PANDOC)
  set(manpages_default ON)
else()
  set(manpages_default OFF)
endif()
option(KCONT_MANPAGES "Generate and install man pages from docs/ (pandoc)" ${manpages_default})
if(KCONT_MANPAGES)
  if(NOT KCONT_PANDOC)
    message(FATAL_ERROR "KCONT_MANPAGES needs pandoc (Debian package pandoc)")
  endif()
  set(pages "kcont.9.md kcont 9" "buf.9.md buf 9" "sock.9.md sock 9")
  if(KCONT_NFSD)
    list(APPEND pages "vfs.9.md vfs 9" "nfsd.md kcont-nfsd 8" "kcont-exports.5.md kcont-exports 5")
  endif()
  set(outputs "")
  foreach(page ${pages})
    separate_arguments(page)
    list(GET page 0 doc)
    list(GET page 1 name)
    list(GET page 2 section)
    set(out ${PROJECT_BINARY_DIR}/man/${name}.${section})
    add_custom_command(
      OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -DPANDOC=${KCONT_PANDOC} -DIN=${PROJECT_SOURCE_DIR}/docs/${doc}
              -DOUT=${out} -DNAME=${name} -DSECTION=${section} -DVERSION=${PROJECT_VERSION}
              -P ${PROJECT_SOURCE_DIR}/cmake/manpage.cmake
      DEPENDS ${PROJECT_SOURCE_DIR}/docs/${doc} ${PROJECT_SOURCE_DIR}/cmake/manpage.cmake
              ${PROJECT_SOURCE_DIR}/cmake/manpage.lua
      COMMENT "man page ${name}(${section})")
    list(APPEND outputs ${out})
    if(section STREQUAL "9")
      set(component dev)
    else()
      set(component nfsd)
    endif()
    install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section} COMPONENT ${component})
  endforeach()
  add_custom_target(kcont_manpages ALL DEPENDS ${outputs})
endif()
