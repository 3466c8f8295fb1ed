# Unit tests for core/clientlimit.c.
sg_unit_test(test_clientlimit ${CMAKE_CURRENT_SOURCE_DIR}/test_clientlimit.c sg_core)
