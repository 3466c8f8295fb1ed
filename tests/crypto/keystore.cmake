# Unit tests for crypto/keystore.c: the LMDB store of others' public keys
# and CA lists (R13, R15, R16, R22).  The test reads LMDB itself to prove
# that deletes clean the indexes, hence the direct LMDB link.
pkg_check_modules(TEST_LMDB REQUIRED IMPORTED_TARGET lmdb)
sg_unit_test(test_keystore ${CMAKE_CURRENT_SOURCE_DIR}/test_keystore.c sg_keystore PkgConfig::TEST_LMDB sg_testutil
             Threads::Threads)

# harvest_put: a test helper (not installed) that files a certificate as a
# harvested key the way the daemon does; tests/integration/test_pubkey.py
# seeds the store with it to drive `sealctl harvested ...` and alerts.
add_executable(harvest_put ${CMAKE_CURRENT_SOURCE_DIR}/harvest_put.c)
target_link_libraries(harvest_put PRIVATE sg_keystore)
set_target_properties(harvest_put PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
