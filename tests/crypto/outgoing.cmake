# Tests for crypto/outgoing.c: each outcome of one message under a profile,
# with a throwaway SoftHSM2 token and LMDB key store.
sg_unit_test(test_outgoing ${CMAKE_CURRENT_SOURCE_DIR}/test_outgoing.c sg_crypto)
