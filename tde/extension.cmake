# strongroom.so: the SQLite loadable extension, built from the same VFS source
# against sqlite3ext.h (calls go through the loading SQLite's routine table).
add_library(strongroom_sqlite_ext MODULE extension.c sqlite_vfs.c)
set_target_properties(strongroom_sqlite_ext PROPERTIES OUTPUT_NAME strongroom PREFIX "" C_VISIBILITY_PRESET hidden)
target_compile_definitions(strongroom_sqlite_ext PRIVATE SR_SQLITE_EXTENSION SR_API=)
target_link_libraries(strongroom_sqlite_ext PRIVATE sr_tde_core sr_audit)
target_link_options(strongroom_sqlite_ext PRIVATE -Wl,--exclude-libs,ALL)
if(NOT STRONGROOM_SANITIZE)  # the sanitizer runtime comes from the host program
  target_link_options(strongroom_sqlite_ext PRIVATE -Wl,--no-undefined)
endif()
install(TARGETS strongroom_sqlite_ext LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/strongroom)

# strongroom-bench.so: the same, plus "strongroom-passthrough" (the shim with
# the cipher off) for the SQLite benchmark. Never installed: a VFS whose name
# says strongroom must encrypt.
if(STRONGROOM_BENCH)
  add_library(strongroom_sqlite_bench_ext MODULE extension.c sqlite_vfs.c)
  set_target_properties(strongroom_sqlite_bench_ext PROPERTIES OUTPUT_NAME strongroom-bench PREFIX ""
                        C_VISIBILITY_PRESET hidden)
  target_compile_definitions(strongroom_sqlite_bench_ext PRIVATE SR_SQLITE_EXTENSION SR_BENCH_PASSTHROUGH SR_API=)
  target_link_libraries(strongroom_sqlite_bench_ext PRIVATE sr_tde_core sr_audit)
  target_link_options(strongroom_sqlite_bench_ext PRIVATE -Wl,--exclude-libs,ALL)
endif()
