# The daemon's durable job store (store.c) and its state-directory lock
# (state.c): a static library of the daemon's, internal (trd_ names).
find_package(SQLite3 REQUIRED)

add_library(troupe_daemon_store STATIC store.c state.c)
target_include_directories(troupe_daemon_store PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(troupe_daemon_store PUBLIC troupe PRIVATE SQLite::SQLite3 PkgConfig::PROTOBUFC
                      Threads::Threads)
add_dependencies(troupe_daemon_store tr_proto_gen)
