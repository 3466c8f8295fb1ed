# Tests for crypto/decrypt.c (R6, R14): incoming EnvelopedData and
# AuthEnvelopedData made by the openssl CLI, opened with keys in a
# throwaway SoftHSM2 token; tampered messages (GCM tag, CBC padding, the
# cipher OID against the content type), budgets, malformed input.
# test_decrypt_remote is the same source with the token behind a
# `p11-kit server` (hsm_server_start): a CBC message opens, a stopped
# server is "retry later".  Needs openssl, softhsm2 and p11-kit.
sg_unit_test(test_decrypt ${CMAKE_CURRENT_SOURCE_DIR}/test_decrypt.c sg_decrypt sg_cert sg_hsm sg_testutil)
sg_unit_test(test_decrypt_remote ${CMAKE_CURRENT_SOURCE_DIR}/test_decrypt.c sg_decrypt sg_cert sg_hsm sg_testutil)
target_compile_definitions(test_decrypt_remote PRIVATE DECRYPT_TEST_REMOTE=1)
