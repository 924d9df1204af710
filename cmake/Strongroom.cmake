# Helpers shared by every folder's CMakeLists.txt.
include_guard(GLOBAL)
find_package(PkgConfig)

# sr_require_pkg(PREFIX module debian-package): an imported target sr::<prefix>
# or a configure error that names the Debian package to install.
function(sr_require_pkg prefix module debian_pkg)
  if(NOT PKG_CONFIG_FOUND)
    message(FATAL_ERROR "pkg-config not found: install the Debian package pkg-config (scripts/install-deps does)")
  endif()
  pkg_check_modules(${prefix} QUIET IMPORTED_TARGET GLOBAL ${module})
  if(NOT ${prefix}_FOUND)
    message(FATAL_ERROR "${module} not found: install the Debian package ${debian_pkg} (scripts/install-deps does)")
  endif()
  string(TOLOWER ${prefix} lower)
  add_library(sr::${lower} ALIAS PkgConfig::${prefix})
endfunction()

# sr_add_test(name SOURCES a.c ... [LIBS ...] [LABELS unit ...] [TIMEOUT s] [ARGS ...])
# One executable per test; registered with ctest and labelled.
function(sr_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS;ARGS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} sr_testlib)
  add_test(NAME ${name} COMMAND ${name} ${T_ARGS})
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "SR_SOURCE_DIR=${PROJECT_SOURCE_DIR};SR_BUILD_DIR=${PROJECT_BINARY_DIR}")
endfunction()

# sr_add_fuzz(name SOURCES fuzz_x.c [LIBS ...] CORPUS dir [SECONDS n])
# The source defines LLVMFuzzerTestOneInput. With STRONGROOM_FUZZ the target
# is a libFuzzer binary and ctest runs it for SECONDS (label "fuzz") over the
# corpus; otherwise it is linked with tests/fuzz_replay.c and ctest replays
# every file of the corpus (label "unit"), so checked-in crash inputs stay
# regression tests in every build.
function(sr_add_fuzz name)
  cmake_parse_arguments(F "" "CORPUS;SECONDS" "SOURCES;LIBS" ${ARGN})
  if(NOT F_SECONDS)
    set(F_SECONDS 60)
  endif()
  if(STRONGROOM_FUZZ)
    add_executable(${name} ${F_SOURCES})
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${name} PRIVATE ${F_LIBS})
    set(work ${CMAKE_CURRENT_BINARY_DIR}/${name}-corpus)
    add_test(NAME ${name}
      COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=1
              ${PROJECT_SOURCE_DIR}/scripts/run-fuzz $<TARGET_FILE:${name}> ${F_CORPUS} ${work} ${F_SECONDS})
    set_tests_properties(${name} PROPERTIES LABELS "fuzz" TIMEOUT 900)
  else()
    add_executable(${name} ${F_SOURCES} ${PROJECT_SOURCE_DIR}/tests/fuzz_replay.c)
    target_link_libraries(${name} PRIVATE ${F_LIBS})
    add_test(NAME ${name}-replay COMMAND ${name} ${F_CORPUS})
    set_tests_properties(${name}-replay PROPERTIES LABELS "unit" TIMEOUT 300)
  endif()
endfunction()
