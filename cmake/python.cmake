# The Python module `gad` (pybind11, Debian's python3-pybind11 and python3-numpy). Built into
# build/python/ and installed to P/lib/python3.X/dist-packages (on the default /usr/local prefix
# that is on Debian's python3 path; for another prefix set PYTHONPATH).
option(GAD_BUILD_PYTHON "build the Python module" ON)
if(GAD_BUILD_PYTHON)
  # Debian's python3 is the one with python3-pybind11, -numpy and -pytest: prefer it to any other
  # python3 earlier on PATH.
  if(NOT Python3_EXECUTABLE AND EXISTS /usr/bin/python3)
    set(Python3_EXECUTABLE /usr/bin/python3)
  endif()
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module)
  find_package(pybind11 CONFIG REQUIRED)
  pybind11_add_module(gad_python python/gad_module.cpp)
  set_target_properties(gad_python PROPERTIES OUTPUT_NAME gad LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/python
                                              INSTALL_RPATH "$ORIGIN/../..")
  target_link_libraries(gad_python PRIVATE gad)
  set(GAD_PYTHON_DIR ${CMAKE_INSTALL_LIBDIR}/python${Python3_VERSION_MAJOR}.${Python3_VERSION_MINOR}/dist-packages)
  install(TARGETS gad_python LIBRARY DESTINATION ${GAD_PYTHON_DIR})
endif()
