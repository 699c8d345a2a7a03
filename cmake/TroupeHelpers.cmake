# Helpers so that adding a source or a test is one line.

# tr_sources(target file...): add sources to an object library.
function(tr_sources target)
  target_sources(${target} PRIVATE ${ARGN})
endfunction()

# tr_test(NAME layer.module SOURCES files... [LIBS libs...] [TIMEOUT s] [LABELS l...]
#         [ALONE case...] [PUBLIC_API])
# builds one cmocka executable and registers it with ctest.
#
# PUBLIC_API links the shared libtroupe instead of the white-box static
# library: tests of actors/ and daemon/, whose libraries link the shared one
# (a program must hold one copy of the runtime), and which see public
# headers only.
#
# ALONE names cmocka cases (test_sched_idle_runtime_uses_no_cpu) that get a
# ctest entry of their own, layer.module.<case less its test_module_ prefix>:
# the same executable with TU_FILTER=<case>, labels, timeout and
# SKIP_RETURN_CODE 77, so that a case that skips itself (tu_skip) shows as
# skipped, which a skip inside the whole suite cannot (ctest sees one exit
# status per entry). The main entry leaves those cases out (TU_SKIP), and so
# must any other entry that runs the executable: tr_test_skip_env gives the
# variable to add to its ENVIRONMENT.
function(tr_test)
  cmake_parse_arguments(T "PUBLIC_API" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS;ALONE" ${ARGN})
  string(REPLACE "." "_" exe "test_${T_NAME}")
  add_executable(${exe} ${T_SOURCES})
  if(T_PUBLIC_API)
    target_link_libraries(${exe} PRIVATE troupe PkgConfig::CMOCKA ${T_LIBS})
    target_include_directories(${exe} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  else()
    target_link_libraries(${exe} PRIVATE tr_testing PkgConfig::CMOCKA ${T_LIBS})
    target_include_directories(${exe} PRIVATE ${PROJECT_SOURCE_DIR}/runtime ${PROJECT_SOURCE_DIR}/tests)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_test(NAME ${T_NAME} COMMAND ${exe})
  set(entries ${T_NAME})
  # A case that is in none of the sources would be caught only when its
  # entry runs (tu_run fails a TU_FILTER that matches nothing): say so now.
  set(text "")
  if(T_ALONE)
    foreach(src ${T_SOURCES})
      get_filename_component(src ${src} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
      file(READ ${src} src_text)
      string(APPEND text "${src_text}")
    endforeach()
  endif()
  string(REGEX REPLACE "^.*\\." "" module "${T_NAME}")
  foreach(case ${T_ALONE})
    if(NOT case MATCHES "^[A-Za-z0-9_]+$")
      message(FATAL_ERROR "tr_test(${T_NAME}): ALONE ${case}: not a C identifier")
    endif()
    string(REGEX MATCH "[^A-Za-z0-9_]${case}[^A-Za-z0-9_]" found "${text}")
    if(NOT found)
      message(FATAL_ERROR "tr_test(${T_NAME}): ALONE ${case}: no such case in ${T_SOURCES}")
    endif()
    string(REGEX REPLACE "^test_(${module}_)?" "" short "${case}")
    add_test(NAME ${T_NAME}.${short} COMMAND ${exe})
    set_tests_properties(${T_NAME}.${short} PROPERTIES ENVIRONMENT "TU_FILTER=${case}")
    list(APPEND entries ${T_NAME}.${short})
  endforeach()
  if(T_ALONE)
    string(REPLACE ";" "," skip "${T_ALONE}")
    set_target_properties(${exe} PROPERTIES TR_TEST_SKIP "${skip}")
    set_tests_properties(${T_NAME} PROPERTIES ENVIRONMENT "TU_SKIP=${skip}")
  endif()
  set_tests_properties(${entries} PROPERTIES TIMEOUT ${T_TIMEOUT} SKIP_RETURN_CODE 77)
  if(T_LABELS)
    set_tests_properties(${entries} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()

# tr_test_skip_env(var exe): sets var to "TU_SKIP=<cases>" when tr_test gave
# cases of exe entries of their own (ALONE), else to "". Add it to the
# ENVIRONMENT of any other ctest entry that runs exe.
function(tr_test_skip_env var exe)
  get_target_property(skip ${exe} TR_TEST_SKIP)
  if(skip)
    set(${var} "TU_SKIP=${skip}" PARENT_SCOPE)
  else()
    set(${var} "" PARENT_SCOPE)
  endif()
endfunction()

# tr_bench(name file... [ACTORS]): a benchmark executable in tests/bench
# (not a test). It links the static libtroupe, or with ACTORS the shared one
# and libtroupe-actors, which links the shared libtroupe itself (a program
# must hold one copy of the runtime).
function(tr_bench name)
  cmake_parse_arguments(B "ACTORS" "" "" ${ARGN})
  add_executable(bench_${name} ${B_UNPARSED_ARGUMENTS})
  if(B_ACTORS)
    target_link_libraries(bench_${name} PRIVATE troupe troupe_actors)
  else()
    target_link_libraries(bench_${name} PRIVATE troupe_static)
  endif()
  target_include_directories(bench_${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/bench)
endfunction()
