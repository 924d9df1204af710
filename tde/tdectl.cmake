# tdectl: the DBA's command-line tool for encrypted tablespaces.
add_executable(tdectl tdectl.c)
target_link_libraries(tdectl PRIVATE sr_tde sr_audit)
install(TARGETS tdectl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
