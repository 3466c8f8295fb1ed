# Unit tests for core/policy.c (mail policies, content and message filters, #6).
sg_unit_test(test_policy ${CMAKE_CURRENT_SOURCE_DIR}/test_policy.c sg_policy)
