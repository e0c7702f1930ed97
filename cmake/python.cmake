# The Python package `gad` (python/gad/: pure-Python files around gad._gad, a pybind11 module built
# from python/gad_module.cpp with Debian's python3-pybind11 and python3-numpy).
# - build tree: build/python/gad/ (tests put build/python on PYTHONPATH);
# - `cmake --install`: <prefix>/lib/python3.X/dist-packages/gad/ (on Debian's python3 path for the
#   default /usr/local prefix);
# - `pip install .`: setup.py drives this build and lays out a self-contained package (docs/python.md).
option(GAD_BUILD_PYTHON "build the Python module" ON)
if(GAD_BUILD_PYTHON)
  # Debian's python3 is the one with python3-pybind11, -numpy and -pytest: prefer it to any other
  # python3 earlier on PATH (pip passes the interpreter it builds for).
  if(NOT Python3_EXECUTABLE AND EXISTS /usr/bin/python3)
    set(Python3_EXECUTABLE /usr/bin/python3)
  endif()
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module)
  find_package(pybind11 CONFIG REQUIRED)
  set(GAD_PYTHON_BUILD_DIR ${CMAKE_BINARY_DIR}/python/gad)
  pybind11_add_module(gad_python python/gad_module.cpp)
  # The module finds libgad beside it (a pip install: gad/lib) or in the prefix's lib directory
  # (a `cmake --install`: <prefix>/lib/python3.X/dist-packages/gad → <prefix>/lib).
  set_target_properties(gad_python PROPERTIES OUTPUT_NAME _gad LIBRARY_OUTPUT_DIRECTORY ${GAD_PYTHON_BUILD_DIR}
                                              INSTALL_RPATH "$ORIGIN/lib:$ORIGIN/../../..")
  target_link_libraries(gad_python PRIVATE gad)
  file(GLOB GAD_PYTHON_FILES CONFIGURE_DEPENDS python/gad/*.py python/gad/*.pyi python/gad/py.typed)
  add_custom_target(gad_python_files ALL COMMAND ${CMAKE_COMMAND} -E make_directory ${GAD_PYTHON_BUILD_DIR}
                    COMMAND ${CMAKE_COMMAND} -E copy ${GAD_PYTHON_FILES} ${GAD_PYTHON_BUILD_DIR}
                    DEPENDS ${GAD_PYTHON_FILES} COMMENT "Python package files")
  add_dependencies(gad_python gad_python_files)
  set(GAD_PYTHON_DIR ${CMAKE_INSTALL_LIBDIR}/python${Python3_VERSION_MAJOR}.${Python3_VERSION_MINOR}/dist-packages/gad)
  install(TARGETS gad_python LIBRARY DESTINATION ${GAD_PYTHON_DIR})
  install(FILES ${GAD_PYTHON_FILES} DESTINATION ${GAD_PYTHON_DIR})
endif()
