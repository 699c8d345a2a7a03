# The job store: one cmocka executable; its kill -9 and lock cases spawn
# the test binary itself in a child mode (argv[1]).
find_package(SQLite3 REQUIRED)
tr_test(NAME daemon.store SOURCES test_store.c PUBLIC_API
        LIBS troupe_daemon_store SQLite::SQLite3 PkgConfig::PROTOBUFC
        LABELS unit concurrency TIMEOUT 300)
