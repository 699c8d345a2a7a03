# Helpers so that adding a source or a test is one line.

# tr_sources(target file...): add sources to an object library.
function(tr_sources target)
  target_sources(${target} PRIVATE ${ARGN})
endfunction()

# tr_test(NAME layer.module SOURCES files... [LIBS libs...] [TIMEOUT s] [LABELS l...])
# builds one cmocka executable and registers it with ctest.
function(tr_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  string(REPLACE "." "_" exe "test_${T_NAME}")
  add_executable(${exe} ${T_SOURCES})
  target_link_libraries(${exe} PRIVATE tr_testing PkgConfig::CMOCKA ${T_LIBS})
  target_include_directories(${exe} PRIVATE ${PROJECT_SOURCE_DIR}/runtime/core ${PROJECT_SOURCE_DIR}/tests)
  add_test(NAME ${T_NAME} COMMAND ${exe})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} SKIP_RETURN_CODE 77)
  if(T_LABELS)
    set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()

# tr_bench(name file...): a benchmark executable in tests/bench (not a test).
function(tr_bench name)
  add_executable(bench_${name} ${ARGN})
  target_link_libraries(bench_${name} PRIVATE troupe_static)
  target_include_directories(bench_${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/bench)
endfunction()
