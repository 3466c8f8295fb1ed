# Tests for crypto/verify.c (R5, R12): every outcome of a signed message
# against a trust built from a real LMDB key store; fixtures made with the
# openssl CLI in a temp folder.
sg_unit_test(test_verify ${CMAKE_CURRENT_SOURCE_DIR}/test_verify.c sg_verify sg_keystore Threads::Threads sg_testutil)
