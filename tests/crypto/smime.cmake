# Tests for crypto/smime.c (R1-R4): every message is checked with the
# OpenSSL CLI and, where it can (RSA, PKCS#1 v1.5, CBC), gpgsm; one test
# signs with a key in a throwaway SoftHSM2 token.  Needs openssl, gpgsm
# (skipped if absent) and softhsm2.
sg_unit_test(test_smime ${CMAKE_CURRENT_SOURCE_DIR}/test_smime.c sg_smime sg_hsm sg_testutil)
set_tests_properties(test_smime PROPERTIES TIMEOUT 300)
