# Install rules for what daemon/ and actors/ build: trouped and troupe
# (bin/), libtroupe-actors.so and libtroupe-client.so with their headers
# (in the troupe CMake package, as troupe::actors and troupe::client, and
# the pkg-config module troupe-client), the systemd unit (lib/systemd/system,
# written at install time with the real prefix), the example settings and
# workloads (share/doc/troupe). Included from the top-level CMakeLists.txt
# beside cmake/TroupeInstall.cmake. Components: Runtime (the libraries),
# Development (headers, namelinks), Daemon (programs, unit, examples).

# Installed programs and libraries find the installed libraries through
# their RUNPATH, relative to where they are ($ORIGIN), so a prefix can move.
if(IS_ABSOLUTE "${CMAKE_INSTALL_BINDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(tr_bin_rpath "${CMAKE_INSTALL_FULL_LIBDIR}")
else()
  file(RELATIVE_PATH tr_rel "/${CMAKE_INSTALL_BINDIR}" "/${CMAKE_INSTALL_LIBDIR}")
  set(tr_bin_rpath "$ORIGIN/${tr_rel}")
endif()
set_target_properties(trouped troupe-cli troupe-node PROPERTIES INSTALL_RPATH "${tr_bin_rpath}")
set_target_properties(troupe_actors troupe_client PROPERTIES INSTALL_RPATH "$ORIGIN")
set_target_properties(troupe_actors PROPERTIES EXPORT_NAME actors)
set_target_properties(troupe_client PROPERTIES EXPORT_NAME client)

install(TARGETS troupe_actors troupe_client
  EXPORT troupeTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    COMPONENT Runtime NAMELINK_COMPONENT Development)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/actors/include/troupe
                  ${PROJECT_SOURCE_DIR}/daemon/include/troupe
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT Development
  FILES_MATCHING PATTERN "*.h")

install(TARGETS trouped troupe-cli troupe-node
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT Daemon)

set(TR_DOC_DEST ${CMAKE_INSTALL_DATADIR}/doc/troupe)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/trouped.conf ${PROJECT_SOURCE_DIR}/deploy/README.md
  DESTINATION ${TR_DOC_DEST} COMPONENT Daemon)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/examples
  DESTINATION ${TR_DOC_DEST} COMPONENT Daemon)

# The unit names trouped by its installed path: written at install time,
# so that `cmake --install build --prefix DIR` gets DIR in it.
foreach(kind BINDIR DATADIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${kind}}")
    set(unit_${kind} "${CMAKE_INSTALL_${kind}}")
  else()
    set(unit_${kind} "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_${kind}}")
  endif()
endforeach()
install(CODE "
  set(TR_BINDIR \"${unit_BINDIR}\")
  set(TR_DOCDIR \"${unit_DATADIR}/doc/troupe\")
  configure_file(\"${PROJECT_SOURCE_DIR}/deploy/systemd/trouped.service.in\"
                 \"${PROJECT_BINARY_DIR}/trouped.service\" @ONLY)
  file(INSTALL DESTINATION \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\" TYPE FILE
       FILES \"${PROJECT_BINARY_DIR}/trouped.service\")
" COMPONENT Daemon)
