# strongroom.so: the SQLite loadable extension, built from the same VFS source
# against sqlite3ext.h (calls go through the loading SQLite's routine table).
add_library(strongroom_sqlite_ext MODULE extension.c sqlite_vfs.c)
set_target_properties(strongroom_sqlite_ext PROPERTIES OUTPUT_NAME strongroom PREFIX "" C_VISIBILITY_PRESET hidden)
target_compile_definitions(strongroom_sqlite_ext PRIVATE SR_SQLITE_EXTENSION)
target_link_libraries(strongroom_sqlite_ext PRIVATE sr_tde_core sr_audit)
target_link_options(strongroom_sqlite_ext PRIVATE -Wl,--exclude-libs,ALL)
if(NOT STRONGROOM_SANITIZE)  # the sanitizer runtime comes from the host program
  target_link_options(strongroom_sqlite_ext PRIVATE -Wl,--no-undefined)
endif()
install(TARGETS strongroom_sqlite_ext LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/strongroom)
