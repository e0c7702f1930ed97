# `cmake --install build --prefix P`: libgad (shared) with its public headers, gad.pc and
# gadConfig.cmake, the `gad` program, and the assets under P/share/gad (found relative to the
# library at run time, so the prefix can move).
include(CMakePackageConfigHelpers)

install(TARGETS gad EXPORT gadTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS gad_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/gad DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY assets/ DESTINATION ${CMAKE_INSTALL_DATADIR}/gad)

install(EXPORT gadTargets NAMESPACE gad:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/gad)
configure_package_config_file(cmake/gadConfig.cmake.in ${CMAKE_BINARY_DIR}/gadConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/gad)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/gadConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/gadConfig.cmake ${CMAKE_BINARY_DIR}/gadConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/gad)

# gad.pc locates its prefix from its own directory (${pcfiledir}), so it is right for any
# --prefix given at install time. It is only right there, so the build tree keeps it out of sight
# (under CMakeFiles/) rather than offering a gad.pc whose include folder does not exist.
file(RELATIVE_PATH GAD_PC_TO_PREFIX /p/${CMAKE_INSTALL_LIBDIR}/pkgconfig /p)
configure_file(cmake/gad.pc.in ${CMAKE_BINARY_DIR}/CMakeFiles/gad-install/gad.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/CMakeFiles/gad-install/gad.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
