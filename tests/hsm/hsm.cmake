# Component tests for hsm/ against real SoftHSM2 tokens in temp folders.
# test_hsm loads SoftHSM2 in process; test_hsm_remote (the same source
# built with HSM_TEST_REMOTE) starts its own `p11-kit server` and talks to
# it through p11-kit-client.so.  They are separate processes because a
# module finalized in one mode cannot cleanly be mixed with the other.
pkg_check_modules(P11KIT_TEST REQUIRED IMPORTED_TARGET p11-kit-1)
sg_unit_test(test_hsm ${CMAKE_CURRENT_SOURCE_DIR}/test_hsm.c sg_hsm)
target_link_libraries(test_hsm PRIVATE PkgConfig::P11KIT_TEST Threads::Threads)
sg_unit_test(test_hsm_remote ${CMAKE_CURRENT_SOURCE_DIR}/test_hsm.c sg_hsm)
target_compile_definitions(test_hsm_remote PRIVATE HSM_TEST_REMOTE=1)
target_link_libraries(test_hsm_remote PRIVATE PkgConfig::P11KIT_TEST Threads::Threads)
# test_hsm_module: the in-process tests with the module named by path
# (hsm.module: /path/module.so, the real-HSM mode).
sg_unit_test(test_hsm_module ${CMAKE_CURRENT_SOURCE_DIR}/test_hsm.c sg_hsm)
target_compile_definitions(test_hsm_module PRIVATE HSM_TEST_MODULE=1)
target_link_libraries(test_hsm_module PRIVATE PkgConfig::P11KIT_TEST Threads::Threads)
