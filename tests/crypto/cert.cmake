# Unit tests for crypto/cert.c: requests, self-signed certificates, CSRs,
# PKCS#12 import, key usage (R8-R13).  Software keys stand in for the token.
sg_unit_test(test_cert ${CMAKE_CURRENT_SOURCE_DIR}/test_cert.c sg_cert)
