# Unit tests for core/config.c.
sg_unit_test(test_config ${CMAKE_CURRENT_SOURCE_DIR}/test_config.c sg_config)
# Allocation failures are injected to show every error path frees what it
# allocated (tests/core/alloc_fail.h).
sg_alloc_fail(test_config)
