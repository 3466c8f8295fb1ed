# PKITS (NIST path validation suite, signed S/MIME messages from Debian's
# python3-cryptography-vectors) through crypto/verify.c: issue #5's
# acceptance test.  Skipped when the vectors are not installed.
sg_unit_test(test_pkits ${CMAKE_CURRENT_SOURCE_DIR}/test_pkits.c sg_verify sg_keystore sg_testutil)
