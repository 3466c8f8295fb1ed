# Unit tests for crypto/keystore.c: the LMDB store of others' public keys
# and CA lists (R13, R15, R16, R22).  The test reads LMDB itself to prove
# that deletes clean the indexes, hence the direct LMDB link.
pkg_check_modules(TEST_LMDB REQUIRED IMPORTED_TARGET lmdb)
sg_unit_test(test_keystore ${CMAKE_CURRENT_SOURCE_DIR}/test_keystore.c sg_keystore PkgConfig::TEST_LMDB
             Threads::Threads)
