# Install rules and package files for libtroupe: headers, libtroupe.so (with
# its SONAME) and libtroupe.a, a CMake package (find_package(troupe) gives
# troupe::troupe and troupe::troupe_static) and two pkg-config modules:
# troupe.pc links the shared library, troupe-static.pc the archive.
# Included from the top-level CMakeLists.txt after runtime/ has defined the
# targets. Components: "Runtime" is the shared library alone, "Development"
# is everything needed to build against it.
include(CMakePackageConfigHelpers)

set(TR_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/troupe)

# Both libraries are made from tr_objs' objects ($<TARGET_OBJECTS>), not by
# linking it, so the export set needs only these two targets; their include
# directories ($<INSTALL_INTERFACE:include>) and link libraries are their own.
install(TARGETS troupe troupe_static
  EXPORT troupeTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    COMPONENT Runtime NAMELINK_COMPONENT Development
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT Development
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT Runtime)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime/include/troupe
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT Development
  FILES_MATCHING PATTERN "*.h")

# trouped's plugin ABI (daemon/include/troupe/plugin.h): what a plugin
# builds against, next to the runtime headers it includes.
install(FILES ${PROJECT_SOURCE_DIR}/daemon/include/troupe/plugin.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/troupe
  COMPONENT Development)

# The generated message headers (proto/): <troupe/v1/NAME.pb-c.h>.
install(FILES ${TR_PROTO_HEADERS}
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/troupe/v1
  COMPONENT Development)

install(EXPORT troupeTargets
  NAMESPACE troupe::
  DESTINATION ${TR_INSTALL_CMAKEDIR}
  COMPONENT Development)

configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/troupeConfig.cmake.in
  ${PROJECT_BINARY_DIR}/troupeConfig.cmake
  INSTALL_DESTINATION ${TR_INSTALL_CMAKEDIR})
# Same major version, as the SONAME (libtroupe.so.<major>) promises.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/troupeConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMajorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/troupeConfig.cmake
  ${PROJECT_BINARY_DIR}/troupeConfigVersion.cmake
  DESTINATION ${TR_INSTALL_CMAKEDIR}
  COMPONENT Development)

# The .pc files are written at install time, so that their prefix is the
# one the files really go to (`cmake --install build --prefix DIR` overrides
# the configured CMAKE_INSTALL_PREFIX). DESTDIR staging keeps the real
# prefix. Two modules, as libuv ships libuv.pc and libuv-static.pc:
# troupe.pc says -ltroupe, which the linker resolves to libtroupe.so
# whenever that is installed next to the archive (`pkg-config --static`
# only adds the private dependencies, it does not change -ltroupe), so
# troupe-static.pc names libtroupe.a by its path (libuv-static.pc's -luv
# has the same trap).
foreach(kind LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${kind}}")
    set(pc_${kind} "${CMAKE_INSTALL_${kind}}")
  else()
    set(pc_${kind} "\${prefix}/${CMAKE_INSTALL_${kind}}")
  endif()
endforeach()
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(pc_dest "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
else()
  set(pc_dest "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig")
endif()
install(CODE "
  set(TR_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  set(TR_PC_LIBDIR [=[${pc_LIBDIR}]=])
  set(TR_PC_INCLUDEDIR [=[${pc_INCLUDEDIR}]=])
  set(PROJECT_VERSION \"${PROJECT_VERSION}\")
  foreach(pc troupe troupe-static troupe-client)
    configure_file(\"${CMAKE_CURRENT_LIST_DIR}/\${pc}.pc.in\"
                   \"${PROJECT_BINARY_DIR}/\${pc}.pc\" @ONLY)
    file(INSTALL DESTINATION \"${pc_dest}\" TYPE FILE
         FILES \"${PROJECT_BINARY_DIR}/\${pc}.pc\")
  endforeach()
" COMPONENT Development)
