# Unit tests for crypto/mime.c: header/entity split, canonical CRLF form,
# re-encoding to 7-bit (GMime), limits, From: address.
sg_unit_test(test_mime ${CMAKE_CURRENT_SOURCE_DIR}/test_mime.c sg_mime)
