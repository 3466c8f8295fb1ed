# p11probe: a command-line program (not a ctest test) that tries to read,
# wrap or unprotect a private key through any PKCS#11 module;
# tests/integration/test_hsm_isolation.py runs it from the gateway's uid.
# It loads the module itself (dlopen), so it only needs p11-kit's header.
pkg_check_modules(P11KIT_PROBE REQUIRED IMPORTED_TARGET p11-kit-1)
add_executable(p11probe ${CMAKE_CURRENT_SOURCE_DIR}/p11probe.c)
target_link_libraries(p11probe PRIVATE PkgConfig::P11KIT_PROBE ${CMAKE_DL_LIBS})
set_target_properties(p11probe PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
