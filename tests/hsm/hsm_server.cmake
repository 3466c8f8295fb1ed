# Component tests for hsm/hsm_server.c: a real p11-kit server over a
# throwaway SoftHSM2 token (needs p11-kit, softhsm2, opensc's pkcs11-tool).
sg_unit_test(test_hsm_server ${CMAKE_CURRENT_SOURCE_DIR}/test_hsm_server.c sg_hsm)
